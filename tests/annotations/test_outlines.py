"""Masks to outlines, round trips through GeoJSON, and the real CMU-1-Small-Region slide."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Polygon

from digipath.annotations import (
    Annotation,
    annotations_to_mask,
    annotations_to_mask_like,
    mask_to_annotations,
    mask_to_geojson,
    rasterize,
    read_geojson,
    trace_label,
    write_geojson,
)
from digipath.errors import AnnotationError
from digipath.io import ImageReader, ImageWriter


def _write_mask(path: Path, mask: np.ndarray, spacing: float) -> Path:
    with ImageWriter(
        path, mask.shape, spacing=spacing, dtype="uint8", channels=1, tile_size=16
    ) as writer:
        for row in range(0, mask.shape[0], 16):
            for col in range(0, mask.shape[1], 16):
                writer.write(mask[row : row + 16, col : col + 16, None], row, col)
    return path


def _label_mask() -> np.ndarray:
    mask = np.zeros((61, 75), np.uint8)
    mask[3:40, 5:50] = 1
    mask[10:20, 12:30] = 0  # a hole
    mask[13:16, 15:20] = 1  # an island in the hole
    mask[22:30, 40:70] = 2  # label 2 overlapping label 1's region
    mask[50, 50] = 1  # single pixels touching diagonally
    mask[51, 51] = 1
    mask[45:60, 2:8] = 3  # a label not traced
    return mask


def test_trace_label_gives_valid_polygons_with_holes() -> None:
    polygons = trace_label(_label_mask() == 1)
    assert all(p.is_valid for p in polygons)
    assert sorted(len(p.interiors) for p in polygons) == [0, 0, 1]
    assert trace_label(np.zeros((4, 4), bool)) == []


def test_mask_round_trip_is_exact(tmp_path: Path) -> None:
    mask = _label_mask()
    path = _write_mask(tmp_path / "mask.tif", mask, 0.5)
    names = {1: "tumor", 2: "stroma"}
    annotations = mask_to_annotations(path, 0.5, names)
    assert set(annotations.labels) == {"tumor", "stroma"}
    again = rasterize(annotations, (0, 0, *mask.shape), {"tumor": 1, "stroma": 2})
    expected = np.where(np.isin(mask, [1, 2]), mask, 0)
    assert (again == expected).all()
    for value, name in names.items():
        area = sum(a.geometry.area for a in annotations if a.label == name)
        count = int((mask == value).sum())
        assert count - 0.5 * len(annotations) * 8 <= area <= count


def test_geojson_mask_geojson_round_trip(tmp_path: Path) -> None:
    polygon = Polygon(
        [(10.3, 12.1), (180.4, 20.7), (160.2, 150.9), (30.6, 170.2)],
        [[(60.5, 60.5), (100.2, 62.3), (90.7, 110.1)]],
    )
    other = Polygon([(150, 160), (190, 160), (190, 195), (150, 195)])
    source = tmp_path / "in.geojson"
    write_geojson([Annotation(polygon, "tumor"), Annotation(other, "stroma")], source)
    labels = {"tumor": 1, "stroma": 2}
    mask_path = annotations_to_mask(
        source, tmp_path / "mask.tif", (200, 200), 0.5, labels, image_spacing=0.5, tile_size=32
    )
    out = mask_to_geojson(mask_path, tmp_path / "out.geojson", 0.5, {1: "tumor", 2: "stroma"})
    traced = read_geojson(out)
    tumor = [a.geometry for a in traced if a.label == "tumor"]
    assert len(tumor) == 1 and len(tumor[0].interiors) == 1
    # areas agree within half a pixel along the boundary; stroma is drawn over tumor
    expected = polygon.difference(other).area
    assert abs(tumor[0].area - expected) <= 0.5 * polygon.length + 8
    with ImageReader(mask_path) as reader:
        mask = reader.read(0.5, 0, 0, 200, 200)[:, :, 0]
    assert mask[int(12.1) + 5, 40] == 1 and mask[80, 85] == 0 and mask[175, 170] == 2
    # at twice the spacing the outlines still land in level-0 coordinates
    coarse = mask_to_annotations(mask_path, 1.0, {1: "tumor"})
    assert coarse.bounds == pytest.approx(traced.filter(["tumor"]).bounds, abs=2.0)
    assert json.loads(Path(out).read_text())["type"] == "FeatureCollection"


def test_simplify_min_area_and_multipolygons(tmp_path: Path) -> None:
    mask = np.zeros((64, 64), np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    mask[(yy - 32) ** 2 + (xx - 30) ** 2 < 20**2] = 1
    mask[2:4, 60:62] = 1  # 4 px = 1 µm² at 0.5 µm/px
    path = _write_mask(tmp_path / "disk.tif", mask, 0.5)
    full = mask_to_annotations(path, 0.5, {1: "t"})
    simple = mask_to_annotations(path, 0.5, {1: "t"}, simplify=0.5, min_area=2.0)
    assert len(full) == 2 and len(simple) == 1
    assert len(simple[0].geometry.exterior.coords) < len(full[0].geometry.exterior.coords) / 3
    assert simple[0].geometry.area == pytest.approx(full[0].geometry.area, rel=0.05)
    merged = mask_to_annotations(path, 0.5, {1: "t"}, multipolygons=True)
    assert len(merged) == 1 and merged[0].kind == "MultiPolygon"
    # coordinates in another level-0 frame: a slide at 0.25 µm/px doubles them
    slide = mask_to_annotations(path, 0.5, {1: "t"}, image_spacing=0.25)
    assert slide[0].geometry.area == pytest.approx(4 * full[0].geometry.area)
    with pytest.raises(AnnotationError, match="max_bytes"):
        mask_to_annotations(path, 0.5, {1: "t"}, max_bytes=100)


def test_real_slide_masks(test_data: Path, tmp_path: Path) -> None:
    slide = test_data / "wsi/aperio/CMU-1-Small-Region.svs"
    tumor = Polygon(
        [(200, 300), (1000, 300), (1000, 1100), (200, 1100)],
        [[(500, 600), (700, 600), (700, 800), (500, 800)]],
    )
    stroma = Polygon([(1200, 1500), (2100, 1500), (1650, 2800)])
    annotations = [Annotation(tumor, "tumor"), Annotation(stroma, "stroma")]
    source = tmp_path / "slide.geojson"
    write_geojson(annotations, source)
    labels = {"tumor": 1, "stroma": 2}
    # (row, col) at level 0 -> expected value
    points = {(700, 300): 1, (700, 600): 0, (1050, 950): 1, (2000, 1650): 2, (2900, 100): 0}
    with ImageReader(slide) as reader:
        assert reader.shapes[0] == (2967, 2220)
        for spacing in (0.499, 2.0):
            out = annotations_to_mask_like(
                source, tmp_path / f"mask-{spacing}.tif", reader, spacing, labels
            )
            with ImageReader(out) as mask_reader:
                rows, cols = mask_reader.shapes[0]
                assert (rows, cols) == reader.shape(spacing)
                assert mask_reader.spacings[0] == pytest.approx(reader.refine(spacing))
                mask = mask_reader.read(mask_reader.spacings[0], 0, 0, rows, cols)[:, :, 0]
            scale = 0.499 / mask_reader.spacings[0]
            for (row, col), value in points.items():
                assert mask[int(row * scale), int(col * scale)] == value, (spacing, row, col)
            pixel_area = (1 / scale) ** 2
            assert (mask == 1).sum() * pixel_area == pytest.approx(tumor.area, rel=0.02)
            assert (mask == 2).sum() * pixel_area == pytest.approx(stroma.area, rel=0.02)
        traced = mask_to_annotations(
            tmp_path / "mask-2.0.tif", 2.0, {1: "tumor"}, image_spacing=0.499
        )
        assert traced[0].geometry.area == pytest.approx(tumor.area, rel=0.02)
        assert traced[0].geometry.bounds == pytest.approx(tumor.bounds, abs=5)
