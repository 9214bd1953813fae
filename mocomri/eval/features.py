"""Frozen-encoder features: where the encoder comes from, extraction, and the on-disk cache.

An encoder source is a pretraining run directory (``config.yaml`` + ``encoder.pt``), a bare
``encoder.pt`` (a backbone ``state_dict``), or ``random`` (the same architecture, freshly
initialised). Features are the backbone's pooled output, before any projection head, computed
once per (encoder, manifest, data settings) and cached as ``.npz`` in the probe's output
directory, so re-running a probe with other fractions or seeds skips the forward passes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mocomri.config import Config, ModelConfig
from mocomri.errors import ConfigError
from mocomri.files import atomic_path, file_digest
from mocomri.models.encoders import encoder_from_config
from mocomri.run_dir import CONFIG_FILE, load_run

RANDOM = "random"
FEATURES = ("pooled", "stages", "patches")  # what a probe reads off an encoder; see StagePooled, PatchPooled
STAGES = ("layer1", "layer2", "layer3", "layer4")
READ_OUTS = {  # what each read-out is, in the reports' words
    "pooled": "the frozen backbone's pooled output (before the projection head)",
    "stages": "the global average pool of each of the frozen backbone's four stages, concatenated "
              "(the same read-out for the pretrained and the random-init encoder)",
    "patches": "the frozen backbone's pooled output averaged over overlapping patches of the pretraining "
               "views' side (data.pretrain_patch_size, every half side) tiling each volume (the same read-out "
               "for the pretrained and the random-init encoder)",
}


class StagePooled(nn.Module):
    """The global average pool of each residual stage's output, concatenated: ``(N, sum of widths)``.

    A probe normally reads the backbone's pooled output (the last stage). Reading every stage,
    as DINO's linear evaluation reads the last blocks, shows where the information a task needs
    lives: an encoder pretrained on a small cohort can keep it in early stages while its last
    stage specialises on telling the pretraining scans apart (BENCHMARKS.md, "3D on IXI-185").
    Random-init and pretrained encoders alike get the same read-out, so the comparison stays fair.

    Every encoder of the registry (torchvision and MONAI ResNets) has ``layer1`` to ``layer4``.

    Raises:
        ConfigError: the backbone has no such stages.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        missing = [name for name in STAGES if not isinstance(getattr(backbone, name, None), nn.Module)]
        if missing:
            raise ConfigError(f"{type(backbone).__name__} has no stage(s) {', '.join(missing)}: "
                              "stage features need a ResNet-like backbone")
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        hooks = [getattr(self.backbone, name).register_forward_hook(
            lambda _module, _inputs, out: pooled.append(out.flatten(2).mean(2))) for name in STAGES]
        try:
            self.backbone(x)
        finally:
            for hook in hooks:
                hook.remove()
        return torch.cat(pooled, 1)


class PatchPooled(nn.Module):
    """The backbone's pooled output averaged over overlapping patches that tile the input: ``(N, F)``.

    An encoder pretrained on patches smaller than the evaluation input
    (``data.pretrain_patch_size``) meets a whole volume at another scale than it learnt, and
    with GroupNorm, statistics over a whole head instead of a patch. This read-out shows it the
    input as it was trained: cubes of side ``patch`` every ``stride`` voxels along each axis
    (the last one flush with the far edge, so every voxel is covered), each encoded alone, their
    pooled features averaged. Random-init and pretrained encoders get the same read-out.

    Args:
        backbone: maps (B, C, *P) to pooled features (B, F).
        patch: P, the side of a patch; an axis shorter than it is read whole.
        stride: voxels between patch starts (default ``patch // 2``).

    Raises:
        ConfigError: ``patch`` or ``stride`` is not positive.
    """

    def __init__(self, backbone: nn.Module, patch: int, stride: int | None = None) -> None:
        super().__init__()
        stride = stride if stride is not None else patch // 2
        if patch <= 0 or stride <= 0:
            raise ConfigError(f"patch read-out: patch={patch} and stride={stride} must be positive")
        self.backbone, self.patch, self.stride = backbone, patch, stride

    def starts(self, side: int) -> list[int]:
        """Where the patches along an axis of ``side`` voxels begin."""
        if side <= self.patch:
            return [0]
        n = -(-(side - self.patch) // self.stride) + 1  # ceil: the last patch reaches the far edge
        return [round(i * (side - self.patch) / (n - 1)) for i in range(n)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sides = x.shape[2:]
        boxes = list(itertools.product(*[[slice(a, a + min(self.patch, n)) for a in self.starts(n)] for n in sides]))
        # One place of every item at a time: memory of a batch of patches, not of all of them.
        total = sum(self.backbone(x[(slice(None), slice(None), *box)]).flatten(1) for box in boxes)
        return total / len(boxes)


def feature_extractor(backbone: nn.Module, features: str = "pooled", patch: int = 0) -> nn.Module:
    """The module a probe reads: the backbone itself (``pooled``), :class:`StagePooled` (``stages``)
    or :class:`PatchPooled` over patches of side ``patch`` (``patches``).

    Raises:
        ConfigError: an unknown read-out, or ``patches`` without a patch side.
    """
    if features not in FEATURES:
        raise ConfigError(f"features: expected one of {', '.join(FEATURES)}, got {features!r}")
    if features == "patches":
        if patch <= 0:
            raise ConfigError("features=patches reads the patches the encoder was pretrained on: "
                              "set data.pretrain_patch_size (3D)")
        return PatchPooled(backbone, patch)
    return backbone if features == "pooled" else StagePooled(backbone)


@dataclass
class EncoderSource:
    """Where an encoder's weights and architecture come from, and how to rebuild it."""

    kind: str  # "run" | "file" | "random"
    model: ModelConfig
    state_dict: dict[str, torch.Tensor] | None = None
    sha1: str = ""  # of encoder.pt (mocomri.files.file_digest)
    weights_path: Path | None = None
    run_dir: Path | None = None
    run_config: Config | None = None
    step: int | None = None  # the pretraining step of checkpoints/last.pt

    @property
    def identity(self) -> str:
        """A string that changes whenever the features could change (for cache keys)."""
        arch = json.dumps(dataclasses.asdict(self.model), sort_keys=True)
        return f"{self.kind}:{self.sha1}:{arch}"

    def build(self, seed: int = 0) -> tuple[nn.Module, int]:
        """The backbone with the source's weights (``random``: initialised from ``seed``), and F,
        the width of its pooled features.

        Raises:
            ConfigError: the weights do not fit the architecture; the message names both.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone, feature_dim = encoder_from_config(self.model)
        if self.state_dict is not None:
            try:
                backbone.load_state_dict(self.state_dict)
            except RuntimeError as e:
                first = str(e).strip().splitlines()[0]
                raise ConfigError(
                    f"{self.weights_path} does not fit model.name={self.model.name} "
                    f"width={self.model.width} in_channels={self.model.in_channels} "
                    f"norm={self.model.norm}: {first}"
                ) from None
        return backbone, feature_dim

    def provenance(self) -> dict[str, Any]:
        """What the report says about the encoder."""
        return {
            "kind": self.kind,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "config": str(self.run_dir / CONFIG_FILE) if self.run_dir else None,
            "weights": str(self.weights_path) if self.weights_path else None,
            "encoder_sha1": self.sha1 or None,
            "checkpoint_step": self.step,
            "architecture": dataclasses.asdict(self.model),
        }


def load_encoder_source(
    source: str | Path, model_cfg: ModelConfig | None = None
) -> EncoderSource:
    """Resolves ``RUN_DIR``, ``path/to/encoder.pt`` or ``random``.

    The architecture is ``model_cfg`` when given, else the run's ``config.yaml`` (for a bare
    ``encoder.pt``, the one beside it if any), else the defaults of :class:`ModelConfig`.

    Raises:
        FileNotFoundError: the directory has no ``encoder.pt`` or the file does not exist.
    """
    if str(source) == RANDOM:
        return EncoderSource(kind=RANDOM, model=model_cfg or ModelConfig())
    run = load_run(source)
    run_config = run.config()
    state_dict = torch.load(run.weights, weights_only=True, map_location="cpu")
    return EncoderSource(
        kind="run" if run.run_dir else "file",
        model=model_cfg or (run_config.model if run_config else ModelConfig()),
        state_dict=state_dict,
        sha1=file_digest(run.weights),
        weights_path=run.weights,
        run_dir=run.run_dir,
        run_config=run_config,
        step=_checkpoint_step(run.run_dir / "checkpoints" / "last.pt") if run.run_dir else None,
    )


def _checkpoint_step(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        step = torch.load(path, weights_only=True, map_location="cpu").get("step")
    except Exception:  # an unreadable checkpoint only costs the report one field
        return None
    return int(step) if step is not None else None


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; anything else goes to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    bf16: bool = False,
    num_workers: int = 0,
) -> np.ndarray:
    """Pooled features of every dataset item, in dataset order, with the encoder frozen.

    Args:
        encoder: maps a batch of images to pooled features.
        dataset: items are dicts with an ``"image"`` tensor.
        batch_size: images per forward pass.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        bf16: run the forward pass under bfloat16 autocast (features are returned as float32).
        num_workers: DataLoader workers.

    Returns:
        float32 features.

    Shape:
        image: (C, H, W) or (C, D, H, W)  returns: (N, F)
    """
    device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    encoder = encoder.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)  # (B, C, H, W) or (B, C, D, H, W)
            chunks.append(encoder(images).flatten(1).float().cpu().numpy())  # (B, F)
    if not chunks:
        raise ValueError("the dataset is empty: no features to extract")
    return np.concatenate(chunks)


def cache_key(*parts: Any) -> str:
    """A short stable digest of JSON-serialisable parts (dataclasses are turned into dicts)."""
    plain = [dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached(cache_dir: Path, name: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()`` once; later calls with the same ``name`` and ``key`` read ``cache_dir``."""
    path = Path(cache_dir) / f"{name}-{key}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return stored["features"]
    features = compute()
    # A unique temporary name: parallel ablation cells may compute the same entry at once.
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, features=features)
    return features
