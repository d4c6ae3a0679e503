"""HoVer-Net inference: one image (tile mode) or a whole slide (WSI mode) -> nuclei.

**Tile mode** (:func:`segment_tile`, the original's ``tile`` mode, reference notes §2.7): the
image is padded by the network's border ``b = (input - output) / 2`` (95 px ``original``, 46 px
``fast``) on the top and left, and on the bottom and right by ``b`` plus what rounds it up to a
whole number of outputs; windows of the input size are taken at a stride of the output size,
so the valid outputs abut exactly (no overlap, no blending). The NP, HV and TP maps are
stitched into maps of the image's size and post-processed once
(:func:`~digipath.nuclei.postprocess.postprocess`). Padding is a mirror (``"reflect"``, as the
original) or a constant ``fill``.

**WSI mode** (:func:`segment_slide`): the slide is cut into a grid of *cores* of
``tile_size`` x ``tile_size`` pixels at the processing spacing. Each core is computed with a
``margin`` of real slide around it (clipped at the slide's edges) -- and the network's border
``b`` around that, read from the slide -- and post-processed as one tile. A nucleus found in a
tile is kept only when its centroid lies in the tile's core. The cores partition the slide, so
every centroid lies in exactly one core: a nucleus is owned by exactly one tile.

Why this and not the original's three phases (grid tiles, then seam strips re-processed, then
junction squares; TIAToolbox does the same with removal flags): if every nucleus is smaller
than the margin (its pixels within ``margin`` of its centroid), then

* a nucleus whose centroid is in a core lies wholly inside that tile's computed region, away
  from its cut edges, so the tile segments it from full context: it is not lost, and not cut;
* a nucleus cut by the region's edge has all its pixels in the margin band, so its (truncated)
  centroid is in the band, outside the core: the cut copy is always discarded, the whole copy
  is kept by the tile that owns it, so nothing is doubled.

One pass, no re-processing of seams, no bookkeeping of ids across tiles, and tiles are
independent (they could run in parallel and in any order). The cost is the margin's overlap,
``((T + 2M) / T)**2 - 1`` extra post-processing (and network) work: 27 % for T = 2048, M = 128,
against the original's strips and squares (about 13 %) plus its full-slide memmaps. The
post-processing normalises the HV maps and takes gradients tile-wise; the margin also keeps
those effects (the Sobel kernel, 21 px at 40x) away from the core.

Memory is bounded by one tile's maps (plus one tile read ahead) and one tile row's nuclei: the
nuclei of every finished tile row are saved under ``.<output name>.partial/`` beside the
output, so an interrupted run resumes at the first unfinished row (the partial results are
discarded when the settings change). When every row is done, the rows are streamed to the
writers (:class:`~digipath.nuclei.export.GeoJSONStream`,
:class:`~digipath.nuclei.export.HoverNetJSONStream`,
:class:`~digipath.nuclei.export.LabelTiffStream`) and the partial folder is removed.

The label TIFF (format ``"tiff"``) is painted from those saved rows too, so a resumed run
gives the same file: each nucleus gets the id the hover_net JSON gives it (1, 2, ... in
tile-row order) and its filled contour is painted into a band buffer. A tile row's nuclei lie
in its computed region, so once row ``r`` is painted, the rows above ``(r + 1) * tile_size -
margin`` are final; the complete 512-row blocks among them are written out and dropped. The
buffer holds about ``tile_size + 2 * margin + 512`` slide-wide rows of uint32.

A tissue mask skips the tiles whose core holds no mask pixel.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digipath.inference.partial import PartialResults, weights_digest
from digipath.nuclei.io import NucleiError, TypeInfo
from digipath.nuclei.postprocess import (
    ORIGINAL_SPACING,
    Nuclei,
    PostProcessParameters,
    postprocess,
)
from digipath.nuclei.targets import HOVERNET_GEOMETRY

__all__ = [
    "FORMATS",
    "PADDINGS",
    "SlideResult",
    "predict_maps",
    "segment_slide",
    "segment_tile",
]

logger = logging.getLogger(__name__)

PADDINGS = ("reflect", "constant")
FORMATS = ("geojson", "json", "tiff")
"""Outputs of :func:`segment_slide` (the overlay is a tile-mode output)."""
_SUFFIXES = {"geojson": ".geojson", "json": ".json", "tiff": "_labels.tif"}
"""Output name endings: ``<output>_labels.tif`` never replaces a slide named ``<output>.tif``."""


# --------------------------------------------------------------------------------------------
# Network geometry and forward passes


def _geometry(model, mode: str | None) -> tuple[int, int]:
    """``(input, output)`` window sides in pixels for ``model`` (or the named ``mode``)."""
    mode = mode if mode is not None else getattr(model, "mode", None)
    if mode not in HOVERNET_GEOMETRY:
        raise NucleiError(
            f"mode must be one of {', '.join(HOVERNET_GEOMETRY)} (the model's HoVer-Net mode), "
            f"got {mode!r}"
        )
    (size, _), (out, _) = HOVERNET_GEOMETRY[mode]
    info = getattr(model, "reconstruction_info", None)
    if callable(info):
        rows, cols = info((size, size)).output_shape
        if rows != cols:
            raise NucleiError(f"the model gives non-square outputs {rows} x {cols}")
        out = int(rows)
    if (size - out) % 2:
        raise NucleiError(f"input {size} and output {out} differ by an odd number of pixels")
    return size, out


def _check_image(image: object) -> np.ndarray:
    data = np.asarray(image)
    if data.ndim != 3 or data.shape[2] != 3 or data.dtype != np.uint8:
        raise NucleiError(
            f"image: expected (rows, cols, 3) uint8 RGB, got {data.dtype} {data.shape}"
        )
    if min(data.shape[:2]) < 1:
        raise NucleiError(f"image: empty image of shape {data.shape}")
    return data


def _maps_of_padded(
    model, padded: np.ndarray, size: int, out: int, batch_size: int, normalise
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """NP, HV and TP labels of an input that holds ``b`` context around a whole number of
    outputs: ``padded`` is ``(n_r * out + 2b, n_c * out + 2b, 3)``."""
    from digipath.data.batch_generator import to_channels_first

    border = (size - out) // 2
    n_r = (padded.shape[0] - 2 * border) // out
    n_c = (padded.shape[1] - 2 * border) // out
    prob = np.zeros((n_r * out, n_c * out), np.float32)
    hv = np.zeros((2, n_r * out, n_c * out), np.float32)
    tp: np.ndarray | None = None
    positions = [(i, j) for i in range(n_r) for j in range(n_c)]
    for start in range(0, len(positions), batch_size):
        group = positions[start : start + batch_size]
        batch = np.stack(
            [padded[i * out : i * out + size, j * out : j * out + size] for i, j in group]
        )
        inputs = np.ascontiguousarray(normalise(to_channels_first(batch)), dtype=np.float32)
        result = model.predict(inputs)
        for k, (i, j) in enumerate(group):
            window = (slice(i * out, (i + 1) * out), slice(j * out, (j + 1) * out))
            prob[window] = result["np"][k, 1]
            hv[(slice(None), *window)] = result["hv"][k]
            if "tp" in result:
                if tp is None:
                    tp = np.zeros(prob.shape, np.int32)
                tp[window] = np.argmax(result["tp"][k], axis=0)
    return prob, hv, tp


def _pad(image: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], padding: str, fill):
    if padding == "constant":
        return np.pad(image, (*pads, (0, 0)), mode="constant", constant_values=fill)
    mode = "reflect" if min(image.shape[:2]) > 1 else "edge"
    return np.pad(image, (*pads, (0, 0)), mode=mode)


def predict_maps(
    model,
    image: np.ndarray,
    *,
    mode: str | None = None,
    batch_size: int = 8,
    padding: str = "reflect",
    fill: int = 255,
    normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The stitched HoVer-Net maps of an image (see the module notes, tile mode).

    Parameters
    ----------
    model
        A :class:`~digipath.models.hovernet_model.HoVerNetModel` (or any object with
        ``predict(x)`` -> ``{"np", "hv"[, "tp"]}`` channel-first maps and a ``mode``).
    image
        ``(rows, cols, 3)`` uint8 RGB.
    mode
        ``"original"`` (270 -> 80) or ``"fast"`` (256 -> 164); default the model's.
    batch_size
        Windows per forward pass.
    padding, fill
        Outside the image: a mirror (``"reflect"``) or the constant ``fill``.
    normalizer
        Applied to the uint8 ``(N, 3, H, W)`` windows (default: the model file's, else x / 255).

    Returns
    -------
    dict of str to numpy.ndarray
        ``"np"``: ``(rows, cols)`` float32 nucleus probability; ``"hv"``: ``(2, rows, cols)``
        float32; ``"tp"`` (with a TP branch): ``(rows, cols)`` int32 type labels (argmax).
    """
    from digipath.inference.apply import _normalizer

    data = _check_image(image)
    _check_options(batch_size, padding)
    size, out = _geometry(model, mode)
    border = (size - out) // 2
    rows, cols = data.shape[:2]
    n_r, n_c = math.ceil(rows / out), math.ceil(cols / out)
    pads = ((border, n_r * out - rows + border), (border, n_c * out - cols + border))
    padded = _pad(data, pads, padding, fill)
    prob, hv, tp = _maps_of_padded(
        model, padded, size, out, batch_size, _normalizer(model, normalizer)
    )
    maps = {"np": prob[:rows, :cols], "hv": hv[:, :rows, :cols]}
    if tp is not None:
        maps["tp"] = tp[:rows, :cols]
    return maps


def _check_options(batch_size: int, padding: str) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise NucleiError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if padding not in PADDINGS:
        raise NucleiError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")


def segment_tile(
    model,
    image: np.ndarray,
    *,
    mode: str | None = None,
    batch_size: int = 8,
    scale: float | None = None,
    spacing: float | None = None,
    parameters: PostProcessParameters | None = None,
    padding: str = "reflect",
    fill: int = 255,
    normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Nuclei:
    """Segment the nuclei of one image (tile mode): :func:`predict_maps`, then one
    :func:`~digipath.nuclei.postprocess.postprocess` of the whole image.

    Parameters
    ----------
    model, image, mode, batch_size, padding, fill, normalizer
        See :func:`predict_maps`.
    scale, spacing, parameters
        At most one, for the post-processing: the image's pixel density relative to 0.25 µm/px,
        its spacing in µm/px, or explicit parameters (default: the original's 40x constants).

    Returns
    -------
    Nuclei
        In the image's pixels (centroids and contours ``(x, y)``).
    """
    maps = predict_maps(
        model,
        image,
        mode=mode,
        batch_size=batch_size,
        padding=padding,
        fill=fill,
        normalizer=normalizer,
    )
    return postprocess(
        maps["np"],
        maps["hv"],
        maps.get("tp"),
        scale=scale,
        spacing=spacing,
        parameters=parameters,
        channels_last=False,
    )


# --------------------------------------------------------------------------------------------
# Whole slides


@dataclass
class SlideResult:
    """What :func:`segment_slide` did for one slide.

    Attributes
    ----------
    outputs
        ``{format: path}`` of the files written (or found, when ``existed``).
    shape
        ``(rows, cols)`` of the slide at the processing spacing.
    spacing
        The processing spacing actually read, µm/px.
    nuclei
        Nuclei written.
    tiles, computed, skipped
        Tiles in the grid; computed; skipped by the mask.
    rows_reused
        Tile rows taken from an interrupted run's partial results.
    seconds
        Wall time.
    existed
        Every output existed and nothing was computed (no ``overwrite``).
    """

    outputs: dict[str, str]
    shape: tuple[int, int]
    spacing: float
    nuclei: int = 0
    tiles: int = 0
    computed: int = 0
    skipped: int = 0
    rows_reused: int = 0
    seconds: float = 0.0
    existed: bool = False
    per_row: list[int] = field(default_factory=list, repr=False)


def _model_signature(model) -> dict[str, Any]:
    signature: dict[str, Any] = {
        "model": type(model).__name__,
        "mode": getattr(model, "mode", None),
    }
    module = getattr(model, "module", None)
    if module is not None and hasattr(module, "parameters"):
        signature["weights"] = weights_digest(module)
    elif hasattr(model, "signature"):
        signature["weights"] = str(model.signature)
    return signature


def _read_region(reader, spacing, top, left, height, width, padding, fill, tolerance):
    """``height`` x ``width`` pixels at ``(top, left)``, outside the slide padded."""
    if padding == "constant":
        return reader.read(spacing, top, left, height, width, fill=fill, tolerance=tolerance)
    rows, cols = reader.shape(spacing, tolerance)
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(rows, top + height), min(cols, left + width)
    inner = reader.read(spacing, r0, c0, r1 - r0, c1 - c0, tolerance=tolerance)
    pads = ((r0 - top, top + height - r1), (c0 - left, left + width - c1))
    return _pad(inner, pads, padding, fill)[:height, :width]


def segment_slide(
    model,
    slide,
    output: str | os.PathLike[str],
    *,
    spacing: float,
    mask=None,
    mask_values: Sequence[int] | None = None,
    tile_size: int = 2048,
    margin: int = 128,
    formats: Iterable[str] = ("geojson",),
    type_info: TypeInfo | Mapping | str | os.PathLike[str] | None = None,
    mode: str | None = None,
    batch_size: int = 8,
    scale: float | None = None,
    parameters: PostProcessParameters | None = None,
    padding: str = "reflect",
    fill: int = 255,
    normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
    tolerance: float = 0.25,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SlideResult:
    """Segment the nuclei of a whole slide, tile by tile (see the module notes, WSI mode).

    Parameters
    ----------
    model
        As :func:`predict_maps`.
    slide
        The slide: a path or an open :class:`~digipath.io.ImageReader`.
    output
        The output path without (or with any) suffix: ``<output>.geojson``,
        ``<output>.json`` and/or ``<output>.tif`` are written, per ``formats``.
    spacing
        Processing spacing in µm/px (the level read; 0.25 for 40x models).
    mask, mask_values
        Optional tissue mask (path or reader, any spacing): tiles whose core holds no mask
        pixel (> 0, or one of ``mask_values``) are skipped.
    tile_size
        Side of a tile's core in pixels at ``spacing``.
    margin
        Context around each core in pixels; must exceed the largest nucleus's extent from its
        centroid (128 px, 32 µm at 40x, by default).
    formats
        ``"geojson"`` (QuPath detections, level-0 coordinates), ``"json"`` (the original
        hover_net layout, processing pixels, ``mag = 10 / spacing``) and/or ``"tiff"`` (a
        pyramidal uint32 instance-label TIFF at the processing spacing, the filled contours
        numbered as in the JSON). ``"overlay"`` is refused: it is a tile-mode output.
    type_info
        Type names and colours for the GeoJSON.
    mode, batch_size, padding, fill, normalizer
        As :func:`predict_maps` (padding applies outside the slide).
    scale, parameters
        Post-processing constants (default: those for ``spacing``, see
        :meth:`~digipath.nuclei.postprocess.PostProcessParameters.for_spacing`).
    tolerance
        Relative spacing tolerance.
    overwrite
        Recompute when every output exists.
    progress
        ``callback(done, total)`` after each tile.

    Returns
    -------
    SlideResult
    """
    from digipath.io import ImageReader

    started = time.perf_counter()
    owned = []
    if not isinstance(slide, ImageReader):
        slide = ImageReader(slide)
        owned.append(slide)
    if mask is not None and not isinstance(mask, ImageReader):
        mask = ImageReader(mask)
        owned.append(mask)
    try:
        return _segment_slide(
            model,
            slide,
            Path(output),
            spacing,
            mask,
            mask_values,
            tile_size,
            margin,
            formats,
            type_info,
            mode,
            batch_size,
            scale,
            parameters,
            padding,
            fill,
            normalizer,
            tolerance,
            overwrite,
            progress,
            started,
        )
    finally:
        for reader in owned:
            reader.close()


def _segment_slide(
    model,
    reader,
    output,
    spacing,
    mask,
    mask_values,
    tile_size,
    margin,
    formats,
    type_info,
    mode,
    batch_size,
    scale,
    parameters,
    padding,
    fill,
    normalizer,
    tolerance,
    overwrite,
    progress,
    started,
) -> SlideResult:
    from digipath.inference.apply import _mask_reader, _normalizer, _read_mask
    from digipath.nuclei.export import (
        GeoJSONStream,
        HoverNetJSONStream,
        LabelTiffStream,
        _type_info,
    )

    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise NucleiError(
            f"formats must be among {', '.join(FORMATS)} in WSI mode, got "
            f"{formats!r} (the overlay is a tile-mode output: a slide-wide PNG is not useful)"
        )
    for name, value, low in (("tile_size", tile_size, 1), ("margin", margin, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise NucleiError(f"{name} must be an integer >= {low} pixels, got {value!r}")
    _check_options(batch_size, padding)
    size, out = _geometry(model, mode)
    border = (size - out) // 2
    info = None if type_info is None else _type_info(type_info)
    actual = reader.refine(spacing, tolerance)
    rows, cols = reader.shape(spacing, tolerance)
    if parameters is None:
        parameters = (
            PostProcessParameters.scaled(scale)
            if scale is not None
            else PostProcessParameters.for_spacing(actual)
        )
    elif scale is not None:
        raise NucleiError("give scale or parameters, not both")
    level0 = reader.spacings[0]
    downsample = actual / level0 if level0 else 1.0
    paths = {f: str(output.with_suffix("")) + _SUFFIXES[f] for f in formats}
    source = os.path.abspath(reader.path)
    if any(os.path.abspath(path) == source for path in paths.values()):
        raise NucleiError(f"{output}: an output would replace the slide {reader.path}")
    result = SlideResult(paths, (rows, cols), actual)
    if not overwrite and all(os.path.exists(p) for p in paths.values()):
        result.existed = True
        logger.info("%s: outputs exist, not recomputed (use overwrite)", output)
        return result
    normalise = _normalizer(model, normalizer)
    masks = _mask_reader(mask, actual, tolerance, mask_values) if mask is not None else None
    signature = {
        "slide": os.path.abspath(reader.path),
        "spacing": actual,
        "tile": tile_size,
        "margin": margin,
        "padding": padding,
        "fill": fill,
        "geometry": [size, out],
        "parameters": parameters.__dict__,
        "mask": None if masks is None else os.path.abspath(masks[0].path),
        "mask values": None if mask_values is None else sorted(int(v) for v in mask_values),
        **_model_signature(model),
    }
    saved = PartialResults(output.with_suffix(".nuclei"), signature, "row", "json")
    tile_rows, tile_cols = math.ceil(rows / tile_size), math.ceil(cols / tile_size)
    result.tiles = tile_rows * tile_cols

    def region(r: int, c: int) -> tuple[int, int, int, int]:
        top, left = r * tile_size, c * tile_size
        r0, c0 = max(0, top - margin), max(0, left - margin)
        r1 = min(rows, top + tile_size + margin)
        c1 = min(cols, left + tile_size + margin)
        return r0, c0, r1, c1

    def read(r: int, c: int) -> np.ndarray:
        r0, c0, r1, c1 = region(r, c)
        n_r, n_c = math.ceil((r1 - r0) / out), math.ceil((c1 - c0) / out)
        return _read_region(
            reader,
            actual,
            r0 - border,
            c0 - border,
            n_r * out + 2 * border,
            n_c * out + 2 * border,
            padding,
            fill,
            tolerance,
        )

    done_tiles = 0
    prefetch = ThreadPoolExecutor(1, thread_name_prefix="digipath-nuclei")
    try:
        for r in range(tile_rows):
            if saved.done(r):
                content = saved.load(r)
                result.rows_reused += 1
                result.computed += content["computed"]
                result.skipped += content["skipped"]
                done_tiles += tile_cols
                if progress is not None:
                    progress(done_tiles, result.tiles)
                continue
            top = r * tile_size
            height = min(tile_size, rows - top)
            band = None if masks is None else _read_mask(masks, top, height, cols, actual)
            wanted = [
                c
                for c in range(tile_cols)
                if band is None or band[:, c * tile_size : (c + 1) * tile_size].any()
            ]
            records: list[dict] = []
            pending = prefetch.submit(read, r, wanted[0]) if wanted else None
            for index, c in enumerate(wanted):
                image = pending.result()
                if index + 1 < len(wanted):
                    pending = prefetch.submit(read, r, wanted[index + 1])
                records.extend(
                    _tile_nuclei(
                        model,
                        image,
                        region(r, c),
                        (r, c),
                        tile_size,
                        size,
                        out,
                        batch_size,
                        normalise,
                        parameters,
                    )
                )
                done_tiles += 1
                if progress is not None:
                    progress(done_tiles, result.tiles)
            skipped = tile_cols - len(wanted)
            done_tiles += skipped
            result.computed += len(wanted)
            result.skipped += skipped
            saved.save(r, {"computed": len(wanted), "skipped": skipped, "nuclei": records})
            if progress is not None and skipped:
                progress(done_tiles, result.tiles)
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)

    streams: dict[str, Any] = {}
    try:
        if "geojson" in formats:
            streams["geojson"] = GeoJSONStream(
                paths["geojson"], downsample=downsample, type_info=info
            )
        if "json" in formats:
            streams["json"] = HoverNetJSONStream(paths["json"], mag=ORIGINAL_SPACING * 40 / actual)
        if "tiff" in formats:
            streams["tiff"] = LabelTiffStream(paths["tiff"], (rows, cols), spacing=actual)
        for r in range(tile_rows):
            records = saved.load(r)["nuclei"]
            result.per_row.append(len(records))
            for stream in streams.values():
                stream.add(records)
            if "tiff" in streams:  # no later tile row reaches above its region's top
                streams["tiff"].release((r + 1) * tile_size - margin)
            result.nuclei += len(records)
    except BaseException:
        for stream in streams.values():
            stream.abort()
        raise
    for stream in streams.values():
        stream.close()
    saved.remove()
    result.seconds = time.perf_counter() - started
    logger.info(
        "%s: %d nuclei, %d tiles (%d computed, %d skipped, %d rows reused) in %.1f s",
        output,
        result.nuclei,
        result.tiles,
        result.computed,
        result.skipped,
        result.rows_reused,
        result.seconds,
    )
    return result


def _tile_nuclei(
    model, image, bounds, tile, tile_size, size, out, batch_size, normalise, parameters
) -> list[dict]:
    """The records (slide pixels) of the nuclei whose centroid lies in the tile's core."""
    from digipath.nuclei.export import nuclei_records

    r0, c0, r1, c1 = bounds
    prob, hv, tp = _maps_of_padded(model, image, size, out, batch_size, normalise)
    height, width = r1 - r0, c1 - c0
    tp = None if tp is None else tp[:height, :width]
    nuclei = postprocess(
        prob[:height, :width],
        hv[:, :height, :width],
        tp,
        parameters=parameters,
        channels_last=False,
    )
    top, left = tile[0] * tile_size, tile[1] * tile_size
    x = nuclei.centroids[:, 0] + c0
    y = nuclei.centroids[:, 1] + r0
    keep = (x >= left) & (x < left + tile_size) & (y >= top) & (y < top + tile_size)
    return list(nuclei_records(nuclei, offset=(r0, c0), keep=keep))
