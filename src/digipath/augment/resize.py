"""Size-changing spatial augmenters: resizing and cropping.

:class:`Resize` resamples the patch to a fixed shape or by factors (DeepHealth's
``AugResizeDim`` and ``AugResizeScale``); :class:`Crop` cuts a window at the centre or at a
random position, padding with a border where the window is larger than the patch (DeepHealth's
``AugCenterCrop`` and ``AugRandomCrop``). Label maps get the same geometry with nearest
neighbour sampling. Shapes are ``(rows, cols)`` in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from digipath.augment.base import (
    INTERPOLATIONS,
    LABEL_FILL,
    Augmenter,
    Shape,
    check_choice,
    check_number,
    seed_from,
)
from digipath.errors import AugmentationError

__all__ = ["Crop", "Resize"]


def _check_pair(
    keyword: str, name: str, value: object, *, integer: bool, positive: bool = True
) -> tuple:
    """Validate a ``(rows, cols)`` pair (a single number means both); return it."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        items = [value, value]
    else:
        try:
            items = list(value)  # type: ignore[call-overload]
        except TypeError:
            raise AugmentationError(
                f"{keyword}: {name} must be a pair (rows, cols), got {value!r}"
            ) from None
    if len(items) != 2:
        raise AugmentationError(f"{keyword}: {name} must be a pair (rows, cols), got {value!r}")
    pair = tuple(check_number(keyword, name, item, integer=integer) for item in items)
    if positive and any(item <= 0 for item in pair):
        raise AugmentationError(f"{keyword}: {name} must be > 0, got {value!r}")
    return pair


def _nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Input index read by each output index when resizing an axis (pixel-centre aligned)."""
    centres = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out)
    return np.minimum(np.floor(centres).astype(np.intp), size_in - 1)


class Resize(Augmenter):
    """Resample the patch to a shape or by factors (keyword ``resize``).

    Parameters
    ----------
    shape
        Target ``(rows, cols)`` in pixels (a single integer: a square).
    factor
        Zoom factors ``(row factor, col factor)`` (> 0; a single number: both). The output
        is ``max(1, round(size * factor))`` per axis.
    interpolation
        Image interpolation (:data:`~digipath.augment.base.INTERPOLATIONS`; ``'area'`` is the
        best for shrinking). Labels, and images with ``'nearest'``, are sampled at the nearest
        pixel centre (output pixel ``i`` reads input ``floor((i + 0.5) * in / out)``).

    Exactly one of ``shape`` and ``factor`` must be given.
    """

    keyword = "resize"
    spatial = True

    def __init__(
        self,
        shape: int | Sequence[int] | None = None,
        factor: float | Sequence[float] | None = None,
        interpolation: str = "linear",
    ) -> None:
        if (shape is None) == (factor is None):
            raise AugmentationError(
                f"{self.keyword}: give exactly one of shape (rows, cols) and factor "
                f"(row factor, col factor), got shape={shape!r}, factor={factor!r}"
            )
        self.shape: Shape | None = None
        self.factor: tuple[float, float] | None = None
        if shape is not None:
            self.shape = _check_pair(self.keyword, "shape", shape, integer=True)
        else:
            self.factor = _check_pair(self.keyword, "factor", factor, integer=False)
        self.interpolation = check_choice(
            self.keyword, "interpolation", interpolation, list(INTERPOLATIONS)
        )

    def output_shape(self, input_shape: Shape) -> Shape:
        if self.shape is not None:
            return self.shape
        rows, cols = input_shape
        return (
            max(1, round(rows * self.factor[0])),  # type: ignore[index]
            max(1, round(cols * self.factor[1])),  # type: ignore[index]
        )

    def input_shape(self, output_shape: Shape) -> Shape:
        if self.shape is not None:
            return tuple(output_shape)
        return (
            math.ceil(output_shape[0] / self.factor[0] - 1e-9),  # type: ignore[index]
            math.ceil(output_shape[1] / self.factor[1] - 1e-9),  # type: ignore[index]
        )

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        rows_in, cols_in = image.shape[:2]
        rows, cols = self.output_shape((rows_in, cols_in))
        if (rows, cols) == (rows_in, cols_in):
            return image.copy(), (None if label is None else label.copy())
        row_index = col_index = None
        if self.interpolation == "nearest" or label is not None:
            row_index = _nearest_indices(rows_in, rows)
            col_index = _nearest_indices(cols_in, cols)
        if self.interpolation == "nearest":
            out = image.take(row_index, axis=0).take(col_index, axis=1)
        else:
            flag = INTERPOLATIONS[self.interpolation]
            parts = []
            for start in range(0, image.shape[2], 4):  # OpenCV resizes at most 4 channels
                chunk = np.ascontiguousarray(image[:, :, start : start + 4])
                part = cv2.resize(chunk, (cols, rows), interpolation=flag)
                parts.append(part.reshape(rows, cols, chunk.shape[2]))
            out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
        if label is not None:
            label = label.take(row_index, axis=0).take(col_index, axis=1)
        return out, label


_PAD_MODES = {
    "constant": "constant",
    "replicate": "edge",
    "reflect": "symmetric",
    "reflect_101": "reflect",
    "reflect101": "reflect",
    "wrap": "wrap",
}
"""numpy ``np.pad`` modes equivalent to the OpenCV border names."""


class Crop(Augmenter):
    """Cut a window at the centre or at a random position (keyword ``crop``).

    Parameters
    ----------
    size
        Window ``(rows, cols)`` in pixels (a single integer: a square), or ``None`` for the
        largest centred square, side ``min(rows, cols)``.
    position
        ``'centre'`` (offset ``(in - out) // 2`` per axis, as
        :func:`~digipath.augment.base.centre_crop`) or ``'random'`` (offset drawn uniformly
        among all windows, from a seed drawn in :meth:`randomize`, so image and label map and
        repeated calls get the same window).
    border, border_value
        How to fill where the window is larger than the patch: a border mode from
        :data:`~digipath.augment.base.BORDERS` (not ``'transparent'``), and the image value of a
        ``'constant'`` border; label maps get :data:`~digipath.augment.base.LABEL_FILL` there.
        When the window is larger, the patch lies centred in it (``'centre'``) or at a random
        place inside it (``'random'``).
    """

    keyword = "crop"
    spatial = True
    POSITIONS = ("centre", "random")

    def __init__(
        self,
        size: int | Sequence[int] | None = None,
        position: str = "centre",
        border: str = "constant",
        border_value: float = 0.0,
    ) -> None:
        self.size: Shape | None = (
            None if size is None else _check_pair(self.keyword, "size", size, integer=True)
        )
        self.position = check_choice(self.keyword, "position", position, self.POSITIONS)
        self.border = check_choice(self.keyword, "border", border, list(_PAD_MODES))
        self.border_value = check_number(self.keyword, "border_value", border_value)
        self._seed: int | None = None

    def randomize(self, rng: np.random.Generator) -> None:
        if self.position == "random":
            self._seed = seed_from(rng)

    def output_shape(self, input_shape: Shape) -> Shape:
        if self.size is None:
            side = min(input_shape[0], input_shape[1])
            return (side, side)
        return self.size

    def input_shape(self, output_shape: Shape) -> Shape:
        return tuple(output_shape)

    def offsets(self, shape: Shape) -> tuple[int, int]:
        """Top-left ``(row, col)`` of the window in the input (negative: padding before)."""
        out = self.output_shape(shape)
        if self.position == "centre":
            return ((shape[0] - out[0]) // 2, (shape[1] - out[1]) // 2)
        if self._seed is None:
            raise AugmentationError(f"{self.keyword}: call randomize(rng) before applying")
        rng = np.random.default_rng(self._seed)
        result = []
        for size_in, size_out in zip(shape, out, strict=True):
            excess = size_in - size_out
            low, high = min(0, excess), max(0, excess)
            result.append(int(rng.integers(low, high + 1)))
        return result[0], result[1]

    def _cut(
        self, array: np.ndarray, offsets: tuple[int, int], out: Shape, fill: float
    ) -> np.ndarray:
        """The ``out`` window at ``offsets`` of ``array``, padded where it sticks out."""
        rows, cols = array.shape[:2]
        top, left = offsets
        pads = [
            (max(0, -top), max(0, top + out[0] - rows)),
            (max(0, -left), max(0, left + out[1] - cols)),
        ]
        if not any(before or after for before, after in pads):
            return array[top : top + out[0], left : left + out[1]].copy()
        pads += [(0, 0)] * (array.ndim - 2)
        mode = _PAD_MODES[self.border]
        if mode == "constant":
            padded = np.pad(array, pads, mode="constant", constant_values=fill)
        else:  # reflections and wrapping need the whole patch, not just the window
            padded = np.pad(array, pads, mode=mode)
        top += pads[0][0]
        left += pads[1][0]
        return np.ascontiguousarray(padded[top : top + out[0], left : left + out[1]])

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        shape = image.shape[:2]
        out = self.output_shape(shape)
        offsets = self.offsets(shape)
        image = self._cut(image, offsets, out, self.border_value)
        if label is not None:
            label = self._cut(label, offsets, out, LABEL_FILL)
        return image, label
