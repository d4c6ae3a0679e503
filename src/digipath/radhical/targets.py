"""RADHicaL's per-level training targets, made from one full-resolution nucleus mask.

RADHicaL (reference ``seeds-deephealth-radhical.md`` §5.1, ``step1_levels_make_patches_3class.m``)
trains one small classifier per magnification. Their targets all come from a binary annotation
mask at the finest spacing (40x, 0.25 µm/px in the original):

**Coarser levels, three classes** (:func:`level_fraction`, :func:`level_classes`). The mask is

1. mean-filtered with an ``f x f`` box, ``f = round(factor)`` (``factor`` = the level's spacing
   over the finest spacing: 2, 4 and 10 for 20x, 10x and 4x from 40x), zero-padded at the
   border and anchored as MATLAB's ``imfilter`` anchors even kernels (rows ``r - (f-1)//2``
   to ``r + f//2``);
2. resized by ``1 / factor`` as MATLAB's ``imresize(..., 'bilinear')`` does when it shrinks: a
   triangle kernel stretched by ``factor`` (antialiasing; support ``±factor`` fine pixels),
   half-pixel centres, weights normalised per output pixel, the border mirrored
   (``symmetric``);
3. rounded to 2 decimals (half away from zero).

The result, the *fraction*, is 0 where every associated fine pixel is negative and 1 where
every one is positive. :func:`level_classes` labels it **2 "all positive"** where it is
``> 0.99``, **1 "mixed, needs the finer level"** where ``0 < fraction <= 0.99``, **0 "all
negative"** where it is 0 *and* the background mask allows negatives, and **255 (not
sampled)** elsewhere. The original tests ``< 0.99`` for the mixed class, so a fraction of
exactly 0.99 (``0.985 <= mean < 0.995`` before rounding) was in no class; here it is mixed, as
such a pixel does have negative fine pixels and needs more computation.

**Finest level, two classes** (:func:`finest_parts`, :func:`finest_classes`): 1 "nucleus" on the
mask; 0 on the *edge ring* (:func:`edge_ring`: the mask dilated 3 times by a 3 x 3 square, minus
the mask) and on the background (where the background mask allows negatives, off the mask and
the ring); 255 elsewhere. The ring and the background are sampled with separate caps, so
:func:`finest_parts` keeps them apart.

**The background heuristic** (:func:`background_heuristic`, ``makeNegativeMask.m``): "far from
dark blobs". On the red channel of the RGB image:

1. contrast-stretch it between MATLAB ``stretchlim``'s limits (:func:`stretch_limits`: the
   first grey level whose cumulative share exceeds 5 %, and the first reaching 50 %) to
   ``[0, 1]``;
2. keep the pixels ``< 0.3`` (dark blobs);
3. drop the blobs (8-connected) under 100 px, and fill their holes (background pixels not
   8-connected to the image border, as ``bwfill``);
4. box-filter with a 50 x 50 box (zero-padded, MATLAB's anchor: rows ``r - 24`` to ``r + 25``)
   and keep the pixels where it is zero: no dark pixel in the box;
5. remove the edge ring.

The sizes are the original's at 40x. At another spacing ``s`` (µm/px) they are scaled to the
same physical sizes: the blob area threshold is ``6.25 µm² / s²`` pixels (100 px at
0.25 µm/px, 25 px at 0.5) and the box side is ``round(12.5 µm / s)`` pixels (50 px at 0.25,
25 px at 0.5). The coarser levels use the finest level's background, resized by nearest
neighbour (MATLAB's ``imresize(..., 'nearest')``: coarse pixel ``i`` takes fine pixel
``floor((i + 0.5) * factor)``, :func:`nearest_indices`).

Any other mask can stand in for the heuristic: every function here takes a boolean
``background`` ("negatives may be sampled here"), e.g. a tissue mask
(:func:`digipath.tissue.tissue`) or a hand-drawn one.

.. note::
   In the MATLAB code the threshold of step 2 compares ``imadjust``'s **uint8** output with
   0.3, which keeps only the pixels at or below the lower stretch limit (the darkest ~5 %).
   The default here is the threshold the code's comment and the reference notes describe
   (0.3 on the stretched value in ``[0, 1]``); ``threshold=1/510`` reproduces the code's
   output exactly.

Arrays are ``(rows, cols)`` (masks, maps) or ``(rows, cols, 3)`` (RGB), in pixels at one
spacing; coordinates are ``(row, col)``, top-left origin.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

__all__ = [
    "BACKGROUND_PART",
    "EDGE_ITERATIONS",
    "EDGE_PART",
    "IGNORE",
    "MIXED",
    "NEGATIVE",
    "NUCLEUS",
    "NUCLEUS_PART",
    "POSITIVE",
    "POSITIVE_ABOVE",
    "REFERENCE_SPACING",
    "FractionPlan",
    "Heuristic",
    "background_heuristic",
    "edge_ring",
    "finest_classes",
    "finest_parts",
    "heuristic_window",
    "level_classes",
    "level_fraction",
    "nearest_indices",
    "nearest_resize",
    "red_histogram",
    "resize_taps",
    "stretch_limits",
]

REFERENCE_SPACING = 0.25
"""The original's finest spacing (40x), µm/px, at which its pixel sizes apply."""

NEGATIVE, MIXED, POSITIVE = 0, 1, 2
"""Classes of the coarser levels."""

NUCLEUS = 1
"""The positive class of the finest level (0 is negative)."""

IGNORE = 255
"""Pixels of no class (never sampled)."""

BACKGROUND_PART, EDGE_PART, NUCLEUS_PART = 0, 1, 2
"""The finest level's sampling groups in :func:`finest_parts` (background and edge are both
class 0, nucleus is class 1)."""

POSITIVE_ABOVE = 0.99
"""A coarse pixel is "all positive" when its fraction is above this."""

EDGE_ITERATIONS = 3
"""Dilations (3 x 3 square) making the edge ring."""

_CONNECTIVITY = np.ones((3, 3), dtype=bool)  # 8-connectivity


# --------------------------------------------------------------------------------------------
# Checks


def _binary(mask: np.ndarray, what: str = "mask") -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise ValueError(f"expected a (rows, cols) {what}, got shape {mask.shape}")
    return mask if mask.dtype == bool else mask != 0


def _check_factor(factor: float) -> float:
    if isinstance(factor, bool) or not np.isfinite(factor) or factor < 1:
        raise ValueError(
            f"the factor (level spacing over finest spacing) must be a number >= 1, got {factor!r}"
        )
    return float(factor)


# --------------------------------------------------------------------------------------------
# MATLAB's imresize, one axis at a time


def _mirror(indices: np.ndarray, length: int) -> np.ndarray:
    """Fold indices into ``[0, length)`` by symmetric reflection (edge pixel repeated)."""
    period = 2 * length
    folded = np.mod(indices, period)
    return np.where(folded < length, folded, period - 1 - folded)


def resize_taps(
    in_length: int, out_length: int, factor: float, *, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Input pixels and weights of MATLAB's ``imresize(..., 'bilinear')`` along one axis.

    Parameters
    ----------
    in_length, out_length
        Pixels along the axis before and after resizing.
    factor
        Input pixels per output pixel (the spacing ratio; ``1 / scale``), >= 1.
    antialias
        Stretch the triangle kernel by ``factor`` when shrinking (MATLAB's default).

    Returns
    -------
    indices, weights
        int64 and float64 ``(out_length, taps)``: output pixel ``i`` is
        ``sum(weights[i] * input[indices[i]])``; indices are 0-based, mirrored into the input.
    """
    factor = _check_factor(factor)
    scale = 1.0 / factor
    width = 2.0
    if scale < 1 and antialias:
        width = 2.0 * factor

        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * np.maximum(0.0, 1.0 - np.abs(scale * x))

    else:

        def kernel(x: np.ndarray) -> np.ndarray:
            return np.maximum(0.0, 1.0 - np.abs(x))

    x = np.arange(1, out_length + 1, dtype=np.float64)  # MATLAB's 1-based output pixels
    u = x * factor + 0.5 * (1.0 - factor)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)
    weights = kernel(u[:, None] - indices)
    weights /= weights.sum(axis=1, keepdims=True)
    used = np.any(weights != 0, axis=0)
    indices = _mirror(indices[:, used].astype(np.int64) - 1, in_length)
    return indices, weights[:, used]


def nearest_indices(in_length: int, out_length: int, factor: float) -> np.ndarray:
    """0-based input pixel of each output pixel in MATLAB's ``imresize(..., 'nearest')``.

    Output pixel ``i`` takes input pixel ``floor((i + 0.5) * factor)`` (mirrored into the input
    when the last output pixel reaches past it).
    """
    factor = _check_factor(factor)
    indices = np.floor((np.arange(out_length, dtype=np.float64) + 0.5) * factor).astype(np.int64)
    return _mirror(indices, in_length)


def _output_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    return tuple(max(1, math.ceil(n / factor - 1e-9)) for n in shape)  # type: ignore[return-value]


def nearest_resize(
    mask: np.ndarray, factor: float, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """A ``(rows, cols)`` mask resized by ``1 / factor`` with :func:`nearest_indices`.

    ``shape`` is the output ``(rows, cols)`` (default ``ceil(input / factor)``, as MATLAB).
    """
    mask = np.asarray(mask)
    shape = _output_shape(mask.shape[:2], factor) if shape is None else tuple(shape)
    rows = nearest_indices(mask.shape[0], shape[0], factor)
    cols = nearest_indices(mask.shape[1], shape[1], factor)
    return mask[np.ix_(rows, cols)]


# --------------------------------------------------------------------------------------------
# Level fractions


def _round2(values: np.ndarray) -> np.ndarray:
    """Round to 2 decimals, halves away from zero (MATLAB's ``roundn(x, -2)``; x >= 0)."""
    return np.floor(values * 100.0 + 0.5) / 100.0


class FractionPlan:
    """:func:`level_fraction` of one level, computable block by block.

    The coarse map is exact block by block (every output pixel is computed from the same
    input pixels in the same order), so a whole slide can be done region by region: ask
    :meth:`source_window` which mask region a block of output pixels needs, read it (pixels
    outside the mask are 0) and pass it to :meth:`compute`.

    Parameters
    ----------
    mask_shape
        ``(rows, cols)`` of the full-resolution mask, pixels.
    factor
        The level's spacing over the mask's spacing (>= 1; 2, 4, 10 for 20x, 10x, 4x from
        40x). The box side is ``round(factor)``, the resize scale ``1 / factor``.
    shape
        ``(rows, cols)`` of the level (default ``ceil(mask_shape / factor)``, as MATLAB). Give
        the image's shape at the level so that the map and the image share a pixel grid.
    """

    def __init__(
        self, mask_shape: tuple[int, int], factor: float, shape: tuple[int, int] | None = None
    ) -> None:
        self.factor = _check_factor(factor)
        self.mask_shape = (int(mask_shape[0]), int(mask_shape[1]))
        self.shape = _output_shape(self.mask_shape, self.factor) if shape is None else (
            int(shape[0]), int(shape[1]))  # fmt: skip
        if min(self.shape) < 1 or min(self.mask_shape) < 1:
            raise ValueError(f"empty shapes: mask {self.mask_shape}, level {self.shape}")
        self.box = max(1, round(self.factor))
        self.before, self.after = (self.box - 1) // 2, self.box // 2
        self.rows = resize_taps(self.mask_shape[0], self.shape[0], self.factor)
        self.cols = resize_taps(self.mask_shape[1], self.shape[1], self.factor)

    def _span(self, taps: np.ndarray, start: int, stop: int) -> tuple[int, int]:
        used = taps[start:stop]
        return int(used.min()), int(used.max()) + 1

    def source_window(
        self, rows: tuple[int, int], cols: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        """The mask region ``(row0, row1, col0, col1)`` (half-open, full-resolution pixels) that
        output ``rows`` x ``cols`` (half-open ranges) need; it may reach outside the mask."""
        r0, r1 = self._span(self.rows[0], *rows)
        c0, c1 = self._span(self.cols[0], *cols)
        return r0 - self.before, r1 + self.after, c0 - self.before, c1 + self.after

    def compute(
        self, window: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]
    ) -> np.ndarray:
        """float64 fractions of output ``rows`` x ``cols`` from the mask ``window`` that
        :meth:`source_window` named (nonzero = positive; 0 outside the mask)."""
        r0, r1, c0, c1 = self.source_window(rows, cols)
        window = _binary(window, "mask window")
        if window.shape != (r1 - r0, c1 - c0):
            raise ValueError(
                f"expected the mask window {(r1 - r0, c1 - c0)} of rows {r0}:{r1}, cols "
                f"{c0}:{c1}, got {window.shape}"
            )
        box = self.box
        total = np.zeros((window.shape[0] + 1, window.shape[1] + 1), np.int64)
        np.cumsum(np.cumsum(window, axis=0, dtype=np.int64), axis=1, out=total[1:, 1:])
        sums = total[box:, box:] - total[:-box, box:] - total[box:, :-box] + total[:-box, :-box]
        filtered = sums / float(box * box)  # rows lo..hi-1 of the box-filtered mask
        lo_r, lo_c = r0 + self.before, c0 + self.before
        indices, weights = self.rows[0][rows[0] : rows[1]] - lo_r, self.rows[1][rows[0] : rows[1]]
        along_rows = np.zeros((len(indices), filtered.shape[1]))
        for tap in range(indices.shape[1]):
            along_rows += weights[:, tap, None] * filtered[indices[:, tap]]
        indices, weights = self.cols[0][cols[0] : cols[1]] - lo_c, self.cols[1][cols[0] : cols[1]]
        result = np.zeros((along_rows.shape[0], len(indices)))
        for tap in range(indices.shape[1]):
            result += along_rows[:, indices[:, tap]] * weights[None, :, tap]
        return _round2(result)


def _padded(array: np.ndarray, r0: int, r1: int, c0: int, c1: int, fill=0) -> np.ndarray:
    """``array[r0:r1, c0:c1]`` with ``fill`` outside the array."""
    out = np.full((r1 - r0, c1 - c0, *array.shape[2:]), fill, dtype=array.dtype)
    a0, a1 = max(r0, 0), min(r1, array.shape[0])
    b0, b1 = max(c0, 0), min(c1, array.shape[1])
    if a0 < a1 and b0 < b1:
        out[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = array[a0:a1, b0:b1]
    return out


def level_fraction(
    mask: np.ndarray,
    factor: float,
    shape: tuple[int, int] | None = None,
    *,
    block: int = 512,
) -> np.ndarray:
    """The fraction of positive fine pixels behind every pixel of a coarser level.

    The original's box mean filter, antialiased bilinear resize and rounding (see the module
    docstring), computed in blocks of output pixels to bound the memory.

    Parameters
    ----------
    mask
        ``(rows, cols)`` binary annotation mask at the finest spacing (nonzero = positive:
        0/1 and 0/255 masks alike).
    factor
        The level's spacing over the mask's spacing (>= 1), e.g. 2, 4 and 10 for 20x, 10x and
        4x from 40x; non-integer factors resize by ``1 / factor`` with a ``round(factor)`` box.
    shape
        ``(rows, cols)`` of the level in pixels (default ``ceil(mask.shape / factor)``).
    block
        Output pixels per block side.

    Returns
    -------
    numpy.ndarray
        float64 ``(rows, cols)`` at the level, in ``[0, 1]``, rounded to 2 decimals.
    """
    mask = _binary(mask)
    plan = FractionPlan(mask.shape, factor, shape)
    result = np.empty(plan.shape)
    for r in range(0, plan.shape[0], block):
        for c in range(0, plan.shape[1], block):
            rows, cols = (r, min(r + block, plan.shape[0])), (c, min(c + block, plan.shape[1]))
            window = _padded(mask, *plan.source_window(rows, cols), fill=False)
            result[rows[0] : rows[1], cols[0] : cols[1]] = plan.compute(window, rows, cols)
    return result


# --------------------------------------------------------------------------------------------
# Classes


def edge_ring(mask: np.ndarray, iterations: int = EDGE_ITERATIONS) -> np.ndarray:
    """bool ``(rows, cols)``: the mask dilated ``iterations`` times by a 3 x 3 square, minus
    the mask (MATLAB ``bwmorph(mask, 'dilate', n) & ~mask``; pixels, zero-padded)."""
    mask = _binary(mask)
    if iterations < 1:
        return np.zeros_like(mask)
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=int(iterations),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip
    return (grown > 0) & ~mask


def _check_background(background: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    background = _binary(background, "background mask")
    if background.shape != tuple(shape):
        raise ValueError(
            f"the background mask is {background.shape}, the level is {tuple(shape)} pixels"
        )
    return background


def finest_parts(
    mask: np.ndarray, background: np.ndarray, *, iterations: int = EDGE_ITERATIONS
) -> np.ndarray:
    """The finest level's sampling groups.

    Parameters
    ----------
    mask
        ``(rows, cols)`` binary nucleus mask (nonzero = nucleus).
    background
        ``(rows, cols)`` bool: where negatives may be sampled (the heuristic or any mask).
    iterations
        Dilations making the edge ring (:func:`edge_ring`).

    Returns
    -------
    numpy.ndarray
        uint8 ``(rows, cols)``: :data:`NUCLEUS_PART` (2) on the mask, :data:`EDGE_PART` (1) on
        the edge ring, :data:`BACKGROUND_PART` (0) where the background allows it off both,
        :data:`IGNORE` (255) elsewhere.
    """
    mask = _binary(mask)
    background = _check_background(background, mask.shape)
    ring = edge_ring(mask, iterations)
    parts = np.full(mask.shape, IGNORE, np.uint8)
    parts[background] = BACKGROUND_PART
    parts[ring] = EDGE_PART
    parts[mask] = NUCLEUS_PART
    return parts


_PART_CLASSES = np.full(256, IGNORE, np.uint8)
_PART_CLASSES[[BACKGROUND_PART, EDGE_PART, NUCLEUS_PART]] = [0, 0, NUCLEUS]


def finest_classes(
    mask: np.ndarray, background: np.ndarray, *, iterations: int = EDGE_ITERATIONS
) -> np.ndarray:
    """uint8 ``(rows, cols)`` two-class map of the finest level: 1 nucleus; 0 the edge ring and
    the background (see :func:`finest_parts`); 255 elsewhere."""
    return _PART_CLASSES[finest_parts(mask, background, iterations=iterations)]


def level_classes(fraction: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The three-class map of a coarser level.

    Parameters
    ----------
    fraction
        ``(rows, cols)`` fractions from :func:`level_fraction`.
    background
        ``(rows, cols)`` bool at the same level: where "all negative" may be sampled.

    Returns
    -------
    numpy.ndarray
        uint8 ``(rows, cols)``: :data:`POSITIVE` (2) where ``fraction > 0.99``, :data:`MIXED` (1)
        where ``0 < fraction <= 0.99`` (the original left exactly 0.99 out), :data:`NEGATIVE`
        (0) where ``fraction == 0`` and the background allows it, :data:`IGNORE` (255)
        elsewhere.
    """
    fraction = np.asarray(fraction)
    if fraction.ndim != 2:
        raise ValueError(f"expected a (rows, cols) fraction map, got shape {fraction.shape}")
    background = _check_background(background, fraction.shape)
    classes = np.full(fraction.shape, IGNORE, np.uint8)
    classes[(fraction == 0) & background] = NEGATIVE
    classes[(fraction > 0) & (fraction <= POSITIVE_ABOVE)] = MIXED
    classes[fraction > POSITIVE_ABOVE] = POSITIVE
    return classes


# --------------------------------------------------------------------------------------------
# The background heuristic


def red_histogram(image: np.ndarray) -> np.ndarray:
    """int64 ``(256,)`` histogram of the red channel of a uint8 RGB ``(rows, cols, 3)`` image
    (sum the histograms of tiles to get a whole slide's)."""
    return np.bincount(_red(image).ravel(), minlength=256).astype(np.int64)


def _red(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected a (rows, cols, 3) uint8 RGB image, got {image.dtype} {image.shape}"
        )
    return image[:, :, 0]


def stretch_limits(
    values: np.ndarray, stretch: tuple[float, float] = (0.05, 0.5)
) -> tuple[int, int]:
    """MATLAB ``stretchlim`` of a uint8 channel, in grey levels.

    Parameters
    ----------
    values
        A uint8 ``(rows, cols)`` channel, or its ``(256,)`` histogram.
    stretch
        ``(low, high)`` cumulative shares: the lower limit is the first grey level whose
        cumulative share exceeds ``low``, the upper the first reaching ``high``.

    Returns
    -------
    tuple of int
        ``(low, high)`` grey levels; ``(0, 255)`` when they coincide (a flat image).
    """
    low, high = (float(v) for v in stretch)
    if not 0 <= low < high <= 1:
        raise ValueError(f"expected stretch shares 0 <= low < high <= 1, got {stretch!r}")
    values = np.asarray(values)
    if values.shape == (256,) and values.dtype != np.uint8:
        histogram = values.astype(np.float64)
    elif values.dtype == np.uint8:
        histogram = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    else:
        raise ValueError(f"expected a uint8 channel or a (256,) histogram, got {values.dtype} "
                         f"{values.shape}")  # fmt: skip
    total = histogram.sum()
    if total == 0:
        return 0, 255
    shares = np.cumsum(histogram) / total
    first = int(np.argmax(shares > low))
    last = int(np.argmax(shares >= high))
    return (0, 255) if first == last else (first, last)


@dataclass(frozen=True)
class Heuristic:
    """Settings of :func:`background_heuristic` (the original's at 40x by default).

    Attributes
    ----------
    threshold
        Dark pixels are below this on the stretched red channel in ``[0, 1]`` (0.3;
        ``1/510`` reproduces the MATLAB code's uint8 comparison, see the module note).
    stretch
        ``stretchlim``'s cumulative shares of the lower and upper limits (0.05, 0.5).
    min_blob_um2
        Dark blobs smaller than this (µm²) are dropped: 6.25 µm² = 100 px at 0.25 µm/px.
    box_um
        Side of the box (µm) that must hold no dark pixel: 12.5 µm = 50 px at 0.25 µm/px.
    """

    threshold: float = 0.3
    stretch: tuple[float, float] = (0.05, 0.5)
    min_blob_um2: float = 100 * REFERENCE_SPACING**2
    box_um: float = 50 * REFERENCE_SPACING

    def __post_init__(self) -> None:
        for name in ("threshold", "min_blob_um2", "box_um"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not (np.isfinite(value) and value >= 0)
            ):
                raise ValueError(f"heuristic {name} must be a number >= 0, got {value!r}")
        stretch = tuple(float(v) for v in self.stretch)
        if len(stretch) != 2 or not 0 <= stretch[0] < stretch[1] <= 1:
            raise ValueError(f"heuristic stretch must be (low, high) shares, got {self.stretch!r}")
        object.__setattr__(self, "stretch", stretch)

    def pixels(self, spacing: float) -> tuple[float, int]:
        """``(blob area threshold, box side)`` in pixels at ``spacing`` µm/px."""
        if not spacing > 0:
            raise ValueError(f"the spacing must be > 0 µm/px, got {spacing!r}")
        return self.min_blob_um2 / spacing**2, max(1, round(self.box_um / spacing))

    def margin(self, spacing: float) -> int:
        """Pixels around a tile that make the tiled heuristic equal the whole-image one
        (except for holes wider than this margin, which a tile does not fill)."""
        area, box = self.pixels(spacing)
        return int(box + math.ceil(area) + 2 * box + 2)


def _dark_blobs(red: np.ndarray, limits: tuple[int, int], settings: Heuristic,
                spacing: float) -> np.ndarray:  # fmt: skip
    """Steps 1-3: the stretched red channel below the threshold, small blobs dropped, holes
    filled (components touching the array's border are not holes)."""
    low, high = limits
    levels = np.arange(256, dtype=np.float64)
    stretched = (np.clip(levels, low, high) - low) / max(high - low, 1)
    dark = (stretched < settings.threshold)[red]
    area, _ = settings.pixels(spacing)
    labels, count = ndimage.label(dark, structure=_CONNECTIVITY)
    if count:
        keep = np.bincount(labels.ravel()) >= area
        keep[0] = False
        dark = keep[labels]
    labels, count = ndimage.label(~dark, structure=_CONNECTIVITY)
    if count:
        outside = np.zeros(count + 1, bool)
        for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
            outside[edge] = True
        hole = ~outside
        hole[0] = False
        dark |= hole[labels]
    return dark


def _far_from(dark: np.ndarray, box: int) -> np.ndarray:
    """Step 4: no dark pixel in the box (rows ``r - (box-1)//2 .. r + box//2``, zero-padded)."""
    before = (box - 1) // 2
    kernel = np.ones((box, box), np.uint8)
    near = cv2.dilate(dark.astype(np.uint8), kernel, anchor=(before, before),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip
    return near == 0


def heuristic_window(
    image: np.ndarray, spacing: float, limits: tuple[int, int], settings: Heuristic
) -> np.ndarray:
    """Steps 1-4 of the heuristic on an image or a window of one (no ring removed).

    Holes are filled where they lie inside the window; blobs and the box are exact at least
    :meth:`Heuristic.margin` pixels inside the window's border (a window side that is the
    image border is exact).
    """
    red = _red(image)
    dark = _dark_blobs(red, limits, settings, spacing)
    return _far_from(dark, settings.pixels(spacing)[1])


def background_heuristic(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    spacing: float = REFERENCE_SPACING,
    threshold: float = 0.3,
    stretch: tuple[float, float] = (0.05, 0.5),
    min_blob_um2: float = 100 * REFERENCE_SPACING**2,
    box_um: float = 50 * REFERENCE_SPACING,
    limits: tuple[int, int] | None = None,
    iterations: int = EDGE_ITERATIONS,
) -> np.ndarray:
    """The original's "far from dark blobs" background mask (see the module docstring).

    Parameters
    ----------
    image
        uint8 RGB ``(rows, cols, 3)``.
    mask
        Optional ``(rows, cols)`` nucleus mask; its edge ring (:func:`edge_ring`) is removed.
    spacing
        µm/px of ``image``; the pixel sizes are scaled from the original's at 0.25 µm/px.
    threshold, stretch, min_blob_um2, box_um
        See :class:`Heuristic`.
    limits
        ``(low, high)`` stretch limits in grey levels (default :func:`stretch_limits` of this
        image; give a whole slide's when ``image`` is a tile of it).
    iterations
        Dilations of the edge ring.

    Returns
    -------
    numpy.ndarray
        bool ``(rows, cols)``: True where negatives may be sampled.
    """
    settings = Heuristic(threshold, stretch, min_blob_um2, box_um)
    red = _red(image)
    if limits is None:
        limits = stretch_limits(red, settings.stretch)
    background = heuristic_window(image, spacing, limits, settings)
    if mask is not None:
        mask = _binary(mask)
        if mask.shape != red.shape:
            raise ValueError(f"the mask is {mask.shape}, the image {red.shape} pixels")
        background &= ~edge_ring(mask, iterations)
    return background
