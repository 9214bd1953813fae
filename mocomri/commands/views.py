"""``mocomri views``: a PNG grid of augmented view pairs, for tuning augmentations by eye."""

from __future__ import annotations

import argparse

from mocomri.commands._config_args import add_config_arguments, load_config_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "views",
        help="save a PNG grid of augmented view pairs",
        description="For a few items: the preprocessed input, then pairs of independently augmented "
        "views, as pretraining sees them. Overrides such as augment.base.noise_prob=1.0 apply on top.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    add_config_arguments(parser, help="a config YAML (its data.manifest and augment section)", group=source)
    source.add_argument("--manifest", help="a manifest CSV (default data and augment settings)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--items", type=int, default=6, help="rows of the grid (default 6)")
    parser.add_argument("--pairs", type=int, default=2, help="view pairs per item (default 2)")
    parser.add_argument("--splits", help="comma-separated splits (default: data.pretrain_splits)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def _display(image, kind: str):
    """A 2D array to show: the middle axial slice of a volume; RAS slices turned anterior-up."""
    import numpy as np

    array = image[0].numpy()  # first channel
    if array.ndim == 3:
        array = array[:, :, array.shape[2] // 2]
    return array if kind == "images2d" else np.rot90(array)


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mocomri.data.datasets import build_pretrain_dataset
    from mocomri.data.manifest import read_manifest
    from mocomri.data.transforms import build_eval_transform
    from mocomri.errors import DataError

    options = [f"data.seed={args.seed}"] + ([f"data.manifest={args.manifest}"] if args.manifest else [])
    cfg = load_config_arguments(args, then=options)
    if not cfg.data.manifest:
        raise DataError(f"{args.config}: data.manifest is empty; pass --manifest or set it in the config")
    manifest = read_manifest(cfg.data.manifest)
    splits = args.splits.split(",") if args.splits else None
    dataset = build_pretrain_dataset(manifest, cfg.data, cfg.augment, splits)
    rng = np.random.default_rng(args.seed)
    picks = sorted(rng.choice(len(dataset), size=min(args.items, len(dataset)), replace=False))

    columns = 1 + 2 * args.pairs
    fig, axes = plt.subplots(len(picks), columns, figsize=(1.8 * columns, 1.9 * len(picks)), squeeze=False)
    for r, index in enumerate(picks):
        scan, raw = dataset.read(int(index))
        row = manifest.rows[scan.row]
        dims = 3 if scan.kind == "patches3d" else 2
        size = cfg.data.patch_size if dims == 3 else cfg.data.image_size
        panels = [("input", build_eval_transform(dims, size)(raw))]
        for p in range(args.pairs):
            view1, view2 = dataset.make_views(dataset.__getitems__([(int(index), args.seed * 1_000_003 + 7919 * p + r)]))
            panels += [(f"pair {p + 1} view 1", view1[0]), (f"pair {p + 1} view 2", view2[0])]
        for c, (title, image) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(_display(image, scan.kind), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
        axes[r, 0].set_ylabel(f"{row.subject}\n{row.modality}", fontsize=6)
    fig.suptitle(f"{cfg.data.manifest}: augment.preset={cfg.augment.preset}", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({len(picks)} items x {args.pairs} view pairs)")
    return 0
