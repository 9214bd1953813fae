"""Training a module on a frozen encoder: cross-entropy with a linear head, or the MoCo objective.

Only the module's parameters (and the head's, or MoCo's projector's) are optimised; the base
encoder is frozen and its BatchNorm layers stay in eval mode (see :class:`PEMEncoder`).

- ``ce``: the labelled ``train`` rows, deterministic inputs, a linear head on the pooled
  features beside the module; the head is stored in the module file.
- ``moco``: the unlabelled pretraining splits, the project's MoCo module and training step
  (:func:`mocomri.train.step.train_step`) with the module on the query encoder and the key
  encoder as its momentum copy. Frozen BatchNorm has no batch statistics to leak the positive,
  so no shuffling-BN is needed. The projector is not stored: it is no task head.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mocomri.config import Config
from mocomri.data.datasets import build_pretrain_dataset
from mocomri.data.manifest import read_manifest
from mocomri.errors import DataError
from mocomri.eval.features import extract_features, resolve_device
from mocomri.eval.items import LabelledItems
from mocomri.eval.probe import fit_linear_probe
from mocomri.files import file_digest
from mocomri.models import MoCo
from mocomri.peft.encoder import PEMEncoder
from mocomri.peft.inputs import labelled_items, load_base
from mocomri.peft.module_file import PEM, Head
from mocomri.peft.spec import PEMSpec, default_targets
from mocomri.train.finetune import endless_batches, fine_tune_ce, sampler_batches
from mocomri.train.step import train_step

OBJECTIVES = ("ce", "moco")
HEAD_INITS = ("random", "probe")


@dataclass
class TrainOptions:
    """Optimisation settings of :func:`train_module`."""

    objective: str = "ce"  # "ce" | "moco"
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.99  # m of the key encoder (moco)
    seed: int = 0  # data order and head init; the module's init seed is PEMSpec.seed
    head_init: str = "random"  # "random" | "probe": the head starts as the linear probe (LP-FT)
    device: str = "auto"


def train_module(encoder: str | Path, manifest: str | Path, spec: PEMSpec, config: Config | None = None,
                 options: TrainOptions | None = None) -> PEM:
    """Trains a module (and, for ``ce``, its head) on ``encoder`` frozen.

    Args:
        encoder: a pretraining run directory, an ``encoder.pt`` or ``random``.
        manifest: the manifest: its labelled ``train`` rows (``ce``) or its pretraining splits (``moco``).
        spec: kind, targets (empty: :func:`default_targets`), rank, alpha, init, seed.
        config: data settings and architecture; default: the run's config.
        options: objective, steps, batch size, learning rate, device.

    Returns:
        The module, with its provenance (objective, manifest and its SHA-1, label names, options).

    Raises:
        ValueError: an unknown objective or a bad target.
        DataError: the manifest has nothing to train on.
    """
    options = options or TrainOptions()
    if options.objective not in OBJECTIVES:
        raise ValueError(f"objective={options.objective!r} must be one of {OBJECTIVES}")
    if options.head_init not in HEAD_INITS:
        raise ValueError(f"head_init={options.head_init!r} must be one of {HEAD_INITS}")
    base = load_base(encoder, config)
    if not spec.targets:
        spec = PEMSpec(**{**asdict(spec), "targets": default_targets(base.encoder, spec.kind)})
    device = resolve_device(options.device)
    wrapped = PEMEncoder(base.encoder, spec).to(device)
    torch.manual_seed(options.seed)
    heads: list[Head] = []
    if options.objective == "ce":
        heads.append(_train_ce(wrapped, base.feature_dim, manifest, base.config, options, device))
    else:
        _train_moco(wrapped, base.feature_dim, manifest, base.config, options, device)
    model = base.config.model
    return wrapped.cpu().to_pem(model.name, model.in_channels, model.width, heads, {
        "operation": "train",
        "objective": options.objective,
        "manifest": str(manifest),
        "manifest_sha1": file_digest(manifest),
        "labels": list(heads[0].labels) if heads else None,
        "encoder": base.source.provenance(),
        "options": asdict(options),
    })


def _train_ce(wrapped: PEMEncoder, feature_dim: int, manifest: str | Path, config: Config,
              options: TrainOptions, device: torch.device) -> Head:
    items = labelled_items(manifest, config, "train")
    return train_ce(wrapped, wrapped.trainable_parameters(), feature_dim, items, options, device)


def train_ce(model: nn.Module, parameters: list[nn.Parameter], feature_dim: int, items: LabelledItems,
             options: TrainOptions, device: torch.device) -> Head:
    """Trains ``parameters`` of ``model`` and a new linear head with cross-entropy on ``items``.

    The fine-tuning loop (:func:`mocomri.train.finetune.fine_tune_ce`) at a constant learning rate,
    on the evaluation dataset's deterministic inputs (no augmentation), batches drawn with
    replacement by :func:`~mocomri.train.finetune.sampler_batches` seeded by ``options.seed``.
    ``model`` is put in train mode (a :class:`PEMEncoder` keeps its BatchNorm in eval mode) and
    left in eval mode. Module training passes the module's parameters, full fine-tuning all of them.

    With ``options.head_init="probe"`` the head starts as the linear probe fitted on ``model``'s
    features before training (:func:`probe_head`): LP-FT (Kumar et al., "Fine-tuning can distort
    pretrained features and underperform out-of-distribution", ICLR 2022). A random head's first
    gradients pull the features toward whatever it happens to read; a probe head already reads the
    features, so the trained weights move only to mend its errors.

    Returns:
        The head, on the CPU.
    """
    head = nn.Linear(feature_dim, len(items.classes)).to(device)
    if options.head_init == "probe":
        weight, bias = probe_head(model, items, seed=options.seed, device=device)
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
    batches = sampler_batches(items.dataset, items.labels, min(options.batch_size, len(items.dataset)), options.seed)
    fine_tune_ce(model, head, parameters, batches, steps=options.steps, lr=lambda step: options.lr,
                 weight_decay=options.weight_decay, device=device)
    return Head(items.classes, head.weight.detach().cpu(), head.bias.detach().cpu())


def probe_head(model: nn.Module, items: LabelledItems, *, seed: int = 0,
               device: torch.device | str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The project's linear probe (:func:`mocomri.eval.probe.fit_linear_probe`) on ``model``'s
    features of ``items``, written as one linear layer on the unstandardised features.

    The probe is ``z = (x - mean) / scale``, then logistic regression ``W z + b``; as one layer
    on ``x`` that is ``W / scale`` and ``b - (W / scale) · mean``. Two classes have one
    scikit-learn logit ``w·z + b`` for the second class; a softmax over ``(-s/2, s/2)`` is the
    same sigmoid, so the rows are ``-w/2`` and ``w/2``.

    Raises:
        DataError: a class has no training row (the probe has no row for it).

    Shape:
        returns: weight (K, F), bias (K,), float32 on the CPU
    """
    missing = sorted(set(items.classes) - {items.classes[i] for i in np.unique(items.labels)})
    if missing:
        raise DataError(f"head_init=probe: no training rows of class(es) {missing}; the probe has nothing to "
                        "start their head rows from")
    features = extract_features(model, items.dataset, device=device)  # (N, F)
    probe = fit_linear_probe(features, items.labels, items.subjects, seed=seed)
    scaler, classifier = probe[0], probe[-1]
    coef = classifier.coef_ / scaler.scale_  # (K or 1, F)
    intercept = classifier.intercept_ - coef @ scaler.mean_  # (K or 1,)
    if coef.shape[0] == 1:
        coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
    return (torch.as_tensor(coef, dtype=torch.float32), torch.as_tensor(intercept, dtype=torch.float32))


def _train_moco(wrapped: PEMEncoder, feature_dim: int, manifest: str | Path, config: Config,
                options: TrainOptions, device: torch.device) -> None:

    dataset = build_pretrain_dataset(read_manifest(manifest), config.data, config.augment, config.data.pretrain_splits)
    batch_size = min(options.batch_size, len(dataset))
    moco = MoCo(wrapped, feature_dim, proj_dim=config.moco.proj_dim, proj_hidden_dim=config.moco.proj_hidden_dim,
                # fewer negatives than items: a query's own earlier keys must not fill the queue
                queue_size=max(1, min(config.moco.queue_size, len(dataset) - batch_size)),
                temperature=config.moco.temperature, shuffle_bn="none").to(device)
    trainable = [p for p in moco.parameters() if p.requires_grad]  # the module and the projector
    optimizer = torch.optim.AdamW(trainable, lr=options.lr, weight_decay=options.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    batches = endless_batches(dataset, batch_size, options.seed, collate=dataset.collate)
    moco.train()
    for _ in range(options.steps):
        batch = next(batches)
        view_q, view_k = dataset.make_views(batch, device)  # (B, C, *S) each
        train_step(moco, optimizer, scaler, view_q, view_k, batch["subject"].to(device),
                   lr=options.lr, momentum=options.momentum, autocast=contextlib.nullcontext)
    wrapped.eval()
