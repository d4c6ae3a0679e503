"""Tests of digipath.io.deepzoom: the Deep Zoom grid, tiles, overlays of maps and errors."""

from __future__ import annotations

import logging
import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import openslide
import openslide.deepzoom
import pytest

from digipath.errors import DigipathError, ImageError
from digipath.io import ImageReader, ImageWriter
from digipath.io.deepzoom import (
    DEEPZOOM_NAMESPACE,
    DeepZoom,
    DeepZoomError,
    DeepZoomOverlay,
    deepzoom_dimensions,
    label_colours,
    probability_colours,
)

SLIDE_SHAPE = (1501, 1103)  # (rows, cols): odd sizes, so every level rounds up
SLIDE_SPACING = 0.25
MAP_SPACING = 1.0  # 4 x coarser than the slide
SQUARE = (100, 150, 60, 110)  # rows [100, 150) x cols [60, 110) of the map, label 2
CMU = ("wsi", "aperio", "CMU-1-Small-Region.svs")  # 1 level, 0.499 µm/px, JPEG
TCGA = ("wsi", "aperio", "tcga-cr-7395-01a-01-ts1.svs")  # 2 levels, no spacing, JPEG 2000


def smooth_rgb(rows: int, cols: int) -> np.ndarray:
    """A smooth colourful (rows, cols, 3) uint8 image with a fine texture."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    red = 128 + 100 * np.sin(x / 97.0)
    green = 128 + 90 * np.cos(y / 61.0)
    blue = 60 + 150 * (x + y) / (rows + cols)
    image = np.stack([red, green, blue], axis=-1).round().astype(np.uint8)
    image[::7, ::5] = 30
    return image


def write(path: Path, array: np.ndarray, spacing: float | None, **kw) -> Path:
    with ImageWriter(
        path,
        array.shape[:2],
        spacing=spacing,
        dtype=array.dtype,
        channels=array.shape[2],
        compression="lzw",
        tile_size=256,
        **kw,
    ) as writer:
        writer.fill(array)
    return path


def map_shape() -> tuple[int, int]:
    """(rows, cols) of a map at MAP_SPACING covering the slide."""
    factor = MAP_SPACING / SLIDE_SPACING
    return math.ceil(SLIDE_SHAPE[0] / factor), math.ceil(SLIDE_SHAPE[1] / factor)


def square_map(dtype: str = "uint8", value: float = 2) -> np.ndarray:
    """A (rows, cols, 1) map at MAP_SPACING, ``value`` on SQUARE and 0 elsewhere."""
    array = np.zeros((*map_shape(), 1), dtype=dtype)
    r0, r1, c0, c1 = SQUARE
    array[r0:r1, c0:c1] = value
    return array


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory) -> Path:
    """A 1501 x 1103 lossless RGB pyramid at 0.25 µm/px (4 levels, the last 188 x 138)."""
    folder = tmp_path_factory.mktemp("deepzoom")
    return write(folder / "slide.tif", smooth_rgb(*SLIDE_SHAPE), SLIDE_SPACING, min_level_size=200)


@pytest.fixture
def slide(slide_path):
    with ImageReader(slide_path) as reader:
        yield reader


@pytest.fixture(scope="module")
def label_map_path(tmp_path_factory) -> Path:
    """A 376 x 276 label map at 1 µm/px with 2 levels and a square of label 2."""
    folder = tmp_path_factory.mktemp("maps")
    return write(folder / "labels.tif", square_map(), MAP_SPACING, min_level_size=300)


@pytest.fixture
def label_map(label_map_path):
    with ImageReader(label_map_path) as reader:
        yield reader


def whole_level(source: DeepZoom, level: int) -> np.ndarray:
    """Deep Zoom ``level`` assembled from its tiles (each tile's part without overlap)."""
    width, height = source.level_dimensions[level]
    first = source.tile_array(level, 0, 0)
    out = np.zeros((height, width, first.shape[2]), dtype=np.uint8)
    cols, rows = source.tile_count(level)
    size = source.tile_size
    for row in range(rows):
        for col in range(cols):
            y0, x0, _, _ = source.tile_region(level, col, row)
            tile = source.tile_array(level, col, row)
            r0, c0 = row * size, col * size
            r1, c1 = min(r0 + size, height), min(c0 + size, width)
            out[r0:r1, c0:c1] = tile[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
    return out


# --------------------------------------------------------------------------------------------
# Geometry


def test_deepzoom_dimensions_follow_the_specification():
    for width, height in [(1, 1), (2, 1), (1103, 1501), (4096, 100), (4097, 3)]:
        dimensions = deepzoom_dimensions(width, height)
        top = math.ceil(math.log2(max(width, height)))
        assert len(dimensions) == top + 1
        for level, (w, h) in enumerate(dimensions):
            assert (w, h) == (
                math.ceil(width / 2 ** (top - level)),
                math.ceil(height / 2 ** (top - level)),
            )


@pytest.mark.parametrize("tile_size, overlap", [(254, 1), (256, 0), (100, 2)])
def test_grid_equals_openslide_deepzoom(slide, slide_path, tile_size, overlap):
    theirs = openslide.deepzoom.DeepZoomGenerator(
        openslide.OpenSlide(str(slide_path)), tile_size=tile_size, overlap=overlap
    )
    ours = DeepZoom(slide, tile_size=tile_size, overlap=overlap)
    assert ours.level_count == theirs.level_count == math.ceil(math.log2(max(SLIDE_SHAPE))) + 1
    assert ours.level_dimensions == list(theirs.level_dimensions)
    assert ours.level_dimensions[-1] == (SLIDE_SHAPE[1], SLIDE_SHAPE[0])
    assert ours.level_tiles == list(theirs.level_tiles)
    for level in range(ours.level_count):
        assert ours.tile_count(level) == theirs.level_tiles[level]
        cols, rows = ours.tile_count(level)
        level_width, level_height = ours.level_dimensions[level]
        for col in range(cols):
            for row in range(rows):
                width, height = theirs.get_tile_dimensions(level, (col, row))
                y0, x0, _, _ = ours.tile_region(level, col, row)
                # OpenSlide lets the overlap run past the level's edge when the last tile is
                # narrower than the overlap; ours stops at the edge
                expected = (min(width, level_width - x0), min(height, level_height - y0))
                assert ours.tile_dimensions(level, col, row) == expected
                if overlap <= 1:
                    assert expected == (width, height)


def test_source_levels_equal_openslides_best_levels(slide, slide_path):
    osr = openslide.OpenSlide(str(slide_path))
    ours = DeepZoom(slide)
    top = ours.level_count - 1
    expected = [osr.get_best_level_for_downsample(2 ** (top - level)) for level in range(top + 1)]
    assert [ours.source_level(level) for level in range(top + 1)] == expected
    assert expected[-4:] == [3, 2, 1, 0]


def test_dzi_descriptor_parses(slide, slide_path):
    for fmt in ("jpeg", "png"):
        source = DeepZoom(slide, format=fmt, tile_size=510, overlap=2)
        root = ElementTree.fromstring(source.dzi())
        assert root.tag == f"{{{DEEPZOOM_NAMESPACE}}}Image"
        assert root.attrib == {"TileSize": "510", "Overlap": "2", "Format": fmt}
        size = root.find(f"{{{DEEPZOOM_NAMESPACE}}}Size")
        assert size is not None
        assert size.attrib == {"Width": str(SLIDE_SHAPE[1]), "Height": str(SLIDE_SHAPE[0])}
        theirs = openslide.deepzoom.DeepZoomGenerator(
            openslide.OpenSlide(str(slide_path)), tile_size=510, overlap=2
        ).get_dzi(fmt)
        reference = ElementTree.fromstring(theirs)
        assert reference.attrib == root.attrib
        assert reference[0].attrib == size.attrib
        assert source.media_type == f"image/{fmt}"


# --------------------------------------------------------------------------------------------
# Tiles


def test_tiles_equal_the_region_read_at_the_level_spacing(slide):
    source = DeepZoom(slide)
    top = source.level_count - 1
    for level in range(top - 6, top + 1):
        spacing = SLIDE_SPACING * 2 ** (top - level)
        cols, rows = source.tile_count(level)
        for col, row in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2), (cols - 1, 0)}:
            tile = source.tile_array(level, col, row)
            y0, x0, height, width = source.tile_region(level, col, row)
            assert tile.shape == (height, width, 3) and tile.dtype == np.uint8
            expected = slide.read(spacing, y0, x0, height, width)
            if level >= top - 3:  # a level of the file matches: returned as stored
                assert np.array_equal(tile, expected), (level, col, row)
                continue
            # The level's last row and col reach past the image: the reader pads them white
            # before averaging, the tiles average the part inside the image only.
            level_width, level_height = source.level_dimensions[level]
            inner = (slice(0, level_height - 1 - y0), slice(0, level_width - 1 - x0))
            difference = np.abs(tile[inner].astype(int) - expected[inner]).mean()
            assert difference < 1.0, (level, col, row, difference)
            assert tile[-1].astype(int).mean() < expected[-1].astype(int).mean() + 1


def test_tiles_are_close_to_openslides(slide, slide_path):
    theirs = openslide.deepzoom.DeepZoomGenerator(openslide.OpenSlide(str(slide_path)))
    ours = DeepZoom(slide)
    compared = 0
    for level in range(ours.level_count - 5, ours.level_count):
        cols, rows = ours.tile_count(level)
        for col, row in {(0, 0), (cols // 2, rows // 2), (cols - 1, rows - 1)}:
            tile = ours.tile_array(level, col, row)
            reference = np.asarray(theirs.get_tile(level, (col, row)))
            if reference.shape != tile.shape:  # OpenSlide's thumbnail() keeps the aspect ratio
                continue
            # the texture aliases differently under Lanczos (OpenSlide) and area averaging;
            # compare what is left after a blur, which still shows any misregistration
            ours_blurred = cv2.GaussianBlur(tile.astype(np.float32), (0, 0), 2)
            theirs_blurred = cv2.GaussianBlur(reference.astype(np.float32), (0, 0), 2)
            assert np.abs(ours_blurred - theirs_blurred).mean() < 2, (level, col, row)
            compared += 1
    assert compared >= 8


def test_stitched_tiles_equal_one_large_tile(slide):
    small = DeepZoom(slide)
    large = DeepZoom(slide, tile_size=4096, overlap=0)
    for level in (small.level_count - 1, small.level_count - 4):
        width, height = small.level_dimensions[level]
        whole = large.tile_array(level, 0, 0)
        assert whole.shape == (height, width, 3)
        assert np.array_equal(whole_level(small, level), whole)


def test_coarse_tiles_are_read_from_coarse_levels(slide, monkeypatch):
    backend = slide._backend
    reads: list[tuple[int, tuple[int, ...]]] = []
    original = backend.read_region

    def spy(level, row, col, out, fill):
        reads.append((level, out.shape))
        return original(level, row, col, out, fill)

    monkeypatch.setattr(backend, "read_region", spy)
    source = DeepZoom(slide)
    top = source.level_count - 1
    for level in range(top + 1):
        reads.clear()
        cols, rows = source.tile_count(level)
        tile = source.tile_array(level, cols - 1, rows - 1)
        used = {read_level for read_level, _ in reads}
        assert used == {min(3, top - level)}, (level, used)
        assert used == {source.source_level(level)}
        # never more than about 4 tiles' worth of source pixels (2x2 for the coarsest levels
        # of a 4-level pyramid, each read from the 188 x 138 level)
        pixels = sum(shape[0] * shape[1] for _, shape in reads)
        assert pixels <= max(4 * tile.shape[0] * tile.shape[1], 188 * 138), (level, pixels)


def test_tile_bytes_decode_to_the_tile(slide):
    level = DeepZoom(slide).level_count - 2
    jpeg = DeepZoom(slide, quality=95)
    data = jpeg.tile(level, 1, 1)
    assert data[:3] == b"\xff\xd8\xff"
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), 1), cv2.COLOR_BGR2RGB)
    tile = jpeg.tile_array(level, 1, 1)
    assert decoded.shape == tile.shape
    assert np.abs(decoded.astype(int) - tile).mean() < 3
    png = DeepZoom(slide, format="png")
    data = png.tile(level, 1, 1)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), 1), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decoded, tile)


def test_concurrent_tiles_equal_serial_tiles(slide):
    source = DeepZoom(slide, format="png")
    addresses = [
        (level, col, row)
        for level in range(source.level_count - 3, source.level_count)
        for col in range(source.tile_count(level)[0])
        for row in range(source.tile_count(level)[1])
    ]
    serial = [source.tile(*address) for address in addresses]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda address: source.tile(*address), addresses * 2))
    assert parallel == serial * 2


def test_grey_and_mask_images_as_slides(tmp_path):
    grey = smooth_rgb(300, 200)[:, :, :1].copy()
    with ImageReader(write(tmp_path / "grey.tif", grey, 0.5)) as reader:
        source = DeepZoom(reader, format="png")
        tile = source.tile_array(source.level_count - 1, 0, 0)
        assert tile.shape == (255, 200, 1)
        decoded = cv2.imdecode(
            np.frombuffer(source.tile(source.level_count - 1, 0, 0), np.uint8), 0
        )
        assert np.array_equal(decoded, tile[:, :, 0])


# --------------------------------------------------------------------------------------------
# Errors


def test_out_of_range_tiles_raise(slide):
    source = DeepZoom(slide)
    top = source.level_count - 1
    cols, rows = source.tile_count(top)
    bad = [
        (-1, 0, 0),
        (top + 1, 0, 0),
        (top, cols, 0),
        (top, 0, rows),
        (top, -1, 0),
        (top, 0, -1),
        (0, 1, 0),
        (1.0, 0, 0),
        (True, 0, 0),
        (top, 0.5, 0),
        ("3", 0, 0),
    ]
    for level, col, row in bad:
        for method in (source.tile, source.tile_array, source.tile_region):
            with pytest.raises(DeepZoomError) as caught:
                method(level, col, row)
            error = caught.value
            assert isinstance(error, ImageError) and isinstance(error, ValueError)
            assert isinstance(error, DigipathError)
            assert error.path == slide.path and slide.path in str(error)
            assert error.level in (level, int(level) if isinstance(level, int) else level)
    with pytest.raises(DeepZoomError, match="from 0 to") as caught:
        source.tile(top, cols, 0)
    assert caught.value.address == (cols, 0)
    with pytest.raises(DeepZoomError):
        source.tile_count(top + 1)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.address == (cols, 0) and str(copy) == str(caught.value)


def test_invalid_parameters_raise(tmp_path, slide):
    for kwargs in (
        {"tile_size": 0},
        {"tile_size": 2.5},
        {"overlap": -1},
        {"format": "gif"},
        {"quality": 0},
        {"quality": 101},
    ):
        with pytest.raises(DeepZoomError):
            DeepZoom(slide, **kwargs)
    assert DeepZoom(slide, format="JPG").format == "jpeg"
    path = write(tmp_path / "float.tif", np.zeros((50, 40, 1), np.float32), 1.0)
    with ImageReader(path) as reader, pytest.raises(DeepZoomError, match="overlay"):
        DeepZoom(reader)


# --------------------------------------------------------------------------------------------
# Overlays


def test_overlay_has_the_slides_grid(slide, label_map):
    source = DeepZoom(slide, tile_size=200, overlap=2)
    overlay = source.overlay(label_map)
    assert isinstance(overlay, DeepZoomOverlay)
    assert overlay.kind == "labels"
    assert overlay.level_dimensions == source.level_dimensions
    assert overlay.level_tiles == source.level_tiles
    assert overlay.format == "png" and overlay.media_type == "image/png"
    root = ElementTree.fromstring(overlay.dzi())
    assert root.attrib == {"TileSize": "200", "Overlap": "2", "Format": "png"}
    assert overlay.map_scale == (0.25, 0.25)
    top = overlay.level_count - 1
    for level in range(overlay.level_count):
        cols, rows = overlay.tile_count(level)
        for col, row in {(0, 0), (cols - 1, rows - 1)}:
            tile = overlay.tile_array(level, col, row)
            _, _, height, width = source.tile_region(level, col, row)
            assert tile.shape == (height, width, 4) and tile.dtype == np.uint8
    data = overlay.tile(top, 1, 1)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA), overlay.tile_array(top, 1, 1))


def expected_square(level_downsample: int, scale: tuple[float, float] = (0.25, 0.25)):
    """Rows and cols of a Deep Zoom level whose centres fall on the map's square."""
    height, width = (math.ceil(n / level_downsample) for n in SLIDE_SHAPE)
    r0, r1, c0, c1 = SQUARE
    rows = np.floor((np.arange(height) + 0.5) * level_downsample * scale[0])
    cols = np.floor((np.arange(width) + 0.5) * level_downsample * scale[1])
    return ((rows >= r0) & (rows < r1))[:, None] & ((cols >= c0) & (cols < c1))[None, :]


def test_label_overlay_lands_on_the_right_slide_pixels(slide, label_map):
    overlay = DeepZoom(slide).overlay(label_map, alpha=0.5)
    top = overlay.level_count - 1
    full = whole_level(overlay, top)
    inside = full[:, :, 3] > 0
    # map rows [100, 150) x cols [60, 110) at 1 µm/px = slide rows [400, 600) x cols [240, 440)
    rows, cols = np.nonzero(inside)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (400, 600, 240, 440)
    assert inside.sum() == 200 * 200
    assert np.all(full[inside] == (0, 255, 0, 128))  # label 2: green at half opacity
    assert np.all(full[~inside] == 0)
    for level, downsample in ((top - 1, 2), (top - 2, 4), (top - 3, 8), (top - 5, 32)):
        alpha = whole_level(overlay, level)[:, :, 3] > 0
        assert np.array_equal(alpha, expected_square(downsample)), level
    assert overlay.source_level(top) == 0 and overlay.source_level(top - 2) == 0
    assert overlay.source_level(top - 3) == 1  # 8 x 0.25 µm/px = 2 µm/px: the map's level 1


def test_probability_overlay_registers_and_ramps(tmp_path, slide):
    array = square_map("float32", 1.0)
    r0, r1, c0, c1 = SQUARE
    array[r0:r1, c0 : (c0 + c1) // 2] = 0.5
    path = write(tmp_path / "probability.tif", array, MAP_SPACING, min_level_size=100)
    with ImageReader(path) as reader:
        overlay = DeepZoom(slide).overlay(reader, alpha=1.0)
        assert overlay.kind == "probability"
        top = overlay.level_count - 1
        full = whole_level(overlay, top)
        assert np.all(full[400:600, 240:340] == (255, 0, 0, 128))
        assert np.all(full[400:600, 340:440] == (255, 0, 0, 255))
        full[400:600, 240:440] = 0
        assert np.all(full[:, :, 3] == 0)
        # 4 slide px per map px: Deep Zoom level top - 2 is the map's own grid (area average)
        coarse = overlay.tile_array(top - 2, 0, 0)
        assert np.array_equal(coarse[:, :, 3], np.rint(array[:255, :255, 0] * 255))
    as_uint8 = (square_map("float32", 1.0) * 255).astype(np.uint8)
    path = write(tmp_path / "probability8.tif", as_uint8, MAP_SPACING)
    with ImageReader(path) as reader:
        overlay = DeepZoom(slide).overlay(reader, kind="probability", colours=(0, 0, 255), alpha=1)
        full = whole_level(overlay, overlay.level_count - 1)
        assert np.all(full[400:600, 240:440] == (0, 0, 255, 255))
        assert full[:, :, 3].sum() == 255 * 200 * 200


def test_overlay_without_spacing_registers_by_shape(tmp_path, slide):
    path = write(tmp_path / "nospacing.tif", square_map(), None)
    with ImageReader(path) as reader:
        assert reader.spacings[0] is None
        overlay = DeepZoom(slide).overlay(reader, colours={2: (10, 20, 30)}, alpha=1)
        scale = (map_shape()[0] / SLIDE_SHAPE[0], map_shape()[1] / SLIDE_SHAPE[1])
        assert overlay.map_scale == pytest.approx(scale)
        top = overlay.level_count - 1
        full = whole_level(overlay, top)
        inside = expected_square(1, scale)
        assert np.all(full[inside] == (10, 20, 30, 255))
        assert np.all(full[~inside] == 0)
        rows, cols = np.nonzero(inside)
        assert abs(rows.min() - 400) <= 1 and abs(cols.max() + 1 - 440) <= 1


def test_overlay_warns_when_the_map_does_not_cover_the_slide(tmp_path, slide, caplog):
    path = write(tmp_path / "small.tif", np.zeros((100, 80, 1), np.uint8), MAP_SPACING)
    with ImageReader(path) as reader, caplog.at_level(logging.WARNING):
        overlay = DeepZoom(slide).overlay(reader)
        assert "does not cover" in caplog.text
        top = overlay.level_count - 1
        cols, rows = overlay.tile_count(top)
        assert np.all(overlay.tile_array(top, cols - 1, rows - 1) == 0)  # beyond the map


def test_colour_tables():
    table = label_colours()
    assert table.shape == (256, 4) and table.dtype == np.uint8
    assert tuple(table[0]) == (0, 0, 0, 0) and tuple(table[255]) == (0, 0, 0, 0)
    assert [tuple(table[k][:3]) for k in (1, 2, 3, 4)] == [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 0),
    ]
    assert np.all(table[1:255, 3] == 255)
    assert len({tuple(colour) for colour in table[1:40]}) == 39
    changed = label_colours({1: (1, 2, 3, 4), 2: None})
    assert tuple(changed[1]) == (1, 2, 3, 4) and tuple(changed[2]) == (0, 0, 0, 0)
    assert tuple(label_colours([(9, 9, 9)])[0]) == (9, 9, 9, 255)
    ramp = probability_colours()
    assert tuple(ramp[0]) == (255, 0, 0, 0) and tuple(ramp[255]) == (255, 0, 0, 255)
    table = probability_colours([[0, 0, 255, 0], [255, 0, 0, 255]])
    assert tuple(table[0]) == (0, 0, 255, 0) and tuple(table[255]) == (255, 0, 0, 255)
    for bad in ({"a": (1, 2, 3)}, {1: (1, 2)}, {300: (1, 2, 3)}, {1: (0, 0, 256)}):
        with pytest.raises(DeepZoomError):
            label_colours(bad)
    with pytest.raises(DeepZoomError):
        probability_colours([[1, 2, 3]])


def test_overlay_parameter_errors(tmp_path, slide, label_map):
    source = DeepZoom(slide)
    with pytest.raises(DeepZoomError, match="alpha"):
        source.overlay(label_map, alpha=2)
    with pytest.raises(DeepZoomError, match="kind"):
        source.overlay(label_map, kind="heatmap")
    path = write(tmp_path / "two.tif", np.zeros((376, 276, 2), np.float32), MAP_SPACING)
    with ImageReader(path) as reader:
        with pytest.raises(DeepZoomError, match="channel"):
            source.overlay(reader)
        with pytest.raises(DeepZoomError, match="label map"):
            source.overlay(reader, kind="labels")
        with pytest.raises(DeepZoomError, match="channel"):
            source.overlay(reader, channel=2)
        overlay = source.overlay(reader, channel=1)
        assert np.all(overlay.tile_array(overlay.level_count - 1, 0, 0)[:, :, 3] == 0)


# --------------------------------------------------------------------------------------------
# Real slides


def test_real_slide_equals_openslide_deepzoom(test_data):
    path = test_data.joinpath(*CMU)
    theirs = openslide.deepzoom.DeepZoomGenerator(openslide.OpenSlide(str(path)))
    with ImageReader(path) as reader:
        ours = DeepZoom(reader)
        assert ours.level_count == theirs.level_count
        assert ours.level_dimensions == list(theirs.level_dimensions)
        assert ours.level_tiles == list(theirs.level_tiles)
        top = ours.level_count - 1
        for level in (top, top - 1, top - 3):
            cols, rows = ours.tile_count(level)
            for col, row in {(0, 0), (cols // 2, rows // 2), (cols - 1, rows - 1)}:
                tile = ours.tile_array(level, col, row)
                assert (tile.shape[1], tile.shape[0]) == theirs.get_tile_dimensions(
                    level, (col, row)
                )
                y0, x0, height, width = ours.tile_region(level, col, row)
                spacing = reader.spacings[0] * 2 ** (top - level)
                expected = reader.read(spacing, y0, x0, height, width)
                assert np.abs(tile.astype(int) - expected).mean() < 1.0
                reference = np.asarray(theirs.get_tile(level, (col, row)))
                if reference.shape == tile.shape:
                    assert np.abs(tile.astype(int) - reference).mean() < 4


def test_real_slide_without_spacing_reads_its_coarse_level(test_data):
    path = test_data.joinpath(*TCGA)
    with ImageReader(path) as reader:
        assert reader.spacings[0] is None and reader.level_count == 2
        theirs = openslide.deepzoom.DeepZoomGenerator(openslide.OpenSlide(str(path)))
        ours = DeepZoom(reader)
        assert ours.level_dimensions == list(theirs.level_dimensions)
        top = ours.level_count - 1
        # level 1 is 2.0005 x smaller than level 0: it serves the Deep Zoom level 2 x smaller
        assert ours.source_level(top) == 0 and ours.source_level(top - 1) == 1
        tile = ours.tile_array(top - 1, 2, 2)
        y0, x0, height, width = ours.tile_region(top - 1, 2, 2)
        with ImageReader(path, spacing=1.0) as scaled:
            expected = scaled.read(2.0, y0, x0, height, width)
        assert np.array_equal(tile, expected)
