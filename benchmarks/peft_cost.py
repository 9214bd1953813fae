"""What a parameter-efficient module costs to train, beside full fine-tuning: trainable
parameters, step time and peak memory, measured side by side in one run.

Run from the repository root::

    python -m benchmarks.peft_cost [--quick] [--config configs/brain_tumor_cpu.yaml] [--batch-size 32]

The architecture and input size are the config's (the brain-tumour recipe: ResNet-18 of width
32 at 64 px), on a batch of random images and labels (4 classes). Three cases, each built as
training builds it: LoRA and (IA)³ at their default targets (rank 4 for LoRA) on the frozen
encoder (:class:`mocomri.peft.PEMEncoder`, BatchNorm in eval mode), and full fine-tuning (every
weight, BatchNorm in train mode); each with a linear head and AdamW. The timed step is
:func:`mocomri.train.finetune.ce_step`, the step module training and full fine-tuning run.

- Step time: after warm-up steps, the cases take turns for ``--rounds`` rounds
  (:func:`mocomri.timing.time_interleaved`); medians (and best) over rounds, and the median
  of the per-round ratio to full fine-tuning.
- Peak memory: :class:`benchmarks.memory.PeakMemory` over each case's building and warm-up
  steps: on the CPU the growth of the process's peak resident set (the kernel's high-water mark,
  reset first), on CUDA ``max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.machine import describe_machine
from benchmarks.memory import PeakMemory, cpu_method
from mocomri.config import load_config
from mocomri.models import encoder_from_config
from mocomri.peft import PEMEncoder, PEMSpec, default_targets
from mocomri.timing import device_sync, paired_ratio, summary, time_interleaved
from mocomri.train.finetune import ce_step

CASES = ("lora", "ia3", "full")
N_CLASSES = 4


@dataclass
class CostCase:
    """One way of training, ready to step on a fixed batch."""

    model: nn.Module
    head: nn.Linear
    optimizer: torch.optim.Optimizer
    images: torch.Tensor  # (B, C, *S)
    labels: torch.Tensor  # (B,)
    trainable: int  # trainable parameters of the encoder side (the module, or every weight)

    def __call__(self) -> None:
        ce_step(self.model, self.head, self.optimizer, self.images, self.labels)


def build_case(name: str, encoder: nn.Module, feature_dim: int, images: torch.Tensor, labels: torch.Tensor,
               lr: float = 1e-3) -> CostCase:
    """``lora``, ``ia3`` (a module on a copy of ``encoder``) or ``full`` (a copy of every weight), in train mode."""
    if name not in CASES:
        raise ValueError(f"case={name!r} must be one of {CASES}")
    model = copy.deepcopy(encoder)
    if name == "full":
        parameters = list(model.requires_grad_(True).parameters())
    else:
        model = PEMEncoder(model, PEMSpec(name, default_targets(model, name)))
        parameters = model.trainable_parameters()
    model = model.to(images.device).train()
    head = nn.Linear(feature_dim, N_CLASSES).to(images.device)
    optimizer = torch.optim.AdamW([*parameters, *head.parameters()], lr=lr)
    return CostCase(model, head, optimizer, images, labels, sum(p.numel() for p in parameters))


def measure(config_path: str, batch_size: int, rounds: int, steps_per_round: int, warmup: int,
            device: torch.device) -> dict:
    """Builds the three cases, measures each one's peak memory while it warms up, then times them round-robin."""
    config = load_config(config_path)
    torch.manual_seed(0)
    encoder, feature_dim = encoder_from_config(config.model)
    side = config.data.image_size
    images = torch.randn(batch_size, config.model.in_channels, side, side, device=device)  # (B, C, H, W)
    labels = torch.randint(0, N_CLASSES, (batch_size,), device=device)  # (B,)
    sync = device_sync(device)
    cases, rows = {}, {}
    for name in CASES:
        memory = PeakMemory(device)
        memory.start()
        cases[name] = build_case(name, encoder, feature_dim, images, labels)
        for _ in range(warmup):
            cases[name]()
        sync()
        peak = memory.stop()
        rows[name] = {"trainable": cases[name].trainable, "peak_mem_mb": None if peak is None else peak / 2**20}
    times = time_interleaved(cases, rounds, steps_per_round, sync)
    for name in CASES:
        rows[name] |= summary(times[name]) | {"speedup_vs_full": paired_ratio(times["full"], times[name])}
    return {"config": config_path, "model": f"{config.model.name} width {config.model.width}",
            "input": f"{side} px", "batch_size": batch_size, "device": str(device), "rounds": rounds,
            "steps_per_round": steps_per_round, "warmup": warmup, "head_parameters": feature_dim * N_CLASSES + N_CLASSES,
            "memory_method": cpu_method() if device.type == "cpu" else "torch.cuda.max_memory_allocated",
            "machine": describe_machine(), "cases": rows}


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def markdown(results: dict) -> str:
    """The results as a Markdown table, with what was measured and how above it."""
    full = results["cases"]["full"]["trainable"]
    titles = {"lora": "LoRA (r = 4)", "ia3": "(IA)³", "full": "full fine-tuning"}
    lines = [f"{results['model']}, {results['input']}, batch {results['batch_size']}, on {results['device']} "
             f"({results['machine']['cpu']}, {results['machine']['torch_threads']} threads). Step time: median (best) "
             f"of {results['rounds']} round-robin rounds of {results['steps_per_round']} steps; peak memory: "
             f"{results['memory_method']}. Trainable parameters exclude the linear head "
             f"({results['head_parameters']:,} more in every case).", "",
             "| training | trainable parameters | share of full | step time, ms | speed vs full | peak memory, MiB |",
             "|---|---|---|---|---|---|"]
    for name, row in results["cases"].items():
        lines.append(f"| {titles[name]} | {row['trainable']:,} | {100 * row['trainable'] / full:.2f}% | "
                     f"{row['median_ms']:.1f} ({row['best_ms']:.1f}) | {row['speedup_vs_full']:.2f}× | "
                     f"{_mib(row['peak_mem_mb'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peft_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/brain_tumor_cpu.yaml", help="its model and data.image_size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, help="round-robin rounds (default 15; --quick 3)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--quick", action="store_true", help="a short run: 3 rounds of 2 steps")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 15)
    results = measure(args.config, args.batch_size, rounds, steps_per_round=2 if args.quick else 5,
                      warmup=2 if args.quick else 5, device=torch.device(args.device))
    print(markdown(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
