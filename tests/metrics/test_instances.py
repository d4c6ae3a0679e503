"""Nuclear instance metrics (DICE1/2, AJI, AJI+, PQ, PanNuke mPQ/bPQ, CoNIC mPQ+, type F1).

Every expected number is derived by hand in a comment next to it. The maps are drawn as
rectangles: ``paint(shape, (id, top, left, height, width), ...)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from digipath.metrics.instances import (
    MulticlassPQResult,
    aji,
    aji_plus,
    classification_f1,
    classification_f1_dataset,
    conic_pq,
    dice1,
    dice2,
    instance_segmentation_stats,
    multiclass_panoptic_quality,
    nucleus_points,
    pair_centroids,
    pannuke_pq,
    panoptic_quality,
)


def paint(shape, *boxes, dtype=np.int32):
    image = np.zeros(shape, dtype)
    for value, top, left, height, width in boxes:
        image[top : top + height, left : left + width] = value
    return image


# A 4-row strip: true A (id 7, cols 0-3, 16 px) and B (id 3, cols 4-7, 16 px). The prediction
# over-segments B: P1 (id 40, cols 0-6, 28 px) covers A and 3/4 of B, P2 (id 9, col 7, 4 px)
# the rest of B. Intersections: A&P1 16, B&P1 12, B&P2 4. Unions: A|P1 28, B|P1 16+28-12 = 32,
# B|P2 16. IoUs: A-P1 16/28 = 4/7, B-P1 12/32 = 3/8, B-P2 4/16 = 1/4.
STRIP_TRUE = paint((4, 10), (7, 0, 0, 4, 4), (3, 0, 4, 4, 4))
STRIP_PRED = paint((4, 10), (40, 0, 0, 4, 7), (9, 0, 7, 4, 1))


def test_dice1_by_hand():
    # both foregrounds are cols 0-7 (32 px): 2 * 32 / 64 = 1, whatever the instances
    assert dice1(STRIP_TRUE, STRIP_PRED).dice == 1.0
    # half-overlapping squares: |G| = 16, |P| = 16, |G & P| = 8 -> 16 / 32
    result = dice1(paint((4, 8), (1, 0, 0, 4, 4)), paint((4, 8), (5, 0, 2, 4, 4)))
    assert (result.dice, result.intersection, result.total) == (0.5, 8, 32)


def test_dice2_by_hand():
    # intersecting pairs: A-P1 (16; 16 + 28), B-P1 (12; 16 + 28), B-P2 (4; 16 + 4)
    # -> 2 (16 + 12 + 4) / (44 + 44 + 20) = 64 / 108
    result = dice2(STRIP_TRUE, STRIP_PRED)
    assert result.dice == pytest.approx(64 / 108)
    assert (result.intersection, result.total) == (32, 108)


def test_aji_and_aji_plus_differ_on_over_segmentation():
    # AJI: A takes P1 (4/7), B takes P1 too (3/8 > 1/4); P2 is never taken and joins the union:
    # (16 + 12) / (28 + 32 + 4) = 28 / 64
    result = aji(STRIP_TRUE, STRIP_PRED)
    assert result.aji == pytest.approx(28 / 64)
    assert (result.intersection, result.union) == (28, 64)
    assert list(result.paired_pred) == [40, 40]
    assert list(result.unpaired_pred) == [9]
    # AJI+: the one-to-one pairing of most total IoU is A-P1 + B-P2 (4/7 + 1/4 beats B-P1 alone,
    # 3/8): (16 + 4) / (28 + 16) = 20 / 44
    plus = aji_plus(STRIP_TRUE, STRIP_PRED)
    assert plus.aji == pytest.approx(20 / 44)
    assert sorted(zip(plus.paired_true, plus.paired_pred, strict=True)) == [(3, 9), (7, 40)]
    assert plus.unpaired_true.size == plus.unpaired_pred.size == 0
    assert result.aji < plus.aji


def test_aji_over_penalises_a_merge_less_than_aji_plus():
    # two 16 px true nuclei merged in one 32 px prediction: AJI pairs both with it,
    # (16 + 16) / (32 + 32) = 1/2; AJI+ pairs one, the other joins the union: 16 / (32 + 16)
    true = paint((4, 8), (1, 0, 0, 4, 4), (2, 0, 4, 4, 4))
    pred = paint((4, 8), (1, 0, 0, 4, 8))
    assert aji(true, pred).aji == pytest.approx(0.5)
    assert aji_plus(true, pred).aji == pytest.approx(1 / 3)


def test_panoptic_quality_by_hand():
    # IoU > 0.5: only A-P1 (4/7). TP 1, FP 1 (P2), FN 1 (B): DQ = 1 / (1 + 1/2 + 1/2) = 1/2,
    # SQ = 4/7, PQ = 2/7
    result = panoptic_quality(STRIP_TRUE, STRIP_PRED)
    assert (result.tp, result.fp, result.fn) == (1, 1, 1)
    assert result.dq == pytest.approx(0.5)
    assert result.sq == pytest.approx(4 / 7)
    assert result.pq == pytest.approx(2 / 7)
    assert list(result.paired_true) == [7] and list(result.paired_pred) == [40]
    assert list(result.unpaired_true) == [3] and list(result.unpaired_pred) == [9]
    assert float(result) == result.pq


def test_panoptic_quality_below_one_half_uses_the_optimal_pairing():
    # below 0.5 the pairing of most total IoU comes first: A-P1 (4/7) + B-P2 (1/4).
    # At 0.3, B-P2 is dropped: same counts as at 0.5.
    at_03 = panoptic_quality(STRIP_TRUE, STRIP_PRED, match_iou=0.3)
    assert (at_03.tp, at_03.fp, at_03.fn) == (1, 1, 1)
    # At 0.2 both pairs count: DQ 1, SQ = (4/7 + 1/4) / 2 = 23/56. A greedy "best IoU first"
    # pairing would give B to nobody as well, but B-P1 (3/8) is never chosen: P1 goes to A.
    at_02 = panoptic_quality(STRIP_TRUE, STRIP_PRED, match_iou=0.2)
    assert (at_02.tp, at_02.fp, at_02.fn) == (2, 0, 0)
    assert at_02.dq == 1.0
    assert at_02.pq == pytest.approx(23 / 56)
    assert sorted(zip(at_02.paired_true, at_02.paired_pred, strict=True)) == [(3, 9), (7, 40)]


def test_pq_threshold_is_strict():
    # IoU exactly 1/2 (8 of a 16 px union: two 4 x 3 boxes sharing 4 x 2) does not pair at 0.5
    true = paint((4, 8), (1, 0, 0, 4, 3))
    pred = paint((4, 8), (1, 0, 1, 4, 3))
    assert panoptic_quality(true, pred).tp == 0
    assert panoptic_quality(true, pred, match_iou=0.49).tp == 1


def test_identical_maps_score_one():
    true = paint((20, 20), (5, 0, 0, 4, 4), (2, 6, 6, 5, 3), (9, 12, 1, 3, 8))
    stats = instance_segmentation_stats(true, true)
    assert stats == type(stats)(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    assert panoptic_quality(true, true, match_iou=0.1).pq == 1.0
    types = np.where(true > 0, true % 2 + 1, 0)
    multi = multiclass_panoptic_quality(true, types, true, types)
    assert multi.mpq == multi.bpq == 1.0
    points = nucleus_points(true, types)
    scores = classification_f1(points.centroids, points.types, points.centroids, points.types)
    assert scores.f1_detection == scores.accuracy == 1.0
    assert all(value == 1.0 for value in scores.f1_per_type.values())
    radius = classification_f1(
        points.centroids, points.types, points.centroids, points.types, pairing="radius"
    )
    assert radius.f1_detection == 1.0  # pairs at distance 0 are kept


def test_disjoint_maps_score_zero():
    true = paint((10, 20), (1, 0, 0, 4, 4), (2, 5, 0, 4, 4))
    pred = paint((10, 20), (1, 0, 10, 4, 4), (2, 5, 10, 4, 4))
    stats = instance_segmentation_stats(true, pred)
    assert stats == type(stats)(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    result = panoptic_quality(true, pred)
    assert (result.tp, result.fp, result.fn) == (0, 2, 2)


def test_empty_maps_are_undefined_not_perfect():
    empty = np.zeros((5, 5), np.int32)
    stats = instance_segmentation_stats(empty, empty)
    assert all(math.isnan(value) for value in vars(stats).values())
    # a prediction on an empty ground truth is all false positives
    result = panoptic_quality(empty, paint((5, 5), (1, 0, 0, 2, 2)))
    assert (result.dq, result.sq, result.pq, result.fp) == (0.0, 0.0, 0.0, 1)


# --------------------------------------------------------------------------------------------
# Multi-class PQ: PanNuke and CoNIC


def _typed_image():
    """True A (type 1), B (type 2); predicted A (type 1), B (type 1, wrong), C (type 3, absent
    from the ground truth)."""
    true = paint((10, 20), (1, 0, 0, 4, 4), (2, 0, 6, 4, 4))
    true_types = paint((10, 20), (1, 0, 0, 4, 4), (2, 0, 6, 4, 4))
    pred = paint((10, 20), (4, 0, 0, 4, 4), (8, 0, 6, 4, 4), (6, 6, 14, 3, 3))
    pred_types = paint((10, 20), (1, 0, 0, 4, 4), (1, 0, 6, 4, 4), (3, 6, 14, 3, 3))
    return true, true_types, pred, pred_types


def test_multiclass_pq_and_the_pannuke_class_skipping_rule():
    result = multiclass_panoptic_quality(*_typed_image(), classes=(1, 2, 3))
    # class 1: true {A}, pred {A, B}: TP 1 (IoU 1), FP 1 -> DQ 1 / 1.5 = 2/3, PQ 2/3
    assert result.per_class[1].pq == pytest.approx(2 / 3)
    # class 2: true {B}, no prediction: FN 1 -> PQ 0
    assert (result.per_class[2].fn, result.per_class[2].pq) == (1, 0.0)
    # class 3: no ground truth, one false positive: PQ 0, but PanNuke skips the class
    assert (result.per_class[3].fp, result.per_class[3].pq) == (1, 0.0)
    # PanNuke mPQ = mean over classes 1 and 2 only: (2/3 + 0) / 2 = 1/3 (counting class 3
    # would give 2/9)
    assert result.mpq == pytest.approx(1 / 3)
    # binary: A-A and B-B pair, C is a false positive: DQ 2 / 2.5 = 0.8, SQ 1
    assert result.bpq == pytest.approx(0.8)
    # the default classes are the nonzero types found inside instances
    assert multiclass_panoptic_quality(*_typed_image()).classes == (1, 2, 3)


def test_pannuke_pq_skips_images_without_ground_truth_and_averages_tissues():
    typed = multiclass_panoptic_quality(*_typed_image(), classes=(1, 2, 3))  # mPQ 1/3, bPQ 0.8
    true = paint((10, 20), (1, 0, 0, 4, 4))
    perfect = multiclass_panoptic_quality(true, true, true, true, classes=(1, 2, 3))  # 1, 1
    empty = np.zeros((10, 20), np.int32)
    # no ground truth at all: mPQ and bPQ NaN, skipped (its false positive is not penalised)
    no_truth = multiclass_panoptic_quality(empty, empty, true, true, classes=(1, 2, 3))
    assert math.isnan(no_truth.mpq) and math.isnan(no_truth.bpq)

    result = pannuke_pq([typed, perfect, no_truth])
    # images: mPQ (1/3 + 1) / 2 = 2/3, bPQ (0.8 + 1) / 2 = 0.9
    assert result.mpq == pytest.approx(2 / 3)
    assert result.bpq == pytest.approx(0.9)
    # class 1: images 1 and 2 have it: (2/3 + 1) / 2; class 2: image 1 only: 0; class 3:
    # never in the ground truth: NaN
    assert result.class_pq[1] == pytest.approx(5 / 6)
    assert result.class_pq[2] == 0.0
    assert math.isnan(result.class_pq[3])

    by_tissue = pannuke_pq([typed, perfect, typed], tissues=["Breast", "Colon", "Colon"])
    # tissues: Breast 1/3, Colon (1 + 1/3) / 2 = 2/3 -> mPQ 1/2 (the image mean would be 5/9)
    assert by_tissue.tissue_mpq == pytest.approx({"Breast": 1 / 3, "Colon": 2 / 3})
    assert by_tissue.mpq == pytest.approx(0.5)
    # bPQ: Breast 0.8, Colon 0.9 -> 0.85
    assert by_tissue.bpq == pytest.approx(0.85)


def test_conic_mpq_plus_pools_counts_over_the_data_set():
    # image 1: one nucleus, perfectly predicted (per-image PQ 1); image 2: three nuclei, none
    # predicted (per-image PQ 0). Per-image average: 1/2.
    # Pooled: TP 1, FN 3 -> DQ 1 / (1 + 3/2) = 0.4, SQ 1 -> mPQ+ 0.4
    one = paint((10, 20), (1, 0, 0, 4, 4))
    three = paint((10, 20), (1, 0, 0, 3, 3), (2, 0, 5, 3, 3), (3, 5, 0, 3, 3))
    empty = np.zeros((10, 20), np.int32)
    images = [
        multiclass_panoptic_quality(one, one > 0, one, one > 0, classes=[1]),
        multiclass_panoptic_quality(three, three > 0, empty, empty, classes=[1]),
    ]
    result = conic_pq(images)
    assert result.mpq_plus == pytest.approx(0.4)
    assert result.class_counts[1].tp == 1 and result.class_counts[1].fn == 3
    assert pannuke_pq(images).mpq == pytest.approx(0.5)  # the per-image average differs
    assert result.pq == pytest.approx(0.5)  # CoNIC's binary PQ is averaged per image

    # a class predicted but absent from every ground truth scores 0 in CoNIC: mPQ+ (0.4 + 0) / 2
    fp_types = paint((10, 20), (2, 0, 0, 4, 4))
    extra = multiclass_panoptic_quality(empty, empty, one, fp_types, classes=[1, 2])
    assert conic_pq([*images, extra]).mpq_plus == pytest.approx(0.2)


def test_aggregates_reject_other_items():
    with pytest.raises(TypeError, match="MulticlassPQResult"):
        pannuke_pq([panoptic_quality(STRIP_TRUE, STRIP_PRED)])
    with pytest.raises(ValueError, match="tissues"):
        pannuke_pq([multiclass_panoptic_quality(*_typed_image())], tissues=["a", "b"])


# --------------------------------------------------------------------------------------------
# Classification


def test_classification_f1_by_hand():
    # (row, col): pairs within 12 px: t0-p0 (3 px, 1/1), t1-p1 (5 px, 1/2: wrong type),
    # t2-p2 (4 px, 2/2), t4-p4 (1 px, 2/2); t3 (type 2) and p3 (type 1) are left unpaired
    # (the least-distance assignment pairs them at 150 px, beyond the radius).
    true = [(0, 0), (0, 50), (0, 100), (0, 150), (100, 0)]
    true_types = [1, 1, 2, 2, 2]
    pred = [(0, 3), (0, 55), (0, 104), (0, 300), (101, 0)]
    pred_types = [1, 2, 2, 1, 2]
    result = classification_f1(true, true_types, pred, pred_types)
    # detection: TP 4, FP 1, FN 1 -> 8 / (8 + 1 + 1)
    assert (result.tp_detection, result.fp_detection, result.fn_detection) == (4, 1, 1)
    assert result.f1_detection == pytest.approx(0.8)
    # types agree in 3 of the 4 pairs
    assert result.accuracy == pytest.approx(0.75)
    # type 1: pairs with a 1: t0-p0 (TP), t1-p1 (FN); unpaired p3 is FP_d:
    # 2*1 / (2*1 + 2*0 + 2*1 + 1 + 0) = 2/5
    assert result.f1_per_type[1] == pytest.approx(2 / 5)
    # type 2: t1-p1 (FP), t2-p2 and t4-p4 (TP); unpaired t3 is FN_d:
    # 2*2 / (2*2 + 2*1 + 2*0 + 0 + 1) = 4/7
    assert result.f1_per_type[2] == pytest.approx(4 / 7)
    counts = result.per_type[2]
    assert (counts.tp, counts.tn, counts.fp, counts.fn) == (2, 0, 1, 0)
    assert (counts.fp_detection, counts.fn_detection) == (0, 1)


def test_classification_pools_images_and_skips_empty_ones():
    # image 1 as one perfect pair of type 1; image 2 has no nucleus at all (the reference adds
    # a dummy nucleus at (0, 0) there; digipath does not); image 3: a missed nucleus of type 1
    images = [
        ([(5, 5)], [1], [(5, 6)], [1]),
        (np.zeros((0, 2)), [], np.zeros((0, 2)), []),
        ([(5, 5)], [1], np.zeros((0, 2)), []),
    ]
    result = classification_f1_dataset(images)
    # pooled: TP 1, FN 1 -> F_d 2 / 3; type 1: 2 / (2 + 1) = 2/3
    assert result.f1_detection == pytest.approx(2 / 3)
    assert result.f1_per_type == {1: pytest.approx(2 / 3)}


def test_not_exhaustive_types_ignore_unknown_true_types():
    # a pair whose true type is unknown (-1) predicted as type 1 is not a type error
    true, pred = [(0, 0), (0, 50)], [(0, 1), (0, 51)]
    exhaustive = classification_f1(true, [-1, 1], pred, [1, 1])
    partial = classification_f1(true, [-1, 1], pred, [1, 1], exhaustive=False)
    # exhaustive: type 1 has TP 1, FP 1 -> 2 / (2 + 2) = 1/2; accuracy 1/2
    assert exhaustive.f1_per_type == {1: pytest.approx(0.5)}
    assert exhaustive.accuracy == pytest.approx(0.5)
    # not exhaustive: the FP is discounted -> 1; accuracy 1 / 1
    assert partial.f1_per_type == {1: 1.0}
    assert partial.accuracy == 1.0


def test_centroid_pairing_respects_the_radius():
    origin = [(0.0, 0.0)]
    assert pair_centroids(origin, [(0.0, 12.0)]).paired.tolist() == [[0, 0]]  # <= 12 pairs
    beyond = pair_centroids(origin, [(0.0, 12.01)])
    assert beyond.paired.shape == (0, 2)
    assert beyond.unpaired_true.tolist() == [0] and beyond.unpaired_pred.tolist() == [0]
    assert pair_centroids(origin, [(3.0, 4.0)], radius=5).distance.tolist() == [5.0]
    assert pair_centroids(origin, [(3.0, 4.0)], radius=4.9).paired.size == 0
    for pairing in ("reference", "radius"):
        # nearest first: (0, 8) is taken by the true point at (0, 9), (0, 0) by (0, 1)
        found = pair_centroids([(0, 1), (0, 9)], [(0, 0), (0, 8), (0, 30)], pairing=pairing)
        assert found.paired.tolist() == [[0, 0], [1, 1]]
        assert found.unpaired_pred.tolist() == [2]


def test_reference_pairing_can_miss_a_pair_that_radius_pairing_finds():
    # true at cols 100 and 125, predicted at 112 and 87: the least total distance pairs
    # 100-87 and 125-112 (13 + 13 = 26 < 12 + 38), both beyond 12 px: no pair. The "radius"
    # pairing keeps 100-112 (12 px).
    true, pred = [(0, 100), (0, 125)], [(0, 112), (0, 87)]
    assert pair_centroids(true, pred).paired.size == 0
    assert pair_centroids(true, pred, pairing="radius").paired.tolist() == [[0, 0]]


def test_nucleus_points_centroids_and_type_vote():
    inst = paint((6, 10), (4, 0, 0, 2, 3), (2, 3, 5, 3, 3))
    # nucleus 2's pixels: 5 of type 3, 4 of type 0 (background type is outvoted only by a
    # nonzero type), nucleus 4: 3 of type 1 and 3 of type 2 (tie: the smaller type)
    types = paint((6, 10), (1, 0, 0, 2, 3), (2, 1, 0, 1, 3), (3, 3, 5, 2, 3))
    types[4, 5:8] = [3, 3, 0]
    types[5, 5:8] = 0
    points = nucleus_points(inst, types)
    assert points.ids.tolist() == [4, 2]  # raster order of the first pixels
    # nucleus 4: rows 0-1, cols 0-2 -> centre (0.5, 1); nucleus 2: rows 3-5, cols 5-7 -> (4, 6)
    np.testing.assert_allclose(points.centroids, [[0.5, 1.0], [4.0, 6.0]])
    assert points.types.tolist() == [1, 3]


# --------------------------------------------------------------------------------------------
# Properties


@st.composite
def label_maps(draw, size=14, max_boxes=7):
    boxes = draw(
        st.lists(
            st.tuples(
                st.integers(0, size - 1),
                st.integers(0, size - 1),
                st.integers(1, 6),
                st.integers(1, 6),
                st.integers(0, 3),
            ),
            max_size=max_boxes,
        )
    )
    image = np.zeros((size, size), np.int64)
    types = np.zeros((size, size), np.int64)
    for index, (top, left, height, width, kind) in enumerate(boxes, start=1):
        image[top : top + height, left : left + width] = index
        types[top : top + height, left : left + width] = kind
    return image, types


def _relabel(image, rng, huge):
    ids = np.unique(image)[1:]
    high = 2**40 if huge else 10**6
    new = rng.choice(np.arange(1, 10**6), ids.size, replace=False)
    if huge:
        new = new + high
    table = dict(zip(ids.tolist(), new.tolist(), strict=True))
    return np.vectorize(lambda v: table.get(v, 0), otypes=[np.int64])(image)


def _everything(true, true_types, pred, pred_types):
    stats = instance_segmentation_stats(true, pred)
    low = panoptic_quality(true, pred, match_iou=0.1)
    multi = multiclass_panoptic_quality(true, true_types, pred, pred_types, classes=(1, 2, 3))
    a, b = nucleus_points(true, true_types), nucleus_points(pred, pred_types)
    f1 = classification_f1(a.centroids, a.types, b.centroids, b.types, radius=3)
    f1_radius = classification_f1(
        a.centroids, a.types, b.centroids, b.types, radius=3, pairing="radius"
    )
    return [
        *vars(stats).values(),
        low.dq,
        low.sq,
        multi.mpq,
        multi.bpq,
        *(multi.per_class[c].pq for c in (1, 2, 3)),
        f1.f1_detection,
        f1.accuracy,
        *f1.f1_per_type.values(),
        f1_radius.f1_detection,
        *f1_radius.f1_per_type.values(),
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_maps(), label_maps(), st.integers(0, 2**32 - 1), st.booleans())
def test_relabelling_ids_changes_no_metric(true_drawn, pred_drawn, seed, huge):
    (true, true_types), (pred, pred_types) = true_drawn, pred_drawn
    rng = np.random.default_rng(seed)
    before = _everything(true, true_types, pred, pred_types)
    true_relabelled = _relabel(true, rng, huge)  # one map with huge ids, one with small ones
    pred_relabelled = _relabel(pred, rng, not huge)
    after = _everything(true_relabelled, true_types, pred_relabelled, pred_types)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-12)


def _brute_force(true, pred):
    """The definitions, one pair of masks at a time (no histogram, dense assignment)."""
    true_ids, pred_ids = np.unique(true)[1:], np.unique(pred)[1:]
    inter = np.array([[np.sum((true == t) & (pred == p)) for p in pred_ids] for t in true_ids])
    inter = inter.reshape(true_ids.size, pred_ids.size)
    size_t = np.array([np.sum(true == t) for t in true_ids])
    size_p = np.array([np.sum(pred == p) for p in pred_ids])
    union = size_t[:, None] + size_p[None, :] - inter
    iou = np.where(inter > 0, inter / np.maximum(union, 1), 0.0)
    met = inter > 0
    dice_2 = (
        2 * inter[met].sum() / (size_t[:, None] + size_p[None, :])[met].sum() if met.any() else 0
    )
    rows, cols = linear_sum_assignment(-iou) if iou.size else ([], [])
    best_total = float(iou[rows, cols].sum()) if iou.size else 0.0
    paired = iou > 0.5
    tp = int(paired.sum())
    fp, fn = pred_ids.size - tp, true_ids.size - tp
    return {
        "dice1": 2 * np.sum((true > 0) & (pred > 0)) / (np.sum(true > 0) + np.sum(pred > 0)),
        "dice2": dice_2,
        "pq": (tp / (tp + fp / 2 + fn / 2)) * (iou[paired].sum() / tp if tp else 0.0),
        "best_total_iou": best_total,
    }


@settings(max_examples=60, deadline=None)
@given(label_maps(), label_maps())
def test_histogram_metrics_match_the_definitions(true_drawn, pred_drawn):
    true, pred = true_drawn[0], pred_drawn[0]
    if not (true.any() and pred.any()):
        return
    expected = _brute_force(true, pred)
    stats = instance_segmentation_stats(true, pred)
    assert stats.dice1 == pytest.approx(expected["dice1"], abs=1e-12)
    assert stats.dice2 == pytest.approx(expected["dice2"], abs=1e-12)
    assert stats.pq == pytest.approx(expected["pq"], abs=1e-12)
    # AJI+'s sparse assignment reaches the dense optimum of total IoU
    low = panoptic_quality(true, pred, match_iou=0.0)
    assert low.iou_sum == pytest.approx(expected["best_total_iou"], abs=1e-9)
    assert 0.0 <= stats.aji <= 1.0 and 0.0 <= stats.aji_plus <= 1.0


# --------------------------------------------------------------------------------------------
# Scale and real data


def test_a_large_map_is_computed():
    # 2000 x 2000 with 60 x 60 = 3600 nuclei of random size on a 33 px grid; the prediction is
    # shifted by 2 px and widened by 2 px, every 7th nucleus taking its left-hand neighbour's id
    # (a merge into one instance of two disjoint parts)
    rng = np.random.default_rng(0)
    true = np.zeros((2000, 2000), np.int32)
    pred = np.zeros_like(true)
    ids = rng.permutation(3600) + 1000
    k = 0
    for row in range(60):
        for col in range(60):
            top, left = row * 33 + 2, col * 33 + 2
            height, width = rng.integers(8, 20, 2)
            true[top : top + height, left : left + width] = ids[k]
            merged = ids[k - 1] if k % 7 == 1 and col > 0 else ids[k]
            pred[top + 2 : top + 2 + height, left : left + width + 2] = merged
            k += 1
    stats = instance_segmentation_stats(true, pred)
    assert 0.3 < stats.pq < 1 and 0.3 < stats.aji_plus < 1 and stats.aji <= 1
    result = panoptic_quality(true, pred, match_iou=0.3)
    assert result.tp + result.fn == 3600
    types = np.where(true > 0, true % 3 + 1, 0)
    pred_types = np.where(pred > 0, pred % 3 + 1, 0)
    multi = multiclass_panoptic_quality(true, types, pred, pred_types)
    assert multi.classes == (1, 2, 3)
    a, b = nucleus_points(true, types), nucleus_points(pred, pred_types)
    scores = classification_f1(a.centroids, a.types, b.centroids, b.types, pairing="radius")
    assert scores.tp_detection + scores.fn_detection == 3600
    assert scores.tp_detection > 0.7 * 3600  # merged pairs' centroids lie between the parts


def test_real_instance_maps(test_data):
    io = pytest.importorskip("scipy.io")
    folder = test_data / "nuclei" / "cellseg_models"
    files = sorted(folder.glob("patch*.mat"))
    assert files, f"no patch*.mat under {folder}"
    for path in files:
        data = io.loadmat(path)
        inst, types = data["inst_map"], data["type_map"]
        assert panoptic_quality(inst, inst).pq == 1.0
        # erode every nucleus by one pixel: all still paired but with IoU < 1, apart from
        # nuclei too small to keep IoU > 0.5
        eroded = np.zeros_like(inst)
        for index, box in enumerate(ndimage.find_objects(inst), start=1):
            if box is not None:
                eroded[box][ndimage.binary_erosion(inst[box] == index)] = index
        result = panoptic_quality(inst, eroded)
        assert 0.5 < result.sq < 1
        assert result.tp >= 0.8 * (result.tp + result.fn)
        assert result.fp <= result.fn  # a lost pairing leaves one FP and one FN, or only a FN
        assert 0 < result.pq < 1
        # the stored centroids (x, y) and types agree with those derived from the maps
        points = nucleus_points(inst, types)
        order = np.argsort(points.ids)
        np.testing.assert_allclose(points.centroids[order][:, ::-1], data["inst_centroid"])
        np.testing.assert_array_equal(points.types[order], data["inst_type"][:, 0])


# --------------------------------------------------------------------------------------------
# Input errors


def test_errors_name_the_problem():
    good = paint((4, 4), (1, 0, 0, 2, 2))
    with pytest.raises(TypeError, match="integer ids"):
        panoptic_quality(good.astype(float), good)
    with pytest.raises(ValueError, match=r"\(rows, cols\)"):
        dice1(good[None], good[None])
    with pytest.raises(ValueError, match="same shape"):
        aji(good, good[:3])
    with pytest.raises(ValueError, match="negative instance id -2"):
        aji_plus(good - 2, good)
    with pytest.raises(ValueError, match="match_iou"):
        panoptic_quality(good, good, match_iou=1.5)
    with pytest.raises(ValueError, match="must not include 0"):
        multiclass_panoptic_quality(good, good, good, good, classes=[0, 1])
    with pytest.raises(ValueError, match="pairing"):
        pair_centroids([(0, 0)], [(0, 0)], pairing="greedy")
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        pair_centroids([0, 0, 0], [(0, 0)])
    with pytest.raises(ValueError, match="one type per centroid"):
        classification_f1([(0, 0)], [1, 2], [(0, 0)], [1])
    assert isinstance(multiclass_panoptic_quality(good, good, good, good), MulticlassPQResult)
