"""``run_probe``: the whole evaluation of one encoder, from a manifest to a report.

1. Resolve the encoder (run directory, ``encoder.pt`` or ``random``) and the data settings.
2. Keep the labelled ``train`` and evaluation-split rows; refuse leakage between them; decide the
   task (classification or regression, :func:`mocomri.eval.tasks.choose_task`).
3. Extract features once per encoder (cached): the encoder, the random-init encoder of the same
   architecture, raw pixels, intensity statistics.
4. For each label fraction and seed: draw the labelled subset (stratified, by subject), fit the
   linear probe and the kNN, predict the evaluation items, aggregate them per unit, score.
   Optionally train the same architecture end to end on the same subset: from random init
   (supervised from scratch) and, with ``finetune``, from the encoder's weights (fine-tuning).
5. Summarise (mean ± std over seeds; bootstrap CI of the mean) and write the report.

What differs between the tasks is gathered in one :class:`ProbeTask` per task (its items,
methods, labelled subsets, scoring and the paired comparisons): a classification fits logistic
regression and a kNN classifier and is scored on accuracy, F1 and AUROC; a regression fits
ridge regression and a kNN regressor beside the predict-the-training-mean baseline, its
subsets are stratified by quantile bin of the target, and it is scored on MAE, RMSE and R².
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mocomri.augment.settings import AugmentConfig
from mocomri.config import Config
from mocomri.data.datasets import build_eval_dataset
from mocomri.data.manifest import read_manifest
from mocomri.data.settings import DataConfig
from mocomri.errors import ConfigError, DataError
from mocomri.eval.baselines import (
    INTENSITY_PERCENTILES,
    IntensityStatistics,
    SupervisedBudget,
    predict_supervised,
    raw_pixel_encoder,
    train_supervised,
    view_augmenter,
)
from mocomri.eval.features import (
    RANDOM,
    EncoderSource,
    cache_key,
    cached,
    extract_features,
    feature_extractor,
    load_encoder_source,
    resolve_device,
)
from mocomri.eval.fractions import TARGET_BINS, sample_label_fraction, sample_target_fraction
from mocomri.eval.items import LabelledItems
from mocomri.eval.leakage import check_leakage, find_leakage, pretraining_findings
from mocomri.eval.probe import DEFAULT_CS, fit_knn_probe, fit_linear_probe, predict_proba
from mocomri.eval.regression_probe import DEFAULT_ALPHAS, fit_knn_regressor, fit_ridge_probe
from mocomri.eval.report import write_report
from mocomri.eval.scoring import paired_difference, score, score_regression, summarise
from mocomri.eval.tasks import CLASSIFICATION, REGRESSION, TASKS, TaskChoice, as_number, choose_task

UNITS = ("item", "scan", "subject")
UNIT_ALIASES = {"slice": "item", "image": "item"}
# The encoder fine-tuned end to end; it implies "supervised", the same training from random init.
FINETUNE = "finetune"
# (encoder, baseline) pairs whose difference gets a paired bootstrap CI.
PAIRED = (
    ("moco", "random_init"),
    ("moco", "raw_pixels"),
    ("moco", "intensity_stats"),
    ("moco", "supervised"),
    ("moco_knn", "random_init_knn"),
    # Fine-tuned against fine-tuned: the same steps, subsets and seeds, only the starting weights differ.
    (FINETUNE, "supervised"),
)
BASELINES = ("random_init", "raw_pixels", "intensity_stats", "supervised", FINETUNE)
ENCODER_METHOD = "moco"
# A regression's chance level: always predicting the mean target of the labelled training items.
TRAIN_MEAN = "train_mean"
REGRESSION_PAIRED = (
    ("moco", "random_init"),
    ("moco", "raw_pixels"),
    ("moco", "intensity_stats"),
    ("moco", TRAIN_MEAN),
    ("moco_knn", "random_init_knn"),
)


@dataclass
class ProbeOptions:
    """Settings of a probe run beyond the main arguments of :func:`run_probe`."""

    eval_split: str = "test"  # "test" | "val"
    knn_k: int = 20
    n_boot: int = 1000
    allow_leakage: bool = False
    device: str = "auto"
    bf16: bool = False  # bfloat16 autocast for feature extraction
    batch_size: int = 64
    cv_folds: int = 5
    Cs: tuple[float, ...] = DEFAULT_CS
    alphas: tuple[float, ...] = DEFAULT_ALPHAS  # ridge penalties of a regression's linear probe
    task: str = "auto"  # "auto" | "classification" | "regression" (mocomri.eval.tasks.choose_task)
    pca_components: int = 64  # raw-pixel baseline
    features: str = "pooled"  # "pooled" (the backbone's output) | "stages" (StagePooled) | "patches" (PatchPooled)
    # Processes for the linear probe's CV fits: the fits are most of a probe's time on a CPU
    # (25 L-BFGS fits per probe), and they are independent. -1: every core.
    cv_jobs: int | None = -1
    encoder_seed: int = 0  # initialisation of the random-init encoder
    # The budget of end-to-end training: supervised from scratch and fine-tuning alike.
    supervised: SupervisedBudget = field(default_factory=SupervisedBudget)
    feature_cache_dir: str | None = None  # None: OUT_DIR/features; share it to reuse features across runs
    config_source: str | None = None  # where the config came from (file, overrides), for the report


def run_probe(
    encoder: str | Path,
    manifest: str | Path,
    config: Config | None = None,
    *,
    out_dir: str | Path,
    label_fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: int = 3,
    baselines: Sequence[str] = ("random_init", "raw_pixels"),
    unit: str = "scan",
    options: ProbeOptions | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Probes a frozen encoder against its baselines and writes ``report.md`` and friends.

    Args:
        encoder: a pretraining run directory, an ``encoder.pt``, or ``"random"``.
        manifest: the manifest CSV; its labelled ``train`` rows train the probes.
        config: data settings, architecture and augmentations; ``None``: the run's
            ``config.yaml``, else the defaults. An explicit architecture must fit the weights.
        out_dir: where the report, metrics, plots and the feature cache go.
        label_fractions: shares of labelled training subjects, each in (0, 1].
        seeds: draws of each label fraction (and probe CV seeds).
        baselines: any of ``random_init``, ``raw_pixels``, ``intensity_stats``, ``supervised``, ``finetune``
            (the encoder and a new linear head trained end to end; it implies ``supervised``, the same
            training from random init, and adds nothing for ``"random"``). The random-init encoder is
            always run beside a pretrained one: no number without its baseline.
        unit: ``item`` (each slice or image; alias ``slice``), ``scan`` (item probabilities
            averaged per manifest row) or ``subject`` (averaged per subject).
        options: the rest (see :class:`ProbeOptions`); ``options.task`` picks classification
            or regression (default ``auto``: :func:`mocomri.eval.tasks.choose_task`).
        verbose: print progress to stderr.

    Returns:
        The metrics dict that is also written to ``metrics.json``: ``settings``, ``task``
        (``name``, ``reason``, ``requested``), ``provenance``, ``leakage``,
        ``methods[method][str(fraction)][metric]`` with ``mean``, ``std``, ``per_seed`` and ``ci``
        (the 95% bootstrap interval of the mean over seeds), ``differences`` (paired, encoder
        minus baseline). A classification adds ``classes`` and ``confusion``; its methods are
        ``moco``, ``moco_knn``, ``random_init``, ``random_init_knn``, ``raw_pixels``,
        ``intensity_stats``, ``finetune``, ``supervised`` (those that ran) and its metrics accuracy,
        balanced accuracy, macro F1 and AUROC. A regression adds ``target`` and ``predictions``; its
        methods are the same but ``finetune`` and ``supervised``, plus ``train_mean``, and its metrics ``mae``,
        ``rmse`` and ``r2``. Fractions are keyed ``str(float(f))``.

    Raises:
        LeakageError: a test item shares a subject or a sha1 with a training item.
        DataError: no labelled training or test rows, or a test label unseen in training;
            ``--task regression`` on a label that is not a number.
        ConfigError: ``supervised`` or ``finetune`` asked of a regression.
        ValueError: an unknown unit, baseline or task, a fraction outside (0, 1], seeds < 1.
    """
    options = options or ProbeOptions()
    out_dir = Path(out_dir)
    collected = collect_probe_runs(
        encoder, manifest, config, out_dir=out_dir, label_fractions=label_fractions, seeds=seeds,
        baselines=baselines, unit=unit, options=options, verbose=verbose,
    )
    metrics = probe_metrics(collected, options)
    metrics["files"] = {k: str(v) for k, v in write_report(out_dir, metrics).items()}
    return metrics


@dataclass
class ProbeRuns:
    """What :func:`collect_probe_runs` scored, before the summary over seeds.

    ``runs[method][fraction]`` holds one :func:`~mocomri.eval.scoring.score` dict per seed.
    """
    source: EncoderSource
    data_cfg: DataConfig
    manifest: str
    items: LabelledItems
    methods: list[str]
    findings: list[str]
    label_fractions: list[float]
    seeds: int
    unit: str
    runs: dict[str, dict[float, list[dict[str, Any]]]]
    task: TaskChoice


def collect_probe_runs(
    encoder: str | Path,
    manifest: str | Path,
    config: Config | None = None,
    *,
    out_dir: str | Path,
    label_fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seeds: int = 3,
    baselines: Sequence[str] = ("random_init", "raw_pixels"),
    unit: str = "scan",
    options: ProbeOptions | None = None,
    verbose: bool = True,
) -> ProbeRuns:
    """Steps 1-4 of :func:`run_probe` (same arguments): every method's test predictions and
    scores per fraction and seed, not yet summarised (cross-fitting pools them over folds)."""
    options = options or ProbeOptions()
    unit = UNIT_ALIASES.get(unit, unit)
    _check_arguments(label_fractions, seeds, baselines, unit, options.task)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = _logger(verbose)

    # 1. Encoder, data settings, augmentations: explicit config, else the run's, else defaults.
    source = load_encoder_source(encoder, config.model if config else None)
    base = config or source.run_config or Config()
    data_cfg = dataclasses.replace(base.data, manifest=str(manifest))

    # 2. Labelled rows, leakage guard, task, dataset.
    full = read_manifest(manifest)
    labelled = [r for r in full.rows if r.label and r.split in ("train", options.eval_split)]
    train_rows = [r for r in labelled if r.split == "train"]
    test_rows = [r for r in labelled if r.split == options.eval_split]
    findings = find_leakage(train_rows, test_rows)
    if source.run_config is not None:
        run_data = source.run_config.data
        findings += pretraining_findings(run_data.manifest, run_data.pretrain_splits, manifest, options.eval_split)
    check_leakage(findings, allow=options.allow_leakage)
    task = choose_task([r.label for r in labelled], options.task, source=str(manifest))
    probe_task = PROBE_TASKS[task.name]
    methods = _methods(source, baselines, task.name)
    items = probe_task.items(full.replace_rows(labelled), data_cfg, options.eval_split, unit)
    log(f"probe: {int(items.is_train.sum())} train / {int((~items.is_train).sum())} "
        f"{options.eval_split} items, {probe_task.describe(items)}, unit={unit}; {task.name} ({task.reason})")

    # 3. Features, once per encoder, cached.
    cache_dir = Path(options.feature_cache_dir) if options.feature_cache_dir else out_dir / "features"
    features = _all_features(source, methods, probe_task.methods, items, data_cfg, options, cache_dir, log)

    # 4. Probes over fractions and seeds.
    runs: dict[str, dict[float, list[dict[str, Any]]]] = {m: {} for m in methods}
    for fraction in label_fractions:
        for seed in range(seeds):
            chosen = probe_task.subset(items, fraction, seed)
            for name in methods:
                log(f"probe: {name} fraction={fraction:g} seed={seed}")
                method = probe_task.methods[name]
                # (N_test, K) class probabilities, or (N_test,) predicted values
                prediction = method.fit(method, chosen, items, features, source, base.augment, options, seed)
                runs[name].setdefault(fraction, []).append(probe_task.score(prediction, chosen, items, options))
    return ProbeRuns(source=source, data_cfg=data_cfg, manifest=str(manifest), items=items, methods=methods,
                     findings=findings, label_fractions=[float(f) for f in label_fractions], seeds=seeds,
                     unit=unit, runs=runs, task=task)


def probe_metrics(collected: ProbeRuns, options: ProbeOptions) -> dict[str, Any]:
    """Step 5 of :func:`run_probe`: the summary over seeds, the paired gaps, the confusion
    matrices, as written to ``metrics.json`` (without ``files``)."""
    runs, methods, fractions = collected.runs, collected.methods, collected.label_fractions
    probe_task = PROBE_TASKS[collected.task.name]
    return {
        "settings": _settings(collected.data_cfg, collected.manifest, fractions, collected.seeds, collected.unit,
                              methods, options, collected.items),
        "task": collected.task.as_dict(),
        "provenance": collected.source.provenance(),
        "leakage": {"allowed": options.allow_leakage, "findings": collected.findings},
        **probe_task.labels(collected.items),
        "methods": {m: {fraction_key(f): summarise(r) for f, r in per_f.items()} for m, per_f in runs.items()},
        # The encoder against each baseline on the same test subjects: a paired CI of the gap.
        "differences": {
            f"{a} - {b}": {fraction_key(f): paired_difference(runs[a][f], runs[b][f]) for f in fractions}
            for a, b in probe_task.paired if a in runs and b in runs
        },
        **probe_task.examples(runs, max(fractions)),
    }


def fraction_key(fraction: float) -> str:
    """How a label fraction keys ``metrics["methods"][method]``: ``str(float(f))``, e.g. ``"0.1"``, ``"1.0"``."""
    return str(float(fraction))


def _check_arguments(fractions: Sequence[float], seeds: int, baselines: Sequence[str], unit: str, task: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r} must be one of {', '.join(UNITS)}")
    if task not in TASKS:
        raise ValueError(f"task={task!r} must be one of {', '.join(TASKS)}")
    if seeds < 1:
        raise ValueError(f"seeds={seeds} must be at least 1")
    if not fractions:
        raise ValueError("label_fractions is empty")
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"label fraction {f} must be in (0, 1]")
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baseline(s) {', '.join(sorted(unknown))}; known: {', '.join(BASELINES)}")


def _methods(source: EncoderSource, baselines: Sequence[str], task: str = CLASSIFICATION) -> list[str]:
    """The evaluated methods; a pretrained encoder is never reported without its random init, nor
    without the task's chance level where it has one (a regression's training mean).

    Raises:
        ConfigError: a baseline the task has no form of (a regression has no supervised or
            fine-tuned one: they train a classifier).
    """
    table = PROBE_TASKS[task].methods
    for name in baselines:
        if name not in table:
            kind = "method" if name == FINETUNE else "baseline"
            raise ConfigError(f"the {name!r} {kind} has no {task} form: drop it (--{name.replace('_', '-')}), "
                              f"or probe with --task classification")
    methods = [] if source.kind == RANDOM else [ENCODER_METHOD, f"{ENCODER_METHOD}_knn"]
    methods += ["random_init", "random_init_knn"]
    if "raw_pixels" in baselines:
        methods.append("raw_pixels")
    if "intensity_stats" in baselines:
        methods.append("intensity_stats")
    if FINETUNE in baselines and source.kind != RANDOM:  # fine-tuning random weights is "supervised"
        methods.append(FINETUNE)
    if "supervised" in baselines or FINETUNE in baselines:
        methods.append("supervised")
    return methods + list(PROBE_TASKS[task].chance)


def _logger(verbose: bool):
    def log(message: str) -> None:
        if verbose:
            print(message, file=sys.stderr, flush=True)

    return log


def _label_sort_key(label: str) -> tuple:
    try:
        return (0, float(label), label)  # numeric labels in numeric order
    except ValueError:
        return (1, 0.0, label)


def _build_eval_dataset(manifest: Any, data_cfg: DataConfig, splits: list[str]) -> Any:
    return build_eval_dataset(manifest, data_cfg, splits)


def _probe_items(manifest: Any, data_cfg: DataConfig, eval_split: str, unit: str) -> LabelledItems:
    """The labelled rows' evaluation dataset and per-item arrays, each label a class."""
    rows = manifest.rows
    train_labels = {r.label for r in rows if r.split == "train"}
    if len(train_labels) < 2:
        raise DataError(
            f"{data_cfg.manifest}: a probe needs labelled 'train' rows of at least two classes "
            f"(found: {', '.join(sorted(train_labels)) or 'none'})"
        )
    _check_eval_rows(rows, data_cfg, eval_split)
    unseen = sorted({r.label for r in rows if r.split == eval_split} - train_labels)
    if unseen:
        raise DataError(f"{data_cfg.manifest}: '{eval_split}' label(s) {', '.join(unseen)} never occur in 'train'")
    if unit == "subject":
        _check_one_label_per_subject(rows, lambda r: r.label)
    classes = tuple(sorted(train_labels, key=_label_sort_key))
    index = {c: i for i, c in enumerate(classes)}
    return _labelled_items(manifest, data_cfg, eval_split, unit, lambda r: index[r.label], classes, CLASSIFICATION)


def _regression_items(manifest: Any, data_cfg: DataConfig, eval_split: str, unit: str) -> LabelledItems:
    """The labelled rows' evaluation dataset and per-item arrays, each label a number (the target)."""
    rows = manifest.rows
    train_values = {as_number(r.label) for r in rows if r.split == "train"}
    if len(train_values) < 2:
        raise DataError(
            f"{data_cfg.manifest}: a regression probe needs labelled 'train' rows with at least two "
            f"different values (found: {', '.join(f'{v:g}' for v in sorted(train_values)) or 'none'})"
        )
    _check_eval_rows(rows, data_cfg, eval_split)
    if unit == "subject":
        _check_one_label_per_subject(rows, lambda r: as_number(r.label))
    return _labelled_items(manifest, data_cfg, eval_split, unit, lambda r: as_number(r.label), (), REGRESSION)


def _check_eval_rows(rows: Sequence[Any], data_cfg: DataConfig, eval_split: str) -> None:
    if not any(r.split == eval_split for r in rows):
        raise DataError(f"{data_cfg.manifest}: no labelled '{eval_split}' rows to evaluate on")


def _check_one_label_per_subject(rows: Sequence[Any], value: Callable[[Any], Any]) -> None:
    """unit=subject scores one prediction per subject against one label: a subject must have one."""
    by_subject: dict[str, dict[Any, str]] = {}
    for r in rows:
        by_subject.setdefault(r.subject, {}).setdefault(value(r), r.label)
    mixed = [s for s, labels in by_subject.items() if len(labels) > 1]
    if mixed:
        raise DataError(
            f"unit=subject needs one label per subject; subject '{mixed[0]}' has "
            f"{', '.join(sorted(by_subject[mixed[0]].values()))} (use unit=scan)"
        )


def _labelled_items(
    manifest: Any,
    data_cfg: DataConfig,
    eval_split: str,
    unit: str,
    label_of: Callable[[Any], Any],
    classes: tuple[str, ...],
    task: str,
) -> LabelledItems:
    """Builds the evaluation dataset of the labelled rows; ``label_of(row)`` is an item's label."""
    rows = manifest.rows
    dataset = _build_eval_dataset(manifest, data_cfg, ["train", eval_split])
    item_rows = np.asarray(dataset.item_rows, dtype=int)
    for split in ("train", eval_split):
        if not any(rows[i].split == split for i in item_rows):
            raise DataError(
                f"{data_cfg.manifest}: no '{split}' item left to probe (every scan skipped, or no slice "
                f"with data.min_foreground >= {data_cfg.min_foreground})"
            )
    subject = np.array([rows[i].subject for i in item_rows])
    units = {"item": np.arange(len(item_rows)), "scan": item_rows, "subject": subject}
    return LabelledItems(
        dataset=dataset,
        labels=np.array([label_of(rows[i]) for i in item_rows]),
        subjects=subject,
        classes=classes,
        splits=np.array([rows[i].split for i in item_rows]),
        units=units[unit],
        manifest=manifest,
        task=task,
    )


def _manifest_digest(manifest: Any) -> str:
    text = json.dumps([str(manifest.root)] + [dataclasses.astuple(r) for r in manifest.rows])
    return hashlib.sha256(text.encode()).hexdigest()


def _all_features(
    source: EncoderSource,
    methods: list[str],
    method_table: dict[str, Method],
    items: LabelledItems,
    data_cfg: DataConfig,
    options: ProbeOptions,
    cache_dir: Path,
    log,
) -> dict[str, np.ndarray]:
    """Features of every item for each feature-based method; ``(N, F)`` each."""
    random_source = EncoderSource(kind=RANDOM, model=source.model)
    spatial_dims = items.dataset.spatial_dims
    read = "" if options.features == "pooled" else f":{options.features}"
    patch = data_cfg.pretrain_patch_size if spatial_dims == 3 else 0  # the "patches" read-out's side
    if options.features == "patches" and not patch:
        raise ConfigError("--features patches reads 3D volumes as the patches the encoder was pretrained on: "
                          f"it needs 3D data and data.pretrain_patch_size (here {spatial_dims}D, "
                          f"data.pretrain_patch_size={data_cfg.pretrain_patch_size})")
    encoders = {
        ENCODER_METHOD: (source.identity + read,
                         lambda: feature_extractor(source.build()[0], options.features, patch)),
        "random_init": (
            f"{random_source.identity}:seed{options.encoder_seed}{read}",
            lambda: feature_extractor(random_source.build(seed=options.encoder_seed)[0], options.features, patch),
        ),
        "raw_pixels": (f"raw_pixels:{spatial_dims}", lambda: raw_pixel_encoder(spatial_dims)),
        "intensity_stats": (f"intensity_stats:{INTENSITY_PERCENTILES}", IntensityStatistics),
    }
    data_key = {k: v for k, v in dataclasses.asdict(data_cfg).items() if k not in ("num_workers", "cache_dir")}
    needed = {method_table[m].features for m in methods}
    features = {}
    for name, (identity, build) in encoders.items():
        if name not in needed:
            continue
        key = cache_key(identity, _manifest_digest(items.manifest), data_key, options.eval_split, options.bf16)

        def compute(build=build, name=name) -> np.ndarray:
            log(f"probe: extracting {name} features")
            return extract_features(
                build(),
                items.dataset,
                batch_size=options.batch_size,
                device=options.device,
                bf16=options.bf16,
                num_workers=data_cfg.num_workers,
            )

        features[name] = cached(cache_dir, name, key, compute)
    return features


def _labelled_subset(items: LabelledItems, fraction: float, seed: int) -> np.ndarray:
    """Item indices of the labelled training subset for one fraction and seed, stratified by class."""
    train = np.flatnonzero(items.is_train)
    return train[sample_label_fraction(items.labels[train], items.subjects[train], fraction, seed)]


def _target_subset(items: LabelledItems, fraction: float, seed: int) -> np.ndarray:
    """Item indices of the labelled training subset of a regression, stratified by quantile bin
    of the subjects' targets."""
    train = np.flatnonzero(items.is_train)
    return train[sample_target_fraction(items.labels[train], items.subjects[train], fraction, seed)]


def _fit_linear(method: Method, chosen: np.ndarray, items: LabelledItems, features: dict[str, np.ndarray],
                source: EncoderSource, augment_cfg: AugmentConfig, options: ProbeOptions, seed: int) -> np.ndarray:
    """The linear probe on the method's features (on their principal components where ``method.pca``)."""
    x = features[method.features]
    model = fit_linear_probe(
        x[chosen],
        items.labels[chosen],
        items.subjects[chosen],
        Cs=options.Cs,
        n_splits=options.cv_folds,
        pca_components=options.pca_components if method.pca else None,
        seed=seed,
        n_jobs=options.cv_jobs,
    )
    return predict_proba(model, x[~items.is_train], len(items.classes))


def _fit_knn(method: Method, chosen: np.ndarray, items: LabelledItems, features: dict[str, np.ndarray],
             source: EncoderSource, augment_cfg: AugmentConfig, options: ProbeOptions, seed: int) -> np.ndarray:
    """The kNN on the method's features."""
    x = features[method.features]
    model = fit_knn_probe(x[chosen], items.labels[chosen], k=options.knn_k)
    return predict_proba(model, x[~items.is_train], len(items.classes))


def _fit_supervised(method: Method, chosen: np.ndarray, items: LabelledItems, features: dict[str, np.ndarray],
                    source: EncoderSource, augment_cfg: AugmentConfig, options: ProbeOptions, seed: int) -> np.ndarray:
    """The same architecture trained from scratch on the chosen items, with the pretraining views."""
    return _train_end_to_end(EncoderSource(kind=RANDOM, model=source.model), chosen, items, augment_cfg, options,
                             seed)


def _fit_finetune(method: Method, chosen: np.ndarray, items: LabelledItems, features: dict[str, np.ndarray],
                  source: EncoderSource, augment_cfg: AugmentConfig, options: ProbeOptions, seed: int) -> np.ndarray:
    """The encoder fine-tuned end to end on the chosen items: :func:`_fit_supervised` started from
    the encoder's weights instead of random ones."""
    return _train_end_to_end(source, chosen, items, augment_cfg, options, seed)


def _train_end_to_end(start: EncoderSource, chosen: np.ndarray, items: LabelledItems, augment_cfg: AugmentConfig,
                      options: ProbeOptions, seed: int) -> np.ndarray:
    """Every weight of ``start``'s backbone and a new linear head trained with cross-entropy on the
    chosen items (``options.supervised`` steps, the pretraining views); the test items' probabilities.

    Shape:
        returns: (N_test, K)
    """
    dataset, n_classes = items.dataset, len(items.classes)
    backbone, feature_dim = start.build(seed=seed)
    device = resolve_device(options.device)
    augment = view_augmenter(augment_cfg, dataset.item_modalities, dataset.flip_axes, dataset.spatial_dims,
                             dataset.input_size)
    model = train_supervised(backbone, feature_dim, dataset, chosen, items.labels[chosen], n_classes,
                             augment=augment, budget=options.supervised, device=device, seed=seed)
    proba = predict_supervised(model, dataset, np.flatnonzero(~items.is_train), batch_size=options.batch_size, device=device)
    return _full_proba(proba, n_classes)


def _fit_ridge(method: Method, chosen: np.ndarray, items: LabelledItems, features: dict[str, np.ndarray],
               source: EncoderSource, augment_cfg: AugmentConfig, options: ProbeOptions, seed: int) -> np.ndarray:
    """Ridge regression on the method's features (on their principal components where ``method.pca``)."""
    x = features[method.features]
    model = fit_ridge_probe(
        x[chosen],
        items.labels[chosen],
        items.subjects[chosen],
        alphas=options.alphas,
        n_splits=options.cv_folds,
        pca_components=options.pca_components if method.pca else None,
        seed=seed,
    )
    return model.predict(x[~items.is_train])  # (N_test,)


def _fit_knn_regression(method: Method, chosen: np.ndarray, items: LabelledItems, features: dict[str, np.ndarray],
                        source: EncoderSource, augment_cfg: AugmentConfig, options: ProbeOptions,
                        seed: int) -> np.ndarray:
    """The kNN regressor on the method's features."""
    x = features[method.features]
    return fit_knn_regressor(x[chosen], items.labels[chosen], k=options.knn_k).predict(x[~items.is_train])


def _fit_train_mean(method: Method, chosen: np.ndarray, items: LabelledItems, features: dict[str, np.ndarray],
                    source: EncoderSource, augment_cfg: AugmentConfig, options: ProbeOptions, seed: int) -> np.ndarray:
    """A regression's chance level: the mean target of the labelled training items, for every test item."""
    return np.full(int((~items.is_train).sum()), float(np.mean(items.labels[chosen])))


# (method, chosen items, items, features, source, augment config, options, seed) -> (N_test, K)
# probabilities, or (N_test,) predicted values for a regression
Fit = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Method:
    """One evaluated method: the feature set it reads (a key of the extracted features; None
    for a method that trains on the images or reads no image) and how it fits and predicts."""

    features: str | None
    fit: Fit
    pca: bool = False  # the linear probe on principal components (raw pixels)


METHODS: dict[str, Method] = {
    ENCODER_METHOD: Method(ENCODER_METHOD, _fit_linear),
    f"{ENCODER_METHOD}_knn": Method(ENCODER_METHOD, _fit_knn),
    "random_init": Method("random_init", _fit_linear),
    "random_init_knn": Method("random_init", _fit_knn),
    "raw_pixels": Method("raw_pixels", _fit_linear, pca=True),
    "intensity_stats": Method("intensity_stats", _fit_linear),
    FINETUNE: Method(None, _fit_finetune),
    "supervised": Method(None, _fit_supervised),
}
REGRESSION_METHODS: dict[str, Method] = {
    ENCODER_METHOD: Method(ENCODER_METHOD, _fit_ridge),
    f"{ENCODER_METHOD}_knn": Method(ENCODER_METHOD, _fit_knn_regression),
    "random_init": Method("random_init", _fit_ridge),
    "random_init_knn": Method("random_init", _fit_knn_regression),
    "raw_pixels": Method("raw_pixels", _fit_ridge, pca=True),
    "intensity_stats": Method("intensity_stats", _fit_ridge),
    TRAIN_MEAN: Method(None, _fit_train_mean),
}


def _full_proba(proba: np.ndarray, n_classes: int) -> np.ndarray:
    return proba if proba.shape[1] == n_classes else np.pad(proba, ((0, 0), (0, n_classes - proba.shape[1])))


def _score_classes(proba: np.ndarray, chosen: np.ndarray, items: LabelledItems,
                   options: ProbeOptions) -> dict[str, Any]:
    test = ~items.is_train
    return score(proba, items.units[test], items.labels[test], items.subjects[test], items.subjects[chosen],
                 len(items.classes), options.n_boot)


def _score_targets(prediction: np.ndarray, chosen: np.ndarray, items: LabelledItems,
                   options: ProbeOptions) -> dict[str, Any]:
    test = ~items.is_train
    return score_regression(prediction, items.units[test], items.labels[test], items.subjects[test],
                            items.subjects[chosen], options.n_boot)


def _classes_entry(items: LabelledItems) -> dict[str, Any]:
    return {"classes": list(items.classes)}


def _target_entry(items: LabelledItems) -> dict[str, Any]:
    """The target's range and spread over items, for the report (the scale MAE is read on)."""
    train, evaluated = items.labels[items.is_train], items.labels[~items.is_train]
    return {"target": {
        "n_distinct": int(len(np.unique(items.labels))),
        "min": float(items.labels.min()),
        "max": float(items.labels.max()),
        "train_mean": float(train.mean()),
        "train_std": float(train.std()),
        "eval_mean": float(evaluated.mean()),
        "eval_std": float(evaluated.std()),
    }}


def _confusion_entry(runs: dict[str, dict[float, list[dict[str, Any]]]], largest: float) -> dict[str, Any]:
    """Each method's confusion matrix at the largest fraction, seed 0."""
    return {"confusion": {
        m: {"fraction": fraction_key(largest), "matrix": per_f[largest][0]["confusion"]} for m, per_f in runs.items()
    }}


def _predictions_entry(runs: dict[str, dict[float, list[dict[str, Any]]]], largest: float) -> dict[str, Any]:
    """Each method's unit predictions beside the targets at the largest fraction, seed 0."""
    return {"predictions": {
        m: {"fraction": fraction_key(largest), "target": per_f[largest][0]["label"].tolist(),
            "prediction": per_f[largest][0]["prediction"].tolist()}
        for m, per_f in runs.items()
    }}


@dataclass(frozen=True)
class ProbeTask:
    """What one task changes in a probe run; the encoders, features, label fractions, seeds and
    the bootstrap are shared."""

    items: Callable[[Any, DataConfig, str, str], LabelledItems]  # (manifest, data config, eval split, unit)
    methods: dict[str, Method]
    subset: Callable[[LabelledItems, float, int], np.ndarray]  # (items, fraction, seed) -> chosen item indices
    score: Callable[[np.ndarray, np.ndarray, LabelledItems, ProbeOptions], dict[str, Any]]  # (prediction, chosen, ...)
    paired: tuple[tuple[str, str], ...]  # (encoder, baseline) pairs whose difference gets a paired CI
    labels: Callable[[LabelledItems], dict[str, Any]]  # what metrics.json says of the labels
    examples: Callable[[dict[str, dict[float, list[dict[str, Any]]]], float], dict[str, Any]]  # for the figure
    describe: Callable[[LabelledItems], str]  # for the log
    chance: tuple[str, ...] = ()  # methods run beside every probe: the chance level


PROBE_TASKS: dict[str, ProbeTask] = {
    CLASSIFICATION: ProbeTask(_probe_items, METHODS, _labelled_subset, _score_classes, PAIRED, _classes_entry,
                              _confusion_entry, lambda items: f"{len(items.classes)} classes"),
    REGRESSION: ProbeTask(_regression_items, REGRESSION_METHODS, _target_subset, _score_targets, REGRESSION_PAIRED,
                          _target_entry, _predictions_entry,
                          lambda items: f"targets {items.labels.min():g} to {items.labels.max():g}", (TRAIN_MEAN,)),
}


def _settings(
    data_cfg: DataConfig,
    manifest: str | Path,
    fractions: Sequence[float],
    seeds: int,
    unit: str,
    methods: list[str],
    options: ProbeOptions,
    items: LabelledItems,
) -> dict[str, Any]:
    return {
        "manifest": str(manifest),
        "train_split": "train",
        "eval_split": options.eval_split,
        "unit": unit,
        "label_fractions": [float(f) for f in fractions],
        "seeds": seeds,
        "n_train_items": int(items.is_train.sum()),
        "n_eval_items": int((~items.is_train).sum()),
        "n_train_subjects": int(len(np.unique(items.subjects[items.is_train]))),
        "n_eval_subjects": int(len(np.unique(items.subjects[~items.is_train]))),
        "n_skipped_scans": len(getattr(items.dataset, "skipped", [])),
        "knn_k": options.knn_k,
        "task": items.task,
        "Cs": list(options.Cs),
        "alphas": list(options.alphas),
        "target_bins": TARGET_BINS if items.task == REGRESSION else None,
        "cv_folds": options.cv_folds,
        "pca_components": options.pca_components,
        "features": options.features,
        "n_boot": options.n_boot,
        "confidence": 0.95,
        "device": str(resolve_device(options.device)),
        "bf16": options.bf16,
        "encoder_seed": options.encoder_seed,
        "config_source": options.config_source,
        "supervised": dataclasses.asdict(options.supervised) if "supervised" in methods else None,
        "supervised_augment": _augment_description() if "supervised" in methods else None,
        "finetune": FINETUNE in methods,  # the budget and views of "supervised" apply to it too
        "data": dataclasses.asdict(data_cfg),
    }


def _augment_description() -> str:
    return "the pretraining views, batched (mocomri.augment.BatchViews)"
