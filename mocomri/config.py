"""The typed configuration tree, loaded from YAML and overridden with ``section.key=value``.

Every section is a dataclass; loading walks the tree and type-checks each value, so an unknown
key or a wrong type is an error that names the dotted key (``optim.lr: expected float, got 'abc'``).
The resolved config is written into every run directory and every checkpoint as a plain dict.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mocomri import validation as check
from mocomri.augment.settings import AugmentConfig
from mocomri.data.settings import DataConfig
from mocomri.errors import ConfigError
# Choice lists live beside their code, in leaf modules that never import config: config stays at the bottom.
from mocomri.models.encoders import ENCODERS
from mocomri.models.momentum import MOMENTUM_SCHEDULES
from mocomri.models.norm import NORMS
from mocomri.models.shuffle_bn import SHUFFLE_BN_MODES
from mocomri.train.optimizer import OPTIMIZERS
from mocomri.train.runtime import CHANNELS_LAST, PRECISIONS

PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"  # the shipped configs, installed with the package

@dataclass
class ModelConfig:
    """The encoder. ``name`` comes from the registry in :mod:`mocomri.models.encoders`."""

    name: str = "resnet18"
    in_channels: int = 1
    width: int = 64  # channels of the first stage; 64 is the standard ResNet, 16-32 suits a CPU
    norm: str = "batch"  # one of NORMS; "group" is GroupNorm: no dependence on the other items of a batch
    norm_groups: int = 8  # G of GroupNorm (arXiv:1803.08494); must divide width
    # A run directory or an encoder.pt whose weights both backbones start from (a fresh run only:
    # a resumed run restores its checkpoint); empty: random init. Not checked here, where every
    # command reading a run's config.yaml would fail once the file moved: pretraining checks it
    # (path and shapes) before it reads any data.
    init: str = ""

    def validate(self) -> None:
        check.choice("model.name", self.name, ENCODERS)
        check.at_least("model.in_channels", self.in_channels, 1)
        check.at_least("model.width", self.width, 1)
        check.choice("model.norm", self.norm, NORMS)
        check.at_least("model.norm_groups", self.norm_groups, 1)
        if self.norm == "group" and self.width % self.norm_groups:
            raise ConfigError(f"model.norm_groups={self.norm_groups} must divide model.width={self.width}: "
                              "every layer's channels are multiples of the width")


@dataclass
class MocoConfig:
    """MoCo v2 settings (arXiv:1911.05722, arXiv:2003.04297)."""

    queue_size: int = 4096  # K in the MoCo paper
    momentum: float = 0.99  # m in the MoCo paper (its default 0.999 assumes ImageNet-length runs)
    momentum_schedule: str = "constant"  # a key of MOMENTUM_SCHEDULES; "cosine" is MoCo v3's: m rises to 1
    temperature: float = 0.2  # T in the paper (MoCo v2: 0.2)
    proj_dim: int = 128
    proj_hidden_dim: int = 2048
    mask_same_subject: bool = True  # slices of one subject are not negatives of each other
    # With masking, the largest expected share of the queue it may remove (Σ p_s² over the masked
    # subjects, mocomri.train.masking): above it the largest subjects are left unmasked, and the
    # run says so. 20 or more balanced subjects are all masked; a (pseudo-)subject holding 97 %
    # of the items (all masked: 0.94 of the queue gone, and the run collapsed) is not.
    mask_max_share: float = 0.05
    shuffle_bn: str = "auto"  # one of SHUFFLE_BN_MODES (mocomri.models.shuffle_bn)
    bn_splits: int = 8  # sub-batches for split-BN on a single device

    def validate(self) -> None:
        check.at_least("moco.queue_size", self.queue_size, 1)
        # m = 1 would freeze the key encoder at its random initialisation.
        check.in_range("moco.momentum", self.momentum, 0.0, 1.0, high_open=True)
        check.choice("moco.momentum_schedule", self.momentum_schedule, MOMENTUM_SCHEDULES)
        check.positive("moco.temperature", self.temperature)
        check.at_least("moco.proj_dim", self.proj_dim, 1)
        check.at_least("moco.proj_hidden_dim", self.proj_hidden_dim, 1)
        check.choice("moco.shuffle_bn", self.shuffle_bn, SHUFFLE_BN_MODES)
        check.at_least("moco.bn_splits", self.bn_splits, 1)
        check.in_range("moco.mask_max_share", self.mask_max_share, 0.0, 1.0)


@dataclass
class OptimConfig:
    name: str = "sgd"  # a key of OPTIMIZERS (mocomri.train.optimizer)
    lr: float = 0.06  # per 256 images; scaled by batch_size / 256
    weight_decay: float = 5e-4
    sgd_momentum: float = 0.9
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.0

    def validate(self) -> None:
        check.choice("optim.name", self.name, OPTIMIZERS)
        check.positive("optim.lr", self.lr)
        check.at_least("optim.weight_decay", self.weight_decay, 0.0)
        check.in_range("optim.sgd_momentum", self.sgd_momentum, 0.0, 1.0, high_open=True)
        check.at_least("optim.warmup_epochs", self.warmup_epochs, 0.0)
        check.in_range("optim.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)


@dataclass
class TrainConfig:
    batch_size: int = 128
    epochs: float = 10.0
    max_steps: int = 0  # > 0 overrides epochs
    time_budget_min: float = 0.0  # > 0 stops (with a checkpoint) after this wall time
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    precision: str = "auto"  # one of PRECISIONS (mocomri.train.runtime)
    channels_last: str = "auto"  # one of CHANNELS_LAST (mocomri.train.runtime)
    keep_freed_memory: bool = True  # the pretrain/demo/ablate commands keep freed CPU memory in the process (runtime.keep_freed_memory)
    deterministic: bool = False
    out_dir: str = "runs/default"
    checkpoint_every_steps: int = 200
    keep_checkpoints: int = 2
    compile: bool = False
    # Collapse: the embeddings' spread (mocomri.train.monitors.embedding_spread, about 1 when
    # spread out) below collapse_spread at every log step for collapse_patience_steps steps
    # stops the run, unless stop_on_collapse is false (then it only warns). The patience is in
    # steps, not log steps, and long: the 3D patch recipe (configs/ixi185_3d_patches.yaml)
    # outlives an early dip of several hundred steps (BENCHMARKS.md, "What the loss shows").
    collapse_spread: float = 0.2
    collapse_patience_steps: int = 1000
    stop_on_collapse: bool = True

    def validate(self) -> None:
        check.at_least("train.batch_size", self.batch_size, 1)
        check.at_least("train.max_steps", self.max_steps, 0)
        check.positive("train.epochs", self.epochs)  # even when max_steps overrides it
        check.at_least("train.time_budget_min", self.time_budget_min, 0.0)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"train.device={self.device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
        check.choice("train.precision", self.precision, PRECISIONS)
        check.choice("train.channels_last", self.channels_last, CHANNELS_LAST)
        if not self.out_dir:
            raise ConfigError("train.out_dir is empty: name the run directory")
        check.at_least("train.checkpoint_every_steps", self.checkpoint_every_steps, 1)
        check.at_least("train.keep_checkpoints", self.keep_checkpoints, 1)
        check.at_least("train.collapse_spread", self.collapse_spread, 0.0)
        check.at_least("train.collapse_patience_steps", self.collapse_patience_steps, 0)


@dataclass
class LogConfig:
    every_steps: int = 10
    tensorboard: bool = True
    knn_monitor: bool = True  # kNN accuracy when the manifest has labels: at step 0, every knn_every_steps and at the end
    knn_every_steps: int = 1000
    knn_k: int = 20
    knn_max_items: int = 1000  # items per side (train, val or test), a fixed random sample
    progress: bool = True

    def validate(self) -> None:
        check.at_least("log.every_steps", self.every_steps, 1)
        check.at_least("log.knn_every_steps", self.knn_every_steps, 1)
        check.at_least("log.knn_k", self.knn_k, 1)
        check.at_least("log.knn_max_items", self.knn_max_items, 1)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    moco: MocoConfig = field(default_factory=MocoConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self) -> None:
        """Checks that span sections; each section checks its own values."""
        if self.data.channels and self.model.in_channels != len(self.data.channels):
            raise ConfigError(f"model.in_channels={self.model.in_channels} but data.channels={self.data.channels} "
                              f"stacks {len(self.data.channels)} contrasts: set model.in_channels={len(self.data.channels)}")


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Returns ``value`` converted to ``tp`` where that is lossless; raises ConfigError otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: unexpected value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_check_value(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _check_value(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected float, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected str, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp!r}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in names:
            where = f"{prefix}.{k}" if prefix else k
            raise ConfigError(f"unknown config key '{where}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for k, v in values.items():
        where = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _check_value(v, hints[k], where)
    obj = cls(**kwargs)
    post = getattr(obj, "validate", None)
    if callable(post):
        post()
    return obj


def _parse_scalar(text: str) -> Any:
    """Parses an override's right-hand side as YAML, so ``0.99``, ``true``, ``[1,2]`` work."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    return value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a section")
    node[parts[-1]] = value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Loads a YAML config (optionally inheriting ``base: other.yaml``) and applies overrides.

    Args:
        path: a YAML file; None starts from the defaults.
        overrides: ``section.key=value`` strings, values parsed as YAML.

    Returns:
        The validated :class:`Config`.

    Raises:
        ConfigError: an unknown key, a wrong type, or a malformed override; the message names it.
        FileNotFoundError: the YAML file does not exist.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        tree = _read_yaml_with_base(resolve_config_path(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        key, text = item.split("=", 1)
        _set_dotted(tree, key.strip(), _parse_scalar(text))
    cfg = _build(Config, tree)
    _check_overrides_take_effect(cfg, [item.split("=", 1)[0].strip() for item in overrides or []])
    return cfg


def _check_overrides_take_effect(cfg: Config, keys: list[str]) -> None:
    """An override that another key of the config silently overrules is an error, not a no-op."""
    if "train.epochs" in keys and "train.max_steps" not in keys and cfg.train.max_steps > 0:
        raise ConfigError(f"train.epochs={cfg.train.epochs:g} has no effect: the config sets "
                          f"train.max_steps={cfg.train.max_steps}, which wins; set train.max_steps instead, "
                          "or add train.max_steps=0")


def resolve_config_path(path: str | Path) -> Path:
    """A config file: ``path`` when it exists, else the packaged config of that name.

    The shipped configs are installed with the package (``mocomri/configs/``; ``configs/`` in the
    repository points there), so ``--config configs/demo.yaml`` or ``--config demo`` works from
    any directory once mocomri is installed; a file of that name in the working directory wins.

    Raises:
        FileNotFoundError: neither exists; the message names the path and the packaged configs.
    """
    path = Path(path)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    packaged = PACKAGED_CONFIGS / name
    if path.parent in (Path("."), Path("configs")) and packaged.is_file():
        return packaged
    shipped = ", ".join(sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml")))
    raise FileNotFoundError(f"config file not found: {path} (shipped configs: {shipped})")


def _read_yaml_with_base(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        tree = yaml.safe_load(f) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = tree.pop("base", None)
    if base is not None:
        tree = _merge(_read_yaml_with_base((path.parent / base).resolve()), tree)
    return tree


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain Python containers (what checkpoints and run directories store)."""
    return dataclasses.asdict(cfg)


# Keys that may differ between a run's checkpoint and the config that resumes it: none changes
# what a step computes or which items it reads, so the resumed run is still the one its checkpoint
# holds. Any other difference is another run, and resuming it is refused.
CHANGES_ALLOWED_ON_RESUME = frozenset({
    # The run directory itself, however it is spelt (relative, absolute, --out).
    "train.out_dir",
    # When to stop, not what a step does: a stopped run goes on with more time, or past a collapse
    # stop (whose message says to resume with train.stop_on_collapse=false).
    "train.time_budget_min",
    "train.stop_on_collapse",
    "train.collapse_spread",
    "train.collapse_patience_steps",
    # When checkpoints are written and how many stay on disk; the state they hold is the same.
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    # Where the steps run: a run may finish on another machine ("auto" already differs by machine).
    "train.device",
    "train.keep_freed_memory",
    # Loader processes and the cache's place: a batch and its views are functions of the step's
    # seeds, and cache entries are keyed by the source's digest and the preprocessing settings.
    "data.num_workers",
    "data.cache_dir",
    # What is logged and shown, and how often. The kNN monitor reads the backbone in eval mode with
    # its own generator. (log.knn_k and log.knn_max_items stay fixed: they define the logged kNN figure.)
    "log.every_steps",
    "log.tensorboard",
    "log.progress",
    "log.knn_monitor",
    "log.knn_every_steps",
})


def config_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What makes ``now`` another run than ``before``: each key that differs outside
    :data:`CHANGES_ALLOWED_ON_RESUME`, as ``"optim.lr: 0.03 -> 0.1"``, sorted by key.

    Args:
        before: a stored config (:func:`config_to_dict`, a checkpoint's or a ``config.yaml``);
            a key it lacks (added since it was written) counts as its default.
        now: the config to compare, as :func:`config_to_dict` gives it.
    """
    defaults = _flatten(config_to_dict(Config()))
    old, new = defaults | _flatten(before), defaults | _flatten(now)
    changed = sorted(k for k in old.keys() | new.keys()
                     if old.get(k) != new.get(k) and k not in CHANGES_ALLOWED_ON_RESUME)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; tuples as lists, as YAML reads them back."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Rebuilds (and re-validates) a config stored by :func:`config_to_dict`."""
    return _build(Config, tree)


def save_config(cfg: Config, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
