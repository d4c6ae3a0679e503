"""Annotation commands: annotations to label masks and masks back to outlines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from digipath.errors import DigipathError

console = Console(stderr=True)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, separator, item = value.partition("=")
        if not separator or not key or not item:
            raise typer.BadParameter(f"expected {what}, got {value!r}")
        pairs[key] = item
    return pairs


def annotations_to_mask(
    annotations: Annotated[Path, typer.Argument(help="ASAP XML or QuPath GeoJSON file.")],
    image: Annotated[Path, typer.Argument(help="The slide the annotations were drawn on.")],
    output: Annotated[Path, typer.Argument(help="Label mask to write (tiled pyramidal TIFF).")],
    label: Annotated[
        list[str], typer.Option("--label", "-l", help="NAME=VALUE: annotation label to mask value.")
    ],
    spacing: Annotated[float, typer.Option(help="Mask spacing in µm/px.")] = 2.0,
    order: Annotated[
        list[str] | None, typer.Option(help="Label drawing order; the last drawn wins.")
    ] = None,
    point_radius: Annotated[
        float | None, typer.Option(help="Draw points as disks of this radius (µm).")
    ] = None,
    ignore_unknown: Annotated[
        bool, typer.Option(help="Skip annotations whose label is not mapped.")
    ] = False,
) -> None:
    """Rasterise annotations into a label mask matching the slide at a spacing."""
    from digipath.annotations.rasterize import annotations_to_mask_like

    label_map = {}
    for name, value in _pairs(label, "NAME=VALUE").items():
        try:
            label_map[name] = int(value)
        except ValueError:
            raise typer.BadParameter(f"mask value of {name!r} must be an integer") from None
    try:
        written = annotations_to_mask_like(
            annotations, output, image, spacing, label_map, order=order or None,
            point_radius=point_radius, unknown_labels="ignore" if ignore_unknown else "error",
        )  # fmt: skip
    except (DigipathError, OSError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(code=1) from None
    console.print(f"wrote {written}")


def mask_to_annotations(
    mask: Annotated[Path, typer.Argument(help="Label mask.")],
    output: Annotated[Path, typer.Argument(help="QuPath GeoJSON to write.")],
    name: Annotated[
        list[str], typer.Option("--name", "-n", help="VALUE=NAME: mask value to label name.")
    ],
    spacing: Annotated[float, typer.Option(help="Spacing of the mask level to trace, µm/px.")],
) -> None:
    """Trace the regions of a label mask into GeoJSON outlines (level-0 coordinates)."""
    from digipath.annotations.outlines import mask_to_geojson

    names = {}
    for value, label_name in _pairs(name, "VALUE=NAME").items():
        try:
            names[int(value)] = label_name
        except ValueError:
            raise typer.BadParameter(f"mask value {value!r} must be an integer") from None
    try:
        written = mask_to_geojson(mask, output, spacing, names)
    except (DigipathError, OSError) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(code=1) from None
    console.print(f"wrote {written}")
