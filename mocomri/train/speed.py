"""How fast a config trains on this machine: the step alone, the whole loop, peak memory.

Builds what :func:`mocomri.train.pretrain.pretrain` builds from a config (runtime, dataset,
loader, model, optimiser) and times :func:`mocomri.train.step.train_step`, the step training
runs: first on one batch's views over and over (the step alone: what the model costs), then fed
by the loader as in training (reading, views, step: what a run gets). Nothing is written to
``train.out_dir``. The full benchmark suite (a reference MoCo step, precision and queue sweeps,
the matmul roofline) is the repository's ``benchmarks/``; its figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mocomri.config import Config
from mocomri.models import spatial_dims_of
from mocomri.train.lr_schedule import scaled_lr
from mocomri.train.step import train_step


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
    from mocomri.data.datasets import build_pretrain_dataset
    from mocomri.data.manifest import read_manifest
    from mocomri.train.pretrain import build_loader, build_model, build_optimizer, make_runtime

    if steps < 1 or warmup < 1:
        raise ValueError(f"steps={steps} and warmup={warmup} must be at least 1")
    rt = make_runtime(cfg)
    torch.manual_seed(cfg.train.seed)
    dataset = build_pretrain_dataset(read_manifest(cfg.data.manifest), cfg.data, cfg.augment,
                                     cfg.data.pretrain_splits, progress=progress)
    loader, sampler = build_loader(dataset, cfg, rt)
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    fmt = torch.contiguous_format
    if rt.channels_last:
        fmt = torch.channels_last if spatial_dims_of(cfg.model.name) == 2 else torch.channels_last_3d
    model = build_model(cfg).to(rt.device, memory_format=fmt).train()
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")
    net = torch.compile(model) if cfg.train.compile else model
    lr = scaled_lr(cfg.optim.lr, cfg.train.batch_size * rt.world_size)

    def step(view_q: torch.Tensor, view_k: torch.Tensor, subjects: torch.Tensor) -> None:
        train_step(net, optimizer, scaler, view_q, view_k, subjects, lr=lr, momentum=cfg.moco.momentum,
                   autocast=rt.autocast)

    def sync() -> None:
        if rt.device.type == "cuda":
            torch.cuda.synchronize(rt.device)

    def views(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        view_q, view_k = dataset.make_views(batch, rt.device)  # (B, C, *S) each
        subjects = batch["subject"].to(rt.device, non_blocking=True)  # (B,)
        return view_q.contiguous(memory_format=fmt), view_k.contiguous(memory_format=fmt), subjects

    # 1. The step alone, on the first batch's views.
    batches = _batches(loader, sampler)
    inputs = views(next(batches))
    for _ in range(warmup):
        step(*inputs)
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step(*inputs)
    sync()
    step_s = (time.perf_counter() - started) / steps

    # 2. The loop: wait for a batch, make its views, step.
    for _ in range(warmup):
        step(*views(next(batches)))
    sync()
    wait = 0.0
    started = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - t
        step(*views(batch))
    sync()
    loop_s = time.perf_counter() - started

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
        loop_images_per_s=steps * batch_size / loop_s, data_wait_frac=wait / loop_s,
        peak_memory_mb=peak / 2**20, memory_kind=kind,
    )


def _batches(loader, sampler) -> Iterator[dict]:
    """Batches in training order, epoch after epoch."""
    epoch = 0
    while True:
        sampler.set_position(epoch, 0)
        yield from loader
        epoch += 1
