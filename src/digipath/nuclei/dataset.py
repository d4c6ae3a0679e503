"""HoVer-Net training data: patch sets cut from annotated tiles, and augmented batch sources.

The pipeline follows the original repository (``extract_patches.py``, ``dataloader/
train_loader.py``, ``dataloader/augs.py``; reference notes §2.2-2.4):

1. **Patch set** (:func:`build_patch_set`): every tile (an RGB image with an instance map and,
   optionally, a type map, read with :func:`~digipath.nuclei.io.read_nuclei` from ``.mat``,
   ``.npy``, instance PNGs or colour-coded type masks with a ``type_info.json``) is cut into
   windows of ``window`` px every ``step`` px by :func:`~digipath.nuclei.targets.
   extract_patches` (540 / 164 and mirror padding by default). The windows are stored as a
   sharded ``.npy`` set (:class:`NucleusPatchSet`): per shard ``images_NNNNN.npy`` (uint8
   ``(N, H, W, 3)``), ``instances_NNNNN.npy`` (int32 ``(N, H, W)``) and, with types,
   ``types_NNNNN.npy`` (uint8), indexed by ``patches.json``. A
   :class:`~digipath.data.patch_database.PatchDatabase` is not used: it stores one class
   label per patch, not the dense instance and type maps HoVer-Net needs.
2. **Augmentation** (:func:`augment_sample`), per sample and in the original's order:
   geometric augmentation applied identically to the image, the instance map and the type
   map (random horizontal and vertical flips and a random multiple of 90 degrees: exact,
   no interpolation), the centre crop to the network input (270 px for the ``original`` model,
   256 for ``fast``), then colour augmentation of the image only
   (:func:`hovernet_colour_jitter`: one of Gaussian blur, median blur or Gaussian noise,
   then hue, saturation, contrast and brightness in random order with the original's ranges).
3. **Targets** (:func:`~digipath.nuclei.targets.hovernet_targets`) are computed *after*
   augmentation from the augmented, cropped instance map (HV depends on the geometry) and
   centre-cropped to the network output (80 or 164 px).
4. **Batches** (:class:`HoVerNetBatchSource`): the generator interface
   :class:`~digipath.training.trainer.NetworkTrainer` drives (``start``, ``stop``, ``step``,
   ``fill``, ``load``, ``transfer``, ``boosted_transfer``, ``ping``, ``batch``, ``update``,
   ``rng``, ``_order_rng``, ``name``, ``patch_shapes``), with a main buffer of augmented
   samples and an optional read buffer filled by a background thread.

Differences from the original, on purpose: the random affine transform (scale 0.8-1.2, shear,
rotation, translation, nearest-neighbour interpolation of the masks) is replaced by the
dihedral flips / 90-degree rotations, which need no interpolation (the maintainers advise
turning the affine part off for PanNuke, issue #113).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from digipath.data.buffered import boosting_transfer_count
from digipath.nuclei.io import NucleiError, NucleusMaps, TypeInfo, read_nuclei
from digipath.nuclei.targets import (
    HOVERNET_GEOMETRY,
    MIN_CROP_SIZE,
    TRAINING_STEP,
    TRAINING_WINDOW,
    HoVerNetTargets,
    center_crop,
    extract_patches,
    hovernet_targets,
)

__all__ = [
    "COLOUR_RANGES",
    "HoVerNetBatchSource",
    "NucleusPatchSet",
    "augment_sample",
    "build_patch_set",
    "geometric_augment",
    "hovernet_colour_jitter",
    "pool_colour",
    "read_tile",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Tile = PathLike | tuple[Any, Any]
"""A training tile: an ``.npy`` training tile holding its image (``(rows, cols, 5)`` RGB +
instances + types, as the original saves them), or an ``(image, annotation)`` pair where the
image is a path or an ``(rows, cols, 3)`` uint8 array and the annotation a path (any format of
:func:`~digipath.nuclei.io.read_nuclei`) or a :class:`~digipath.nuclei.io.NucleusMaps`."""

INDEX = "patches.json"
FORMAT = "digipath nucleus patch set"
VERSION = 1

COLOUR_RANGES: dict[str, tuple[float, float]] = {
    "hue": (-8.0, 8.0),
    "saturation": (-0.2, 0.2),
    "contrast": (0.75, 1.25),
    "brightness": (-26.0, 26.0),
}
"""The original's colour ranges (``dataloader/augs.py``): hue added to OpenCV's 0-180 hue
channel, saturation ``1 + u`` blended with the grey image, contrast ``u`` around the
per-channel mean, brightness ``u`` added to every channel (0-255 scale)."""

NOISE_SCALE = 0.05 * 255
"""Largest standard deviation of the additive Gaussian noise (the original's
``AdditiveGaussianNoise(scale=(0, 0.05 * 255), per_channel=0.5)``)."""


# --------------------------------------------------------------------------------------------
# Tiles and patch sets


def _read_rgb(path: PathLike) -> np.ndarray:
    image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if image is None:
        raise NucleiError(f"{os.fspath(path)}: cannot read the image (missing or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_tile(
    tile: Tile,
    *,
    type_info: TypeInfo | Mapping | PathLike | None = None,
    type_mapping: Mapping[int, int] | None = None,
) -> tuple[np.ndarray, NucleusMaps]:
    """Read one training tile: ``(image, maps)``.

    Parameters
    ----------
    tile
        See :data:`Tile`.
    type_info, type_mapping
        Passed to :func:`~digipath.nuclei.io.read_nuclei` (colour-coded type masks, class
        merges).

    Returns
    -------
    (image, maps)
        ``(rows, cols, 3)`` uint8 RGB and the tile's :class:`~digipath.nuclei.io.NucleusMaps`.

    Raises
    ------
    NucleiError
        When the image is missing or unreadable, or its size differs from the annotation's.
    """
    if isinstance(tile, (str, os.PathLike)):
        maps = read_nuclei(tile, type_info=type_info, type_mapping=type_mapping)
        if maps.image is None:
            raise NucleiError(
                f"{os.fspath(tile)}: holds no image; give the tile as an (image, annotation) pair"
            )
        image, where = maps.image, os.fspath(tile)
    elif isinstance(tile, tuple) and len(tile) == 2:
        source, annotation = tile
        if isinstance(annotation, NucleusMaps):
            maps = annotation
        else:
            maps = read_nuclei(annotation, type_info=type_info, type_mapping=type_mapping)
        if isinstance(source, (str, os.PathLike)):
            image, where = _read_rgb(source), os.fspath(source)
        else:
            image, where = np.asarray(source), "the image array"
    else:
        raise NucleiError(
            f"a tile is an .npy training tile path or an (image, annotation) pair, got {tile!r}"
        )
    if image.ndim != 3 or image.shape[2] < 3:
        raise NucleiError(f"{where}: expected an (rows, cols, 3) RGB image, got {image.shape}")
    image = np.ascontiguousarray(image[..., :3])
    if image.dtype != np.uint8:
        raise NucleiError(f"{where}: expected a uint8 image, got {image.dtype}")
    if image.shape[:2] != maps.shape:
        raise NucleiError(
            f"{where}: the image is {image.shape[:2]} px but its annotation "
            f"({maps.path or 'given maps'}) is {maps.shape}"
        )
    return image, maps


class NucleusPatchSet:
    """A sharded ``.npy`` set of ``(image, instances, types)`` training patches.

    Parameters
    ----------
    folder
        A folder written by :func:`build_patch_set`.

    Attributes
    ----------
    folder : pathlib.Path
    window : tuple of int
        ``(rows, cols)`` of the patches.
    has_types : bool
        Whether type maps are stored.
    types : int or None
        Number of types, background included (from the type info, else the largest type + 1),
        ``None`` without types.
    type_info : dict or None
        The ``type_info.json`` content, when one was given.
    origins : numpy.ndarray
        ``(N, 3)`` int64: tile index, row, column of each patch's top-left pixel in its tile.
    tiles : list of str
        A description of each tile.

    Raises
    ------
    NucleiError
        When the index is missing, of another format, or names missing shards.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        index_path = self.folder / INDEX
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NucleiError(f"{index_path}: no patch set index (build one first)") from None
        except (OSError, ValueError) as error:
            raise NucleiError(f"{index_path}: cannot read the index: {error}") from None
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise NucleiError(
                f"{index_path}: format {index.get('format')!r} version {index.get('version')!r}"
                f", expected {FORMAT!r} version {VERSION}"
            )
        self.window = tuple(int(v) for v in index["window"])
        self.step = tuple(int(v) for v in index["step"])
        self.has_types = bool(index["has_types"])
        self.types = index.get("types")
        self.type_info = index.get("type_info")
        self.tiles = list(index["tiles"])
        self.origins = np.asarray(index["origins"], np.int64).reshape(-1, 3)
        self._counts = [int(c) for c in index["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(self._counts)]).astype(np.int64)
        self._arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        for shard, count in enumerate(self._counts):
            names = [f"images_{shard:05d}.npy", f"instances_{shard:05d}.npy"]
            if self.has_types:
                names.append(f"types_{shard:05d}.npy")
            arrays = []
            for name in names:
                path = self.folder / name
                if not path.exists():
                    raise NucleiError(f"{path}: shard file missing from the patch set")
                array = np.load(path, mmap_mode="r")
                if array.shape[0] != count or tuple(array.shape[1:3]) != self.window:
                    raise NucleiError(
                        f"{path}: shape {array.shape}, the index expects {count} patches of "
                        f"{self.window}"
                    )
                arrays.append(array)
            self._arrays.append((arrays[0], arrays[1], arrays[2] if self.has_types else None))

    def __len__(self) -> int:
        return int(self._starts[-1])

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Patch ``index``: ``(image uint8 (H, W, 3), instances int32 (H, W), types or None)``."""
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.folder}: patch {index} of {len(self)}")
        shard = int(np.searchsorted(self._starts, index, side="right") - 1)
        offset = index - int(self._starts[shard])
        image, instances, types = self._arrays[shard]
        return (
            np.array(image[offset]),
            np.array(instances[offset]),
            None if types is None else np.array(types[offset]),
        )

    def __repr__(self) -> str:
        return (
            f"NucleusPatchSet({str(self.folder)!r}, {len(self)} patches of {self.window}, "
            f"types {self.types})"
        )


def _type_info_dict(type_info: TypeInfo | Mapping | PathLike | None) -> dict | None:
    if type_info is None:
        return None
    from digipath.nuclei.io import _type_info

    return _type_info(type_info).to_dict()


def build_patch_set(
    tiles: Sequence[Tile],
    folder: PathLike,
    *,
    window: int | Sequence[int] = TRAINING_WINDOW,
    step: int | Sequence[int] = TRAINING_STEP,
    mode: Literal["mirror", "valid"] = "mirror",
    type_info: TypeInfo | Mapping | PathLike | None = None,
    type_mapping: Mapping[int, int] | None = None,
    shard_size: int = 256,
    overwrite: bool = False,
) -> NucleusPatchSet:
    """Cut annotated tiles into training patches and store them as a :class:`NucleusPatchSet`.

    Parameters
    ----------
    tiles
        The tiles (:data:`Tile`); either all or none must have types.
    folder
        The output folder (created).
    window, step, mode
        Patch geometry of :func:`~digipath.nuclei.targets.extract_patches` (the original's
        540 / 164 with mirror padding by default).
    type_info
        ``type_info.json`` (or its content): decodes colour-coded type masks and is kept in the
        index; its length is the number of types.
    type_mapping
        Optional type merge applied when reading (:func:`~digipath.nuclei.io.remap_types`).
    shard_size
        Patches per shard file.
    overwrite
        Replace an existing patch set; otherwise an existing one is an error.

    Returns
    -------
    NucleusPatchSet

    Raises
    ------
    NucleiError
        For unreadable tiles, mixed typed / untyped tiles, types above 255, instance ids
        that do not fit int32, or an existing set without ``overwrite``.
    """
    if not tiles:
        raise NucleiError("build_patch_set: no tiles given")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise NucleiError(f"shard_size must be an integer >= 1, got {shard_size!r}")
    out = Path(folder)
    if (out / INDEX).exists():
        if not overwrite:
            raise NucleiError(f"{out}: a patch set exists already (give overwrite=True)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    info = _type_info_dict(type_info)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    shards: list[int] = []
    origins: list[list[int]] = []
    names: list[str] = []
    has_types: bool | None = None
    top_type = 0
    win: tuple[int, ...] | None = None
    stp: tuple[int, ...] | None = None

    def flush() -> None:
        if not pending:
            return
        shard = len(shards)
        images = np.stack([p[0] for p in pending])
        instances = np.stack([p[1] for p in pending])
        np.save(out / f"images_{shard:05d}.npy", images)
        np.save(out / f"instances_{shard:05d}.npy", instances)
        if has_types:
            np.save(out / f"types_{shard:05d}.npy", np.stack([p[2] for p in pending]))
        shards.append(len(pending))
        pending.clear()

    for number, tile in enumerate(tiles):
        image, maps = read_tile(tile, type_info=type_info, type_mapping=type_mapping)
        where = maps.path or (os.fspath(tile) if isinstance(tile, (str, os.PathLike)) else
                              f"tile {number}")  # fmt: skip
        typed = maps.types is not None
        if has_types is None:
            has_types = typed
        elif typed != has_types:
            raise NucleiError(
                f"{where}: {'has' if typed else 'lacks'} a type map, unlike the first tile"
            )
        instances = maps.instances
        if instances.size and int(instances.max()) > np.iinfo(np.int32).max:
            raise NucleiError(f"{where}: instance ids exceed int32")
        layers = [image.astype(np.int64), instances.astype(np.int64)[..., None]]
        if typed:
            assert maps.types is not None
            if maps.types.size and (int(maps.types.max()) > 255 or int(maps.types.min()) < 0):
                raise NucleiError(f"{where}: types must lie in 0 .. 255")
            top_type = max(top_type, int(maps.types.max()) if maps.types.size else 0)
            layers.append(maps.types.astype(np.int64)[..., None])
        stacked = np.concatenate(layers, axis=2)
        patches = extract_patches(stacked, window, step, mode)
        win = tuple(patches.patches.shape[1:3])
        stp = (step, step) if isinstance(step, int) else tuple(int(s) for s in step)
        for patch, origin in zip(patches.patches, patches.origins, strict=True):
            pending.append((
                patch[..., :3].astype(np.uint8),
                patch[..., 3].astype(np.int32),
                patch[..., 4].astype(np.uint8) if typed else None,
            ))  # fmt: skip
            origins.append([number, int(origin[0]), int(origin[1])])
            if len(pending) >= shard_size:
                flush()
        names.append(where)
    flush()
    types = None
    if has_types:
        types = max(int(k) for k in info) + 1 if info else None
        if types is not None and top_type >= types:
            raise NucleiError(
                f"{out}: the tiles hold type {top_type} but the type info names {types} types"
            )
        if types is None:
            types = top_type + 1
    index = {
        "format": FORMAT,
        "version": VERSION,
        "window": list(win or ()),
        "step": list(stp or ()),
        "mode": mode,
        "has_types": bool(has_types),
        "types": types,
        "type_info": info,
        "tiles": names,
        "shards": shards,
        "origins": origins,
    }
    (out / INDEX).write_text(json.dumps(index), encoding="utf-8")
    logger.info("%s: %d patches of %s from %d tiles", out, len(origins), win, len(names))
    return NucleusPatchSet(out)


# --------------------------------------------------------------------------------------------
# Augmentation


def geometric_augment(
    arrays: Sequence[np.ndarray | None], rng: np.random.Generator
) -> list[np.ndarray | None]:
    """The same random flips and 90-degree rotation on every array (``None`` kept).

    Draws, in this order: a left-right flip (p = 0.5), an up-down flip (p = 0.5) and a
    rotation by ``k * 90`` degrees, ``k`` uniform in 0 .. 3. Exact (no interpolation), so
    instance ids and types stay intact; non-square arrays may change shape with odd ``k``.
    """
    flip_lr = bool(rng.random() < 0.5)
    flip_ud = bool(rng.random() < 0.5)
    k = int(rng.integers(0, 4))
    out: list[np.ndarray | None] = []
    for array in arrays:
        if array is None:
            out.append(None)
            continue
        if flip_lr:
            array = array[:, ::-1]
        if flip_ud:
            array = array[::-1]
        if k:
            array = np.rot90(array, k, axes=(0, 1))
        out.append(np.ascontiguousarray(array))
    return out


def _hue(image: np.ndarray, value: float) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0].astype(np.float32) + value, 180).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _saturation(image: np.ndarray, value: float) -> np.ndarray:
    value = 1.0 + value
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None].astype(np.float32)
    result = image.astype(np.float32) * value + grey * (1.0 - value)
    return np.clip(result, 0, 255).astype(np.uint8)


def _contrast(image: np.ndarray, value: float) -> np.ndarray:
    mean = image.mean(axis=(0, 1), keepdims=True, dtype=np.float32)
    result = image.astype(np.float32) * value + mean * (1.0 - value)
    return np.clip(result, 0, 255).astype(np.uint8)


def _brightness(image: np.ndarray, value: float) -> np.ndarray:
    return np.clip(image.astype(np.float32) + value, 0, 255).astype(np.uint8)


_COLOUR = {"hue": _hue, "saturation": _saturation, "contrast": _contrast,
           "brightness": _brightness}  # fmt: skip


def hovernet_colour_jitter(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    blur: bool = True,
) -> np.ndarray:
    """The original's colour augmentation of an RGB uint8 image (``input_augs``).

    First one of (equally likely): a Gaussian blur with kernel sizes drawn from {1, 3} per
    axis, a median blur with a kernel from {1, 3, 5}, or additive Gaussian noise (standard
    deviation uniform in 0 .. :data:`NOISE_SCALE`, per channel with probability 0.5); then
    hue, saturation, contrast and brightness (:data:`COLOUR_RANGES`) in random order.

    Parameters
    ----------
    image
        ``(rows, cols, 3)`` uint8 RGB.
    rng
        The random generator.
    ranges
        Replaces entries of :data:`COLOUR_RANGES` (``{"hue": (-8, 8), ...}``); a ``None``
        range or ``(0, 0)`` (``(1, 1)`` for contrast) disables that operation.
    blur
        Apply the blur / noise step.

    Returns
    -------
    numpy.ndarray
        The augmented image, uint8, same shape.
    """
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise NucleiError(f"colour jitter needs (rows, cols, 3) uint8, got {image.dtype} "
                          f"{image.shape}")  # fmt: skip
    chosen = dict(COLOUR_RANGES)
    for key, value in (ranges or {}).items():
        if key not in COLOUR_RANGES:
            raise NucleiError(f"colour range {key!r}: expected one of {', '.join(COLOUR_RANGES)}")
        chosen[key] = value  # type: ignore[assignment]
    if blur:
        which = int(rng.integers(0, 3))
        if which == 0:
            size = tuple(int(s) * 2 + 1 for s in rng.integers(0, 2, size=2))
            image = cv2.GaussianBlur(image, size, sigmaX=0)
        elif which == 1:
            image = cv2.medianBlur(image, int(rng.integers(0, 3)) * 2 + 1)
        else:
            scale = float(rng.uniform(0.0, NOISE_SCALE))
            channels = 3 if rng.random() < 0.5 else 1
            noise = rng.normal(0.0, scale, size=(*image.shape[:2], channels))
            image = np.clip(image + noise, 0, 255).astype(np.uint8)
    for key in rng.permutation(list(COLOUR_RANGES)):
        bounds = chosen[str(key)]
        if bounds is None:
            continue
        low, high = float(bounds[0]), float(bounds[1])
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise NucleiError(f"colour range {key!r}: expected (low, high), got {bounds!r}")
        image = _COLOUR[str(key)](image, float(rng.uniform(low, high)))
    return image


def pool_colour(
    pool, *, jitter: bool = True
) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """A ``colour`` callable for :class:`HoVerNetBatchSource` from digipath's augmenters.

    Parameters
    ----------
    pool
        A :class:`~digipath.augment.AugmenterPool` of pixel-wise augmenters (HED and HSB
        colour, contrast, noise, blur ...): spatial ones are refused, because the instance
        and type maps must move with the image (the source applies flips and quarter turns
        itself, to all maps).
    jitter
        Apply the original's jitter (:func:`hovernet_colour_jitter`) first.

    Returns
    -------
    callable
        ``colour(image, rng) -> image`` on ``(rows, cols, 3)`` uint8; thread-safe (the pool
        keeps its current draw, so calls are serialised).
    """
    def spatial_names(augmenter) -> list[str]:
        children = getattr(augmenter, "children", None)
        if children is None:
            return [augmenter.keyword] if augmenter.spatial else []
        return [name for child in children for name in spatial_names(child)]

    spatial = spatial_names(pool.as_augmenter())
    if spatial:
        raise NucleiError(
            f"augmentation: {', '.join(spatial)} move pixels; HoVer-Net training applies only "
            "pixel-wise augmenters to the image (flips and quarter turns are applied to the "
            "image and its instance maps together)"
        )
    lock = threading.Lock()

    def colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if jitter:
            image = hovernet_colour_jitter(image, rng)
        with lock:
            patches, _ = pool.process(image[None], None, rng=rng)
        return np.ascontiguousarray(patches[0], dtype=np.uint8)

    return colour


def augment_sample(
    image: np.ndarray,
    instances: np.ndarray,
    types: np.ndarray | None,
    input_shape: Sequence[int],
    output_shape: Sequence[int],
    rng: np.random.Generator,
    *,
    geometric: bool = True,
    colour: bool | Callable[[np.ndarray, np.random.Generator], np.ndarray] = True,
    min_size: int = MIN_CROP_SIZE,
) -> tuple[np.ndarray, HoVerNetTargets]:
    """Augment one patch and compute its targets (the original's ``FileLoader.__getitem__``).

    Parameters
    ----------
    image, instances, types
        The stored patch (``(H, W, 3)`` uint8, ``(H, W)`` ids, ``(H, W)`` types or ``None``).
    input_shape, output_shape
        Network input (the crop of the augmented patch) and output (the targets' crop).
    rng
        The random generator of this sample.
    geometric
        Flips and 90-degree rotations (:func:`geometric_augment`), same on all maps.
    colour
        ``True``: :func:`hovernet_colour_jitter`; ``False``: none; or a callable
        ``colour(image, rng) -> image``.
    min_size
        See :func:`~digipath.nuclei.targets.hv_maps`.

    Returns
    -------
    (image, targets)
        The ``input_shape`` uint8 image and its :class:`~digipath.nuclei.targets.
        HoVerNetTargets` at ``output_shape``, computed after augmentation.
    """
    if geometric:
        image, instances, types = geometric_augment([image, instances, types], rng)
    shape = (int(input_shape[0]), int(input_shape[1]))
    if image.shape[0] < shape[0] or image.shape[1] < shape[1]:
        raise NucleiError(f"the patch ({image.shape[:2]}) is smaller than the input {shape}")
    image = np.ascontiguousarray(center_crop(image, shape))
    instances = np.ascontiguousarray(center_crop(instances, shape))
    types = None if types is None else np.ascontiguousarray(center_crop(types, shape))
    if colour is True:
        image = hovernet_colour_jitter(image, rng)
    elif callable(colour):
        image = np.asarray(colour(image, rng), np.uint8)
    targets = hovernet_targets(instances, types, output_shape, min_size=min_size)
    return image, targets


# --------------------------------------------------------------------------------------------
# Batch source


class _Buffer:
    """Augmented samples: images, NP, HV, TP, per-sample errors and a shuffled order."""

    def __init__(self, size: int, input_shape, output_shape, typed: bool) -> None:
        self.size = size
        self.images = np.zeros((size, *input_shape, 3), np.uint8)
        self.np = np.zeros((size, *output_shape), np.uint8)
        self.hv = np.zeros((size, 2, *output_shape), np.float32)
        self.tp = np.zeros((size, *output_shape), np.uint8) if typed else None
        self.errors = np.ones(size, np.float32)  # unseen patches count as difficult
        self.index = np.full(size, -1, np.int64)  # the patch each slot holds
        self.order = np.arange(size)
        self.cursor = 0

    def put(self, slot: int, index: int, image: np.ndarray, targets: HoVerNetTargets) -> None:
        self.index[slot] = index
        self.images[slot] = image
        self.np[slot] = targets.np
        self.hv[slot] = np.moveaxis(targets.hv, 2, 0)
        if self.tp is not None:
            self.tp[slot] = targets.tp
        self.errors[slot] = 1.0

    def copy_slot(self, target: int, source: _Buffer, slot: int) -> None:
        self.index[target] = source.index[slot]
        self.images[target] = source.images[slot]
        self.np[target] = source.np[slot]
        self.hv[target] = source.hv[slot]
        if self.tp is not None and source.tp is not None:
            self.tp[target] = source.tp[slot]
        self.errors[target] = source.errors[slot]

    def shuffle(self, rng: np.random.Generator) -> None:
        self.order = rng.permutation(self.size)
        self.cursor = 0


class HoVerNetBatchSource:
    """Augmented HoVer-Net batches from a :class:`NucleusPatchSet`, for ``NetworkTrainer``.

    Samples are drawn from the patch set in shuffled cycles; each gets its own augmentation
    seed from :attr:`rng`, so the batches do not depend on threading. A load augments the
    samples and computes their targets (:func:`augment_sample`) into a buffer; batches are
    drawn from the main buffer in a shuffled order (:attr:`_order_rng`), reshuffled at each
    pass. With ``read_buffer_size > 0`` the read buffer is loaded by a background thread while
    the network trains, then swapped in (:meth:`transfer`); otherwise :meth:`load` refills the
    main buffer and waits.

    Parameters
    ----------
    patches
        A :class:`NucleusPatchSet` or its folder.
    mode
        ``"original"`` or ``"fast"``: the default geometry (270 -> 80 / 256 -> 164).
    input_shape
        Network input ``(rows, cols)`` (default: the mode's); the output follows from
        :func:`~digipath.models.networks.hovernet.hovernet_output_shape`.
    augment
        Geometric and colour augmentation (``False`` for validation: centre crop only).
    colour
        ``True`` (the original's jitter), ``False`` or a callable ``colour(image, rng)``;
        used only with ``augment``.
    main_buffer_size
        Samples in the main buffer (default: the patch count, at most 256).
    read_buffer_size
        Samples of the background read buffer (0: none).
    types
        ``True``: hand out ``tp`` targets (the patch set must have types); default: when the
        patch set has them.
    spacing
        Key of :attr:`patch_shapes` and of the batches (a tile has no spacing; 1.0).
    min_size
        See :func:`~digipath.nuclei.targets.hv_maps`.
    seed
        Seed (or generator) of every draw.
    name
        Shown in logs; keys the random state in the trainer's state file.
    """

    def __init__(
        self,
        patches: NucleusPatchSet | PathLike,
        *,
        mode: str = "original",
        input_shape: Sequence[int] | None = None,
        augment: bool = True,
        colour: bool | Callable[[np.ndarray, np.random.Generator], np.ndarray] = True,
        main_buffer_size: int | None = None,
        read_buffer_size: int = 0,
        types: bool | None = None,
        spacing: float = 1.0,
        min_size: int = MIN_CROP_SIZE,
        seed: np.random.Generator | int | None = None,
        name: str = "training",
    ) -> None:
        from digipath.models.networks.hovernet import hovernet_output_shape

        self.patches = patches if isinstance(patches, NucleusPatchSet) else NucleusPatchSet(patches)
        if mode not in HOVERNET_GEOMETRY:
            raise NucleiError(f"mode must be one of {', '.join(HOVERNET_GEOMETRY)}, got {mode!r}")
        self.mode = mode
        if input_shape is None:
            input_shape = HOVERNET_GEOMETRY[mode][0]
        self.input_shape = (int(input_shape[0]), int(input_shape[1]))
        try:
            self.output_shape = tuple(hovernet_output_shape(self.input_shape, mode))
        except ValueError as error:
            raise NucleiError(f"input_shape: {error}") from None
        window = self.patches.window
        if window[0] < self.input_shape[0] or window[1] < self.input_shape[1]:
            raise NucleiError(
                f"{self.patches.folder}: patches of {window} are smaller than the network input "
                f"{self.input_shape}"
            )
        if not len(self.patches):
            raise NucleiError(f"{self.patches.folder}: the patch set is empty")
        if types is None:
            types = self.patches.has_types
        if types and not self.patches.has_types:
            raise NucleiError(f"{self.patches.folder}: types requested but no type maps stored")
        self.typed = bool(types)
        for what, value, low in (("main_buffer_size", main_buffer_size, 1),
                                 ("read_buffer_size", read_buffer_size, 0)):  # fmt: skip
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise NucleiError(f"{what} must be an integer >= {low}, got {value!r}")
        self.main_buffer_size = int(main_buffer_size or min(len(self.patches), 256))
        self.read_buffer_size = int(read_buffer_size)
        self.augment = bool(augment)
        self.colour = colour
        self.min_size = int(min_size)
        self.spacing = float(spacing)
        self.patch_shapes = {self.spacing: self.input_shape}
        self.name = name
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._order_rng = np.random.default_rng(self.rng.integers(0, 2**63 - 1))
        self.main: _Buffer | None = None
        self.read: _Buffer | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: concurrent.futures.Future | None = None
        self._cycle = np.zeros(0, np.int64)
        self._cursor = 0
        self._filled = False

    # -- life cycle -----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran (and :meth:`stop` did not)."""
        return self.main is not None

    @property
    def size(self) -> int:
        """Main buffer size (samples)."""
        return self.main_buffer_size

    def start(self) -> None:
        """Create the buffers (and the loader thread with a read buffer); idempotent."""
        if self.started:
            return
        self.main = _Buffer(self.main_buffer_size, self.input_shape, self.output_shape, self.typed)
        if self.read_buffer_size:
            self.read = _Buffer(
                self.read_buffer_size, self.input_shape, self.output_shape, self.typed
            )
            self._executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"digipath-{self.name}-hovernet"
            )

    def stop(self) -> None:
        """Stop the loader thread and drop the buffers (idempotent; never raises)."""
        if self._pending is not None:
            self._pending.cancel()
        if self._executor is not None:
            try:
                self._executor.shutdown(wait=True, cancel_futures=True)
            except Exception:  # pragma: no cover - defensive
                logger.exception("%s: stopping the loader thread failed", self.name)
        self._executor = self._pending = None
        self.main = self.read = None
        self._filled = False

    def step(self) -> None:
        """Nothing to select (the tiles were chosen when the patch set was built)."""
        self._require_started()

    def ping(self) -> None:
        """Raise now what a finished background load raised."""
        self._require_started()
        if self._pending is not None and self._pending.done():
            self._pending.result()

    def wait(self) -> None:
        """Wait for the background load; re-raise its error."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def __enter__(self) -> HoVerNetBatchSource:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _require_started(self) -> None:
        if not self.started:
            raise NucleiError(f"{self.name}: call start() first (or use the source in a with)")

    # -- loading --------------------------------------------------------------------------

    def _draw(self, count: int) -> list[tuple[int, int]]:
        """``count`` (patch index, augmentation seed) pairs from shuffled cycles."""
        chosen = []
        for _ in range(count):
            if self._cursor >= len(self._cycle):
                self._cycle = self.rng.permutation(len(self.patches))
                self._cursor = 0
            chosen.append((int(self._cycle[self._cursor]), int(self.rng.integers(0, 2**63 - 1))))
            self._cursor += 1
        return chosen

    def sample(self, index: int, seed: int) -> tuple[np.ndarray, HoVerNetTargets]:
        """Patch ``index`` augmented with ``seed`` (no augmentation with ``augment=False``)."""
        image, instances, types = self.patches.get(index)
        rng = np.random.default_rng(seed)
        return augment_sample(
            image, instances, types if self.typed else None, self.input_shape,
            self.output_shape, rng, geometric=self.augment,
            colour=self.colour if self.augment else False, min_size=self.min_size,
        )  # fmt: skip

    def _produce(self, buffer: _Buffer, slots: Sequence[int], plan) -> None:
        for slot, (index, seed) in zip(slots, plan, strict=True):
            try:
                image, targets = self.sample(index, seed)
            except Exception as error:
                raise NucleiError(
                    f"{self.patches.folder}: {self.name}: patch {index}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            buffer.put(slot, index, image, targets)

    def _load(self, buffer: _Buffer, count: int, background: bool) -> None:
        count = min(int(count) or buffer.size, buffer.size)
        if buffer is self.main:
            # replace the easiest samples first (all of them on a full load)
            slots = np.argsort(buffer.errors, kind="stable")[:count]
        else:
            slots = np.arange(count)
        plan = self._draw(count)  # drawn here, in order: batches do not depend on threads
        if background and self._executor is not None:
            self.wait()
            self._pending = self._executor.submit(self._produce, buffer, list(slots), plan)
        else:
            self._produce(buffer, list(slots), plan)

    def fill(self) -> None:
        """Fill the whole main buffer (waits), then shuffle it."""
        self._require_started()
        assert self.main is not None
        self._load(self.main, self.main.size, background=False)
        self.main.shuffle(self._order_rng)
        self._filled = True

    def load(self, batch_size: int = 0) -> None:
        """Load samples: into the read buffer in the background when there is one, otherwise
        refill the main buffer now (``batch_size`` samples; 0: the whole buffer)."""
        self._require_started()
        assert self.main is not None
        if self.read is not None:
            self._load(self.read, batch_size or self.read.size, background=True)
        else:
            self._load(self.main, batch_size or self.main.size, background=False)
            self.main.shuffle(self._order_rng)

    def transfer(self, batch_size: int = 0, difficult_threshold: float = 0.0) -> None:
        """Move the loaded read buffer into the main buffer (swapped when both are the same
        size and all of it moves, else its first ``batch_size`` samples overwrite the main
        buffer's easiest ones), then shuffle. Without a read buffer this does nothing."""
        self._require_started()
        if self.read is None:
            return
        assert self.main is not None
        self.wait()
        count = min(batch_size or self.read.size, self.read.size, self.main.size)
        if count == self.read.size == self.main.size:
            self.main, self.read = self.read, self.main
        else:
            easy = np.argsort(self.main.errors, kind="stable")[:count]
            for source, target in enumerate(easy):
                self.main.copy_slot(int(target), self.read, source)
        self.main.shuffle(self._order_rng)
        self._filled = True

    def boosted_transfer(
        self,
        epoch: int,
        buffer_mode_switch: int,
        difficult_threshold: float,
        difficult_update_ratio: float,
    ) -> float:
        """Transfer keeping difficult samples (as
        :meth:`~digipath.data.buffered.BufferedGenerator.boosted_transfer`); returns the
        difficult sample ratio before the transfer."""
        self._require_started()
        assert self.main is not None
        difficult = self.count(difficult_threshold)
        count = boosting_transfer_count(
            self.main.size, difficult, epoch, buffer_mode_switch, difficult_update_ratio
        )
        if self.read is not None:
            count = min(count, self.read.size)
        if count:
            self.transfer(count, difficult_threshold)
        return difficult / self.main.size

    # -- batches and feedback -------------------------------------------------------------

    def batch(self, batch_size: int) -> tuple[dict[float, dict[str, Any]], np.ndarray]:
        """The next ``batch_size`` samples of the main buffer.

        Returns
        -------
        (batch, indices)
            ``batch[spacing]`` holds ``"patches"`` (float32 ``(N, 3, H, W)`` RGB in [0, 1])
            and ``"labels"``: ``{"np": uint8 (N, h, w), "hv": float32 (N, 2, h, w) (channel
            0 horizontal, 1 vertical), "tp": uint8 (N, h, w)}`` (``tp`` with types) at the
            network output size; ``indices`` are the buffer slots, for :meth:`update`.
        """
        self._require_started()
        assert self.main is not None
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise NucleiError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not self._filled:
            self.fill()
        main = self.main
        indices = np.empty(batch_size, np.int64)
        for position in range(batch_size):
            if main.cursor >= main.size:
                main.shuffle(self._order_rng)
            indices[position] = main.order[main.cursor]
            main.cursor += 1
        patches = np.moveaxis(main.images[indices], 3, 1).astype(np.float32) / 255.0
        labels: dict[str, np.ndarray] = {"np": main.np[indices], "hv": main.hv[indices]}
        if main.tp is not None:
            labels["tp"] = main.tp[indices]
        return {self.spacing: {"patches": np.ascontiguousarray(patches), "labels": labels}}, indices

    def batches(
        self, batch_size: int, count: int | None = None
    ) -> Iterator[tuple[dict[float, dict[str, Any]], np.ndarray]]:
        """Yield ``(batch, indices)`` ``count`` times (endlessly with ``None``), reloading the
        buffer after each pass over it."""
        if not self.started:
            self.start()
        assert self.main is not None
        if not self._filled:
            self.fill()
        per_pass = max(1, self.main.size // batch_size)
        produced = 0
        while count is None or produced < count:
            if self.read is not None:
                self.load()
            for _ in range(per_pass):
                if count is not None and produced >= count:
                    return
                yield self.batch(batch_size)
                produced += 1
            if self.read is not None:
                self.transfer()
            else:
                self.load()

    def update(self, indices, errors) -> None:
        """Record per-sample errors in [0, 1] for the slots a batch came from."""
        self._require_started()
        assert self.main is not None
        self.main.errors[np.asarray(indices, np.int64)] = np.asarray(errors, np.float32)

    def patch_indices(self, slots) -> np.ndarray:
        """The patch set indices of the samples in main-buffer ``slots`` (e.g. a batch's)."""
        self._require_started()
        assert self.main is not None
        return self.main.index[np.asarray(slots, np.int64)]

    def count(self, threshold: float = 0.0) -> int:
        """Main-buffer samples with an error above ``threshold``."""
        self._require_started()
        assert self.main is not None
        return int(np.count_nonzero(self.main.errors > threshold))

    def __repr__(self) -> str:
        return (
            f"HoVerNetBatchSource({self.name!r}, {len(self.patches)} patches, "
            f"{self.input_shape} -> {self.output_shape}, main {self.main_buffer_size}, "
            f"read {self.read_buffer_size}, augment {self.augment})"
        )
