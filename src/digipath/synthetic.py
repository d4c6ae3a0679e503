"""Generated H&E-like slides with nuclei at known positions, for examples, tests and benchmarks.

:func:`nuclei_slide` paints a slide the way a 40x scan of breast tissue looks to a small
network: white glass around and between tissue pieces; pink, textured stroma with sparse,
elongated stromal nuclei; a few dense clusters of round epithelial nuclei (dark purple,
chromatin-textured, some pale) that hold most nuclei; red blood cells as dark-pink
distractors; scanner noise. The nucleus mask and the centre of every nucleus come with it, so
segmentation and detection can be scored exactly. :func:`write_nuclei_slide` writes the slide
and its mask as pyramidal TIFFs.

Sizes are in pixels at the given spacing (µm/px); nucleus sizes are set in µm so that a slide
at another spacing looks like the same tissue at another magnification.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["NucleiSlide", "nuclei_slide", "write_nuclei_slide"]


@dataclass
class NucleiSlide:
    """A generated slide.

    Attributes
    ----------
    image
        uint8 ``(rows, cols, 3)`` RGB.
    mask
        uint8 ``(rows, cols)``: 1 inside nuclei, 0 elsewhere.
    tissue
        bool ``(rows, cols)``: tissue (not glass).
    centres
        float ``(n, 2)`` nucleus centres ``(row, col)`` in pixels.
    spacing
        µm/px.
    """

    image: np.ndarray
    mask: np.ndarray
    tissue: np.ndarray
    centres: np.ndarray
    spacing: float


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A smooth random field in [0, 1], ``sigma`` in pixels (made on a coarse grid, resized)."""
    step = max(1, int(sigma / 4))
    small = (max(2, shape[0] // step + 1), max(2, shape[1] // step + 1))
    field = cv2.GaussianBlur(rng.random(small).astype(np.float32), (0, 0), sigma / step)
    field = cv2.resize(field, shape[::-1], interpolation=cv2.INTER_LINEAR)
    field -= field.min()
    return field / max(float(field.max()), 1e-6)


def nuclei_slide(
    shape: tuple[int, int] = (2048, 2048),
    *,
    spacing: float = 0.25,
    seed: int = 0,
    clusters: int | None = None,
    cluster_fraction: float = 0.08,
    stromal_density: float = 40.0,
    nucleus_diameter_um: tuple[float, float] = (5.0, 8.0),
) -> NucleiSlide:
    """Generate an H&E-like slide with nuclei (see the module docstring).

    Parameters
    ----------
    shape
        ``(rows, cols)`` in pixels.
    spacing
        Pixel spacing in µm/px (0.25 is 40x).
    seed
        Random seed: the same seed gives the same slide.
    clusters
        Number of epithelial nucleus clusters (default: one per 1 mm², at least 2).
    cluster_fraction
        Fraction of the tissue the clusters cover.
    stromal_density
        Stromal nuclei per mm² of tissue outside the clusters.
    nucleus_diameter_um
        Range of the nucleus diameters in µm.
    """
    rng = np.random.default_rng(seed)
    rows, cols = int(shape[0]), int(shape[1])
    um = 1.0 / spacing  # pixels per µm
    area_mm2 = rows * cols * (spacing / 1000) ** 2
    # tissue: a smooth field thresholded, so that about 80 % is tissue with glass around it
    field = _smooth_field(rng, (rows, cols), 120 * um)
    border = np.minimum.outer(
        np.minimum(np.arange(rows), rows - 1 - np.arange(rows)),
        np.minimum(np.arange(cols), cols - 1 - np.arange(cols)),
    ).astype(np.float32)
    field = field * np.clip(border / (40 * um), 0, 1)
    tissue = field > np.quantile(field, 0.2)
    # clusters of epithelial cells: blobs of a second field, within the tissue
    count = clusters if clusters is not None else max(2, round(area_mm2))
    cluster_map = np.zeros((rows, cols), np.float32)
    for _ in range(count):
        centre = (int(rng.integers(0, cols)), int(rng.integers(0, rows)))
        radius = np.sqrt(cluster_fraction * rows * cols / count / np.pi)
        axes = (
            max(4, int(radius * rng.uniform(0.7, 1.3))),
            max(4, int(radius * rng.uniform(0.6, 1.1))),
        )
        cv2.ellipse(cluster_map, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    wobble = _smooth_field(rng, (rows, cols), 15 * um)
    in_cluster = (cluster_map * (0.6 + 0.8 * wobble) > 0.7) & tissue
    mask = np.zeros((rows, cols), np.uint8)
    strength = np.zeros((rows, cols), np.float32)
    centres: list[tuple[float, float]] = []
    low, high = (d * um / 2 for d in nucleus_diameter_um)

    def paint(row: float, col: float, axes: tuple[float, float], angle: float) -> None:
        if not (0 <= row < rows and 0 <= col < cols) or not tissue[int(row), int(col)]:
            return
        box = (int(col), int(row)), (max(1, int(axes[0])), max(1, int(axes[1])))
        if mask[int(row), int(col)]:
            return  # no nucleus on top of another
        cv2.ellipse(mask, box[0], box[1], angle, 0, 360, 1, -1)
        cv2.ellipse(strength, box[0], box[1], angle, 0, 360, float(rng.uniform(0.45, 1.0)), -1)
        centres.append((float(int(row)), float(int(col))))

    # epithelial nuclei: packed on a jittered grid inside the clusters
    pitch = 2.3 * high
    grid_r, grid_c = np.mgrid[pitch / 2 : rows : pitch, pitch / 2 : cols : pitch]
    grid = np.stack([grid_r.ravel(), grid_c.ravel()], axis=1)
    grid = grid + rng.uniform(-0.25, 0.25, grid.shape) * pitch
    grid = np.clip(grid, 0, [rows - 1, cols - 1])
    keep = in_cluster[grid[:, 0].astype(int), grid[:, 1].astype(int)]
    keep &= rng.random(len(grid)) < 0.85
    for row, col in grid[keep]:
        radius = rng.uniform(low, high)
        paint(row, col, (radius, radius * rng.uniform(0.75, 1.0)), rng.uniform(0, 180))
    # stromal nuclei: sparse and elongated
    stromal = rng.poisson(stromal_density * area_mm2 * float(np.mean(tissue & ~in_cluster)))
    for _ in range(stromal):
        row, col = rng.uniform(0, rows), rng.uniform(0, cols)
        if in_cluster[int(row), int(col)]:
            continue
        radius = rng.uniform(low, high)
        paint(row, col, (radius * 1.4, radius * 0.5), rng.uniform(0, 180))
    # red blood cells: dark pink discs, never on nuclei
    cells = np.zeros((rows, cols), np.float32)
    for _ in range(rng.poisson(80 * area_mm2)):
        centre = (int(rng.integers(0, cols)), int(rng.integers(0, rows)))
        cv2.circle(cells, centre, max(1, int(3.5 * um)), 1.0, -1)
    cells *= tissue & (mask == 0)

    stroma = _smooth_field(rng, (rows, cols), 6 * um)
    eosin = np.array([236, 170, 206], np.float32) * (0.78 + 0.22 * stroma[..., None])
    cytoplasm = np.array([214, 150, 196], np.float32)
    chromatin = cv2.GaussianBlur(rng.random((rows, cols)).astype(np.float32), (0, 0), 0.6 * um)
    haematoxylin = np.array([88, 52, 142], np.float32) * (0.8 + 0.4 * chromatin[..., None])
    image = np.where(in_cluster[..., None], cytoplasm, eosin)
    red = np.array([200, 72, 96], np.float32)
    cells = cv2.GaussianBlur(cells, (0, 0), 0.3 * um)[..., None]
    image = image * (1 - cells) + red * cells
    nuclei = cv2.GaussianBlur(strength, (0, 0), 0.4 * um)[..., None]
    image = image * (1 - nuclei) + haematoxylin * nuclei
    glass = np.array([242, 242, 246], np.float32)
    edge = cv2.GaussianBlur(tissue.astype(np.float32), (0, 0), 2 * um)[..., None]
    image = image * edge + glass * (1 - edge)
    image += rng.normal(0, 7, image.shape).astype(np.float32)
    return NucleiSlide(
        image=np.clip(image, 0, 255).astype(np.uint8), mask=mask, tissue=tissue,
        centres=np.array(centres, np.float64).reshape(-1, 2), spacing=float(spacing),
    )  # fmt: skip


def write_nuclei_slide(
    folder: str | os.PathLike[str], name: str, slide: NucleiSlide, *, quality: int = 90
) -> tuple[Path, Path]:
    """Write ``slide`` as ``<name>.tif`` (JPEG pyramid) and ``<name>_mask.tif`` (LZW, 0/1).

    Returns the two paths.
    """
    from digipath.io import ImageWriter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image_path, mask_path = folder / f"{name}.tif", folder / f"{name}_mask.tif"
    with ImageWriter(image_path, slide.image.shape[:2], spacing=slide.spacing,
                     jpeg_quality=quality) as writer:  # fmt: skip
        writer.fill(slide.image)
    with ImageWriter(mask_path, slide.mask.shape, spacing=slide.spacing, channels=1,
                     compression="lzw", interpolation="nearest") as writer:  # fmt: skip
        writer.fill(slide.mask[:, :, None])
    return image_path, mask_path
