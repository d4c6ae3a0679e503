"""Fixtures for the augmentation tests: real H&E patches from the shared test data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

PATCH_FILES = (
    "patches/stain-norm/source_image.png",
    "patches/kather/kather2.tif",
    "patches/kather/CRC-VAL-HE-7K-NORM-TCGA-YLVCMEHK.tif",
    "patches/stardist/histo.jpg",
)


def read_rgb(path: Path) -> np.ndarray:
    """Read an RGB uint8 (rows, cols, 3) patch from a PNG, JPEG or TIFF file."""
    if path.suffix.lower() in (".tif", ".tiff"):
        image = tifffile.imread(path)
    else:
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image[:, :, :3])


@pytest.fixture(scope="session")
def he_patches(test_data: Path) -> list[np.ndarray]:
    """Real H&E patches (uint8, rows x cols x 3), cut to at most 256 x 256."""
    patches = []
    for name in PATCH_FILES:
        path = test_data / name
        if not path.exists():
            pytest.fail(f"test patch {path} is missing from the test data")
        patches.append(read_rgb(path)[:256, :256])
    return patches


@pytest.fixture(scope="session")
def he_patch(he_patches: list[np.ndarray]) -> np.ndarray:
    """One real 256 x 256 H&E patch (TIAToolbox's stain-normalisation source image)."""
    return he_patches[0]
