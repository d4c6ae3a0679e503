"""HoVer-Net training: a few iterations lower the loss; the two-phase runner writes its files.

HoVer-Net is large on a CPU: fast mode, 96-104 px inputs, encoder frozen, a handful of steps.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from digipath.models.hovernet_model import HoVerNetModel
from digipath.nuclei.dataset import HoVerNetBatchSource, build_patch_set
from digipath.nuclei.io import NucleiError
from digipath.nuclei.training import ORIGINAL_PHASES, Phase, _phase, train_hovernet


@pytest.fixture(scope="module")
def tile(test_data):
    folder = test_data / "nuclei" / "cellseg_models"
    image, annotation = folder / "patch2.png", folder / "patch2.mat"
    if not image.exists() or not annotation.exists():
        pytest.fail(f"{image} or {annotation} missing from the test data")
    return image, annotation


@pytest.fixture(scope="module")
def patches(tile, tmp_path_factory):
    return build_patch_set([tile], tmp_path_factory.mktemp("patches"), window=128, step=128)


def test_a_few_iterations_lower_the_loss(patches):
    """Three Adam steps on one sample lower the loss.

    The MSGE term is left out of the total here: at random initialisation it is about a
    hundred times the other terms and swings from step to step, so three steps do not
    reliably lower it.
    """
    torch.manual_seed(0)
    model = HoVerNetModel(
        types=patches.types, mode="fast", freeze_encoder=True, learning_rate=1e-4,
        input_shape=(104, 104), loss_options={"hv_msge": 0.0},
    ).build()  # fmt: skip
    source = HoVerNetBatchSource(
        patches, mode="fast", input_shape=(104, 104), main_buffer_size=4, seed=0
    )
    with source:
        batch, _ = source.batch(4)
    # the sample with the most nucleus pixels in the 12 px output
    full = batch[1.0]
    keep = np.argsort(full["labels"]["np"].sum(axis=(1, 2)))[-1:]
    entry = {
        "patches": full["patches"][keep],
        "labels": {name: value[keep] for name, value in full["labels"].items()},
    }
    assert entry["labels"]["np"].any()  # nuclei in the output crop
    encoder = [p.detach().clone() for p in model.module.encoder_parameters()]
    history = [model.update(entry["patches"], entry["labels"]) for _ in range(3)]
    losses = [h["loss"] for h in history]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert history[-1]["np_ce"] < history[0]["np_ce"]
    assert history[-1]["tp_ce"] < history[0]["tp_ce"]
    for before, after in zip(encoder, model.module.encoder_parameters(), strict=True):
        assert torch.equal(before, after)  # frozen


def test_phases():
    assert ORIGINAL_PHASES[0] == Phase(50, True, 16)
    assert ORIGINAL_PHASES[1].freeze_encoder is False and ORIGINAL_PHASES[1].batch_size == 4
    phase = Phase(60, True)
    assert phase.rate(0) == phase.rate(24) == pytest.approx(1e-4)
    assert phase.rate(25) == pytest.approx(1e-5) and phase.rate(50) == pytest.approx(1e-6)
    assert _phase((3, False), 0) == Phase(3, False, 4)
    assert _phase({"epochs": 2, "batch_size": 1}, 0) == Phase(2, True, 1)
    with pytest.raises(NucleiError, match="epochs"):
        Phase(0)
    with pytest.raises(NucleiError, match=r"phases\[1\]"):
        _phase({"epochs": 2, "bad": 1}, 1)


def test_train_hovernet_two_phases_files_and_resume(patches, tmp_path):
    torch.manual_seed(0)
    events = []
    # both phases frozen to stay fast on a CPU (an unfrozen backward pass costs ~5x more)
    phases = [
        Phase(1, True, 1, iterations=1, step_size=1),
        Phase(1, True, 1, iterations=1, learning_rate=5e-5),
    ]
    summary = train_hovernet(
        patches, tmp_path, mode="fast", phases=phases, input_shape=(96, 96),
        validation_iterations=1, main_buffer_size=2,
        progress=lambda event, info: events.append(event),
    )  # fmt: skip
    assert summary["types"] == patches.types
    assert summary["input_shape"] == (96, 96) and summary["output_shape"] == (4, 4)
    assert summary["best"].exists() and summary["last"].exists()
    for number, phase in enumerate(phases, start=1):
        prefix = tmp_path / f"hovernet_phase{number}"
        for suffix in ("best_model.safetensors", "last_model.safetensors", "last_state.json",
                       "progress.csv"):  # fmt: skip
            assert (tmp_path / f"{prefix.name}_{suffix}").exists()
        with open(f"{prefix}_progress.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 1
        assert float(rows[0]["learning rate"]) == pytest.approx(phase.rate(0))
        assert np.isfinite(float(rows[0]["validation loss"]))
    assert events.count("phase start") == 2
    state = json.loads((tmp_path / "hovernet_phase2_last_state.json").read_text())
    assert state["epoch"] == 0
    # phase 2 started from phase 1's weights: the (frozen) encoders are the same
    first = tmp_path / "hovernet_phase1_last_model.safetensors"
    with safe_open(first, "pt") as one, safe_open(summary["last"], "pt") as two:
        names = [k for k in one.keys() if k.startswith("network.d1.") and "conv1.weight" in k][:3]
        assert names
        for key in names:
            assert torch.equal(one.get_tensor(key), two.get_tensor(key))
    # resuming finished phases trains nothing
    again = train_hovernet(patches, tmp_path, mode="fast", phases=phases, input_shape=(96, 96),
                           resume=True)  # fmt: skip
    assert again["phases"] == [None, None]


class _Interrupt(Exception):
    pass


def test_interrupted_phase_resumes(patches, tmp_path):
    torch.manual_seed(0)
    phases = [Phase(2, True, 1, iterations=1, step_size=1)]

    def stop_after_first_epoch(event, info):
        if event == "row" and info["epoch"] == 0:
            raise _Interrupt

    options = {"mode": "fast", "phases": phases, "input_shape": (96, 96),
               "validation_iterations": 1, "main_buffer_size": 2}  # fmt: skip
    with pytest.raises(_Interrupt):
        train_hovernet(patches, tmp_path, progress=stop_after_first_epoch, **options)
    state = json.loads((tmp_path / "hovernet_phase1_last_state.json").read_text())
    assert state["epoch"] == 0
    summary = train_hovernet(patches, tmp_path, resume=True, **options)
    assert summary["phases"][0]["epochs_run"] == 1  # only the second epoch
    with open(tmp_path / "hovernet_phase1_progress.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    # the step decay follows the epoch number across the interruption
    assert float(rows[1]["learning rate"]) == pytest.approx(phases[0].rate(1))


def test_augmentation_section_becomes_the_colour_step():
    from digipath.nuclei.io import NucleiError
    from digipath.nuclei.training import _colour

    assert _colour(None, 0) is True  # the original's jitter alone
    section = {"augmentation": {"training": [{"group": "noise", "random": False, "items": [
        {"type": "additive", "sigma": [0.0, 0.05]}]}]}}  # fmt: skip
    colour = _colour(section, 0)
    image = np.full((32, 32, 3), 128, np.uint8)
    assert colour(image, np.random.default_rng(0)).shape == image.shape
    with pytest.raises(NucleiError, match="no 'training' pool"):
        _colour({"augmentation": {"validation": section["augmentation"]["training"]}}, 0)


def test_training_options_from_the_example_file():
    from pathlib import Path

    from digipath.errors import ConfigError
    from digipath.nuclei.training import Phase, _colour, training_options

    example = Path(__file__).resolve().parents[2] / "examples" / "nuclei" / "hovernet.yaml"
    options = training_options(example)
    assert options["mode"] == "original" and (options["window"], options["step"]) == (540, 164)
    assert options["phases"] == [
        Phase(50, True, 16, 1e-4, 25, 0.1),
        Phase(50, False, 4, 1e-4, 25, 0.1),
    ]
    assert callable(_colour(options["augmentation"], 0))  # the HED/HSB pool builds
    with pytest.raises(ConfigError, match=r"hovernet\.phases\.0\.epoch"):
        training_options({"hovernet": {"phases": [{"epoch": 3}]}})
    with pytest.raises(ConfigError, match=r"hovernet\.speed"):
        training_options({"hovernet": {"speed": 3}})
