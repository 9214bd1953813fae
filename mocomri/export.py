"""Export a run's backbone so that it loads into the downstream library's own class, checked.

Formats (``mocomri export RUN_DIR --format F --out DIR``):

- ``torchvision``: ``torchvision.models.resnet18/34/50`` with ``conv1`` for the run's input
  channels and ``fc = nn.Identity()``; 2D, width 64 only (torchvision's ResNet has no width
  argument);
- ``monai``: ``monai.networks.nets.ResNet`` with the run's stage widths (any width), 2D or 3D,
  ``feed_forward=False``;
- ``timm``: ``timm.create_model(name, num_classes=0, in_chans=C)``; 2D, width 64 only;

  with ``model.norm=group``, each target is given GroupNorm through its own argument
  (``norm_layer`` for torchvision and timm, ``norm`` for MONAI, whose ResNet in 1.6 honours it
  in the stem only: the export then says so and points to ``safetensors``);
- ``safetensors``: mocomri's own key layout, any encoder, loaded with
  ``mocomri.models.create_encoder``.

Every format is written as ``model.safetensors`` (no pickle). Before reporting success the
export reads that file back, loads it into the target class with ``strict=True`` and checks
that the target's output equals the run's backbone on a random batch, within
:data:`TOLERANCE`. Beside the weights: ``MODEL_CARD.md`` and ``model_card.json`` (architecture,
input channels and contrasts, input size and normalisation, the pretraining config, the
manifest's digest, scans and subjects, the probe's headline numbers when the run has a report,
and the lines that load the file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import monai
import torch
import torchvision
from monai.networks.nets import ResNet
from safetensors.torch import load_file, save_file
from torch import nn

from mocomri.config import Config, config_to_dict, load_config
from mocomri.data.manifest import read_manifest
from mocomri.errors import MocomriError
from mocomri.eval.report import format_table
from mocomri.files import file_digest
from mocomri.models import encoder_from_config, spatial_dims_of
from mocomri.models.norm import has_batch_norm, monai_norm, torchvision_norm_layer
from mocomri.run_dir import ENCODER_FILE, find_run_config
from mocomri.train.checkpoint import last_checkpoint, load_checkpoint

FORMATS = ("torchvision", "monai", "timm", "safetensors")
TOLERANCE = 1e-5  # max |difference| of the pooled features, fp32 on the CPU, eval mode
_LAYERS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet34": ("basic", [3, 4, 6, 3]), "resnet50": ("bottleneck", [3, 4, 6, 3]),
           "resnet10_3d": ("basic", [1, 1, 1, 1]), "resnet18_3d": ("basic", [2, 2, 2, 2]),
           "resnet34_3d": ("basic", [3, 4, 6, 3])}


class ExportError(MocomriError):
    """The run cannot be exported in the asked format; the message says what to use instead."""


@dataclass
class ExportResult:
    weights: Path
    card: Path
    max_abs_difference: float
    loading: str


def _run_backbone(run_dir: Path) -> tuple[Config, nn.Module]:
    """The run's config and backbone (from ``encoder.pt``, else the last checkpoint), in eval mode."""
    config_path = find_run_config(run_dir) if run_dir.is_dir() else None  # a directory, not a bare file
    if config_path is None:
        raise ExportError(f"{run_dir}: no config.yaml; give a run directory written by `mocomri pretrain`")
    cfg = load_config(config_path)
    backbone, _ = encoder_from_config(cfg.model)
    encoder = run_dir / ENCODER_FILE
    if encoder.is_file():
        state = torch.load(encoder, map_location="cpu", weights_only=True)
    else:
        ckpt = last_checkpoint(run_dir)
        if ckpt is None:
            raise ExportError(f"{run_dir}: neither encoder.pt nor a checkpoint")
        model_state = load_checkpoint(ckpt, map_location="cpu")["model"]
        state = {k.removeprefix("base_encoder."): v for k, v in model_state.items() if k.startswith("base_encoder.")}
    backbone.load_state_dict(state, strict=True)
    return cfg, backbone.eval()


def _target(fmt: str, cfg: Config) -> tuple[nn.Module, str]:
    """The downstream class to load into, and the lines a user runs to do so."""
    name, c, w = cfg.model.name, cfg.model.in_channels, cfg.model.width
    norm, groups = cfg.model.norm, cfg.model.norm_groups
    dims = spatial_dims_of(name)
    base = name.removesuffix("_3d")
    if fmt in ("torchvision", "timm"):
        if dims != 2:
            raise ExportError(f"--format {fmt}: {name} is a 3D encoder, which {fmt} has no class for; "
                              "use --format monai (monai.networks.nets.ResNet, spatial_dims=3)")
        if w != 64:
            raise ExportError(f"--format {fmt}: model.width={w}, but {fmt}'s ResNet has stage widths 64..512 and no "
                              "argument to change them; use --format monai (monai.networks.nets.ResNet takes any "
                              "block_inplanes) or --format safetensors (mocomri.models.create_encoder)")
    # torchvision and timm call norm_layer(channels) (timm adds device/dtype keywords)
    norm_arg = "" if norm == "batch" else f", norm_layer=lambda channels, **kw: torch.nn.GroupNorm({groups}, channels, **kw)"
    if fmt == "torchvision":
        net = getattr(torchvision.models, base)(weights=None, norm_layer=torchvision_norm_layer(norm, groups))
        net.conv1 = nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity()
        return net, (f"net = torchvision.models.{base}(weights=None{norm_arg})\n"
                     f"net.conv1 = torch.nn.Conv2d({c}, 64, kernel_size=7, stride=2, padding=3, bias=False)\n"
                     "net.fc = torch.nn.Identity()\n"
                     'net.load_state_dict(safetensors.torch.load_file("model.safetensors"))')
    if fmt == "timm":
        try:
            import timm  # optional (the `export` extra): only --format timm needs it
        except ImportError as e:
            raise ExportError("--format timm needs timm: pip install timm") from e
        net = timm.create_model(base, pretrained=False, num_classes=0, in_chans=c,
                                norm_layer=torchvision_norm_layer(norm, groups))
        return net, (f'net = timm.create_model("{base}", pretrained=False, num_classes=0, in_chans={c}{norm_arg})\n'
                     'net.load_state_dict(safetensors.torch.load_file("model.safetensors"))')
    if fmt == "monai":
        block, layers = _LAYERS[name]
        stride = 2
        net = ResNet(block=block, layers=layers, block_inplanes=[w, 2 * w, 4 * w, 8 * w], spatial_dims=dims,
                     n_input_channels=c, conv1_t_size=7, conv1_t_stride=stride, bias_downsample=False, feed_forward=False,
                     norm=monai_norm(norm, groups))
        if norm != "batch" and has_batch_norm(net):
            raise ExportError(f"--format monai: model.norm={norm}, but monai.networks.nets.ResNet (MONAI "
                              f"{monai.__version__}) gives its norm argument to the stem only and builds BatchNorm in "
                              "the blocks (Project-MONAI/MONAI#9028); use --format safetensors "
                              "(mocomri.models.create_encoder)" + (" or torchvision" if dims == 2 and w == 64 else ""))
        return net, (f'net = monai.networks.nets.ResNet(block="{block}", layers={layers}, '
                     f"block_inplanes={[w, 2 * w, 4 * w, 8 * w]}, spatial_dims={dims}, n_input_channels={c}, "
                     f"conv1_t_size=7, conv1_t_stride={stride}, bias_downsample=False, feed_forward=False"
                     + ("" if norm == "batch" else f", norm={monai_norm(norm, groups)!r}") + ")\n"
                     'net.load_state_dict(safetensors.torch.load_file("model.safetensors"))')
    if fmt == "safetensors":
        net, _ = encoder_from_config(cfg.model)
        norm_kwargs = "" if norm == "batch" else f', norm="{norm}", norm_groups={groups}'
        return net, (f'net, features = mocomri.models.create_encoder("{name}", in_channels={c}, width={w}{norm_kwargs})\n'
                     'net.load_state_dict(safetensors.torch.load_file("model.safetensors"))')
    raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


def export_run(run_dir: str | Path, fmt: str, out: str | Path, probe: str | Path | None = None) -> ExportResult:
    """Writes the run's backbone in ``fmt``'s key layout as safetensors, proves it loads, writes the model card.

    ``probe`` is a ``mocomri probe`` output folder (or its ``metrics.json``) whose numbers go into
    the card; without it, ``RUN_DIR/probe`` is used when present.

    Raises:
        ExportError: the format cannot hold this encoder (the message names what to use), or the
            loaded target does not reproduce the backbone's output.
    """
    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    cfg, backbone = _run_backbone(run_dir)
    target, loading = _target(fmt, cfg)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "model.safetensors"
    # mocomri's 2D encoders keep torchvision's module names, which timm's and MONAI's ResNets
    # share, and its 3D encoders are MONAI ResNets: one key layout serves every target, and the
    # strict load and the output check below prove it for each export.
    state = {k: v.detach().clone().contiguous() for k, v in backbone.state_dict().items()}
    metadata = {"format": fmt, "encoder": cfg.model.name, "in_channels": str(cfg.model.in_channels),
                "width": str(cfg.model.width), "norm": cfg.model.norm}
    if cfg.model.norm == "group":
        metadata["norm_groups"] = str(cfg.model.norm_groups)
    save_file(state, str(weights), metadata=metadata)
    try:
        try:
            target.load_state_dict(load_file(str(weights)), strict=True)
        except RuntimeError as e:
            raise ExportError(f"--format {fmt}: the weights do not load into the target class: {e}") from e
        target.eval()
        dims = spatial_dims_of(cfg.model.name)
        side = cfg.data.patch_size if dims == 3 else cfg.data.image_size
        x = torch.randn(2, cfg.model.in_channels, *(side,) * dims, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours, theirs = backbone(x), target(x)
        same_size = theirs.numel() == ours.numel()
        difference = float((ours - theirs.reshape(ours.shape)).abs().max()) if same_size else float("inf")
        if not difference <= TOLERANCE:
            raise ExportError(f"--format {fmt}: the target's output differs from the run's backbone by "
                              f"{difference:.3g} (tolerance {TOLERANCE})")
    except ExportError:
        weights.unlink(missing_ok=True)  # a file that failed its check is not left behind as an export
        raise
    card = write_model_card(run_dir, cfg, fmt, out, loading, difference, probe)
    return ExportResult(weights, card, difference, loading)


def write_model_card(run_dir: Path, cfg: Config, fmt: str, out: Path, loading: str, difference: float,
                     probe: str | Path | None = None) -> Path:
    """``MODEL_CARD.md`` and ``model_card.json`` beside the weights; returns the Markdown's path."""
    dims = spatial_dims_of(cfg.model.name)
    side = cfg.data.patch_size if dims == 3 else cfg.data.image_size
    card: dict = {
        "format": fmt,
        "architecture": {"encoder": cfg.model.name, "width": cfg.model.width, "spatial_dims": dims,
                         "norm": cfg.model.norm, "norm_groups": cfg.model.norm_groups if cfg.model.norm == "group" else None,
                         "features": 8 * cfg.model.width * (4 if cfg.model.name == "resnet50" else 1)},
        "input": {"channels": cfg.model.in_channels, "contrasts": cfg.data.channels or None,
                  "kind": cfg.data.kind, "size": [side] * dims,
                  "normalisation": (f"per scan: clip to the {cfg.data.clip_percentiles} percentiles of the "
                                    "foreground, z-score over the foreground; per input: z-score over the whole "
                                    "image (mocomri.data.transforms.build_eval_transform)"),
                  "orientation": "RAS (NIfTI reoriented with its affine); 2D images as displayed"},
        "pretraining": config_to_dict(cfg),
        "check": {"max_abs_difference": difference, "tolerance": TOLERANCE},
        "loading": loading,
    }
    summary = run_dir / "summary.json"
    if summary.is_file():
        card["pretraining_summary"] = json.loads(summary.read_text())
    manifest_path = Path(cfg.data.manifest) if cfg.data.manifest else None
    if manifest_path is not None and manifest_path.is_file():
        manifest = read_manifest(manifest_path).select(cfg.data.pretrain_splits)
        card["data"] = {"manifest": str(manifest_path), "manifest_sha1": file_digest(manifest_path),
                        "pretraining_splits": cfg.data.pretrain_splits, "scans": len(manifest),
                        "subjects": len(manifest.subjects())}
    candidates = [Path(probe) / "metrics.json" if Path(probe).is_dir() else Path(probe)] if probe else []
    candidates += [run_dir / "probe" / "metrics.json"]
    metrics_path = next((p for p in candidates if p.is_file()), None)
    table = None
    if metrics_path is not None:
        metrics = json.loads(metrics_path.read_text())
        card["probe"] = {
            "report": str(metrics_path),
            "unit": metrics.get("settings", {}).get("unit"),
            "task": (metrics.get("task") or {}).get("name", "classification"),
            # every metric the probe scored (accuracy ...; MAE, R² for a regression), with its CI
            **{name: {method: {fraction: {"mean": m[name]["mean"], "std": m[name]["std"], "ci95": m[name]["ci"]}
                               for fraction, m in per.items()}
                      for method, per in metrics["methods"].items()}
               for name in _metric_names(metrics)},
        }
        table = format_table(metrics)
    (out / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    norm = "" if cfg.model.norm == "batch" else f", GroupNorm with {cfg.model.norm_groups} groups"
    lines = [f"# {cfg.model.name} (width {cfg.model.width}{norm}), MoCo-pretrained with mocomri", "",
             f"- Format: `{fmt}`, weights `model.safetensors` (checked: max |difference| {difference:.2g} ≤ {TOLERANCE})",
             f"- Input: {cfg.model.in_channels} channel(s)" + (f" ({', '.join(cfg.data.channels)})" if cfg.data.channels else "")
             + f", {' x '.join([str(side)] * dims)}, {card['input']['normalisation']}",
             f"- Features: {card['architecture']['features']} (pooled, no classifier)"]
    if "data" in card:
        d = card["data"]
        lines.append(f"- Pretrained on {d['scans']} scans of {d['subjects']} subjects ({d['manifest']}, sha1 {d['manifest_sha1'][:12]})")
    if "pretraining_summary" in card:
        s = card["pretraining_summary"]
        lines.append(f"- Pretraining: {s.get('steps')} steps, final InfoNCE loss {s.get('final_loss'):.4g}")
    if table is None:
        lines.append("- Probe: none found for this run (`mocomri probe --encoder RUN_DIR --out RUN_DIR/probe` makes one)")
    lines += ["", "## Linear probe, beside its baselines", "", f"From `{card['probe']['report']}`:", "", "```", table, "```"] if table else []
    lines += ["", "## Loading", "", "```python", "import safetensors.torch, torch", loading, "```", ""]
    path = out / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


__all__ = ["FORMATS", "TOLERANCE", "ExportError", "ExportResult", "export_run", "write_model_card"]


def _metric_names(metrics: dict) -> list[str]:
    """The metrics of a probe's ``metrics.json`` that carry a mean and a CI, in its order."""
    first = next(iter(next(iter(metrics["methods"].values())).values()))
    return [name for name, value in first.items() if isinstance(value, dict) and {"mean", "std", "ci"} <= set(value)]
