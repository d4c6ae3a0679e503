"""digipath's own reader of tiled TIFF files (SVS, OME-TIFF, generic pyramidal TIFF).

tifffile parses the file structure once; after that, a region is read by computing the tiles it
touches, reading each tile's bytes with ``os.pread`` (no shared file position, so any number of
threads can read at once), decoding them with imagecodecs in the shared decode pool and copying
each decoded tile straight into its place in the output array. Nothing else of the level is
touched.

Supported: tiles or strips; JPEG (with shared JPEGTables, as in SVS), JPEG 2000 (including
Aperio 33003/33005), LZW, Deflate, Zstandard, WebP, PackBits and uncompressed data (any
compression that tifffile's imagecodecs bindings decode); 1 to 4 samples per pixel, contiguous
or planar; uint8, uint16, uint32, int and float32 samples; either byte order; classic and
BigTIFF. Pyramids are taken from tifffile's series (SVS levels, OME SubIFDs, generic reduced
resolution pages).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import struct
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable

import imagecodecs
import numpy as np
import tifffile

from digipath.errors import (
    CorruptImageError,
    ImageClosedError,
    NotAnImageError,
    UnsupportedCompressionError,
    UnsupportedImageError,
)
from digipath.io.backends.base import Backend, ImageMetadata, Level
from digipath.io.spacing import spacing_from_resolution
from digipath.io.threads import run_parallel

try:  # optional C extension: decode only the part of a JPEG tile a region needs
    from digipath.io._jpegregion import decode_region as _decode_region
except ImportError:  # pragma: no cover - built where libjpeg-turbo headers are installed
    _decode_region = None

REGION_DECODING = _decode_region is not None
"""Whether JPEG tiles are decoded by region (the ``_jpegregion`` extension was built)."""

logger = logging.getLogger(__name__)

_COMPRESSION_NAMES = {
    1: "none",
    5: "lzw",
    7: "jpeg",
    8: "deflate",
    32773: "packbits",
    32946: "deflate",
    33003: "jpeg2000",
    33004: "jpeg2000",
    33005: "jpeg2000",
    34712: "jpeg2000",
    50000: "zstd",
    50001: "webp",
    34925: "lzma",
    22610: "jpegxl",
    50002: "jpegxl",
}

_OME_UNITS_IN_MICROMETRES = {
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "nm": 1e-3,
    "Å": 1e-4,
    "pm": 1e-6,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
"""The first four bytes of classic and BigTIFF files, little- and big-endian."""


def is_tiff(path: str) -> bool:
    """Return whether the file at ``path`` starts with a TIFF or BigTIFF header."""
    with open(path, "rb") as handle:
        return handle.read(4) in TIFF_MAGICS


def _mean_spacing(path: str, spacing_y: float | None, spacing_x: float | None) -> float | None:
    """Combine the two axes' spacings (µm/px), warning when the pixels are not square."""
    if spacing_y is None or spacing_x is None:
        return spacing_x if spacing_y is None else spacing_y
    if abs(spacing_y - spacing_x) > 0.01 * max(spacing_y, spacing_x):
        logger.warning(
            "%s: pixels are not square (%.6g µm/px down, %.6g µm/px across); using the mean",
            path,
            spacing_y,
            spacing_x,
        )
    return (spacing_y + spacing_x) / 2


def openslide_tiff_format(tiff: tifffile.TiffFile) -> str | None:
    """Name the vendor TIFF variant OpenSlide should read instead of this backend, if any.

    NDPI (strips with restart markers, 64-bit offsets), Philips TIFF (levels described in XML),
    Leica SCN and Ventana BIF lay out their pyramids in ways only OpenSlide interprets fully.
    """
    for flag, name in (
        ("ndpi", "Hamamatsu NDPI"),
        ("philips", "Philips TIFF"),
        ("scn", "Leica SCN"),
        ("bif", "Ventana BIF"),
    ):
        if getattr(tiff, f"is_{flag}", False):
            return name
    return None


class _TiffLevel:
    """Everything needed to read the segments (tiles or strips) of one level."""

    __slots__ = (
        "counts",
        "decode",
        "decode_part",
        "grid",
        "index",
        "offsets",
        "planes",
        "samples",
        "shape",
        "tile",
    )

    def __init__(self, index: int, page: tifffile.TiffPage, path: str) -> None:
        self.index = index
        self.shape = (int(page.imagelength), int(page.imagewidth))
        if page.is_tiled:
            self.tile = (int(page.tilelength), int(page.tilewidth))
        else:
            rows_per_strip = int(page.rowsperstrip or self.shape[0])
            self.tile = (min(rows_per_strip, self.shape[0]), self.shape[1])
        if page.imagedepth > 1:
            raise UnsupportedImageError(path, f"level {index} is a volume (image depth > 1)")
        self.grid = (
            math.ceil(self.shape[0] / self.tile[0]),
            math.ceil(self.shape[1] / self.tile[1]),
        )
        self.samples = int(page.samplesperpixel)
        self.planes = self.samples if page.planarconfig == 2 else 1
        self.offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        self.counts = np.asarray(page.databytecounts, dtype=np.int64)
        expected = self.grid[0] * self.grid[1] * self.planes
        if self.offsets.size != expected or self.counts.size != expected:
            raise CorruptImageError(
                path,
                f"the directory lists {self.offsets.size} data segments, expected {expected} "
                f"for a {self.shape[0]}x{self.shape[1]} image in {self.tile[0]}x{self.tile[1]} "
                "segments",
                level=index,
            )
        self.decode = self._decoder(page, path)
        self.decode_part = self._part_decoder(page)

    def _part_decoder(
        self, page: tifffile.TiffPage
    ) -> Callable[[bytes, int, int, int, int], np.ndarray] | None:
        """Return a function decoding rows [r0, r1) x cols [c0, c1) of one JPEG tile, if any.

        Only for 8-bit JPEG tiles of 1 or 3 interleaved samples (RGB, YCbCr or gray), and only
        when the ``_jpegregion`` extension is built; the result equals the same part of a full
        decode exactly.
        """
        if (
            _decode_region is None
            or page.compression != 7
            or page.bitspersample != 8
            or self.planes != 1
            or self.samples not in (1, 3)
            or page.extrasamples
            or not page.is_tiled
            or (self.samples == 3 and page.photometric not in (2, 6))
        ):
            return None
        colorspace, _ = tifffile.tifffile.jpeg_decode_colorspace(
            page.photometric, page.planarconfig, page.extrasamples, page.is_jfif
        )
        rgb_stream = 2 if colorspace == 2 else 0
        tables = page.jpegtables
        samples = self.samples
        tile_cols = self.tile[1]
        decode = _decode_region

        def decode_part(data: bytes, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
            buffer = np.empty((r1 - r0, tile_cols, samples), dtype=np.uint8)
            first, _ = decode(data, tables, r0, r1, c0, c1, rgb_stream, buffer)
            return buffer[:, c0 - first : c1 - first]

        return decode_part

    def _decoder(self, page: tifffile.TiffPage, path: str) -> Callable[[bytes, int], np.ndarray]:
        """Return a function decoding one segment's bytes into a (rows, cols, samples) array."""
        try:
            tifffile.TIFF.DECOMPRESSORS[page.compression]
        except KeyError:
            name = getattr(page.compression, "name", page.compression)
            raise UnsupportedCompressionError(path, f"{name} ({int(page.compression)})") from None
        if page.compression == 7 and page.bitspersample == 8 and self.planes == 1:
            # The hot path: libjpeg-turbo directly, with the shared tables of SVS files.
            colorspace, outcolorspace = tifffile.tifffile.jpeg_decode_colorspace(
                page.photometric, page.planarconfig, page.extrasamples, page.is_jfif
            )
            tables = page.jpegtables
            samples = self.samples
            jpeg8_decode = imagecodecs.jpeg8_decode

            def decode_jpeg(data: bytes, index: int) -> np.ndarray:
                array = jpeg8_decode(
                    data, tables=tables, colorspace=colorspace, outcolorspace=outcolorspace
                )
                if array.ndim == 2:
                    array = array[:, :, np.newaxis]
                if array.shape[2] != samples:
                    raise ValueError(
                        f"decoded {array.shape[2]} samples per pixel, expected {samples}"
                    )
                return array

            return decode_jpeg

        generic = page.decode
        tables = page.jpegtables

        def decode_any(data: bytes, index: int) -> np.ndarray:
            array, _, shape = generic(data, index, jpegtables=tables)
            if array is None:
                raise ValueError("the segment could not be decoded")
            # (depth, rows, cols, samples); strips at the bottom may be shorter.
            return np.asarray(array).reshape(shape[-3:])

        return decode_any


class TiffBackend(Backend):
    """Reads tiled (or stripped) TIFF files with tifffile and imagecodecs.

    Parameters
    ----------
    path
        The TIFF file.

    Raises
    ------
    NotAnImageError
        The file is no TIFF.
    UnsupportedImageError
        The TIFF holds something else than a 2-D image of 1 to 4 samples per pixel.
    UnsupportedCompressionError
        A level uses a compression no installed codec decodes.
    CorruptImageError
        The file structure cannot be parsed.
    """

    name = "tiff"

    def __init__(self, path: str) -> None:
        self.path = path
        self._closed = False
        self._lock = threading.Lock()
        try:
            self._tiff = tifffile.TiffFile(path)
        except tifffile.TiffFileError as error:
            raise NotAnImageError(path, f"not a readable TIFF file ({error})") from None
        except (OSError, ValueError, struct.error) as error:
            raise CorruptImageError(path, f"the TIFF structure is damaged ({error})") from None
        try:
            self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._size = os.fstat(self._fd).st_size
            self._setup()
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------------------
    # Opening

    def _setup(self) -> None:
        tiff = self._tiff
        path = self.path
        try:
            series = tiff.series
        except Exception as error:  # tifffile raises many kinds on damaged files
            raise CorruptImageError(path, f"the TIFF structure is damaged ({error})") from None
        if not series or not len(tiff.pages):
            self._check_first_directory()
            raise NotAnImageError(path, "the TIFF file contains no image")
        vendor_format = openslide_tiff_format(tiff)
        if vendor_format is not None:
            raise UnsupportedImageError(
                path,
                f"{vendor_format} files are read through the OpenSlide backend "
                "(backend='openslide' or 'auto')",
            )
        main = series[0]
        pages = self._level_pages(main)
        first = pages[0]
        if first.dtype is None:
            raise UnsupportedImageError(
                path,
                f"unsupported sample format ({first.sampleformat}, {first.bitspersample} bits)",
            )
        if not 1 <= first.samplesperpixel <= 4:
            raise UnsupportedImageError(
                path, f"{first.samplesperpixel} samples per pixel; digipath reads 1 to 4"
            )
        self._pages = pages
        self._levels = [_TiffLevel(index, page, path) for index, page in enumerate(pages)]
        for level, page in zip(self._levels, pages, strict=True):
            if page.dtype != first.dtype or page.samplesperpixel != first.samplesperpixel:
                raise UnsupportedImageError(
                    path,
                    f"level {level.index} has {page.samplesperpixel} samples of {page.dtype}, "
                    f"level 0 has {first.samplesperpixel} of {first.dtype}",
                )
        self._dtype = np.dtype(first.dtype)
        self._channels = int(first.samplesperpixel)

        properties = self._properties(first)
        vendor = "generic-tiff"
        base_spacing: float | None = None
        if tiff.is_svs:
            vendor = "aperio"
            base_spacing = self._svs_spacing(first, properties)
        elif tiff.is_ome:
            vendor = "ome-tiff"
            base_spacing = self._ome_spacing(properties)
        rows0, cols0 = self._levels[0].shape
        self.levels = []
        spacings: list[float | None] = []
        for level, page in zip(self._levels, pages, strict=True):
            rows, cols = level.shape
            downsampling = (rows0 / rows + cols0 / cols) / 2
            if base_spacing is not None:
                spacing = base_spacing * downsampling
            else:
                spacing = self._resolution_spacing(page)
            spacings.append(spacing)
            self.levels.append(Level((rows, cols), downsampling, spacing, level.tile))
        if spacings[0] is not None and any(s is None for s in spacings):
            # Levels without their own resolution tags take level 0's, scaled.
            self.levels = [
                Level(
                    lv.shape,
                    lv.downsampling,
                    lv.spacing or spacings[0] * lv.downsampling,
                    lv.tile_shape,
                )
                for lv in self.levels
            ]
        elif spacings[0] is None:
            self.levels = [
                Level(lv.shape, lv.downsampling, None, lv.tile_shape) for lv in self.levels
            ]
        self.metadata = ImageMetadata(
            vendor=vendor,
            compression=_COMPRESSION_NAMES.get(
                int(first.compression), str(getattr(first.compression, "name", "unknown")).lower()
            ),
            channels=self._channels,
            dtype=self._dtype,
            spacing=self.levels[0].spacing,
            properties=properties,
        )
        self._associated = self._find_associated(series)
        ends = [int((lv.offsets + lv.counts).max()) for lv in self._levels if lv.offsets.size]
        if ends and max(ends) > self._size:
            logger.warning(
                "%s: the file is truncated (tile data reaches offset %d, the file ends at %d); "
                "regions touching the missing tiles will raise CorruptImageError",
                path,
                max(ends),
                self._size,
            )

    def _check_first_directory(self) -> None:
        """Raise CorruptImageError when the first directory lies past the end of the file."""
        header = os.pread(self._fd, 16, 0)
        order = "<" if header[:2] == b"II" else ">"
        if len(header) >= 8 and header[2:4] in (b"*\x00", b"\x00*"):
            (offset,) = struct.unpack(order + "I", header[4:8])
        elif len(header) >= 16:
            (offset,) = struct.unpack(order + "Q", header[8:16])
        else:
            raise CorruptImageError(self.path, "truncated: the file ends inside the TIFF header")
        if offset >= self._size:
            raise CorruptImageError(
                self.path,
                f"truncated: the first image directory is at offset {offset}, the file ends at "
                f"{self._size}",
            )

    def _level_pages(self, main: tifffile.TiffPageSeries) -> list[tifffile.TiffPage]:
        """The pages of the main series' levels, largest first."""
        pages: list[tifffile.TiffPage] = []
        for level in main.levels:
            level_pages = [p for p in level.pages if p is not None]
            if len(level_pages) != 1:
                raise UnsupportedImageError(
                    self.path,
                    f"the image is stored in {len(level_pages)} planes per level (axes "
                    f"{main.axes}, shape {main.shape}); digipath reads 2-D images with their "
                    "channels interleaved or planar in one page",
                )
            page = level_pages[0]
            if not isinstance(page, tifffile.TiffPage):
                page = page.aspage()
            pages.append(page)
        # Keep a strictly decreasing pyramid (some files repeat or interleave small images).
        pyramid = [pages[0]]
        for page in pages[1:]:
            last = pyramid[-1]
            if page.imagelength < last.imagelength and page.imagewidth < last.imagewidth:
                pyramid.append(page)
        return pyramid

    def _properties(self, page: tifffile.TiffPage) -> dict[str, str]:
        properties: dict[str, str] = {}
        for code, key in (
            (270, "tiff.ImageDescription"),
            (271, "tiff.Make"),
            (272, "tiff.Model"),
            (305, "tiff.Software"),
            (306, "tiff.DateTime"),
            (315, "tiff.Artist"),
            (316, "tiff.HostComputer"),
            (33432, "tiff.Copyright"),
        ):
            value = page.tags.valueof(code)
            if value is not None:
                properties[key] = str(value)
        for code, key in ((282, "tiff.XResolution"), (283, "tiff.YResolution")):
            value = page.tags.valueof(code)
            if value is not None:
                if isinstance(value, tuple) and len(value) == 2 and value[1]:
                    value = value[0] / value[1]
                properties[key] = repr(float(value))
        unit = page.tags.valueof(296)
        if unit is not None:
            properties["tiff.ResolutionUnit"] = {1: "none", 2: "inch", 3: "centimeter"}.get(
                int(unit), str(int(unit))
            )
        return properties

    def _svs_spacing(self, page: tifffile.TiffPage, properties: dict[str, str]) -> float | None:
        try:
            metadata = tifffile.tifffile.svs_description_metadata(page.description)
        except ValueError:
            return self._resolution_spacing(page)
        for key, value in metadata.items():
            properties[f"aperio.{key}"] = str(value)
        mpp = metadata.get("MPP")
        try:
            value = float(mpp) if mpp is not None else None
        except (TypeError, ValueError):
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            return self._resolution_spacing(page)
        return value

    def _ome_spacing(self, properties: dict[str, str]) -> float | None:
        xml = self._tiff.ome_metadata
        if not xml:
            return None
        try:
            root = ElementTree.fromstring(xml)
        except ElementTree.ParseError as error:
            logger.warning("%s: unreadable OME-XML (%s); ignoring its spacing", self.path, error)
            return self._resolution_spacing(self._pages[0])
        pixels = next(
            (e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"), None
        )
        if pixels is None:
            return self._resolution_spacing(self._pages[0])
        values = {}
        for axis in ("X", "Y"):
            size = pixels.get(f"PhysicalSize{axis}")
            unit = pixels.get(f"PhysicalSize{axis}Unit", "µm")
            if size is None:
                continue
            properties[f"ome.PhysicalSize{axis}"] = size
            properties[f"ome.PhysicalSize{axis}Unit"] = unit
            factor = _OME_UNITS_IN_MICROMETRES.get(unit)
            try:
                value = float(size)
            except ValueError:
                continue
            if factor is None or not math.isfinite(value) or value <= 0:
                logger.warning(
                    "%s: OME PhysicalSize%s unit %r not understood", self.path, axis, unit
                )
                continue
            values[axis] = value * factor
        for key in ("Creator",):
            if root.get(key):
                properties[f"ome.{key}"] = root.get(key)  # type: ignore[assignment]
        if not values:
            return self._resolution_spacing(self._pages[0])
        return _mean_spacing(self.path, values.get("Y"), values.get("X"))

    def _resolution_spacing(self, page: tifffile.TiffPage) -> float | None:
        unit = page.tags.valueof(296, 2)  # the TIFF default unit is the inch
        spacing_xy = []
        for code in (283, 282):  # YResolution, XResolution
            value = page.tags.valueof(code)
            if isinstance(value, tuple):
                value = value[0] / value[1] if len(value) == 2 and value[1] else None
            spacing_xy.append(
                spacing_from_resolution(float(value), int(unit)) if value is not None else None
            )
        return _mean_spacing(self.path, spacing_xy[0], spacing_xy[1])

    def _find_associated(self, series: list[tifffile.TiffPageSeries]) -> dict[str, object]:
        found: dict[str, object] = {}
        if not self._tiff.is_svs:
            return found
        for item in series[1:]:
            name = (item.name or "").strip().lower()
            if name in ("thumbnail", "label", "macro") and name not in found:
                found[name] = item
        return found

    # ----------------------------------------------------------------------------------------
    # Reading

    @property
    def associated_names(self) -> tuple[str, ...]:
        return tuple(self._associated)

    def associated(self, name: str) -> np.ndarray:
        """Return the associated image ``name`` (``label``, ``macro``, ``thumbnail``)."""
        if name not in self._associated:
            available = ", ".join(self._associated) or "none"
            raise KeyError(f"{self.path}: no associated image {name!r} (available: {available})")
        self._check_open()
        item = self._associated[name]
        with self._lock:  # tifffile's file handle has one position
            try:
                array = item.asarray()  # type: ignore[attr-defined]
            except Exception as error:
                raise CorruptImageError(
                    self.path, f"the associated image {name!r} cannot be decoded ({error})"
                ) from None
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[:, :, np.newaxis]
        return array

    def read_region(self, level: int, row: int, col: int, out: np.ndarray, fill: float) -> None:
        self._check_open()
        info = self._levels[level]
        height, width = out.shape[:2]
        tile_rows, tile_cols = info.tile
        first_row, last_row = row // tile_rows, (row + height - 1) // tile_rows
        first_col, last_col = col // tile_cols, (col + width - 1) // tile_cols
        tiles = [
            (tr, tc)
            for tr in range(first_row, last_row + 1)
            for tc in range(first_col, last_col + 1)
        ]

        def copy_tile(tile_row: int, tile_col: int) -> None:
            top, left = tile_row * tile_rows, tile_col * tile_cols
            r0, r1 = max(row, top), min(row + height, top + tile_rows, info.shape[0])
            c0, c1 = max(col, left), min(col + width, left + tile_cols, info.shape[1])
            target = out[r0 - row : r1 - row, c0 - col : c1 - col]
            partial = (r1 - r0, c1 - c0) != (tile_rows, tile_cols)
            if partial and info.decode_part is not None:
                data = self._part(
                    info, tile_row, tile_col, r0 - top, r1 - top, c0 - left, c1 - left
                )
                if data is None:
                    target[...] = fill
                else:
                    target[...] = data
                return
            data = self._tile(info, tile_row, tile_col)
            if data is None:
                target[...] = fill
                return
            source = data[r0 - top : r1 - top, c0 - left : c1 - left]
            if source.shape[:2] != target.shape[:2]:
                raise CorruptImageError(
                    self.path,
                    f"decoded a {data.shape[0]}x{data.shape[1]} segment, expected "
                    f"{tile_rows}x{tile_cols}",
                    level=level,
                    tile=(tile_row, tile_col),
                )
            target[...] = source

        if len(tiles) == 1:
            copy_tile(*tiles[0])
        else:
            run_parallel([functools.partial(copy_tile, *tile) for tile in tiles])

    def _tile(self, info: _TiffLevel, tile_row: int, tile_col: int) -> np.ndarray | None:
        """Decode one tile (all its planes) as a (rows, cols, samples) array, or ``None``."""
        index = tile_row * info.grid[1] + tile_col
        count = info.grid[0] * info.grid[1]
        if info.planes == 1:
            return self._segment(info, index, (tile_row, tile_col))
        planes = [
            self._segment(info, p * count + index, (tile_row, tile_col)) for p in range(info.planes)
        ]
        if any(plane is None for plane in planes):
            return None
        return np.concatenate(planes, axis=2)  # type: ignore[arg-type]

    def _part(
        self, info: _TiffLevel, tile_row: int, tile_col: int, r0: int, r1: int, c0: int, c1: int
    ) -> np.ndarray | None:
        """Decode rows [r0, r1) x cols [c0, c1) of one JPEG tile, or ``None`` if sparse."""
        tile = (tile_row, tile_col)
        data = self._bytes(info, tile_row * info.grid[1] + tile_col, tile)
        if data is None:
            return None
        try:
            return info.decode_part(data, r0, r1, c0, c1)  # type: ignore[misc]
        except Exception as error:
            raise CorruptImageError(
                self.path, f"cannot decode tile data ({error})", level=info.index, tile=tile
            ) from None

    def _bytes(self, info: _TiffLevel, index: int, tile: tuple[int, int]) -> bytes | None:
        """Read the stored bytes of one segment (``None`` for a sparse one)."""
        offset = int(info.offsets[index])
        count = int(info.counts[index])
        if count == 0 or offset == 0:
            return None  # sparse: never written
        try:
            data = os.pread(self._fd, count, offset)
        except OSError as error:
            if self._closed:
                raise ImageClosedError(self.path) from None
            raise CorruptImageError(
                self.path, f"cannot read tile data ({error})", level=info.index, tile=tile
            ) from None
        if len(data) != count:
            raise CorruptImageError(
                self.path,
                f"tile data truncated: {count} bytes expected at offset {offset}, the file "
                f"ends at {self._size}",
                level=info.index,
                tile=tile,
            )
        return data

    def _segment(self, info: _TiffLevel, index: int, tile: tuple[int, int]) -> np.ndarray | None:
        data = self._bytes(info, index, tile)
        if data is None:
            return None
        try:
            array = info.decode(data, index)
        except Exception as error:
            raise CorruptImageError(
                self.path, f"cannot decode tile data ({error})", level=info.index, tile=tile
            ) from None
        return array

    def _check_open(self) -> None:
        if self._closed:
            raise ImageClosedError(self.path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
            self._fd = -1
        self._tiff.close()
