"""Colour augmenters: HED stain jitter, HSB jitter, contrast, brightness and gamma.

All augmenters here are non-spatial: they change the grey levels of a ``(rows, cols, channels)``
uint8 patch and return its label map unchanged (the same object). Results are uint8, rounded to
the nearest grey level and clipped to 0-255; inputs are never modified. Per-value transforms are
256-entry lookup tables applied with :func:`cv2.LUT`.

Optical density
---------------
digipath uses its own, explicitly defined optical density (OD), per RGB channel::

    OD = -ln((I + 1) / 256),    I in 0..255 (grey levels)

with the natural logarithm, so ``OD`` lies in ``[0, ln 256] ~ [0, 5.545]`` (0 for white) and the
inverse is ``I = 256 * exp(-OD) - 1``, rounded and clipped to 0-255. The ``+ 1`` keeps black
finite. Stains follow the Ruifrok-Johnston colour deconvolution: with ``M`` the matrix whose rows
are the unit OD vectors of haematoxylin, eosin and DAB (:data:`RGB_FROM_HED`, the rows
``[0.65, 0.70, 0.29]``, ``[0.07, 0.99, 0.11]``, ``[0.27, 0.57, 0.78]`` normalised to unit
length), the stain concentrations of a pixel (a row vector) are ``C = OD . M^-1`` and
``OD = C . M``; concentrations are in the same natural-log OD units. This definition does not
depend on any library version (the original library's numbers changed with scikit-image's).
:func:`rgb_to_hed` and :func:`hed_to_rgb` implement it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from digipath.augment.base import Augmenter, check_range, check_rgb, draw
from digipath.errors import AugmentationError

__all__ = [
    "HED_FROM_RGB",
    "RGB_FROM_HED",
    "Brightness",
    "Contrast",
    "Gamma",
    "HedColor",
    "HsbColor",
    "hed_to_rgb",
    "od_to_rgb",
    "rgb_to_hed",
    "rgb_to_od",
    "transform_od",
]

_RUIFROK = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HED: np.ndarray = _RUIFROK / np.linalg.norm(_RUIFROK, axis=1, keepdims=True)
"""Ruifrok-Johnston stain matrix ``M`` (3 x 3, float64): rows are the unit OD vectors of
haematoxylin, eosin and DAB, columns the R, G, B channels. ``OD = C . M``."""

HED_FROM_RGB: np.ndarray = np.linalg.inv(RGB_FROM_HED)
"""Inverse of :data:`RGB_FROM_HED`: ``C = OD . HED_FROM_RGB``."""

_OD_LUT = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)
"""Optical density of each grey level 0..255 (float32)."""

_UNIT_LUT = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
"""Grey level 0..255 to [0, 1] (float32)."""

_LUMA = np.array([0.2125, 0.7154, 0.0721])
"""Luma weights of R, G, B (scikit-image ``rgb2gray``)."""


# -- helpers -------------------------------------------------------------------------------------


def _like(result: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Give an OpenCV result the (rows, cols, channels) shape of ``image`` (1-channel case)."""
    if result.ndim == 2 and image.ndim == 3:
        return result.reshape(*result.shape, 1)
    return result


def _to_uint8(array: np.ndarray, scale: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """``array * scale + offset`` as uint8, rounded to nearest and saturated to 0-255."""
    return _like(cv2.addWeighted(array, scale, array, 0.0, offset, dtype=cv2.CV_8U), array)


def _lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply a 256-entry lookup table to every channel of ``image`` (a new array)."""
    return _like(cv2.LUT(image, table), image)


def _fixed(*ranges: tuple[float, float] | None) -> bool:
    """Whether every range is absent or a single value (nothing to draw)."""
    return all(bounds is None or bounds[0] == bounds[1] for bounds in ranges)


def _not_drawn(keyword: str) -> AugmentationError:
    return AugmentationError(f"{keyword}: call randomize(rng) before applying")


def rgb_to_od(image: np.ndarray) -> np.ndarray:
    """Optical density ``-ln((I + 1) / 256)`` of a uint8 patch.

    Parameters
    ----------
    image
        uint8 array, (rows, cols, channels).

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape, natural-log OD units in ``[0, ln 256]``.
    """
    return _lut(np.asarray(image, dtype=np.uint8), _OD_LUT)


def od_to_rgb(od: np.ndarray) -> np.ndarray:
    """Grey levels ``256 * exp(-OD) - 1`` of an optical density array, rounded and clipped.

    Parameters
    ----------
    od
        Array (rows, cols, channels) of optical densities (natural-log units).

    Returns
    -------
    numpy.ndarray
        uint8 array of the same shape.
    """
    negative = np.negative(np.asarray(od, dtype=np.float32))
    return _to_uint8(_like(cv2.exp(negative), negative), 256.0, -1.0)


def transform_od(image: np.ndarray, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Apply an affine map in optical density to an RGB patch.

    Parameters
    ----------
    image
        uint8 RGB array, (rows, cols, 3).
    matrix
        3 x 3 map acting on OD row vectors (R, G, B).
    offset
        Shape (3,), added after ``matrix`` (natural-log OD units).

    Returns
    -------
    numpy.ndarray
        uint8 (rows, cols, 3): ``256 exp(-(OD . matrix + offset)) - 1``, rounded and clipped.

    Notes
    -----
    One float32 OD lookup, one :func:`cv2.transform` (negated, so that :func:`cv2.exp` needs no
    extra pass) and one saturating conversion do the whole job.
    """
    work = cv2.LUT(image, _OD_LUT)
    transform = np.hstack([-matrix.T, -offset.reshape(3, 1)]).astype(np.float32)
    cv2.transform(work, transform, dst=work)  # in place: fewer fresh buffers, fewer page faults
    cv2.exp(work, dst=work)
    return _to_uint8(work, 256.0, -1.0)


def rgb_to_hed(image: np.ndarray) -> np.ndarray:
    """Haematoxylin, eosin and DAB concentrations of an RGB patch (Ruifrok-Johnston).

    Parameters
    ----------
    image
        uint8 RGB array, (rows, cols, 3).

    Returns
    -------
    numpy.ndarray
        float32 array (rows, cols, 3): the concentrations ``C = OD . M^-1`` of H, E and DAB in
        natural-log OD units (see the module docstring). Not clipped: small negative values
        occur where a colour is not a positive mix of the three stains.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise AugmentationError(
            f"rgb_to_hed: image must be a uint8 (rows, cols, 3) array, got {image.dtype} "
            f"{image.shape}"
        )
    od = cv2.LUT(image, _OD_LUT)
    return cv2.transform(od, HED_FROM_RGB.T.astype(np.float32))


def hed_to_rgb(concentrations: np.ndarray) -> np.ndarray:
    """RGB patch of haematoxylin, eosin and DAB concentrations (inverse of :func:`rgb_to_hed`).

    Parameters
    ----------
    concentrations
        Array (rows, cols, 3) of H, E, DAB concentrations in natural-log OD units.

    Returns
    -------
    numpy.ndarray
        uint8 RGB array (rows, cols, 3): ``256 * exp(-C . M) - 1``, rounded and clipped.
    """
    concentrations = np.asarray(concentrations, dtype=np.float32)
    if concentrations.ndim != 3 or concentrations.shape[2] != 3:
        raise AugmentationError(
            f"hed_to_rgb: concentrations must be (rows, cols, 3), got {concentrations.shape}"
        )
    negative = cv2.transform(concentrations, -RGB_FROM_HED.T.astype(np.float32))
    return _to_uint8(cv2.exp(negative), 256.0, -1.0)


# -- HED -----------------------------------------------------------------------------------------

_STAIN_KEYS = ("sigma", "bias")


def _stain_ranges(keyword: str, name: str, value: Any) -> dict[str, tuple[float, float] | None]:
    """Validate one stain's ``{"sigma": range | None, "bias": range | None}`` mapping."""
    if value is None:
        return {"sigma": None, "bias": None}
    if not isinstance(value, Mapping):
        raise AugmentationError(
            f"{keyword}: {name} must be a mapping with keys 'sigma' and 'bias' (each a range "
            f"[min, max] within [-1, 1] or null), got {value!r}"
        )
    unknown = sorted(str(key) for key in value if key not in _STAIN_KEYS)
    if unknown:
        raise AugmentationError(
            f"{keyword}: {name} has unknown key(s) {', '.join(map(repr, unknown))}; valid keys "
            "are 'sigma', 'bias'"
        )
    sigma = check_range(
        keyword, f"{name}.sigma", value.get("sigma"), low=-1.0, high=1.0, allow_none=True
    )
    bias = check_range(
        keyword, f"{name}.bias", value.get("bias"), low=-1.0, high=1.0, allow_none=True
    )
    return {"sigma": sigma, "bias": bias}


class HedColor(Augmenter):
    """Jitter the haematoxylin, eosin and DAB stain concentrations (keyword ``hed_color``).

    Per stain ``s``, a relative scale ``sigma_s`` and a bias ``b_s`` are drawn uniformly from
    their ranges, and the concentrations (see the module docstring for the OD and stain
    definitions) become ``C'_s = C_s * (1 + sigma_s) + b_s``; the patch is rebuilt with
    ``OD' = C' . M`` and ``I' = 256 exp(-OD') - 1``, rounded and clipped to 0-255.
    Concentrations are not clipped, so zero draws give the input back within rounding.

    Parameters
    ----------
    haematoxylin, eosin, dab
        ``None`` (no change) or a mapping ``{"sigma": [min, max] | None, "bias": [min, max] |
        None}`` with ranges within [-1, 1]; an absent or ``None`` range means no change
        (``sigma = 0`` or ``b = 0``). ``sigma`` is relative (0.1 = 10 % more stain); ``bias``
        is in natural-log OD units (the units of TIAToolbox's ``StainAugmentor`` shifts; a
        haematoxylin concentration of a nucleus is about 0.5-1.5). Recommended ranges:
        sigma within +-0.05..0.2 and bias within +-0.05..0.2.
    cutoff
        ``None`` (= [0, 1]) or a range within [0, 1]: the patch is augmented only when its mean
        grey level / 255 (over all pixels and channels) lies in it, otherwise it is returned
        unchanged (e.g. ``[0.05, 0.85]`` leaves background-only patches alone).

    Notes
    -----
    Everything is linear in OD, so the whole transform is fused into
    ``OD' = OD . A + t`` with ``A = M^-1 diag(1 + sigma) M`` and ``t = b . M``: one float32 OD
    lookup, one :func:`cv2.transform`, one :func:`cv2.exp` and one rounding conversion.
    Unlike the original library, a ``None`` sigma range means ``sigma = 0`` (it used 1, which
    doubled the stain).
    """

    keyword = "hed_color"

    def __init__(
        self,
        haematoxylin: Mapping[str, Any] | None = None,
        eosin: Mapping[str, Any] | None = None,
        dab: Mapping[str, Any] | None = None,
        cutoff: Any = None,
    ) -> None:
        self.haematoxylin = _stain_ranges(self.keyword, "haematoxylin", haematoxylin)
        self.eosin = _stain_ranges(self.keyword, "eosin", eosin)
        self.dab = _stain_ranges(self.keyword, "dab", dab)
        self.cutoff = check_range(
            self.keyword, "cutoff", cutoff, low=0.0, high=1.0, allow_none=True
        )
        self._draws: tuple[np.ndarray, np.ndarray] | None = None
        stains = (self.haematoxylin, self.eosin, self.dab)
        if _fixed(*(ranges[key] for ranges in stains for key in _STAIN_KEYS)):
            self.randomize(np.random.default_rng(0))

    @property
    def sigma(self) -> np.ndarray:
        """The drawn relative scales of H, E and DAB, shape (3,)."""
        if self._draws is None:
            raise _not_drawn(self.keyword)
        return self._draws[0]

    @property
    def bias(self) -> np.ndarray:
        """The drawn biases of H, E and DAB (natural-log OD units), shape (3,)."""
        if self._draws is None:
            raise _not_drawn(self.keyword)
        return self._draws[1]

    def randomize(self, rng: np.random.Generator) -> None:
        sigma, bias = np.zeros(3), np.zeros(3)
        for index, ranges in enumerate((self.haematoxylin, self.eosin, self.dab)):
            sigma[index] = draw(rng, ranges["sigma"])
            bias[index] = draw(rng, ranges["bias"])
        self._draws = (sigma, bias)

    def applies_to(self, image: np.ndarray) -> bool:
        """Whether ``image``'s mean grey level / 255 lies within :attr:`cutoff`."""
        if self.cutoff is None:
            return True
        mean = sum(cv2.mean(image)[:3]) / (3.0 * 255.0)
        return self.cutoff[0] <= mean <= self.cutoff[1]

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        check_rgb(image, self.keyword)
        sigma, bias = self.sigma, self.bias
        if not self.applies_to(image):
            return image.copy(), label
        matrix = HED_FROM_RGB @ np.diag(1.0 + sigma) @ RGB_FROM_HED
        offset = bias @ RGB_FROM_HED
        return transform_od(image, matrix, offset), label


# -- HSB -----------------------------------------------------------------------------------------


class HsbColor(Augmenter):
    """Jitter hue, saturation and brightness in HSV space (keyword ``hsb_color``).

    With all HSV values in [0, 1] and draws ``sigma_h``, ``sigma_s``, ``sigma_b`` (uniform in
    their ranges):

    * hue: ``h <- (h + sigma_h) mod 1`` (0.5 = the opposite hue);
    * saturation: ``s <- s (1 + sigma_s)`` if ``sigma_s < 0``, ``s <- s (1 + (1 - s) sigma_s)``
      if ``sigma_s > 0`` (stays within [0, 1]);
    * brightness: ``v <- v (1 + sigma_b)`` if ``sigma_b < 0``, ``v <- v + (1 - v) sigma_b`` if
      ``sigma_b > 0``.

    Parameters
    ----------
    hue, saturation, brightness
        Ranges ``[min, max]`` within [-1, 1], or ``None`` for no change.

    Notes
    -----
    Needs an RGB patch. The conversion uses OpenCV on float32 RGB in [0, 1] (so zero draws give
    the input back within one grey level); the result is rounded and clipped to 0-255.
    """

    keyword = "hsb_color"

    def __init__(self, hue: Any = None, saturation: Any = None, brightness: Any = None) -> None:
        self.hue = check_range(self.keyword, "hue", hue, low=-1.0, high=1.0, allow_none=True)
        self.saturation = check_range(
            self.keyword, "saturation", saturation, low=-1.0, high=1.0, allow_none=True
        )
        self.brightness = check_range(
            self.keyword, "brightness", brightness, low=-1.0, high=1.0, allow_none=True
        )
        self._draws: tuple[float, float, float] | None = None
        if _fixed(self.hue, self.saturation, self.brightness):
            self.randomize(np.random.default_rng(0))

    @property
    def draws(self) -> tuple[float, float, float]:
        """The drawn ``(sigma_h, sigma_s, sigma_b)``."""
        if self._draws is None:
            raise _not_drawn(self.keyword)
        return self._draws

    def randomize(self, rng: np.random.Generator) -> None:
        self._draws = (
            draw(rng, self.hue),
            draw(rng, self.saturation),
            draw(rng, self.brightness),
        )

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        check_rgb(image, self.keyword)
        sigma_h, sigma_s, sigma_b = self.draws
        unit = cv2.LUT(image, _UNIT_LUT)
        hsv = cv2.cvtColor(unit, cv2.COLOR_RGB2HSV)  # H in degrees [0, 360), S and V in [0, 1]
        # the affine parts in one in-place pass: hue shift, saturation s (1 + sigma_s),
        # brightness; a positive saturation change then subtracts sigma_s s**2
        scale = np.ones(3)
        offset = np.zeros(3)
        offset[0] = 360.0 * (sigma_h % 1.0)
        scale[1] = 1.0 + sigma_s
        if sigma_b < 0:
            scale[2] = 1.0 + sigma_b
        elif sigma_b > 0:
            scale[2], offset[2] = 1.0 - sigma_b, sigma_b
        squared = np.square(hsv[:, :, 1]) if sigma_s > 0 else None
        if np.any(scale != 1.0) or np.any(offset != 0.0):
            matrix = np.hstack([np.diag(scale), offset[:, None]]).astype(np.float32)
            cv2.transform(hsv, matrix, dst=hsv)
        if offset[0]:
            hue = hsv[:, :, 0]
            np.subtract(hue, np.float32(360.0), out=hue, where=hue >= np.float32(360.0))
        if squared is not None:
            squared *= np.float32(sigma_s)
            hsv[:, :, 1] -= squared
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=unit)
        return _to_uint8(rgb, 255.0), label


# -- grey-level curves ---------------------------------------------------------------------------


class Contrast(Augmenter):
    """Stretch or compress the grey levels around the patch mean (keyword ``contrast``).

    With ``c`` the mean luma of the patch (``0.2125 R + 0.7154 G + 0.0721 B`` in 0..255; the mean
    over channels when the patch is not RGB) and ``sigma`` the draw, the input range
    ``(sigma c, 255 - sigma (255 - c))`` is mapped linearly to [0, 255], with clipping.
    ``sigma > 0`` raises the contrast around the mean, ``sigma < 0`` lowers it, 0 is the
    identity; ``sigma = 1`` thresholds at the mean.

    Parameters
    ----------
    sigma
        Range ``[min, max]`` within [-1, 1].
    """

    keyword = "contrast"

    def __init__(self, sigma: Any) -> None:
        self.sigma = check_range(self.keyword, "sigma", sigma, low=-1.0, high=1.0)
        self._sigma: float | None = None
        if _fixed(self.sigma):
            self.randomize(np.random.default_rng(0))

    def randomize(self, rng: np.random.Generator) -> None:
        self._sigma = draw(rng, self.sigma)

    def table(self, mean: float) -> np.ndarray:
        """The uint8 lookup table of the current draw for a patch of mean grey level ``mean``."""
        if self._sigma is None:
            raise _not_drawn(self.keyword)
        sigma = self._sigma
        levels = np.arange(256, dtype=np.float64)
        low, high = sigma * mean, 255.0 - sigma * (255.0 - mean)
        if high - low <= 1e-9:
            mapped = np.where(levels >= mean, 255.0, 0.0)
        else:
            mapped = (levels - low) * (255.0 / (high - low))
        return np.clip(np.rint(mapped), 0, 255).astype(np.uint8)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if image.shape[2] == 3:
            mean = float(np.dot(_LUMA, cv2.mean(image)[:3]))
        else:
            mean = float(image.mean())
        return _lut(image, self.table(mean)), label


class Brightness(Augmenter):
    """Add ``beta`` grey levels to every pixel and channel, saturating (keyword ``brightness``).

    Parameters
    ----------
    beta
        Range ``[min, max]`` of grey levels within [-255, 255]; the drawn value is added and the
        result rounded and clipped to 0-255.
    """

    keyword = "brightness"

    def __init__(self, beta: Any) -> None:
        self.beta = check_range(self.keyword, "beta", beta, low=-255.0, high=255.0)
        self._beta: float | None = None
        if _fixed(self.beta):
            self.randomize(np.random.default_rng(0))

    def randomize(self, rng: np.random.Generator) -> None:
        self._beta = draw(rng, self.beta)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self._beta is None:
            raise _not_drawn(self.keyword)
        table = np.clip(np.rint(np.arange(256.0) + self._beta), 0, 255).astype(np.uint8)
        return _lut(image, table), label


class Gamma(Augmenter):
    """Gamma curve ``x -> 255 (x / 255) ** gamma`` (keyword ``gamma``).

    Parameters
    ----------
    gamma
        Range ``[min, max]``, both > 0; ``gamma < 1`` brightens, ``gamma > 1`` darkens, 1 is
        the identity. Typical range 0.5-2.
    """

    keyword = "gamma"

    def __init__(self, gamma: Any) -> None:
        self.gamma = check_range(self.keyword, "gamma", gamma, low=0.0, low_open=True)
        self._gamma: float | None = None
        if _fixed(self.gamma):
            self.randomize(np.random.default_rng(0))

    def randomize(self, rng: np.random.Generator) -> None:
        self._gamma = draw(rng, self.gamma)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self._gamma is None:
            raise _not_drawn(self.keyword)
        table = 255.0 * (np.arange(256.0) / 255.0) ** self._gamma
        return _lut(image, np.clip(np.rint(table), 0, 255).astype(np.uint8)), label
