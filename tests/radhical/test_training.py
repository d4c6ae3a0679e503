"""One experiment per level from one parameter file with per-level overrides."""

from __future__ import annotations

import pytest
import yaml
from radhical_models import write_level_databases

from digipath.errors import ConfigError
from digipath.models.files import load_model
from digipath.radhical.training import level_databases, level_parameters, read_levels, train_levels

PARAMETERS = yaml.safe_load(
    """
model: {type: 'levelnet', widths: [4, 4, 8], hidden: 8}
system: {process count: 0}
training:
  epoch count: 2
  metric name: 'validation accuracy'
  higher is better: true
  averaging length: 1
  learning: {learning rate: 0.003}
  iterations:
    training: {repetition count: 1, iteration count: 4, batch size: 16}
    validation: {repetition count: 1, iteration count: 2, batch size: 16}
data:
  images: {patch shapes: {1.0: [32, 32]}}
  labels: {label ratios: {0: 1.0, 1: 1.0, 2: 1.0}}
  normalization: {enabled: true, type: 'rgb_to_0-1'}
levels:
  0:
    data: {labels: {label ratios: {0: 1.0, 1: 1.0}}}
  0.5:
    training: {epoch count: 1}
"""
)


@pytest.fixture(scope="module")
def databases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("databases")
    write_level_databases(folder)
    (folder / "notes").mkdir()  # other folders are ignored
    return folder


def test_level_parameters_merge_the_overrides():
    finest = level_parameters(PARAMETERS, 0, 0.25)
    assert "levels" not in finest
    assert finest["data"]["labels"]["label ratios"] == {0: 1.0, 1: 1.0}
    assert finest["data"]["images"]["patch shapes"] == {0.25: [32, 32]}
    second = level_parameters(PARAMETERS, 1, 0.5)  # keyed by spacing
    assert second["training"]["epoch count"] == 1
    assert second["training"]["metric name"] == "validation accuracy"  # the rest is kept
    assert PARAMETERS["training"]["epoch count"] == 2  # the file's mapping is not changed
    assert PARAMETERS["data"]["images"]["patch shapes"] == {1.0: [32, 32]}
    with pytest.raises(ConfigError, match=r"levels\.0"):
        level_parameters({**PARAMETERS, "levels": {0: "fast"}}, 0, 0.25)


def test_every_level_is_trained_and_listed(databases, tmp_path):
    assert [(i, s) for i, s, _ in level_databases(databases)] == [(0, 0.25), (1, 0.5)]
    results = train_levels(PARAMETERS, databases, tmp_path / "experiments", seed=1)
    assert sorted(results) == [0, 1]
    levels = read_levels(tmp_path / "experiments" / "levels.yaml")
    assert [spacing for spacing, _ in levels] == [0.25, 0.5]
    finest, coarse = (load_model(path) for _, path in levels)
    assert (finest.classes, coarse.classes) == (2, 3)
    assert (tmp_path / "experiments" / "level_1" / "level_1_progress.csv").exists()


def test_one_level_alone_and_errors(databases, tmp_path):
    train_levels(PARAMETERS, databases, tmp_path / "one", levels=[1], seed=1)
    assert (tmp_path / "one" / "level_1" / "level_1_best_model.safetensors").exists()
    assert not (tmp_path / "one" / "levels.yaml").exists()  # level 0 is not trained yet
    with pytest.raises(ConfigError, match="no database for level 5"):
        train_levels(PARAMETERS, databases, tmp_path / "bad", levels=[5])
    with pytest.raises(ConfigError, match="no level databases"):
        train_levels(PARAMETERS, tmp_path, tmp_path / "bad")


def test_levels_train_in_separate_processes(databases, tmp_path):
    """processes=2: each level's experiment runs in its own (spawned) process."""
    results = train_levels(PARAMETERS, databases, tmp_path / "parallel", processes=2, seed=1)
    assert sorted(results) == [0, 1]
    levels = read_levels(tmp_path / "parallel" / "levels.yaml")
    assert all(load_model(path).classes in (2, 3) for _, path in levels)
