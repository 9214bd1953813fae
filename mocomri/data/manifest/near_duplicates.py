"""Near-duplicates: the same picture re-encoded, re-windowed or resized, found by perceptual hash.

Byte-identical copies are caught by the content hash (:mod:`.audit`); a copy saved again as JPEG,
rescaled or contrast-stretched is not, and across a train/test split it inflates every score as
much. Each scan gets a 64-bit perceptual hash (pHash: the signs of the lowest frequencies of a
discrete cosine transform, relative to their median), and two scans whose hashes differ in at
most ``threshold`` of the 64 bits are near-duplicates.

- 2D images: ``imagehash.phash`` (32 x 32 grey thumbnail, 8 x 8 lowest DCT frequencies).
- 3D volumes: the same idea in 3D, written here because imagehash is 2D only: the volume
  (reoriented to RAS, z-scored) resized to 32³, its 3D DCT, and the signs of the 4 x 4 x 4 lowest
  frequencies against their median.

Groups are the connected components of the graph whose edges join scans within the threshold
(``scipy.sparse.csgraph``). When a set has no patient ids they serve as **pseudo-subjects**: a
patient's neighbouring slices and re-saved copies then fall into one group, and splits made by
group keep them on one side. The threshold's validation (pairs shown side by side, and how often
scans of *different* known subjects fall under it) is in ``BENCHMARKS.md``.

Connected components percolate: in a set whose slices are registered to one template (OASIS
exports), the same level of two patients is as close as two neighbouring slices of one, and at a
threshold that suits another set the pairs chain into one group holding nearly every file. So no
single threshold serves every set: :func:`choose_threshold` takes, per set, the largest threshold
up to the default whose largest group stays within :func:`largest_group_limit` files, the point
below which groups may merge a few patients but never swallow the set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
import scipy.fft
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mocomri.errors import DataError

HASH_BITS = 64
# Bits of 64, chosen by looking (BENCHMARKS.md, tools/near_duplicate_threshold.py): in 2D, pairs
# within 6 are the same picture, a neighbouring slice of the same patient, or, rarely, a similar
# slice of another patient; in 3D the 64-bit hash of a whole brain separates people less well,
# and re-saved copies of one scan are within 2 (the measured rates are in BENCHMARKS.md).
DEFAULT_THRESHOLD = 6
DEFAULT_THRESHOLD_3D = 2
# A group may hold at most this share of the files (and always MIN_GROUP_LIMIT files): a pseudo-
# subject bigger than that is patients chained together, and it would break the split's shares
# and same-subject masking. 5 % keeps the brain-tumour set's groups at 6 bits (largest 3.9 %)
# and stops the chain that holds 97 % of an OASIS slice set at 6 bits (and 62 % at 4).
MAX_GROUP_SHARE = 0.05
MIN_GROUP_LIMIT = 10


class PercolationError(DataError):
    """Near-duplicate groups chained into one group holding a large share of the set."""


def phash_2d(path: str | Path) -> int:
    """The 64-bit pHash of a 2D image file (any colour mode, converted to grey first)."""
    try:
        with Image.open(path) as image:
            return phash_image(image)
    except OSError as e:
        raise DataError(f"{path}: cannot read the image for its perceptual hash ({e})") from e


def phash_image(image) -> int:
    """The 64-bit pHash of a PIL image, or of a 2D array (scaled to 0-255 grey over its range)."""
    if isinstance(image, np.ndarray):
        lo, hi = float(image.min()), float(image.max())
        image = Image.fromarray(np.uint8(np.round((image - lo) / max(hi - lo, 1e-12) * 255)))
    return _pack(imagehash.phash(image.convert("L")).hash.ravel())  # (8, 8) bool


def phash_3d(volume: np.ndarray) -> int:
    """The 64-bit 3D pHash of a volume.

    Args:
        volume: the scan, channel first, RAS. Shape: (C, X, Y, Z); channels are averaged.
    """
    # local: only 3D hashes need torch, whose import is most of a manifest build's start-up
    # (a 2D set, an audit and a read_manifest never load it)
    import torch

    grey = torch.as_tensor(np.asarray(volume, dtype=np.float32)).mean(0)
    grey = ((grey - grey.mean()) / grey.std().clamp_min(1e-6))[None, None]  # (1, 1, X, Y, Z); a rescaled copy hashes alike
    small = torch.nn.functional.interpolate(grey, size=(32, 32, 32), mode="trilinear", align_corners=False, antialias=False)[0, 0]
    low = scipy.fft.dctn(small.numpy().astype(np.float64), norm="ortho")[:4, :4, :4].ravel()
    return _pack(low > np.median(low))


def _pack(bits: np.ndarray) -> int:
    if bits.size != HASH_BITS:
        raise ValueError(f"expected {HASH_BITS} bits, got {bits.size}")
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def hamming_pairs(hashes: list[int] | np.ndarray, threshold: int, chunk: int = 2048) -> np.ndarray:
    """Every pair ``i < j`` whose hashes differ in at most ``threshold`` bits.

    Returns:
        ``(P, 3)`` int64 rows ``(i, j, distance)``, sorted by ``i`` then ``j``.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    out = []
    for start in range(0, len(h), chunk):
        block = h[start : start + chunk]
        distance = np.bitwise_count(block[:, None] ^ h[None, :]).astype(np.int16)  # (chunk, N)
        i, j = np.nonzero(distance <= threshold)
        i = i + start
        keep = i < j
        out.append(np.stack([i[keep], j[keep], distance[i[keep] - start, j[keep]]], 1))
    return np.concatenate(out).astype(np.int64) if out else np.zeros((0, 3), dtype=np.int64)


@dataclass
class NearDuplicates:
    """Near-duplicate groups of a list of scans.

    Attributes:
        pairs: ``(i, j, distance)`` of every pair within its kind's threshold.
        group: the group (connected component) of every scan; singletons included.
    """

    pairs: np.ndarray
    group: np.ndarray

    @classmethod
    def from_hashes(cls, hashes: list[int], threshold: int = DEFAULT_THRESHOLD,
                    kinds: list[str] | None = None, thresholds: dict[str, int] | None = None) -> NearDuplicates:
        """Pairs and groups of ``hashes``.

        Args:
            hashes: one 64-bit hash per scan.
            threshold: the largest distance counted as near.
            kinds: the kind of each hash (e.g. ``"2d"``, ``"3d"``); hashes of different kinds are
                never compared. None: all one kind.
            thresholds: a threshold per kind, overriding ``threshold``.
        """
        kinds = kinds or ["all"] * len(hashes)
        thresholds = thresholds or {}
        pairs = []
        for kind in sorted(set(kinds)):
            t = thresholds.get(kind, threshold)
            if not 0 <= t < HASH_BITS:
                raise ValueError(f"threshold={t} must be in [0, {HASH_BITS})")
            index = np.array([i for i, k in enumerate(kinds) if k == kind])
            found = hamming_pairs([hashes[i] for i in index], t)
            pairs.append(np.stack([index[found[:, 0]], index[found[:, 1]], found[:, 2]], 1) if len(found) else found)
        pairs = np.concatenate(pairs) if pairs else np.zeros((0, 3), dtype=np.int64)
        return cls.from_pairs(pairs, len(hashes))

    @classmethod
    def from_pairs(cls, pairs: np.ndarray, n: int) -> NearDuplicates:
        """The groups (connected components) of ``n`` scans joined by ``pairs`` rows ``(i, j, distance)``."""
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        _, group = connected_components(graph, directed=False)
        return cls(pairs, group)

    def largest(self) -> int:
        """The number of scans in the largest group (1 when nothing is near anything)."""
        return int(np.bincount(self.group).max()) if len(self.group) else 0

    def groups(self) -> list[list[int]]:
        """The groups of two or more scans, largest first."""
        members: dict[int, list[int]] = {}
        for i, g in enumerate(self.group.tolist()):
            members.setdefault(g, []).append(i)
        return sorted((m for m in members.values() if len(m) > 1), key=len, reverse=True)

    def size_histogram(self) -> dict[str, int]:
        """How many groups of each size: ``{"1": singletons, "2": pairs, ..., "11-50": ...}``."""
        sizes = np.bincount(np.bincount(self.group))
        bins = {"1": 0, "2": 0, "3": 0, "4-5": 0, "6-10": 0, "11-50": 0, ">50": 0}
        for size, count in enumerate(sizes.tolist()):
            if not count or size == 0:
                continue
            key = ("1" if size == 1 else "2" if size == 2 else "3" if size == 3 else "4-5" if size <= 5
                   else "6-10" if size <= 10 else "11-50" if size <= 50 else ">50")
            bins[key] += count
        return bins


def largest_group_limit(n_files: int) -> int:
    """The most files one near-duplicate group of a set of ``n_files`` may hold before it counts as chained."""
    return max(MIN_GROUP_LIMIT, int(np.ceil(MAX_GROUP_SHARE * n_files)))


@dataclass
class ThresholdChoice:
    """A near-duplicate threshold chosen from the data, and why.

    Attributes:
        threshold: the threshold chosen, in bits of 64.
        largest: the largest group's size at each threshold tried.
        limit: the most files a group may hold (:func:`largest_group_limit`).
        n_files: the files hashed.
    """

    threshold: int
    largest: dict[int, int]
    limit: int
    n_files: int

    def reason(self) -> str:
        above = [t for t in sorted(self.largest) if t > self.threshold and self.largest[t] > self.limit]
        why = f"its largest group holds {self.largest[self.threshold]} files"
        if above:
            t = above[0]
            why += (f"; at {t} bits one group would hold {self.largest[t]} of {self.n_files} files "
                    f"({self.largest[t] / self.n_files:.0%}): neighbouring images chain across patients")
        return (f"the largest threshold up to {max(self.largest)} whose largest group stays within {self.limit} files "
                f"({MAX_GROUP_SHARE:.0%} of {self.n_files}); {why}")


def choose_threshold(hashes: list[int], kinds: list[str] | None = None, highest: int = DEFAULT_THRESHOLD) -> ThresholdChoice:
    """The largest threshold in ``0..highest`` whose groups do not percolate.

    Every threshold from ``highest`` down is tried on the pairs found once at ``highest``; the
    first whose largest group holds at most :func:`largest_group_limit` files is chosen.

    Args:
        hashes: one 64-bit hash per scan.
        kinds: the kind of each hash (never compared across kinds); None: all one kind.
        highest: the largest threshold considered.

    Raises:
        PercolationError: even identical hashes form a group above the limit (e.g. many blank images).
    """
    found = NearDuplicates.from_hashes(hashes, highest, kinds)
    limit = largest_group_limit(len(hashes))
    largest = {}
    for t in range(highest, -1, -1):
        largest[t] = NearDuplicates.from_pairs(found.pairs[found.pairs[:, 2] <= t], len(hashes)).largest()
        if largest[t] <= limit:
            # Reported as the largest distance it admits: pHashes with 32 bits set differ in an
            # even number of bits, so 5 groups as 4 does, and "4" is what a user should pass.
            within = found.pairs[found.pairs[:, 2] <= t, 2]
            t_used = int(within.max()) if len(within) else 0
            tried = {k: v for k, v in largest.items() if k > t} | {t_used: largest[t]}
            return ThresholdChoice(t_used, dict(sorted(tried.items())), limit, len(hashes))
    raise PercolationError(
        f"{largest[0]} of {len(hashes)} files share one perceptual hash (above the {limit} a subject may hold): "
        "blank or constant images? Remove them, or give patient ids (--labels FILE --id-column COLUMN)"
    )
