"""Non-affine spatial augmenters: elastic deformation, grid distortion, optical distortion.

Each draws its parameters in ``randomize`` (a seed for per-pixel fields, replayed with
:func:`numpy.random.default_rng` in ``apply``), builds one pair of sampling maps for the patch
shape and samples the image (with its interpolation) and the label map (nearest neighbour) with
the same maps through :func:`cv2.remap`. So the image and its labels move together, and
``apply`` after one ``randomize`` is deterministic.

Sampling maps hold, for each output pixel, the input coordinate ``(col, row)`` of pixel centres
(origin at the centre of the top-left pixel) it is read from. Shapes are ``(rows, cols)`` in
pixels; displacements are in pixels.
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
    Augmenter,
    Shape,
    check_choice,
    check_number,
    check_range,
    draw,
    order_to_interpolation,
    seed_from,
)
from digipath.errors import AugmentationError

__all__ = ["Elastic", "GridDistortion", "OpticalDistortion", "remap"]

_BORDERS = list(BORDERS)


def _not_drawn(keyword: str) -> AugmentationError:
    return AugmentationError(f"{keyword}: call randomize(rng) before applying")


def remap(
    array: np.ndarray,
    map_x: np.ndarray,
    map_y: np.ndarray,
    interpolation: str = "linear",
    border: str = "reflect_101",
    border_value: float = 0.0,
) -> np.ndarray:
    """Sample ``array`` (rows, cols[, channels]) at ``(map_x, map_y)`` with :func:`cv2.remap`.

    ``map_x`` and ``map_y`` are float32 ``(out_rows, out_cols)`` input coordinates (col and
    row of pixel centres). The result keeps the dtype and the channel axis of ``array``; any
    channel count works (split into groups of 4). Integer label arrays of types OpenCV cannot
    sample go through float64 (nearest only), so no value is clipped. The ``'transparent'``
    border keeps the input's own pixel where the sample falls outside (maps of the input's
    shape only).
    """
    flags = INTERPOLATIONS[interpolation]
    mode = BORDERS[border]
    dtype = array.dtype
    work = array
    if dtype.kind == "b":
        work = array.view(np.uint8)
    elif dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        if flags != cv2.INTER_NEAREST:
            raise AugmentationError(f"cannot interpolate a {dtype} array other than nearest")
        work = array.astype(np.float64)
    transparent = mode == cv2.BORDER_TRANSPARENT
    if transparent and map_x.shape != work.shape[:2]:
        raise AugmentationError("the 'transparent' border needs maps of the input's shape")

    def sample(source: np.ndarray) -> np.ndarray:
        return cv2.remap(
            source,
            map_x,
            map_y,
            flags,
            dst=source.copy() if transparent else None,
            borderMode=mode,
            borderValue=(border_value,) * 4,
        )

    if work.ndim == 2:
        result = sample(work)
    else:
        parts = []
        for start in range(0, work.shape[2], 4):
            chunk = np.ascontiguousarray(work[:, :, start : start + 4])
            if chunk.shape[2] == 1:
                chunk = chunk[:, :, 0]
            part = sample(chunk)
            parts.append(part.reshape(*part.shape[:2], -1))
        result = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
    if dtype.kind == "b":
        return result != 0
    return result.astype(dtype, copy=False)


def _remap_pair(
    image: np.ndarray,
    label: np.ndarray | None,
    map_x: np.ndarray,
    map_y: np.ndarray,
    interpolation: str,
    border: str,
    border_value: float,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sample the image (``interpolation``) and the label map (nearest) with the same maps."""
    out = remap(image, map_x, map_y, interpolation, border, border_value)
    if label is not None:
        label = remap(label, map_x, map_y, "nearest", border, LABEL_FILL)
    return out, label


def _grid(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """Identity maps: column and row index of every pixel, float32 (rows, cols) each."""
    rows, cols = shape
    xs = np.broadcast_to(np.arange(cols, dtype=np.float32)[None, :], (rows, cols))
    ys = np.broadcast_to(np.arange(rows, dtype=np.float32)[:, None], (rows, cols))
    return xs, ys


def _gaussian_ksize(sigma: float) -> int:
    """Kernel size :func:`cv2.GaussianBlur` picks for a float32 image and ``sigma``."""
    return max(1, round(sigma * 4 * 2 + 1) | 1)


def _field_std(sigma: float) -> float:
    """Standard deviation of ``GaussianBlur(U(-1, 1) noise, sigma)`` away from the borders.

    The noise has variance 1/3; a 2-D separable filter ``k`` scales it by ``(sum k^2)^2``.
    For a continuous Gaussian ``sum k^2 = 1 / (2 sqrt(pi) sigma)``; the discrete kernel OpenCV
    uses is exact for small sigma too.
    """
    kernel = cv2.getGaussianKernel(_gaussian_ksize(sigma), sigma, cv2.CV_64F).ravel()
    return float(np.sum(kernel**2)) / math.sqrt(3.0)


# -- elastic -------------------------------------------------------------------------------------


class Elastic(Augmenter):
    """Elastic deformation (Simard et al. 2003) of patch and labels (keyword ``elastic``).

    One 2-D displacement field ``(dy, dx)`` per draw is shared by every channel and by the
    label map: each component is ``GaussianBlur(U(-1, 1) noise of shape (rows, cols), sigma)
    * alpha`` pixels, and output pixel ``(r, c)`` is read from input ``(r + dy, c + dx)``.

    Parameters
    ----------
    sigma
        Range of the smoothing standard deviation in pixels (> 0), drawn uniformly. Larger is
        smoother.
    alpha
        Range of the displacement scale in pixels (> 0), drawn uniformly.
    maps
        ``None``: a fresh field per draw (from a seed drawn in :meth:`randomize`). An integer
        ``n >= 1``: ``n`` fixed fields (seed, sigma and alpha drawn by the first
        :meth:`randomize`, fields built lazily and cached per patch shape); each draw picks one
        uniformly from all ``n``. Faster, less varied.
    order
        Spline order 0-5 of the image interpolation (see
        :func:`~digipath.augment.base.order_to_interpolation`); labels always use nearest.
    border, border_value
        Border mode (:data:`~digipath.augment.base.BORDERS`) and the image value of a
        ``'constant'`` border (labels get :data:`~digipath.augment.base.LABEL_FILL`).

    Notes
    -----
    :meth:`input_shape` adds ``ceil(4 * max(alpha) * std)`` pixels per side, where ``std`` is
    the standard deviation of the smoothed noise at ``min(sigma)`` (about
    ``(1 / sqrt(3)) / (2 sqrt(pi) sigma)``; computed from OpenCV's discrete kernel). The field
    is random, so this bounds the displacement with high probability, not surely.
    """

    keyword = "elastic"
    spatial = True

    def __init__(
        self,
        sigma: float | Sequence[float],
        alpha: float | Sequence[float],
        maps: int | None = None,
        order: int = 1,
        border: str = "reflect_101",
        border_value: float = 0.0,
    ) -> None:
        self.sigma = check_range(self.keyword, "sigma", sigma, low=0.0, low_open=True)
        self.alpha = check_range(self.keyword, "alpha", alpha, low=0.0, low_open=True)
        if maps is not None:
            maps = check_number(self.keyword, "maps", maps, low=1, integer=True)
        self.maps = maps
        try:
            self.interpolation = order_to_interpolation(order)
        except AugmentationError as error:
            raise AugmentationError(f"{self.keyword}: {error}") from None
        self.order = int(order)
        self.border = check_choice(self.keyword, "border", border, _BORDERS)
        self.border_value = check_number(self.keyword, "border_value", border_value)
        self._params: tuple[int, float, float] | None = None  # seed, sigma, alpha
        self._bank: list[tuple[int, float, float]] | None = None
        self._index = 0
        self._cache: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _draw_params(self, rng: np.random.Generator) -> tuple[int, float, float]:
        return (seed_from(rng), draw(rng, self.sigma), draw(rng, self.alpha))

    def randomize(self, rng: np.random.Generator) -> None:
        if self.maps is None:
            self._params = self._draw_params(rng)
            return
        if self._bank is None:
            self._bank = [self._draw_params(rng) for _ in range(self.maps)]
        self._index = int(rng.integers(self.maps))
        self._params = self._bank[self._index]

    @staticmethod
    def displacement(
        shape: Shape, seed: int, sigma: float, alpha: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The displacement field ``(dy, dx)`` in pixels, float32 (rows, cols) each."""
        rng = np.random.default_rng(seed)
        noise = rng.random((2, shape[0], shape[1]), dtype=np.float32)
        noise = noise * np.float32(2.0) - np.float32(1.0)
        ksize = _gaussian_ksize(sigma)
        fields = []
        for component in noise:
            smooth = cv2.GaussianBlur(
                component, (ksize, ksize), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
            )
            fields.append(smooth * np.float32(alpha))
        return fields[0], fields[1]

    def _maps(self, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
        if self._params is None:
            raise _not_drawn(self.keyword)
        key = (self._index, int(shape[0]), int(shape[1]))
        if self.maps is not None and key in self._cache:
            return self._cache[key]
        dy, dx = self.displacement(shape, *self._params)
        xs, ys = _grid(shape)
        result = (xs + dx, ys + dy)
        if self.maps is not None:
            self._cache[key] = result
        return result

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        map_x, map_y = self._maps(image.shape[:2])
        return _remap_pair(
            image, label, map_x, map_y, self.interpolation, self.border, self.border_value
        )

    def margin(self) -> int:
        """Context per side (pixels) that :meth:`input_shape` adds: 4 field std at worst."""
        return math.ceil(4.0 * self.alpha[1] * _field_std(self.sigma[0]) - 1e-9)

    def input_shape(self, output_shape: Shape) -> Shape:
        margin = self.margin()
        return (int(output_shape[0]) + 2 * margin, int(output_shape[1]) + 2 * margin)

    def __repr__(self) -> str:
        return (
            f"Elastic(sigma={self.sigma!r}, alpha={self.alpha!r}, maps={self.maps!r}, "
            f"order={self.order!r}, border={self.border!r}, border_value={self.border_value!r})"
        )


# -- grid distortion -----------------------------------------------------------------------------


def _grid_axis(size: int, steps: np.ndarray, normalized: bool) -> np.ndarray:
    """Source coordinate (pixel centres) of every output pixel along one axis.

    The axis ``[0, size]`` (pixel edges) is cut into ``len(steps)`` equal cells; cell ``i``
    reads a stretch of ``steps[i]`` cell widths of the input, cumulatively from the start. The
    last knot is pinned to the end of the axis (albumentations' grid); with ``normalized``
    the stretches are instead rescaled to fill the axis exactly, so nothing is read past the
    edges.
    """
    count = len(steps)
    knots_out = np.linspace(0.0, 1.0, count + 1)
    cumulative = np.concatenate([[0.0], np.cumsum(steps)])
    if normalized:
        knots_in = cumulative / cumulative[-1]
    else:
        knots_in = cumulative / count
        knots_in[-1] = 1.0
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    source = np.interp(centres, knots_out, knots_in) * size - 0.5
    if normalized:
        source = np.clip(source, 0.0, size - 1.0)
    return source.astype(np.float32)


class GridDistortion(Augmenter):
    """Grid distortion, albumentations style (keyword ``grid_distortion``).

    The patch is cut into ``num_steps`` equal cells per axis; every cell is stretched or
    squeezed by ``1 + d`` with ``d ~ U(distort_limit)``, independently for columns (x) and rows
    (y), and the cells are laid end to end (a separable, piecewise-linear map).

    Parameters
    ----------
    num_steps
        Number of cells per axis (>= 1): an integer, or a range ``[min, max]`` of integers
        drawn uniformly (inclusive).
    distort_limit
        Range of the per-cell distortion ``d`` (each end in (-1, 1)); a single number ``x``
        means ``[x, x]``.
    interpolation
        Image interpolation (:data:`~digipath.augment.base.INTERPOLATIONS`); labels are nearest.
    border, border_value
        Border mode and the image value of a ``'constant'`` border (labels get
        :data:`~digipath.augment.base.LABEL_FILL`).
    normalized
        Rescale the cells to fill the patch exactly (the albumentations >= 1.4 default), so no
        border is ever shown. ``False`` pins only the last knot to the edge, as the classic
        albumentations grid does; the last cell may then read past the edge (border).
    """

    keyword = "grid_distortion"
    spatial = True

    def __init__(
        self,
        num_steps: int | Sequence[int] = 5,
        distort_limit: float | Sequence[float] = (-0.3, 0.3),
        interpolation: str = "linear",
        border: str = "reflect_101",
        border_value: float = 0.0,
        normalized: bool = True,
    ) -> None:
        steps = check_range(self.keyword, "num_steps", num_steps, low=1)
        if steps is None or any(float(v) != int(v) for v in steps):
            raise AugmentationError(
                f"{self.keyword}: num_steps must be an integer or a range of integers >= 1, "
                f"got {num_steps!r}"
            )
        self.num_steps = (int(steps[0]), int(steps[1]))
        self.distort_limit = check_range(self.keyword, "distort_limit", distort_limit)
        if self.distort_limit is not None and not (
            -1.0 < self.distort_limit[0] and self.distort_limit[1] < 1.0
        ):
            raise AugmentationError(
                f"{self.keyword}: distort_limit must lie in (-1, 1), got {distort_limit!r}"
            )
        self.interpolation = check_choice(
            self.keyword, "interpolation", interpolation, list(INTERPOLATIONS)
        )
        self.border = check_choice(self.keyword, "border", border, _BORDERS)
        self.border_value = check_number(self.keyword, "border_value", border_value)
        if not isinstance(normalized, (bool, np.bool_)):
            raise AugmentationError(
                f"{self.keyword}: normalized must be true or false, got {normalized!r}"
            )
        self.normalized = bool(normalized)
        self._steps: tuple[np.ndarray, np.ndarray] | None = None  # x (cols), y (rows)

    def randomize(self, rng: np.random.Generator) -> None:
        low, high = self.distort_limit  # type: ignore[misc]
        count = int(rng.integers(self.num_steps[0], self.num_steps[1] + 1))
        x_steps = 1.0 + rng.uniform(low, high, count)
        y_steps = 1.0 + rng.uniform(low, high, count)
        self._steps = (x_steps, y_steps)

    def maps(self, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
        """The sampling maps ``(map_x, map_y)`` of the current draw for ``shape``."""
        if self._steps is None:
            raise _not_drawn(self.keyword)
        rows, cols = int(shape[0]), int(shape[1])
        xx = _grid_axis(cols, self._steps[0], self.normalized)
        yy = _grid_axis(rows, self._steps[1], self.normalized)
        map_x = np.broadcast_to(xx[None, :], (rows, cols))
        map_y = np.broadcast_to(yy[:, None], (rows, cols))
        return np.ascontiguousarray(map_x), np.ascontiguousarray(map_y)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        map_x, map_y = self.maps(image.shape[:2])
        return _remap_pair(
            image, label, map_x, map_y, self.interpolation, self.border, self.border_value
        )


# -- optical distortion --------------------------------------------------------------------------


class OpticalDistortion(Augmenter):
    """Barrel / pincushion lens distortion (keyword ``optical_distortion``).

    Output pixel ``p`` is read from ``c + (p - c) (1 + k r^2)``, where ``c`` is the patch
    centre shifted by ``(dy, dx)`` and ``r = |p - c| / h`` with ``h`` the half-diagonal of the
    patch, ``sqrt(rows^2 + cols^2) / 2`` (so ``r`` is about 1 in the corners). ``k > 0`` reads
    from further out (barrel: the content shrinks towards the centre), ``k < 0`` from nearer in
    (pincushion).

    Parameters
    ----------
    distort_limit
        Range of ``k`` (dimensionless), drawn uniformly.
    shift_limit
        Range of the centre shift as a fraction of the patch size: ``dx = u * cols`` and
        ``dy = v * rows`` with ``u, v ~ U(shift_limit)`` drawn independently.
    interpolation
        Image interpolation (:data:`~digipath.augment.base.INTERPOLATIONS`); labels are nearest.
    border, border_value
        Border mode and the image value of a ``'constant'`` border (labels get
        :data:`~digipath.augment.base.LABEL_FILL`).

    Notes
    -----
    :meth:`input_shape` adds per side the largest displacement ``|p - c| |k| r^2`` any
    output pixel of the centre target region can have for the worst ``k`` and shift (solved
    by fixed-point iteration, since ``h`` and the shift grow with the input).
    """

    keyword = "optical_distortion"
    spatial = True

    def __init__(
        self,
        distort_limit: float | Sequence[float] = (-0.05, 0.05),
        shift_limit: float | Sequence[float] = (-0.05, 0.05),
        interpolation: str = "linear",
        border: str = "reflect_101",
        border_value: float = 0.0,
    ) -> None:
        self.distort_limit = check_range(self.keyword, "distort_limit", distort_limit)
        self.shift_limit = check_range(self.keyword, "shift_limit", shift_limit, low=-0.5, high=0.5)
        self.interpolation = check_choice(
            self.keyword, "interpolation", interpolation, list(INTERPOLATIONS)
        )
        self.border = check_choice(self.keyword, "border", border, _BORDERS)
        self.border_value = check_number(self.keyword, "border_value", border_value)
        self._params: tuple[float, float, float] | None = None  # k, shift rows, shift cols

    def randomize(self, rng: np.random.Generator) -> None:
        k = draw(rng, self.distort_limit)
        shift_rows = draw(rng, self.shift_limit)
        shift_cols = draw(rng, self.shift_limit)
        self._params = (k, shift_rows, shift_cols)

    def maps(self, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
        """The sampling maps ``(map_x, map_y)`` of the current draw for ``shape``."""
        if self._params is None:
            raise _not_drawn(self.keyword)
        k, shift_rows, shift_cols = self._params
        rows, cols = int(shape[0]), int(shape[1])
        centre_x = (cols - 1) / 2.0 + shift_cols * cols
        centre_y = (rows - 1) / 2.0 + shift_rows * rows
        half_diagonal_sq = (rows * rows + cols * cols) / 4.0
        x = np.arange(cols, dtype=np.float32) - np.float32(centre_x)
        y = np.arange(rows, dtype=np.float32) - np.float32(centre_y)
        factor = (x[None, :] ** 2 + y[:, None] ** 2) * np.float32(k / half_diagonal_sq)
        factor += np.float32(1.0)
        map_x = x[None, :] * factor + np.float32(centre_x)
        map_y = y[:, None] * factor + np.float32(centre_y)
        return map_x, map_y

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        map_x, map_y = self.maps(image.shape[:2])
        return _remap_pair(
            image, label, map_x, map_y, self.interpolation, self.border, self.border_value
        )

    def input_shape(self, output_shape: Shape) -> Shape:
        rows, cols = int(output_shape[0]), int(output_shape[1])
        k = max(abs(self.distort_limit[0]), abs(self.distort_limit[1]))  # type: ignore[index]
        shift = max(abs(self.shift_limit[0]), abs(self.shift_limit[1]))  # type: ignore[index]
        if k == 0.0:
            return (rows, cols)
        in_rows, in_cols = rows, cols
        for _ in range(100):
            # Farthest an output pixel of the target region can be from the shifted centre.
            reach_x = cols / 2.0 + shift * in_cols
            reach_y = rows / 2.0 + shift * in_rows
            r_sq = (reach_x**2 + reach_y**2) / ((in_rows**2 + in_cols**2) / 4.0)
            need_rows = rows + 2 * math.ceil(reach_y * k * r_sq - 1e-9)
            need_cols = cols + 2 * math.ceil(reach_x * k * r_sq - 1e-9)
            if need_rows <= in_rows and need_cols <= in_cols:
                return (in_rows, in_cols)
            in_rows, in_cols = max(in_rows, need_rows), max(in_cols, need_cols)
        raise AugmentationError(
            f"{self.keyword}: distort_limit {self.distort_limit} and shift_limit "
            f"{self.shift_limit} are too strong to bound the context a patch needs"
        )
