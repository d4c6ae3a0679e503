"""Tissue and artefact masks of a low-resolution slide image.

All functions take an RGB ``(rows, cols, 3)`` uint8 image at a known spacing (µm/px) — a
thumbnail or a coarse level — and return boolean ``(rows, cols)`` masks; sizes are in µm and
µm², never pixels, so the same settings work at any spacing.

* :func:`tissue` — Otsu's threshold on the HSV saturation (stained tissue, even pale eosin, is
  saturated; glass, dust shadows and grey background are not), then small objects and holes
  removed by area and an optional dilation;
* :func:`pen_marks` — ink colours H&E does not produce: green and blue-green (hue 35-100 in
  OpenCV's 0-180 scale, saturation >= 40), saturated red (hue >= 170 or <= 6, saturation
  >= 110; eosin's pink is hue 155-165 and far less saturated) and saturated blue (hue 101-124,
  saturation >= 100; haematoxylin is purple, hue 125-160). Each colour is its own mask;
* :func:`edges` — coverslip edges and slide borders: dark, unsaturated pixels (saturation <= 45,
  value <= 170) in long thin connected components (length >= ``min_length`` µm, width < a
  quarter of the length);
* :func:`blur` — out-of-focus tissue: tiles whose Laplacian variance is far below the slide's
  median over tissue tiles.

The colour rules were checked against HistoQC's pen-mark and coverslip-edge ground truth (see
the tests).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import label, regionprops

PEN_COLOURS = ("green", "red", "blue")


def _check(image: np.ndarray, spacing: float) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected a (rows, cols, 3) uint8 RGB image, got {image.dtype} {image.shape}"
        )
    if not spacing > 0:
        raise ValueError(f"the spacing must be > 0 µm/px, got {spacing!r}")
    return image[..., :3]


def _hsv(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
    return hsv[..., 0], hsv[..., 1], hsv[..., 2]


def _remove_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    if min_pixels <= 1:
        return mask
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def tissue(
    image: np.ndarray,
    spacing: float,
    *,
    min_object_um2: float = 50_000.0,
    min_hole_um2: float = 20_000.0,
    dilation_um: float = 0.0,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Where the tissue is (see the module docstring).

    Parameters
    ----------
    image
        RGB uint8 (rows, cols, 3) at ``spacing``.
    spacing
        µm per pixel of ``image``.
    min_object_um2, min_hole_um2
        Tissue pieces smaller than this are dropped; holes smaller than this are filled (µm²).
    dilation_um
        Grow the mask by this distance (µm).
    exclude
        Pixels that are never tissue (e.g. :func:`pen_marks`), removed before the cleaning.
    """
    image = _check(image, spacing)
    _, saturation, value = _hsv(image)
    candidates = value < 250  # pure white is never tissue, even where the scanner tints it
    level = threshold_otsu(saturation[candidates]) if candidates.any() else 255
    mask = (saturation > max(level, 15)) & candidates
    if exclude is not None:
        mask &= ~exclude
    pixel_area = spacing * spacing
    mask = _remove_small(mask, min_object_um2 / pixel_area)
    holes = _remove_small(~mask, min_hole_um2 / pixel_area)
    mask |= ~holes & ~_touching_border(~mask)
    if dilation_um > 0:
        radius = max(1, round(dilation_um / spacing))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
        mask = cv2.dilate(mask.astype(np.uint8), kernel) > 0
    return mask


def _touching_border(mask: np.ndarray) -> np.ndarray:
    """The connected parts of ``mask`` that touch the image border."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    return np.isin(labels, border)


def pen_marks(image: np.ndarray, spacing: float, min_um2: float = 2_000.0) -> dict[str, np.ndarray]:
    """Ink by colour: ``{"green": mask, "red": mask, "blue": mask}`` (module docstring)."""
    image = _check(image, spacing)
    hue, saturation, _ = _hsv(image)
    found = {
        "green": (hue >= 35) & (hue <= 100) & (saturation >= 40),
        "red": ((hue >= 170) | (hue <= 6)) & (saturation >= 110),
        "blue": (hue > 100) & (hue <= 124) & (saturation >= 100),
    }
    smallest = min_um2 / (spacing * spacing)
    return {colour: _remove_small(mask, smallest) for colour, mask in found.items()}


def edges(image: np.ndarray, spacing: float, min_length_um: float = 300.0) -> np.ndarray:
    """Coverslip edges and slide borders: long, thin, dark and unsaturated components."""
    image = _check(image, spacing)
    _, saturation, value = _hsv(image)
    dark = (saturation <= 45) & (value <= 170)
    labels = label(dark, connectivity=2)
    keep = np.zeros(labels.max() + 1, bool)
    minimum = min_length_um / spacing
    for region in regionprops(labels):
        length, width = region.axis_major_length, region.axis_minor_length
        keep[region.label] = length >= minimum and width < 0.25 * length
    return keep[labels]


def blur(
    image: np.ndarray, spacing: float, tissue_mask: np.ndarray, tile_um: float = 500.0,
    ratio: float = 0.2,
) -> np.ndarray:  # fmt: skip
    """Tissue tiles whose Laplacian variance is below ``ratio`` x the median over tissue tiles."""
    image = _check(image, spacing)
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    laplacian = cv2.Laplacian(grey, cv2.CV_32F)
    size = max(8, round(tile_um / spacing))
    rows, cols = grey.shape
    result = np.zeros((rows, cols), bool)
    scores = {}
    for top in range(0, rows, size):
        for left in range(0, cols, size):
            region = (slice(top, top + size), slice(left, left + size))
            if tissue_mask[region].mean() > 0.5:
                scores[(top, left)] = float(laplacian[region][tissue_mask[region]].var())
    if len(scores) < 4:
        return result
    median = float(np.median(list(scores.values())))
    for (top, left), score in scores.items():
        if score < ratio * median:
            region = (slice(top, top + size), slice(left, left + size))
            result[region] = tissue_mask[region]
    return result


def area_mm2(mask: np.ndarray, spacing: float) -> float:
    """Area of a mask in mm² at ``spacing`` µm/px."""
    return float(mask.sum()) * spacing * spacing / 1e6
