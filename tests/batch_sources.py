"""Small slides with label masks for the batch-generation tests, and a generator on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digipath.data.batch_generator import BatchGenerator
from digipath.data.config import PatchSource
from digipath.io import ImageWriter

RATIOS = {0: 0.5, 1: 0.3, 2: 0.2}
SHAPES = {1.0: (32, 32), 2.0: (16, 16)}


def make_source(
    folder: Path, name: str, labels: tuple[int, ...], seed: int, write: bool = True
) -> PatchSource:
    """A 256 x 256 RGB image at 1 µm/px and a 128 x 128 mask at 2 µm/px with label blocks.

    Channel 0 of the image is 40 x the mask value under it, so a patch's centre pixel tells
    its label.
    """
    image_path, mask_path = folder / f"{name}.tif", folder / f"{name}-mask.tif"
    if not write:
        return PatchSource(str(image_path), str(mask_path), "", labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros((128, 128), np.uint8)
    for k, label in enumerate(labels):
        mask[24 * k : 24 * k + 20, 8 : 8 + 24 * (k + 1)] = label
    image = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    image[:, :, 0] = np.kron(mask, np.ones((2, 2), np.uint8)) * 40
    with ImageWriter(image_path, (256, 256), spacing=1.0, compression="lzw") as writer:
        writer.fill(image)
    with ImageWriter(mask_path, (128, 128), spacing=2.0, channels=1, compression="lzw",
                     interpolation="nearest") as writer:  # fmt: skip
        writer.fill(mask[:, :, None])
    return PatchSource(str(image_path), str(mask_path), "", labels)


def make_sources(folder: Path, write: bool = True) -> dict[str, list[PatchSource]]:
    """Three tumour images with labels 0-2 and two normal ones with labels 0-1.

    ``write=False`` only names the files an earlier call wrote.
    """
    return {
        "tumour": [make_source(folder, f"t{i}", (0, 1, 2), i, write) for i in range(3)],
        "normal": [make_source(folder, f"n{i}", (0, 1), 10 + i, write) for i in range(2)],
    }


def generator(sources, **options) -> BatchGenerator:
    settings = dict(
        label_ratios=RATIOS,
        patch_shapes=SHAPES,
        mask_spacing=2.0,
        main_buffer_size=48,
        read_buffer_size=48,
        response_timeout=60.0,
        seed=7,
    )
    settings.update(options)
    return BatchGenerator(sources, **settings)
