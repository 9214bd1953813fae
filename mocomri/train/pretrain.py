"""The MoCo pretraining loop: batch → views → lr and momentum → step → log → checkpoint → stop.

Everything a run needs to continue after a crash lives in its checkpoint (model, momentum
encoder, queue, optimiser, grad scaler, step, RNG states); the data order and augmentation
seeds are pure functions of the step (:class:`~mocomri.train.sampler.ResumableSampler`), so a
resumed run draws the same batches an uninterrupted one would have.

A run resumes only under the config its checkpoint was computed with, give or take the keys of
:data:`~mocomri.config.CHANGES_ALLOWED_ON_RESUME`; another config is refused before anything in
the run directory changes. A run started over (``resume=False``) first moves the previous run's
outputs to ``RUN_DIR/previous/<time>/``. A fresh run's encoders start from ``model.init``'s weights when it is set
(:mod:`mocomri.models.initial_weights`); a resumed run restores its checkpoint instead.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from mocomri.config import Config, config_changes, config_to_dict, save_config
from mocomri.data.datasets import build_pretrain_dataset
from mocomri.data.manifest import Manifest, read_manifest
from mocomri.errors import ConfigError, MocomriError
from mocomri.files import file_digest
from mocomri.models import MoCo, encoder_from_config, spatial_dims_of
from mocomri.models.initial_weights import InitialWeights, read_initial_weights
from mocomri.models.momentum import MOMENTUM_SCHEDULES
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
from mocomri.train.guards import CollapsedRunError, CollapseGuard, NonFiniteGuard, NonFiniteLossError, kept_checkpoint
from mocomri.train.log_window import LogWindow
from mocomri.train.monitors import embedding_stats
from mocomri.train.optimizer import build_optimizer
from mocomri.train.runtime import (
    Runtime,
    init_distributed,
    memory_format,
    seed_everything,
    select_channels_last,
    select_device,
    select_precision,
)
from mocomri.train.sampler import ResumableSampler
from mocomri.train.step import train_step


__all__ = ["CollapsedRunError", "Monitor", "MonitorFactory", "NonFiniteLossError", "PretrainResult", "build_loader",
           "build_model", "build_optimizer", "export_encoder", "make_runtime", "pretrain"]


class Monitor(Protocol):
    """A figure of the frozen backbone measured during pretraining (the kNN accuracy, say)."""

    def measure(self, backbone: torch.nn.Module, step: int) -> float | None: ...


# (manifest, config, runtime) -> the monitor, e.g. :class:`mocomri.eval.knn_monitor.KnnMonitor`
MonitorFactory = Callable[[Manifest, Config, Runtime], Monitor]


@dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    final_loss: float
    final_accuracy: float
    wall_time_s: float
    stopped_early: bool


def build_model(cfg: Config, init: InitialWeights | None = None) -> MoCo:
    """The MoCo module a config describes, on the CPU.

    Args:
        init: the weights both encoders start from (``model.init``, read and checked by
            :func:`~mocomri.models.initial_weights.read_initial_weights`); None: random init. The
            projection heads always start new: they are specific to a pretraining run.
    """
    # Drawn at random even when init replaces it: the heads then draw what they would under random init.
    backbone, feature_dim = encoder_from_config(cfg.model)
    if init is not None:
        backbone.load_state_dict(init.state)
    return MoCo(  # the momentum encoder starts as a copy of the backbone
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


def pretrain(cfg: Config, resume: bool = True, monitor: MonitorFactory | None = None) -> PretrainResult:
    """Runs (or resumes) MoCo pretraining as ``cfg`` describes; returns where it wrote.

    Writes into ``cfg.train.out_dir``: ``config.yaml``, ``metrics.jsonl``, ``tb/``, ``checkpoints/``
    and, at the end, ``encoder.pt`` (the backbone's weights only) and ``summary.json``. ``monitor``
    builds the monitor the run logs as ``knn_acc`` (on the main rank, where ``log.knn_monitor`` is
    set); without one the run logs none. Resuming, starting over, ``model.init``: the module docstring.

    Raises:
        ConfigError: the checkpoint to resume was computed with another config (the run directory is
            left as it was), or ``model.init``'s weights do not fit ``model`` (FileNotFoundError: there are none).
        NonFiniteLossError: the loss became NaN/Inf (the last good checkpoint is kept).
        CollapsedRunError: the embeddings collapsed and ``train.stop_on_collapse`` is set (the
            last good checkpoint is kept).
    """
    rt = make_runtime(cfg)
    run_dir = Path(cfg.train.out_dir)
    start = _Start.of(run_dir, cfg, resume)  # before any data is read or file written (a refusal changes nothing)
    seed_everything(cfg.train.seed + rt.rank, cfg.train.deterministic)
    inputs = _Inputs(cfg, rt)
    _open_run_dir(run_dir, cfg, rt, start_over=not resume)
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * inputs.steps_per_epoch)
    model = build_model(cfg, start.init).to(rt.device, memory_format=inputs.memory_format)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.precision == "fp16")
    start_step = _restore(start, model, optimizer, scaler, cfg, rt, total_steps)
    net = _wrap(model, cfg, rt)
    peak_lr = scaled_lr(cfg.optim.lr, cfg.train.batch_size * rt.world_size)
    warmup_steps = cfg.optim.warmup_epochs * inputs.steps_per_epoch
    momentum_at = MOMENTUM_SCHEDULES[cfg.moco.momentum_schedule]
    watch = _Watch(cfg, rt, run_dir, inputs, start_step, total_steps, monitor)
    watch.start(model.backbone)

    model.train()
    deadline = time.perf_counter() + cfg.train.time_budget_min * 60 if cfg.train.time_budget_min > 0 else math.inf
    step = start_step
    for step in range(start_step, total_steps):
        view_q, view_k, subjects = inputs.at(step, watch.window)  # (B, C, *S) twice, made on the device; (B,)
        lr = warmup_cosine_lr(step, total_steps, warmup_steps, peak_lr, cfg.optim.min_lr_ratio)
        m = momentum_at(step / total_steps, cfg.moco.momentum)
        out = train_step(net, optimizer, scaler, view_q, view_k, subjects, lr=lr, momentum=m, autocast=rt.autocast)
        watch.add(step, out, view_q.shape[0] * rt.world_size)

        done = step + 1
        out_of_time = time.perf_counter() > deadline
        last_step = done == total_steps or out_of_time
        # Checkpoints every checkpoint_every_steps steps (not at epoch ends: a resumed run
        # re-enters an epoch at any step), and each only after a log step has looked at the loss
        # (finite) and the embeddings (not collapsing).
        checkpoint_due = done % cfg.train.checkpoint_every_steps == 0 or last_step
        if done % cfg.log.every_steps == 0 or done % inputs.steps_per_epoch == 0 or checkpoint_due:
            watch.log(done, out, lr=lr, momentum=m)  # raises NonFiniteLossError, CollapsedRunError
        if checkpoint_due and watch.checkpoint_allowed(last_step):
            _save(run_dir, done, model, optimizer, scaler, cfg, rt, start.init_sha1)
        watch.after_step(done, model.backbone, last_step)  # the kNN monitor and the epoch line
        if out_of_time:
            watch.out_of_time(done)
            break
    final_step = step + 1 if total_steps > start_step else start_step
    return _finish(run_dir, model, watch, final_step, rt, start.init_sha1)


class _Inputs:
    """The pretraining items, their loader, and each step's two views and subject ids.

    Set-up checks same-subject masking against ``moco.mask_max_share`` before the run directory is
    written: where one subject holds most items, masking it leaves almost no negatives and the
    run collapses, so the largest subjects are left unmasked (id -1, which the loss never masks)
    and the run says so.
    """

    def __init__(self, cfg: Config, rt: Runtime):
        self.rt = rt
        self.manifest = read_manifest(cfg.data.manifest)
        self.dataset = build_pretrain_dataset(self.manifest, cfg.data, cfg.augment, cfg.data.pretrain_splits)
        subject_id = torch.arange(len(self.dataset.subjects))  # (S,): an item's id -> the id the loss sees
        unmasked = False
        if cfg.moco.mask_same_subject:
            plan = plan_masking(self.dataset.item_subjects, cfg.moco.mask_max_share)
            subject_id = torch.tensor([i if s in plan.masked else -1 for i, s in enumerate(self.dataset.subjects)])
            unmasked = bool(plan.unmasked)
            if unmasked and rt.is_main:
                print(f"note: {plan.message(cfg.moco.mask_max_share)}")
        self.subject_id = subject_id.to(rt.device)
        if rt.is_main and cfg.moco.queue_size >= len(self.dataset) and (unmasked or not cfg.moco.mask_same_subject):
            warnings.warn(
                f"moco.queue_size={cfg.moco.queue_size} >= {len(self.dataset)} pretraining items: keys of a query's own "
                "image (from earlier epochs) sit in the queue as negatives where its subject is not masked",
                stacklevel=3,
            )
        self.loader, self.sampler = build_loader(self.dataset, cfg, rt)
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.memory_format = memory_format(rt.channels_last, spatial_dims_of(cfg.model.name))
        self.batches = None

    def at(self, step: int, window: LogWindow) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step ``step``'s views and subject ids; a resumed run re-enters its epoch at the step's place.

        Shape: view_q, view_k (B, C, *S) on the device; subjects (B,).
        """
        epoch, position = divmod(step, self.steps_per_epoch)
        if self.batches is None or position == 0:
            self.sampler.set_position(epoch, position)
            self.batches = iter(self.loader)
        t_wait = time.perf_counter()
        batch = next(self.batches)
        window.wait_s += time.perf_counter() - t_wait
        t_views = time.perf_counter()
        view_q, view_k = self.dataset.make_views(batch, self.rt.device)
        fmt = self.memory_format
        view_q, view_k = view_q.contiguous(memory_format=fmt), view_k.contiguous(memory_format=fmt)
        window.views_s += time.perf_counter() - t_views
        return view_q, view_k, self.subject_id[batch["subject"].to(self.rt.device, non_blocking=True)]


@dataclass
class _Start:
    """Where a run starts: the checkpoint it resumes from, or step 0 from ``model.init``'s weights
    (or random init)."""

    checkpoint: Path | None = None
    state: dict | None = None  # the checkpoint's, until restored
    init: InitialWeights | None = None
    init_sha1: str = ""  # of model.init's file; every checkpoint carries it on to summary.json

    @classmethod
    def of(cls, run_dir: Path, cfg: Config, resume: bool) -> _Start:
        """Reads the run directory's last checkpoint (with ``resume``) and checks it was computed
        with ``cfg``; without one, reads and checks ``model.init``'s weights.

        Raises:
            ConfigError: the checkpoint's config differs from ``cfg`` in a key outside
                :data:`~mocomri.config.CHANGES_ALLOWED_ON_RESUME` (the message names each with
                both values), or the weights do not fit ``cfg.model``.
            FileNotFoundError: ``model.init`` names no weights.
        """
        path = last_checkpoint(run_dir) if resume else None
        if path is None:
            init = read_initial_weights(cfg.model.init, cfg.model) if cfg.model.init else None
            return cls(init=init, init_sha1=init.sha1 if init else "")
        # On the CPU: the RNG states must be CPU tensors; load_state_dict moves the rest.
        state = load_checkpoint(path, map_location="cpu")
        changes = config_changes(state["config"], config_to_dict(cfg))
        if changes:
            shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
            raise ConfigError(f"{run_dir} was pretrained with another config ({shown}); "
                              "--no-resume starts it over, or set another train.out_dir")
        return cls(checkpoint=path, state=state, init_sha1=state.get("init_sha1", ""))


# What a run writes into its directory; a run started over moves them aside first, so that no file
# is left beside a config.yaml that no longer describes it, and nothing of the earlier run is lost.
_RUN_OUTPUTS = ("config.yaml", "checkpoints/*.pt", "tb/events.out.tfevents.*", "metrics.jsonl", "encoder.pt",
                "summary.json")


def _open_run_dir(run_dir: Path, cfg: Config, rt: Runtime, start_over: bool) -> None:
    """Writes the resolved ``config.yaml`` (rank 0), after every check that could refuse the run;
    with ``start_over``, first moves the previous run's outputs to ``previous/<UTC time>/``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not rt.is_main:
        return
    old = [path for pattern in _RUN_OUTPUTS for path in run_dir.glob(pattern)] if start_over else []
    if old and any(p.name != "config.yaml" for p in old):
        aside = run_dir / "previous" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for path in old:
            target = aside / path.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
        print(f"starting over in {run_dir}: the previous run's {len(old)} file(s) moved to {aside}")
    save_config(cfg, run_dir / "config.yaml")


def _restore(start: _Start, model: MoCo, optimizer, scaler, cfg: Config, rt: Runtime, total_steps: int) -> int:
    """Loads the checkpoint a run resumes from, if any, into the run's state; returns its step."""
    if start.state is None:
        return 0
    state, start.state = start.state, None  # the run's own tensors hold it from here: no second copy
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    start_step = int(state["step"])
    set_rng_state(state["rng"])
    if rt.rank > 0:  # the checkpoint holds rank 0's RNG; keep the ranks' streams distinct
        torch.manual_seed(cfg.train.seed * 7919 + rt.rank * 104_729 + start_step)
    if rt.is_main:
        print(f"resuming from {start.checkpoint} at step {start_step}/{total_steps}")
    return start_step


def _wrap(model: MoCo, cfg: Config, rt: Runtime) -> torch.nn.Module:
    """The module the step calls: DDP across ranks, compiled where asked."""
    net = model
    if rt.distributed:
        # Buffers are not broadcast: the queue is kept identical by gathering keys from all ranks,
        # and broadcasting it (K x C floats) every step would dominate the communication.
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device] if rt.device.type == "cuda" else None, broadcast_buffers=False
        )
    return torch.compile(net) if cfg.train.compile else net


def _save(run_dir: Path, step: int, model: MoCo, optimizer, scaler, cfg: Config, rt: Runtime, init_sha1: str) -> None:
    """Writes the checkpoint of ``step`` (rank 0) and waits for every rank."""
    if rt.is_main:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "config": config_to_dict(cfg),
            "init_sha1": init_sha1,
            "rng": rng_state(),
        }
        save_checkpoint(run_dir, state, step, keep=cfg.train.keep_checkpoints)
    if rt.distributed:
        dist.barrier()


class _Watch:
    """What the loop shows and guards: the log, the progress bar, the kNN monitor, the epoch line,
    and the stops (a non-finite loss, collapsed embeddings)."""

    def __init__(self, cfg: Config, rt: Runtime, run_dir: Path, inputs: _Inputs, start_step: int, total_steps: int,
                 monitor: MonitorFactory | None):
        self.cfg, self.rt, self.run_dir = cfg, rt, run_dir
        self.start_step, self.total_steps, self.steps_per_epoch = start_step, total_steps, inputs.steps_per_epoch
        self.logger = RunLogger(run_dir, tensorboard=cfg.log.tensorboard, enabled=rt.is_main)
        self.knn = monitor(inputs.manifest, cfg, rt) if monitor is not None and rt.is_main and cfg.log.knn_monitor else None
        self.nonfinite = NonFiniteGuard(rt.device, inputs.steps_per_epoch)
        self.collapse = CollapseGuard(cfg.train.collapse_spread, cfg.train.collapse_patience_steps, cfg.train.stop_on_collapse)
        self.window = LogWindow(rt.device)
        self.last = {"loss": float("nan"), "accuracy": float("nan")}
        self.monitor_s = 0.0  # time in the kNN monitor, left out of the images/s
        self.n_items = len(inputs.dataset)
        self.stopped_early = False

    def start(self, backbone: torch.nn.Module) -> None:
        """Prints what runs, measures the kNN of the encoder as initialised, and starts the clock."""
        cfg, rt = self.cfg, self.rt
        if rt.is_main:
            norm = f", GroupNorm in {cfg.model.norm_groups} groups" if cfg.model.norm == "group" else ""
            print(
                f"pretraining {cfg.model.name} (width {cfg.model.width}{norm}) on {self.n_items} items: "
                f"{self.total_steps} steps of {cfg.train.batch_size}x{rt.world_size}, device {rt.device}, "
                f"{rt.precision}{', channels-last' if rt.channels_last else ''}, K={cfg.moco.queue_size}, "
                f"m={cfg.moco.momentum} ({cfg.moco.momentum_schedule}), T={cfg.moco.temperature} -> {self.run_dir}"
            )
        # The kNN of the encoder as initialised: the figure every later kNN is to beat.
        if self.knn is not None and self.start_step == 0:
            knn_init = self.knn.measure(backbone, 0)
            if knn_init is not None:
                self.logger.log(0, {"knn_acc": knn_init}, kind="monitor")
                print(f"kNN acc {knn_init:.3f} at initialisation (random init: the baseline of every later kNN)")
        self.bar = tqdm(total=self.total_steps, initial=self.start_step, disable=not (rt.is_main and cfg.log.progress),
                        unit="step", dynamic_ncols=True)
        self.window.reset()
        self.started = time.perf_counter()

    def add(self, step: int, out, images: int) -> None:
        """Takes a step's outputs in, on the device (no wait for it)."""
        self.nonfinite.add(step, out.loss.detach())
        self.window.add(out, images)
        self.bar.update(1)

    def log(self, done: int, out, **extra: float) -> None:
        """Logs the window's means and the embeddings' health; stops a run that went wrong."""
        self.nonfinite.check(self.run_dir)
        record = self.window.flush(**extra)
        record.update(embedding_stats(out.q, out.k, distributed=self.rt.distributed))
        self.last = {"loss": record["loss"], "accuracy": record["contrastive_acc"]}
        self.logger.log(done, record)
        self.bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['contrastive_acc']:.2f}")
        self.collapse.update(done, record["spread"])
        if self.collapse.stops_run(done):
            raise CollapsedRunError(self.collapse.message(done, record["spread"], kept_checkpoint(self.run_dir)))
        if self.collapse.since is not None and self.rt.is_main:
            tqdm.write(f"warning: embedding spread {record['spread']:.3f} at step {done}: the embeddings are collapsing")

    def checkpoint_allowed(self, last_step: bool) -> bool:
        """While collapsing, the last checkpoint is kept from before, for a run that then stops;
        a run that ends (rather than stops) writes its final state whatever the spread."""
        return last_step or not self.collapse.holds_checkpoints

    def after_step(self, done: int, backbone: torch.nn.Module, last_step: bool) -> None:
        """The kNN monitor every ``log.knn_every_steps`` steps and at the end; the epoch line."""
        end_of_epoch = done % self.steps_per_epoch == 0
        knn_acc = None
        if self.knn is not None and (done % self.cfg.log.knn_every_steps == 0 or last_step):
            t_knn = time.perf_counter()
            knn_acc = self.knn.measure(backbone, done)
            spent = time.perf_counter() - t_knn
            self.monitor_s += spent
            self.window.exclude(spent)
            if knn_acc is not None:
                self.logger.log(done, {"knn_acc": knn_acc}, kind="monitor")
                if not end_of_epoch:
                    tqdm.write(f"step {done}/{self.total_steps}  kNN acc {knn_acc:.3f}")
        if end_of_epoch and self.rt.is_main:
            n_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
            train_s = max(time.perf_counter() - self.started - self.monitor_s, 1e-9)
            images = (done - self.start_step) * self.cfg.train.batch_size * self.rt.world_size
            tqdm.write(
                f"epoch {done // self.steps_per_epoch}/{n_epochs}  loss {self.last['loss']:.4f}  "
                f"contrastive acc {self.last['accuracy']:.3f}"
                + (f"  kNN acc {knn_acc:.3f}" if knn_acc is not None else "")
                + f"  {images / train_s:.0f} img/s (kNN time excluded)"
            )

    def out_of_time(self, done: int) -> None:
        self.stopped_early = done < self.total_steps
        if self.rt.is_main:
            tqdm.write(f"time budget of {self.cfg.train.time_budget_min} min reached at step {done}/{self.total_steps}")


def _finish(run_dir: Path, model: MoCo, watch: _Watch, final_step: int, rt: Runtime, init_sha1: str) -> PretrainResult:
    """Exports the encoder and writes ``summary.json`` (rank 0); closes the log."""
    watch.bar.close()
    wall = time.perf_counter() - watch.started
    stopped_early = watch.stopped_early
    if rt.is_main:
        export_encoder(model, run_dir / "encoder.pt")
        summary = {
            "steps": final_step,
            "total_steps": watch.total_steps,
            "final_loss": watch.last["loss"],
            "final_contrastive_acc": watch.last["accuracy"],
            "wall_time_s": wall,
            "stopped_early": stopped_early,
            "device": str(rt.device),
            "precision": rt.precision,
            "world_size": rt.world_size,
            "encoder_sha1": file_digest(run_dir / "encoder.pt"),
            "init_sha1": init_sha1 or None,  # the weights model.init named; None: random init
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"done: {final_step} steps in {wall / 60:.1f} min; encoder -> {run_dir / 'encoder.pt'}; tensorboard --logdir {run_dir / 'tb'}")
    watch.logger.close()
    if rt.distributed:
        dist.barrier()
    return PretrainResult(run_dir, final_step, watch.last["loss"], watch.last["accuracy"], wall, stopped_early)


def export_encoder(model: MoCo, path: Path) -> None:
    """Saves the backbone's ``state_dict`` alone: it loads into the plain torchvision/MONAI network."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.backbone.state_dict().items()}
    atomic_save(state, path)
