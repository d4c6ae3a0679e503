"""Tests of the OpenSlide backend against the openslide-python API on real slides."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from digipath.errors import (
    CorruptImageError,
    ImageClosedError,
    MissingImageError,
    NotAnImageError,
)
from digipath.io.backends import openslide as backend_module
from digipath.io.backends.openslide import OpenSlideBackend

NDPI = ("wsi", "ndpi", "bioformats-pr2759-test3-DAPI-2-387.ndpi")
SVS_J2K = ("wsi", "aperio", "tcga-cr-7395-01a-01-ts1.svs")  # 2 levels, downsample 2.0005
SVS_JPEG = ("wsi", "aperio", "CMU-1-Small-Region.svs")  # 1 level, label/macro/thumbnail
NDPI_MPP = 0.2281750559028887


@pytest.fixture(scope="module")
def ndpi(test_data: Path) -> Path:
    return test_data.joinpath(*NDPI)


@pytest.fixture(scope="module")
def svs_j2k(test_data: Path) -> Path:
    return test_data.joinpath(*SVS_J2K)


@pytest.fixture(scope="module")
def svs_jpeg(test_data: Path) -> Path:
    return test_data.joinpath(*SVS_JPEG)


@pytest.fixture
def open_backend():
    """Open backends and close them after the test."""
    opened: list[OpenSlideBackend] = []

    def _open(path: Path) -> OpenSlideBackend:
        backend = OpenSlideBackend(str(path))
        opened.append(backend)
        return backend

    yield _open
    for backend in opened:
        backend.close()


def openslide_rgba(path: Path, location: tuple[int, int], level: int, size: tuple[int, int]):
    """What openslide-python's public API returns, as an (h, w, 4) uint8 array."""
    slide = openslide.OpenSlide(str(path))
    try:
        return np.asarray(slide.read_region(location, level, size).convert("RGBA"))
    finally:
        slide.close()


def random_regions(rng: np.random.Generator, shape: tuple[int, int], count: int, largest: int):
    """``count`` random (row, col, height, width) regions inside a level of ``shape``."""
    regions = []
    for _ in range(count):
        height = int(rng.integers(1, min(largest, shape[0]) + 1))
        width = int(rng.integers(1, min(largest, shape[1]) + 1))
        row = int(rng.integers(0, shape[0] - height + 1))
        col = int(rng.integers(0, shape[1] - width + 1))
        regions.append((row, col, height, width))
    return regions


# --------------------------------------------------------------------------------------------
# Levels and metadata


@pytest.mark.parametrize("parts", [NDPI, SVS_J2K, SVS_JPEG], ids=["ndpi", "svs-j2k", "svs-jpeg"])
def test_levels_match_openslide(test_data: Path, open_backend, parts):
    path = test_data.joinpath(*parts)
    backend = open_backend(path)
    slide = openslide.OpenSlide(str(path))
    try:
        assert len(backend.levels) == slide.level_count
        mpp = slide.properties.get("openslide.mpp-x")
        for index, level in enumerate(backend.levels):
            width, height = slide.level_dimensions[index]
            assert level.shape == (height, width)
            assert level.downsampling == slide.level_downsamples[index]
            props = slide.properties
            assert level.tile_shape == (
                int(props[f"openslide.level[{index}].tile-height"]),
                int(props[f"openslide.level[{index}].tile-width"]),
            )
            if mpp is None:
                assert level.spacing is None
            else:
                assert level.spacing == pytest.approx(float(mpp) * slide.level_downsamples[index])
        assert backend.metadata.properties == dict(slide.properties)
    finally:
        slide.close()


def test_ndpi_levels_and_metadata(ndpi: Path, open_backend):
    backend = open_backend(ndpi)
    assert backend.name == "openslide"
    assert len(backend.levels) == 7
    assert backend.levels[0].shape == (4864, 3968)
    assert [level.downsampling for level in backend.levels] == [2.0**i for i in range(7)]
    assert [level.spacing for level in backend.levels] == pytest.approx(
        [NDPI_MPP * 2**i for i in range(7)]
    )
    assert backend.levels[0].tile_shape == (8, 3968)  # NDPI strips: full-width tiles
    meta = backend.metadata
    assert meta.vendor == "hamamatsu"
    assert meta.compression == "jpeg"
    assert meta.channels == 3
    assert meta.dtype == np.uint8
    assert meta.spacing == pytest.approx(NDPI_MPP)


def test_svs_metadata(svs_j2k: Path, svs_jpeg: Path, open_backend):
    j2k = open_backend(svs_j2k)
    assert j2k.metadata.vendor == "aperio"
    assert j2k.metadata.compression == "jpeg2000"
    assert j2k.metadata.spacing is None  # this slide carries no MPP
    assert j2k.levels[1].downsampling == pytest.approx(2.0005055500659967)
    jpeg = open_backend(svs_jpeg)
    assert jpeg.metadata.compression == "jpeg"
    assert jpeg.metadata.spacing == pytest.approx(0.499)


@pytest.mark.parametrize(
    ("mpp_x", "mpp_y", "expected", "warns"),
    [
        ("0.25", "0.25", 0.25, False),
        ("0.25", "0.2501", 0.25005, False),
        ("0.25", "0.30", 0.275, True),
        ("0.25", None, 0.25, False),
        (None, None, None, False),
        ("0", "nan", None, False),
    ],
)
def test_level0_spacing(mpp_x, mpp_y, expected, warns, caplog):
    properties = {}
    if mpp_x is not None:
        properties["openslide.mpp-x"] = mpp_x
    if mpp_y is not None:
        properties["openslide.mpp-y"] = mpp_y
    with caplog.at_level("WARNING", logger=backend_module.logger.name):
        spacing = backend_module._level0_spacing(properties, "slide.ndpi")
    assert spacing == (pytest.approx(expected) if expected is not None else None)
    assert ("not square" in caplog.text) == warns


# --------------------------------------------------------------------------------------------
# Regions


def test_read_region_equals_openslide_integer_downsamples(ndpi: Path, open_backend):
    backend = open_backend(ndpi)
    rng = np.random.default_rng(1)
    for level in (0, 1, 3, 6):
        downsample = int(backend.levels[level].downsampling)
        for row, col, height, width in random_regions(rng, backend.levels[level].shape, 4, 300):
            out = np.zeros((height, width, 3), np.uint8)
            backend.read_region(level, row, col, out, fill=255)
            expected = openslide_rgba(
                ndpi, (col * downsample, row * downsample), level, (width, height)
            )
            assert (expected[..., 3] == 255).all()
            np.testing.assert_array_equal(out, expected[..., :3])


def test_read_region_whole_level(ndpi: Path, open_backend):
    backend = open_backend(ndpi)
    height, width = backend.levels[4].shape
    out = np.empty((height, width, 3), np.uint8)
    backend.read_region(4, 0, 0, out, fill=0)
    expected = openslide_rgba(ndpi, (0, 0), 4, (width, height))
    np.testing.assert_array_equal(out, expected[..., :3])


def test_read_region_svs_matches_openslide(svs_j2k: Path, open_backend):
    """Non-integer downsample: the backend asks OpenSlide for the nearest level-0 pixel."""
    backend = open_backend(svs_j2k)
    rng = np.random.default_rng(2)
    assert backend.level_origin(1, 37, 100) == (200, 74)
    assert backend.level_origin(1, 1700, 2000) == (4001, 3401)
    for level in (0, 1):
        for row, col, height, width in random_regions(rng, backend.levels[level].shape, 3, 200):
            out = np.zeros((height, width, 3), np.uint8)
            backend.read_region(level, row, col, out, fill=255)
            expected = openslide_rgba(
                svs_j2k, backend.level_origin(level, row, col), level, (width, height)
            )
            opaque = expected[..., 3] == 255
            np.testing.assert_array_equal(out[opaque], expected[..., :3][opaque])
            # OpenSlide's sub-pixel painting leaves faint seams (alpha 254) at tile borders;
            # they are blended with the fill, which openslide-python's unpremultiplied output
            # can only approximate.
            alpha = expected[..., 3][~opaque, None].astype(float)
            blended = expected[..., :3][~opaque] * alpha / 255 + 255 * (1 - alpha / 255)
            assert np.abs(out[~opaque] - blended).max(initial=0) <= 1


def test_read_region_level0_equals_stored_pixels(svs_j2k: Path, open_backend):
    backend = open_backend(svs_j2k)
    with tifffile.TiffFile(svs_j2k) as tif:  # decode one stored tile: row 1, column 2
        page = tif.pages[0]
        index = 1 * -(-page.imagewidth // page.tilewidth) + 2
        tif.filehandle.seek(page.dataoffsets[index])
        tile = page.decode(tif.filehandle.read(page.databytecounts[index]), index)[0][0]
    out = np.empty((256, 256, 3), np.uint8)
    backend.read_region(0, 256, 512, out, fill=0)
    np.testing.assert_array_equal(out, tile)


def test_read_region_in_bands(ndpi: Path, open_backend, monkeypatch):
    backend = open_backend(ndpi)
    whole = np.empty((1000, 700, 3), np.uint8)
    backend.read_region(0, 1234, 567, whole, fill=0)
    monkeypatch.setattr(backend_module, "CHUNK_PIXELS", 700 * 97)  # bands of 97 rows
    banded = np.empty_like(whole)
    backend.read_region(0, 1234, 567, banded, fill=0)
    np.testing.assert_array_equal(banded, whole)


def test_read_region_rejects_bad_out(ndpi: Path, open_backend):
    backend = open_backend(ndpi)
    with pytest.raises(ValueError, match="uint8"):
        backend.read_region(0, 0, 0, np.empty((4, 4, 3), np.float32), fill=0)
    with pytest.raises(ValueError, match="uint8"):
        backend.read_region(0, 0, 0, np.empty((4, 4, 4), np.uint8), fill=0)
    backend.read_region(0, 0, 0, np.empty((0, 4, 3), np.uint8), fill=0)  # empty is fine


def test_composite_over_fill():
    # premultiplied ARGB words: opaque red, transparent, half-transparent premultiplied green
    argb = np.array([[0xFFFF0000, 0x00000000, 0x80008000]], np.uint32)
    out = np.zeros((1, 3, 3), np.uint8)
    backend_module._composite(argb, out, 200.0)
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[0, 1].tolist() == [200, 200, 200]
    spill = round(200 * (255 - 0x80) / 255)
    assert out[0, 2].tolist() == [spill, 0x80 + spill, spill]
    backend_module._composite(argb, out, 0.0)
    assert out[0, 1].tolist() == [0, 0, 0]


def test_concurrent_reads_equal_serial(ndpi: Path, open_backend):
    backend = open_backend(ndpi)
    rng = np.random.default_rng(3)
    jobs = [
        (level, *region)
        for level in (0, 1, 2)
        for region in random_regions(rng, backend.levels[level].shape, 8, 256)
    ]

    def read(job):
        level, row, col, height, width = job
        out = np.empty((height, width, 3), np.uint8)
        backend.read_region(level, row, col, out, fill=255)
        return out

    serial = [read(job) for job in jobs]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(read, jobs * 2))
    for index, result in enumerate(parallel):
        np.testing.assert_array_equal(result, serial[index % len(jobs)])


# --------------------------------------------------------------------------------------------
# Associated images


def test_associated_images(ndpi: Path, svs_jpeg: Path, open_backend):
    backend = open_backend(ndpi)
    assert backend.associated_names == ("macro",)
    macro = backend.associated("macro")
    slide = openslide.OpenSlide(str(ndpi))
    try:
        expected = np.asarray(slide.associated_images["macro"].convert("RGBA"))
    finally:
        slide.close()
    assert macro.shape == (406, 1188, 3)
    assert macro.dtype == np.uint8
    assert (expected[..., 3] == 255).all()
    np.testing.assert_array_equal(macro, expected[..., :3])

    svs = open_backend(svs_jpeg)
    assert svs.associated_names == ("label", "macro", "thumbnail")
    assert svs.associated("label").shape == (463, 387, 3)
    with pytest.raises(KeyError, match="label, macro, thumbnail"):
        svs.associated("overview")


# --------------------------------------------------------------------------------------------
# Errors and closing


def test_missing_file(tmp_path: Path):
    with pytest.raises(MissingImageError) as caught:
        OpenSlideBackend(str(tmp_path / "absent.ndpi"))
    assert isinstance(caught.value, FileNotFoundError)
    assert caught.value.path == str(tmp_path / "absent.ndpi")


@pytest.mark.parametrize("content", [b"", b"this is not a slide\n" * 100, bytes(range(256)) * 40])
def test_not_an_image(tmp_path: Path, content: bytes):
    path = tmp_path / "garbage.ndpi"
    path.write_bytes(content)
    with pytest.raises(NotAnImageError, match="does not recognise"):
        OpenSlideBackend(str(path))


def test_directory_is_not_an_image(tmp_path: Path):
    with pytest.raises(NotAnImageError, match="directory"):
        OpenSlideBackend(str(tmp_path))


def test_corrupt_strip_raises_corrupt_image_error(ndpi: Path, tmp_path: Path):
    path = tmp_path / "corrupt.ndpi"
    shutil.copyfile(ndpi, path)
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[0]
        size = tif.pages[0].databytecounts[0]
    with open(path, "r+b") as file:
        file.seek(offset + size // 2)
        file.write(np.random.default_rng(4).integers(0, 256, 200_000, np.uint8).tobytes())
    backend = OpenSlideBackend(str(path))
    try:
        out = np.empty((512, 512, 3), np.uint8)
        with pytest.raises(CorruptImageError) as caught:
            backend.read_region(0, 0, 0, out, fill=0)
        assert caught.value.level == 0
    finally:
        backend.close()


def test_closed_backend(ndpi: Path):
    backend = OpenSlideBackend(str(ndpi))
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(ImageClosedError):
        backend.read_region(0, 0, 0, np.empty((8, 8, 3), np.uint8), fill=0)
    with pytest.raises(ImageClosedError):
        backend.associated("macro")
    assert backend.levels[0].shape == (4864, 3968)  # the structure stays readable
    assert "closed" in repr(backend)
