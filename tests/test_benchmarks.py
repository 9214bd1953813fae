"""The benchmark suite (``benchmarks/``) on toy sizes, and the reference MoCo step (``tests/reference_moco.py``)
checked against the MoCo module."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import platform

import pytest
import torch
import torch.nn.functional as F

from benchmarks.loader import LoaderPlan, loader_benchmark
from benchmarks.run import main as bench_main
from benchmarks.step import StepSpec, TrainStep
from mocomri.models import MoCo, create_encoder
from tests.reference_moco import ColabSplitBatchNorm2d, ReferenceMoCo, colab_split_bn


@pytest.fixture
def one_thread():
    """Tiny tensors on one thread: on a shared 2-core machine, two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(queue_size: int = 32) -> tuple[MoCo, ReferenceMoCo]:
    """A MoCo module and a reference holding the same weights and the same queue."""
    torch.manual_seed(0)
    backbone, features = create_encoder("resnet18", in_channels=1, width=4)
    moco = MoCo(backbone, features, proj_dim=8, proj_hidden_dim=16, queue_size=queue_size, shuffle_bn="split", bn_splits=2)
    reference = ReferenceMoCo(copy.deepcopy(moco.base_encoder), features, 8, 16, queue_size, temperature=moco.temperature)
    reference.encoder_q[1].load_state_dict(moco.projector.state_dict())
    # A key encoder that has drifted from the query encoder, so that the momentum update has
    # something to do (and a wrong m would show).
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in [*moco.momentum_encoder.parameters(), *moco.momentum_projector.parameters()]:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    reference.encoder_k[0].load_state_dict(moco.momentum_encoder.state_dict())
    reference.encoder_k[1].load_state_dict(moco.momentum_projector.state_dict())
    # The reference keeps the newest key in column 0; the ring buffer's newest is at ptr - 1.
    reference.queue = moco.queue.keys.flip(0).T.clone()
    return moco.train(), reference.train()


def _views(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    view_q = torch.randn(8, 1, 32, 32, generator=g)
    return view_q, view_q + 0.1 * torch.randn(view_q.shape, generator=g)


def _assert_same_keys(reference: ReferenceMoCo, moco: MoCo) -> None:
    """The two queues hold the same keys (the order within a batch differs: the reference puts
    a batch's first key first, the ring buffer writes it first, i.e. oldest)."""
    ref, ring = reference.queue.T, moco.queue.keys  # (K, C) each
    match = torch.cdist(ref, ring).argmin(dim=1)  # for each reference key, the ring slot holding it
    assert sorted(match.tolist()) == list(range(ring.shape[0]))
    # Unit vectors after several steps of fp32 rounding, whose order differs between CPUs
    # (1.07e-5 seen on an AVX-512 Xeon); a wrong momentum or queue order is off by 1e-2 or more.
    torch.testing.assert_close(ref, ring[match], rtol=0, atol=5e-5)


def test_reference__same_loss_as_moco_in_fp32(one_thread):
    moco, reference = _pair(queue_size=16)
    view_q, view_k = _views(0)
    torch.manual_seed(100)  # the same key-batch shuffle in both
    loss_m = moco(view_q, view_k, momentum=0.9).loss
    torch.manual_seed(100)
    loss_r = F.cross_entropy(*reference(view_q, view_k, 0.9))
    torch.testing.assert_close(loss_m, loss_r, rtol=1e-5, atol=1e-6)


def test_reference__key_encoder_and_queue_track_moco_over_steps(one_thread):
    # MoCo trains; before each step the reference's query branch is set to MoCo's weights, so
    # what is compared is what each formulation does on its own: momentum update, keys, queue.
    moco, reference = _pair(queue_size=16)  # 3 batches of 8 wrap around it
    optimizer = torch.optim.SGD([p for p in moco.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for step in range(3):
        reference.encoder_q[0].load_state_dict(moco.base_encoder.state_dict())
        reference.encoder_q[1].load_state_dict(moco.projector.state_dict())
        view_q, view_k = _views(step)
        torch.manual_seed(100 + step)
        out = moco(view_q, view_k, momentum=0.9)
        torch.manual_seed(100 + step)
        loss_r = F.cross_entropy(*reference(view_q, view_k, 0.9))
        torch.testing.assert_close(out.loss, loss_r, rtol=1e-5, atol=1e-6)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()

    _assert_same_keys(reference, moco)
    momentum_params = [*moco.momentum_encoder.parameters(), *moco.momentum_projector.parameters()]
    for p_m, p_r in zip(momentum_params, reference.encoder_k.parameters(), strict=True):
        torch.testing.assert_close(p_m, p_r, rtol=1e-5, atol=1e-6)


def test_reference__queue_keeps_the_newest_batches_like_the_ring_buffer():
    # As in the original MoCo (which asserts K % batch == 0), whole batches: 3 x 5 keys, K = 10.
    moco, reference = _pair(queue_size=10)
    batches = [F.normalize(torch.randn(5, 8), dim=1) for _ in range(3)]
    for keys in batches:
        moco.queue.enqueue(keys)
        reference._dequeue_and_enqueue(keys)
    _assert_same_keys(reference, moco)
    torch.testing.assert_close(reference.queue.T, torch.cat([batches[2], batches[1]]))


def test_step_spec__reference_must_be_plain_fp32():
    with pytest.raises(ValueError, match="plain fp32"):
        StepSpec(formulation="reference", precision="bf16").validate()
    with pytest.raises(ValueError, match="precision='fp64'"):
        StepSpec(precision="fp64").validate()


def test_train_step__builds_the_case_pretraining_would_build():
    """The step is made by pretraining's builders from the case's config: the same MoCo module,
    weights and queue as the case's settings spelled out by hand, and the same SGD."""
    spec = StepSpec(image_size=16, batch_size=4, width=4, queue_size=16, proj_dim=8, proj_hidden_dim=16, bn_splits=2,
                    channels_last=True)
    step = TrainStep(spec, seed=3)
    torch.manual_seed(3)
    backbone, features = create_encoder("resnet18", in_channels=1, width=4)
    by_hand = MoCo(backbone, features, proj_dim=8, proj_hidden_dim=16, queue_size=16, shuffle_bn="split", bn_splits=2)
    built = step.pretrain_step.model.state_dict()
    assert built.keys() == by_hand.state_dict().keys()
    for name, value in by_hand.state_dict().items():
        torch.testing.assert_close(built[name], value, rtol=0, atol=0, msg=name)
    assert step.pretrain_step.model.base_encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert step.view_q.is_contiguous(memory_format=torch.channels_last)
    assert step.pretrain_step.lr == pytest.approx(0.06 * 4 / 256)
    optimizer = step.pretrain_step.optimizer
    group = optimizer.param_groups[0]
    assert (type(optimizer), group["momentum"], group["weight_decay"]) == (torch.optim.SGD, 0.9, 5e-4)
    fused = TrainStep(dataclasses.replace(spec, fused_sgd=True)).pretrain_step.optimizer
    assert fused.defaults["fused"] is True and fused.defaults["momentum"] == 0.9
    assert torch.isfinite(step())


def _numbers(tree, path=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_benchmarks_run__tiny_plan_writes_complete_finite_json(tmp_path, one_thread, capsys):
    out = tmp_path / "bench.json"
    assert bench_main(["--tiny", "--device", "cpu", "--out", str(out), "--markdown", str(tmp_path / "b.md")]) == 0
    results = json.loads(out.read_text())
    assert "## Training step" in capsys.readouterr().out
    assert (tmp_path / "b.md").read_text().startswith("# mocomri benchmarks (tiny)")

    assert set(results) >= {"plan", "command", "machine", "memory_method", "runs", "wall_s"}
    (run,) = results["runs"]
    assert set(run) >= {"device", "default", "roofline", "steps", "headline", "flop_target", "queue", "components", "loader"}
    for path, value in _numbers(run):
        assert math.isfinite(value), path

    ok = [r for r in run["steps"] if r["status"] == "ok"]
    assert {r["variant"] for r in ok} >= {"reference", "fp32", "fp32+cl"}
    assert {r["spatial_dims"] for r in ok} == {2, 3}
    for r in ok:
        assert r["median_ms"] > 0 and r["images_per_s"] > 0 and r["peak_mem_mb"] is not None, r["variant"]
    assert all(r["gflop_per_step"] > 0 for r in ok if r["formulation"] == "mocomri")
    assert run["headline"]["status"] == "ok" and run["headline"]["speedup"] > 0
    # the headline again in two child processes: the reference with glibc's defaults, the
    # default step with freed memory kept (where the C library is glibc)
    processes = run["headline"]["processes"]
    assert processes["reference"]["allocator_applied"] is None
    assert processes["default"]["allocator_applied"] is (platform.libc_ver()[0] == "glibc")
    assert processes["speedup"] > 0 and len(processes["speedups"]) == processes["pairs"] == 1
    assert all(v["gflops"] > 0 for v in run["roofline"].values())
    assert [r["queue_size"] for r in run["queue"]["rows"]] == [16, 32]
    assert all(r["median_ms"] > 0 for r in run["queue"]["rows"])
    assert run["components"]["momentum_update"]["speedup"] > 0


def test_loader_benchmark__counts_pairs_from_a_synthetic_cohort(one_thread):
    plan = LoaderPlan(subjects=2, shape=(16, 16, 16), image_size=16, batch_size=2, workers=0, batches=1)
    result = loader_benchmark(plan, torch.device("cpu"))
    assert result["status"] == "ok", result["status"]
    assert result["items"] >= 2 * plan.batch_size
    assert set(result["pairs_per_s"]) == {"0"} and result["pairs_per_s"]["0"] > 0


def test_colab_split_bn__normalises_strided_sub_batches():
    """The reference's split BatchNorm: sample i in sub-batch i % G, each with its own biased
    statistics; the running mean is the average of the sub-batches' moved copies."""
    torch.manual_seed(3)
    x = torch.randn(8, 3, 4, 4) * torch.arange(1.0, 9.0).view(8, 1, 1, 1)
    net = colab_split_bn(torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=0.5)), 4).train()
    assert isinstance(net[0], ColabSplitBatchNorm2d)
    out = net(x)
    for g in range(4):
        part = x[g::4]
        mean = part.mean(dim=(0, 2, 3), keepdim=True)
        var = part.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        torch.testing.assert_close(out[g::4], (part - mean) / torch.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    means = torch.stack([x[g::4].mean(dim=(0, 2, 3)) for g in range(4)]).mean(0)
    torch.testing.assert_close(net[0].running_mean, 0.5 * means, rtol=1e-5, atol=1e-6)
