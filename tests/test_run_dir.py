"""Resolving a run directory or a bare encoder.pt to its weights and config."""

from __future__ import annotations

from pathlib import Path

import pytest

from mocomri.config import Config, ModelConfig, save_config
from mocomri.errors import ConfigError
from mocomri.run_dir import find_run_config, load_run


def _write_run(run_dir: Path, width: int = 4) -> None:
    """A run directory as pretraining leaves it; the weights' content does not matter here."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(Config(model=ModelConfig(name="resnet18", width=width)), run_dir / "config.yaml")
    (run_dir / "encoder.pt").write_bytes(b"weights")


def test_load_run__run_dir_gives_its_encoder_and_config(tmp_path: Path) -> None:
    _write_run(tmp_path / "run", width=4)
    run = load_run(tmp_path / "run")
    assert run.weights == tmp_path / "run" / "encoder.pt"
    assert run.run_dir == tmp_path / "run"
    assert run.config_path == tmp_path / "run" / "config.yaml"
    assert run.config().model.width == 4  # the run's, not the default width


def test_load_run__bare_encoder_with_config_beside_belongs_to_the_run(tmp_path: Path) -> None:
    _write_run(tmp_path / "run", width=8)
    run = load_run(str(tmp_path / "run" / "encoder.pt"))
    assert run.weights == tmp_path / "run" / "encoder.pt"
    assert run.run_dir == tmp_path / "run"
    assert run.config().model.width == 8


def test_load_run__bare_encoder_without_config_stands_alone(tmp_path: Path) -> None:
    weights = tmp_path / "encoder.pt"
    weights.write_bytes(b"weights")
    run = load_run(weights)
    assert run.weights == weights
    assert run.run_dir is None and run.config_path is None and run.config() is None


def test_load_run__missing_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "encoder.pt"
    with pytest.raises(FileNotFoundError) as info:
        load_run(missing)
    assert str(info.value) == f"encoder weights not found: {missing}"


def test_load_run__run_dir_without_encoder_names_the_missing_file(tmp_path: Path) -> None:
    save_config(Config(), tmp_path / "config.yaml")
    with pytest.raises(FileNotFoundError, match=r"encoder weights not found: .*encoder\.pt$"):
        load_run(tmp_path)


def test_load_run__config_with_an_unknown_key_names_it(tmp_path: Path) -> None:
    _write_run(tmp_path)
    (tmp_path / "config.yaml").write_text("model:\n  widht: 4\n")
    run = load_run(tmp_path)
    with pytest.raises(ConfigError, match="widht"):
        run.config()


def test_find_run_config__dir_and_file_beside_it_and_none(tmp_path: Path) -> None:
    _write_run(tmp_path / "run")
    (tmp_path / "alone").mkdir()
    expected = tmp_path / "run" / "config.yaml"
    assert find_run_config(tmp_path / "run") == expected
    assert find_run_config(tmp_path / "run" / "encoder.pt") == expected
    assert find_run_config(tmp_path / "alone") is None
    assert find_run_config(tmp_path / "alone" / "encoder.pt") is None
