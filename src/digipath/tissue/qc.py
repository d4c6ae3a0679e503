"""A slide's quality-control mask: tissue and artefacts as label values, with a summary.

:func:`quality_mask` reads a slide at a coarse spacing (8 µm/px by default) and labels every
pixel: 0 background, 1 tissue, 2 green pen, 3 red pen, 4 coverslip edge or slide border,
5 blurred tissue, 6 blue pen (artefacts take precedence over tissue). :func:`write_mask`
writes it as a pyramidal TIFF at that spacing, usable directly as the ``mask`` of ``apply``
and of the patch sampler (:func:`tissue_mask` writes the tissue alone as 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from digipath.io import ImageReader, ImageWriter
from digipath.tissue import masks

LABELS = {
    "background": 0, "tissue": 1, "pen green": 2, "pen red": 3, "edge": 4, "blur": 5,
    "pen blue": 6,
}  # fmt: skip
"""Label value of each kind in a quality-control mask."""


@dataclass
class QualityMask:
    """Labels at ``spacing`` µm/px and the area of each kind in mm²."""

    labels: np.ndarray
    spacing: float
    areas_mm2: dict[str, float] = field(default_factory=dict)

    @property
    def tissue(self) -> np.ndarray:
        """Boolean mask of the usable tissue (label 1)."""
        return self.labels == LABELS["tissue"]

    @property
    def tissue_fraction(self) -> float:
        """Share of the slide area that is usable tissue."""
        return float(self.tissue.mean())


def tissue_mask(
    reader: ImageReader | str | os.PathLike[str],
    spacing: float = 8.0,
    output: str | os.PathLike[str] | None = None,
    *,
    qc: bool = False,
    **options,
) -> QualityMask:
    """The :func:`quality_mask` of a slide, written to ``output`` when given.

    The file holds the tissue as 1 (or, with ``qc``, every label) at the mask's spacing.
    """
    result = quality_mask(reader, spacing, **options)
    if output is not None:
        labels = result.labels if qc else result.tissue.astype(np.uint8)
        write_mask(output, labels, result.spacing)
    return result


def quality_mask(
    reader: ImageReader | str | os.PathLike[str],
    spacing: float = 8.0,
    *,
    blur_check: bool = True,
    **tissue_options,
) -> QualityMask:
    """Label tissue and artefacts of a slide at ``spacing`` µm/px (see the module docstring)."""
    owned = not isinstance(reader, ImageReader)
    slide = ImageReader(reader) if owned else reader
    try:
        rows, cols = slide.shape(spacing)
        actual = slide.refine(spacing)
        image = slide.read(spacing, 0, 0, rows, cols)
    finally:
        if owned:
            slide.close()
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[..., :3].astype(np.uint8, copy=False)
    pens = masks.pen_marks(image, actual)
    edge = masks.edges(image, actual)
    artefacts = pens["green"] | pens["red"] | pens["blue"] | edge
    tissue = masks.tissue(image, actual, exclude=artefacts, **tissue_options)
    blurred = masks.blur(image, actual, tissue) if blur_check else np.zeros_like(tissue)
    labels = np.zeros((rows, cols), np.uint8)
    labels[tissue] = LABELS["tissue"]
    labels[blurred] = LABELS["blur"]
    labels[pens["green"]] = LABELS["pen green"]
    labels[pens["red"]] = LABELS["pen red"]
    labels[pens["blue"]] = LABELS["pen blue"]
    labels[edge] = LABELS["edge"]
    areas = {
        name: masks.area_mm2(labels == value, actual)
        for name, value in LABELS.items() if name != "background"
    }  # fmt: skip
    return QualityMask(labels, actual, areas)


def write_mask(path: str | os.PathLike[str], array: np.ndarray, spacing: float) -> str:
    """Write a (rows, cols) uint8 label mask as a pyramidal TIFF at ``spacing`` µm/px."""
    with ImageWriter(path, array.shape, spacing=spacing, channels=1, compression="lzw",
                     interpolation="nearest") as writer:  # fmt: skip
        writer.fill(np.ascontiguousarray(array[:, :, None].astype(np.uint8)))
    return os.fspath(path)
