"""``mocomri crossfit``: pretrain and probe once per fold of subjects, and score the pooled
held-out predictions (every labelled subject tested once; for cohorts too small for one split)."""

from __future__ import annotations

import argparse

from mocomri.commands._config_args import add_config_arguments, config_source, load_config_arguments
from mocomri.commands.probe import _fractions


def _task(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=MANIFEST, got {text!r}")
    return name, path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "crossfit",
        help="k-fold pretrain + probe by subject, predictions pooled over folds",
        description="For each of k folds of subjects (stratified by the manifest's labels): pretrain "
        "the config on the other folds' scans, probe the held-out subjects beside random init and raw "
        "pixels; then score all held-out predictions as one test set. Resumable.",
    )
    add_config_arguments(p, required=True, help="pretraining YAML config")
    p.add_argument("--manifest", help="labelled manifest defining the folds (default: the config's data.manifest)")
    p.add_argument("--out", required=True, help="output directory (folds, runs, reports)")
    p.add_argument("--folds", type=int, default=5, help="k (default 5)")
    p.add_argument("--fold-seed", type=int, default=0, help="shuffle of subjects into folds (default 0)")
    p.add_argument("--task", type=_task, action="append", default=[], metavar="NAME=MANIFEST",
                   help="another label manifest over the same scans, probed with the same folds and encoders (repeatable)")
    p.add_argument("--label-fractions", type=_fractions, default=[1.0],
                   help="comma-separated shares of each fold's labelled training subjects (default 1.0)")
    p.add_argument("--seeds", type=int, default=3, help="draws per label fraction (default 3)")
    p.add_argument("--unit", choices=["item", "scan", "subject"], default="subject",
                   help="what one prediction is (default subject)")
    p.add_argument("--no-raw-pixels", action="store_true", help="skip the raw-pixel baseline")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--features", choices=["pooled", "stages", "patches"], default="pooled",
                   help="what the probe reads off each encoder: its pooled output (default), every stage "
                        "pooled and concatenated, or (3D) the pooled output averaged over patches of the "
                        "pretraining views' side; the last two write *_stages or *_patches reports beside the first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.crossfit import run_crossfit
    from mocomri.eval import ProbeOptions, format_table

    cfg = load_config_arguments(args)
    if cfg.train.keep_freed_memory:
        from mocomri.train.runtime import keep_freed_memory

        keep_freed_memory()
    results = run_crossfit(
        cfg,
        args.manifest or cfg.data.manifest,
        out_dir=args.out,
        folds=args.folds,
        fold_seed=args.fold_seed,
        tasks=dict(args.task),
        label_fractions=args.label_fractions,
        seeds=args.seeds,
        baselines=["random_init"] + ([] if args.no_raw_pixels else ["raw_pixels"]),
        unit=args.unit,
        options=ProbeOptions(n_boot=args.n_boot, features=args.features, config_source=config_source(args)),
    )
    for name, metrics in results.items():
        s = metrics["settings"]
        print(f"\n{s['manifest']}: {s['folds']}-fold cross-fitting, "
              f"{s['n_eval_subjects']} held-out subjects pooled")
        print(format_table(metrics))
    print(f"reports: {args.out}/report*.md")
    return 0
