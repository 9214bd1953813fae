"""Datasets over a manifest: pairs of augmented views for pretraining, fixed inputs for evaluation.

Items by ``DataConfig.kind``:

- ``slices2d``: 2D slices along ``slice_axis`` of RAS volumes, skipping slices whose foreground
  covers less than ``min_foreground`` of their area;
- ``patches3d``: one 3D view per volume (random resized crop to ``patch_size``);
- ``images2d``: whole 2D images;
- ``auto``: ``images2d`` for 2D files and ``slices2d`` for volumes, row by row.

Every scan is preprocessed once into the memory-mapped cache (:mod:`mocomri.data.cache`) when
the dataset is built, so ``__getitem__`` only reads a memmap and augments. The memmaps are
opened lazily in each process, so a dataset pickles cheaply to DataLoader workers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mocomri.data.cache import PreprocessCache
from mocomri.data.io import file_kind
from mocomri.data.manifest import Manifest
from mocomri.data.preprocess import PreprocessSettings
from mocomri.data.settings import AugmentConfig, DataConfig
from mocomri.data.transforms import build_eval_transform, build_view_transform, seed_for_worker
from mocomri.errors import DataError


@dataclass
class CachedScan:
    """A manifest row whose preprocessed array sits in the cache.

    Attributes:
        row: index into ``manifest.rows``.
        kind: ``slices2d``, ``patches3d`` or ``images2d``.
        array_path: the cached ``.npy`` (opened with ``mmap_mode="r"``).
        slices: for ``slices2d``, the indices of the slices kept; otherwise empty.
    """

    row: int
    kind: str
    array_path: str
    slices: list[int]


def _row_kind(path: Path, kind: str) -> str:
    file = file_kind(path)
    if kind == "auto":
        return "images2d" if file == "image2d" else "slices2d"
    if (kind == "images2d") != (file == "image2d"):
        expected = "a 2D image" if kind == "images2d" else "a NIfTI volume"
        raise DataError(f"{path}: data.kind={kind} needs {expected}")
    return kind


def lr_axis(kind: str, slice_axis: int) -> int | None:
    """The spatial axis of an item that runs left-right, or None if the item has none.

    RAS volumes have it on axis 0, so do their axial and coronal slices; sagittal slices have
    none. 2D images are (H, W) as displayed, with left-right along W.
    """
    if kind == "images2d":
        return 1
    if kind == "slices2d":
        return None if slice_axis == 0 else 0
    return 0


def cache_scans(
    manifest: Manifest,
    data_cfg: DataConfig,
    rows: list[int],
    progress: bool | None = None,
) -> tuple[list[CachedScan], list[tuple[int, str]]]:
    """Fills the cache for the given rows and lists what each contributes.

    Args:
        manifest: the manifest.
        data_cfg: preprocessing settings, kind, slice axis and ``skip_bad``.
        rows: indices into ``manifest.rows``.
        progress: tqdm progress bar; None shows it on a terminal only.

    Returns:
        ``(scans, skipped)``; ``skipped`` holds ``(row, reason)`` for every bad row skipped.

    Raises:
        DataError: a row cannot be read and ``data_cfg.skip_bad`` is False.
    """
    from tqdm import tqdm

    cache = PreprocessCache(data_cfg.cache_dir, PreprocessSettings.from_config(data_cfg))
    scans, skipped = [], []
    for index in tqdm(rows, desc="cache", unit="scan", disable=None if progress is None else not progress):
        row = manifest.rows[index]
        path = manifest.abspath(row)
        try:
            kind = _row_kind(path, data_cfg.kind)
            if not path.is_file():
                raise DataError(f"{path}: file does not exist (manifest row path {row.path!r})")
            entry = cache.get(path)
        except DataError as e:
            if not data_cfg.skip_bad:
                raise
            skipped.append((index, str(e)))
            warnings.warn(f"skipped bad scan: {e}", stacklevel=2)
            continue
        slices: list[int] = []
        if kind == "slices2d":
            fractions = entry.foreground.get(data_cfg.slice_axis, [])
            slices = [i for i, f in enumerate(fractions) if f >= data_cfg.min_foreground]
        scans.append(CachedScan(row=index, kind=kind, array_path=str(entry.array_path), slices=slices))
    return scans, skipped


class _CachedDataset(Dataset):
    """Shared machinery: the item list and per-process memmaps."""

    def __init__(self, manifest: Manifest, data_cfg: DataConfig, splits: list[str] | None, progress: bool | None):
        wanted = None if splits is None else set(splits)
        rows = [i for i, r in enumerate(manifest.rows) if wanted is None or r.split in wanted]
        self.scans, self.skipped = cache_scans(manifest, data_cfg, rows, progress)
        self.slice_axis = data_cfg.slice_axis
        self.subjects = manifest.subjects()  # subject id = index in this sorted list
        self.modalities = manifest.modalities()  # modality id = index in this sorted list
        subject_id = {s: i for i, s in enumerate(self.subjects)}
        modality_id = {m: i for i, m in enumerate(self.modalities)}
        self._subject = {s.row: subject_id[manifest.rows[s.row].subject] for s in self.scans}
        self._modality = {s.row: modality_id[manifest.rows[s.row].modality] for s in self.scans}
        # items: (index into self.scans, slice index or -1 for whole images/volumes)
        self.items: list[tuple[int, int]] = []
        for k, scan in enumerate(self.scans):
            if scan.kind == "slices2d":
                self.items += [(k, s) for s in scan.slices]
            else:
                self.items.append((k, -1))
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = {}  # memmaps are reopened in each worker, never pickled
        return state

    @property
    def item_rows(self) -> list[int]:
        """The manifest row of every item (slices of one scan share it)."""
        return [self.scans[k].row for k, _ in self.items]

    def read(self, index: int) -> tuple[CachedScan, torch.Tensor]:
        """The item's scan and its preprocessed, unaugmented array.

        Shape: (C, H, W) for slices and images, (C, X, Y, Z) for volumes.
        """
        k, slice_index = self.items[index]
        scan = self.scans[k]
        if k not in self._arrays:
            self._arrays[k] = np.load(scan.array_path, mmap_mode="r")
        array = self._arrays[k]
        if slice_index >= 0:
            array = np.take(array, slice_index, axis=1 + self.slice_axis)
        return scan, torch.from_numpy(np.asarray(array, dtype=np.float32))


class ViewPairDataset(_CachedDataset):
    """Items: two independently augmented views of one slice, image or volume.

    Item: ``{"view1": (C, H, W) or (C, D, H, W) float32, "view2": same, "subject": int64,
    "modality": int64}``; ``subject`` and ``modality`` index ``self.subjects`` and
    ``self.modalities``.
    """

    def __init__(
        self,
        manifest: Manifest,
        data_cfg: DataConfig,
        aug_cfg: AugmentConfig,
        splits: list[str] | None = None,
        progress: bool | None = None,
    ):
        super().__init__(manifest, data_cfg, splits, progress)
        self.base_seed = data_cfg.seed
        self._seeded_with: int | None = None
        self.transforms: dict[tuple[str, str], Callable] = {}  # (modality, kind) -> view transform
        for scan in self.scans:
            modality = manifest.rows[scan.row].modality
            key = (modality, scan.kind)
            if key not in self.transforms:
                dims = 3 if scan.kind == "patches3d" else 2
                size = data_cfg.patch_size if dims == 3 else data_cfg.image_size
                self.transforms[key] = build_view_transform(aug_cfg, modality, dims, size, lr_axis(scan.kind, self.slice_axis))
        self._transform_of = [(manifest.rows[s.row].modality, s.kind) for s in self.scans]

    def _reseed(self) -> None:
        seed = seed_for_worker(self.base_seed)
        if seed != self._seeded_with:
            for i, transform in enumerate(self.transforms.values()):
                transform.set_random_state(seed=(seed + 7919 * i) % (2**32))
            self._seeded_with = seed

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """One item; ``index`` may be ``(index, item_seed)`` to make its views a pure function of both.

        The pretraining sampler passes item seeds so that a resumed run redraws exactly the views
        of an uninterrupted one, whichever worker serves the item.
        """
        if isinstance(index, (tuple, list)):
            index, item_seed = index
            transform = self.transforms[self._transform_of[self.items[index][0]]]
            transform.set_random_state(seed=int(item_seed) % (2**32))
            self._seeded_with = None  # the worker stream must be re-established for plain indices
        else:
            self._reseed()
            transform = self.transforms[self._transform_of[self.items[index][0]]]
        scan, image = self.read(index)
        return {
            "view1": transform(image),  # two calls, two independent draws
            "view2": transform(image),
            "subject": torch.tensor(self._subject[scan.row], dtype=torch.int64),
            "modality": torch.tensor(self._modality[scan.row], dtype=torch.int64),
        }


class EvalDataset(_CachedDataset):
    """Items: one deterministic input per slice, image or volume, for features and probes.

    Item: ``{"image": (C, H, W) or (C, D, H, W) float32, "row": int64}`` where ``row`` indexes
    ``manifest.rows``; ``item_rows`` lists it for every item, to aggregate slices per scan.
    """

    def __init__(self, manifest: Manifest, data_cfg: DataConfig, splits: list[str] | None, progress: bool | None = None):
        super().__init__(manifest, data_cfg, splits, progress)
        self._transform2d = build_eval_transform(2, data_cfg.image_size)
        self._transform3d = build_eval_transform(3, data_cfg.patch_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        scan, image = self.read(index)
        transform = self._transform3d if scan.kind == "patches3d" else self._transform2d
        return {"image": transform(image), "row": torch.tensor(scan.row, dtype=torch.int64)}


def build_pretrain_dataset(
    manifest: Manifest,
    data_cfg: DataConfig,
    aug_cfg: AugmentConfig,
    splits: list[str] | None = None,
    progress: bool | None = None,
) -> ViewPairDataset:
    """The pretraining dataset: pairs of views over the rows of ``splits``.

    Args:
        manifest: the manifest.
        data_cfg: the data config (kind, sizes, cache, ``skip_bad``).
        aug_cfg: the augmentation config.
        splits: the splits to draw from; None uses ``data_cfg.pretrain_splits``.
        progress: tqdm bar while filling the cache; None shows it on a terminal only.

    Raises:
        DataError: a scan cannot be read (unless ``skip_bad``), or no item is left.
    """
    splits = data_cfg.pretrain_splits if splits is None else splits
    dataset = ViewPairDataset(manifest, data_cfg, aug_cfg, splits, progress)
    if len(dataset) == 0:
        raise DataError(f"{manifest.root}: no pretraining items in splits {splits} "
                        f"({len(dataset.skipped)} scans skipped as bad)")
    return dataset


def build_eval_dataset(
    manifest: Manifest,
    data_cfg: DataConfig,
    splits: list[str],
    progress: bool | None = None,
) -> EvalDataset:
    """The evaluation dataset: deterministic inputs over the rows of ``splits``.

    Slices of volumes (``slices2d``) are the same foreground slices the pretraining uses, each
    resized whole to ``image_size``; ``patches3d`` volumes are resized whole to ``patch_size``.

    Raises:
        DataError: a scan cannot be read (unless ``data_cfg.skip_bad``).
    """
    return EvalDataset(manifest, data_cfg, splits, progress)
