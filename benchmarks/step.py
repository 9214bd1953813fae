"""A timed MoCo training step: the model, optimiser and inputs of one benchmark case.

:class:`TrainStep` runs what one iteration of :func:`mocomri.train.pretrain.pretrain` runs
(:class:`mocomri.train.speed.PretrainStep`, built by pretraining's own builders from the case's
config: autocast forward of :class:`~mocomri.models.MoCo`, ``zero_grad(set_to_none=True)``,
backward through the grad scaler, SGD with momentum and weight decay; then the training loop's
on-device NaN check; no host sync except the scaler's inf check in fp16) on fixed random
inputs, so that the data loader is not part of the measurement. With ``formulation="reference"``
it runs :mod:`tests.reference_moco` instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from tests.reference_moco import ReferenceMoCo, colab_split_bn, reference_train_step
from mocomri.config import Config, ModelConfig, MocoConfig, TrainConfig
from mocomri.models import encoder_from_config, spatial_dims_of
from mocomri.timing import device_sync
from mocomri.train.lr_schedule import scaled_lr
from mocomri.train.runtime import Runtime, memory_format, select_channels_last, select_precision
from mocomri.train.speed import PretrainStep

FORMULATIONS = ("mocomri", "reference")
PRECISIONS = ("fp32", "bf16", "fp16")
# "module": torch.compile of the whole MoCo module, as ``train.compile=true`` does;
# "encoders": nn.Module.compile() of the two backbones only (the rest stays eager).
COMPILE_MODES = ("none", "module", "encoders")


@dataclass(frozen=True)
class StepSpec:
    """One benchmark case. Defaults are those of ``configs/brain_tumor_cpu.yaml`` (MoCo v2,
    ResNet-18 at 64 px, batch 128, K = 4096, split BatchNorm over 8 sub-batches).

    ``precision`` and ``channels_last`` are explicit here; :func:`default_spec` resolves them the
    way a training run does (:mod:`mocomri.train.runtime`).
    """

    encoder: str = "resnet18"
    image_size: int = 64  # side of the 2D image or 3D patch
    batch_size: int = 128
    width: int = 64
    in_channels: int = 1
    queue_size: int = 4096  # K
    proj_dim: int = 128
    proj_hidden_dim: int = 2048
    bn_splits: int = 8
    shuffle_bn: str = "split"  # MoCo's single-device default; "none" keeps plain BatchNorm
    precision: str = "fp32"
    channels_last: bool = False
    compile: str = "none"  # one of COMPILE_MODES
    formulation: str = "mocomri"
    fused_sgd: bool = False  # torch.optim.SGD(fused=True) instead of its default implementation
    device: str = "cpu"

    @property
    def spatial_dims(self) -> int:
        return spatial_dims_of(self.encoder)

    @property
    def variant(self) -> str:
        """A short label: ``fp32``, ``bf16+cl``, ``bf16+cl+compile``, ``reference``..."""
        if self.formulation == "reference":
            return "reference"
        compiled = {"none": [], "module": ["compile"], "encoders": ["compile-enc"]}[self.compile]
        parts = [self.precision] + ["cl"] * self.channels_last + compiled + ["fused-sgd"] * self.fused_sgd
        parts += ["plain-bn"] * (self.shuffle_bn == "none")
        return "+".join(parts)

    def config(self) -> Config:
        """What pretraining's builders read for this case: the model and MoCo sections, the batch
        size and ``train.compile`` (for ``compile="module"``); the optimiser is the default SGD
        with momentum and weight decay. Precision and memory format are the :meth:`runtime`'s."""
        return Config(
            model=ModelConfig(name=self.encoder, in_channels=self.in_channels, width=self.width),
            moco=MocoConfig(queue_size=self.queue_size, proj_dim=self.proj_dim, proj_hidden_dim=self.proj_hidden_dim,
                            shuffle_bn=self.shuffle_bn, bn_splits=self.bn_splits),
            train=TrainConfig(batch_size=self.batch_size, compile=self.compile == "module"),
        )

    def runtime(self) -> Runtime:
        """One process on ``device`` with this case's precision and memory format."""
        return Runtime(device=torch.device(self.device), precision=self.precision, channels_last=self.channels_last)

    def validate(self) -> None:
        """Raises ValueError naming the first impossible field."""
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"formulation={self.formulation!r} must be one of {FORMULATIONS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r} must be one of {PRECISIONS}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile={self.compile!r} must be one of {COMPILE_MODES}")
        if self.shuffle_bn not in ("split", "none"):
            raise ValueError(f"shuffle_bn={self.shuffle_bn!r} must be 'split' or 'none' (one device)")
        if self.formulation == "reference" and (self.precision != "fp32" or self.channels_last or self.compile != "none"):
            raise ValueError("the reference step is plain fp32, contiguous and eager by definition")
        for name in ("image_size", "batch_size", "width", "queue_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size} must be at least 2 (BatchNorm)")


def default_spec(device: str = "cpu", **fields) -> StepSpec:
    """The spec a training run would use on ``device``: precision and channels-last resolved by
    :func:`mocomri.train.runtime.select_precision` and ``select_channels_last`` ("auto")."""
    spec = StepSpec(device=device, **fields)
    dev = torch.device(device)
    return dataclasses.replace(
        spec,
        precision=select_precision("auto", dev, spec.spatial_dims),
        channels_last=select_channels_last("auto", dev, spec.spatial_dims),
    )


class TrainStep:
    """The model, optimiser and fixed inputs of a :class:`StepSpec`; call it to run one step.

    Args:
        spec: the case.
        seed: seeds the weights, the queue and the inputs.

    Shape:
        inputs: (B, C_in, S, S) or (B, C_in, S, S, S) with S = ``spec.image_size``.
    """

    def __init__(self, spec: StepSpec, seed: int = 0) -> None:
        spec.validate()
        self.spec = spec
        self.device = torch.device(spec.device)
        self.sync = device_sync(self.device)  # waits for the device (a no-op on the CPU)
        self.memory_format = memory_format(spec.channels_last, spec.spatial_dims)
        cfg = spec.config()
        torch.manual_seed(seed)

        shape = (spec.batch_size, spec.in_channels, *([spec.image_size] * spec.spatial_dims))
        g = torch.Generator().manual_seed(seed + 1)
        view_q = torch.randn(shape, generator=g)
        view_k = view_q + 0.1 * torch.randn(shape, generator=g)  # a nearby second view
        self.view_q = view_q.to(self.device).contiguous(memory_format=self.memory_format)
        self.view_k = view_k.to(self.device).contiguous(memory_format=self.memory_format)
        # Eight images per subject, so that same-subject masking has work to do as in training.
        self.subjects = torch.arange(spec.batch_size, device=self.device) % max(spec.batch_size // 8, 1)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self.steps = 0

        if spec.formulation == "reference":
            self._reference(cfg)
            return
        # The step pretraining builds and runs, not a copy of it.
        self.pretrain_step = PretrainStep(cfg, spec.runtime())
        if spec.fused_sgd:
            # pretraining's optimiser with the fused implementation: the one thing this variant changes
            plain = self.pretrain_step.optimizer
            fused = {**plain.defaults, "fused": True}
            self.pretrain_step.optimizer = type(plain)(plain.param_groups[0]["params"], **fused)
        if spec.compile == "encoders":
            self.pretrain_step.model.base_encoder.compile()
            self.pretrain_step.model.momentum_encoder.compile()

    def _reference(self, cfg: Config) -> None:
        """``main_moco.py``'s model and SGD, on the same encoder and sizes."""
        spec = self.spec
        backbone, features = encoder_from_config(cfg.model)
        backbone = colab_split_bn(backbone, spec.bn_splits)
        self.model = ReferenceMoCo(backbone, features, spec.proj_dim, spec.proj_hidden_dim, spec.queue_size).to(self.device)
        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=scaled_lr(cfg.optim.lr, spec.batch_size),
                                         momentum=cfg.optim.sgd_momentum, weight_decay=cfg.optim.weight_decay)
        self.momentum = cfg.moco.momentum

    def __call__(self) -> Tensor | float:
        """One training step; returns the loss (a device tensor: no host sync, except for the
        reference, which reads it back as ``main_moco.py`` does)."""
        if self.spec.formulation == "reference":
            return reference_train_step(self.model, self.optimizer, self.view_q, self.view_k, self.momentum)
        out = self.pretrain_step(self.view_q, self.view_k, self.subjects)
        # As the training loop does: record a non-finite loss on the device, look at it later.
        loss = out.loss.detach()
        self.first_bad_step = torch.where((self.first_bad_step < 0) & ~torch.isfinite(loss), self.steps, self.first_bad_step)
        self.steps += 1
        return loss
