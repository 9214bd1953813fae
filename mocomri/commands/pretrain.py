"""``mocomri pretrain``: MoCo pretraining from a YAML config with dotted overrides."""

from __future__ import annotations

import argparse

from mocomri.commands._config_args import add_config_arguments, load_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain an encoder with MoCo",
        description="Pretrain an encoder with MoCo. Also runs under torchrun for DDP.",
    )
    add_config_arguments(p, required=True)
    p.add_argument("--out", help="run directory (same as train.out_dir=...)")
    p.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue from the run directory's last checkpoint when there is one, refusing a config that "
        "changes what a step computes (default: yes); --no-resume starts over, moving the previous run's files to RUN_DIR/previous/",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.eval.knn_monitor import KnnMonitor
    from mocomri.train.pretrain import pretrain

    cfg = load_config_arguments(args, then=[f"train.out_dir={args.out}"] if args.out else [])
    if cfg.train.keep_freed_memory:
        # Process-wide (glibc mallopt): the command's choice, never a side effect of the library.
        from mocomri.train.runtime import keep_freed_memory

        keep_freed_memory()
    pretrain(cfg, resume=args.resume, monitor=KnnMonitor)
    return 0
