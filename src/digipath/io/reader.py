"""Reading multi-resolution images by pixel spacing.

:class:`ImageReader` opens a whole-slide image, a mask or a probability map and reads regions at
a pixel spacing in µm/px, never by level index. Tiled TIFF files (SVS, OME-TIFF, generic
pyramidal TIFF, digipath's own output) are read by digipath's own tile decoder; every other
format OpenSlide reads (NDPI, MRXS, SCN, BIF, VMS, Philips TIFF) goes through OpenSlide.

Spacing rules (see ``DESIGN.md``): a level matches a requested spacing when it lies within a
relative tolerance (default 0.25); the finest matching level wins and is returned as stored.
When no level matches, the region is read from the nearest finer level and downsampled (area
averaging for images and maps, nearest for label masks), or upsampled from level 0 when the
request is finer than every level; ``strict=True`` raises :class:`~digipath.errors.SpacingError`
instead. Regions reaching outside the image are padded with a fill value.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

import numpy as np

from digipath.errors import (
    DigipathError,
    ImageClosedError,
    MissingImageError,
    NotAnImageError,
    RegionTooLargeError,
    SpacingError,
    UnsupportedImageError,
)
from digipath.io.backends.base import Backend
from digipath.io.resample import INTERPOLATIONS, resample, source_window
from digipath.io.spacing import (
    DEFAULT_TOLERANCE,
    check_spacing,
    check_tolerance,
    matching_level,
    nearest_finer_level,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2**30
"""Largest region (in bytes of output) that :meth:`ImageReader.read` and
:meth:`ImageReader.content` return unless the caller raises the limit (1 GiB)."""

BACKENDS = ("auto", "tiff", "openslide")
"""Backend names accepted by :class:`ImageReader`."""


def open_backend(path: str, backend: str = "auto") -> Backend:
    """Open ``path`` with the named backend, or choose one (``"auto"``).

    ``auto`` reads TIFF files with digipath's own backend, except the vendor TIFF variants only
    OpenSlide interprets (NDPI, Philips, SCN, BIF), and anything else OpenSlide recognises with
    OpenSlide.

    Raises
    ------
    MissingImageError
        ``path`` does not exist.
    NotAnImageError
        Neither backend recognises the file.
    """
    from digipath.io.backends.tiff import TiffBackend, is_tiff

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not os.path.exists(path):
        raise MissingImageError(path)
    if os.path.isdir(path):
        raise NotAnImageError(path, "is a directory, expected an image file")
    if backend == "tiff":
        return TiffBackend(path)
    if backend == "openslide":
        return _openslide_backend(path)
    try:
        tiff = is_tiff(path)
    except OSError as error:
        raise NotAnImageError(path, f"cannot be read ({error.strerror or error})") from None
    if tiff:
        try:
            return TiffBackend(path)
        except UnsupportedImageError as error:
            if _openslide_format(path) in (None, "generic-tiff"):
                raise
            logger.debug("%s: %s; trying OpenSlide", path, error.reason)
            try:
                return _openslide_backend(path)
            except DigipathError:
                raise error from None
    if _openslide_format(path) is not None:
        return _openslide_backend(path)
    if os.path.getsize(path) == 0:
        raise NotAnImageError(path, "the file is empty")
    raise NotAnImageError(
        path,
        "not a TIFF file and not a format OpenSlide recognises (expected SVS, pyramidal TIFF, "
        "OME-TIFF, NDPI, MRXS, SCN, BIF, VMS or Philips TIFF)",
    )


def _openslide_format(path: str) -> str | None:
    import openslide

    try:
        return openslide.OpenSlide.detect_format(path)
    except Exception:  # detection never decides an error by itself
        return None


def _openslide_backend(path: str) -> Backend:
    from digipath.io.backends.openslide import OpenSlideBackend

    return OpenSlideBackend(path)


class AssociatedImages(Mapping[str, np.ndarray]):
    """The associated images of a slide (``label``, ``macro``, ``thumbnail``...), read lazily.

    A read-only mapping from name to (rows, cols, channels) array; an image is decoded when it is
    first looked up.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._names = backend.associated_names

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(
                f"{self._backend.path}: no associated image {name!r} "
                f"(available: {', '.join(self._names) or 'none'})"
            )
        return self._backend.associated(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"AssociatedImages({list(self._names)})"


class ImageReader:
    """Read a multi-resolution image by pixel spacing.

    Parameters
    ----------
    path
        The image file (SVS, pyramidal TIFF, OME-TIFF, NDPI, MRXS, ...).
    spacing
        Override of the level-0 pixel spacing in µm/px, for files that lack it or state it
        wrongly; the other levels' spacings follow from their downsampling.
    tolerance
        Default relative tolerance for matching requested spacings to levels (0.25 = ±25 %).
    backend
        ``"auto"`` (default), ``"tiff"`` (digipath's tile decoder) or ``"openslide"``.

    Notes
    -----
    Reads are thread-safe. A reader is picklable: the copy re-opens the file, so a reader can be
    handed to worker processes. Arrays are (rows, cols, channels); coordinates are (row, col)
    at the requested spacing.

    Examples
    --------
    >>> with ImageReader("slide.svs") as reader:               # doctest: +SKIP
    ...     patch = reader.read(0.5, row=1000, col=2000, height=256, width=256)
    ...     patch.shape
    (256, 256, 3)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        spacing: float | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        backend: str = "auto",
    ) -> None:
        self._path = os.fspath(path)
        self._override = check_spacing(spacing, "spacing override") if spacing is not None else None
        self._tolerance = check_tolerance(tolerance)
        self._backend_name = backend
        self._backend = open_backend(self._path, backend)
        self._closed = False
        self._lock = threading.Lock()
        self._hash: str | None = None
        levels = self._backend.levels
        self._shapes = [level.shape for level in levels]
        self._downsamplings = [float(level.downsampling) for level in levels]
        if self._override is not None:
            self._spacings: list[float | None] = [self._override * d for d in self._downsamplings]
        elif levels[0].spacing is None:
            self._spacings = [None] * len(levels)
        else:
            self._spacings = [
                float(level.spacing)
                if level.spacing is not None
                else float(levels[0].spacing) * level.downsampling
                for level in levels
            ]
        metadata = self._backend.metadata
        self._channels = int(metadata.channels)
        self._dtype = np.dtype(metadata.dtype)

    # ----------------------------------------------------------------------------------------
    # Properties

    @property
    def path(self) -> str:
        """The image file."""
        return self._path

    @property
    def backend(self) -> str:
        """Name of the backend reading the file (``"tiff"`` or ``"openslide"``)."""
        return self._backend.name

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(rows, cols) of every level, finest first."""
        return list(self._shapes)

    @property
    def spacings(self) -> list[float | None]:
        """Pixel spacing of every level in µm/px (``None`` when the file states none)."""
        return list(self._spacings)

    @property
    def downsamplings(self) -> list[float]:
        """Level-0 size over each level's size (mean of the two axes; 1.0 for level 0)."""
        return list(self._downsamplings)

    @property
    def level_count(self) -> int:
        """Number of resolution levels."""
        return len(self._shapes)

    @property
    def channels(self) -> int:
        """Number of channels (3 for RGB, 1 for masks and maps)."""
        return self._channels

    @property
    def dtype(self) -> np.dtype:
        """Data type of the pixels."""
        return self._dtype

    @property
    def tile_shape(self) -> tuple[int, int] | None:
        """(rows, cols) of level 0's storage tiles (strips are full-width tiles), if known."""
        return self._backend.levels[0].tile_shape

    @property
    def tile_shapes(self) -> list[tuple[int, int] | None]:
        """(rows, cols) of every level's storage tiles."""
        return [level.tile_shape for level in self._backend.levels]

    @property
    def compression(self) -> str:
        """Compression of level 0 (``jpeg``, ``jpeg2000``, ``lzw``, ``deflate``, ``none``...)."""
        return self._backend.metadata.compression

    @property
    def vendor(self) -> str:
        """Format or scanner vendor (``aperio``, ``ome-tiff``, ``generic-tiff``, ...)."""
        return self._backend.metadata.vendor

    @property
    def properties(self) -> dict[str, str]:
        """Vendor metadata as a flat dictionary of strings."""
        return dict(self._backend.metadata.properties)

    @property
    def associated(self) -> AssociatedImages:
        """Associated images (label, macro, thumbnail) by name, where the format has them."""
        return AssociatedImages(self._backend)

    @property
    def tolerance(self) -> float:
        """Default relative tolerance for matching spacings."""
        return self._tolerance

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def default_fill(self) -> float:
        """The padding value when the caller gives none: white (255) for uint8 RGB(A), else 0."""
        return 255 if self._dtype == np.uint8 and self._channels >= 3 else 0

    def default_interpolation(self) -> str:
        """``nearest`` for single-channel integer images (label masks), else ``area``."""
        if self._channels == 1 and np.issubdtype(self._dtype, np.integer):
            return "nearest"
        return "area"

    def hash(self) -> str:
        """Return the SHA-256 of the image file as a hex string (computed once, streamed).

        Statistics caches (``.stat`` files) record it to notice when an image changed.
        """
        with self._lock:
            if self._hash is None:
                digest = hashlib.sha256()
                with open(self._path, "rb") as handle:
                    for block in iter(lambda: handle.read(2**24), b""):
                        digest.update(block)
                self._hash = digest.hexdigest()
            return self._hash

    # ----------------------------------------------------------------------------------------
    # Spacing

    def level(self, spacing: float, tolerance: float | None = None) -> int:
        """Return the index of the finest level matching ``spacing`` (µm/px).

        Raises
        ------
        SpacingError
            No level lies within the relative ``tolerance`` (default: the reader's).
        """
        spacing = check_spacing(spacing)
        tolerance = self._tolerance if tolerance is None else check_tolerance(tolerance)
        self._require_spacings(spacing)
        index = matching_level(self._spacings, spacing, tolerance)
        if index is None:
            raise SpacingError(self._path, spacing, self._spacings, tolerance)
        return index

    def refine(self, spacing: float, tolerance: float | None = None) -> float:
        """The spacing (µm/px) of what :meth:`read` returns for a requested ``spacing``.

        The matching level's own spacing when a level matches, else ``spacing`` itself (the
        region is resampled to it).
        """
        index, factor = self._plan(spacing, tolerance, strict=False)
        if factor == 1.0:
            return float(self._spacings[index])  # type: ignore[arg-type]
        return float(spacing)

    def shape(self, spacing: float, tolerance: float | None = None) -> tuple[int, int]:
        """(rows, cols) of the whole image at ``spacing`` (µm/px), as :meth:`read` sees it."""
        index, factor = self._plan(spacing, tolerance, strict=False)
        rows, cols = self._shapes[index]
        if factor == 1.0:
            return rows, cols
        return max(1, round(rows / factor)), max(1, round(cols / factor))

    def _require_spacings(self, spacing: float | None) -> None:
        if self._spacings[0] is None:
            raise SpacingError(
                self._path,
                spacing,
                self._spacings,
                reason="the file states no pixel spacing; open it with "
                "ImageReader(path, spacing=<level-0 µm/px>)",
            )

    def _plan(self, spacing: float, tolerance: float | None, strict: bool) -> tuple[int, float]:
        """Return (source level, scale factor) for reading at ``spacing``."""
        spacing = check_spacing(spacing)
        tolerance = self._tolerance if tolerance is None else check_tolerance(tolerance)
        self._require_spacings(spacing)
        index = matching_level(self._spacings, spacing, tolerance)
        if index is not None:
            return index, 1.0
        if strict:
            raise SpacingError(self._path, spacing, self._spacings, tolerance)
        source = nearest_finer_level(self._spacings, spacing)
        if source is None:
            source = 0  # finer than every level: upsample level 0
        return source, spacing / self._spacings[source]  # type: ignore[operator]

    # ----------------------------------------------------------------------------------------
    # Reading

    def read(
        self,
        spacing: float,
        row: int,
        col: int,
        height: int,
        width: int,
        *,
        fill: float | None = None,
        strict: bool = False,
        tolerance: float | None = None,
        interpolation: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> np.ndarray:
        """Read a region at a pixel spacing.

        Parameters
        ----------
        spacing
            Pixel spacing in µm/px.
        row, col
            Top-left pixel of the region, at ``spacing``; may be negative or beyond the image.
        height, width
            Size of the region in pixels at ``spacing``.
        fill
            Value of the pixels outside the image; default :meth:`default_fill` (white for
            RGB, 0 for masks and maps).
        strict
            Raise :class:`~digipath.errors.SpacingError` instead of resampling when no level
            matches ``spacing``.
        tolerance
            Relative tolerance for matching levels; default the reader's.
        interpolation
            ``"area"`` or ``"nearest"`` when resampling; default :meth:`default_interpolation`.
        max_bytes
            Refuse regions larger than this many bytes (default 1 GiB).

        Returns
        -------
        numpy.ndarray
            (height, width, channels) array of :attr:`dtype`.
        """
        self._check_open()
        row, col, height, width = _check_region(row, col, height, width)
        if interpolation is not None and interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS} or None, got {interpolation!r}"
            )
        nbytes = height * width * self._channels * self._dtype.itemsize
        if nbytes > max_bytes:
            raise RegionTooLargeError(
                self._path, (height, width, self._channels), nbytes, max_bytes
            )
        fill_value = self.default_fill() if fill is None else fill
        level, factor = self._plan(spacing, tolerance, strict)
        if factor == 1.0:
            return self._read_level(level, row, col, height, width, fill_value)
        (r0, r1), (c0, c1) = source_window(row, height, factor), source_window(col, width, factor)
        source_bytes = (r1 - r0) * (c1 - c0) * self._channels * self._dtype.itemsize
        if source_bytes > max(max_bytes, 4 * nbytes) and factor > 1:
            raise RegionTooLargeError(
                self._path, (r1 - r0, c1 - c0, self._channels), source_bytes, max_bytes
            )
        source = self._read_level(level, r0, c0, r1 - r0, c1 - c0, fill_value)
        return resample(
            source,
            (r0, c0),
            (row, col),
            (height, width),
            factor,
            interpolation or self.default_interpolation(),
        )

    def _read_level(
        self, level: int, row: int, col: int, height: int, width: int, fill: float
    ) -> np.ndarray:
        """Read a region of one level at its own spacing, padding outside it with ``fill``."""
        rows, cols = self._shapes[level]
        r0, r1 = max(row, 0), min(row + height, rows)
        c0, c1 = max(col, 0), min(col + width, cols)
        inside = r0 < r1 and c0 < c1
        if inside and (r0, r1, c0, c1) == (row, row + height, col, col + width):
            out = np.empty((height, width, self._channels), dtype=self._dtype)
            self._backend.read_region(level, row, col, out, fill)
            return out
        out = np.full((height, width, self._channels), fill, dtype=self._dtype)
        if inside:
            view = out[r0 - row : r1 - row, c0 - col : c1 - col]
            if view.flags.c_contiguous:
                self._backend.read_region(level, r0, c0, view, fill)
            else:
                part = np.empty((r1 - r0, c1 - c0, self._channels), dtype=self._dtype)
                self._backend.read_region(level, r0, c0, part, fill)
                view[...] = part
        return out

    def content(
        self,
        spacing: float,
        *,
        tolerance: float | None = None,
        strict: bool = False,
        interpolation: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> np.ndarray:
        """Read the whole image at ``spacing`` (µm/px) as one (rows, cols, channels) array.

        Raises
        ------
        RegionTooLargeError
            The array would exceed ``max_bytes`` (default 1 GiB); raise the limit or read in
            parts with :meth:`read`.
        """
        rows, cols = self.shape(spacing, tolerance)
        return self.read(
            spacing,
            0,
            0,
            rows,
            cols,
            tolerance=tolerance,
            strict=strict,
            interpolation=interpolation,
            max_bytes=max_bytes,
        )

    def thumbnail(self, max_size: int = 1024, *, interpolation: str | None = None) -> np.ndarray:
        """Return the whole image scaled to fit ``max_size`` pixels on its longer side.

        Works without any spacing information. The image is read from the coarsest level at
        least as large as the thumbnail, in bands, so memory stays bounded for any image size.

        Returns
        -------
        numpy.ndarray
            (rows, cols, channels) array of :attr:`dtype`, aspect ratio preserved.
        """
        self._check_open()
        if (
            isinstance(max_size, bool)
            or not isinstance(max_size, (int, np.integer))
            or max_size < 1
        ):
            raise ValueError(f"max_size must be a positive number of pixels, got {max_size!r}")
        rows0, cols0 = self._shapes[0]
        scale = max(rows0, cols0) / max_size
        if scale <= 1:
            return self._read_level(0, 0, 0, rows0, cols0, self.default_fill())
        height, width = max(1, round(rows0 / scale)), max(1, round(cols0 / scale))
        level = 0
        for index, (rows, cols) in enumerate(self._shapes):
            if rows >= height and cols >= width:
                level = index
        rows, cols = self._shapes[level]
        factor = max(rows / height, cols / width)
        method = interpolation or self.default_interpolation()
        out = np.empty((height, width, self._channels), dtype=self._dtype)
        band = max(1, int(2**26 // max(1, cols * self._channels * self._dtype.itemsize * factor)))
        for top in range(0, height, band):
            count = min(band, height - top)
            r0, r1 = source_window(top, count, factor)
            c0, c1 = source_window(0, width, factor)
            r1, c1 = min(r1, rows), min(c1, cols)
            source = self._read_level(level, r0, c0, r1 - r0, c1 - c0, self.default_fill())
            out[top : top + count] = resample(
                source, (r0, c0), (top, 0), (count, width), factor, method
            )
        return out

    # ----------------------------------------------------------------------------------------
    # Life cycle

    def close(self) -> None:
        """Release the file; further reads raise :class:`~digipath.errors.ImageClosedError`."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._backend.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ImageClosedError(self._path)

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        backend = getattr(self, "_backend", None)
        if backend is not None and not getattr(self, "_closed", True):
            try:
                backend.close()
            except Exception:  # pragma: no cover - interpreter shutdown
                pass

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self._path,
            "spacing": self._override,
            "tolerance": self._tolerance,
            "backend": self._backend_name,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["path"],
            spacing=state["spacing"],
            tolerance=state["tolerance"],
            backend=state["backend"],
        )

    def __repr__(self) -> str:
        spacing = self._spacings[0]
        shown = f"{spacing:.4g} µm/px" if spacing is not None else "no spacing"
        state = ", closed" if self._closed else ""
        return (
            f"ImageReader({self._path!r}, {self._shapes[0][0]}x{self._shapes[0][1]}, "
            f"{self.level_count} levels, {shown}, {self._channels}x{self._dtype}, "
            f"{self.backend}{state})"
        )


def _check_region(row: Any, col: Any, height: Any, width: Any) -> tuple[int, int, int, int]:
    values = []
    for name, value in (("row", row), ("col", col), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                value = int(value)
            else:
                raise TypeError(f"{name} must be an integer number of pixels, got {value!r}")
        values.append(int(value))
    if values[2] < 1 or values[3] < 1:
        raise ValueError(f"height and width must be >= 1 pixel, got {values[2]}x{values[3]}")
    return values[0], values[1], values[2], values[3]


__all__ = ["BACKENDS", "DEFAULT_MAX_BYTES", "AssociatedImages", "ImageReader", "open_backend"]
