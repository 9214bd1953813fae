"""Results of a composition experiment over kinds and seeds: JSON, Markdown tables and λ-curve plots.

A :class:`Results` collects rows (a method or a contrast, for one kind of module) with one entry
per seed, each ``{"value": v, "ci95": [low, high]}`` (the interval may be missing, e.g. for a
ratio), the λ curves chosen on validation, and the bars' verdicts. :func:`markdown` renders one
table per section, with a column per seed (``value [low, high]``) and the mean ± standard
deviation over seeds; :func:`plot_curves` draws the λ curves.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mocomri.files import atomic_write


@dataclass
class Results:
    """What one experiment measured.

    Attributes:
        experiment: its name.
        description: one paragraph: what it measures and on what.
        seeds: the seeds, in column order.
        settings: the budget, encoder and data it ran with.
        sections: section title -> row key ``"<row> | <kind>"`` -> ``{"row", "kind", "scale", "seeds": {seed: entry}}``.
        curves: kind -> curve name -> seed -> ``[{"lambda", "score"}, ...]``; a point may carry
            ``"chosen": True`` where the λ chosen is not the curve's own best.
        bars: ``[{"kind", "bar", "met", "reading"}]``.
        seconds: what took how long (training, per module), for planning the next run.
    """

    experiment: str
    description: str
    seeds: list[int]
    settings: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, dict[str, dict]] = field(default_factory=dict)
    curves: dict[str, dict[str, dict[str, list[dict]]]] = field(default_factory=dict)
    bars: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, section: str, row: str, kind: str, seed: int, entry: dict, scale: float = 100) -> None:
        """Records ``entry`` (``value`` and optionally ``ci95``) of ``row`` for ``kind`` at ``seed``.

        ``scale`` multiplies the figures in the tables (100: accuracies in %, differences in points).
        """
        rows = self.sections.setdefault(section, {})
        record = rows.setdefault(f"{row} | {kind}", {"row": row, "kind": kind, "scale": scale, "seeds": {}})
        record["seeds"][str(seed)] = {"value": float(entry["value"]),
                                      **({"ci95": [float(x) for x in entry["ci95"]]} if "ci95" in entry else {})}

    def values(self, section: str, row: str, kind: str) -> list[float]:
        """The row's values over the seeds recorded, in seed order."""
        record = self.sections[section][f"{row} | {kind}"]
        return [record["seeds"][str(s)]["value"] for s in self.seeds if str(s) in record["seeds"]]

    def lows(self, section: str, row: str, kind: str) -> list[float]:
        """The lower ends of the row's intervals over the seeds recorded."""
        record = self.sections[section][f"{row} | {kind}"]
        return [record["seeds"][str(s)]["ci95"][0] for s in self.seeds if str(s) in record["seeds"]]

    def curve(self, kind: str, name: str, seed: int, points: list[dict]) -> None:
        self.curves.setdefault(kind, {}).setdefault(name, {})[str(seed)] = points

    def bar(self, kind: str, bar: str, met: bool, reading: str) -> None:
        self.bars.append({"kind": kind, "bar": bar, "met": bool(met), "reading": reading})

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Writes ``<experiment>.json``, ``.md`` and ``_lambda.png`` into ``out_dir``; returns their paths."""
        out_dir = Path(out_dir)
        paths = {"json": out_dir / f"{self.experiment}.json", "markdown": out_dir / f"{self.experiment}.md",
                 "plot": out_dir / f"{self.experiment}_lambda.png"}
        record = {k: getattr(self, k) for k in ("experiment", "description", "seeds", "settings", "sections",
                                                 "curves", "bars", "seconds")}
        atomic_write(paths["json"], lambda f: f.write(json.dumps(record, indent=1).encode()))
        plot_curves(self, paths["plot"])
        atomic_write(paths["markdown"], lambda f: f.write(markdown(self, paths["plot"].name).encode()))
        return paths


def format_entry(entry: dict | None, scale: float = 100) -> str:
    """``84.1 [82.0, 86.1]``, ``84.1`` without an interval, ``—`` for a missing or NaN entry."""
    if entry is None or not math.isfinite(entry["value"]):
        return "—"
    text = f"{scale * entry['value']:.1f}" if scale != 1 else f"{entry['value']:.2f}"
    if "ci95" in entry:
        low, high = entry["ci95"]
        text += f" [{scale * low:.1f}, {scale * high:.1f}]"
    return text


def mean_sd(values: Sequence[float], scale: float = 100) -> str:
    """``mean ± sd`` over seeds (sample standard deviation); the mean alone for one seed; NaNs left out."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "—"
    digits = 1 if scale != 1 else 2
    mean = f"{scale * statistics.fmean(values):.{digits}f}"
    return mean if len(values) < 2 else f"{mean} ± {scale * statistics.stdev(values):.{digits}f}"


def table(rows: dict[str, dict], seeds: Sequence[int]) -> str:
    """One Markdown table: a row per (row, kind), a column per seed, then the mean ± sd."""
    header = ["", "module", *[f"seed {s}" for s in seeds], "mean ± sd"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in rows.values():
        entries = [record["seeds"].get(str(s)) for s in seeds]
        values = [e["value"] for e in entries if e is not None]
        cells = [record["row"], record["kind"], *[format_entry(e, record["scale"]) for e in entries],
                 mean_sd(values, record["scale"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(results: Results, plot_name: str | None = None) -> str:
    """The experiment's report: description, settings, one table per section, the bars, the λ plot."""
    lines = [f"# {results.experiment}", "", results.description, ""]
    lines += [f"- {k}: {v}" for k, v in results.settings.items()]
    for section, rows in results.sections.items():
        lines += ["", f"## {section}", "", table(rows, results.seeds)]
    if results.bars:
        lines += ["", "## Bars", "", "| module | bar | met | reading |", "|---|---|---|---|"]
        lines += [f"| {b['kind']} | {b['bar']} | {'yes' if b['met'] else 'no'} | {b['reading']} |" for b in results.bars]
    if plot_name and results.curves:
        lines += ["", "## λ on validation", "", f"![λ curves]({plot_name})"]
    if results.seconds:
        lines += ["", "## Time", "", f"{sum(results.seconds.values()) / 60:.1f} min of training in this run "
                  f"({len(results.seconds)} modules or baselines trained; the others were on disk)."]
    return "\n".join(lines) + "\n"


def plot_curves(results: Results, path: str | Path) -> None:
    """One panel per kind: validation score against λ, a line per curve and seed, the chosen λ marked."""
    if not results.curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results.curves)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for (name, by_seed), style in zip(results.curves[kind].items(), ("-", "--", ":", "-.")):
            for seed, points in by_seed.items():
                lams = [p["lambda"] for p in points]
                scores = [100 * p["score"] for p in points]
                line, = ax.plot(lams, scores, style, marker=".", label=f"{name}, seed {seed}")
                # The λ chosen: flagged where it is not the curve's own best (e.g. a target curve chosen
                # under a source constraint), else the best point.
                best = next((i for i, p in enumerate(points) if p.get("chosen")),
                            max(range(len(points)), key=lambda i: points[i]["score"]))
                ax.plot(lams[best], scores[best], "o", color=line.get_color(), fillstyle="none", markersize=9)
        ax.set(title=kind, xlabel="λ", ylabel="validation accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
