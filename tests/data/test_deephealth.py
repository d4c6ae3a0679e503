"""Tests of DeepHealth dataset files (digipath.data.deephealth)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from digipath.data.deephealth import (
    DEFAULT_DESCRIPTION,
    DEFAULT_NAME,
    Dataset,
    Sample,
    load_dataset,
    make_dataset,
    save_dataset,
)
from digipath.errors import DatasetFormatError

HERE = Path(__file__).parent
SEED_DATASET = HERE / "seed_deephealth_dataset.yaml"


def write(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


# --------------------------------------------------------------------------------------------
# Reading


def test_seed_example_loads(caplog):
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(SEED_DATASET)
    assert dataset.name == "dataset name"
    assert dataset.description.startswith("This is an example of long text")
    assert dataset.classes == ["class a", "class b", "class c"]
    assert dataset.task == "classification"
    assert dataset.split == {"training": [0, 1], "validation": [2], "test": [3]}
    images = dataset.images
    assert len(images) == 7
    assert images[0] == Sample(("image path and name 1",), 1, None, {0: "value 1", 2: "value 3"})
    assert images[1].label == 2 and images[1].values == {0: "value_1", 2: "value_3"}
    assert images[2].label == (0, 2) and images[3].label == (0, 2)
    assert images[4].label is None and images[4].label_path == "path_to_ground_truth_image"
    assert images[5] == Sample(("image path and name 6",))
    assert "not a class name" in caplog.text
    assert dataset.samples("test") == [images[3]]
    assert dataset.locations(5) == [str(HERE / "image path and name 6")]
    assert dataset.ground_truth(4) == str(HERE / "path_to_ground_truth_image")


def test_defaults_forms_and_opencv_directive(tmp_path):
    path = tmp_path / "d.yml"
    path.write_text(
        "%YAML:1.2\n---\nimages:\n  - a.png\n  - [b1.png, b2.png]\n"
        "  - location: https://example.org/c.png\n    label: gt/c.png\n"
    )
    dataset = load_dataset(path)
    assert dataset.name == DEFAULT_NAME and dataset.description == DEFAULT_DESCRIPTION
    assert dataset.task == "segmentation"
    assert dataset.images[1].location == ("b1.png", "b2.png")
    assert dataset.locations(2) == ["https://example.org/c.png"]
    assert dataset.ground_truth(2) == str(tmp_path / "gt" / "c.png")
    assert dataset.split == {}


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d.pop("images"), r"images: required"),
        (lambda d: d["images"].append({"label": 0}), r"images\[2\]\.location: required"),
        (lambda d: d["images"].append({"location": "x", "label": 5}), r"images\[2\]\.label: class"),
        (lambda d: d["images"].append({"location": "x", "label": ["a", "z"]}), r"label\[1\]"),
        (lambda d: d["images"].append({"location": "x", "lable": "a"}), r"images\[2\]\.lable"),
        (lambda d: d["images"].append({"location": 3}), r"images\[2\]\.location"),
        (lambda d: d["images"][0].update(values={"height": 1}), r"images\[0\]\.values\.height"),
        (lambda d: d["images"][0].update(values=[1, 2, 3]), r"images\[0\]\.values: 3 values"),
        (lambda d: d["split"].update(test=[0, 2]), r"split\.test\[1\]: expected a sample index"),
        (lambda d: d.update(classes="a"), r"classes: expected a list"),
        (lambda d: d.update(classes=["a", "a"]), r"classes: duplicate"),
    ],
)
def test_errors_name_file_and_key(tmp_path, edit, key):
    document = {
        "name": "n",
        "classes": ["a", "b"],
        "features": ["age", "size"],
        "images": [{"location": "x.png", "label": "a"}, "y.png"],
        "split": {"training": [0], "test": [1]},
    }
    edit(document)
    path = write(tmp_path / "dataset.yaml", document)
    with pytest.raises(DatasetFormatError, match=key) as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_file_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="no such file"):
        load_dataset(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("images: [a\n")
    with pytest.raises(DatasetFormatError, match="not valid YAML"):
        load_dataset(tmp_path / "bad.yaml")
    with pytest.raises(DatasetFormatError, match="no such split"):
        load_dataset(SEED_DATASET).samples("holdout")


# --------------------------------------------------------------------------------------------
# Writing


def test_save_round_trip(tmp_path):
    dataset = load_dataset(SEED_DATASET)
    save_dataset(dataset, tmp_path / "copy.yaml")
    again = load_dataset(tmp_path / "copy.yaml")
    for field in ("name", "description", "classes", "features", "images", "split"):
        assert getattr(again, field) == getattr(dataset, field), field
    written = yaml.safe_load((tmp_path / "copy.yaml").read_text())
    assert written["images"][0]["label"] == "class b"
    assert written["images"][0]["values"] == {"feature 1": "value 1", "feature 3": "value 3"}
    assert written["images"][5] == "image path and name 6"
    assert [p.name for p in tmp_path.iterdir()] == ["copy.yaml"]


def test_save_any_split_names(tmp_path):
    dataset = Dataset(
        [Sample(("a.png",), None, "a_gt.png"), Sample(("b.png", "c.png"))],
        split={"fold1": [0], "fold2": [1], "empty": []},
    )
    dataset.save(tmp_path / "d.yaml")
    again = load_dataset(tmp_path / "d.yaml")
    assert again.split == dataset.split
    assert again.images == dataset.images


# --------------------------------------------------------------------------------------------
# Generating from a folder tree


def test_make_classification_dataset(tmp_path, caplog):
    root = tmp_path / "cells"
    touch(
        root,
        "training/benign/1.png",
        "training/benign/sub/2.png",
        "training/malignant/3.png",
        "training/stray.png",
        "validation/malignant/4.png",  # no benign folder: labels must not shift
        "test/benign/5.png",
        "test/malignant/6.png",
    )
    with caplog.at_level(logging.WARNING):
        dataset = make_dataset(root, "classification")
    assert "stray.png" in caplog.text
    assert dataset.name == dataset.description == "cells"
    assert dataset.classes == ["benign", "malignant"]
    assert list(dataset.split) == ["test", "training", "validation"]
    assert dataset.split == {"test": [0, 1], "training": [2, 3, 4], "validation": [5]}
    located = {s.location[0]: s.label for s in dataset.images}
    assert located == {
        "test/benign/5.png": 0,
        "test/malignant/6.png": 1,
        "training/benign/1.png": 0,
        "training/benign/sub/2.png": 0,
        "training/malignant/3.png": 1,
        "validation/malignant/4.png": 1,
    }
    dataset.save(root / "dataset.yml")
    again = load_dataset(root / "dataset.yml")
    assert again.images == dataset.images
    assert Path(again.locations(0)[0]).is_file()


def test_make_segmentation_dataset_separate_folders(tmp_path):
    root = tmp_path / "seg"
    touch(
        root,
        "training/images/a.jpg",
        "training/ground_truth/a.png",
        "training/images/b.jpg",  # no ground truth: dropped outside test
        "test/images/c.jpg",  # kept without ground truth in test
    )
    dataset = make_dataset(root, "segmentation")
    assert dataset.task == "segmentation"
    assert dataset.split == {"test": [0], "training": [1]}
    assert dataset.images == [
        Sample(("test/images/c.jpg",)),
        Sample(("training/images/a.jpg",), None, "training/ground_truth/a.png"),
    ]


def test_make_segmentation_dataset_without_splits_and_shared_gt(tmp_path):
    root = tmp_path / "flat"
    touch(root, "images/a.png", "images/b.png", "ground_truth/a.png", "ground_truth/all.png")
    dataset = make_dataset(root, "segmentation", gt_name="all.png")
    assert dataset.split == {}
    assert [s.label_path for s in dataset.images] == ["ground_truth/a.png", "ground_truth/all.png"]


def test_make_segmentation_dataset_with_suffix(tmp_path):
    root = tmp_path / "suffix"
    touch(root, "training/a.png", "training/a_seg.png", "training/b.png", "training/notes.yml")
    dataset = make_dataset(root, "segmentation", suffix="_seg.png")
    assert dataset.images == [Sample(("training/a.png",), None, "training/a_seg.png")]
    assert dataset.split == {"training": [0]}


def test_make_dataset_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="no such folder"):
        make_dataset(tmp_path / "none")
    with pytest.raises(DatasetFormatError, match="unknown task"):
        make_dataset(tmp_path, "detection")  # type: ignore[arg-type]
