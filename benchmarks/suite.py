"""Runs a :class:`~benchmarks.plan.Plan` on one device and returns its results as a dict.

The order: the matmul roofline; every case with its variants timed side by side (peak memory
and FLOPs on the way); on the CPU, the headline case again across processes
(:mod:`benchmarks.processes`); the queue sweep; the before/after timings of the step's
parts; the roofline again (the better of the two is kept); the data loader. A variant that
cannot run here (``torch.compile`` without a working compiler, bf16 on a CPU without native
bf16) is recorded as ``"not supported: <reason>"``, never raised.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import time
from collections.abc import Callable

import torch

from benchmarks import components
from benchmarks.flops import count_flops
from benchmarks.loader import loader_benchmark
from benchmarks.memory import PeakMemory
from benchmarks.plan import Case, Plan
from benchmarks.processes import compare_in_processes
from benchmarks.roofline import matmul_flops_per_s
from benchmarks.step import StepSpec, TrainStep, default_spec
from mocomri.timing import paired_ratio, summary, time_calls, time_interleaved
from mocomri.train.runtime import cpu_supports_bf16, keep_freed_memory

Log = Callable[[str], None]


def run_device(plan: Plan, device: torch.device, log: Log = print) -> dict:
    """Everything ``plan`` measures, on ``device``.

    Returns:
        ``{"device", "plan", "default", "roofline", "steps", "headline", "flop_target", "queue",
        "components", "loader"}``; see :mod:`benchmarks.report` for how each is read.
    """
    started = time.perf_counter()
    default = default_spec(str(device))
    out: dict = {
        "device": str(device),
        "plan": plan.name,
        "compile": plan.compile,
        "default": {"precision": default.precision, "channels_last_2d": default.channels_last,
                    "channels_last_3d": default_spec(str(device), encoder="resnet18_3d").channels_last},
    }
    out["load_1min_start"] = _load()
    if device.type == "cpu":
        # Every in-process variant, the reference included, runs with freed memory kept, as a
        # training run does; what that setting is worth is measured across processes below.
        out["freed_memory_kept_in_process"] = keep_freed_memory()
    log(f"[{device}] matmul roofline ({plan.name} plan)")
    out["roofline"] = _roofline(plan, device)

    out["steps"] = []
    for case in plan.cases:
        log(f"[{device}] {case.label}")
        out["steps"].extend(run_case(plan, case, device, log))
    out["headline"] = _headline(out["steps"], plan.headline)
    if device.type == "cpu" and plan.process_pairs and out["headline"].get("status") == "ok":
        log(f"[{device}] headline across processes: plain reference vs the default as a training run runs it")
        base = _default(plan, device, plan.headline.encoder, plan.headline.image_size, out["headline"]["batch_size"])
        reference = dataclasses.replace(base, formulation="reference", precision="fp32", channels_last=False)
        out["headline"]["processes"] = compare_in_processes(
            reference, base, plan.process_pairs, plan.process_rounds, plan.process_calls, log
        )

    log(f"[{device}] queue sweep K = {', '.join(map(str, plan.queue_sizes))}")
    out["queue"] = run_queue_sweep(plan, device)

    log(f"[{device}] components")
    out["components"] = _components(plan, device)

    # The roofline again: on a shared machine a few seconds of contention can halve one short
    # measurement, and a ceiling is the best the machine did, so keep the better of the two.
    log(f"[{device}] matmul roofline, again")
    for dtype, again in _roofline(plan, device).items():
        first = out["roofline"][dtype]
        out["roofline"][dtype] = {**max(first, again, key=lambda r: r["gflops"]),
                                  "measured_gflops": [first["gflops"], again["gflops"]]}
    out["flop_target"] = _flop_target(out["steps"], plan.flop_target, out["roofline"])

    if plan.loader is None:
        out["loader"] = {"status": "skipped: not part of this plan"}
    else:
        log(f"[{device}] data loader")
        step = None
        if plan.feed_step:
            spec = _default(plan, device, plan.headline.encoder, plan.loader.image_size, plan.headline.batch_size)
            step = _warm(TrainStep(spec), plan.warmup)
        out["loader"] = loader_benchmark(plan.loader, device, step)
        if out["loader"]["status"] == "ok":
            out["loader"]["step_images_per_s"] = out["headline"].get("default_images_per_s")
        del step
    out["load_1min_end"] = _load()
    out["wall_s"] = time.perf_counter() - started
    return out


def _load() -> float | None:
    """The 1-minute load average: on a shared machine, how contended the timings were."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def variants(plan: Plan, case: Case, device: torch.device) -> list[StepSpec]:
    """The specs timed side by side for ``case``: every precision with and without
    channels-last; for the headline case also the reference step, fused SGD and compile."""
    default = default_spec(str(device))
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    specs = [
        _spec(plan, dataclasses.replace(default, precision=p, channels_last=cl), case.encoder, case.image_size, case.batch_size)
        for p in precisions
        for cl in (False, True)
    ]
    if case == plan.headline:
        base = _default(plan, device, case.encoder, case.image_size, case.batch_size)
        specs.insert(0, dataclasses.replace(base, formulation="reference", precision="fp32", channels_last=False))
        specs.append(dataclasses.replace(base, fused_sgd=True))
        if plan.compile:
            specs += [dataclasses.replace(base, compile="module"), dataclasses.replace(base, compile="encoders")]
    return specs


def run_case(plan: Plan, case: Case, device: torch.device, log: Log = print) -> list[dict]:
    """Times every variant of ``case`` round-robin; one row per variant.

    On CUDA, a case that runs out of memory is retried at half the batch (down to 2).
    """
    while True:
        try:
            return _run_case(plan, case, device, log)
        except torch.OutOfMemoryError:
            if device.type != "cuda" or case.batch_size <= 2:
                raise
            gc.collect()
            torch.cuda.empty_cache()
            log(f"  out of memory at batch {case.batch_size}; retrying at {case.batch_size // 2}")
            case = dataclasses.replace(case, batch_size=case.batch_size // 2)


def _run_case(plan: Plan, case: Case, device: torch.device, log: Log) -> list[dict]:
    rows, steps = [], {}
    flops = None
    for spec in variants(plan, case, device):
        row = {"case": case.label, "encoder": case.encoder, "image_size": case.image_size,
               "spatial_dims": spec.spatial_dims, "batch_size": case.batch_size, "variant": spec.variant,
               "precision": spec.precision, "channels_last": spec.channels_last, "compile": spec.compile,
               "formulation": spec.formulation, "fused_sgd": spec.fused_sgd,
               "is_default": _is_default(spec), "status": "ok"}
        rows.append(row)
        reason = _unsupported(spec, device)
        if reason:
            row["status"] = f"not supported: {reason}"
            continue
        memory = PeakMemory(device)
        memory.start()
        try:
            step = TrainStep(spec)
            counted = []
            # The first step counts the case's FLOPs (once per case: they depend on neither
            # precision nor memory format) and includes compilation when compiled.
            if flops is None and spec.compile == "none" and spec.formulation == "mocomri":
                row["first_step_s"] = time_calls(lambda: counted.append(count_flops(step)), 1, sync=step.sync)
                flops = counted[0]
            else:
                row["first_step_s"] = time_calls(step, 1, sync=step.sync)
            step_s = time_calls(step, 1, warmup=max(plan.warmup - 2, 0), sync=step.sync)
        except torch.OutOfMemoryError:
            raise
        except Exception as e:  # a variant this machine cannot run is a result, not a crash
            row["status"] = f"not supported: {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            log(f"  {spec.variant}: {row['status']}")
            _free(device, spec.compile != "none")
            continue
        peak = memory.stop()
        row["peak_mem_mb"] = None if peak is None else peak / 2**20
        row["calls_per_round"] = max(1, min(50, math.ceil(plan.round_s / max(step_s, 1e-6)))) if plan.round_s else 1
        steps[spec.variant] = step

    if steps:
        times = time_interleaved(
            {v: s for v, s in steps.items()}, plan.rounds,
            {v: next(r["calls_per_round"] for r in rows if r["variant"] == v) for v in steps},
            next(iter(steps.values())).sync,
        )
        load = _load()
        fp32 = times.get("fp32")
        reference = times.get("reference")
        for row in rows:
            t = times.get(row["variant"])
            if t is None:
                continue
            row.update(summary(t))
            row["images_per_s"] = case.batch_size / (row["median_ms"] / 1e3)
            row["images_per_s_best"] = case.batch_size / (row["best_ms"] / 1e3)
            row["times_ms"] = [1e3 * x for x in t]
            row["load_1min"] = load
            if fp32 is not None:
                row["speedup_vs_fp32"] = paired_ratio(fp32, t)
            if reference is not None:
                row["speedup_vs_reference"] = paired_ratio(reference, t)
            if flops:
                row["gflop_per_step"] = flops / 1e9
                row["achieved_gflops"] = flops / (row["median_ms"] / 1e3) / 1e9
                row["achieved_gflops_best"] = flops / (row["best_ms"] / 1e3) / 1e9
            log(f"  {row['variant']:<22} {row['median_ms']:9.1f} ms/step  {row['images_per_s']:8.1f} img/s"
                + (f"  x{row['speedup_vs_fp32']:.2f} vs fp32" if "speedup_vs_fp32" in row else "")
                + (f"  {row['peak_mem_mb']:.0f} MiB" if row.get("peak_mem_mb") is not None else ""))
    compiled = any(s.spec.compile != "none" for s in steps.values())
    del steps
    _free(device, compiled)
    return rows


def run_queue_sweep(plan: Plan, device: torch.device) -> dict:
    """The default step at every K of the sweep, timed side by side, with its peak memory;
    and the negatives alone (logits, InfoNCE forward/backward, enqueue) per K."""
    case = plan.queue_case
    base = _default(plan, device, case.encoder, case.image_size, case.batch_size)
    rows, steps = [], {}
    for k in plan.queue_sizes:
        memory = PeakMemory(device)
        memory.start()
        step = TrainStep(dataclasses.replace(base, queue_size=k))
        step_s = time_calls(step, 1, warmup=max(plan.warmup - 1, 0), sync=step.sync)
        peak = memory.stop()
        calls = max(1, min(50, math.ceil(plan.round_s / max(step_s, 1e-6)))) if plan.round_s else 1
        steps[k] = (step, calls)
        rows.append({"queue_size": k, "peak_mem_mb": None if peak is None else peak / 2**20})
    times = time_interleaved({str(k): s for k, (s, _) in steps.items()}, plan.queue_rounds,
                             {str(k): c for k, (_, c) in steps.items()}, next(iter(steps.values()))[0].sync)
    smallest = str(plan.queue_sizes[0])
    for row in rows:
        t = times[str(row["queue_size"])]
        row.update(summary(t))
        row["images_per_s"] = case.batch_size / (row["median_ms"] / 1e3)
        row["slowdown_vs_smallest"] = paired_ratio(t, times[smallest])
        row["load_1min"] = _load()
        row["times_ms"] = [1e3 * x for x in t]
    del steps
    _free(device)
    negatives = components.negatives_cost(list(plan.queue_sizes), case.batch_size, plan.proj_dim, device, plan.component_rounds)
    ks = [float(r["queue_size"]) for r in negatives]
    return {
        "case": case.label,
        "variant": base.variant,
        "rows": rows,
        "slowdown_largest_vs_smallest": rows[-1]["slowdown_vs_smallest"],
        "step_ms_per_1k_keys": _slope(ks, [r["median_ms"] for r in rows]) * 1e3,
        "negatives": negatives,
        "negatives_ms_per_1k_keys": _slope(ks, [r["mocomri"]["median_ms"] for r in negatives]) * 1e3,
        "reference_negatives_ms_per_1k_keys": _slope(ks, [r["reference"]["median_ms"] for r in negatives]) * 1e3,
    }


def _roofline(plan: Plan, device: torch.device) -> dict:
    cuda = device.type == "cuda"
    # Emulated bf16 GEMMs on a CPU without native bf16 run at a few GFLOP/s: no ceiling to report.
    dtypes = ["fp32"] + (["bf16"] if cuda or cpu_supports_bf16() else []) + (["fp16"] if cuda else [])
    out = {}
    for dtype in dtypes:
        res = matmul_flops_per_s(dtype, device, plan.roofline_sizes, min_time_s=plan.roofline_min_time_s)
        out[dtype] = {"gflops": res["flops_per_s"] / 1e9, "n": res["n"], "kernel": res["kernel"],
                      "by_kernel_gflops": {k: v / 1e9 for k, v in res["by_kernel"].items()}}
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        # cuDNN runs fp32 convolutions on TF32 tensor cores by default: their ceiling is TF32's.
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            res = matmul_flops_per_s("fp32", device, plan.roofline_sizes, min_time_s=plan.roofline_min_time_s)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        out["tf32"] = {"gflops": res["flops_per_s"] / 1e9, "n": res["n"], "kernel": res["kernel"],
                       "by_kernel_gflops": {k: v / 1e9 for k, v in res["by_kernel"].items()}}
    return out


def _components(plan: Plan, device: torch.device) -> dict:
    case = plan.headline
    out = {
        "momentum_update": components.momentum_update_cost(
            case.encoder, plan.width, plan.proj_hidden_dim, plan.proj_dim, device, plan.component_rounds
        ),
        "enqueue": components.enqueue_cost(max(plan.queue_sizes), case.batch_size, plan.proj_dim, device, plan.component_rounds),
    }
    if device.type == "cuda":
        step = _warm(TrainStep(_default(plan, device, case.encoder, case.image_size, case.batch_size)), plan.warmup)
        out["host_sync"] = components.host_sync_cost(step, plan.component_rounds)
        shape = (2 * case.batch_size, 1, case.image_size, case.image_size)
        out["pinned_copy"] = components.pinned_copy_cost(shape, device, plan.component_rounds)
        del step
        _free(device)
    return out


def _rows_of(rows: list[dict], case: Case) -> list[dict]:
    """The measured rows of ``case`` (whatever batch it ended up with)."""
    return [r for r in rows if (r["encoder"], r["image_size"]) == (case.encoder, case.image_size) and r["status"] == "ok"]


def _headline(rows: list[dict], case: Case) -> dict:
    """The issue's comparison: the default step against the reference, same case and machine."""
    mine = _rows_of(rows, case)
    ref = next((r for r in mine if r["formulation"] == "reference"), None)
    dflt = next((r for r in mine if r["is_default"]), None)
    if ref is None or dflt is None:
        return {"status": "not measured"}
    return {
        "status": "ok",
        "case": dflt["case"],
        "default_variant": dflt["variant"],
        "batch_size": dflt["batch_size"],
        "reference_images_per_s": ref["images_per_s"],
        "default_images_per_s": dflt["images_per_s"],
        "speedup": dflt["speedup_vs_reference"],
        "speedup_best": ref["best_ms"] / dflt["best_ms"],
        "variants": {r["variant"]: r.get("speedup_vs_reference") for r in mine},
    }


def _flop_target(rows: list[dict], case: Case, roofline: dict) -> dict:
    """Achieved FLOP/s of the default step at ``case`` as a fraction of the matmul roofline of
    its precision (and of every other variant of the case against its own precision)."""
    out = {"case": case.label, "variants": []}
    for r in _rows_of(rows, case):
        if "achieved_gflops" not in r or r["formulation"] != "mocomri":
            continue
        out["case"] = r["case"]
        precision = "tf32" if r["precision"] == "fp32" and "tf32" in roofline else r["precision"]
        peak = roofline.get(precision, {}).get("gflops")
        entry = {"variant": r["variant"], "is_default": r["is_default"], "achieved_gflops": r["achieved_gflops"],
                 "roofline_gflops": peak, "fraction": r["achieved_gflops"] / peak if peak else None,
                 "fraction_best": r["achieved_gflops_best"] / peak if peak else None}
        out["variants"].append(entry)
        if r["is_default"]:
            out.update({k: v for k, v in entry.items() if k != "variant"}, variant=r["variant"])
    return out


def _spec(plan: Plan, template: StepSpec, encoder: str, image_size: int, batch_size: int) -> StepSpec:
    """``template``'s precision, memory format and flags on ``plan``'s sizes for one case."""
    return dataclasses.replace(
        template, encoder=encoder, image_size=image_size, batch_size=batch_size, width=plan.width,
        proj_dim=plan.proj_dim, proj_hidden_dim=plan.proj_hidden_dim, queue_size=plan.queue_size,
    )


def _default(plan: Plan, device: torch.device, encoder: str, image_size: int, batch_size: int) -> StepSpec:
    """The spec a training run would use for this encoder (the runtime's precision and memory
    format; channels-last may differ between 2D and 3D)."""
    return _spec(plan, default_spec(str(device), encoder=encoder), encoder, image_size, batch_size)


def _is_default(spec: StepSpec) -> bool:
    """True for the variant a training run would use: the runtime's precision and memory format
    for this encoder, eager, stock SGD, mocomri's formulation."""
    dims_default = default_spec(spec.device, encoder=spec.encoder)
    return (spec.formulation == "mocomri" and spec.compile == "none" and not spec.fused_sgd
            and spec.precision == dims_default.precision and spec.channels_last == dims_default.channels_last)


def _unsupported(spec: StepSpec, device: torch.device) -> str | None:
    if device.type == "cpu" and spec.precision == "bf16" and not cpu_supports_bf16():
        return "this CPU has no native bf16 (oneDNN would emulate it, slower than fp32)"
    if device.type == "cuda" and spec.precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    return None


def _warm(step: TrainStep, calls: int) -> TrainStep:
    """Runs ``calls`` untimed steps (allocator, oneDNN and cuDNN warm-up); returns the step."""
    for _ in range(calls):
        step()
    step.sync()
    return step


def _slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of y on x."""
    n = len(x)
    if n < 2:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    return sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx if sxx else float("nan")


def _free(device: torch.device, compiled: bool = False) -> None:
    if compiled:
        torch._dynamo.reset()  # drops the compiled graphs and what they hold
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_benchmarks(
    plan: str = "full", devices: list[str] | None = None, log: Log = print, loader: bool = True, compile: bool | None = None
) -> dict:
    """Runs the named plan on each device (default: the CPU, and CUDA when present).

    Args:
        plan: ``full``, ``quick`` or ``tiny`` (see :mod:`benchmarks.plan`).
        devices: e.g. ``["cpu", "cuda"]``.
        log: where progress lines go.
        loader: measure the data loader (when the plan has it).
        compile: time the ``torch.compile`` variants of the headline case; None: the plan's
            choice (CUDA full runs only; on 2 CPU cores compilation takes many minutes).

    Returns:
        ``{"plan", "command", "machine", "memory_method", "runs": [one dict per device], "wall_s"}``.

    Raises:
        ValueError: for an unknown plan, or CUDA asked for where there is none.
    """
    from benchmarks.machine import describe_machine
    from benchmarks.memory import cpu_method
    from benchmarks.plan import make_plan

    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        raise ValueError("a CUDA device was asked for, but CUDA is not available on this machine")
    started = time.perf_counter()
    results: dict = {"plan": plan, "machine": describe_machine(), "runs": []}
    results["memory_method"] = (
        f"CPU: {cpu_method()}; CUDA: torch.cuda.max_memory_allocated growth over the case's start"
    )
    for name in devices:
        device = torch.device(name)
        device_plan = make_plan(plan, device)
        if not loader:
            device_plan = dataclasses.replace(device_plan, loader=None)
        if compile is not None:
            device_plan = dataclasses.replace(device_plan, compile=compile)
        results["runs"].append(run_device(device_plan, device, log))
    results["wall_s"] = time.perf_counter() - started
    return results
