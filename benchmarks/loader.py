"""The data loader's pairs per second, next to what a training step consumes.

A synthetic cohort (:func:`mocomri.data.synthetic.make_cohort`) is written to a temporary
folder, given a manifest (:func:`mocomri.data.manifest.build_manifest`), and read through
:func:`mocomri.data.datasets.build_pretrain_dataset` (2D axial slices) by a ``DataLoader`` set
up as :func:`mocomri.train.pretrain.pretrain` sets it up, and each batch's two views made with
the full MRI augmentation on the device, as in training.
Measured with 0 workers (no prefetching) and with ``workers`` workers prefetching
``PREFETCH`` batches each; then the step is fed from the loader, as in training, where on a
2-core machine the workers and the step share the same cores.

Only the steady state is timed: while the first batch is awaited, the workers fill their
prefetch queues, so the first ``1 + workers * PREFETCH`` batches arrive faster than the
loader can produce them and are not counted.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mocomri.timing import device_sync, time_fed


PREFETCH = 2  # batches each worker prefetches (DataLoader's default)


@dataclass(frozen=True)
class LoaderPlan:
    subjects: int = 24
    shape: tuple[int, int, int] = (64, 64, 48)  # voxels of each synthetic volume
    image_size: int = 64
    batch_size: int = 32  # of the loader-only measurement; the fed step uses its own batch
    workers: int = 2
    batches: int = 8  # timed batches per measurement, after the untimed prefetched ones
    fed_steps: int = 3  # timed training steps fed from the loader


def loader_benchmark(plan: LoaderPlan, device: torch.device, step=None) -> dict:
    """Pairs per second of the pretraining loader, and of a step fed from it.

    Args:
        plan: the cohort and loader sizes.
        device: where batches go (``pin_memory`` is on for CUDA, as in training).
        step: a warmed-up :class:`~benchmarks.step.TrainStep` whose image size matches the
            plan, to feed from the loader at its own batch size; None skips that part.

    Returns:
        ``{"status": "ok", "items", "pairs_per_s": {workers: rate}, "fed": {...}}``.
    """
    from mocomri.data.datasets import build_pretrain_dataset
    from mocomri.data.manifest import build_manifest, write_manifest
    from mocomri.augment.settings import AugmentConfig
    from mocomri.data.settings import DataConfig
    from mocomri.data.synthetic import make_cohort

    with tempfile.TemporaryDirectory(prefix="mocomri-bench-") as tmp:
        root = make_cohort(Path(tmp) / "cohort", subjects=plan.subjects, modalities=["T1w"], shape=plan.shape, seed=0)
        csv = Path(tmp) / "manifest.csv"
        manifest = build_manifest(root).manifest
        write_manifest(manifest, csv)
        data_cfg = DataConfig(
            manifest=str(csv), kind="slices2d", image_size=plan.image_size, cache_dir=str(Path(tmp) / "cache"),
            num_workers=plan.workers,
        )
        splits = sorted({r.split for r in manifest.rows})
        started = time.perf_counter()
        dataset = build_pretrain_dataset(manifest, data_cfg, AugmentConfig(), splits=splits, progress=False)
        result: dict = {
            "status": "ok",
            "items": len(dataset),
            "cohort": f"{plan.subjects} synthetic T1w volumes {'x'.join(map(str, plan.shape))}, axial slices",
            "image_size": plan.image_size,
            "batch_size": plan.batch_size,
            "cache_fill_s": time.perf_counter() - started,
            "pairs_per_s": {},
        }
        for workers in dict.fromkeys((0, plan.workers)):
            loader = _loader(dataset, plan.batch_size, workers, device)
            result["pairs_per_s"][str(workers)] = _pairs_per_s(dataset, loader, plan.batches, _untimed(workers), device)
        if step is not None:
            loader = _loader(dataset, step.spec.batch_size, plan.workers, device)
            result["fed"] = _fed_step(dataset, loader, step, plan.fed_steps, _untimed(plan.workers))
        return result


def _untimed(workers: int) -> int:
    """Batches to skip before timing: the first, and those prefetched while it was awaited."""
    return 1 + workers * PREFETCH


def _loader(dataset, batch_size: int, workers: int, device: torch.device):
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=dataset.collate,
        pin_memory=device.type == "cuda",
        drop_last=True,
        prefetch_factor=PREFETCH if workers > 0 else None,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


def _batches(loader):
    while True:
        yield from loader


def _pairs_per_s(dataset, loader, batches: int, untimed: int, device: torch.device) -> float:
    """Pairs/s of reading batches and making their views on ``device``, as the training loop does."""
    it = _batches(loader)
    for _ in range(untimed):
        next(it)  # read only: making their views would give the workers time to prefetch again
    pairs = []
    timing = time_fed(it, lambda batch: pairs.append(len(dataset.make_views(batch, device)[0])), batches,
                      sync=device_sync(device))
    return sum(pairs) / timing.seconds


def _fed_step(dataset, loader, step, steps: int, untimed: int) -> dict:
    """The step fed by the loader, as in training: pairs/s and the fraction spent waiting for data."""
    fmt = step.memory_format

    def feed(batch: dict) -> None:
        view_q, view_k = dataset.make_views(batch, step.device)  # (B, C, *S) each
        step.view_q, step.view_k = view_q.contiguous(memory_format=fmt), view_k.contiguous(memory_format=fmt)
        step.subjects = batch["subject"].to(step.device, non_blocking=True)  # (B,)
        step()

    timing = time_fed(_batches(loader), feed, steps, warmup=untimed, sync=step.sync)
    return {"pairs_per_s": timing.steps * step.spec.batch_size / timing.seconds, "data_wait_frac": timing.wait_frac,
            "variant": step.spec.variant, "batch_size": step.spec.batch_size}
