"""Operations on whole label masks: remapping values, building statistics for a data config."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digipath.data.stats import MaskStats
from digipath.errors import DataError, DigipathError
from digipath.io import ImageReader, ImageWriter

logger = logging.getLogger(__name__)


def remap_mask(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    mapping: Mapping[int, int],
    *,
    spacing: float | None = None,
    default: int | None = None,
    tile_size: int = 512,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a copy of a label mask with its values remapped, tile by tile.

    Parameters
    ----------
    source, target
        The input mask and the output path (a tiled pyramidal TIFF, LZW, nearest pyramid).
    mapping
        ``{old value: new value}``, values in 0-255.
    spacing
        Spacing (µm/px) of the level to copy; default level 0.
    default
        New value of the values ``mapping`` does not list; default: unchanged.
    progress
        Called with (rows done, rows in all) after each row of tiles.

    Returns
    -------
    pathlib.Path
        ``target``.
    """
    lut = np.arange(256, dtype=np.uint8) if default is None else np.full(256, default, np.uint8)
    for old, new in mapping.items():
        if not (0 <= int(old) <= 255 and 0 <= int(new) <= 255):
            raise DataError(f"mask values must lie in 0-255, got {old} -> {new}")
        lut[int(old)] = int(new)
    with ImageReader(source) as original:
        has_spacing = original.spacings[0] is not None
    # Without any spacing, address the levels with a nominal 1 µm/px and write none.
    with ImageReader(source, spacing=None if has_spacing else 1.0) as reader:
        if reader.channels != 1 or not np.issubdtype(reader.dtype, np.integer):
            raise DataError(
                f"{source}: expected a single-channel integer mask, got {reader.channels} "
                f"channels of {reader.dtype}"
            )
        level = 0 if spacing is None else reader.level(spacing)
        level_spacing = float(reader.spacings[level])  # type: ignore[arg-type]
        rows, cols = reader.shapes[level]
        with ImageWriter(
            target,
            (rows, cols),
            spacing=level_spacing if has_spacing else None,
            channels=1,
            compression="lzw",
            interpolation="nearest",
            tile_size=tile_size,
        ) as writer:
            for top in range(0, rows, tile_size):
                height = min(tile_size, rows - top)
                band = reader.read(level_spacing, top, 0, height, cols, tolerance=0.0)
                if band.max(initial=0) > 255:
                    raise DataError(f"{source}: mask values above 255 cannot be remapped")
                mapped = lut[band.astype(np.uint8)]
                for left in range(0, cols, tile_size):
                    writer.write(mapped[:, left : left + tile_size], top, left)
                if progress is not None:
                    progress(top + height, rows)
    return Path(target)


@dataclass
class StatsResult:
    """Outcome of :func:`preprocess_masks` for one data source."""

    image: str
    stat: str
    error: str | None = None
    skipped: bool = False


def preprocess_masks(
    sources: Iterable,
    mask_spacing: float,
    *,
    tolerance: float = 0.25,
    overwrite: bool = False,
    tile_size: int = 512,
    progress: Callable[[int, int, StatsResult], None] | None = None,
) -> list[StatsResult]:
    """Build and save the ``.stat`` file of every source that has a mask.

    Continues past a failing source: its error is recorded in the result, never raised.

    Parameters
    ----------
    sources
        Data sources with ``image``, ``mask``, ``stat`` paths and declared ``labels`` (e.g.
        ``DataConfig.items()``).
    mask_spacing
        Spacing of the mask level to describe (µm/px).
    overwrite
        Rebuild statistics files that exist already (default: keep them).
    progress
        Called with (sources done, sources in all, result) after each source.
    """
    items = list(sources)
    results = []
    for index, source in enumerate(items):
        result = StatsResult(source.image, source.stat)
        try:
            if not source.stat:
                raise DataError(f"{source.image}: the data config gives no stat path")
            if not source.mask:
                raise DataError(f"{source.image}: the data config gives no mask")
            if Path(source.stat).exists() and not overwrite:
                result.skipped = True
            else:
                stats = MaskStats.from_mask(
                    source.mask,
                    mask_spacing,
                    sorted(source.labels),
                    tolerance=tolerance,
                    tile_size=tile_size,
                    image=source.image,
                )
                Path(source.stat).parent.mkdir(parents=True, exist_ok=True)
                stats.save(source.stat)
                missing = [label for label in source.labels if stats.counts[label] == 0]
                if missing:
                    logger.warning("%s: declared labels %s have no pixels", source.mask, missing)
        except (DigipathError, OSError, ValueError) as error:
            result.error = str(error)
            logger.error("%s", error)
        results.append(result)
        if progress is not None:
            progress(index + 1, len(items), result)
    return results
