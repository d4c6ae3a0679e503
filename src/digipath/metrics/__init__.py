"""Segmentation, detection and instance metrics.

:mod:`digipath.metrics.objects`
    RADHicaL's per-nucleus scores and detection F1 on binary maps.
:mod:`digipath.metrics.instances`
    nuclear instance segmentation and classification: DICE1/2, AJI, AJI+, DQ/SQ/PQ,
    multi-class PQ, PanNuke mPQ/bPQ, CoNIC mPQ+, classification F1 by centroid pairing.
"""

from digipath.metrics.objects import (
    DetectionScores,
    NucleusScores,
    detection_scores,
    nucleus_scores,
)

__all__ = ["DetectionScores", "NucleusScores", "detection_scores", "nucleus_scores"]
