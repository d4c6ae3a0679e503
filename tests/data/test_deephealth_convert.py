"""DeepHealth datasets converted to data configs (segmentation) and patch databases."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import yaml
from deephealth_datasets import make_classification, make_segmentation, write_png

from digipath.data.config import DataConfig
from digipath.data.deephealth import load_dataset
from digipath.data.deephealth_convert import (
    classification_database,
    label_image,
    segmentation_config,
)
from digipath.data.patch_database import PatchDatabase
from digipath.errors import DatasetFormatError
from digipath.io import ImageReader, ImageWriter


def test_segmentation_config_converts_images_and_masks(tmp_path):
    dataset = make_segmentation(tmp_path / "ds")
    path = segmentation_config(dataset, tmp_path / "out", spacing=0.5)
    config = DataConfig.load(path)
    assert set(config.purposes()) == {"training", "validation", "test"}
    assert config.count("training") == 4 and config.count("test") == 1
    item = config.items("training")[0]
    assert item.labels == (0, 1)
    with ImageReader(item.image) as image, ImageReader(item.mask) as mask:
        assert image.shapes[0] == (64, 64) and image.channels == 3
        assert image.spacings[0] == pytest.approx(0.5)
        assert mask.channels == 1 and mask.dtype == np.uint8
        labels = mask.read(0.5, 0, 0, 64, 64)[:, :, 0]
        pixels = image.read(0.5, 0, 0, 64, 64)
    truth = cv2.imread(str(tmp_path / "ds" / "gt" / "s0.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(labels, truth // 255)
    source = cv2.cvtColor(cv2.imread(str(tmp_path / "ds" / "images" / "s0.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(pixels, source)  # lossless for PNG


def test_segmentation_conversion_is_cached(tmp_path):
    dataset = make_segmentation(tmp_path / "ds", count=3)
    out = tmp_path / "out"
    segmentation_config(dataset, out)
    converted = sorted((out / "images").iterdir()) + sorted((out / "masks").iterdir())
    times = {p: p.stat().st_mtime_ns for p in converted}
    segmentation_config(dataset, out)
    assert {p: p.stat().st_mtime_ns for p in converted} == times
    # a changed input is converted again
    first = tmp_path / "ds" / "images" / "s0.png"
    rgb = np.full((64, 64, 3), 128, np.uint8)
    write_png(first, rgb)
    os.utime(first, ns=(1, 1))
    segmentation_config(dataset, out)
    changed = [p for p in converted if p.stat().st_mtime_ns != times[p]]
    assert [p.name for p in changed] == ["00000_s0.tif", "00000_s0_mask.tif"]
    # another spacing converts everything again
    segmentation_config(dataset, out, spacing=1.0)
    with ImageReader(out / "images" / "00001_s1.tif") as reader:
        assert reader.spacings[0] == pytest.approx(1.0)


def test_slides_are_referenced_not_copied(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    rgb = np.full((600, 600, 3), 220, np.uint8)
    with ImageWriter(folder / "slide.tif", (600, 600), spacing=0.25, tile_size=256,
                     min_level_size=256) as writer:  # fmt: skip
        writer.fill(rgb)
    mask = np.zeros((300, 300), np.uint8)
    mask[100:200, 100:200] = 255
    write_png(folder / "slide_gt.png", mask)
    (folder / "dataset.yml").write_text(yaml.safe_dump({
        "images": [{"location": "slide.tif", "label": "slide_gt.png"}],
        "split": {"training": [0]},
    }))  # fmt: skip
    config = DataConfig.load(segmentation_config(folder / "dataset.yml", tmp_path / "out"))
    item = config.items("training")[0]
    assert item.image == str(folder / "slide.tif")
    assert not list((tmp_path / "out" / "images").iterdir())
    with ImageReader(item.mask) as reader:
        assert reader.spacings[0] == pytest.approx(0.5)  # 600 px at 0.25 = 300 px at 0.5
        assert reader.read(0.5, 150, 150, 1, 1)[0, 0, 0] == 1
    assert item.labels == (0, 1)


def test_classification_database(tmp_path):
    dataset = make_classification(tmp_path / "ds")
    folder = classification_database(dataset, tmp_path / "db", shape=(16, 24))
    database = PatchDatabase(folder)
    assert database.classes == ["red", "blue"]
    assert database.purposes == ["training", "validation", "test"]
    assert database.count("training") == 8 and tuple(database.patch_shape) == (16, 24)
    labels = np.asarray(database.labels("training"))
    np.testing.assert_array_equal(labels, [0, 1] * 4)
    patches = database.patches("training", [0, 1])
    assert patches.shape == (2, 16, 24, 3) and patches.dtype == np.uint8
    assert patches[0, :, :, 0].mean() > 150 and patches[1, :, :, 2].mean() > 150
    stamp = (folder / "database.yaml").stat().st_mtime_ns
    classification_database(dataset, tmp_path / "db", shape=(16, 24))
    assert (folder / "database.yaml").stat().st_mtime_ns == stamp
    classification_database(dataset, tmp_path / "db", shape=(8, 8))
    assert tuple(PatchDatabase(folder).patch_shape) == (8, 8)


def test_purposes_map_purposes_to_splits(tmp_path):
    dataset = make_classification(tmp_path / "ds")
    folder = classification_database(
        dataset, tmp_path / "db", shape=(8, 8),
        purposes={"training": "training", "validation": "training"},
    )  # fmt: skip
    database = PatchDatabase(folder)
    assert database.purposes == ["training", "validation"]
    assert database.count("validation") == 8


def test_errors_name_the_dataset_and_the_sample(tmp_path):
    dataset = make_classification(tmp_path / "ds", count=6)
    (tmp_path / "ds" / "images" / "img3.png").write_bytes(b"not a png")
    with pytest.raises(DatasetFormatError) as caught:
        classification_database(dataset, tmp_path / "db", shape=(8, 8))
    assert caught.value.source == str(dataset)
    assert caught.value.key == "images[3].location" and "img3.png" in str(caught.value)

    seg = make_segmentation(tmp_path / "seg", count=3)
    os.remove(tmp_path / "seg" / "gt" / "s1.png")
    with pytest.raises(DatasetFormatError) as caught:
        segmentation_config(seg, tmp_path / "out")
    assert caught.value.key == "images[1].label" and caught.value.source == str(seg)

    document = yaml.safe_load(seg.read_text())
    document["split"] = {"test": [0]}
    seg.write_text(yaml.safe_dump(document))
    with pytest.raises(DatasetFormatError, match="no training split") as caught:
        segmentation_config(seg, tmp_path / "out")
    assert caught.value.source == str(seg)

    document["images"][0] = {"location": "images/s0.png"}
    document["split"] = {"training": [0]}
    seg.write_text(yaml.safe_dump(document))
    with pytest.raises(DatasetFormatError, match="no ground-truth image") as caught:
        segmentation_config(load_dataset(seg), tmp_path / "out")
    assert caught.value.key == "images[0].label"
    with pytest.raises(DatasetFormatError, match="classification_database"):
        segmentation_config(dataset, tmp_path / "out")


def test_label_image_rules():
    np.testing.assert_array_equal(label_image(np.array([[0, 255]], np.uint8)), [[0, 1]])
    np.testing.assert_array_equal(label_image(np.array([[0, 1, 2]], np.uint8)), [[0, 1, 2]])
    np.testing.assert_array_equal(label_image(np.array([[0, 100, 255]], np.uint8)), [[0, 0, 1]])
    colour = np.zeros((1, 2, 3), np.uint8)
    colour[0, 1, 2] = 255
    np.testing.assert_array_equal(label_image(colour), [[0, 1]])
