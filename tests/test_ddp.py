"""Distributed helpers: single-process behaviour, and a real two-process gloo run of MoCo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from mocomri.models import MoCo, create_encoder
from mocomri.models.distributed import (
    batch_shuffle_ddp,
    batch_shuffle_single,
    batch_unshuffle_ddp,
    concat_all_gather,
    is_dist,
    rank,
    world_size,
)

WORLD_SIZE = 2
BATCH = 4
STEPS = 2


def test_distributed__single_process_defaults():
    assert not is_dist() and rank() == 0 and world_size() == 1
    x = torch.randn(3, 2)
    assert concat_all_gather(x) is x


def test_batch_shuffle_single__permutes_and_inverts():
    torch.manual_seed(0)
    x = torch.arange(10).view(10, 1)
    shuffled, idx_unshuffle = batch_shuffle_single(x)
    assert sorted(shuffled.view(-1).tolist()) == list(range(10))
    assert not torch.equal(shuffled, x)
    assert torch.equal(shuffled[idx_unshuffle], x)


def _worker(rank_: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank_, world_size=WORLD_SIZE)
    try:
        # shuffle-BN round trip: each rank gets its own rows back, in order
        rows = torch.arange(BATCH).view(BATCH, 1) + 100 * rank_
        shuffled, idx_unshuffle = batch_shuffle_ddp(rows)
        restored = batch_unshuffle_ddp(shuffled, idx_unshuffle)

        torch.manual_seed(0)  # the same initial weights on both ranks
        backbone, features = create_encoder("resnet18", in_channels=1, width=8)
        model = MoCo(backbone, features, proj_dim=8, proj_hidden_dim=16, queue_size=32)
        net = DistributedDataParallel(model, broadcast_buffers=False)  # queues must agree on their own
        optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
        g = torch.Generator().manual_seed(1 + rank_)  # different images on each rank
        for step in range(STEPS):
            view_q = torch.randn(BATCH, 1, 16, 16, generator=g)
            view_k = view_q + 0.1 * torch.randn(view_q.shape, generator=g)
            subjects = torch.arange(BATCH) + 100 * rank_ + 10 * step
            out = net(view_q, view_k, momentum=0.9, subjects=subjects)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()

        try:
            batch_shuffle_ddp(torch.zeros(BATCH + rank_, 2))
            unequal_error = ""
        except ValueError as error:
            unequal_error = str(error)

        torch.save(
            {
                "mode": model.shuffle_bn,
                "shuffled": shuffled,
                "restored": restored,
                "queue": {k: v.clone() for k, v in model.queue.state_dict().items()},
                "params": torch.cat([p.detach().flatten() for p in model.parameters()]),
                "loss": out.loss.detach(),
                "unequal_error": unequal_error,
            },
            Path(out_dir) / f"rank{rank_}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_moco__two_process_gloo_queues_agree_and_hold_both_ranks(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]

    for r, res in enumerate(results):
        assert res["mode"] == "ddp"
        assert torch.equal(res["restored"], torch.arange(BATCH).view(BATCH, 1) + 100 * r)
        assert torch.isfinite(res["loss"])
        assert "per-rank batch sizes differ: [4, 5]" in res["unequal_error"]
    # the shuffle draws every row of the global batch exactly once
    drawn = torch.cat([res["shuffled"] for res in results]).view(-1).tolist()
    assert sorted(drawn) == [*range(BATCH), *range(100, 100 + BATCH)]

    queue0, queue1 = results[0]["queue"], results[1]["queue"]
    assert torch.equal(queue0["keys"], queue1["keys"])
    assert torch.equal(queue0["subjects"], queue1["subjects"])
    # keys enter in step order, and within a step in rank order
    expected = [100 * r + 10 * step + i for step in range(STEPS) for r in range(WORLD_SIZE) for i in range(BATCH)]
    n = len(expected)
    assert queue0["subjects"][:n].tolist() == expected
    assert (queue0["subjects"][n:] == -1).all() and int(queue0["ptr"]) == n
    # DDP kept the replicas in sync: identical query and momentum weights
    assert torch.equal(results[0]["params"], results[1]["params"])
