"""Cross-fitting: pretrain and probe once per fold, each fold's subjects held out of both, and
score the pooled held-out predictions, so that every labelled subject is tested exactly once.

Why: a cohort of ~200 subjects split once into train and test leaves ~45 test subjects, whose
95% CIs span ±10-13 points: a real gain of 15 points cannot be told from noise. Cross-fitting
tests all of them at the price of one pretraining per fold. Each fold's encoder is pretrained on
the other folds' scans only (no held-out scan is seen, even unlabelled), and its probe trains on
the other folds' labels; the pooled predictions are then scored as one test set, with the
bootstrap resampling subjects as everywhere else. The methods are compared on the same subjects,
so the paired gaps hold too.

Layout under ``out_dir``::

    folds.csv                       subject -> fold
    fold{k}/manifest.csv            train = the other folds (and unlabelled scans), test = fold k
    fold{k}/pretrain/               the fold's pretraining run (resumable)
    fold{k}/probe[_<task>][_stages|_patches]/  the fold's own probe report
    report.md, metrics.json         pooled over folds (one per task: report_<task>.md, ...;
                                    another read-out: report[_<task>]_stages.md, _patches.md, ...)

Probing the same folds again with another read-out (``--features stages`` or ``patches``) reuses every fold's
pretraining and writes beside the first reports.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.model_selection import StratifiedGroupKFold

from mocomri.config import Config, config_changes, config_to_dict
from mocomri.data.manifest import Manifest, read_manifest, write_manifest
from mocomri.errors import ConfigError, DataError
from mocomri.eval.features import READ_OUTS
from mocomri.eval.knn_monitor import KnnMonitor
from mocomri.eval.metrics import classification_metrics
from mocomri.eval.report import difference_title, format_cell, format_difference, method_title, write_report
from mocomri.eval.runner import PAIRED, ProbeOptions, collect_probe_runs, fraction_key, probe_metrics
from mocomri.eval.scoring import paired_difference, summarise
from mocomri.eval.tasks import CLASSIFICATION, choose_task
from mocomri.train.pretrain import pretrain


@dataclass
class Fold:
    """One fold: its held-out subjects and where its files go."""

    index: int
    test_subjects: list[str]
    dir: Path

    @property
    def run_dir(self) -> Path:
        return self.dir / "pretrain"

    def manifest_path(self, task: str = "") -> Path:
        return self.dir / (f"manifest_{task}.csv" if task else "manifest.csv")

    def probe_dir(self, task: str = "", features: str = "pooled") -> Path:
        return self.dir / f"probe{_suffix(task, features)}"


def assign_folds(manifest: Manifest, folds: int, seed: int = 0) -> dict[str, int]:
    """Subject -> fold for every labelled subject: folds of whole subjects, stratified by label
    (scikit-learn's ``StratifiedGroupKFold``). Subjects without a label are in no fold: their
    scans are always pretraining data.

    Raises:
        DataError: a subject with two labels, fewer than two labelled subjects per fold, or a
            class with fewer subjects than folds.
    """
    labels: dict[str, str] = {}
    for row in manifest.rows:
        if not row.label:
            continue
        if labels.setdefault(row.subject, row.label) != row.label:
            raise DataError(f"cross-fitting needs one label per subject; subject '{row.subject}' has "
                            f"{labels[row.subject]} and {row.label}")
    if folds < 2:
        raise ValueError(f"folds={folds} must be at least 2")
    subjects = sorted(labels)
    y = np.array([labels[s] for s in subjects])
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2 or counts.min() < folds:
        raise DataError(f"{len(subjects)} labelled subjects in {len(counts)} classes (smallest {counts.min() if len(counts) else 0}): "
                        f"cross-fitting with {folds} folds needs two classes of at least {folds} subjects each")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of: dict[str, int] = {}
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(subjects)), y, groups=subjects)):
        for i in test:
            fold_of[subjects[i]] = k
    return fold_of


def fold_manifest(manifest: Manifest, test_subjects: set[str]) -> Manifest:
    """The manifest of one fold: the held-out subjects' rows become ``test`` (their unlabelled
    scans too, so that no pretraining reads them); every other row becomes ``train``, labelled
    or not (pretraining reads them all; the probe trains on the labelled ones)."""
    rows = [dataclasses.replace(r, split="test" if r.subject in test_subjects else "train") for r in manifest.rows]
    return manifest.replace_rows(rows)


def pool_scores(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One :func:`~mocomri.eval.scoring.score` dict from the folds' dicts of one (method,
    fraction, seed): predictions concatenated, metrics recomputed on the whole, confusion summed.

    Raises:
        ValueError: a subject scored in two folds.
    """
    first_of: dict[str, int] = {}
    for k, s in enumerate(scores):
        for subj in set(map(str, s["subject"])):
            if first_of.setdefault(subj, k) != k:
                raise ValueError(f"subject '{subj}' is scored in folds {first_of[subj]} and {k}")
    subject = np.concatenate([s["subject"] for s in scores])
    label = np.concatenate([s["label"] for s in scores])
    proba = np.concatenate([s["proba"] for s in scores])
    return {
        "metrics": classification_metrics(label, proba),
        "proba": proba,
        "label": label,
        "subject": subject,
        "confusion": np.sum([s["confusion"] for s in scores], axis=0).tolist(),
        "n_train_items": float(np.mean([s["n_train_items"] for s in scores])),
        "n_train_subjects": float(np.mean([s["n_train_subjects"] for s in scores])),
        "n_test_units": int(sum(s["n_test_units"] for s in scores)),
        "n_boot": scores[0]["n_boot"],
    }


def run_crossfit(
    config: Config,
    manifest: str | Path,
    *,
    out_dir: str | Path,
    folds: int = 5,
    fold_seed: int = 0,
    tasks: dict[str, str | Path] | None = None,
    label_fractions: Sequence[float] = (1.0,),
    seeds: int = 3,
    baselines: Sequence[str] = ("random_init", "raw_pixels"),
    unit: str = "subject",
    options: ProbeOptions | None = None,
    verbose: bool = True,
) -> dict[str, dict[str, Any]]:
    """Pretrains ``config`` once per fold and probes each fold's held-out subjects; writes the
    pooled report of every task. Resumable: a finished fold's pretraining is reused, an
    interrupted one resumes from its last checkpoint.

    Args:
        config: the pretraining config (its ``data.manifest`` and ``train.out_dir`` are replaced
            per fold; pretraining reads the fold's ``train`` rows).
        manifest: the manifest whose labels define the folds (stratified by label).
        out_dir: see the module docstring.
        folds: k.
        fold_seed: the shuffle of subjects into folds.
        tasks: further label manifests over the same scans (name -> path) probed with the same
            folds and encoders, e.g. ``{"age": "ixi_age.csv"}``; their labelled subjects must be
            among ``manifest``'s (a subject in no fold could be a pretraining subject).
        label_fractions, seeds, baselines, unit, options: as for :func:`~mocomri.eval.run_probe`.

    Returns:
        task name (``""`` for ``manifest``'s labels) -> the pooled metrics written to
        ``metrics[_<task>].json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = options or ProbeOptions()
    main = read_manifest(manifest)
    _check_classification(main, options.task, str(manifest))  # folds are stratified by class
    fold_of = assign_folds(main, folds, fold_seed)
    _write_folds(out_dir / "folds.csv", fold_of)
    all_tasks: dict[str, Manifest] = {"": main}
    sources: dict[str, str] = {"": str(manifest)}
    for name, path in (tasks or {}).items():
        task_manifest = read_manifest(path)
        outside = sorted({r.subject for r in task_manifest.rows if r.label} - set(fold_of))
        if outside:
            raise DataError(f"{path}: labelled subject(s) {', '.join(outside[:3])} are in no fold of {manifest} "
                            "(unlabelled there, so they are pretraining data in every fold)")
        all_tasks[name] = task_manifest
        sources[name] = str(path)
        _check_classification(task_manifest, options.task, str(path))
    fold_list = [
        Fold(k, sorted(s for s, f in fold_of.items() if f == k), out_dir / f"fold{k}") for k in range(folds)
    ]
    per_task_runs: dict[str, list] = {name: [] for name in all_tasks}
    for fold in fold_list:
        for name, task_manifest in all_tasks.items():
            write_manifest(fold_manifest(task_manifest, set(fold.test_subjects)), fold.manifest_path(name))
        cfg = dataclasses.replace(
            config,
            data=dataclasses.replace(config.data, manifest=str(fold.manifest_path()), pretrain_splits=["train"]),
            train=dataclasses.replace(config.train, out_dir=str(fold.run_dir)),
        )
        _check_same_config(fold, cfg)
        if not _finished(fold.run_dir):
            if verbose:
                print(f"crossfit: fold {fold.index + 1}/{folds}: pretraining on the other folds' scans -> {fold.run_dir}",
                      flush=True)
            pretrain(cfg, resume=True, monitor=KnnMonitor)
        for name in all_tasks:
            collected = collect_probe_runs(
                fold.run_dir, fold.manifest_path(name), cfg, out_dir=fold.probe_dir(name, options.features),
                label_fractions=label_fractions, seeds=seeds, baselines=baselines, unit=unit,
                options=options, verbose=verbose,
            )
            write_report(fold.probe_dir(name, options.features), probe_metrics(collected, options))
            per_task_runs[name].append(collected)
    results = {}
    for name, collected_folds in per_task_runs.items():
        metrics = pooled_metrics(collected_folds, options, fold_list, fold_seed, sources[name])
        metrics["settings"]["folds_stratified_by"] = str(manifest)
        suffix = _suffix(name, options.features)
        (out_dir / f"metrics{suffix}.json").write_text(json.dumps(metrics, indent=2))
        (out_dir / f"report{suffix}.md").write_text(render_crossfit_markdown(metrics, name))
        results[name] = metrics
    return results


def pooled_metrics(
    collected_folds: list, options: ProbeOptions, folds: list[Fold], fold_seed: int, manifest: str
) -> dict[str, Any]:
    """The summary over seeds of the pooled folds, the paired gaps, and each fold's own accuracy."""
    first = collected_folds[0]
    for c in collected_folds[1:]:
        if c.items.classes != first.items.classes:
            raise DataError(f"fold manifests disagree on the classes: {first.items.classes} vs {c.items.classes}")
    fractions, methods = first.label_fractions, first.methods
    pooled = {
        m: {f: [pool_scores([c.runs[m][f][s] for c in collected_folds]) for s in range(first.seeds)] for f in fractions}
        for m in methods
    }
    per_fold = probe_metrics(first, options)  # settings and provenance of fold 0, for the shared fields
    settings = per_fold["settings"] | {
        "manifest": manifest,
        "eval_split": f"{len(folds)}-fold cross-fitting (fold seed {fold_seed})",
        "folds": len(folds),
        "fold_seed": fold_seed,
        "n_eval_subjects": int(sum(len(np.unique(c.items.subjects[~c.items.is_train])) for c in collected_folds)),
        "n_eval_items": int(sum(int((~c.items.is_train).sum()) for c in collected_folds)),
        "n_train_subjects": [int(len(np.unique(c.items.subjects[c.items.is_train]))) for c in collected_folds],
    }
    largest = max(fractions)
    return {
        "settings": settings,
        "classes": list(first.items.classes),
        "methods": {m: {fraction_key(f): summarise(r) for f, r in per_f.items()} for m, per_f in pooled.items()},
        "differences": {
            f"{a} - {b}": {fraction_key(f): paired_difference(pooled[a][f], pooled[b][f]) for f in fractions}
            for a, b in PAIRED if a in pooled and b in pooled
        },
        "confusion": {m: {"fraction": fraction_key(largest), "matrix": pooled[m][largest][0]["confusion"]} for m in methods},
        "folds": [
            {
                "fold": fold.index,
                "run_dir": str(fold.run_dir),
                "n_test_subjects": len(fold.test_subjects),
                "accuracy": {m: float(np.mean([r["metrics"]["accuracy"] for r in c.runs[m][largest]])) for m in methods},
            }
            for fold, c in zip(folds, collected_folds)
        ],
        "leakage": {"findings": [f for c in collected_folds for f in c.findings]},
    }


def render_crossfit_markdown(metrics: dict[str, Any], task: str = "") -> str:
    """The text of a pooled cross-fitting report."""
    s = metrics["settings"]
    fractions = list(next(iter(metrics["methods"].values())).keys())
    header = ["method"] + [f"{float(f) * 100:g}%" for f in fractions]
    rows = [[method_title(m, s["knn_k"])] + [format_cell(per_f[f]["accuracy"]) for f in fractions]
            for m, per_f in metrics["methods"].items()]
    rows += [[difference_title(p)] + [format_difference(per_f[f]["accuracy"]) for f in fractions]
             for p, per_f in metrics["differences"].items()]
    methods = list(metrics["methods"])
    fold_rows = [[str(f["fold"]), str(f["n_test_subjects"]), *(f"{f['accuracy'][m] * 100:.1f}" for m in methods)]
                 for f in metrics["folds"]]
    return "\n".join([
        f"# Cross-fitted probe{f' ({task})' if task else ''}",
        "",
        f"`{s['manifest']}`, {s['folds']} folds of whole subjects stratified by the labels of "
        f"`{s.get('folds_stratified_by', s['manifest'])}` (seed {s['fold_seed']}): each "
        "fold's encoder was pretrained on the other folds' scans and its probes trained on the other folds' "
        f"labels; the {s['n_eval_subjects']} held-out subjects' predictions are pooled and scored as one test set, "
        f"one prediction per **{s['unit']}**. Classes: {', '.join(metrics['classes'])}.",
        "",
        f"Pretraining config: {s.get('config_source') or 'n/a'}; encoders: "
        + ", ".join(f"`{f['run_dir']}`" for f in metrics["folds"]) + ".",
        "",
        f"Encoder features: {READ_OUTS[s.get('features', 'pooled')]}.",
        "",
        f"## Accuracy (%), pooled: mean ± std over {s['seeds']} seed(s) [95% bootstrap CI, {s['n_boot']} resamples of subjects]",
        "",
        *_table(header, rows),
        "",
        "Rows marked *paired*: the encoder's mean minus the baseline's, with the CI of that difference from "
        "resamples of subjects that score both.",
        "",
        f"## Each fold (accuracy %, label fraction {float(fractions[-1]) * 100:g}%)",
        "",
        *_table(["fold", "test subjects", *(method_title(m, s["knn_k"]) for m in methods)], fold_rows),
        "",
    ])


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _check_classification(manifest: Manifest, requested: str, source: str) -> None:
    """Cross-fitting pools class probabilities across folds: a regression target is refused up front."""
    task = choose_task([r.label for r in manifest.rows if r.label], requested, source)
    if task.name != CLASSIFICATION:
        raise ConfigError(f"{source}: crossfit pools classification probes, and these labels are a regression "
                          f"({task.reason}); probe one split with `mocomri probe`, or bin the target into classes")


def _check_same_config(fold: Fold, cfg: Config) -> None:
    """A fold directory that holds a run of another config is an error, not a run to reuse."""
    saved = fold.run_dir / "config.yaml"
    if not saved.is_file():
        return
    # The keys a resumed pretraining run may change (logging, workers...) may change here too.
    changed = config_changes(yaml.safe_load(saved.read_text()) or {}, config_to_dict(cfg))
    if changed:
        shown = "; ".join(changed[:4])
        raise ConfigError(f"{fold.run_dir} was pretrained with another config ({shown}); "
                          "use another --out, or delete the fold to pretrain it again")


def _suffix(task: str, features: str) -> str:
    """``_<task>`` for another task, ``_<features>`` for a read-out other than the pooled output."""
    return (f"_{task}" if task else "") + ("" if features == "pooled" else f"_{features}")


def _finished(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    if not summary.is_file() or not (run_dir / "encoder.pt").is_file():
        return False
    record = json.loads(summary.read_text())
    return record.get("steps") == record.get("total_steps") and not record.get("stopped_early")


def _write_folds(path: Path, fold_of: dict[str, int]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["subject", "fold"])
        writer.writerows(sorted(fold_of.items()))
