"""``mocomri ablate``: run a grid of pretrain+probe cells (resumable) and tabulate them."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ablate", help="run an ablation grid (see configs/ablation_*.yaml)")
    p.add_argument("--config", required=True, help="ablation YAML: base config, grid, seeds, budget, probe")
    p.add_argument("--out", help="output directory (default: the config's out_dir)")
    p.add_argument("--parallel", type=int, default=1, help="cells run at once, each in its own process")
    p.add_argument("--only", action="append", help="run only this cell (by name); repeatable")
    p.add_argument("--no-table", action="store_true", help="do not tabulate (used by --parallel's workers)")
    p.add_argument("--list", action="store_true", help="list the cells and whether they are done, then exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.ablation import load_ablation, run_ablation

    spec = load_ablation(args.config, out_dir=args.out)
    if args.list:
        for cell in spec.cells:
            done = (cell.run_dir / "cell.json").is_file()
            print(f"{'done ' if done else 'todo '} {cell.name}")
        return 0
    from mocomri.config import load_config
    from mocomri.train.runtime import keep_freed_memory

    if load_config(spec.base).train.keep_freed_memory:
        keep_freed_memory()  # process-wide: the command's choice (parallel cells inherit it)
    run_ablation(spec, parallel=args.parallel, only=args.only, tabulate=not args.no_table)
    return 0
