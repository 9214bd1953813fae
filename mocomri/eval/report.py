"""The probe's outputs: ``report.md``, ``metrics.json``, a label-fraction curve and confusion matrices.

Every table lists the evaluated encoder beside its baselines (at least the random-init encoder
of the same architecture), so no number appears without the number it should be read against.
Plots use matplotlib's ``Figure`` directly (the Agg canvas), leaving the global backend alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mocomri.eval.features import READ_OUTS
from mocomri.eval.metrics import METRIC_TITLES, METRICS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT = "report.md"
METRICS_JSON = "metrics.json"
CURVE_PNG = "label_fraction_curve.png"
CONFUSION_PNG = "confusion_matrix.png"


def method_title(method: str, knn_k: int = 20) -> str:
    """A human name for a method key of ``metrics["methods"]``."""
    titles = {
        "moco": "MoCo encoder (linear)",
        "moco_knn": f"MoCo encoder (kNN, k={knn_k})",
        "random_init": "Random init (linear)",
        "random_init_knn": f"Random init (kNN, k={knn_k})",
        "raw_pixels": "Raw pixels (PCA + linear)",
        "intensity_stats": "Intensity statistics (linear)",
        "supervised": "Supervised from scratch",
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
             "raw_pixels": "raw pixels", "intensity_stats": "intensity stats", "supervised": "supervised"}
    return f"{short.get(a, a)} − {short.get(b, b)}, paired"


def format_difference(entry: dict[str, Any], scale: float = 100) -> str:
    """``+d [low, high]``: a difference in points (percent when ``scale`` is 100) and its CI."""
    def signed(v: float | None) -> str:
        return "n/a" if v is None else (f"{v * scale:+.1f}" if scale == 100 else f"{v:+.3f}")
    return f"{signed(entry['mean'])} [{signed(entry['ci'][0])}, {signed(entry['ci'][1])}]"


def _fraction_header(fraction: str) -> str:
    return f"{float(fraction) * 100:g}%"


def format_table(metrics: dict[str, Any], metric: str = "accuracy") -> str:
    """A compact plain-text table, method × label fraction: ``mean % [95% CI]``.

    Args:
        metrics: what :func:`~mocomri.eval.runner.run_probe` returns.
        metric: one of :data:`~mocomri.eval.metrics.METRICS`.
    """
    results = metrics["methods"]
    k = metrics["settings"]["knn_k"]
    fractions = list(next(iter(results.values())).keys())
    scale = 1 if metric == "auroc" else 100
    rows = [["method"] + [_fraction_header(f) for f in fractions]]
    for method, per_fraction in results.items():
        rows.append(
            [method_title(method, k)]
            + [format_cell(per_fraction[f][metric], scale, with_std=False) for f in fractions]
        )
    for pair, per_fraction in metrics.get("differences", {}).items():
        rows.append([difference_title(pair)] + [format_difference(per_fraction[f][metric], scale) for f in fractions])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    unit = "" if metric == "auroc" else " (%)"
    lines = [f"{METRIC_TITLES[metric]}{unit}, mean over seeds [95% bootstrap CI]"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def render_markdown(metrics: dict[str, Any]) -> str:
    """The text of ``report.md``."""
    s, p, results = metrics["settings"], metrics["provenance"], metrics["methods"]
    fractions = list(next(iter(results.values())).keys())
    first = next(iter(results.values()))  # the labelled subsets are the same for every method
    arch = p["architecture"]
    lines = [
        "# Linear-probe report",
        "",
        f"Encoder `{p['run_dir'] or p['weights'] or 'random'}` probed on `{s['manifest']}`: probes trained on "
        f"the labelled `{s['train_split']}` rows, evaluated on the `{s['eval_split']}` rows, "
        f"one prediction per **{s['unit']}**. Classes: {', '.join(metrics['classes'])}.",
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
    ]
    for metric in METRICS:
        scale = 1 if metric == "auroc" else 100
        unit = "" if metric == "auroc" else " (%)"
        lines += [
            "",
            f"### {METRIC_TITLES[metric]}{unit}",
            "",
            *_markdown_table(
                ["method"] + [_fraction_header(f) for f in fractions],
                [
                    [method_title(m, s["knn_k"])] + [format_cell(per_f[f][metric], scale) for f in fractions]
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
    lines += [
        "",
        "## Figures",
        "",
        f"![Label-fraction curve]({CURVE_PNG})",
        "",
        f"![Confusion matrices at label fraction {_fraction_header(_confusion_fraction(metrics))}, seed 0]"
        f"({CONFUSION_PNG})",
        "",
        "## Settings",
        "",
        *_markdown_table(["setting", "value"], _settings_rows(s)),
        "",
        "## Method",
        "",
        *_method_lines(s),
        "",
    ]
    return "\n".join(lines)


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


def _settings_rows(s: dict[str, Any]) -> list[list[str]]:
    data = s["data"]
    rows = [
        ["config", s.get("config_source") or "the run's config.yaml, or the defaults"],
        ["label fractions", ", ".join(f"{f:g}" for f in s["label_fractions"])],
        ["seeds", str(s["seeds"])],
        ["evaluation unit", s["unit"]],
        ["train items / subjects", f"{s['n_train_items']} / {s['n_train_subjects']}"],
        [f"{s['eval_split']} items / subjects", f"{s['n_eval_items']} / {s['n_eval_subjects']}"],
        ["unreadable scans skipped", str(s.get("n_skipped_scans", 0))],
        ["logistic-regression C grid", ", ".join(f"{c:g}" for c in s["Cs"])],
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
                "supervised baseline",
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
    ]


def _figure(figsize: tuple[float, float]) -> Figure:
    # local: only the plots need matplotlib, which is slow to import, and every mocomri.eval.*
    # import loads this module through mocomri/eval/__init__.py (the kNN monitor of pretraining)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def plot_label_fraction_curve(metrics: dict[str, Any], path: Path) -> None:
    """Each metric against the label fraction, one line per method, error bars = std over seeds."""
    results, k = metrics["methods"], metrics["settings"]["knn_k"]
    fig = _figure((10, 7.5))
    axes = fig.subplots(2, 2).ravel()
    fractions = [float(f) for f in next(iter(results.values()))]
    for ax, metric in zip(axes, METRICS):
        for method, per_f in results.items():
            mean = [np.nan if e[metric]["mean"] is None else e[metric]["mean"] for e in per_f.values()]
            std = [np.nan if e[metric]["std"] is None else e[metric]["std"] for e in per_f.values()]
            style = "--" if method.endswith("_knn") else "-"
            ax.errorbar(fractions, mean, yerr=std, fmt=style + "o", capsize=3, label=method_title(method, k))
        ax.set_xscale("log")
        ax.set_xticks(fractions, [_fraction_header(str(f)) for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("label fraction (share of labelled training subjects)")
        ax.set_title(METRIC_TITLES[metric])
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


def write_report(out_dir: str | Path, metrics: dict[str, Any]) -> dict[str, Path]:
    """Writes ``report.md``, ``metrics.json`` and both PNGs; returns their paths by name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "report": out_dir / REPORT,
        "metrics": out_dir / METRICS_JSON,
        "curve": out_dir / CURVE_PNG,
        "confusion": out_dir / CONFUSION_PNG,
    }
    plot_label_fraction_curve(metrics, paths["curve"])
    plot_confusion(metrics, paths["confusion"])
    paths["report"].write_text(render_markdown(metrics))
    with open(paths["metrics"], "w") as f:
        json.dump({**metrics, "files": {k: str(v) for k, v in paths.items()}}, f, indent=2)
    return paths
