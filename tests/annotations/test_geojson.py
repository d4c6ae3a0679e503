"""QuPath GeoJSON annotations: reading, writing, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shapely.geometry import MultiPolygon, Point, Polygon

from digipath.annotations import Annotation, load_annotations, read_geojson, write_geojson
from digipath.errors import AnnotationError, AnnotationFormatError

SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]
HOLE = [[2, 2], [4, 2], [4, 4], [2, 4], [2, 2]]


def _feature(geometry: dict, **properties: object) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def test_read_qupath_features(tmp_path: Path) -> None:
    document = {
        "type": "FeatureCollection",
        "features": [
            _feature(
                {"type": "Polygon", "coordinates": [SQUARE, HOLE]},
                objectType="annotation",
                classification={"name": "Tumor", "color": [200, 0, 0]},
            ),
            _feature(
                {
                    "type": "MultiPolygon",
                    "coordinates": [[SQUARE], [[[20, 0], [30, 0], [30, 5], [20, 0]]]],
                },
                classification={"name": "Stroma", "colorRGB": -16711936},
            ),
            _feature({"type": "Point", "coordinates": [5, 6]}, classification="Immune cells"),
            _feature({"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]}, name="seeds"),
            _feature({"type": "LineString", "coordinates": [[0, 0], [5, 5]]}),
        ],
    }
    path = tmp_path / "a.geojson"
    path.write_text(json.dumps(document))
    annotations = read_geojson(path)
    assert [a.label for a in annotations] == ["Tumor", "Stroma", "Immune cells", "seeds", None]
    assert [a.kind for a in annotations] == [
        "Polygon",
        "MultiPolygon",
        "Point",
        "MultiPoint",
        "LineString",
    ]
    assert annotations[0].geometry.area == pytest.approx(96.0)
    assert annotations[0].color == "#c80000"
    assert annotations[1].color == "#00ff00"
    assert annotations.source == str(path)


def test_list_of_features_and_single_feature(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    feature = _feature({"type": "Polygon", "coordinates": [SQUARE]}, classification={"name": "a"})
    path.write_text(json.dumps([feature, feature]))
    assert len(load_annotations(path)) == 2
    path.write_text(json.dumps(feature))
    assert len(read_geojson(path)) == 1


def test_round_trip(tmp_path: Path) -> None:
    annotations = [
        Annotation(Polygon(SQUARE, [HOLE]), label="tumor", color="#ff0000", name="first"),
        Annotation(MultiPolygon([Polygon(SQUARE), Polygon([(20, 0), (30, 0), (25, 5)])]), "x"),
        Annotation(Point(1.5, 2.5), label="cell"),
        Annotation(Polygon(SQUARE)),
    ]
    out = write_geojson(annotations, tmp_path / "out.geojson")
    again = read_geojson(out)
    assert len(again) == 4
    for first, second in zip(annotations, again, strict=True):
        assert first.geometry.equals(second.geometry)
        assert (first.label, first.name) == (second.label, second.name)
    assert again[0].color == "#ff0000"
    document = json.loads(Path(out).read_text())
    assert document["features"][0]["properties"]["classification"]["color"] == [255, 0, 0]
    assert document["features"][0]["properties"]["objectType"] == "annotation"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"type": "Polygon", "coordinates": [SQUARE]}), "type 'Polygon'"),
        (json.dumps({"type": "FeatureCollection"}), "no 'features' list"),
        (json.dumps([{"type": "Feature", "properties": {}}]), "feature 0: has no 'geometry'"),
        (
            json.dumps([_feature({"type": "Polygon", "coordinates": [SQUARE]}), {"a": 1}]),
            "feature 1: is not a GeoJSON Feature",
        ),
        (
            json.dumps([_feature({"type": "Polygon", "coordinates": [[[0, 0], [1]]]})]),
            "feature 0: invalid Polygon coordinates",
        ),
        (
            json.dumps([_feature({"type": "Circle", "coordinates": [0, 0]})]),
            "feature 0: unsupported geometry type 'Circle'",
        ),
    ],
)
def test_malformed_files_name_file_and_feature(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(AnnotationFormatError) as caught:
        read_geojson(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="unknown annotation file extension"):
        load_annotations(tmp_path / "a.txt")
