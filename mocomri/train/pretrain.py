"""The MoCo pretraining loop: set lr and momentum → step → log → checkpoint → stop.

Everything a run needs to continue after a crash lives in its checkpoint (model, momentum
encoder, queue, optimiser, grad scaler, step, RNG states); the data order and augmentation
seeds are pure functions of the step (:class:`~mocomri.train.sampler.ResumableSampler`), so a
resumed run draws the same batches an uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from mocomri.config import Config, config_to_dict, save_config
from mocomri.errors import MocomriError
from mocomri.files import file_digest
from mocomri.models import MoCo, constant_momentum, cosine_momentum, encoder_from_config, spatial_dims_of
from mocomri.train.checkpoint import (
    atomic_save,
    last_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from mocomri.train.logger import RunLogger
from mocomri.train.lr_schedule import scaled_lr, warmup_cosine_lr
from mocomri.train.masking import plan_masking
from mocomri.train.monitors import alignment, embedding_spread, uniformity
from mocomri.train.runtime import (
    Runtime,
    init_distributed,
    seed_everything,
    select_channels_last,
    select_device,
    select_precision,
)
from mocomri.train.sampler import ResumableSampler
from mocomri.train.step import train_step

MOMENTUM_SCHEDULES = {"constant": constant_momentum, "cosine": cosine_momentum}


class NonFiniteLossError(MocomriError):
    """The loss became NaN or Inf; the run stopped and kept its last good checkpoint."""


class CollapsedRunError(MocomriError):
    """The embeddings collapsed (``train.stop_on_collapse``); the run stopped and kept its last good checkpoint."""


@dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    final_accuracy: float
    wall_time_s: float
    stopped_early: bool


def build_model(cfg: Config) -> MoCo:
    """The MoCo module a config describes, on the CPU."""
    backbone, feature_dim = encoder_from_config(cfg.model)
    return MoCo(
        backbone,
        feature_dim,
        proj_dim=cfg.moco.proj_dim,
        proj_hidden_dim=cfg.moco.proj_hidden_dim,
        queue_size=cfg.moco.queue_size,
        temperature=cfg.moco.temperature,
        mask_same_subject=cfg.moco.mask_same_subject,
        shuffle_bn=cfg.moco.shuffle_bn,
        bn_splits=cfg.moco.bn_splits,
    )


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optim.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.sgd_momentum, weight_decay=cfg.optim.weight_decay)
    if cfg.optim.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    raise ValueError(f"optim.name={cfg.optim.name!r} must be 'sgd' or 'adamw'")


def build_loader(dataset, cfg: Config, rt: Runtime) -> tuple[DataLoader, ResumableSampler]:
    """The loader a training run reads batches from, and its resumable sampler.

    Raises:
        MocomriError: ``data.views_on=workers`` on a device other than the CPU.
    """
    dataset.views_in_workers = cfg.data.num_workers > 0 and cfg.data.views_on == "workers"
    if dataset.views_in_workers and rt.device.type != "cpu":
        raise MocomriError(f"data.views_on=workers needs a CPU run; on {rt.device} the views are made on the device")
    sampler = ResumableSampler(len(dataset), cfg.train.batch_size, cfg.train.seed, rt.rank, rt.world_size)
    loader = DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=dataset.collate,
        pin_memory=rt.device.type == "cuda",
        drop_last=True,
        prefetch_factor=4 if cfg.data.num_workers > 0 else None,
        persistent_workers=cfg.data.num_workers > 0,  # no re-spawn of the workers at every epoch
        # A private generator: creating an iterator would otherwise draw from the global torch
        # RNG, which a resumed run (one extra iterator) would then replay differently.
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    return loader, sampler


def make_runtime(cfg: Config) -> Runtime:
    rank, world_size, local_rank = init_distributed()
    device = select_device(cfg.train.device, local_rank)
    return Runtime(
        device=device,
        precision=select_precision(cfg.train.precision, device, spatial_dims_of(cfg.model.name)),
        channels_last=select_channels_last(cfg.train.channels_last, device, spatial_dims_of(cfg.model.name)),
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
    )


def pretrain(cfg: Config, resume: bool = True) -> PretrainResult:
    """Runs (or resumes) MoCo pretraining as ``cfg`` describes; returns where it wrote.

    Writes into ``cfg.train.out_dir``: ``config.yaml``, ``metrics.jsonl``, ``tb/``,
    ``checkpoints/`` and, at the end, ``encoder.pt`` (the backbone's weights only) and
    ``summary.json``.

    Raises:
        NonFiniteLossError: the loss became NaN/Inf (the last good checkpoint is kept).
        CollapsedRunError: the embeddings collapsed and ``train.stop_on_collapse`` is set (the
            last good checkpoint is kept).
    """
    from mocomri.data.datasets import build_pretrain_dataset
    from mocomri.data.manifest import read_manifest

    rt = make_runtime(cfg)
    run_dir = Path(cfg.train.out_dir)
    seed_everything(cfg.train.seed + rt.rank, cfg.train.deterministic)

    # ---- data
    manifest = read_manifest(cfg.data.manifest)
    dataset = build_pretrain_dataset(manifest, cfg.data, cfg.augment, cfg.data.pretrain_splits)
    n_items = len(dataset)
    # Same-subject masking within a bound on the queue it removes: where one subject holds most
    # items, masking it leaves almost no negatives and the run collapses. Unmasked subjects get
    # id -1, which the loss never masks. (subject_id: (S,), an item's id -> the id the loss sees)
    subject_id = torch.arange(len(dataset.subjects))
    unmasked = False
    if cfg.moco.mask_same_subject:
        plan = plan_masking(dataset.item_subjects, cfg.moco.mask_max_share)
        subject_id = torch.tensor([i if s in plan.masked else -1 for i, s in enumerate(dataset.subjects)])
        unmasked = bool(plan.unmasked)
        if unmasked and rt.is_main:
            print(f"note: {plan.message(cfg.moco.mask_max_share)}")
    subject_id = subject_id.to(rt.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rt.is_main:
        save_config(cfg, run_dir / "config.yaml")
    if rt.is_main and cfg.moco.queue_size >= n_items and (unmasked or not cfg.moco.mask_same_subject):
        # With masking, a query's own subject (hence its own image) is never its negative.
        warnings.warn(
            f"moco.queue_size={cfg.moco.queue_size} >= {n_items} pretraining items: keys of a query's own "
            "image (from earlier epochs) sit in the queue as negatives where its subject is not masked",
            stacklevel=2,
        )
    loader, sampler = build_loader(dataset, cfg, rt)
    steps_per_epoch = sampler.batches_per_epoch
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * steps_per_epoch)

    # ---- model, optimiser, state
    spatial_dims = spatial_dims_of(cfg.model.name)
    fmt = torch.contiguous_format
    if rt.channels_last:
        fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    model = build_model(cfg).to(rt.device, memory_format=fmt)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")
    start_step = 0
    ckpt_path = last_checkpoint(run_dir) if resume else None
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path, map_location=rt.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_step = int(state["step"])
        set_rng_state(state["rng"])
        if rt.rank > 0:  # the checkpoint holds rank 0's RNG; keep the ranks' streams distinct
            torch.manual_seed(cfg.train.seed * 7919 + rt.rank * 104_729 + start_step)
        if rt.is_main:
            print(f"resuming from {ckpt_path} at step {start_step}/{total_steps}")
    net = model
    if rt.distributed:
        # Buffers are not broadcast: the queue is kept identical by gathering keys from all ranks,
        # and broadcasting it (K x C floats) every step would dominate the communication.
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device] if rt.device.type == "cuda" else None, broadcast_buffers=False
        )
    if cfg.train.compile:
        net = torch.compile(net)
    peak_lr = scaled_lr(cfg.optim.lr, cfg.train.batch_size * rt.world_size)
    warmup_steps = cfg.optim.warmup_epochs * steps_per_epoch
    momentum_at = MOMENTUM_SCHEDULES[cfg.moco.momentum_schedule]

    logger = RunLogger(run_dir, tensorboard=cfg.log.tensorboard, enabled=rt.is_main)
    knn = _KnnMonitor(manifest, cfg, rt) if rt.is_main and cfg.log.knn_monitor else None
    if rt.is_main:
        norm = f", GroupNorm in {cfg.model.norm_groups} groups" if cfg.model.norm == "group" else ""
        print(
            f"pretraining {cfg.model.name} (width {cfg.model.width}{norm}) on {n_items} items: "
            f"{total_steps} steps of {cfg.train.batch_size}x{rt.world_size}, device {rt.device}, "
            f"{rt.precision}{', channels-last' if rt.channels_last else ''}, K={cfg.moco.queue_size}, "
            f"m={cfg.moco.momentum} ({cfg.moco.momentum_schedule}), T={cfg.moco.temperature} -> {run_dir}"
        )

    def checkpoint(step: int) -> None:
        if rt.is_main:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "config": config_to_dict(cfg),
                "rng": rng_state(),
            }
            save_checkpoint(run_dir, state, step, keep=cfg.train.keep_checkpoints)
        if rt.distributed:
            dist.barrier()

    # The kNN of the encoder as initialised: the figure every later kNN is to beat.
    if knn is not None and start_step == 0:
        knn_init = knn.measure(model.backbone, 0)
        if knn_init is not None:
            logger.log(0, {"knn_acc": knn_init}, kind="monitor")
            print(f"kNN acc {knn_init:.3f} at initialisation (random init: the baseline of every later kNN)")

    # ---- the loop
    model.train()
    first_bad_step = torch.full((), -1, dtype=torch.long, device=rt.device)  # checked at log steps only
    collapse = _CollapseWatch(cfg.train.collapse_spread, cfg.train.collapse_patience_steps, cfg.train.stop_on_collapse)
    window = _Window(rt.device)
    monitor_s = 0.0  # time in the kNN monitor, left out of the images/s
    data_iter = None
    started = time.perf_counter()
    deadline = started + cfg.train.time_budget_min * 60 if cfg.train.time_budget_min > 0 else math.inf
    stopped_early = False
    last = {"loss": float("nan"), "accuracy": float("nan")}
    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=start_step, disable=not (rt.is_main and cfg.log.progress), unit="step", dynamic_ncols=True)
    step = start_step
    for step in range(start_step, total_steps):
        epoch, batch_in_epoch = divmod(step, steps_per_epoch)
        if data_iter is None or batch_in_epoch == 0:
            sampler.set_position(epoch, batch_in_epoch)
            data_iter = iter(loader)

        t_wait = time.perf_counter()
        batch = next(data_iter)
        window.wait_s += time.perf_counter() - t_wait
        t_views = time.perf_counter()
        view_q, view_k = dataset.make_views(batch, rt.device)  # (B, C, *S) each, made on the device
        view_q, view_k = view_q.contiguous(memory_format=fmt), view_k.contiguous(memory_format=fmt)
        window.views_s += time.perf_counter() - t_views
        subjects = subject_id[batch["subject"].to(rt.device, non_blocking=True)]  # (B,)

        lr = warmup_cosine_lr(step, total_steps, warmup_steps, peak_lr, cfg.optim.min_lr_ratio)
        m = momentum_at(step / total_steps, cfg.moco.momentum)
        out = train_step(net, optimizer, scaler, view_q, view_k, subjects, lr=lr, momentum=m, autocast=rt.autocast)

        # Non-finite losses are recorded on the device and looked at only at log steps, so the
        # hot loop never waits for the device; a checkpoint is written only after such a look.
        loss = out.loss.detach()
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss), step, first_bad_step)
        window.add(out, view_q.shape[0] * rt.world_size)
        bar.update(1)

        done = step + 1
        end_of_epoch = done % steps_per_epoch == 0
        out_of_time = time.perf_counter() > deadline
        last_step = done == total_steps or out_of_time
        # Every checkpoint_every_steps steps, not at epoch ends: a resumed run re-enters an epoch
        # at any step, and on a small cohort an epoch is a handful of steps (7 for 124 volumes at
        # batch 16), where a 26 MB checkpoint after each wrote 30 GB over a 4000-step run (its
        # cost in throughput was within the noise of a quiet bench: 66.7 vs 67.6 volumes/s).
        checkpoint_due = done % cfg.train.checkpoint_every_steps == 0 or last_step
        # A checkpoint step is also a log step: a checkpoint is written only after a look at the
        # loss (finite) and the embeddings (not collapsing).
        if done % cfg.log.every_steps == 0 or end_of_epoch or checkpoint_due:
            _raise_if_bad(first_bad_step, steps_per_epoch, run_dir)
            record = window.flush(lr=lr, momentum=m)
            record.update(_embedding_stats(out, rt))
            last = {"loss": record["loss"], "accuracy": record["contrastive_acc"]}
            logger.log(done, record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['contrastive_acc']:.2f}")
            collapse.update(done, record["spread"])
            if collapse.stops_run(done):
                raise CollapsedRunError(collapse.message(done, record["spread"], _kept_checkpoint(run_dir)))
            if collapse.since is not None and rt.is_main:
                tqdm.write(f"warning: embedding spread {record['spread']:.3f} at step {done}: the embeddings are collapsing")
        # While collapsing, the last checkpoint is kept from before, for a run that then stops;
        # a run that ends (rather than stops) writes its final state whatever the spread.
        if checkpoint_due and (last_step or not collapse.holds_checkpoints):
            checkpoint(done)
        knn_acc = None
        if knn is not None and (done % cfg.log.knn_every_steps == 0 or last_step):
            t_knn = time.perf_counter()
            knn_acc = knn.measure(model.backbone, done)
            spent = time.perf_counter() - t_knn
            monitor_s += spent
            window.exclude(spent)
            if knn_acc is not None:
                logger.log(done, {"knn_acc": knn_acc}, kind="monitor")
                if not end_of_epoch:
                    tqdm.write(f"step {done}/{total_steps}  kNN acc {knn_acc:.3f}")
        if end_of_epoch and rt.is_main:
            n_epochs = math.ceil(total_steps / steps_per_epoch)
            train_s = max(time.perf_counter() - started - monitor_s, 1e-9)
            tqdm.write(
                f"epoch {epoch + 1}/{n_epochs}  loss {last['loss']:.4f}  contrastive acc {last['accuracy']:.3f}"
                + (f"  kNN acc {knn_acc:.3f}" if knn_acc is not None else "")
                + f"  {(done - start_step) * cfg.train.batch_size * rt.world_size / train_s:.0f} img/s (kNN time excluded)"
            )
        if out_of_time:
            stopped_early = done < total_steps
            if rt.is_main:
                tqdm.write(f"time budget of {cfg.train.time_budget_min} min reached at step {done}/{total_steps}")
            break
    bar.close()
    final_step = step + 1 if total_steps > start_step else start_step
    wall = time.perf_counter() - started

    if rt.is_main:
        export_encoder(model, run_dir / "encoder.pt")
        summary = {
            "steps": final_step,
            "total_steps": total_steps,
            "final_loss": last["loss"],
            "final_contrastive_acc": last["accuracy"],
            "wall_time_s": wall,
            "stopped_early": stopped_early,
            "device": str(rt.device),
            "precision": rt.precision,
            "world_size": rt.world_size,
            "encoder_sha1": file_digest(run_dir / "encoder.pt"),
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"done: {final_step} steps in {wall / 60:.1f} min; encoder -> {run_dir / 'encoder.pt'}; tensorboard --logdir {run_dir / 'tb'}")
    logger.close()
    if rt.distributed:
        dist.barrier()
    return PretrainResult(run_dir, final_step, last["loss"], last["accuracy"], wall, stopped_early)


def export_encoder(model: MoCo, path: Path) -> None:
    """Saves the backbone's ``state_dict`` alone: it loads into the plain torchvision/MONAI network."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
    atomic_save(state, path)


def _kept_checkpoint(run_dir: Path) -> str:
    """Names the checkpoint a stopped run leaves to resume from."""
    good = last_checkpoint(run_dir)
    return f"the last good checkpoint is {good} (step {load_checkpoint(good)['step']})" if good else "no checkpoint had been written yet"


def _raise_if_bad(first_bad_step: torch.Tensor, steps_per_epoch: int, run_dir: Path) -> None:
    bad = int(first_bad_step.item())
    if bad < 0:
        return
    raise NonFiniteLossError(
        f"the loss became NaN/Inf at step {bad + 1} (epoch {bad // steps_per_epoch + 1}, "
        f"batch {bad % steps_per_epoch + 1}); the run stopped and {_kept_checkpoint(run_dir)}. "
        "Lower optim.lr, or try train.precision=fp32."
    )


class _CollapseWatch:
    """Tracks since which log step the embedding spread has stayed below ``train.collapse_spread``.

    With ``stop`` (``train.stop_on_collapse``), the run stops once the spread has been below it
    at every log step for ``patience_steps`` steps, and meanwhile writes no periodic checkpoint
    (one written then would not be a good one to go back to). Without ``stop``, a low spread is
    only warned about.
    """

    def __init__(self, threshold: float, patience_steps: int, stop: bool):
        self.threshold = threshold
        self.patience_steps = patience_steps
        self.stop = stop
        self.since: int | None = None  # the first log step of the current stretch below the threshold

    def update(self, step: int, spread: float) -> None:
        if spread >= self.threshold:
            self.since = None
        elif self.since is None:
            self.since = step

    @property
    def holds_checkpoints(self) -> bool:
        return self.stop and self.since is not None

    def stops_run(self, step: int) -> bool:
        return self.holds_checkpoints and step - self.since >= self.patience_steps

    def message(self, step: int, spread: float, kept: str) -> str:
        return (
            f"the embeddings collapsed: their spread was {spread:.3f} at step {step}, below "
            f"train.collapse_spread={self.threshold:g} at every log step since step {self.since} "
            f"(train.collapse_patience_steps={self.patience_steps}); the run stopped and {kept}. Likely causes: "
            "a learning rate too high (lower optim.lr), same-subject masking removing most negatives "
            "(moco.mask_same_subject), or too small a moco.temperature or moco.queue_size. "
            "train.stop_on_collapse=false lets the run go on"
        )


def _embedding_stats(out, rt: Runtime) -> dict[str, float]:
    q, k = out.q.detach(), out.k.detach()
    spread = embedding_spread(q)
    if rt.distributed:
        # The spread decides whether the run stops, which every rank must decide alike.
        dist.all_reduce(spread)
        spread = spread / rt.world_size
    return {
        "spread": float(spread),
        "alignment": float(alignment(q, k)),
        "uniformity": float(uniformity(q)),
    }


class _Window:
    """Sums of the step outputs between two log steps, kept on the device until logged."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        self.steps = 0
        self.images = 0
        self.wait_s = 0.0
        self.views_s = 0.0  # on a GPU, the time to queue the views' kernels, not to run them
        self.t0 = time.perf_counter()

    def exclude(self, seconds: float) -> None:
        """Leaves time spent outside training (the kNN monitor) out of the window's rates."""
        self.t0 += seconds

    def add(self, out, images: int) -> None:
        vals = torch.stack([out.loss.detach(), out.accuracy.detach(), out.pos_logit.detach(), out.neg_logit.detach()])
        self.sums += vals.double()
        self.steps += 1
        self.images += images

    def flush(self, **extra: float) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        mean = (self.sums / max(self.steps, 1)).tolist()
        record = {
            "loss": mean[0],
            "contrastive_acc": mean[1],
            "pos_logit": mean[2],
            "neg_logit": mean[3],
            "images_per_s": self.images / elapsed,
            "data_wait_frac": self.wait_s / elapsed,
            "views_frac": self.views_s / elapsed,
            **extra,
        }
        self.reset()
        return record


class _KnnMonitor:
    """kNN accuracy of the frozen backbone when the manifest has labelled splits.

    The loop measures it at step 0, every ``log.knn_every_steps`` steps and at the last step:
    an epoch can be a few dozen steps, and a measurement at every epoch's end cost a run on
    such a set a large share of its time.

    The same features and kNN as the probe's report (:func:`mocomri.eval.features.extract_features`,
    :func:`mocomri.eval.probe.fit_knn_probe`), on at most ``log.knn_max_items`` items per side.
    """

    def __init__(self, manifest, cfg: Config, rt: Runtime):
        self.ready = False
        labelled = [i for i, r in enumerate(manifest.rows) if r.label]
        train = [i for i in labelled if manifest.rows[i].split == "train"]
        test = [i for i in labelled if manifest.rows[i].split in ("val", "test")]
        if not train or not test:
            return
        from mocomri.data.datasets import build_eval_dataset

        self.rt = rt
        self.k = cfg.log.knn_k
        labels = [r.label for r in manifest.rows]
        self.sides = []  # (dataset, labels of its items)
        for splits in (["train"], ["val"] if any(manifest.rows[i].split == "val" for i in test) else ["test"]):
            ds = build_eval_dataset(manifest, cfg.data, splits)
            rows = ds.item_rows
            if len(ds) > cfg.log.knn_max_items:
                g = torch.Generator().manual_seed(0)
                keep = sorted(torch.randperm(len(ds), generator=g)[: cfg.log.knn_max_items].tolist())
                ds, rows = torch.utils.data.Subset(ds, keep), [rows[i] for i in keep]
            self.sides.append((ds, [labels[r] for r in rows]))
        self.ready = True

    def measure(self, backbone: torch.nn.Module, step: int) -> float | None:
        if not self.ready:
            return None
        import numpy as np

        from mocomri.eval.features import extract_features
        from mocomri.eval.probe import fit_knn_probe

        was_training = backbone.training
        (ftr, ytr), (fte, yte) = (
            (extract_features(backbone, ds, batch_size=256, device=self.rt.device, bf16=self.rt.precision == "bf16"),
             np.array(y)) for ds, y in self.sides
        )
        backbone.train(was_training)
        return float((fit_knn_probe(ftr, ytr, k=self.k).predict(fte) == yte).mean())
