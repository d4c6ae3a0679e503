"""ASAP XML annotations: reading and writing.

The format::

    <ASAP_Annotations>
      <Annotations>
        <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="tumor" Color="#F4FA58">
          <Coordinates>
            <Coordinate Order="0" X="10.5" Y="20.25"/>
            ...
      <AnnotationGroups>
        <Group Name="tumor" PartOfGroup="None" Color="#ff0000"><Attributes/></Group>

Coordinates are level-0 pixels (``X`` = column, ``Y`` = row). Types: ``Polygon``,
``Rectangle`` and ``Spline`` become polygons (a spline through its control points, as
wholeslidedata does), ``Dot`` a point, ``PointSet`` a multi-point, ``Measurement`` a line.
``PartOfGroup="None"`` means no group. Coordinates are put in ``Order`` order.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ElementTree

from shapely.geometry import LineString, MultiPoint, Point, Polygon
from shapely.geometry.base import BaseGeometry

from digipath.annotations._files import read_bytes, write_text_atomically
from digipath.annotations.model import Annotation, AnnotationSet, as_annotation_set
from digipath.errors import AnnotationFormatError

_POLYGON_TYPES = ("polygon", "rectangle", "spline")
_NO_GROUP = ("", "none")


def read_asap(path: str | os.PathLike[str]) -> AnnotationSet:
    """Read an ASAP XML annotation file.

    Parameters
    ----------
    path
        The ``.xml`` file.

    Returns
    -------
    AnnotationSet
        The annotations in file order, in level-0 pixel coordinates (x = col, y = row), with
        ``label`` = the annotation's ``PartOfGroup`` and ``groups`` = its parent groups
        (innermost first); the set's ``colors`` and ``parents`` describe the groups.

    Raises
    ------
    AnnotationError
        The file cannot be read.
    AnnotationFormatError
        The file is not ASAP XML, or an annotation has an unknown type, a missing or
        non-numeric coordinate, too few coordinates; the message names the annotation.
    """
    data = read_bytes(path)
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise AnnotationFormatError(path, f"not well-formed XML ({error})") from None
    if root.tag != "ASAP_Annotations":
        raise AnnotationFormatError(
            path, f"the root element is <{root.tag}>, expected <ASAP_Annotations>"
        )

    colors: dict[str, str] = {}
    parents: dict[str, str] = {}
    for index, group in enumerate(root.iter("Group")):
        name = group.get("Name")
        if name is None:
            raise AnnotationFormatError(path, "has no Name attribute", item=f"group {index}")
        parent = group.get("PartOfGroup", "None")
        if parent.strip().lower() not in _NO_GROUP:
            parents[name] = parent
        if group.get("Color"):
            colors[name] = group.get("Color", "")

    annotations = []
    for index, element in enumerate(root.iter("Annotation")):
        name = element.get("Name")
        item = f"annotation {name!r} (index {index})" if name else f"annotation {index}"
        group = element.get("PartOfGroup", "None")
        label = None if group.strip().lower() in _NO_GROUP else group
        geometry = _geometry(path, item, element)
        annotations.append(
            Annotation(
                geometry,
                label=label,
                name=name,
                color=element.get("Color") or None,
                groups=_ancestors(path, label, parents),
            )
        )
    return AnnotationSet(annotations, colors, parents, os.fspath(path))


def _ancestors(
    path: str | os.PathLike[str], label: str | None, parents: dict[str, str]
) -> tuple[str, ...]:
    chain: list[str] = []
    current = label
    while current is not None and current in parents:
        current = parents[current]
        if current == label or current in chain:
            raise AnnotationFormatError(path, f"the groups form a cycle through {current!r}")
        chain.append(current)
    return tuple(chain)


def _geometry(
    path: str | os.PathLike[str], item: str, element: ElementTree.Element
) -> BaseGeometry:
    kind = element.get("Type")
    if kind is None:
        raise AnnotationFormatError(path, "has no Type attribute", item=item)
    points = _coordinates(path, item, element)
    lowered = kind.strip().lower()
    if lowered in _POLYGON_TYPES:
        if len(points) > 1 and points[0] == points[-1]:
            points = points[:-1]
        if len(points) < 3:
            raise AnnotationFormatError(
                path, f"a {kind} needs at least 3 coordinates, found {len(points)}", item=item
            )
        return Polygon(points)
    if lowered == "dot":
        if len(points) != 1:
            raise AnnotationFormatError(
                path, f"a Dot needs exactly 1 coordinate, found {len(points)}", item=item
            )
        return Point(points[0])
    if lowered == "pointset":
        if not points:
            raise AnnotationFormatError(path, "a PointSet has no coordinates", item=item)
        return MultiPoint(points)
    if lowered == "measurement":
        if len(points) < 2:
            raise AnnotationFormatError(
                path, f"a Measurement needs 2 coordinates, found {len(points)}", item=item
            )
        return LineString(points)
    raise AnnotationFormatError(
        path,
        f"unknown annotation type {kind!r} (expected Polygon, Rectangle, Spline, Dot, PointSet "
        "or Measurement)",
        item=item,
    )


def _coordinates(
    path: str | os.PathLike[str], item: str, element: ElementTree.Element
) -> list[tuple[float, float]]:
    holder = element.find("Coordinates")
    if holder is None:
        raise AnnotationFormatError(path, "has no <Coordinates> element", item=item)
    ordered = []
    for position, coordinate in enumerate(holder.iter("Coordinate")):
        values = []
        for key in ("X", "Y"):
            text = coordinate.get(key)
            try:
                value = float(text.replace(",", ".")) if text is not None else math.nan
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise AnnotationFormatError(
                    path,
                    f"coordinate {position} has {key}={text!r}; expected a finite number",
                    item=item,
                )
            values.append(value)
        order_text = coordinate.get("Order")
        try:
            order = float(order_text) if order_text is not None else float(position)
        except ValueError:
            raise AnnotationFormatError(
                path, f"coordinate {position} has Order={order_text!r}", item=item
            ) from None
        ordered.append((order, position, values[0], values[1]))
    ordered.sort()
    return [(x, y) for _, _, x, y in ordered]


# --------------------------------------------------------------------------------------------
# Writing


def write_asap(
    annotations: AnnotationSet | list[Annotation],
    path: str | os.PathLike[str],
    *,
    colors: dict[str, str] | None = None,
) -> str:
    """Write annotations as an ASAP XML file (atomically).

    Polygons become ``Polygon`` annotations (only the exterior: ASAP has no holes; a
    multi-polygon becomes one annotation per part), points ``Dot``, multi-points ``PointSet``
    and lines ``Measurement`` (first and last point) or, with more than two points, an open
    ``Polygon``. Every label becomes a group; nested groups (``AnnotationSet.parents``) are
    kept.

    Parameters
    ----------
    annotations
        The annotations, in level-0 pixel coordinates (x = col, y = row).
    path
        The output ``.xml`` file.
    colors
        ``{label: "#rrggbb"}`` overriding the set's group colours.

    Returns
    -------
    str
        The absolute path written.
    """
    annotation_set = as_annotation_set(annotations)
    group_colors = {**annotation_set.colors, **(colors or {})}
    root = ElementTree.Element("ASAP_Annotations")
    holder = ElementTree.SubElement(root, "Annotations")
    count = 0
    for annotation in annotation_set:
        for kind, coordinates in _parts(annotation.geometry):
            attributes = {
                "Name": annotation.name or f"Annotation {count}",
                "Type": kind,
                "PartOfGroup": annotation.label if annotation.label is not None else "None",
                "Color": annotation.color
                or group_colors.get(annotation.label or "", None)
                or "#F4FA58",
            }
            element = ElementTree.SubElement(holder, "Annotation", attributes)
            listed = ElementTree.SubElement(element, "Coordinates")
            for order, (x, y) in enumerate(coordinates):
                ElementTree.SubElement(
                    listed, "Coordinate", {"Order": str(order), "X": repr(x), "Y": repr(y)}
                )
            count += 1
    groups = ElementTree.SubElement(root, "AnnotationGroups")
    names = list(annotation_set.labels)
    for child, parent in annotation_set.parents.items():
        for name in (child, parent):
            if name not in names:
                names.append(name)
    for name in names:
        group = ElementTree.SubElement(
            groups,
            "Group",
            {
                "Name": name,
                "PartOfGroup": annotation_set.parents.get(name, "None"),
                "Color": group_colors.get(name, "#64FE2E"),
            },
        )
        ElementTree.SubElement(group, "Attributes")
    ElementTree.indent(root)
    text = ElementTree.tostring(root, encoding="unicode")
    return write_text_atomically(path, text + "\n")


def _parts(geometry: BaseGeometry) -> list[tuple[str, list[tuple[float, float]]]]:
    kind = geometry.geom_type
    if geometry.is_empty:
        return []
    if kind == "Polygon":
        return [("Polygon", [(float(x), float(y)) for x, y in geometry.exterior.coords[:-1]])]
    if kind == "Point":
        return [("Dot", [(float(geometry.x), float(geometry.y))])]
    if kind == "MultiPoint":
        return [("PointSet", [(float(p.x), float(p.y)) for p in geometry.geoms])]
    if kind == "LineString":
        coords = [(float(x), float(y)) for x, y in geometry.coords]
        return [("Measurement" if len(coords) == 2 else "Polygon", coords)]
    if kind in ("MultiPolygon", "MultiLineString", "GeometryCollection"):
        return [part for sub in geometry.geoms for part in _parts(sub)]
    return []
