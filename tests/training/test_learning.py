"""A real learning test: a U-Net trained on half a MoNuSeg tile beats Otsu on the other half."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml
from skimage.filters import threshold_otsu

from digipath.augment.colour import rgb_to_hed
from digipath.data.config import DataConfig, PatchSource
from digipath.io import ImageWriter
from digipath.models import load_model
from digipath.training.experiment import ExperimentCommander

TILE = "nuclei/monuseg-TCGA-18-5592/TCGA-18-5592-01Z-00-DX1"
SPACING = 0.25  # MoNuSeg tiles are 40x scans

PARAMETERS = yaml.safe_load(
    f"""
model: {{type: unet, depth: 3, branching factor: 3, padding: same, batch norm: true}}
system: {{process count: 0}}
training:
  epoch count: 8
  metric name: validation loss
  higher is better: false
  learning: {{learning rate: 0.003}}
  iterations:
    training: {{repetition count: 1, iteration count: 20, batch size: 16}}
    validation: {{repetition count: 1, iteration count: 4, batch size: 16}}
data:
  images: {{patch shapes: {{{SPACING}: [64, 64]}}}}
  labels:
    mask pixel spacing: {SPACING}
    label mode: load
    label map: {{0: 0, 1: 1}}
    label ratios: {{0: 1.0, 1: 1.0}}
  normalization: {{enabled: true, type: rgb_to_0-1}}
  purposes: {{training: 0.5, validation: 0.5}}
augmentation:
  training:
    - group: spatial
      random: false
      items:
        - {{type: flip, flips: [none, vertical, horizontal, both]}}
        - {{type: rotate_90, rotations: [0, 1, 2, 3]}}
"""
)


def write_pair(folder: Path, name: str, image: np.ndarray, mask: np.ndarray) -> PatchSource:
    """Write an image and its 0/1 mask as pyramidal TIFFs at the tile's spacing."""
    paths = folder / f"{name}.tif", folder / f"{name}_mask.tif"
    for path, array, interpolation in ((paths[0], image, "mean"), (paths[1], mask, "nearest")):
        array = np.ascontiguousarray(array if array.ndim == 3 else array[:, :, None])
        options = {"compression": "lzw", "interpolation": interpolation, "tile_size": 256}
        with ImageWriter(
            path, array.shape[:2], spacing=SPACING, channels=array.shape[2], **options
        ) as writer:
            writer.fill(array)
    return PatchSource(str(paths[0]), str(paths[1]), "", (0, 1))


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * np.logical_and(prediction, truth).sum() / (prediction.sum() + truth.sum()))


def test_a_unet_beats_otsu_on_the_held_out_half(test_data, tmp_path):
    image = cv2.cvtColor(cv2.imread(str(test_data / f"{TILE}.png")), cv2.COLOR_BGR2RGB)
    mask = (cv2.imread(str(test_data / f"{TILE}_mask.png"))[..., 0] > 0).astype(np.uint8)
    left = write_pair(tmp_path, "left", image[:, :500], mask[:, :500])
    right = write_pair(tmp_path, "right", image[:, 500:], mask[:, 500:])
    data = DataConfig(
        {"training": {"tile": [left]}, "validation": {"tile": [right]}},
        distribution={"training": 0.5, "validation": 0.5},
    )
    summary = ExperimentCommander(
        PARAMETERS, data, experiment_name="monuseg", progress_dir=tmp_path, seed=0
    ).execute()
    assert summary["epochs_run"] == 8
    model = load_model(tmp_path / "monuseg" / "monuseg_best_model.safetensors")
    held_out, truth = image[:, 500:], mask[:, 500:] == 1
    batch = (held_out.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    predicted = model.predict(batch)["predictions"][0].argmax(axis=0) == 1
    haematoxylin = rgb_to_hed(held_out)[..., 0]
    otsu = haematoxylin > threshold_otsu(haematoxylin)
    unet_dice, otsu_dice = dice(predicted, truth), dice(otsu, truth)
    print(f"held-out Dice: U-Net {unet_dice:.3f}, Otsu on haematoxylin {otsu_dice:.3f}")
    assert unet_dice > otsu_dice
