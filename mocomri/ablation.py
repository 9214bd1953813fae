"""A grid runner over any config keys: each cell pretrains, then probes; resumable and tabulated.

An ablation config names a base config, the grid (or an explicit list of cells), seeds, the
per-cell overrides (the budget) and the probe settings::

    base: brain_tumor_cpu.yaml          # relative to this file
    out_dir: runs/ablation_momentum
    grid:                               # the product of these values ...
      moco.momentum: [0.0, 0.9, 0.99]
    cells: []                           # ... or explicit cells: [{name: a, moco.momentum: 0.9}, ...],
                                        #     each with its own seeds if it names them (seeds: [0, 1, 2])
    seeds: [0]
    overrides: [train.time_budget_min=4]
    probe: {label_fractions: [1.0], seeds: 1, unit: item}   # random-init is probed beside MoCo
    plots: [moco.momentum]              # the keys to plot accuracy against

Finished cells (``cell.json`` present) are skipped; an interrupted cell resumes from its own
checkpoint; a cell whose training fails (a NaN loss at m = 0, say) is recorded as failed with
its message, and the grid goes on.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from mocomri.config import load_config, resolve_config_path
from mocomri.errors import ConfigError, MocomriError
from mocomri.eval import ProbeOptions, run_probe
from mocomri.eval.knn_monitor import KnnMonitor
from mocomri.train.pretrain import pretrain

ABLATION_KEYS = {"base", "out_dir", "grid", "cells", "seeds", "overrides", "probe", "plots", "description"}
PROBE_KEYS = {"label_fractions", "seeds", "manifest", "unit"}


@dataclass
class Cell:
    """One point of the grid: its overrides and where it runs."""

    name: str
    values: dict[str, Any]
    seed: int
    run_dir: Path

    def overrides(self, common: list[str]) -> list[str]:
        """The config overrides of this cell; keys without a dot (``name``) are labels, not config."""
        own = [f"{k}={_yaml_scalar(v)}" for k, v in self.values.items() if "." in k]
        return [*common, *own, f"train.seed={self.seed}", f"train.out_dir={self.run_dir}"]


@dataclass
class AblationSpec:
    path: Path
    base: Path
    out_dir: Path
    cells: list[Cell]
    overrides: list[str]
    probe: dict[str, Any]
    plots: list[str]
    description: str = ""
    keys: list[str] = field(default_factory=list)


def load_ablation(path: str | Path, out_dir: str | None = None) -> AblationSpec:
    """Reads and validates an ablation config; every cell's config is loaded once to check it."""
    path = resolve_config_path(path)  # a file, else a shipped ablation (configs/ablation_*.yaml)
    tree = yaml.safe_load(path.read_text()) or {}
    unknown = set(tree) - ABLATION_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown ablation key(s) {sorted(unknown)} (known: {sorted(ABLATION_KEYS)})")
    if "base" not in tree:
        raise ConfigError(f"{path}: 'base' (the config every cell starts from) is required")
    base = (path.parent / tree["base"]).resolve()
    probe = tree.get("probe") or {}
    if set(probe) - PROBE_KEYS:
        raise ConfigError(f"{path}: unknown probe key(s) {sorted(set(probe) - PROBE_KEYS)} (known: {sorted(PROBE_KEYS)})")
    grid = tree.get("grid") or {}
    explicit = tree.get("cells") or []
    if bool(grid) == bool(explicit):
        raise ConfigError(f"{path}: give exactly one of 'grid' (a product of values) or 'cells' (a list)")
    if grid:
        keys = list(grid)
        points = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    else:
        keys = sorted({k for c in explicit for k in c} - {"seeds"})
        points = [dict(c) for c in explicit]
    root = Path(out_dir or tree.get("out_dir") or f"runs/{path.stem}")
    seeds = tree.get("seeds") or [0]
    cells = []
    # An explicit cell may name its own seeds (more for the cells a reading rests on).
    pairs = [(values, seed) for values in points for seed in (values.pop("seeds", None) or seeds)]
    for values, seed in pairs:
        name = str(values.get("name") or "__".join(f"{_short(k)}={v}" for k, v in values.items())) + f"__seed={seed}"
        name = re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)
        cells.append(Cell(name, values, int(seed), root / "cells" / name))
    overrides = [str(o) for o in tree.get("overrides") or []]
    for cell in cells:  # fail before hours of work if any cell's config is wrong
        load_config(base, cell.overrides(overrides))
    return AblationSpec(path, base, root, cells, overrides, probe, list(tree.get("plots") or keys), tree.get("description", ""), keys)


def run_ablation(
    spec: AblationSpec, parallel: int = 1, only: list[str] | None = None, tabulate: bool = True
) -> list[dict[str, Any]]:
    """Runs every unfinished cell (or those named in ``only``), ``parallel`` at a time, each in
    its own process; then tabulates every finished cell (the others are listed as pending)."""
    spec.out_dir.mkdir(parents=True, exist_ok=True)
    shutil_copy(spec.path, spec.out_dir / "ablation.yaml")
    todo = [c for c in spec.cells if not (c.run_dir / "cell.json").is_file() and (only is None or c.name in only)]
    done = sum((c.run_dir / "cell.json").is_file() for c in spec.cells)
    print(f"ablation {spec.path.name}: {len(spec.cells)} cells, {done} already done, {len(todo)} to run now -> {spec.out_dir}")
    if parallel <= 1:
        for cell in todo:
            run_cell(spec, cell)
    else:
        _run_parallel(spec, todo, parallel)
    if not tabulate:
        return []  # a worker process of --parallel: the parent tabulates
    rows = collect(spec)
    write_results(spec, rows)
    return rows


def run_cell(spec: AblationSpec, cell: Cell) -> dict[str, Any]:
    """Pretrains and probes one cell; records success or failure in ``cell.json``."""
    cfg = load_config(spec.base, cell.overrides(spec.overrides))
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    print(f"--- cell {cell.name}", flush=True)
    started = time.perf_counter()
    record: dict[str, Any] = {"cell": cell.name, "seed": cell.seed, **cell.values}
    try:
        result = pretrain(cfg, monitor=KnnMonitor)
        record.update(status="ok", steps=result.steps, final_loss=result.final_loss, contrastive_acc=result.final_accuracy, pretrain_s=result.wall_time_s)
        record.update(_probe(spec, cfg, cell.run_dir, encoder=str(cell.run_dir)))
    except MocomriError as e:  # a failed cell is a result (e.g. m = 0), not a crash of the grid
        record.update(status="failed", error=str(e))
        print(f"cell {cell.name} failed: {e}")
    record["wall_s"] = time.perf_counter() - started
    (cell.run_dir / "cell.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def _probe(spec: AblationSpec, cfg, out_dir: Path, encoder: str) -> dict[str, Any]:
    metrics = run_probe(
        encoder=encoder,
        manifest=spec.probe.get("manifest") or cfg.data.manifest,
        config=cfg,
        label_fractions=spec.probe.get("label_fractions", [1.0]),
        seeds=spec.probe.get("seeds", 1),
        out_dir=out_dir / "probe",
        baselines=[],
        unit=spec.probe.get("unit", "item"),
        # one feature cache for the grid: the random-init features every cell reports beside
        # its own are extracted once
        # The CV fits use the cell's share of the cores (--parallel gives each cell its threads).
        options=ProbeOptions(feature_cache_dir=str(spec.out_dir / "features"), cv_jobs=torch.get_num_threads()),
        verbose=False,
    )
    frac = str(float(max(spec.probe.get("label_fractions", [1.0]))))
    record: dict[str, Any] = {"probe_fraction": float(frac)}
    for method, prefix in (("moco", "probe"), ("random_init", "baseline")):
        acc = metrics["methods"][method][frac]["accuracy"]
        record |= {f"{prefix}_acc": acc["mean"], f"{prefix}_acc_std": acc["std"], f"{prefix}_acc_ci_low": acc["ci"][0], f"{prefix}_acc_ci_high": acc["ci"][1]}
    record["probe_balanced_acc"] = metrics["methods"]["moco"][frac]["balanced_accuracy"]["mean"]
    gap = metrics.get("differences", {}).get("moco - random_init", {}).get(frac, {}).get("accuracy")
    if gap:  # MoCo minus random init on the same test subjects, with its paired CI
        record |= {"gap_acc": gap["mean"], "gap_acc_ci_low": gap["ci"][0], "gap_acc_ci_high": gap["ci"][1]}
    return record


def _run_parallel(spec: AblationSpec, cells: list[Cell], parallel: int) -> None:
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    running: list[tuple[Cell, subprocess.Popen]] = []
    queue = list(cells)
    while queue or running:
        while queue and len(running) < parallel:
            cell = queue.pop(0)
            cell.run_dir.mkdir(parents=True, exist_ok=True)
            log = open(cell.run_dir / "cell.log", "a")
            cmd = [sys.executable, "-m", "mocomri", "ablate", "--config", str(spec.path), "--out", str(spec.out_dir), "--only", cell.name, "--no-table"]
            running.append((cell, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)))
        time.sleep(1.0)
        for item in list(running):
            if item[1].poll() is not None:
                running.remove(item)
                print(f"cell {item[0].name} finished (exit {item[1].returncode})")


def collect(spec: AblationSpec) -> list[dict[str, Any]]:
    """One row per cell (``status: pending`` where it has not run), with its queue size K from its
    config, the final loss relative to chance, ``final_loss / log(K + 1)``, and the time of a step."""
    rows = []
    for cell in spec.cells:
        path = cell.run_dir / "cell.json"
        row = json.loads(path.read_text()) if path.is_file() else {"cell": cell.name, "seed": cell.seed, **cell.values, "status": "pending"}
        cfg = load_config(spec.base, cell.overrides(spec.overrides))
        row["queue_size"] = cfg.moco.queue_size
        if isinstance(row.get("final_loss"), (int, float)):
            row["loss_over_chance"] = row["final_loss"] / math.log(row["queue_size"] + 1)
        if row.get("steps"):
            row["step_s"] = row["pretrain_s"] / row["steps"]
        rows.append(row)
    return rows


def summarise(spec: AblationSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells of one setting (the same values, any seed) as one row: mean and sample std over
    seeds of the probe accuracy, its paired gap to random init, the final loss's ratio to chance,
    the contrastive accuracy and the time of a step."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(_yaml_scalar(r.get(k)) for k in spec.keys), []).append(r)
    out = []
    for members in groups.values():
        ok = [r for r in members if "probe_acc" in r]
        summary: dict[str, Any] = {k: members[0].get(k) for k in spec.keys}
        summary["seeds"] = [r["seed"] for r in ok]
        for key in ("probe_acc", "gap_acc", "loss_over_chance", "contrastive_acc", "step_s"):
            values = [float(r[key]) for r in ok if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
            summary[key] = statistics.fmean(values) if values else None
            summary[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        summary["cis"] = [(r["probe_acc_ci_low"], r["probe_acc_ci_high"]) for r in ok]
        summary["gap_cis"] = [(r["gap_acc_ci_low"], r["gap_acc_ci_high"]) for r in ok if "gap_acc_ci_low" in r]
        out.append(summary)
    return out


def write_results(spec: AblationSpec, rows: list[dict[str, Any]]) -> None:
    """``results.csv``, ``results.md``, one PNG per plotted key, and TensorBoard HParams.

    The random-init baseline is probed in every cell (same architecture, same probe, features
    shared through the grid's feature cache); the table and plots show it beside MoCo.
    """
    columns = ["cell", *spec.keys, "seed", "status", "steps", "queue_size", "final_loss", "loss_over_chance", "contrastive_acc", "probe_acc", "probe_acc_ci_low", "probe_acc_ci_high", "probe_acc_std", "probe_balanced_acc", "gap_acc", "gap_acc_ci_low", "gap_acc_ci_high", "baseline_acc", "baseline_acc_ci_low", "baseline_acc_ci_high", "pretrain_s", "step_s", "wall_s", "error"]
    baseline = next((r for r in rows if "baseline_acc" in r), None)
    with open(spec.out_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Ablation `{spec.path.name}`", "", spec.description, ""]
    if baseline:
        lines.append(f"Random-init baseline (same architecture, same probe): **{100 * baseline['baseline_acc']:.1f}%** [{100 * baseline['baseline_acc_ci_low']:.1f}, {100 * baseline['baseline_acc_ci_high']:.1f}]")
        lines.append("")
    header = [*spec.keys, "seed", "probe acc % [95% CI]", "final loss", "contrastive acc", "steps", "wall (min)", "status"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        acc = f"{100 * r['probe_acc']:.1f} [{100 * r['probe_acc_ci_low']:.1f}, {100 * r['probe_acc_ci_high']:.1f}]" if "probe_acc" in r else "—"
        status = r["status"] if r["status"] != "failed" else f"failed: {r.get('error', '')[:80]}"
        lines.append(
            "| " + " | ".join([*(str(r.get(k)) for k in spec.keys), str(r["seed"]), acc, _fmt(r.get("final_loss")), _fmt(r.get("contrastive_acc")), str(r.get("steps", "—")), _fmt(r.get("wall_s", 0) / 60, 1), status]) + " |"
        )
    summary = summarise(spec, rows)
    if any(len(g["seeds"]) > 1 for g in summary):
        lines += ["", "Over seeds (mean ± sd; each seed's 95% CI):", ""]
        header = [*spec.keys, "seeds", "probe acc %", "per-seed CIs", "gap to random init (paired CIs)", "final loss / log(K+1)", "contrastive acc", "step (ms)"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for g in summary:
            if not g["seeds"]:
                continue
            acc = f"{100 * g['probe_acc']:.1f}" + (f" ± {100 * g['probe_acc_sd']:.1f}" if g["probe_acc_sd"] is not None else "")
            cis = " ".join(f"[{100 * lo:.1f}, {100 * hi:.1f}]" for lo, hi in g["cis"])
            step = "—" if g["step_s"] is None else f"{1000 * g['step_s']:.0f}"
            gap = "—" if g["gap_acc"] is None else f"{100 * g['gap_acc']:+.1f} " + " ".join(f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" for lo, hi in g["gap_cis"])
            lines.append("| " + " | ".join([*(str(g.get(k)) for k in spec.keys), str(len(g["seeds"])), acc, cis, gap, _fmt(g["loss_over_chance"]), _fmt(g["contrastive_acc"]), step]) + " |")
    (spec.out_dir / "results.md").write_text("\n".join(lines) + "\n")
    for key in spec.plots:
        _plot(spec, rows, baseline, key)
    _hparams(spec, rows)
    print("\n".join(lines))


def _plot(spec: AblationSpec, rows: list[dict[str, Any]], baseline: dict[str, Any] | None, key: str) -> None:
    """Probe accuracy (each seed, and the mean over seeds) and final loss / log(K+1) against ``key``.

    For the momentum, the x axis is 1 − m on a log scale and a vertical line marks the run's
    horizon 1 − m = 1/steps: to its left the key encoder moves less than about 1 − 1/e of the way
    to the query encoder within the run. Cells that vary another key too (e.g. a cosine schedule
    of m) are drawn as horizontal lines, not at their starting value.
    """
    others = [k for k in spec.keys if k != key]
    plain = [r for r in rows if "probe_acc" in r and isinstance(r.get(key), (int, float)) and not any(r.get(k) is not None for k in others)]
    special = [r for r in rows if "probe_acc" in r and any(r.get(k) is not None for k in others)]
    if not plain:
        return
    momentum = key == "moco.momentum"

    def x_of(r: dict[str, Any]) -> float:
        return 1 - r[key] if momentum else r[key]

    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for ax, metric, label in ((axes[0], "probe_acc", "linear-probe accuracy (%)"), (axes[1], "loss_over_chance", "final loss / log(K+1)")):
        scale = 100 if metric == "probe_acc" else 1
        points = [(x_of(r), scale * r[metric]) for r in plain if isinstance(r.get(metric), (int, float))]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o", alpha=0.45, label="one seed")
        xs = sorted({p[0] for p in points})
        means = [sum(p[1] for p in points if p[0] == x) / sum(1 for p in points if p[0] == x) for x in xs]
        ax.plot(xs, means, "-", color="C0", label="mean over seeds")
        if metric == "probe_acc" and baseline:
            ax.axhline(100 * baseline["baseline_acc"], color="grey", ls="--", label="random init")
        for i, group in enumerate({tuple(str(r.get(k)) for k in others) for r in special}):
            members = [r for r in special if tuple(str(r.get(k)) for k in others) == group and isinstance(r.get(metric), (int, float))]
            if members:
                name = ", ".join(f"{_short(k)}={v}" for k, v in zip(others, group) if v != "None")
                ax.axhline(scale * sum(r[metric] for r in members) / len(members), color=f"C{i + 2}", ls=":", label=name)
        if momentum:
            ax.set_xscale("log")
            ax.invert_xaxis()
            ax.set_xlabel("1 − m (momentum coefficient m)")
            steps = max((r.get("steps") or 0) for r in plain)
            if steps:
                ax.axvline(1 / steps, color="red", alpha=0.5, label=f"horizon 1/(1−m) = {steps} steps")
        else:
            if all(x > 0 for x in xs) and max(xs) / max(min(xs), 1e-12) >= 10:
                ax.set_xscale("log", base=2)
            ax.set_xlabel(key)
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    failed = [r for r in rows if r.get("status") == "failed" and isinstance(r.get(key), (int, float))]
    for r in failed:
        axes[0].axvline(x_of(r), color="red", alpha=0.3)
    fig.suptitle(f"{spec.path.stem}: against {key}")
    fig.tight_layout()
    fig.savefig(spec.out_dir / f"acc_vs_{_short(key)}.png", dpi=120)


def _hparams(spec: AblationSpec, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if "probe_acc" not in r:
            continue
        hp = {k: r[k] for k in spec.keys if isinstance(r.get(k), (int, float, str, bool))} | {"seed": r["seed"]}
        with SummaryWriter(log_dir=str(spec.out_dir / "hparams" / r["cell"])) as w:
            w.add_hparams(hp, {"hparam/probe_acc": r["probe_acc"], "hparam/final_loss": r["final_loss"], "hparam/contrastive_acc": r["contrastive_acc"]}, run_name=".")


def shutil_copy(src: Path, dst: Path) -> None:
    if src.resolve() != dst.resolve():
        dst.write_text(src.read_text())


def _short(key: str) -> str:
    return key.split(".")[-1]


def _fmt(v: Any, digits: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _yaml_scalar(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
