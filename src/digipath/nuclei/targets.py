"""HoVer-Net training targets (NP, HV, TP) and training-tile extraction.

The targets follow the original code (``models/hovernet/targets.py``, ``dataloader/augs.py``,
``misc/utils.py``, ``misc/patch_extractor.py``; reference notes §2.2) value for value:

* **NP** (:func:`hovernet_targets`): ``instances > 0``.
* **HV** (:func:`hv_maps`): for every instance present in the central crop, the horizontal
  (x, column) and vertical (y, row) offset of each of its pixels from its centre of mass,
  normalised per instance and per axis to ``[-1, 1]``; 0 on the background. In detail, as
  ``gen_instance_hv_map``:

  1. instances split into several 4-connected pieces (mirror padding in augmentation) are
     relabelled, each extra piece getting a new id (:func:`relabel_split_instances`,
     ``fix_mirror_padding``);
  2. only instances with at least ``min_size`` (30) pixels *inside the central crop* get HV
     values, but their distances use the whole, uncropped instance;
  3. the instance's bounding box is enlarged by 2 px per side; its centre of mass inside that
     box is rounded to the nearest pixel (``int(c + 0.5)``) and the coordinates run from 1:
     ``x = (col - box_col0 + 1) - int(com_col + 0.5)``, likewise ``y`` with rows. So the pixel
     at the rounded centre has ``x = y = 1``, and ``x = 0`` falls one column to its left
     (the original's off-by-one, kept so that targets match);
  4. negative values are divided by ``|min|`` (-> ``[-1, 0)``), positive values by ``max``
     (-> ``(0, 1]``), in float32.

  Instead of one full-image comparison per nucleus, everything is done with label-wise
  reductions (bounding boxes by ``scipy.ndimage.find_objects``, centres of mass by
  ``numpy.bincount``) and one pass over the foreground pixels; the per-instance minima and
  maxima come from the bounding boxes, since ``x`` is the column plus a per-instance constant.
  The cost grows with the number of pixels, not nuclei x pixels.

  One deliberate difference: the original enlarges the box without clipping it, so for a
  nucleus within 2 px of the top or left border the slice start becomes negative and the
  nucleus silently gets no HV values; here the box is clipped to the image (the rounded
  centre, and so every value, is the same as with an unclipped box whenever the original
  works).
* **TP**: the type map, centrally cropped like the others.

The centre crop is ``cropping_center``: offset ``int((size - crop) * 0.5)`` per axis.

Training tiles come from :func:`extract_patches`, the original's ``PatchExtractor``: windows of
540 x 540 px every 164 px (``extract_patches.py``), ``'valid'`` (inside the image, plus one
extra row/column of windows flush with the bottom/right border when the steps do not reach it)
or ``'mirror'`` (the image first reflect-padded by ``(window - step) / 2`` so that the central
``step x step`` parts of the windows tile the whole image). In training the tile is augmented,
centre-cropped to the network input (270 px for the original model, 256 for "fast") and the
targets are computed on that input and centre-cropped to the output (80 or 164 px):
``hovernet_targets(center_crop(inst, (270, 270)), output_shape=(80, 80))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from digipath.nuclei.io import NucleiError

__all__ = [
    "HOVERNET_GEOMETRY",
    "TRAINING_STEP",
    "TRAINING_WINDOW",
    "HoVerNetTargets",
    "Patches",
    "center_crop",
    "extract_patches",
    "hovernet_targets",
    "hv_maps",
    "relabel_split_instances",
]

TRAINING_WINDOW = (540, 540)
"""Training tile size in pixels, ``(rows, cols)`` (``extract_patches.py``)."""
TRAINING_STEP = (164, 164)
"""Step between training tiles in pixels, ``(rows, cols)`` (``extract_patches.py``)."""
HOVERNET_GEOMETRY = {"original": ((270, 270), (80, 80)), "fast": ((256, 256), (164, 164))}
"""``{mode: (input shape, output shape)}`` in pixels for the two HoVer-Net modes."""
MIN_CROP_SIZE = 30
"""Instances with fewer pixels inside the output crop get no HV values."""
BOX_MARGIN = 2
"""Pixels added to each side of an instance's bounding box before the centre of mass."""


def _instance_map(array: object, name: str = "instances") -> np.ndarray:
    data = np.asarray(array)
    if data.ndim != 2:
        raise NucleiError(f"{name}: expected a (rows, cols) instance map, got shape {data.shape}")
    if data.dtype == bool:
        return data.astype(np.int32)
    if data.dtype.kind not in "ui":
        if data.dtype.kind == "f" and np.array_equal(data, np.round(data)):
            data = data.astype(np.int64)
        else:
            raise NucleiError(f"{name}: expected integers, got dtype {data.dtype}")
    if data.size and data.min() < 0:
        raise NucleiError(f"{name}: values must be >= 0 (0 = background), got {data.min()}")
    if data.size and data.max() > np.iinfo(np.int32).max:
        raise NucleiError(f"{name}: values must fit in int32, got {data.max()}")
    return data.astype(np.int32, copy=False)


def _shape2(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise NucleiError(f"{name}: expected (rows, cols), got {value!r}")
    if min(pair) < 1:
        raise NucleiError(f"{name}: sizes must be >= 1 px, got {value!r}")
    return pair  # type: ignore[return-value]


def center_crop(array: np.ndarray, shape: int | Sequence[int]) -> np.ndarray:
    """The central ``shape`` part of ``array``'s first two axes (HoVer-Net's ``cropping_center``).

    The crop starts at ``int((size - crop) * 0.5)`` per axis (an odd difference leaves the
    extra pixel at the bottom/right). Returns a view.

    Parameters
    ----------
    array
        ``(rows, cols, ...)``.
    shape
        ``(rows, cols)`` in pixels (or one int for both), at most the array's.
    """
    rows, cols = _shape2(shape, "shape")
    data = np.asarray(array)
    if data.ndim < 2 or rows > data.shape[0] or cols > data.shape[1]:
        raise NucleiError(f"cannot crop {(rows, cols)} out of an array of shape {data.shape}")
    r0 = int((data.shape[0] - rows) * 0.5)
    c0 = int((data.shape[1] - cols) * 0.5)
    return data[r0 : r0 + rows, c0 : c0 + cols]


def _compact_top(labels: np.ndarray) -> int:
    return int(labels.max(initial=0))


def _sparse(top: int, size: int) -> bool:
    """Whether ids reach so far beyond the pixel count that id-indexed tables would waste memory."""
    return top > 4 * size + 1024


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(compact labels 1..N keeping the order of ids, ids with 0 first)``."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.int32), ids


def _objects(labels: np.ndarray) -> list[tuple[int, tuple[slice, slice]]]:
    """``[(id, bounding-box slices)]`` of the ids present, increasing (``find_objects``)."""
    top = _compact_top(labels)
    if top == 0:
        return []
    if _sparse(top, labels.size):
        compact, ids = _compact(labels)
        boxes = ndimage.find_objects(compact)
        return [(int(ids[i + 1]), b) for i, b in enumerate(boxes) if b is not None]
    boxes = ndimage.find_objects(labels)
    return [(i + 1, b) for i, b in enumerate(boxes) if b is not None]


def relabel_split_instances(instances: np.ndarray) -> np.ndarray:
    """Give every extra 4-connected piece of an instance a new id (``fix_mirror_padding``).

    Instances are visited in increasing id order; for an instance in ``k`` pieces (numbered in
    raster order of their first pixel), piece 1 keeps the id and piece ``j >= 2`` gets
    ``j + m`` where ``m`` is the largest id so far, which then becomes ``k + m`` -- the ids the
    original produces. Each instance is labelled inside its bounding box only.

    Parameters
    ----------
    instances
        ``(rows, cols)`` instance map, 0 background.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` int32 (a copy).
    """
    labels = _instance_map(instances)
    out = labels.copy()
    top = _compact_top(labels)
    if top == 0:
        return out
    current = top
    for inst_id, box in _objects(labels):
        mask = labels[box] == inst_id
        pieces, count = ndimage.label(mask)
        if count < 2:
            continue
        extra = pieces > 1
        view = out[box]
        view[extra] = pieces[extra] + current
        current += count
    return out


def hv_maps(
    instances: np.ndarray,
    crop_shape: int | Sequence[int] | None = None,
    *,
    min_size: int = MIN_CROP_SIZE,
    relabel: bool = True,
) -> np.ndarray:
    """Horizontal and vertical distance maps of HoVer-Net (``gen_instance_hv_map``).

    Parameters
    ----------
    instances
        ``(rows, cols)`` instance map, 0 background, of the network *input* (the augmented
        tile centre-cropped to 270 or 256 px).
    crop_shape
        ``(rows, cols)`` of the central output crop (80 or 164 px); only instances with at
        least ``min_size`` pixels inside it get values. ``None``: the whole map.
    min_size
        Minimum pixels of an instance inside the crop (30 in the original).
    relabel
        Split instances made of several 4-connected pieces first
        (:func:`relabel_split_instances`), as the original always does.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols, 2)`` float32, uncropped: channel 0 is the horizontal map (x: negative
        left of the centre, positive right), channel 1 the vertical map (y: negative above,
        positive below), each in ``[-1, 1]``, 0 on the background.
    """
    labels = _instance_map(instances)
    rows, cols = labels.shape
    crop = (rows, cols) if crop_shape is None else _shape2(crop_shape, "crop_shape")
    if crop[0] > rows or crop[1] > cols:
        raise NucleiError(f"crop_shape {crop} is larger than the instance map {labels.shape}")
    if min_size < 0:
        raise NucleiError(f"min_size must be >= 0, got {min_size}")
    if _sparse(_compact_top(labels), labels.size):
        labels = _compact(labels)[0]  # ids do not change the maps, only their order does
    fixed = relabel_split_instances(labels) if relabel else labels
    hv = np.zeros((rows, cols, 2), np.float32)
    top = _compact_top(fixed)
    if top == 0:
        return hv
    in_crop = np.bincount(center_crop(fixed, crop).ravel(), minlength=top + 1)
    selected = in_crop >= max(min_size, 1)
    selected[0] = False
    if not selected.any():
        return hv
    boxes = ndimage.find_objects(fixed)
    ids = np.flatnonzero(selected)
    bounds = np.array([[b.start, b.stop] for i in ids for b in boxes[i - 1]], np.int64)
    bounds = bounds.reshape(-1, 2, 2)  # (n, axis, start/stop)
    start = np.maximum(bounds[:, :, 0] - BOX_MARGIN, 0)
    stop = np.minimum(bounds[:, :, 1] + BOX_MARGIN, (rows, cols))
    keep = np.all(stop - start >= 2, axis=1)  # the original's "< 2 px: skip" guard
    ids, bounds, start = ids[keep], bounds[keep], start[keep]
    if ids.size == 0:
        return hv
    # one pass over the selected pixels; compact index per id
    compact = np.zeros(top + 1, np.int64)
    compact[ids] = np.arange(1, ids.size + 1)
    flat = compact[fixed.ravel()]
    pixels = np.flatnonzero(flat)
    owner = flat[pixels] - 1
    prow, pcol = np.divmod(pixels, cols)
    count = np.bincount(owner, minlength=ids.size).astype(np.float64)
    # centre of mass inside the enlarged box: exact integer sums, then one division
    com_row = (np.bincount(owner, weights=prow, minlength=ids.size) - start[:, 0] * count) / count
    com_col = (np.bincount(owner, weights=pcol, minlength=ids.size) - start[:, 1] * count) / count
    # value = coordinate + shift, shift = 1 - box start - int(com + 0.5)
    shift_row = 1 - start[:, 0] - (com_row + 0.5).astype(np.int64)
    shift_col = 1 - start[:, 1] - (com_col + 0.5).astype(np.int64)
    for channel, coordinate, shift, axis in ((0, pcol, shift_col, 1), (1, prow, shift_row, 0)):
        low = bounds[:, axis, 0] + shift  # value at the first row/col of the instance
        high = bounds[:, axis, 1] - 1 + shift  # value at the last
        negative = np.where(low < 0, -low, 1).astype(np.float32)
        positive = np.where(high > 0, high, 1).astype(np.float32)
        value = (coordinate + shift[owner]).astype(np.float32)
        scale = np.where(value < 0, negative[owner], positive[owner])
        hv.reshape(-1, 2)[pixels, channel] = value / scale
    return hv


@dataclass(frozen=True)
class HoVerNetTargets:
    """The targets of one training sample.

    Attributes
    ----------
    np
        ``(rows, cols)`` uint8, 1 on nuclei (``instances > 0``).
    hv
        ``(rows, cols, 2)`` float32, horizontal then vertical map in ``[-1, 1]``.
    tp
        ``(rows, cols)`` int32 type map, or ``None`` without types.
    """

    np: np.ndarray
    hv: np.ndarray
    tp: np.ndarray | None = None


def hovernet_targets(
    instances: np.ndarray,
    types: np.ndarray | None = None,
    output_shape: int | Sequence[int] | None = None,
    *,
    min_size: int = MIN_CROP_SIZE,
) -> HoVerNetTargets:
    """NP, HV and TP targets of a network input tile, cropped to the network output.

    As the original's ``gen_targets`` (and the loader for TP): HV from :func:`hv_maps` on the
    whole input with the instances of the central ``output_shape`` crop, then NP
    (``instances > 0``, from the map as given, without relabelling or size filter), HV and TP
    centre-cropped to ``output_shape``.

    Parameters
    ----------
    instances
        ``(rows, cols)`` instance map of the network input (e.g. 270 x 270).
    types
        ``(rows, cols)`` type map of the same shape, or ``None``.
    output_shape
        ``(rows, cols)`` of the network output (e.g. 80 x 80); ``None``: no crop.
    min_size
        See :func:`hv_maps`.
    """
    labels = _instance_map(instances)
    shape = labels.shape if output_shape is None else _shape2(output_shape, "output_shape")
    hv = center_crop(hv_maps(labels, shape, min_size=min_size), shape)
    np_map = center_crop((labels > 0).astype(np.uint8), shape)
    tp = None
    if types is not None:
        type_map = _instance_map(types, "types")
        if type_map.shape != labels.shape:
            raise NucleiError(
                f"types: shape {type_map.shape} differs from the instances' {labels.shape}"
            )
        tp = np.ascontiguousarray(center_crop(type_map, shape))
    return HoVerNetTargets(np=np.ascontiguousarray(np_map), hv=np.ascontiguousarray(hv), tp=tp)


@dataclass(frozen=True)
class Patches:
    """Windows cut out of an image.

    Attributes
    ----------
    patches
        ``(N, window rows, window cols, ...)``, the input's dtype.
    origins
        ``(N, 2)`` int64 ``(row, col)`` of each window's top-left pixel in the coordinates of
        the *unpadded* input (negative in ``'mirror'`` mode where the window starts in the
        padding).
    """

    patches: np.ndarray
    origins: np.ndarray

    def __len__(self) -> int:
        return int(self.origins.shape[0])


def _starts(length: int, window: int, step: int) -> list[int]:
    # PatchExtractor.__extract_valid: a regular grid, plus one window flush with the far
    # border when the grid does not end there
    last = ((length - window) // step + 1) * step
    starts = list(range(0, last, step))
    if (length - window) % step != 0:
        starts.append(length - window)
    return starts


def extract_patches(
    array: np.ndarray,
    window: int | Sequence[int] = TRAINING_WINDOW,
    step: int | Sequence[int] = TRAINING_STEP,
    mode: Literal["mirror", "valid"] = "mirror",
) -> Patches:
    """Cut training tiles as HoVer-Net's ``PatchExtractor`` (``extract_patches.py``).

    ``'valid'``: windows at ``0, step, 2 step, ...`` while they fit, then -- if the last one
    does not end at the border -- one more flush with the bottom (resp. right) border; the
    order is the regular grid row by row, then the bottom row of extra windows, then the right
    column, then the bottom-right corner. ``'mirror'``: the image is first padded by
    reflection (``numpy.pad(..., 'reflect')``), ``(window - step) // 2`` px on the top/left and
    the rest on the bottom/right, then cut as ``'valid'``; the central ``step`` part of the
    windows then covers every pixel of the image.

    Parameters
    ----------
    array
        ``(rows, cols)`` or ``(rows, cols, channels)``, e.g. RGB stacked with the instance and
        type maps (``numpy.dstack([rgb, inst, type])``) as the original saves training tiles.
    window, step
        ``(rows, cols)`` in pixels (540 and 164 by default; the original's alternative is a
        step of 80, the output size of the original model). ``'valid'`` needs
        ``window > step`` as in the original; ``'mirror'`` needs ``window >= step``.
    mode
        ``'mirror'`` or ``'valid'``.

    Returns
    -------
    Patches
    """
    data = np.asarray(array)
    if data.ndim < 2:
        raise NucleiError(f"expected (rows, cols[, channels]), got shape {data.shape}")
    win = _shape2(window, "window")
    stp = _shape2(step, "step")
    if mode not in ("mirror", "valid"):
        raise NucleiError(f"mode must be 'mirror' or 'valid', got {mode!r}")
    if any(s > w for s, w in zip(stp, win, strict=True)):
        raise NucleiError(f"step {stp} must not exceed the window {win}")
    pad = [(0, 0), (0, 0)]
    if mode == "mirror":
        for axis in range(2):
            diff = win[axis] - stp[axis]
            pad[axis] = (diff // 2, diff - diff // 2)
        if any(p[0] + p[1] > 0 for p in pad) and min(data.shape[:2]) < 2:
            raise NucleiError(f"reflect padding needs at least 2 px per axis, got {data.shape}")
        data = np.pad(data, pad + [(0, 0)] * (data.ndim - 2), mode="reflect")
    rows, cols = data.shape[:2]
    if rows < win[0] or cols < win[1]:
        what = "padded image" if mode == "mirror" else "image"
        raise NucleiError(
            f"the {what} ({rows} x {cols} px) is smaller than the window {win[0]} x {win[1]}"
        )
    row_starts, col_starts = _starts(rows, win[0], stp[0]), _starts(cols, win[1], stp[1])
    grid_rows = list(range(0, ((rows - win[0]) // stp[0] + 1) * stp[0], stp[0]))
    grid_cols = list(range(0, ((cols - win[1]) // stp[1] + 1) * stp[1], stp[1]))
    origins = [(r, c) for r in grid_rows for c in grid_cols]
    extra_row = len(row_starts) > len(grid_rows)
    extra_col = len(col_starts) > len(grid_cols)
    if extra_row:
        origins += [(rows - win[0], c) for c in grid_cols]
    if extra_col:
        origins += [(r, cols - win[1]) for r in grid_rows]
    if extra_row and extra_col:
        origins.append((rows - win[0], cols - win[1]))
    out = np.empty((len(origins), win[0], win[1], *data.shape[2:]), data.dtype)
    for index, (r, c) in enumerate(origins):
        out[index] = data[r : r + win[0], c : c + win[1]]
    corner = np.array(origins, np.int64).reshape(-1, 2) - (pad[0][0], pad[1][0])
    return Patches(patches=out, origins=corner)
