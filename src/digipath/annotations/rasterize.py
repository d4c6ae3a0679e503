"""Vector annotations to label masks, tile by tile.

Rasterisation rule
------------------
A mask pixel takes an annotation's value when the **centre** of the pixel lies inside the
annotation (even-odd rule over the exterior and hole rings, so holes stay clear). With pixel
``(row, col)`` covering ``[col, col + 1] x [row, row + 1]`` in mask pixels, a centre exactly on
a left or top edge counts as inside, on a right or bottom edge as outside, so two annotations
sharing an edge never both claim a pixel. The rule is a pure function of the pixel centre, so
tiles join without seams, and a mask traced by :func:`digipath.annotations.mask_to_annotations`
rasterises back to the same pixels.

Level-0 coordinates are mapped to the mask by ``x_mask = x * image_spacing / spacing`` (the
top-left corners of the two grids coincide).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from digipath.annotations.model import (
    AREA_TYPES,
    LINE_TYPES,
    POINT_TYPES,
    Annotation,
    AnnotationSet,
    as_annotation_set,
)
from digipath.errors import AnnotationError, AnnotationLabelError

logger = logging.getLogger(__name__)

AnnotationsLike = AnnotationSet | Iterable[Annotation] | str | os.PathLike[str]


def load_annotations(annotations: AnnotationsLike) -> AnnotationSet:
    """Return ``annotations`` as an :class:`AnnotationSet`, reading a file by its extension
    (``.xml``: ASAP; ``.json``, ``.geojson``: QuPath GeoJSON)."""
    if isinstance(annotations, (str, os.PathLike)):
        from digipath.annotations.asap import read_asap
        from digipath.annotations.geojson import read_geojson

        path = os.fspath(annotations)
        extension = os.path.splitext(path)[1].lower()
        if extension == ".xml":
            return read_asap(path)
        if extension in (".json", ".geojson"):
            return read_geojson(path)
        raise AnnotationError(
            path, f"unknown annotation file extension {extension!r}; expected .xml or .geojson"
        )
    return as_annotation_set(annotations)


class _Shape:
    """One annotation prepared for rasterising: its edges in level-0 pixels and its value."""

    __slots__ = ("bounds", "edges", "value")

    def __init__(self, edges: np.ndarray, value: int) -> None:
        self.edges = edges  # (E, 4) float64: x0, y0, x1, y1 of every ring edge, mask pixels
        self.value = value
        if len(edges):  # (first row, first col, end row, end col) of pixels it may cover
            xs, ys = edges[:, 0::2], edges[:, 1::2]
            self.bounds = (
                math.floor(ys.min()),
                math.floor(xs.min()),
                math.ceil(ys.max()) + 1,
                math.ceil(xs.max()) + 1,
            )
        else:
            self.bounds = (0, 0, 0, 0)


def _edges(geometry: BaseGeometry) -> np.ndarray:
    """All ring edges of a (multi)polygon as an (E, 4) array of x0, y0, x1, y1."""
    rings = []
    polygons = geometry.geoms if geometry.geom_type == "MultiPolygon" else [geometry]
    for polygon in polygons:
        if polygon.is_empty:
            continue
        for ring in (polygon.exterior, *polygon.interiors):
            coords = np.asarray(ring.coords, dtype=np.float64)[:, :2]
            if len(coords) >= 2:
                rings.append(np.hstack([coords[:-1], coords[1:]]))
    if not rings:
        return np.zeros((0, 4))
    edges = np.vstack(rings)
    return edges[edges[:, 1] != edges[:, 3]]  # horizontal edges never cross a scanline


def _area_geometry(annotation: Annotation, point_radius_px: float | None) -> BaseGeometry | None:
    kind = annotation.kind
    if kind in AREA_TYPES:
        return annotation.geometry
    if kind in POINT_TYPES or kind in LINE_TYPES:
        if point_radius_px is None:
            return None
        return annotation.geometry.buffer(point_radius_px, quad_segs=16)
    if kind == "GeometryCollection":
        parts = [
            _area_geometry(Annotation(g, annotation.label), point_radius_px)
            for g in annotation.geometry.geoms
        ]
        kept = [p for p in parts if p is not None and not p.is_empty]
        return shapely.union_all(kept) if kept else None
    return None


def _resolve(annotation: Annotation, label_map: Mapping[str, int]) -> str | None:
    for name in annotation.lineage:
        if name is not None and name in label_map:
            return name
    return None


def prepare_shapes(
    annotations: AnnotationsLike,
    label_map: Mapping[str, int],
    *,
    image_spacing: float | None = None,
    order: Sequence[str] | None = None,
    point_radius: float | None = None,
    unknown_labels: Literal["error", "ignore"] = "error",
) -> list[tuple[BaseGeometry, int]]:
    """Select, order and convert annotations to ``(area geometry, mask value)`` pairs.

    The pairs are in drawing order: a later pair overwrites an earlier one where they
    overlap. See :func:`annotations_to_mask` for the parameters.

    Raises
    ------
    AnnotationLabelError
        Some annotations have labels missing from ``label_map`` and ``unknown_labels`` is
        ``"error"``.
    """
    annotation_set = load_annotations(annotations)
    _check_label_map(label_map, annotation_set.source)
    if unknown_labels not in ("error", "ignore"):
        raise ValueError(f"unknown_labels must be 'error' or 'ignore', got {unknown_labels!r}")
    if point_radius is not None:
        if image_spacing is None or not image_spacing > 0:
            raise ValueError("point_radius (µm) needs image_spacing (µm/px) > 0")
        if not point_radius > 0:
            raise ValueError(f"point_radius must be > 0 µm or None, got {point_radius!r}")
    radius_px = point_radius / image_spacing if point_radius is not None else None

    resolved = [(annotation, _resolve(annotation, label_map)) for annotation in annotation_set]
    missing = list(dict.fromkeys(a.label for a, name in resolved if name is None))
    if missing and unknown_labels == "error":
        raise AnnotationLabelError(annotation_set.source, missing, list(label_map))
    rank = {name: position for position, name in enumerate(order or ())}
    if order is not None:
        unknown = [name for name in order if name not in label_map]
        if unknown:
            raise ValueError(f"order names labels not in the label map: {unknown}")
    drawn = [(a, name) for a, name in resolved if name is not None]
    # Stable sort: labels missing from `order` first (rank -1), file order within a rank.
    drawn.sort(key=lambda pair: rank.get(pair[1], -1))
    shapes = []
    for annotation, name in drawn:
        geometry = _area_geometry(annotation, radius_px)
        if geometry is None or geometry.is_empty:
            continue
        shapes.append((geometry, int(label_map[name])))
    return shapes


def _check_label_map(label_map: Mapping[str, int], source: str | None) -> None:
    if not label_map:
        raise ValueError("the label map is empty; expected {label name: mask value 1..255}")
    for name, value in label_map.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ValueError(f"label map value of {name!r} must be an integer, got {value!r}")
        if not 0 <= int(value) <= 255:
            raise ValueError(f"label map value of {name!r} must be in 0..255, got {value}")


class Rasterizer:
    """Draws prepared shapes into any region of a mask grid, with an STRtree over the shapes.

    Parameters
    ----------
    shapes
        ``(area geometry in level-0 pixels, mask value)`` pairs in drawing order (later
        pairs win), as :func:`prepare_shapes` returns them.
    scale
        Mask pixels per level-0 pixel (``image_spacing / spacing``).
    """

    def __init__(self, shapes: Sequence[tuple[BaseGeometry, int]], scale: float) -> None:
        if not scale > 0 or not math.isfinite(scale):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self._scale = float(scale)
        self._shapes = [_Shape(_edges(g) * self._scale, v) for g, v in shapes]
        self._tree = shapely.STRtree([g for g, _ in shapes])

    def region(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Return the (height, width) uint8 mask of the region whose top-left mask pixel is
        (``row``, ``col``); pixels no annotation covers are 0."""
        out = np.zeros((height, width), dtype=np.uint8)
        for index in self.indices(row, col, height, width):
            shape = self._shapes[index]
            # draw only the part of the region the shape's bounding box covers
            top, left, bottom, right = shape.bounds
            r0, c0 = max(row, top), max(col, left)
            r1, c1 = min(row + height, bottom), min(col + width, right)
            if r0 >= r1 or c0 >= c1:
                continue
            inside = _fill(shape.edges, r0, c0, r1 - r0, c1 - c0)
            if inside is not None:
                out[r0 - row : r1 - row, c0 - col : c1 - col][inside] = shape.value
        return out

    def indices(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Indices (in drawing order) of the shapes whose bounds meet the region."""
        s = self._scale
        query = box(col / s, row / s, (col + width) / s, (row + height) / s)
        return np.sort(self._tree.query(query))


def _fill(edges: np.ndarray, row: int, col: int, height: int, width: int) -> np.ndarray | None:
    """Boolean (height, width) map of the pixel centres inside the rings (even-odd rule).

    ``edges`` are in mask pixels; the region starts at mask pixel (``row``, ``col``).
    """
    if not len(edges):
        return None
    y0 = edges[:, 1] - row
    y1 = edges[:, 3] - row
    low = np.minimum(y0, y1)
    high = np.maximum(y0, y1)
    # Scanline r (centre r + 0.5) crosses an edge when low <= r + 0.5 < high.
    first = np.maximum(np.ceil(low - 0.5), 0).astype(np.int64)
    last = np.minimum(np.ceil(high - 0.5), height).astype(np.int64)  # exclusive
    counts = np.maximum(last - first, 0)
    total = int(counts.sum())
    if total == 0:
        return None
    keep = counts > 0
    x0 = edges[keep, 0] - col
    x1 = edges[keep, 2] - col
    y0, y1, first, counts = y0[keep], y1[keep], first[keep], counts[keep]
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    rows = first[owner] + (np.arange(total) - starts[owner])
    t = (rows + 0.5 - y0[owner]) / (y1[owner] - y0[owner])
    xs = x0[owner] + t * (x1[owner] - x0[owner])
    sequence = np.lexsort((xs, rows))
    rows, xs = rows[sequence], xs[sequence]
    # Every scanline crosses closed rings an even number of times: pair them up.
    begin = np.clip(np.ceil(xs[0::2] - 0.5), 0, width).astype(np.int64)
    end = np.clip(np.ceil(xs[1::2] - 0.5), 0, width).astype(np.int64)
    spans = rows[0::2]
    used = end > begin
    if not used.any():
        return None
    stride = width + 1
    size = height * stride
    delta = np.bincount(spans[used] * stride + begin[used], minlength=size) - np.bincount(
        spans[used] * stride + end[used], minlength=size
    )
    depth = np.cumsum(delta.reshape(height, stride), axis=1)[:, :width]
    return depth > 0


def rasterize(
    annotations: AnnotationsLike,
    region: tuple[int, int, int, int],
    label_map: Mapping[str, int],
    *,
    scale: float = 1.0,
    image_spacing: float | None = None,
    order: Sequence[str] | None = None,
    point_radius: float | None = None,
    unknown_labels: Literal["error", "ignore"] = "error",
) -> np.ndarray:
    """Rasterise annotations into one in-memory region of a mask.

    Parameters
    ----------
    annotations
        Annotations (level-0 pixels) or an annotation file.
    region
        ``(row, col, height, width)`` of the region in mask pixels.
    label_map, order, point_radius, unknown_labels
        As in :func:`annotations_to_mask`.
    scale
        Mask pixels per level-0 pixel (level-0 spacing / mask spacing).
    image_spacing
        Level-0 spacing in µm/px; needed only with ``point_radius``.

    Returns
    -------
    numpy.ndarray
        (height, width) uint8 label mask.
    """
    shapes = prepare_shapes(
        annotations,
        label_map,
        image_spacing=image_spacing,
        order=order,
        point_radius=point_radius,
        unknown_labels=unknown_labels,
    )
    return Rasterizer(shapes, scale).region(*region)


def annotations_to_mask(
    annotations: AnnotationsLike,
    output_path: str | os.PathLike[str],
    shape: tuple[int, int],
    spacing: float,
    label_map: Mapping[str, int],
    *,
    image_spacing: float,
    tile_size: int = 512,
    order: Sequence[str] | None = None,
    point_radius: float | None = None,
    unknown_labels: Literal["error", "ignore"] = "error",
    compression: str = "lzw",
    threads: int | None = None,
) -> str:
    """Rasterise annotations into a uint8 label mask, written tile by tile as a pyramidal TIFF.

    Only the annotations whose bounds meet a tile are drawn into it (STRtree), so memory is
    bounded by one row of tiles plus the annotations themselves. Tiles no annotation meets are
    never drawn (the writer stores them as 0).

    Parameters
    ----------
    annotations
        An :class:`AnnotationSet`, a list of :class:`Annotation`, or an ASAP ``.xml`` /
        QuPath ``.geojson`` file; coordinates in level-0 pixels (x = col, y = row).
    output_path
        The mask file (``.tif``), written under a temporary name and renamed when complete.
    shape
        (rows, cols) of the mask at ``spacing``.
    spacing
        Pixel spacing of the mask in µm/px.
    label_map
        ``{label: mask value}`` with values 0..255 (0 draws background, e.g. to cut an
        "exclude" label out of others). An annotation takes the value of its label or, for
        ASAP nested groups, of its nearest parent group the map lists.
    image_spacing
        Pixel spacing in µm/px of the level-0 coordinates of the annotations; the scale
        from annotation to mask pixels is ``image_spacing / spacing``.
    tile_size
        Tile size of the output in pixels (a multiple of 16).
    order
        Overlap rule. ``None``: annotations are drawn in file order, a later annotation
        overwrites an earlier one. A list of labels: annotations are drawn label by label in
        this order (file order within a label), so the labels listed last win; labels of the
        map not listed are drawn first.
    point_radius
        Radius in µm of the disk drawn for point (Dot, PointSet) and line annotations;
        ``None`` skips them.
    unknown_labels
        ``"error"``: annotations whose label (and parent groups) the map does not list raise
        :class:`~digipath.errors.AnnotationLabelError` naming them; ``"ignore"``: they are
        skipped.
    compression
        Compression of the mask tiles (``"lzw"``, ``"deflate"``, ``"none"``).
    threads
        Encoding threads of the writer (``None``: all CPUs).

    Returns
    -------
    str
        The absolute path of the mask.
    """
    from digipath.io.writer import ImageWriter

    if not spacing > 0 or not image_spacing > 0:
        raise ValueError(
            f"spacing and image_spacing must be > 0 µm/px, got {spacing!r}, {image_spacing!r}"
        )
    shapes = prepare_shapes(
        annotations,
        label_map,
        image_spacing=image_spacing,
        order=order,
        point_radius=point_radius,
        unknown_labels=unknown_labels,
    )
    rasterizer = Rasterizer(shapes, image_spacing / spacing)
    rows, cols = int(shape[0]), int(shape[1])
    with ImageWriter(
        output_path,
        (rows, cols),
        spacing=spacing,
        dtype="uint8",
        channels=1,
        compression=compression,
        interpolation="nearest",
        tile_size=tile_size,
        threads=threads,
    ) as writer:
        for row in range(0, rows, tile_size):
            height = min(tile_size, rows - row)
            for col in range(0, cols, tile_size):
                width = min(tile_size, cols - col)
                if not len(rasterizer.indices(row, col, height, width)):
                    continue
                tile = rasterizer.region(row, col, height, width)
                if tile.any():
                    writer.write(tile[:, :, None], row, col)
        path = writer.path
    logger.info(
        "wrote %s: %d annotations, %d x %d at %g µm/px", path, len(shapes), rows, cols, spacing
    )
    return path


def annotations_to_mask_like(
    annotations: AnnotationsLike,
    output_path: str | os.PathLike[str],
    image: object,
    spacing: float,
    label_map: Mapping[str, int],
    **options: object,
) -> str:
    """Rasterise annotations of a slide into a mask matching the slide at ``spacing``.

    The mask takes the shape and spacing of the slide's level matching ``spacing`` (within the
    reader's tolerance), or the resampled shape at ``spacing`` when no level matches (see
    :meth:`~digipath.io.ImageReader.shape`); the annotations are taken to be in the slide's
    level-0 pixels.

    Parameters
    ----------
    image
        An :class:`~digipath.io.ImageReader` or the path of the slide.
    spacing
        Requested mask spacing in µm/px.
    options
        Further keyword arguments of :func:`annotations_to_mask` (``image_spacing`` defaults
        to the slide's level-0 spacing).
    """
    from digipath.io.reader import ImageReader

    reader = image if isinstance(image, ImageReader) else ImageReader(image)  # type: ignore[arg-type]
    try:
        shape = reader.shape(spacing)
        actual = reader.refine(spacing)
        options.setdefault("image_spacing", reader.spacings[0])
    finally:
        if reader is not image:
            reader.close()
    return annotations_to_mask(
        annotations,
        output_path,
        shape,
        actual,
        label_map,
        **options,  # type: ignore[arg-type]
    )
