"""HoVer-Net post-processing: NP + HV (+ TP) maps -> nucleus instances and a per-nucleus table.

:func:`instance_map` is the original's ``__proc_np_hv`` (``models/hovernet/post_proc.py``;
reference notes §2.5) step by step, with the same OpenCV / SciPy / scikit-image calls and the
same dtypes, so that it gives the same instance map:

1. ``np`` and ``hv`` as float32; foreground = ``np >= 0.5`` (int32), 4-connected components,
   those under 10 px removed, binarised;
2. the horizontal and the vertical map each min-max normalised to ``[0, 1]`` over the whole
   tile (``cv2.normalize``, ``NORM_MINMAX``, float32; a constant map becomes 0);
3. ``cv2.Sobel`` (float64) of the horizontal map along x and of the vertical map along y,
   kernel 21, each min-max normalised to ``[0, 1]`` (float32) and inverted (``1 - s``);
4. ``overall = max(sobel_h, sobel_v) - (1 - fg)``, clipped at 0 (the original's float64
   values, held in float32, which represents them exactly);
5. ``dist = -GaussianBlur((1 - overall) * fg, 3 x 3, sigma from the size)``: nuclei become
   basins;
6. markers: ``fg - (overall >= 0.4)``, clipped at 0, holes filled (as ``binary_fill_holes``:
   background not 4-connected to the border), uint8, opened with a 5 x 5 ellipse
   (``cv2.morphologyEx``), 4-connected components, those under 10 px removed;
7. ``skimage.segmentation.watershed(dist, markers, mask=fg)`` (4-connectivity), run on
   windows of whole foreground components (:func:`_watershed`): the same labels, several
   times faster on large tiles.

The ids are those of the markers: increasing in raster order of each marker's first pixel,
not necessarily consecutive (removed markers leave gaps), as in the original.

**Resolution.** The constants are the original's at 40x, 0.25 µm/px. For maps at another
spacing, pass ``spacing`` (µm/px) or ``scale`` (= 0.25 / spacing: 0.5 at 20x): kernel sizes
scale with ``scale`` and areas with ``scale**2`` (:meth:`PostProcessParameters.scaled`): Sobel
``2 round(10 s) + 1`` (21 -> 11 at 20x; OpenCV's Sobel stops at 31, larger kernels are built
from the same binomial formula), Gaussian ``2 round(s) + 1`` (3 -> 3), opening ellipse
``2 round(2 s) + 1`` (5 -> 3), minimum object and marker sizes ``ceil(10 s**2)`` (10 -> 3);
thresholds do not change. ``round`` rounds halves up. At ``scale = 1`` these are exactly the
original's constants.

:func:`instance_properties` then builds the per-nucleus table (:class:`Nuclei`) without any
full-tile comparison per nucleus: bounding boxes from one ``scipy.ndimage.find_objects`` pass,
centroids from ``numpy.bincount`` sums, contours by ``cv2.findContours`` on each nucleus's
bounding-box crop, types by one ``bincount`` over (nucleus, type) pairs. Its cost grows with
the pixels (plus a small constant per nucleus), where the original, TIAToolbox and MONAI
compare the whole tile with every id (nuclei x pixels).

The table keeps the original's conventions (``process`` in ``post_proc.py``):

``bbox``
    ``[[row0, col0], [row1, col1]]``, the end exclusive (``get_bounding_box``).
``centroid``
    ``(x, y)`` = ``(col, row)``, the mean of the nucleus's pixel coordinates (``cv2.moments``).
``contour``
    ``(K, 2)`` int32 ``(x, y)`` points: the first contour ``cv2.findContours`` returns
    (``RETR_TREE``, ``CHAIN_APPROX_SIMPLE``) on the nucleus's crop, shifted by the box's
    origin. Nuclei whose contour has fewer than 3 points are left out of the table (but stay
    in the instance map, as in the original); their ids are in :attr:`Nuclei.dropped`.
``type``, ``type_prob``
    The most frequent TP label among the nucleus's pixels (ties: the smaller label); if that is
    0 (background) and the nucleus has pixels of another label, the most frequent of the
    others. ``type_prob`` is that label's share of the nucleus's pixels (the original adds
    ``1e-6`` to the area in the denominator; here the fraction is exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from digipath.nuclei.io import NucleiError
from digipath.nuclei.targets import _compact, _instance_map, _sparse

__all__ = [
    "ORIGINAL_SPACING",
    "Nuclei",
    "PostProcessParameters",
    "instance_map",
    "instance_properties",
    "postprocess",
]

ORIGINAL_SPACING = 0.25
"""Pixel spacing (µm/px) of the original's constants: 40x."""
_CV_SOBEL_MAX = 31
_WATERSHED_TILE = 256  # px: components are flooded in groups by tile (see _watershed)


@dataclass(frozen=True)
class PostProcessParameters:
    """The constants of :func:`instance_map` (defaults: the original's, at 0.25 µm/px).

    Attributes
    ----------
    np_threshold
        Foreground where the NP probability is ``>=`` this.
    min_object_size
        Foreground components with fewer pixels are removed.
    sobel_ksize
        Sobel kernel size in pixels (odd, >= 3).
    blur_ksize
        Gaussian blur kernel size of the distance map in pixels (odd; 1 = no blur).
    marker_threshold
        Boundary where the inverted, normalised gradient is ``>=`` this.
    opening_ksize
        Size in pixels of the elliptical kernel of the markers' opening (odd; 1 = none).
    min_marker_size
        Markers with fewer pixels are removed.
    """

    np_threshold: float = 0.5
    min_object_size: int = 10
    sobel_ksize: int = 21
    blur_ksize: int = 3
    marker_threshold: float = 0.4
    opening_ksize: int = 5
    min_marker_size: int = 10

    def __post_init__(self) -> None:
        for name in ("sobel_ksize", "blur_ksize", "opening_ksize"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1 or value % 2 == 0:
                raise NucleiError(f"{name} must be an odd number of pixels >= 1, got {value!r}")
        if self.sobel_ksize < 3:
            raise NucleiError(f"sobel_ksize must be >= 3, got {self.sobel_ksize}")
        for name in ("min_object_size", "min_marker_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise NucleiError(f"{name} must be a pixel count >= 0, got {value!r}")
        for name in ("np_threshold", "marker_threshold"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise NucleiError(f"{name} must be a finite number, got {value!r}")

    @classmethod
    def scaled(cls, scale: float) -> PostProcessParameters:
        """The original's constants for maps with ``scale`` times its pixel density.

        ``scale = 0.25 / spacing`` (0.5 for 20x maps, 2 for 80x): kernel sizes
        ``2 round(r s) + 1`` for half-widths ``r`` = 10 (Sobel), 1 (blur), 2 (opening), with
        Sobel at least 3; minimum sizes ``ceil(10 s**2)``, at least 1. Halves round up.
        """
        if not (isinstance(scale, (int, float, np.floating)) and math.isfinite(scale)) or (
            scale <= 0
        ):
            raise NucleiError(f"scale must be a positive number, got {scale!r}")
        base = cls()

        def odd(half: float) -> int:
            return 2 * math.floor(half * scale + 0.5) + 1

        def area(value: int) -> int:
            return max(1, math.ceil(value * scale * scale - 1e-9))

        return replace(
            base,
            sobel_ksize=max(3, odd(10)),
            blur_ksize=odd(1),
            opening_ksize=odd(2),
            min_object_size=area(base.min_object_size),
            min_marker_size=area(base.min_marker_size),
        )

    @classmethod
    def for_spacing(cls, spacing: float) -> PostProcessParameters:
        """The constants for maps at ``spacing`` µm/px (``scaled(0.25 / spacing)``)."""
        if not (isinstance(spacing, (int, float, np.floating)) and math.isfinite(spacing)) or (
            spacing <= 0
        ):
            raise NucleiError(f"spacing must be a positive number of µm/px, got {spacing!r}")
        return cls.scaled(ORIGINAL_SPACING / float(spacing))


def _resolve(
    scale: float | None, spacing: float | None, parameters: PostProcessParameters | None
) -> PostProcessParameters:
    choices = (("scale", scale), ("spacing", spacing), ("parameters", parameters))
    given = [name for name, value in choices if value is not None]
    if len(given) > 1:
        raise NucleiError(f"give at most one of scale, spacing and parameters, got {given}")
    if parameters is not None:
        if not isinstance(parameters, PostProcessParameters):
            raise NucleiError(f"parameters must be PostProcessParameters, got {parameters!r}")
        return parameters
    if spacing is not None:
        return PostProcessParameters.for_spacing(spacing)
    if scale is not None:
        return PostProcessParameters.scaled(scale)
    return PostProcessParameters()


# --------------------------------------------------------------------------------------------
# Inputs


def _np_map(np_prob: object) -> np.ndarray:
    data = np.asarray(np_prob)
    if data.ndim != 2:
        raise NucleiError(f"np: expected (rows, cols) nucleus probabilities, got {data.shape}")
    if data.dtype.kind not in "uifb":
        raise NucleiError(f"np: expected numbers, got dtype {data.dtype}")
    data = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise NucleiError("np: contains NaN or infinite values")
    return data


def _channels(
    array: object, name: str, shape: tuple[int, int], channels: int | None, last: bool | None
) -> tuple[np.ndarray, bool]:
    """``(array, channels_last)`` after checking ``(C, rows, cols)`` / ``(rows, cols, C)``."""
    data = np.asarray(array)
    if data.ndim != 3:
        raise NucleiError(
            f"{name}: expected (C, rows, cols) or (rows, cols, C) for maps of {shape}, got "
            f"shape {data.shape}"
        )
    first_ok = data.shape[1:] == shape and (channels is None or data.shape[0] == channels)
    last_ok = data.shape[:2] == shape and (channels is None or data.shape[2] == channels)
    if last is None:
        if first_ok and last_ok:
            raise NucleiError(
                f"{name}: shape {data.shape} reads as channels first and last; pass "
                "channels_last=True or False"
            )
        if not (first_ok or last_ok):
            want = f"{channels}" if channels is not None else "C"
            raise NucleiError(
                f"{name}: expected ({want}, {shape[0]}, {shape[1]}) or ({shape[0]}, {shape[1]}, "
                f"{want}) to match np, got {data.shape}"
            )
        last = last_ok
    elif (last and not last_ok) or (not last and not first_ok):
        raise NucleiError(
            f"{name}: shape {data.shape} does not match channels_last={last} for maps of {shape}"
        )
    return data, bool(last)


def _hv_maps(
    hv: object, shape: tuple[int, int], channels_last: bool | None
) -> tuple[np.ndarray, np.ndarray]:
    data, last = _channels(hv, "hv", shape, 2, channels_last)
    if data.dtype.kind not in "uif":
        raise NucleiError(f"hv: expected numbers, got dtype {data.dtype}")
    data = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise NucleiError("hv: contains NaN or infinite values")
    if last:
        return np.ascontiguousarray(data[..., 0]), np.ascontiguousarray(data[..., 1])
    return np.ascontiguousarray(data[0]), np.ascontiguousarray(data[1])


def _type_labels(tp: object, shape: tuple[int, int], channels_last: bool | None) -> np.ndarray:
    data = np.asarray(tp)
    if data.ndim == 2:
        if data.shape != shape:
            raise NucleiError(f"tp: type labels of shape {data.shape} do not match np's {shape}")
        return _instance_map(data, "tp")
    data, last = _channels(data, "tp", shape, None, channels_last)
    if data.dtype.kind not in "uif":
        raise NucleiError(f"tp: expected probabilities, got dtype {data.dtype}")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise NucleiError("tp: contains NaN or infinite values")
    if last:
        return np.argmax(data, axis=2).astype(np.int32)
    # argmax over the first axis, one plane at a time (strided argmax is slow); ties: first
    best = data[0].copy()
    labels = np.zeros(shape, np.int32)
    for channel in range(1, data.shape[0]):
        better = data[channel] > best
        labels[better] = channel
        np.maximum(best, data[channel], out=best)
    return labels


# --------------------------------------------------------------------------------------------
# NP + HV -> instances


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """``skimage.morphology.remove_small_objects`` on a label image (ids with < min_size px)."""
    if min_size <= 1:
        return labels
    counts = np.bincount(labels.ravel())
    small = counts < min_size
    small[0] = False
    if not small.any():
        return labels
    lookup = np.arange(counts.size, dtype=labels.dtype)
    lookup[small] = 0
    return np.take(lookup, labels)


def _binomial_sobel(image: np.ndarray, dx: int, dy: int, ksize: int) -> np.ndarray:
    """``cv2.Sobel(image, CV_64F, dx, dy, ksize)`` for kernels beyond OpenCV's 31."""
    import cv2

    def kernel(order: int) -> np.ndarray:
        k = np.array([1.0])
        for _ in range(ksize - order - 1):
            k = np.convolve(k, [1.0, 1.0])
        for _ in range(order):
            k = np.convolve(k, [-1.0, 1.0])
        return k

    return cv2.sepFilter2D(
        image, cv2.CV_64F, kernel(dx), kernel(dy), borderType=cv2.BORDER_REFLECT_101
    )


def _sobel(image: np.ndarray, dx: int, dy: int, ksize: int) -> np.ndarray:
    import cv2

    if ksize <= _CV_SOBEL_MAX:
        return cv2.Sobel(image, cv2.CV_64F, dx, dy, ksize=ksize)
    return _binomial_sobel(image, dx, dy, ksize)


def _minmax(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.normalize(image, None, alpha=0, beta=1, norm_type=cv2.NORM_MINMAX, dtype=cv2.CV_32F)


def _fill_holes(binary: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` (4-connected background) by one labelling pass."""
    background, count = ndimage.label(binary == 0)
    if count == 0:
        return binary != 0
    outside = np.zeros(count + 1, bool)  # background components reaching the border
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    outside[0] = False  # label 0: the foreground itself
    return ~outside[background]


def _watershed(
    dist: np.ndarray, markers: np.ndarray, components: np.ndarray, count: int
) -> np.ndarray:
    """``skimage.segmentation.watershed(dist, markers, mask=components > 0)``, window by window.

    The foreground's 4-connected components (``components``, ids 1..count) never exchange
    anything in a 4-connected watershed, and the flooding order inside one component (by
    value, then by the order pixels were queued) does not depend on the others, so each
    component can be flooded on its own with the same result. Components are grouped by the
    ``_WATERSHED_TILE`` tile of their bounding box's corner and each group is flooded in the
    window that holds it: the same output, several times faster than one call on a large tile
    (scikit-image's priority queue then works on small, cache-friendly arrays).
    """
    from skimage.segmentation import watershed

    out = np.zeros(dist.shape, np.int32)
    if count == 0 or not markers.any():
        return out
    seeded = np.bincount(components[markers > 0], minlength=count + 1) > 0
    seeded[0] = False
    boxes = ndimage.find_objects(components)
    index = np.flatnonzero(seeded)
    bounds = np.array(
        [(b[0].start, b[0].stop, b[1].start, b[1].stop) for b in (boxes[i - 1] for i in index)],
        np.int64,
    ).reshape(-1, 4)
    tile = (bounds[:, 0] // _WATERSHED_TILE) * (dist.shape[1] // _WATERSHED_TILE + 1) + (
        bounds[:, 2] // _WATERSHED_TILE
    )
    order = np.argsort(tile, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(tile[order])) + 1)
    selected = np.zeros(count + 1, bool)
    for group in groups:
        r0, r1 = bounds[group, 0].min(), bounds[group, 1].max()
        c0, c1 = bounds[group, 2].min(), bounds[group, 3].max()
        selected[index[group]] = True
        mask = selected[components[r0:r1, c0:c1]]
        selected[index[group]] = False
        flooded = watershed(dist[r0:r1, c0:c1], markers=markers[r0:r1, c0:c1] * mask, mask=mask)
        out[r0:r1, c0:c1][mask] = flooded[mask]
    return out


def instance_map(
    np_prob: np.ndarray,
    hv: np.ndarray,
    *,
    scale: float | None = None,
    spacing: float | None = None,
    parameters: PostProcessParameters | None = None,
    channels_last: bool | None = None,
) -> np.ndarray:
    """Nucleus instances from the NP and HV maps (the original's ``__proc_np_hv``).

    Parameters
    ----------
    np_prob
        ``(rows, cols)`` nucleus probabilities (the NP branch's softmax channel 1).
    hv
        ``(2, rows, cols)`` or ``(rows, cols, 2)``: horizontal (x) then vertical (y) map.
    scale, spacing, parameters
        At most one: the pixel density relative to 0.25 µm/px, the maps' spacing in µm/px, or
        explicit :class:`PostProcessParameters` (default: the original's constants).
    channels_last
        Layout of ``hv`` when its shape alone does not tell (2 x 2 maps).

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` int32 instance ids, 0 background.
    """
    import cv2

    p = _resolve(scale, spacing, parameters)
    prob = _np_map(np_prob)
    h_raw, v_raw = _hv_maps(hv, prob.shape, channels_last)

    blb = np.asarray(prob >= p.np_threshold, dtype=np.int32)
    components, count = ndimage.label(blb)
    components = _remove_small(components, p.min_object_size)
    blb = (components > 0).astype(np.int32)

    h_dir = _minmax(h_raw)
    v_dir = _minmax(v_raw)
    sobel_h = _sobel(h_dir, 1, 0, p.sobel_ksize)
    sobel_v = _sobel(v_dir, 0, 1, p.sobel_ksize)
    sobel_h = 1 - _minmax(sobel_h)
    sobel_v = 1 - _minmax(sobel_v)

    # The original computes max(sobel_h, sobel_v) - (1 - blb) in float64 and clips it at 0.
    # With both maps in [0, 1] that is the float32 maximum inside the foreground and 0
    # outside, which float32 holds exactly (half the memory traffic on large tiles).
    fg = blb.astype(bool)
    overall = np.maximum(sobel_h, sobel_v)
    if overall.size and (overall.min() < 0 or overall.max() > 1):  # rounding: as the original
        overall = overall - (1 - blb)
        overall[overall < 0] = 0
    else:
        overall[~fg] = 0
    dist = np.subtract(1.0, overall, dtype=np.float64)  # float64 as the original's
    dist[~fg] = 0
    dist = cv2.GaussianBlur(dist, (p.blur_ksize, p.blur_ksize), 0)
    np.negative(dist, out=dist)

    boundary = np.asarray(overall >= p.marker_threshold, dtype=np.int32)
    marker = blb - boundary
    marker[marker < 0] = 0
    marker = _fill_holes(marker).astype(np.uint8)
    if p.opening_ksize > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (p.opening_ksize, p.opening_ksize))
        marker = cv2.morphologyEx(marker, cv2.MORPH_OPEN, kernel)
    marker = _remove_small(ndimage.label(marker)[0], p.min_marker_size)

    return _watershed(dist, marker, components, count)


# --------------------------------------------------------------------------------------------
# Per-nucleus table


@dataclass(frozen=True)
class Nuclei:
    """Instances and the per-nucleus table of one tile (rows in increasing id order).

    Attributes
    ----------
    instances
        ``(rows, cols)`` int32 instance map, 0 background.
    ids
        ``(N,)`` int32 instance ids of the table's rows.
    bboxes
        ``(N, 2, 2)`` int64 ``[[row0, col0], [row1, col1]]``, ``row1``/``col1`` exclusive.
    centroids
        ``(N, 2)`` float64 ``(x, y)`` = ``(col, row)`` in pixels.
    contours
        ``N`` arrays ``(K, 2)`` int32 of ``(x, y)`` points (``K >= 3``).
    areas
        ``(N,)`` int64 pixel counts.
    types
        ``(N,)`` int32 voted types, or ``None`` without TP.
    type_probs
        ``(N,)`` float64 share of the voted type among the nucleus's pixels, or ``None``.
    dropped
        ``(M,)`` int32 ids present in ``instances`` but left out of the table (contour of
        fewer than 3 points).
    """

    instances: np.ndarray
    ids: np.ndarray
    bboxes: np.ndarray
    centroids: np.ndarray
    contours: tuple[np.ndarray, ...]
    areas: np.ndarray
    types: np.ndarray | None = None
    type_probs: np.ndarray | None = None
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def __len__(self) -> int:
        return int(self.ids.size)

    def to_dict(self, mag: float | None = None) -> dict:
        """The original's JSON layout: ``{"mag": mag, "nuc": {"<id>": {...}}}``.

        Each nucleus has ``bbox`` ``[[row0, col0], [row1, col1]]``, ``centroid`` ``[x, y]``,
        ``contour`` ``[[x, y], ...]``, ``type_prob`` and ``type`` (``None`` without TP), in
        plain Python types ready for ``json.dump``.
        """
        nuc = {}
        for i, inst_id in enumerate(self.ids.tolist()):
            nuc[str(inst_id)] = {
                "bbox": self.bboxes[i].tolist(),
                "centroid": self.centroids[i].tolist(),
                "contour": self.contours[i].tolist(),
                "type_prob": None if self.type_probs is None else float(self.type_probs[i]),
                "type": None if self.types is None else int(self.types[i]),
            }
        return {"mag": mag, "nuc": nuc}


def _vote(owner: np.ndarray, values: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``(type, votes)`` per group by the original's rule, from one (group, type) bincount."""
    top = int(values.max(initial=0)) + 1
    present = np.flatnonzero(np.bincount(values, minlength=top))
    if present.size == 0:  # no foreground pixel
        present = np.zeros(1, np.int64)
    if present.size < top:  # compact the type values, keeping their order
        lookup = np.zeros(top, np.int64)
        lookup[present] = np.arange(present.size)
        codes = lookup[values]
    else:
        codes = values.astype(np.int64)
    width = present.size
    votes = np.bincount(owner * width + codes, minlength=groups * width).reshape(groups, width)
    best = np.argmax(votes, axis=1)  # most votes, ties: the smaller type
    if present[0] == 0 and width > 1:
        others = votes[:, 1:]
        second = np.argmax(others, axis=1) + 1
        use_second = (best == 0) & (others.max(axis=1) > 0)
        best = np.where(use_second, second, best)
    return present[best].astype(np.int32), votes[np.arange(groups), best]


def instance_properties(instances: np.ndarray, types: np.ndarray | None = None) -> Nuclei:
    """The per-nucleus table of an instance map (see the module notes for the conventions).

    Parameters
    ----------
    instances
        ``(rows, cols)`` instance map, 0 background (any non-negative ids).
    types
        ``(rows, cols)`` integer type labels (e.g. the argmax of TP), or ``None``.

    Returns
    -------
    Nuclei
    """
    import cv2

    labels = _instance_map(instances)
    cols = labels.shape[1]
    type_map = None
    if types is not None:
        type_map = _instance_map(types, "types")
        if type_map.shape != labels.shape:
            raise NucleiError(f"types: shape {type_map.shape} differs from {labels.shape}")
    top = int(labels.max(initial=0))
    if _sparse(top, labels.size):
        compact, id_of = _compact(labels)
    else:
        compact, id_of = labels, np.arange(top + 1)
    boxes = ndimage.find_objects(compact)
    index = np.array([i + 1 for i, b in enumerate(boxes) if b is not None], np.int64)
    n = index.size
    bboxes = np.zeros((n, 2, 2), np.int64)
    for k, label in enumerate(index):
        box = boxes[label - 1]
        bboxes[k] = ((box[0].start, box[1].start), (box[0].stop, box[1].stop))

    # one pass over the foreground: areas, coordinate sums, (nucleus, type) votes
    groups = len(boxes) + 1
    flat = compact.ravel()
    pixels = np.flatnonzero(flat)
    owner = flat[pixels].astype(np.int64)
    prow, pcol = np.divmod(pixels, cols)
    count = np.bincount(owner, minlength=groups)
    sum_row = np.bincount(owner, weights=prow, minlength=groups)
    sum_col = np.bincount(owner, weights=pcol, minlength=groups)
    area = count[index]
    r0, c0 = bboxes[:, 0, 0], bboxes[:, 0, 1]
    centroids = np.zeros((n, 2))
    if n:  # as cv2.moments on the crop: crop-relative mean, then the offset
        centroids[:, 0] = (sum_col[index] - c0 * area) / area + c0
        centroids[:, 1] = (sum_row[index] - r0 * area) / area + r0

    contours: list[np.ndarray] = []
    keep = np.zeros(n, bool)
    for k, label in enumerate(index):
        box = boxes[label - 1]
        crop = (compact[box] == label).view(np.uint8)
        found = cv2.findContours(crop, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        contour = np.squeeze(found[0].astype(np.int32)) if found else np.zeros((0, 2), np.int32)
        if contour.ndim != 2 or contour.shape[0] < 3:
            continue
        contour[:, 0] += box[1].start
        contour[:, 1] += box[0].start
        keep[k] = True
        contours.append(contour)

    voted = probs = None
    if type_map is not None:
        kind, votes = _vote(owner, type_map.ravel()[pixels].astype(np.int64), groups)
        voted = kind[index][keep]
        probs = votes[index][keep] / area[keep]
    ids = id_of[index].astype(np.int32)
    return Nuclei(
        instances=labels,
        ids=ids[keep],
        bboxes=bboxes[keep],
        centroids=centroids[keep],
        contours=tuple(contours),
        areas=area[keep].astype(np.int64),
        types=voted,
        type_probs=probs,
        dropped=ids[~keep],
    )


def postprocess(
    np_prob: np.ndarray,
    hv: np.ndarray,
    tp: np.ndarray | None = None,
    *,
    scale: float | None = None,
    spacing: float | None = None,
    parameters: PostProcessParameters | None = None,
    channels_last: bool | None = None,
) -> Nuclei:
    """HoVer-Net's tile post-processing: :func:`instance_map`, then :func:`instance_properties`.

    Parameters
    ----------
    np_prob
        ``(rows, cols)`` nucleus probabilities.
    hv
        ``(2, rows, cols)`` or ``(rows, cols, 2)`` horizontal and vertical maps.
    tp
        Optional types: ``(C, rows, cols)`` or ``(rows, cols, C)`` probabilities (their argmax
        is taken, as the original's ``infer_step``), or ``(rows, cols)`` integer labels.
    scale, spacing, parameters
        See :func:`instance_map`.
    channels_last
        Layout of ``hv`` and ``tp`` when their shapes alone do not tell.

    Returns
    -------
    Nuclei
    """
    prob = _np_map(np_prob)
    labels = None if tp is None else _type_labels(tp, prob.shape, channels_last)
    instances = instance_map(
        prob, hv, scale=scale, spacing=spacing, parameters=parameters, channels_last=channels_last
    )
    return instance_properties(instances, labels)
