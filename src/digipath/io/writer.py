"""Streaming writer of tiled pyramidal TIFF files.

:class:`ImageWriter` takes the tiles of the full-resolution image (level 0) one at a time, in
any order, and writes a tiled, pyramidal, little-endian TIFF (classic or BigTIFF) that
OpenSlide, tifffile, QuPath and digipath read. The pyramid is built while the tiles arrive:
every tile is downsampled 2x as soon as it is encoded, and the quarter is kept until the 2x2
block of siblings that makes up the next level's tile is complete; that tile is then encoded,
written and downsampled in turn. Written in row-major order, the writer therefore holds about
one row of tiles in memory, whatever the size of the image.

File layout
-----------
* bytes 0-15: the header, written last (classic TIFF when every offset fits in 32 bits,
  BigTIFF otherwise, or as forced by ``bigtiff``);
* the encoded tiles of every level, appended in the order they are finished; tiles never
  written, and tiles equal to the fill value everywhere, all point to one shared fill tile;
* one IFD per level at the end of the file, as consecutive top-level IFDs (level 0 has
  NewSubfileType 0, the other levels 1 = reduced resolution).

The file is written under a temporary name (``.{name}.{random}.tmp``) in the target folder and
renamed into place by :meth:`ImageWriter.close`.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from types import TracebackType
from typing import Any, NoReturn

import cv2
import imagecodecs
import numpy as np

from digipath.errors import ImageClosedError, ImageWriteError
from digipath.io import tiff_layout as tl
from digipath.io.threads import default_thread_count

logger = logging.getLogger(__name__)

_DTYPES = ("uint8", "uint16", "uint32", "float32")
_ANY_CHANNELS_DTYPES = ("uint8", "uint16", "float32")
_COMPRESSIONS = {
    "jpeg": tl.COMPRESSION_JPEG,
    "lzw": tl.COMPRESSION_LZW,
    "deflate": tl.COMPRESSION_ADOBE_DEFLATE,
    "none": tl.COMPRESSION_NONE,
}
_INTERPOLATIONS = ("mean", "nearest")
_DEFLATE_LEVEL = 6
_WIDER = {1: np.uint16, 2: np.uint32, 4: np.uint64}  # sums of four unsigned samples
_FILL = -1  # offset marker: the tile points at the shared fill tile
_UNSET = -2  # offset marker: the tile is not finished yet


def _version() -> str:
    try:
        return metadata.version("digipath")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


@dataclass
class _Pending:
    """A tile of level >= 1 whose 2x2 block of children is not complete yet."""

    expected: int
    received: int = 0
    buffer: np.ndarray | None = None  # allocated on the first child that is not all fill


@dataclass
class _Level:
    """Bookkeeping of one pyramid level."""

    shape: tuple[int, int]
    grid: tuple[int, int]  # (tile rows, tile cols)
    offsets: np.ndarray
    byte_counts: np.ndarray
    started: np.ndarray  # tile submitted (or finished as fill)
    pending: dict[tuple[int, int], _Pending] = field(default_factory=dict)


class _Done:
    """A finished 'future' for work run on the calling thread (``threads=1``)."""

    __slots__ = ("_function", "_result")

    def __init__(self, function: Callable[[], Any]) -> None:
        self._function: Callable[[], Any] | None = function
        self._result: Any = None

    def result(self) -> Any:
        if self._function is not None:
            self._result = self._function()
            self._function = None
        return self._result


@dataclass(frozen=True, eq=False)
class _TileCodec:
    """Encodes and downsamples tiles in the worker threads; holds no state of the writer.

    Attributes
    ----------
    dtype
        Stored data type.
    channels
        Samples per pixel.
    compression
        ``"jpeg"``, ``"lzw"``, ``"deflate"`` or ``"none"``.
    jpeg_quality
        JPEG quality, 1 to 100.
    interpolation
        ``"mean"`` or ``"nearest"``.
    fill
        The fill value as a 0-d array of ``dtype``.
    """

    dtype: np.dtype
    channels: int
    compression: str
    jpeg_quality: int
    interpolation: str
    fill: np.ndarray

    def process(
        self, data: np.ndarray, valid: tuple[int, int], downsample: bool
    ) -> tuple[bytes | None, np.ndarray | None]:
        """Encode a padded tile and downsample its valid part (in a worker thread).

        Returns ``(None, None)`` for a tile equal to the fill value everywhere.
        """
        if self.is_fill(data):
            return None, None
        encoded = self.encode(data)
        quarter = self.downsample(data[: valid[0], : valid[1]]) if downsample else None
        return encoded, quarter

    def is_fill(self, data: np.ndarray) -> bool:
        first = data.flat[0]
        if self.dtype.kind == "f" and np.isnan(self.fill):
            return bool(np.isnan(first)) and bool(np.isnan(data).all())
        return bool(first == self.fill) and bool((data == self.fill).all())

    def encode(self, data: np.ndarray) -> bytes:
        """Encode a (T, T, C) tile as the bytes of one TIFF tile."""
        if self.compression == "jpeg":
            if self.channels == 3:
                return imagecodecs.jpeg8_encode(
                    data,
                    level=self.jpeg_quality,
                    colorspace="rgb",
                    outcolorspace="ycbcr",
                    subsampling="420",
                )
            return imagecodecs.jpeg8_encode(data[:, :, 0], level=self.jpeg_quality)
        raw = data.astype(self.dtype.newbyteorder("<"), copy=False).tobytes()
        if self.compression == "lzw":
            return imagecodecs.lzw_encode(raw)
        if self.compression == "deflate":
            return imagecodecs.deflate_encode(raw, level=_DEFLATE_LEVEL)
        return raw

    def downsample(self, data: np.ndarray) -> np.ndarray:
        """Return the (ceil(rows/2), ceil(cols/2), C) 2x downsampling of ``data``."""
        if self.interpolation == "nearest":
            return np.ascontiguousarray(data[::2, ::2])
        rows, cols, channels = data.shape
        if rows % 2 or cols % 2:  # odd border: the mean of the pixels inside the image
            data = np.pad(data, ((0, rows % 2), (0, cols % 2), (0, 0)), mode="edge")
            rows, cols = data.shape[:2]
        half = (rows // 2, cols // 2, channels)
        kind = self.dtype
        if (kind == np.float32 and channels <= 512) or (
            kind in (np.uint8, np.uint16) and channels in (1, 3, 4)
        ):
            # OpenCV's 2x area resize is the exact 2x2 mean, rounded half up for integers.
            return cv2.resize(data, (half[1], half[0]), interpolation=cv2.INTER_AREA).reshape(half)
        wide = _WIDER[kind.itemsize] if kind.kind == "u" else np.float64
        total = data[0::2, 0::2].astype(wide)
        total += data[1::2, 0::2]
        total += data[0::2, 1::2]
        total += data[1::2, 1::2]
        if kind.kind == "u":
            total += 2
            total >>= 2
        else:
            total *= 0.25
        return total.astype(kind)


def _discard(file: Any, temporary: str, pool: ThreadPoolExecutor | None) -> None:
    """Finaliser of a writer dropped without close() or abort(): remove its temporary file."""
    logger.warning("ImageWriter for %s was never closed; discarding it", temporary)
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
    try:
        file.close()
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass


class ImageWriter:
    """Write a tiled pyramidal TIFF, tile by tile, with bounded memory.

    Parameters
    ----------
    path
        The output file (``.tif``). Its folder must exist; an existing file is replaced when
        the writer is closed.
    shape
        (rows, cols) of the full-resolution image (level 0) in pixels.
    spacing
        Pixel spacing of level 0 in µm/px, or ``None`` to write no resolution tags. Each
        level stores its own resolution: level-0 spacing times (level-0 size / level size)
        along each axis.
    dtype
        ``"uint8"``, ``"uint16"``, ``"uint32"``, ``"float32"``, or ``"bool"`` (stored as
        uint8 with values 0 and 1).
    channels
        Samples per pixel: 1 (masks, maps), 3 (RGB) or, for uint8, uint16 and float32, any
        number >= 1 (stored as MINISBLACK with extra samples).
    compression
        ``"jpeg"`` (uint8 with 1 or 3 channels only), ``"lzw"``, ``"deflate"`` or ``"none"``.
        ``None``: JPEG for uint8 RGB images, LZW otherwise.
    jpeg_quality
        JPEG quality, 1 to 100.
    tile_size
        Tile width and height in pixels, a multiple of 16, the same on every level.
    interpolation
        How each pyramid level is made from the one below: ``"mean"`` (2x2 block mean,
        rounded half up for integer types; for images and probability maps) or
        ``"nearest"`` (top-left pixel of each 2x2 block; for label masks). ``"linear"`` is
        accepted as a synonym of ``"mean"``. ``None``: nearest for 1-channel integer images,
        mean otherwise.
    min_level_size
        Levels are added while the rows or the cols of the last level exceed this many
        pixels; each level halves the one below (odd sizes rounded up).
    fill
        Value of pixels never written: tiles not written, and the padding of border tiles.
        Must be representable in ``dtype``.
    bigtiff
        ``None``: BigTIFF only when the file needs 64-bit offsets; ``True``: always;
        ``False``: never (a larger file raises :class:`~digipath.errors.ImageWriteError`).
    software
        Text of the TIFF Software tag (ASCII); ``None``: ``"digipath <version>"``.
    threads
        Threads that encode and downsample tiles; ``None``: the CPUs this process may use
        (``DIGIPATH_THREADS`` overrides). ``1`` does all work on the calling thread.

    Raises
    ------
    ImageWriteError
        When a parameter is invalid or the temporary file cannot be created.

    Notes
    -----
    Tiles may be written in any order; written in row-major order the writer holds about one
    row of tiles (plus two tiles per thread being encoded). The file is byte-identical for the
    same sequence of calls and the same ``threads``; the encoded bytes of every tile are the
    same whatever the order and the thread count.

    Examples
    --------
    Write a label mask predicted tile by tile (``predict`` returns a (512, 512) uint8 array,
    smaller at the right and bottom borders)::

        with ImageWriter("mask.tif", (rows, cols), spacing=0.5, dtype="uint8", channels=1) as w:
            for row in range(0, rows, 512):
                for col in range(0, cols, 512):
                    w.write(predict(row, col), row, col)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: tuple[int, int],
        *,
        spacing: float | None,
        dtype: str | np.dtype | type = "uint8",
        channels: int = 3,
        compression: str | None = None,
        jpeg_quality: int = 80,
        tile_size: int = 512,
        interpolation: str | None = None,
        min_level_size: int = 1024,
        fill: float = 0,
        bigtiff: bool | None = None,
        software: str | None = None,
        threads: int | None = None,
    ) -> None:
        self._path = os.path.abspath(os.fspath(path))
        self._closed = True  # until the temporary file exists
        self._shape = self._check_shape(shape)
        self._spacing = self._check_spacing(spacing)
        self._dtype, self._input_dtype = self._check_dtype(dtype)
        self._channels = self._check_channels(channels)
        self._compression = self._check_compression(compression)
        self._jpeg_quality = self._check_int("jpeg_quality", jpeg_quality, 1, 100)
        self._tile_size = self._check_tile_size(tile_size)
        self._interpolation = self._check_interpolation(interpolation)
        self._min_level_size = self._check_int("min_level_size", min_level_size, 1, None)
        self._fill = self._check_fill(fill)
        if bigtiff not in (None, True, False):
            self._fail("bigtiff", bigtiff, "None (automatic), True or False")
        self._bigtiff = bigtiff
        self._software = self._check_software(software)
        self._threads = (
            default_thread_count()
            if threads is None
            else self._check_int("threads", threads, 1, None)
        )

        self._codec = _TileCodec(
            dtype=self._dtype,
            channels=self._channels,
            compression=self._compression,
            jpeg_quality=self._jpeg_quality,
            interpolation=self._interpolation,
            fill=self._fill,
        )
        self._level_shapes = self._pyramid_shapes()
        self._levels = [self._make_level(shape) for shape in self._level_shapes]
        if self._spacing is not None:
            self._resolutions = [self._resolution(k) for k in range(len(self._level_shapes))]
        else:
            self._resolutions = None

        self._window = 0 if self._threads == 1 else 2 * self._threads
        self._queue: collections.deque[tuple[int, int, int, Any]] = collections.deque()
        self._position = tl.HEADER_SIZE
        self._lock = threading.Lock()  # guards write()/fill()/close() from several threads
        self._started = time.perf_counter()

        folder, name = os.path.split(self._path)
        if os.path.isdir(self._path):
            raise ImageWriteError(self._path, "the path is a folder; expected a file name")
        if not os.path.isdir(folder):
            raise ImageWriteError(self._path, f"the folder {folder!r} does not exist")
        self._temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            descriptor = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as error:
            raise ImageWriteError(
                self._path, f"cannot create the temporary file {self._temporary!r}: {error}"
            ) from error
        self._file = os.fdopen(descriptor, "wb", buffering=1 << 20)
        self._file.write(b"\0" * tl.HEADER_SIZE)
        self._pool = (
            ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="digipath-write")
            if self._threads > 1
            else None
        )
        self._finalizer = weakref.finalize(self, _discard, self._file, self._temporary, self._pool)
        self._closed = False
        logger.debug(
            "writing %s: levels %s, %s x %d, %s, tiles of %d px, %d thread(s)",
            self._path,
            self._level_shapes,
            self._dtype,
            self._channels,
            self._compression,
            self._tile_size,
            self._threads,
        )

    # ----------------------------------------------------------------------------------------
    # Properties

    @property
    def path(self) -> str:
        """The output file (absolute path); it exists only after :meth:`close`."""
        return self._path

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of level 0 in pixels."""
        return self._shape

    @property
    def spacing(self) -> float | None:
        """Pixel spacing of level 0 in µm/px, or ``None``."""
        return self._spacing

    @property
    def dtype(self) -> np.dtype:
        """The stored data type (uint8 for ``dtype="bool"``)."""
        return self._dtype

    @property
    def channels(self) -> int:
        """Samples per pixel."""
        return self._channels

    @property
    def compression(self) -> str:
        """``"jpeg"``, ``"lzw"``, ``"deflate"`` or ``"none"``."""
        return self._compression

    @property
    def interpolation(self) -> str:
        """``"mean"`` or ``"nearest"``: how the pyramid levels are made."""
        return self._interpolation

    @property
    def tile_size(self) -> int:
        """Tile width and height in pixels."""
        return self._tile_size

    @property
    def fill_value(self) -> float | int:
        """Value of pixels never written."""
        return self._fill.item()

    @property
    def level_shapes(self) -> list[tuple[int, int]]:
        """(rows, cols) in pixels of every level, level 0 first."""
        return list(self._level_shapes)

    @property
    def level_spacings(self) -> list[tuple[float, float]] | None:
        """(row, col) spacing in µm/px of every level, from level-0 size / level size."""
        if self._spacing is None:
            return None
        rows0, cols0 = self._shape
        return [
            (self._spacing * rows0 / rows, self._spacing * cols0 / cols)
            for rows, cols in self._level_shapes
        ]

    @property
    def closed(self) -> bool:
        """Whether the writer was closed or aborted."""
        return self._closed

    # ----------------------------------------------------------------------------------------
    # Public methods

    def write(self, tile: np.ndarray, row: int, col: int) -> None:
        """Write one tile of level 0.

        Parameters
        ----------
        tile
            Array of shape (rows, cols, channels), or (rows, cols) for 1 channel, of the
            writer's dtype or one that casts to it without loss (bool -> uint8, uint8 ->
            uint16, ...). Its shape is (tile_size, tile_size) except at the right and bottom
            borders, where it may be smaller but must cover the image up to its border;
            pixels beyond the border are replaced by the fill value.
        row, col
            Position of the tile's top-left pixel in level-0 pixels; multiples of
            ``tile_size`` inside the image.

        Raises
        ------
        ImageClosedError
            After :meth:`close` or :meth:`abort`.
        ImageWriteError
            For an invalid address, a tile of the wrong shape or dtype, or an address
            written before.
        """
        with self._lock:
            self._check_open()
            i, j = self._tile_index(row, col)
            level = self._levels[0]
            if level.started[i, j]:
                raise ImageWriteError(
                    self._path,
                    f"the tile at (row {row}, col {col}) was written before; every tile may "
                    "be written once",
                )
            data = self._prepare(tile, i, j)
            level.started[i, j] = True
            try:
                self._submit(0, i, j, data)
                self._drain(self._window)
            except BaseException:
                self._abort()
                raise

    def fill(self, content: np.ndarray) -> None:
        """Write a whole level-0 image, tile by tile in row-major order.

        Parameters
        ----------
        content
            Array of shape (rows, cols, channels), or (rows, cols) for 1 channel, equal to
            :attr:`shape`; dtype as in :meth:`write`.
        """
        self._check_open()
        array = np.asarray(content)
        rows, cols = self._shape
        expected = (rows, cols, self._channels)
        given = array.shape
        if array.ndim == 2 and self._channels == 1:
            given = (*array.shape, 1)
        if given != expected:
            raise ImageWriteError(
                self._path,
                f"fill: content has shape {array.shape}; expected {expected} (rows, cols, "
                "channels)" + (f" or {expected[:2]}" if self._channels == 1 else ""),
            )
        size = self._tile_size
        for row in range(0, rows, size):
            for col in range(0, cols, size):
                self.write(array[row : row + size, col : col + size], row, col)

    def close(self) -> None:
        """Finish the file: fill missing tiles, complete the pyramid, write the directories.

        The temporary file is then renamed to :attr:`path`. Calling :meth:`close` again, or
        after :meth:`abort`, does nothing.

        Raises
        ------
        ImageWriteError
            When the file needs 64-bit offsets but ``bigtiff=False`` was given (the
            temporary file is removed).
        """
        with self._lock:
            if self._closed:
                return
            try:
                self._finish()
            except BaseException:
                self._abort()
                raise

    def abort(self) -> None:
        """Discard the image: stop, and remove the temporary file. No output file is made.

        Calling it after :meth:`close` or twice does nothing.
        """
        with self._lock:
            self._abort()

    def __enter__(self) -> ImageWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"ImageWriter({self._path!r}, shape={self._shape}, spacing={self._spacing}, "
            f"dtype={self._dtype.name}, channels={self._channels}, "
            f"compression={self._compression!r}, {state})"
        )

    # ----------------------------------------------------------------------------------------
    # Parameter checks

    def _fail(self, name: str, value: object, expected: str) -> NoReturn:
        raise ImageWriteError(self._path, f"{name}={value!r} is invalid; expected {expected}")

    def _check_int(self, name: str, value: object, low: int, high: int | None) -> int:
        expected = f"an integer >= {low}" if high is None else f"an integer {low} to {high}"
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            self._fail(name, value, expected)
        number = int(value)  # type: ignore[arg-type]
        if number < low or (high is not None and number > high):
            self._fail(name, value, expected)
        return number

    def _check_shape(self, shape: object) -> tuple[int, int]:
        expected = "(rows, cols): two integers > 0 (pixels)"
        try:
            rows, cols = shape  # type: ignore[misc]
        except (TypeError, ValueError):
            self._fail("shape", shape, expected)
        for value in (rows, cols):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
                self._fail("shape", shape, expected)
            if value > tl.UINT32_MAX:
                self._fail("shape", shape, f"sizes up to {tl.UINT32_MAX} pixels")
        return int(rows), int(cols)

    def _check_spacing(self, spacing: object) -> float | None:
        if spacing is None:
            return None
        expected = "a finite number > 0 (µm/px) or None"
        if isinstance(spacing, bool):
            self._fail("spacing", spacing, expected)
        try:
            value = float(spacing)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self._fail("spacing", spacing, expected)
        if not math.isfinite(value) or value <= 0:
            self._fail("spacing", spacing, expected)
        try:
            tl.pixels_per_centimetre(value)
        except ValueError as error:
            self._fail("spacing", spacing, f"a spacing a TIFF can store ({error})")
        return value

    def _check_dtype(self, dtype: object) -> tuple[np.dtype, np.dtype]:
        expected = "one of 'uint8', 'uint16', 'uint32', 'float32', 'bool'"
        try:
            given = np.dtype(dtype)  # type: ignore[call-overload]
        except TypeError:
            self._fail("dtype", dtype, expected)
        if given == np.bool_:
            return np.dtype(np.uint8), given
        if given.name not in _DTYPES:
            self._fail("dtype", dtype, expected)
        return given.newbyteorder("="), given.newbyteorder("=")

    def _check_channels(self, channels: object) -> int:
        count = self._check_int("channels", channels, 1, 65535)
        if count not in (1, 3) and self._dtype.name not in _ANY_CHANNELS_DTYPES:
            self._fail(
                "channels",
                channels,
                f"1 or 3 for {self._dtype.name} (any number only for uint8, uint16, float32)",
            )
        return count

    def _check_compression(self, compression: object) -> str:
        if compression is None:
            rgb8 = self._dtype == np.uint8 and self._channels == 3
            return "jpeg" if rgb8 else "lzw"
        name = compression.lower() if isinstance(compression, str) else compression
        if name == "raw":  # the DigitalPathology name
            name = "none"
        if name not in _COMPRESSIONS:
            self._fail("compression", compression, "'jpeg', 'lzw', 'deflate', 'none' or None")
        if name == "jpeg" and not (self._dtype == np.uint8 and self._channels in (1, 3)):
            self._fail(
                "compression",
                compression,
                "'lzw', 'deflate' or 'none' for "
                f"{self._dtype.name} with {self._channels} channel(s); JPEG takes only uint8 "
                "with 1 or 3 channels",
            )
        return str(name)

    def _check_tile_size(self, tile_size: object) -> int:
        size = self._check_int("tile_size", tile_size, 16, 65536)
        if size % 16:
            self._fail("tile_size", tile_size, "a multiple of 16 pixels (>= 16)")
        return size

    def _check_interpolation(self, interpolation: object) -> str:
        if interpolation is None:
            integer = self._dtype.kind in "ui"
            return "nearest" if integer and self._channels == 1 else "mean"
        name = interpolation.lower() if isinstance(interpolation, str) else interpolation
        if name == "linear":  # the DigitalPathology name of the 2x2 mean
            name = "mean"
        if name not in _INTERPOLATIONS:
            self._fail("interpolation", interpolation, "'mean', 'nearest' or None")
        return str(name)

    def _check_fill(self, fill: object) -> np.ndarray:
        dtype = self._dtype
        expected = f"a number representable as {self._input_dtype.name}"
        if isinstance(fill, bool):
            fill = int(fill)
        if not isinstance(fill, int | float | np.integer | np.floating):
            self._fail("fill", fill, expected)
        if dtype.kind == "f":
            value = np.array(fill, dtype=np.float64)
            if math.isfinite(fill) and abs(float(fill)) > np.finfo(dtype).max:  # type: ignore[arg-type]
                self._fail("fill", fill, expected)
            return value.astype(dtype)
        high = 1 if self._input_dtype == np.bool_ else np.iinfo(dtype).max
        if not (math.isfinite(fill) and float(fill).is_integer() and 0 <= fill <= high):  # type: ignore[arg-type]
            self._fail("fill", fill, f"an integer 0 to {high} for {self._input_dtype.name}")
        return np.array(int(fill), dtype=dtype)  # type: ignore[arg-type]

    def _check_software(self, software: object) -> str:
        if software is None:
            return f"digipath {_version()}"
        if not isinstance(software, str) or not software.isascii() or "\0" in software:
            self._fail("software", software, "ASCII text without NUL characters")
        return software  # type: ignore[return-value]

    def _check_open(self) -> None:
        if self._closed:
            raise ImageClosedError(self._path)

    # ----------------------------------------------------------------------------------------
    # Geometry

    def _pyramid_shapes(self) -> list[tuple[int, int]]:
        shapes = [self._shape]
        while max(shapes[-1]) > self._min_level_size:
            rows, cols = shapes[-1]
            shapes.append(((rows + 1) // 2, (cols + 1) // 2))
        return shapes

    def _make_level(self, shape: tuple[int, int]) -> _Level:
        size = self._tile_size
        grid = (-(-shape[0] // size), -(-shape[1] // size))
        return _Level(
            shape=shape,
            grid=grid,
            offsets=np.full(grid, _UNSET, dtype=np.int64),
            byte_counts=np.zeros(grid, dtype=np.int64),
            started=np.zeros(grid, dtype=bool),
        )

    def _resolution(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        rows0, cols0 = self._shape
        rows, cols = self._level_shapes[index]
        assert self._spacing is not None
        try:
            x = tl.pixels_per_centimetre(self._spacing * cols0 / cols)
            y = tl.pixels_per_centimetre(self._spacing * rows0 / rows)
        except ValueError as error:
            raise ImageWriteError(
                self._path, f"spacing={self._spacing!r} is invalid for level {index}: {error}"
            ) from None
        return x, y

    def _valid(self, level: int, i: int, j: int) -> tuple[int, int]:
        """(rows, cols) of tile (i, j) of ``level`` that lie inside the level."""
        rows, cols = self._levels[level].shape
        size = self._tile_size
        return min(size, rows - i * size), min(size, cols - j * size)

    def _tile_index(self, row: object, col: object) -> tuple[int, int]:
        size = self._tile_size
        rows, cols = self._shape
        for name, value, limit in (("row", row, rows), ("col", col, cols)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ImageWriteError(
                    self._path, f"{name}={value!r} is invalid; expected an integer (pixels)"
                )
            if value < 0 or value >= limit or value % size:
                raise ImageWriteError(
                    self._path,
                    f"{name}={value} is invalid; expected a multiple of the tile size {size} "
                    f"from 0 to {limit - 1} (level-0 pixels)",
                )
        return int(row) // size, int(col) // size  # type: ignore[call-overload]

    def _prepare(self, tile: np.ndarray, i: int, j: int) -> np.ndarray:
        """Check ``tile`` and return a padded (T, T, C) copy in the stored dtype."""
        array = np.asarray(tile)
        channels = self._channels
        if array.ndim == 2 and channels == 1:
            array = array[:, :, np.newaxis]
        size = self._tile_size
        valid_rows, valid_cols = self._valid(0, i, j)
        row, col = i * size, j * size
        if (
            array.ndim != 3
            or array.shape[2] != channels
            or not valid_rows <= array.shape[0] <= size
            or not valid_cols <= array.shape[1] <= size
        ):
            if (valid_rows, valid_cols) == (size, size):
                expected = f"({size}, {size}, {channels})"
            else:
                expected = (
                    f"({valid_rows} to {size}, {valid_cols} to {size}, {channels}) at this border"
                )
            if channels == 1:
                expected += " or without the channel axis"
            raise ImageWriteError(
                self._path,
                f"the tile at (row {row}, col {col}) has shape {np.shape(tile)}; expected "
                f"{expected} (rows, cols, channels)",
            )
        if array.dtype != self._dtype and not np.can_cast(array.dtype, self._dtype, "safe"):
            raise ImageWriteError(
                self._path,
                f"the tile at (row {row}, col {col}) has dtype {array.dtype}; expected "
                f"{self._input_dtype} (or a type that casts to {self._dtype} without loss)",
            )
        if (valid_rows, valid_cols) == (size, size):
            return np.array(array, dtype=self._dtype, order="C", copy=True)
        data = np.full((size, size, channels), self._fill, dtype=self._dtype)
        data[:valid_rows, :valid_cols] = array[:valid_rows, :valid_cols]
        return data

    # ----------------------------------------------------------------------------------------
    # Tile pipeline (the calling thread submits and collects in FIFO order; workers encode
    # and downsample)

    def _submit(self, level: int, i: int, j: int, data: np.ndarray) -> None:
        valid = self._valid(level, i, j)
        downsample = level + 1 < len(self._levels)
        process = self._codec.process
        if self._pool is None:
            job: Any = _Done(functools.partial(process, data, valid, downsample))
        else:
            job = self._pool.submit(process, data, valid, downsample)
        self._queue.append((level, i, j, job))

    def _drain(self, window: int) -> None:
        """Collect finished jobs in submission order until at most ``window`` remain."""
        while len(self._queue) > window:
            level, i, j, job = self._queue.popleft()
            encoded, quarter = job.result()
            self._store(level, i, j, encoded)
            if level + 1 < len(self._levels):
                self._deliver(level + 1, i, j, quarter)

    def _store(self, level: int, i: int, j: int, encoded: bytes | None) -> None:
        record = self._levels[level]
        if encoded is None:
            record.offsets[i, j] = _FILL
            return
        record.offsets[i, j] = self._append(encoded)
        record.byte_counts[i, j] = len(encoded)

    def _append(self, encoded: bytes) -> int:
        offset = self._position
        self._file.write(encoded)
        self._position += len(encoded)
        if self._bigtiff is False and self._position > tl.CLASSIC_LIMIT:
            raise ImageWriteError(
                self._path,
                f"the image needs more than {tl.CLASSIC_LIMIT} bytes, more than a classic TIFF "
                "can address; use bigtiff=None or True",
            )
        return offset

    def _deliver(self, level: int, i: int, j: int, quarter: np.ndarray | None) -> None:
        """Hand the downsampled child (i, j) of ``level - 1`` to its parent on ``level``."""
        record = self._levels[level]
        key = (i // 2, j // 2)
        pending = record.pending.get(key)
        if pending is None:
            below = self._levels[level - 1].grid
            expected = min(2, below[0] - 2 * key[0]) * min(2, below[1] - 2 * key[1])
            pending = record.pending[key] = _Pending(expected)
        if quarter is not None:
            if pending.buffer is None:
                size = self._tile_size
                pending.buffer = np.full(
                    (size, size, self._channels), self._fill, dtype=self._dtype
                )
            half = self._tile_size // 2
            top, left = (i % 2) * half, (j % 2) * half
            pending.buffer[top : top + quarter.shape[0], left : left + quarter.shape[1]] = quarter
        pending.received += 1
        if pending.received == pending.expected:
            del record.pending[key]
            record.started[key] = True
            if pending.buffer is None:  # every child was fill: so is this tile
                self._store(level, *key, None)
                if level + 1 < len(self._levels):
                    self._deliver(level + 1, *key, None)
            else:
                self._submit(level, *key, pending.buffer)

    # ----------------------------------------------------------------------------------------
    # Closing

    def _finish(self) -> None:
        self._drain(0)
        missing = np.argwhere(~self._levels[0].started)
        if len(missing):
            logger.debug("%s: %d level-0 tile(s) never written, filled", self._path, len(missing))
        for i, j in missing:  # row-major order
            self._levels[0].started[i, j] = True
            self._store(0, int(i), int(j), None)
            if len(self._levels) > 1:
                self._deliver(1, int(i), int(j), None)
            self._drain(self._window)
        self._drain(0)

        if any((level.offsets == _FILL).any() for level in self._levels):
            data = np.full(
                (self._tile_size, self._tile_size, self._channels), self._fill, dtype=self._dtype
            )
            encoded = self._codec.encode(data)
            offset = self._append(encoded)
            for level in self._levels:
                fill = level.offsets == _FILL
                level.offsets[fill] = offset
                level.byte_counts[fill] = len(encoded)
        for index, level in enumerate(self._levels):
            if level.pending or (level.offsets < 0).any():  # pragma: no cover - a bug
                raise RuntimeError(f"level {index} of {self._path} is incomplete")

        start = -(-self._position // 8) * 8
        directories = self._directories()
        bigtiff = bool(self._bigtiff)
        block = tl.encode_directories(directories, start, bigtiff=bigtiff)
        if self._bigtiff is None and start + len(block) > tl.CLASSIC_LIMIT:
            bigtiff = True
            block = tl.encode_directories(directories, start, bigtiff=True)
        elif self._bigtiff is False and start + len(block) > tl.CLASSIC_LIMIT:
            raise ImageWriteError(
                self._path,
                f"the file needs {start + len(block)} bytes, more than a classic TIFF can "
                "address; use bigtiff=None or True",
            )
        self._file.write(b"\0" * (start - self._position))
        self._file.write(block)
        self._file.seek(0)
        self._file.write(tl.encode_header(start, bigtiff))
        self._file.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._finalizer.detach()
        try:
            os.replace(self._temporary, self._path)
        except OSError as error:
            raise ImageWriteError(
                self._path, f"cannot rename {self._temporary!r} to the output file: {error}"
            ) from error
        self._closed = True
        logger.debug(
            "wrote %s: %d level(s), %s, %.1f MiB in %.2f s",
            self._path,
            len(self._levels),
            "BigTIFF" if bigtiff else "TIFF",
            (start + len(block)) / 2**20,
            time.perf_counter() - self._started,
        )

    def _directories(self) -> list[tl.Directory]:
        if self._compression == "jpeg" and self._channels == 3:
            photometric, subsampling = tl.PHOTOMETRIC_YCBCR, (2, 2)
        elif self._channels == 3:
            photometric, subsampling = tl.PHOTOMETRIC_RGB, None
        else:
            photometric, subsampling = tl.PHOTOMETRIC_MINISBLACK, None
        directories = []
        for index, level in enumerate(self._levels):
            directories.append(
                tl.Directory(
                    width=level.shape[1],
                    height=level.shape[0],
                    tile_width=self._tile_size,
                    tile_length=self._tile_size,
                    samples=self._channels,
                    bits=self._dtype.itemsize * 8,
                    sample_format=(
                        tl.SAMPLE_FORMAT_FLOAT if self._dtype.kind == "f" else tl.SAMPLE_FORMAT_UINT
                    ),
                    compression=_COMPRESSIONS[self._compression],
                    photometric=photometric,
                    subfile_type=tl.SUBFILE_FULL if index == 0 else tl.SUBFILE_REDUCED,
                    offsets=level.offsets.ravel(),
                    byte_counts=level.byte_counts.ravel(),
                    resolution=None if self._resolutions is None else self._resolutions[index],
                    software=self._software,
                    ycbcr_subsampling=subsampling,
                )
            )
        return directories

    def _abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            self._file.close()
        except OSError:  # pragma: no cover - the disk failed; the file goes anyway
            logger.exception("closing %s failed", self._temporary)
        try:
            os.unlink(self._temporary)
        except FileNotFoundError:
            pass
        logger.debug("aborted %s", self._path)


__all__ = ["ImageWriter"]
