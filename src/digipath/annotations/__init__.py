"""Vector annotations: ASAP XML and QuPath GeoJSON, to label masks and back.

* :class:`Annotation`, :class:`AnnotationSet`: shapely geometries in level-0 pixel
  coordinates (x = col, y = row; pixel ``(row, col)`` covers ``[col, col+1] x [row, row+1]``).
* :func:`read_asap`, :func:`write_asap`, :func:`read_geojson`, :func:`write_geojson`,
  :func:`load_annotations` (by file extension).
* :func:`annotations_to_mask`, :func:`annotations_to_mask_like`, :func:`rasterize`: label
  masks drawn tile by tile with the pixel-centre rule.
* :func:`mask_to_annotations`, :func:`mask_to_geojson`: masks traced back to polygons.
"""

from digipath.annotations.asap import read_asap, write_asap
from digipath.annotations.geojson import parse_geojson, read_geojson, to_geojson, write_geojson
from digipath.annotations.model import Annotation, AnnotationSet
from digipath.annotations.outlines import mask_to_annotations, mask_to_geojson, trace_label
from digipath.annotations.rasterize import (
    Rasterizer,
    annotations_to_mask,
    annotations_to_mask_like,
    load_annotations,
    prepare_shapes,
    rasterize,
)

__all__ = [
    "Annotation",
    "AnnotationSet",
    "Rasterizer",
    "annotations_to_mask",
    "annotations_to_mask_like",
    "load_annotations",
    "mask_to_annotations",
    "mask_to_geojson",
    "parse_geojson",
    "prepare_shapes",
    "rasterize",
    "read_asap",
    "read_geojson",
    "to_geojson",
    "trace_label",
    "write_asap",
    "write_geojson",
]
