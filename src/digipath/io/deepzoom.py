"""Deep Zoom (DZI) tiles of a slide, and of an output map laid over it, for web viewers.

:class:`DeepZoom` cuts an :class:`~digipath.io.ImageReader` into the tile pyramid of the Deep
Zoom format (the ``.dzi`` descriptor plus ``level/col_row.jpeg`` tiles) that OpenSeadragon
displays. The geometry is the one of the DZI specification and of
``openslide.deepzoom.DeepZoomGenerator`` (without ``limit_bounds``):

* level count ``ceil(log2(max(width, height))) + 1``; the last level is the full-resolution
  image (the slide's level 0), level ``L`` measures ``ceil(dim / 2**(max_level - L))`` pixels
  along each axis, level 0 one pixel;
* tile ``(col, row)`` of a level covers the level's pixels
  ``[col * tile_size - overlap, (col + 1) * tile_size + overlap)`` (no overlap before the
  first tile, clipped at the level's edge), and the same along the rows.

Every tile is read from the coarsest level of the file whose downsampling does not exceed the
tile's (within 1 %), and resampled to the tile with exact area averaging (nearest for label
masks), so a tile of a coarse Deep Zoom level never reads level 0 of a pyramidal slide.

:class:`DeepZoomOverlay` (made by :meth:`DeepZoom.overlay`) serves an output map (a label map
or a probability map, usually at a coarser spacing than the slide) as RGBA PNG tiles on the
slide's own Deep Zoom grid, so that a viewer can lay it exactly over the slide. The map is
registered physically: slide level-0 pixel ``(r, c)`` is map level-0 pixel
``(r * s / m, c * s / m)`` for a slide spacing ``s`` and a map spacing ``m`` (µm/px); when either
file states no spacing, the ratio of the level-0 shapes is used per axis instead.

Deep Zoom speaks (col, row) tile addresses and (width, height) sizes, as the format and
OpenSeadragon do; arrays are (rows, cols, channels) as everywhere in digipath.

Examples
--------
>>> with ImageReader("slide.svs") as slide, ImageReader("tumour.tif") as labels:  # doctest: +SKIP
...     deepzoom = DeepZoom(slide)
...     descriptor = deepzoom.dzi()                      # serve as slide.dzi
...     jpeg = deepzoom.tile(deepzoom.level_count - 1, 3, 2)   # slide_files/<L>/3_2.jpeg
...     overlay = deepzoom.overlay(labels, alpha=0.4)
...     png = overlay.tile(deepzoom.level_count - 1, 3, 2)     # overlay_files/<L>/3_2.png
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import cv2
import numpy as np

from digipath.errors import ImageError
from digipath.io.reader import ImageReader
from digipath.io.resample import _area_weights

logger = logging.getLogger(__name__)

DEEPZOOM_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"
"""XML namespace of the ``.dzi`` descriptor."""

FORMATS = ("jpeg", "png")
"""Tile formats of :class:`DeepZoom` (``"jpg"`` is accepted for ``"jpeg"``)."""

MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}
"""HTTP media type of each tile format."""

KINDS = ("labels", "probability")
"""Kinds of map that :class:`DeepZoomOverlay` colours."""

LEVEL_TOLERANCE = 0.01
"""Relative slack when choosing the level a tile is read from: a level whose downsampling
exceeds the tile's by at most 1 % (levels of odd-sized pyramids) still serves it."""

_MATCH_TOLERANCE = 1e-6  # relative tolerance when reading a level by its own spacing

_FIXED_LABEL_COLOURS = {
    1: (255, 0, 0),  # red
    2: (0, 255, 0),  # green
    3: (0, 0, 255),  # blue
    4: (255, 255, 0),  # yellow
    5: (0, 255, 255),  # cyan
    6: (255, 0, 255),  # magenta
    7: (255, 128, 0),  # orange
    8: (128, 0, 255),  # purple
}


class DeepZoomError(ImageError, ValueError):
    """A Deep Zoom tile source got an invalid parameter, level or tile address.

    Attributes
    ----------
    path
        The image the tile source reads (``None`` when not known).
    reason
        What was wrong and what was expected.
    level
        The Deep Zoom level requested, where the error is about a tile.
    address
        The (col, row) address of the tile requested, where the error is about a tile.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        reason: str,
        *,
        level: object = None,
        address: tuple[object, object] | None = None,
    ) -> None:
        self.level = level
        self.address = address
        super().__init__(path, reason)


# --------------------------------------------------------------------------------------------
# Geometry and reading


def deepzoom_dimensions(width: int, height: int) -> list[tuple[int, int]]:
    """Return the (width, height) of every Deep Zoom level of a ``width`` x ``height`` image.

    Level 0 (first) is 1 x 1 pixel; each level halves the next one, rounding up; the last
    level is the image itself. There are ``ceil(log2(max(width, height))) + 1`` levels.
    """
    dimensions = [(int(width), int(height))]
    while dimensions[-1][0] > 1 or dimensions[-1][1] > 1:
        w, h = dimensions[-1]
        dimensions.append((max(1, -(-w // 2)), max(1, -(-h // 2))))
    return dimensions[::-1]


@dataclass(frozen=True)
class _Level:
    """One level of a reader, as the tile sources read it."""

    index: int
    rows: int
    cols: int
    row_scale: float  # level-0 rows per row of this level
    col_scale: float  # level-0 cols per col of this level
    spacing: float | None  # its spacing in µm/px, None when the file states none

    @property
    def downsample(self) -> float:
        return (self.row_scale + self.col_scale) / 2


def _reader_levels(reader: ImageReader) -> list[_Level]:
    """The levels of ``reader`` with their scale relative to level 0, finest first.

    A level whose size is level 0's divided by an integer ``k`` (rounded either way, as
    pyramids of odd-sized images are) gets the exact scale ``k`` on both axes; other levels get
    the ratio of the sizes per axis. Levels that repeat the spacing of a finer one are left
    out (the reader would never return them by spacing).
    """
    rows0, cols0 = reader.shapes[0]
    spacings = reader.spacings
    levels: list[_Level] = []
    for index, (rows, cols) in enumerate(reader.shapes):
        spacing = spacings[index]
        if spacing is not None and reader.level(spacing, _MATCH_TOLERANCE) != index:
            continue
        row_scale, col_scale = rows0 / rows, cols0 / cols
        k = round((row_scale + col_scale) / 2)
        if k >= 1 and abs(rows0 / k - rows) < 1 and abs(cols0 / k - cols) < 1:
            row_scale = col_scale = float(k)
        levels.append(_Level(index, rows, cols, row_scale, col_scale, spacing))
    levels.sort(key=lambda level: level.downsample)
    return levels


def _best_level(levels: Sequence[_Level], downsample: float) -> _Level:
    """The coarsest level whose downsampling is at most ``downsample`` (else the finest)."""
    best = levels[0]
    for level in levels:
        if level.downsample <= downsample * (1 + LEVEL_TOLERANCE) and (
            level.downsample > best.downsample
        ):
            best = level
    return best


def _read_level(
    reader: ImageReader, level: _Level, row: int, col: int, height: int, width: int, fill: float
) -> np.ndarray:
    """Read a region of one level at its own resolution (inside the level)."""
    if level.spacing is not None:
        return reader.read(
            level.spacing,
            row,
            col,
            height,
            width,
            fill=fill,
            strict=True,
            tolerance=_MATCH_TOLERANCE,
        )
    # Files without spacing cannot be read by spacing; ImageReader has no public read by
    # level index, so use its level reader directly (it pads and clips as read() does).
    reader._check_open()
    return reader._read_level(level.index, row, col, height, width, fill)


def _window(start: int, stop: int, factor: float, size: int) -> tuple[int, int]:
    """Source interval [first, stop) of the output pixels [start, stop), clipped to ``size``."""
    first = math.floor(start * factor + 1e-9)
    last = math.ceil(stop * factor - 1e-9)
    return max(first, 0), min(max(last, first + 1), size)


def _render(
    reader: ImageReader,
    levels: Sequence[_Level],
    scale: tuple[float, float],
    rows: tuple[int, int],
    cols: tuple[int, int],
    interpolation: str,
    fill: float,
) -> np.ndarray:
    """Resample the pixels ``rows`` x ``cols`` of a grid ``scale`` times coarser than level 0.

    Output pixel (i, j) covers the reader's level-0 pixels
    ``[i * scale[0], (i + 1) * scale[0]) x [j * scale[1], (j + 1) * scale[1])``, read from the
    best level and averaged over the part inside the image (``area``) or sampled at its centre
    (``nearest``); pixels entirely outside the image are ``fill``.

    Returns
    -------
    numpy.ndarray
        (rows, cols, channels) array of the reader's dtype.
    """
    (y0, y1), (x0, x1) = rows, cols
    height, width = y1 - y0, x1 - x0
    channels = reader.channels
    level = _best_level(levels, min(scale))
    g_row, g_col = scale[0] / level.row_scale, scale[1] / level.col_scale
    r_first, r_stop = _window(y0, y1, g_row, level.rows)
    c_first, c_stop = _window(x0, x1, g_col, level.cols)
    if r_first >= r_stop or c_first >= c_stop:
        return np.full((height, width, channels), fill, dtype=reader.dtype)
    source = _read_level(reader, level, r_first, c_first, r_stop - r_first, c_stop - c_first, fill)
    if (
        abs(g_row - 1) < 1e-12
        and abs(g_col - 1) < 1e-12
        and (r_first, c_first) == (y0, x0)
        and source.shape[:2] == (height, width)
    ):
        return source
    if interpolation == "nearest":
        row_index = np.floor((y0 + np.arange(height) + 0.5) * g_row).astype(np.int64)
        col_index = np.floor((x0 + np.arange(width) + 0.5) * g_col).astype(np.int64)
        inside_rows = (row_index >= 0) & (row_index < level.rows)
        inside_cols = (col_index >= 0) & (col_index < level.cols)
        row_index = np.clip(row_index - r_first, 0, source.shape[0] - 1)
        col_index = np.clip(col_index - c_first, 0, source.shape[1] - 1)
        out = source[row_index[:, np.newaxis], col_index[np.newaxis, :]]
    else:
        row_weights = _area_weights(y0, height, g_row, r_first, source.shape[0])
        col_weights = _area_weights(x0, width, g_col, c_first, source.shape[1])
        inside_rows = np.asarray(row_weights.sum(axis=1)).ravel() > 0.5
        inside_cols = np.asarray(col_weights.sum(axis=1)).ravel() > 0.5
        data = source.astype(np.float32, copy=False).reshape(source.shape[0], -1)
        along_rows = np.asarray(row_weights @ data).reshape(height, source.shape[1], channels)
        moved = along_rows.transpose(1, 0, 2).reshape(source.shape[1], -1)
        result = np.asarray(col_weights @ moved).reshape(width, height, channels)
        result = np.ascontiguousarray(result.transpose(1, 0, 2))
        if np.issubdtype(reader.dtype, np.integer):
            info = np.iinfo(reader.dtype)
            out = np.clip(np.rint(result), info.min, info.max).astype(reader.dtype)
        else:
            out = result.astype(reader.dtype, copy=False)
    if not inside_rows.all() or not inside_cols.all():
        out[~inside_rows] = fill
        out[:, ~inside_cols] = fill
    return out


def _encode(array: np.ndarray, format: str, quality: int, path: str | None) -> bytes:
    """Encode a (rows, cols, 1 | 3 | 4) uint8 RGB(A) tile as JPEG or PNG bytes."""
    channels = array.shape[2]
    if channels == 1:
        image = np.ascontiguousarray(array[:, :, 0])
    elif channels == 3:
        image = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif format == "jpeg":  # RGBA: composite on white, JPEG has no alpha
        alpha = array[:, :, 3:].astype(np.float32) / 255
        rgb = array[:, :, :3] * alpha + 255 * (1 - alpha)
        image = cv2.cvtColor(np.rint(rgb).astype(np.uint8), cv2.COLOR_RGB2BGR)
    else:
        image = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    if format == "jpeg":
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DeepZoomError(path, f"OpenCV could not encode a {array.shape} tile as {format}")
    return encoded.tobytes()


def _check_int(path: str | None, name: str, value: object, low: int, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DeepZoomError(path, f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"from {low} to {high}"
        raise DeepZoomError(path, f"{name} must be {bounds}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# The slide


class DeepZoom:
    """Deep Zoom tiles of an image, read by digipath's :class:`~digipath.io.ImageReader`.

    Parameters
    ----------
    reader
        The slide (uint8 with 1, 3 or 4 channels). It stays owned by the caller: close it
        after the tile source is no longer used.
    tile_size
        Width and height of the tiles in pixels, without overlap (254 + 2 x 1 overlap = 256).
    overlap
        Pixels each tile shares with each neighbour (none at the image's edges).
    format
        ``"jpeg"`` or ``"png"``: the encoding of :meth:`tile` and the ``Format`` of the
        descriptor.
    quality
        JPEG quality, 1 to 100.

    Raises
    ------
    DeepZoomError
        A parameter is invalid or the image cannot be shown as tiles (dtype, channels).

    Notes
    -----
    A tile source holds no state that changes after it is built, and
    :class:`~digipath.io.ImageReader` reads are thread-safe, so tiles may be requested from
    several threads at once (a web server's worker threads).
    """

    def __init__(
        self,
        reader: ImageReader,
        *,
        tile_size: int = 254,
        overlap: int = 1,
        format: str = "jpeg",
        quality: int = 80,
    ) -> None:
        self._reader = reader
        self._path: str | None = getattr(reader, "path", None)
        self._tile_size = _check_int(self._path, "tile_size", tile_size, 1, None)
        self._overlap = _check_int(self._path, "overlap", overlap, 0, None)
        fmt = format.lower() if isinstance(format, str) else format
        fmt = "jpeg" if fmt == "jpg" else fmt
        if fmt not in FORMATS:
            raise DeepZoomError(self._path, f"format must be one of {FORMATS}, got {format!r}")
        self._format: str = fmt
        self._quality = _check_int(self._path, "quality", quality, 1, 100)
        self._check_source()
        rows0, cols0 = reader.shapes[0]
        self._dimensions = deepzoom_dimensions(cols0, rows0)
        self._tiles = [
            (-(-w // self._tile_size), -(-h // self._tile_size)) for w, h in self._dimensions
        ]
        self._levels = _reader_levels(reader)

    def _check_source(self) -> None:
        reader = self._reader
        if reader.dtype != np.uint8 or reader.channels not in (1, 3, 4):
            raise DeepZoomError(
                self._path,
                f"Deep Zoom tiles show uint8 images with 1, 3 or 4 channels, got "
                f"{reader.channels} x {reader.dtype}; show maps with DeepZoom.overlay()",
            )

    # ----------------------------------------------------------------------------------------
    # Properties

    @property
    def reader(self) -> ImageReader:
        """The image the grid is made of (the slide)."""
        return self._reader

    @property
    def tile_size(self) -> int:
        """Tile width and height in pixels, without overlap."""
        return self._tile_size

    @property
    def overlap(self) -> int:
        """Pixels each tile shares with each neighbour."""
        return self._overlap

    @property
    def format(self) -> str:
        """Tile encoding: ``"jpeg"`` or ``"png"`` (also the tile files' extension)."""
        return self._format

    @property
    def media_type(self) -> str:
        """HTTP media type of the tiles (``image/jpeg`` or ``image/png``)."""
        return MEDIA_TYPES[self._format]

    @property
    def spacing(self) -> float | None:
        """Pixel spacing of the last (full-resolution) Deep Zoom level in µm/px, if known."""
        return self._reader.spacings[0]

    @property
    def level_count(self) -> int:
        """Number of Deep Zoom levels: ``ceil(log2(max(width, height))) + 1``."""
        return len(self._dimensions)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        """(width, height) in pixels of every Deep Zoom level, the 1 x 1 level first."""
        return list(self._dimensions)

    @property
    def level_tiles(self) -> list[tuple[int, int]]:
        """(cols, rows) of tiles of every Deep Zoom level."""
        return list(self._tiles)

    def tile_count(self, level: int) -> tuple[int, int]:
        """Return the (cols, rows) of tiles of Deep Zoom ``level``."""
        return self._tiles[self._check_level(level)]

    def source_level(self, level: int) -> int:
        """Return the index of the reader's level that tiles of Deep Zoom ``level`` are read from.

        The coarsest level whose downsampling is at most the Deep Zoom level's
        ``2 ** (level_count - 1 - level)`` (within :data:`LEVEL_TOLERANCE`).
        """
        return _best_level(self._levels, self._downsample(self._check_level(level))).index

    # ----------------------------------------------------------------------------------------
    # Tiles

    def dzi(self) -> str:
        """Return the ``.dzi`` XML descriptor (namespace :data:`DEEPZOOM_NAMESPACE`)."""
        image = Element(
            "Image",
            TileSize=str(self._tile_size),
            Overlap=str(self._overlap),
            Format=self._format,
            xmlns=DEEPZOOM_NAMESPACE,
        )
        width, height = self._dimensions[-1]
        SubElement(image, "Size", Width=str(width), Height=str(height))
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(image, encoding="unicode")

    def tile_region(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """Return the (row, col, height, width) of tile (col, row) in Deep Zoom ``level``'s pixels.

        The region includes the overlap with the neighbouring tiles.

        Raises
        ------
        DeepZoomError
            ``level``, ``col`` or ``row`` is out of range.
        """
        level, col, row = self._check_tile(level, col, row)
        width, height = self._dimensions[level]
        size, overlap = self._tile_size, self._overlap
        x0 = col * size - (overlap if col > 0 else 0)
        y0 = row * size - (overlap if row > 0 else 0)
        x1 = min((col + 1) * size + overlap, width)
        y1 = min((row + 1) * size + overlap, height)
        return y0, x0, y1 - y0, x1 - x0

    def tile_dimensions(self, level: int, col: int, row: int) -> tuple[int, int]:
        """Return the (width, height) in pixels of tile (col, row) of Deep Zoom ``level``."""
        _, _, height, width = self.tile_region(level, col, row)
        return width, height

    def tile_array(self, level: int, col: int, row: int) -> np.ndarray:
        """Return tile (col, row) of Deep Zoom ``level`` as pixels.

        Returns
        -------
        numpy.ndarray
            (rows, cols, channels) uint8 array (the slide's channels; RGBA for overlays).

        Raises
        ------
        DeepZoomError
            ``level``, ``col`` or ``row`` is out of range.
        """
        y0, x0, height, width = self.tile_region(level, col, row)
        downsample = self._downsample(int(level))
        return self._tile_pixels(downsample, (y0, y0 + height), (x0, x0 + width))

    def tile(self, level: int, col: int, row: int) -> bytes:
        """Return tile (col, row) of Deep Zoom ``level`` encoded as :attr:`format` (JPEG/PNG).

        Raises
        ------
        DeepZoomError
            ``level``, ``col`` or ``row`` is out of range.
        """
        return _encode(self.tile_array(level, col, row), self._format, self._quality, self._path)

    def _tile_pixels(
        self, downsample: float, rows: tuple[int, int], cols: tuple[int, int]
    ) -> np.ndarray:
        reader = self._reader
        return _render(
            reader,
            self._levels,
            (downsample, downsample),
            rows,
            cols,
            reader.default_interpolation(),
            reader.default_fill(),
        )

    # ----------------------------------------------------------------------------------------
    # Overlays

    def overlay(
        self,
        map_reader: ImageReader,
        *,
        kind: str | None = None,
        colours: Any = None,
        alpha: float = 0.5,
        channel: int | None = None,
    ) -> DeepZoomOverlay:
        """Return RGBA PNG Deep Zoom tiles of ``map_reader`` on this slide's grid.

        See :class:`DeepZoomOverlay` for the parameters; the tile size and overlap are this
        tile source's.
        """
        return DeepZoomOverlay(
            self._reader,
            map_reader,
            tile_size=self._tile_size,
            overlap=self._overlap,
            kind=kind,
            colours=colours,
            alpha=alpha,
            channel=channel,
        )

    # ----------------------------------------------------------------------------------------
    # Helpers

    def _downsample(self, level: int) -> float:
        return float(2 ** (len(self._dimensions) - 1 - level))

    def _check_level(self, level: object) -> int:
        if (
            isinstance(level, bool)
            or not isinstance(level, (int, np.integer))
            or not 0 <= level < len(self._dimensions)
        ):
            raise DeepZoomError(
                self._path,
                f"Deep Zoom level {level!r} does not exist; expected an integer from 0 to "
                f"{len(self._dimensions) - 1}",
                level=level,
            )
        return int(level)

    def _check_tile(self, level: object, col: object, row: object) -> tuple[int, int, int]:
        index = self._check_level(level)
        cols, rows = self._tiles[index]
        for name, value, count in (("col", col, cols), ("row", row, rows)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not 0 <= value < count
            ):
                raise DeepZoomError(
                    self._path,
                    f"tile {name} {value!r} does not exist in Deep Zoom level {index}; expected "
                    f"an integer from 0 to {count - 1} ({cols} x {rows} tiles)",
                    level=index,
                    address=(col, row),
                )
        return index, int(col), int(row)  # type: ignore[call-overload]

    def __repr__(self) -> str:
        width, height = self._dimensions[-1]
        return (
            f"{type(self).__name__}({self._path!r}, {width}x{height}, {self.level_count} levels,"
            f" tile_size={self._tile_size}, overlap={self._overlap}, format={self._format!r})"
        )


# --------------------------------------------------------------------------------------------
# Overlays of maps


def label_colours(
    colours: Mapping[int, Any] | Sequence[Any] | None = None, size: int = 256
) -> np.ndarray:
    """Return the RGBA look-up table that colours a label map, ``(size, 4)`` uint8.

    The default table makes label 0 (background) and 255 (the ignore value) transparent and
    colours 1 red, 2 green, 3 blue, 4 yellow, 5 cyan, 6 magenta, 7 orange, 8 purple and every
    further label with a hue of its own (steps of the golden ratio around the colour wheel),
    all opaque.

    Parameters
    ----------
    colours
        Changes to the default table: ``{label: colour}``, or a sequence of colours for labels
        0, 1, 2, ... A colour is an (r, g, b) or (r, g, b, a) tuple of 0-255 integers, or
        ``None`` for transparent.
    size
        Number of entries (labels 0 to size - 1).
    """
    hues = ((np.arange(size) - 9) * 0.618033988749895 + 0.05) % 1.0
    hsv = np.stack([hues * 360, np.full(size, 0.85), np.full(size, 0.95)], axis=-1)
    rgb = cv2.cvtColor(hsv.astype(np.float32)[np.newaxis], cv2.COLOR_HSV2RGB)[0]
    table = np.empty((size, 4), dtype=np.uint8)
    table[:, :3] = np.clip(np.rint(rgb * 255), 0, 255)
    table[:, 3] = 255
    for label, fixed in _FIXED_LABEL_COLOURS.items():
        if label < size:
            table[label] = (*fixed, 255)
    table[0] = 0
    if size > 255:
        table[255] = 0
    if colours is None:
        return table
    items = colours.items() if isinstance(colours, Mapping) else enumerate(colours)
    for label, colour in items:
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise DeepZoomError(None, f"colours: labels must be integers, got {label!r}")
        if not 0 <= label < size:
            raise DeepZoomError(None, f"colours: label {label} is outside 0 to {size - 1}")
        table[label] = _colour(colour, f"colours[{label}]")
    return table


def _colour(colour: Any, name: str) -> tuple[int, int, int, int]:
    if colour is None:
        return (0, 0, 0, 0)
    try:
        values = [int(v) for v in colour]
    except (TypeError, ValueError):
        values = []
    if len(values) not in (3, 4) or not all(0 <= v <= 255 for v in values):
        raise DeepZoomError(
            None, f"{name}: expected an (r, g, b) or (r, g, b, a) colour of 0-255, got {colour!r}"
        )
    return (values[0], values[1], values[2], values[3] if len(values) == 4 else 255)


def probability_colours(colours: Any = None) -> np.ndarray:
    """Return the RGBA ramp that colours a probability map, ``(256, 4)`` uint8.

    Entry ``i`` colours probability ``i / 255``.

    Parameters
    ----------
    colours
        ``None``: transparent to red (red with an opacity equal to the probability). An
        (r, g, b) or (r, g, b, a) colour: transparent to that colour. An ``(n, 3)`` or
        ``(n, 4)`` array of 0-255 values (n >= 2, e.g. a matplotlib colormap sampled and scaled
        to 0-255): interpolated to 256 entries; an ``(n, 3)`` table gets opacity rising from 0
        to 255.
    """
    ramp = np.arange(256, dtype=np.float64)
    if colours is None:
        colours = (255, 0, 0)
    array = np.asarray(colours, dtype=np.float64) if not isinstance(colours, str) else None
    if array is not None and array.ndim == 1:
        r, g, b, a = _colour(colours, "colours")
        table = np.empty((256, 4))
        table[:, :3] = (r, g, b)
        table[:, 3] = ramp * a / 255
        return np.rint(table).astype(np.uint8)
    if (
        array is None
        or array.ndim != 2
        or array.shape[0] < 2
        or array.shape[1] not in (3, 4)
        or not np.all((array >= 0) & (array <= 255))
    ):
        raise DeepZoomError(
            None,
            "colours: expected None, an (r, g, b[, a]) colour or an (n, 3 | 4) table of 0-255 "
            f"values for a probability map, got {colours!r}",
        )
    positions = np.linspace(0, 255, array.shape[0])
    table = np.empty((256, 4))
    for k in range(array.shape[1]):
        table[:, k] = np.interp(ramp, positions, array[:, k])
    if array.shape[1] == 3:
        table[:, 3] = ramp
    return np.rint(table).astype(np.uint8)


class DeepZoomOverlay(DeepZoom):
    """RGBA PNG Deep Zoom tiles of an output map, on the Deep Zoom grid of a slide.

    The overlay has the slide's levels, dimensions and tiles, so a viewer (OpenSeadragon
    ``addTiledImage`` with the same position and width) lays it exactly over the slide.

    Parameters
    ----------
    slide
        The slide whose grid the overlay follows (only its shape and spacing are used).
    map_reader
        The map: a label map (integer, 1 channel) or a probability map (float in [0, 1], or an
        integer type scaled from 0 to its maximum, e.g. uint8 0-255), at any spacing.
    tile_size, overlap
        As for :class:`DeepZoom`; use the slide's tile source's.
    kind
        ``"labels"`` (colour each value from a table; nearest-neighbour resampling, no value
        is invented) or ``"probability"`` (colour ramp; area averaging). ``None``: labels for
        single-channel integer maps, probability for float maps.
    colours
        For labels, changes to the default table of :func:`label_colours` (``{label: colour}``);
        for probabilities, the ramp of :func:`probability_colours`.
    alpha
        Opacity, 0 to 1, by which the table's opacity is multiplied.
    channel
        The channel of a multi-channel probability map to show (required when it has more
        than one).

    Raises
    ------
    DeepZoomError
        A parameter is invalid or does not fit the map.

    Notes
    -----
    Registration is physical: slide level-0 pixel (r, c) lies on map level-0 pixel
    ``(r * s / m, c * s / m)``, with ``s`` and ``m`` the level-0 spacings (µm/px) of the
    slide and the map; when either file states no spacing, the ratio of the level-0 shapes is
    used along each axis. Every overlay pixel averages (or, for labels, samples at its centre)
    the map area it covers, read from the coarsest map level fine enough; pixels beyond the
    map are transparent.
    """

    def __init__(
        self,
        slide: ImageReader,
        map_reader: ImageReader,
        *,
        tile_size: int = 254,
        overlap: int = 1,
        kind: str | None = None,
        colours: Any = None,
        alpha: float = 0.5,
        channel: int | None = None,
    ) -> None:
        self._map = map_reader
        super().__init__(slide, tile_size=tile_size, overlap=overlap, format="png")
        self._path = getattr(map_reader, "path", None)
        integer = bool(np.issubdtype(map_reader.dtype, np.integer))
        if kind is None:
            kind = "labels" if integer and map_reader.channels == 1 else "probability"
        if kind not in KINDS:
            raise DeepZoomError(self._path, f"kind must be one of {KINDS} or None, got {kind!r}")
        self._kind = kind
        try:
            alpha_value = float(alpha)
        except (TypeError, ValueError):
            alpha_value = math.nan
        if not 0 <= alpha_value <= 1:
            raise DeepZoomError(self._path, f"alpha must be a number from 0 to 1, got {alpha!r}")
        self._alpha = alpha_value
        if kind == "labels":
            if map_reader.channels != 1 or not integer:
                raise DeepZoomError(
                    self._path,
                    f"a label map must have 1 channel of an integer type, got "
                    f"{map_reader.channels} x {map_reader.dtype}; use kind='probability'",
                )
            if channel not in (None, 0):
                raise DeepZoomError(self._path, f"a label map has 1 channel, got {channel=}")
            size = 256 if map_reader.dtype.itemsize == 1 else 65536
            if isinstance(colours, Mapping) and colours:
                size = max(size, max(int(k) for k in colours) + 1)
            self._table = label_colours(colours, size)
            self._channel = 0
        else:
            if channel is None:
                if map_reader.channels != 1:
                    raise DeepZoomError(
                        self._path,
                        f"the probability map has {map_reader.channels} channels; choose one "
                        "with channel=",
                    )
                channel = 0
            self._channel = _check_int(self._path, "channel", channel, 0, map_reader.channels - 1)
            self._table = probability_colours(colours)
        if self._alpha != 1:
            table = self._table.astype(np.float64)
            table[:, 3] *= self._alpha
            self._table = np.rint(table).astype(np.uint8)
        self._map_levels = _reader_levels(map_reader)
        self._scale = self._registration(slide, map_reader)

    def _check_source(self) -> None:  # the slide is only the grid; the map is checked above
        return

    @staticmethod
    def _registration(slide: ImageReader, map_reader: ImageReader) -> tuple[float, float]:
        """Map level-0 pixels per slide level-0 pixel, (rows, cols)."""
        (slide_rows, slide_cols), (map_rows, map_cols) = slide.shapes[0], map_reader.shapes[0]
        slide_spacing, map_spacing = slide.spacings[0], map_reader.spacings[0]
        if slide_spacing is None or map_spacing is None:
            logger.debug(
                "%s: no spacing on the slide or the map; registering by the level-0 shapes",
                map_reader.path,
            )
            return map_rows / slide_rows, map_cols / slide_cols
        scale = slide_spacing / map_spacing
        for name, slide_size, map_size in (
            ("height", slide_rows, map_rows),
            ("width", slide_cols, map_cols),
        ):
            expected = slide_size * scale
            if abs(map_size - expected) > max(2.0, 0.05 * expected):
                logger.warning(
                    "%s: the map's %s (%d px at %.4g µm/px) does not cover the slide's "
                    "(%d px at %.4g µm/px, i.e. %.1f map px); check the spacings",
                    map_reader.path,
                    name,
                    map_size,
                    map_spacing,
                    slide_size,
                    slide_spacing,
                    expected,
                )
        return scale, scale

    @property
    def map_reader(self) -> ImageReader:
        """The map shown."""
        return self._map

    @property
    def kind(self) -> str:
        """``"labels"`` or ``"probability"``."""
        return self._kind

    @property
    def colours(self) -> np.ndarray:
        """The RGBA look-up table in use (opacity already multiplied by ``alpha``)."""
        return self._table.copy()

    @property
    def map_scale(self) -> tuple[float, float]:
        """Map level-0 pixels per slide level-0 pixel along (rows, cols)."""
        return self._scale

    def source_level(self, level: int) -> int:
        """Return the index of the map's level that tiles of Deep Zoom ``level`` are read from."""
        downsample = self._downsample(self._check_level(level))
        return _best_level(self._map_levels, downsample * min(self._scale)).index

    def _tile_pixels(
        self, downsample: float, rows: tuple[int, int], cols: tuple[int, int]
    ) -> np.ndarray:
        scale = (downsample * self._scale[0], downsample * self._scale[1])
        interpolation = "nearest" if self._kind == "labels" else "area"
        values = _render(self._map, self._map_levels, scale, rows, cols, interpolation, 0)
        values = values[:, :, self._channel]
        if self._kind == "labels":
            labels = values.astype(np.int64)
            out = self._table[np.clip(labels, 0, len(self._table) - 1)]
            out[(labels < 0) | (labels >= len(self._table))] = 0  # beyond the table: transparent
            return out
        if np.issubdtype(values.dtype, np.integer):
            probability = values.astype(np.float32) / np.iinfo(values.dtype).max
        else:
            probability = np.nan_to_num(values.astype(np.float32), nan=0.0)
        index = np.rint(np.clip(probability, 0, 1) * 255).astype(np.intp)
        return self._table[index]

    def __repr__(self) -> str:
        return (
            f"DeepZoomOverlay({self._path!r} over {self._reader.path!r}, kind={self._kind!r}, "
            f"{self.level_count} levels, tile_size={self._tile_size}, overlap={self._overlap})"
        )


__all__ = [
    "DEEPZOOM_NAMESPACE",
    "FORMATS",
    "KINDS",
    "LEVEL_TOLERANCE",
    "MEDIA_TYPES",
    "DeepZoom",
    "DeepZoomError",
    "DeepZoomOverlay",
    "deepzoom_dimensions",
    "label_colours",
    "probability_colours",
]
