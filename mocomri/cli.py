"""The ``mocomri`` command line: ``mocomri synth | manifest | pretrain | probe | crossfit | ablate | bench | export | demo | peft``.

Each subcommand lives in :mod:`mocomri.commands` as a module with ``register(subparsers)``
(adds its parser and sets ``func``) so that ``mocomri --help`` stays cheap: heavy imports
happen inside each command's ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mocomri.commands._config_args import take_stray_overrides
from mocomri.errors import MocomriError

COMMANDS = ["synth", "manifest", "pretrain", "probe", "crossfit", "ablate", "bench", "export", "views", "demo", "peft"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mocomri", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mocomri.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"mocomri.commands.{name}":
                continue  # command not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    # Config overrides may follow an option; argparse alone would refuse them as unrecognized.
    extras = take_stray_overrides(args, extras)
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        return int(args.func(args) or 0)
    except (MocomriError, FileNotFoundError) as e:
        # Input errors (bad config key, bad scan, missing file) are one readable line;
        # programming errors keep their traceback.
        print(f"mocomri {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mocomri {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
