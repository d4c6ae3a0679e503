"""Inference on DeepHealth datasets and single images: results.json, masks, overlays."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from deephealth_datasets import make_classification, make_segmentation

from digipath.errors import DatasetFormatError
from digipath.inference.deephealth import infer_image, infer_on_dataset, model_description
from digipath.training.deephealth import train_on_dataset

FAST = {"Epochs": 2, "Batch size": 4, "Input height": 32, "Input width": 32,
        "Learning rate": 0.003}  # fmt: skip


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier")
    dataset = make_classification(folder / "dataset")
    result = train_on_dataset(dataset, "cifar", FAST, folder / "out", seed=3)
    return dataset, result["best_model"]


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segmenter")
    dataset = make_segmentation(folder / "dataset")
    settings = {**FAST, "Learning rate": 0.01}
    result = train_on_dataset(dataset, "unet", settings, folder / "out", seed=0,
                              model_options={"depth": 2, "branching factor": 2})  # fmt: skip
    return dataset, result["best_model"]


def test_model_description(classifier, segmenter):
    description = model_description(classifier[1])
    assert description["task"] == "classification" and description["classes"] == ["red", "blue"]
    assert description["input_shape"] == (32, 32)
    description = model_description(segmenter[1])
    assert description["task"] == "segmentation" and description["spacing"] == 0.5


def test_classification_results(classifier, tmp_path):
    dataset, model = classifier
    calls = []
    path = infer_on_dataset(dataset, model, tmp_path, progress=lambda d, t: calls.append((d, t)),
                            batch_size=1)  # fmt: skip
    assert path == tmp_path / "results.json"
    results = json.loads(path.read_text())
    assert results["task"] == "classification" and results["classes"] == ["red", "blue"]
    assert results["count"] == 2 and results["split"] == "test"
    assert results["model"] == Path(model).name and "/" not in results["dataset"]
    assert calls == [(1, 2), (2, 2)]
    for entry in results["images"]:
        assert set(entry) == {"image", "scores", "predicted", "label", "preview"}
        preview = cv2.imread(str(tmp_path / entry["preview"]))
        assert preview is not None and max(preview.shape[:2]) <= 256
        assert len(entry["scores"]) == 2 and sum(entry["scores"]) == pytest.approx(1.0, abs=1e-4)
        assert entry["predicted"] == results["classes"][int(np.argmax(entry["scores"]))]
    assert [e["label"] for e in results["images"]] == ["red", "blue"]
    accuracy = np.mean([e["label"] == e["predicted"] for e in results["images"]])
    assert results["metrics"] == {"accuracy": accuracy}
    # the training split, in one batch
    results = json.loads(infer_on_dataset(dataset, model, tmp_path, split="training").read_text())
    assert results["count"] == 8 and results["metrics"]["accuracy"] >= 0.5


def test_classification_of_one_image(classifier, tmp_path):
    dataset, model = classifier
    image = Path(dataset).parent / "images" / "img0.png"
    results = json.loads(infer_image(image, model, tmp_path).read_text())
    assert results["count"] == 1 and results["metrics"] == {}
    (entry,) = results["images"]
    assert entry["label"] is None and entry["predicted"] in ("red", "blue")
    assert entry["image"] == str(image)


def test_segmentation_results(segmenter, tmp_path):
    dataset, model = segmenter
    calls = []
    results = json.loads(
        infer_on_dataset(
            dataset, model, tmp_path, progress=lambda d, t: calls.append(d)
        ).read_text()
    )
    assert results["task"] == "segmentation" and results["count"] == 1 and calls == [1]
    (entry,) = results["images"]
    assert set(entry) == {"image", "mask", "overlay", "dice"}
    mask = cv2.imread(str(tmp_path / entry["mask"]), cv2.IMREAD_UNCHANGED)
    overlay = cv2.imread(str(tmp_path / entry["overlay"]), cv2.IMREAD_COLOR)
    assert mask.shape == (64, 64) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    assert overlay.shape == (64, 64, 3)
    image = cv2.imread(str(Path(dataset).parent / entry["image"]), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(overlay[mask == 0], image[mask == 0])
    truth = cv2.imread(str(Path(dataset).parent / "gt" / "s5.png"), cv2.IMREAD_GRAYSCALE) > 0
    predicted = mask > 0
    dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    assert entry["dice"] == pytest.approx(dice)
    assert results["metrics"] == {"dice": pytest.approx(dice)}
    assert not (tmp_path / ".work").exists()


def test_segmentation_of_one_image(segmenter, tmp_path):
    dataset, model = segmenter
    image = Path(dataset).parent / "images" / "s0.png"
    results = json.loads(infer_image(image, model, tmp_path).read_text())
    (entry,) = results["images"]
    assert entry["dice"] is None and results["metrics"] == {}
    assert (tmp_path / entry["mask"]).is_file() and (tmp_path / entry["overlay"]).is_file()


def test_inference_errors_name_the_dataset(classifier, tmp_path):
    dataset, model = classifier
    with pytest.raises(DatasetFormatError, match="no such split") as caught:
        infer_on_dataset(dataset, model, tmp_path, split="holdout")
    assert caught.value.source == str(dataset)
    document = yaml.safe_load(Path(dataset).read_text())
    document["images"][10]["location"] = "images/missing.png"
    broken = Path(dataset).with_name("broken.yml")
    broken.write_text(yaml.safe_dump(document))
    with pytest.raises(DatasetFormatError, match=r"missing\.png") as caught:
        infer_on_dataset(broken, model, tmp_path)
    assert caught.value.key == "images[10].location"
