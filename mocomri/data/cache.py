"""Preprocessed scans cached as float16 memory maps, so later epochs never decode a file again.

One entry per (source content, preprocessing settings)::

    <cache_dir>/<key[:2]>/<key>.npy    float16 array, (C, X, Y, Z) or (C, H, W)
    <cache_dir>/<key[:2]>/<key>.json   spacing, per-slice foreground fractions, source, settings
    <cache_dir>/sources/<stat key>     the source file's sha1, memoised on (path, size, mtime)

``key = sha1(source sha1 + settings)``: editing a file or changing a preprocessing setting gives
a new key (and a rebuild); renaming or copying a file reuses its entry. Entries are written to a
temporary file and moved into place with ``os.replace``, which is atomic, so several DataLoader
workers or DDP ranks can build or read the same entry at once; the ``.json`` is written last and
marks the entry complete. Readers open the ``.npy`` with ``np.load(mmap_mode="r")``: pages are
shared through the OS page cache, not copied into each worker.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mocomri.data.io import Scan, load_scan, looks_like_label_map
from mocomri.files import atomic_write, file_digest
from mocomri.errors import DataError
from mocomri.data.preprocess import PreprocessSettings, preprocess


@dataclass
class CacheEntry:
    """A cached scan: a read-only memmap and its metadata.

    Attributes:
        array: float16 memmap. Shape: (C, X, Y, Z) or (C, H, W).
        spacing: voxel size (mm).
        foreground: per spatial axis, the foreground fraction of each slice (volumes only).
        array_path: the ``.npy`` file behind ``array``.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    foreground: dict[int, list[float]]
    array_path: Path


class PreprocessCache:
    """Builds and reads cached preprocessed scans.

    Args:
        cache_dir: where entries live; created on first write.
        settings: the preprocessing settings, part of every key.
    """

    def __init__(self, cache_dir: str | Path, settings: PreprocessSettings):
        self.cache_dir = Path(cache_dir)
        self.settings = settings
        self._settings_json = json.dumps(settings.as_key(), sort_keys=True)

    def source_sha1(self, path: str | Path) -> str:
        """The sha1 of a source file, memoised on its resolved path, size and mtime."""
        path = Path(path).resolve()
        stat = path.stat()
        stat_key = hashlib.sha1(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
        memo = self.cache_dir / "sources" / stat_key
        if memo.is_file():
            return memo.read_text().strip()
        sha1 = file_digest(path)
        atomic_write(memo, lambda f: f.write(sha1.encode()))
        return sha1

    def key(self, sha1: str) -> str:
        return hashlib.sha1(f"{sha1}\0{self._settings_json}".encode()).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.cache_dir / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json"

    def has(self, path: str | Path) -> bool:
        return self._paths(self.key(self.source_sha1(path)))[1].is_file()

    def get(self, path: str | Path) -> CacheEntry:
        """Returns the entry for ``path``, decoding and preprocessing it first if it is missing.

        Raises:
            DataError: the source cannot be decoded (see :func:`mocomri.data.io.load_scan`).
        """
        array_path, meta_path = self._paths(self.key(self.source_sha1(path)))
        if not meta_path.is_file():
            self._build(Path(path), array_path, meta_path)
        return self._open(array_path, meta_path)

    def get_stack(self, paths: list[Path], name: str) -> CacheEntry:
        """One entry for co-registered contrasts stacked as channels, in the order given.

        Args:
            paths: one file per contrast, all of one session.
            name: names the session in errors (e.g. the subject).

        Raises:
            DataError: a file cannot be decoded, is a label map, or its shape or affine differs from
                the first file's; the message names the session and both files.
        """
        sha1s = [self.source_sha1(p) for p in paths]
        array_path, meta_path = self._paths(self.key("+".join(sha1s)))
        if not meta_path.is_file():
            scans = [load_scan(p, volume_index=self.settings.volume_index) for p in paths]
            first = scans[0]
            for path, scan in zip(paths, scans):
                if looks_like_label_map(scan.array):
                    raise DataError(f"{name}: {path} looks like a label map or mask (a few integer values), "
                                    "not an image; leave it out of data.channels")
                if scan.array.shape[1:] != first.array.shape[1:]:
                    raise DataError(f"{name}: {path} has shape {scan.array.shape[1:]} but {paths[0]} has "
                                    f"{first.array.shape[1:]}; the contrasts of one item must be co-registered")
                if not np.allclose(scan.affine, first.affine, atol=1e-3):
                    raise DataError(f"{name}: {path} has another affine than {paths[0]} "
                                    f"(max difference {np.abs(scan.affine - first.affine).max():.3g}); "
                                    "the contrasts of one item must be co-registered")
            stacked = Scan(np.concatenate([s.array for s in scans]), first.spacing, first.affine)
            self._write(preprocess(stacked, self.settings), ", ".join(map(str, paths)), array_path, meta_path)
        return self._open(array_path, meta_path)

    def _build(self, source: Path, array_path: Path, meta_path: Path) -> None:
        scan = load_scan(source, volume_index=self.settings.volume_index)
        if scan.spatial_dims == 3 and looks_like_label_map(scan.array):
            raise DataError(f"{source}: looks like a label map or mask (a few integer values), not an image; "
                            "leave it out of the manifest's images")
        self._write(preprocess(scan, self.settings), str(source), array_path, meta_path)

    def _write(self, result, source: str, array_path: Path, meta_path: Path) -> None:
        array = result.array.astype(np.float16)
        atomic_write(array_path, lambda f: np.save(f, array))
        meta = {
            "source": source,
            "shape": list(array.shape),
            "spacing": list(result.spacing),
            "foreground": {str(k): v for k, v in result.foreground.items()},
            "settings": json.loads(self._settings_json),
        }
        atomic_write(meta_path, lambda f: f.write(json.dumps(meta).encode()))

    @staticmethod
    def _open(array_path: Path, meta_path: Path) -> CacheEntry:
        meta = json.loads(meta_path.read_text())
        array = np.load(array_path, mmap_mode="r")
        foreground = {int(k): v for k, v in meta["foreground"].items()}
        return CacheEntry(array=array, spacing=tuple(meta["spacing"]), foreground=foreground, array_path=array_path)
