"""Tests of digipath.nuclei.inference with a stand-in model that reads the ground truth.

The slide's pixels encode their own coordinates (R = row % 256, G = col % 256,
B = row // 256 + 16 * (col // 256)); the stand-in model decodes them from its input window and
returns the maps of the generated slide's ground truth there: NP = the nucleus mask, HV =
``hv_maps`` of the whole instance map, TP = a type per nucleus. White padding decodes to
coordinates beyond the slide (background), mirrored padding to mirrored maps. The outputs
are thus exact and independent of the tiling, so the tests isolate the tiling and merging.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from nuclei_standin import CoordinateModel, coordinate_image
from scipy import ndimage

from digipath.io import ImageReader, ImageWriter
from digipath.metrics.instances import panoptic_quality
from digipath.nuclei.inference import predict_maps, segment_slide, segment_tile
from digipath.nuclei.io import NucleiError
from digipath.synthetic import nuclei_slide

SPACING = 0.5


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    slide = nuclei_slide((640, 900), spacing=SPACING, seed=3)
    instances, _ = ndimage.label(slide.mask)
    folder = tmp_path_factory.mktemp("slide")
    path = folder / "slide.tif"
    with ImageWriter(
        path, instances.shape, spacing=SPACING, compression="lzw", tile_size=128
    ) as writer:
        writer.fill(coordinate_image(instances.shape))
    # tissue mask: only the left half
    mask = np.zeros((*instances.shape, 1), np.uint8)
    mask[:, :300] = 1
    mask_path = folder / "mask.tif"
    with ImageWriter(
        mask_path,
        instances.shape,
        spacing=SPACING,
        channels=1,
        compression="lzw",
        interpolation="nearest",
        tile_size=128,
    ) as writer:
        writer.fill(mask)
    return instances, path, mask_path


def _centroids(path) -> np.ndarray:
    nuc = json.loads(open(path, encoding="utf-8").read())["nuc"]
    points = np.array([v["centroid"] for v in nuc.values()], np.float64).reshape(-1, 2)
    return points[np.lexsort((points[:, 0], points[:, 1]))]


def _labels(path) -> np.ndarray:
    with ImageReader(path) as reader:
        assert reader.dtype == np.uint32
        rows, cols = reader.shape(SPACING)
        return reader.read(SPACING, 0, 0, rows, cols)[:, :, 0]


def _bijective(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal foregrounds and a one-to-one pairing of the labels pixel by pixel."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_tile_mode_stitches_exactly(generated):
    instances, _, _ = generated
    crop = instances[:300, :400]
    model = CoordinateModel(instances)
    image = coordinate_image(crop.shape)
    maps = predict_maps(model, image, padding="constant", batch_size=4)
    np.testing.assert_array_equal(maps["np"], (crop > 0).astype(np.float32))
    np.testing.assert_allclose(maps["hv"], model.hv[:, :300, :400])
    assert maps["tp"].shape == crop.shape
    assert model.windows == 2 * 3  # ceil(300 / 164) x ceil(400 / 164)
    nuclei = segment_tile(model, image, spacing=SPACING)
    truth = ndimage.center_of_mass(crop > 0, crop, np.unique(crop)[1:])
    assert len(truth) - 3 <= len(nuclei) <= len(truth)  # small or cut nuclei may go
    truth_xy = np.array(truth)[:, ::-1]
    distance = np.linalg.norm(nuclei.centroids[:, None] - truth_xy[None], axis=2)
    assert distance.min(axis=1).max() < 1.5
    assert nuclei.types is not None and set(nuclei.types.tolist()) <= {1, 2}


def test_tile_mode_errors(generated):
    model = CoordinateModel(generated[0])
    with pytest.raises(NucleiError, match="uint8"):
        segment_tile(model, np.zeros((10, 10), np.uint8))
    with pytest.raises(NucleiError, match="padding"):
        segment_tile(model, np.zeros((10, 10, 3), np.uint8), padding="wrap")
    with pytest.raises(NucleiError, match="mode"):
        segment_tile(model, np.zeros((10, 10, 3), np.uint8), mode="slow")


def test_tiles_give_the_nuclei_of_one_tile(generated, tmp_path):
    instances, path, _ = generated
    extent = max(max(s.stop - s.start for s in box) for box in ndimage.find_objects(instances))
    margin = 48
    assert extent < margin  # the premise of the merging
    model = CoordinateModel(instances)
    whole = segment_slide(
        model,
        path,
        tmp_path / "whole",
        spacing=SPACING,
        tile_size=1024,
        margin=margin,
        formats=("json", "geojson"),
    )
    assert whole.tiles == 1
    tiled = segment_slide(
        model,
        path,
        tmp_path / "tiled",
        spacing=SPACING,
        tile_size=200,
        margin=margin,
        formats=("json", "geojson"),
    )
    assert tiled.tiles == 4 * 5 and tiled.computed == 20
    assert tiled.nuclei == whole.nuclei > 50
    a, b = _centroids(whole.outputs["json"]), _centroids(tiled.outputs["json"])
    assert a.shape == b.shape
    distance = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    assert distance.min(axis=1).max() < 1  # none lost
    assert distance.min(axis=0).max() < 1  # none doubled (one-to-one with equal counts)
    assert (distance < 1).sum(axis=1).max() == 1
    # nuclei on the seams exist (the test exercises the merging)
    on_seam = np.any(np.abs((b[:, :, None] % 200) - np.array([0, 200])) < 8, axis=(1, 2))
    assert on_seam.sum() >= 5
    features = json.loads(open(tiled.outputs["geojson"]).read())["features"]
    assert len(features) == tiled.nuclei
    assert not list(tmp_path.glob(".*partial"))


def test_label_tiff_of_tiles_matches_one_tile(generated, tmp_path):
    instances, path, _ = generated
    model = CoordinateModel(instances)
    options = {"spacing": SPACING, "margin": 48, "formats": ("tiff", "json")}
    whole = segment_slide(model, path, tmp_path / "whole", tile_size=1024, **options)
    # 4 x 5 tiles: the 512-row block is released after the third tile row, the rest on close
    tiled = segment_slide(model, path, tmp_path / "tiled", tile_size=200, **options)
    assert whole.tiles == 1 and tiled.tiles == 20
    assert tiled.outputs["tiff"] == str(tmp_path / "tiled_labels.tif")
    a, b = _labels(whole.outputs["tiff"]), _labels(tiled.outputs["tiff"])
    assert a.shape == b.shape == instances.shape
    assert _bijective(a, b)
    assert panoptic_quality(a, b).pq == 1
    ids = np.unique(b)[1:]
    assert len(ids) == tiled.nuclei == whole.nuclei > 50
    np.testing.assert_array_equal(ids, np.arange(1, tiled.nuclei + 1))
    # the ids are the hover_net JSON's: label k lies in the bbox of JSON nucleus k
    nuc = json.loads(open(tiled.outputs["json"], encoding="utf-8").read())["nuc"]
    boxes = ndimage.find_objects(b)
    for key, record in nuc.items():
        (row0, col0), (row1, col1) = record["bbox"]
        box = boxes[int(key) - 1]
        assert row0 <= box[0].start and box[0].stop <= row1 + 1
        assert col0 <= box[1].start and box[1].stop <= col1 + 1
    # and the filled contours are the nuclei of the slide
    assert panoptic_quality(instances, b).pq > 0.9


def test_mask_skips_tiles(generated, tmp_path):
    instances, path, mask_path = generated
    model = CoordinateModel(instances)
    result = segment_slide(
        model,
        path,
        tmp_path / "masked",
        spacing=SPACING,
        mask=mask_path,
        tile_size=200,
        margin=48,
        formats=("json",),
    )
    assert result.computed == 4 * 2 and result.skipped == 4 * 3
    points = _centroids(result.outputs["json"])
    assert points[:, 0].max() < 400 + 48


def test_interrupted_run_resumes(generated, tmp_path):
    instances, path, _ = generated
    model = CoordinateModel(instances)
    formats = ("json", "tiff")

    def stop(done: int, total: int) -> None:
        if done == 5 * 2 + 1:  # in the third tile row
            raise KeyboardInterrupt

    output = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        segment_slide(
            model,
            path,
            output,
            spacing=SPACING,
            tile_size=200,
            margin=48,
            formats=formats,
            progress=stop,
        )
    assert not (tmp_path / "run.json").exists() and not (tmp_path / "run_labels.tif").exists()
    assert len(list(tmp_path.glob(".run.nuclei.partial/row_*.json"))) == 2
    model.windows = 0
    resumed = segment_slide(
        model, path, output, spacing=SPACING, tile_size=200, margin=48, formats=formats
    )
    assert resumed.rows_reused == 2 and resumed.computed == 20
    fresh_model = CoordinateModel(instances)
    fresh = segment_slide(
        fresh_model,
        path,
        tmp_path / "fresh",
        spacing=SPACING,
        tile_size=200,
        margin=48,
        formats=formats,
    )
    assert model.windows < fresh_model.windows
    np.testing.assert_allclose(
        _centroids(resumed.outputs["json"]), _centroids(fresh.outputs["json"])
    )
    np.testing.assert_array_equal(_labels(resumed.outputs["tiff"]), _labels(fresh.outputs["tiff"]))
    assert len(np.unique(_labels(resumed.outputs["tiff"]))) == resumed.nuclei + 1
    again = segment_slide(model, path, output, spacing=SPACING, formats=formats)
    assert again.existed


def test_slide_errors(generated, tmp_path):
    instances, path, _ = generated
    model = CoordinateModel(instances)
    with pytest.raises(NucleiError, match="overlay is a tile-mode output"):
        segment_slide(model, path, tmp_path / "x", spacing=SPACING, formats=("overlay",))
    with pytest.raises(NucleiError, match="formats"):
        segment_slide(model, path, tmp_path / "x", spacing=SPACING, formats=("png",))
    with pytest.raises(NucleiError, match="margin"):
        segment_slide(model, path, tmp_path / "x", spacing=SPACING, margin=-1)


def test_label_stream_writes_final_blocks(tmp_path):
    from digipath.nuclei.export import LabelTiffStream

    def square(top: int, left: int, side: int = 6) -> dict:
        return {
            "contour": [
                [left, top],
                [left + side, top],
                [left + side, top + side],
                [left, top + side],
            ]
        }

    stream = LabelTiffStream(tmp_path / "labels.tif", (1100, 40), spacing=SPACING, tile_size=512)
    stream.add([square(10, 5), square(700, 20)])
    assert stream._band.shape[0] == 707
    stream.release(600)  # rows 0-511 are written and dropped from the band
    assert stream._top == 512 and stream._band.shape[0] == 707 - 512
    with pytest.raises(NucleiError, match="above the rows already released"):
        stream.add([square(590, 5)])
    stream.add([square(1090, 5, side=20)])  # clipped at the bottom
    path = stream.close()
    labels = _labels(path)
    assert labels[10:17, 5:12].min() == labels[10:17, 5:12].max() == 1
    assert labels[700:707, 20:27].min() == 2 and labels[1090:, 5:26].min() == 3
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}  # the refused one took no id
