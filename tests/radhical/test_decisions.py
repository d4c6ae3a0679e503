"""The decision operator shared by tuning and deployment."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.errors import ConfigError
from digipath.radhical.decisions import (
    COMPUTE,
    FORCED,
    NEGATIVE,
    Thresholds,
    decide,
    final_mask,
    level_output,
    resize_probabilities,
    resize_rows,
)


def test_resize_is_opencv_bilinear():
    rng = np.random.default_rng(0)
    probabilities = rng.random((23, 31, 3)).astype(np.float32)
    expected = np.stack(
        [cv2.resize(probabilities[..., k], (77, 58), interpolation=cv2.INTER_LINEAR)
         for k in range(3)], axis=-1,
    )  # fmt: skip
    np.testing.assert_allclose(resize_probabilities(probabilities, (58, 77)), expected, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    source=st.tuples(st.integers(2, 40), st.integers(2, 40)),
    factor=st.sampled_from([1.0, 2.0, 2.5, 4.0]),
    band=st.integers(1, 50),
)
def test_resizing_in_bands_equals_resizing_whole(source, factor, band):
    rng = np.random.default_rng(1)
    values = rng.integers(0, 256, (*source, 3), dtype=np.uint8)
    target = (round(source[0] * factor), round(source[1] * factor))
    whole = resize_probabilities(values, target)
    parts = np.concatenate([
        resize_rows(lambda top, height: values[top : top + height], source, target, start,
                    min(target[0], start + band))
        for start in range(0, target[0], band)
    ])  # fmt: skip
    np.testing.assert_allclose(parts, whole, atol=1e-5)


def test_upper_tests_all_positive_and_lower_the_sum():
    """lower > upper is meaningful: accept at P2 >= upper, else compute at P1 + P2 >= lower."""
    previous = np.array([[[0.1, 0.2, 0.7], [0.2, 0.6, 0.2], [0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]])
    decisions = decide(previous.astype(np.float32), upper=0.61, lower=0.733)
    np.testing.assert_array_equal(decisions[0], [FORCED, COMPUTE, NEGATIVE, NEGATIVE])
    everything = decide(previous.astype(np.float32), upper=2.0, lower=0.0)
    assert (everything == COMPUTE).all()  # the naive cascade


def test_level_output_and_final_mask():
    decisions = np.array([[NEGATIVE, COMPUTE, FORCED]], np.uint8)
    probabilities = np.array([[[10, 20, 225], [30, 60, 165], [200, 50, 5]]], np.uint8)
    np.testing.assert_array_equal(
        level_output(probabilities, decisions)[0], [[255, 0, 0], [30, 60, 165], [0, 0, 255]]
    )
    finest = np.array([[[0, 255], [100, 155], [255, 0]]], np.uint8)
    np.testing.assert_array_equal(final_mask(finest, decisions, 0.5)[0], [False, True, True])
    np.testing.assert_array_equal(final_mask(finest, decisions, 0.7)[0], [False, False, True])


def test_thresholds_round_trip_and_errors(tmp_path):
    thresholds = Thresholds(
        (0.25, 0.5, 1.0, 2.5), 0.5267, (0.61, 0.8267, 0.16), (0.733, 0.18, 0.12)
    )
    thresholds.save(tmp_path / "thresholds.yaml")
    assert Thresholds.load(tmp_path / "thresholds.yaml") == thresholds
    naive = Thresholds.compute_all([0.25, 0.5])
    assert naive.upper == (2.0,) and naive.lower == (0.0,)
    with pytest.raises(ValueError, match="grow"):
        Thresholds((0.5, 0.25), 0.5, (1.0,), (0.0,))
    (tmp_path / "bad.yaml").write_text("levels:\n- {spacing: 0.25, threshold: 0.5}\n"
                                       "- {spacing: 0.5, upper: high, lower: 0.1}\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"levels\.1\.upper"):
        Thresholds.load(tmp_path / "bad.yaml")
