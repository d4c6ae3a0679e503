"""The OpenSlide backend: every format the OpenSlide C library reads.

Used for the formats digipath's own TIFF reader does not handle (Hamamatsu NDPI and VMS/VMU,
MIRAX, Leica SCN, Ventana BIF, Philips TIFF and anything else OpenSlide recognises).

Regions are read with OpenSlide's C function straight into a NumPy buffer of premultiplied ARGB
words (no Pillow image in between), then copied into the caller's RGB array, compositing
transparent pixels (areas the slide does not cover) over the fill value. Large regions are read
in bands of rows so that the temporary buffer stays small. ctypes releases the GIL during the C
call and OpenSlide handles are thread-safe, so several threads can read at once.

Coordinates: OpenSlide takes the top-left corner of a region in *level-0* pixels and divides it
by the level's downsample factor. When that factor is an integer (NDPI, MIRAX and most
pyramids made by halving) this backend asks for ``col * downsample`` and gets the stored pixels
exactly. When it is not (e.g. Aperio levels of 2.0005), no integer level-0 coordinate maps to
the level pixel grid; OpenSlide then paints the tiles at a sub-pixel offset and interpolates,
so the result is slightly resampled (with faint seams at tile borders) rather than the stored
pixels. The backend takes the nearest level-0 coordinate, ``round(col * downsample)``, which
keeps the offset within half a level-0 pixel.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import sys
import threading
from collections.abc import Iterator, Mapping

import numpy as np
import openslide
from openslide import lowlevel

from digipath.errors import (
    CorruptImageError,
    ImageClosedError,
    MissingImageError,
    NotAnImageError,
)
from digipath.io.backends.base import Backend, ImageMetadata, Level

logger = logging.getLogger(__name__)

CHUNK_PIXELS = 1 << 24
"""Most pixels read from OpenSlide in one call (a 64 MiB ARGB buffer); larger regions are read
in bands of rows."""

MPP_TOLERANCE = 0.01
"""Relative difference between ``openslide.mpp-x`` and ``openslide.mpp-y`` above which a warning
is logged (their mean is used either way)."""

# Byte positions of R, G, B and A inside a native-endian 32-bit ARGB word.
if sys.byteorder == "little":
    _RGB_BYTES: slice | list[int] = slice(2, None, -1)  # bytes B G R A -> take 2, 1, 0
    _ALPHA_BYTE = 3
else:  # pragma: no cover - big-endian hosts
    _RGB_BYTES = [1, 2, 3]
    _ALPHA_BYTE = 0

# The raw C entry points of openslide-python (private but stable since 1.0): they fill a
# caller-provided uint32 buffer, which saves the Pillow round trip of the public wrappers.
_raw_read_region = getattr(lowlevel, "_read_region", None)
_raw_read_associated = getattr(lowlevel, "_read_associated_image", None)
_uint32_p = ctypes.POINTER(ctypes.c_uint32)


class OpenSlideBackend(Backend):
    """Reads a whole-slide image with the OpenSlide library.

    Parameters
    ----------
    path
        The slide file (for multi-file formats such as MIRAX or VMS, the index file).

    Raises
    ------
    MissingImageError
        ``path`` does not exist.
    NotAnImageError
        OpenSlide does not recognise the file.
    CorruptImageError
        OpenSlide recognises the file but cannot parse it.
    """

    name = "openslide"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise MissingImageError(self.path)
        if os.path.isdir(self.path):
            raise NotAnImageError(self.path, "is a directory, not a slide file")
        try:
            slide = openslide.OpenSlide(self.path)
        except openslide.OpenSlideUnsupportedFormatError:
            # OpenSlide says the same for unreadable, truncated and foreign files.
            raise NotAnImageError(
                self.path,
                "OpenSlide does not recognise this file as a whole-slide image (supported: "
                "Aperio, DICOM, Hamamatsu NDPI/VMS/VMU, Leica SCN, MIRAX, Philips TIFF, Sakura, "
                "Trestle, Ventana BIF, generic tiled TIFF); it may also be truncated",
            ) from None
        except openslide.OpenSlideError as error:
            raise CorruptImageError(
                self.path, f"OpenSlide cannot open the slide: {error}"
            ) from None

        self._slide: openslide.OpenSlide | None = slide
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0  # reads in progress; close() waits for them

        try:
            properties = dict(slide.properties)
            downsamples = [float(d) for d in slide.level_downsamples]
            dimensions = list(slide.level_dimensions)
            self._associated_names = tuple(sorted(slide.associated_images))
        except openslide.OpenSlideError as error:
            slide.close()
            self._slide = None
            raise CorruptImageError(
                self.path, f"OpenSlide cannot read the slide: {error}"
            ) from None

        spacing0 = _level0_spacing(properties, self.path)
        self.levels = [
            Level(
                shape=(int(height), int(width)),
                downsampling=downsample,
                spacing=spacing0 * downsample if spacing0 is not None else None,
                tile_shape=_tile_shape(properties, index),
            )
            for index, ((width, height), downsample) in enumerate(
                zip(dimensions, downsamples, strict=True)
            )
        ]
        vendor = properties.get("openslide.vendor") or "unknown"
        self.metadata = ImageMetadata(
            vendor=vendor,
            compression=_compression(vendor, properties, self.path),
            channels=3,
            dtype=np.dtype(np.uint8),
            spacing=spacing0,
            properties=properties,
        )

    # ----------------------------------------------------------------------------------------
    # Reading

    @contextlib.contextmanager
    def _handle(self) -> Iterator[openslide.OpenSlide]:
        """Yield the open slide, keeping :meth:`close` waiting until the caller is done."""
        with self._lock:
            slide = self._slide
            if slide is None:
                raise ImageClosedError(self.path)
            self._active += 1
        try:
            yield slide
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._idle.notify_all()

    def level_origin(self, level: int, row: int, col: int) -> tuple[int, int]:
        """Return the level-0 (x, y) that OpenSlide is asked for to read from (row, col).

        Parameters
        ----------
        level
            The level index.
        row, col
            The top-left pixel of the region in the coordinates of ``level``.

        Returns
        -------
        ``(round(col * d), round(row * d))`` with ``d`` the level's downsample factor; exact
        when ``d`` is an integer.
        """
        downsample = self.levels[level].downsampling
        return round(col * downsample), round(row * downsample)

    def read_region(self, level: int, row: int, col: int, out: np.ndarray, fill: float) -> None:
        """Copy the region of ``level`` starting at (row, col) into ``out``.

        Parameters
        ----------
        level
            The level index.
        row, col
            Top-left pixel of the region in the coordinates of ``level``.
        out
            A (height, width, 3) uint8 array; the region lies inside the level.
        fill
            Value (0 to 255) that transparent pixels (areas the slide does not cover) are
            composited over; partly transparent pixels are blended with it.

        Raises
        ------
        ImageClosedError
            The backend was closed.
        CorruptImageError
            OpenSlide failed to decode the region. OpenSlide then keeps the slide handle in an
            error state, so every later read fails too; reopen the image to try again.
        """
        if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8:
            raise ValueError(
                f"out must be a (height, width, 3) uint8 array, got shape {out.shape} and dtype "
                f"{out.dtype}"
            )
        height, width = out.shape[:2]
        if height == 0 or width == 0:
            with self._handle():
                return
        fill_value = min(max(float(fill), 0.0), 255.0)
        downsample = self.levels[level].downsampling
        band = max(1, CHUNK_PIXELS // width)
        with self._handle() as slide:
            for start in range(0, height, band):
                rows = min(band, height - start)
                x = round(col * downsample)
                y = round((row + start) * downsample)
                try:
                    argb = _read_argb(slide, x, y, level, width, rows)
                except openslide.OpenSlideError as error:
                    raise CorruptImageError(
                        self.path, f"OpenSlide failed to read the region: {error}", level=level
                    ) from None
                _composite(argb, out[start : start + rows], fill_value)

    # ----------------------------------------------------------------------------------------
    # Associated images

    @property
    def associated_names(self) -> tuple[str, ...]:
        """Names of the associated images (``label``, ``macro``, ``thumbnail``...)."""
        return self._associated_names

    def associated(self, name: str) -> np.ndarray:
        """Return the associated image ``name`` as a (rows, cols, 3) uint8 array.

        Transparent pixels are composited over white.

        Raises
        ------
        KeyError
            The slide has no associated image of that name (the message lists those it has).
        ImageClosedError
            The backend was closed.
        """
        if name not in self._associated_names:
            available = ", ".join(self._associated_names) or "none"
            raise KeyError(f"{self.path}: no associated image {name!r} (available: {available})")
        with self._handle() as slide:
            try:
                argb = _read_associated_argb(slide, name)
            except openslide.OpenSlideError as error:
                raise CorruptImageError(
                    self.path, f"OpenSlide failed to read associated image {name!r}: {error}"
                ) from None
        out = np.empty((*argb.shape, 3), np.uint8)
        _composite(argb, out, 255.0)
        return out

    # ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the slide; waits for reads in progress. Calling it again does nothing."""
        with self._lock:
            slide = self._slide
            if slide is None:
                return
            self._slide = None
            while self._active:
                self._idle.wait()
        slide.close()

    def __repr__(self) -> str:
        state = "closed" if self._slide is None else f"{len(self.levels)} levels"
        return f"OpenSlideBackend({self.path!r}, {state})"


# --------------------------------------------------------------------------------------------
# Helpers


def _read_argb(
    slide: openslide.OpenSlide, x: int, y: int, level: int, width: int, height: int
) -> np.ndarray:
    """Read a region as a (height, width) array of premultiplied native-endian ARGB words."""
    if _raw_read_region is not None:
        buffer = np.empty((height, width), np.uint32)
        _raw_read_region(slide._osr, buffer.ctypes.data_as(_uint32_p), x, y, level, width, height)
        return buffer
    image = slide.read_region((x, y), level, (width, height))  # pragma: no cover - fallback
    return _premultiplied_from_pil(image)  # pragma: no cover


def _read_associated_argb(slide: openslide.OpenSlide, name: str) -> np.ndarray:
    """Read an associated image as a (rows, cols) array of premultiplied ARGB words."""
    if _raw_read_associated is not None:
        width, height = lowlevel.get_associated_image_dimensions(slide._osr, name)
        buffer = np.empty((height, width), np.uint32)
        _raw_read_associated(slide._osr, name, buffer.ctypes.data_as(_uint32_p))
        return buffer
    return _premultiplied_from_pil(slide.associated_images[name])  # pragma: no cover


def _premultiplied_from_pil(image) -> np.ndarray:  # pragma: no cover - fallback only
    """Convert a Pillow RGBA image (not premultiplied) into premultiplied ARGB words."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint32)
    alpha = rgba[..., 3]
    rgb = (rgba[..., :3] * alpha[..., None] + 127) // 255
    words = (alpha << 24) | (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return words.astype(np.uint32)


def _composite(argb: np.ndarray, out: np.ndarray, fill: float) -> None:
    """Write premultiplied ARGB words into the RGB array ``out``, composited over ``fill``.

    Opaque pixels are copied as they are, fully transparent ones become ``fill``, partly
    transparent ones ``colour + fill * (255 - alpha) / 255`` (rounded).
    """
    channels = argb.view(np.uint8).reshape(*argb.shape, 4)
    out[...] = channels[..., _RGB_BYTES]
    alpha = channels[..., _ALPHA_BYTE]
    if alpha.min() == 255:  # the usual case: nothing to blend
        return
    translucent = alpha != 255
    weight = (255 - alpha[translucent]).astype(np.float32) * np.float32(fill / 255.0)
    blended = out[translucent].astype(np.float32) + weight[:, None]
    out[translucent] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _positive_float(value: str | None) -> float | None:
    """Parse a property as a finite number > 0, else ``None``."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _level0_spacing(properties: Mapping[str, str], path: str) -> float | None:
    """Level-0 spacing in µm/px from ``openslide.mpp-x`` / ``openslide.mpp-y``, or ``None``."""
    mpp_x = _positive_float(properties.get("openslide.mpp-x"))
    mpp_y = _positive_float(properties.get("openslide.mpp-y"))
    if mpp_x is None or mpp_y is None:
        return mpp_x if mpp_y is None else mpp_y
    mean = (mpp_x + mpp_y) / 2
    if abs(mpp_x - mpp_y) > MPP_TOLERANCE * mean:
        logger.warning(
            "%s: pixels are not square (mpp-x %.6g, mpp-y %.6g µm/px); using the mean %.6g µm/px",
            path,
            mpp_x,
            mpp_y,
            mean,
        )
    return mean


def _tile_shape(properties: Mapping[str, str], level: int) -> tuple[int, int] | None:
    """(rows, cols) of a level's tiles from ``openslide.level[i].tile-height/-width``."""
    try:
        rows = int(properties[f"openslide.level[{level}].tile-height"])
        cols = int(properties[f"openslide.level[{level}].tile-width"])
    except (KeyError, ValueError):
        return None
    return (rows, cols) if rows > 0 and cols > 0 else None


def _compression(vendor: str, properties: Mapping[str, str], path: str) -> str:
    """Best-effort name of the compression of the main image, else ``"unknown"``.

    OpenSlide does not report compression as such; this relies on what the format implies
    (NDPI and VMS are JPEG, VMU uncompressed) or on vendor metadata that names it (the Aperio
    ImageDescription, the MIRAX ``IMAGE_FORMAT`` key).
    """
    if vendor == "hamamatsu":
        suffix = os.path.splitext(path)[1].lower()
        return {".ndpi": "jpeg", ".vms": "jpeg", ".vmu": "none"}.get(suffix, "unknown")
    if vendor == "aperio":
        description = properties.get("tiff.ImageDescription", "")
        if "J2K" in description:
            return "jpeg2000"
        if "JPEG" in description:
            return "jpeg"
        return "unknown"
    if vendor == "mirax":
        image_format = properties.get("mirax.LAYER_0_LEVEL_0_SECTION.IMAGE_FORMAT", "")
        return {"JPEG": "jpeg", "PNG": "png", "BMP": "bmp"}.get(image_format.upper(), "unknown")
    return "unknown"
