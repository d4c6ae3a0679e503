"""Stain augmentation on a per-patch stain matrix (Macenko), the TIAToolbox ``StainAugmentor`` idea.

Optical density (OD) is digipath's definition from :mod:`digipath.augment.colour`:
``OD = -ln((I + 1) / 256)`` per RGB channel (natural log, I in 0..255), inverted by
``I = 256 exp(-OD) - 1`` with rounding and clipping. A stain matrix ``S`` is 2 x 3: its rows are
the unit OD vectors of haematoxylin and eosin (R, G, B columns). The concentrations of a pixel
are the least-squares solution of ``OD = C . S`` (``C = OD . pinv(S)``), in OD units.

:func:`macenko_stain_matrix` estimates ``S`` from a patch (Macenko et al., 2009, "A method for
normalizing histology slides for quantitative analysis"); :class:`StainAugmenter` scales and
shifts the two concentrations.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from digipath.augment.base import Augmenter, check_number, check_range, check_rgb, draw
from digipath.augment.colour import rgb_to_od, transform_od
from digipath.errors import AugmentationError

__all__ = [
    "ESTIMATE_PIXELS",
    "MIN_TISSUE_PIXELS",
    "StainAugmenter",
    "macenko_stain_matrix",
    "tissue_mask",
]

logger = logging.getLogger(__name__)

MIN_TISSUE_PIXELS = 10
"""Fewest tissue pixels :func:`macenko_stain_matrix` estimates a stain matrix from."""

ESTIMATE_PIXELS = 8192
"""Most tissue pixels :class:`StainAugmenter` estimates a patch's stain matrix from."""


def tissue_mask(image: np.ndarray, luminosity_threshold: float = 0.8) -> np.ndarray:
    """Pixels darker than a luminosity threshold: ``L / 255 < luminosity_threshold``.

    Parameters
    ----------
    image
        uint8 RGB array, (rows, cols, 3).
    luminosity_threshold
        Threshold on the CIE LAB lightness scaled to [0, 1] (OpenCV's uint8 ``L`` / 255).

    Returns
    -------
    numpy.ndarray
        Boolean (rows, cols) mask, true on tissue.
    """
    lightness = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[:, :, 0]
    return lightness < np.float32(luminosity_threshold * 255.0)


def _check_patch(image: Any, owner: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise AugmentationError(
            f"{owner}: image must be a uint8 (rows, cols, 3) RGB array, got "
            f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}"
        )
    check_rgb(image, owner)
    return image


def _macenko(
    od: np.ndarray,
    tissue: np.ndarray,
    angular_percentile: float,
    beta: float,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Macenko estimate from float32 OD (rows, cols, 3) and a boolean tissue mask."""
    pixels = od.reshape(-1, 3)
    index = np.flatnonzero(tissue.reshape(-1))
    if max_pixels is not None and index.size > max_pixels:
        index = index[:: -(-index.size // max_pixels)]  # evenly strided, deterministic
    pixels = pixels[index]
    keep = np.einsum("ij,ij->i", pixels, pixels) > np.float32(beta) ** 2
    count = int(np.count_nonzero(keep))
    if count < MIN_TISSUE_PIXELS:
        raise AugmentationError(
            f"macenko_stain_matrix: found {count} tissue pixels (luminosity below the threshold "
            f"and OD norm above beta={beta}); need at least {MIN_TISSUE_PIXELS} to estimate the "
            "stain matrix"
        )
    pixels = pixels[keep].astype(np.float64)
    centred = pixels - pixels.mean(axis=0)
    covariance = centred.T @ centred / max(count - 1, 1)
    _, vectors = np.linalg.eigh(covariance)
    plane = vectors[:, [2, 1]]  # the two principal directions
    plane *= np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    projected = pixels @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [100.0 - angular_percentile, angular_percentile])
    first = plane @ np.array([np.cos(low), np.sin(low)])
    second = plane @ np.array([np.cos(high), np.sin(high)])
    stains = np.array([first, second] if first[0] > second[0] else [second, first])
    return stains / np.linalg.norm(stains, axis=1, keepdims=True)


def macenko_stain_matrix(
    image: np.ndarray,
    luminosity_threshold: float = 0.8,
    angular_percentile: float = 99.0,
    beta: float = 0.15,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Estimate the haematoxylin and eosin OD vectors of a patch (Macenko's method).

    Parameters
    ----------
    image
        uint8 RGB array, (rows, cols, 3).
    luminosity_threshold
        Tissue pixels have CIE LAB lightness / 255 below this (in (0, 1]).
    angular_percentile
        Percentile (in (50, 100]) of the angles in the principal OD plane that give the two
        extreme stain directions (99 uses the 1st and 99th percentiles).
    beta
        Tissue pixels also need an OD vector norm above this (natural-log OD units), which
        drops nearly transparent pixels.
    max_pixels
        ``None`` (use every tissue pixel) or the most tissue pixels to use, taken evenly
        strided in raster order (deterministic); bounds the cost on large patches.

    Returns
    -------
    numpy.ndarray
        float64 (2, 3): unit OD vectors (R, G, B) of haematoxylin (first: the one with the
        larger red OD component) and eosin.

    Raises
    ------
    AugmentationError
        When fewer than :data:`MIN_TISSUE_PIXELS` tissue pixels remain.
    """
    owner = "macenko_stain_matrix"
    image = _check_patch(image, owner)
    luminosity_threshold = check_number(
        owner, "luminosity_threshold", luminosity_threshold, low=0.0, high=1.0
    )
    angular_percentile = check_number(
        owner, "angular_percentile", angular_percentile, low=50.0, high=100.0
    )
    beta = check_number(owner, "beta", beta, low=0.0)
    if max_pixels is not None:
        max_pixels = check_number(
            owner, "max_pixels", max_pixels, low=MIN_TISSUE_PIXELS, integer=True
        )
    return _macenko(
        rgb_to_od(image),
        tissue_mask(image, luminosity_threshold),
        angular_percentile,
        beta,
        max_pixels,
    )


def _check_stain_matrix(owner: str, value: Any) -> np.ndarray | None:
    if value is None:
        return None
    try:
        matrix = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AugmentationError(
            f"{owner}: stain_matrix must be a 2 x 3 array of numbers, got {value!r}"
        ) from None
    if matrix.shape != (2, 3) or not np.all(np.isfinite(matrix)):
        raise AugmentationError(
            f"{owner}: stain_matrix must be a finite 2 x 3 array (rows H and E, columns R, G, "
            f"B), got shape {matrix.shape}"
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0.0):
        raise AugmentationError(f"{owner}: stain_matrix rows must be non-zero, got {value!r}")
    return matrix / norms


class StainAugmenter(Augmenter):
    """Scale and shift the haematoxylin and eosin concentrations (keyword ``stain``).

    For each stain ``s`` (H, E) a relative scale ``sigma_s`` and a bias ``b_s`` are drawn
    uniformly and independently. The stain matrix ``S`` (2 x 3) is estimated per patch with
    :func:`macenko_stain_matrix` (or fixed by ``stain_matrix``); the concentrations
    ``C = OD . pinv(S)`` become ``C' = C (1 + sigma) + b``, and the patch is rebuilt from
    ``OD' = C' . S + (OD - C . S)``: the residual OD the two stains do not explain is kept, so
    zero draws give the input back within rounding. Only tissue pixels (luminosity below the
    threshold) change unless ``augment_background``.

    Parameters
    ----------
    sigma
        Range ``[min, max]`` within [-1, 1] of the relative scale (0.1 = 10 % more stain).
    bias
        Range ``[min, max]`` within [-1, 1] of the shift in natural-log OD units.
    luminosity_threshold
        Tissue pixels have CIE LAB lightness / 255 below this (in (0, 1]); used for the
        estimate and for choosing which pixels change.
    stain_matrix
        ``None`` (estimate per patch) or a fixed 2 x 3 matrix, rows H then E (normalised to
        unit length).
    augment_background
        Whether to change all pixels rather than only tissue.

    Notes
    -----
    The per-patch estimate uses at most :data:`ESTIMATE_PIXELS` tissue pixels (evenly
    strided), with Macenko's usual settings (angular percentile 99, beta 0.15). A patch with
    too little tissue to estimate a stain matrix is returned unchanged (logged at
    debug level), so whole-slide pipelines do not stop on background patches. As ``OD'`` is
    affine in ``OD`` (``OD' = OD (I + pinv(S) diag(sigma) S) + b S``), the rebuild is one fused
    :func:`~digipath.augment.colour.transform_od`.
    """

    keyword = "stain"

    def __init__(
        self,
        sigma: Any = (-0.2, 0.2),
        bias: Any = (-0.2, 0.2),
        luminosity_threshold: float = 0.8,
        stain_matrix: Any = None,
        augment_background: bool = False,
    ) -> None:
        self.sigma = check_range(self.keyword, "sigma", sigma, low=-1.0, high=1.0)
        self.bias = check_range(self.keyword, "bias", bias, low=-1.0, high=1.0)
        self.luminosity_threshold = check_number(
            self.keyword, "luminosity_threshold", luminosity_threshold, low=0.0, high=1.0
        )
        self.stain_matrix = _check_stain_matrix(self.keyword, stain_matrix)
        if not isinstance(augment_background, (bool, np.bool_)):
            raise AugmentationError(
                f"{self.keyword}: augment_background must be true or false, got "
                f"{augment_background!r}"
            )
        self.augment_background = bool(augment_background)
        self._draws: tuple[np.ndarray, np.ndarray] | None = None
        if self.sigma[0] == self.sigma[1] and self.bias[0] == self.bias[1]:
            self.randomize(np.random.default_rng(0))

    @property
    def draws(self) -> tuple[np.ndarray, np.ndarray]:
        """The drawn ``(sigma, bias)`` of H and E, each shape (2,)."""
        if self._draws is None:
            raise AugmentationError(f"{self.keyword}: call randomize(rng) before applying")
        return self._draws

    def randomize(self, rng: np.random.Generator) -> None:
        sigma, bias = np.zeros(2), np.zeros(2)
        for index in range(2):
            sigma[index] = draw(rng, self.sigma)
            bias[index] = draw(rng, self.bias)
        self._draws = (sigma, bias)

    def apply(
        self, image: np.ndarray, label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        check_rgb(image, self.keyword)
        sigma, bias = self.draws
        tissue = tissue_mask(image, self.luminosity_threshold)
        stains = self.stain_matrix
        if stains is None:
            try:
                stains = _macenko(rgb_to_od(image), tissue, 99.0, 0.15, ESTIMATE_PIXELS)
            except AugmentationError as error:
                logger.debug("stain: patch left unchanged: %s", error)
                return image.copy(), label
        elif not self.augment_background and not tissue.any():
            return image.copy(), label
        matrix = np.eye(3) + np.linalg.pinv(stains) @ np.diag(sigma) @ stains
        result = transform_od(image, matrix, bias @ stains)
        if not self.augment_background:
            np.copyto(result, image, where=~tissue[:, :, None])
        return result, label
