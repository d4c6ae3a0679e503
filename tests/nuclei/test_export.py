"""Tests of digipath.nuclei.export: GeoJSON, hover_net JSON, label TIFF and overlay."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from digipath.io import ImageReader
from digipath.nuclei.export import (
    GeoJSONStream,
    HoverNetJSONStream,
    nuclei_records,
    read_hovernet_json,
    to_geojson,
    write_geojson,
    write_hovernet_json,
    write_label_tiff,
    write_overlay,
)
from digipath.nuclei.io import NucleiError, NucleusFileError, TypeInfo
from digipath.nuclei.postprocess import instance_properties

TYPE_INFO = TypeInfo.from_dict(
    {"0": ["background", [0, 0, 0]], "1": ["tumour", [255, 0, 0]], "2": ["stroma", [0, 255, 0]]}
)


@pytest.fixture(scope="module")
def nuclei():
    instances = np.zeros((120, 160), np.int32)
    types = np.zeros_like(instances)
    centres = [(20, 30), (60, 80), (90, 130), (30, 120)]
    for k, (row, col) in enumerate(centres, start=1):
        cv2.ellipse(instances, (col, row), (9, 6), 30 * k, 0, 360, k, -1)
        types[instances == k] = 1 + k % 2
    return instance_properties(instances, types)


def test_geojson_valid_polygons_with_classes(nuclei, tmp_path):
    path = write_geojson(
        nuclei, tmp_path / "n.geojson", offset=(10, 20), downsample=2, type_info=TYPE_INFO
    )
    document = json.loads(open(path, encoding="utf-8").read())
    assert document["type"] == "FeatureCollection"
    features = document["features"]
    assert len(features) == len(nuclei)
    for i, feature in enumerate(features):
        geometry = shape(feature["geometry"])
        assert geometry.geom_type == "Polygon" and geometry.is_valid
        props = feature["properties"]
        assert props["objectType"] == "detection"
        kind = int(nuclei.types[i])
        assert props["classification"]["name"] == TYPE_INFO.names[kind]
        assert props["classification"]["color"] == list(TYPE_INFO.colours[kind])
        assert props["type_prob"] == pytest.approx(float(nuclei.type_probs[i]))
        # level 0: (processing + offset) * downsample, x = col
        x, y = nuclei.centroids[i]
        assert props["centroid"] == pytest.approx([(x + 20) * 2, (y + 10) * 2])
        c = geometry.centroid
        assert abs(c.x - props["centroid"][0]) < 2 and abs(c.y - props["centroid"][1]) < 2
        assert geometry.area == pytest.approx(4 * nuclei.areas[i], rel=0.25)
    # readable by the annotation reader
    from digipath.annotations.geojson import read_geojson

    annotations = read_geojson(path)
    assert {a.label for a in annotations} == {"tumour", "stroma"}


def test_geojson_without_type_info_and_repair():
    instances = np.zeros((20, 20), np.int32)
    instances[2:6, 2:6] = 1
    instances[6:10, 6:10] = 1  # touching at a corner: a self-touching contour
    instances[12:18, 2:9] = 2
    nuclei = instance_properties(instances)
    document = to_geojson(nuclei)
    for feature in document["features"]:
        assert shape(feature["geometry"]).is_valid
        assert feature["properties"]["classification"]["name"] == "nucleus"


def test_geojson_stream_is_atomic(nuclei, tmp_path):
    target = tmp_path / "s.geojson"
    with pytest.raises(RuntimeError):
        with GeoJSONStream(target) as stream:
            stream.add(nuclei)
            raise RuntimeError("interrupted")
    assert not target.exists() and not list(tmp_path.iterdir())
    with GeoJSONStream(target, type_info=TYPE_INFO) as stream:
        stream.add(nuclei, offset=(0, 0))
        stream.add(list(nuclei_records(nuclei, offset=(200, 0))))
    features = json.loads(target.read_text())["features"]
    assert len(features) == 2 * len(nuclei)
    assert all(shapely.is_valid(shape(f["geometry"])) for f in features)


def test_hovernet_json_round_trip(nuclei, tmp_path):
    path = write_hovernet_json(nuclei, tmp_path / "n.json", mag=40)
    data = read_hovernet_json(path)
    assert data["mag"] == 40
    assert data == json.loads(json.dumps(nuclei.to_dict(40)))
    assert list(data["nuc"]) == [str(i) for i in nuclei.ids.tolist()]
    entry = data["nuc"][str(nuclei.ids[0])]
    assert set(entry) == {"bbox", "centroid", "contour", "type", "type_prob"}
    # the stream numbers from 1 and shifts
    with HoverNetJSONStream(tmp_path / "s.json", mag=20) as stream:
        stream.add(nuclei_records(nuclei, offset=(5, 7)))
    streamed = read_hovernet_json(tmp_path / "s.json")
    assert list(streamed["nuc"]) == [str(i) for i in range(1, len(nuclei) + 1)]
    first = streamed["nuc"]["1"]["centroid"]
    assert first == pytest.approx([nuclei.centroids[0][0] + 7, nuclei.centroids[0][1] + 5])


def test_hovernet_json_errors(tmp_path):
    with pytest.raises(NucleusFileError, match="no such file"):
        read_hovernet_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"nuc": {"1": {"bbox": []}}}')
    with pytest.raises(NucleusFileError, match="contour"):
        read_hovernet_json(tmp_path / "bad.json")
    with pytest.raises(NucleusFileError, match="folder"):
        write_hovernet_json(instance_properties(np.zeros((4, 4), int)), tmp_path / "x" / "a.json")


def test_label_tiff_reads_back(nuclei, tmp_path):
    labels = nuclei.instances.copy()
    labels[labels == 4] = 70000  # beyond uint16
    path = write_label_tiff(labels, tmp_path / "labels.tif", spacing=0.5, tile_size=64)
    with ImageReader(path) as reader:
        back = reader.read(0.5, 0, 0, *labels.shape)[..., 0]
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, labels)
    with pytest.raises(NucleiError):
        write_label_tiff(np.zeros((4, 4), np.float32), tmp_path / "f.tif", spacing=None)


def test_overlay_written(nuclei, tmp_path):
    image = np.full((*nuclei.instances.shape, 3), 240, np.uint8)
    path = write_overlay(image, nuclei, tmp_path / "o.png", type_info=TYPE_INFO, draw_dot=True)
    drawn = cv2.imread(path)[:, :, ::-1]
    assert drawn.shape == image.shape
    assert (np.all(drawn == (255, 0, 0), axis=2)).any()  # tumour contours in red
    assert (np.all(drawn == (0, 255, 0), axis=2)).any()
    x, y = (round(v) for v in nuclei.centroids[0])
    assert tuple(drawn[y, x]) == (0, 0, 0)  # the dot
    with pytest.raises(NucleiError):
        write_overlay(image[..., 0], nuclei, tmp_path / "o2.png")
