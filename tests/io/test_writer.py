"""Tests of digipath.io.writer.ImageWriter: round trips through tifffile and OpenSlide."""

from __future__ import annotations

import contextlib
import os
import tempfile
import tracemalloc

import imagecodecs
import numpy as np
import openslide
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digipath.errors import ImageClosedError, ImageWriteError
from digipath.io import tiff_layout
from digipath.io.writer import ImageWriter

# --------------------------------------------------------------------------------------------
# Helpers


def smooth_rgb(rows: int, cols: int) -> np.ndarray:
    """A smooth colourful (rows, cols, 3) uint8 image (JPEG-friendly)."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    red = 128 + 100 * np.sin(x / 97.0)
    green = 128 + 90 * np.cos(y / 61.0)
    blue = 60 + 150 * (x + y) / (rows + cols)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def blocks(rows: int, cols: int, values: int, dtype: str, seed: int = 0) -> np.ndarray:
    """A (rows, cols) label image of 8x8 blocks with random labels below ``values``."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, values, size=(-(-rows // 8), -(-cols // 8)))
    return np.kron(coarse, np.ones((8, 8), dtype=np.int64))[:rows, :cols].astype(dtype)


def downsample(array: np.ndarray, interpolation: str) -> np.ndarray:
    """The expected 2x downsampling of a (rows, cols, channels) array (numpy reference)."""
    if interpolation == "nearest":
        return array[::2, ::2]
    rows, cols = array.shape[:2]
    padded = np.pad(array, ((0, rows % 2), (0, cols % 2), (0, 0)), mode="edge")
    if array.dtype.kind == "f":
        total = padded.astype(np.float64)
        total = total[0::2, 0::2] + total[1::2, 0::2] + total[0::2, 1::2] + total[1::2, 1::2]
        return (total / 4).astype(array.dtype)
    total = padded.astype(np.int64)
    total = total[0::2, 0::2] + total[1::2, 0::2] + total[0::2, 1::2] + total[1::2, 1::2]
    return ((total + 2) // 4).astype(array.dtype)  # mean rounded half up


def pyramid(array: np.ndarray, levels: int, interpolation: str) -> list[np.ndarray]:
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    result = [array]
    for _ in range(levels - 1):
        result.append(downsample(result[-1], interpolation))
    return result


def read_levels(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """Every page of the file as a (rows, cols, channels) array."""
    with tifffile.TiffFile(path) as tif:
        levels = []
        for page in tif.pages:
            data = page.asarray()
            levels.append(data if data.ndim == 3 else data[:, :, np.newaxis])
        return levels


def raw_tiles(path: str | os.PathLike[str]) -> list[list[bytes]]:
    """The encoded bytes of every tile of every page."""
    with tifffile.TiffFile(path) as tif:
        result = []
        for page in tif.pages:
            tiles = []
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
                tif.filehandle.seek(offset)
                tiles.append(tif.filehandle.read(count))
            result.append(tiles)
        return result


def write_tiles(writer: ImageWriter, array: np.ndarray, order: list[tuple[int, int]]) -> None:
    size = writer.tile_size
    for row, col in order:
        writer.write(array[row : row + size, col : col + size], row, col)


def addresses(shape: tuple[int, int], size: int) -> list[tuple[int, int]]:
    return [(r, c) for r in range(0, shape[0], size) for c in range(0, shape[1], size)]


def check_spacings(path: str | os.PathLike[str], shapes, spacing: float) -> None:
    """Every page's X/YResolution (pixels per cm) gives spacing * level-0 size / level size."""
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == len(shapes)
        for page, (rows, cols) in zip(tif.pages, shapes, strict=True):
            assert page.tags["ResolutionUnit"].value == 3  # centimetre
            x_num, x_den = page.tags["XResolution"].value
            y_num, y_den = page.tags["YResolution"].value
            x_spacing = 1e4 * x_den / x_num
            y_spacing = 1e4 * y_den / y_num
            assert x_spacing == pytest.approx(spacing * shapes[0][1] / cols, rel=1e-6)
            assert y_spacing == pytest.approx(spacing * shapes[0][0] / rows, rel=1e-6)


def leftovers(folder: str | os.PathLike[str]) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------------------------
# Round trips


def test_rgb_jpeg_round_trip(tmp_path):
    shape = (1100, 1700)  # not multiples of the tile size
    spacing = 0.2431
    image = smooth_rgb(*shape)
    path = tmp_path / "rgb.tif"
    with ImageWriter(path, shape, spacing=spacing, tile_size=256, min_level_size=450) as writer:
        assert writer.compression == "jpeg"
        assert writer.interpolation == "mean"
        writer.fill(image)
    assert writer.level_shapes == [(1100, 1700), (550, 850), (275, 425)]
    assert leftovers(tmp_path) == ["rgb.tif"]

    expected = pyramid(image, 3, "mean")
    levels = read_levels(path)
    assert [level.shape for level in levels] == [(*s, 3) for s in writer.level_shapes]
    for level, reference in zip(levels, expected, strict=True):
        assert level.dtype == np.uint8
        assert np.abs(level.astype(np.int16) - reference).mean() < 3
    check_spacings(path, writer.level_shapes, spacing)
    with tifffile.TiffFile(path) as tif:
        assert not tif.is_bigtiff
        assert [page.tags["NewSubfileType"].value for page in tif.pages] == [0, 1, 1]
        page = tif.pages[0]
        assert page.compression == 7  # JPEG
        assert page.photometric == 6  # YCbCr: what libtiff, OpenSlide and tifffile decode
        assert (page.tilelength, page.tilewidth) == (256, 256)
        assert page.tags["Software"].value.startswith("digipath ")
        assert [level.shape[:2] for level in tif.series[0].levels] == writer.level_shapes

    slide = openslide.OpenSlide(path)
    try:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.level_dimensions == tuple((c, r) for r, c in writer.level_shapes)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(spacing, rel=1e-6)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(spacing, rel=1e-6)
        region = np.asarray(slide.read_region((0, 0), 0, (shape[1], shape[0])))
        assert region.shape == (*shape, 4)
        assert np.abs(region[:, :, :3].astype(np.int16) - image).mean() < 3
        coarse = np.asarray(slide.read_region((0, 0), 2, (425, 275)))[:, :, :3]
        assert np.abs(coarse.astype(np.int16) - expected[2]).mean() < 3
    finally:
        slide.close()


def test_label_mask_lzw_round_trip(tmp_path):
    shape = (1000, 1300)
    mask = blocks(*shape, values=6, dtype="uint8")
    path = tmp_path / "mask.tif"
    with ImageWriter(
        path, shape, spacing=0.5, dtype="uint8", channels=1, tile_size=128, min_level_size=200
    ) as writer:
        assert (writer.compression, writer.interpolation) == ("lzw", "nearest")
        for row, col in addresses(shape, 128):
            writer.write(mask[row : row + 128, col : col + 128, np.newaxis], row, col)
    shapes = writer.level_shapes
    assert shapes == [(1000, 1300), (500, 650), (250, 325), (125, 163)]
    expected = pyramid(mask, len(shapes), "nearest")
    levels = read_levels(path)
    for level, reference in zip(levels, expected, strict=True):
        assert level.dtype == np.uint8
        np.testing.assert_array_equal(level, reference)
    check_spacings(path, shapes, 0.5)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == 5 and tif.pages[0].photometric == 1

    # OpenSlide opens 8-bit masks as generic-tiff and returns the labels as grey RGBA.
    slide = openslide.OpenSlide(path)
    try:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.level_dimensions == tuple((c, r) for r, c in shapes)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-6)
        region = np.asarray(slide.read_region((0, 0), 0, (shape[1], shape[0])))
        np.testing.assert_array_equal(region[:, :, 0], mask)
        np.testing.assert_array_equal(region[:, :, 2], mask)
    finally:
        slide.close()


def test_float_probability_map_deflate_round_trip(tmp_path):
    shape = (700, 530)
    rng = np.random.default_rng(3)
    probabilities = rng.random((*shape, 2)).astype(np.float32)
    path = tmp_path / "map.tif"
    with ImageWriter(
        path,
        shape,
        spacing=2.0,
        dtype="float32",
        channels=2,
        compression="deflate",
        tile_size=64,
        min_level_size=100,
    ) as writer:
        assert writer.interpolation == "mean"
        writer.fill(probabilities)
    shapes = writer.level_shapes
    assert shapes == [(700, 530), (350, 265), (175, 133), (88, 67)]
    expected = pyramid(probabilities, len(shapes), "mean")
    levels = read_levels(path)
    np.testing.assert_array_equal(levels[0], probabilities)
    for level, reference in zip(levels, expected, strict=True):
        assert level.dtype == np.float32
        np.testing.assert_allclose(level, reference, rtol=1e-6, atol=1e-7)
    check_spacings(path, shapes, 2.0)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.compression == 8 and page.photometric == 1
        assert page.tags["SampleFormat"].value == 3 or page.sampleformat == 3
        assert page.tags["ExtraSamples"].value == (0,)

    # OpenSlide (4.0.1) cannot read 32-bit samples ("TIFFRGBAImageOK: Sorry, can not handle
    # images with 32-bit samples"); digipath reads such maps with tifffile. If a later
    # OpenSlide opens them, the levels must still be right.
    with contextlib.suppress(openslide.OpenSlideError):
        slide = openslide.OpenSlide(path)
        assert slide.level_dimensions == tuple((c, r) for r, c in shapes)
        slide.close()


@pytest.mark.parametrize("interpolation", ["nearest", "mean"])
def test_uint16_mask_round_trip(tmp_path, interpolation):
    shape = (333, 517)
    mask = blocks(*shape, values=60000, dtype="uint16", seed=5)
    mask[::7, ::3] += 1  # not constant over 2x2 blocks, so the means need rounding
    path = tmp_path / "mask16.tif"
    with ImageWriter(
        path,
        shape,
        spacing=0.25,
        dtype="uint16",
        channels=1,
        tile_size=64,
        min_level_size=60,
        interpolation=interpolation,
    ) as writer:
        assert writer.compression == "lzw"
        writer.fill(mask)
    shapes = writer.level_shapes
    assert len(shapes) == 5
    for level, reference in zip(read_levels(path), pyramid(mask, 5, interpolation), strict=True):
        assert level.dtype == np.uint16
        np.testing.assert_array_equal(level, reference)
    check_spacings(path, shapes, 0.25)

    # OpenSlide opens 16-bit images as generic-tiff, but libtiff's RGBA conversion keeps
    # only the high byte of each sample: fine for viewing, useless for label values. It also
    # garbles the partial tiles of the right border (rows > 0), for files written by
    # tifffile.imwrite too: a libtiff/OpenSlide limitation, so only full tiles are compared.
    slide = openslide.OpenSlide(path)
    try:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.level_dimensions == tuple((c, r) for r, c in shapes)
        region = np.asarray(slide.read_region((0, 0), 0, (512, 320)))
        np.testing.assert_array_equal(region[:, :, 0], (mask[:320, :512] >> 8).astype(np.uint8))
    finally:
        slide.close()


@pytest.mark.parametrize(
    ("dtype", "channels", "compression"),
    [
        ("uint8", 5, "lzw"),
        ("uint8", 3, "none"),
        ("uint32", 1, "deflate"),
        ("uint32", 3, "lzw"),
        ("uint16", 4, "deflate"),
        ("float32", 3, "none"),
        ("uint8", 1, "jpeg"),
    ],
)
def test_other_layouts_round_trip(tmp_path, dtype, channels, compression):
    shape = (150, 230)
    rng = np.random.default_rng(7)
    if compression == "jpeg":
        image = smooth_rgb(*shape)[:, :, :1]
    elif dtype == "float32":
        image = rng.normal(size=(*shape, channels)).astype(dtype)
    else:
        image = rng.integers(0, np.iinfo(dtype).max, (*shape, channels), endpoint=True)
        image = image.astype(dtype)
    path = tmp_path / "image.tif"
    with ImageWriter(
        path,
        shape,
        spacing=1.0,
        dtype=dtype,
        channels=channels,
        compression=compression,
        tile_size=32,
        min_level_size=40,
        interpolation="mean",
    ) as writer:
        writer.fill(image)
    expected = pyramid(image, len(writer.level_shapes), "mean")
    levels = read_levels(path)
    assert [level.shape for level in levels] == [(*s, channels) for s in writer.level_shapes]
    for level, reference in zip(levels, expected, strict=True):
        assert level.dtype == np.dtype(dtype)
        if compression == "jpeg":
            assert np.abs(level.astype(np.int16) - reference).mean() < 3
        elif dtype == "float32":
            np.testing.assert_allclose(level, reference, rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(level, reference)
    with tifffile.TiffFile(path) as tif:
        photometric = 2 if channels == 3 else 1
        assert tif.pages[0].photometric == photometric


def test_bool_mask_is_stored_as_uint8(tmp_path):
    shape = (90, 70)
    mask = blocks(*shape, values=2, dtype="bool")
    path = tmp_path / "bool.tif"
    with ImageWriter(path, shape, spacing=None, dtype="bool", channels=1, tile_size=32) as writer:
        assert writer.dtype == np.uint8
        writer.fill(mask)
    (level,) = read_levels(path)
    assert level.dtype == np.uint8
    np.testing.assert_array_equal(level[:, :, 0], mask.astype(np.uint8))


def test_no_spacing_writes_no_resolution(tmp_path):
    path = tmp_path / "nospacing.tif"
    with ImageWriter(path, (100, 100), spacing=None, tile_size=64) as writer:
        writer.fill(smooth_rgb(100, 100))
    assert writer.spacing is None and writer.level_spacings is None
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        assert "XResolution" not in tags and "ResolutionUnit" not in tags
    slide = openslide.OpenSlide(path)
    try:
        assert "openslide.mpp-x" not in slide.properties
    finally:
        slide.close()


def test_software_tag(tmp_path):
    path = tmp_path / "software.tif"
    with ImageWriter(path, (32, 32), spacing=1.0, tile_size=32, software="my pipeline 2") as w:
        w.fill(smooth_rgb(32, 32))
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].tags["Software"].value == "my pipeline 2"


# --------------------------------------------------------------------------------------------
# Order, sparsity, determinism


def test_out_of_order_writes_give_the_same_tiles(tmp_path):
    shape = (600, 700)
    image = smooth_rgb(*shape)
    order = addresses(shape, 64)
    shuffled = list(order)
    np.random.default_rng(11).shuffle(shuffled)
    paths = []
    for name, tiles, threads in (("a", order, 1), ("b", shuffled, 2), ("c", order[::-1], 3)):
        path = tmp_path / f"{name}.tif"
        with ImageWriter(
            path, shape, spacing=0.5, tile_size=64, min_level_size=100, threads=threads
        ) as writer:
            write_tiles(writer, image, tiles)
        paths.append(path)
    reference = raw_tiles(paths[0])
    assert len(reference) == 4
    for path in paths[1:]:
        assert raw_tiles(path) == reference  # every tile of every level, byte for byte
        for level, expected in zip(read_levels(path), read_levels(paths[0]), strict=True):
            np.testing.assert_array_equal(level, expected)


def test_same_calls_give_the_same_file(tmp_path):
    shape = (300, 260)
    image = smooth_rgb(*shape)
    contents = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.tif"
        with ImageWriter(path, shape, spacing=0.5, tile_size=32, min_level_size=50) as writer:
            writer.fill(image)
        contents.append(path.read_bytes())
    assert contents[0] == contents[1]


def test_missing_tiles_come_back_as_fill(tmp_path):
    shape = (500, 450)
    mask = blocks(*shape, values=4, dtype="uint8") + 1  # never equal to the fill value 9
    written = [(r, c) for r, c in addresses(shape, 64) if (r // 64 + c // 64) % 3 == 0]
    expected = np.full_like(mask, 9)
    for row, col in written:
        expected[row : row + 64, col : col + 64] = mask[row : row + 64, col : col + 64]
    path = tmp_path / "sparse.tif"
    with ImageWriter(
        path,
        shape,
        spacing=1.0,
        dtype="uint8",
        channels=1,
        tile_size=64,
        min_level_size=60,
        fill=9,
        interpolation="mean",
    ) as writer:
        write_tiles(writer, mask, written)
    levels = read_levels(path)
    for level, reference in zip(
        levels, pyramid(expected, len(writer.level_shapes), "mean"), strict=True
    ):
        np.testing.assert_array_equal(level, reference)

    # All missing level-0 tiles point at one shared fill tile.
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        grid_cols = -(-shape[1] // 64)
        missing = {
            (page.dataoffsets[i], page.databytecounts[i])
            for i in range(len(page.dataoffsets))
            if ((i // grid_cols) * 64, (i % grid_cols) * 64) not in written
        }
        assert len(missing) == 1


def test_empty_image_is_all_fill_and_small(tmp_path):
    shape = (4096, 4096)
    path = tmp_path / "empty.tif"
    with ImageWriter(path, shape, spacing=1.0, dtype="uint8", channels=1, fill=3) as writer:
        pass
    assert writer.level_shapes == [(4096, 4096), (2048, 2048), (1024, 1024)]
    assert path.stat().st_size < 10_000
    with tifffile.TiffFile(path) as tif:
        assert len({offset for page in tif.pages for offset in page.dataoffsets}) == 1
        assert (tif.pages[2].asarray() == 3).all()


def test_tiles_equal_to_fill_share_the_fill_tile(tmp_path):
    shape = (256, 256)
    image = np.full((*shape, 3), 255, np.uint8)
    image[:64, :64] = 10
    path = tmp_path / "white.tif"
    with ImageWriter(path, shape, spacing=0.5, tile_size=64, fill=255) as writer:
        writer.fill(image)
    with tifffile.TiffFile(path) as tif:
        offsets = list(tif.pages[0].dataoffsets)
        assert len(set(offsets)) == 2
        assert np.abs(tif.pages[0].asarray().astype(int) - image).max() <= 3


def test_border_tiles_may_be_full_size(tmp_path):
    """A full-size tile at the border is cropped; beyond the border the file holds fill."""
    shape = (100, 70)
    path = tmp_path / "border.tif"
    with ImageWriter(path, shape, spacing=1.0, dtype="uint8", channels=1, tile_size=64) as w:
        for row, col in addresses(shape, 64):
            w.write(np.full((64, 64), 200, np.uint8), row, col)
    assert (read_levels(path)[0] == 200).all()
    last = raw_tiles(path)[0][-1]  # the bottom-right tile: 36 x 6 pixels inside the image
    segment = np.frombuffer(imagecodecs.lzw_decode(last), np.uint8).reshape(64, 64)
    assert (segment[:36, :6] == 200).all()
    assert (segment[36:, :] == 0).all() and (segment[:, 6:] == 0).all()


# --------------------------------------------------------------------------------------------
# Lifecycle: temporary file, close, abort


def test_exception_inside_with_leaves_no_file(tmp_path):
    path = tmp_path / "broken.tif"
    with pytest.raises(RuntimeError, match="boom"):
        with ImageWriter(path, (300, 300), spacing=1.0, tile_size=64, threads=2) as writer:
            writer.write(smooth_rgb(64, 64), 0, 0)
            assert len(leftovers(tmp_path)) == 1  # the temporary file
            assert leftovers(tmp_path)[0].startswith(".broken.tif.")
            raise RuntimeError("boom")
    assert leftovers(tmp_path) == []
    assert writer.closed
    with pytest.raises(ImageClosedError):
        writer.write(smooth_rgb(64, 64), 0, 64)


def test_abort_close_and_closed_errors(tmp_path):
    path = tmp_path / "image.tif"
    writer = ImageWriter(path, (64, 64), spacing=1.0, tile_size=32)
    writer.write(smooth_rgb(32, 32), 0, 0)
    writer.abort()
    writer.abort()
    writer.close()  # harmless after abort, and makes no file
    assert leftovers(tmp_path) == []

    writer = ImageWriter(path, (64, 64), spacing=1.0, tile_size=32)
    writer.fill(smooth_rgb(64, 64))
    assert not path.exists()  # only under the temporary name until close
    writer.close()
    writer.close()
    writer.abort()  # no effect after close
    assert leftovers(tmp_path) == ["image.tif"]
    with pytest.raises(ImageClosedError) as info:
        writer.write(smooth_rgb(32, 32), 0, 0)
    assert info.value.path == str(path)
    with pytest.raises(ImageClosedError):
        writer.fill(smooth_rgb(64, 64))


def test_close_replaces_an_existing_file(tmp_path):
    path = tmp_path / "image.tif"
    path.write_bytes(b"old")
    with ImageWriter(path, (40, 40), spacing=1.0, tile_size=32) as writer:
        writer.fill(smooth_rgb(40, 40))
    assert read_levels(path)[0].shape == (40, 40, 3)
    assert leftovers(tmp_path) == ["image.tif"]


@pytest.mark.parametrize("threads", [1, 2])
def test_dropped_writer_removes_its_temporary_file(tmp_path, threads, caplog):
    writer = ImageWriter(tmp_path / "x.tif", (40, 40), spacing=1.0, tile_size=32, threads=threads)
    writer.write(smooth_rgb(32, 32), 0, 0)
    assert len(leftovers(tmp_path)) == 1
    del writer  # no reference cycle: the temporary file goes at once
    assert leftovers(tmp_path) == []
    assert "never closed" in caplog.text


# --------------------------------------------------------------------------------------------
# BigTIFF


def test_forced_bigtiff(tmp_path):
    path = tmp_path / "big.tif"
    with ImageWriter(path, (300, 200), spacing=0.5, tile_size=64, bigtiff=True) as writer:
        writer.fill(smooth_rgb(300, 200))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    check_spacings(path, writer.level_shapes, 0.5)
    slide = openslide.OpenSlide(path)
    try:
        assert slide.level_dimensions == ((200, 300),)
        region = np.asarray(slide.read_region((0, 0), 0, (200, 300)))[:, :, :3]
        assert np.abs(region.astype(np.int16) - smooth_rgb(300, 200)).mean() < 3
    finally:
        slide.close()


def test_bigtiff_chosen_when_offsets_do_not_fit(tmp_path, monkeypatch):
    path = tmp_path / "auto.tif"
    image = blocks(200, 200, values=250, dtype="uint8")
    writer = ImageWriter(path, (200, 200), spacing=0.5, dtype="uint8", channels=1, tile_size=64)
    monkeypatch.setattr(tiff_layout, "CLASSIC_LIMIT", 5000)  # pretend the file is huge
    writer.fill(image)
    writer.close()
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
        np.testing.assert_array_equal(tif.pages[0].asarray(), image)


def test_bigtiff_false_with_offsets_too_large_fails(tmp_path, monkeypatch):
    image = blocks(200, 200, values=250, dtype="uint8")
    writer = ImageWriter(
        tmp_path / "a.tif", (200, 200), spacing=0.5, dtype="uint8", channels=1, tile_size=64,
        bigtiff=False, threads=1,
    )  # fmt: skip
    monkeypatch.setattr(tiff_layout, "CLASSIC_LIMIT", 5000)
    with pytest.raises(ImageWriteError, match="bigtiff"):
        writer.fill(image)  # fails while writing, as soon as the data passes the limit
    assert writer.closed
    assert leftovers(tmp_path) == []

    monkeypatch.setattr(tiff_layout, "CLASSIC_LIMIT", 2**32 - 1)
    writer = ImageWriter(
        tmp_path / "b.tif", (200, 200), spacing=0.5, dtype="uint8", channels=1, tile_size=64,
        bigtiff=False,
    )  # fmt: skip
    writer.fill(image)
    monkeypatch.setattr(tiff_layout, "CLASSIC_LIMIT", 5000)  # the directories do not fit
    with pytest.raises(ImageWriteError, match="bigtiff"):
        writer.close()
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Invalid input


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"compression": "jpeg2000"}, "compression"),
        ({"dtype": "float32", "channels": 1, "compression": "jpeg"}, "compression"),
        ({"dtype": "uint16", "channels": 3, "compression": "jpeg"}, "compression"),
        ({"channels": 4, "compression": "jpeg"}, "compression"),
        ({"tile_size": 100}, "tile_size"),
        ({"tile_size": 0}, "tile_size"),
        ({"tile_size": 8}, "tile_size"),
        ({"shape": (0, 100)}, "shape"),
        ({"shape": (100, -5)}, "shape"),
        ({"shape": (100,)}, "shape"),
        ({"shape": (10.5, 100)}, "shape"),
        ({"jpeg_quality": 0}, "jpeg_quality"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
        ({"spacing": -0.5}, "spacing"),
        ({"spacing": 0}, "spacing"),
        ({"spacing": float("nan")}, "spacing"),
        ({"spacing": "fine"}, "spacing"),
        ({"dtype": "int16"}, "dtype"),
        ({"dtype": "float64"}, "dtype"),
        ({"dtype": "uint32", "channels": 5}, "channels"),
        ({"channels": 0}, "channels"),
        ({"interpolation": "cubic"}, "interpolation"),
        ({"min_level_size": 0}, "min_level_size"),
        ({"dtype": "uint8", "channels": 1, "fill": 256}, "fill"),
        ({"dtype": "uint8", "channels": 1, "fill": -1}, "fill"),
        ({"dtype": "uint16", "channels": 1, "fill": 0.5}, "fill"),
        ({"dtype": "bool", "channels": 1, "fill": 2}, "fill"),
        ({"bigtiff": "yes"}, "bigtiff"),
        ({"software": "digipath \u00e9"}, "software"),
        ({"threads": 0}, "threads"),
    ],
)
def test_invalid_parameters(tmp_path, kwargs, name):
    arguments = {"shape": (100, 100), "spacing": 0.5, **kwargs}
    shape = arguments.pop("shape")
    with pytest.raises(ImageWriteError) as info:
        ImageWriter(tmp_path / "x.tif", shape, **arguments)
    message = str(info.value)
    assert f"{name}=" in message and "expected" in message
    assert info.value.path == str(tmp_path / "x.tif")
    assert leftovers(tmp_path) == []


def test_missing_folder(tmp_path):
    with pytest.raises(ImageWriteError, match="does not exist"):
        ImageWriter(tmp_path / "no" / "x.tif", (10, 10), spacing=1.0)


def test_invalid_tiles(tmp_path):
    shape = (100, 150)
    path = tmp_path / "x.tif"
    with ImageWriter(path, shape, spacing=1.0, dtype="uint8", channels=1, tile_size=64) as w:
        tile = np.zeros((64, 64), np.uint8)
        for row, col in [(0, 10), (10, 0), (-64, 0), (0, 192), (128, 0)]:
            with pytest.raises(ImageWriteError, match="multiple of the tile size 64"):
                w.write(tile, row, col)
        with pytest.raises(ImageWriteError, match="expected an integer"):
            w.write(tile, 0.0, 0)
        with pytest.raises(ImageWriteError, match=r"shape \(32, 64\); expected \(64, 64, 1\)"):
            w.write(tile[:32], 0, 0)  # smaller tiles only at the border
        with pytest.raises(ImageWriteError, match="shape"):
            w.write(np.zeros((65, 64), np.uint8), 0, 0)
        with pytest.raises(ImageWriteError, match="shape"):
            w.write(np.zeros((64, 64, 3), np.uint8), 0, 0)
        with pytest.raises(ImageWriteError, match="shape"):
            w.write(np.zeros((30, 64), np.uint8), 64, 0)  # bottom border needs 36 rows
        with pytest.raises(ImageWriteError, match="dtype int64; expected uint8"):
            w.write(tile.astype(np.int64), 0, 0)
        with pytest.raises(ImageWriteError, match="dtype float32; expected uint8"):
            w.write(tile.astype(np.float32), 0, 0)
        w.write(np.ones((64, 64), bool), 0, 0)  # bool casts to uint8 without loss
        with pytest.raises(ImageWriteError, match="written before"):
            w.write(tile, 0, 0)
        w.write(np.full((36, 22, 1), 5, np.uint8), 64, 128)  # the exact border remainder
        with pytest.raises(ImageWriteError, match="fill: content has shape"):
            w.fill(np.zeros((100, 149), np.uint8))
    level = read_levels(path)[0]
    assert (level[:64, :64] == 1).all() and (level[64:, 128:] == 5).all()
    assert (level[:64, 64:] == 0).all()


def test_float64_tiles_are_refused_for_float32(tmp_path):
    with ImageWriter(
        tmp_path / "x.tif", (32, 32), spacing=1.0, dtype="float32", channels=1, tile_size=32
    ) as w:
        with pytest.raises(ImageWriteError, match="float64; expected float32"):
            w.write(np.zeros((32, 32)), 0, 0)
        w.write(np.zeros((32, 32), np.uint8), 0, 0)  # uint8 -> float32 is exact


def test_level_shapes_and_spacings():
    with tempfile.TemporaryDirectory() as folder:
        writer = ImageWriter(
            os.path.join(folder, "x.tif"), (5000, 3), spacing=0.5, channels=1, dtype="uint8"
        )
        try:
            assert writer.level_shapes == [(5000, 3), (2500, 2), (1250, 1), (625, 1)]
            spacings = writer.level_spacings
            assert spacings is not None
            assert spacings[1] == (1.0, 0.75)
            assert spacings[3] == (0.5 * 5000 / 625, 1.5)
        finally:
            writer.abort()


@pytest.mark.parametrize("spacing", [1e-5, 0.0917, 0.2431, 0.25, 0.5, 1 / 3, 16.4, 8e3, 1e7])
def test_resolution_rationals_round_trip(spacing):
    numerator, denominator = tiff_layout.pixels_per_centimetre(spacing)
    assert 0 < numerator < 2**32 and 0 < denominator < 2**32
    assert 1e4 * denominator / numerator == pytest.approx(spacing, rel=1e-9)


# --------------------------------------------------------------------------------------------
# Properties over random shapes


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rows=st.integers(1, 200),
    cols=st.integers(1, 200),
    tile_size=st.sampled_from([16, 32]),
    min_level_size=st.integers(4, 64),
    kind=st.sampled_from(
        [("uint8", 1), ("uint8", 3), ("uint16", 1), ("float32", 2), ("uint32", 1)]
    ),
    interpolation=st.sampled_from(["mean", "nearest"]),
    compression=st.sampled_from(["lzw", "deflate", "none"]),
    seed=st.integers(0, 2**16),
)
def test_lossless_round_trip_property(
    rows, cols, tile_size, min_level_size, kind, interpolation, compression, seed
):
    dtype, channels = kind
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        image = rng.random((rows, cols, channels), dtype=np.float32)
    else:
        high = min(np.iinfo(dtype).max, 2**31)
        image = rng.integers(0, high, (rows, cols, channels), endpoint=True).astype(dtype)
    order = addresses((rows, cols), tile_size)
    rng.shuffle(order)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "x.tif")
        with ImageWriter(
            path,
            (rows, cols),
            spacing=0.5,
            dtype=dtype,
            channels=channels,
            compression=compression,
            tile_size=tile_size,
            interpolation=interpolation,
            min_level_size=min_level_size,
            threads=1,
        ) as writer:
            write_tiles(writer, image, order)
        shapes = writer.level_shapes
        assert all(max(shape) > min_level_size for shape in shapes[:-1])
        assert max(shapes[-1]) <= min_level_size
        levels = read_levels(path)
        expected = pyramid(image, len(shapes), interpolation)
        np.testing.assert_array_equal(levels[0], image)
        for level, reference, shape in zip(levels, expected, shapes, strict=True):
            assert level.shape == (*shape, channels)
            if dtype == "float32":
                np.testing.assert_allclose(level, reference, rtol=1e-6)
            else:
                np.testing.assert_array_equal(level, reference)
        assert os.listdir(folder) == ["x.tif"]


# --------------------------------------------------------------------------------------------
# Memory


def test_memory_stays_bounded_by_about_a_row_of_tiles(tmp_path):
    size, tile_size = 16384, 512
    level0 = size * size  # bytes of level 0 (uint8, 1 channel): 256 MiB
    row_of_tiles = size * tile_size  # 8 MiB
    tile = np.full((tile_size, tile_size), 1, np.uint8)  # not the fill value: really encoded
    path = tmp_path / "large.tif"
    tracemalloc.start()
    try:
        with ImageWriter(
            path,
            (size, size),
            spacing=0.5,
            dtype="uint8",
            channels=1,
            compression="deflate",  # much faster than LZW on constant tiles
            tile_size=tile_size,
            threads=2,
        ) as writer:
            for row in range(0, size, tile_size):
                for col in range(0, size, tile_size):
                    writer.write(tile, row, col)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.level_shapes[-1] == (1024, 1024)
    assert peak < 3 * row_of_tiles < level0 / 8
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 5
        assert (tif.pages[4].asarray() == 1).all()
