"""Cascade inference: coarse levels decide where the finer levels compute.

:func:`cascade_apply` runs one classifier per level (a :class:`~digipath.models.ModelBase`
such as ``levelnet``, trained on that level's patches), from the coarsest level to the finest:

1. the **coarsest** level computes every pixel (every tissue pixel with a mask);
2. each **finer** level resizes the previous level's output to its own shape and decides per
   pixel (:mod:`digipath.radhical.decisions`): forced positive when P(all-positive) >=
   ``upper``, computed when P(mixed) + P(all-positive) >= ``lower``, negative otherwise;
3. the computed pixels are classified by a fully convolutional pass of the level's network
   over the tiles that contain at least one of them
   (:func:`~digipath.inference.apply_network` with the decision map as its mask: the other
   tiles are never read), with its threads, batching and resumable strips;
4. the level's output is the network's probabilities at computed pixels, ``(0, 0, 1)`` at
   forced pixels, ``(1, 0, 0)`` elsewhere (uint8, 0-255, as the reference's PNGs);
5. at the **finest** level the result is ``P(positive) >= final`` at computed pixels, or
   forced; holes of at most ``fill_holes_um`` are filled.

Every map is a pyramidal TIFF streamed in bands of rows (memory does not grow with the slide);
the intermediate maps live in ``.<output name>.levels/`` beside the output and are removed
when the output is written (unless ``keep_levels``). A run interrupted at a level resumes there:
finished level maps are reused when the settings (models, thresholds, image, mask) are the
same. The :class:`CascadeReport` counts pixels and tiles computed per level, the compute saved
against the naive run (every pixel at the finest level) and the wall times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from digipath.inference.apply import apply_network
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
from digipath.training.progress import write_json

logger = logging.getLogger(__name__)

__all__ = ["CascadeReport", "LevelReport", "cascade_apply", "full_outputs"]

BAND = 512
"""Rows per band of the streamed passes (the writer's tile size)."""


@dataclass
class LevelReport:
    """What one level did. Pixel counts are at the level's own spacing."""

    spacing: float
    shape: tuple[int, int]
    pixels: int
    computed_pixels: int = 0
    forced_pixels: int = 0
    tiles: int = 0
    computed_tiles: int = 0
    tile_pixels: int = 0
    seconds: float = 0.0


@dataclass
class CascadeReport:
    """The cascade's result: per level (finest first), totals and the saving.

    ``compute_fraction`` is the computed pixels of all levels over the finest level's pixels
    (each level's network costs the same per pixel); ``tile_fraction`` the same with the pixels
    of the tiles actually run through the networks. ``compute_saved`` is ``1 -
    tile_fraction``: the share of the naive run's network work not done.
    """

    output: str
    levels: list[LevelReport] = field(default_factory=list)
    seconds: float = 0.0
    naive_pixels: int = 0
    positive_pixels: int = 0

    @property
    def compute_fraction(self) -> float:
        computed = sum(level.computed_pixels for level in self.levels)
        return computed / max(1, self.naive_pixels)

    @property
    def tile_fraction(self) -> float:
        computed = sum(level.tile_pixels for level in self.levels)
        return computed / max(1, self.naive_pixels)

    @property
    def compute_saved(self) -> float:
        return 1.0 - self.tile_fraction

    def to_dict(self) -> dict:
        """JSON form, with the derived fractions."""
        return {
            "output": self.output,
            "seconds": self.seconds,
            "naive pixels": self.naive_pixels,
            "positive pixels": self.positive_pixels,
            "compute fraction": self.compute_fraction,
            "tile fraction": self.tile_fraction,
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


def _signature(models, thresholds: Thresholds, image: str, mask, tiles, fill: float | None):
    weights = []
    for model in models:
        digest = hashlib.sha256()
        for parameter in model.module.parameters():
            digest.update(parameter.detach().cpu().numpy().tobytes())
        weights.append(digest.hexdigest())
    return {
        "image": os.path.abspath(image), "mask": None if mask is None else os.path.abspath(mask),
        "thresholds": thresholds.to_dict(), "weights": weights, "tiles": tiles,
        "fill holes": fill,
    }  # fmt: skip


def _prepare_folder(folder: Path, signature: dict) -> None:
    text = json.dumps(signature, sort_keys=True)
    meta = folder / "signature.json"
    if folder.exists() and (not meta.exists() or meta.read_text(encoding="utf-8") != text):
        logger.info("%s: settings changed, recomputing every level", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not meta.exists():
        meta.write_text(text, encoding="utf-8")


def cascade_apply(
    models: Sequence,
    image: str | os.PathLike[str],
    output: str | os.PathLike[str],
    thresholds: Thresholds,
    *,
    mask: str | os.PathLike[str] | None = None,
    tile_size: int | Sequence[int] = (128, 256),
    batch_size: int = 16,
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
        has 2 classes (negative, positive), the others 3 (negative, mixed, all-positive).
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
    tile_size
        Output pixels per tile side, one for every level or one per level (finest first; the
        last one repeats for the coarser levels): small tiles at the finest level follow the
        compute map closely. The input tiles are larger by the network's window.
    batch_size
        Tiles per forward pass.
    fill_holes_um
        Fill holes in the result whose bounding-box diagonal is at most this many µm
        (``None``: keep them).
    keep_levels
        Keep the per-level maps (decisions, probabilities) in ``.<output>.levels/``.
    overwrite
        Recompute an existing output.
    read_threads
        Threads reading tiles ahead of each network.
    tolerance
        Relative spacing tolerance.
    report
        Also write the report as JSON here.
    progress
        ``callback(level index, done tiles, total tiles)`` (levels are run coarsest first).

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
    sizes = [int(tile_size)] if isinstance(tile_size, int) else [int(t) for t in tile_size]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"tile_size must be positive pixels, got {tile_size!r}")
    sizes = (sizes + [sizes[-1]] * len(spacings))[: len(spacings)]
    result = CascadeReport(str(output))
    if output.exists() and not overwrite:
        logger.info("%s exists: not recomputed (use overwrite)", output)
        return result
    folder = output.parent / f".{output.name}.levels"
    _prepare_folder(
        folder,
        _signature(
            models,
            thresholds,
            os.fspath(image),
            None if mask is None else os.fspath(mask),
            tile_size,
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
        decisions = folder / f"level_{index}_decisions.tif"
        counts = folder / f"level_{index}_counts.json"
        if not (decisions.exists() and counts.exists()):
            computed, forced = _decide(
                decisions, shape, spacing, previous, shapes[index + 1] if previous else None,
                thresholds, index, mask, tolerance,
            )  # fmt: skip
            write_json(counts, {"computed": computed, "forced": forced})
        tally = json.loads(counts.read_text(encoding="utf-8"))
        level.computed_pixels, level.forced_pixels = tally["computed"], tally["forced"]
        network = folder / f"level_{index}_network.tif"
        model = models[index]
        window = model.module.input_size if hasattr(model.module, "input_size") else 0
        applied = apply_network(
            model, image, network, spacing=spacing, mask=decisions, mask_values=(COMPUTE,),
            tile_size=sizes[index] + max(0, window - 1), batch_size=batch_size, soft=True,
            quantize=True, read_threads=read_threads, tolerance=tolerance,
            progress=None if progress is None else (lambda d, t, i=index: progress(i, d, t)),
        )  # fmt: skip
        if applied.existed:  # finished by an interrupted run: its counts were saved
            tally = json.loads(counts.read_text(encoding="utf-8"))
        else:
            tally.update(tiles=applied.tiles, computed_tiles=applied.computed)
            write_json(counts, tally)
        level.tiles = tally.get("tiles", 0)
        level.computed_tiles = tally.get("computed_tiles", 0)
        level.tile_pixels = level.computed_tiles * sizes[index] ** 2
        combined = folder / f"level_{index}.tif"
        if index > 0:
            if not combined.exists():
                _combine(network, decisions, combined, shape, spacing)
            previous = combined
        else:
            result.positive_pixels = _finish(
                network, decisions, output, shape, spacing, thresholds.final, fill_holes_um,
                folder,
            )  # fmt: skip
        level.seconds = time.perf_counter() - level_started
        result.levels.insert(0, level)
        logger.info(
            "level %d (%.3g µm/px): %d of %d pixels computed, %d forced; %d of %d tiles; %.1f s",
            index, spacing, level.computed_pixels, level.pixels, level.forced_pixels,
            level.computed_tiles, level.tiles, level.seconds,
        )  # fmt: skip
    if not keep_levels:
        shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    if report is not None:
        write_json(report, result.to_dict())
    return result


def _decide(
    target: Path,
    shape: tuple[int, int],
    spacing: float,
    previous: Path | None,
    previous_shape: tuple[int, int] | None,
    thresholds: Thresholds,
    index: int,
    mask,
    tolerance: float,
) -> tuple[int, int]:
    """Write the level's decision map; return (computed, forced) pixel counts."""
    counts = [0, 0]
    source = ImageReader(previous) if previous is not None else None
    tissue = ImageReader(mask) if (mask is not None and previous is None) else None
    try:

        def produce(top: int, height: int) -> np.ndarray:
            if source is None:  # the coarsest level: every (tissue) pixel
                if tissue is None:
                    band = np.full((height, shape[1]), COMPUTE, np.uint8)
                else:
                    band = _mask_band(tissue, top, height, shape, spacing, tolerance)
                    band = np.where(band, COMPUTE, 0).astype(np.uint8)
            else:
                resized = resize_rows(
                    lambda t, h: _read_band(source, t, h), previous_shape, shape, top, top + height
                )
                band = decide(resized, thresholds.upper[index], thresholds.lower[index])
            counts[0] += int(np.count_nonzero(band == COMPUTE))
            counts[1] += int(np.count_nonzero(band == FORCED))
            return band

        _write_bands(target, shape, spacing, 1, produce)
    finally:
        for opened in (source, tissue):
            if opened is not None:
                opened.close()
    return counts[0], counts[1]


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


def _combine(network: Path, decisions: Path, target: Path, shape, spacing) -> None:
    """A coarse level's output map from its network output and decisions."""
    with ImageReader(network) as probabilities, ImageReader(decisions) as decided:
        _write_bands(
            target, shape, spacing, 3,
            lambda top, height: level_output(
                _read_band(probabilities, top, height), _read_band(decided, top, height)[..., 0]
            ),
            interpolation="mean",
        )  # fmt: skip


def _finish(network, decisions, output: Path, shape, spacing, threshold, fill_um, folder) -> int:
    """The finest level's binary result (holes filled); return its positive pixels."""
    from digipath.inference.postprocess import fill_holes

    positive = [0]

    def produce(top: int, height: int) -> np.ndarray:
        band = final_mask(
            _read_band(probabilities, top, height), _read_band(decided, top, height)[..., 0],
            threshold,
        ).astype(np.uint8)  # fmt: skip
        positive[0] += int(band.sum())
        return band

    binary = folder / "final.tif" if fill_um else output
    with ImageReader(network) as probabilities, ImageReader(decisions) as decided:
        _write_bands(binary, shape, spacing, 1, produce)
    if fill_um:
        fill_holes(binary, output, fill_um)
        with ImageReader(output) as reader:
            positive[0] = sum(
                int(_read_band(reader, top, min(BAND, shape[0] - top)).sum())
                for top in range(0, shape[0], BAND)
            )
    return positive[0]


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
