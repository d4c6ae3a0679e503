"""Small generated DeepHealth datasets (PNG images and their YAML) for the tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

COLOURS = {"red": (200, 40, 40), "blue": (40, 60, 200)}


def write_png(path: Path, rgb: np.ndarray) -> None:
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image)


def make_classification(folder: Path, count: int = 12, size: int = 32) -> Path:
    """``count`` noisy PNG images of two colours (classes red, blue) and their dataset YAML."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(count):
        name = "red" if i % 2 == 0 else "blue"
        noise = rng.normal(0, 15, (size, size, 3))
        rgb = np.clip(np.array(COLOURS[name]) + noise, 0, 255).astype(np.uint8)
        write_png(folder / "images" / f"img{i}.png", rgb)
        images.append({"location": f"images/img{i}.png", "label": name})
    split = {"training": list(range(count - 4)), "validation": [count - 4, count - 3],
             "test": [count - 2, count - 1]}  # fmt: skip
    path = folder / "dataset.yml"
    document = {"name": "colours", "classes": ["red", "blue"], "images": images, "split": split}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def make_segmentation(folder: Path, count: int = 6, size: int = 64) -> Path:
    """``count`` PNG images with a dark disk on a pale background and 0/255 disk masks."""
    rng = np.random.default_rng(1)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "gt").mkdir(parents=True, exist_ok=True)
    images = []
    rows, cols = np.mgrid[:size, :size]
    for i in range(count):
        centre = rng.uniform(size * 0.35, size * 0.65, 2)
        radius = rng.uniform(size * 0.15, size * 0.25)
        disk = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
        rgb = np.where(disk[:, :, None], (90, 30, 120), (235, 200, 220)).astype(np.float64)
        rgb = np.clip(rgb + rng.normal(0, 10, rgb.shape), 0, 255).astype(np.uint8)
        write_png(folder / "images" / f"s{i}.png", rgb)
        write_png(folder / "gt" / f"s{i}.png", disk.astype(np.uint8) * 255)
        images.append({"location": f"images/s{i}.png", "label": f"gt/s{i}.png"})
    split = {"training": list(range(count - 2)), "validation": [count - 2], "test": [count - 1]}
    path = folder / "dataset.yml"
    path.write_text(yaml.safe_dump({"name": "disks", "images": images, "split": split}))
    return path
