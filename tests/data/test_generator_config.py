"""Batch generators from a DigitalPathology parameter file (system, data, augmentation)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from digipath.augment import AugmenterPool
from digipath.data.config import DataConfig
from digipath.data.generator_config import batch_generators, load_parameters
from digipath.data.normalization import RgbToZeroOne
from digipath.errors import ConfigError

# The seed's system, training and data sections (labels and categories adapted to the test
# slides: mask values 1 and 2 mapped to classes 0 and 1) and a short augmentation section.
PARAMETERS = """
system:
  process count: 2.0
  pool size: 4
  multi-threaded: true
  ipc chunk size: 10000
  join timeout secs: 30
  response timeout secs: 600
  poll timeout secs: 1800
training:
  epoch count: 4
  buffer chunk size: 10000
  iterations:
    training: {repetition count: 4, iteration count: 3, batch size: 8}
    validation: {repetition count: 2, iteration count: 2, batch size: 8}
data:
  images:
    patch shapes:
      2.0: [16, 16]
    channels: [0, 1, 2]
  labels:
    mask pixel spacing: 2.0
    label mode: 'central'
    label map: {1: 0, 2: 1}
    label ratios: {1: 1.0, 2: 1.0}
    strict selection: false
    one hot: true
  spacing tolerance: 0.25
  normalization: {enabled: true, type: 'rgb_to_0-1'}
  weight mapping: {enabled: false}
  categories: {tumour: 1.0, normal: 1.0}
  purposes: {training: 0.6, validation: 0.4}
  resources:
    workers: {training: 1.0, validation: 1.0}
    samplers: {training: 1.0, validation: 1.0}
augmentation:
  training:
    - group: 'spatial'
      random: false
      items:
        - {type: 'flip', flips: ['none', 'horizontal']}
"""


@pytest.fixture
def parameters() -> dict:
    return yaml.safe_load(PARAMETERS)


def test_the_seed_sections_build_one_generator_per_purpose(parameters, sources):
    data = DataConfig(sources)
    generators = batch_generators(parameters, data, cpu_count=1, seed=0)
    assert set(generators) == {"training", "validation"}
    training, validation = generators["training"], generators["validation"]
    assert training.main_buffer_size == training.read_buffer_size == 24
    assert validation.main_buffer_size == 16
    assert training.processes == validation.processes == 1  # 2.0 x 1 CPU over two purposes
    assert training.planner.pool_size + validation.planner.pool_size == 4
    assert isinstance(training.augmenter, AugmenterPool) and validation.augmenter is None
    assert isinstance(training.normalizer, RgbToZeroOne)
    assert training.patch_shapes == {2.0: (16, 16)} and training.classes == 2
    with training:
        batch, _ = training.batch(8)
    assert batch[2.0]["patches"].shape == (8, 3, 16, 16) and batch[2.0]["labels"].shape == (8, 2)
    assert batch[2.0]["patches"].dtype == np.float32


def test_a_parameter_file_and_in_process_sampling(parameters, sources, tmp_path):
    parameters["system"]["process count"] = 0
    path = tmp_path / "parameters.yaml"
    path.write_text(yaml.safe_dump(parameters))
    (generator,) = batch_generators(path, DataConfig(sources), ["validation"], seed=1).values()
    assert generator.processes == 0 and generator.name == "validation"
    assert load_parameters(path)["system"]["process count"] == 0


@pytest.mark.parametrize(
    ("edit", "key", "message"),
    [
        (lambda p: p["data"]["images"].update({"patch shapes": {2: [16, 16]}}),
         "data.images.patch shapes.2", "level index"),
        (lambda p: p["data"]["labels"].update({"label mode": "centre"}),
         "data.labels.label mode", "central, synthesize, load"),
        (lambda p: p["data"]["labels"].update({"label ratios": {3: 1.0}}),
         "data.labels.label ratios", "not in the label map"),
        (lambda p: p["data"]["labels"].update({"mask pixel spacing": 0}),
         "data.labels.mask pixel spacing", "> 0"),
        (lambda p: p["data"]["images"].update({"channels": [0, 0]}),
         "data.images.channels", "twice"),
        (lambda p: p["data"].update({"colours": 1}), "data.colours", "unknown key"),
        (lambda p: p["system"].update({"pool size": 0}), "system.pool size", ">= 1"),
        (lambda p: p["data"]["normalization"].update({"type": "zscore"}),
         "data.normalization.type", "rgb_to_0-1"),
        (lambda p: p["training"]["iterations"]["training"].update({"batch size": 0}),
         "training.iterations.training.batch size", ">= 1"),
    ],
)  # fmt: skip
def test_errors_name_the_key(parameters, sources, edit, key, message):
    edit(parameters)
    with pytest.raises(ConfigError, match=message) as caught:
        batch_generators(parameters, DataConfig(sources), cpu_count=1)
    assert caught.value.key == key
