"""Tests of digipath.io.ImageReader: spacing rules, padding, round trips, real slides, errors."""

from __future__ import annotations

import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digipath.errors import (
    CorruptImageError,
    DigipathError,
    ImageClosedError,
    MissingImageError,
    NotAnImageError,
    RegionTooLargeError,
    SpacingError,
    UnsupportedCompressionError,
)
from digipath.io import ImageReader, ImageWriter

# --------------------------------------------------------------------------------------------
# Synthetic images


def smooth_rgb(rows: int, cols: int) -> np.ndarray:
    """A smooth colourful (rows, cols, 3) uint8 image."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    red = 128 + 100 * np.sin(x / 97.0)
    green = 128 + 90 * np.cos(y / 61.0)
    blue = 60 + 150 * (x + y) / (rows + cols)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def labels(rows: int, cols: int, values: int = 6, dtype: str = "uint8", seed: int = 0):
    """A (rows, cols, 1) label mask of 16x16 blocks."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, values, size=(-(-rows // 16), -(-cols // 16)))
    mask = np.kron(coarse, np.ones((16, 16), dtype=np.int64))[:rows, :cols]
    return mask.astype(dtype)[:, :, np.newaxis]


def write(path: Path, array: np.ndarray, spacing: float | None, compression: str, **kw) -> Path:
    with ImageWriter(
        path,
        array.shape[:2],
        spacing=spacing,
        dtype=array.dtype,
        channels=array.shape[2],
        compression=compression,
        **kw,
    ) as writer:
        writer.fill(array)
    return path


def stored_levels(path: Path) -> list[np.ndarray]:
    """Every level of a pyramid as tifffile decodes it, (rows, cols, channels)."""
    with tifffile.TiffFile(path) as tiff:
        result = []
        for level in tiff.series[0].levels:
            array = level.asarray()
            result.append(array[:, :, np.newaxis] if array.ndim == 2 else array)
        return result


def padded(array: np.ndarray, row: int, col: int, height: int, width: int, fill) -> np.ndarray:
    """Reference region of ``array`` with padding outside it."""
    out = np.full((height, width, array.shape[2]), fill, dtype=array.dtype)
    r0, r1 = max(row, 0), min(row + height, array.shape[0])
    c0, c1 = max(col, 0), min(col + width, array.shape[1])
    if r0 < r1 and c0 < c1:
        out[r0 - row : r1 - row, c0 - col : c1 - col] = array[r0:r1, c0:c1]
    return out


@pytest.fixture(scope="module")
def rgb_pyramid(tmp_path_factory) -> Path:
    """A 3000 x 2000 lossless RGB pyramid at 0.25 µm/px (levels 0.25, 0.5, 1, 2 µm/px)."""
    folder = tmp_path_factory.mktemp("rgb")
    image = smooth_rgb(3000, 2000)
    image[::7, ::5] = 30  # texture, so that resampling errors show
    return write(folder / "rgb.tif", image, 0.25, "lzw", tile_size=256, min_level_size=400)


@pytest.fixture(scope="module")
def mask_pyramid(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mask")
    return write(folder / "mask.tif", labels(2100, 1700), 0.5, "lzw", interpolation="nearest")


# --------------------------------------------------------------------------------------------
# Round trips


def test_rgb_jpeg_round_trip(tmp_path):
    image = smooth_rgb(2500, 1800)
    path = write(tmp_path / "rgb.tif", image, 0.5, "jpeg", jpeg_quality=90)
    with ImageReader(path) as reader:
        assert reader.shapes == [(2500, 1800), (1250, 900), (625, 450)]
        assert reader.spacings == pytest.approx([0.5, 1.0, 2.0])
        assert reader.channels == 3 and reader.dtype == np.uint8
        assert reader.tile_shape == (512, 512)
        assert reader.compression == "jpeg"
        ours = reader.content(0.5)
        assert np.abs(ours.astype(int) - image).mean() < 2
        assert np.array_equal(ours, stored_levels(path)[0])
    slide = openslide.OpenSlide(str(path))
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    theirs = np.asarray(slide.read_region((0, 0), 1, slide.level_dimensions[1]))[..., :3]
    assert np.array_equal(ImageReader(path).content(1.0), theirs)


def test_uint8_mask_round_trip(mask_pyramid):
    mask = labels(2100, 1700)
    with ImageReader(mask_pyramid) as reader:
        assert reader.channels == 1 and reader.dtype == np.uint8
        assert reader.default_fill() == 0
        assert reader.default_interpolation() == "nearest"
        assert np.array_equal(reader.content(0.5), mask)
        assert np.array_equal(reader.content(1.0), mask[::2, ::2])
    slide = openslide.OpenSlide(str(mask_pyramid))
    assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.5)
    theirs = np.asarray(slide.read_region((0, 0), 0, slide.dimensions))
    assert np.array_equal(theirs[..., 0], mask[..., 0])


def test_float32_map_round_trip(tmp_path):
    y, x = np.mgrid[0:1500, 0:1300]
    probabilities = ((np.sin(x / 50) * np.cos(y / 70) + 1) / 2).astype(np.float32)[..., None]
    path = write(tmp_path / "map.tif", probabilities, 2.0, "deflate")
    with ImageReader(path) as reader:
        assert reader.dtype == np.float32 and reader.channels == 1
        assert reader.default_fill() == 0 and reader.default_interpolation() == "area"
        assert reader.spacings[0] == pytest.approx(2.0)
        assert np.array_equal(reader.content(2.0), probabilities)
        assert np.array_equal(reader.content(4.0), stored_levels(path)[1])
    with tifffile.TiffFile(path) as tiff:
        x_resolution = tiff.pages[0].tags["XResolution"].value
        assert 1e4 / (x_resolution[0] / x_resolution[1]) == pytest.approx(2.0)


def test_uint16_mask_round_trip(tmp_path):
    mask = labels(900, 700, values=3000, dtype="uint16")
    path = write(tmp_path / "mask16.tif", mask, 1.0, "deflate", interpolation="nearest")
    with ImageReader(path) as reader:
        assert reader.dtype == np.uint16
        assert np.array_equal(reader.content(1.0), mask)
        assert set(np.unique(reader.read(3.0, 0, 0, 200, 200))) <= set(np.unique(mask))


@pytest.mark.parametrize("compression", ["none", "lzw", "deflate", "jpeg"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_compression_reads_back(tmp_path, compression, channels):
    image = smooth_rgb(700, 900)[:, :, :channels].copy()
    path = write(
        tmp_path / "image.tif", image, 0.25, compression, tile_size=256, min_level_size=500
    )
    with ImageReader(path) as reader:
        assert reader.compression == compression and reader.channels == channels
        stored = stored_levels(path)
        for spacing, level in ((0.25, 0), (0.5, 1)):
            patch = reader.read(spacing, 100, 77, 300, 290)
            expected = padded(stored[level], 100, 77, 300, 290, reader.default_fill())
            assert np.array_equal(patch, expected)
        if compression != "jpeg":
            assert np.array_equal(reader.content(0.25), image)


def test_spacing_override_and_files_without_spacing(tmp_path):
    path = write(tmp_path / "bare.tif", smooth_rgb(600, 500), None, "lzw", min_level_size=200)
    reader = ImageReader(path)
    assert reader.spacings == [None, None, None]
    with pytest.raises(SpacingError, match="states no pixel spacing"):
        reader.read(0.5, 0, 0, 10, 10)
    overridden = ImageReader(path, spacing=0.8)
    assert overridden.spacings == pytest.approx([0.8, 1.6, 3.2])
    assert overridden.read(1.6, 0, 0, 10, 10).shape == (10, 10, 3)
    assert reader.thumbnail(100).shape == (100, 83, 3)


# --------------------------------------------------------------------------------------------
# Spacing rules


def test_level_matching_at_the_tolerance_edges(rgb_pyramid):
    reader = ImageReader(rgb_pyramid)
    assert reader.spacings == pytest.approx([0.25, 0.5, 1.0, 2.0])
    assert reader.level(0.25) == 0
    assert reader.level(0.3125) == 0  # +25 % of 0.25: inside
    assert reader.level(0.375) == 1  # -25 % of 0.5: inside level 1, outside level 0
    assert reader.level(0.625) == 1  # +25 % of 0.5
    assert reader.level(0.75) == 2  # -25 % of 1.0
    with pytest.raises(SpacingError):
        reader.level(0.7)  # between the two intervals
    assert reader.level(0.7, tolerance=0.5) == 1  # both match with ±50 %: the finest wins
    assert reader.level(2.5) == 3
    with pytest.raises(SpacingError) as caught:
        reader.level(2.51)
    assert caught.value.spacing == 2.51 and "levels: 0: 0.25" in str(caught.value)
    assert str(rgb_pyramid) in str(caught.value)
    assert reader.level(0.33, tolerance=0.5) == 0
    with pytest.raises(SpacingError):
        reader.level(0.26, tolerance=0.0)
    assert reader.level(0.5, tolerance=0.0) == 1


def test_refine_gives_the_spacing_of_the_returned_pixels(rgb_pyramid):
    reader = ImageReader(rgb_pyramid)
    assert reader.refine(0.3) == pytest.approx(0.25)
    assert reader.refine(0.7) == 0.7  # no level within 25 %: resampled to 0.7
    assert reader.refine(0.7, tolerance=0.5) == pytest.approx(0.5)


def test_matching_level_is_returned_as_stored(rgb_pyramid):
    reader = ImageReader(rgb_pyramid)
    levels = stored_levels(rgb_pyramid)
    for spacing, level in ((0.3, 0), (0.45, 1), (1.2, 2)):
        patch = reader.read(spacing, 40, 33, 100, 120)
        assert np.array_equal(patch, levels[level][40:140, 33:153])


def test_no_matching_level_downsamples_from_the_next_finer(rgb_pyramid):
    reader = ImageReader(rgb_pyramid)
    level3 = stored_levels(rgb_pyramid)[3].astype(np.float64)  # 2.0 µm/px
    patch = reader.read(4.0, 10, 20, 50, 40)  # no level within 25 %: 2x from 2.0 µm/px
    expected = level3[20:120, 40:120].reshape(50, 2, 40, 2, 3).mean(axis=(1, 3))
    assert np.abs(patch - expected).max() <= 0.5 + 1e-9
    with pytest.raises(SpacingError):
        reader.read(4.0, 10, 20, 50, 40, strict=True)
    assert reader.shape(4.0) == (188, 125)  # 187.5 rounds to even


def test_non_integer_factor_is_exact_area_average(rgb_pyramid):
    reader = ImageReader(rgb_pyramid)
    level0 = stored_levels(rgb_pyramid)[0].astype(np.float64)
    # 0.3125 is the last spacing matching level 0; 0.375 matches level 1. Ask for 0.25 * 1.5
    # with zero tolerance: resampled from level 0 by a factor of 1.5.
    patch = reader.read(0.375, 3, 5, 4, 4, tolerance=0.0)
    rows = (3 + np.arange(5)) * 1.5
    cols = (5 + np.arange(5)) * 1.5
    for i in range(4):
        for j in range(4):
            total = 0.0
            for r in range(int(rows[i]), int(np.ceil(rows[i + 1]))):
                for c in range(int(cols[j]), int(np.ceil(cols[j + 1]))):
                    weight = (min(rows[i + 1], r + 1) - max(rows[i], r)) * (
                        min(cols[j + 1], c + 1) - max(cols[j], c)
                    )
                    total = total + weight * level0[r, c]
            assert np.abs(patch[i, j] - total / 2.25).max() <= 0.5 + 1e-6


def test_finer_than_level_zero_upsamples(rgb_pyramid):
    reader = ImageReader(rgb_pyramid)
    level0 = stored_levels(rgb_pyramid)[0]
    patch = reader.read(0.125, 100, 100, 64, 64)
    assert patch.shape == (64, 64, 3)
    assert np.array_equal(patch[::2, ::2], level0[50:82, 50:82])  # 2x: each pixel covers one
    nearest = reader.read(0.125, 100, 100, 64, 64, interpolation="nearest")
    assert np.array_equal(nearest, np.repeat(np.repeat(level0[50:82, 50:82], 2, 0), 2, 1))


def test_masks_resample_by_nearest(mask_pyramid):
    reader = ImageReader(mask_pyramid)
    mask = labels(2100, 1700)
    patch = reader.read(1.3, 0, 0, 300, 300)  # from level 1 (1.0 µm/px) by 1.3
    assert set(np.unique(patch)) <= set(np.unique(mask))
    level1 = mask[::2, ::2]
    centres = np.floor((np.arange(300) + 0.5) * 1.3).astype(int)
    assert np.array_equal(patch, level1[centres[:, None], centres[None, :]])
    area = reader.read(1.3, 0, 0, 300, 300, interpolation="area")
    assert not np.array_equal(area, patch)  # averages across label borders


# --------------------------------------------------------------------------------------------
# Padding


def test_out_of_bounds_padding(rgb_pyramid, mask_pyramid):
    reader = ImageReader(rgb_pyramid)
    level1 = stored_levels(rgb_pyramid)[1]
    for row, col in ((-20, -30), (1480, 980), (-5, 990), (700, -100)):
        patch = reader.read(0.5, row, col, 64, 64)
        assert np.array_equal(patch, padded(level1, row, col, 64, 64, 255))
    outside = reader.read(0.5, 5000, 5000, 8, 8, fill=7)
    assert (outside == 7).all()
    around = reader.read(0.5, -10, -10, 1520, 1020, fill=0)
    assert np.array_equal(around, padded(level1, -10, -10, 1520, 1020, 0))
    mask = ImageReader(mask_pyramid).read(0.5, -4, -4, 8, 8)
    assert (mask[:4] == 0).all() and mask.dtype == np.uint8
    edge = reader.read(1.6, -3, -3, 10, 10, tolerance=0.0)  # resampled and padded
    assert (edge[:3] == 255).all() and (edge[:, :3] == 255).all()


# --------------------------------------------------------------------------------------------
# Properties under random requests


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    level=st.integers(0, 3),
    row=st.integers(-300, 3100),
    col=st.integers(-300, 2100),
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    wiggle=st.floats(-0.2, 0.2),
)
def test_random_regions_at_matching_spacings(rgb_pyramid, level, row, col, height, width, wiggle):
    reader = ImageReader(rgb_pyramid)
    spacing = 0.25 * 2**level * (1 + wiggle)
    expected_level = reader.level(spacing)
    array = stored_levels_cached(rgb_pyramid)[expected_level]
    patch = reader.read(spacing, row, col, height, width)
    assert np.array_equal(patch, padded(array, row, col, height, width, 255))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spacing=st.floats(0.1, 8.0),
    row=st.integers(-100, 400),
    col=st.integers(-100, 400),
    height=st.integers(1, 80),
    width=st.integers(1, 80),
)
def test_random_spacings_give_the_requested_shape(rgb_pyramid, spacing, row, col, height, width):
    reader = ImageReader(rgb_pyramid)
    patch = reader.read(spacing, row, col, height, width)
    assert patch.shape == (height, width, 3) and patch.dtype == np.uint8
    # Area averaging never leaves the range of its inputs (stored values and the fill).
    assert patch.min() >= 0 and patch.max() <= 255
    uniform = reader.read(spacing, -1000, -1000, height, width, fill=9)
    assert (uniform == 9).all()


_CACHE: dict[Path, list[np.ndarray]] = {}


def stored_levels_cached(path: Path) -> list[np.ndarray]:
    if path not in _CACHE:
        _CACHE[path] = stored_levels(path)
    return _CACHE[path]


# --------------------------------------------------------------------------------------------
# Whole images, thumbnails, limits


def test_content_refuses_past_the_memory_cap(rgb_pyramid):
    reader = ImageReader(rgb_pyramid)
    with pytest.raises(RegionTooLargeError) as caught:
        reader.content(0.25, max_bytes=1_000_000)
    assert caught.value.shape == (3000, 2000, 3) and "max_bytes" in str(caught.value)
    assert reader.content(0.25, max_bytes=18_000_000).shape == (3000, 2000, 3)
    assert reader.content(2.0).shape == (375, 250, 3)


def test_thumbnail(rgb_pyramid):
    reader = ImageReader(rgb_pyramid)
    thumbnail = reader.thumbnail(300)
    assert thumbnail.shape == (300, 200, 3)
    reference = stored_levels(rgb_pyramid)[3].astype(float)  # 375 x 250 -> 300 x 200
    assert np.abs(thumbnail.mean(axis=(0, 1)) - reference.mean(axis=(0, 1))).max() < 2
    assert reader.thumbnail(5000).shape == (3000, 2000, 3)
    with pytest.raises(ValueError, match="max_size"):
        reader.thumbnail(0)


def test_bad_arguments(rgb_pyramid):
    reader = ImageReader(rgb_pyramid)
    with pytest.raises(ValueError, match="height and width"):
        reader.read(0.25, 0, 0, 0, 5)
    with pytest.raises(TypeError, match="row"):
        reader.read(0.25, 0.5, 0, 5, 5)
    with pytest.raises(ValueError, match="spacing"):
        reader.read(-1, 0, 0, 5, 5)
    with pytest.raises(ValueError, match="interpolation"):
        reader.read(0.25, 0, 0, 5, 5, interpolation="cubic")
    with pytest.raises(ValueError, match="backend"):
        ImageReader(rgb_pyramid, backend="vips")


# --------------------------------------------------------------------------------------------
# Life cycle, threads, processes


def test_close_context_manager_and_pickle(rgb_pyramid):
    with ImageReader(rgb_pyramid, tolerance=0.1) as reader:
        patch = reader.read(0.5, 100, 100, 50, 50)
        copy = pickle.loads(pickle.dumps(reader))
    assert reader.closed
    with pytest.raises(ImageClosedError):
        reader.read(0.5, 100, 100, 50, 50)
    assert copy.tolerance == 0.1 and not copy.closed
    assert np.array_equal(copy.read(0.5, 100, 100, 50, 50), patch)
    reader.close()  # idempotent


def test_hash_is_the_sha256_of_the_file(rgb_pyramid):
    import hashlib

    reader = ImageReader(rgb_pyramid)
    assert reader.hash() == hashlib.sha256(rgb_pyramid.read_bytes()).hexdigest()
    assert reader.hash() is reader.hash()  # computed once


def test_concurrent_reads_equal_serial_reads(rgb_pyramid):
    reader = ImageReader(rgb_pyramid)
    rng = np.random.default_rng(1)
    requests = [
        (
            float(rng.choice([0.25, 0.5, 0.7, 1.0])),
            int(rng.integers(-50, 1400)),
            int(rng.integers(-50, 900)),
            150,
            130,
        )
        for _ in range(40)
    ]
    serial = [reader.read(*request) for request in requests]
    results: list = [None] * len(requests)

    def work(start: int) -> None:
        for index in range(start, len(requests), 4):
            results[index] = reader.read(*requests[index])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(np.array_equal(a, b) for a, b in zip(serial, results, strict=True))


# --------------------------------------------------------------------------------------------
# Real slides


def test_every_slide_opens(wsi_files):
    for path in wsi_files:
        with ImageReader(path) as reader:
            assert reader.level_count >= 1
            rows, cols = reader.shapes[0]
            assert reader.downsamplings[0] == 1.0
            spacing = reader.spacings[0] or 1.0
            source = reader if reader.spacings[0] else ImageReader(path, spacing=1.0)
            patch = source.read(spacing, rows // 2, cols // 2, 64, 64)
            assert patch.shape == (64, 64, reader.channels)
            assert reader.thumbnail(128).shape[:2] <= (128, 128)


def test_equal_to_openslide_on_real_slides(wsi_files):
    compared = 0
    rng = np.random.default_rng(7)
    for path in wsi_files:
        try:
            slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError:
            continue  # OME-TIFF: OpenSlide does not read it
        reader = ImageReader(path, spacing=None if slide.properties.get("openslide.mpp-x") else 1.0)
        assert reader.shapes == [(h, w) for w, h in slide.level_dimensions]
        assert reader.downsamplings == pytest.approx(list(slide.level_downsamples), rel=1e-4)
        if "openslide.mpp-x" in slide.properties:
            assert reader.spacings[0] == pytest.approx(
                float(slide.properties["openslide.mpp-x"]), rel=0.02
            )
        for level, (cols, rows) in enumerate(slide.level_dimensions):
            factor = slide.level_downsamples[level]
            # OpenSlide places a region by level-0 coordinates; where the downsampling is not
            # an integer (2.0005 on the TCGA slide) only the origin maps to a whole pixel, and
            # elsewhere OpenSlide itself interpolates a sub-pixel shift.
            whole = float(factor).is_integer()
            for attempt in range(4):
                height = int(rng.integers(1, min(rows, 300) + 1))
                width = int(rng.integers(1, min(cols, 300) + 1))
                row = int(rng.integers(0, rows - height + 1)) if attempt else 0
                col = int(rng.integers(0, cols - width + 1)) if attempt else 0
                ours = reader.read(reader.spacings[level], row, col, height, width, tolerance=0)
                theirs = slide.read_region(
                    (round(col * factor), round(row * factor)), level, (width, height)
                )
                theirs = np.asarray(theirs)[..., :3]
                if whole or attempt == 0:
                    assert np.array_equal(ours, theirs), (path, level, row, col)
                else:
                    assert np.abs(ours.astype(int) - theirs).mean() < 3, (path, level, row, col)
                compared += 1
        slide.close()
    assert compared >= 12


def test_svs_metadata_and_associated_images(test_data):
    path = test_data / "wsi" / "aperio" / "CMU-1-Small-Region.svs"
    reader = ImageReader(path)
    assert reader.vendor == "aperio" and reader.backend == "tiff"
    assert reader.spacings == pytest.approx([0.499])
    assert reader.properties["aperio.MPP"] == "0.499"
    assert set(reader.associated) == {"thumbnail", "label", "macro"}
    slide = openslide.OpenSlide(str(path))
    label = np.asarray(slide.associated_images["label"].convert("RGB"))
    assert reader.associated["label"].shape == label.shape
    with pytest.raises(KeyError, match="available"):
        reader.associated["barcode"]


def test_jpeg2000_svs_without_spacing(test_data):
    reader = ImageReader(test_data / "wsi" / "aperio" / "tcga-cr-7395-01a-01-ts1.svs")
    assert reader.compression == "jpeg2000" and reader.spacings == [None, None]
    assert reader.downsamplings[1] == pytest.approx(2.0005, abs=1e-4)


def test_big_endian_ome_tiff(test_data):
    path = test_data / "wsi" / "ome-tiff" / "OS-1-detail.ome.tif"
    reader = ImageReader(path)
    assert reader.vendor == "ome-tiff"
    assert reader.spacings[0] == pytest.approx(0.2271, abs=1e-4)
    assert np.array_equal(reader.content(reader.spacings[0]), tifffile.imread(path))


def test_ndpi_goes_through_openslide(test_data):
    reader = ImageReader(test_data / "wsi" / "ndpi" / "bioformats-pr2759-test3-DAPI-2-387.ndpi")
    assert reader.backend == "openslide"
    assert reader.spacings[0] == pytest.approx(0.22818, rel=1e-3)
    assert "macro" in reader.associated


# --------------------------------------------------------------------------------------------
# Errors


def test_missing_file(tmp_path):
    with pytest.raises(MissingImageError) as caught:
        ImageReader(tmp_path / "nothing.svs")
    assert isinstance(caught.value, FileNotFoundError)
    assert "nothing.svs" in str(caught.value)


@pytest.mark.parametrize(
    "content", [b"", b"hello, this is not an image" * 100, bytes(range(256)) * 64]
)
def test_garbage_files(tmp_path, content):
    path = tmp_path / "garbage.svs"
    path.write_bytes(content)
    with pytest.raises(NotAnImageError) as caught:
        ImageReader(path)
    assert str(path) in str(caught.value)


def test_damaged_tiff_header(tmp_path):
    path = tmp_path / "header.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 60)
    with pytest.raises(DigipathError) as caught:
        ImageReader(path)
    assert isinstance(caught.value, NotAnImageError | CorruptImageError)
    assert str(path) in str(caught.value)


def test_truncated_slide_with_directories_at_the_end(test_data, tmp_path):
    source = test_data / "wsi" / "aperio" / "CMU-1-Small-Region.svs"  # IFDs after the tiles
    path = tmp_path / "truncated.svs"
    shutil.copyfile(source, path)
    with open(path, "r+b") as handle:
        handle.truncate(source.stat().st_size // 2)
    with pytest.raises(CorruptImageError) as caught:
        ImageReader(path)
    assert str(path) in str(caught.value) and "truncated" in str(caught.value)


def test_truncated_slide_with_directories_first(test_data, tmp_path, caplog):
    source = test_data / "wsi" / "ome-tiff" / "OS-2-ndpi.ome.tif"  # IFD before the tiles
    path = tmp_path / "truncated.ome.tif"
    with tifffile.TiffFile(source) as tiff:
        page = tiff.pages[0]
        cut = int(page.dataoffsets[-1]) + int(page.databytecounts[-1]) // 2
    shutil.copyfile(source, path)
    with open(path, "r+b") as handle:
        handle.truncate(cut)
    reader = ImageReader(path)
    assert "truncated" in caplog.text
    spacing = reader.spacings[0]
    assert reader.read(spacing, 0, 0, 100, 100).shape == (100, 100, 3)  # intact tiles read
    with pytest.raises(CorruptImageError) as caught:
        reader.read(spacing, 2150, 2150, 40, 40)  # the last tile is cut
    error = caught.value
    assert str(path) in str(error) and "truncated" in str(error)
    assert error.level == 0 and error.tile == (4, 4)


def test_corrupt_tile_data(tmp_path):
    path = write(tmp_path / "bad.tif", smooth_rgb(600, 600), 0.5, "jpeg", tile_size=256)
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        offset, count = int(page.dataoffsets[4]), int(page.databytecounts[4])
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\x00" * count
    path.write_bytes(bytes(data))
    reader = ImageReader(path)
    with pytest.raises(CorruptImageError, match=r"level 0, tile \(row 1, col 1\)"):
        reader.read(0.5, 256, 256, 10, 10)


def test_unsupported_compression(tmp_path):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), tile=(16, 16), compression="lzw")
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tiff:
        tag = tiff.pages[0].tags["Compression"]
        value_offset = tag.valueoffset
    data[value_offset : value_offset + 2] = (34661).to_bytes(2, "little")  # JBIG
    path.write_bytes(bytes(data))
    with pytest.raises(UnsupportedCompressionError) as caught:
        ImageReader(path)
    assert str(path) in str(caught.value) and "34661" in str(caught.value)
