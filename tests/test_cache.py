"""Tests for mocomri.data.cache and the preprocessing it stores."""

from __future__ import annotations

import os
import threading
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from mocomri.data import cache as cache_module
from mocomri.data.cache import PreprocessCache
from mocomri.files import file_digest
from mocomri.data.preprocess import PreprocessSettings, foreground_mask, preprocess
from mocomri.data.io import load_volume
from mocomri.errors import DataError


def _phantom(shape=(24, 24, 20), seed=0) -> np.ndarray:
    """A bright ellipsoid in dark noisy air. Shape: (X, Y, Z)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid**2).sum(axis=0) < 0.5
    return (inside * rng.uniform(80, 120, shape) + rng.uniform(0, 5, shape)).astype(np.float32)


@pytest.fixture
def volume(tmp_path):
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(_phantom(), np.eye(4)), path)
    return path


@pytest.fixture
def counted_builds(monkeypatch):
    """Counts how often the cache decodes a source."""
    calls = []
    real = cache_module.load_scan

    def counting(path, **kwargs):
        calls.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(cache_module, "load_scan", counting)
    return calls


def test_preprocess__foreground_is_z_scored_and_clipped(volume):
    settings = PreprocessSettings(crop_foreground=False, clip_percentiles=(1.0, 99.0))
    scan = load_volume(volume)
    result = preprocess(scan, settings)
    mask = foreground_mask(scan.array)
    inside = result.array[0][mask]
    assert abs(inside.mean()) < 1e-3 and abs(inside.std() - 1) < 1e-3
    lo, hi = np.percentile(scan.array[0][mask], [1, 99])
    # Independent truth: the largest output is the clipped top percentile, z-scored.
    clipped = np.clip(scan.array[0][mask], lo, hi)
    assert result.array.max() == pytest.approx((hi - clipped.mean()) / clipped.std(), rel=1e-4)


def test_preprocess__crop_keeps_the_whole_foreground_plus_margin(volume):
    scan = load_volume(volume)
    mask = foreground_mask(scan.array)
    extent = [int(np.ptp(np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0])) + 1 for ax in range(3)]
    result = preprocess(scan, PreprocessSettings(crop_foreground=True, crop_margin=2))
    assert list(result.array.shape[1:]) == [min(e + 4, n) for e, n in zip(extent, scan.array.shape[1:])]
    assert len(result.foreground[2]) == result.array.shape[3]


def test_preprocess__resamples_to_the_target_spacing(tmp_path):
    path = tmp_path / "fine.nii.gz"
    nib.save(nib.Nifti1Image(_phantom((24, 24, 20)), np.diag([1.0, 1.0, 1.0, 1.0])), path)
    result = preprocess(load_volume(path), PreprocessSettings(spacing=(2.0, 2.0, 2.0), crop_foreground=False))
    assert result.spacing == (2.0, 2.0, 2.0)
    assert result.array.shape[1:] == (12, 12, 10)


def test_cache_get__memmaps_float16_and_reuses_the_entry(tmp_path, volume, counted_builds):
    cache = PreprocessCache(tmp_path / "cache", PreprocessSettings())
    first = cache.get(volume)
    second = PreprocessCache(tmp_path / "cache", PreprocessSettings()).get(volume)  # a later run
    assert counted_builds == [str(volume)]  # decoded once
    assert isinstance(second.array, np.memmap) and second.array.dtype == np.float16
    assert not second.array.flags.writeable
    assert np.array_equal(first.array, second.array)
    expected = preprocess(load_volume(volume), PreprocessSettings()).array
    assert np.allclose(second.array, expected, atol=1e-2)


def test_cache_get__new_settings_rebuild(tmp_path, volume, counted_builds):
    PreprocessCache(tmp_path / "cache", PreprocessSettings()).get(volume)
    other = PreprocessCache(tmp_path / "cache", replace(PreprocessSettings(), clip_percentiles=(5.0, 95.0)))
    entry = other.get(volume)
    assert len(counted_builds) == 2
    assert entry.array_path != PreprocessCache(tmp_path / "cache", PreprocessSettings()).get(volume).array_path


def test_cache_get__changed_source_content_rebuilds(tmp_path, volume, counted_builds):
    cache = PreprocessCache(tmp_path / "cache", PreprocessSettings())
    before = np.array(cache.get(volume).array)
    nib.save(nib.Nifti1Image(_phantom(seed=1), np.eye(4)), volume)
    os.utime(volume, ns=(1, 1))  # a different mtime, as an edit would give
    after = np.array(cache.get(volume).array)
    assert len(counted_builds) == 2
    assert not np.array_equal(before, after)


def test_cache_source_sha1__matches_the_file_hash(tmp_path, volume):
    import hashlib

    assert PreprocessCache(tmp_path / "c", PreprocessSettings()).source_sha1(volume) == hashlib.sha1(volume.read_bytes()).hexdigest()
    assert file_digest(volume) == hashlib.sha1(volume.read_bytes()).hexdigest()


def test_cache_get__concurrent_builders_leave_one_valid_entry(tmp_path, volume):
    cache_dir = tmp_path / "cache"
    results, errors = [], []

    def build():
        try:
            results.append(np.array(PreprocessCache(cache_dir, PreprocessSettings()).get(volume).array))
        except Exception as e:  # noqa: BLE001 - surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(r, results[0]) for r in results)
    assert not list(cache_dir.rglob("*.tmp"))  # every temporary file was renamed or removed
    assert len(list(cache_dir.rglob("*.npy"))) == 1


def test_cache_get__bad_source_raises_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    cache = PreprocessCache(tmp_path / "cache", PreprocessSettings())
    with pytest.raises(DataError, match=r"bad\.nii\.gz"):
        cache.get(bad)
    assert not list((tmp_path / "cache").rglob("*.npy"))
