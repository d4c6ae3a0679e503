"""Tissue masks: digipath.tissue against Otsu + morphology written with scikit-image.

What is measured
----------------
The tissue mask of ``read_patches.py``'s 30000 x 30000 H&E pyramid (8192 x 8192 with
``--quick``), on the same thumbnail at 8 µm/px (4 µm/px with ``--quick``, so the thumbnail is
not trivially small):

``digipath``
    :func:`digipath.tissue.tissue`: Otsu on the HSV saturation, small objects and holes removed
    by area, a 20 µm dilation;
``skimage``
    what users write by hand, in the manner of TIAToolbox's ``MorphologicalMasker``:
    ``rgb2gray``, ``threshold_otsu``, ``remove_small_objects``, ``remove_small_holes`` and
    ``binary_dilation`` with a disk of the same radius.

The figure is seconds per slide for the mask (the median over repeats, alternating); reading
the thumbnail is timed once and reported. Run ``python benchmarks/tissue.py [--quick]``; the
last line is ``{"benchmark": "tissue", "figures": {...}, "ratios": {"tissue_time_vs_skimage":
...}}`` (below 1: digipath is faster).
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

from read_patches import cached_image  # sibling benchmark script

REPO = Path(__file__).resolve().parents[1]
MIN_OBJECT_UM2 = 50_000.0
MIN_HOLE_UM2 = 20_000.0
DILATION_UM = 20.0


def by_hand(image: np.ndarray, spacing: float) -> np.ndarray:
    from skimage.color import rgb2gray
    from skimage.filters import threshold_otsu
    from skimage.morphology import binary_dilation, disk, remove_small_holes, remove_small_objects

    grey = rgb2gray(image)
    mask = grey < threshold_otsu(grey)
    mask = remove_small_objects(mask, max_size=int(MIN_OBJECT_UM2 / spacing**2))
    mask = remove_small_holes(mask, max_size=int(MIN_HOLE_UM2 / spacing**2))
    return binary_dilation(mask, disk(round(DILATION_UM / spacing)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 8192^2 slide")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cache-dir", type=Path, default=REPO / "benchmarks" / ".cache")
    args = parser.parse_args(argv)
    from digipath.io import ImageReader
    from digipath.tissue import tissue

    size, spacing = (8192, 4.0) if args.quick else (30000, 8.0)
    with ImageReader(cached_image(args.cache_dir, size)) as reader:
        start = time.perf_counter()
        rows, cols = reader.shape(spacing)
        image = reader.read(spacing, 0, 0, rows, cols)
        read_seconds = time.perf_counter() - start
        actual = reader.refine(spacing)
    ours = lambda: tissue(image, actual, min_object_um2=MIN_OBJECT_UM2,  # noqa: E731
                          min_hole_um2=MIN_HOLE_UM2, dilation_um=DILATION_UM)  # fmt: skip
    theirs = lambda: by_hand(image, actual)  # noqa: E731
    ours(), theirs()  # warm-up
    times = {"digipath": [], "skimage": []}
    for _ in range(args.repeats):
        for name, function in (("digipath", ours), ("skimage", theirs)):
            start = time.perf_counter()
            mask = function()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["digipath"] / median["skimage"]
    print(f"{size}^2 slide, thumbnail {cols} x {rows} at {actual:g} µm/px (read in "
          f"{read_seconds:.2f} s); tissue fraction {float(ours().mean()):.3f}, by hand "
          f"{float(mask.mean()):.3f}")  # fmt: skip
    print(f"digipath.tissue  {median['digipath'] * 1000:8.1f} ms")
    print(f"scikit-image     {median['skimage'] * 1000:8.1f} ms")
    print(json.dumps({
        "benchmark": "tissue",
        "figures": {"size": size, "spacing": actual, "thumbnail": [rows, cols],
                    "read_s": round(read_seconds, 3),
                    "digipath_s": round(median["digipath"], 4),
                    "skimage_s": round(median["skimage"], 4)},
        "ratios": {"tissue_time_vs_skimage": round(ratio, 3)},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
