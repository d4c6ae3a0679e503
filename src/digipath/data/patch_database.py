"""Patch databases: labelled patches in a few large sharded files, read at memory speed.

Some training sets are patches cut once from slides rather than sampled on the fly, such as
RADHicaL's level-wise 32 x 32 patches (hundreds of thousands per level). Millions of small
files, or a Caffe LevelDB, are slow to list, copy and read; a patch database instead holds

``database.yaml``
    the index: format and version, patch shape ``[rows, cols]``, channels, class names,
    spacing (µm/px, optional), and per purpose the shard files, the patch count and the count
    per label, the sources (images) the patches came from and their patients;
``<purpose>_<k>.patches.npy``
    uint8 ``(n, rows, cols, channels)`` patches of shard ``k`` (at most ``shard_size``);
``<purpose>_<k>.labels.npy``
    uint8 ``(n,)`` class labels;
``<purpose>_<k>.origins.npy``
    int32 ``(n, 3)``: source index (into the purpose's ``sources``), row and column of the
    patch centre in pixels at the database's spacing (-1 when unknown);
``mean.npy``
    float32 ``(rows, cols, channels)`` mean image of the training patches (as Caffe's
    ``compute_image_mean``), or of all patches when there is no ``training`` purpose.

Shards are plain ``.npy`` files, memory-mapped when read, so that ``numpy``, a torch
``Dataset`` (:class:`~digipath.data.torch_dataset.PatchDatabaseDataset`) and the batch
generator (:class:`~digipath.data.database_generator.DatabaseBatchGenerator`) read any patch
without loading the rest. :class:`PatchDatabaseWriter` writes every file under a temporary
name and renames it when complete; ``database.yaml`` is written last, so a database without
it is incomplete (an interrupted extraction) and is refused by :class:`PatchDatabase`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from digipath.errors import DataError

__all__ = ["INDEX", "PatchDatabase", "PatchDatabaseError", "PatchDatabaseWriter", "is_database"]

INDEX = "database.yaml"
FORMAT = "digipath patch database"
VERSION = 1
MEAN = "mean.npy"


class PatchDatabaseError(DataError):
    """A patch database is missing, incomplete or inconsistent (names the folder or file)."""


def is_database(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a patch database folder (or its ``database.yaml``)."""
    path = Path(path)
    return (path / INDEX).is_file() or (path.name == INDEX and path.is_file())


def _save_npy(path: Path, array: np.ndarray) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        np.save(handle, array)
    os.replace(temporary, path)


class PatchDatabaseWriter:
    """Write a patch database (see the module docstring).

    Parameters
    ----------
    folder
        The database folder (created; an existing database in it is replaced on
        :meth:`close`).
    patch_shape
        ``(rows, cols)`` of every patch, in pixels.
    channels
        Channels per patch (3 for RGB).
    classes
        Class names by label, e.g. ``["negative", "mixed", "positive"]``.
    spacing
        Pixel spacing of the patches in µm/px (``None``: unknown).
    shard_size
        Most patches per shard file (memory holds one shard per purpose while writing).
    metadata
        More entries for the index (e.g. how the patches were extracted).

    Use as a context manager, or call :meth:`close` (and :meth:`abort` on failure).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        patch_shape: tuple[int, int],
        channels: int = 3,
        classes: Sequence[str] = ("negative", "positive"),
        *,
        spacing: float | None = None,
        shard_size: int = 65536,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.patch_shape = (int(patch_shape[0]), int(patch_shape[1]))
        self.channels = int(channels)
        self.classes = [str(name) for name in classes]
        if len(self.classes) < 1 or len(self.classes) > 255:
            raise ValueError(f"expected 1 to 255 class names, got {len(self.classes)}")
        self.spacing = None if spacing is None else float(spacing)
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self.shard_size = int(shard_size)
        self.metadata = dict(metadata or {})
        self.folder.mkdir(parents=True, exist_ok=True)
        self._pending: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._held: dict[str, int] = {}
        self._purposes: dict[str, dict[str, Any]] = {}
        self._sources: dict[str, dict[str, int]] = {}
        self._patients: dict[str, dict[str, str]] = {}
        self._sums: dict[str, np.ndarray] = {}
        self._written: list[Path] = []
        self._closed = False

    # -- adding patches -----------------------------------------------------------------------

    def source_index(self, purpose: str, source: str, patient: str | None = None) -> int:
        """The index of ``source`` (an image path) in ``purpose``'s source list (added if new)."""
        sources = self._sources.setdefault(purpose, {})
        if source not in sources:
            sources[source] = len(sources)
        if patient is not None:
            self._patients.setdefault(purpose, {})[source] = str(patient)
        return sources[source]

    def add(
        self,
        purpose: str,
        patches: np.ndarray,
        labels: np.ndarray | int,
        *,
        source: str | None = None,
        patient: str | None = None,
        positions: np.ndarray | None = None,
    ) -> None:
        """Append patches of one purpose.

        Parameters
        ----------
        purpose
            ``training``, ``validation`` ... (any name without path separators).
        patches
            uint8 ``(n, rows, cols, channels)``.
        labels
            ``(n,)`` labels (indices into ``classes``), or one label for all.
        source, patient
            The image the patches come from, and its patient.
        positions
            ``(n, 2)`` patch centres ``(row, col)`` in pixels at the database spacing.
        """
        if self._closed:
            raise PatchDatabaseError(f"{self.folder}: the writer is closed")
        if not purpose or os.sep in purpose or purpose.startswith("."):
            raise ValueError(f"expected a plain purpose name, got {purpose!r}")
        patches = np.asarray(patches)
        expected = (*self.patch_shape, self.channels)
        if patches.ndim != 4 or patches.shape[1:] != expected or patches.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 patches of shape (n, {', '.join(map(str, expected))}), got "
                f"{patches.dtype} {patches.shape}"
            )
        count = len(patches)
        labels = np.broadcast_to(np.asarray(labels), (count,)).astype(np.int64)
        if count and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(
                f"labels must be in 0..{len(self.classes) - 1}, got {labels.min()}..{labels.max()}"
            )
        origins = np.full((count, 3), -1, np.int32)
        if source is not None:
            origins[:, 0] = self.source_index(purpose, source, patient)
        if positions is not None:
            positions = np.asarray(positions)
            if positions.shape != (count, 2):
                raise ValueError(f"positions must be ({count}, 2), got {positions.shape}")
            origins[:, 1:] = positions
        if count == 0:
            return
        self._pending.setdefault(purpose, []).append(
            (np.ascontiguousarray(patches), labels.astype(np.uint8), origins)
        )
        self._held[purpose] = self._held.get(purpose, 0) + count
        total = self._sums.setdefault(purpose, np.zeros(expected, np.float64))
        total += patches.sum(axis=0, dtype=np.float64)
        while self._held[purpose] >= self.shard_size:
            self._flush(purpose, self.shard_size)

    def _flush(self, purpose: str, count: int) -> None:
        pending = self._pending.get(purpose) or []
        if not pending or count <= 0:
            return
        patches = np.concatenate([p for p, _, _ in pending])
        labels = np.concatenate([lab for _, lab, _ in pending])
        origins = np.concatenate([o for _, _, o in pending])
        entry = self._purposes.setdefault(
            purpose, {"shards": [], "count": 0, "label counts": [0] * len(self.classes)}
        )
        stem = f"{purpose}_{len(entry['shards']):04d}"
        for suffix, array in (("patches", patches[:count]), ("labels", labels[:count]),
                              ("origins", origins[:count])):  # fmt: skip
            path = self.folder / f"{stem}.{suffix}.npy"
            _save_npy(path, array)
            self._written.append(path)
        entry["shards"].append(stem)
        entry["count"] += int(min(count, len(patches)))
        for label, n in zip(*np.unique(labels[:count], return_counts=True), strict=True):
            entry["label counts"][int(label)] += int(n)
        rest = count < len(patches)
        self._pending[purpose] = (
            [(patches[count:], labels[count:], origins[count:])] if rest else []
        )
        self._held[purpose] = len(patches) - count if rest else 0

    # -- finishing ------------------------------------------------------------------------------

    def close(self) -> Path:
        """Write the remaining shards, the mean image and the index; return the index path."""
        if self._closed:
            return self.folder / INDEX
        for purpose in list(self._pending):
            self._flush(purpose, self._held.get(purpose, 0))
        sums = self._sums.get("training")
        count = self._purposes.get("training", {}).get("count", 0)
        if sums is None:
            sums = sum(self._sums.values()) if self._sums else None
            count = sum(entry["count"] for entry in self._purposes.values())
        if sums is not None and count:
            _save_npy(self.folder / MEAN, (sums / count).astype(np.float32))
        purposes = {}
        for purpose, entry in self._purposes.items():
            sources = self._sources.get(purpose, {})
            patients = self._patients.get(purpose, {})
            purposes[purpose] = {
                **entry,
                "sources": list(sources),
                "patients": [patients.get(s) for s in sources],
            }
        index = {
            "format": FORMAT,
            "version": VERSION,
            "patch shape": list(self.patch_shape),
            "channels": self.channels,
            "classes": self.classes,
            "spacing": self.spacing,
            "mean image": MEAN if (self.folder / MEAN).exists() else None,
            "purposes": purposes,
            **({"metadata": self.metadata} if self.metadata else {}),
        }
        path = self.folder / INDEX
        temporary = path.with_name(f".{INDEX}.{os.getpid()}.tmp")
        temporary.write_text(yaml.safe_dump(index, sort_keys=False), encoding="utf-8")
        os.replace(temporary, path)
        self._closed = True
        return path

    def abort(self) -> None:
        """Remove the shards written so far (the index is never written)."""
        self._closed = True
        for path in self._written:
            path.unlink(missing_ok=True)

    def __enter__(self) -> PatchDatabaseWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class PatchDatabase:
    """Read a patch database (see the module docstring).

    Parameters
    ----------
    folder
        The database folder, or its ``database.yaml``.

    Raises
    ------
    PatchDatabaseError
        When the index is missing (an incomplete database), of another format, or names
        shards that do not exist or disagree with it.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        folder = Path(folder)
        if folder.name == INDEX:
            folder = folder.parent
        self.folder = folder
        path = folder / INDEX
        if not path.is_file():
            raise PatchDatabaseError(
                f"{folder}: not a patch database (no {INDEX}; an interrupted extraction "
                "leaves none)"
            )
        try:
            index = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise PatchDatabaseError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise PatchDatabaseError(f"{path}: expected format {FORMAT!r}")
        if int(index.get("version", 0)) > VERSION:
            raise PatchDatabaseError(
                f"{path}: version {index.get('version')} is newer than this digipath reads "
                f"({VERSION})"
            )
        self.index = index
        self.patch_shape: tuple[int, int] = tuple(int(v) for v in index["patch shape"])
        self.channels = int(index["channels"])
        self.classes: list[str] = list(index["classes"])
        self.spacing: float | None = index.get("spacing")
        self._shards: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._offsets: dict[str, np.ndarray] = {}
        self._labels: dict[str, np.ndarray] = {}
        for purpose, entry in (index.get("purposes") or {}).items():
            shards = []
            for stem in entry["shards"]:
                arrays = []
                for suffix in ("patches", "labels", "origins"):
                    shard = folder / f"{stem}.{suffix}.npy"
                    try:
                        arrays.append(np.load(shard, mmap_mode="r"))
                    except (OSError, ValueError) as error:
                        raise PatchDatabaseError(
                            f"{shard}: cannot read the shard: {error}"
                        ) from None
                patches, labels, origins = arrays
                if patches.shape[1:] != (*self.patch_shape, self.channels) or not (
                    len(patches) == len(labels) == len(origins)
                ):
                    raise PatchDatabaseError(f"{folder / stem}: shard disagrees with {INDEX}")
                shards.append((patches, labels, origins))
            sizes = [len(s[0]) for s in shards]
            if sum(sizes) != int(entry["count"]):
                raise PatchDatabaseError(
                    f"{path}: purpose {purpose!r} counts {entry['count']} patches, its shards "
                    f"hold {sum(sizes)}"
                )
            self._shards[purpose] = shards
            self._offsets[purpose] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    @property
    def purposes(self) -> list[str]:
        """The purposes (``training``, ``validation`` ...) in index order."""
        return list(self._shards)

    def _require(self, purpose: str) -> None:
        if purpose not in self._shards:
            raise PatchDatabaseError(
                f"{self.folder}: no purpose {purpose!r}; it has "
                f"{', '.join(self.purposes) or 'none'}"
            )

    def count(self, purpose: str) -> int:
        """Patches of ``purpose``."""
        self._require(purpose)
        return int(self._offsets[purpose][-1])

    def label_counts(self, purpose: str) -> dict[int, int]:
        """``{label: patches}`` of ``purpose``."""
        self._require(purpose)
        counts = self.index["purposes"][purpose]["label counts"]
        return {label: int(n) for label, n in enumerate(counts)}

    def sources(self, purpose: str) -> list[str]:
        """The images the patches of ``purpose`` came from."""
        self._require(purpose)
        return list(self.index["purposes"][purpose].get("sources") or [])

    def patients(self, purpose: str) -> list[str | None]:
        """The patient of each source of ``purpose``."""
        self._require(purpose)
        return list(self.index["purposes"][purpose].get("patients") or [])

    def labels(self, purpose: str) -> np.ndarray:
        """uint8 ``(n,)`` labels of every patch of ``purpose`` (loaded once, then cached)."""
        self._require(purpose)
        if purpose not in self._labels:
            shards = self._shards[purpose]
            self._labels[purpose] = (
                np.concatenate([np.asarray(s[1]) for s in shards]) if shards
                else np.zeros(0, np.uint8)
            )  # fmt: skip
        return self._labels[purpose]

    def _gather(self, purpose: str, indices, which: int) -> np.ndarray:
        self._require(purpose)
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        total = self.count(purpose)
        if len(indices) and (indices.min() < 0 or indices.max() >= total):
            raise IndexError(f"{self.folder}: purpose {purpose!r} has {total} patches")
        shards = self._shards[purpose]
        shape = shards[0][which].shape[1:] if shards else ()
        dtype = shards[0][which].dtype if shards else np.uint8
        result = np.empty((len(indices), *shape), dtype)
        shard_of = np.searchsorted(self._offsets[purpose], indices, side="right") - 1
        for k in np.unique(shard_of):
            chosen = np.nonzero(shard_of == k)[0]
            local = indices[chosen] - self._offsets[purpose][k]
            order = np.argsort(local, kind="stable")  # sorted reads of the memory map
            result[chosen[order]] = shards[k][which][local[order]]
        return result

    def patches(self, purpose: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 ``(len(indices), rows, cols, channels)`` patches of ``purpose``."""
        return self._gather(purpose, indices, 0)

    def origins(self, purpose: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """int32 ``(len(indices), 3)``: source index, centre row and column of each patch."""
        return self._gather(purpose, indices, 2)

    def mean_image(self) -> np.ndarray | None:
        """float32 ``(rows, cols, channels)`` mean of the training patches (``None``: none)."""
        name = self.index.get("mean image")
        return None if not name else np.load(self.folder / name)

    def __repr__(self) -> str:
        counts = ", ".join(f"{p} {self.count(p)}" for p in self.purposes)
        return f"PatchDatabase({str(self.folder)!r}, {self.patch_shape}, {counts})"
