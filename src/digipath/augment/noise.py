"""Noise augmenters: additive Gaussian, Laplace and Poisson noise, salt and pepper, dropout.

All are non-spatial: the label map is returned unchanged (the same object). Patches are
``(rows, cols, channels)`` uint8; results are uint8, rounded to the nearest grey level and
clipped (saturated) to 0-255; inputs are never modified.

Per-pixel randomness never comes from the caller's generator at apply time: :meth:`randomize`
draws the parameters and a seed (:func:`~digipath.augment.base.seed_from`), and :meth:`apply`
replays the noise from ``numpy.random.default_rng(seed)``. Applying one draw twice, or to the
patches of one location at several spacings of the same shape, gives identical noise.

Additive noise is sampled by inverse transform at 16-bit quantiles: every pixel and channel
takes one uniform 16-bit integer ``q`` (raw PCG64 output, four per 64-bit word) and looks up
the distribution's quantile function at ``(q + 0.5) / 65536`` in a 65536-entry table. Each
value's probability is exact to within 2**-16 and the tails end at the outermost table
entries (about 4.3 standard deviations for Gaussian noise), far below anything an augmentation
can notice, while sampling costs a table lookup per value instead of a transcendental
function: several times faster than :meth:`numpy.random.Generator.standard_normal`.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from scipy import special

from digipath.augment.base import (
    Augmenter,
    check_choice,
    check_number,
    check_range,
    draw,
    seed_from,
)
from digipath.errors import AugmentationError

__all__ = [
    "AdditiveGaussianNoise",
    "AdditiveLaplaceNoise",
    "AdditivePoissonNoise",
    "CoarseDropout",
    "SaltAndPepper",
]


def _not_drawn(keyword: str) -> AugmentationError:
    return AugmentationError(f"{keyword}: call randomize(rng) before applying")


QUANTILES: np.ndarray = (np.arange(65536, dtype=np.float64) + 0.5) / 65536.0
"""The probabilities ``(q + 0.5) / 65536`` at which the noise tables hold quantiles."""


def _unit_table(values: np.ndarray) -> np.ndarray:
    """Quantile table rescaled to exactly zero mean and unit standard deviation (float32)."""
    values = values - values.mean()
    return (values / values.std()).astype(np.float32)


GAUSSIAN_TABLE: np.ndarray = _unit_table(special.ndtri(QUANTILES))
"""Standard normal quantiles at :data:`QUANTILES` (float32; mean 0, standard deviation 1)."""

LAPLACE_TABLE: np.ndarray = (
    -np.sign(QUANTILES - 0.5) * np.log1p(-2.0 * np.abs(QUANTILES - 0.5))
).astype(np.float32)
"""Laplace quantiles of scale 1 at :data:`QUANTILES` (float32; standard deviation ~sqrt 2)."""


def uniform16(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform integers 0..65535 of ``shape`` (uint16), replayed exactly from ``seed``.

    The values are the 16-bit words of PCG64's raw 64-bit output (in the machine's byte order;
    little-endian on every platform digipath is built for).
    """
    count = math.prod(shape)
    words = np.random.default_rng(seed).bit_generator.random_raw(-(-count // 4))
    return words.view(np.uint16)[:count].reshape(shape)


def quantile_noise(seed: int, shape: tuple[int, ...], table: np.ndarray) -> np.ndarray:
    """Noise of ``shape`` drawn by looking up ``table`` at 16-bit uniform quantiles."""
    return np.take(table, uniform16(seed, shape))


def _add_noise(image: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``image + noise`` (uint8 + float32 of the same shape), rounded and saturated to uint8."""
    result = cv2.add(image, noise, dtype=cv2.CV_8U)
    if result.ndim == 2:
        result = result.reshape(image.shape)
    return result


class _SeededNoise(Augmenter):
    """Base of noise augmenters with one ranged parameter and a per-pixel seed."""

    _draws: tuple[float, int] | None = None

    def _drawn(self) -> tuple[float, int]:
        if self._draws is None:
            raise _not_drawn(self.keyword)
        return self._draws


class AdditiveGaussianNoise(_SeededNoise):
    """Add i.i.d. Gaussian noise to every pixel and channel (keyword ``additive``).

    Parameters
    ----------
    sigma
        Range ``[min, max]`` (>= 0) of the standard deviation in units of the full scale:
        0.05 means 0.05 * 255 = 12.75 grey levels. ``sigma = 0`` is the identity.

    Notes
    -----
    The noise is ``sigma * 255 * z`` with ``z`` the standard normal quantile at a 16-bit
    uniform quantile (see the module docstring), added to the patch with one rounding and
    saturating conversion.
    """

    keyword = "additive"

    def __init__(self, sigma: Any) -> None:
        self.sigma = check_range(self.keyword, "sigma", sigma, low=0.0)

    def randomize(self, rng: np.random.Generator) -> None:
        self._draws = (draw(rng, self.sigma), seed_from(rng))

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        sigma, seed = self._drawn()
        if sigma == 0.0:
            return image.copy(), label
        table = GAUSSIAN_TABLE * np.float32(sigma * 255.0)
        return _add_noise(image, quantile_noise(seed, image.shape, table)), label


class AdditiveLaplaceNoise(_SeededNoise):
    """Add i.i.d. Laplace noise to every pixel and channel (keyword ``laplace_noise``).

    Parameters
    ----------
    scale
        Range ``[min, max]`` (>= 0) of the Laplace scale ``b`` in grey levels (the standard
        deviation is ``sqrt(2) b``; DeepHealth suggests about 255 * 0.05). 0 is the identity.

    Notes
    -----
    The noise is the Laplace quantile function ``-b sign(u - 1/2) ln(1 - 2 |u - 1/2|)`` at a
    16-bit uniform quantile ``u`` (see the module docstring).
    """

    keyword = "laplace_noise"

    def __init__(self, scale: Any) -> None:
        self.scale = check_range(self.keyword, "scale", scale, low=0.0)

    def randomize(self, rng: np.random.Generator) -> None:
        self._draws = (draw(rng, self.scale), seed_from(rng))

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        scale, seed = self._drawn()
        if scale == 0.0:
            return image.copy(), label
        noise = quantile_noise(seed, image.shape, LAPLACE_TABLE * np.float32(scale))
        return _add_noise(image, noise), label


def _poisson_table(lam: float) -> np.ndarray:
    """Inverse Poisson distribution function at the 65536 quantiles ``(q + 0.5) / 65536``.

    Entry ``q`` is the smallest count ``k`` with ``P(X <= k) >= (q + 0.5) / 65536``, capped at
    255 (uint8), for ``X ~ Poisson(lam)``.
    """
    counts = np.arange(256)
    cdf = special.pdtr(counts, lam)  # P(X <= k)
    return np.minimum(np.searchsorted(cdf, QUANTILES, side="left"), 255).astype(np.uint8)


class AdditivePoissonNoise(_SeededNoise):
    """Add i.i.d. Poisson counts to every pixel and channel (keyword ``poisson_noise``).

    Parameters
    ----------
    lam
        Range ``[min, max]`` (>= 0) of the Poisson mean in grey levels; the noise is
        non-negative, so it only brightens (saturating at 255). DeepHealth suggests 0-10.

    Notes
    -----
    Counts are drawn by inverting the Poisson distribution function at a uniform 16-bit
    quantile (a 65536-entry table per draw, built once): each count's probability is exact to
    within 2**-16, which is far below what an augmentation can notice, and the sampling is
    about ten times faster than :meth:`numpy.random.Generator.poisson`.
    """

    keyword = "poisson_noise"

    def __init__(self, lam: Any) -> None:
        self.lam = check_range(self.keyword, "lam", lam, low=0.0)
        self._table: tuple[float, np.ndarray] | None = None

    def randomize(self, rng: np.random.Generator) -> None:
        self._draws = (draw(rng, self.lam), seed_from(rng))

    def table(self) -> np.ndarray:
        """The uint8 inverse distribution table of the current draw (65536 entries)."""
        lam, _ = self._drawn()
        if self._table is None or self._table[0] != lam:
            self._table = (lam, _poisson_table(lam))
        return self._table[1]

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        lam, seed = self._drawn()
        if lam == 0.0:
            return image.copy(), label
        counts = quantile_noise(seed, image.shape, self.table())
        return cv2.add(image, counts).reshape(image.shape), label


class SaltAndPepper(_SeededNoise):
    """Set random pixels to white (salt) and/or black (pepper) (keyword ``salt_and_pepper``).

    Parameters
    ----------
    p
        Range ``[min, max]`` within [0, 1] of the probability that a pixel is hit.
    per_channel
        Probability in [0, 1] that a draw works per channel (each channel of each pixel is hit
        independently with probability ``p``) instead of on whole pixels (all channels set).
    mode
        ``'salt'`` (set to 255), ``'pepper'`` (set to 0) or ``'both'`` (either, with equal odds).
    """

    keyword = "salt_and_pepper"
    MODES = ("salt", "pepper", "both")

    def __init__(self, p: Any, per_channel: float = 0.0, mode: str = "both") -> None:
        self.p = check_range(self.keyword, "p", p, low=0.0, high=1.0)
        self.per_channel = check_number(self.keyword, "per_channel", per_channel, low=0.0, high=1.0)
        self.mode = check_choice(self.keyword, "mode", mode, self.MODES)
        self._channelwise = False

    def randomize(self, rng: np.random.Generator) -> None:
        p = draw(rng, self.p)
        self._channelwise = bool(self.per_channel > 0.0 and rng.random() < self.per_channel)
        self._draws = (p, seed_from(rng))

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        p, seed = self._drawn()
        result = image.copy()
        if p == 0.0:
            return result, label
        shape = image.shape if self._channelwise else image.shape[:2]
        uniform = np.random.default_rng(seed).random(shape, dtype=np.float32)
        if self.mode == "both":
            result[uniform < np.float32(p / 2.0)] = 0
            result[(uniform >= np.float32(p / 2.0)) & (uniform < np.float32(p))] = 255
        else:
            result[uniform < np.float32(p)] = 255 if self.mode == "salt" else 0
        return result, label


class CoarseDropout(_SeededNoise):
    """Set random grid rectangles to a fill value (keyword ``coarse_dropout``, DeepHealth).

    Rectangles of ``drop_size * cols`` by ``drop_size * rows`` pixels (rounded down, at least 1)
    tile the patch on a grid from its top-left corner (the last row and column of rectangles may
    be cut by the border). Each rectangle is set to ``fill`` on all channels with probability
    ``p``; in per-channel mode each channel's rectangle is set independently with probability
    ``p / channels``.

    Parameters
    ----------
    p
        Range ``[min, max]`` within [0, 1] of the drop probability.
    drop_size
        Range ``[min, max]`` within (0, 1] of the rectangle size as a fraction of the patch
        width and height.
    per_channel
        Probability in [0, 1] that a draw works in per-channel mode.
    fill
        Grey level written into dropped rectangles (0-255).
    """

    keyword = "coarse_dropout"

    def __init__(self, p: Any, drop_size: Any, per_channel: float = 0.0, fill: float = 0) -> None:
        self.p = check_range(self.keyword, "p", p, low=0.0, high=1.0)
        self.drop_size = check_range(
            self.keyword, "drop_size", drop_size, low=0.0, low_open=True, high=1.0
        )
        self.per_channel = check_number(self.keyword, "per_channel", per_channel, low=0.0, high=1.0)
        self.fill = round(check_number(self.keyword, "fill", fill, low=0.0, high=255.0))
        self._size = 1.0
        self._channelwise = False

    def randomize(self, rng: np.random.Generator) -> None:
        p = draw(rng, self.p)
        self._size = draw(rng, self.drop_size)
        self._channelwise = bool(self.per_channel > 0.0 and rng.random() < self.per_channel)
        self._draws = (p, seed_from(rng))

    def mask(self, shape: tuple[int, ...]) -> np.ndarray:
        """The boolean drop mask of the current draw for a (rows, cols, channels) patch.

        Shape (rows, cols) for whole-pixel drops, (rows, cols, channels) in per-channel mode.
        """
        p, seed = self._drawn()
        rows, cols, channels = shape
        height = max(1, int(self._size * rows))
        width = max(1, int(self._size * cols))
        grid = (-(-rows // height), -(-cols // width))
        if self._channelwise:
            grid_shape: tuple[int, ...] = (*grid, channels)
            p = p / channels
        else:
            grid_shape = grid
        cells = np.random.default_rng(seed).random(grid_shape, dtype=np.float32) < np.float32(p)
        mask = np.repeat(np.repeat(cells, height, axis=0), width, axis=1)
        return mask[:rows, :cols]

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        p, _ = self._drawn()
        result = image.copy()
        if p > 0.0:
            result[self.mask(image.shape)] = self.fill
        return result, label
