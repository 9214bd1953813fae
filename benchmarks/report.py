"""Markdown tables from the results of :func:`benchmarks.run_benchmarks`.

:func:`render` gives the whole report (what ``python -m benchmarks.run`` prints); :func:`sections` gives
it per heading (``Training step``, ``Queue cost``, ``Roofline``, ``GPU``), the pieces that
``BENCHMARKS.md`` is assembled from. "images/s" counts training images, i.e. pairs of views:
each costs a query forward and backward and a key forward.
"""

from __future__ import annotations

import math


def render(results: dict) -> str:
    """The full report: machine, then each section."""
    parts = [_machine(results)]
    for heading, body in sections(results).items():
        parts.append(f"## {heading}\n\n{body}")
    return "\n\n".join(parts) + "\n"


def sections(results: dict) -> dict[str, str]:
    """``{"Training step", "Queue cost", "Roofline", "GPU"}`` -> markdown body."""
    runs = results["runs"]
    cpu = next((r for r in runs if r["device"] == "cpu"), None)
    gpu = [r for r in runs if r["device"].startswith("cuda")]
    out = {}
    if cpu is not None:
        out["Training step"] = _steps(cpu)
        out["Queue cost"] = _queue(cpu)
        out["Roofline"] = _roofline(cpu)
    if gpu:
        out["GPU"] = "\n\n".join(
            f"### {r['device']}\n\n{_steps(r)}\n\n### Queue cost ({r['device']})\n\n{_queue(r)}\n\n"
            f"### Roofline ({r['device']})\n\n{_roofline(r)}"
            for r in gpu
        )
    else:
        out["GPU"] = "No CUDA device in this run; on a machine with one, `python -m benchmarks.run` adds these tables for it."
    return out


def _machine(results: dict) -> str:
    m = results["machine"]
    return (
        f"# mocomri benchmarks ({results['plan']})\n\n"
        f"- CPU: {m['cpu']}, {m['cpu_cores']} cores, {m['torch_threads']} torch threads, "
        f"native bf16: {'yes' if m['cpu_native_bf16'] else 'no'}, {m['memory_gib']:.0f} GiB\n"
        f"- CUDA: {m['cuda'] or 'none'}\n"
        f"- torch {m['torch']}, torchvision {m['torchvision']}, monai {m['monai']}, Python {m['python']}\n"
        f"- command: `{results['command']}`; wall time {results['wall_s'] / 60:.1f} min\n"
        f"- peak memory: {results['memory_method']}"
    )


def _steps(run: dict) -> str:
    d = run["default"]
    parts = [
        f"Default on {run['device']}: {d['precision']}, channels-last for 2D: {_yes(d['channels_last_2d'])}, "
        f"for 3D: {_yes(d['channels_last_3d'])}. Times: median (best) of {_rounds(run)} round-robin timings; "
        "ratios: median over rounds of the per-round ratio. 1-min load average (2 cores): "
        f"{_f(run.get('load_1min_start'), 1)} at the start, {_f(run.get('load_1min_end'), 1)} at the end; "
        "per case in the last column."
    ]
    h = run["headline"]
    if h.get("status") == "ok":
        p = h.get("processes")
        if p:
            parts.append(
                f"**Headline ({h['case']}), as run:** the default step `{p['default']['variant']}` in a process "
                f"with freed memory kept (as `mocomri pretrain` runs it) at {p['default']['images_per_s']:.0f} images/s "
                f"vs the plain fp32 MoCo v2 reference in a plain PyTorch process at "
                f"{p['reference']['images_per_s']:.0f} images/s: **{p['speedup']:.2f}x** (median of "
                f"{p['pairs']} alternating process pairs: {', '.join(f'{x:.2f}x' for x in p['speedups'])}; page faults "
                f"per step {p['reference']['page_faults_per_step']:.0f} vs {p['default']['page_faults_per_step']:.0f})."
            )
        kept = run.get("freed_memory_kept_in_process")
        parts.append(
            f"**Same process ({h['case']}):** default `{h['default_variant']}` at {h['default_images_per_s']:.0f} images/s "
            f"vs the reference formulation at {h['reference_images_per_s']:.0f} images/s: "
            f"**{h['speedup']:.2f}x** (best against best: {h['speedup_best']:.2f}x)"
            + (": the formulation alone, both with freed memory kept." if kept else ".")
        )
    head = "| case | variant | ms/step | images/s | x vs fp32 | x vs reference | GFLOP/step | GFLOP/s | peak MiB | load |"
    rows = [head, "|" + "---|" * 10]
    for r in run["steps"]:
        name = f"**{r['variant']}**" if r["is_default"] else r["variant"]
        if r["status"] != "ok":
            rows.append(f"| {r['case']} | {name} | {r['status']} | | | | | | | |")
            continue
        rows.append(
            f"| {r['case']} | {name} | {r['median_ms']:.0f} ({r['best_ms']:.0f}) | {r['images_per_s']:.1f} | "
            f"{_x(r.get('speedup_vs_fp32'))} | {_x(r.get('speedup_vs_reference'))} | {_f(r.get('gflop_per_step'), 1)} | "
            f"{_f(r.get('achieved_gflops'), 0)} | {_f(r.get('peak_mem_mb'), 0)} | {_f(r.get('load_1min'), 1)} |"
        )
    parts.append("\n".join(rows))
    compiled = [r for r in run["steps"] if r["compile"] != "none"]
    if not run.get("compile"):
        parts.append("`torch.compile`: not in this run (`--compile` adds it; on 2 CPU cores compiling the step "
                     "takes many minutes).")
    for r in compiled:
        if r["status"] == "ok":
            parts.append(f"`torch.compile` ({r['case']}): first step {r['first_step_s']:.0f} s (compilation), "
                         f"then {r['images_per_s']:.0f} images/s, {_x(r.get('speedup_vs_fp32'))} vs fp32.")
    parts.append(_components(run["components"]))
    parts.append(_loader(run["loader"]))
    return "\n\n".join(parts)


def _components(c: dict) -> str:
    mu, eq = c["momentum_update"], c["enqueue"]
    rows = [
        "| part | before | after | speed-up |",
        "|---|---|---|---|",
        f"| momentum update, {mu['tensors']} tensors, {mu['parameters'] / 1e6:.1f} M parameters | per-parameter loop "
        f"{mu['loop']['median_ms']:.2f} ms | `_foreach_lerp_` {mu['fused']['median_ms']:.2f} ms | {mu['speedup']:.1f}x |",
        f"| enqueue {eq['batch']} keys into K = {eq['queue_size']} | `torch.cat` + slice {eq['cat']['median_ms']:.3f} ms | "
        f"in place {eq['in_place']['median_ms']:.3f} ms | {eq['speedup']:.1f}x |",
    ]
    if c.get("host_sync"):
        s = c["host_sync"]
        rows.append(f"| host sync per step | `.item()` every step {s['item_each_step']['median_ms']:.2f} ms | "
                    f"none {s['no_sync']['median_ms']:.2f} ms | {s['speedup']:.2f}x |")
    if c.get("pinned_copy"):
        p = c["pinned_copy"]
        rows.append(f"| host-to-device copy, {p['megabytes']:.0f} MB | pageable {p['pageable']['median_ms']:.2f} ms | "
                    f"pinned {p['pinned']['median_ms']:.2f} ms | {p['speedup']:.1f}x |")
    return "\n".join(rows)


def _loader(loader: dict) -> str:
    if loader.get("status") != "ok":
        return f"Data loader: {loader.get('status')}."
    rates = ", ".join(
        f"{w} worker{'s' if w != '1' else ''}: {r:.0f} pairs/s" for w, r in loader["pairs_per_s"].items()
    )
    text = (
        f"Data loader ({loader['cohort']}, {loader['items']} items, {loader['image_size']} px, batch "
        f"{loader['batch_size']}): {rates}; the default step consumes "
        f"{_f(loader.get('step_images_per_s'), 0)} pairs/s."
    )
    if "fed" in loader:
        fed = loader["fed"]
        text += (f" Fed from the loader as in training ({loader['pairs_per_s'] and max(loader['pairs_per_s'], key=int)} workers "
                 f"and the step sharing the cores), the `{fed['variant']}` step at batch {fed['batch_size']} runs at "
                 f"{fed['pairs_per_s']:.0f} pairs/s, {100 * fed['data_wait_frac']:.0f}% of the time waiting for data.")
    return text


def _queue(run: dict) -> str:
    q = run["queue"]
    base_k = q["rows"][0]["queue_size"]
    rows = [
        f"{q['case']}, `{q['variant']}`. Step time from K = {base_k} to {q['rows'][-1]['queue_size']}: "
        f"**{100 * (q['slowdown_largest_vs_smallest'] - 1):+.1f}%**; the step grows by "
        f"{q['step_ms_per_1k_keys']:.2f} ms per 1,000 keys, the negatives alone by {q['negatives_ms_per_1k_keys']:.2f} ms "
        f"(the reference formulation's: {q['reference_negatives_ms_per_1k_keys']:.2f} ms).",
        "",
        f"| K | ms/step | images/s | step vs K = {base_k} | peak MiB | negatives alone, ms | reference negatives, ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r, n in zip(q["rows"], q["negatives"]):
        rows.append(
            f"| {r['queue_size']} | {r['median_ms']:.0f} ({r['best_ms']:.0f}) | {r['images_per_s']:.1f} | "
            f"{100 * (r['slowdown_vs_smallest'] - 1):+.1f}% | {_f(r.get('peak_mem_mb'), 0)} | "
            f"{n['mocomri']['median_ms']:.2f} | {n['reference']['median_ms']:.2f} |"
        )
    return "\n".join(rows)


def _roofline(run: dict) -> str:
    rows = ["| precision | GEMM GFLOP/s (start / end of the run) | kernel, n | by kernel |", "|---|---|---|---|"]
    for dtype, r in run["roofline"].items():
        both = " / ".join(f"{g:.0f}" for g in r.get("measured_gflops", []))
        kernels = ", ".join(f"{k} {g:.0f}" for k, g in r.get("by_kernel_gflops", {}).items())
        rows.append(f"| {dtype} | {r['gflops']:.0f}{f' ({both})' if both else ''} | {r.get('kernel', 'mm')}, {r['n']} | {kernels} |")
    ft = run["flop_target"]
    rows += ["", f"Achieved FLOP/s of the step at {ft['case']} against the matmul roofline of its precision "
                 "(FLOPs from `torch.utils.flop_counter`; median step time, best in brackets):", "",
             "| variant | GFLOP/s | roofline GFLOP/s | fraction |", "|---|---|---|---|"]
    for v in ft["variants"]:
        name = f"**{v['variant']}**" if v["is_default"] else v["variant"]
        rows.append(f"| {name} | {v['achieved_gflops']:.0f} | {_f(v['roofline_gflops'], 0)} | "
                    f"{_pct(v['fraction'])} ({_pct(v['fraction_best'])}) |")
    return "\n".join(rows)


def _rounds(run: dict) -> str:
    counts = {len(r["times_ms"]) for r in run["steps"] if "times_ms" in r}
    return "/".join(map(str, sorted(counts))) or "0"


def _x(v) -> str:
    return "" if v is None else f"{v:.2f}x"


def _f(v, digits: int) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.0f}%"


def _yes(v: bool) -> str:
    return "yes" if v else "no"
