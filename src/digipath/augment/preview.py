"""A picture of an augmentation pipeline: one patch under many draws, in a grid.

People judge augmentation by eye. :func:`preview_grid` puts the patch itself in the top-left
cell and the results of ``count`` independent draws after it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from digipath.augment.base import Shape, centre_crop, check_image
from digipath.augment.config import load_augmentation
from digipath.augment.deephealth import parse_deephealth
from digipath.augment.pool import AugmenterPool
from digipath.errors import AugmentationConfigError, AugmentationError, FileError

logger = logging.getLogger(__name__)

GUTTER = 4
"""White pixels between grid cells."""


def load_pipeline(
    path: str | os.PathLike[str],
    purpose: str = "training",
    rng: np.random.Generator | int | None = None,
) -> AugmenterPool:
    """The pool an augmentation file describes.

    ``.yaml``/``.yml`` files hold a DigitalPathology ``augmentation`` section (``purpose``
    picks the pool); any other file is DeepHealth augmentation text.
    """
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        pools = load_augmentation(path, rng=rng)
        if purpose not in pools:
            raise AugmentationConfigError(
                f"augmentation.{purpose}",
                f"no such purpose; the file has: {', '.join(pools) or 'none'}",
                path,
            )
        return pools[purpose]
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise AugmentationConfigError("text", f"cannot read: {error.strerror}", path) from None
    return AugmenterPool.from_augmenter(parse_deephealth(text, source=path), rng=rng)


def fitting_target(pool: AugmenterPool, shape: Shape) -> Shape:
    """The largest square target whose extraction shape fits within ``shape`` (rows, cols)."""
    low, high = 1, min(shape)
    if any(need > have for need, have in zip(pool.input_shape((1, 1)), shape, strict=True)):
        raise AugmentationError(
            f"the patch ({shape[0]} x {shape[1]}) is too small for this pipeline"
        )
    while low < high:
        middle = (low + high + 1) // 2
        need = pool.input_shape((middle, middle))
        if need[0] <= shape[0] and need[1] <= shape[1]:
            low = middle
        else:
            high = middle - 1
    return (low, low)


def _displayable(tile: np.ndarray) -> np.ndarray:
    """uint8 RGB for display: float results (normalised patches) are min-max stretched."""
    if tile.dtype != np.uint8:
        tile = tile.astype(np.float64)
        low, high = float(tile.min()), float(tile.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        tile = np.clip((tile - low) * scale, 0, 255).round().astype(np.uint8)
    if tile.shape[2] == 1:
        tile = np.repeat(tile, 3, axis=2)
    return tile[:, :, :3]


def preview_grid(
    pool: AugmenterPool,
    image: np.ndarray,
    count: int = 15,
    columns: int = 4,
    target_shape: Shape | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """A grid of ``image`` and ``count`` augmented versions of it.

    Parameters
    ----------
    pool
        The pipeline.
    image
        The patch, (rows, cols, channels) uint8.
    count
        Number of draws shown after the original.
    columns
        Cells per grid row.
    target_shape
        Output (rows, cols) of each draw; by default the largest square whose enlarged
        extraction shape fits in ``image`` (so no border is invented).
    rng
        Generator or seed for the draws.

    Returns
    -------
    numpy.ndarray
        The grid, (rows, cols, 3) uint8 RGB, cells separated by white gutters.
    """
    image = check_image(image, "preview")
    if count < 1 or columns < 1:
        raise AugmentationError(f"count and columns must be >= 1, got {count}, {columns}")
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    target = fitting_target(pool, image.shape[:2]) if target_shape is None else target_shape
    needed = pool.input_shape(target)
    if needed[0] > image.shape[0] or needed[1] > image.shape[1]:
        logger.warning(
            "the patch (%d x %d) is smaller than the %d x %d the pipeline needs for a %d x %d "
            "target; its border is reflected",
            *image.shape[:2],
            *needed,
            *target,
        )
        pad_rows = max(0, needed[0] - image.shape[0])
        pad_cols = max(0, needed[1] - image.shape[1])
        image = cv2.copyMakeBorder(
            image, pad_rows // 2, pad_rows - pad_rows // 2, pad_cols // 2,
            pad_cols - pad_cols // 2, cv2.BORDER_REFLECT_101,
        )  # fmt: skip
    source = centre_crop(image, needed)
    tiles = [_displayable(centre_crop(source, target))]
    for _ in range(count):
        pool.randomize(generator)
        result, _ = pool.transform(source, None, target)
        tiles.append(_displayable(result))
    cell_rows = max(tile.shape[0] for tile in tiles)
    cell_cols = max(tile.shape[1] for tile in tiles)
    grid_rows = -(-len(tiles) // columns)
    used_columns = min(columns, len(tiles))
    grid = np.full(
        (
            grid_rows * cell_rows + (grid_rows + 1) * GUTTER,
            used_columns * cell_cols + (used_columns + 1) * GUTTER,
            3,
        ),
        255,
        np.uint8,
    )
    for index, tile in enumerate(tiles):
        row, col = divmod(index, columns)
        top = GUTTER + row * (cell_rows + GUTTER)
        left = GUTTER + col * (cell_cols + GUTTER)
        grid[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return grid


def read_patch(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an RGB patch (PNG, JPEG, TIFF ...) as (rows, cols, 3) uint8."""
    path = Path(path)
    if not path.is_file():
        raise FileError(path, "no such patch file")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            image = tifffile.imread(path)
        except Exception as error:  # tifffile raises several types for bad files
            raise FileError(path, f"cannot read the TIFF: {error}") from None
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.dtype != np.uint8:
            raise FileError(path, f"expected an 8-bit RGB patch, got {image.dtype}")
        return np.ascontiguousarray(image[:, :, :3])
    data = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if data is None:
        raise FileError(path, "not an image OpenCV can read (PNG, JPEG, TIFF, BMP ...)")
    return cv2.cvtColor(data, cv2.COLOR_BGR2RGB)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG through a temporary name, renamed when complete."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.partial{os.getpid()}.png")
    ok = cv2.imwrite(os.fspath(temporary), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        temporary.unlink(missing_ok=True)
        raise FileError(path, "could not write the PNG (does the folder exist?)")
    os.replace(temporary, path)
    return path


__all__ = ["fitting_target", "load_pipeline", "preview_grid", "read_patch", "write_png"]
