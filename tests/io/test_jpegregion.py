"""Tests of the _jpegregion extension: decoding part of a JPEG tile equals a full decode."""

from __future__ import annotations

import os
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digipath.io import ImageReader, ImageWriter
from digipath.io.backends import tiff as tiff_backend

decode_region = getattr(tiff_backend, "_decode_region", None)


def test_extension_is_built_where_libjpeg_headers_exist():
    if not Path("/usr/include/jpeglib.h").exists():
        pytest.skip("libjpeg-turbo headers absent: the extension is optional")
    assert tiff_backend.REGION_DECODING, "the _jpegregion extension was not built"


needs_extension = pytest.mark.skipif(decode_region is None, reason="_jpegregion not built")


def textured(rows: int, cols: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    base = 128 + 60 * np.sin(x[..., None] / (7.0 + np.arange(channels))) * np.cos(y[..., None] / 11)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def jpeg_tiles(tmp_path_factory) -> dict[str, tuple[list[bytes], bytes | None, int, int]]:
    """Tiles of a 4:2:0 RGB pyramid, a grayscale one and an Aperio SVS (tables, RGB)."""
    folder = tmp_path_factory.mktemp("jpeg")
    found = {}
    for name, channels in (("rgb", 3), ("gray", 1)):
        path = folder / f"{name}.tif"
        with ImageWriter(
            path, (600, 600), spacing=0.5, channels=channels, compression="jpeg", tile_size=256
        ) as w:
            w.fill(textured(600, 600, channels))
        found[name] = _tiles(path)
    svs = Path(os.environ.get("DIGIPATH_TEST_DATA", Path(__file__).parents[3] / "shared/data"))
    svs = svs / "wsi" / "aperio" / "CMU-1-Small-Region.svs"
    if svs.exists():
        found["svs"] = _tiles(svs)
    return found


def _tiles(path: Path):
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        colorspace, _ = tifffile.tifffile.jpeg_decode_colorspace(
            page.photometric, page.planarconfig, page.extrasamples, page.is_jfif
        )
        with open(path, "rb") as handle:
            tiles = []
            for offset, count in list(zip(page.dataoffsets, page.databytecounts, strict=True))[:6]:
                handle.seek(offset)
                tiles.append(handle.read(count))
        return tiles, page.jpegtables, 2 if colorspace == 2 else 0, page.samplesperpixel


@needs_extension
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["rgb", "gray", "svs"]),
    index=st.integers(0, 5),
    r0=st.integers(0, 239),
    c0=st.integers(0, 239),
    height=st.integers(1, 240),
    width=st.integers(1, 240),
)
def test_region_equals_full_decode(jpeg_tiles, kind, index, r0, c0, height, width):
    if kind not in jpeg_tiles:
        pytest.skip("test data absent")
    tiles, tables, colorspace, samples = jpeg_tiles[kind]
    data = tiles[index]
    full = imagecodecs.jpeg8_decode(
        data,
        tables=tables,
        colorspace=colorspace or None,
        outcolorspace="RGB" if samples == 3 else None,
    )
    full = full.reshape(full.shape[0], full.shape[1], samples)
    r1, c1 = min(r0 + height, full.shape[0]), min(c0 + width, full.shape[1])
    buffer = np.empty((r1 - r0, full.shape[1], samples), np.uint8)
    first, count = decode_region(data, tables, r0, r1, c0, c1, colorspace, buffer)
    assert first <= c0 and first + count >= c1
    assert np.array_equal(buffer[:, c0 - first : c1 - first], full[r0:r1, c0:c1])


@needs_extension
def test_region_errors(jpeg_tiles):
    tiles, tables, _, _ = jpeg_tiles["rgb"]
    buffer = np.empty((256, 256, 3), np.uint8)
    with pytest.raises(ValueError, match="JPEG"):
        decode_region(b"\x00" * 100, None, 0, 10, 0, 10, 0, buffer)
    with pytest.raises(ValueError, match="outside"):
        decode_region(tiles[0], tables, 0, 300, 0, 10, 0, np.empty((300, 256, 3), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        decode_region(tiles[0], tables, 0, 100, 0, 10, 0, np.empty((10, 256, 3), np.uint8))
    with pytest.raises(TypeError):
        decode_region(tiles[0], tables, 0, 10, 0, 10, 0, b"read-only")
    truncated = tiles[0][: len(tiles[0]) // 3]
    decode_region(truncated, tables, 0, 10, 0, 10, 0, buffer)  # warnings only, like a full decode


def test_reader_patches_equal_the_stored_pixels(tmp_path):
    image = textured(1500, 1300, 3, seed=3)
    path = tmp_path / "rgb.tif"
    with ImageWriter(path, image.shape[:2], spacing=0.5, tile_size=256) as writer:
        writer.fill(image)
    stored = tifffile.imread(path)
    reader = ImageReader(path)
    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = (int(v) for v in rng.integers(1, 400, 2))
        row, col = int(rng.integers(0, 1500 - height)), int(rng.integers(0, 1300 - width))
        patch = reader.read(0.5, row, col, height, width)
        assert np.array_equal(patch, stored[row : row + height, col : col + width])
