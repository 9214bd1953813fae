"""Online health signals of contrastive training: alignment, uniformity, collapse (the kNN monitor uses the probe's kNN)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


@torch.no_grad()
def alignment(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """E‖q − k‖² over positive pairs (Wang & Isola, arXiv:2005.10242); lower is better.

    Shape:
        q, k: (B, C), L2-normalised.
    """
    return (q.float() - k.float()).pow(2).sum(dim=1).mean()


@torch.no_grad()
def uniformity(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """log E exp(−t‖z_i − z_j‖²) over distinct pairs (Wang & Isola); lower is more uniform.

    Shape:
        z: (B, C), L2-normalised.
    """
    sq = torch.pdist(z.float(), p=2).pow(2)
    return sq.mul(-t).exp().mean().log()


@torch.no_grad()
def embedding_spread(z: torch.Tensor) -> torch.Tensor:
    """Per-dimension std of normalised embeddings, times sqrt(C).

    About 1 for embeddings spread over the sphere, 0 when every embedding is the same vector
    (collapse); the SimSiam paper's collapse monitor (arXiv:2011.10566).

    Shape:
        z: (B, C), L2-normalised.
    """
    return z.float().std(dim=0).mean() * math.sqrt(z.shape[1])


def embedding_stats(q: torch.Tensor, k: torch.Tensor, distributed: bool = False) -> dict[str, float]:
    """Spread, alignment and uniformity of a batch's embeddings, as floats for the log.

    Args:
        q, k: the batch's query and key embeddings, L2-normalised. Shape: (B, C) each.
        distributed: average the spread over the ranks (an all-reduce): it decides whether the
            run stops, which every rank must decide alike.
    """
    q, k = q.detach(), k.detach()
    spread = embedding_spread(q)
    if distributed:
        dist.all_reduce(spread)
        spread = spread / dist.get_world_size()
    return {"spread": float(spread), "alignment": float(alignment(q, k)), "uniformity": float(uniformity(q))}
