"""An experiment trains a RADHicaL-style patch classifier from a patch database."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from digipath.data.database_generator import DatabaseBatchGenerator
from digipath.data.patch_database import PatchDatabase, PatchDatabaseError, PatchDatabaseWriter
from digipath.errors import ConfigError
from digipath.models.files import load_model, read_header
from digipath.training.experiment import ExperimentCommander
from digipath.training.progress import read_rows

COLOURS = np.array([[200, 60, 60], [60, 180, 70], [70, 80, 210]], np.float64)  # per class

PARAMETERS = yaml.safe_load(
    """
model:
  type: 'cifar'
  name: 'level 2 classifier'
system:
  process count: 0
training:
  epoch count: 2
  metric name: 'validation accuracy'
  higher is better: true
  averaging length: 1
  learning:
    learning rate: 0.002
  boosting:
    enabled: true
    buffer mode switch: 1
    difficult threshold: 0.5
    difficult update ratio: 0.5
  iterations:
    training: {repetition count: 2, iteration count: 4, batch size: 16}
    validation: {repetition count: 1, iteration count: 3, batch size: 20}
data:
  images:
    patch shapes: {2.0: [32, 32]}
  labels:
    label ratios: {0: 1.0, 1: 1.0, 2: 1.0}
  normalization: {enabled: true, type: 'rgb_to_0-1'}
augmentation:
  training:
    - group: 'spatial'
      random: false
      items:
        - {type: 'flip', flips: ['none', 'vertical', 'horizontal', 'both']}
"""
)


def patches_of(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noisy 32 x 32 patches whose colour is their class's: easy to tell apart."""
    noise = rng.normal(0, 25, (len(labels), 32, 32, 3))
    return np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A level-2 database: 240 training and 60 validation patches of 3 classes."""
    folder = tmp_path_factory.mktemp("level_2")
    rng = np.random.default_rng(0)
    with PatchDatabaseWriter(
        folder, (32, 32), 3, ("negative", "mixed", "positive"), spacing=2.0, shard_size=100,
        metadata={"level": 2},
    ) as writer:  # fmt: skip
        for purpose, count in (("training", 240), ("validation", 60)):
            labels = rng.integers(0, 3, count)
            writer.add(purpose, patches_of(labels, rng), labels, source=f"{purpose}.tif")
    return folder


def test_an_experiment_trains_a_classifier_from_a_database(database, tmp_path):
    commander = ExperimentCommander(
        PARAMETERS, database, experiment_name="level2", progress_dir=tmp_path, seed=4
    )
    assert isinstance(commander.generators["training"], DatabaseBatchGenerator)
    summary = commander.execute()
    folder = tmp_path / "level2"
    for name in (
        "best_model.safetensors", "last_model.safetensors", "best_state.json",
        "last_state.json", "progress.csv", "progress.png", "parameters.yaml",
        "database.yaml", "repo.yaml", "log.txt",
    ):  # fmt: skip
        assert (folder / f"level2_{name}").is_file(), name
    assert not (folder / "level2_data.yaml").exists()  # no data config to save
    rows = read_rows(folder / "level2_progress.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1] and summary["epochs_run"] == 2
    assert {"training loss", "validation accuracy", "training difficult patch ratio"} <= set(
        rows[0]
    )
    accuracy = max(float(row["validation accuracy"]) for row in rows)
    assert accuracy > 0.6  # chance is 1/3
    header = read_header(folder / "level2_best_model.safetensors")
    assert header["model"]["type"] == "cifar" and header["classes"] == 3
    assert header["spacings"] == [2.0] and header["patch_shapes"] == {"2.0": [32, 32]}
    assert header["class_names"] == ["negative", "mixed", "positive"]
    model = load_model(folder / "level2_best_model.safetensors")
    patches = patches_of(np.array([0, 1, 2]), np.random.default_rng(9))
    batch = (patches.astype(np.float32) / 255).transpose(0, 3, 1, 2)
    assert model.predict(batch)["predictions"].shape == (3, 3)
    record = yaml.safe_load((folder / "level2_database.yaml").read_text())
    assert record["patch database"] == str(database.resolve())
    assert record["purposes"]["training"]["count"] == 240
    provenance = yaml.safe_load((folder / "level2_repo.yaml").read_text())
    assert provenance["data file"] == str(database) and provenance["seed"] == 4


def test_a_wrong_database_fails_before_any_work(tmp_path):
    with PatchDatabaseWriter(tmp_path / "db", (32, 32), 3, ("a", "b"), spacing=2.0) as writer:
        writer.add("training", np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 0, 1])
    parameters = copy.deepcopy(PARAMETERS)
    parameters["data"]["labels"]["label ratios"] = {0: 1.0, 1: 1.0}
    with pytest.raises(ConfigError, match="no purpose 'validation'") as caught:
        ExperimentCommander(parameters, PatchDatabase(tmp_path / "db"), progress_dir=tmp_path)
    assert caught.value.key == "data.purposes"
    (tmp_path / "db" / "database.yaml").unlink()  # as an interrupted extraction leaves it
    with pytest.raises(PatchDatabaseError, match="not a patch database"):
        ExperimentCommander(parameters, tmp_path / "db", progress_dir=tmp_path)
    with PatchDatabaseWriter(tmp_path / "db2", (32, 32), 3, ("a", "b"), spacing=2.0) as writer:
        for purpose in ("training", "validation"):
            writer.add(purpose, np.zeros((4, 32, 32, 3), np.uint8), [0, 1, 0, 1])
    parameters["data"]["images"]["patch shapes"] = {2.0: [64, 64]}
    with pytest.raises(ConfigError, match=r"differs from the patch shape"):
        ExperimentCommander(parameters, tmp_path / "db2", progress_dir=tmp_path)


def test_the_train_command_takes_a_database_folder(database, tmp_path):
    from digipath.cli.main import app

    parameters = copy.deepcopy(PARAMETERS)
    parameters["training"]["epoch count"] = 1
    parameters["training"]["iterations"]["training"].update(
        {"repetition count": 1, "iteration count": 2}
    )
    parameters["training"]["iterations"]["validation"]["iteration count"] = 1
    path = tmp_path / "parameters.yaml"
    path.write_text(yaml.safe_dump(parameters))
    arguments = ["train", str(database), str(path), "-e", "cli", "-o", str(tmp_path), "--seed", "1"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "cli_last_model.safetensors").is_file()
    refused = CliRunner().invoke(app, [*arguments, "--path", "TAG=x"])
    assert refused.exit_code == 2 and "--path" in refused.output
    assert "patch database" in " ".join(refused.output.replace("│", " ").split())
