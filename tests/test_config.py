import pytest

from mocomri.config import Config, config_from_dict, config_to_dict, load_config
from mocomri.errors import ConfigError


def test_load_config__defaults_without_file():
    cfg = load_config(None)
    assert isinstance(cfg, Config)
    assert cfg.moco.queue_size == 4096


def test_load_config__override_converts_types(tmp_path):
    cfg = load_config(None, ["moco.momentum=0.999", "train.batch_size=32", "moco.mask_same_subject=false"])
    assert cfg.moco.momentum == 0.999
    assert cfg.train.batch_size == 32
    assert cfg.moco.mask_same_subject is False


def test_load_config__exponent_without_dot_is_a_float():
    assert load_config(None, ["optim.weight_decay=1e-4"]).optim.weight_decay == 1e-4


def test_load_config__int_accepted_for_float():
    cfg = load_config(None, ["moco.momentum=0"])
    assert cfg.moco.momentum == 0.0 and isinstance(cfg.moco.momentum, float)


def test_load_config__unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'moco\.queue_sise'"):
        load_config(None, ["moco.queue_sise=10"])


def test_load_config__unknown_section_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("modell:\n  name: resnet18\n")
    with pytest.raises(ConfigError, match="unknown config key 'modell'"):
        load_config(p)


def test_load_config__wrong_type_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  batch_size: lots\n")
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected int, got 'lots'"):
        load_config(p)


def test_load_config__bool_is_not_an_int():
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected int"):
        load_config(None, ["train.batch_size=true"])


def test_load_config__malformed_override():
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["moco.momentum"])


def test_load_config__base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("moco:\n  queue_size: 128\n  temperature: 0.1\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmoco:\n  queue_size: 256\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.moco.queue_size == 256
    assert cfg.moco.temperature == 0.1


def test_load_config__missing_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("nope.yaml")


def test_config_dict__round_trip():
    cfg = load_config(None, ["model.width=16", "data.spacing=[2.0, 2.0, 2.0]"])
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    assert again.data.spacing == [2.0, 2.0, 2.0]


def test_shipped_configs__all_load():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        if path.name.startswith("ablation_"):
            continue  # ablation grids have their own schema (tests/test_ablation.py)
        load_config(path)
