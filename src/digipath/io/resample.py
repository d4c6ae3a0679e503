"""Resampling a region of a level to another pixel spacing.

A region at a target spacing maps onto the source level by a scale ``factor`` (target spacing
over source spacing; > 1 shrinks). Output pixel ``i`` (along one axis) covers the source
interval ``[(start + i) * factor, (start + i + 1) * factor)`` where ``start`` is the region's
first output pixel. Two interpolations are offered:

``area``
    every output pixel is the mean of the source area it covers, weighted by the overlap
    (exact box filtering, for images and probability maps); integer factors take a fast
    block-mean path.
``nearest``
    every output pixel takes the source pixel under its centre (for label masks: no value is
    invented).

Arrays are (rows, cols, channels) throughout.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse

INTERPOLATIONS = ("area", "nearest")
"""Names accepted by :func:`resample`."""


def source_window(start: int, count: int, factor: float) -> tuple[int, int]:
    """Return the half-open source interval [first, stop) that ``count`` output pixels need.

    Parameters
    ----------
    start
        Index of the first output pixel, at the target spacing.
    count
        Number of output pixels.
    factor
        Target spacing over source spacing.
    """
    first = math.floor(start * factor + 1e-9)
    stop = math.ceil((start + count) * factor - 1e-9)
    return first, max(stop, first + 1)


def _is_integer(value: float) -> bool:
    return abs(value - round(value)) < 1e-9 and round(value) >= 1


def _area_weights(start: int, count: int, factor: float, first: int, size: int):
    """Sparse (count, size) matrix of the overlap of output pixels with source pixels."""
    edges = (start + np.arange(count + 1)) * factor - first  # output pixel edges in source px
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    values: list[np.ndarray] = []
    lo, hi = edges[:-1], edges[1:]
    span = math.ceil(factor) + 1
    for k in range(span + 1):
        index = np.floor(lo).astype(np.int64) + k
        overlap = np.minimum(hi, index + 1) - np.maximum(lo, index)
        keep = (overlap > 1e-12) & (index >= 0) & (index < size)
        rows.append(np.nonzero(keep)[0])
        cols.append(index[keep])
        values.append(overlap[keep])
    row = np.concatenate(rows)
    col = np.concatenate(cols)
    value = np.concatenate(values).astype(np.float32)
    weights = scipy.sparse.csr_matrix((value, (row, col)), shape=(count, size))
    totals = np.asarray(weights.sum(axis=1)).ravel()
    totals[totals == 0] = 1
    return scipy.sparse.diags((1 / totals).astype(np.float32)) @ weights


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def resample(
    source: np.ndarray,
    source_origin: tuple[int, int],
    start: tuple[int, int],
    shape: tuple[int, int],
    factor: float,
    interpolation: str,
) -> np.ndarray:
    """Resample part of a source level to the target spacing.

    Parameters
    ----------
    source
        (rows, cols, channels) array holding the source window whose top-left pixel is
        ``source_origin`` (row, col) in source-level coordinates, as given by
        :func:`source_window` for both axes.
    source_origin
        (row, col) of ``source[0, 0]`` in source-level pixels.
    start
        (row, col) of the first output pixel, in target-spacing pixels.
    shape
        (rows, cols) of the output.
    factor
        Target spacing over source spacing (> 1 downsamples, < 1 upsamples).
    interpolation
        ``"area"`` or ``"nearest"``.

    Returns
    -------
    The (rows, cols, channels) output, of the source's dtype.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    (row, col), (height, width) = start, shape
    origin_row, origin_col = source_origin
    if interpolation == "nearest":
        rows = np.floor((row + np.arange(height) + 0.5) * factor).astype(np.int64) - origin_row
        cols = np.floor((col + np.arange(width) + 0.5) * factor).astype(np.int64) - origin_col
        rows = np.clip(rows, 0, source.shape[0] - 1)
        cols = np.clip(cols, 0, source.shape[1] - 1)
        return source[rows[:, np.newaxis], cols[np.newaxis, :]]
    if _is_integer(factor):
        k = round(factor)
        if (
            origin_row == row * k
            and origin_col == col * k
            and source.shape[0] >= height * k
            and source.shape[1] >= width * k
        ):
            block = source[: height * k, : width * k]
            channels = source.shape[2]
            wide = np.float64 if source.dtype.itemsize > 2 else np.float32
            summed = block.reshape(height, k, width, k, channels).sum(axis=(1, 3), dtype=wide)
            return _cast(summed / (k * k), source.dtype)
    row_weights = _area_weights(row, height, factor, origin_row, source.shape[0])
    col_weights = _area_weights(col, width, factor, origin_col, source.shape[1])
    channels = source.shape[2]
    data = source.astype(np.float32, copy=False)
    along_rows = row_weights @ data.reshape(source.shape[0], -1)  # (height, cols * channels)
    along_rows = np.asarray(along_rows).reshape(height, source.shape[1], channels)
    moved = along_rows.transpose(1, 0, 2).reshape(source.shape[1], -1)
    result = np.asarray(col_weights @ moved).reshape(width, height, channels).transpose(1, 0, 2)
    return _cast(np.ascontiguousarray(result), source.dtype)
