"""Label-balanced batches from a pool of slides: digipath's BatchGenerator against the usual
torch Dataset + DataLoader.

What is measured
----------------
Batches of 32 patches of 256 x 256 RGB at 0.25 µm/px, half centred on label 0 (99 % of the
mask) and half on label 1 (1 %, tumour-like blobs), from a pool of 8 slides (JPEG pyramids of
``read_patches.py``, with the mask of ``sample_patches.py`` at 1 µm/px), augmented by the seed's
augmentation example (``examples/augmentation/seed.yaml``: flips, quarter turns, scaling, HSB
or contrast, noise, blur), normalised to [0, 1] float32 ``(N, C, H, W)`` tensors, with the
same number of worker processes on both sides:

``digipath``
    :class:`~digipath.data.batch_generator.BatchGenerator` (label ratios 0.5/0.5, main and read
    buffers of 512 patches (256 with ``--quick``) with prefetching, ``processes`` = 1 or 2),
    through
    :class:`~digipath.data.torch_dataset.BatchDataset` in ``DataLoader(batch_size=None)``.
``baseline``
    what users write today: a map-style ``torch.utils.data.Dataset`` that loads each full mask,
    finds the positions of each label with ``np.nonzero``, picks a random position of the
    wanted label per item, reads the enlarged region (so scaling down shows real tissue) with
    openslide-python ``read_region``, applies the same augmentation and converts to a tensor; in
    a ``DataLoader(batch_size=32, num_workers=1 or 2)``.

The figure is patches per second delivered to the training loop (which does nothing else),
the median over the repeats (the four set-ups alternate within each repeat). digipath is timed
over whole passes over its buffer after two passes of warm-up (the prefetching pipeline is then
full), the baseline after 8 batches (its workers' prefetching). Set-up (statistics or
``np.nonzero``; process start) is reported separately.
The memory of each worker process is reported too: its peak resident size (``VmHWM``, which
for digipath includes the shared-memory buffers it writes into) and its private resident size
(``RssAnon``) at the end. The 8 slides are
symbolic links to one image and one mask (the baseline computes ``np.nonzero`` once per mask
file, which flatters its set-up time and memory).

Run ``python benchmarks/batches.py [--quick]``; the last line printed is a JSON object
``{"benchmark": "batches", "figures": {...}, "ratios": {"batches_vs_baseline": ...,
"two_vs_one_worker": ...}}``: ``batches_vs_baseline`` is digipath's rate over the baseline's at
2 workers (the 1-worker ratio is in the figures), ``two_vs_one_worker`` digipath's 2-worker rate
over its 1-worker rate. ``--quick`` uses the 8192 x 8192 image and fewer batches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from read_patches import cached_image  # sibling benchmark scripts
from sample_patches import MASK_SPACING, cached_mask

REPO = Path(__file__).resolve().parents[1]
IMAGE_SPACING = 0.25
PATCH = 256
BATCH = 32
SLIDES = 8


def pool_of_slides(cache_dir: Path, size: int) -> list[tuple[Path, Path, Path]]:
    """``SLIDES`` (image, mask, stat) links to the cached image, its mask and statistics."""
    from digipath.data.stats import MaskStats

    image = cached_image(cache_dir, size)
    mask = cached_mask(cache_dir, size)
    stat = cache_dir / f"{mask.stem}.stat"
    if not stat.exists():
        MaskStats.from_mask(mask, MASK_SPACING, [0, 1]).save(stat)
    folder = cache_dir / f"pool_{size}"
    folder.mkdir(exist_ok=True)
    slides = []
    for k in range(SLIDES):
        links = []
        for target, suffix in ((image, ".tif"), (mask, "_mask.tif"), (stat, ".stat")):
            link = folder / f"slide{k}{suffix}"
            if not link.exists():
                link.symlink_to(target.resolve())
            links.append(link)
        slides.append(tuple(links))
    return slides


def memory_mib(pid: int) -> tuple[float, float] | None:
    """``(peak resident, private resident)`` memory of a process in MiB (Linux).

    The peak (``VmHWM``) counts the shared-memory buffers a digipath worker writes into; the
    private part (``RssAnon``, now) is what the process holds of its own.
    """
    values = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "RssAnon"):
                    values[key] = int(rest.split()[0]) / 1024
    except OSError:
        return None
    if len(values) < 2:
        return None
    return values["VmHWM"], values["RssAnon"]


def augmenter():
    from digipath.augment import load_augmentation

    return load_augmentation(REPO / "examples" / "augmentation" / "seed.yaml", rng=0)["training"]


def consume(loader, batches: int, warmup: int, workers) -> tuple[float, list[float | None]]:
    """Patches/s over ``batches`` batches after ``warmup``; peak memory of ``workers()``."""
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    patches = 0
    for _ in range(batches):
        item = next(iterator)
        patches += len(item["patches"] if isinstance(item, dict) else item[0])
    rate = patches / (time.perf_counter() - start)
    memory = [memory_mib(pid) for pid in workers(iterator)]
    del iterator
    return rate, memory


def run_digipath(slides, processes: int, batches: int, seed: int, buffer: int) -> dict:
    from torch.utils.data import DataLoader

    from digipath.data.batch_generator import BatchGenerator
    from digipath.data.config import PatchSource
    from digipath.data.normalization import RgbToZeroOne
    from digipath.data.torch_dataset import BatchDataset

    sources = {"slides": [PatchSource(str(i), str(m), str(s), (0, 1)) for i, m, s in slides]}
    started = time.perf_counter()
    generator = BatchGenerator(
        sources, label_ratios={0: 0.5, 1: 0.5}, patch_shapes={IMAGE_SPACING: (PATCH, PATCH)},
        mask_spacing=MASK_SPACING, main_buffer_size=buffer, read_buffer_size=buffer,
        augmenter=augmenter(), normalizer=RgbToZeroOne(), one_hot=False, processes=processes,
        prefetch=True, seed=seed, name=f"bench{processes}",
    )  # fmt: skip
    generator.start()
    generator.step()
    generator.fill()
    setup = time.perf_counter() - started
    dataset = BatchDataset(generator, BATCH)
    loader = DataLoader(dataset, batch_size=None, num_workers=0)
    try:
        # two passes over the buffer fill the prefetching pipeline; then whole passes are timed
        rate, memory = consume(loader, batches, 2 * buffer // BATCH, lambda _: generator.workers)
    finally:
        generator.stop()
    return {"rate": rate, "setup_s": setup, "worker_memory_mib": memory}


class NonzeroDataset:
    """The baseline: ``np.nonzero`` on full masks, OpenSlide reads, per-item augmentation."""

    def __init__(self, slides, length: int, seed: int) -> None:
        import tifffile

        self.images = [str(image) for image, _, _ in slides]
        self.length = length
        self.seed = seed
        self.augmenter = augmenter()
        self.extract = self.augmenter.input_shape((PATCH, PATCH))
        self.coordinates = []
        cache: dict[Path, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        for _, mask, _ in slides:
            target = mask.resolve()
            if target not in cache:
                full = tifffile.imread(mask, level=0)
                full = full[..., 0] if full.ndim == 3 else full
                cache[target] = {label: np.nonzero(full == label) for label in (0, 1)}
            self.coordinates.append(cache[target])
        self.slides = None  # opened lazily, in each worker process

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        import openslide
        import torch

        if self.slides is None:
            self.slides = [openslide.OpenSlide(path) for path in self.images]
        rng = np.random.default_rng((self.seed, index))
        label = index % 2
        slide = int(rng.integers(len(self.slides)))
        rows, cols = self.coordinates[slide][label]
        k = int(rng.integers(len(rows)))
        scale = MASK_SPACING / IMAGE_SPACING
        centre_row, centre_col = int((rows[k] + 0.5) * scale), int((cols[k] + 0.5) * scale)
        height, width = self.extract
        region = self.slides[slide].read_region(
            (centre_col - width // 2, centre_row - height // 2), 0, (width, height)
        )
        patch = np.asarray(region)[None, :, :, :3]
        patch, _ = self.augmenter.process(patch, shapes=(PATCH, PATCH), rng=rng)
        tensor = torch.from_numpy(np.ascontiguousarray(patch[0].transpose(2, 0, 1)))
        return tensor.float().div_(255.0), label


def run_baseline(slides, workers: int, batches: int, seed: int, buffer: int) -> dict:
    from torch.utils.data import DataLoader

    started = time.perf_counter()
    dataset = NonzeroDataset(slides, length=10**9, seed=seed)
    setup = time.perf_counter() - started
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=False, num_workers=workers)
    rate, memory = consume(
        loader, batches, 8, lambda it: [w.pid for w in getattr(it, "_workers", [])]
    )
    return {"rate": rate, "setup_s": setup, "worker_memory_mib": memory}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8192 x 8192 image, fewer batches")
    parser.add_argument("--batches", type=int, help="timed batches per run (default 80)")
    parser.add_argument("--repeats", type=int, help="repeats, the median is taken (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=REPO / "benchmarks" / ".cache")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    size = 8192 if args.quick else 30000
    buffer = 256 if args.quick else 512
    per_pass = buffer // BATCH
    batches = args.batches or (3 * per_pass if args.quick else 5 * per_pass)
    batches = max(per_pass, batches // per_pass * per_pass)  # whole passes over the buffer
    repeats = args.repeats or (3 if args.quick else 5)
    slides = pool_of_slides(args.cache_dir, size)
    print(
        f"{SLIDES} slides of {size} x {size}; {batches} batches of {BATCH} x {PATCH} x {PATCH} "
        f"at {IMAGE_SPACING} µm/px, seed augmentation, labels 0/1 at 50/50; {repeats} repeats",
        flush=True,
    )
    runs: dict[str, list[dict]] = {}
    for repeat in range(repeats):
        for workers in (1, 2):
            for name, run in (("digipath", run_digipath), ("baseline", run_baseline)):
                result = run(slides, workers, batches, args.seed + repeat, buffer)
                runs.setdefault(f"{name}_{workers}", []).append(result)
                memory = ", ".join(
                    f"{m[0]:.0f} ({m[1]:.0f} private)" for m in result["worker_memory_mib"] if m
                )
                print(
                    f"  repeat {repeat + 1}: {name:9s} {workers} worker(s) "
                    f"{result['rate']:7.1f} patches/s (set-up {result['setup_s']:.2f} s; "
                    f"worker peak MiB {memory})",
                    flush=True,
                )
    results = {
        key: {
            "rate": statistics.median(r["rate"] for r in values),
            "setup_s": statistics.median(r["setup_s"] for r in values),
            "worker_memory_mib": max(
                (r["worker_memory_mib"] for r in values),
                key=lambda memory: sum(m[0] for m in memory if m),
            ),
        }
        for key, values in runs.items()
    }
    ratio_2 = results["digipath_2"]["rate"] / results["baseline_2"]["rate"]
    ratio_1 = results["digipath_1"]["rate"] / results["baseline_1"]["rate"]
    scaling = results["digipath_2"]["rate"] / results["digipath_1"]["rate"]
    baseline_scaling = results["baseline_2"]["rate"] / results["baseline_1"]["rate"]
    print()
    print(f"{'median patches/s':20}{'1 worker':>10}{'2 workers':>11}{'2 vs 1':>8}")
    for name in ("digipath", "baseline"):
        one, two = results[f"{name}_1"]["rate"], results[f"{name}_2"]["rate"]
        print(f"{name:20}{one:10.1f}{two:11.1f}{two / one:8.2f}")
    print(f"{'digipath / baseline':20}{ratio_1:10.2f}{ratio_2:11.2f}")
    figures: dict[str, object] = {}
    for key, result in results.items():
        figures[f"{key}_patches_per_s"] = round(result["rate"], 3)
        figures[f"{key}_setup_s"] = round(result["setup_s"], 3)
        memory = [m for m in result["worker_memory_mib"] if m]
        figures[f"{key}_worker_peak_mib"] = [round(m[0], 1) for m in memory]
        figures[f"{key}_worker_private_mib"] = [round(m[1], 1) for m in memory]
    figures["batches_vs_baseline_1_worker"] = round(ratio_1, 3)
    figures["baseline_two_vs_one_worker"] = round(baseline_scaling, 3)
    figures["repeats"] = repeats
    figures["batches"] = batches
    figures["buffer_patches"] = buffer
    print(
        json.dumps(
            {
                "benchmark": "batches",
                "figures": figures,
                "ratios": {
                    "batches_vs_baseline": round(ratio_2, 3),
                    "two_vs_one_worker": round(scaling, 3),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
