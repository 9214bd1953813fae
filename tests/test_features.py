"""Encoder sources, frozen feature extraction and the feature cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mocomri.config import Config, ModelConfig, save_config
from mocomri.errors import ConfigError
from mocomri.eval.features import PatchPooled, StagePooled, cache_key, cached, extract_features, feature_extractor, load_encoder_source
from mocomri.models.encoders import create_encoder


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.images = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "row": i}


def _save_backbone(path: Path, width: int = 4) -> None:
    backbone, _ = create_encoder("resnet18", in_channels=1, width=width)
    torch.save(backbone.state_dict(), path)


def test_load_encoder_source__run_dir_gives_config_step_and_sha(tmp_path: Path) -> None:
    save_config(Config(model=ModelConfig(name="resnet18", width=4)), tmp_path / "config.yaml")
    _save_backbone(tmp_path / "encoder.pt")
    (tmp_path / "checkpoints").mkdir()
    torch.save({"step": 42, "model": {}}, tmp_path / "checkpoints" / "last.pt")
    source = load_encoder_source(tmp_path)
    assert source.kind == "run" and source.model.width == 4 and source.step == 42
    assert source.sha1 == hashlib.sha1((tmp_path / "encoder.pt").read_bytes()).hexdigest()
    reference = torch.load(tmp_path / "encoder.pt", weights_only=True)
    backbone, feature_dim = source.build()
    rebuilt = backbone.state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in reference.items())
    with torch.inference_mode():
        assert backbone.eval()(torch.randn(2, 1, 32, 32)).flatten(1).shape == (2, feature_dim)  # F, as built


def test_load_encoder_source__bare_file_needs_the_matching_architecture(tmp_path: Path) -> None:
    _save_backbone(tmp_path / "weights.pt", width=4)
    source = load_encoder_source(tmp_path / "weights.pt", ModelConfig(name="resnet18", width=8))
    assert source.kind == "file" and source.run_dir is None
    with pytest.raises(ConfigError, match=r"weights\.pt does not fit model\.name=resnet18 width=8"):
        source.build()


def test_load_encoder_source__group_norm_run_is_rebuilt_with_group_norm(tmp_path: Path) -> None:
    model = ModelConfig(name="resnet10_3d", width=4, norm="group", norm_groups=2)
    save_config(Config(model=model), tmp_path / "config.yaml")
    torch.manual_seed(3)
    pretrained, _ = create_encoder("resnet10_3d", width=4, norm="group", norm_groups=2)
    with torch.no_grad():  # affine parameters off their initial values, so a wrong load would show
        for m in pretrained.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    torch.save(pretrained.state_dict(), tmp_path / "encoder.pt")

    source = load_encoder_source(tmp_path)
    assert (source.model.norm, source.model.norm_groups) == ("group", 2)
    for seed in (0, 1):  # the run's encoder, and the random-init baseline of its architecture
        rebuilt, _ = (source if seed == 0 else load_encoder_source("random", source.model)).build(seed=seed)
        norms = {type(m) for m in rebuilt.modules() if isinstance(m, (nn.GroupNorm, nn.modules.batchnorm._BatchNorm))}
        assert norms == {nn.GroupNorm}
    rebuilt, _ = source.build()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), pretrained.eval()(x), atol=0, rtol=0)
    # the same weights read as a BatchNorm encoder: an error that names the norm
    with pytest.raises(ConfigError, match=r"encoder\.pt does not fit model\.name=resnet10_3d width=4 in_channels=1 norm=batch"):
        load_encoder_source(tmp_path / "encoder.pt", ModelConfig(name="resnet10_3d", width=4)).build()


def test_load_encoder_source__missing_weights_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="encoder.pt"):
        load_encoder_source(tmp_path)


def test_load_encoder_source__random_is_seeded(tmp_path: Path) -> None:
    source = load_encoder_source("random", ModelConfig(name="resnet18", width=4))
    a, b, c = (source.build(seed=s)[0] for s in (1, 1, 2))
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_extract_features__matches_a_plain_forward_in_dataset_order() -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    data = _Images(10)
    features = extract_features(encoder, data, batch_size=4, device="cpu")
    with torch.no_grad():
        expected = encoder(data.images).numpy()
    assert features.shape == (10, 3) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    bf16 = extract_features(encoder, data, batch_size=4, device="cpu", bf16=True)
    np.testing.assert_allclose(bf16, expected, atol=0.05)  # bfloat16 keeps ~3 significant digits


def test_cached__computes_once_per_key(tmp_path: Path) -> None:
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.arange(6.0).reshape(2, 3)

    key = cache_key("encoder-sha", {"image_size": 16})
    first = cached(tmp_path, "moco", key, compute)
    second = cached(tmp_path, "moco", key, compute)
    np.testing.assert_array_equal(first, second)
    assert len(calls) == 1
    cached(tmp_path, "moco", cache_key("encoder-sha", {"image_size": 32}), compute)
    assert len(calls) == 2


@pytest.mark.parametrize("name, shape", [("resnet18", (3, 1, 32, 32)), ("resnet10_3d", (2, 1, 16, 16, 16))])
def test_stage_pooled__concatenates_the_mean_of_every_stage_output(name: str, shape: tuple) -> None:
    torch.manual_seed(0)
    backbone, _ = create_encoder(name, in_channels=1, width=8)
    backbone.eval()
    x = torch.randn(shape)
    expected, h = [], x
    with torch.no_grad():
        for child_name, child in backbone.named_children():  # the stem and the stages, run by hand in order
            if child_name in ("avgpool", "fc"):
                break
            h = child(h)
            if child_name.startswith("layer"):
                expected.append(h.flatten(2).mean(2))
        out = feature_extractor(backbone, "stages")(x)
        assert out.shape == (shape[0], 8 * (1 + 2 + 4 + 8))
        torch.testing.assert_close(out, torch.cat(expected, 1))
        assert feature_extractor(backbone, "pooled") is backbone
        torch.testing.assert_close(backbone(x).flatten(1), expected[-1])  # the pooled output is the last stage's mean
    assert not backbone.layer1._forward_hooks  # no hook is left behind


def test_stage_pooled__errors_name_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="no stage"):
        StagePooled(nn.Sequential(nn.Conv2d(1, 4, 3)))
    with pytest.raises(ConfigError, match="features: expected one of pooled, stages, patches"):
        feature_extractor(nn.Identity(), "layer4")


def test_patch_pooled__averages_the_backbone_over_patches_tiling_the_volume() -> None:
    """Against a NumPy loop over the expected boxes: side 9, patch 4, stride 2 -> starts 0, 2, 3, 5 (ceil(5/2)+1 = 4
    patches an axis, evenly spread, the last flush with the edge); a backbone that is each channel's max and mean."""
    class MaxMean(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x.flatten(2).amax(2), x.flatten(2).mean(2)], 1)

    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 9, 7)  # the last axis: starts 0, 2, 3 (ceil(3/2)+1 = 3)
    reader = feature_extractor(MaxMean(), "patches", patch=4)
    assert reader.starts(9) == [0, 2, 3, 5] and reader.starts(7) == [0, 2, 3] and reader.starts(4) == [0]
    a = x.numpy()
    expected = np.zeros((2, 6))
    boxes = [(i, j, k) for i in (0, 2, 3, 5) for j in (0, 2, 3, 5) for k in (0, 2, 3)]
    for i, j, k in boxes:
        patch = a[:, :, i:i + 4, j:j + 4, k:k + 4].reshape(2, 3, -1)
        expected += np.concatenate([patch.max(2), patch.mean(2)], 1) / len(boxes)
    np.testing.assert_allclose(reader(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    covered = np.zeros((9, 9, 7), bool)
    for i, j, k in boxes:
        covered[i:i + 4, j:j + 4, k:k + 4] = True
    assert covered.all()  # every voxel is read
    # A patch as large as the input is the backbone itself; an axis shorter than the patch is read whole.
    torch.testing.assert_close(feature_extractor(MaxMean(), "patches", patch=9)(x[..., :9, :9, :]), MaxMean()(x))


def test_patch_pooled__needs_a_patch_side() -> None:
    with pytest.raises(ConfigError, match="data.pretrain_patch_size"):
        feature_extractor(nn.Identity(), "patches")
    with pytest.raises(ConfigError, match="must be positive"):
        PatchPooled(nn.Identity(), patch=1)  # stride 1 // 2 = 0
