"""Post-processing streamed in bands equals the whole-image operations."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from scipy import ndimage

from digipath.inference.postprocess import (
    dilate,
    fill_holes,
    filter_regions,
    postprocess,
    threshold,
)
from digipath.io import ImageReader, ImageWriter

SPACING = 2.0  # µm/px


def write(path, array, dtype=np.uint8):
    with ImageWriter(path, array.shape, spacing=SPACING, dtype=dtype, channels=1,
                     compression="lzw", interpolation="nearest") as writer:  # fmt: skip
        writer.fill(array[:, :, None].astype(dtype))
    return str(path)


def read(path) -> np.ndarray:
    with ImageReader(path) as reader:
        return reader.read(reader.spacings[0], 0, 0, *reader.shapes[0])[..., 0]


def blobs(seed: int = 0, shape=(300, 257)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.uint8)
    for _ in range(60):
        centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        radius = int(rng.integers(1, 14))
        cv2.circle(image, centre, radius, 1, -1)
        if radius > 8:
            cv2.circle(image, centre, radius // 3, 0, -1)  # a hole
    return image


def components(binary, limit, invert=False):
    labels, _ = ndimage.label(binary, structure=np.ones((3, 3)))
    result = np.zeros_like(binary, bool)
    for index, (r, c) in enumerate(ndimage.find_objects(labels), start=1):
        touches = (
            r.start == 0 or c.start == 0 or r.stop == binary.shape[0] or (c.stop == binary.shape[1])
        )
        if invert and touches:
            continue
        if math.hypot(r.stop - r.start, c.stop - c.start) <= limit:
            result |= labels == index
    return result


def test_region_filter_equals_the_whole_image(tmp_path):
    image = blobs()
    out = filter_regions(write(tmp_path / "in.tif", image), tmp_path / "out.tif", 20.0, band=64)
    expected = (image > 0) & ~components(image > 0, 20.0 / SPACING)
    np.testing.assert_array_equal(read(out), expected.astype(np.uint8))


def test_hole_filling_equals_the_whole_image(tmp_path):
    image = blobs(1)
    out = fill_holes(write(tmp_path / "in.tif", image), tmp_path / "out.tif", 12.0, band=64)
    expected = (image > 0) | components(image == 0, 12.0 / SPACING, invert=True)
    np.testing.assert_array_equal(read(out), expected.astype(np.uint8))
    assert read(out).sum() > image.sum()  # something was filled


def test_dilation_equals_the_whole_image(tmp_path):
    image = blobs(2)
    out = dilate(write(tmp_path / "in.tif", image), tmp_path / "out.tif", 10.0, band=64)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))
    np.testing.assert_array_equal(read(out), cv2.dilate(image, kernel))


def test_threshold_and_the_chain_to_geojson(tmp_path):
    soft = blobs(3).astype(np.float32) * 0.8 + 0.1
    prediction = write(tmp_path / "prediction.tif", soft, np.float32)
    binary = threshold(prediction, tmp_path / "binary.tif", 0.5)
    np.testing.assert_array_equal(read(binary), (soft >= 0.5).astype(np.uint8))
    final = postprocess(prediction, tmp_path / "final.geojson", confidence=0.5,
                        region_diagonal_um=6.0, image_spacing=0.5)  # fmt: skip
    document = json.loads((tmp_path / "final.geojson").read_text())
    kept = (soft >= 0.5) & ~components(soft >= 0.5, 3.0)
    assert len(document["features"]) == ndimage.label(kept, structure=np.ones((3, 3)))[1]
    assert final.endswith("final.geojson")
    assert not (tmp_path / "prediction.tif").exists()  # intermediates removed
    assert not (tmp_path / "final_thresholded.tif").exists()
    xs = [x for f in document["features"] for ring in f["geometry"]["coordinates"] for x, _ in ring]
    assert max(xs) > 257  # level-0 coordinates of the 0.5 µm/px slide: 4x the map's
    with pytest.raises(ValueError, match="geojson"):
        postprocess(binary, tmp_path / "final.png")
