"""Tissue detection and slide quality masks (pen marks, coverslip edges, blur)."""

from digipath.tissue.masks import blur, edges, pen_marks, tissue
from digipath.tissue.qc import LABELS, QualityMask, quality_mask, tissue_mask, write_mask

__all__ = ["LABELS", "QualityMask", "blur", "edges", "pen_marks", "quality_mask", "tissue",
           "tissue_mask", "write_mask"]  # fmt: skip
