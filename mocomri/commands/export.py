"""``mocomri export``: a run's backbone for torchvision, MONAI, timm or mocomri itself, checked."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a run's backbone for torchvision, MONAI, timm or safetensors, with a model card",
        description="Writes RUN_DIR's backbone as OUT/model.safetensors in the target library's key layout, "
        "loads it into the target class with strict=True, checks that the outputs equal the run's backbone "
        "on a random batch, and writes OUT/MODEL_CARD.md and OUT/model_card.json.",
    )
    p.add_argument("run_dir", help="a run directory of `mocomri pretrain` (config.yaml and encoder.pt or a checkpoint)")
    p.add_argument("--format", default="safetensors", choices=["torchvision", "monai", "timm", "safetensors"],
                   help="the target (default safetensors: mocomri.models.create_encoder)")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--probe", help="a `mocomri probe` output folder whose numbers go into the model card "
                   "(default: RUN_DIR/probe when present)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.export import export_run

    result = export_run(args.run_dir, args.format, args.out, probe=args.probe)
    print(f"wrote {result.weights} ({args.format}); it loads with strict=True and reproduces the run's features "
          f"(max |difference| {result.max_abs_difference:.2g}); model card {result.card}")
    print("load it with:\n" + result.loading)
    return 0
