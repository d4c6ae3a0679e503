"""Rescale an image file to another spacing or shape, streamed in bands of rows.

:func:`rescale_image` writes a new pyramidal TIFF whose level 0 is ``source`` resampled to a
target spacing (finer or coarser) or to a template's shape. Output pixel ``(y, x)`` samples the
source at ``((y + 0.5) * fy - 0.5, (x + 0.5) * fx - 0.5)`` with ``f`` the source pixels per output
pixel, by nearest neighbour (labels) or bilinear interpolation (probabilities, images), through
:func:`cv2.remap` on bands of 512 output rows read with a margin: the result does not depend on
the banding, and memory holds one band whatever the size.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from digipath.io.reader import ImageReader
from digipath.io.writer import ImageWriter

BAND = 512
INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR}


def rescale_image(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    spacing: float | None = None,
    shape: tuple[int, int] | None = None,
    interpolation: str = "nearest",
    compression: str | None = None,
) -> str:
    """Write ``source``'s level 0 resampled to ``spacing`` (µm/px) or to ``shape`` (rows, cols).

    Parameters
    ----------
    source, target
        Input image and output TIFF.
    spacing
        Output spacing in µm/px (the shape follows); or give ``shape``.
    shape
        Output ``(rows, cols)``; the spacing follows from the source's extent (µm).
    interpolation
        ``"nearest"`` (labels) or ``"linear"``.
    compression
        Output compression (default: JPEG for 3-channel uint8 images, else LZW).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {tuple(INTERPOLATIONS)}")
    with ImageReader(source) as reader:
        level0 = reader.spacings[0]
        rows, cols = reader.shapes[0]
        if shape is None:
            if spacing is None or level0 is None:
                raise ValueError("give the output spacing (of an image with a spacing) or shape")
            shape = (max(1, round(rows * level0 / spacing)), max(1, round(cols * level0 / spacing)))
        out_rows, out_cols = int(shape[0]), int(shape[1])
        fy, fx = rows / out_rows, cols / out_cols
        out_spacing = None if level0 is None else level0 * fy
        channels, dtype = reader.channels, reader.dtype
        if compression is None:
            compression = "jpeg" if (channels == 3 and dtype == np.uint8) else "lzw"
        mode = "mean" if interpolation == "linear" else "nearest"
        xs = ((np.arange(out_cols) + 0.5) * fx - 0.5).astype(np.float32)
        with ImageWriter(target, (out_rows, out_cols), spacing=out_spacing, dtype=dtype,
                         channels=channels, compression=compression,
                         interpolation=mode) as writer:  # fmt: skip
            for top in range(0, out_rows, BAND):
                height = min(BAND, out_rows - top)
                ys = ((np.arange(top, top + height) + 0.5) * fy - 0.5).astype(np.float32)
                first = max(0, math.floor(ys.min()) - 1)
                last = min(rows, math.ceil(ys.max()) + 2)
                region = reader.read(level0 or 1.0, first, 0, last - first, cols,
                                     interpolation="nearest")  # fmt: skip
                map_x = np.broadcast_to(xs[None, :], (height, out_cols))
                map_y = np.broadcast_to((ys - first)[:, None], (height, out_cols))
                planes = [
                    cv2.remap(
                        np.ascontiguousarray(region[..., c]),
                        np.ascontiguousarray(map_x),
                        np.ascontiguousarray(map_y),
                        INTERPOLATIONS[interpolation],
                        borderMode=cv2.BORDER_REPLICATE,
                    )
                    for c in range(channels)
                ]
                band = np.stack(planes, axis=-1)
                for col in range(0, out_cols, 512):
                    for row in range(0, height, 512):
                        writer.write(np.ascontiguousarray(band[row : row + 512, col : col + 512]),
                                     top + row, col)  # fmt: skip
    return os.fspath(target)
