"""RADHicaL's level-wise training data: one patch database per magnification.

:func:`extract_level_patches` reproduces the original's patch extraction
(``step1_levels_make_patches_3class.m``, ``func_extraction_worker_w_rots.m``; reference
``seeds-deephealth-radhical.md`` §5.1) from (image, nucleus mask) pairs:

* **levels** are spacings, finest first (``0.25, 0.5, 1, 2.5`` µm/px: the original's 40x, 20x,
  10x, 4x); the mask is read at the finest one; the *factor* of a level is its spacing over the
  finest (as the image's levels are: a level within the reader's tolerance of the requested
  spacing is used as stored);
* **targets** come from :mod:`digipath.radhical.targets`: at the finest level "nucleus" (label 1)
  and, as label 0, the edge ring and the background; at the other levels "negative" (0),
  "mixed" (1) and "positive" (2) from the mask's fraction map;
* **candidates** are the pixels of each group at least ``patch_size`` pixels from the level's
  border (``patch_size <= row <= rows - 1 - patch_size``, the same for columns); a uniformly
  random subset of up to the group's **cap** is kept per image (default: 500 nucleus, 500 edge,
  150 background at the finest level, as the original's 500 x 1 and 500 x 0.3; 500 per class at
  the others). The draw is a keyed hash of the seed, the image's file name, the level, the group
  and the pixel: it does not depend on the order of the images nor on how the image is tiled;
* every kept position gives **one patch per rotation** (default 0 and 90 degrees, so up to
  ``2 x (500 + 500 + 150)`` patches per image at the finest level): a window of about twice the
  patch (``patch + 2 * (patch // 2)`` pixels: 64 for 32) centred on the patch is cut, rotated
  counter-clockwise about its centre (``numpy.rot90`` for multiples of 90, bilinear otherwise)
  and its central ``patch x patch`` kept. The patch of position ``(r, c)`` covers rows
  ``r - patch // 2`` to ``r - patch // 2 + patch - 1``. (The original crops one pixel up and
  left of the window's centre, so its rotated patches are not exact rotations of each other.)
* **purposes**: images are split by patient (:func:`digipath.data.split.split_by_patient`, by
  default the file name's text before the first ``_``), so no patient is in two purposes; the
  original used fold 1 of a 5-fold patient split, i.e. 80 / 20.

The output folder gets one :class:`~digipath.data.patch_database.PatchDatabaseWriter` database
per level, ``level_<index>_<spacing>um`` (index 0 the finest; ``level_0_0.25um``, ...), with
the class names ``["negative", "nucleus"]`` (finest) or ``["negative", "mixed", "positive"]``,
the level's spacing, patch centres at that spacing, a mean image of the training patches, and
``metadata`` recording the levels, caps, rotations, seed, background and the patient split.
The databases are written together and indexed only when every image is done, so an
interrupted run leaves no database that looks complete.

**Memory.** Images are processed one at a time, one level at a time. An image whose finest
level holds at most ``max_pixels`` pixels is read whole at each level; a larger one (a whole
slide) is processed in ``tile_size`` tiles read with a margin: the mask, the edge ring, the
fraction maps and the candidates are then exactly as if read whole; the background heuristic
too, except that a tile fills only the holes of dark blobs that fit within its margin
(:meth:`~digipath.radhical.targets.Heuristic.margin`, about 250 px at 40x), and its stretch
limits come from a first pass over the whole slide. The coarser levels' heuristic backgrounds
are kept in temporary memory-mapped files in the output folder.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import numbers
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from digipath.data.patch_database import INDEX, MEAN, PatchDatabaseWriter
from digipath.data.split import PatientSpec, patient_key, split_by_patient
from digipath.errors import ConfigError, DigipathError, FileError, SourceError
from digipath.radhical import targets

__all__ = [
    "DEFAULT_CAPS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_PURPOSES",
    "DEFAULT_SPACINGS",
    "FINEST_CLASSES",
    "LEVEL_CLASSES",
    "LevelSummary",
    "PatchSummary",
    "PurposeSummary",
    "extract_level_patches",
    "level_folder",
]

logger = logging.getLogger(__name__)

DEFAULT_SPACINGS = (0.25, 0.5, 1.0, 2.5)
"""The original's 40x, 20x, 10x and 4x, in µm/px."""

DEFAULT_CAPS: dict[str, int] = {
    "nucleus": 500,
    "edge": 500,
    "background": 150,  # the finest level
    "negative": 500,
    "mixed": 500,
    "positive": 500,  # the other levels
}
"""Most positions per image and group (each gives one patch per rotation)."""

DEFAULT_PURPOSES: dict[str, float] = {"training": 0.8, "validation": 0.2}

DEFAULT_MAX_PIXELS = 2**25
"""Images with more pixels than this at the finest level are processed in tiles (~33 Mpx)."""

DEFAULT_TILE_SIZE = 2048
"""Tile side (pixels at the finest level) of the tiled processing."""

FINEST_CLASSES = ("negative", "nucleus")
LEVEL_CLASSES = ("negative", "mixed", "positive")

#: group -> (value in the group map, database label), finest level and the others
FINEST_GROUPS = {
    "nucleus": (targets.NUCLEUS_PART, 1),
    "edge": (targets.EDGE_PART, 0),
    "background": (targets.BACKGROUND_PART, 0),
}
LEVEL_GROUPS = {
    "negative": (targets.NEGATIVE, 0),
    "mixed": (targets.MIXED, 1),
    "positive": (targets.POSITIVE, 2),
}

_NO_LIMIT = 1 << 42  # reads are bounded by max_pixels and tile_size, not by the reader's limit
_SHARD_FILE = re.compile(r"^.+_\d{4}\.(patches|labels|origins)\.npy$")


def level_folder(index: int, spacing: float) -> str:
    """The database folder name of level ``index`` (0 = finest) at ``spacing`` µm/px:
    ``level_0_0.25um``, ``level_3_2.5um``."""
    return f"level_{index}_{float(spacing):g}um"


# --------------------------------------------------------------------------------------------
# Summary


@dataclass
class PurposeSummary:
    """What one purpose of one level's database holds.

    Attributes
    ----------
    classes
        Patches per class name.
    images, patients
        Images and patients that gave at least one patch.
    """

    classes: dict[str, int]
    images: int = 0
    patients: int = 0

    @property
    def patches(self) -> int:
        """All patches."""
        return sum(self.classes.values())


@dataclass
class LevelSummary:
    """One level's database: index (0 = finest), spacing (µm/px), folder, class names and
    :class:`PurposeSummary` per purpose."""

    index: int
    spacing: float
    folder: Path
    classes: list[str]
    purposes: dict[str, PurposeSummary]


@dataclass
class PatchSummary:
    """The result of :func:`extract_level_patches`.

    Attributes
    ----------
    levels
        :class:`LevelSummary` per level, finest first.
    split
        Purpose -> its patients (sorted).
    images
        Purpose -> its images.
    failures
        ``(image, message)`` of the images skipped with ``skip_failures``.
    """

    levels: list[LevelSummary]
    split: dict[str, list[str]]
    images: dict[str, list[str]]
    failures: list[tuple[str, str]] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One flat record per level and purpose (for tables and JSON)."""
        return [
            {
                "level": level.index,
                "spacing": level.spacing,
                "folder": str(level.folder),
                "purpose": purpose,
                "images": entry.images,
                "patients": entry.patients,
                "patches": entry.patches,
                **entry.classes,
            }
            for level in self.levels
            for purpose, entry in level.purposes.items()
        ]


# --------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class _Item:
    image: str
    mask: str
    background: str | None


@dataclass(frozen=True)
class _Config:
    spacings: tuple[float, ...]
    patch_size: int
    caps: dict[str, int]
    rotations: tuple[float, ...]
    heuristic: targets.Heuristic
    iterations: int
    image_spacing: float | None
    tolerance: float
    max_pixels: int
    tile_size: int
    seed: int


def _number(value: Any, key: str, *, minimum: float, integer: bool = False) -> Any:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or (integer and int(value) != value)
    ):
        kind = "an integer" if integer else "a number"
        raise ConfigError(key, f"expected {kind} >= {minimum:g}, got {value!r}")
    if value < minimum:
        raise ConfigError(key, f"expected a value >= {minimum:g}, got {value!r}")
    return int(value) if integer else float(value)


def _check_spacings(spacings: Sequence[float]) -> tuple[float, ...]:
    if isinstance(spacings, str | bytes) or not isinstance(spacings, Sequence) or not spacings:
        raise ConfigError("spacings", f"expected spacings in µm/px, finest first, got {spacings!r}")
    values = tuple(_number(s, f"spacings[{i}]", minimum=1e-9) for i, s in enumerate(spacings))
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ConfigError(
            "spacings", f"expected increasing spacings (finest first), got {list(values)}"
        )
    return values


def _check_caps(caps: Mapping[str, int] | None) -> dict[str, int]:
    result = dict(DEFAULT_CAPS)
    if caps is None:
        return result
    if not isinstance(caps, Mapping):
        raise ConfigError("caps", f"expected a mapping group -> count, got {caps!r}")
    for name, value in caps.items():
        if name not in DEFAULT_CAPS:
            raise ConfigError(
                f"caps.{name}", f"unknown group; the groups are {', '.join(DEFAULT_CAPS)}"
            )
        result[name] = _number(value, f"caps.{name}", minimum=0, integer=True)
    return result


def _check_heuristic(heuristic: targets.Heuristic | Mapping[str, Any] | None) -> targets.Heuristic:
    if heuristic is None:
        return targets.Heuristic()
    if isinstance(heuristic, targets.Heuristic):
        return heuristic
    if not isinstance(heuristic, Mapping):
        raise ConfigError("heuristic", f"expected a mapping of settings, got {heuristic!r}")
    known = ("threshold", "stretch", "min_blob_um2", "box_um")
    for name in heuristic:
        if name not in known:
            raise ConfigError(f"heuristic.{name}", f"unknown setting; valid: {', '.join(known)}")
    try:
        return targets.Heuristic(**heuristic)
    except (TypeError, ValueError) as error:
        raise ConfigError("heuristic", str(error)) from None


def _check_items(
    items: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
    background: str | Sequence[str | os.PathLike[str] | None],
) -> list[_Item]:
    items = list(items)
    if not items:
        raise ConfigError("items", "expected at least one (image, mask) pair")
    if isinstance(background, str) and background == "heuristic":
        backgrounds: list[Any] = [None] * len(items)
    elif isinstance(background, str | bytes | os.PathLike) or not isinstance(background, Sequence):
        raise ConfigError(
            "background", f"expected 'heuristic' or one mask path per image, got {background!r}"
        )
    else:
        backgrounds = list(background)
        if len(backgrounds) != len(items):
            raise ConfigError(
                "background", f"{len(backgrounds)} background masks for {len(items)} images"
            )
    result = []
    for index, (item, other) in enumerate(zip(items, backgrounds, strict=True)):
        if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != 2:
            raise ConfigError(f"items[{index}]", f"expected an (image, mask) pair, got {item!r}")
        image, mask = (os.fspath(p) for p in item)
        result.append(_Item(image, mask, None if other is None else os.fspath(other)))
    images = [item.image for item in result]
    if len(set(images)) != len(images):
        twice = sorted({i for i in images if images.count(i) > 1})
        raise ConfigError("items", f"images listed twice: {', '.join(twice)}")
    return result


def _prepare_folders(folders: Sequence[Path], overwrite: bool) -> None:
    existing = [folder for folder in folders if (folder / INDEX).exists()]
    if existing and not overwrite:
        raise FileError(
            existing[0], "holds a patch database already; pass overwrite=True (--overwrite)"
        )
    for folder in existing:
        (folder / INDEX).unlink()  # first: an interrupted run leaves no complete-looking index
        for path in folder.iterdir():
            if path.name == MEAN or _SHARD_FILE.match(path.name):
                path.unlink()


# --------------------------------------------------------------------------------------------
# Random draws that do not depend on tiling


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _salt(seed: int, image: str, level: int, group: str) -> np.uint64:
    text = f"{seed}\0{Path(image).name}\0{level}\0{group}".encode()
    return np.uint64(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little"))


def _keys(salt: np.uint64, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """SplitMix64 of the position: a distinct pseudo-random uint64 per pixel."""
    with np.errstate(over="ignore"):
        z = (rows.astype(np.uint64) << np.uint64(32)) | cols.astype(np.uint64)
        z = (z ^ salt) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


class _Picker:
    """The ``cap`` candidates with the smallest keys, fed tile by tile."""

    def __init__(self, cap: int, salt: np.uint64) -> None:
        self.cap, self.salt, self.candidates = cap, salt, 0
        self.keys = np.zeros(0, np.uint64)
        self.rows = np.zeros(0, np.int64)
        self.cols = np.zeros(0, np.int64)

    def add(self, rows: np.ndarray, cols: np.ndarray) -> None:
        self.candidates += len(rows)
        if self.cap == 0 or len(rows) == 0:
            return
        keys = np.concatenate([self.keys, _keys(self.salt, rows, cols)])
        rows, cols = np.concatenate([self.rows, rows]), np.concatenate([self.cols, cols])
        if len(keys) > self.cap:
            keep = np.argpartition(keys, self.cap - 1)[: self.cap]
            keys, rows, cols = keys[keep], rows[keep], cols[keep]
        self.keys, self.rows, self.cols = keys, rows, cols

    def positions(self) -> np.ndarray:
        """int64 ``(n, 2)`` kept ``(row, col)``, in key order."""
        order = np.argsort(self.keys, kind="stable")
        return np.stack([self.rows[order], self.cols[order]], axis=1)


def _collect(
    pickers: Mapping[str, _Picker],
    groups: Mapping[str, tuple[int, int]],
    values: np.ndarray,
    origin: tuple[int, int],
    shape: tuple[int, int],
    margin: int,
) -> None:
    """Feed the pixels of each group of ``values`` (a block at ``origin``) at least ``margin``
    pixels from the border of a level of ``shape`` to the pickers."""
    r0 = max(margin - origin[0], 0)
    c0 = max(margin - origin[1], 0)
    r1 = min(shape[0] - margin - origin[0], values.shape[0])
    c1 = min(shape[1] - margin - origin[1], values.shape[1])
    if r1 <= r0 or c1 <= c0:
        return
    inner = values[r0:r1, c0:c1]
    for name, (value, _) in groups.items():
        rows, cols = np.nonzero(inner == value)
        pickers[name].add(rows + (origin[0] + r0), cols + (origin[1] + c0))


# --------------------------------------------------------------------------------------------
# Reading


def _open(path: str, config: _Config):
    from digipath.io import ImageReader

    reader = ImageReader(path, tolerance=config.tolerance)
    if reader.spacings[0] is None and config.image_spacing is not None:
        reader.close()
        reader = ImageReader(path, spacing=config.image_spacing, tolerance=config.tolerance)
    return reader


def _read_binary(reader, spacing: float, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    region = reader.read(
        spacing, r0, c0, r1 - r0, c1 - c0, fill=0, interpolation="nearest", max_bytes=_NO_LIMIT
    )[:, :, 0]
    bad = (region > 1) & (region != 255)
    if bad.any():
        raise SourceError(
            reader.path,
            f"expected a binary mask (0/1 or 0/255), found the value {region[bad][0]}",
        )
    return region != 0


def _read_background(reader, spacing: float, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    region = reader.read(
        spacing, r0, c0, r1 - r0, c1 - c0, fill=0, interpolation="nearest", max_bytes=_NO_LIMIT
    )
    return region[:, :, 0] != 0


def _read_rgb(reader, spacing: float, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    return reader.read(spacing, r0, c0, r1 - r0, c1 - c0, max_bytes=_NO_LIMIT)[:, :, :3]


def _padded(array: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """``array[r0:r1, c0:c1]`` of a 2-D array, zero (False) outside it."""
    out = np.zeros((r1 - r0, c1 - c0), array.dtype)
    a0, a1, b0, b1 = max(r0, 0), min(r1, array.shape[0]), max(c0, 0), min(c1, array.shape[1])
    if a0 < a1 and b0 < b1:
        out[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = array[a0:a1, b0:b1]
    return out


def _tiles(shape: tuple[int, int], size: int) -> list[tuple[int, int, int, int]]:
    return [
        (r, min(r + size, shape[0]), c, min(c + size, shape[1]))
        for r in range(0, shape[0], size)
        for c in range(0, shape[1], size)
    ]


def _windows(
    read: Callable[[int, int, int, int], np.ndarray],
    tops: np.ndarray,
    side: int,
    block: int = 512,
) -> list[np.ndarray]:
    """The ``side`` x ``side`` squares with top-left corners ``tops`` (``(n, 2)``), in order.

    ``read(row0, row1, col0, col1)`` reads a region. Squares are grouped by ``block`` cells;
    a group whose squares cover at least a quarter of their bounding box is read as that box
    (one read instead of many small ones), the others square by square.
    """
    squares: list[np.ndarray] = [np.empty(0)] * len(tops)
    cells = tops // block
    order = np.lexsort((cells[:, 1], cells[:, 0]))
    starts = np.flatnonzero(np.any(np.diff(cells[order], axis=0) != 0, axis=1)) + 1
    for group in np.split(order, starts) if len(order) else []:
        (r0, c0), (r1, c1) = tops[group].min(axis=0), tops[group].max(axis=0) + side
        if (r1 - r0) * (c1 - c0) <= 4 * len(group) * side * side:
            region = read(int(r0), int(r1), int(c0), int(c1))
            for n in group:
                r, c = tops[n, 0] - r0, tops[n, 1] - c0
                squares[n] = region[r : r + side, c : c + side]
        else:
            for n in group:
                r, c = int(tops[n, 0]), int(tops[n, 1])
                squares[n] = read(r, r + side, c, c + side)
    return squares


def _cut(
    read: Callable[[int, int, int, int], np.ndarray],
    positions: np.ndarray,
    size: int,
    rotations: Sequence[float],
) -> np.ndarray:
    """uint8 ``(len(positions) * len(rotations), size, size, 3)`` rotated patches, by position
    then rotation, from ``read(row0, row1, col0, col1)`` (a region of the level)."""
    margin = size // 2
    side = size + 2 * margin
    patches = np.empty((len(positions) * len(rotations), size, size, 3), np.uint8)
    centre = ((side - 1) / 2, (side - 1) / 2)
    inner = slice(margin, margin + size)
    tops = np.asarray(positions, np.int64).reshape(-1, 2) - (size // 2 + margin)
    for n, square in enumerate(_windows(read, tops, side)):
        for k, angle in enumerate(rotations):
            turns = angle / 90
            if turns == round(turns):
                rotated = np.rot90(square, round(turns) % 4)
            else:
                matrix = cv2.getRotationMatrix2D(centre, float(angle), 1.0)
                rotated = cv2.warpAffine(
                    np.ascontiguousarray(square),
                    matrix,
                    (side, side),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT_101,
                )
            patches[n * len(rotations) + k] = rotated[inner, inner]
    return patches


@dataclass
class _LevelPatches:
    patches: np.ndarray
    labels: np.ndarray
    positions: np.ndarray
    spacing: float
    groups: dict[str, tuple[int, int]]  # group -> (candidates, kept positions)


# --------------------------------------------------------------------------------------------
# One image


def _extract_item(
    item: _Item, config: _Config, scratch: Path, on_level: Callable[[int], None]
) -> list[_LevelPatches]:
    with ExitStack() as stack:
        image = stack.enter_context(_open(item.image, config))
        mask = stack.enter_context(_open(item.mask, config))
        other = stack.enter_context(_open(item.background, config)) if item.background else None
        if image.dtype != np.uint8 or image.channels < 3:
            raise SourceError(
                item.image, f"expected a uint8 RGB image, got {image.channels} x {image.dtype}"
            )
        spacings = config.spacings
        actual = [image.refine(s) for s in spacings]
        shapes = [image.shape(s) for s in spacings]
        if mask.shape(spacings[0]) != shapes[0]:
            raise SourceError(
                item.mask,
                f"the mask is {mask.shape(spacings[0])} px at {spacings[0]} µm/px, the image "
                f"{item.image} is {shapes[0]}",
            )
        factors = [a / actual[0] for a in actual]
        whole = shapes[0][0] * shapes[0][1] <= config.max_pixels
        logger.info(
            "%s: %s x %s px at %s µm/px, %s",
            item.image,
            *shapes[0],
            actual[0],
            "whole" if whole else "in tiles",
        )
        size = config.patch_size
        cache: dict[str, np.ndarray] = {}

        if whole:
            cache["mask"] = _read_binary(mask, spacings[0], 0, shapes[0][0], 0, shapes[0][1])

        def read_mask(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
            if whole:
                return _padded(cache["mask"], r0, r1, c0, c1)
            return _read_binary(mask, spacings[0], r0, r1, c0, c1)

        def picker_set(level: int, groups: Mapping[str, Any]) -> dict[str, _Picker]:
            return {
                name: _Picker(config.caps[name], _salt(config.seed, item.image, level, name))
                for name in groups
            }

        def finish(level: int, pickers, groups, source) -> _LevelPatches:
            positions, labels, counts = [], [], {}
            for name, picker in pickers.items():
                kept = picker.positions()
                positions.append(kept)
                labels.append(np.full(len(kept), groups[name][1], np.uint8))
                counts[name] = (picker.candidates, len(kept))
            positions = np.concatenate(positions)
            rotations = config.rotations
            patches = _cut(source, positions, size, rotations)
            result = _LevelPatches(
                patches,
                np.repeat(np.concatenate(labels), len(rotations)),
                np.repeat(positions, len(rotations), axis=0),
                actual[level],
                counts,
            )
            on_level(level)
            return result

        def source_of(level: int) -> Callable[[int, int, int, int], np.ndarray]:
            if whole:
                name = f"image {level}"
                if name not in cache:
                    cache[name] = _read_rgb(
                        image, spacings[level], 0, shapes[level][0], 0, shapes[level][1]
                    )
                array = cache[name]
                return lambda r0, r1, c0, c1: array[r0:r1, c0:c1]
            return lambda r0, r1, c0, c1: _read_rgb(image, spacings[level], r0, r1, c0, c1)

        # -- the finest level ------------------------------------------------------------------
        heuristic = other is None
        settings = config.heuristic
        shape0 = shapes[0]
        halo = config.iterations + (settings.margin(actual[0]) if heuristic else 0)
        cores = _tiles(shape0, max(shape0) if whole else config.tile_size)
        limits = (0, 255)
        if whole:
            if heuristic:
                cache["image 0"] = _read_rgb(image, spacings[0], 0, shape0[0], 0, shape0[1])
                limits = targets.stretch_limits(cache["image 0"][:, :, 0], settings.stretch)
        elif heuristic:
            histogram = np.zeros(256, np.int64)
            for r0, r1, c0, c1 in cores:
                histogram += targets.red_histogram(_read_rgb(image, spacings[0], r0, r1, c0, c1))
            limits = targets.stretch_limits(histogram, settings.stretch)
        coarse: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        if heuristic:
            for level in range(1, len(spacings)):
                rows = targets.nearest_indices(shape0[0], shapes[level][0], factors[level])
                cols = targets.nearest_indices(shape0[1], shapes[level][1], factors[level])
                if whole:
                    target = np.zeros(shapes[level], bool)
                else:
                    target = np.lib.format.open_memmap(
                        scratch / f"background_{level}.npy", "w+", bool, shapes[level]
                    )
                coarse[level] = (target, rows, cols)
        pickers = picker_set(0, FINEST_GROUPS)
        for r0, r1, c0, c1 in cores:
            w0, w1 = max(r0 - halo, 0), min(r1 + halo, shape0[0])
            v0, v1 = max(c0 - halo, 0), min(c1 + halo, shape0[1])
            if heuristic:
                rgb = (
                    cache["image 0"][w0:w1, v0:v1]
                    if whole
                    else _read_rgb(image, spacings[0], w0, w1, v0, v1)
                )
                allowed = targets.heuristic_window(rgb, actual[0], limits, settings)
                del rgb
            else:
                allowed = _read_background(other, spacings[0], w0, w1, v0, v1)
            parts = targets.finest_parts(
                read_mask(w0, w1, v0, v1), allowed, iterations=config.iterations
            )
            core = (slice(r0 - w0, r1 - w0), slice(c0 - v0, c1 - v0))
            _collect(pickers, FINEST_GROUPS, parts[core], (r0, c0), shape0, size)
            for target, rows, cols in coarse.values():
                xs = np.nonzero((rows >= r0) & (rows < r1))[0]
                ys = np.nonzero((cols >= c0) & (cols < c1))[0]
                if len(xs) and len(ys):
                    target[np.ix_(xs, ys)] = allowed[core][np.ix_(rows[xs] - r0, cols[ys] - c0)]
        results = [finish(0, pickers, FINEST_GROUPS, source_of(0))]
        cache.pop("image 0", None)

        # -- the coarser levels ----------------------------------------------------------------
        for level in range(1, len(spacings)):
            shape = shapes[level]
            plan = targets.FractionPlan(shape0, factors[level], shape)
            block = max(16, config.tile_size // plan.box)
            pickers = picker_set(level, LEVEL_GROUPS)
            for r in range(size, shape[0] - size, block):
                for c in range(size, shape[1] - size, block):
                    rows = (r, min(r + block, shape[0] - size))
                    cols = (c, min(c + block, shape[1] - size))
                    fraction = plan.compute(read_mask(*plan.source_window(rows, cols)), rows, cols)
                    if heuristic:
                        allowed = coarse[level][0][rows[0] : rows[1], cols[0] : cols[1]]
                    else:
                        allowed = _read_background(other, spacings[level], *rows, *cols)
                    classes = targets.level_classes(fraction, np.asarray(allowed))
                    _collect(pickers, LEVEL_GROUPS, classes, (r, c), shape, size)
            coarse.pop(level, None)
            results.append(finish(level, pickers, LEVEL_GROUPS, source_of(level)))
            cache.pop(f"image {level}", None)
        return results


# --------------------------------------------------------------------------------------------
# The whole run


def extract_level_patches(
    items: Sequence[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
    output_folder: str | os.PathLike[str],
    spacings: Sequence[float] = DEFAULT_SPACINGS,
    *,
    patch_size: int = 32,
    caps: Mapping[str, int] | None = None,
    rotations: Sequence[float] = (0, 90),
    purposes: Mapping[str, float] | None = None,
    patient: PatientSpec = None,
    background: str | Sequence[str | os.PathLike[str] | None] = "heuristic",
    heuristic: targets.Heuristic | Mapping[str, Any] | None = None,
    edge_iterations: int = targets.EDGE_ITERATIONS,
    seed: int | np.random.Generator | None = 0,
    image_spacing: float | None = None,
    tolerance: float = 0.25,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    tile_size: int = DEFAULT_TILE_SIZE,
    shard_size: int = 8192,
    overwrite: bool = False,
    skip_failures: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> PatchSummary:
    """Cut RADHicaL's level-wise training patches into one patch database per level.

    See the module docstring for the method and the layout.

    Parameters
    ----------
    items
        ``(image, mask)`` path pairs: an RGB image (tile or whole slide, any format
        :class:`~digipath.io.ImageReader` reads) and its binary nucleus mask (0/1 or 0/255)
        with the same shape at the finest spacing.
    output_folder
        Where the ``level_<index>_<spacing>um`` databases go (created).
    spacings
        The levels' spacings in µm/px, finest first.
    patch_size
        Patch side in pixels (32); positions closer than this to a level's border are skipped.
    caps
        Most positions per image and group, overriding :data:`DEFAULT_CAPS` by group name:
        ``nucleus``, ``edge``, ``background`` (finest level), ``negative``, ``mixed``,
        ``positive`` (other levels). Each position gives one patch per rotation.
    rotations
        Angles in degrees, counter-clockwise.
    purposes
        Purpose -> ratio of the images (default ``{"training": 0.8, "validation": 0.2}``),
        split by patient.
    patient
        How to find an image's patient (:func:`digipath.data.split.patient_key`: ``None`` for
        the file name's text before the first ``_``, a regular expression, a mapping, a CSV
        table path or a function).
    background
        ``"heuristic"`` (the original's background heuristic), or one mask path per item
        (``None`` entries use the heuristic): nonzero where negatives may be sampled, e.g. a
        tissue mask, at any spacing (read at each level's spacing by nearest neighbour).
    heuristic
        :class:`~digipath.radhical.targets.Heuristic` or a mapping of its settings.
    edge_iterations
        Dilations of the edge ring (3).
    seed
        Seed (or generator) of the patient split and of the patch draws.
    image_spacing
        Level-0 spacing (µm/px) assumed for files that state none (tiles often do not).
    tolerance
        Relative tolerance matching requested spacings to the files' levels.
    max_pixels
        Images with more pixels than this at the finest level are processed in tiles.
    tile_size
        Tile side in pixels at the finest level.
    shard_size
        Most patches per shard file of the databases.
    overwrite
        Replace existing databases in the level folders (otherwise an error).
    skip_failures
        Skip an image that cannot be read (listed in :attr:`PatchSummary.failures`) instead of
        stopping the run.
    progress
        ``progress(done, total)`` after each level of each image (``total`` = images x levels).

    Returns
    -------
    PatchSummary

    Raises
    ------
    ConfigError
        Invalid parameters (the key names which).
    SplitError
        Invalid purposes or an image without patient.
    FileError
        A level folder holds a database and ``overwrite`` is false.
    DigipathError
        An image or mask that cannot be read or does not fit (names the file).
    """
    spacings = _check_spacings(spacings)
    size = _number(patch_size, "patch_size", minimum=2, integer=True)
    if isinstance(rotations, str | bytes) or not isinstance(rotations, Sequence) or not rotations:
        raise ConfigError("rotations", f"expected a list of angles in degrees, got {rotations!r}")
    angles = tuple(_number(a, f"rotations[{i}]", minimum=-1e9) for i, a in enumerate(rotations))
    entries = _check_items(items, background)
    ratios = dict(DEFAULT_PURPOSES if purposes is None else purposes)
    generator = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    base = (
        seed
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
        else int(generator.integers(2**62))
    )
    config = _Config(
        spacings=spacings,
        patch_size=size,
        caps=_check_caps(caps),
        rotations=angles,
        heuristic=_check_heuristic(heuristic),
        iterations=_number(edge_iterations, "edge_iterations", minimum=0, integer=True),
        image_spacing=None
        if image_spacing is None
        else _number(image_spacing, "image_spacing", minimum=1e-9),
        tolerance=_number(tolerance, "tolerance", minimum=0),
        max_pixels=_number(max_pixels, "max_pixels", minimum=1, integer=True),
        tile_size=_number(tile_size, "tile_size", minimum=16, integer=True),
        seed=int(base),
    )
    output = Path(output_folder)
    folders = [output / level_folder(i, s) for i, s in enumerate(spacings)]
    _prepare_folders(folders, overwrite)

    parts = split_by_patient(
        entries, ratios, generator, patient=patient, path=lambda entry: entry.image
    )
    key = patient_key(patient)
    purpose_of = {entry.image: purpose for purpose, chosen in parts.items() for entry in chosen}
    patient_of = {entry.image: key(entry.image) for entry in entries}
    split = {str(p): sorted({patient_of[e.image] for e in chosen}) for p, chosen in parts.items()}
    heuristic_used = any(entry.background is None for entry in entries)
    masks_used = any(entry.background is not None for entry in entries)
    background_kind = {(True, False): "heuristic", (False, True): "masks"}.get(
        (heuristic_used, masks_used), "masks and heuristic"
    )
    common: dict[str, Any] = {
        "method": "RADHicaL level patches",
        "spacings": list(spacings),
        "patch size": size,
        "rotations": list(angles),
        "caps": dict(config.caps),
        "caps count": "positions per image and group; one patch per rotation each",
        "edge iterations": config.iterations,
        "background": background_kind,
        "seed": config.seed,
        "purposes": {str(k): float(v) for k, v in ratios.items()},
        "patient split": split,
        "tolerance": config.tolerance,
    }
    if heuristic_used:
        common["heuristic"] = {
            "threshold": config.heuristic.threshold,
            "stretch": list(config.heuristic.stretch),
            "min blob um2": config.heuristic.min_blob_um2,
            "box um": config.heuristic.box_um,
        }
    level_images: list[dict[str, float]] = [{} for _ in spacings]
    counts = [
        {p: np.zeros(len(FINEST_CLASSES if k == 0 else LEVEL_CLASSES), np.int64) for p in ratios}
        for k in range(len(spacings))
    ]
    contributors: list[dict[str, set[str]]] = [{p: set() for p in ratios} for _ in spacings]
    failures: list[tuple[str, str]] = []
    total = len(entries) * len(spacings)
    output.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        writers = []
        for index, (folder, spacing) in enumerate(zip(folders, spacings, strict=True)):
            classes = FINEST_CLASSES if index == 0 else LEVEL_CLASSES
            groups = FINEST_GROUPS if index == 0 else LEVEL_GROUPS
            metadata = {
                **common,
                "level": index,
                "groups": {
                    g: {"label": label, "cap": config.caps[g]} for g, (_, label) in groups.items()
                },
            }
            writers.append(
                stack.enter_context(
                    PatchDatabaseWriter(
                        folder,
                        (size, size),
                        3,
                        classes,
                        spacing=spacing,
                        shard_size=shard_size,
                        metadata=metadata,
                    )
                )
            )
        scratch = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix=".radhical-", dir=output))
        )
        for number, entry in enumerate(entries):
            done = number * len(spacings)

            def on_level(level: int, done: int = done) -> None:
                if progress is not None:
                    progress(done + level + 1, total)

            try:
                levels = _extract_item(entry, config, scratch, on_level)
            except (DigipathError, OSError, ValueError) as error:
                if not skip_failures:
                    raise
                logger.warning("%s: skipped: %s", entry.image, error)
                failures.append((entry.image, str(error)))
                if progress is not None:
                    progress(done + len(spacings), total)
                continue
            purpose = purpose_of[entry.image]
            for index, result in enumerate(levels):
                level_images[index][entry.image] = float(result.spacing)
                if len(result.labels) == 0:
                    continue
                writers[index].add(
                    purpose,
                    result.patches,
                    result.labels,
                    source=entry.image,
                    patient=patient_of[entry.image],
                    positions=result.positions,
                )
                counts[index][purpose] += np.bincount(
                    result.labels, minlength=len(counts[index][purpose])
                )
                contributors[index][purpose].add(entry.image)
                logger.debug("%s level %d: %s", entry.image, index, result.groups)
        for index, writer in enumerate(writers):
            writer.metadata["image spacings"] = level_images[index]
            if failures:
                writer.metadata["skipped images"] = [image for image, _ in failures]
    summaries = []
    for index, (folder, spacing) in enumerate(zip(folders, spacings, strict=True)):
        classes = list(FINEST_CLASSES if index == 0 else LEVEL_CLASSES)
        purposes_summary = {}
        for purpose in ratios:
            images = contributors[index][purpose]
            purposes_summary[str(purpose)] = PurposeSummary(
                dict(zip(classes, (int(n) for n in counts[index][purpose]), strict=True)),
                images=len(images),
                patients=len({patient_of[i] for i in images}),
            )
        summaries.append(LevelSummary(index, spacing, folder, classes, purposes_summary))
    images_of = {str(p): [e.image for e in chosen] for p, chosen in parts.items()}
    return PatchSummary(summaries, split, images_of, failures)
