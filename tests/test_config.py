import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import mocomri.config
from mocomri.config import Config, config_from_dict, config_to_dict, load_config
from mocomri.errors import ConfigError
from mocomri.models.encoders import create_encoder, spatial_dims_of
from mocomri.models.momentum import MOMENTUM_SCHEDULES
from mocomri.models.shuffle_bn import SHUFFLE_BN_MODES, resolve_shuffle_bn
from mocomri.train.optimizer import build_optimizer
from mocomri.train.runtime import PRECISIONS, select_channels_last, select_precision


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


def test_config_changes__names_each_key_that_makes_another_run_with_both_values():
    before = config_to_dict(load_config(None, ["optim.lr=0.03", "augment.families={flair: {noise_std: 0.05}}"]))
    now = config_to_dict(load_config(None, ["optim.lr=0.1", "moco.momentum=0.9", "data.spacing=[2.0, 2.0, 2.0]"]))
    assert mocomri.config.config_changes(before, now) == [
        "augment.families.flair.noise_std: 0.05 -> None",
        "data.spacing: None -> [2.0, 2.0, 2.0]",
        "moco.momentum: 0.99 -> 0.9",
        "optim.lr: 0.03 -> 0.1",
    ]


def test_config_changes__keys_that_change_no_step_and_keys_added_since_are_no_change():
    stored = config_to_dict(load_config(None, []))
    del stored["model"]["init"]  # a config.yaml written before the key existed: its default
    harmless = [f"{key}={value}" for key, value in [
        ("train.out_dir", "elsewhere"), ("train.time_budget_min", 5), ("train.stop_on_collapse", "false"),
        ("train.collapse_spread", 0.1), ("train.collapse_patience_steps", 9), ("train.checkpoint_every_steps", 7),
        ("train.keep_checkpoints", 5), ("train.device", "cpu"), ("train.keep_freed_memory", "false"),
        ("data.num_workers", 7), ("data.cache_dir", "elsewhere"), ("log.every_steps", 3),
        ("log.tensorboard", "false"), ("log.progress", "false"), ("log.knn_monitor", "false"),
        ("log.knn_every_steps", 3)]]
    assert {k.split("=")[0] for k in harmless} == mocomri.config.CHANGES_ALLOWED_ON_RESUME
    assert mocomri.config.config_changes(stored, config_to_dict(load_config(None, harmless))) == []
    # the kNN figure's definition is not among them
    assert mocomri.config.config_changes(stored, config_to_dict(load_config(None, ["log.knn_k=5"]))) == ["log.knn_k: 20 -> 5"]


def test_shipped_configs__all_load():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        if path.name.startswith("ablation_"):
            continue  # ablation grids have their own schema (tests/test_ablation.py)
        load_config(path)


BAD_VALUES = [
    ("optim.name=adamx", "optim.name"), ("augment.pair_shift=1.5", "augment.pair_shift"),
    ("data.pretrain_patch_size=4", "data.pretrain_patch_size"), ("moco.momentum=1.5", "moco.momentum"), ("moco.momentum=1", "moco.momentum"),
    ("moco.queue_size=-5", "moco.queue_size"), ("train.precision=fp8", "train.precision"),
    ("moco.shuffle_bn=weird", "moco.shuffle_bn"), ("model.name=resnet999", "model.name"),
    ("train.batch_size=0", "train.batch_size"), ("moco.temperature=0", "moco.temperature"),
    ("moco.momentum_schedule=zigzag", "moco.momentum_schedule"), ("optim.lr=-1", "optim.lr"),
    ("moco.proj_dim=0", "moco.proj_dim"), ("data.num_workers=-2", "data.num_workers"), ("train.epochs=-1", "train.epochs"),
    ("data.image_size=0", "data.image_size"), ("model.width=0", "model.width"), ("model.in_channels=0", "model.in_channels"),
    ("moco.bn_splits=0", "moco.bn_splits"), ("moco.proj_hidden_dim=0", "moco.proj_hidden_dim"),
    ("model.norm=layer", "model.norm"), ("model.norm_groups=0", "model.norm_groups"),
    ("optim.weight_decay=-0.1", "optim.weight_decay"), ("optim.sgd_momentum=1", "optim.sgd_momentum"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs"), ("optim.min_lr_ratio=2", "optim.min_lr_ratio"),
    ("train.max_steps=-1", "train.max_steps"), ("train.time_budget_min=-5", "train.time_budget_min"),
    ("train.device=gpu", "train.device"), ("train.channels_last=maybe", "train.channels_last"),
    ("train.checkpoint_every_steps=0", "train.checkpoint_every_steps"), ("train.keep_checkpoints=0", "train.keep_checkpoints"),
    ("log.every_steps=0", "log.every_steps"), ("log.knn_k=0", "log.knn_k"), ("log.knn_max_items=0", "log.knn_max_items"),
    ("log.knn_every_steps=0", "log.knn_every_steps"), ("moco.mask_max_share=1.5", "moco.mask_max_share"),
    ("moco.mask_max_share=-0.1", "moco.mask_max_share"), ("train.collapse_spread=-1", "train.collapse_spread"),
    ("train.collapse_patience_steps=-1", "train.collapse_patience_steps"), ("train.stop_on_collapse=maybe", "train.stop_on_collapse"),
    ("data.patch_size=4", "data.patch_size"), ("data.slice_axis=3", "data.slice_axis"),
    ("data.min_foreground=1.5", "data.min_foreground"), ("data.crop_margin=-1", "data.crop_margin"),
    ("data.foreground_threshold=1", "data.foreground_threshold"), ("data.kind=voxels", "data.kind"),
    ("data.pretrain_splits=[training]", "data.pretrain_splits"), ("data.views_on=gpu", "data.views_on"),
    ("data.working_size=-1", "data.working_size"), ("data.missing_contrast=maybe", "data.missing_contrast"),
    ("augment.preset=fancy", "augment.preset"), ("augment.base.noise_prob=2", "augment.base.noise_prob"),
    ("augment.base.crop_scale=[0.9,0.5]", "augment.base.crop_scale"), ("augment.base.crop_aspect=0.5", "augment.base.crop_aspect"),
    ("augment.base.gibbs_alpha=[0,2]", "augment.base.gibbs_alpha"), ("augment.base.histogram_points=2", "augment.base.histogram_points"),
    ("augment.families.flair.gamma=[2,1]", "augment.families.flair.gamma"),
    ("augment.families.dwi.noise_std=-1", "augment.families.dwi.noise_std"),
]


@pytest.mark.parametrize("override,key", BAD_VALUES, ids=[b for b, _ in BAD_VALUES])
def test_load_config__every_constrained_value_is_checked_at_load_naming_its_key(override, key):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    message = str(caught.value)
    assert message.startswith(key) or f"'{key}" in message or key in message.split(":")[0]
    assert "\n" not in message


@pytest.mark.parametrize("epochs", ["-1", "0"])
def test_load_config__non_positive_epochs_is_an_error_even_with_max_steps(epochs):
    with pytest.raises(ConfigError, match=r"^train\.epochs"):
        load_config(None, [f"train.epochs={epochs}", "train.max_steps=100"])


def test_load_config__masking_collapse_and_knn_keys_default_and_override():
    default = load_config(None)
    assert (default.moco.mask_max_share, default.train.collapse_patience_steps, default.train.stop_on_collapse) == (0.05, 1000, True)
    cfg = load_config(None, ["moco.mask_max_share=0.5", "train.collapse_spread=0.1", "train.collapse_patience_steps=0",
                             "train.stop_on_collapse=false", "log.knn_every_steps=50"])
    assert cfg.moco.mask_max_share == 0.5 and cfg.train.collapse_spread == 0.1
    assert cfg.train.collapse_patience_steps == 0 and cfg.train.stop_on_collapse is False and cfg.log.knn_every_steps == 50


def test_load_config__norm_names_the_key_and_its_choices():
    with pytest.raises(ConfigError, match=r"^model\.norm='instance': expected one of 'batch', 'group'$"):
        load_config(None, ["model.norm=instance"])


def test_load_config__norm_groups_must_divide_the_width_only_for_group_norm():
    with pytest.raises(ConfigError, match=r"model\.norm_groups=8 must divide model\.width=12"):
        load_config(None, ["model.norm=group", "model.width=12"])
    assert load_config(None, ["model.width=12"]).model.norm == "batch"  # BatchNorm has no groups
    cfg = load_config(None, ["model.norm=group", "model.width=12", "model.norm_groups=4"])
    assert (cfg.model.norm, cfg.model.norm_groups) == ("group", 4)


def test_pretrain_command__bad_value_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    from mocomri.cli import main as cli_main

    from pathlib import Path

    # A shipped config whose budget is in epochs: the battery sets train.epochs, which a config
    # with train.max_steps (the demo's) does not use.
    config = Path(__file__).parents[1] / "configs" / "brain_tumor_cpu.yaml"
    out = tmp_path / "run"
    for override, key in BAD_VALUES[:14]:  # the battery from the issue
        assert cli_main(["pretrain", "--config", str(config), "--out", str(out), override]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and key in err and "Traceback" not in err
        assert not out.exists()


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs__load_and_validate(path: Path) -> None:
    """Every config in configs/ is valid as shipped: a pretraining config, or an ablation whose
    every cell's config loads."""
    import yaml

    from mocomri.ablation import load_ablation

    tree = yaml.safe_load(path.read_text()) or {}
    if "grid" in tree or "cells" in tree:
        assert load_ablation(path).cells
    else:
        load_config(path).validate()


# Each choice key: where the implementation defines its allowed values, and a call into the
# implementation that raises for a value it does not handle.
def _resolve_every_way(mode: str) -> set[str]:
    situations = [(batch_norm, distributed) for batch_norm in (True, False) for distributed in (True, False)]
    return {resolve_shuffle_bn(mode, batch_norm, distributed) for batch_norm, distributed in situations}


def _build_optimizer(name: str) -> torch.optim.Optimizer:
    cfg = Config()
    cfg.optim.name = name  # unvalidated: what the implementation does on its own
    return build_optimizer(nn.Linear(2, 2), cfg)


def _select_precision(name: str) -> str:
    # fp16 needs CUDA; naming a CUDA device is enough, as an explicit choice touches none
    return select_precision(name, torch.device("cuda" if name == "fp16" else "cpu"), spatial_dims=2)


CHOICE_KEYS = {
    # key: (module, name of the allowed values there, implementation)
    "model.name": ("mocomri.models.encoders", "ENCODERS", spatial_dims_of),
    "model.norm": ("mocomri.models.norm", "NORMS",
                   lambda norm: create_encoder("resnet18", width=8, norm=norm, norm_groups=4)),
    "moco.momentum_schedule": ("mocomri.models.momentum", "MOMENTUM_SCHEDULES",
                               lambda name: MOMENTUM_SCHEDULES[name](0.5, 0.99)),
    "moco.shuffle_bn": ("mocomri.models.shuffle_bn", "SHUFFLE_BN_MODES", _resolve_every_way),
    "optim.name": ("mocomri.train.optimizer", "OPTIMIZERS", _build_optimizer),
    "train.precision": ("mocomri.train.runtime", "PRECISIONS", _select_precision),
    "train.channels_last": ("mocomri.train.runtime", "CHANNELS_LAST",
                            lambda setting: select_channels_last(setting, torch.device("cpu"), spatial_dims=2)),
}


@pytest.mark.parametrize("key", sorted(CHOICE_KEYS))
def test_config_choices__are_the_implementations_own_objects(key):
    module, name, _ = CHOICE_KEYS[key]
    assert getattr(mocomri.config, name) is getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("key", sorted(CHOICE_KEYS))
def test_config_choices__config_and_implementation_accept_and_reject_the_same_values(key):
    module, name, implementation = CHOICE_KEYS[key]
    allowed = list(getattr(importlib.import_module(module), name))
    assert allowed
    section, field_name = key.split(".")
    for value in allowed:
        cfg = load_config(None, [f"{key}={value!r}"])  # quoted: YAML would read true/false as booleans
        assert getattr(getattr(cfg, section), field_name) == value
        implementation(value)  # raises if the implementation refuses a value the config accepts
    with pytest.raises(ConfigError, match=rf"^{key}='bogus': expected one of "):
        load_config(None, [f"{key}=bogus"])
    with pytest.raises((ValueError, KeyError)):
        implementation("bogus")


@pytest.mark.parametrize("mode", SHUFFLE_BN_MODES)
def test_config_choices__every_shuffle_bn_mode_resolves_to_one_moco_implements(mode):
    # MoCo._encode_keys shuffles for "ddp" and "split" and does nothing for "none"
    assert _resolve_every_way(mode) <= {"ddp", "split", "none"}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_config_choices__every_precision_resolves_to_one_autocast_implements(precision):
    # Runtime.autocast: none for fp32, bfloat16 for bf16, float16 for fp16
    assert _select_precision(precision) in {"fp32", "bf16", "fp16"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.name=resnet999", "model.name='resnet999': expected one of 'resnet18', 'resnet34', 'resnet50', "
                                 "'resnet10_3d', 'resnet18_3d', 'resnet34_3d'"),
        ("moco.momentum_schedule=zigzag", "moco.momentum_schedule='zigzag': expected one of 'constant', 'cosine'"),
        ("moco.shuffle_bn=weird", "moco.shuffle_bn='weird': expected one of 'auto', 'ddp', 'split', 'none'"),
        ("optim.name=adamx", "optim.name='adamx': expected one of 'sgd', 'adamw'"),
        ("train.precision=fp8", "train.precision='fp8': expected one of 'auto', 'fp32', 'bf16', 'fp16'"),
        ("train.channels_last=maybe", "train.channels_last='maybe': expected one of 'auto', 'true', 'false'"),
    ],
)
def test_load_config__a_bad_choice_names_the_key_and_the_allowed_values(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert str(caught.value) == message


def test_config__imports_at_the_top_only_modules_that_never_import_config():
    """The config is the bottom layer: what it imports must not import it back, or loading
    either would meet a half-initialised module. Checked in a fresh interpreter."""
    tree = ast.parse(Path(mocomri.config.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    everywhere = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert everywhere == top_level, "an import inside a function hides a dependency of the config"
    modules = sorted(
        f"{node.module}.{alias.name}" if node.module == "mocomri" else node.module
        for node in top_level if isinstance(node, ast.ImportFrom) and node.module.startswith("mocomri")
        for alias in node.names
    )
    assert "mocomri.models.shuffle_bn" in modules and "mocomri.train.runtime" in modules
    code = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint('mocomri.config' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_config__an_override_that_max_steps_overrules_is_an_error() -> None:
    # demo.yaml sets train.max_steps, which wins over train.epochs: the override would do nothing
    with pytest.raises(ConfigError, match=r"train.epochs=20 has no effect: the config sets train.max_steps=1600"):
        load_config("configs/demo.yaml", ["train.epochs=20"])
    assert load_config("configs/demo.yaml", ["train.epochs=20", "train.max_steps=0"]).train.epochs == 20


def test_load_config__shipped_configs_are_found_from_any_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here: the packaged copies answer
    assert load_config("configs/brain_tumor_cpu.yaml").train.epochs == 200
    assert load_config("brain_tumor_gpu").train.batch_size == 256  # by name; base: resolves beside it
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "brain_tumor_cpu.yaml").write_text("train:\n  epochs: 3\n")
    assert load_config("configs/brain_tumor_cpu.yaml").train.epochs == 3  # a local file wins
    with pytest.raises(FileNotFoundError, match=r"config file not found: elsewhere/demo.yaml \(shipped configs: .*demo"):
        load_config("elsewhere/demo.yaml")
