"""ASAP XML annotations: parsing a handwritten file, groups, writing, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from digipath.annotations import AnnotationSet, read_asap, write_asap
from digipath.errors import AnnotationError, AnnotationFormatError

XML = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="tumor" Color="#F4FA58">
      <Coordinates>
        <Coordinate Order="2" X="20" Y="30"/>
        <Coordinate Order="0" X="10" Y="10"/>
        <Coordinate Order="1" X="30" Y="10"/>
      </Coordinates>
    </Annotation>
    <Annotation Name="box" Type="Rectangle" PartOfGroup="stroma" Color="#00ff00">
      <Coordinates>
        <Coordinate Order="0" X="0" Y="0"/>
        <Coordinate Order="1" X="4" Y="0"/>
        <Coordinate Order="2" X="4" Y="2"/>
        <Coordinate Order="3" X="0" Y="2"/>
      </Coordinates>
    </Annotation>
    <Annotation Name="s" Type="Spline" PartOfGroup="necrosis" Color="#0000ff">
      <Coordinates>
        <Coordinate Order="0" X="0" Y="0"/>
        <Coordinate Order="1" X="5" Y="0"/>
        <Coordinate Order="2" X="5" Y="5"/>
      </Coordinates>
    </Annotation>
    <Annotation Name="cell" Type="Dot" PartOfGroup="None" Color="#0000ff">
      <Coordinates><Coordinate Order="0" X="7.5" Y="8.25"/></Coordinates>
    </Annotation>
    <Annotation Name="cells" Type="PointSet" PartOfGroup="lymphocytes" Color="#0000ff">
      <Coordinates>
        <Coordinate Order="0" X="1" Y="2"/>
        <Coordinate Order="1" X="3" Y="4"/>
      </Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="tumor" PartOfGroup="None" Color="#ff0000"><Attributes/></Group>
    <Group Name="stroma" PartOfGroup="None" Color="#00ff00"><Attributes/></Group>
    <Group Name="necrosis" PartOfGroup="tumor" Color="#000000"><Attributes/></Group>
    <Group Name="lymphocytes" PartOfGroup="None" Color="#ffff00"><Attributes/></Group>
  </AnnotationGroups>
</ASAP_Annotations>
"""


@pytest.fixture
def xml_file(tmp_path: Path) -> Path:
    path = tmp_path / "slide.xml"
    path.write_text(XML)
    return path


def test_parse_handwritten_file(xml_file: Path) -> None:
    annotations = read_asap(xml_file)
    assert len(annotations) == 5
    kinds = [a.kind for a in annotations]
    assert kinds == ["Polygon", "Polygon", "Polygon", "Point", "MultiPoint"]
    triangle = annotations[0]
    # coordinates in Order order: (10, 10), (30, 10), (20, 30)
    assert list(triangle.geometry.exterior.coords)[:3] == [(10, 10), (30, 10), (20, 30)]
    assert triangle.geometry.area == pytest.approx(200.0)
    assert triangle.label == "tumor" and triangle.name == "Annotation 0"
    assert annotations[1].geometry.area == pytest.approx(8.0)
    assert annotations[3].label is None
    assert (annotations[3].geometry.x, annotations[3].geometry.y) == (7.5, 8.25)
    assert annotations.labels == ["tumor", "stroma", "necrosis", "lymphocytes"]
    assert annotations.colors["tumor"] == "#ff0000"
    assert annotations.bounds == (0.0, 0.0, 30.0, 30.0)


def test_nested_groups_resolve_to_parents(xml_file: Path) -> None:
    annotations = read_asap(xml_file)
    spline = annotations[2]
    assert spline.label == "necrosis"
    assert spline.groups == ("tumor",)
    assert spline.top_group == "tumor"
    assert annotations.parents == {"necrosis": "tumor"}
    # filtering by the top group keeps the sub-group's annotations
    assert [a.name for a in annotations.filter(["tumor"])] == ["Annotation 0", "s"]
    assert [a.name for a in annotations.filter(kinds=("Point", "MultiPoint"))] == [
        "cell",
        "cells",
    ]


def test_write_and_read_back(xml_file: Path, tmp_path: Path) -> None:
    annotations = read_asap(xml_file)
    out = write_asap(annotations, tmp_path / "copy.xml")
    again = read_asap(out)
    assert [a.kind for a in again] == [a.kind for a in annotations]
    assert [a.label for a in again] == [a.label for a in annotations]
    assert again.parents == annotations.parents
    for first, second in zip(annotations, again, strict=True):
        assert first.geometry.equals(second.geometry)
    assert not list(tmp_path.glob(".*.tmp"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.xml"
    path.write_text(text)
    return path


def _annotation(body: str, kind: str = "Polygon") -> str:
    return (
        f'<ASAP_Annotations><Annotations><Annotation Name="bad one" Type="{kind}" '
        f'PartOfGroup="g"><Coordinates>{body}</Coordinates></Annotation></Annotations>'
        "</ASAP_Annotations>"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<ASAP_Annotations><Annotations>", "not well-formed XML"),
        ("<svg></svg>", "expected <ASAP_Annotations>"),
        (_annotation('<Coordinate Order="0" X="1" Y="abc"/>'), "Y='abc'"),
        (_annotation('<Coordinate Order="0" X="1"/>'), "Y=None"),
        (_annotation('<Coordinate Order="0" X="1" Y="2"/>'), "at least 3 coordinates"),
        (_annotation('<Coordinate Order="0" X="1" Y="2"/>', "Ellipse"), "unknown annotation"),
    ],
)
def test_malformed_files_name_file_and_annotation(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(AnnotationFormatError) as caught:
        read_asap(path)
    message = str(caught.value)
    assert str(path) in message and expected in message
    if "Coordinate" in text:
        assert "'bad one'" in message
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.path == caught.value.path and str(copy) == message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no such file"):
        read_asap(tmp_path / "absent.xml")


def test_group_cycle_is_an_error(tmp_path: Path) -> None:
    text = XML.replace('Name="tumor" PartOfGroup="None"', 'Name="tumor" PartOfGroup="necrosis"')
    with pytest.raises(AnnotationFormatError, match="cycle"):
        read_asap(_write(tmp_path, text))


def test_empty_set_has_no_bounds() -> None:
    assert AnnotationSet().bounds is None
