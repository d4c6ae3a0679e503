"""Affine spatial augmenters: flips, right-angle rotations, transposition, rotation, scaling.

Every class here is an :class:`~digipath.augment.base.AffineAugmenter`: one affine map of pixel
coordinates, described exactly by :meth:`~digipath.augment.base.AffineAugmenter.matrix` (input
``(col, row, 1)`` of pixel centres, origin at the centre of the top-left pixel, to output
coordinates). :func:`~digipath.augment.chain.run_chain` multiplies those matrices to fuse a run of
them into one warp, so :meth:`matrix` and :meth:`output_shape` describe exactly what
:meth:`apply` does.

Shapes are ``(rows, cols)`` in pixels; angles are in degrees, counter-clockwise as displayed
(rows pointing down). Label maps get the same map with nearest-neighbour sampling; where a
constant border invents pixels they get :data:`~digipath.augment.base.LABEL_FILL`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from digipath.augment.base import (
    BORDERS,
    INTERPOLATIONS,
    LABEL_FILL,
    AffineAugmenter,
    Shape,
    check_choice,
    check_number,
    check_range,
    draw,
    order_to_interpolation,
    warp_affine,
)
from digipath.errors import AugmentationError

__all__ = ["Flip", "Rotate", "Rotate90", "Scale", "Transpose"]

_KERNEL_MARGIN = {"nearest": 0, "linear": 0, "area": 0, "cubic": 2, "lanczos4": 4}
"""Extra context per side an interpolation reads beyond the sampled coordinate (pixels)."""


def _not_drawn(keyword: str) -> AugmentationError:
    return AugmentationError(f"{keyword}: call randomize(rng) before applying")


def _match_parity(size: int, target: int) -> int:
    """``size`` rounded up so that ``size - target`` is even (a symmetric centre crop)."""
    return size + (size - target) % 2


def _safe_label(label: np.ndarray) -> np.ndarray:
    """``label`` in a dtype whose nearest :func:`cv2.warpAffine` picks the same source pixels
    as for uint8 patches (OpenCV's int16, int32 and float64 nearest paths round differently)."""
    if label.dtype in (np.uint8, np.uint16, np.float32):
        return label
    if label.dtype.kind == "b":
        return label.view(np.uint8)
    if label.size == 0:
        return label.astype(np.uint16)
    low, high = label.min(), label.max()
    if low >= 0 and high <= np.iinfo(np.uint16).max:
        return label.astype(np.uint16)
    if -(2**24) <= low and high <= 2**24:
        return label.astype(np.float32)
    return label


def _apply_affine(
    augmenter: AffineAugmenter, image: np.ndarray, label: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """:meth:`AffineAugmenter.apply`, with labels warped through a pixel-consistent dtype."""
    shape = image.shape[:2]
    out = augmenter.output_shape(shape)
    matrix = augmenter.matrix(shape)
    interpolation = "nearest" if augmenter.exact() else augmenter.interpolation
    border, value = augmenter.border, augmenter.border_value
    warped = warp_affine(image, matrix, out, interpolation, border, value)
    if label is not None:
        moved = warp_affine(_safe_label(label), matrix, out, "nearest", border, LABEL_FILL)
        if label.dtype.kind == "b":
            label = moved != 0
        else:
            label = moved.astype(label.dtype, copy=False)
    return warped, label


def _permuted(array: np.ndarray, cv2_op, numpy_op) -> np.ndarray:
    """Apply an exact pixel permutation with OpenCV (fast) or, where it cannot, numpy.

    Both ops take ``array`` and return the permuted array; the result is C-contiguous, a new
    array, and keeps the input's dtype and channel axis. OpenCV is used only for the dtypes
    it stores natively (it would silently narrow int64 to int32).
    """
    if array.dtype not in _CV2_DTYPES:
        return np.ascontiguousarray(numpy_op(array))
    try:
        result = cv2_op(array)
    except cv2.error:
        return np.ascontiguousarray(numpy_op(array))
    if array.ndim == 3 and result.ndim == 2:
        result = result[:, :, None]
    return result


_CV2_DTYPES = tuple(
    np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)
)


def _check_sequence(keyword: str, name: str, value: object) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise AugmentationError(f"{keyword}: {name} must be a non-empty list, got {value!r}")
    items = list(value)
    if not items:
        raise AugmentationError(f"{keyword}: {name} must be a non-empty list, got {value!r}")
    return items


class Flip(AffineAugmenter):
    """Mirror the patch, choosing uniformly from a list of flips (keyword ``flip``).

    Parameters
    ----------
    flips
        Flips to choose from, uniformly per draw; repeat an entry to weight it. ``'none'``
        (identity), ``'vertical'`` (reverse the rows: up-down), ``'horizontal'`` (reverse the
        columns: left-right) or ``'both'`` (a 180 degree rotation).

    Notes
    -----
    The shape is unchanged. :meth:`apply` uses OpenCV / numpy flips (no interpolation);
    :meth:`matrix` describes the same map for fused warps.
    """

    keyword = "flip"
    CHOICES = ("none", "vertical", "horizontal", "both")

    def __init__(self, flips: Sequence[str] = ("none", "vertical", "horizontal", "both")) -> None:
        items = _check_sequence(self.keyword, "flips", flips)
        self.flips = [check_choice(self.keyword, "flips", item, self.CHOICES) for item in items]
        self._flip: str | None = self.flips[0] if len(set(self.flips)) == 1 else None

    @property
    def flip(self) -> str:
        """The flip of the current draw."""
        if self._flip is None:
            raise _not_drawn(self.keyword)
        return self._flip

    def randomize(self, rng: np.random.Generator) -> None:
        self._flip = self.flips[int(rng.integers(len(self.flips)))]

    def exact(self) -> bool:
        return True

    def _axes(self) -> tuple[int, ...]:
        return {"none": (), "vertical": (0,), "horizontal": (1,), "both": (0, 1)}[self.flip]

    def matrix(self, shape: Shape) -> np.ndarray:
        rows, cols = shape
        matrix = np.eye(3)
        axes = self._axes()
        if 0 in axes:
            matrix[1, 1], matrix[1, 2] = -1.0, rows - 1.0
        if 1 in axes:
            matrix[0, 0], matrix[0, 2] = -1.0, cols - 1.0
        return matrix

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        axes = self._axes()
        if not axes:
            return image.copy(), (None if label is None else label.copy())
        code = {(0,): 0, (1,): 1, (0, 1): -1}[axes]

        def flip(array: np.ndarray) -> np.ndarray:
            return _permuted(array, lambda a: cv2.flip(a, code), lambda a: np.flip(a, axes))

        return flip(image), (None if label is None else flip(label))


class Rotate90(AffineAugmenter):
    """Rotate by a multiple of 90 degrees counter-clockwise (keyword ``rotate_90``).

    Parameters
    ----------
    rotations
        The multiples ``k`` to choose from, uniformly per draw (taken modulo 4; repeat an entry
        to weight it). The rotation is ``k`` quarter turns counter-clockwise as displayed, like
        ``np.rot90(patch, k, axes=(0, 1))``.

    Notes
    -----
    An odd ``k`` swaps the shape of a non-square patch. :meth:`input_shape` therefore asks for
    a square ``(max, max)`` patch when the list mixes odd and even ``k`` for a non-square
    target (the centre crop of either result then has the target shape), and for the swapped
    shape when every ``k`` is odd.
    """

    keyword = "rotate_90"

    def __init__(self, rotations: Sequence[int] = (0, 1, 2, 3)) -> None:
        items = _check_sequence(self.keyword, "rotations", rotations)
        self.rotations = [
            check_number(self.keyword, "rotations", item, integer=True) % 4 for item in items
        ]
        self._k: int | None = self.rotations[0] if len(set(self.rotations)) == 1 else None

    @property
    def k(self) -> int:
        """The number of counter-clockwise quarter turns of the current draw (0-3)."""
        if self._k is None:
            raise _not_drawn(self.keyword)
        return self._k

    def randomize(self, rng: np.random.Generator) -> None:
        self._k = self.rotations[int(rng.integers(len(self.rotations)))]

    def exact(self) -> bool:
        return True

    def matrix(self, shape: Shape) -> np.ndarray:
        rows, cols = float(shape[0]), float(shape[1])
        matrix = {
            0: [[1, 0, 0], [0, 1, 0]],
            1: [[0, 1, 0], [-1, 0, cols - 1]],
            2: [[-1, 0, cols - 1], [0, -1, rows - 1]],
            3: [[0, -1, rows - 1], [1, 0, 0]],
        }[self.k]
        return np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])

    def output_shape(self, input_shape: Shape) -> Shape:
        rows, cols = input_shape
        parities = {k % 2 for k in self.rotations} if self._k is None else {self._k % 2}
        if len(parities) > 1:
            raise _not_drawn(self.keyword)
        return (cols, rows) if parities.pop() else (rows, cols)

    def input_shape(self, output_shape: Shape) -> Shape:
        rows, cols = output_shape
        parities = {k % 2 for k in self.rotations}
        if rows == cols or parities == {0}:
            return (rows, cols)
        if parities == {1}:
            return (cols, rows)
        side = max(rows, cols)
        return (side, side)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        k = self.k
        if k == 0:
            return image.copy(), (None if label is None else label.copy())
        code = {
            1: cv2.ROTATE_90_COUNTERCLOCKWISE,
            2: cv2.ROTATE_180,
            3: cv2.ROTATE_90_CLOCKWISE,
        }[k]

        def rotate(array: np.ndarray) -> np.ndarray:
            return _permuted(
                array, lambda a: cv2.rotate(a, code), lambda a: np.rot90(a, k, axes=(0, 1))
            )

        return rotate(image), (None if label is None else rotate(label))


class Transpose(AffineAugmenter):
    """Swap rows and columns (keyword ``transpose``).

    Deterministic: apply it with a probability through a container (DeepHealth's
    ``AugTranspose p``). The output of a ``(rows, cols)`` patch is ``(cols, rows)``.
    """

    keyword = "transpose"

    def exact(self) -> bool:
        return True

    def matrix(self, shape: Shape) -> np.ndarray:
        return np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])

    def output_shape(self, input_shape: Shape) -> Shape:
        return (input_shape[1], input_shape[0])

    def input_shape(self, output_shape: Shape) -> Shape:
        return (output_shape[1], output_shape[0])

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        image = _permuted(image, cv2.transpose, lambda a: a.transpose(1, 0, 2))
        if label is not None:
            label = _permuted(label, cv2.transpose, lambda a: a.T)
        return image, label


def _rotation_matrix(angle: float, centre: tuple[float, float], scale: float) -> np.ndarray:
    """Forward map rotating by ``angle`` degrees counter-clockwise (as displayed) and zooming
    by ``scale`` about ``centre`` = (row, col), in pixel-centre coordinates (col, row)."""
    theta = math.radians(angle)
    a = scale * math.cos(theta)
    b = scale * math.sin(theta)
    row, col = centre
    return np.array(
        [
            [a, b, (1.0 - a) * col - b * row],
            [-b, a, b * col + (1.0 - a) * row],
            [0.0, 0.0, 1.0],
        ]
    )


def _bounding_extent(rows: int, cols: int, bounds: tuple[float, float]) -> tuple[float, float]:
    """Largest (rows, cols) bounding box of a ``rows`` x ``cols`` rectangle rotated by any
    angle (degrees) in ``bounds``."""
    low, high = bounds
    if high - low >= 180.0:
        diagonal = math.hypot(rows, cols)
        return diagonal, diagonal
    # Width w|cos| + h|sin| peaks at +-atan(h/w) + k*180 degrees, height at +-atan(w/h) + k*180.
    critical = []
    for base in (math.degrees(math.atan2(rows, cols)), math.degrees(math.atan2(cols, rows))):
        for sign in (1.0, -1.0):
            start = math.floor((low - sign * base) / 180.0)
            for k in range(start, start + 3):
                candidate = sign * base + 180.0 * k
                if low <= candidate <= high:
                    critical.append(candidate)
    best_rows = best_cols = 0.0
    for angle in [low, high, *critical]:
        c = abs(math.cos(math.radians(angle)))
        s = abs(math.sin(math.radians(angle)))
        best_cols = max(best_cols, cols * c + rows * s)
        best_rows = max(best_rows, cols * s + rows * c)
    return best_rows, best_cols


class Rotate(AffineAugmenter):
    """Rotate by a random angle about a centre, optionally zooming (keyword ``rotate``).

    Parameters
    ----------
    angle
        Range ``[min, max]`` of the angle in degrees, counter-clockwise as displayed (rows
        pointing down); a single number is a fixed angle. Drawn uniformly.
    centre
        Centre of rotation ``(row, col)`` in pixel-centre coordinates of the input (origin at
        the centre of the top-left pixel), or ``None`` for the patch centre
        ``((rows - 1) / 2, (cols - 1) / 2)``.
    scale
        Zoom factor applied with the rotation (> 0; 1 keeps the size of structures).
    interpolation
        One of :data:`~digipath.augment.base.INTERPOLATIONS` for the image; labels always use
        nearest.
    border, border_value
        Border mode (:data:`~digipath.augment.base.BORDERS` except ``'transparent'``) and the
        image value of a ``'constant'`` border (labels get
        :data:`~digipath.augment.base.LABEL_FILL`).

    Notes
    -----
    The output shape equals the input shape. With ``centre=None``, :meth:`input_shape` returns
    the bounding box of the target rectangle rotated by the worst angle of the range (divided
    by ``scale`` when it is below 1), rounded up to the parity of the target, plus the kernel
    support of cubic or Lanczos interpolation, so the centre-cropped result is all real pixels.
    With an explicit centre the target is returned unchanged.
    """

    keyword = "rotate"

    def __init__(
        self,
        angle: float | Sequence[float],
        centre: Sequence[float] | None = None,
        scale: float = 1.0,
        interpolation: str = "linear",
        border: str = "reflect_101",
        border_value: float = 0.0,
    ) -> None:
        self.angle = check_range(self.keyword, "angle", angle)
        if centre is not None:
            try:
                pair = [float(v) for v in centre]  # type: ignore[union-attr]
            except (TypeError, ValueError):
                raise AugmentationError(
                    f"{self.keyword}: centre must be (row, col) in pixels or None, got {centre!r}"
                ) from None
            if len(pair) != 2 or not all(math.isfinite(v) for v in pair):
                raise AugmentationError(
                    f"{self.keyword}: centre must be (row, col) in pixels or None, got {centre!r}"
                )
            centre = (pair[0], pair[1])
        self.centre = centre
        self.scale = check_number(self.keyword, "scale", scale, low=0.0)
        if self.scale <= 0:
            raise AugmentationError(f"{self.keyword}: scale must be > 0, got {scale!r}")
        self.interpolation = check_choice(
            self.keyword, "interpolation", interpolation, list(INTERPOLATIONS)
        )
        self.border = check_choice(
            self.keyword, "border", border, [b for b in BORDERS if b != "transparent"]
        )
        self.border_value = check_number(self.keyword, "border_value", border_value)
        self._angle: float | None = self.angle[0] if self.angle[0] == self.angle[1] else None

    @property
    def drawn_angle(self) -> float:
        """The angle of the current draw, in degrees counter-clockwise."""
        if self._angle is None:
            raise _not_drawn(self.keyword)
        return self._angle

    def randomize(self, rng: np.random.Generator) -> None:
        self._angle = draw(rng, self.angle)

    def exact(self) -> bool:
        return self.scale == 1.0 and self.drawn_angle % 360.0 == 0.0

    def matrix(self, shape: Shape) -> np.ndarray:
        if self.centre is None:
            centre = ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)
        else:
            centre = self.centre
        return _rotation_matrix(self.drawn_angle, centre, self.scale)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return _apply_affine(self, image, label)

    def input_shape(self, output_shape: Shape) -> Shape:
        rows, cols = int(output_shape[0]), int(output_shape[1])
        if self.centre is not None:
            return (rows, cols)
        identity = self.angle[0] == self.angle[1] and self.angle[0] % 360.0 == 0.0
        if identity and self.scale >= 1.0:
            return (rows, cols)
        ext_rows, ext_cols = _bounding_extent(rows, cols, self.angle)
        if self.scale < 1.0:
            ext_rows, ext_cols = ext_rows / self.scale, ext_cols / self.scale
        margin = 2 * _KERNEL_MARGIN[self.interpolation]
        need_rows = max(rows, math.ceil(ext_rows - 1e-9)) + margin
        need_cols = max(cols, math.ceil(ext_cols - 1e-9)) + margin
        return (_match_parity(need_rows, rows), _match_parity(need_cols, cols))


class Scale(AffineAugmenter):
    """Zoom about the patch centre by a random factor, keeping the shape (keyword ``scale``).

    The DigitalPathology scaling augmenter: a factor ``f`` is drawn uniformly from
    ``scaling``; ``f > 1`` enlarges structures (zooms in), ``f < 1`` shrinks them (zooms out,
    showing more context). Unlike the original, label maps are sampled with nearest neighbour.

    Parameters
    ----------
    scaling
        Range ``[min, max]`` of the factor, ``min > 0`` (a single number is fixed).
    order
        Spline order 0-5 of the image interpolation, mapped by
        :func:`~digipath.augment.base.order_to_interpolation`. The border is ``reflect_101``.

    Notes
    -----
    :meth:`input_shape` is ``ceil(out / min(1, scaling_min))`` per axis (rounded up to the
    parity of ``out`` so the centre crop is symmetric about the zoom centre, plus the kernel
    support of cubic or Lanczos interpolation when zooming out), so zooming out by any drawn
    factor never shows reflected border inside the centre ``out`` region.
    """

    keyword = "scale"

    def __init__(self, scaling: float | Sequence[float], order: int = 1) -> None:
        self.scaling = check_range(self.keyword, "scaling", scaling, low=0.0, low_open=True)
        try:
            self.interpolation = order_to_interpolation(order)
        except AugmentationError as error:
            raise AugmentationError(f"{self.keyword}: {error}") from None
        self.order = int(order)
        self.border = "reflect_101"
        self.border_value = 0.0
        self._factor: float | None = self.scaling[0] if self.scaling[0] == self.scaling[1] else None

    @property
    def factor(self) -> float:
        """The zoom factor of the current draw."""
        if self._factor is None:
            raise _not_drawn(self.keyword)
        return self._factor

    def randomize(self, rng: np.random.Generator) -> None:
        self._factor = draw(rng, self.scaling)

    def exact(self) -> bool:
        return self.factor == 1.0

    def matrix(self, shape: Shape) -> np.ndarray:
        return _rotation_matrix(0.0, ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0), self.factor)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return _apply_affine(self, image, label)

    def input_shape(self, output_shape: Shape) -> Shape:
        rows, cols = int(output_shape[0]), int(output_shape[1])
        low = min(1.0, self.scaling[0])
        if low >= 1.0:
            return (rows, cols)
        margin = 2 * _KERNEL_MARGIN[self.interpolation]
        need_rows = math.ceil(rows / low - 1e-9) + margin
        need_cols = math.ceil(cols / low - 1e-9) + margin
        return (_match_parity(need_rows, rows), _match_parity(need_cols, cols))
