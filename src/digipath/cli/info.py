"""``digipath info``: describe multi-resolution images (levels, spacing, tiles, compression)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from digipath.errors import DigipathError
from digipath.io import ImageReader


def describe(path: str | Path) -> dict[str, Any]:
    """Return what ``digipath info`` reports about one image, as JSON-ready data.

    Keys: ``path``, ``backend``, ``vendor``, ``compression``, ``channels``, ``dtype``,
    ``levels`` (a list of ``{"level", "shape", "spacing", "downsampling", "tile_shape"}``
    with shapes as [rows, cols] in pixels and spacings in µm/px or ``null``) and
    ``associated`` (names of the associated images).
    """
    with ImageReader(path) as reader:
        return {
            "path": str(path),
            "backend": reader.backend,
            "vendor": reader.vendor,
            "compression": reader.compression,
            "channels": reader.channels,
            "dtype": str(reader.dtype),
            "levels": [
                {
                    "level": index,
                    "shape": list(shape),
                    "spacing": spacing,
                    "downsampling": downsampling,
                    "tile_shape": list(tile) if tile is not None else None,
                }
                for index, (shape, spacing, downsampling, tile) in enumerate(
                    zip(
                        reader.shapes,
                        reader.spacings,
                        reader.downsamplings,
                        reader.tile_shapes,
                        strict=True,
                    )
                )
            ],
            "associated": list(reader.associated),
        }


def _table(description: dict[str, Any]) -> Table:
    title = (
        f"{description['path']}\n{description['vendor']}, {description['compression']}, "
        f"{description['channels']} x {description['dtype']} "
        f"(backend {description['backend']})"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("level", justify="right")
    table.add_column("shape (rows x cols)", justify="right")
    table.add_column("spacing (µm/px)", justify="right")
    table.add_column("downsampling", justify="right")
    table.add_column("tile", justify="right")
    for level in description["levels"]:
        spacing = level["spacing"]
        tile = level["tile_shape"]
        table.add_row(
            str(level["level"]),
            f"{level['shape'][0]} x {level['shape'][1]}",
            f"{spacing:.5g}" if spacing is not None else "unknown",
            f"{level['downsampling']:.4g}",
            f"{tile[0]} x {tile[1]}" if tile else "-",
        )
    if description["associated"]:
        table.caption = "associated images: " + ", ".join(description["associated"])
        table.caption_justify = "left"
    return table


def info(
    paths: Annotated[list[Path], typer.Argument(help="Image files to describe.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Describe images: levels with shape, spacing and downsampling, tiles, compression."""
    console = Console(soft_wrap=True)
    errors = Console(stderr=True)
    descriptions = []
    failed = 0
    for path in paths:
        try:
            description = describe(path)
        except (DigipathError, OSError) as error:
            errors.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
            failed += 1
            continue
        descriptions.append(description)
        if not as_json:
            console.print(_table(description))
    if as_json:
        print(json.dumps(descriptions if len(paths) > 1 else (descriptions or [None])[0], indent=2))
    if failed:
        raise typer.Exit(code=1)
