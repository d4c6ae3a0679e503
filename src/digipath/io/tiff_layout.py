"""Low-level TIFF encoding: file headers and image file directories (IFDs).

This module knows the byte layout of little-endian classic TIFF and BigTIFF files and nothing
about pixels. :class:`~digipath.io.writer.ImageWriter` appends the encoded tiles to a file,
describes every pyramid level as a :class:`Directory` and calls :func:`encode_directories`
and :func:`encode_header` to finish the file.

A classic TIFF header takes 8 bytes and a BigTIFF header 16, so a writer that reserves
:data:`HEADER_SIZE` (16) bytes at the start of the file can choose the format at the end, once
it knows whether every offset fits in 32 bits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

HEADER_SIZE = 16
"""Bytes to reserve at the start of the file: room for either header."""

CLASSIC_LIMIT = 2**32 - 1
"""Largest offset or byte count a classic TIFF can store."""

UINT32_MAX = 2**32 - 1
"""Largest value of a LONG field (and of either part of a RATIONAL)."""

# Tag numbers (TIFF 6.0, TIFF Technical Note 2 for JPEG).
NEW_SUBFILE_TYPE = 254
IMAGE_WIDTH = 256
IMAGE_LENGTH = 257
BITS_PER_SAMPLE = 258
COMPRESSION = 259
PHOTOMETRIC = 262
SAMPLES_PER_PIXEL = 277
X_RESOLUTION = 282
Y_RESOLUTION = 283
PLANAR_CONFIGURATION = 284
RESOLUTION_UNIT = 296
SOFTWARE = 305
TILE_WIDTH = 322
TILE_LENGTH = 323
TILE_OFFSETS = 324
TILE_BYTE_COUNTS = 325
EXTRA_SAMPLES = 338
SAMPLE_FORMAT = 339
YCBCR_SUBSAMPLING = 530

# Field types.
ASCII = 2
SHORT = 3
LONG = 4
RATIONAL = 5
LONG8 = 16

# Values.
COMPRESSION_NONE = 1
COMPRESSION_LZW = 5
COMPRESSION_JPEG = 7
COMPRESSION_ADOBE_DEFLATE = 8
PHOTOMETRIC_MINISBLACK = 1
PHOTOMETRIC_RGB = 2
PHOTOMETRIC_YCBCR = 6
SAMPLE_FORMAT_UINT = 1
SAMPLE_FORMAT_FLOAT = 3
RESOLUTION_UNIT_CENTIMETER = 3
SUBFILE_FULL = 0
SUBFILE_REDUCED = 1

_ALIGN = 8  # IFDs and out-of-line values start on 8-byte boundaries (TIFF asks for 2)


@dataclass(frozen=True)
class Directory:
    """Everything one IFD of a tiled image says.

    Attributes
    ----------
    width, height
        Size of the level in pixels (cols, rows).
    tile_width, tile_length
        Size of a tile in pixels (cols, rows); multiples of 16.
    samples
        Samples (channels) per pixel.
    bits
        Bits per sample (8, 16 or 32).
    sample_format
        :data:`SAMPLE_FORMAT_UINT` or :data:`SAMPLE_FORMAT_FLOAT`.
    compression
        TIFF compression code.
    photometric
        TIFF photometric interpretation code.
    subfile_type
        :data:`SUBFILE_FULL` for the full-resolution image, :data:`SUBFILE_REDUCED` for the
        levels of a pyramid.
    offsets, byte_counts
        File offset and length in bytes of every tile, in row-major tile order.
    resolution
        ``(x, y)`` pixels per centimetre as ``(numerator, denominator)`` rationals, or
        ``None`` to write no resolution tags at all.
    software
        Text of the Software tag (ASCII), or ``None``.
    ycbcr_subsampling
        ``(horizontal, vertical)`` chroma subsampling for YCbCr photometric, else ``None``.
    """

    width: int
    height: int
    tile_width: int
    tile_length: int
    samples: int
    bits: int
    sample_format: int
    compression: int
    photometric: int
    subfile_type: int
    offsets: np.ndarray
    byte_counts: np.ndarray
    resolution: tuple[tuple[int, int], tuple[int, int]] | None = None
    software: str | None = None
    ycbcr_subsampling: tuple[int, int] | None = None

    def entries(self, bigtiff: bool) -> list[tuple[int, int, int, bytes]]:
        """Return the IFD entries as ``(tag, type, count, little-endian value bytes)``."""
        entries: list[tuple[int, int, int, bytes]] = []

        def shorts(tag: int, *values: int) -> None:
            entries.append((tag, SHORT, len(values), struct.pack(f"<{len(values)}H", *values)))

        def long(tag: int, value: int) -> None:
            entries.append((tag, LONG, 1, struct.pack("<I", value)))

        def rational(tag: int, value: tuple[int, int]) -> None:
            entries.append((tag, RATIONAL, 1, struct.pack("<II", *value)))

        def array(tag: int, values: np.ndarray) -> None:
            kind, dtype = (LONG8, "<u8") if bigtiff else (LONG, "<u4")
            data = np.ascontiguousarray(values, dtype=dtype).tobytes()
            entries.append((tag, kind, len(values), data))

        long(NEW_SUBFILE_TYPE, self.subfile_type)
        long(IMAGE_WIDTH, self.width)
        long(IMAGE_LENGTH, self.height)
        shorts(BITS_PER_SAMPLE, *([self.bits] * self.samples))
        shorts(COMPRESSION, self.compression)
        shorts(PHOTOMETRIC, self.photometric)
        shorts(SAMPLES_PER_PIXEL, self.samples)
        if self.resolution is not None:
            rational(X_RESOLUTION, self.resolution[0])
            rational(Y_RESOLUTION, self.resolution[1])
        shorts(PLANAR_CONFIGURATION, 1)
        if self.resolution is not None:
            shorts(RESOLUTION_UNIT, RESOLUTION_UNIT_CENTIMETER)
        if self.software is not None:
            text = self.software.encode("ascii") + b"\0"
            entries.append((SOFTWARE, ASCII, len(text), text))
        long(TILE_WIDTH, self.tile_width)
        long(TILE_LENGTH, self.tile_length)
        array(TILE_OFFSETS, self.offsets)
        array(TILE_BYTE_COUNTS, self.byte_counts)
        colour_samples = 3 if self.photometric in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR) else 1
        if self.samples > colour_samples:
            shorts(EXTRA_SAMPLES, *([0] * (self.samples - colour_samples)))  # 0: unspecified
        shorts(SAMPLE_FORMAT, *([self.sample_format] * self.samples))
        if self.ycbcr_subsampling is not None:
            shorts(YCBCR_SUBSAMPLING, *self.ycbcr_subsampling)
        entries.sort(key=lambda entry: entry[0])
        return entries


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def encode_directories(directories: list[Directory], start: int, bigtiff: bool) -> bytes:
    """Encode ``directories`` as consecutive top-level IFDs placed at file offset ``start``.

    Each IFD is followed by its out-of-line values (tile offsets, byte counts, rationals,
    text); the next-IFD pointer of each IFD points to the following one, the last to 0.

    Parameters
    ----------
    directories
        The IFDs in file order (level 0 first).
    start
        File offset of the first IFD in bytes; must be a multiple of 8.
    bigtiff
        Encode BigTIFF IFDs (64-bit counts and offsets) instead of classic ones.

    Returns
    -------
    bytes
        The bytes to write at ``start``.
    """
    if start % _ALIGN:
        raise ValueError(f"IFDs must start at a multiple of {_ALIGN}, got offset {start}")
    if bigtiff:
        count_format, entry_format, next_format, inline = "<Q", "<HHQ", "<Q", 8
    else:
        count_format, entry_format, next_format, inline = "<H", "<HHI", "<I", 4
    entry_size = struct.calcsize(entry_format) + inline
    out = bytearray()
    position = start
    for index, directory in enumerate(directories):
        entries = directory.entries(bigtiff)
        ifd_size = (
            struct.calcsize(count_format) + len(entries) * entry_size + struct.calcsize(next_format)
        )
        data_position = position + ifd_size
        table = bytearray(struct.pack(count_format, len(entries)))
        data = bytearray()
        for tag, kind, count, value in entries:
            table += struct.pack(entry_format, tag, kind, count)
            if len(value) <= inline:
                table += value.ljust(inline, b"\0")
            else:
                padding = _aligned(data_position) - data_position
                data += b"\0" * padding
                data_position += padding
                table += struct.pack(next_format, data_position)
                data += value
                data_position += len(value)
        end = _aligned(data_position)
        data += b"\0" * (end - data_position)
        last = index == len(directories) - 1
        table += struct.pack(next_format, 0 if last else end)
        out += table
        out += data
        position = end
    return bytes(out)


def encode_header(first_ifd: int, bigtiff: bool) -> bytes:
    """Return a little-endian TIFF (8 bytes) or BigTIFF (16 bytes) header."""
    if bigtiff:
        return b"II" + struct.pack("<HHHQ", 43, 8, 0, first_ifd)
    if first_ifd > CLASSIC_LIMIT:
        raise ValueError(f"offset {first_ifd} does not fit in a classic TIFF")
    return b"II" + struct.pack("<HI", 42, first_ifd)


def pixels_per_centimetre(spacing: float) -> tuple[int, int]:
    """Return ``1e4 / spacing`` (pixels per cm for a spacing in µm/px) as a 32-bit rational.

    The rational is the closest one with numerator and denominator below 2**32, so the
    spacing read back as ``1e4 * denominator / numerator`` matches to about 1e-9 relative for
    any spacing a microscope or a pyramid level produces.

    Raises
    ------
    ValueError
        When ``1e4 / spacing`` cannot be stored as a 32-bit rational (spacing below about
        2.3e-6 µm/px or above about 4.3e13 µm/px).
    """
    value = Fraction(1e4) / Fraction(spacing)
    if not Fraction(1, UINT32_MAX) <= value <= UINT32_MAX:
        raise ValueError(
            f"a spacing of {spacing} µm/px gives {float(value)} pixels per cm, outside the "
            f"range a TIFF rational can hold (1/{UINT32_MAX} to {UINT32_MAX})"
        )
    best = value.limit_denominator(UINT32_MAX)
    max_denominator = UINT32_MAX
    while best.numerator > UINT32_MAX or best.denominator > UINT32_MAX:
        max_denominator = max(1, int(max_denominator * UINT32_MAX / (best.numerator + 1)))
        best = value.limit_denominator(max_denominator)
    if best.numerator == 0:  # value below 1 / UINT32_MAX after rounding
        best = Fraction(1, UINT32_MAX)
    return best.numerator, best.denominator
