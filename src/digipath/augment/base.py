"""The augmenter interface: one small class per transform, one calling convention.

Every augmenter works on one patch, a ``(rows, cols, channels)`` uint8 array, and optionally its
label map, a ``(rows, cols)`` integer array at the same spacing. Drawing and applying are two
steps:

``randomize(rng)``
    draws every random parameter from a :class:`numpy.random.Generator` (including a seed for
    per-pixel randomness such as noise or deformation fields) and stores it;
``__call__(image, label=None) -> (image, label)``
    applies the stored parameters. It draws nothing from the caller's generator, so the same
    parameters apply to the patches of one location at every spacing and to image and label
    alike.

Spatial augmenters (:attr:`Augmenter.spatial`) move pixels: they transform the label map with the
same parameters and nearest-neighbour interpolation. Colour and noise augmenters never touch the
label map; it is returned as given.

Shapes are ``(rows, cols)`` in pixels throughout. An augmenter that needs context around the
patch (scaling down, rotating, blurring) says how much through :meth:`Augmenter.input_shape`: the
shape to extract so that the centre ``output_shape`` region of its result is made of real pixels,
with no invented border. :class:`~digipath.augment.pool.AugmenterPool` chains these requirements
and centre-crops back.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import cv2
import numpy as np

from digipath.errors import AugmentationError

Shape = tuple[int, int]
"""A patch shape ``(rows, cols)`` in pixels."""

LABEL_FILL = 255
"""Label value written where a spatial augmenter with a constant border invents pixels: the
ignore class of :mod:`digipath.data.labels`, which losses and metrics skip."""

INTERPOLATIONS: dict[str, int] = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos4": cv2.INTER_LANCZOS4,
}
"""Interpolation names accepted by spatial augmenters (the DeepHealth names)."""

BORDERS: dict[str, int] = {
    "constant": cv2.BORDER_CONSTANT,
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "wrap": cv2.BORDER_WRAP,
    "reflect_101": cv2.BORDER_REFLECT_101,
    "reflect101": cv2.BORDER_REFLECT_101,
    "transparent": cv2.BORDER_TRANSPARENT,
}
"""Border modes accepted by spatial augmenters (the DeepHealth names; ``reflect101`` is an
alias DeepHealth's random crop used)."""


def order_to_interpolation(order: int) -> str:
    """Map a spline order (0-5, the DigitalPathology ``order`` key) to an interpolation name.

    0 is nearest, 1 linear, 2 and 3 cubic, 4 and 5 Lanczos (8x8 window).
    """
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
        raise AugmentationError(f"order must be an integer in 0-5, got {order!r}")
    return ("nearest", "linear", "cubic", "cubic", "lanczos4", "lanczos4")[int(order)]


# -- parameter checking ------------------------------------------------------------------------


def check_range(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_none: bool = False,
) -> tuple[float, float] | None:
    """Validate a ``[min, max]`` parameter range and return it as a float pair.

    Parameters
    ----------
    owner, name
        The augmenter keyword and parameter name, for the error message.
    value
        A pair ``(min, max)`` with ``min <= max``, a single number (meaning ``(x, x)``), or
        ``None`` when ``allow_none``.
    low, high
        Inclusive bounds both ends must respect (``low`` exclusive when ``low_open``).
    """
    if value is None:
        if allow_none:
            return None
        raise AugmentationError(f"{owner}: {name} is required, expected a range [min, max]")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        pair = (float(value), float(value))
    else:
        try:
            items = list(value)
        except TypeError:
            raise AugmentationError(
                f"{owner}: {name} must be a range [min, max], got {value!r}"
            ) from None
        if len(items) != 2:
            raise AugmentationError(
                f"{owner}: {name} must be a range [min, max] of two numbers, got {value!r}"
            )
        try:
            pair = (float(items[0]), float(items[1]))
        except (TypeError, ValueError):
            raise AugmentationError(
                f"{owner}: {name} must be a range of numbers, got {value!r}"
            ) from None
    if not all(math.isfinite(v) for v in pair):
        raise AugmentationError(f"{owner}: {name} must be finite, got {value!r}")
    if pair[0] > pair[1]:
        raise AugmentationError(f"{owner}: {name} must have min <= max, got {value!r}")
    if low is not None and (pair[0] <= low if low_open else pair[0] < low):
        relation = ">" if low_open else ">="
        raise AugmentationError(f"{owner}: {name} must be {relation} {low}, got {value!r}")
    if high is not None and pair[1] > high:
        raise AugmentationError(f"{owner}: {name} must be <= {high}, got {value!r}")
    return pair


def check_number(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
) -> float:
    """Validate a scalar parameter within inclusive bounds; return it as float (or int)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        kind = "an integer" if integer else "a number"
        raise AugmentationError(f"{owner}: {name} must be {kind}, got {value!r}")
    if integer and float(value) != int(value):
        raise AugmentationError(f"{owner}: {name} must be an integer, got {value!r}")
    if not math.isfinite(float(value)):
        raise AugmentationError(f"{owner}: {name} must be finite, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise AugmentationError(
            f"{owner}: {name} must be in [{low if low is not None else '-inf'}, "
            f"{high if high is not None else 'inf'}], got {value!r}"
        )
    return int(value) if integer else float(value)


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """Validate a string parameter against its allowed values."""
    if value not in choices:
        raise AugmentationError(
            f"{owner}: {name} must be one of {', '.join(map(repr, choices))}; got {value!r}"
        )
    return str(value)


def draw(rng: np.random.Generator, bounds: tuple[float, float] | None, default: float = 0.0):
    """Draw uniformly from ``bounds`` (``default`` when ``None``, the value when degenerate)."""
    if bounds is None:
        return default
    if bounds[0] == bounds[1]:
        return bounds[0]
    return float(rng.uniform(bounds[0], bounds[1]))


# -- the interface -------------------------------------------------------------------------------


class Augmenter(ABC):
    """One transform of a patch (and, for spatial transforms, of its label map).

    Subclasses set :attr:`keyword` (the name in configs), :attr:`spatial`, implement
    :meth:`randomize` and :meth:`apply`, and override :meth:`input_shape` /
    :meth:`output_shape` when they need context or change the size.
    """

    keyword: ClassVar[str] = ""
    """Name of the augmenter in YAML configs (``hed_color``, ``flip`` ...)."""

    spatial: ClassVar[bool] = False
    """Whether the augmenter moves pixels, and so also transforms label maps."""

    uint8_only: ClassVar[bool] = True
    """Whether the augmenter needs uint8 input (false only for the float conversions)."""

    def randomize(self, rng: np.random.Generator) -> None:  # noqa: B027 - optional hook
        """Draw the parameters of the next application from ``rng``.

        Deterministic augmenters leave this empty.
        """

    def __call__(
        self, image: np.ndarray, label: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Apply the drawn parameters to ``image`` (rows, cols, channels) and ``label``.

        Returns
        -------
        (image, label)
            The transformed patch and label map (the label map unchanged, or ``None`` if none
            was given, for non-spatial augmenters). Inputs are never modified in place.
        """
        image = check_image(image, self.keyword, uint8=self.uint8_only)
        if label is not None:
            label = check_label(label, image, self.keyword)
        return self.apply(image, label)

    @abstractmethod
    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Apply the drawn parameters to validated arrays (see :meth:`__call__`)."""

    def input_shape(self, output_shape: Shape) -> Shape:
        """The patch shape to feed so the centre ``output_shape`` of the result is all real.

        The default, for augmenters that need no context, is ``output_shape`` itself.
        """
        return output_shape

    def output_shape(self, input_shape: Shape) -> Shape:
        """The shape of the result for an input of ``input_shape`` (default: unchanged)."""
        return input_shape

    def leaves(self) -> list[Augmenter]:
        """The augmenters that run on the next call (containers expand their chosen children)."""
        return [self]

    def __repr__(self) -> str:
        params = ", ".join(
            f"{key}={value!r}" for key, value in vars(self).items() if not key.startswith("_")
        )
        return f"{type(self).__name__}({params})"


class AffineAugmenter(Augmenter):
    """A spatial augmenter that is one affine map of pixel coordinates.

    Consecutive affine augmenters are fused by :func:`~digipath.augment.chain.run_chain` into a
    single warp, so a patch is interpolated once however many of them run.
    """

    spatial = True
    interpolation: str = "linear"
    border: str = "reflect_101"
    border_value: float = 0.0

    @abstractmethod
    def matrix(self, shape: Shape) -> np.ndarray:
        """The 3 x 3 map from input to output pixel coordinates ``(col, row, 1)``.

        Coordinates are of pixel centres, origin at the centre of the top-left pixel;
        ``shape`` is the input ``(rows, cols)``.
        """

    def exact(self) -> bool:
        """Whether the drawn map only permutes pixels (no interpolation needed)."""
        return False

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        shape = image.shape[:2]
        out = self.output_shape(shape)
        matrix = self.matrix(shape)
        interpolation = "nearest" if self.exact() else self.interpolation
        warped = warp_affine(image, matrix, out, interpolation, self.border, self.border_value)
        if label is not None:
            label = warp_affine(label, matrix, out, "nearest", self.border, LABEL_FILL)
        return warped, label


# -- array helpers ---------------------------------------------------------------------------


def check_image(image: Any, owner: str, *, uint8: bool = True) -> np.ndarray:
    """Validate a patch: a ``(rows, cols, channels)`` array, uint8 unless ``uint8`` is false."""
    if not isinstance(image, np.ndarray):
        raise AugmentationError(f"{owner}: the patch must be a numpy array, got {type(image)}")
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1 or image.shape[2] < 1:
        raise AugmentationError(
            f"{owner}: the patch must be (rows, cols, channels), got shape {image.shape}"
        )
    if uint8 and image.dtype != np.uint8:
        raise AugmentationError(
            f"{owner}: the patch must be uint8, got {image.dtype}; put conversions to float "
            "(to_float32, normalize ...) last in the pipeline"
        )
    return image


def check_label(label: Any, image: np.ndarray, owner: str) -> np.ndarray:
    """Validate a label map: a ``(rows, cols)`` integer array the size of ``image``."""
    if not isinstance(label, np.ndarray) or label.ndim != 2:
        shape = getattr(label, "shape", None)
        raise AugmentationError(f"{owner}: the label map must be (rows, cols), got {shape}")
    if label.shape != image.shape[:2]:
        raise AugmentationError(
            f"{owner}: the label map shape {label.shape} differs from the patch {image.shape[:2]}"
        )
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
        raise AugmentationError(f"{owner}: the label map must be integer, got {label.dtype}")
    return label


def check_rgb(image: np.ndarray, owner: str) -> None:
    """Raise unless ``image`` has exactly three (RGB) channels."""
    if image.shape[2] != 3:
        raise AugmentationError(
            f"{owner}: needs an RGB patch with 3 channels, got {image.shape[2]}"
        )


def warp_affine(
    array: np.ndarray,
    matrix: np.ndarray,
    out_shape: Shape,
    interpolation: str = "linear",
    border: str = "reflect_101",
    border_value: float = 0.0,
) -> np.ndarray:
    """Warp ``array`` (rows, cols[, channels]) by a forward 3 x 3 pixel-coordinate map.

    ``matrix`` maps input ``(col, row, 1)`` to output coordinates; the result has
    ``out_shape`` rows and columns and the input's dtype and channels. Labels (integer arrays
    other than uint8) go through an int32/float route so no value is clipped.
    """
    rows, cols = int(out_shape[0]), int(out_shape[1])
    forward = np.asarray(matrix, dtype=np.float64)[:2]
    flags = INTERPOLATIONS[interpolation]
    mode = BORDERS[border]
    dtype = array.dtype
    work = array
    if dtype == np.bool_:
        work = array.view(np.uint8)
    elif dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        if flags != cv2.INTER_NEAREST:
            raise AugmentationError(f"cannot interpolate a {dtype} array other than nearest")
        work = array.astype(np.float64 if array.dtype.itemsize > 4 else np.float32)
    channels = 1 if work.ndim == 2 else work.shape[2]
    if channels <= 4:
        value = (border_value,) * max(channels, 1)
        result = cv2.warpAffine(
            work, forward, (cols, rows), flags=flags, borderMode=mode, borderValue=value
        )
        if work.ndim == 3 and result.ndim == 2:
            result = result[:, :, None]
    else:
        parts = [
            warp_affine(work[:, :, c], matrix, out_shape, interpolation, border, border_value)
            for c in range(channels)
        ]
        result = np.stack(parts, axis=2)
    if dtype == np.bool_:
        return result.view(bool)
    return result.astype(dtype, copy=False)


def centre_crop(array: np.ndarray, shape: Shape) -> np.ndarray:
    """The centre ``shape`` (rows, cols) of ``array``; offset ``(in - out) // 2`` per axis.

    Raises :class:`AugmentationError` when ``array`` is smaller than ``shape``.
    """
    rows, cols = array.shape[:2]
    if rows < shape[0] or cols < shape[1]:
        raise AugmentationError(
            f"cannot centre-crop a {rows} x {cols} patch to {shape[0]} x {shape[1]}: the "
            "augmentation made it smaller than the target shape"
        )
    top = (rows - shape[0]) // 2
    left = (cols - shape[1]) // 2
    return array[top : top + shape[0], left : left + shape[1]]


def seed_from(rng: np.random.Generator) -> int:
    """Draw a 63-bit seed for per-pixel randomness replayed identically on every call."""
    return int(rng.integers(0, 2**63 - 1))
