"""Object-level segmentation metrics: RADHicaL's per-nucleus scores and detection F1.

Both compare a predicted binary map with an annotated one (``(rows, cols)`` arrays; the
prediction is resized to the annotation by nearest neighbour when the shapes differ).
Objects are 8-connected components.

:func:`nucleus_scores` — RADHicaL's ``grade_single_image`` (per annotated nucleus ``G``):
    ``D`` is the union of every predicted component overlapping ``G``; ``TP = |D & G|``,
    ``FP = |D - G|`` (parts of a merged blob in neighbouring nuclei count), ``FN = |G - D|``;
    ``F = 2TP / (2TP + FP + FN)``, ``TPR = TP / (TP + FN)``, ``PPV = TP / (TP + FP)`` (NaN when
    ``D`` is empty); ``G`` is *detected* when ``TP > |G| / 2``. The image's scores are the means
    over its nuclei (PPV ignoring NaN). Predicted objects touching no annotation are never
    penalised: annotations are incomplete.

:func:`detection_scores` — the standard object detection F1, which does penalise them: a
    predicted object is a true positive when it overlaps an annotated one with IoU >= a
    threshold (each matched once, greedily by IoU); precision, recall and F1 follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

STRUCTURE = np.ones((3, 3), bool)


def _prepare(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction = np.asarray(prediction) > 0
    truth = np.asarray(truth) > 0
    if prediction.ndim != 2 or truth.ndim != 2:
        raise ValueError(f"expected (rows, cols) maps, got {prediction.shape} and {truth.shape}")
    if prediction.shape != truth.shape:
        resized = cv2.resize(prediction.astype(np.uint8), truth.shape[::-1],
                             interpolation=cv2.INTER_NEAREST)  # fmt: skip
        prediction = resized > 0
    return prediction, truth


@dataclass(frozen=True)
class NucleusScores:
    """Per-image means of RADHicaL's per-nucleus scores (see the module docstring)."""

    nuclei: int
    f_score: float
    tpr: float
    ppv: float
    detection_rate: float


def nucleus_scores(prediction: np.ndarray, truth: np.ndarray) -> NucleusScores:
    """RADHicaL's per-nucleus F-score, TPR, PPV and detection rate of one image.

    Computed with label-wise reductions over the overlapping pixels (one joint histogram of
    nucleus and component ids), never one comparison per nucleus: the cost grows with the
    pixels, not with the nuclei.
    """
    prediction, truth = _prepare(prediction, truth)
    truth_labels, nuclei = ndimage.label(truth, structure=STRUCTURE)
    if nuclei == 0:
        nan = float("nan")
        return NucleusScores(0, nan, nan, nan, nan)
    predicted_labels, components = ndimage.label(prediction, structure=STRUCTURE)
    component_sizes = np.bincount(predicted_labels.ravel(), minlength=components + 1)
    nucleus_sizes = np.bincount(truth_labels.ravel(), minlength=nuclei + 1)[1:]
    both = (truth_labels > 0) & (predicted_labels > 0)
    nucleus_of = truth_labels[both].astype(np.int64)
    tp = np.bincount(nucleus_of, minlength=nuclei + 1)[1:]
    # each (nucleus, touching component) pair once: D is the union of the touching components
    pairs = np.unique(nucleus_of * (components + 1) + predicted_labels[both])
    pair_nucleus, pair_component = np.divmod(pairs, components + 1)
    union = np.bincount(pair_nucleus, weights=component_sizes[pair_component],
                        minlength=nuclei + 1)[1:]  # fmt: skip
    fp = union - tp
    fn = nucleus_sizes - tp
    f_scores = 2 * tp / (2 * tp + fp + fn)
    tprs = tp / (tp + fn)
    with np.errstate(invalid="ignore", divide="ignore"):
        ppvs = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan)
    detected = tp > nucleus_sizes / 2
    return NucleusScores(
        nuclei=nuclei,
        f_score=float(np.mean(f_scores)),
        tpr=float(np.mean(tprs)),
        ppv=float(np.nanmean(ppvs)) if not np.all(np.isnan(ppvs)) else float("nan"),
        detection_rate=float(np.mean(detected)),
    )


@dataclass(frozen=True)
class DetectionScores:
    """Object detection counts and scores at an IoU threshold."""

    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float


def detection_scores(
    prediction: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5
) -> DetectionScores:
    """Detection precision, recall and F1: objects matched one to one by IoU."""
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    prediction, truth = _prepare(prediction, truth)
    truth_labels, truths = ndimage.label(truth, structure=STRUCTURE)
    predicted_labels, predictions = ndimage.label(prediction, structure=STRUCTURE)
    both = (truth_labels > 0) & (predicted_labels > 0)
    pairs = np.stack([truth_labels[both], predicted_labels[both]], axis=1)
    candidates = []
    if len(pairs):
        keys, overlaps = np.unique(pairs, axis=0, return_counts=True)
        truth_sizes = np.bincount(truth_labels.ravel(), minlength=truths + 1)
        predicted_sizes = np.bincount(predicted_labels.ravel(), minlength=predictions + 1)
        for (t, p), overlap in zip(keys, overlaps, strict=True):
            iou = overlap / (truth_sizes[t] + predicted_sizes[p] - overlap)
            if iou >= iou_threshold:
                candidates.append((iou, t, p))
    matched_truth, matched_prediction = set(), set()
    for _, t, p in sorted(candidates, reverse=True):
        if t not in matched_truth and p not in matched_prediction:
            matched_truth.add(t)
            matched_prediction.add(p)
    tp = len(matched_truth)
    fp, fn = predictions - tp, truths - tp
    precision = tp / predictions if predictions else float("nan")
    recall = tp / truths if truths else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else float("nan")
    return DetectionScores(tp, fp, fn, precision, recall, f1)
