"""``mocomri bench``: how fast a config trains on this machine (step and loop images/s, peak memory)."""

from __future__ import annotations

import argparse

from mocomri.commands._config_args import add_config_arguments, load_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="how fast a config trains here: step and loop images/s, peak memory",
        description="Builds the dataset, model and optimiser of a pretraining config and times its "
        "training step alone and fed by the data loader, as in training; writes nothing to the run "
        "directory. The full benchmark suite is benchmarks/ in the repository (BENCHMARKS.md).",
    )
    add_config_arguments(p, required=True)
    p.add_argument("--steps", type=int, default=20, help="timed steps of each measurement (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each (default 3)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    from mocomri.errors import ConfigError
    from mocomri.train.speed import measure_speed

    if args.steps < 1 or args.warmup < 1:
        raise ConfigError(f"--steps={args.steps} and --warmup={args.warmup} must be at least 1")
    cfg = load_config_arguments(args)
    if cfg.train.keep_freed_memory:
        # Process-wide (glibc mallopt), as `mocomri pretrain` does: the command's choice.
        from mocomri.train.runtime import keep_freed_memory

        keep_freed_memory()
    s = measure_speed(cfg, steps=args.steps, warmup=args.warmup)
    layout = ", channels-last" if s.channels_last else ""
    print(f"{cfg.model.name} (width {cfg.model.width}), batch {s.batch_size}, K={cfg.moco.queue_size}, "
          f"{s.items} items on {s.device} ({s.precision}{layout}), {s.steps} timed steps each")
    print(f"  training step alone  {s.step_images_per_s:8.1f} images/s")
    print(f"  training loop        {s.loop_images_per_s:8.1f} images/s  ({100 * s.data_wait_frac:.0f}% waiting for data)")
    print(f"  peak memory          {s.peak_memory_mb:8.0f} MiB  ({s.memory_kind})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": args.config, **dataclasses.asdict(s)}, indent=2))
    return 0
