"""What the benchmark suite (``python -m benchmarks.run``) measures: the cases, variants, queue sizes and repetitions of a run.

Three plans per device: ``full`` (the issue's matrix, about 15 minutes on 2 CPU cores),
``quick`` (the headline comparison, the FLOP target and a 3-point queue sweep, a few minutes)
and ``tiny`` (every code path on toy sizes, for the test suite). Batch sizes on the CPU are
chosen so that a step takes seconds, not minutes; on CUDA a case whose batch does not fit is
retried at half the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from benchmarks.loader import LoaderPlan

PLANS = ("full", "quick", "tiny")


@dataclass(frozen=True)
class Case:
    """An encoder at an input size and batch; its variants are timed side by side."""

    encoder: str
    image_size: int
    batch_size: int

    @property
    def label(self) -> str:
        dims = 3 if self.encoder.endswith("_3d") else 2
        return f"{self.encoder} {self.image_size}{'³' if dims == 3 else ' px'} b{self.batch_size}"


@dataclass(frozen=True)
class Plan:
    """One device's run. ``headline`` is the issue's comparison case (ResNet-18, 64 px, batch 128):
    the reference step, fused SGD and ``torch.compile`` are timed with its variants.
    ``flop_target`` is the case whose FLOP/s is held against the roofline (ResNet-18, 128 px)."""

    name: str
    cases: tuple[Case, ...]
    headline: Case
    flop_target: Case
    queue_case: Case
    queue_sizes: tuple[int, ...]
    compile: bool  # add the torch.compile variants to the headline case
    width: int = 64
    proj_dim: int = 128
    proj_hidden_dim: int = 2048
    queue_size: int = 4096  # K of every case but the queue sweep's
    warmup: int = 2  # untimed steps per variant (the first also counts FLOPs)
    rounds: int = 5  # timings per variant, round-robin
    round_s: float = 0.3  # a timing runs at least this long (several steps when a step is fast)
    queue_rounds: int = 5
    component_rounds: int = 5
    roofline_sizes: tuple[int, ...] = (1024, 2048, 3072)
    roofline_min_time_s: float = 0.2
    process_pairs: int = 5  # CPU headline across processes: alternating (reference, default) pairs
    process_rounds: int = 3  # timings per child process
    process_calls: int = 1  # steps per timing in a child
    loader: LoaderPlan | None = field(default_factory=LoaderPlan)
    feed_step: bool = True  # also feed the default step from the loader


def make_plan(name: str, device: torch.device) -> Plan:
    """The ``full``, ``quick`` or ``tiny`` plan for ``device``.

    Raises:
        ValueError: for an unknown plan name.
    """
    if name not in PLANS:
        raise ValueError(f"plan={name!r} must be one of {PLANS}")
    if name == "tiny":
        return _tiny()
    cuda = device.type == "cuda"
    headline = Case("resnet18", 64, 256 if cuda else 128)
    flop_target = Case("resnet18", 128, 256 if cuda else 64)
    queue_case = Case("resnet18", 64, 128)
    if name == "quick":
        return Plan(
            name="quick",
            cases=(headline, flop_target, Case("resnet18_3d", 64, 16 if cuda else 2)),
            headline=headline,
            flop_target=flop_target,
            queue_case=queue_case,
            queue_sizes=(256, 4096, 65536),
            compile=False,
            rounds=3,
            queue_rounds=3,
            component_rounds=3,
            process_pairs=5,
            loader=LoaderPlan(subjects=12, batches=6),
            feed_step=False,
        )
    if cuda:
        cases = (
            headline, flop_target, Case("resnet18", 224, 256),
            Case("resnet50", 64, 256), Case("resnet50", 128, 256), Case("resnet50", 224, 128),
            Case("resnet18_3d", 64, 32), Case("resnet18_3d", 96, 16),
        )
    else:
        cases = (
            headline, flop_target, Case("resnet18", 224, 16),
            Case("resnet50", 64, 64), Case("resnet50", 128, 16), Case("resnet50", 224, 8),
            Case("resnet18_3d", 64, 4), Case("resnet18_3d", 96, 2),
        )
    return Plan(
        name="full",
        cases=cases,
        headline=headline,
        flop_target=flop_target,
        queue_case=queue_case,
        queue_sizes=tuple(2**p for p in range(8, 17)),  # 256 .. 65536
        compile=cuda,  # on 2 CPU cores, compiling the step takes many minutes: opt in with --compile
        rounds=5,
    )


def _tiny() -> Plan:
    headline = Case("resnet18", 16, 4)
    return Plan(
        name="tiny",
        cases=(headline, Case("resnet18_3d", 16, 2)),
        headline=headline,
        flop_target=headline,
        queue_case=headline,
        queue_sizes=(16, 32),
        compile=False,
        width=4,
        proj_dim=8,
        proj_hidden_dim=16,
        queue_size=32,
        warmup=1,
        rounds=1,
        round_s=0.0,
        queue_rounds=1,
        component_rounds=1,
        roofline_sizes=(64,),
        roofline_min_time_s=0.0,
        process_pairs=1,
        process_rounds=1,
        loader=None,
        feed_step=False,
    )

