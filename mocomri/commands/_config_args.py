"""The config arguments of every command that reads a config: ``--config FILE`` and ``section.key=value``.

One syntax everywhere: ``mocomri pretrain --config c.yaml train.epochs=10``, ``mocomri probe
--encoder RUN --manifest m.csv model.width=32``, ``mocomri peft eval A.safetensors --encoder RUN
model.width=32``; the architecture has no options of its own. An override may stand anywhere on
the line: argparse fills a ``nargs="*"`` positional from one run of positionals only, so
``mocomri.cli`` hands the ones it leaves over to :func:`take_stray_overrides`. A wrong key is the
config's own error, which names the key.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mocomri.config import Config

OVERRIDES_HELP = "config overrides, anywhere on the line, e.g. model.width=32 data.image_size=96"


def add_config_arguments(
    parser: argparse.ArgumentParser,
    *,
    required: bool = False,
    help: str = "YAML config (see configs/)",
    group: argparse._ActionsContainer | None = None,
) -> None:
    """Adds ``--config`` and the positional ``section.key=value`` overrides (``args.overrides``).

    Args:
        parser: the command's parser.
        required: whether ``--config`` must be given.
        help: ``--config``'s help: what the command reads from it, and its default.
        group: where ``--config`` goes instead of ``parser``, e.g. a group exclusive with ``--manifest``.
    """
    (group or parser).add_argument("--config", required=required, help=help)
    parser.add_argument("overrides", nargs="*", default=[], metavar="section.key=value", help=OVERRIDES_HELP)


def take_stray_overrides(args: argparse.Namespace, extras: list[str]) -> list[str]:
    """Moves the overrides argparse left unparsed into ``args.overrides``, in command-line order.

    In ``peft eval A.safetensors --encoder RUN model.width=8`` argparse gives the overrides
    positional its share of the first run of positionals (``A.safetensors``: none) and leaves
    ``model.width=8`` over. Overrides it did take always stand earlier on the line, so these go after.

    Returns:
        The leftovers that are not overrides (all of them for a command without overrides), for
        the parser's usual "unrecognized arguments" error.
    """
    if not hasattr(args, "overrides"):
        return extras
    args.overrides = [*args.overrides, *(a for a in extras if _is_override(a))]
    return [a for a in extras if not _is_override(a)]


def _is_override(text: str) -> bool:
    return "=" in text and not text.startswith("-")


def load_config_arguments(
    args: argparse.Namespace, *, default: str | Path | None = None, then: Sequence[str] = ()
) -> Config:
    """The config of a command: ``--config`` (else ``default``, else the defaults) with the overrides.

    Args:
        args: parsed by a parser given :func:`add_config_arguments`.
        default: the file when ``--config`` is not given.
        then: overrides the command derives from its own options (``--out`` is
            ``train.out_dir=...``), applied after ``args.overrides`` so that the option wins.

    Raises:
        ConfigError: an unknown key, a wrong type or a malformed override; the message names it.
        FileNotFoundError: the config file does not exist.
    """
    from mocomri.config import load_config

    return load_config(args.config or default, [*args.overrides, *then])


def load_encoder_config(args: argparse.Namespace, encoder: str | Path | None) -> Config | None:
    """The config of a command that reads an encoder (:func:`mocomri.run_dir.encoder_config`):
    ``--config``, else the encoder's run ``config.yaml``, with the overrides on top.

    Returns:
        None when there is neither a file nor an override.

    Raises:
        ConfigError: an unknown key, a wrong type or a malformed override; the message names it.
        FileNotFoundError: the ``--config`` file does not exist.
    """
    from mocomri.run_dir import encoder_config

    return encoder_config(encoder, args.config, args.overrides)


def config_source(args: argparse.Namespace, encoder: str | Path | None = None) -> str:
    """Where a command's config came from, for reports: ``"`configs/a.yaml` + `model.width=8`"``."""
    from mocomri.run_dir import encoder_config_path

    path = encoder_config_path(encoder, args.config)
    return " + ".join([f"`{path}`" if path else "defaults", *(f"`{o}`" for o in args.overrides)])
