"""The digipath demo: a pyramid from a real slide, a mask, sampled and augmented patches.

Reads ``CMU-1-Small-Region.svs`` from the test data (``DIGIPATH_TEST_DATA``, default
``../shared/data``) tile by tile at its native spacing, writes it with :class:`ImageWriter` as a
pyramidal TIFF in ``demo-output/``, checks a patch read back from the new file, and prints
``digipath info`` of both files. Then it rasterises two GeoJSON annotations into a label mask,
builds its statistics and samples label-balanced patches at two spacings, augments them with the
seed's augmentation pipeline and draws ``augmentation-preview.png``. Without the test data, it
builds a synthetic tissue-like image instead. Last, it trains a small U-Net on generated
H&E-like tiles with nuclei (``train_nuclei.py``) and prints its validation Dice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from rich.progress import Progress
from train_nuclei import main as train_nuclei  # examples/train_nuclei.py, beside this script

from digipath.augment import load_augmentation
from digipath.io import ImageReader, ImageWriter

REPOSITORY = Path(__file__).resolve().parent.parent
OUTPUT = REPOSITORY / "demo-output"
EXAMPLES = REPOSITORY / "examples"
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
    status = subprocess.call(command)
    sample_patches(target)
    print("training a small U-Net on generated H&E-like tiles with nuclei:")
    train_nuclei(OUTPUT / "training")
    return status


def sample_patches(slide: Path) -> None:
    """Annotate the pyramid, rasterise a mask at 4x its spacing, sample balanced patches."""
    import json

    from digipath.annotations.rasterize import annotations_to_mask_like
    from digipath.data.sampler import PatchSampler

    with ImageReader(slide) as reader:
        rows, cols = reader.shapes[0]
        spacing = reader.spacings[0]

    def box(top: float, left: float, bottom: float, right: float) -> list[list[float]]:
        return [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]

    features = [
        {"type": "Feature", "properties": {"classification": {"name": name}},
         "geometry": {"type": "Polygon", "coordinates": [ring]}}
        for name, ring in (
            ("tumour", box(rows * 0.1, cols * 0.1, rows * 0.45, cols * 0.6)),
            ("stroma", box(rows * 0.6, cols * 0.5, rows * 0.9, cols * 0.9)),
        )
    ]  # fmt: skip
    annotations = OUTPUT / "annotations.geojson"
    annotations.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    mask_spacing = 4 * spacing
    mask = annotations_to_mask_like(
        annotations, OUTPUT / "mask.tif", slide, mask_spacing, {"tumour": 1, "stroma": 2}
    )
    sampler = PatchSampler(slide, mask=mask, labels=[0, 1, 2], mask_spacing=mask_spacing)
    print(f"mask statistics: {sampler.stats.counts} pixels per label at {mask_spacing:.3g} µm/px")
    # the seed's augmentation pipeline needs context around each patch (scaling down to 0.75):
    # sample at the enlarged shapes it asks for, augment, and get 256 x 256 back
    pool = load_augmentation(EXAMPLES / "augmentation" / "seed.yaml", rng=0)["training"]
    shapes = {spacing: (256, 256), 2 * spacing: (256, 256)}
    samples = sampler.sample({0: 4, 1: 4, 2: 4}, pool.shapes(shapes), rng=0)
    for size, patches in samples.patches.items():
        print(f"sampled {patches.shape[0]} patches of {patches.shape[1:]} at {size:.3g} µm/px")
    print(f"central labels: {samples.labels.tolist()}")
    augmented, _ = pool.process(samples.patches, shapes=shapes)
    for size, patches in augmented.items():
        print(f"augmented to {patches.shape[1:]} at {size:.3g} µm/px (one draw per location)")
    patch = OUTPUT / "patch.png"
    darkest = samples.patches[spacing][np.argmin(samples.patches[spacing].mean(axis=(1, 2, 3)))]
    cv2.imwrite(str(patch), cv2.cvtColor(darkest, cv2.COLOR_RGB2BGR))  # the most tissue
    subprocess.check_call(
        [
            sys.executable, "-m", "digipath", "augment-preview",
            "--config", str(EXAMPLES / "augmentation" / "seed.yaml"), "--image", str(patch),
            "--out", str(OUTPUT / "augmentation-preview.png"),
        ]
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
