"""Helpers of the page and browser tests: a tiny DeepHealth classification dataset, a model
file, and a real ``digipath serve`` on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import yaml

__all__ = [
    "Server",
    "free_port",
    "make_classification_dataset",
    "make_model_file",
    "make_slide_dataset",
    "make_unet_file",
]

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220)}


def make_classification_dataset(
    folder: Path, count: int = 24, size: int = 32, seed: int = 0
) -> tuple[Path, Path]:
    """A DeepHealth classification dataset of ``count`` ``size`` x ``size`` PNGs of two colour
    classes (red, blue), split 2/3 training, 1/6 validation, 1/6 test.

    Returns the YAML file and the zip of its images (paths in the YAML relative to the zip's
    root).
    """
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = list(COLOURS)
    images = []
    archive = folder / "images.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for index in range(count):
            label = classes[index % 2]
            colour = np.array(COLOURS[label], np.float32)
            pixels = colour + rng.normal(0, 18, (size, size, 3))
            rgb = np.clip(pixels, 0, 255).astype(np.uint8)
            ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            assert ok
            name = f"images/{label}_{index:02d}.png"
            bundle.writestr(name, encoded.tobytes())
            images.append({"location": name, "label": label})
    training = count * 2 // 3
    validation = (count - training) // 2
    document = {
        "name": "colours",
        "description": "tiny red/blue squares",
        "classes": classes,
        "images": images,
        "split": {
            "training": list(range(training)),
            "validation": list(range(training, training + validation)),
            "test": list(range(training + validation, count)),
        },
    }
    path = folder / "colours.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path, archive


def make_model_file(path: Path, classes: int = 2) -> Path:
    """A freshly initialised CifarNet digipath model file (32 x 32 inputs)."""
    from digipath.models.registry import model_class

    model = model_class("cifar")(classes=classes, input_shape=(32, 32)).build()
    return Path(model.save(path))


def make_slide_dataset(folder: Path, size: int = 512) -> tuple[Path, Path]:
    """A DeepHealth segmentation dataset of one tiled TIFF "slide" (0.5 µm/px, a purple disc
    on a pale background) and its mask; returns the YAML and the zip."""
    import cv2

    from digipath.io.writer import ImageWriter

    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = np.mgrid[:size, :size]
    disc = (rows - size * 0.4) ** 2 + (cols - size * 0.6) ** 2 < (size * 0.18) ** 2
    image = np.full((size, size, 3), 235, np.uint8)
    image[disc] = (120, 40, 140)
    slide = folder / "slide.tif"
    with ImageWriter(slide, (size, size), spacing=0.5, channels=3, tile_size=256,
                     dtype="uint8") as writer:  # fmt: skip
        for r in range(0, size, 256):
            for c in range(0, size, 256):
                writer.write(image[r : r + 256, c : c + 256], r, c)
    ok, mask = cv2.imencode(".png", disc.astype(np.uint8))
    assert ok
    archive = folder / "slide.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.write(slide, "slides/slide.tif")
        bundle.writestr("masks/slide.png", mask.tobytes())
    document = {
        "name": "one slide",
        "images": [{"location": "slides/slide.tif", "label": "masks/slide.png"}],
        "split": {"test": [0]},
    }
    path = folder / "slide.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path, archive


def make_unet_file(path: Path) -> Path:
    """A small, untrained U-Net digipath model file (64 x 64 patches at 0.5 µm/px)."""
    from digipath.models.registry import model_class

    model = model_class("unet")(classes=2, input_channels=3, input_shape=(64, 64), depth=2,
                                branching_factor=2, padding="same").build()  # fmt: skip
    return Path(model.save(path, patch_shapes={0.5: (64, 64)}))


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``digipath serve`` in a subprocess, on a free port with its own data folder.

    Use as a context manager; ``url`` is the base address, ``log`` the server's output file.
    """

    def __init__(self, data_dir: Path, log: Path, timeout_s: float = 60.0) -> None:
        self.data_dir = data_dir
        self.log = log
        self.timeout_s = timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        command = [
            sys.executable, "-m", "digipath", "serve", "--data-dir", str(self.data_dir),
            "--port", str(self.port), "--host", "127.0.0.1",
        ]  # fmt: skip
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._output = open(self.log, "wb")
        self.process = subprocess.Popen(
            command, stdout=self._output, stderr=subprocess.STDOUT, env=environment
        )
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(self.url + "/login", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the server did not answer in {self.timeout_s} s")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._output.close()

    def log_text(self) -> str:
        """What the server printed so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")
