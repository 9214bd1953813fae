"""``mocomri pretrain``: MoCo pretraining from a YAML config with dotted overrides."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain an encoder with MoCo",
        description="Pretrain an encoder with MoCo. Also runs under torchrun for DDP.",
    )
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--out", help="run directory (same as train.out_dir=...)")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from the run directory's last checkpoint when there is one (default: yes)",
    )
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.config import load_config
    from mocomri.eval.knn_monitor import KnnMonitor
    from mocomri.train.pretrain import pretrain

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"train.out_dir={args.out}")
    cfg = load_config(args.config, overrides)
    if cfg.train.keep_freed_memory:
        # Process-wide (glibc mallopt): the command's choice, never a side effect of the library.
        from mocomri.train.runtime import keep_freed_memory

        keep_freed_memory()
    pretrain(cfg, resume=args.resume, monitor=KnnMonitor)
    return 0
