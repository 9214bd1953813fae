"""What an encoder's embedding tells scans apart by: how far each perturbation moves it.

    .venv/bin/python tools/embedding_sensitivity.py RUN_DIR [--manifest M] [--split test] [--out F.json]

For every scan of the split, the eval input (the probe's) and copies of it with one change each:
an intensity change (bias field, gamma, Rician noise) or a geometric one (a shift of 2 voxels, the
left-right flip, a 10 % zoom). Features are the encoder's pooled output, centred on the clean
scans' mean and L2-normalised. Two numbers per change, for the run's encoder and for the same
architecture at random init:

- ``moved / between``: the median distance of a changed scan to its own clean copy, over the
  median distance between two different clean scans;
- ``found``: the share of changed scans whose nearest clean scan is their own.

An encoder that identifies a scan by a cue the change destroys loses it (``found`` falls): an
instance-discrimination encoder trained with crops and flips only finds scans by their intensity
profile if bias field and gamma take ``found`` down while shifts and zooms leave it at 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocomri.augment import artefacts  # noqa: E402
from mocomri.data.datasets import build_eval_dataset, lr_axis  # noqa: E402
from mocomri.data.io import file_kind  # noqa: E402
from mocomri.data.manifest.schema import read_manifest  # noqa: E402
from mocomri.eval.features import RANDOM, load_encoder_source  # noqa: E402

CHANGES = ("bias field", "gamma", "rician noise", "shift 2 voxels", "left-right flip", "zoom 10 %")


def perturb(x: torch.Tensor, change: str, g: torch.Generator, flip_axis: int) -> torch.Tensor:
    """One change of every item of ``x`` (B, C, *S), on the [0, 1] scale, then z-scored as the eval input."""
    y = artefacts.rescale01(x)
    b, dims = len(y), x.dim() - 2
    if change == "bias field":  # MONAI RandBiasField's defaults: degree 3, coefficients in [0, 0.2)
        y = artefacts.bias_field(y, torch.rand(b, artefacts.bias_field_size(dims, 3), generator=g) * 0.2)
    elif change == "gamma":
        y = artefacts.adjust_contrast(y, 0.7 + 0.8 * torch.rand(b, generator=g))
    elif change == "rician noise":
        y = artefacts.rician_noise(y, torch.full((b,), 0.03), torch.randn(2, *y.shape, generator=g))
    elif change == "shift 2 voxels":
        y = torch.roll(y, shifts=(2,) * dims, dims=tuple(range(2, 2 + dims)))
    elif change == "left-right flip":
        y = y.flip(flip_axis)
    elif change == "zoom 10 %":  # the central 90 % of each side, resized back
        m = [max(1, round(s * 0.05)) for s in y.shape[2:]]
        inner = y[(slice(None), slice(None), *[slice(k, s - k) for k, s in zip(m, y.shape[2:])])]
        y = F.interpolate(inner, size=y.shape[2:], mode="trilinear" if dims == 3 else "bilinear")
    else:
        raise ValueError(change)
    return artefacts.normalize(y)


def sensitivity(encoder: torch.nn.Module, x: torch.Tensor, seed: int, flip_axis: int) -> dict[str, dict[str, float]]:
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        clean = encoder.eval()(artefacts.normalize(artefacts.rescale01(x))).flatten(1)
        centre = clean.mean(0)
        ref = F.normalize(clean - centre, dim=1)
        between = torch.cdist(ref, ref)[~torch.eye(len(x), dtype=torch.bool)].median()
        out = {}
        for change in CHANGES:
            moved = F.normalize(encoder(perturb(x, change, g, flip_axis)).flatten(1) - centre, dim=1)
            d = torch.cdist(moved, ref)
            out[change] = {"moved_over_between": float(d.diagonal().median() / between),
                           "found": float((d.argmin(1) == torch.arange(len(x))).float().mean())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a pretraining run directory")
    parser.add_argument("--manifest", help="default: the run's data.manifest")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    source = load_encoder_source(args.run)
    data_cfg = source.run_config.data
    manifest = read_manifest(args.manifest or data_cfg.manifest)
    dataset = build_eval_dataset(manifest, data_cfg, [args.split])
    x = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    kind = data_cfg.kind
    if kind == "auto":  # as the datasets resolve it: 2D image files are images, volumes are sliced
        kind = "images2d" if file_kind(manifest.abspath(manifest.rows[0])) == "image2d" else "slices2d"
    axis = lr_axis(kind, data_cfg.slice_axis)
    flip_axis = 2 + (axis if axis is not None else x.dim() - 3)  # (B, C) first; no left-right axis: the last
    results = {}
    for name, (encoder, _) in [("pretrained", source.build()),
                               ("random init", load_encoder_source(RANDOM, source.model).build(args.seed))]:
        results[name] = sensitivity(encoder, x, args.seed, flip_axis)
    print(f"{len(x)} scans of split {args.split!r}; moved / between (found)")
    print("| change | " + " | ".join(results) + " |\n|---|" + "---|" * len(results))
    for change in CHANGES:
        cells = [f"{r[change]['moved_over_between']:.2f} ({r[change]['found']:.2f})" for r in results.values()]
        print(f"| {change} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps({"run": str(args.run), "split": args.split, "scans": len(x), **results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
