"""Label maps written into patches, to check that spatial transforms keep image and label aligned.

:func:`labelled` draws a blocky label map and writes it into channel 0 of a patch; after a
spatial transform of both, channel 0 must still encode the transformed label map wherever the
neighbourhood is one label (:func:`interior`), whatever the interpolation.
"""

from __future__ import annotations

import cv2
import numpy as np

from digipath.augment.base import LABEL_FILL

LABEL_STEP = 40
"""Grey level of channel 0 per label value: label ``k`` is written as ``40 k``."""


def labelled(patch: np.ndarray, seed: int = 0, block: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A blocky (rows, cols) label map (values 0..5) and ``patch`` with channel 0 = 40 label.

    Parameters
    ----------
    patch
        uint8 (rows, cols, channels) patch; it is copied, not modified.
    seed
        Seed of the block labels.
    block
        Side of the square blocks of one label, in pixels.
    """
    rng = np.random.default_rng(seed)
    rows, cols = patch.shape[:2]
    blocks = rng.integers(0, 6, (rows // block + 1, cols // block + 1))
    label = np.kron(blocks, np.ones((block, block), np.int64))[:rows, :cols]
    image = patch.copy()
    image[:, :, 0] = label * LABEL_STEP
    return image, label


def interior(label: np.ndarray, size: int = 5) -> np.ndarray:
    """Pixels whose ``size`` x ``size`` neighbourhood in ``label`` is one value (not fill).

    Pixels near the edges count as mixed, since a region boundary may lie just outside.
    """
    kernel = np.ones((size, size), np.uint8)
    small = label.astype(np.uint8)
    low = cv2.erode(small, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    high = cv2.dilate(small, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=255)
    return (low == high) & (label != LABEL_FILL)
