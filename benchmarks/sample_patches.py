"""Label-balanced patch sampling from a slide with a sparse mask: digipath against the by-hand way.

What is measured
----------------
Training patches of 256 x 256 pixels at two spacings (0.25 and 1.0 µm/px) centred on random
pixels of label 0 (background) and label 1 (1 % of the mask, in tumour-like blobs), half of
each, from a 30000 x 30000 JPEG pyramid (the image of ``read_patches.py``, shared cache) with
a label mask at 1.0 µm/px (7500 x 7500):

``digipath``
    ``PatchSampler(image, mask=mask, labels=[0, 1], mask_spacing=1.0).sample(...)``: positions
    drawn from :class:`~digipath.data.stats.MaskStats`, patches read with digipath's reader.
``baseline``
    what users write by hand: the full mask in memory, ``np.nonzero(mask == label)`` once per
    label, a random index per patch, and OpenSlide ``read_region`` at the levels of both
    spacings, converted to numpy arrays.

Both draw the same number of patch locations (each one patch per spacing); the figure is patch
locations per second, the median over the repeats. Set-up (building the statistics; loading the
mask and ``np.nonzero``) is timed separately and reported, not included in the rate. Memory
compares :attr:`MaskStats.nbytes` with the full mask at the statistics' spacing (and prints what
the baseline's coordinate arrays take).

Run ``python benchmarks/sample_patches.py [--quick]``; the last line printed is a JSON object
``{"benchmark": "sample_patches", "figures": {...}, "ratios": {"sample_vs_baseline": ...,
"stats_memory_fraction": ...}}``. ``--quick`` uses the 8192 x 8192 image and fewer patches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from read_patches import cached_image  # a sibling benchmark script

REPO = Path(__file__).resolve().parents[1]
IMAGE_SPACING = 0.25  # µm/px of the read_patches image
MASK_SPACING = 1.0
MASK_VERSION = 1
SPACINGS = (0.25, 1.0)
PATCH = 256
POSITIVE_FRACTION = 0.01


def build_mask(path: Path, image_size: int, seed: int = 0) -> None:
    """Write a mask at 1 µm/px: 0 everywhere, label 1 on ~1 % of it, in irregular blobs."""
    from digipath.io import ImageWriter

    size = image_size * IMAGE_SPACING / MASK_SPACING
    rows = cols = int(np.ceil(size))
    rng = np.random.default_rng(seed)
    target = POSITIVE_FRACTION * rows * cols
    blobs = max(4, int(rows * cols / 2.5e6))
    mean_area = target / blobs
    centres = rng.uniform(0, rows, (blobs, 2))
    radii = np.sqrt(mean_area / np.pi) * rng.uniform(0.6, 1.3, blobs)
    tile = 512
    print(f"building {path.name}: {rows} x {cols}, {blobs} blobs", flush=True)
    with ImageWriter(
        path, (rows, cols), spacing=MASK_SPACING, channels=1, compression="lzw",
        interpolation="nearest", tile_size=tile,
    ) as writer:  # fmt: skip
        for top in range(0, rows, tile):
            for left in range(0, cols, tile):
                y, x = np.mgrid[top : top + tile, left : left + tile].astype(np.float32)
                block = np.zeros((tile, tile), np.uint8)
                near = np.flatnonzero(
                    (np.abs(centres[:, 0] - (top + tile / 2)) < radii * 1.3 + tile)
                    & (np.abs(centres[:, 1] - (left + tile / 2)) < radii * 1.3 + tile)
                )
                for index in near:
                    cy, cx = centres[index]
                    angle = np.arctan2(y - cy, x - cx)
                    wobble = 1 + 0.2 * np.sin(3 * angle + index) + 0.1 * np.cos(7 * angle)
                    inside = (y - cy) ** 2 + (x - cx) ** 2 < (radii[index] * wobble) ** 2
                    block[inside] = 1
                writer.write(block[:, :, None], top, left)


def cached_mask(cache_dir: Path, image_size: int) -> Path:
    path = cache_dir / f"mask_{image_size}_at{MASK_SPACING:g}um_v{MASK_VERSION}.tif"
    if not path.exists():
        build_mask(path, image_size)
    return path


def run_digipath(image: Path, mask: Path, patches: int, repeats: int, seed: int) -> dict:
    from digipath.data.sampler import PatchSampler
    from digipath.data.stats import MaskStats

    start = time.perf_counter()
    stats = MaskStats.from_mask(mask, MASK_SPACING, [0, 1])
    setup = time.perf_counter() - start
    sampler = PatchSampler(image, mask=mask, stats=stats, mask_spacing=MASK_SPACING)
    shapes = {spacing: (PATCH, PATCH) for spacing in SPACINGS}
    rng = np.random.default_rng(seed)
    sampler.sample({0: 4, 1: 4}, shapes, rng)  # warm-up
    rates = []
    chunk = 16
    for _ in range(repeats):
        start = time.perf_counter()
        done = 0
        while done < patches:
            number = min(chunk, patches - done)
            sampler.sample({0: number // 2, 1: number - number // 2}, shapes, rng)
            done += number
        rates.append(patches / (time.perf_counter() - start))
    full_mask = stats.shape[0] * stats.shape[1]
    return {
        "rate": statistics.median(rates),
        "setup_s": setup,
        "stats_bytes": stats.nbytes,
        "mask_bytes": full_mask,
        "counts": stats.counts,
    }


def run_baseline(image: Path, mask: Path, patches: int, repeats: int, seed: int) -> dict:
    import openslide
    import tifffile

    start = time.perf_counter()
    full = tifffile.imread(mask, level=0)
    if full.ndim == 3:
        full = full[..., 0]
    coordinates = {label: np.nonzero(full == label) for label in (0, 1)}
    setup = time.perf_counter() - start
    coordinate_bytes = sum(a.nbytes + b.nbytes for a, b in coordinates.values())
    slide = openslide.OpenSlide(str(image))
    levels = {}
    for spacing in SPACINGS:
        factor = spacing / IMAGE_SPACING
        levels[spacing] = int(np.argmin(np.abs(np.array(slide.level_downsamples) - factor)))
    scale = MASK_SPACING / IMAGE_SPACING  # mask pixel in level-0 pixels
    rng = np.random.default_rng(seed)

    def one(label: int) -> None:
        rows, cols = coordinates[label]
        index = rng.integers(len(rows))
        centre_row = int((rows[index] + 0.5) * scale)
        centre_col = int((cols[index] + 0.5) * scale)
        for level in levels.values():
            downsample = slide.level_downsamples[level]
            top = int(centre_row - PATCH // 2 * downsample)
            left = int(centre_col - PATCH // 2 * downsample)
            region = slide.read_region((left, top), level, (PATCH, PATCH))
            np.asarray(region)[..., :3]

    for label in (0, 1, 0, 1):
        one(label)  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for k in range(patches):
            one(k % 2)
        rates.append(patches / (time.perf_counter() - start))
    return {
        "rate": statistics.median(rates),
        "setup_s": setup,
        "coordinate_bytes": coordinate_bytes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8192 x 8192 image, 200 patches")
    parser.add_argument("--patches", type=int, help="patch locations per repeat (default 1000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=REPO / "benchmarks" / ".cache")
    args = parser.parse_args(argv)
    size = 8192 if args.quick else 30000
    patches = args.patches or (200 if args.quick else 1000)
    image = cached_image(args.cache_dir, size)
    mask = cached_mask(args.cache_dir, size)
    print(f"image {image.name}, mask {mask.name}; {patches} patch locations x {args.repeats}, "
          f"each {PATCH} x {PATCH} at {SPACINGS} µm/px", flush=True)  # fmt: skip
    ours = run_digipath(image, mask, patches, args.repeats, args.seed)
    print(f"digipath: {ours['rate']:.1f} locations/s (statistics built in "
          f"{ours['setup_s']:.2f} s; counts {ours['counts']})", flush=True)  # fmt: skip
    base = run_baseline(image, mask, patches, args.repeats, args.seed)
    print(f"baseline: {base['rate']:.1f} locations/s (mask + np.nonzero in "
          f"{base['setup_s']:.2f} s)", flush=True)  # fmt: skip
    ratio = ours["rate"] / base["rate"]
    fraction = ours["stats_bytes"] / ours["mask_bytes"]
    print()
    print(f"{'':24}{'locations/s':>12}{'set-up s':>10}{'memory MiB':>12}")
    print(f"{'digipath PatchSampler':24}{ours['rate']:12.1f}{ours['setup_s']:10.2f}"
          f"{ours['stats_bytes'] / 2**20:12.2f}")  # fmt: skip
    print(f"{'baseline nonzero+OS':24}{base['rate']:12.1f}{base['setup_s']:10.2f}"
          f"{(ours['mask_bytes'] + base['coordinate_bytes']) / 2**20:12.2f}")  # fmt: skip
    print(f"sample_vs_baseline {ratio:.2f}x; MaskStats memory {fraction:.4f} of the full mask "
          f"({ours['mask_bytes'] / 2**20:.1f} MiB)")  # fmt: skip
    print(
        json.dumps(
            {
                "benchmark": "sample_patches",
                "figures": {
                    "digipath_locations_per_s": round(ours["rate"], 2),
                    "baseline_locations_per_s": round(base["rate"], 2),
                    "digipath_setup_s": round(ours["setup_s"], 3),
                    "baseline_setup_s": round(base["setup_s"], 3),
                    "stats_bytes": ours["stats_bytes"],
                    "mask_bytes": ours["mask_bytes"],
                    "baseline_coordinate_bytes": base["coordinate_bytes"],
                },
                "ratios": {
                    "sample_vs_baseline": round(ratio, 3),
                    "stats_memory_fraction": round(fraction, 5),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
