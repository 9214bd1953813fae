"""Datasets over a manifest: pairs of augmented views for pretraining, fixed inputs for evaluation.

Items by ``DataConfig.kind``:

- ``slices2d``: 2D slices along ``slice_axis`` of RAS volumes, skipping slices whose foreground
  covers less than ``min_foreground`` of their area;
- ``patches3d``: one 3D view per volume (random resized crop to ``pretrain_patch_size`` or
  ``patch_size``; evaluation reads the whole volume resized to ``patch_size``);
- ``images2d``: whole 2D images;
- ``auto``: ``images2d`` for 2D files and ``slices2d`` for volumes, row by row.

Every scan is preprocessed once into the memory-mapped cache (:mod:`mocomri.data.cache`) when
the dataset is built, and the pretraining items once more into working images
(:mod:`mocomri.data.working`), so ``__getitem__`` only reads a memmap; views are made per batch
on the device (:mod:`mocomri.augment`). The memmaps are
opened lazily in each process, so a dataset pickles cheaply to DataLoader workers.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mocomri.augment import BatchViews
from mocomri.augment.settings import AugmentConfig
from mocomri.data.cache import PreprocessCache
from mocomri.data.io import file_kind
from mocomri.data.manifest import Manifest
from mocomri.data.preprocess import PreprocessSettings
from mocomri.data.settings import DataConfig
from mocomri.data.transforms import build_eval_transform
from mocomri.data.working import build_working_array, working_side
from mocomri.errors import DataError

MAX_OPEN_ARRAYS = 256  # cached scans whose memmaps a dataset keeps open at once


@dataclass
class CachedScan:
    """A manifest row whose preprocessed array sits in the cache.

    Attributes:
        row: index into ``manifest.rows`` (with ``data.channels``, the first contrast's row).
        kind: ``slices2d``, ``patches3d`` or ``images2d``.
        array_path: the cached ``.npy`` (opened with ``mmap_mode="r"``).
        slices: for ``slices2d``, the indices of the slices kept; otherwise empty.
    """

    row: int
    kind: str
    array_path: str
    slices: list[int]
    rows: list[int] = dataclasses.field(default_factory=list)  # with data.channels: every contrast's row, in order


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
    cache = PreprocessCache(data_cfg.cache_dir, PreprocessSettings.from_config(data_cfg))
    if data_cfg.channels:
        return _cache_stacks(manifest, data_cfg, rows, cache, progress)
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


def _cache_stacks(
    manifest: Manifest, data_cfg: DataConfig, rows: list[int], cache: PreprocessCache, progress: bool | None
) -> tuple[list[CachedScan], list[tuple[int, str]]]:
    """:func:`cache_scans` with ``data.channels``: one item per session, its contrasts stacked."""
    sessions: dict[tuple[str, str], dict[str, int]] = {}
    for index in rows:
        row = manifest.rows[index]
        if row.modality in data_cfg.channels:
            contrasts = sessions.setdefault((row.subject, row.session), {})
            if row.modality in contrasts:
                raise DataError(f"subject {row.subject}{f' session {row.session}' if row.session else ''}: two "
                                f"{row.modality} files ({manifest.rows[contrasts[row.modality]].path}, {row.path}); "
                                "data.channels stacks one file per contrast")
            contrasts[row.modality] = index
    scans, skipped = [], []
    for (subject, session), contrasts in tqdm(sorted(sessions.items()), desc="cache", unit="session",
                                              disable=None if progress is None else not progress):
        name = f"subject {subject}" + (f" session {session}" if session else "")
        missing = [c for c in data_cfg.channels if c not in contrasts]
        try:
            if missing:
                raise DataError(f"{name}: no {', '.join(missing)} file among {sorted(contrasts)} "
                                f"(data.channels={data_cfg.channels}; data.missing_contrast=skip skips such sessions)")
            members = [contrasts[c] for c in data_cfg.channels]
            paths = [manifest.abspath(manifest.rows[i]) for i in members]
            kinds = {_row_kind(p, data_cfg.kind) for p in paths}
            if len(kinds) > 1:
                raise DataError(f"{name}: its contrasts are of different kinds ({', '.join(map(str, paths))}); "
                                "data.channels stacks co-registered files of one kind")
            entry = cache.get_stack(paths, name)
        except DataError as e:
            if not (data_cfg.skip_bad or (missing and data_cfg.missing_contrast == "skip")):
                raise
            skipped.append((next(iter(contrasts.values())), str(e)))
            warnings.warn(f"skipped: {e}", stacklevel=3)
            continue
        kind = kinds.pop()
        slices: list[int] = []
        if kind == "slices2d":
            fractions = entry.foreground.get(data_cfg.slice_axis, [])
            slices = [i for i, f in enumerate(fractions) if f >= data_cfg.min_foreground]
        scans.append(CachedScan(row=members[0], kind=kind, array_path=str(entry.array_path), slices=slices, rows=members))
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
        # Decided here, once: 3D when the scans are volumes' patches, else 2D; each item's kind,
        # modality and left-right axis (-1: none, see lr_axis), which pick its augmentation.
        self.spatial_dims = 3 if any(s.kind == "patches3d" for s in self.scans) else 2
        item_scans = [self.scans[k] for k, _ in self.items]
        self.item_kinds = [s.kind for s in item_scans]
        self.item_modalities = [manifest.rows[s.row].modality for s in item_scans]
        flips = {kind: lr_axis(kind, self.slice_axis) for kind in set(self.item_kinds)}
        self.flip_axes = np.array([-1 if flips[k] is None else flips[k] for k in self.item_kinds], dtype=np.int64)  # (N,)
        self._arrays: OrderedDict[int, np.ndarray] = OrderedDict()  # the most recently read scans' memmaps

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = OrderedDict()  # memmaps are reopened in each worker, never pickled
        return state

    @property
    def item_rows(self) -> list[int]:
        """The manifest row of every item (slices of one scan share it)."""
        return [self.scans[k].row for k, _ in self.items]

    @property
    def item_subjects(self) -> list[str]:
        """The subject of every item (slices of one scan share it): ``self.subjects[id]`` for the
        integer id that batches carry."""
        return [self.subjects[self._subject[self.scans[k].row]] for k, _ in self.items]

    def read(self, index: int) -> tuple[CachedScan, torch.Tensor]:
        """The item's scan and its preprocessed, unaugmented array.

        Shape: (C, H, W) for slices and images, (C, X, Y, Z) for volumes.
        """
        k, slice_index = self.items[index]
        scan = self.scans[k]
        if k in self._arrays:
            self._arrays.move_to_end(k)
        else:
            # Each open memmap holds a file descriptor: keep only the latest few, or a set of
            # tens of thousands of 2D images runs out of descriptors ("Too many open files").
            if len(self._arrays) >= MAX_OPEN_ARRAYS:
                self._arrays.popitem(last=False)
            self._arrays[k] = np.load(scan.array_path, mmap_mode="r")
        array = self._arrays[k]
        if slice_index >= 0:
            array = np.take(array, slice_index, axis=1 + self.slice_axis)
        return scan, torch.from_numpy(np.asarray(array, dtype=np.float32))


class ViewPairDataset(_CachedDataset):
    """Items: one slice, image or volume as a working image, with what its views need.

    The views themselves are made per batch on the training device by :attr:`views`
    (:class:`mocomri.augment.BatchViews`): workers only read rows of the working-image memmap
    (:mod:`mocomri.data.working`), so they cost the training step almost no CPU.

    Item: ``{"image": (C, *W) float16, "subject": int64, "modality": int64, "family": int64,
    "flip_axis": int64, "seed": int64}``; ``subject``, ``modality`` and ``family`` index
    ``self.subjects``, ``self.modalities`` and ``self.families``; ``flip_axis`` is the spatial
    axis running left-right, or -1 when the item has none (see :func:`lr_axis`). A list of
    indices is read at once (:meth:`__getitems__`, one memmap read per batch); pass
    :meth:`collate` to the DataLoader as its ``collate_fn``.
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
        view_side = data_cfg.view_side(self.spatial_dims)
        self.view_size = (view_side,) * self.spatial_dims
        family_of = {s.row: aug_cfg.family_of(manifest.rows[s.row].modality) for s in self.scans}
        self.families = sorted(set(family_of.values()))
        family_id = {f: i for i, f in enumerate(self.families)}
        self._family = {row: family_id[f] for row, f in family_of.items()}
        self._source = {s.row: str(manifest.abspath(manifest.rows[s.row])) for s in self.scans}  # names items in errors
        if data_cfg.working_size > 0:
            self.working_side = data_cfg.working_size
        else:
            min_crop = min(aug_cfg.params_for_family(f).crop_scale[0] for f in self.families) if self.families else 1.0
            self.working_side = working_side(view_side, min_crop if aug_cfg.preset != "none" else 1.0)
        self.views = BatchViews(aug_cfg, self.families, self.view_size)
        # data.views_on=workers: on a CPU run, the workers make the views of the next batches
        # while the step runs (BENCHMARKS.md compares both places). Same views either way.
        self.views_in_workers = False
        self._working: np.ndarray | None = None
        self._working_args = (data_cfg.cache_dir, progress)
        if len(self.items):
            self.working  # noqa: B018 -- build it now, in the main process, before any worker reads it

    @property
    def working(self) -> np.ndarray:
        """All items' working images. Shape: (N, C, *W) float16 memmap."""
        if self._working is None:
            cache_dir, progress = self._working_args
            sources = [f"{self.scans[k].array_path}:{s}:{self.slice_axis}" for k, s in self.items]
            self._working = build_working_array(
                cache_dir, sources, lambda i: self.read(i)[1], len(self.items), self.working_side, self.spatial_dims,
                progress, describe=lambda i: self._source[self.scans[self.items[i][0]].row],
            )
        return self._working

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_working"] = None  # reopened as a memmap in each worker
        return state

    def _meta(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = [self.scans[self.items[i][0]].row for i in indices]
        return {
            "subject": torch.tensor([self._subject[r] for r in rows], dtype=torch.int64),
            "modality": torch.tensor([self._modality[r] for r in rows], dtype=torch.int64),
            "family": torch.tensor([self._family[r] for r in rows], dtype=torch.int64),
            "flip_axis": torch.from_numpy(self.flip_axes[indices]),
        }

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        """One item; ``index`` may be ``(index, item_seed)`` as the pretraining sampler yields."""
        index, seed = (int(index[0]), int(index[1])) if isinstance(index, (tuple, list)) else (int(index), self.base_seed)
        item = {k: v[0] for k, v in self._meta([index]).items()}
        item["image"] = torch.from_numpy(np.array(self.working[index]))
        item["seed"] = torch.tensor(seed, dtype=torch.int64)
        return item

    def __getitems__(self, indices: list) -> dict[str, torch.Tensor]:
        """A batch at once: one read of the memmap; ``seed`` is the batch's, from its items' seeds.

        Shape: image (B, C, *W) float16; subject, modality, family, flip_axis (B,); seed ().
        """
        pairs = [(int(i[0]), int(i[1])) if isinstance(i, (tuple, list)) else (int(i), self.base_seed + int(i)) for i in indices]
        index = [i for i, _ in pairs]
        order = np.argsort(index, kind="stable")  # a sorted read walks the file forward
        images = np.empty((len(index), *self.working.shape[1:]), dtype=np.float16)
        images[order] = self.working[np.asarray(index)[order]]
        batch = self._meta(index)
        batch["image"] = torch.from_numpy(images)
        batch["seed"] = torch.tensor(sum((p + 1) * s for p, (_, s) in enumerate(pairs)) % 2**62, dtype=torch.int64)
        if self.views_in_workers and torch.utils.data.get_worker_info() is not None:
            batch["view1"], batch["view2"] = self.make_views(batch)
        return batch

    @staticmethod
    def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The DataLoader's ``collate_fn``: :meth:`__getitems__` already gives the batch."""
        return batch

    def make_views(self, batch: dict[str, torch.Tensor], device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views of a batch from :meth:`__getitems__`, made on ``device`` (default: the images' device).

        A batch whose views a worker already made (:attr:`views_in_workers`) only moves them to ``device``.

        Shape: (B, C, *view_size) float32, twice.
        """
        if "view1" in batch:
            return batch["view1"].to(device, non_blocking=True), batch["view2"].to(device, non_blocking=True)
        images = batch["image"] if device is None else batch["image"].to(device, non_blocking=True)
        with torch.no_grad():
            return self.views(images, batch["family"], batch["flip_axis"], int(batch["seed"]))


class EvalDataset(_CachedDataset):
    """Items: one deterministic input per slice, image or volume, for features and probes.

    Item: ``{"image": (C, H, W) or (C, D, H, W) float32, "row": int64}`` where ``row`` indexes
    ``manifest.rows``; ``item_rows`` lists it for every item, to aggregate slices per scan.
    ``spatial_dims``, ``input_size`` (the side of every input), and per item ``item_kinds``,
    ``item_modalities`` and ``flip_axes`` are decided when the dataset is built.
    """

    def __init__(self, manifest: Manifest, data_cfg: DataConfig, splits: list[str] | None, progress: bool | None = None):
        super().__init__(manifest, data_cfg, splits, progress)
        self.input_size = data_cfg.patch_size if self.spatial_dims == 3 else data_cfg.image_size
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
