"""PEMEncoder on tiny registry encoders: identity at start, frozen base, BatchNorm in eval mode, folding."""

from __future__ import annotations

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mocomri.models import create_encoder
from mocomri.peft import PEMEncoder, PEMSpec, default_targets

CASES = [("resnet18", "lora"), ("resnet18", "ia3"), ("resnet50", "ia3"), ("resnet10_3d", "lora"), ("resnet10_3d", "ia3")]


def _tiny(name: str, seed: int = 0):
    torch.manual_seed(seed)
    encoder, _ = create_encoder(name, in_channels=1, width=2)
    x = torch.randn(3, 1, *(8,) * (3 if name.endswith("_3d") else 2))  # (B, C, *S)
    return encoder.eval(), x


@pytest.mark.parametrize("name, kind", CASES)
def test_pem_encoder__fresh_module_is_the_identity_even_in_train_mode(name: str, kind: str) -> None:
    encoder, x = _tiny(name)
    with torch.no_grad():
        expected = encoder(x)
    wrapped = PEMEncoder(encoder, PEMSpec(kind, default_targets(encoder, kind), rank=2)).train()
    with torch.no_grad():
        assert torch.equal(wrapped(x), expected)


@pytest.mark.parametrize("name, kind", CASES)
def test_pem_encoder__only_module_parameters_receive_gradients(name: str, kind: str) -> None:
    encoder, x = _tiny(name)
    wrapped = PEMEncoder(encoder, PEMSpec(kind, default_targets(encoder, kind), rank=2)).train()
    with torch.no_grad():  # B = 0 would leave A without a gradient
        for p in wrapped.trainable_parameters():
            p.add_(0.1)
    wrapped(x).square().sum().backward()
    module_keys = {"lora_A", "lora_B", "ia3_scale"}
    for name_, p in wrapped.named_parameters():
        is_module = name_.rsplit(".", 1)[-1] in module_keys
        assert p.requires_grad == is_module, name_
        assert (p.grad is not None) == is_module, name_
    # (a channel can be dead at width 2, so the gradient is checked over the whole module)
    assert sum(float(p.grad.abs().sum()) for p in wrapped.trainable_parameters()) > 0


def test_pem_encoder__batchnorm_stays_in_eval_mode_and_keeps_its_statistics() -> None:
    encoder, x = _tiny("resnet18")
    wrapped = PEMEncoder(encoder, PEMSpec("ia3", ("layer*.*.conv2", "layer*.*.bn2")))
    stats = {k: v.clone() for k, v in wrapped.state_dict().items() if "running" in k}
    wrapped.train()
    wrapped(x)
    norms = [m for m in wrapped.modules() if isinstance(m, _BatchNorm)]
    assert norms and not any(m.training for m in norms)
    assert wrapped.training and wrapped.encoder.layer1.training
    for k, v in stats.items():
        assert torch.equal(wrapped.state_dict()[k], v), k


@pytest.mark.parametrize("name, kind", CASES)
def test_pem_encoder__merged_encoder_gives_the_same_outputs(name: str, kind: str) -> None:
    encoder, x = _tiny(name)
    keys = set(encoder.state_dict())
    wrapped = PEMEncoder(encoder, PEMSpec(kind, default_targets(encoder, kind), rank=2))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in wrapped.trainable_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        wrapped.eval()
        merged = wrapped.merged()
        assert set(merged.state_dict()) == keys  # a plain state dict of the base architecture
        torch.testing.assert_close(merged(x), wrapped(x), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(merged(x), _tiny(name)[0](x))  # the module did change something


@pytest.mark.parametrize("name", ["resnet18", "resnet10_3d"])
def test_pem_encoder__ia3_on_a_group_norm_encoder_scales_each_blocks_last_groupnorm(name: str) -> None:
    torch.manual_seed(0)
    encoder, _ = create_encoder(name, in_channels=1, width=2, norm="group", norm_groups=2)
    x = torch.randn(3, 1, *(8,) * (3 if name.endswith("_3d") else 2))
    with torch.no_grad():
        expected = encoder.eval()(x)
    wrapped = PEMEncoder(encoder, PEMSpec("ia3", default_targets(encoder, "ia3")))
    norms = [layer for layer in wrapped.layers if layer.endswith(".bn2")]
    assert norms and all(isinstance(wrapped.encoder.get_submodule(layer).base, torch.nn.GroupNorm) for layer in norms)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        assert torch.equal(wrapped.train()(x), expected)  # a fresh module changes nothing, in train mode too
        for p in wrapped.trainable_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        torch.testing.assert_close(wrapped.merged().train()(x), wrapped(x), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(wrapped(x), expected)


def test_pem_encoder__targets_resolve_by_pattern_and_a_pattern_matching_nothing_is_an_error() -> None:
    encoder, _ = _tiny("resnet18")
    wrapped = PEMEncoder(encoder, PEMSpec("lora", ("layer3.*.conv*",), rank=2))
    assert wrapped.layers == ["layer3.0.conv1", "layer3.0.conv2", "layer3.1.conv1", "layer3.1.conv2"]
    with pytest.raises(ValueError, match=r"target pattern 'layer9\.\*' matches no layer that lora can adapt"):
        PEMEncoder(_tiny("resnet18")[0], PEMSpec("lora", ("layer9.*",), rank=2))


def test_pem_encoder__module_state_round_trips_and_checks_keys() -> None:
    encoder, x = _tiny("resnet18")
    spec = PEMSpec("lora", ("layer4.*.conv*",), rank=2, seed=3)
    first = PEMEncoder(encoder, spec)
    with torch.no_grad():
        for p in first.trainable_parameters():
            p.add_(0.2)
    second = PEMEncoder(_tiny("resnet18")[0], spec)
    second.load_module_state(first.module_state())
    with torch.no_grad():
        assert torch.equal(first.eval()(x), second.eval()(x))
    with pytest.raises(ValueError, match="missing"):
        second.load_module_state({})
