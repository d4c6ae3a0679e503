"""Object-level metrics: RADHicaL's per-nucleus scores and detection F1, on hand examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.metrics import detection_scores, nucleus_scores


def squares(shape, boxes):
    image = np.zeros(shape, bool)
    for top, left, height, width in boxes:
        image[top : top + height, left : left + width] = True
    return image


def test_per_nucleus_scores_by_hand():
    truth = squares((20, 40), [(2, 2, 4, 4), (2, 20, 4, 4)])  # two 16-pixel nuclei
    # the first is covered by a 4 x 6 blob (8 extra pixels), the second missed; a stray blob
    # far away touches no annotation and is not penalised
    prediction = squares((20, 40), [(2, 2, 4, 6), (12, 30, 5, 5)])
    scores = nucleus_scores(prediction, truth)
    assert scores.nuclei == 2
    # nucleus 1: TP 16, FP 8, FN 0 -> F = 32/40, TPR 1, PPV 16/24; nucleus 2: all zero
    assert scores.f_score == pytest.approx((32 / 40 + 0) / 2)
    assert scores.tpr == pytest.approx(0.5)
    assert scores.ppv == pytest.approx(16 / 24)  # the missed nucleus has no PPV (NaN)
    assert scores.detection_rate == pytest.approx(0.5)


def test_a_merged_blob_counts_against_both_nuclei():
    truth = squares((10, 20), [(2, 2, 4, 4), (2, 8, 4, 4)])
    prediction = squares((10, 20), [(2, 2, 4, 10)])  # one blob over both and the gap
    scores = nucleus_scores(prediction, truth)
    # each: TP 16, FP 40 - 16 = 24 -> F = 32 / 56
    assert scores.f_score == pytest.approx(32 / 56)
    assert scores.detection_rate == 1.0
    detection = detection_scores(prediction, truth, iou_threshold=0.3)
    assert (detection.true_positives, detection.false_positives) == (1, 0)
    assert detection.false_negatives == 1 and detection.recall == 0.5


def test_detection_penalises_unmatched_predictions():
    truth = squares((20, 40), [(2, 2, 4, 4)])
    prediction = squares((20, 40), [(2, 2, 4, 4), (12, 30, 3, 3)])
    scores = detection_scores(prediction, truth)
    assert (scores.true_positives, scores.false_positives, scores.false_negatives) == (1, 1, 0)
    assert scores.precision == 0.5 and scores.recall == 1.0 and scores.f1 == pytest.approx(2 / 3)
    assert nucleus_scores(prediction, truth).f_score == 1.0  # RADHicaL ignores the stray blob


def test_prediction_is_resized_to_the_annotation():
    truth = squares((40, 40), [(8, 8, 16, 16)])
    coarse = squares((10, 10), [(2, 2, 4, 4)])  # the same square at a quarter of the size
    assert nucleus_scores(coarse, truth).f_score == 1.0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_scores_are_bounded_and_perfect_on_identity(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random((30, 30)) < 0.3
    prediction = rng.random((30, 30)) < 0.3
    scores = nucleus_scores(prediction, truth)
    for value in (scores.f_score, scores.tpr, scores.detection_rate):
        assert math.isnan(value) or 0 <= value <= 1
    if truth.any():
        assert nucleus_scores(truth, truth).f_score == 1.0
        assert detection_scores(truth, truth).f1 == 1.0
