"""Train a small U-Net to segment nuclei on generated H&E-like tiles, and report its Dice.

No data or network access is needed: :func:`synthetic_tile` paints pink, eosin-stained tissue
with purple, haematoxylin-stained nuclei (textured ellipses) and returns the nucleus mask.
Four tiles become pyramidal TIFF image/mask pairs; three train and one validates an experiment
run by :class:`~digipath.training.ExperimentCommander` from ``training/nuclei_unet.yaml``.
The best model then segments a fresh tile and the script prints its Dice.

Run ``python examples/train_nuclei.py [OUTPUT_FOLDER]`` (part of ``make demo``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import numpy as np

from digipath.data.config import DataConfig, PatchSource
from digipath.io import ImageWriter
from digipath.models import load_model
from digipath.training import ExperimentCommander

HERE = Path(__file__).resolve().parent
SPACING = 0.5  # µm/px
SIZE = 512


def synthetic_tile(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """An H&E-like (size, size, 3) uint8 tile and its (size, size) 0/1 nucleus mask.

    Pink stroma of varying density, nuclei as textured purple ellipses of varying stain
    intensity (some pale), and red blood cells (dark pink, not nuclei) as distractors.
    """
    mask = np.zeros((size, size), np.uint8)
    strength = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(60, 110))):
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        axes = (int(rng.integers(5, 12)), int(rng.integers(4, 9)))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(mask, centre, axes, angle, 0, 360, 1, -1)
        cv2.ellipse(strength, centre, axes, angle, 0, 360, float(rng.uniform(0.35, 1.0)), -1)
    cells = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(20, 50))):
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        cv2.circle(cells, centre, int(rng.integers(3, 5)), 1.0, -1)
    stroma = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 8)
    stroma = (stroma - stroma.min()) / (np.ptp(stroma) + 1e-6)
    eosin = np.array([240, 175, 210], np.float32) * (0.7 + 0.3 * stroma[..., None])
    red = np.array([205, 70, 95], np.float32)
    chromatin = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 1.2)
    haematoxylin = np.array([90, 55, 145], np.float32) * (0.8 + 0.4 * chromatin[..., None])
    cells = cv2.GaussianBlur(cells, (0, 0), 0.8)[..., None] * (1 - mask[..., None])
    nuclei = cv2.GaussianBlur(strength, (0, 0), 1.0)[..., None]
    image = eosin * (1 - cells) + red * cells
    image = image * (1 - nuclei) + haematoxylin * nuclei
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_pair(folder: Path, name: str, image: np.ndarray, mask: np.ndarray) -> PatchSource:
    """Write the tile and its mask as pyramidal TIFFs; return the data-config item."""
    paths = folder / f"{name}.tif", folder / f"{name}_mask.tif"
    with ImageWriter(paths[0], image.shape[:2], spacing=SPACING, jpeg_quality=90) as writer:
        writer.fill(image)
    with ImageWriter(paths[1], mask.shape, spacing=SPACING, channels=1, compression="lzw",
                     interpolation="nearest") as writer:  # fmt: skip
        writer.fill(mask[:, :, None])
    return PatchSource(str(paths[0]), str(paths[1]), "", (0, 1))


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks."""
    return float(2 * np.logical_and(prediction, truth).sum() / (prediction.sum() + truth.sum()))


def main(folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tiles = [write_pair(folder, f"tile{k}", *synthetic_tile(rng)) for k in range(4)]
    data = DataConfig(
        {"training": {"nuclei": tiles[:3]}, "validation": {"nuclei": tiles[3:]}},
        distribution={"training": 0.75, "validation": 0.25},
    )
    started = time.perf_counter()
    commander = ExperimentCommander(
        HERE / "training" / "nuclei_unet.yaml", data, experiment_name="nuclei_unet",
        progress_dir=folder, seed=0,
        progress=lambda event, info: print(
            f"  epoch {info['epoch'] + 1}: training loss {info['training loss']:.3f}, "
            f"validation loss {info['validation loss']:.3f}"
        ) if event == "row" else None,
    )  # fmt: skip
    summary = commander.execute()
    print(f"trained in {time.perf_counter() - started:.0f} s; best validation loss "
          f"{summary['best_metric']:.3f} at epoch {summary['best_epoch'] + 1}")  # fmt: skip
    model = load_model(commander.directory / "nuclei_unet_best_model.safetensors")
    image, truth = synthetic_tile(np.random.default_rng(99))
    batch = (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    predicted = model.predict(batch)["predictions"][0].argmax(axis=0) == 1
    score = dice(predicted, truth == 1)
    print(f"final validation Dice on a new {SIZE} x {SIZE} tile: {score:.3f} "
          f"(files in {commander.directory})")  # fmt: skip
    return score


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo-output") / "training")
