"""Near-duplicates by perceptual hash, pseudo-subjects, and re-splitting a leaking set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mocomri.data.manifest import build_manifest
from mocomri.data.manifest.near_duplicates import NearDuplicates, hamming_pairs, phash_2d, phash_3d


def _brain(seed: int, side: int = 96) -> np.ndarray:
    """A smooth random 'anatomy': an ellipse with blobs inside. Shape: (side, side) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side] / side - 0.5
    image = ((x / 0.4) ** 2 + (y / 0.45) ** 2 < 1).astype(float) * 0.5
    for _ in range(6):
        cy, cx, r = rng.uniform(-0.3, 0.3, 2).tolist() + [rng.uniform(0.04, 0.12)]
        image += rng.uniform(0.2, 0.5) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r**2))
    return np.clip(image / image.max() * 255, 0, 255).astype(np.uint8)


def _save(pixels: np.ndarray, path: Path, quality: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **({"quality": quality} if quality else {}))
    return path


def _distance(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def test_hamming_pairs__match_a_brute_force_count():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = rng.integers(0, 64, (40, 3))
    hashes = [int(h) for h in base] + [int(base[i]) ^ (1 << int(f[0])) ^ (1 << int(f[1])) for i, f in enumerate(flips[:10])]
    pairs = hamming_pairs(hashes, threshold=4, chunk=7)
    expected = [(i, j, _distance(hashes[i], hashes[j])) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                if _distance(hashes[i], hashes[j]) <= 4]
    assert sorted(map(tuple, pairs.tolist())) == sorted(expected)
    assert len(expected) >= 10  # each flipped copy is within 2 bits of its original


def test_near_duplicates__groups_are_connected_components():
    hashes = [0b0, 0b11, 0b1111, 0xFF00, 0xFF01, 0xFF << 40]
    found = NearDuplicates.from_hashes(hashes, threshold=2)  # 0-1 (2 bits), 1-2 (2 bits): a chain
    assert [sorted(g) for g in found.groups()] == [[0, 1, 2], [3, 4]]
    assert found.size_histogram()["1"] == 1 and found.size_histogram()["3"] == 1


def test_phash_2d__reencoded_and_rewindowed_copies_are_near_different_anatomy_is_far(tmp_path):
    original = _brain(0)
    a = phash_2d(_save(original, tmp_path / "a.png"))
    jpeg = phash_2d(_save(original, tmp_path / "b.jpg", quality=60))
    windowed = phash_2d(_save(np.clip(original.astype(float) * 1.3 - 20, 0, 255).astype(np.uint8), tmp_path / "c.png"))
    rgb = tmp_path / "d.png"
    Image.fromarray(original).convert("RGB").save(rgb)
    other = phash_2d(_save(_brain(1), tmp_path / "e.png"))
    assert _distance(a, jpeg) <= 2 and _distance(a, windowed) <= 6 and _distance(a, phash_2d(rgb)) == 0
    assert _distance(a, other) > 10


def _head(seed: int, side: int = 40) -> np.ndarray:
    """A smooth random 3D 'anatomy': an ellipsoid with blobs inside. Shape: (1, side, side, side)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:side, :side, :side] / side - 0.5
    volume = ((x / 0.4) ** 2 + (y / 0.45) ** 2 + (z / 0.35) ** 2 < 1).astype(float) * 0.5
    for _ in range(8):
        c = rng.uniform(-0.25, 0.25, 3)
        r = rng.uniform(0.05, 0.12)
        volume += rng.uniform(0.2, 0.5) * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * r**2))
    return volume[None].astype(np.float32)


def test_phash_3d__rescaled_noisy_copy_is_near_another_volume_is_far():
    rng = np.random.default_rng(0)
    volume = _head(0)
    copy = volume * 1.7 + 3 + rng.normal(0, 0.01, volume.shape)
    assert _distance(phash_3d(volume), phash_3d(volume * 1.7 + 3)) == 0  # z-scored first
    assert _distance(phash_3d(volume), phash_3d(copy)) <= 2
    assert min(_distance(phash_3d(volume), phash_3d(_head(s))) for s in range(1, 6)) > 10


def _leaky_tree(root: Path) -> Path:
    """Training/Testing class folders; two test images are re-saved copies of training images."""
    for cls, offset in (("glioma", 0), ("notumor", 100)):
        for i in range(8):
            _save(_brain(offset + i), root / "Training" / cls / f"tr_{i}.png")
        for i in range(3):
            _save(_brain(offset + 50 + i), root / "Testing" / cls / f"te_{i}.png")
        _save(_brain(offset + 2), root / "Testing" / cls / "te_copy.jpg", quality=70)
    return root


def test_build_manifest__no_patient_ids_gives_pseudo_subjects_and_a_clean_resplit(tmp_path):
    result = build_manifest(_leaky_tree(tmp_path / "data"), near_threshold=6, decode=False)
    near = result.near
    assert near.pseudo_subjects and near.leaked_folders == 2 and near.resplit
    rows = {r.path: r for r in result.manifest.rows}
    for cls in ("glioma", "notumor"):
        copy, original = rows[f"Testing/{cls}/te_copy.jpg"], rows[f"Training/{cls}/tr_2.png"]
        assert copy.subject == original.subject and copy.split == original.split  # one pseudo-subject
    assert not near.pairs_across_splits
    assert {r.split for r in rows.values()} >= {"train", "test"}
    assert "split folders leak" in str(result) and "pseudo-subjects" in str(result)


def test_build_manifest__keep_split_folders_keeps_them_and_warns(tmp_path):
    result = build_manifest(_leaky_tree(tmp_path / "data"), near_threshold=6, decode=False, keep_split_folders=True)
    assert not result.near.resplit
    assert sum(result.near.pairs_across_splits.values()) == 2
    assert all(r.split == ("train" if r.path.startswith("Training") else "test") for r in result.manifest.rows)
    assert "kept as given" in str(result)


def test_build_manifest__patient_ids_are_kept(tmp_path):
    from mocomri.data.synthetic import make_cohort

    root = make_cohort(tmp_path / "bids", subjects=4, modalities=["T1w"], shape=(24, 24, 16), seed=0)
    result = build_manifest(root, decode=False)
    assert not result.near.pseudo_subjects
    assert {r.subject for r in result.manifest.rows} == {f"{i:03d}" for i in range(1, 5)}


def test_choose_threshold__the_largest_below_the_chain_that_swallows_the_set():
    from mocomri.data.manifest.near_duplicates import choose_threshold, largest_group_limit

    # A chain of 30 hashes, each 2 bits from the next (a run of similar slices across patients),
    # 15 copies 4 bits from their originals, and 200 far-apart originals: 245 files, limit 13.
    rng = np.random.default_rng(1)
    chain = [0]
    for step in range(29):
        chain.append(chain[-1] ^ (0b11 << (2 * step)))
    singles = [int(h) for h in rng.integers(1 << 40, 1 << 62, 200, dtype=np.int64)]
    copies = [h ^ 0b1111 for h in singles[:15]]
    hashes = chain + singles + copies
    assert largest_group_limit(len(hashes)) == 13
    choice = choose_threshold(hashes, highest=6)
    # at 2 the chain is one group of 30 > 13, at 0 nothing is grouped: 0; copies (4 bits) wait for 4
    assert choice.threshold == 0 and choice.largest[2] == 30 and choice.largest[6] >= 30
    assert f"at 2 bits one group would hold 30 of {len(hashes)} files" in choice.reason()
    # without the chain, the copies group at 4 and nothing chains up to 6
    assert choose_threshold(singles + copies, highest=6).threshold == 4
