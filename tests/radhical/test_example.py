"""examples/radhical/run.py end to end on generated slides: trained levels, tuned thresholds.

Small slides and networks so that it runs in about half a minute; the benchmark
(benchmarks/radhical.py) runs the same functions at full size and times them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "radhical" / "run.py"

SETTINGS = {
    "widths": [8, 8, 16], "hidden": 16, "epochs": 4, "iterations": 25, "batch": 64,
    "grid": 11,
    "caps": {"nucleus": 150, "edge": 150, "background": 50, "negative": 150, "mixed": 150,
             "positive": 150},
}  # fmt: skip


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("radhical_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_the_cascade_computes_far_less_at_nearly_the_same_fscore(example, tmp_path):
    slides = tmp_path / "slides"
    dense = {"clusters": 4, "cluster_fraction": 0.2}  # many nuclei on small slides
    training = example.generated_items(slides, "train", 4, 1024, 100, **dense)
    validation = example.generated_items(slides, "valid", 2, 1024, 200, **dense)
    test = example.generated_items(slides, "test", 1, 1536, 300, **dense)
    models, thresholds = example.prepare(tmp_path, training, validation, SETTINGS,
                                         max_loss=0.02, log=lambda text: None)  # fmt: skip
    assert (tmp_path / "experiments" / "levels.yaml").exists()
    assert len(models) == 4 and thresholds.spacings == example.SPACINGS
    result = example.compare(models, thresholds, test, tmp_path / "results")
    naive_f, cascade_f = result.mean("naive", "f_score"), result.mean("cascade", "f_score")
    assert naive_f > 0.6  # the trained finest level finds the nuclei
    assert cascade_f >= naive_f - 0.05
    assert result.cascade_pixels < 0.5 * result.naive_pixels
    assert result.cascade_network_pixels < result.naive_network_pixels
    # the known nucleus positions: the cascade detects nearly every nucleus the naive run does
    assert result.mean("cascade", "detection_rate") >= result.mean("naive", "detection_rate") - 0.1
    # cached: a second call reuses the databases, models and thresholds
    _, cached = example.prepare(tmp_path, training, validation, SETTINGS, max_loss=0.02,
                                    log=lambda text: pytest.fail(text))  # fmt: skip
    assert cached == thresholds
