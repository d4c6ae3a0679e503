"""The digipath demo: copy a real slide into a tiled JPEG pyramid and describe it.

Reads ``CMU-1-Small-Region.svs`` from the test data (``DIGIPATH_TEST_DATA``, default
``../shared/data``) tile by tile at its native spacing, writes it with :class:`ImageWriter` as a
pyramidal TIFF in ``demo-output/``, checks a patch read back from the new file, and prints
``digipath info`` of both files. Without the test data, it builds a synthetic tissue-like image
instead. Later workflows (sampling, training, inference) extend this demo.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.progress import Progress

from digipath.io import ImageReader, ImageWriter

REPOSITORY = Path(__file__).resolve().parent.parent
OUTPUT = REPOSITORY / "demo-output"
TILE = 512


def source_slide() -> Path | None:
    root = Path(os.environ.get("DIGIPATH_TEST_DATA", REPOSITORY.parent / "shared" / "data"))
    slide = root / "wsi" / "aperio" / "CMU-1-Small-Region.svs"
    return slide if slide.exists() else None


def synthetic_slide(path: Path) -> Path:
    """Write a 4096 x 4096 tissue-like image at 0.5 µm/px (pink blobs, purple nuclei)."""
    rng = np.random.default_rng(0)
    rows = cols = 4096
    with ImageWriter(path, (rows, cols), spacing=0.5, dtype="uint8", channels=3) as writer:
        for row in range(0, rows, TILE):
            for col in range(0, cols, TILE):
                y, x = np.mgrid[row : row + TILE, col : col + TILE]
                tissue = (np.sin(x / 300) + np.cos(y / 250)) > 0
                tile = np.full((TILE, TILE, 3), 240, np.float32)
                tile[tissue] = (225, 160, 200)
                nuclei = tissue & (rng.random((TILE, TILE)) < 0.002)
                tile[nuclei] = (90, 40, 140)
                tile += rng.normal(0, 6, tile.shape)
                writer.write(np.clip(tile, 0, 255).astype(np.uint8), row, col)
    return path


def copy_as_pyramid(source: Path, target: Path) -> None:
    """Copy level 0 of ``source`` into a JPEG pyramid at ``target``, tile by tile."""
    with ImageReader(source) as reader:
        spacing = reader.spacings[0]
        rows, cols = reader.shapes[0]
        with (
            ImageWriter(
                target, (rows, cols), spacing=spacing, dtype="uint8", channels=3, jpeg_quality=90
            ) as writer,
            Progress() as progress,
        ):
            task = progress.add_task(f"writing {target.name}", total=rows)
            for row in range(0, rows, TILE):
                for col in range(0, cols, TILE):
                    writer.write(reader.read(spacing, row, col, TILE, TILE), row, col)
                progress.update(task, advance=min(TILE, rows - row))


def main() -> int:
    OUTPUT.mkdir(exist_ok=True)
    source = source_slide()
    if source is None:
        print("test data not found: using a synthetic slide")
        source = synthetic_slide(OUTPUT / "synthetic.tif")
    target = OUTPUT / "pyramid.tif"
    copy_as_pyramid(source, target)
    with ImageReader(source) as original, ImageReader(target) as copy:
        spacing = original.spacings[0]
        a = original.read(spacing, 1000, 1000, 256, 256).astype(int)
        b = copy.read(spacing, 1000, 1000, 256, 256).astype(int)
        print(f"patch read back: mean absolute difference {np.abs(a - b).mean():.2f} (JPEG)")
        overview = copy.read(spacing * 4, 0, 0, 64, 64)
        print(f"a 64 x 64 patch at {spacing * 4:.3g} µm/px: mean colour {overview.mean((0, 1))}")
    command = [sys.executable, "-m", "digipath", "info", str(source), str(target)]
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
