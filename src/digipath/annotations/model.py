"""Vector annotations in memory: :class:`Annotation` and :class:`AnnotationSet`.

Coordinates
-----------
Every geometry is a shapely geometry in **level-0 pixel coordinates** of the image it
annotates: ``x`` is the column, ``y`` the row, the origin is the top-left corner of the image.
Pixel ``(row, col)`` covers the square ``[col, col + 1] x [row, row + 1]``; its centre is
``(col + 0.5, row + 0.5)`` (the QuPath convention). ASAP XML coordinates are read as they are
in the same frame; the half-pixel difference with ASAP's pixel-centre reading is below any
annotator's precision.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from shapely.geometry.base import BaseGeometry

AREA_TYPES = ("Polygon", "MultiPolygon")
"""Geometry types that cover an area (rasterised as regions)."""

POINT_TYPES = ("Point", "MultiPoint")
"""Geometry types of point annotations (ASAP Dot and PointSet)."""

LINE_TYPES = ("LineString", "MultiLineString")
"""Geometry types of line annotations (ASAP Measurement, QuPath lines)."""


@dataclass(frozen=True)
class Annotation:
    """One annotation: a geometry with a label.

    Attributes
    ----------
    geometry
        Shapely geometry in level-0 pixel coordinates (x = col, y = row).
    label
        The label: the ASAP group (``PartOfGroup``) or the QuPath classification name;
        ``None`` when the annotation has none.
    name
        The annotation's own name, if any.
    color
        Display colour as ``"#rrggbb"``, if any.
    groups
        For ASAP annotations in nested groups: the parent groups of ``label``, innermost
        first, up to the top group. Empty otherwise.
    """

    geometry: BaseGeometry
    label: str | None = None
    name: str | None = None
    color: str | None = None
    groups: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """The geometry type (``"Polygon"``, ``"MultiPolygon"``, ``"Point"``, ...)."""
        return self.geometry.geom_type

    @property
    def lineage(self) -> tuple[str | None, ...]:
        """``(label, *groups)``: the label followed by its parent groups, innermost first."""
        return (self.label, *self.groups)

    @property
    def top_group(self) -> str | None:
        """The outermost group of the annotation (its label when it has no parent group)."""
        return self.groups[-1] if self.groups else self.label

    def scaled(self, factor: float) -> Annotation:
        """Return a copy with coordinates multiplied by ``factor`` (around the origin)."""
        from shapely import affinity

        geometry = affinity.scale(self.geometry, factor, factor, origin=(0.0, 0.0))
        return replace(self, geometry=geometry)


@dataclass
class AnnotationSet:
    """An ordered list of annotations, with the label (group) names and colours.

    The order is the order of the file; it matters where annotations overlap (see
    :func:`digipath.annotations.annotations_to_mask`).

    Attributes
    ----------
    annotations
        The annotations, in file order.
    colors
        ``{label: "#rrggbb"}`` of the labels (ASAP groups, QuPath classes) where known.
    parents
        ``{group: parent group}`` of nested ASAP groups.
    source
        The file the annotations were read from, if any.
    """

    annotations: list[Annotation] = field(default_factory=list)
    colors: dict[str, str] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        self.annotations = list(self.annotations)
        if self.source is not None:
            self.source = os.fspath(self.source)

    def __len__(self) -> int:
        return len(self.annotations)

    def __iter__(self) -> Iterator[Annotation]:
        return iter(self.annotations)

    def __getitem__(self, index: int) -> Annotation:
        return self.annotations[index]

    @property
    def labels(self) -> list[str]:
        """The distinct labels of the annotations in order of first appearance, then the
        labels known only from :attr:`colors` (e.g. empty ASAP groups)."""
        seen: dict[str, None] = {}
        for annotation in self.annotations:
            if annotation.label is not None:
                seen.setdefault(annotation.label)
        for label in self.colors:
            seen.setdefault(label)
        return list(seen)

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """``(min x, min y, max x, max y)`` = (min col, min row, max col, max row) of all
        geometries in level-0 pixels, or ``None`` when the set is empty."""
        boxes = [a.geometry.bounds for a in self.annotations if not a.geometry.is_empty]
        if not boxes:
            return None
        return (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )

    def filter(
        self, labels: Iterable[str | None] | None = None, kinds: Sequence[str] | None = None
    ) -> AnnotationSet:
        """Return the annotations whose label is in ``labels`` and geometry type in ``kinds``.

        Parameters
        ----------
        labels
            Labels to keep (``None`` in the list keeps unlabelled annotations); ``None`` keeps
            every label. A label also matches annotations of its nested sub-groups.
        kinds
            Geometry types to keep (see :data:`AREA_TYPES`, :data:`POINT_TYPES`); ``None``
            keeps all.
        """
        wanted = None if labels is None else set(labels)
        kept = [
            a
            for a in self.annotations
            if (wanted is None or any(name in wanted for name in a.lineage))
            and (kinds is None or a.kind in kinds)
        ]
        return AnnotationSet(kept, dict(self.colors), dict(self.parents), self.source)

    def scaled(self, factor: float) -> AnnotationSet:
        """Return a copy with every coordinate multiplied by ``factor``."""
        return AnnotationSet(
            [a.scaled(factor) for a in self.annotations],
            dict(self.colors),
            dict(self.parents),
            self.source,
        )


def as_annotation_set(annotations: AnnotationSet | Iterable[Annotation]) -> AnnotationSet:
    """Return ``annotations`` as an :class:`AnnotationSet` (a list is wrapped, not copied)."""
    if isinstance(annotations, AnnotationSet):
        return annotations
    return AnnotationSet(list(annotations))
