"""Label masks to vector outlines (polygons with holes), the reverse of rasterising.

Each label's regions are traced with marching squares (scikit-image ``find_contours`` at
level 0.5, foreground 8-connected) on the mask level matching the requested spacing. The
contours run along pixel edges, cutting each pixel corner by a diagonal through the edge
midpoints, so the outlines are valid polygons whose area is the pixel count within 1/8 px per
corner, and :func:`~digipath.annotations.annotations_to_mask` (pixel-centre rule) draws them
back to exactly the traced pixels. Rings are nested by containment: depth 0 is an exterior,
depth 1 a hole of its container, depth 2 an island in that hole, and so on.

Memory: the level is read in strips into one (rows, cols) uint8 array, so the level must fit
in memory (``max_bytes``, default 1 GiB: e.g. a 100 000 x 80 000 px slide at 0.25 µm/px is
read at 2 µm/px as 12 500 x 10 000 = 125 MB). Trace masks at a coarse spacing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon
from skimage import measure

from digipath.annotations.model import Annotation, AnnotationSet
from digipath.errors import AnnotationError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2**30
"""Largest mask level (in bytes) :func:`mask_to_annotations` reads into memory (1 GiB)."""

_STRIP_ROWS = 2048


def trace_label(binary: np.ndarray) -> list[Polygon]:
    """Trace the regions of a boolean (rows, cols) array into polygons with holes.

    Coordinates are in the array's pixels with the pixel-corner convention: pixel
    ``(row, col)`` covers ``[col, col + 1] x [row, row + 1]`` (x = col, y = row).
    """
    if not binary.any():
        return []
    padded = np.pad(binary.astype(np.uint8), 1)
    contours = measure.find_contours(padded, 0.5, fully_connected="high")
    rings = []
    for contour in contours:
        if len(contour) < 4:
            continue
        # (row, col) of padded pixel centres -> x = col - 1 + 0.5, y = row - 1 + 0.5
        ring = Polygon(np.column_stack([contour[:, 1] - 0.5, contour[:, 0] - 0.5]))
        if ring.area > 0:
            rings.append(ring)
    if not rings:
        return []
    rings.sort(key=lambda r: r.area, reverse=True)
    tree = shapely.STRtree(rings)
    probes = [shapely.Point(r.exterior.coords[0]) for r in rings]
    # Containers of each ring: larger rings (lower index) containing one of its vertices.
    pairs = tree.query(probes, predicate="within")  # (probe index, ring index)
    parent = [-1] * len(rings)
    depth = [0] * len(rings)
    containers: dict[int, list[int]] = {}
    for probe, ring in zip(pairs[0].tolist(), pairs[1].tolist(), strict=True):
        if ring < probe:
            containers.setdefault(probe, []).append(ring)
    for index in range(len(rings)):
        found = containers.get(index, [])
        depth[index] = len(found)
        if found:
            parent[index] = max(found)  # the smallest container (rings sorted by area)
    holes: dict[int, list[np.ndarray]] = {}
    for index in range(len(rings)):
        if depth[index] % 2 == 1:
            holes.setdefault(parent[index], []).append(np.asarray(rings[index].exterior.coords))
    polygons = []
    for index in range(len(rings)):
        if depth[index] % 2 == 0:
            polygons.append(Polygon(rings[index].exterior.coords, holes.get(index, [])))
    return polygons


def read_level(
    mask: object, spacing: float, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[np.ndarray, float, float]:
    """Read the whole mask at ``spacing`` in strips into memory.

    Returns
    -------
    tuple
        ``(array, read spacing, level-0 spacing)``: the (rows, cols) array of channel 0,
        the spacing it was read at in µm/px and the mask's level-0 spacing in µm/px.
    """
    from digipath.io.reader import ImageReader

    reader = mask if isinstance(mask, ImageReader) else ImageReader(mask)  # type: ignore[arg-type]
    try:
        rows, cols = reader.shape(spacing)
        actual = reader.refine(spacing)
        nbytes = rows * cols
        if nbytes > max_bytes:
            raise AnnotationError(
                reader.path,
                f"the mask at {actual:g} µm/px is {rows} x {cols} px ({nbytes / 2**20:.0f} MiB), "
                f"more than max_bytes={max_bytes}; trace it at a coarser spacing or raise the "
                "limit",
            )
        array = np.zeros((rows, cols), dtype=np.uint8)
        for row in range(0, rows, _STRIP_ROWS):
            height = min(_STRIP_ROWS, rows - row)
            strip = reader.read(actual, row, 0, height, cols, fill=0, interpolation="nearest")
            array[row : row + height] = strip[:, :, 0]
        level0 = reader.spacings[0]
    finally:
        if reader is not mask:
            reader.close()
    return array, float(actual), float(level0)  # type: ignore[arg-type]


def mask_to_annotations(
    mask: object,
    spacing: float,
    label_names: Mapping[int, str],
    *,
    image_spacing: float | None = None,
    simplify: float | None = None,
    min_area: float = 0.0,
    multipolygons: bool = False,
    colors: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> AnnotationSet:
    """Trace the labelled regions of a mask into polygon annotations in level-0 pixels.

    Parameters
    ----------
    mask
        The mask file or an open :class:`~digipath.io.ImageReader` (channel 0 is traced).
    spacing
        Spacing in µm/px at which the mask is read and traced (the matching level, or a
        nearest-neighbour resampling when no level matches).
    label_names
        ``{mask value: label name}``; values not listed (0 usually) are not traced.
    image_spacing
        Spacing in µm/px of the level-0 pixels the coordinates are given in (the slide's);
        default the mask's own level-0 spacing.
    simplify
        Tolerance in µm of a topology-preserving Douglas-Peucker simplification; ``None``
        keeps every contour vertex.
    min_area
        Regions smaller than this many µm² are dropped (holes are kept).
    multipolygons
        ``True``: one MultiPolygon annotation per label; ``False``: one annotation per
        connected region.
    colors
        ``{label name: "#rrggbb"}`` stored in the set.
    max_bytes
        Largest level (rows x cols bytes) read into memory.

    Returns
    -------
    AnnotationSet
        Polygons labelled by ``label_names``, in increasing mask value, regions ordered by
        decreasing area.
    """
    array, actual, level0 = read_level(mask, spacing, max_bytes=max_bytes)
    target = level0 if image_spacing is None else float(image_spacing)
    if not target > 0:
        raise ValueError(f"image_spacing must be > 0 µm/px, got {image_spacing!r}")
    factor = actual / target  # level-0 pixels per traced pixel
    tolerance = simplify / target if simplify else 0.0
    smallest = min_area / (target * target)
    annotations = []
    present = set(np.unique(array).tolist())
    for value in sorted(label_names):
        name = label_names[value]
        if value not in present:
            continue
        polygons = trace_label(array == value)
        scaled = [affinity.scale(p, factor, factor, origin=(0, 0)) for p in polygons]
        if tolerance:
            scaled = [p.simplify(tolerance, preserve_topology=True) for p in scaled]
        scaled = [p for p in scaled if not p.is_empty and p.area >= smallest]
        if not scaled:
            continue
        color = (colors or {}).get(name)
        if multipolygons:
            annotations.append(Annotation(MultiPolygon(scaled), label=name, color=color))
        else:
            annotations.extend(Annotation(p, label=name, color=color) for p in scaled)
        logger.debug("label %s (%d): %d regions", name, value, len(scaled))
    source = mask.path if hasattr(mask, "path") else os.fspath(mask)  # type: ignore[arg-type]
    return AnnotationSet(annotations, dict(colors or {}), {}, source)


def mask_to_geojson(
    mask: object,
    output_path: str | os.PathLike[str],
    spacing: float,
    label_names: Mapping[int, str],
    **options: object,
) -> str:
    """Trace a mask (see :func:`mask_to_annotations`) and write QuPath GeoJSON.

    Returns the absolute path written.
    """
    from digipath.annotations.geojson import write_geojson

    annotations = mask_to_annotations(mask, spacing, label_names, **options)  # type: ignore[arg-type]
    return write_geojson(annotations, output_path)
