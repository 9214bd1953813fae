"""How fast a config trains on this machine: the step alone, the whole loop, peak memory.

:class:`PretrainStep` is the training step of a config as :func:`mocomri.train.pretrain.pretrain`
builds it, from pretraining's own builders, around :func:`mocomri.train.step.train_step`; what
``mocomri bench``, the benchmark suite (``benchmarks/``) and the lab's timings (``tools/bench_*``)
time. :func:`measure_speed` times it with :mod:`mocomri.timing`: first on one batch's views over
and over (the step alone: what the model costs), then fed by the loader as in training (reading,
views, step: what a run gets). Nothing is written to ``train.out_dir``. The full benchmark suite
(a reference MoCo step, precision and queue sweeps, the matmul roofline) is the repository's
``benchmarks/``; its figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mocomri.config import Config
from mocomri.data.datasets import build_pretrain_dataset
from mocomri.data.manifest import read_manifest
from mocomri.models import MoCoOutput, spatial_dims_of
from mocomri.timing import device_sync, time_calls, time_fed
from mocomri.train.lr_schedule import scaled_lr
from mocomri.train.pretrain import build_loader, build_model, build_optimizer, make_runtime
from mocomri.train.runtime import Runtime, memory_format
from mocomri.train.step import train_step


class PretrainStep:
    """The training step of ``cfg``, built as :func:`~mocomri.train.pretrain.pretrain` builds it.

    The model (:func:`~mocomri.train.pretrain.build_model`) on the runtime's device in the run's
    memory format, its optimiser (:func:`~mocomri.train.pretrain.build_optimizer`), the grad
    scaler (enabled for fp16), ``torch.compile`` where ``train.compile`` says; the learning rate
    is the schedule's peak and the momentum ``moco.momentum`` (neither changes what a step
    costs). One process: no DDP wrapping.

    Args:
        cfg: a loaded (validated) config.
        rt: where and how the step runs (:func:`~mocomri.train.pretrain.make_runtime`).
    """

    def __init__(self, cfg: Config, rt: Runtime) -> None:
        self.runtime = rt
        self.memory_format = memory_format(rt.channels_last, spatial_dims_of(cfg.model.name))
        self.model = build_model(cfg).to(rt.device, memory_format=self.memory_format).train()
        self.optimizer = build_optimizer(self.model, cfg)
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")
        self.net = torch.compile(self.model) if cfg.train.compile else self.model
        self.lr = scaled_lr(cfg.optim.lr, cfg.train.batch_size * rt.world_size)
        self.momentum = cfg.moco.momentum
        self.sync = device_sync(rt.device)

    def __call__(self, view_q: torch.Tensor, view_k: torch.Tensor, subjects: torch.Tensor | None) -> MoCoOutput:
        """One training step; its output stays on the device (no host sync).

        Shape: view_q, view_k (B, C, *S) on the device, in :attr:`memory_format`; subjects (B,).
        """
        return train_step(self.net, self.optimizer, self.scaler, view_q, view_k, subjects,
                          lr=self.lr, momentum=self.momentum, autocast=self.runtime.autocast)


@dataclass
class Speed:
    """What :func:`measure_speed` found. Rates are images per second (one image = one pair of views)."""

    device: str
    precision: str
    channels_last: bool
    batch_size: int
    items: int  # pretraining items in the dataset
    steps: int  # timed steps of each measurement
    step_images_per_s: float  # the training step alone, on one batch's views
    loop_images_per_s: float  # loader, views and step, as a training run
    data_wait_frac: float  # share of the loop spent waiting for the loader
    peak_memory_mb: float  # CUDA: allocated by torch; CPU: the process's peak resident set
    memory_kind: str


def measure_speed(cfg: Config, steps: int = 20, warmup: int = 3, progress: bool | None = None) -> Speed:
    """Times ``steps`` training steps of ``cfg`` after ``warmup`` untimed ones, twice: alone and fed by the loader.

    Args:
        cfg: a loaded (validated) config; its data, model, MoCo, optimiser and runtime settings are used.
        steps: timed steps per measurement.
        warmup: untimed steps before each (allocator, oneDNN and cuDNN warm-up; compilation).
        progress: tqdm bar while filling the cache; None shows it on a terminal only.

    Raises:
        ValueError: ``steps`` or ``warmup`` out of range.
    """
    if steps < 1 or warmup < 1:
        raise ValueError(f"steps={steps} and warmup={warmup} must be at least 1")
    rt = make_runtime(cfg)
    torch.manual_seed(cfg.train.seed)
    dataset = build_pretrain_dataset(read_manifest(cfg.data.manifest), cfg.data, cfg.augment,
                                     cfg.data.pretrain_splits, progress=progress)
    loader, sampler = build_loader(dataset, cfg, rt)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    step = PretrainStep(cfg, rt)

    def views(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        view_q, view_k = dataset.make_views(batch, rt.device)  # (B, C, *S) each
        subjects = batch["subject"].to(rt.device, non_blocking=True)  # (B,)
        fmt = step.memory_format
        return view_q.contiguous(memory_format=fmt), view_k.contiguous(memory_format=fmt), subjects

    # 1. The step alone, on the first batch's views.
    batches = _batches(loader, sampler)
    inputs = views(next(batches))
    step_s = time_calls(lambda: step(*inputs), steps, warmup=warmup, sync=step.sync)
    # 2. The loop: wait for a batch, make its views, step.
    fed = time_fed(batches, lambda batch: step(*views(batch)), steps, warmup=warmup, sync=step.sync)

    if rt.device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(rt.device), "allocated by torch on the GPU"
    else:
        # ru_maxrss: KiB on Linux, bytes on macOS; DataLoader workers are processes of their own.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak, kind = rss * (1 if sys.platform == "darwin" else 1024), "peak resident set of the main process"
    batch_size = cfg.train.batch_size
    return Speed(
        device=str(rt.device), precision=rt.precision, channels_last=rt.channels_last, batch_size=batch_size,
        items=len(dataset), steps=steps, step_images_per_s=batch_size / step_s,
        loop_images_per_s=fed.steps * batch_size / fed.seconds, data_wait_frac=fed.wait_frac,
        peak_memory_mb=peak / 2**20, memory_kind=kind,
    )


def _batches(loader, sampler) -> Iterator[dict]:
    """Batches in training order, epoch after epoch."""
    epoch = 0
    while True:
        sampler.set_position(epoch, 0)
        yield from loader
        epoch += 1
