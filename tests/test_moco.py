from __future__ import annotations

import pytest
import torch

from mocomri.losses import info_nce
from mocomri.models import MoCo, SplitBatchNorm2d, create_encoder


def _moco(shuffle_bn: str = "split", bn_splits: int = 4, name: str = "resnet18", **kwargs) -> MoCo:
    torch.manual_seed(0)
    backbone, features = create_encoder(name, in_channels=1, width=8 if name == "resnet18" else 4)
    settings = {"proj_dim": 8, "proj_hidden_dim": 16, "queue_size": 32, "shuffle_bn": shuffle_bn, "bn_splits": bn_splits}
    return MoCo(backbone, features, **{**settings, **kwargs})


def _views(batch: int, size: tuple[int, ...] = (16, 16), seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, *size, generator=g)
    return x, x + 0.1 * torch.randn(x.shape, generator=g)


@pytest.mark.parametrize("shuffle_bn", ["split", "none"])
def test_moco__gradients_reach_query_branch_only(shuffle_bn):
    model = _moco(shuffle_bn).train()
    view_q, view_k = _views(8)
    out = model(view_q, view_k, momentum=0.99, subjects=torch.arange(8))
    out.loss.backward()

    assert torch.isfinite(out.loss) and torch.isfinite(out.q).all() and torch.isfinite(out.k).all()
    for name, p in [*model.base_encoder.named_parameters(), *model.projector.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name, p in [*model.momentum_encoder.named_parameters(), *model.momentum_projector.named_parameters()]:
        assert p.grad is None and not p.requires_grad, name
    assert {id(p) for p in model.parameters() if p.requires_grad} == {
        id(p) for p in [*model.base_encoder.parameters(), *model.projector.parameters()]
    }


def test_moco__outputs_are_unit_norm_and_detached():
    model = _moco().train()
    out = model(*_views(6), momentum=0.99)
    assert out.q.shape == out.k.shape == (6, 8)
    torch.testing.assert_close(out.q.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(out.k.norm(dim=1), torch.ones(6))
    assert out.loss.requires_grad and not out.q.requires_grad and not out.k.requires_grad
    assert out.accuracy.ndim == out.pos_logit.ndim == out.neg_logit.ndim == 0


def test_moco__queue_changes_by_exactly_the_batch_keys():
    model = _moco().train()
    model.queue.ptr.fill_(28)  # so this batch of 6 wraps around the end
    keys_before, subjects_before = model.queue.keys.clone(), model.queue.subjects.clone()
    subjects = torch.tensor([10, 11, 12, 13, 14, 15])
    out = model(*_views(6), momentum=0.99, subjects=subjects)

    slots = [28, 29, 30, 31, 0, 1]
    torch.testing.assert_close(model.queue.keys[slots], out.k)
    assert torch.equal(model.queue.subjects[slots], subjects)
    untouched = [i for i in range(32) if i not in slots]
    assert torch.equal(model.queue.keys[untouched], keys_before[untouched])
    assert torch.equal(model.queue.subjects[untouched], subjects_before[untouched])
    assert int(model.queue.ptr) == 2
    # The loss used the queue as it was before this batch's keys went in.
    expected = info_nce(out.q, out.k, keys_before, model.temperature, subjects, subjects_before)
    torch.testing.assert_close(out.loss.detach(), expected.loss)


def test_moco__same_subject_negatives_are_masked():
    model = _moco(shuffle_bn="none").eval()  # eval + m=1: the key branch is deterministic
    view_q, view_k = _views(4)
    subjects = torch.tensor([0, 1, 2, 3])
    model(view_q, view_k, momentum=1.0, subjects=subjects)  # each subject's key is now queued
    queued = {name: t.clone() for name, t in model.queue.state_dict().items()}

    masked = model(view_q, view_k, momentum=1.0, subjects=subjects)
    expected = info_nce(masked.q, masked.k, queued["keys"], model.temperature, subjects, queued["subjects"])
    torch.testing.assert_close(masked.loss.detach(), expected.loss)

    model.queue.load_state_dict(queued)
    model.mask_same_subject = False
    unmasked = model(view_q, view_k, momentum=1.0, subjects=subjects)
    # the queued key of a query's own subject is a near-copy of its positive: a hard negative
    assert masked.loss < unmasked.loss
    assert masked.neg_logit < unmasked.neg_logit


def test_moco__momentum_zero_copies_query_branch_after_a_step():
    model = _moco().train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(*_views(4), momentum=0.99).loss.backward()
    optimizer.step()
    model(*_views(4, seed=2), momentum=0.0)
    for p_q, p_k in zip(model.base_encoder.parameters(), model.momentum_encoder.parameters()):
        assert torch.equal(p_q, p_k)
    for p_q, p_k in zip(model.projector.parameters(), model.momentum_projector.parameters()):
        assert torch.equal(p_q, p_k)


@pytest.mark.parametrize("batch", [6, 5])
def test_moco__split_bn_with_batch_not_divisible_by_splits(batch):
    model = _moco("split", bn_splits=4).train()
    assert isinstance(model.base_encoder.bn1, SplitBatchNorm2d)
    assert isinstance(model.momentum_encoder.bn1, SplitBatchNorm2d)
    out = model(*_views(batch), momentum=0.99)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_moco__3d_encoder_runs():
    model = _moco("split", bn_splits=2, name="resnet10_3d").train()
    out = model(*_views(4, size=(16, 16, 16)), momentum=0.99, subjects=torch.arange(4))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.q.shape == (4, 8)


def test_moco__auto_without_distributed_is_split_and_backbone_is_base_encoder():
    model = _moco("auto")
    assert model.shuffle_bn == "split"
    assert model.backbone is model.base_encoder


def _group_norm_moco(shuffle_bn: str) -> MoCo:
    torch.manual_seed(0)
    backbone, features = create_encoder("resnet18", in_channels=1, width=8, norm="group", norm_groups=4)
    return MoCo(backbone, features, proj_dim=8, proj_hidden_dim=16, queue_size=32, shuffle_bn=shuffle_bn, bn_splits=4)


def test_moco__auto_on_a_group_norm_encoder_is_none():
    model = _group_norm_moco("auto").train()
    assert model.shuffle_bn == "none"
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    out = model(*_views(4), momentum=0.99, subjects=torch.arange(4))
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_moco__split_on_a_group_norm_encoder_warns_that_it_only_shuffles():
    with pytest.warns(UserWarning, match=r"shuffle_bn='split': the encoder has no BatchNorm .*bn_splits is unused"):
        model = _group_norm_moco("split")
    assert model.shuffle_bn == "split"
    assert {type(m) for m in model.base_encoder.modules()} >= {torch.nn.GroupNorm}
    assert not any(isinstance(m, SplitBatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shuffle_bn": "sync"}, "shuffle_bn='sync' must be one of"),
        ({"shuffle_bn": "ddp"}, "shuffle_bn='ddp' needs torch.distributed"),
        ({"temperature": 0.0}, "temperature=0.0 must be positive"),
        ({"bn_splits": 0}, "bn_splits=0 must be positive"),
        ({"queue_size": 0}, "queue_size=0 must be positive"),
    ],
)
def test_moco__invalid_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _moco(**kwargs)


def test_moco__mismatched_inputs_raise():
    model = _moco()
    view_q, view_k = _views(4)
    with pytest.raises(ValueError, match=r"view_k.shape=\(3, 1, 16, 16\) must match"):
        model(view_q, view_k[:3], momentum=0.99)
    with pytest.raises(ValueError, match=r"subjects.shape=\(3,\) must be \(4,\)"):
        model(view_q, view_k, momentum=0.99, subjects=torch.arange(3))
    with pytest.raises(ValueError, match="m=1.5 must be in"):
        model(view_q, view_k, momentum=1.5)
