"""Random patch reads from a JPEG-tiled pyramidal TIFF: digipath against its peers.

What is measured
----------------
The throughput, in patches per second, of reading square RGB patches (256 x 256 and
512 x 512 pixels) at random level-0 positions of a 30000 x 30000 pixel pyramidal TIFF with
512 x 512 JPEG tiles (quality 80, YCbCr 4:2:0), the access pattern of patch-based training.
Every reader reads the same positions and returns an ``(h, w, 3)`` uint8 array:

``digipath``
    ``ImageReader(path).read(spacing, row, col, height, width)`` at the level-0 spacing.
``openslide``
    ``OpenSlide(path).read_region((col, row), 0, (w, h))`` then ``np.asarray(...)[..., :3]``;
    the conversion is timed, since every user of OpenSlide pays for it.
``tiffslide``
    ``TiffSlide(path).read_region((col, row), 0, (w, h), as_array=True)``.
``pyvips``
    ``pyvips.Region.new(image).fetch(col, row, w, h)`` on the image opened once with
    ``access="random"``, then ``np.frombuffer(...).reshape(h, w, 3)``. ``Region.fetch``
    prepares the pixels in the calling thread without building a pipeline per patch, so it
    is the fastest way to read many small regions with libvips (``image.crop(...).numpy()``
    builds and evaluates a new pipeline for every patch).
``ceiling``
    The bare tile-decode loop: for each patch, ``os.pread`` every level-0 tile the patch
    touches and decode it with ``imagecodecs.jpeg8_decode``, one tile after the other in one
    thread; nothing is assembled into a patch. No reader that decodes whole tiles in one
    thread can beat it. digipath can: with its ``_jpegregion`` extension it decodes only the
    rows and columns of each tile that the patch needs (libjpeg-turbo's skip and crop; the
    pixels equal those of a full decode), and the tiles of a patch in parallel threads.

Each reader is measured in a fresh process (``spawn``), which opens the file and reads a few
warm-up patches outside the timing, then times the whole list of positions, in a new random
order at each repeat; the figure is the median over the repeats (these machines are noisy).
"2 procs" runs two such processes at the same time, each reading the whole list in its own
order, and reports the aggregate throughput, ``2 * patches / wall time`` (the wall time from
the first start to the last end, on the system-wide monotonic clock): the data-loader
workers of a training job. Before timing, the first process checks a few patches of each
size against tifffile's own decoding of the level-0 tiles.

The readers keep their default settings: digipath decodes the tiles of one patch in a thread
pool of ``DIGIPATH_THREADS`` threads (default: the CPUs the process may use; the settings are
printed); OpenSlide and ``Region.fetch`` decode in the calling thread, tiffslide as zarr and
tifffile do by default. ``--readers digipath_1thread`` adds digipath with
``DIGIPATH_THREADS=1``, for comparison in the two-process case. OpenSlide and libvips keep
their default caches of decoded tiles; random positions over the 30000 x 30000 image seldom
hit them (3,481 tiles), the 8192 x 8192 image of ``--quick`` (256 tiles) more often.

The image is made once from real H&E patches (``patches/`` of the shared test data,
``DIGIPATH_TEST_DATA``, default ``<repo>/../shared/data``): each tile is four 256 x 256 crops
of random patches, randomly rotated and flipped, with a random gain and added noise, so that
no two JPEG tiles are alike. It is written with digipath's ``ImageWriter`` and cached under
``benchmarks/.cache/`` (the name holds the size and a version).

Run ``python benchmarks/read_patches.py [--quick]``; the last line printed is a JSON object
``{"benchmark": "read_patches", "figures": {...}, "ratios": {...}}`` with patches/s and the
ratios digipath / peer (``read256_vs_openslide`` ...; ``_2proc`` for two processes).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE_VERSION = 1
TILE_SIZE = 512
JPEG_QUALITY = 80
SPACING = 0.25
SIZES = (256, 512)
READERS = ("digipath", "openslide", "tiffslide", "pyvips", "ceiling")  # the default set
EXTRA_READERS = ("digipath_1thread",)  # digipath with DIGIPATH_THREADS=1, on request
PEERS = ("openslide", "tiffslide", "pyvips", "ceiling")
WARMUP = 8  # warm-up reads per size, at positions not in the timed list
CHECKS = 4  # patches per size checked against tifffile
MAX_MEAN_ERROR = 1.0  # mean |difference| per sample tolerated between JPEG decoders

Read = Callable[[int, int, int, int], Any]  # (row, col, height, width) -> patch


# ----------------------------------------------------------------------------------------------
# The test image


def _data_folder() -> Path:
    return Path(os.environ.get("DIGIPATH_TEST_DATA", REPO.parent / "shared" / "data"))


def _load_sources() -> list[np.ndarray]:
    """Load the H&E patches of the test data as RGB arrays at least 256 pixels on each side."""
    import cv2
    import tifffile

    folder = _data_folder() / "patches"
    skip = ("no-tissue", "almost-white", "pen", "thumb")
    sources = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
            continue
        if any(word in path.name for word in skip):
            continue
        if path.suffix.lower() in (".tif", ".tiff"):
            image = tifffile.imread(path)
        else:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            image = None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if image is None or image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
            continue
        image = np.ascontiguousarray(image[:, :, :3])
        scale = 256 / min(image.shape[:2])
        if scale > 1:
            size = (math.ceil(image.shape[1] * scale), math.ceil(image.shape[0] * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
        sources.append(image)
    if not sources:
        raise SystemExit(
            f"no H&E patches found under {folder}; set DIGIPATH_TEST_DATA to the shared data"
        )
    return sources


def _make_tile(sources: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A 512 x 512 tile of four random, transformed, noisy 256 x 256 crops."""
    half = TILE_SIZE // 2
    tile = np.empty((TILE_SIZE, TILE_SIZE, 3), dtype=np.int16)
    for top in (0, half):
        for left in (0, half):
            source = sources[rng.integers(len(sources))]
            row = rng.integers(source.shape[0] - half + 1)
            col = rng.integers(source.shape[1] - half + 1)
            crop = np.rot90(source[row : row + half, col : col + half], rng.integers(4))
            if rng.integers(2):
                crop = crop[:, ::-1]
            gain = int(rng.integers(115, 142))  # 0.9 to 1.1, in 1/128
            tile[top : top + half, left : left + half] = (
                np.multiply(crop, gain, dtype=np.uint16) >> 7
            )
    tile += rng.integers(-6, 7, size=tile.shape, dtype=np.int16)
    np.clip(tile, 0, 255, out=tile)
    return tile.astype(np.uint8)


def build_image(path: Path, size: int) -> None:
    """Write the ``size`` x ``size`` test image to ``path`` with digipath's ImageWriter."""
    from digipath.io.writer import ImageWriter

    sources = _load_sources()
    rng = np.random.default_rng(20240607 + CACHE_VERSION)
    grid = -(-size // TILE_SIZE)
    total = grid * grid
    interactive = sys.stdout.isatty()
    print(f"building {path.name} ({size} x {size}, {total} tiles) from {len(sources)} patches")
    started = time.perf_counter()
    shown = -1.0
    with ImageWriter(
        path,
        (size, size),
        spacing=SPACING,
        dtype="uint8",
        channels=3,
        compression="jpeg",
        jpeg_quality=JPEG_QUALITY,
        tile_size=TILE_SIZE,
    ) as writer:
        done = 0
        for row in range(0, size, TILE_SIZE):
            for col in range(0, size, TILE_SIZE):
                tile = _make_tile(sources, rng)
                writer.write(tile[: size - row, : size - col], row, col)
                done += 1
                elapsed = time.perf_counter() - started
                if done == total or elapsed - shown >= (1.0 if interactive else 10.0):
                    shown = elapsed
                    line = f"  {done}/{total} tiles ({100 * done / total:.0f}%), {elapsed:.0f} s"
                    print(f"\r{line}" if interactive else line, end="", flush=True)
                    if not interactive:
                        print()
        if interactive:
            print()
    megabytes = path.stat().st_size / 2**20
    print(f"  done: {megabytes:.0f} MiB in {time.perf_counter() - started:.1f} s")


def cached_image(cache_dir: Path, size: int) -> Path:
    """Return the cached test image of this size, building it first if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"he_{size}x{size}_tile{TILE_SIZE}_q{JPEG_QUALITY}_v{CACHE_VERSION}.tif"
    if not path.exists():
        build_image(path, size)
    return path


# ----------------------------------------------------------------------------------------------
# Readers: each opener opens the file once and returns read(row, col, height, width)


def open_digipath(path: str) -> Read:
    from digipath.io import ImageReader

    reader = ImageReader(path)
    spacing = reader.spacings[0]

    def read(row: int, col: int, height: int, width: int) -> np.ndarray:
        return reader.read(spacing, row, col, height, width)

    return read


def open_digipath_1thread(path: str) -> Read:
    os.environ["DIGIPATH_THREADS"] = "1"  # a spawned worker: set before the pool exists
    return open_digipath(path)


def open_openslide(path: str) -> Read:
    import openslide

    slide = openslide.OpenSlide(path)

    def read(row: int, col: int, height: int, width: int) -> np.ndarray:
        return np.asarray(slide.read_region((col, row), 0, (width, height)))[..., :3]

    return read


def open_tiffslide(path: str) -> Read:
    import tiffslide

    slide = tiffslide.TiffSlide(path)

    def read(row: int, col: int, height: int, width: int) -> np.ndarray:
        return slide.read_region((col, row), 0, (width, height), as_array=True)

    return read


def open_pyvips(path: str) -> Read:
    import pyvips

    image = pyvips.Image.new_from_file(path, access="random")  # page 0: level 0
    region = pyvips.Region.new(image)
    bands = image.bands

    def read(row: int, col: int, height: int, width: int) -> np.ndarray:
        data = region.fetch(col, row, width, height)
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, bands)

    return read


class _Tiles:
    """Level-0 tile index of a TIFF: offsets, byte counts, tile size and JPEG tables."""

    def __init__(self, path: str) -> None:
        import tifffile

        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages[0]
            self.offsets = [int(value) for value in page.dataoffsets]
            self.counts = [int(value) for value in page.databytecounts]
            self.tile_rows = int(page.tilelength)
            self.tile_cols = int(page.tilewidth)
            self.grid_cols = -(-int(page.imagewidth) // self.tile_cols)
            self.tables = page.jpegtables
            self.photometric = int(page.photometric)

    def touched(self, row: int, col: int, height: int, width: int) -> list[tuple[int, int]]:
        """(tile row, tile col) of every tile a patch touches, in row-major order."""
        rows = range(row // self.tile_rows, (row + height - 1) // self.tile_rows + 1)
        cols = range(col // self.tile_cols, (col + width - 1) // self.tile_cols + 1)
        return [(i, j) for i in rows for j in cols]


def open_ceiling(path: str, *, assemble: bool = False) -> Read:
    """The bare tile-decode loop; with ``assemble``, also returns the patch (for the check)."""
    import imagecodecs

    tiles = _Tiles(path)
    fd = os.open(path, os.O_RDONLY)
    decode = imagecodecs.jpeg8_decode
    tables, offsets, counts, grid_cols = tiles.tables, tiles.offsets, tiles.counts, tiles.grid_cols
    tile_rows, tile_cols = tiles.tile_rows, tiles.tile_cols
    # The writer stores each RGB tile as a complete JFIF stream (YCbCr, 4:2:0; no JPEGTables,
    # so tables is None) under Photometric YCbCr: libjpeg reads the colour space from the
    # stream, upsamples the chroma and converts to RGB, as tifffile asks (no colorspace,
    # outcolorspace RGB). The check compares the assembled tiles with tifffile's decoding.

    def read(row: int, col: int, height: int, width: int) -> None:
        for i in range(row // tile_rows, (row + height - 1) // tile_rows + 1):
            for j in range(col // tile_cols, (col + width - 1) // tile_cols + 1):
                k = i * grid_cols + j
                decode(os.pread(fd, counts[k], offsets[k]), tables=tables, outcolorspace="RGB")

    def read_assembled(row: int, col: int, height: int, width: int) -> np.ndarray:
        patch = np.empty((height, width, 3), dtype=np.uint8)
        for i, j in tiles.touched(row, col, height, width):
            k = i * grid_cols + j
            data = os.pread(fd, counts[k], offsets[k])
            tile = decode(data, tables=tables, outcolorspace="RGB")
            _paste(patch, tile, row, col, i * tile_rows, j * tile_cols)
        return patch

    return read_assembled if assemble else read


def _paste(patch: np.ndarray, tile: np.ndarray, row: int, col: int, top: int, left: int) -> None:
    """Copy the part of ``tile`` (top-left at level-0 ``top, left``) inside the patch."""
    height, width = patch.shape[:2]
    r0, c0 = max(row, top), max(col, left)
    r1 = min(row + height, top + tile.shape[0])
    c1 = min(col + width, left + tile.shape[1])
    inside = tile[r0 - top : r1 - top, c0 - left : c1 - left]
    patch[r0 - row : r1 - row, c0 - col : c1 - col] = inside


OPENERS: dict[str, Callable[[str], Read]] = {
    "digipath": open_digipath,
    "digipath_1thread": open_digipath_1thread,
    "openslide": open_openslide,
    "tiffslide": open_tiffslide,
    "pyvips": open_pyvips,
    "ceiling": open_ceiling,
}


def reference_patch(path: str, row: int, col: int, height: int, width: int) -> np.ndarray:
    """The patch assembled from tifffile's own decoding of the level-0 tiles."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        tiles = _Tiles(path)
        decode = page.decode
        patch = np.empty((height, width, 3), dtype=np.uint8)
        with open(path, "rb") as file:
            for i, j in tiles.touched(row, col, height, width):
                k = i * tiles.grid_cols + j
                file.seek(tiles.offsets[k])
                data, _, _ = decode(file.read(tiles.counts[k]), k, jpegtables=page.jpegtables)
                tile = np.asarray(data).reshape(tiles.tile_rows, tiles.tile_cols, -1)
                _paste(patch, tile, row, col, i * tiles.tile_rows, j * tiles.tile_cols)
    return patch


# ----------------------------------------------------------------------------------------------
# Measurement (in spawned worker processes)


def _check(name: str, path: str, read: Read, checks: dict[int, np.ndarray]) -> list[str]:
    """Compare a few patches with tifffile's decoding; return the problems found."""
    if name == "ceiling":
        read = open_ceiling(path, assemble=True)
    problems = []
    for size, positions in checks.items():
        errors = []
        for row, col in positions.tolist():
            patch = np.asarray(read(row, col, size, size))
            expected = reference_patch(path, row, col, size, size)
            if patch.shape != expected.shape or patch.dtype != expected.dtype:
                problems.append(
                    f"{size}x{size} at ({row}, {col}): {patch.dtype} {patch.shape}, expected "
                    f"{expected.dtype} {expected.shape}"
                )
                break
            errors.append(np.abs(patch.astype(np.int16) - expected).mean())
        if errors and max(errors) > MAX_MEAN_ERROR:
            problems.append(
                f"{size}x{size}: mean |difference| to tifffile up to {max(errors):.2f} "
                f"(tolerated {MAX_MEAN_ERROR})"
            )
    return problems


def _timed(read: Read, positions: np.ndarray, size: int) -> tuple[float, float]:
    started = time.perf_counter()
    for row, col in positions:
        read(row, col, size, size)
    return started, time.perf_counter()


def worker(
    role: int,
    name: str,
    path: str,
    positions: dict[int, np.ndarray],
    warmup: dict[int, np.ndarray],
    checks: dict[int, np.ndarray],
    repeats: int,
    seed: int,
    barrier: Any,
    results: Any,
) -> None:
    """Process ``role`` (0 or 1) of a reader's measurement.

    Process 0 checks the reader and times it alone while process 1 waits, idle; then process 1
    opens the file and warms up, and both time it together. Each timing puts
    ``(role, procs, size, repeat, start, end)`` on ``results``.
    """
    try:
        barrier.wait()  # both interpreters have started: process 1 no longer competes
        if role == 1:
            barrier.wait()  # process 0 runs alone
        read = OPENERS[name](path)
        problems = _check(name, path, read, checks) if role == 0 else []
        for size, places in warmup.items():
            for row, col in places.tolist():
                read(row, col, size, size)
        lists = {size: places.tolist() for size, places in positions.items()}
        rng = np.random.default_rng([seed, role])
        if role == 0:
            results.put(("checked", problems))
            for size, places in lists.items():
                for repeat in range(repeats):
                    order = [places[k] for k in rng.permutation(len(places))]
                    results.put((role, 1, size, repeat, *_timed(read, order, size)))
            barrier.wait()  # process 1 may start
        for size, places in lists.items():
            for repeat in range(repeats):
                order = [places[k] for k in rng.permutation(len(places))]
                barrier.wait()
                results.put((role, 2, size, repeat, *_timed(read, order, size)))
    except BaseException as error:  # report to the parent instead of hanging its barrier
        barrier.abort()
        results.put(("error", f"{type(error).__name__}: {error}"))
        raise


def measure(
    name: str,
    path: str,
    positions: dict[int, np.ndarray],
    warmup: dict[int, np.ndarray],
    checks: dict[int, np.ndarray],
    repeats: int,
    seed: int,
) -> tuple[dict[str, float], list[str]]:
    """Patches/s of one reader: ``{"read256_1proc": ...}``, and the problems its check found."""
    context = mp.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(
            target=worker,
            args=(role, name, path, positions, warmup, checks, repeats, seed, barrier, results),
            daemon=True,
        )
        for role in (0, 1)
    ]
    for process in processes:
        process.start()
    expected = 1 + len(positions) * repeats * 3  # the check, 1 proc, 2 x 2 procs
    timings: dict[tuple[int, int, int], list[tuple[float, float]]] = {}
    problems: list[str] = []
    received = 0
    while received < expected:
        try:
            message = results.get(timeout=5)
        except queue.Empty:
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead:  # killed or crashed without a word (a segfault in a codec)
                message = ("error", f"a worker process died with exit code {dead[0]}")
            else:
                continue
        received += 1
        if message[0] == "error":
            for process in processes:
                process.join(timeout=5)
                if process.is_alive():
                    process.terminate()
            raise RuntimeError(f"{name}: {message[1]}")
        if message[0] == "checked":
            problems = message[1]
            continue
        _role, procs, size, repeat, start, end = message
        timings.setdefault((procs, size, repeat), []).append((start, end))
    for process in processes:
        process.join()
    figures = {}
    for size, places in positions.items():
        for procs in (1, 2):
            rates = []
            for repeat in range(repeats):
                spans = timings[(procs, size, repeat)]
                wall = max(end for _, end in spans) - min(start for start, _ in spans)
                rates.append(procs * len(places) / wall)
            figures[f"read{size}_{procs}proc"] = statistics.median(rates)
    return figures, problems


# ----------------------------------------------------------------------------------------------
# Report


def _thread_settings() -> list[str]:
    lines = []
    try:
        from digipath.io.backends.tiff import REGION_DECODING
        from digipath.io.threads import default_thread_count

        lines.append(
            f"digipath: {default_thread_count()} decode thread(s) per process "
            f"(DIGIPATH_THREADS={os.environ.get('DIGIPATH_THREADS', 'unset')}), JPEG tiles "
            + ("decoded by region" if REGION_DECODING else "decoded whole (no _jpegregion)")
        )
    except ImportError:  # pragma: no cover - digipath not importable
        lines.append("digipath: not importable")
    lines.append("openslide, pyvips Region.fetch, ceiling: decode in the calling thread")
    try:
        import pyvips

        lines.append(
            f"pyvips: libvips {pyvips.version(0)}.{pyvips.version(1)}."
            f"{pyvips.version(2)}, concurrency {pyvips.concurrency_get()} "
            "(unused by Region.fetch)"
        )
    except (ImportError, OSError):
        pass
    return lines


def _table(results: dict[str, dict[str, float]], invalid: set[str]) -> str:
    columns = [f"read{size}_{procs}proc" for procs in (1, 2) for size in SIZES]
    heads = [f"{size}px {procs} proc{'s' * (procs > 1)}" for procs in (1, 2) for size in SIZES]
    lines = [f"{'patches/s':<12}" + "".join(f"{head:>16}" for head in heads)]
    for name, figures in results.items():
        label = name + (" (!)" if name in invalid else "")
        lines.append(f"{label:<12}" + "".join(f"{figures[key]:>16.1f}" for key in columns))
    if "digipath" in results:
        for peer in PEERS:
            if peer in results:
                ratios = [results["digipath"][key] / results[peer][key] for key in columns]
                label = f"dp/{peer}"
                lines.append(f"{label:<12}" + "".join(f"{ratio:>15.2f}x" for ratio in ratios))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="8192 x 8192 image, 120 patches of each size, 2 repeats",
    )
    parser.add_argument("--size", type=int, help="image rows and cols (default 30000)")
    parser.add_argument("--patches", type=int, help="patches of each size (default 2000)")
    parser.add_argument("--repeats", type=int, help="timed repeats (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patch positions")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "benchmarks" / ".cache")
    parser.add_argument(
        "--readers",
        default=",".join(READERS),
        help=f"comma-separated readers out of {','.join(READERS + EXTRA_READERS)} "
        "(default: all but the last)",
    )
    args = parser.parse_args(argv)
    size = args.size or (8192 if args.quick else 30000)
    count = args.patches or (120 if args.quick else 2000)
    repeats = args.repeats or (2 if args.quick else 3)
    names = [name.strip() for name in args.readers.split(",") if name.strip()]
    unknown = sorted(set(names) - set(READERS + EXTRA_READERS))
    if unknown:
        parser.error(f"unknown readers {unknown}; choose from {', '.join(READERS + EXTRA_READERS)}")

    sys.path.insert(0, str(REPO / "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )  # for the spawned workers
    path = cached_image(args.cache_dir, size)

    rng = np.random.default_rng(args.seed)

    def draw(n: int, patch: int) -> np.ndarray:
        return rng.integers(0, size - patch + 1, size=(n, 2))

    positions = {patch: draw(count, patch) for patch in SIZES}
    warmup = {patch: draw(WARMUP, patch) for patch in SIZES}
    checks = {patch: draw(CHECKS, patch) for patch in SIZES}

    print(f"image: {path} ({size} x {size}, tiles {TILE_SIZE}, JPEG q{JPEG_QUALITY})")
    print(
        f"{count} patches of each size, {repeats} repeats, seed {args.seed}, "
        f"{len(os.sched_getaffinity(0))} CPUs"
    )
    for line in _thread_settings():
        print("  " + line)

    results: dict[str, dict[str, float]] = {}
    invalid: set[str] = set()
    for name in names:
        if name.startswith("digipath"):
            try:
                from digipath.io import ImageReader  # noqa: F401
            except ImportError as error:
                print(f"digipath: skipped, ImageReader is not importable ({error})")
                continue
        started = time.perf_counter()
        try:
            figures, problems = measure(
                name, str(path), positions, warmup, checks, repeats, args.seed
            )
        except RuntimeError as error:
            print(f"{name}: skipped, {error}")
            continue
        results[name] = figures
        summary = ", ".join(f"{key} {value:.0f}/s" for key, value in figures.items())
        print(f"{name}: {summary} ({time.perf_counter() - started:.1f} s)")
        for problem in problems:
            print(f"  WARNING {name} returns wrong pixels: {problem}")
        if problems:
            invalid.add(name)

    print()
    print(_table(results, invalid))
    if invalid:
        print(f"(!) wrong pixels, ratios left out: {', '.join(sorted(invalid))}")

    figures = {
        f"{key}_{name}_patches_per_s": round(value, 2)
        for name, values in results.items()
        for key, value in values.items()
    }
    ratios: dict[str, float | None] = {}
    for procs in (1, 2):
        for patch in SIZES:
            key = f"read{patch}_{procs}proc"
            for peer in PEERS:
                suffix = "" if procs == 1 else "_2proc"
                value = None
                if "digipath" in results and peer in results and not {"digipath", peer} & invalid:
                    value = round(results["digipath"][key] / results[peer][key], 3)
                ratios[f"read{patch}{suffix}_vs_{peer}"] = value
    print(json.dumps({"benchmark": "read_patches", "figures": figures, "ratios": ratios}))


if __name__ == "__main__":
    main()
