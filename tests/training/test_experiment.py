"""ExperimentCommander and NetworkTrainer on small slides: files, resume, fallback, validation."""

from __future__ import annotations

import copy
import json

import pytest
from tiny_experiment import PARAMETERS

from digipath.data.config import DataConfig
from digipath.errors import ConfigError
from digipath.models.files import file_digest, read_header
from digipath.training.experiment import ExperimentCommander
from digipath.training.progress import read_rows
from digipath.training.trainer import NetworkTrainer


def commander(sources, tmp_path, parameters=None, **options) -> ExperimentCommander:
    settings = dict(experiment_name="exp", progress_dir=tmp_path, seed=3)
    settings.update(options)
    return ExperimentCommander(parameters or PARAMETERS, DataConfig(sources), **settings)


def test_an_experiment_writes_its_files(sources, tmp_path):
    summary = commander(sources, tmp_path).execute()
    folder = tmp_path / "exp"
    for name in (
        "best_model.safetensors", "last_model.safetensors", "best_state.json",
        "last_state.json", "progress.csv", "progress.png", "parameters.yaml",
        "overrides.yaml", "data.yaml", "repo.yaml", "log.txt",
    ):  # fmt: skip
        assert (folder / f"exp_{name}").is_file(), name
    rows = read_rows(folder / "exp_progress.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    columns = {"training loss", "validation accuracy", "training difficult patch ratio"}
    assert columns <= set(rows[0])
    state = json.loads((folder / "exp_last_state.json").read_text())
    assert state["epoch"] == 2
    assert state["model_digest"] == file_digest(folder / "exp_last_model.safetensors")
    header = read_header(folder / "exp_last_model.safetensors")
    assert header["model"]["type"] == "unet" and header["classes"] == 2
    assert header["label_map"] == {"0": 0, "1": 1, "2": 1} and header["spacings"] == [1.0]
    assert header["provenance"]["experiment"] == "exp"
    assert summary["epochs_run"] == 3 and summary["best_epoch"] in (0, 1, 2)
    assert (folder / "exp_progress.png").read_bytes()[:4] == b"\x89PNG"
    assert "seed 3" in (folder / "exp_log.txt").read_text()


def test_an_interrupted_run_resumes_at_the_next_epoch(sources, tmp_path):
    def stop_after_second(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        commander(sources, tmp_path, on_epoch_end=stop_after_second).execute()
    folder = tmp_path / "exp"
    before = (folder / "exp_progress.csv").read_text().splitlines()
    assert len(before) == 3  # header and epochs 0, 1
    summary = commander(sources, tmp_path, resume=True).execute()
    after = (folder / "exp_progress.csv").read_text().splitlines()
    assert summary["epochs_run"] == 1
    assert after[:3] == before and len(after) == 4 and after[3].startswith("2,")
    assert json.loads((folder / "exp_last_state.json").read_text())["epoch"] == 2
    assert "resuming after epoch 1" in (folder / "exp_log.txt").read_text()


def test_a_corrupted_last_model_falls_back_to_the_best(sources, tmp_path):
    commander(sources, tmp_path).execute()
    folder = tmp_path / "exp"
    best_epoch = json.loads((folder / "exp_best_state.json").read_text())["epoch"]
    model = folder / "exp_last_model.safetensors"
    model.write_bytes(model.read_bytes()[:-100])  # a save interrupted half-way
    parameters = copy.deepcopy(PARAMETERS)
    parameters["training"]["epoch count"] = 4
    summary = commander(sources, tmp_path, parameters=parameters, resume=True).execute()
    rows = read_rows(folder / "exp_progress.csv")
    assert [int(row["epoch"]) for row in rows] == list(range(4))  # kept up to the best, redone
    assert summary["epochs_run"] == 4 - (best_epoch + 1)
    assert "cannot resume from the last state" in (folder / "exp_log.txt").read_text()


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["training"].update({"epoch count": 0}), "training.epoch count"),
        (lambda p: p["training"].update({"epochs": 3}), "training.epochs"),
        (lambda p: p["training"]["learning"].update({"learning rate": -1}),
         "training.learning.learning rate"),
        (lambda p: p["training"].update({"metric name": "validation dice"}),
         "training.metric name"),
        (lambda p: p["model"].update({"type": "vgg"}), "model.type"),
        (lambda p: p["model"].update({"depth of field": 2}), "model.depth of field"),
        (lambda p: p["model"].update({"backend": "keras"}), "model.backend"),
        (lambda p: p["data"]["labels"].update({"label mode": "full"}), "data.labels.label mode"),
        (lambda p: p["system"].update({"pool size": -2}), "system.pool size"),
        (lambda p: p.update({"augmentation": {"training": [{"group": "g", "items": [
            {"type": "rotate_91"}]}]}}), "augmentation.training[0].items[0].type"),
    ],
)  # fmt: skip
def test_a_wrong_key_or_value_fails_before_any_work(sources, tmp_path, edit, key):
    parameters = copy.deepcopy(PARAMETERS)
    edit(parameters)
    with pytest.raises(ConfigError) as caught:
        commander(sources, tmp_path, parameters=parameters).execute()
    assert caught.value.key == key
    assert not (tmp_path / "exp").exists()


def test_overrides_change_existing_keys_before_validation(sources, tmp_path):
    run = commander(sources, tmp_path, overrides=["training.epoch count=1", "model.depth=1"])
    assert run.training.epochs == 1 and run.model.network_parameters["depth"] == 1
    with pytest.raises(ConfigError, match="no such key"):
        commander(sources, tmp_path, overrides=["training.epochs=1"])


def test_plateau_counts_epochs_since_the_best():
    plateau = NetworkTrainer._plateau
    assert plateau([0.5], True) == 0
    assert plateau([0.5, 0.6], True) == 0
    assert plateau([0.5, 0.6, 0.6], True) == 0  # a tie counts as improvement
    assert plateau([0.5, 0.6, 0.55, 0.52], True) == 2
    assert plateau([0.5, 0.4, 0.45], False) == 1


def test_a_work_directory_is_synchronised_to_the_progress_directory(sources, tmp_path):
    parameters = copy.deepcopy(PARAMETERS)
    parameters["training"]["epoch count"] = 1
    work = tmp_path / "local"
    commander(sources, tmp_path / "shared", parameters=parameters, work_dir=work).execute()
    written = sorted(p.name for p in (work / "exp").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "shared" / "exp").iterdir())
    assert "exp_last_model.safetensors" in written
