"""Post-processing of whole-slide maps, streamed in bands of rows with margins.

Each step reads a map (a pyramidal TIFF at its level 0) band by band, with enough rows of
margin above and below that every decision inside the band is the one the whole image would
give, and writes a new pyramidal TIFF; memory holds one band, whatever the slide size:

* :func:`threshold`: ``value >= confidence`` -> 1, else 0 (soft maps; :func:`threshold_value`
  in the map's own units);
* :func:`filter_regions`: remove connected regions whose bounding-box diagonal is at most a
  length in µm (a region too large to fit in the margin touches the window edge and is kept,
  which is right: its diagonal is longer than the margin);
* :func:`dilate`: binary dilation by a distance in µm (a disk);
* :func:`fill_holes`: fill background regions enclosed by foreground whose bounding-box
  diagonal is at most a length in µm;
* :func:`outlines`: the final binary map traced as polygons in level-0 coordinates of the slide,
  written as GeoJSON (QuPath) or ASAP XML.

:func:`postprocess` chains them as the original ``applynetwork`` did: every enabled step writes
a file, intermediate files get a suffix (``_zoomed``, ``_thresholded``, ``_filtered``,
``_dilated``, ``_filled``) and are removed unless kept, and the last step writes the requested
output.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from digipath.io import ImageReader, ImageWriter

logger = logging.getLogger(__name__)

BAND = 1024
"""Rows per band (a multiple of the writer's 512-pixel tiles)."""


def _stream(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    step: Callable[[np.ndarray, int, int], np.ndarray],
    margin: int,
    dtype=np.uint8,
    band: int = BAND,
) -> str:
    """Apply ``step(window, top_margin, rows)`` to bands of ``source``; write ``target``.

    ``window`` holds the band's ``rows`` plus up to ``margin`` rows above and below (fewer at
    the image edges; ``top_margin`` says how many are above); ``step`` returns the band.
    """
    with ImageReader(source) as reader:
        spacing = reader.spacings[0]
        rows, cols = reader.shapes[0]
        with ImageWriter(target, (rows, cols), spacing=spacing, dtype=dtype, channels=1,
                         compression="lzw", interpolation="nearest") as writer:  # fmt: skip
            pending: list[np.ndarray] = []  # results waiting for a full row of 512 tiles
            held = written = 0
            for top in range(0, rows, band):
                height = min(band, rows - top)
                above = min(margin, top)
                below = min(margin, rows - top - height)
                window = reader.read(spacing, top - above, 0, height + above + below, cols,
                                     interpolation="nearest")[..., 0]  # fmt: skip
                pending.append(step(window, above, height).astype(dtype))
                held += height
                while held >= 512 or (top + height == rows and held > 0):
                    block = np.concatenate(pending) if len(pending) > 1 else pending[0]
                    take = min(512, len(block))
                    for col in range(0, cols, 512):
                        tile = np.ascontiguousarray(block[:take, col : col + 512])
                        writer.write(tile, written, col)
                    written += take
                    pending = [block[take:]] if take < len(block) else []
                    held = len(block) - take
    return str(target)


def _pixels(length_um: float, spacing: float) -> float:
    return float(length_um) / float(spacing)


def _spacing(path) -> float:
    with ImageReader(path) as reader:
        if reader.spacings[0] is None:
            raise ValueError(f"{path}: the map states no pixel spacing")
        return float(reader.spacings[0])


def threshold(source, target, confidence: float, band: int = BAND) -> str:
    """``value >= confidence`` as 0/1 uint8 (a uint8 map compares with ``255 * confidence``)."""
    with ImageReader(source) as reader:
        level = 255 * confidence if reader.dtype == np.uint8 else confidence
    return threshold_value(source, target, level, band)


def threshold_value(source, target, level: float, band: int = BAND) -> str:
    """``value >= level`` as 0/1 uint8, in the map's own units."""

    def step(window: np.ndarray, above: int, rows: int) -> np.ndarray:
        return (window[above : above + rows] >= level).astype(np.uint8)

    return _stream(source, target, step, 0, band=band)


def _small_components(binary: np.ndarray, limit: float, border: tuple[bool, bool]):
    """Mask of the components fully inside the window with a bbox diagonal <= ``limit`` px.

    ``border``: whether the window's top/bottom edges are the image's (then touching them
    does not mean extending beyond the window).
    """
    labels, count = ndimage.label(binary, structure=np.ones((3, 3)))
    if count == 0:
        return np.zeros_like(binary, dtype=bool)
    boxes = ndimage.find_objects(labels)
    small = np.zeros(count + 1, bool)
    rows = binary.shape[0]
    for index, box in enumerate(boxes, start=1):
        r, c = box
        cut = (r.start == 0 and not border[0]) or (r.stop == rows and not border[1])
        if cut:
            continue
        diagonal = math.hypot(r.stop - r.start, c.stop - c.start)
        small[index] = diagonal <= limit
    return small[labels]


def filter_regions(source, target, diagonal_um: float, band: int = BAND) -> str:
    """Remove foreground regions whose bounding-box diagonal is at most ``diagonal_um``."""
    limit = _pixels(diagonal_um, _spacing(source))
    margin = math.ceil(limit) + 2

    def step(window: np.ndarray, above: int, rows: int) -> np.ndarray:
        binary = window > 0
        edges = (above == 0, above + rows == window.shape[0])
        binary &= ~_small_components(binary, limit, edges)
        return binary[above : above + rows].astype(np.uint8)

    return _stream(source, target, step, margin, band=band)


def fill_holes(source, target, diagonal_um: float, band: int = BAND) -> str:
    """Fill background regions enclosed by foreground with a bbox diagonal <= ``diagonal_um``.

    Background touching the image border is never a hole.
    """
    limit = _pixels(diagonal_um, _spacing(source))
    margin = math.ceil(limit) + 2
    with ImageReader(source) as reader:
        total_rows = reader.shapes[0][0]
    state = {"top": 0}

    def step(window: np.ndarray, above: int, rows: int) -> np.ndarray:
        background = window == 0
        first_row = state["top"] - above
        edges = (first_row == 0, first_row + window.shape[0] == total_rows)
        holes = _small_components(background, limit, (False, False))
        # background touching the image's own border is outside, not a hole
        labels, _ = ndimage.label(background, structure=np.ones((3, 3)))
        outside = set(np.unique(labels[:, [0, -1]]))
        if edges[0]:
            outside |= set(np.unique(labels[0]))
        if edges[1]:
            outside |= set(np.unique(labels[-1]))
        outside.discard(0)
        holes &= ~np.isin(labels, list(outside))
        state["top"] += rows
        return ((window > 0) | holes)[above : above + rows].astype(np.uint8)

    return _stream(source, target, step, margin, band=band)


def dilate(source, target, distance_um: float, band: int = BAND) -> str:
    """Binary dilation of the foreground by ``distance_um`` (a disk)."""
    radius = round(_pixels(distance_um, _spacing(source)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))

    def step(window: np.ndarray, above: int, rows: int) -> np.ndarray:
        grown = cv2.dilate((window > 0).astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                           borderValue=0)  # fmt: skip
        return grown[above : above + rows]

    return _stream(source, target, step, radius + 1, band=band)


def outlines(source, target, *, label: str = "prediction", image_spacing: float | None = None,
             simplify_um: float | None = None) -> str:  # fmt: skip
    """Trace the foreground of a binary map into polygons (GeoJSON or ASAP XML by suffix).

    Coordinates are level-0 pixels of the slide (``image_spacing``, default the map's).
    """
    from digipath.annotations.asap import write_asap
    from digipath.annotations.geojson import write_geojson
    from digipath.annotations.outlines import mask_to_annotations

    spacing = _spacing(source)
    annotations = mask_to_annotations(
        source, spacing, {1: label}, image_spacing=image_spacing, simplify=simplify_um
    )
    suffix = Path(target).suffix.lower()
    if suffix == ".xml":
        write_asap(annotations, target)
    elif suffix in (".geojson", ".json"):
        write_geojson(annotations, target)
    else:
        raise ValueError(f"{target}: outlines are written as .geojson, .json or .xml")
    return str(target)


def postprocess(
    prediction: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    output_spacing: float | None = None,
    soft: bool = False,
    confidence: float = 0.0,
    region_diagonal_um: float = 0.0,
    dilation_um: float = 0.0,
    hole_diagonal_um: float = 0.0,
    image_spacing: float | None = None,
    keep_intermediates: bool = False,
) -> str:
    """Run the enabled steps on ``prediction`` and write ``output``.

    The steps, in order: resampling to ``output_spacing`` (µm/px; nearest for labels, linear
    for ``soft`` maps), :func:`threshold`, :func:`filter_regions`, :func:`dilate`,
    :func:`fill_holes`. A ``.geojson``/``.json``/``.xml`` output ends the chain with
    :func:`outlines`. Returns the output path; without any step and with a TIFF output, the
    prediction is renamed.
    """
    output = Path(output)
    if output.suffix.lower() not in (".tif", ".tiff", ".geojson", ".json", ".xml"):
        raise ValueError(f"{output}: the output is a .tif map or .geojson, .json or .xml outlines")
    steps: list[tuple[str, Callable[[str, str], str]]] = []
    if output_spacing is not None:
        from digipath.io.rescale import rescale_image

        interpolation = "linear" if soft else "nearest"
        steps.append(("zoomed", lambda s, t: rescale_image(
            s, t, spacing=output_spacing, interpolation=interpolation, compression="lzw"
        )))  # fmt: skip
    if confidence > 0:
        steps.append(("thresholded", lambda s, t: threshold(s, t, confidence)))
    if region_diagonal_um > 0:
        steps.append(("filtered", lambda s, t: filter_regions(s, t, region_diagonal_um)))
    if dilation_um > 0:
        steps.append(("dilated", lambda s, t: dilate(s, t, dilation_um)))
    if hole_diagonal_um > 0:
        steps.append(("filled", lambda s, t: fill_holes(s, t, hole_diagonal_um)))
    vector = output.suffix.lower() in (".geojson", ".json", ".xml")
    current = str(prediction)
    produced: list[str] = []
    for index, (name, run) in enumerate(steps):
        last = index == len(steps) - 1 and not vector
        target = str(output) if last else str(output.with_name(f"{output.stem}_{name}.tif"))
        current = run(current, target)
        produced.append(current)
    if vector:
        outlines(current, output, image_spacing=image_spacing)
    elif not steps and os.fspath(prediction) != os.fspath(output):
        os.replace(prediction, output)
        return str(output)
    if not keep_intermediates:
        for path in [os.fspath(prediction), *produced]:
            if path != str(output) and os.path.exists(path):
                os.remove(path)
    return str(output)
