"""Three formulations of the InfoNCE negatives, timed side by side: what :func:`mocomri.losses.info_nce`
was chosen from.

For each queue size K, forward and backward of the loss of B queries against K negatives:

- ``textbook``: ``builder.py``'s form: two einsums, ``torch.cat`` of the logits, division by T,
  ``F.cross_entropy`` (no masking; with masking, ``masked_fill`` of the (B, K) block);
- ``chunked``: the negatives ``--chunk`` keys at a time into a running log-sum-exp, recomputed
  chunk by chunk in the backward pass, so the (B, K) logits are never held whole (one extra
  matmul, far fewer bytes moved);
- ``in-place`` (mocomri's): one (B, K) buffer masked, exponentiated and kept in place; the
  backward pass is one matmul and a per-row scale.

With ``--masking``, subjects repeat as in the benchmark suite (``benchmarks/``) (8 images per subject, in the batch and
in the queue) and same-subject negatives are masked. Times are medians of ``--rounds`` round-robin
timings in one process, with freed memory kept (``mocomri.train.runtime.keep_freed_memory``).

Usage::

    python tools/bench_negatives.py                     # K = 4096, 65536; B = 128; C = 128
    python tools/bench_negatives.py --masking --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: this tree's mocomri

from mocomri.losses import InfoNCEOutput, info_nce  # noqa: E402
from mocomri.timing import paired_ratio, time_interleaved  # noqa: E402
from mocomri.train.runtime import keep_freed_memory  # noqa: E402


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
    """The chunked candidate: same loss, accuracy and logit means as :func:`mocomri.losses.info_nce`."""
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, queue = q.float(), k.float(), queue.float()
        qs = q / temperature  # scale the (B, C) queries, not the (B, K) logits
        pos = (qs * k).sum(dim=1)  # (B,)
        lse, top, total, kept = _NegativesLogSumExp.apply(qs, queue, q_subjects, queue_subjects, chunk)
        loss = (torch.logaddexp(pos, lse) - pos).mean()
    with torch.no_grad():
        pos = pos.detach()
        return InfoNCEOutput(loss, (pos > top).float().mean(), pos.mean(), total / kept.clamp(min=1))


def textbook_info_nce(q, k, queue, temperature, q_subjects=None, queue_subjects=None) -> torch.Tensor:
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
    l_neg = torch.einsum("nc,kc->nk", q, queue)
    if q_subjects is not None:
        masked = (q_subjects[:, None] == queue_subjects[None, :]) & (queue_subjects[None, :] >= 0)
        l_neg = l_neg.masked_fill(masked, float("-inf"))
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queue-sizes", default="4096,65536")
    parser.add_argument("--chunk", type=int, default=4096, help="keys per chunk of the chunked formulation")
    parser.add_argument("--masking", action="store_true", help="mask same-subject negatives (8 images per subject)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    keep_freed_memory()

    b, c = args.batch_size, args.dim
    q0 = F.normalize(torch.randn(b, c), dim=1)
    k = F.normalize(torch.randn(b, c), dim=1)
    subjects = torch.arange(b) % max(b // 8, 1)
    forms = {"textbook": textbook_info_nce,
             "chunked": lambda *a, **kw: chunked_info_nce(*a, **kw, chunk=args.chunk).loss,
             "in-place": lambda *a, **kw: info_nce(*a, **kw).loss}
    fns = {}
    for size in [int(x) for x in args.queue_sizes.split(",")]:
        queue = F.normalize(torch.randn(size, c), dim=1)
        queue_subjects = torch.arange(size) % max(b // 8, 1)
        masks = {"q_subjects": subjects, "queue_subjects": queue_subjects} if args.masking else {}
        for name, form in forms.items():
            def run(form=form, queue=queue, masks=masks):
                q = q0.clone().requires_grad_()
                form(q, k, queue, 0.2, **masks).backward()
            run()
            fns[f"K={size} {name}"] = run
    times = time_interleaved(fns, args.rounds, 3)
    print(f"InfoNCE forward + backward, B = {b}, C = {c}, masking: {'yes' if args.masking else 'no'}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; median of {args.rounds} round-robin timings\n")
    print("| K | formulation | ms | x vs textbook |")
    print("|---|---|---|---|")
    for name, t in times.items():
        size, form = name.split(" ")
        print(f"| {size[2:]} | {form} | {1e3 * statistics.median(t):.1f} | {paired_ratio(times[f'{size} textbook'], t):.2f}x |")


if __name__ == "__main__":
    main()
