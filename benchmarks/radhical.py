"""RADHicaL: the cascade against naive finest-level inference, on the same generated slides.

What is measured
----------------
Generated H&E-like slides at 0.25 µm/px (:func:`digipath.synthetic.nuclei_slide`: nuclei in a
few dense clusters, sparse stromal nuclei, red blood cells as distractors, glass) with their
nucleus masks go through the whole RADHicaL workflow:

1. ``extract_level_patches`` cuts the level databases (0.25, 0.5, 1 and 2.5 µm/px) from the
   training slides (patients split 80/20 into training and validation patches);
2. ``train_levels`` trains one ``levelnet`` per level through the experiment runner
   (``examples/radhical/parameters.yaml``, fewer iterations with ``--quick``);
3. ``full_outputs`` + ``tune`` pick the thresholds on separate validation slides: the least
   compute with an F-score within ``--max-loss`` of the everything-computed F;
4. on the test slides, **naive** (``cascade_apply`` with the finest level alone: every pixel
   at 0.25 µm/px, in 512 x 512 regions) and the **cascade** (every level, tuned thresholds)
   run alternately ``--repeats`` times (3) after one untimed warm-up run of each; the median
   wall time per slide is kept.

Steps 1-3 are cached in ``benchmarks/.cache/radhical_<mode>/`` (they are the same for the
same settings); step 4 is always measured. The F-score is RADHicaL's per-nucleus F (mean over
annotated nuclei, then over slides; :func:`digipath.metrics.nucleus_scores`), the detection
rate its share of nuclei more than half covered.

Run ``python benchmarks/radhical.py [--quick]``; the last line is
``{"benchmark": "radhical", "figures": {...}, "ratios": {"time_saved_fraction": ...,
"fscore_loss": ...}}``. ``time_saved_fraction`` = 1 - cascade time / naive time (summed
medians over the test slides); ``fscore_loss`` = naive F - cascade F.

Peers: no toolkit has hierarchical inference; the naive run is digipath's own whole-slide
inference (the same network, tiles, threads and writer), as in the paper's comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "radhical"))

from run import (  # noqa: E402 (examples/radhical/run.py)
    compare,
    comparison_rows,
    generated_items,
    parameters,
    prepare,
    print_comparison,
)

MODES = {
    "full": {
        "train": 8, "validation": 3, "test": 3, "train size": 2048, "test size": 4096,
        "widths": [32, 32, 64], "hidden": 64, "epochs": 10, "iterations": 60, "grid": 41,
        "caps": None,
    },
    "quick": {
        "train": 6, "validation": 3, "test": 2, "train size": 1536, "test size": 2048,
        "widths": [16, 16, 32], "hidden": 32, "epochs": 8, "iterations": 40, "grid": 21,
        "caps": {"nucleus": 250, "edge": 250, "background": 80, "negative": 250, "mixed": 250,
                 "positive": 250},
    },
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller slides and networks")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per slide")
    parser.add_argument("--max-loss", type=float, default=0.015,
                        help="F-score loss the threshold search may spend")  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, default=REPO / "benchmarks" / ".cache")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    settings = MODES[mode]
    repeats = args.repeats or 3
    torch.set_num_threads(2)
    cache = args.cache_dir / f"radhical_{mode}"
    slides = cache / "slides"
    training = generated_items(slides, "train", settings["train"], settings["train size"], 100)
    validation = generated_items(slides, "valid", settings["validation"], settings["train size"],
                                 200)  # fmt: skip
    test = generated_items(slides, "test", settings["test"], settings["test size"], 300)
    key = json.dumps([settings, parameters(settings)], sort_keys=True, default=str)
    work = cache / hashlib.sha256(key.encode()).hexdigest()[:12]

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    models, thresholds = prepare(work, training, validation, settings, max_loss=args.max_loss,
                                 log=log)  # fmt: skip
    result = compare(models, thresholds, test, cache / "runs", repeats)
    for index, (a, b) in enumerate(zip(result.naive_times, result.cascade_times, strict=True)):
        log(f"slide {index}: naive {a:.2f} s F {result.naive_scores[index].f_score:.4f}; "
            f"cascade {b:.2f} s F {result.cascade_scores[index].f_score:.4f}")  # fmt: skip
    naive_f, cascade_f = result.mean("naive", "f_score"), result.mean("cascade", "f_score")
    figures = {
        "test slides": len(test), "slide side": settings["test size"], "repeats": repeats,
        "naive seconds": round(result.naive_seconds, 3),
        "cascade seconds": round(result.cascade_seconds, 3),
        "naive pixels": result.naive_pixels, "cascade pixels computed": result.cascade_pixels,
        "naive network input pixels": result.naive_network_pixels,
        "cascade network input pixels": result.cascade_network_pixels,
        "naive f-score": round(naive_f, 4), "cascade f-score": round(cascade_f, 4),
        "thresholds": thresholds.to_dict()["levels"],
    }  # fmt: skip
    print_comparison(result)
    for label, a, b in comparison_rows(result):
        figures.setdefault(f"naive {label}", round(a, 4))
        figures.setdefault(f"cascade {label}", round(b, 4))
    ratios = {
        "time_saved_fraction": round(1 - result.cascade_seconds / result.naive_seconds, 3),
        "fscore_loss": round(naive_f - cascade_f, 4),
        "pixels_saved_fraction": round(1 - result.cascade_pixels / result.naive_pixels, 3),
        "network_work_saved_fraction": round(
            1 - result.cascade_network_pixels / result.naive_network_pixels, 3
        ),
    }
    print(json.dumps({"benchmark": "radhical", "figures": figures, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
