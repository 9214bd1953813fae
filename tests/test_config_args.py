"""Config arguments of the commands (``mocomri/commands/_config_args.py``): ``--config`` and
``section.key=value`` overrides anywhere on the line, the same for every command.

The library function behind each command is replaced by a fake that records the config it was
handed and stops the command: what is tested is the parsing and the loading, not the probe.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest

from mocomri.cli import main
from mocomri.commands._config_args import take_stray_overrides
from mocomri.config import Config, ModelConfig, save_config
from mocomri.data.settings import DataConfig

RUN_CONFIG = Config(model=ModelConfig(name="resnet18", width=4, norm="group", norm_groups=2),
                    data=DataConfig(image_size=16, num_workers=0))


class Handed(Exception):
    """Raised by the fakes: the arguments the command handed the library function, by name."""

    def __init__(self, arguments: dict) -> None:
        super().__init__()
        self.arguments = arguments


def _recording(real):
    """A stand-in for the library function ``real`` that raises :class:`Handed` with its arguments."""
    signature = inspect.signature(real)

    def fake(*args, **kwargs):
        raise Handed(signature.bind(*args, **kwargs).arguments)

    return fake


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run directory whose config.yaml differs from the defaults (width 4, GroupNorm, 16 px)."""
    run = tmp_path / "run"
    run.mkdir()
    save_config(RUN_CONFIG, run / "config.yaml")
    return run


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    import mocomri.eval
    import mocomri.peft
    import mocomri.peft.compose
    import mocomri.peft.evaluate
    import mocomri.peft.inputs
    import mocomri.peft.train

    for module, name in ((mocomri.eval, "run_probe"), (mocomri.peft.train, "train_module"),
                         (mocomri.peft.compose, "compose_files"), (mocomri.peft.evaluate, "evaluate_file"),
                         (mocomri.peft.inputs, "load_base")):
        monkeypatch.setattr(module, name, _recording(getattr(module, name)))
    monkeypatch.setattr(mocomri.peft, "load_pem", lambda path: None)  # merge reads the module before the base


def _handed(argv: list[str]) -> dict:
    """The arguments, by name, that ``mocomri ARGV`` handed its library function."""
    with pytest.raises(Handed) as handed:
        main(argv)
    return handed.value.arguments


def _peft_argv(command: str, run: Path, tmp_path: Path) -> list[str]:
    """A ``mocomri peft COMMAND`` line with every required option, the overrides to be appended."""
    common = ["--encoder", str(run), "--device", "cpu"]
    return {
        "train": ["peft", "train", *common, "--manifest", "m.csv", "--out", str(tmp_path / "a.st")],
        "compose": ["peft", "compose", *common, "--add", "a.st", "b.st", "--lambda", "0.5", "--out", "ab.st"],
        "eval": ["peft", "eval", "a.st", *common, "--manifest", "m.csv"],
        "merge": ["peft", "merge", "a.st", *common, "--out", "merged.pt"],
    }[command]


def test_probe_cli__overrides_after_options_apply_on_the_runs_config(run: Path, fakes: None) -> None:
    handed = _handed(["probe", "--encoder", str(run), "model.width=8", "--manifest", "m.csv", "--seeds", "1",
                      "data.image_size=24"])
    cfg, options = handed["config"], handed["options"]
    assert (cfg.model.width, cfg.data.image_size) == (8, 24)
    assert (cfg.model.norm, cfg.model.norm_groups) == ("group", 2)  # the rest is the run's config.yaml
    assert options.config_source == f"`{run / 'config.yaml'}` + `model.width=8` + `data.image_size=24`"


def test_probe_cli__random_encoder_takes_the_architecture_from_overrides(fakes: None) -> None:
    cfg = _handed(["probe", "--encoder", "random", "--manifest", "m.csv",
                   "model.name=resnet34", "model.width=8", "model.in_channels=3"])["config"]
    assert (cfg.model.name, cfg.model.width, cfg.model.in_channels) == ("resnet34", 8, 3)
    assert _handed(["probe", "--encoder", "random", "--manifest", "m.csv"])["config"] is None  # the library's defaults


def test_probe_cli__explicit_config_wins_over_the_runs(run: Path, tmp_path: Path, fakes: None) -> None:
    other = tmp_path / "other.yaml"
    save_config(Config(model=ModelConfig(width=16)), other)
    cfg = _handed(["probe", "--encoder", str(run), "--manifest", "m.csv", "--config", str(other)])["config"]
    assert (cfg.model.width, cfg.model.norm) == (16, "batch")


@pytest.mark.parametrize("command", ["train", "compose", "eval", "merge"])
def test_peft_cli__model_width_override_reaches_the_config(command: str, run: Path, tmp_path: Path,
                                                          fakes: None) -> None:
    cfg = _handed([*_peft_argv(command, run, tmp_path), "model.width=8"])["config"]
    assert cfg.model.width == 8 and cfg.model.norm == "group"  # on top of the run's config.yaml
    assert _handed(_peft_argv(command, run, tmp_path))["config"].model.width == 4  # the run's own


def test_peft_train__targets_do_not_swallow_the_overrides(run: Path, tmp_path: Path, fakes: None) -> None:
    handed = _handed([*_peft_argv("train", run, tmp_path), "--targets", "layer3.*", "model.width=8",
                      "--targets", "layer4.*.conv1,layer4.*.bn1"])
    assert handed["spec"].targets == ("layer3.*", "layer4.*.conv1", "layer4.*.bn1")
    assert handed["config"].model.width == 8


def test_peft_compose__val_is_repeated_and_does_not_swallow_the_overrides(run: Path, tmp_path: Path,
                                                                         fakes: None) -> None:
    handed = _handed([*_peft_argv("compose", run, tmp_path), "--val", "s.csv", "model.width=8", "--val", "t.csv"])
    assert handed["val_manifest"] == ["s.csv", "t.csv"] and handed["config"].model.width == 8


@pytest.mark.parametrize("flag", [["--set", "model.width=8"], ["--arch", "resnet34"], ["--width", "8"],
                                  ["--in-channels", "3"]])
@pytest.mark.parametrize("command", ["probe", "peft train", "peft eval"])
def test_cli__old_config_flags_are_gone(command: str, flag: list[str], run: Path, tmp_path: Path, fakes: None,
                                        capsys: pytest.CaptureFixture) -> None:
    argv = (["probe", "--encoder", str(run), "--manifest", "m.csv"] if command == "probe"
            else _peft_argv(command.split()[1], run, tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main([*argv, *flag])
    assert exit_.value.code == 2
    assert f"unrecognized arguments: {flag[0]}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["probe", "peft train", "peft compose", "peft eval", "peft merge"])
def test_cli__bad_override_key_is_one_line_naming_the_key(command: str, run: Path, tmp_path: Path, fakes: None,
                                                          capsys: pytest.CaptureFixture) -> None:
    argv = (["probe", "--encoder", str(run), "--manifest", "m.csv"] if command == "probe"
            else _peft_argv(command.split()[1], run, tmp_path))
    assert main([*argv, "model.widht=8"]) == 2  # no Handed: the config fails before the library is called
    err = capsys.readouterr().err
    assert err.startswith(f"mocomri {command.split()[0]}: error: unknown config key 'model.widht'")
    assert err.count("\n") == 1


def test_cli__an_override_for_a_command_without_a_config_is_refused(run: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), "--out", "o", "model.width=8"])
    assert exit_.value.code == 2 and "unrecognized arguments: model.width=8" in capsys.readouterr().err


def test_take_stray_overrides__appends_in_order_and_returns_the_rest() -> None:
    args = argparse.Namespace(overrides=["a.b=1"])
    assert take_stray_overrides(args, ["c.d=2", "--typo", "x", "e.f=3"]) == ["--typo", "x"]
    assert args.overrides == ["a.b=1", "c.d=2", "e.f=3"]
    assert take_stray_overrides(argparse.Namespace(), ["c.d=2"]) == ["c.d=2"]  # a command without overrides


def test_pretrain_cli__overrides_around_options_apply_in_order_and_out_wins(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import mocomri.train.pretrain

    monkeypatch.setattr(mocomri.train.pretrain, "pretrain", _recording(mocomri.train.pretrain.pretrain))
    config = tmp_path / "c.yaml"
    save_config(RUN_CONFIG, config)
    cfg = _handed(["pretrain", "model.width=8", "--config", str(config), "train.keep_freed_memory=false",
                   "--out", str(tmp_path / "run"), "model.width=16", f"train.out_dir={tmp_path / 'other'}"])["cfg"]
    assert cfg.model.width == 16  # the later of two overrides of one key
    assert cfg.train.out_dir == str(tmp_path / "run")  # --out is applied after the overrides
