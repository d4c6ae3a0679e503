"""QuPath GeoJSON annotations: reading and writing.

Accepted input: a ``FeatureCollection``, a list of ``Feature`` objects, or one ``Feature``.
Geometries: ``Polygon`` and ``MultiPolygon`` (with holes), ``Point``, ``MultiPoint``,
``LineString``, ``MultiLineString`` (a ``GeometryCollection`` is split into its members).
Coordinates are level-0 pixels (x = column, y = row), as QuPath exports them.

The label of a feature is ``properties.classification.name``, or ``properties.classification``
when it is a string, or else ``properties.name``; features with none of these have no label
(they are not an error). The colour comes from ``classification.color`` (``[r, g, b]``) or
``classification.colorRGB`` (a packed integer).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import numpy as np
import shapely
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from digipath.annotations._files import read_bytes, write_text_atomically
from digipath.annotations.model import Annotation, AnnotationSet, as_annotation_set
from digipath.errors import AnnotationFormatError

_TYPES = ("Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString", "MultiLineString")


def read_geojson(path: str | os.PathLike[str]) -> AnnotationSet:
    """Read a QuPath GeoJSON annotation file.

    Parameters
    ----------
    path
        The ``.geojson`` / ``.json`` file.

    Returns
    -------
    AnnotationSet
        The annotations in file order, level-0 pixel coordinates (x = col, y = row).

    Raises
    ------
    AnnotationError
        The file cannot be read.
    AnnotationFormatError
        Not JSON, not GeoJSON features, or a feature with a missing or invalid geometry; the
        message names the feature by index.
    """
    try:
        document = json.loads(read_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationFormatError(path, f"not valid JSON ({error})") from None
    return parse_geojson(document, path)


def parse_geojson(document: Any, path: str | os.PathLike[str] | None = None) -> AnnotationSet:
    """Build an :class:`AnnotationSet` from decoded GeoJSON (see :func:`read_geojson`).

    ``path`` is only used in error messages.
    """
    features = _features(document, path)
    annotations: list[Annotation] = []
    colors: dict[str, str] = {}
    for index, feature in enumerate(features):
        item = f"feature {index}"
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise AnnotationFormatError(path, "is not a GeoJSON Feature object", item=item)
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            raise AnnotationFormatError(path, "'properties' is not an object", item=item)
        label, color = _classification(properties)
        name = properties.get("name")
        name = str(name) if name is not None else None
        if label is None and name is not None:
            label = name
        if label is not None and color is not None:
            colors.setdefault(label, color)
        for geometry in _geometries(path, item, feature.get("geometry")):
            annotations.append(Annotation(geometry, label=label, name=name, color=color))
    return AnnotationSet(annotations, colors, {}, os.fspath(path) if path is not None else None)


def _features(document: Any, path: str | os.PathLike[str] | None) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        kind = document.get("type")
        if kind == "FeatureCollection":
            features = document.get("features")
            if not isinstance(features, list):
                raise AnnotationFormatError(path, "the FeatureCollection has no 'features' list")
            return features
        if kind == "Feature":
            return [document]
        raise AnnotationFormatError(
            path, f"GeoJSON of type {kind!r}; expected a FeatureCollection or Feature(s)"
        )
    raise AnnotationFormatError(path, "expected a GeoJSON FeatureCollection or list of Features")


def _classification(properties: dict[str, Any]) -> tuple[str | None, str | None]:
    classification = properties.get("classification")
    if isinstance(classification, str):
        return classification, None
    if not isinstance(classification, dict):
        return None, None
    label = classification.get("name")
    label = str(label) if label is not None else None
    color = None
    value = classification.get("color")
    if isinstance(value, list) and len(value) >= 3:
        color = "#{:02x}{:02x}{:02x}".format(*(int(v) & 255 for v in value[:3]))
    elif isinstance(classification.get("colorRGB"), int):
        packed = classification["colorRGB"] & 0xFFFFFF
        color = f"#{packed:06x}"
    return label, color


def _geometries(
    path: str | os.PathLike[str] | None, item: str, geometry: Any
) -> list[BaseGeometry]:
    if not isinstance(geometry, dict):
        raise AnnotationFormatError(path, "has no 'geometry' object", item=item)
    kind = geometry.get("type")
    if kind == "GeometryCollection":
        members = geometry.get("geometries")
        if not isinstance(members, list):
            raise AnnotationFormatError(path, "GeometryCollection without 'geometries'", item=item)
        return [g for member in members for g in _geometries(path, item, member)]
    if kind not in _TYPES:
        raise AnnotationFormatError(
            path, f"unsupported geometry type {kind!r} (expected one of {_TYPES})", item=item
        )
    try:
        result = shape(geometry)
    except Exception as error:  # shapely raises several types for malformed coordinates
        raise AnnotationFormatError(
            path, f"invalid {kind} coordinates ({type(error).__name__}: {error})", item=item
        ) from None
    coordinates = shapely.get_coordinates(result)
    if not coordinates.size:
        raise AnnotationFormatError(path, f"the {kind} has no coordinates", item=item)
    if not np.isfinite(coordinates).all():
        raise AnnotationFormatError(path, f"the {kind} has non-finite coordinates", item=item)
    return [result]


# --------------------------------------------------------------------------------------------
# Writing


def to_geojson(annotations: AnnotationSet | list[Annotation]) -> dict[str, Any]:
    """Return annotations as a QuPath-style GeoJSON ``FeatureCollection`` (a dict).

    Each annotation becomes a feature with ``properties.objectType = "annotation"``,
    ``properties.classification = {"name": label, "color": [r, g, b]}`` when it has a label
    and ``properties.name`` when it has a name.
    """
    annotation_set = as_annotation_set(annotations)
    features = []
    for annotation in annotation_set:
        properties: dict[str, Any] = {"objectType": "annotation"}
        if annotation.name is not None:
            properties["name"] = annotation.name
        if annotation.label is not None:
            classification: dict[str, Any] = {"name": annotation.label}
            color = annotation.color or annotation_set.colors.get(annotation.label)
            rgb = _rgb(color)
            if rgb is not None:
                classification["color"] = rgb
            properties["classification"] = classification
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid4()),
                "geometry": mapping(annotation.geometry),
                "properties": properties,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(
    annotations: AnnotationSet | list[Annotation], path: str | os.PathLike[str]
) -> str:
    """Write annotations as a QuPath GeoJSON ``FeatureCollection`` (atomically).

    Returns
    -------
    str
        The absolute path written.
    """
    return write_text_atomically(path, json.dumps(to_geojson(annotations)) + "\n")


def _rgb(color: str | None) -> list[int] | None:
    if not color or not color.startswith("#") or len(color) != 7:
        return None
    try:
        return [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    except ValueError:
        return None
