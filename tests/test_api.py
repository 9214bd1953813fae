"""The Python API: ``mocomri.load_encoder`` and the names a notebook imports from ``mocomri``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mocomri
from mocomri.config import Config, DataConfig, ModelConfig, save_config
from mocomri.errors import ConfigError
from mocomri.models import create_encoder


def _run(tmp_path: Path, data: DataConfig, in_channels: int = 1) -> Path:
    """A run directory: config.yaml and a width-4 ResNet-18 encoder.pt."""
    run = tmp_path / "run"
    run.mkdir()
    model = ModelConfig(name="resnet18", width=4, in_channels=in_channels)
    save_config(Config(model=model, data=data), run / "config.yaml")
    torch.manual_seed(3)
    torch.save(create_encoder("resnet18", in_channels=in_channels, width=4)[0].state_dict(), run / "encoder.pt")
    return run


def _png(path: Path, side: int = 64) -> np.ndarray:
    """A square 8-bit image: a bright left half with a gradient, a darker right half."""
    y, x = np.mgrid[0:side, 0:side]
    image = np.where(x < side // 2, 200, 60) + (y * 40 // side)
    image = image.astype(np.uint8)
    Image.fromarray(image).save(path)
    return image.astype(np.float64)


def test_api__names_resolve_from_the_package() -> None:
    for name in ("build_manifest", "read_manifest", "write_manifest", "load_config", "pretrain", "run_probe",
                 "load_encoder"):
        assert callable(getattr(mocomri, name)), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mocomri.nope  # noqa: B018


def test_load_encoder__weights_are_the_runs_and_the_model_is_in_eval_mode(tmp_path: Path) -> None:
    run = _run(tmp_path, DataConfig(image_size=32, cache_dir=str(tmp_path / "cache")))
    encoder = mocomri.load_encoder(run)
    saved = torch.load(run / "encoder.pt", weights_only=True)
    for key, value in encoder.model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)
    assert not encoder.model.training
    assert encoder.feature_dim == 32  # width 4 -> 4 * 8 channels in layer4
    assert encoder.config.data.image_size == 32


def test_preprocess__a_png_is_resized_and_z_scored_like_a_numpy_reference(tmp_path: Path) -> None:
    image = _png(tmp_path / "slice.png")
    encoder = mocomri.load_encoder(_run(tmp_path, DataConfig(image_size=32, cache_dir=str(tmp_path / "cache"))))
    x = encoder.preprocess(tmp_path / "slice.png")
    assert x.shape == (1, 1, 32, 32)
    # reference: 2x2 block means (a 64 -> 32 resize), z-scored over the image
    blocks = image.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    reference = (blocks - blocks.mean()) / blocks.std()
    got = x[0, 0].double().numpy()
    assert abs(got.mean()) < 1e-3 and abs(got.std() - 1) < 0.02
    # the layout survives (no transposition or flip): correlation with the reference, not equality,
    # since loading normalises intensities by percentiles first
    assert np.corrcoef(got.ravel(), reference.ravel())[0, 1] > 0.98


def test_embed__one_row_of_features_per_input(tmp_path: Path) -> None:
    _png(tmp_path / "slice.png")
    encoder = mocomri.load_encoder(_run(tmp_path, DataConfig(image_size=32, cache_dir=str(tmp_path / "cache"))))
    features = encoder.embed(tmp_path / "slice.png", device="cpu")
    with torch.no_grad():
        direct = encoder.model(encoder.preprocess(tmp_path / "slice.png")).numpy()
    assert features.shape == (1, encoder.feature_dim)
    np.testing.assert_allclose(features, direct, rtol=1e-4, atol=1e-5)


def test_preprocess__stacked_contrasts_are_a_clear_error(tmp_path: Path) -> None:
    run = _run(tmp_path, DataConfig(image_size=32, channels=["T1w", "T2w"], cache_dir=str(tmp_path / "cache")), 2)
    encoder = mocomri.load_encoder(run)
    _png(tmp_path / "slice.png")
    with pytest.raises(ConfigError, match="reads 2 contrasts stacked"):
        encoder.preprocess(tmp_path / "slice.png")


def test_load_encoder__missing_weights_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        mocomri.load_encoder(tmp_path / "nowhere")
