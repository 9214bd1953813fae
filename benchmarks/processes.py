"""The headline comparison across processes: the step as ``mocomri pretrain`` runs it against a
plain MoCo v2 step in a plain PyTorch process.

Part of the default step's speed is a process-wide setting, not code in the step:
:func:`mocomri.train.runtime.keep_freed_memory` keeps glibc from returning freed memory to the
kernel. It cannot be switched on and off between the variants of one process (glibc reads it as
blocks are allocated and freed, and what it kept stays kept), so the two sides run in child
processes, alternating (reference, default, reference, default, ...) so that both see the same
spells of load, each timing its step for a few rounds. The ratio is the median over the pairs of
the per-pair ratio of median step times. Page faults per step are read from ``getrusage``.

The child is this module: ``python -m benchmarks.processes SPEC_JSON ROUNDS CALLS KEEP``,
run from the repository root.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.step import StepSpec, TrainStep
from mocomri.timing import time_interleaved

ROOT = Path(__file__).resolve().parents[1]  # the repository root: where ``benchmarks`` and ``tests`` import from


def compare_in_processes(
    reference: StepSpec, default: StepSpec, pairs: int, rounds: int, calls: int, log: Callable[[str], None] = print
) -> dict:
    """Times ``reference`` (glibc's default allocator) and ``default`` (freed memory kept, as a
    training run) in ``pairs`` alternating pairs of child processes.

    Returns:
        ``{"pairs", "rounds", "calls_per_round", "speedup", "reference": {...}, "default": {...}}``
        where each side has its per-process ``median_ms``, the overall median, and page faults
        per step; ``speedup`` is the median over pairs of reference / default.
    """
    sides = {"reference": (reference, False), "default": (default, True)}
    per_process: dict[str, list[dict]] = {name: [] for name in sides}
    for pair in range(pairs):
        for name, (spec, keep) in sides.items():
            per_process[name].append(_run_child(spec, rounds, calls, keep))
        log(f"  pair {pair + 1}/{pairs}: reference {per_process['reference'][-1]['median_ms']:.0f} ms, "
            f"default {per_process['default'][-1]['median_ms']:.0f} ms")
    ratios = [r["median_ms"] / d["median_ms"] for r, d in zip(per_process["reference"], per_process["default"])]
    out = {"pairs": pairs, "rounds": rounds, "calls_per_round": calls, "speedup": statistics.median(ratios),
           "speedups": ratios}
    for name, (spec, keep) in sides.items():
        runs = per_process[name]
        out[name] = {
            "variant": spec.variant,
            "freed_memory_kept": keep,
            "median_ms": statistics.median(r["median_ms"] for r in runs),
            "per_process_median_ms": [r["median_ms"] for r in runs],
            "images_per_s": spec.batch_size / (statistics.median(r["median_ms"] for r in runs) / 1e3),
            "page_faults_per_step": statistics.median(r["page_faults_per_step"] for r in runs),
            "allocator_applied": runs[0]["allocator_applied"],
        }
    return out


def _run_child(spec: StepSpec, rounds: int, calls: int, keep: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.processes", json.dumps(dataclasses.asdict(spec)),
           str(rounds), str(calls), "keep" if keep else "plain"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({' '.join(cmd[:3])} ...): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(argv: list[str]) -> None:
    spec_json, rounds, calls, mode = argv
    applied = None
    if mode == "keep":
        from mocomri.train.runtime import keep_freed_memory

        applied = keep_freed_memory()
    step = TrainStep(StepSpec(**json.loads(spec_json)))
    for _ in range(2):
        step()
    step.sync()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = time_interleaved({"step": step}, int(rounds), int(calls), step.sync)["step"]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({
        "median_ms": 1e3 * statistics.median(times),
        "times_ms": [1e3 * t for t in times],
        "page_faults_per_step": faults / (int(rounds) * int(calls)),
        "allocator_applied": applied,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    _child(sys.argv[1:])
