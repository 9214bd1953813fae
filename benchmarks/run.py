"""The lab's command line: the full benchmark suite of the MoCo training step.

Times the MoCo training step of 2D and 3D ResNets in fp32, bf16, channels-last and
torch.compile against a plain fp32 MoCo v2 step, sweeps the queue size, measures the matmul
roofline and the data loader; prints markdown tables and writes the results as JSON (see
BENCHMARKS.md). Run from the repository root::

    python -m benchmarks.run --quick --no-loader
    python -m benchmarks.run --out bench.json --markdown bench.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from benchmarks.report import render
from benchmarks.suite import run_benchmarks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset that runs in a few minutes on 2 CPU cores")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # toy sizes, for the tests
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--markdown", help="also write the tables as markdown to this file")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: the CPU, and CUDA when present (default)")
    parser.add_argument("--no-loader", action="store_true", help="skip the data-loader measurement")
    parser.add_argument("--compile", action="store_true",
                        help="add torch.compile variants on the CPU too (compiling takes many minutes on 2 cores)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick and args.tiny:
        print("benchmarks: error: --quick and --tiny exclude each other", file=sys.stderr)
        return 2
    plan = "tiny" if args.tiny else "quick" if args.quick else "full"
    devices = None if args.device == "auto" else [args.device]
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks: error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = run_benchmarks(plan, devices, log=log, loader=not args.no_loader, compile=True if args.compile else None)
    flags = [f"--{plan}"] if plan != "full" else []
    flags += [f"--device {args.device}"] if args.device != "auto" else []
    flags += ["--no-loader"] if args.no_loader else []
    flags += ["--compile"] if args.compile else []
    flags += [f"--out {args.out}"] if args.out else []
    results["command"] = " ".join(["python -m benchmarks.run", *flags])
    text = render(results)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}", file=sys.stderr)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
