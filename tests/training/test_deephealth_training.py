"""Training on DeepHealth datasets: settings, parameters, classification and segmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from deephealth_datasets import make_classification, make_segmentation

from digipath.errors import ConfigError, DatasetFormatError
from digipath.models.files import load_model, read_header
from digipath.training.deephealth import TrainSettings, experiment_parameters, train_on_dataset

FAST = {"Epochs": 2, "Batch size": 4, "Input height": 32, "Input width": 32,
        "Learning rate": 0.003}  # fmt: skip
UNET = {"depth": 2, "branching factor": 2}


@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classification")
    dataset = make_classification(folder / "dataset")
    result = train_on_dataset(dataset, "cifar", FAST, folder / "out", seed=3)
    return dataset, folder, result


def test_settings_read_deephealth_property_names():
    settings = TrainSettings.from_mapping({
        "Learning rate": "0.001", "EPOCHS": "3", "batch_size": 8, "Metric": "Accuracy",
        "Loss function": "softmax_cross_entropy", "input_height": 64, "Input Width": "48",
        "Training augmentations": "AugMirror p=0.5\\n", "validation_augmentations": None,
        "Spacing": 1.0,
    })  # fmt: skip
    assert settings.learning_rate == 0.001 and settings.epochs == 3 and settings.batch_size == 8
    assert settings.metric == "accuracy" and settings.loss == "softmax_cross_entropy"
    assert settings.digipath_loss == "cross_entropy"
    assert (settings.input_height, settings.input_width) == (64, 48)
    assert settings.training_augmentations == "AugMirror p=0.5\n"
    assert settings.validation_augmentations == "" and settings.spacing == 1.0
    defaults = TrainSettings.from_mapping({})
    assert (defaults.learning_rate, defaults.epochs, defaults.batch_size) == (1e-4, 50, 1)
    assert (defaults.input_height, defaults.input_width) == (100, 100)
    assert TrainSettings.from_mapping(defaults.to_mapping()) == defaults


@pytest.mark.parametrize(
    ("mapping", "key", "message"),
    [
        ({"Batch size": "0"}, "Batch size", "integer >= 1"),
        ({"Epochs": 2.5}, "Epochs", "integer >= 1"),
        ({"Learning rate": "-1"}, "Learning rate", "number > 0"),
        ({"Learning_rate": "fast"}, "Learning_rate", "number > 0"),
        ({"Metric": "f1"}, "Metric", "accuracy"),
        ({"Loss function": "mean_squared_error"}, "Loss function", "not supported"),
        ({"Loss function": "hinge"}, "Loss function", "cross_entropy"),
        ({"Training augmentations": "AugRotate angel=[-5,5]"}, "Training augmentations",
         "augmentation text"),
        ({"Optimiser": "sgd"}, "Optimiser", "unknown training property"),
    ],
)  # fmt: skip
def test_settings_errors_name_the_property(mapping, key, message):
    with pytest.raises(ConfigError, match=message) as caught:
        TrainSettings.from_mapping(mapping)
    assert caught.value.key == key


def test_experiment_parameters_classification_and_segmentation():
    settings = TrainSettings(batch_size=4, input_height=32, input_width=40, epochs=3,
                             training_augmentations="AugMirror p=0.5")  # fmt: skip
    parameters = experiment_parameters(
        "cifar", settings, "classification", ["a", "b"], counts={"training": 10, "validation": 5}
    )
    assert parameters["model"] == {"type": "cifar", "loss": "cross_entropy"}
    training = parameters["training"]
    assert training["epoch count"] == 3 and training["metric name"] == "validation accuracy"
    assert training["learning"]["learning rate"] == 1e-4
    assert training["iterations"]["training"] == {
        "repetition count": 1, "iteration count": 2, "batch size": 4,
    }  # fmt: skip
    assert training["iterations"]["validation"]["iteration count"] == 2
    assert parameters["data"]["images"]["patch shapes"] == {1.0: [32, 40]}
    assert parameters["augmentation"] == {"training": "AugMirror p=0.5", "validation": ""}
    settings.spacing = 2.0
    settings.metric = "loss"
    segmentation = experiment_parameters("unet", settings, "segmentation", 3)
    assert segmentation["data"]["images"]["patch shapes"] == {2.0: [32, 40]}
    assert segmentation["data"]["labels"]["label map"] == {0: 0, 1: 1, 2: 2}
    assert segmentation["data"]["labels"]["mask pixel spacing"] == 2.0
    assert segmentation["training"]["metric name"] == "validation loss"
    assert segmentation["training"]["higher is better"] is False
    assert segmentation["model"]["padding"] == "same"


def test_intensity_conversions_are_left_to_the_normalisation():
    text = (
        "SequentialAugmentationContainer\n"
        '    AugResizeDim dims=(32,32) interp="cubic"\n'
        "    AugMirror p=0.5\n"
        "    AugToFloat32 divisor=255\n"
        "end"
    )
    settings = TrainSettings(training_augmentations=text, validation_augmentations="AugDivBy255")
    parameters = experiment_parameters("cifar", settings, "classification", 2)
    training = parameters["augmentation"]["training"]
    assert "AugToFloat32" not in training and "AugMirror p=0.5" in training
    assert parameters["augmentation"]["validation"] == ""
    assert parameters["data"]["normalization"] == {"enabled": True, "type": "rgb_to_0-1"}
    empty = (
        "SequentialAugmentationContainer\nOneOfAugmentationContainer p=0.5\n"
        "AugNormalize mean=0 std=1\nend\nend"
    )
    with pytest.raises(ConfigError, match="intensity conversions") as caught:
        experiment_parameters("cifar", TrainSettings(training_augmentations=empty),
                              "classification", 2)  # fmt: skip
    assert caught.value.key == "Training augmentations"


@pytest.mark.parametrize("metric", ["dice", "mean_squared_error"])
def test_a_metric_the_model_does_not_report_is_refused(metric):
    settings = TrainSettings(metric=metric)
    with pytest.raises(ConfigError, match="reports loss, accuracy") as caught:
        experiment_parameters("unet", settings, "segmentation", 2)
    assert caught.value.key == "Metric"


def test_an_unknown_model_is_refused():
    with pytest.raises(ConfigError, match="neither a model file nor a model type"):
        experiment_parameters("lenet", TrainSettings(), "classification", 2)


def test_classification_training(classification):
    _, folder, result = classification
    assert result["metric"] == "validation accuracy" and result["task"] == "classification"
    assert [row["epoch"] for row in result["rows"]] == [0, 1]
    row = result["rows"][-1]
    assert all(isinstance(row[k], float) for k in ("training loss", "validation loss",
                                                    "validation accuracy"))  # fmt: skip
    assert max(r["validation accuracy"] for r in result["rows"]) >= 0.5
    assert Path(result["best_model"]).is_file() and Path(result["last_model"]).is_file()
    header = read_header(result["best_model"])
    assert header["class_names"] == ["red", "blue"]
    assert header["deephealth"]["task"] == "classification"
    assert header["deephealth"]["input_shape"] == [32, 32]
    assert (folder / "out" / "data" / "classification" / "database.yaml").is_file()


def test_the_chain_learns_an_easy_task(tmp_path):
    """Red against blue: a few epochs of training reach a perfect test split."""
    import json

    from digipath.inference.deephealth import infer_on_dataset

    dataset = make_classification(tmp_path, count=24)
    settings = TrainSettings.from_mapping(
        {"Epochs": 6, "Batch size": 4, "Input height": 32, "Input width": 32,
         "Learning rate": 0.001}
    )  # fmt: skip
    result = train_on_dataset(dataset, "cifar", settings, tmp_path / "out", seed=1)
    assert result["rows"][-1]["validation accuracy"] == 1.0
    results = json.loads(infer_on_dataset(dataset, result["best_model"], tmp_path / "inf")
                         .read_text())  # fmt: skip
    assert results["metrics"]["accuracy"] == 1.0


def test_fine_tuning_starts_from_the_model_file(classification, tmp_path):
    dataset, _, result = classification
    settings = {**FAST, "Epochs": 1, "Learning rate": 1e-9}
    tuned = train_on_dataset(dataset, result["best_model"], settings, tmp_path, seed=1)
    before = load_model(result["best_model"]).network.state_dict()
    after = load_model(tuned["best_model"]).network.state_dict()
    for name, value in before.items():
        if value.is_floating_point():
            assert torch.allclose(value, after[name], atol=1e-5), name


def test_an_interrupted_training_resumes(tmp_path):
    dataset = make_classification(tmp_path / "dataset", count=8)

    class Stop(Exception):
        pass

    def stop(epoch, row):
        if epoch == 0:
            raise Stop

    settings = {**FAST, "Epochs": 2, "Input height": 16, "Input width": 16}
    with pytest.raises(Stop):
        train_on_dataset(dataset, "cifar", settings, tmp_path / "out", seed=2, on_epoch_end=stop)
    events = []
    result = train_on_dataset(
        dataset, "cifar", settings, tmp_path / "out", seed=2, resume=True,
        progress=lambda event, info: events.append(event),
    )  # fmt: skip
    assert [row["epoch"] for row in result["rows"]] == [0, 1]
    assert events.count("epoch") == 1 and "batch" in events


def test_segmentation_training(tmp_path):
    dataset = make_segmentation(tmp_path / "dataset")
    settings = {**FAST, "Learning rate": 0.01, "Training augmentations": "AugMirror p=0.5"}
    result = train_on_dataset(dataset, "unet", settings, tmp_path / "out", seed=0,
                              model_options=UNET)  # fmt: skip
    assert result["task"] == "segmentation" and result["classes"] == ["background", "foreground"]
    assert len(result["rows"]) == 2
    header = read_header(result["best_model"])
    assert header["model"]["type"] == "unet" and header["classes"] == 2
    assert header["deephealth"]["spacing"] == 0.5
    assert header["patch_shapes"] == {"0.5": [32, 32]}
    assert (tmp_path / "out" / "data" / "segmentation" / "data.yaml").is_file()


def test_a_dataset_without_training_split_fails_clearly(tmp_path):
    dataset = make_classification(tmp_path / "dataset", count=4)
    document = yaml.safe_load(dataset.read_text())
    document["split"] = {"test": [0, 1]}
    dataset.write_text(yaml.safe_dump(document))
    with pytest.raises(DatasetFormatError, match="no training split"):
        train_on_dataset(dataset, "cifar", FAST, tmp_path / "out")
