"""Segmentation, detection and instance metrics."""

from digipath.metrics.objects import (
    DetectionScores,
    NucleusScores,
    detection_scores,
    nucleus_scores,
)

__all__ = ["DetectionScores", "NucleusScores", "detection_scores", "nucleus_scores"]
