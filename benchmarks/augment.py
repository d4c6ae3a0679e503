"""Augmenting 256 x 256 H&E patches: digipath's seed pipeline against albumentations.

What is measured
----------------
``pipeline``
    The DigitalPathology seed's augmentation example (``examples/augmentation/seed.yaml``:
    flip, rotate_90, scale 0.75-1.25; one of HSB colour or contrast; additive Gaussian noise;
    Gaussian blur), run by :meth:`AugmenterPool.process` on patches extracted at the enlarged
    shape the pool asks for (``pool.input_shape((256, 256))``, so scaling down shows real
    tissue, not reflected border) and centre-cropped back to 256 x 256, 64 patches a call as a
    batch-generator worker makes them; against the equivalent
    albumentations ``Compose`` (HorizontalFlip, RandomRotate90, Affine scale with reflected
    border, OneOf HueSaturationValue / RandomBrightnessContrast, GaussNoise, GaussianBlur) on
    the 256 x 256 patches, one call per patch as a data-loader worker makes them.
``hed``
    digipath's ``hed_color`` (haematoxylin, eosin and DAB sigma and bias ranges, drawn per
    patch) against albumentations' ``HueSaturationValue`` step alone, on the same 256 x 256
    patches. albumentations has no HED augmentation; its HSV step is the colour step users
    would otherwise use.

Patches are cut at random from TIAToolbox's 1000 x 1000 H&E target image in the shared test
data (``DIGIPATH_TEST_DATA``, default ``../shared/data``). OpenCV runs single-threaded for both
(one data-loader worker per core is how augmentation runs in training). Figures are
milliseconds per patch, the median over the repeats; digipath and albumentations alternate
within each repeat.

Run ``python benchmarks/augment.py [--quick]``; the last line printed is a JSON object
``{"benchmark": "augment", "figures": {...}, "ratios": {"pipeline_time_vs_albumentations":
..., "hed_time_vs_albumentations_hsv": ...}}`` (time ratios: below 1 means digipath is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TARGET = (256, 256)
BATCH = 64
"""Patches per :meth:`AugmenterPool.process` call, as a batch-generator worker makes them."""


def data_root() -> Path:
    configured = os.environ.get("DIGIPATH_TEST_DATA")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


def load_source() -> np.ndarray:
    path = data_root() / "patches" / "stain-norm" / "target_image.png"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        sys.exit(f"benchmark data {path} not found (set DIGIPATH_TEST_DATA)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def cut_patches(source: np.ndarray, count: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    """``count`` patches of ``shape``; patch i of every call has the same centre."""
    rng = np.random.default_rng(seed)
    rows, cols = source.shape[:2]
    half = (max(shape) + 1) // 2 + 180
    centres = rng.integers(half, [rows - half, cols - half], size=(count, 2))
    out = np.empty((count, *shape, 3), np.uint8)
    for index, (row, col) in enumerate(centres):
        top, left = row - shape[0] // 2, col - shape[1] // 2
        out[index] = source[top : top + shape[0], left : left + shape[1]]
    return out


def albumentations_pipeline():
    import albumentations as A

    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.RandomRotate90(p=1.0),
            A.Affine(scale=(0.75, 1.25), border_mode=cv2.BORDER_REFLECT_101, p=1.0),
            A.OneOf(
                [
                    # hue +-0.05 of the circle = +-18 degrees; saturation/value +-25 % of 255
                    A.HueSaturationValue(
                        hue_shift_limit=18, sat_shift_limit=64, val_shift_limit=64, p=1.0
                    ),
                    A.RandomBrightnessContrast(brightness_limit=0.0, contrast_limit=0.25, p=1.0),
                ],
                p=1.0,
            ),
            A.GaussNoise(std_range=(0.0, 0.05), p=1.0),
            A.GaussianBlur(blur_limit=0, sigma_limit=(0.0, 1.0), p=1.0),
        ],
        seed=0,
    )


def albumentations_hsv():
    import albumentations as A

    return A.Compose(
        [A.HueSaturationValue(hue_shift_limit=18, sat_shift_limit=64, val_shift_limit=64, p=1.0)],
        seed=0,
    )


def time_per_patch(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = function()
        times.append((time.perf_counter() - start) * 1000.0 / count)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer patches and repeats")
    parser.add_argument("--patches", type=int, default=None, help="patches per repeat")
    parser.add_argument("--repeats", type=int, default=None, help="repeats (median taken)")
    args = parser.parse_args()
    count = args.patches or (150 if args.quick else 600)
    repeats = args.repeats or (5 if args.quick else 9)
    cv2.setNumThreads(1)

    from digipath.augment import HedColor, load_augmentation

    pool = load_augmentation(REPO / "examples" / "augmentation" / "seed.yaml", rng=0)["training"]
    needed = pool.input_shape(TARGET)
    source = load_source()
    enlarged = cut_patches(source, count, needed, seed=1)
    patches = cut_patches(source, count, TARGET, seed=1)
    album = albumentations_pipeline()
    album_hsv = albumentations_hsv()
    hed = HedColor(
        haematoxylin={"sigma": [-0.15, 0.15], "bias": [-0.1, 0.1]},
        eosin={"sigma": [-0.15, 0.15], "bias": [-0.1, 0.1]},
        dab={"sigma": [-0.1, 0.1], "bias": [-0.05, 0.05]},
    )
    hed_rng = np.random.default_rng(2)

    def run_digipath() -> int:
        for start in range(0, count, BATCH):
            out, _ = pool.process(enlarged[start : start + BATCH], shapes=TARGET)
        assert out.shape[1:] == (*TARGET, 3)
        return count

    def run_album() -> int:
        for patch in patches:
            out = album(image=patch)["image"]
        assert out.shape == (*TARGET, 3)
        return count

    def run_hed() -> int:
        for patch in patches:
            hed.randomize(hed_rng)
            out, _ = hed(patch)
        assert out.shape == (*TARGET, 3)
        return count

    def run_hsv() -> int:
        for patch in patches:
            out = album_hsv(image=patch)["image"]
        assert out.shape == (*TARGET, 3)
        return count

    for function in (run_digipath, run_album, run_hed, run_hsv):  # warm-up
        function()
    samples: dict[str, list[float]] = {"digipath": [], "albumentations": [], "hed": [], "hsv": []}
    for _ in range(repeats):
        samples["digipath"] += time_per_patch(run_digipath, 1)
        samples["albumentations"] += time_per_patch(run_album, 1)
        samples["hed"] += time_per_patch(run_hed, 1)
        samples["hsv"] += time_per_patch(run_hsv, 1)
    median = {key: statistics.median(values) for key, values in samples.items()}

    print(f"{count} patches of {TARGET[0]} x {TARGET[1]}, {repeats} repeats, 1 OpenCV thread")
    print(f"digipath extracts {needed[0]} x {needed[1]} for the pool (scale down to 0.75)")
    print(f"{'ms per patch':28s} {'median':>8s} {'min':>8s} {'max':>8s}")
    names = {
        "digipath": "digipath seed pipeline",
        "albumentations": "albumentations equivalent",
        "hed": "digipath hed_color",
        "hsv": "albumentations HSV step",
    }
    for key, label in names.items():
        values = samples[key]
        print(f"{label:28s} {median[key]:8.3f} {min(values):8.3f} {max(values):8.3f}")
    ratios = {
        "pipeline_time_vs_albumentations": round(median["digipath"] / median["albumentations"], 3),
        "hed_time_vs_albumentations_hsv": round(median["hed"] / median["hsv"], 3),
    }
    print(
        json.dumps(
            {
                "benchmark": "augment",
                "figures": {
                    "patches": count,
                    "repeats": repeats,
                    "extraction_shape": list(needed),
                    "digipath_pipeline_ms": round(median["digipath"], 4),
                    "albumentations_pipeline_ms": round(median["albumentations"], 4),
                    "digipath_hed_ms": round(median["hed"], 4),
                    "albumentations_hsv_ms": round(median["hsv"], 4),
                },
                "ratios": ratios,
            }
        )
    )


if __name__ == "__main__":
    main()
