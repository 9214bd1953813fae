"""The probe's outputs: ``report.md``, ``metrics.json``, a label-fraction curve and confusion matrices.

Every table lists the evaluated encoder beside its baselines (at least the random-init encoder
of the same architecture), so no number appears without the number it should be read against.
A regression's tables add the training mean (its chance level) and its figure plots predicted
against true values instead of confusion matrices. Plots use matplotlib's ``Figure`` directly
(the Agg canvas), leaving the global backend alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mocomri.eval.features import READ_OUTS
from mocomri.eval.tasks import CLASSIFICATION, METRIC_SETS, REGRESSION

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT = "report.md"
METRICS_JSON = "metrics.json"
CURVE_PNG = "label_fraction_curve.png"
CONFUSION_PNG = "confusion_matrix.png"
PREDICTIONS_PNG = "predictions.png"
# The metrics the printed table shows, per task.
HEADLINE = {CLASSIFICATION: ("accuracy",), REGRESSION: ("mae", "r2")}


def task_of(metrics: dict[str, Any]) -> str:
    """The task a metrics dict scored; one without a ``task`` entry is a classification."""
    return metrics.get("task", {}).get("name", CLASSIFICATION)


def method_title(method: str, knn_k: int = 20, task: str = CLASSIFICATION) -> str:
    """A human name for a method key of ``metrics["methods"]``."""
    linear = "ridge" if task == REGRESSION else "linear"
    knn = "kNN regression" if task == REGRESSION else "kNN"
    titles = {
        "moco": f"MoCo encoder ({linear})",
        "moco_knn": f"MoCo encoder ({knn}, k={knn_k})",
        "random_init": f"Random init ({linear})",
        "random_init_knn": f"Random init ({knn}, k={knn_k})",
        "raw_pixels": f"Raw pixels (PCA + {linear})",
        "intensity_stats": f"Intensity statistics ({linear})",
        "finetune": "MoCo encoder (fine-tuned)",
        "supervised": "Random init (fine-tuned) = supervised from scratch",
        "train_mean": "Training mean (chance level)",
    }
    return titles.get(method, method)


def _pct(value: float | None, scale: float) -> str:
    if value is None:
        return "n/a"
    return f"{value * scale:.1f}" if scale == 100 else f"{value:.3f}"


def format_cell(entry: dict[str, Any], scale: float = 100, with_std: bool = True) -> str:
    """``mean ± std [low, high]`` of one metric entry (percent when ``scale`` is 100)."""
    text = _pct(entry["mean"], scale)
    if with_std:
        text += f" ± {_pct(entry['std'], scale)}"
    low, high = entry["ci"]
    return f"{text} [{_pct(low, scale)}, {_pct(high, scale)}]"


def difference_title(pair: str) -> str:
    """``"moco - random_init"`` -> ``"MoCo − random init, paired"``."""
    a, b = pair.split(" - ")
    short = {"moco": "MoCo", "moco_knn": "MoCo kNN", "random_init": "random init", "random_init_knn": "random init kNN",
             "raw_pixels": "raw pixels", "intensity_stats": "intensity stats", "finetune": "MoCo fine-tuned",
             "supervised": "random init fine-tuned", "train_mean": "training mean"}
    return f"{short.get(a, a)} − {short.get(b, b)}, paired"


def format_difference(entry: dict[str, Any], scale: float = 100) -> str:
    """``+d [low, high]``: a difference in points (percent when ``scale`` is 100) and its CI."""
    def signed(v: float | None) -> str:
        return "n/a" if v is None else (f"{v * scale:+.1f}" if scale == 100 else f"{v:+.3f}")
    return f"{signed(entry['mean'])} [{signed(entry['ci'][0])}, {signed(entry['ci'][1])}]"


def _fraction_header(fraction: str) -> str:
    return f"{float(fraction) * 100:g}%"


def format_table(metrics: dict[str, Any], metric: str | None = None) -> str:
    """A compact plain-text table, method × label fraction: ``mean [95% CI]``, then the paired rows.

    Args:
        metrics: what :func:`~mocomri.eval.runner.run_probe` returns.
        metric: one of the task's metrics; None: accuracy for a classification, MAE then R² (two
            tables) for a regression.
    """
    task = task_of(metrics)
    return "\n\n".join(_text_table(metrics, m, task) for m in ([metric] if metric else HEADLINE[task]))


def format_task(metrics: dict[str, Any]) -> str:
    """``Task: regression (auto: ...)``: the task a probe ran and why."""
    task = metrics.get("task", {"name": CLASSIFICATION, "reason": "no task recorded"})
    return f"Task: {task['name']} ({task['reason']})"


def _metric_scale(metric: str, task: str) -> float:
    """100 for a share printed in percent; 1 for AUROC and every regression metric (label units, R²)."""
    return 1 if task == REGRESSION or metric == "auroc" else 100


def _metric_heading(metric: str, task: str) -> str:
    unit = " (%)" if _metric_scale(metric, task) == 100 else ""
    return f"{METRIC_SETS[task].titles[metric]}{unit}"


def _text_table(metrics: dict[str, Any], metric: str, task: str) -> str:
    results = metrics["methods"]
    k = metrics["settings"]["knn_k"]
    fractions = list(next(iter(results.values())).keys())
    scale = _metric_scale(metric, task)
    rows = [["method"] + [_fraction_header(f) for f in fractions]]
    for method, per_fraction in results.items():
        rows.append(
            [method_title(method, k, task)]
            + [format_cell(per_fraction[f][metric], scale, with_std=False) for f in fractions]
        )
    for pair, per_fraction in metrics.get("differences", {}).items():
        rows.append([difference_title(pair)] + [format_difference(per_fraction[f][metric], scale) for f in fractions])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{_metric_heading(metric, task)}, mean over seeds [95% bootstrap CI]"]
    if task == REGRESSION and metrics.get("differences"):
        lines[0] += f"; paired rows: encoder − baseline, {_favours(metric, task)}"
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _favours(metric: str, task: str) -> str:
    """Which sign of ``encoder − baseline`` favours the encoder."""
    lower = metric in METRIC_SETS[task].lower_is_better
    return f"{'negative' if lower else 'positive'} favours the encoder"


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def render_markdown(metrics: dict[str, Any]) -> str:
    """The text of ``report.md``."""
    s, p, results = metrics["settings"], metrics["provenance"], metrics["methods"]
    task = task_of(metrics)
    fractions = list(next(iter(results.values())).keys())
    first = next(iter(results.values()))  # the labelled subsets are the same for every method
    arch = p["architecture"]
    lines = [
        "# Linear-probe report" + (": regression" if task == REGRESSION else ""),
        "",
        f"Encoder `{p['run_dir'] or p['weights'] or 'random'}` probed on `{s['manifest']}`: probes trained on "
        f"the labelled `{s['train_split']}` rows, evaluated on the `{s['eval_split']}` rows, "
        f"one prediction per **{s['unit']}**. {_labels_sentence(metrics, task)}",
        *(["", f"Task: **{task}** ({metrics['task']['reason']})."] if "task" in metrics else []),
        "",
        "## Encoder provenance",
        "",
        *_markdown_table(
            ["field", "value"],
            [
                ["source", p["kind"]],
                ["run directory", f"`{p['run_dir']}`" if p["run_dir"] else "none"],
                ["config", f"`{p['config']}`" if p["config"] else "none"],
                ["encoder weights", f"`{p['weights']}`" if p["weights"] else "random initialisation"],
                ["checkpoint step", str(p["checkpoint_step"]) if p["checkpoint_step"] is not None else "unknown"],
                ["encoder.pt sha1", f"`{p['encoder_sha1']}`" if p["encoder_sha1"] else "n/a"],
                ["architecture", f"{arch['name']}, width {arch['width']}, in_channels {arch['in_channels']}"
                 + (f", GroupNorm ({arch['norm_groups']} groups)" if arch.get("norm") == "group" else "")],
            ],
        ),
        "",
        "## Leakage check",
        "",
        *_leakage_lines(metrics["leakage"]),
        "",
        "## Results",
        "",
        f"Each cell: mean ± std over {s['seeds']} seed(s) of the label-fraction draw "
        f"[95% percentile-bootstrap CI of that mean, {s['n_boot']} resamples of test subjects].",
        "",
        "Labelled training data per fraction (mean over seeds):",
        "",
        *_markdown_table(
            ["fraction", "subjects", "items", f"test {s['unit']}s"],
            [
                [
                    _fraction_header(f),
                    f"{first[f]['n_train_subjects']:g}",
                    f"{first[f]['n_train_items']:g}",
                    str(first[f]["n_test_units"]),
                ]
                for f in fractions
            ],
        ),
        *_results_lines(metrics, task),
        "",
        "## Figures",
        "",
        f"![Label-fraction curve]({CURVE_PNG})",
        "",
        _example_figure_line(metrics, task),
        "",
        "## Settings",
        "",
        *_markdown_table(["setting", "value"], _settings_rows(s, metrics.get("task"))),
        "",
        "## Method",
        "",
        *(_regression_method_lines(s) if task == REGRESSION else _method_lines(s)),
        "",
    ]
    return "\n".join(lines)


def _labels_sentence(metrics: dict[str, Any], task: str) -> str:
    if task != REGRESSION:
        return f"Classes: {', '.join(metrics['classes'])}."
    t = metrics["target"]
    return (f"Target: the label as a number, {t['min']:g} to {t['max']:g} ({t['n_distinct']} distinct values); "
            f"over training items {t['train_mean']:.4g} ± {t['train_std']:.3g} (mean ± std), "
            f"over evaluated items {t['eval_mean']:.4g} ± {t['eval_std']:.3g}.")


def _results_lines(metrics: dict[str, Any], task: str) -> list[str]:
    """One table per metric of the task, method × fraction, the paired rows below the methods."""
    s, results = metrics["settings"], metrics["methods"]
    fractions = list(next(iter(results.values())).keys())
    lines: list[str] = []
    for metric in METRIC_SETS[task].names:
        scale = _metric_scale(metric, task)
        lines += [
            "",
            f"### {_metric_heading(metric, task)}",
            "",
            *_markdown_table(
                ["method"] + [_fraction_header(f) for f in fractions],
                [
                    [method_title(m, s["knn_k"], task)] + [format_cell(per_f[f][metric], scale) for f in fractions]
                    for m, per_f in results.items()
                ] + [
                    [difference_title(pair)] + [format_difference(per_f[f][metric], scale) for f in fractions]
                    for pair, per_f in metrics.get("differences", {}).items()
                ],
            ),
        ]
    if metrics.get("differences"):
        lines += ["", "Rows marked *paired*: the encoder's mean minus the baseline's, and the 95% CI of that "
                  "difference from resamples of test subjects that score both on the same subjects."]
        if task == REGRESSION:
            lines[-1] += (" For MAE and RMSE (errors) a negative difference favours the encoder; for R² a "
                          "positive one.")
    if task == REGRESSION:
        lines += ["", "*Training mean (chance level)*: every test unit predicted as the mean target of the "
                  "labelled training items; an encoder is only useful below its MAE (its R² is at most 0)."]
    return lines


def _example_figure_line(metrics: dict[str, Any], task: str) -> str:
    if task == REGRESSION:
        fraction = next(iter(metrics["predictions"].values()))["fraction"]
        return (f"![Predicted against true values at label fraction {_fraction_header(fraction)}, seed 0]"
                f"({PREDICTIONS_PNG})")
    return (f"![Confusion matrices at label fraction {_fraction_header(_confusion_fraction(metrics))}, seed 0]"
            f"({CONFUSION_PNG})")


def _confusion_fraction(metrics: dict[str, Any]) -> str:
    return next(iter(metrics["confusion"].values()))["fraction"]


def _leakage_lines(leakage: dict[str, Any]) -> list[str]:
    if not leakage["findings"]:
        return ["Passed: no evaluation item shares a subject or a content hash (sha1) with a training item."]
    lines = [
        f"**Leakage allowed (`--allow-leakage`)**: {len(leakage['findings'])} finding(s); "
        "the scores below are optimistic.",
        "",
    ]
    shown = leakage["findings"][:20]
    lines += [f"- {f}" for f in shown]
    if len(leakage["findings"]) > len(shown):
        lines.append(f"- ... and {len(leakage['findings']) - len(shown)} more (see metrics.json)")
    return lines


def _settings_rows(s: dict[str, Any], task: dict[str, str] | None = None) -> list[list[str]]:
    data = s["data"]
    regression = task is not None and task["name"] == REGRESSION
    rows = [
        *([["task", f"{task['name']} (requested: {task['requested']})"]] if task else []),
        ["config", s.get("config_source") or "the run's config.yaml, or the defaults"],
        ["label fractions", ", ".join(f"{f:g}" for f in s["label_fractions"])],
        ["seeds", str(s["seeds"])],
        ["evaluation unit", s["unit"]],
        ["train items / subjects", f"{s['n_train_items']} / {s['n_train_subjects']}"],
        [f"{s['eval_split']} items / subjects", f"{s['n_eval_items']} / {s['n_eval_subjects']}"],
        ["unreadable scans skipped", str(s.get("n_skipped_scans", 0))],
        ["ridge alpha grid", ", ".join(f"{a:g}" for a in s["alphas"])] if regression
        else ["logistic-regression C grid", ", ".join(f"{c:g}" for c in s["Cs"])],
        ["CV folds (grouped by subject)", str(s["cv_folds"])],
        ["kNN k", str(s["knn_k"])],
        ["encoder features", s.get("features", "pooled")],
        ["raw-pixel PCA components", str(s["pca_components"])],
        ["bootstrap resamples", str(s["n_boot"])],
        ["device / bf16", f"{s['device']} / {s['bf16']}"],
        ["data kind", str(data["kind"])],
        ["image size / patch size", f"{data['image_size']} / {data['patch_size']}"],
        ["slice axis", str(data["slice_axis"])],
    ]
    if s.get("supervised"):
        sup = s["supervised"]
        rows.append(
            [
                "end-to-end training (fine-tuned and from scratch)" if s.get("finetune") else "supervised baseline",
                f"{sup['steps']} steps, batch {sup['batch_size']}, AdamW lr {sup['lr']:g}, "
                f"weight decay {sup['weight_decay']:g}, augmentation: {s.get('supervised_augment', 'n/a')}",
            ]
        )
    return rows


def _method_lines(s: dict[str, Any]) -> list[str]:
    read = READ_OUTS[s.get("features", "pooled")]
    return [
        f"- Features: {read}, standardised on the labelled training subset.",
        "- Linear probe: multinomial logistic regression; C chosen by cross-validated log-loss "
        "with folds grouped by subject (`StratifiedGroupKFold`).",
        f"- kNN: cosine similarity, k={s['knn_k']}, votes weighted by exp(similarity / 0.07).",
        "- Label fractions: subjects drawn stratified by label, at least one subject per class; "
        "a subject's items are all in or all out.",
        "- Volumes: slice predictions are averaged per evaluation unit (soft voting) before scoring.",
        "- Confidence intervals: percentile bootstrap over test subjects (a subject's units are resampled "
        "together).",
        "- Baselines: the random-init encoder of the same architecture, raw pixels "
        "(average-pooled, PCA, then the same linear probe), optionally each image's intensity "
        "statistics (mean, std and percentiles, then the same linear probe) and the same "
        "architecture trained from scratch on the same labelled subset.",
        *_end_to_end_lines(s),
    ]


def _end_to_end_lines(s: dict[str, Any]) -> list[str]:
    """What ``--supervised`` and ``--finetune`` trained, and how."""
    sup = s.get("supervised")
    if not sup:
        return []
    recipe = (f"cross-entropy, {sup['steps']} AdamW steps of batch {sup['batch_size']}, peak lr {sup['lr']:g} "
              f"(linear warm-up over {sup['warmup_steps']} steps, then cosine to 0), weight decay "
              f"{sup['weight_decay']:g}; augmentation: {s.get('supervised_augment', 'n/a')}")
    scratch = ("- Supervised from scratch (random init, fine-tuned): every weight of the random-init "
               "architecture and a new linear head trained on the labelled subset: " + recipe + ".")
    if not s.get("finetune"):
        return [scratch]
    return [
        "- Fine-tuned (`--finetune`): every weight of the MoCo backbone and a new linear head trained on the "
        "labelled subset: " + recipe + ".",
        scratch + " The same subsets, seeds, batches, augmentations and head initialisation as the fine-tuned "
        "encoder: only the backbone's starting weights differ, so *MoCo fine-tuned − random init fine-tuned* "
        "is what pretraining adds under fine-tuning.",
    ]


def _regression_method_lines(s: dict[str, Any]) -> list[str]:
    read = READ_OUTS[s.get("features", "pooled")]
    return [
        f"- Features: {read}, standardised on the labelled training subset.",
        "- Task: the label read as a number (`--task auto` regresses a label column when every label is a "
        "finite number and there are more than 10 distinct values; `--task regression` forces it).",
        "- Linear probe: ridge regression; alpha chosen by cross-validated mean squared error with folds "
        "grouped by subject (`GroupKFold`).",
        f"- kNN regression: cosine similarity, k={s['knn_k']}, the neighbours' targets averaged with weights "
        "exp(similarity / 0.07).",
        f"- Label fractions: subjects drawn stratified by quantile bin of their mean target "
        f"({s.get('target_bins')} bins over the training subjects), at least one subject per bin; a subject's "
        "items are all in or all out.",
        "- Volumes: slice predictions are averaged per evaluation unit before scoring.",
        "- Metrics: MAE and RMSE in the label's units; R² = 1 − SS_res / SS_tot about the evaluated units' own "
        "mean (scikit-learn's `r2_score`).",
        "- Confidence intervals: percentile bootstrap over test subjects (a subject's units are resampled "
        "together).",
        "- Baselines: the training mean (every unit predicted as the labelled training items' mean target: "
        "the chance level), the random-init encoder of the same architecture, raw pixels "
        "(average-pooled, PCA, then the same ridge), optionally each image's intensity statistics "
        "(mean, std and percentiles, then the same ridge).",
    ]


def _figure(figsize: tuple[float, float]) -> Figure:
    # local: only the plots need matplotlib, which is slow to import, and every mocomri.eval.*
    # import loads this module through mocomri/eval/__init__.py (the kNN monitor of pretraining)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def plot_label_fraction_curve(metrics: dict[str, Any], path: Path) -> None:
    """Each metric against the label fraction, one line per method, error bars = std over seeds."""
    results, k = metrics["methods"], metrics["settings"]["knn_k"]
    task = task_of(metrics)
    names = METRIC_SETS[task].names
    # A classification's four metrics in a 2 x 2 grid, a regression's three in a row.
    rows, cols = (2, 2) if len(names) == 4 else (1, len(names))
    fig = _figure((10, 7.5) if rows == 2 else (4.3 * cols, 4.6))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    fractions = [float(f) for f in next(iter(results.values()))]
    for ax, metric in zip(axes, names):
        for method, per_f in results.items():
            mean = [np.nan if e[metric]["mean"] is None else e[metric]["mean"] for e in per_f.values()]
            std = [np.nan if e[metric]["std"] is None else e[metric]["std"] for e in per_f.values()]
            style = "--" if method.endswith("_knn") else "-"
            ax.errorbar(fractions, mean, yerr=std, fmt=style + "o", capsize=3, label=method_title(method, k, task))
        ax.set_xscale("log")
        ax.set_xticks(fractions, [_fraction_header(str(f)) for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("label fraction (share of labelled training subjects)")
        ax.set_title(METRIC_SETS[task].titles[metric], **({"fontsize": 10} if task == REGRESSION else {}))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8)
    s = metrics["settings"]
    fig.suptitle(f"Probe on '{s['eval_split']}' ({s['unit']} level): mean ± std over {s['seeds']} seed(s)")
    fig.savefig(path, dpi=110)


def plot_confusion(metrics: dict[str, Any], path: Path) -> None:
    """Row-normalised confusion matrices of the linear probes (seed 0, the largest fraction)."""
    linear = {m: c for m, c in metrics["confusion"].items() if not m.endswith("_knn")}
    classes, k = metrics["classes"], metrics["settings"]["knn_k"]
    fig = _figure((4.2 * len(linear), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(linear)))
    for ax, (method, entry) in zip(axes, linear.items()):
        counts = np.asarray(entry["matrix"], dtype=float)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, f"{int(n)}", ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{method_title(method, k)}\nfraction {_fraction_header(entry['fraction'])}", fontsize=9)
    fig.suptitle("Counts; colour: share of each true class (row-normalised)", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_predictions(metrics: dict[str, Any], path: Path) -> None:
    """Predicted against true values of the linear read-outs and the training mean (seed 0, the
    largest fraction), one panel per method, the identity line dashed."""
    shown = {m: e for m, e in metrics["predictions"].items() if not m.endswith("_knn")}
    k = metrics["settings"]["knn_k"]
    fig = _figure((3.8 * len(shown), 3.9))
    axes = np.atleast_1d(fig.subplots(1, len(shown)))
    everything = [v for e in shown.values() for v in (*e["target"], *e["prediction"])]
    margin = 0.05 * (max(everything) - min(everything)) or 1.0  # keeps the extreme points inside the frame
    low, high = min(everything) - margin, max(everything) + margin
    for ax, (method, entry) in zip(axes, shown.items()):
        ax.plot([low, high], [low, high], "k--", lw=1)
        ax.scatter(entry["target"], entry["prediction"], s=12, alpha=0.7)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_title(f"{method_title(method, k, REGRESSION)}\nfraction {_fraction_header(entry['fraction'])}",
                     fontsize=9)
    fig.suptitle("One point per evaluated unit; dashed: predicted = true", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def write_report(out_dir: str | Path, metrics: dict[str, Any]) -> dict[str, Path]:
    """Writes ``report.md``, ``metrics.json`` and two PNGs (the label-fraction curve; confusion
    matrices, or a regression's predicted-against-true plot); returns their paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / REPORT, "metrics": out_dir / METRICS_JSON, "curve": out_dir / CURVE_PNG}
    plot_label_fraction_curve(metrics, paths["curve"])
    if task_of(metrics) == REGRESSION:
        paths["predictions"] = out_dir / PREDICTIONS_PNG
        plot_predictions(metrics, paths["predictions"])
    else:
        paths["confusion"] = out_dir / CONFUSION_PNG
        plot_confusion(metrics, paths["confusion"])
    paths["report"].write_text(render_markdown(metrics))
    with open(paths["metrics"], "w") as f:
        json.dump({**metrics, "files": {k: str(v) for k, v in paths.items()}}, f, indent=2)
    return paths
