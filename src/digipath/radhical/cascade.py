"""Cascade inference: coarse levels decide where the finer levels compute.

:func:`cascade_apply` runs one classifier per level (a :class:`~digipath.models.ModelBase`
such as ``levelnet``, trained on that level's patches), from the coarsest level to the finest,
each level in bands of rows:

1. the **coarsest** level computes every pixel (every tissue pixel with a mask);
2. each **finer** level resizes the previous level's output to its own shape and decides per
   pixel (:mod:`digipath.radhical.decisions`): forced positive when P(all-positive) >=
   ``upper``, computed when P(mixed) + P(all-positive) >= ``lower``, negative otherwise;
3. the computed pixels are covered by rectangles of small cells and the level's network runs
   as a fully convolutional pass over each rectangle (:mod:`digipath.radhical.sparse`; the
   image outside them is never read), with regions read ahead by threads;
4. the level's output is the network's probabilities at computed pixels, ``(0, 0, 1)`` at
   forced pixels, ``(1, 0, 0)`` elsewhere (uint8, 0-255, as the reference's PNGs);
5. at the **finest** level the result is ``P(positive) >= final`` at computed pixels, or
   forced; holes of at most ``fill_holes_um`` are filled.

Every map is a pyramidal TIFF streamed in bands of rows (memory does not grow with the slide);
the intermediate maps live in ``.<output name>.levels/`` beside the output and are removed
when the output is written (unless ``keep_levels``). An interrupted run resumes where it
stopped: finished levels and the finished bands of the current level are kept while the
settings (models, thresholds, image, mask) are the same. The :class:`CascadeReport` counts
pixels computed, regions and the input pixels the networks read per level, the compute saved
against the naive run (every pixel at the finest level) and the wall times.

:func:`full_outputs` computes every level at every pixel (with
:func:`~digipath.inference.apply_network`) for the threshold search on validation slides.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from digipath.inference.apply import apply_network
from digipath.inference.partial import signed_folder, weights_digest
from digipath.io import ImageReader, ImageWriter
from digipath.radhical.decisions import (
    COMPUTE,
    FORCED,
    Thresholds,
    decide,
    final_mask,
    level_output,
    resize_rows,
)
from digipath.radhical.sparse import RegionClassifier, compute_regions
from digipath.training.progress import write_json

logger = logging.getLogger(__name__)

__all__ = ["CascadeReport", "LevelReport", "cascade_apply", "full_outputs"]

BAND = 512
"""Rows per band of the streamed passes (the writer's tile size)."""


@dataclass
class LevelReport:
    """What one level did. Pixel counts are at the level's own spacing.

    ``network_pixels`` counts the input pixels the network read (the computed regions with
    their window margins): the network's actual work.
    """

    spacing: float
    shape: tuple[int, int]
    pixels: int
    computed_pixels: int = 0
    forced_pixels: int = 0
    regions: int = 0
    network_pixels: int = 0
    seconds: float = 0.0


@dataclass
class CascadeReport:
    """The cascade's result: per level (finest first), totals and the saving.

    ``compute_fraction`` is the computed pixels of all levels over the finest level's pixels
    (each level's network costs the same per pixel); ``network_fraction`` the same with the
    input pixels the networks read (margins included). ``compute_saved`` is ``1 -
    network_fraction / naive``, where the naive run reads every finest pixel plus the margins
    of ``max_region``-sized regions.
    """

    output: str
    levels: list[LevelReport] = field(default_factory=list)
    seconds: float = 0.0
    naive_pixels: int = 0
    naive_network_pixels: int = 0
    positive_pixels: int = 0

    @property
    def compute_fraction(self) -> float:
        computed = sum(level.computed_pixels for level in self.levels)
        return computed / max(1, self.naive_pixels)

    @property
    def network_fraction(self) -> float:
        computed = sum(level.network_pixels for level in self.levels)
        return computed / max(1, self.naive_pixels)

    @property
    def compute_saved(self) -> float:
        computed = sum(level.network_pixels for level in self.levels)
        return 1.0 - computed / max(1, self.naive_network_pixels)

    def to_dict(self) -> dict:
        """JSON form, with the derived fractions."""
        return {
            "output": self.output,
            "seconds": self.seconds,
            "naive pixels": self.naive_pixels,
            "naive network pixels": self.naive_network_pixels,
            "positive pixels": self.positive_pixels,
            "compute fraction": self.compute_fraction,
            "network fraction": self.network_fraction,
            "compute saved": self.compute_saved,
            "levels": [asdict(level) for level in self.levels],
        }


def _write_bands(
    path: Path,
    shape: tuple[int, int],
    spacing: float,
    channels: int,
    produce: Callable[[int, int], np.ndarray],
    interpolation: str = "nearest",
) -> None:
    """Write a uint8 map ``produce(top, height)`` band by band (written, then renamed)."""
    rows, cols = shape
    with ImageWriter(path, shape, spacing=spacing, dtype=np.uint8, channels=channels,
                     compression="lzw", interpolation=interpolation) as writer:  # fmt: skip
        for top in range(0, rows, BAND):
            height = min(BAND, rows - top)
            band = produce(top, height)
            if band.ndim == 2:
                band = band[:, :, None]
            for col in range(0, cols, BAND):
                writer.write(np.ascontiguousarray(band[:, col : col + BAND]), top, col)


def _read_band(reader: ImageReader, top: int, height: int) -> np.ndarray:
    """Rows ``[top, top + height)`` of a map's level 0, all columns."""
    spacing = reader.spacings[0]
    return reader.read(spacing, top, 0, height, reader.shapes[0][1], interpolation="nearest")


def _signature(models, thresholds: Thresholds, image: str, mask, regions, fill: float | None):
    weights = [weights_digest(model.module) for model in models]
    return {
        "image": os.path.abspath(image), "mask": None if mask is None else os.path.abspath(mask),
        "thresholds": thresholds.to_dict(), "weights": weights, "regions": regions,
        "fill holes": fill,
    }  # fmt: skip


def cascade_apply(
    models: Sequence,
    image: str | os.PathLike[str],
    output: str | os.PathLike[str],
    thresholds: Thresholds,
    *,
    mask: str | os.PathLike[str] | None = None,
    cell: int = 32,
    max_region: int = 512,
    fill_holes_um: float | None = 20.0,
    keep_levels: bool = False,
    overwrite: bool = False,
    read_threads: int = 2,
    tolerance: float = 0.25,
    report: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> CascadeReport:
    """Run the RADHicaL cascade on a slide and write the binary result as a pyramidal TIFF.

    Parameters
    ----------
    models
        One built model per level, finest first (the spacings of ``thresholds``); the finest
        has 2 classes (negative, positive), the others 3 (negative, mixed, all-positive). Each
        network must keep the resolution with a fixed window (``levelnet``).
    image
        The slide.
    output
        The result: uint8 0/1 at the finest spacing.
    thresholds
        Level spacings (µm/px, finest first) and thresholds
        (:class:`~digipath.radhical.decisions.Thresholds`; e.g. from ``digipath radhical
        tune``). A single level is the naive run: every pixel at that spacing.
    mask
        Optional tissue mask: the coarsest level computes only its pixels (> 0).
    cell, max_region
        The pixels to compute are covered by rectangles of ``cell``-pixel cells, at most
        ``max_region`` pixels a side (:func:`~digipath.radhical.sparse.compute_regions`);
        the network runs once per rectangle.
    fill_holes_um
        Fill holes in the result whose bounding-box diagonal is at most this many µm
        (``None``: keep them).
    keep_levels
        Keep the per-level maps (decisions, outputs) in ``.<output>.levels/``.
    overwrite
        Recompute an existing output.
    read_threads
        Threads reading regions ahead of the network.
    tolerance
        Relative spacing tolerance.
    report
        Also write the report as JSON here.
    progress
        ``callback(level index, done bands, total bands)`` (levels run coarsest first).

    Returns
    -------
    CascadeReport
    """
    started = time.perf_counter()
    output = Path(output)
    spacings = list(thresholds.spacings)
    if len(models) != len(spacings):
        raise ValueError(
            f"{len(spacings)} levels ({spacings} µm/px) need {len(spacings)} models, got "
            f"{len(models)}"
        )
    for index, model in enumerate(models):
        expected = 2 if index == 0 else 3
        if model.classes != expected:
            raise ValueError(
                f"level {index} ({spacings[index]} µm/px): expected a {expected}-class model, "
                f"got {model.classes} classes"
            )
    result = CascadeReport(str(output))
    if output.exists() and not overwrite:
        logger.info("%s exists: not recomputed (use overwrite)", output)
        return result
    folder = output.parent / f".{output.name}.levels"
    signed_folder(
        folder,
        _signature(
            models,
            thresholds,
            os.fspath(image),
            None if mask is None else os.fspath(mask),
            [cell, max_region],
            fill_holes_um,
        ),
    )
    with ImageReader(image) as reader:
        shapes = [reader.shape(s, tolerance) for s in spacings]
        actual = [reader.refine(s, tolerance) for s in spacings]
        result.naive_pixels = shapes[0][0] * shapes[0][1]
        previous: Path | None = None
        for index in range(len(spacings) - 1, -1, -1):
            level_started = time.perf_counter()
            shape, spacing = shapes[index], actual[index]
            level = LevelReport(spacing, shape, shape[0] * shape[1])
            classifier = RegionClassifier(models[index], reader, spacing, tolerance=tolerance)
            if index == 0:
                everything = [
                    (t, min(t + BAND, shape[0]), 0, shape[1]) for t in range(0, shape[0], BAND)
                ]
                result.naive_network_pixels = sum(
                    classifier.margin_pixels(r1 - r0, c1 - c0)
                    for t0, t1, _, w in everything
                    for r0, r1, c0, c1 in compute_regions(
                        np.ones((t1 - t0, w), bool), cell, max_region
                    )
                )
            target = folder / f"level_{index}.tif" if index > 0 else folder / "final.tif"
            counts = folder / f"level_{index}_counts.json"
            if not (target.exists() and counts.exists()):
                tally = _run_level(
                    index, classifier, target, shape, spacing, folder, previous,
                    shapes[index + 1] if previous is not None else None, thresholds, mask,
                    tolerance, cell, max_region, read_threads, keep_levels, progress,
                )  # fmt: skip
                write_json(counts, tally)
            tally = json.loads(counts.read_text(encoding="utf-8"))
            level.computed_pixels, level.forced_pixels = tally["computed"], tally["forced"]
            level.regions, level.network_pixels = tally["regions"], tally["network pixels"]
            previous = target
            level.seconds = time.perf_counter() - level_started
            result.levels.insert(0, level)
            logger.info(
                "level %d (%.3g µm/px): %d of %d pixels computed, %d forced; %d regions; "
                "%.1f s", index, spacing, level.computed_pixels, level.pixels,
                level.forced_pixels, level.regions, level.seconds,
            )  # fmt: skip
    result.positive_pixels = _finish(previous, output, shapes[0], actual[0], fill_holes_um)
    if not keep_levels:
        shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    if report is not None:
        write_json(report, result.to_dict())
    return result


def _run_level(
    index: int,
    classifier: RegionClassifier,
    target: Path,
    shape: tuple[int, int],
    spacing: float,
    folder: Path,
    previous: Path | None,
    previous_shape: tuple[int, int] | None,
    thresholds: Thresholds,
    mask,
    tolerance: float,
    cell: int,
    max_region: int,
    read_threads: int,
    keep_levels: bool,
    progress,
) -> dict:
    """One level in bands: decide, classify the regions to compute, write the level map.

    Every finished band is saved in ``folder`` (``level_<index>_band_<k>.npz``), so an
    interrupted level resumes at its first missing band.
    """
    tally = {"computed": 0, "forced": 0, "regions": 0, "network pixels": 0}
    source = ImageReader(previous) if previous is not None else None
    tissue = ImageReader(mask) if (mask is not None and previous is None) else None
    pool = ThreadPoolExecutor(max(1, read_threads), thread_name_prefix="digipath-regions")
    bands = -(-shape[0] // BAND)
    classes = classifier.model.classes

    def decisions_of(top: int, height: int) -> np.ndarray:
        if source is None:  # the coarsest level: every (tissue) pixel
            if tissue is None:
                return np.full((height, shape[1]), COMPUTE, np.uint8)
            band = _mask_band(tissue, top, height, shape, spacing, tolerance)
            return np.where(band, COMPUTE, 0).astype(np.uint8)
        resized = resize_rows(
            lambda t, h: _read_band(source, t, h), previous_shape, shape, top, top + height
        )
        return decide(resized, thresholds.upper[index], thresholds.lower[index])

    def produce(top: int, height: int) -> np.ndarray:
        checkpoint = folder / f"level_{index}_band_{top // BAND:06d}.npz"
        if checkpoint.exists():
            saved = np.load(checkpoint)
            band, counts = saved["band"], saved["counts"]
            if index == 0:  # saved as bits
                band = np.unpackbits(band, count=height * shape[1]).reshape(height, shape[1])
        else:
            decisions = decisions_of(top, height)
            regions = compute_regions(decisions == COMPUTE, cell, max_region)
            probabilities = np.zeros((height, shape[1], classes), np.uint8)
            # the image is read once per block of columns that holds regions (JPEG tiles are
            # decoded once), a few blocks ahead of the network
            width = max(cell, (max_region // cell) * cell)
            blocks: dict[int, list] = {}
            for region in regions:
                blocks.setdefault(region[2] // width, []).append(region)
            order = sorted(blocks)
            futures = deque()

            def submit(block: int) -> None:
                left = block * width
                futures.append((block, pool.submit(
                    classifier.read, top, left, height, min(width, shape[1] - left)
                )))  # fmt: skip

            pending = iter(order)
            for block in itertools.islice(pending, max(1, read_threads)):
                submit(block)
            work = 0
            while futures:
                block, future = futures.popleft()
                following = next(pending, None)
                if following is not None:
                    submit(following)
                prepared = future.result()
                left = block * width
                for r0, r1, c0, c1 in blocks[block]:
                    region = classifier.cut(prepared, (r0, r1), (c0 - left, c1 - left))
                    probabilities[r0:r1, c0:c1] = classifier.classify(region)
                    work += classifier.margin_pixels(r1 - r0, c1 - c0)
            if index > 0:
                band = level_output(probabilities, decisions)
            else:
                band = final_mask(probabilities, decisions, thresholds.final).astype(np.uint8)
            counts = np.array([
                np.count_nonzero(decisions == COMPUTE), np.count_nonzero(decisions == FORCED),
                len(regions), work,
            ], np.int64)  # fmt: skip
            temporary = checkpoint.with_name(f".{checkpoint.stem}.tmp.npz")
            saved = {"band": np.packbits(band) if index == 0 else band, "counts": counts}
            if keep_levels:
                saved["decisions"] = decisions
            np.savez(temporary, **saved)
            os.replace(temporary, checkpoint)
        for key, value in zip(tally, counts.tolist(), strict=True):
            tally[key] += int(value)
        if progress is not None:
            progress(index, top // BAND + 1, bands)
        return band

    try:
        _write_bands(target, shape, spacing, 3 if index > 0 else 1, produce,
                     interpolation="mean" if index > 0 else "nearest")  # fmt: skip
        if keep_levels:
            _write_bands(
                folder / f"level_{index}_decisions.tif", shape, spacing, 1,
                lambda top, height: np.load(
                    folder / f"level_{index}_band_{top // BAND:06d}.npz"
                )["decisions"],
            )  # fmt: skip
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for opened in (source, tissue):
            if opened is not None:
                opened.close()
    for k in range(bands):
        (folder / f"level_{index}_band_{k:06d}.npz").unlink(missing_ok=True)
    return tally


def _naive_work(classifier: RegionClassifier, shape, cell: int, max_region: int) -> int:
    """Input pixels the network reads when every pixel of the level is computed."""
    work = 0
    for top in range(0, shape[0], BAND):
        height = min(BAND, shape[0] - top)
        for r0, r1, c0, c1 in compute_regions(np.ones((height, shape[1]), bool), cell, max_region):
            work += classifier.margin_pixels(r1 - r0, c1 - c0)
    return work


def _mask_band(tissue: ImageReader, top, height, shape, spacing, tolerance) -> np.ndarray:
    """The tissue mask over level rows ``[top, top + height)`` (nearest), as bool."""
    spacings = [s for s in tissue.spacings if s is not None]
    if not spacings:
        raise ValueError(f"{tissue.path}: the mask states no pixel spacing")
    coarser = [s for s in spacings if s >= spacing * (1 - tolerance)]
    mask_spacing = tissue.refine(min(coarser) if coarser else max(spacings), tolerance)
    rows, cols = tissue.shape(mask_spacing, tolerance)
    row_index = np.minimum(((np.arange(top, top + height) + 0.5) * rows / shape[0]).astype(int),
                           rows - 1)  # fmt: skip
    col_index = np.minimum(((np.arange(shape[1]) + 0.5) * cols / shape[1]).astype(int), cols - 1)
    first, last = int(row_index[0]), int(row_index[-1]) + 1
    region = tissue.read(mask_spacing, first, 0, last - first, cols, fill=0,
                         interpolation="nearest")[..., 0]  # fmt: skip
    return region[row_index - first][:, col_index] > 0


def _finish(binary: Path, output: Path, shape, spacing, fill_um) -> int:
    """Fill the holes of the finest level's binary map into ``output``; its positive pixels."""
    from digipath.inference.postprocess import fill_holes

    if fill_um:
        fill_holes(binary, output, fill_um)
    else:
        shutil.copyfile(binary, output)
    with ImageReader(output) as reader:
        return sum(
            int(_read_band(reader, top, min(BAND, shape[0] - top)).sum())
            for top in range(0, shape[0], BAND)
        )


def full_outputs(
    models: Sequence,
    image: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    spacings: Sequence[float],
    *,
    mask: str | os.PathLike[str] | None = None,
    tile_size: int = 256,
    batch_size: int = 16,
    read_threads: int = 2,
    tolerance: float = 0.25,
    overwrite: bool = False,
) -> list[Path]:
    """Every level's probabilities at every pixel, for threshold tuning on validation slides.

    Writes ``<folder>/<image stem>_level_<index>.tif`` (uint8 soft maps, finest first: 2
    channels at the finest level, 3 elsewhere) and returns their paths. ``mask`` restricts
    the computation to tissue (0 outside it).
    """
    if len(models) != len(spacings):
        raise ValueError(f"{len(spacings)} levels need {len(spacings)} models, got {len(models)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(image).name.split(".")[0]
    paths = []
    for index, (model, spacing) in enumerate(zip(models, spacings, strict=True)):
        window = model.module.input_size if hasattr(model.module, "input_size") else 0
        path = folder / f"{stem}_level_{index}.tif"
        apply_network(
            model, image, path, spacing=spacing, mask=mask, soft=True, quantize=True,
            tile_size=tile_size + max(0, window - 1), batch_size=batch_size,
            read_threads=read_threads, tolerance=tolerance, overwrite=overwrite,
        )  # fmt: skip
        paths.append(path)
    return paths
