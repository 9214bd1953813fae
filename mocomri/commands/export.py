"""``mocomri export``: write a run's backbone weights (``encoder.pt``) from any checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export the backbone weights of a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (its last checkpoint)")
    p.add_argument("--out", required=True, help="where to write the backbone state_dict (.pt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mocomri.config import config_from_dict
    from mocomri.train.checkpoint import last_checkpoint, load_checkpoint
    from mocomri.train.pretrain import build_model, export_encoder

    src = Path(args.checkpoint)
    path = last_checkpoint(src) if src.is_dir() else src
    if path is None:
        raise FileNotFoundError(f"no checkpoint in run directory {src}")
    state = load_checkpoint(path)
    model = build_model(config_from_dict(state["config"]))
    model.load_state_dict(state["model"])
    export_encoder(model, Path(args.out))
    print(f"wrote the backbone of {path} (step {state['step']}) to {args.out}")
    return 0
