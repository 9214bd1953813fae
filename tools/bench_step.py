"""Before/after timings of two candidate changes to the MoCo step, side by side in one run.

``mocomri bench`` measures the package as it is. This tool measures what two changes outside the
bench would buy, by swapping them in around each timed step:

- ``block-bn``: split BatchNorm over *contiguous* sub-batches, each through the native
  ``F.batch_norm`` (which keeps channels-last), instead of
  :class:`mocomri.models.SplitBatchNorm2d`'s reshape to (N/G, G*C, H, W), which is a view only
  for contiguous NCHW tensors and converts channels-last activations twice per layer and pass.
  The key batch is shuffled before the momentum encoder, so a partition into contiguous blocks
  is as random as the current ``i % G`` one.
- for reference, at the middle K: without channels-last (``no-cl``), and with plain BatchNorm
  (``plain-bn``: no shuffle-BN stand-in at all, the ceiling a split BatchNorm can approach);
- ``chunked-nce``: InfoNCE whose negatives are processed in K-chunks of ``--chunk`` keys with a
  running log-sum-exp (forward) and recomputed logits (backward), so that the (B, K) logits are
  never materialised: at K = 65,536 and B = 128 they are 32 MiB of fp32, which misses the cache
  on every one of the ~15 passes the current :func:`mocomri.losses.info_nce` makes over them.
  Same loss, gradient and statistics (accuracy, mean negative logit); no ``logits`` field.

With ``--malloc`` it measures a third, process-wide change instead: glibc's allocator kept from
returning memory to the kernel (``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``). By default
every tensor of 32 MiB or more is a fresh ``mmap``, so the kernel faults in and zeroes its pages
on every step. The environment is read at process start, so the two settings run in alternating
child processes (A, B, A, B, ...), each timing the unchanged default step and the reference.

Usage::

    python tools/bench_step.py                     # ResNet-18, 64 px, batch 128, K 256/4096/65536
    python tools/bench_step.py --rounds 7 --queue-sizes 4096,65536
    python tools/bench_step.py --malloc            # glibc default vs heap kept, child processes
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch import Tensor

import mocomri.models.moco as moco_module
from mocomri.bench import StepSpec, TrainStep, default_spec
from mocomri.bench.timing import paired_ratio, time_interleaved
from mocomri.losses import InfoNCEOutput
from mocomri.models import split_bn


def block_split_bn_forward(self, input: Tensor) -> Tensor:
    """Candidate ``_SplitBatchNorm.forward``: sample i in sub-batch i // (N/G), each sub-batch
    through native batch_norm; the running statistics are the average of the sub-batches'."""
    self._check_input_dim(input)
    groups = split_bn._num_groups(input.shape[0], self.num_splits, input[0, 0].numel()) if self.training else 1
    if groups == 1:
        return torch.nn.modules.batchnorm._BatchNorm.forward(self, input)
    factor = 0.0 if self.momentum is None else self.momentum
    tracked = self.track_running_stats and self.running_mean is not None and self.running_var is not None
    if tracked and self.num_batches_tracked is not None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked)
    c = input.shape[1]
    # one copy of the running statistics per sub-batch: (G, C) each
    mean = self.running_mean.repeat(groups).view(groups, c) if tracked else None
    var = self.running_var.repeat(groups).view(groups, c) if tracked else None
    outs = [
        F.batch_norm(x, mean[g] if tracked else None, var[g] if tracked else None, self.weight, self.bias, True, factor, self.eps)
        for g, x in enumerate(input.chunk(groups))
    ]
    if tracked:
        self.running_mean.copy_(mean.mean(dim=0))
        self.running_var.copy_(var.mean(dim=0))
    return torch.cat(outs)


class _NegativesLogSumExp(torch.autograd.Function):
    """lse_b = log Σ_k exp(qs_b · queue_k) over the unmasked k, in chunks of the queue.

    Shape: qs: (B, C), queue: (K, C) -> lse, max: (B,); total, kept: ().
    """

    @staticmethod
    def forward(ctx, qs, queue, q_subjects, queue_subjects, chunk):
        b = qs.shape[0]
        lse = qs.new_full((b,), float("-inf"))
        top = qs.new_full((b,), float("-inf"))
        total, kept = qs.new_zeros(()), qs.new_zeros(())
        for start in range(0, queue.shape[0], chunk):
            logits = qs @ queue[start : start + chunk].T  # (B, c)
            mask = _mask(q_subjects, queue_subjects, start, chunk)
            if mask is not None:
                total += logits.masked_fill(mask, 0.0).sum()
                kept += (~mask).sum()
                logits.masked_fill_(mask, float("-inf"))
            else:
                total += logits.sum()
                kept += logits.numel()
            torch.maximum(top, logits.amax(dim=1), out=top)
            lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
        # the caller may overwrite the queue's subjects (K ints) before backward; its keys are
        # already a snapshot (MoCo passes a clone)
        ctx.save_for_backward(qs, queue, lse, q_subjects, None if queue_subjects is None else queue_subjects.clone())
        ctx.chunk = chunk
        ctx.mark_non_differentiable(top, total, kept)
        return lse, top, total, kept

    @staticmethod
    def backward(ctx, grad_lse, *_):
        qs, queue, lse, q_subjects, queue_subjects = ctx.saved_tensors
        grad = torch.zeros_like(qs)
        for start in range(0, queue.shape[0], ctx.chunk):
            keys = queue[start : start + ctx.chunk]
            logits = qs @ keys.T
            mask = _mask(q_subjects, queue_subjects, start, ctx.chunk)
            if mask is not None:
                logits.masked_fill_(mask, float("-inf"))
            # softmax over the negatives, times the incoming gradient: (B, c)
            weights = logits.sub_(lse[:, None]).exp_().mul_(grad_lse[:, None])
            grad.addmm_(weights, keys)
        return grad, None, None, None, None


def _mask(q_subjects, queue_subjects, start, chunk):
    if q_subjects is None:
        return None
    qs = queue_subjects[start : start + chunk]
    return (q_subjects[:, None] == qs[None, :]) & (qs[None, :] >= 0)


def chunked_info_nce(q, k, queue, temperature, q_subjects=None, queue_subjects=None, chunk: int = 4096) -> InfoNCEOutput:
    """Candidate :func:`mocomri.losses.info_nce`: same loss, accuracy and logit means, in fp32."""
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, queue = q.float(), k.float(), queue.float()
        qs = q / temperature  # scale the (B, C) queries, not the (B, K) logits
        pos = (qs * k).sum(dim=1)  # (B,)
        lse, top, total, kept = _NegativesLogSumExp.apply(qs, queue, q_subjects, queue_subjects, chunk)
        loss = (torch.logaddexp(pos, lse) - pos).mean()
    with torch.no_grad():
        pos = pos.detach()
        return InfoNCEOutput(loss, (pos > top).float().mean(), pos.mean(), total / kept.clamp(min=1), None)


@contextlib.contextmanager
def candidates(block_bn: bool, chunked_nce: bool, chunk: int):
    """Swaps the candidate implementations in for the duration of a step."""
    bn_forward, nce = split_bn._SplitBatchNorm.forward, moco_module.info_nce
    if block_bn:
        split_bn._SplitBatchNorm.forward = block_split_bn_forward
    if chunked_nce:
        moco_module.info_nce = lambda *a, **kw: chunked_info_nce(*a, **kw, chunk=chunk)
    try:
        yield
    finally:
        split_bn._SplitBatchNorm.forward, moco_module.info_nce = bn_forward, nce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--queue-sizes", default="256,4096,65536")
    parser.add_argument("--chunk", type=int, default=4096, help="keys per chunk of chunked-nce")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--malloc", action="store_true", help="compare glibc allocator settings instead")
    parser.add_argument("--alternations", type=int, default=3, help="child-process pairs with --malloc")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    base = default_spec("cpu", encoder=args.encoder, image_size=args.image_size, batch_size=args.batch_size)
    sizes = [int(k) for k in args.queue_sizes.split(",")]
    if args.child:
        return _child(args, base, sizes)
    if args.malloc:
        return _malloc(args, base, sizes)
    # name -> (spec, block_bn, chunked_nce)
    reference = dataclasses.replace(base, formulation="reference", precision="fp32", channels_last=False)
    plan = {"reference": (reference, False, False)}
    for k in sizes:
        spec = dataclasses.replace(base, queue_size=k)
        plan[f"K={k} default"] = (spec, False, False)
        plan[f"K={k} block-bn"] = (spec, True, False)
        plan[f"K={k} chunked-nce"] = (spec, False, True)
        plan[f"K={k} both"] = (spec, True, True)
    # What channels-last is worth with each BatchNorm, at the middle K.
    k = sizes[len(sizes) // 2]
    contiguous = dataclasses.replace(base, queue_size=k, channels_last=False)
    plan[f"K={k} no-cl"] = (contiguous, False, False)
    plan[f"K={k} no-cl block-bn"] = (contiguous, True, False)
    plan[f"K={k} plain-bn"] = (dataclasses.replace(base, queue_size=k, shuffle_bn="none"), False, False)
    plan[f"K={k} no-cl plain-bn"] = (dataclasses.replace(contiguous, shuffle_bn="none"), False, False)
    fns = {}
    for name, (spec, block_bn, chunked) in plan.items():
        step = TrainStep(spec)
        with candidates(block_bn, chunked, args.chunk):
            step(), step()  # warm-up

        def run(step=step, block_bn=block_bn, chunked=chunked):
            with candidates(block_bn, chunked, args.chunk):
                step()

        fns[name] = run
    times = time_interleaved(fns, args.rounds)
    print(f"{args.encoder} {args.image_size} px, batch {args.batch_size}, `{base.variant}`, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.rounds} round-robin timings\n")
    print("| variant | ms/step | images/s | x vs reference | x vs default, same K |")
    print("|---|---|---|---|---|")
    for name, t in times.items():
        same_k = times.get(name.split(" ")[0] + " default")
        ms = 1e3 * statistics.median(t)
        print(f"| {name} | {ms:.0f} | {args.batch_size / ms * 1e3:.0f} | {paired_ratio(times['reference'], t):.2f}x | "
              + (f"{paired_ratio(same_k, t):.2f}x |" if same_k else " |"))
    first, last = sizes[0], sizes[-1]
    for kind in ("default", "block-bn", "chunked-nce", "both"):
        slow = paired_ratio(times[f"K={last} {kind}"], times[f"K={first} {kind}"])
        print(f"\n{kind}: step time K={last} vs K={first}: {100 * (slow - 1):+.1f}%", end="")
    print()


# glibc: never serve an allocation by mmap (so nothing is unmapped on free) and never trim the heap
HEAP_KEPT = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


def _child(args, base: StepSpec, sizes: list[int]) -> None:
    """Times the reference and the unchanged default step at each K; prints JSON."""
    specs = {"reference": dataclasses.replace(base, formulation="reference", precision="fp32", channels_last=False)}
    specs |= {f"K={k} default": dataclasses.replace(base, queue_size=k) for k in sizes}
    steps = {name: TrainStep(spec) for name, spec in specs.items()}
    for step in steps.values():
        step(), step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = time_interleaved(steps, args.rounds)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (args.rounds * len(steps))
    print(json.dumps({"times": times, "faults_per_step": faults}))


def _malloc(args, base: StepSpec, sizes: list[int]) -> None:
    settings = {"glibc default": {}, "heap kept": HEAP_KEPT}
    cmd = [sys.executable, __file__, "--child", "--encoder", args.encoder, "--image-size", str(args.image_size),
           "--batch-size", str(args.batch_size), "--queue-sizes", args.queue_sizes, "--rounds", str(args.rounds)]
    medians: dict[str, dict[str, list[float]]] = {s: {} for s in settings}
    faults: dict[str, list[float]] = {s: [] for s in settings}
    for _ in range(args.alternations):
        for setting, env in settings.items():
            out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            faults[setting].append(result["faults_per_step"])
            for name, t in result["times"].items():
                medians[setting].setdefault(name, []).append(statistics.median(t))
    print(f"{args.encoder} {args.image_size} px, batch {args.batch_size}, `{base.variant}`; {args.alternations} "
          f"alternating child-process pairs x {args.rounds} round-robin timings; heap kept: "
          + " ".join(f"{k}={v}" for k, v in HEAP_KEPT.items()) + "\n")
    print("| step | glibc default, ms | heap kept, ms | speed-up |")
    print("|---|---|---|---|")
    for name in medians["glibc default"]:
        a, b = medians["glibc default"][name], medians["heap kept"][name]
        print(f"| {name} | {1e3 * statistics.median(a):.0f} | {1e3 * statistics.median(b):.0f} | {paired_ratio(a, b):.2f}x |")
    print("\npage faults per step: " + ", ".join(f"{s}: {statistics.median(f):.0f}" for s, f in faults.items()))
    first, last = f"K={sizes[0]} default", f"K={sizes[-1]} default"
    for setting in settings:
        slow = paired_ratio(medians[setting][last], medians[setting][first])
        print(f"{setting}: step time {last.split()[0]} vs {first.split()[0]}: {100 * (slow - 1):+.1f}%")
    middle = f"K={sizes[len(sizes) // 2]} default"
    reference = medians["glibc default"]["reference"]  # the plain step runs with the plain allocator
    for setting in settings:
        print(f"default step at {middle.split()[0]} with {setting} vs the reference with glibc default: "
              f"{paired_ratio(reference, medians[setting][middle]):.2f}x")


if __name__ == "__main__":
    main()
