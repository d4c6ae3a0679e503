"""Whole-slide inference: apply_network end to end against the network's compute floor.

What is measured
----------------
A light same-padded U-Net (depth 2, 8 first-level filters: its forward time is of the order of
the read time, so the pipeline is what is measured, not the network) is applied with 1024 x
1024 tiles, batches of 4, to a JPEG pyramid (``read_patches.py``'s H&E image, 0.25 µm/px) with
a tissue mask covering about 40 % of it in blobs:

``end to end``
    :func:`~digipath.inference.apply_network`: mask reads, skipping empty tiles, tile reads in
    background threads, normalisation, forward passes, stitching, the partial strips and the
    output TIFF (hard labels, LZW pyramid);
``compute floor``
    the same network's forward passes alone (no softmax, no labels), on the same tissue
    tiles already in memory (normalised), in the same batches;
``read floor``
    reading the same tiles alone (reported, not a ratio).

Tiles per second count the tissue tiles. Peak memory is the maximum resident size of a fresh
process running ``apply_network`` on a small and a large slide (the large one twice the side),
the median over the repeats: it must not grow with the slide.

Run ``python benchmarks/apply.py [--quick]``; the last line printed is a JSON object
``{"benchmark": "apply", "figures": {...}, "ratios": {"apply_vs_compute_floor": ...,
"peak_memory_large_vs_small": ...}}``. The full run uses 10000^2 and 20000^2 slides, ``--quick``
4096^2 and 8192^2.

Peers: MONAI's ``sliding_window_inference`` with the same network on the small slide, read
whole into memory as MONAI's inferer needs (it has no tissue mask, so it computes every tile),
is timed in a fresh process too (seconds and peak memory beside digipath's on the same slide).
TIAToolbox is not compared: it needs torchvision, which has no CPU build for this torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from read_patches import cached_image  # sibling benchmark script

REPO = Path(__file__).resolve().parents[1]
SPACING = 0.25
MASK_SPACING = 4.0
TILE = 1024
BATCH = 4
TISSUE = 0.4


def cached_mask(cache_dir: Path, size: int) -> Path:
    """A mask at 4 µm/px with ~40 % tissue in blobs for a ``size`` slide at 0.25 µm/px."""
    import cv2

    from digipath.io import ImageWriter

    path = cache_dir / f"tissue_{size}_at{MASK_SPACING:g}um.tif"
    if path.exists():
        return path
    side = int(np.ceil(size * SPACING / MASK_SPACING))
    rng = np.random.default_rng(size)
    field = cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), side / 25)
    mask = (field > np.quantile(field, 1 - TISSUE)).astype(np.uint8)
    with ImageWriter(path, (side, side), spacing=MASK_SPACING, channels=1, compression="lzw",
                     interpolation="nearest") as writer:  # fmt: skip
        writer.fill(mask[:, :, None])
    return path


def peak_mib() -> float:
    """This process's peak resident size (``VmHWM``) in MiB.

    Not ``getrusage``: on Linux its ``ru_maxrss`` survives ``fork`` + ``exec``, so a child would
    report the parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build_model():
    import torch

    from digipath.models import model_class

    torch.manual_seed(0)
    return model_class("unet")(classes=2, depth=1, branching_factor=1, padding="same").build()


def run_apply(size: int, cache_dir: Path, output: Path) -> dict:
    """One end-to-end run (in this process): tissue tiles/s and peak memory."""
    from digipath.inference import apply_network

    image = cached_image(cache_dir, size)
    mask = cached_mask(cache_dir, size)
    model = build_model()
    start = time.perf_counter()
    result = apply_network(model, image, output, spacing=SPACING, mask=mask, tile_size=TILE,
                           batch_size=BATCH, overwrite=True)  # fmt: skip
    elapsed = time.perf_counter() - start
    peak = peak_mib()
    rate = result.computed / elapsed
    return {"size": size, "tissue_tiles": result.computed, "tiles": result.tiles,
            "seconds": elapsed, "tiles_per_s": rate, "peak_mib": peak}  # fmt: skip


def run_monai(size: int, cache_dir: Path) -> dict:
    """MONAI's sliding-window inference on the whole level held in memory (one process)."""
    import torch
    from monai.inferers import sliding_window_inference

    from digipath.io import ImageReader

    start = time.perf_counter()
    with ImageReader(cached_image(cache_dir, size)) as reader:
        rows, cols = reader.shape(SPACING)
        image = reader.read(SPACING, 0, 0, rows, cols)
    inputs = torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255)
    del image
    network = build_model().module.eval()
    with torch.inference_mode():
        logits = sliding_window_inference(inputs, (TILE, TILE), BATCH, network, overlap=0.0)
        labels = (logits.argmax(dim=1) + 1).to(torch.uint8)
    elapsed = time.perf_counter() - start
    tiles = -(-rows // TILE) * -(-cols // TILE)
    return {"size": size, "tiles": tiles, "seconds": elapsed, "tiles_per_s": tiles / elapsed,
            "peak_mib": peak_mib(), "labels": int(labels.shape[-1])}  # fmt: skip


def tissue_tiles(size: int, cache_dir: Path) -> list[tuple[int, int]]:
    """The (top, left) input positions of the tiles apply_network computes."""
    from digipath.inference.apply import _block_has_tissue, _mask_reader, _read_mask
    from digipath.inference.geometry import tile_geometry
    from digipath.io import ImageReader

    model = build_model()
    geometry = tile_geometry(model.reconstruction_info((TILE, TILE)))
    with ImageReader(cached_image(cache_dir, size)) as reader:
        rows, cols = reader.shape(SPACING)
    masks = _mask_reader(cached_mask(cache_dir, size), SPACING, 0.25)
    width = (geometry.blocks(cols) - 1) * geometry.stride + geometry.extent
    positions = []
    for k in range(geometry.blocks(rows)):
        mask = _read_mask(masks, k * geometry.stride, geometry.extent, width, SPACING)
        positions += [
            (k * geometry.stride, c * geometry.stride)
            for c in range(geometry.blocks(cols))
            if _block_has_tissue(mask, c, geometry)
        ]
    return positions


def floors(size: int, cache_dir: Path, limit: int | None) -> dict:
    """Read-only and forward-only tiles/s over the same tissue tiles."""
    import torch

    from digipath.data.normalization import RgbToZeroOne
    from digipath.io import ImageReader

    positions = tissue_tiles(size, cache_dir)[:limit]
    start = time.perf_counter()
    with ImageReader(cached_image(cache_dir, size)) as reader:
        tiles = [reader.read(SPACING, top, left, TILE, TILE) for top, left in positions]
    read_rate = len(tiles) / (time.perf_counter() - start)
    normalise = RgbToZeroOne()
    batches = []
    for i in range(0, len(tiles), BATCH):
        batch = normalise(np.stack(tiles[i : i + BATCH])).transpose(0, 3, 1, 2)
        batches.append(torch.from_numpy(np.ascontiguousarray(batch)))
    network = build_model().module.eval()
    with torch.inference_mode():
        network(batches[0])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            network(batch)
        forward_rate = len(tiles) / (time.perf_counter() - start)
    return {"tiles": len(tiles), "read_tiles_per_s": read_rate, "forward_tiles_per_s": forward_rate}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4096^2 and 8192^2 slides")
    parser.add_argument("--repeats", type=int, help="end-to-end repeats (default 3, 2 quick)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "benchmarks" / ".cache")
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # internal: one run
    parser.add_argument("--monai", type=int, help=argparse.SUPPRESS)  # internal: one MONAI run
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        print(json.dumps(run_apply(args.run, args.cache_dir, args.output)))
        return
    if args.monai:
        print(json.dumps(run_monai(args.monai, args.cache_dir)))
        return
    small, large = (4096, 8192) if args.quick else (10000, 20000)
    repeats = args.repeats or (2 if args.quick else 3)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    for size in (small, large):  # build the cached inputs outside the timed runs
        cached_image(args.cache_dir, size)
        cached_mask(args.cache_dir, size)
    output = args.cache_dir / "apply_output.tif"

    def fresh_process(size: int) -> dict:
        command = [sys.executable, __file__, "--run", str(size), "--cache-dir",
                   str(args.cache_dir), "--output", str(output)]  # fmt: skip
        text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return json.loads(text.strip().splitlines()[-1])

    def monai_process(size: int) -> dict | None:
        command = [sys.executable, __file__, "--monai", str(size), "--cache-dir",
                   str(args.cache_dir)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"  MONAI run failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            return None
        return json.loads(done.stdout.strip().splitlines()[-1])

    runs, floor_runs, small_runs = [], [], []
    for repeat in range(repeats):
        runs.append(fresh_process(large))
        small_runs.append(fresh_process(small))
        floor_runs.append(floors(large, args.cache_dir, None))
        print(f"  repeat {repeat + 1}: end to end {runs[-1]['tiles_per_s']:.2f} tissue tiles/s, "
              f"forward alone {floor_runs[-1]['forward_tiles_per_s']:.2f}, read alone "
              f"{floor_runs[-1]['read_tiles_per_s']:.2f}", flush=True)  # fmt: skip
    peak_small = statistics.median(r["peak_mib"] for r in small_runs)
    try:
        import monai  # noqa: F401

        monai_run = monai_process(small)
        ours_small = fresh_process(small)
    except ImportError:
        monai_run = ours_small = None
    end_to_end = statistics.median(r["tiles_per_s"] for r in runs)
    forward = statistics.median(r["forward_tiles_per_s"] for r in floor_runs)
    read = statistics.median(r["read_tiles_per_s"] for r in floor_runs)
    peak_large = statistics.median(r["peak_mib"] for r in runs)
    ratio = end_to_end / forward
    memory_ratio = peak_large / peak_small
    print(f"{large}^2 slide, {runs[0]['tissue_tiles']} of {runs[0]['tiles']} tiles with tissue, "
          f"{TILE}^2 tiles, batches of {BATCH}, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"end to end      {end_to_end:8.2f} tiles/s")
    print(f"forward alone   {forward:8.2f} tiles/s (compute floor)")
    print(f"read alone      {read:8.2f} tiles/s")
    print(f"apply / floor   {ratio:8.3f}")
    print(f"peak memory     {peak_small:.0f} MiB at {small}^2, {peak_large:.0f} MiB at "
          f"{large}^2 ({memory_ratio:.3f}x)")  # fmt: skip
    if monai_run is not None:
        print(f"MONAI sliding_window_inference on the {small}^2 slide in memory: "
              f"{monai_run['tiles'] / monai_run['seconds']:.2f} tiles/s over all "
              f"{monai_run['tiles']} tiles, {monai_run['seconds']:.1f} s, peak "
              f"{monai_run['peak_mib']:.0f} MiB; digipath {ours_small['seconds']:.1f} s, peak "
              f"{ours_small['peak_mib']:.0f} MiB")  # fmt: skip
    monai_figures = {} if monai_run is None else {
        "monai_small_seconds": round(monai_run["seconds"], 2),
        "monai_small_peak_mib": round(monai_run["peak_mib"], 1),
        "digipath_small_seconds": round(ours_small["seconds"], 2),
        "digipath_small_peak_mib": round(ours_small["peak_mib"], 1),
    }  # fmt: skip
    print(json.dumps({
        "benchmark": "apply",
        "figures": {
            "sizes": [small, large], "tissue_tiles": runs[0]["tissue_tiles"],
            "tiles": runs[0]["tiles"], "end_to_end_tiles_per_s": round(end_to_end, 3),
            "forward_tiles_per_s": round(forward, 3), "read_tiles_per_s": round(read, 3),
            "peak_mib_small": round(peak_small, 1),
            "peak_mib_large": round(peak_large, 1), "repeats": repeats, **monai_figures,
        },
        "ratios": {"apply_vs_compute_floor": round(ratio, 3),
                   "peak_memory_large_vs_small": round(memory_ratio, 3)},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
