"""RADHicaL end to end: level patches, per-level classifiers, thresholds, cascade vs naive.

With your own data, give image/mask pairs (any format digipath reads; masks 0/1 or 0/255 at
the finest spacing, file names starting with the patient id and ``_``)::

    python examples/radhical/run.py --out radhical-work \\
        --train 'data/train/*.tif' --validation 'data/valid/*.tif' --test 'data/test/*.tif' \\
        --masks '{dir}/{name}_mask.tif'

Without data it generates H&E-like slides with nuclei at known positions
(:func:`digipath.synthetic.nuclei_slide`). The steps are those of the command line
(``digipath radhical patches | train | tune | apply``), called as library functions:

1. :func:`~digipath.radhical.patches.extract_level_patches` cuts one patch database per level
   (0.25, 0.5, 1 and 2.5 µm/px) from the training images, split by patient;
2. :func:`~digipath.radhical.training.train_levels` trains one ``levelnet`` per level
   through the experiment runner, from ``parameters.yaml`` beside this script;
3. :func:`~digipath.radhical.cascade.full_outputs` and :func:`~digipath.radhical.tune.tune`
   pick the thresholds on the validation images (least compute within an F-score loss);
4. :func:`~digipath.radhical.cascade.cascade_apply` runs the naive method (every pixel at the
   finest level) and the cascade on the test images; the script prints the per-nucleus
   F-score, the detection rate, the pixels computed and the wall time of both.

Every step is cached in ``--out``: running again reuses the databases, models and thresholds.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
SPACINGS = (0.25, 0.5, 1.0, 2.5)


@dataclass
class Item:
    """An image, its nucleus mask and (once read) the mask as an array."""

    image: Path
    mask: Path
    truth: np.ndarray | None = None

    def load_truth(self) -> np.ndarray:
        from digipath.io import ImageReader

        if self.truth is None:
            with ImageReader(self.mask) as reader:
                spacing = reader.refine(SPACINGS[0])
                self.truth = reader.read(spacing, 0, 0, *reader.shape(spacing))[..., 0] > 0
        return self.truth


@dataclass
class Comparison:
    """Naive and cascade results on the test images (sums over images, mean scores)."""

    naive_seconds: float = 0.0
    cascade_seconds: float = 0.0
    naive_pixels: int = 0
    cascade_pixels: int = 0
    naive_network_pixels: int = 0
    cascade_network_pixels: int = 0
    naive_scores: list = field(default_factory=list)
    cascade_scores: list = field(default_factory=list)
    naive_times: list = field(default_factory=list)
    cascade_times: list = field(default_factory=list)

    def mean(self, kind: str, name: str) -> float:
        scores = self.naive_scores if kind == "naive" else self.cascade_scores
        return float(np.nanmean([getattr(s, name) for s in scores]))


def generated_items(
    folder: Path, prefix: str, count: int, size: int, first_seed: int, **options: Any
) -> list:
    """``count`` generated slides of ``size`` pixels (written once, then reused).

    ``options`` go to :func:`~digipath.synthetic.nuclei_slide` (``clusters``,
    ``cluster_fraction`` ...).
    """
    from digipath.synthetic import nuclei_slide, write_nuclei_slide

    items = []
    for k in range(count):
        name = f"{prefix}{k}_slide"  # patient "<prefix><k>"
        image, mask = folder / f"{name}.tif", folder / f"{name}_mask.tif"
        if not (image.exists() and mask.exists()):
            slide = nuclei_slide((size, size), spacing=SPACINGS[0], seed=first_seed + k, **options)
            write_nuclei_slide(folder, name, slide)
        items.append(Item(image, mask))
    return items


def found_items(pattern: str, masks: str) -> list[Item]:
    """The images a glob matches, with their masks from a ``{dir}``/``{name}`` pattern."""
    files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    items = [Item(f, Path(masks.format(dir=f.parent, name=f.stem, file=f.name))) for f in files]
    masks_found = {item.mask.resolve() for item in items}
    items = [item for item in items if item.image.resolve() not in masks_found]
    missing = [str(item.mask) for item in items if not item.mask.exists()]
    if not items or missing:
        raise SystemExit(f"{pattern}: no images, or masks missing: {missing[:3]}")
    return items


def parameters(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``parameters.yaml`` with ``{"widths", "hidden", "epochs", "iterations", "batch"}`` set."""
    values = yaml.safe_load((HERE / "parameters.yaml").read_text(encoding="utf-8"))
    overrides = overrides or {}
    model, training = values["model"], values["training"]
    model["widths"] = overrides.get("widths", model["widths"])
    model["hidden"] = overrides.get("hidden", model["hidden"])
    training["epoch count"] = overrides.get("epochs", training["epoch count"])
    iterations = training["iterations"]
    iterations["training"]["iteration count"] = overrides.get(
        "iterations", iterations["training"]["iteration count"]
    )
    for purpose in ("training", "validation"):
        iterations[purpose]["batch size"] = overrides.get(
            "batch", iterations[purpose]["batch size"]
        )
    return values


def prepare(
    work: Path,
    training: list[Item],
    validation: list[Item],
    settings: dict[str, Any] | None = None,
    *,
    max_loss: float = 0.015,
    log=print,
):
    """Databases, level models and thresholds, cached in ``work``; return (models, thresholds).

    ``settings``: ``caps`` (per-group caps), ``grid`` (threshold values per step on [0, 1]),
    and the :func:`parameters` overrides.
    """
    from digipath.models import load_model
    from digipath.radhical.cascade import full_outputs
    from digipath.radhical.decisions import Thresholds
    from digipath.radhical.patches import extract_level_patches
    from digipath.radhical.training import read_levels, train_levels
    from digipath.radhical.tune import load_validation_image, threshold_grid, tune

    settings = settings or {}
    levels_file = work / "experiments" / "levels.yaml"
    if not levels_file.exists():
        started = time.perf_counter()
        summary = extract_level_patches(
            [(item.image, item.mask) for item in training], work / "databases", SPACINGS,
            caps=settings.get("caps"), seed=0, overwrite=True,
        )  # fmt: skip
        log(f"patches: {sum(p.patches for lv in summary.levels for p in lv.purposes.values())} "
            f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        started = time.perf_counter()
        train_levels(parameters(settings), work / "databases", work / "experiments", seed=0)
        log(f"training: {time.perf_counter() - started:.1f} s")
    models = [load_model(path) for _, path in read_levels(levels_file)]
    tuning = work / f"tuning_{max_loss:g}"
    if not (tuning / "thresholds.yaml").exists():
        started = time.perf_counter()
        images = [
            load_validation_image(
                full_outputs(models, item.image, work / "outputs", SPACINGS),
                item.mask,
                spacings=SPACINGS,
            )
            for item in validation
        ]
        grid = threshold_grid(settings.get("grid", 41))
        result = tune(images, SPACINGS, max_fscore_loss=max_loss, grid=grid)
        result.save(tuning)
        log(f"tuning: {time.perf_counter() - started:.1f} s; F {result.f_score:.4f} (naive "
            f"{result.naive_f_score:.4f}), compute {result.compute_fraction:.3f}")  # fmt: skip
    return models, Thresholds.load(tuning / "thresholds.yaml")


def compare(models, thresholds, test: list[Item], folder: Path, repeats: int = 1) -> Comparison:
    """Naive and cascade on every test image, alternately ``repeats`` times (median times).

    With ``repeats > 1`` both first run once untimed on the first image (warm-up).
    """
    import statistics

    from digipath.io import ImageReader
    from digipath.metrics import nucleus_scores
    from digipath.radhical.cascade import cascade_apply
    from digipath.radhical.decisions import Thresholds

    naive = Thresholds(thresholds.spacings[:1], thresholds.final)
    folder.mkdir(parents=True, exist_ok=True)
    result = Comparison()
    if repeats > 1 and test:  # untimed: the first passes of a network also set up its kernels
        for kind in ("naive", "cascade"):
            cascade_apply(models[:1] if kind == "naive" else models, test[0].image,
                          folder / f"warm_{kind}.tif", naive if kind == "naive" else thresholds,
                          overwrite=True)  # fmt: skip
    for index, item in enumerate(test):
        times: dict[str, list[float]] = {"naive": [], "cascade": []}
        reports = {}
        for _ in range(repeats):
            for kind in ("naive", "cascade"):  # alternated: both see the same machine state
                started = time.perf_counter()
                reports[kind] = cascade_apply(
                    models[:1] if kind == "naive" else models, item.image,
                    folder / f"{kind}_{index}.tif", naive if kind == "naive" else thresholds,
                    overwrite=True,
                )  # fmt: skip
                times[kind].append(time.perf_counter() - started)
        truth = item.load_truth()
        for kind in ("naive", "cascade"):
            with ImageReader(folder / f"{kind}_{index}.tif") as reader:
                prediction = reader.read(reader.spacings[0], 0, 0, *reader.shapes[0])[..., 0]
            scores = nucleus_scores(prediction, truth)
            (result.naive_scores if kind == "naive" else result.cascade_scores).append(scores)
        result.naive_times.append(statistics.median(times["naive"]))
        result.cascade_times.append(statistics.median(times["cascade"]))
        result.naive_pixels += reports["naive"].naive_pixels
        result.cascade_pixels += sum(lv.computed_pixels for lv in reports["cascade"].levels)
        result.naive_network_pixels += reports["naive"].naive_network_pixels
        result.cascade_network_pixels += sum(lv.network_pixels for lv in reports["cascade"].levels)
    result.naive_seconds = sum(result.naive_times)
    result.cascade_seconds = sum(result.cascade_times)
    return result


def comparison_rows(result: Comparison) -> list[tuple[str, float, float]]:
    """``(label, naive, cascade)`` rows of :func:`compare`'s result."""
    rows = [
        ("wall time (s)", result.naive_seconds, result.cascade_seconds),
        ("pixels computed", result.naive_pixels, result.cascade_pixels),
        ("network input pixels", result.naive_network_pixels, result.cascade_network_pixels),
    ] + [
        (label, result.mean("naive", name), result.mean("cascade", name))
        for label, name in (
            ("F-score", "f_score"),
            ("detection rate", "detection_rate"),
            ("TPR", "tpr"),
            ("PPV", "ppv"),
        )
    ]
    return rows


def print_comparison(result: Comparison) -> None:
    """The side-by-side table of :func:`compare`."""
    print(f"{'':24}{'naive':>12}{'cascade':>12}")
    for label, a, b in comparison_rows(result):
        print(f"{label:24}{a:>12.4g}{b:>12.4g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("radhical-work"), help="work folder")
    parser.add_argument("--train", help="glob of the training images (default: generated)")
    parser.add_argument("--validation", help="glob of the validation images")
    parser.add_argument("--test", help="glob of the test images")
    parser.add_argument("--masks", default="{dir}/{name}_mask.tif", help="mask pattern")
    parser.add_argument("--max-loss", type=float, default=0.015, help="F loss tuning may spend")
    args = parser.parse_args(argv)
    if args.train:
        if not (args.validation and args.test):
            parser.error("--train needs --validation and --test")
        training, validation, test = (
            found_items(pattern, args.masks) for pattern in (args.train, args.validation, args.test)
        )
    else:
        slides = args.out / "slides"
        training = generated_items(slides, "train", 6, 1536, 100)
        validation = generated_items(slides, "valid", 3, 1536, 200)
        test = generated_items(slides, "test", 2, 2048, 300)
    models, thresholds = prepare(args.out, training, validation, max_loss=args.max_loss)
    print(yaml.safe_dump(thresholds.to_dict(), sort_keys=False))
    print_comparison(compare(models, thresholds, test, args.out / "results"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
