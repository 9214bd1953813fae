"""End-to-end pretraining throughput against the step alone, side by side in one run.

For each config given, measures in this order, on the same machine and data:

1. ``step``: :class:`mocomri.train.speed.PretrainStep` (the step ``mocomri pretrain`` runs, built
   by pretraining's builders) on fixed view tensors;
2. ``loop``: the real ``mocomri pretrain`` command (loader, batched views on the device, step,
   logging, checkpoints), in a subprocess, images/s over the steps after the warm-up, from
   its ``metrics.jsonl``;
3. ``per-item`` (with ``--compare-src DIR``): the same command run from another source tree
   (e.g. a ``git worktree`` of a commit with the per-item MONAI views in DataLoader workers);
4. ``step`` again. Steps 1-2 repeat ``--rounds`` times, alternating, and the medians are
   compared, so a drift of the machine's speed during the run moves both alike.

Usage::

    git worktree add /tmp/mocomri-per-item 2efe027    # the last commit with per-item views
    .venv/bin/python tools/bench_views_loop.py --out runs/bench_views \\
        --compare-src /tmp/mocomri-per-item \\
        configs/brain_tumor_cpu.yaml configs/ixi_3d.yaml

Prints a Markdown table and writes ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mocomri.config import load_config  # noqa: E402
from mocomri.models import spatial_dims_of  # noqa: E402
from mocomri.timing import time_calls  # noqa: E402
from mocomri.train.pretrain import make_runtime  # noqa: E402
from mocomri.train.runtime import keep_freed_memory, select_device, select_precision  # noqa: E402
from mocomri.train.speed import PretrainStep  # noqa: E402


def step_only(config: str, overrides: list[str], warmup: int, steps: int) -> dict:
    """Images/s of the step ``pretrain`` runs (:class:`mocomri.train.speed.PretrainStep`) on fixed tensors."""
    cfg = load_config(config, overrides)
    rt = make_runtime(cfg)
    keep_freed_memory()
    torch.manual_seed(0)
    step = PretrainStep(cfg, rt)
    dims = spatial_dims_of(cfg.model.name)
    side = cfg.data.view_side(dims)
    shape = (cfg.train.batch_size, cfg.model.in_channels, *(side,) * dims)  # (B, C, *S)
    view_q = torch.randn(shape, device=rt.device).contiguous(memory_format=step.memory_format)
    view_k = torch.randn(shape, device=rt.device).contiguous(memory_format=step.memory_format)
    subjects = torch.arange(shape[0], device=rt.device)  # (B,)

    def one_step() -> None:
        float(step(view_q, view_k, subjects).loss.detach())  # one host sync per step, as neither loop would have fewer

    seconds = time_calls(one_step, steps, warmup=warmup, sync=step.sync)
    return {"images_per_s": shape[0] / seconds, "precision": rt.precision, "channels_last": rt.channels_last}


def loop(config: str, overrides: list[str], out: Path, src: Path, steps: int, warmup: int) -> dict:
    """Images/s of ``mocomri pretrain`` run from ``src`` over the steps after ``warmup``."""
    run_dir = out / "run"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, "-m", "mocomri", "pretrain", "--config", config, "--no-resume",
           f"train.out_dir={run_dir}", f"train.max_steps={steps}", "train.time_budget_min=0", "log.progress=false",
           "log.knn_monitor=false", "log.tensorboard=false", "train.checkpoint_every_steps=100000", *overrides]
    started = time.perf_counter()
    log = out.with_suffix(".log")
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, env=env, cwd=src, stdout=f, stderr=subprocess.STDOUT)
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    rows = [r for r in rows if r.get("kind", "train") == "train" and "images_per_s" in r]
    # A window's steps run from the previous logged step to its own; its time is steps / rate.
    spans = [(r, r["step"] - prev["step"]) for prev, r in zip([{"step": 0}, *rows], rows)]
    timed = [(r, n) for r, n in spans if r["step"] - n >= warmup]
    steps = sum(n for _, n in timed)
    seconds = sum(n / r["images_per_s"] for r, n in timed)  # per image; the batch size cancels
    result = {"images_per_s": steps / seconds, "steps": steps, "wall_s": time.perf_counter() - started}
    for key in ("data_wait_frac", "views_frac"):
        if timed and key in timed[0][0]:
            result[key] = sum(r[key] * n / r["images_per_s"] for r, n in timed) / seconds
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--out", default="runs/bench_views")
    parser.add_argument("--compare-src", type=Path, help="another source tree whose pretrain loop to time")
    parser.add_argument("--steps", type=int, default=60, help="loop steps (default 60)")
    parser.add_argument("--warmup", type=int, default=20, help="loop steps not timed (default 20)")
    parser.add_argument("--step-only-steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternating (step, loop) rounds (default 3)")
    parser.add_argument("--set", action="append", default=[], help="config override for every run, section.key=value")
    parser.add_argument("--set-new", action="append", default=[],
                        help="config override for this tree's runs only (keys the other tree lacks)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    every = max(1, args.warmup // 4)
    overrides = [f"log.every_steps={every}", *args.set]
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch": torch.__version__, "threads": torch.get_num_threads()}, "configs": {}}
    for config in args.configs:
        name = Path(config).stem
        config = str(Path(config).resolve())
        cfg = load_config(config, [*args.set, *args.set_new])
        manifest = cfg.data.manifest
        # The precision this tree's "auto" resolves to, for every run, the other tree's included.
        precision = select_precision(cfg.train.precision, select_device(cfg.train.device, 0), spatial_dims_of(cfg.model.name))
        if manifest and not Path(manifest).is_absolute():  # the other source tree may not ship it
            overrides_for = [f"data.manifest={(REPO / manifest).resolve()}"]
        else:
            overrides_for = []
        r: dict = {"overrides": args.set, "overrides_this_tree": args.set_new}
        run_overrides = [*overrides, *overrides_for, f"train.precision={precision}"]
        # Rounds of (step, loop) alternate, so a machine whose speed drifts (shared hosts do)
        # shifts both alike; the medians are reported with every round's figure.
        this_tree = [*run_overrides, *args.set_new]
        for k in range(args.rounds):
            r.setdefault("step", []).append(step_only(config, this_tree, warmup=5, steps=args.step_only_steps))
            r.setdefault("loop", []).append(loop(config, this_tree, out / f"{name}_loop", REPO, args.steps, args.warmup))
        if args.compare_src:
            r["per_item"] = loop(config, run_overrides, out / f"{name}_per_item", args.compare_src.resolve(), args.steps, args.warmup)
        r["step"].append(step_only(config, this_tree, warmup=5, steps=args.step_only_steps))
        results["configs"][name] = r
        (out / "results.json").write_text(json.dumps(results, indent=2))
        print(json.dumps({name: r}), flush=True)

    print("\n| config | step alone (img/s) | loop, batched views (img/s) | loop / step (medians) | per-item loop (img/s) | batched / per-item |")
    print("|---|---|---|---|---|---|")
    for name, r in results["configs"].items():
        steps = [x["images_per_s"] for x in r["step"]]
        loops = [x["images_per_s"] for x in r["loop"]]
        step, new = statistics.median(steps), statistics.median(loops)
        old = r.get("per_item", {}).get("images_per_s")
        print(f"| {name} | {step:.1f} ({', '.join(f'{v:.0f}' for v in steps)}) | {new:.1f} ({', '.join(f'{v:.0f}' for v in loops)}) | "
              f"{new / step:.2f} | {f'{old:.1f}' if old else '-'} | {f'{new / old:.1f}x' if old else '-'} |")


if __name__ == "__main__":
    main()
