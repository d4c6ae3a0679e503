"""Conversions to float32: division, normalisation and linear rescaling.

These augmenters output ``(rows, cols, channels)`` float32 patches and accept uint8 or float
input (:attr:`~digipath.augment.base.Augmenter.uint8_only` is false). Every other augmenter needs
uint8 patches, so conversions must come **last** in a pipeline. They are deterministic and
non-spatial: the label map is returned unchanged (the same object), except by
:class:`ToFloat32` with a ``label_divisor``. Inputs are never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from digipath.augment.base import Augmenter, check_number
from digipath.errors import AugmentationError

__all__ = ["Normalize", "ScaleFromTo", "ScaleTo", "ToFloat32"]


def _nonzero(owner: str, name: str, value: Any) -> float:
    number = check_number(owner, name, value)
    if number == 0.0:
        raise AugmentationError(f"{owner}: {name} must be non-zero, got {value!r}")
    return number


def _float32(image: np.ndarray) -> np.ndarray:
    """A float32 copy of ``image`` (never the input itself)."""
    return image.astype(np.float32, copy=True)


class ToFloat32(Augmenter):
    """Convert to float32 and divide (keyword ``to_float32``).

    Parameters
    ----------
    divisor
        Non-zero number the image is divided by (255 maps uint8 to [0, 1]).
    label_divisor
        ``None`` (the label map is returned unchanged) or a non-zero number: then a given label
        map is converted to float32 and divided by it too (DeepHealth's ``divisor_gt``).

    Notes
    -----
    Must come last in a pipeline: other augmenters need uint8 patches.
    """

    keyword = "to_float32"
    uint8_only = False

    def __init__(self, divisor: float = 1.0, label_divisor: float | None = None) -> None:
        self.divisor = _nonzero(self.keyword, "divisor", divisor)
        self.label_divisor = (
            None
            if label_divisor is None
            else _nonzero(self.keyword, "label_divisor", label_divisor)
        )

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        result = _float32(image)
        if self.divisor != 1.0:
            result /= np.float32(self.divisor)
        if label is not None and self.label_divisor is not None:
            label = _float32(label)
            label /= np.float32(self.label_divisor)
        return result, label


def _values(owner: str, name: str, value: Any) -> float | tuple[float, ...]:
    """A number or a non-empty sequence of numbers, validated."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        return check_number(owner, name, value)
    items = list(np.asarray(value).ravel()) if isinstance(value, np.ndarray) else list(value)
    if not items:
        raise AugmentationError(f"{owner}: {name} must be a number or a non-empty sequence")
    return tuple(check_number(owner, f"{name}[{index}]", v) for index, v in enumerate(items))


class Normalize(Augmenter):
    """Standardise: ``(x - mean) / std``, globally or per channel (keyword ``normalize``).

    Parameters
    ----------
    mean, std
        Numbers, or sequences with one value per channel (their length must equal the patch's
        channel count, checked when applied). Every ``std`` must be non-zero. Values are in the
        units of the input (grey levels 0-255 for uint8 patches).

    Notes
    -----
    Outputs float32; must come last in a pipeline.
    """

    keyword = "normalize"
    uint8_only = False

    def __init__(self, mean: Any, std: Any) -> None:
        self.mean = _values(self.keyword, "mean", mean)
        self.std = _values(self.keyword, "std", std)
        stds = self.std if isinstance(self.std, tuple) else (self.std,)
        if any(value == 0.0 for value in stds):
            raise AugmentationError(f"{self.keyword}: std must be non-zero, got {std!r}")
        self._mean = np.asarray(self.mean, dtype=np.float32)
        self._std = np.asarray(self.std, dtype=np.float32)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        channels = image.shape[2]
        for name, value in (("mean", self.mean), ("std", self.std)):
            if isinstance(value, tuple) and len(value) != channels:
                raise AugmentationError(
                    f"{self.keyword}: {name} has {len(value)} values but the patch has "
                    f"{channels} channels; give one value per channel or a single number"
                )
        result = _float32(image)
        result -= self._mean
        result /= self._std
        return result, label


class ScaleTo(Augmenter):
    """Rescale the patch's actual [min, max] linearly to [new_min, new_max] (``scale_to``).

    Parameters
    ----------
    new_min, new_max
        The target range (numbers; ``new_min > new_max`` inverts). A constant patch becomes
        ``new_min`` everywhere. The minimum and maximum are taken over all channels.

    Notes
    -----
    Outputs float32; must come last in a pipeline.
    """

    keyword = "scale_to"
    uint8_only = False

    def __init__(self, new_min: float, new_max: float) -> None:
        self.new_min = check_number(self.keyword, "new_min", new_min)
        self.new_max = check_number(self.keyword, "new_max", new_max)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        result = _float32(image)
        low, high = result.min(), result.max()
        if not high > low:
            return np.full(image.shape, self.new_min, dtype=np.float32), label
        result -= low
        result /= high - low  # now in [0, 1]
        result *= np.float32(self.new_max - self.new_min)
        result += np.float32(self.new_min)
        return result, label


class ScaleFromTo(Augmenter):
    """Map [old_min, old_max] linearly to [new_min, new_max], clamping (``scale_from_to``).

    Parameters
    ----------
    old_min, old_max
        The input range (numbers, different from each other); values outside it are clamped
        to it first.
    new_min, new_max
        The output range.

    Notes
    -----
    Outputs float32; must come last in a pipeline.
    """

    keyword = "scale_from_to"
    uint8_only = False

    def __init__(self, old_min: float, old_max: float, new_min: float, new_max: float) -> None:
        self.old_min = check_number(self.keyword, "old_min", old_min)
        self.old_max = check_number(self.keyword, "old_max", old_max)
        self.new_min = check_number(self.keyword, "new_min", new_min)
        self.new_max = check_number(self.keyword, "new_max", new_max)
        if np.float32(self.old_min) == np.float32(self.old_max):
            raise AugmentationError(
                f"{self.keyword}: old_min and old_max must differ (as float32), got "
                f"{old_min!r} and {old_max!r}"
            )

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        old_min, old_max = np.float32(self.old_min), np.float32(self.old_max)
        result = _float32(image)
        np.clip(result, min(old_min, old_max), max(old_min, old_max), out=result)
        result -= old_min
        result /= old_max - old_min  # now in [0, 1]
        result *= np.float32(self.new_max - self.new_min)
        result += np.float32(self.new_min)
        return result, label
