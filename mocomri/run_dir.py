"""Where a pretraining run's config and encoder lie, given what a user points a command at.

``mocomri pretrain`` writes ``RUN_DIR/config.yaml`` (the resolved config) and
``RUN_DIR/encoder.pt`` (the backbone's ``state_dict``). Commands that read an encoder take
``RUN_DIR`` or a bare ``encoder.pt``; a bare file belongs to a run when a ``config.yaml`` lies
beside it, and otherwise stands alone (its architecture then comes from elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mocomri.config import Config, load_config

CONFIG_FILE = "config.yaml"
ENCODER_FILE = "encoder.pt"


@dataclass(frozen=True)
class Run:
    """An encoder's weights and, when it comes from a run directory, that directory.

    Attributes:
        weights: the ``encoder.pt`` (or the bare file given); it exists.
        run_dir: the directory holding ``config.yaml`` beside the weights, or None.
    """

    weights: Path
    run_dir: Path | None

    @property
    def config_path(self) -> Path | None:
        return self.run_dir / CONFIG_FILE if self.run_dir is not None else None

    def config(self) -> Config | None:
        """The run's parsed, validated ``config.yaml``; None for a bare file without one.

        Raises:
            ConfigError: the file has an unknown key or a wrong type; the message names it.
        """
        return load_config(self.config_path) if self.config_path is not None else None


def find_run_config(path: str | Path) -> Path | None:
    """The ``config.yaml`` of a run directory, or the one beside a file; None when there is none."""
    path = Path(path)
    candidate = (path if path.is_dir() else path.parent) / CONFIG_FILE
    return candidate if candidate.is_file() else None


def load_run(path: str | Path) -> Run:
    """Resolves ``RUN_DIR`` or ``path/to/encoder.pt`` to the weights and the run they belong to.

    Raises:
        FileNotFoundError: the directory has no ``encoder.pt`` or the file does not exist; the
            message names the path.
    """
    path = Path(path)
    weights = path / ENCODER_FILE if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"encoder weights not found: {weights}")
    config_path = find_run_config(weights)
    return Run(weights=weights, run_dir=config_path.parent if config_path is not None else None)


def encoder_config_path(encoder: str | Path | None, config: str | Path | None = None) -> str | Path | None:
    """The config file of a command that reads an encoder: ``config`` when given, else the
    ``config.yaml`` of ``encoder``'s run; None for ``random``, None or a bare file without one."""
    if config:
        return config
    if encoder is None or str(encoder) == "random":
        return None
    return find_run_config(encoder)


def encoder_config(encoder: str | Path | None, config: str | Path | None = None,
                   overrides: Sequence[str] = ()) -> Config | None:
    """The config of a command that reads an encoder: ``config``, else the encoder's run
    ``config.yaml``, with ``overrides`` on top of either (``model.width=32`` changes a run's
    architecture as it would a file's).

    Returns:
        None when there is neither a file nor an override: the library then takes the encoder's
        own config, or the defaults.

    Raises:
        ConfigError: an unknown key, a wrong type or a malformed override; the message names it.
        FileNotFoundError: ``config`` does not exist.
    """
    path = encoder_config_path(encoder, config)
    return load_config(path, list(overrides)) if path or overrides else None
