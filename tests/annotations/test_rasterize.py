"""Annotations to label masks: pixel-centre rule, tiles without seams, overlaps, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPoint, Point, Polygon

from digipath.annotations import (
    Annotation,
    AnnotationSet,
    Rasterizer,
    annotations_to_mask,
    prepare_shapes,
    rasterize,
)
from digipath.errors import AnnotationLabelError
from digipath.io import ImageReader


def _centre_reference(geometry, shape, scale=1.0):
    """Pixels whose centre lies inside ``geometry`` (scaled), by shapely."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return shapely.contains_xy(
        geometry, (cols.ravel() + 0.5) / scale, (rows.ravel() + 0.5) / scale
    ).reshape(shape)


def _scene() -> list[Annotation]:
    star = Polygon(
        [
            (40.13, 3.07),
            (52.1, 40),
            (88, 44.2),
            (58, 62.3),
            (70.2, 98),
            (40.1, 75),
            (9.3, 97),
            (22, 62.1),
        ]
    )
    donut = Polygon(
        [(60.3, 10.7), (120.2, 14.1), (116.9, 70.4), (63.1, 66.6)],
        [[(80.5, 30.5), (100.1, 30.2), (99.7, 50.3), (79.9, 49.8)]],
    )
    sliver = Polygon([(0, 100.2), (130, 101.1), (130, 101.9)])
    return [Annotation(star, "a"), Annotation(donut, "b"), Annotation(sliver, "a")]


def test_hole_stays_background() -> None:
    polygon = Polygon([(1, 1), (11, 1), (11, 11), (1, 11)], [[(4, 4), (7, 4), (7, 7), (4, 7)]])
    mask = rasterize([Annotation(polygon, "x")], (0, 0, 13, 13), {"x": 5})
    assert mask[1:11, 1:11].sum() == 5 * (100 - 9)
    assert (mask[4:7, 4:7] == 0).all()
    assert mask[0].sum() == 0 and mask[:, 11:].sum() == 0
    assert mask.dtype == np.uint8


def test_pixel_centre_rule_matches_shapely() -> None:
    annotations = _scene()
    shape = (110, 131)
    for scale in (1.0, 0.37, 2.5):
        size = (round(shape[0] * scale), round(shape[1] * scale))
        mask = rasterize(annotations, (0, 0, *size), {"a": 1, "b": 2}, scale=scale)
        expected = np.zeros(size, np.uint8)
        for annotation, value in zip(annotations, (1, 2, 1), strict=True):
            expected[_centre_reference(annotation.geometry, size, scale)] = value
        assert (mask == expected).all()


def test_odd_tiles_have_no_seams_and_agree_with_fillpoly(tmp_path: Path) -> None:
    annotations = _scene()
    labels = {"a": 1, "b": 2}
    shape = (110, 131)
    whole = rasterize(annotations, (0, 0, *shape), labels)
    rasterizer = Rasterizer(prepare_shapes(annotations, labels), 1.0)
    tiled = np.zeros(shape, np.uint8)
    for row in range(0, shape[0], 37):
        for col in range(0, shape[1], 37):
            block = rasterizer.region(row, col, 37, 37)
            tiled[row : row + 37, col : col + 37] = block[: shape[0] - row, : shape[1] - col]
    assert (tiled == whole).all()

    # one full-image cv2.fillPoly reference (pixel centres at integer + 0.5; boundary inclusive)
    reference = np.zeros(shape, np.uint8)
    for annotation, value in zip(annotations, (1, 2, 1), strict=True):
        polygon = annotation.geometry
        rings = [np.asarray(polygon.exterior.coords)] + [
            np.asarray(r.coords) for r in polygon.interiors
        ]
        points = [np.round((r - 0.5) * 256).astype(np.int32) for r in rings]
        layer = np.zeros(shape, np.uint8)
        cv2.fillPoly(layer, points, 1, shift=8)
        reference[layer > 0] = value
    differ = reference != whole
    assert differ.mean() < 0.05
    # every difference is a pixel next to an annotation boundary
    boundary = shapely.union_all([a.geometry.boundary for a in annotations])
    rows, cols = np.nonzero(differ)
    distances = shapely.distance(boundary, shapely.points(cols + 0.5, rows + 0.5))
    assert (distances <= 1.5).all()

    # the written file, tile by tile (16 px tiles), equals the single region
    out = annotations_to_mask(
        annotations, tmp_path / "m.tif", shape, 0.5, labels, image_spacing=0.5, tile_size=16
    )
    with ImageReader(out) as reader:
        assert reader.shapes[0] == shape
        assert reader.spacings[0] == pytest.approx(0.5)
        assert (reader.read(0.5, 0, 0, *shape)[:, :, 0] == whole).all()
    assert not list(tmp_path.glob(".*.tmp"))


def test_spacing_scales_coordinates(tmp_path: Path) -> None:
    square = Annotation(Polygon([(100, 200), (300, 200), (300, 400), (100, 400)]), "t")
    out = annotations_to_mask(
        [square], tmp_path / "m.tif", (250, 200), 2.0, {"t": 7}, image_spacing=0.5, tile_size=32
    )
    with ImageReader(out) as reader:
        mask = reader.read(2.0, 0, 0, 250, 200)[:, :, 0]
    # level-0 pixels 100..300 x 200..400 at 0.5 µm/px -> cols 25..75, rows 50..100 at 2 µm/px
    assert mask.sum() == 7 * 50 * 50
    assert (mask[50:100, 25:75] == 7).all()


def test_overlap_order() -> None:
    big = Annotation(Polygon([(0, 0), (10, 0), (10, 10), (0, 10)]), "stroma")
    small = Annotation(Polygon([(2, 2), (6, 2), (6, 6), (2, 6)]), "tumor")
    labels = {"tumor": 1, "stroma": 2}
    # file order: the later annotation wins
    assert rasterize([big, small], (0, 0, 10, 10), labels)[3, 3] == 1
    assert rasterize([small, big], (0, 0, 10, 10), labels)[3, 3] == 2
    # label order: the label listed last wins, whatever the file order
    assert rasterize([big, small], (0, 0, 10, 10), labels, order=["tumor", "stroma"])[3, 3] == 2
    assert rasterize([small, big], (0, 0, 10, 10), labels, order=["stroma", "tumor"])[3, 3] == 1
    with pytest.raises(ValueError, match="not in the label map"):
        rasterize([big], (0, 0, 10, 10), labels, order=["necrosis"])


def test_unknown_labels_error_or_ignore() -> None:
    annotations = AnnotationSet(
        [
            Annotation(Polygon([(0, 0), (4, 0), (4, 4)]), "tumor"),
            Annotation(Polygon([(0, 0), (4, 0), (4, 4)]), "fat"),
            Annotation(Polygon([(0, 0), (4, 0), (4, 4)]), None),
        ],
        source="slide.xml",
    )
    with pytest.raises(AnnotationLabelError) as caught:
        rasterize(annotations, (0, 0, 5, 5), {"tumor": 1})
    assert caught.value.labels == ["fat", None]
    assert "slide.xml" in str(caught.value) and "'fat'" in str(caught.value)
    mask = rasterize(annotations, (0, 0, 5, 5), {"tumor": 1}, unknown_labels="ignore")
    assert set(np.unique(mask).tolist()) == {0, 1}


def test_nested_group_takes_nearest_listed_group() -> None:
    necrosis = Annotation(Polygon([(0, 0), (4, 0), (4, 4), (0, 4)]), "necrosis", groups=("tumor",))
    assert rasterize([necrosis], (0, 0, 4, 4), {"tumor": 3})[1, 1] == 3
    assert rasterize([necrosis], (0, 0, 4, 4), {"tumor": 3, "necrosis": 4})[1, 1] == 4


def test_points_as_disks_or_skipped() -> None:
    points = [
        Annotation(Point(20, 20), "cell"),
        Annotation(MultiPoint([(5, 5), (35, 5)]), "cell"),
    ]
    skipped = rasterize(points, (0, 0, 40, 40), {"cell": 1})
    assert not skipped.any()
    # radius 2 µm at 0.25 µm/px = 8 level-0 px
    disks = rasterize(points, (0, 0, 40, 40), {"cell": 1}, image_spacing=0.25, point_radius=2.0)
    assert disks[20, 20] == 1 and disks[20, 29] == 0 and disks[20, 27] == 1
    assert disks[12:29, 12:29].sum() == pytest.approx(np.pi * 64, rel=0.1)
    assert disks[5, 5] == 1 and disks[5, 35] == 1
    with pytest.raises(ValueError, match="image_spacing"):
        rasterize(points, (0, 0, 4, 4), {"cell": 1}, point_radius=2.0)


def test_invalid_label_map() -> None:
    square = [Annotation(Polygon([(0, 0), (4, 0), (4, 4)]), "a")]
    with pytest.raises(ValueError, match="empty"):
        rasterize(square, (0, 0, 4, 4), {})
    with pytest.raises(ValueError, match=r"0\.\.255"):
        rasterize(square, (0, 0, 4, 4), {"a": 300})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 60, allow_nan=False), st.floats(0, 60, allow_nan=False)),
        min_size=3,
        max_size=12,
    ),
    st.floats(0.3, 3.0),
)
def test_area_matches_shapely_for_convex_polygons(points, scale) -> None:
    hull = MultiPoint(points).convex_hull
    if hull.geom_type != "Polygon" or hull.area < 1:
        return
    size = (int(np.ceil(61 * scale)) + 1, int(np.ceil(61 * scale)) + 1)
    mask = rasterize([Annotation(hull, "x")], (0, 0, *size), {"x": 1}, scale=scale)
    expected = hull.area * scale * scale
    # the pixel-centre rule errs by at most the pixels the boundary passes through
    assert abs(int(mask.sum()) - expected) <= hull.length * scale + 4
