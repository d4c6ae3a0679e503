"""HoVer-Net post-processing: digipath.nuclei.postprocess against MONAI's HoVer-Net transforms.

What is measured
----------------
Seconds to turn NP, HV and TP maps into an instance map plus a per-nucleus table (bounding
box, centroid, contour, type and type probability) on one square tile, at two sizes:

``digipath``
    :func:`digipath.nuclei.postprocess.postprocess` (the original's ``__proc_np_hv``, then
    the table from label-wise reductions: one pass over the pixels plus a bounding-box crop
    per nucleus);
``MONAI``
    ``HoVerNetInstanceMapPostProcessing`` then ``HoVerNetNuclearTypePostProcessing``
    (``return_type_map=False``, so it writes no type map, as digipath does not), set to the
    original's constants: threshold 0.5 on the NP probability (identity activation), Sobel
    kernel 21, marker threshold 0.4, opening disk of radius 2 (MONAI has no 5 x 5 ellipse),
    minimum sizes 10. MONAI compares the whole tile with every instance id.

The maps are ground-truth targets of realistic density: a mosaic of the real 256 x 256
instance maps of ``nuclei/cellseg_models`` (``DIGIPATH_TEST_DATA``, default ``../shared/data``)
in random rotations and flips, ~33 nuclei per 256 x 256 px (about 540 nuclei at 1000^2, 8500 at
4000^2); NP is 0.95 on nuclei and 0.05 elsewhere, HV the :func:`~digipath.nuclei.targets.hv_maps`
targets, TP one-hot probabilities of the type map (6 classes). Without the data, random
ellipses of the same density stand in (said in the output).

Figures are medians over the repeats (5 for digipath, 3 for MONAI), after one warm-up of each
at the smaller size. The runs are grouped per implementation rather than alternated: the first
large-array run after a MONAI call was measured up to 2x slower (memory state left by MONAI
and torch), which alternation would charge to every digipath run. ``time_growth_exponent`` is
``log(t_large / t_small) / log(pixels_large / pixels_small)`` for digipath: 1 means time
proportional to the pixels; a per-nucleus full-tile pass tends to 2 (MONAI's own exponent is
printed too). The two instance maps are compared by panoptic quality.

Whole-slide memory: a fresh process runs :func:`~digipath.nuclei.inference.segment_slide`
(1024-pixel tiles, 64-pixel margins, GeoJSON streamed) on a generated slide of 4096^2 and one of
8192^2 (``--quick``: 2048^2 and 4096^2) with a stand-in network (NP from the darkness of the
pixels, HV from its blobs; :class:`DarknessModel`), so that the pipeline's memory is measured, not a
network's; ``wsi_peak_memory_large_vs_small`` is the ratio of the peak resident sizes.

Run ``python benchmarks/nuclei_postprocess.py [--quick]``; the full run (1000^2 and 4000^2)
takes about 10 minutes on 2 cores, nearly all of it in MONAI at 4000^2 (2.5-4 min a run).
``--quick`` uses 500^2 and 1000^2 with the same repeats (under a minute): one MONAI run at
4000^2 alone takes minutes, so the sizes cannot stay. The last line is
``{"benchmark": "nuclei_postprocess", "figures": {...}, "ratios":
{"postprocess_speedup_vs_monai": ..., "time_growth_exponent": ...,
"wsi_peak_memory_large_vs_small": ...}}`` with the speedup at the
larger size (above 1: digipath is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TILE = 256
CLASSES = 6


def data_root() -> Path:
    configured = os.environ.get("DIGIPATH_TEST_DATA")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


def mosaic(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``(instances, types, source)``: a ``size`` x ``size`` tile of real or synthetic nuclei."""
    from digipath.nuclei import io as nuclei_io

    rng = np.random.default_rng(seed)
    folder = data_root() / "nuclei" / "cellseg_models"
    paths = sorted(folder.glob("patch*.mat"))
    count = -(-size // TILE)
    instances = np.zeros((count * TILE, count * TILE), np.int32)
    types = np.zeros_like(instances)
    if paths:
        maps = [nuclei_io.read_mat(p) for p in paths]
        offset = 0
        for i in range(count):
            for j in range(count):
                patch = maps[rng.integers(len(maps))]
                turns, flip = int(rng.integers(4)), bool(rng.integers(2))
                inst, kind = np.rot90(patch.instances, turns), np.rot90(patch.types, turns)
                if flip:
                    inst, kind = inst[:, ::-1], kind[:, ::-1]
                window = np.s_[i * TILE : (i + 1) * TILE, j * TILE : (j + 1) * TILE]
                instances[window] = np.where(inst > 0, inst + offset, 0)
                types[window] = kind
                offset += int(patch.instances.max())
        source = f"mosaic of {', '.join(p.name for p in paths)} ({folder})"
    else:
        import cv2

        n = int(33 * (count * TILE) ** 2 / TILE**2)
        centres = rng.integers(0, count * TILE, (n, 2))
        axes = rng.integers(4, 10, (n, 2))
        for k in range(n):
            centre, half = tuple(map(int, centres[k])), tuple(map(int, axes[k]))
            cv2.ellipse(instances, centre, half, float(rng.uniform(0, 180)), 0, 360, k + 1, -1)
        types = np.where(instances > 0, instances % (CLASSES - 1) + 1, 0).astype(np.int32)
        source = f"synthetic ellipses (no real data under {folder})"
    return instances[:size, :size].copy(), types[:size, :size].copy(), source


def inputs(size: int) -> dict:
    from digipath.nuclei.targets import hv_maps

    instances, types, source = mosaic(size)
    hv = hv_maps(instances)  # (rows, cols, 2)
    return {
        "truth": instances,
        "source": source,
        "np": np.where(instances > 0, 0.95, 0.05).astype(np.float32),
        "hv": np.ascontiguousarray(hv.transpose(2, 0, 1)),  # (2, rows, cols) for both
        "tp": np.ascontiguousarray(np.eye(CLASSES, dtype=np.float32)[types].transpose(2, 0, 1)),
    }


def run_digipath(data: dict) -> tuple[np.ndarray, int]:
    from digipath.nuclei.postprocess import postprocess

    nuclei = postprocess(data["np"], data["hv"], data["tp"])
    return nuclei.instances, len(nuclei)


def run_monai(data: dict) -> tuple[np.ndarray, int]:
    from monai.apps.pathology.transforms.post.array import (
        HoVerNetInstanceMapPostProcessing,
        HoVerNetNuclearTypePostProcessing,
    )

    instance_step = HoVerNetInstanceMapPostProcessing(
        activation=lambda x: x,  # NP is already a probability
        mask_threshold=0.5,
        min_object_size=10,
        sobel_kernel_size=21,
        marker_threshold=0.4,
        marker_radius=2,
    )
    type_step = HoVerNetNuclearTypePostProcessing(activation="softmax", return_type_map=False)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # scikit-image deprecations inside MONAI
        info, instance_map = instance_step(data["np"][None], data["hv"])
        info, _ = type_step(data["tp"], info, instance_map)
    return np.asarray(instance_map)[0].astype(np.int32), len(info)


class DarknessModel:
    """A HoVer-Net stand-in (fast geometry, 256 -> 164) for the whole-slide memory run.

    NP is the darkness of the haematoxylin-like pixels, HV the targets of its connected dark
    blobs: the memory measured is the pipeline's (reads, stitching, post-processing, merging,
    writing), not a network's.
    """

    mode = "fast"
    signature = "darkness"

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from scipy import ndimage

        from digipath.nuclei.targets import hv_maps

        x = np.asarray(x, np.float32)
        dark = np.clip((0.55 - x[:, :2].mean(axis=1)) * 6, 0, 1)[:, 46:-46, 46:-46]
        hv = np.stack([
            np.moveaxis(hv_maps(ndimage.label(window > 0.5)[0]), 2, 0) for window in dark
        ])  # fmt: skip
        return {"np": np.stack([1 - dark, dark], axis=1), "hv": hv.astype(np.float32)}


def wsi_child(slide: str, output: str) -> None:
    """Segment ``slide`` in this (fresh) process; print its peak resident memory as JSON.

    The peak is ``VmHWM`` of ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` would carry
    the parent's peak over ``exec`` on Linux.
    """
    from digipath.nuclei.inference import segment_slide

    result = segment_slide(DarknessModel(), slide, output, spacing=0.25, tile_size=1024,
                           margin=64, formats=("geojson",), overwrite=True)  # fmt: skip
    status = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    print(json.dumps({"peak_mib": round(peak, 1), "nuclei": result.nuclei}))


def wsi_memory(sizes: tuple[int, int], cache: Path) -> dict:
    """Peak memory of a fresh process segmenting a small and a large generated slide."""
    import subprocess
    import sys

    from digipath.synthetic import nuclei_slide, write_nuclei_slide

    cache.mkdir(parents=True, exist_ok=True)
    figures = {}
    for size in sizes:
        slide = cache / f"nuclei_wsi_{size}.tif"
        if not slide.exists():
            write_nuclei_slide(cache, slide.stem, nuclei_slide((size, size), spacing=0.25,
                                                               seed=size))  # fmt: skip
        runs = []
        for _ in range(3):  # the median of 3 fresh processes
            done = subprocess.run(
                [sys.executable, __file__, "--wsi-child", str(slide), str(cache / f"out_{size}")],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        runs.sort(key=lambda run: run["peak_mib"])
        figures[size] = runs[1]
        print(f"whole slide {size} x {size}: peak {figures[size]['peak_mib']} MiB, "
              f"{figures[size]['nuclei']} nuclei")  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="500^2 and 1000^2 instead of 1000^2 and 4000^2"
    )
    parser.add_argument("--repeats", type=int, default=5, help="digipath runs per size")
    parser.add_argument("--peer-repeats", type=int, default=3, help="MONAI runs per size")
    parser.add_argument("--wsi-child", nargs=2, metavar=("SLIDE", "OUTPUT"), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, default=REPO / "benchmarks" / ".cache")
    args = parser.parse_args(argv)
    if args.wsi_child:
        wsi_child(*args.wsi_child)
        return
    from digipath.metrics.instances import panoptic_quality

    sizes = (500, 1000) if args.quick else (1000, 4000)
    if args.quick:
        print("--quick: 500^2 and 1000^2 (one MONAI run at 4000^2 takes minutes)")
    figures: dict = {
        "repeats": args.repeats,
        "peer_repeats": args.peer_repeats,
        "sizes": list(sizes),
    }
    medians = {}
    for number, size in enumerate(sizes):
        data = inputs(size)
        if number == 0:
            print(f"maps: {data['source']}")
            run_digipath(data), run_monai(data)  # warm-up
        times: dict[str, list[float]] = {"digipath": [], "monai": []}
        results = {}
        plan = (("digipath", run_digipath, args.repeats), ("monai", run_monai, args.peer_repeats))
        for name, function, repeats in plan:  # grouped, not alternated: see the notes
            for _ in range(repeats):
                start = time.perf_counter()
                results[name] = function(data)
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(values) for name, values in times.items()}
        medians[size] = median
        ours, theirs = results["digipath"][0], results["monai"][0]
        agreement = panoptic_quality(theirs, ours).pq
        truth_count = len(np.unique(data["truth"])) - 1
        speedup = median["monai"] / median["digipath"]
        print(
            f"{size} x {size}: {truth_count} true nuclei | digipath {median['digipath']:8.3f} s "
            f"({results['digipath'][1]} nuclei) | MONAI {median['monai']:8.3f} s "
            f"({results['monai'][1]} nuclei) | speedup {speedup:6.1f}x | PQ digipath vs MONAI "
            f"{agreement:.3f}"
        )
        figures[f"{size}"] = {
            "true_nuclei": truth_count,
            "digipath_s": round(median["digipath"], 4),
            "monai_s": round(median["monai"], 4),
            "speedup": round(speedup, 2),
            "digipath_nuclei": results["digipath"][1],
            "monai_nuclei": results["monai"][1],
            "pq_digipath_vs_monai": round(agreement, 4),
            "pq_digipath_vs_truth": round(panoptic_quality(data["truth"], ours).pq, 4),
            "pq_monai_vs_truth": round(panoptic_quality(data["truth"], theirs).pq, 4),
        }
    small, large = sizes
    pixel_ratio = math.log((large / small) ** 2)
    growth = math.log(medians[large]["digipath"] / medians[small]["digipath"]) / pixel_ratio
    growth_monai = math.log(medians[large]["monai"] / medians[small]["monai"]) / pixel_ratio
    figures["time_growth_exponent_monai"] = round(growth_monai, 3)
    speedup = medians[large]["monai"] / medians[large]["digipath"]
    print(f"time growth (time ~ pixels^e): e = {growth:.2f} digipath, {growth_monai:.2f} MONAI")
    slides = (2048, 4096) if args.quick else (4096, 8192)
    memory = wsi_memory(slides, args.cache_dir / "nuclei")
    figures["wsi_peak_mib"] = {str(k): v["peak_mib"] for k, v in memory.items()}
    memory_ratio = memory[slides[1]]["peak_mib"] / memory[slides[0]]["peak_mib"]
    print(json.dumps({
        "benchmark": "nuclei_postprocess",
        "figures": figures,
        "ratios": {"postprocess_speedup_vs_monai": round(speedup, 2),
                   "time_growth_exponent": round(growth, 3),
                   "wsi_peak_memory_large_vs_small": round(memory_ratio, 3)},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
