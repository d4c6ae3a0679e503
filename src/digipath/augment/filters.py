"""Filter augmenters: Gaussian blur, median blur and unsharp-mask sharpening.

All are non-spatial (the label map is returned unchanged, the same object) and filter the rows
and columns of a ``(rows, cols, channels)`` uint8 patch, each channel separately; results are
uint8, rounded and clipped to 0-255. Sizes and sigmas are in pixels.

A filter near the patch border reads pixels outside it, which OpenCV invents by reflection. Each
filter therefore asks, through :meth:`~digipath.augment.base.Augmenter.input_shape`, for a patch
larger by its kernel radius (for the largest parameter of its range) on every side, so that a
pool extracting that shape and centre-cropping back sees no border artefacts.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from digipath.augment.base import Augmenter, Shape, check_number, check_range, draw
from digipath.errors import AugmentationError

__all__ = ["GaussianBlur", "MedianBlur", "Sharpen", "gaussian_radius"]


def _not_drawn(keyword: str) -> AugmentationError:
    return AugmentationError(f"{keyword}: call randomize(rng) before applying")


def gaussian_radius(sigma: float) -> int:
    """Kernel radius (pixels) of a Gaussian blur: ``ceil(3 sigma)``, at least 1 for sigma > 0.

    0 for ``sigma = 0`` (no blur).
    """
    if sigma <= 0.0:
        return 0
    return max(1, math.ceil(3.0 * sigma))


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of rows and columns, odd kernel of radius :func:`gaussian_radius`."""
    size = 2 * gaussian_radius(sigma) + 1
    blurred = cv2.GaussianBlur(
        image, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
    )
    return blurred.reshape(image.shape)


def _grow(shape: Shape, margin: int) -> Shape:
    return (int(shape[0]) + 2 * margin, int(shape[1]) + 2 * margin)


class GaussianBlur(Augmenter):
    """Blur rows and columns with a Gaussian kernel (keyword ``blur``).

    Parameters
    ----------
    sigma
        Range ``[min, max]`` (>= 0) of the standard deviation in pixels; 0 is the identity.

    Notes
    -----
    The kernel is odd with radius ``ceil(3 sigma)`` (at least 1), border ``reflect_101``.
    :meth:`input_shape` adds the radius of the largest sigma on every side.
    """

    keyword = "blur"

    def __init__(self, sigma: Any) -> None:
        self.sigma = check_range(self.keyword, "sigma", sigma, low=0.0)
        self._sigma: float | None = self.sigma[0] if self.sigma[0] == self.sigma[1] else None

    def randomize(self, rng: np.random.Generator) -> None:
        self._sigma = draw(rng, self.sigma)

    def margin(self) -> int:
        """Context needed per side (pixels): the kernel radius of the largest sigma."""
        return gaussian_radius(self.sigma[1])

    def input_shape(self, output_shape: Shape) -> Shape:
        return _grow(output_shape, self.margin())

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self._sigma is None:
            raise _not_drawn(self.keyword)
        if self._sigma == 0.0:
            return image.copy(), label
        return _gaussian(image, self._sigma), label


class MedianBlur(Augmenter):
    """Median filter with a square kernel (keyword ``median``).

    Parameters
    ----------
    size
        Range ``[min, max]`` (>= 1) of kernel sizes in pixels; each draw picks uniformly among
        the odd integers in the range (there must be at least one). Size 1 is the identity.

    Notes
    -----
    OpenCV's median filter replicates the border. :meth:`input_shape` adds ``max // 2`` per
    side, ``max`` being the largest odd size of the range.
    """

    keyword = "median"

    def __init__(self, size: Any) -> None:
        self.size = check_range(self.keyword, "size", size, low=1.0)
        first = math.ceil(self.size[0])
        first += 1 - first % 2
        self._sizes = list(range(first, math.floor(self.size[1]) + 1, 2))
        if not self._sizes:
            raise AugmentationError(
                f"{self.keyword}: size must contain an odd integer kernel size, got "
                f"{list(self.size)}"
            )
        self._size: int | None = self._sizes[0] if len(self._sizes) == 1 else None

    def randomize(self, rng: np.random.Generator) -> None:
        self._size = self._sizes[int(rng.integers(len(self._sizes)))]

    def input_shape(self, output_shape: Shape) -> Shape:
        return _grow(output_shape, self._sizes[-1] // 2)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self._size is None:
            raise _not_drawn(self.keyword)
        if self._size == 1:
            return image.copy(), label
        channels = image.shape[2]
        if channels in (1, 3, 4):
            result = cv2.medianBlur(np.ascontiguousarray(image), self._size)
            return result.reshape(image.shape), label
        planes = [
            cv2.medianBlur(np.ascontiguousarray(image[:, :, c]), self._size)
            for c in range(channels)
        ]
        return np.stack(planes, axis=2), label


class Sharpen(Augmenter):
    """Unsharp masking: ``out = img + amount (img - GaussianBlur(img, sigma))`` (``sharpen``).

    Parameters
    ----------
    amount
        Range ``[min, max]`` (>= 0) of the sharpening strength; 0 is the identity, 1 doubles
        the detail above the blur scale.
    sigma
        Standard deviation (pixels, > 0) of the blur that defines the detail.

    Notes
    -----
    :meth:`input_shape` adds the blur radius ``ceil(3 sigma)`` on every side.
    """

    keyword = "sharpen"

    def __init__(self, amount: Any, sigma: float = 1.0) -> None:
        self.amount = check_range(self.keyword, "amount", amount, low=0.0)
        self.sigma = check_number(self.keyword, "sigma", sigma, low=0.0)
        if self.sigma <= 0.0:
            raise AugmentationError(f"{self.keyword}: sigma must be > 0 pixels, got {sigma!r}")
        self._amount: float | None = self.amount[0] if self.amount[0] == self.amount[1] else None

    def randomize(self, rng: np.random.Generator) -> None:
        self._amount = draw(rng, self.amount)

    def input_shape(self, output_shape: Shape) -> Shape:
        return _grow(output_shape, gaussian_radius(self.sigma))

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self._amount is None:
            raise _not_drawn(self.keyword)
        if self._amount == 0.0:
            return image.copy(), label
        blurred = _gaussian(image, self.sigma)
        result = cv2.addWeighted(image, 1.0 + self._amount, blurred, -self._amount, 0.0)
        return result.reshape(image.shape), label
