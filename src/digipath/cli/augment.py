"""Augmentation commands: a preview grid of a pipeline on one patch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from digipath.cli.console import console, fail
from digipath.errors import DigipathError


def augment_preview(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="Augmentation YAML (DigitalPathology 'augmentation' section) or DeepHealth "
            "augmentation text.",
        ),
    ],
    image: Annotated[Path, typer.Option("--image", "-i", help="Patch to augment (PNG/JPEG/TIFF).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG grid to write.")],
    purpose: Annotated[str, typer.Option(help="Purpose in the YAML (training, validation).")] = (
        "training"
    ),
    count: Annotated[int, typer.Option(min=1, help="Number of draws shown.")] = 15,
    columns: Annotated[int, typer.Option(min=1, help="Cells per grid row.")] = 4,
    size: Annotated[
        int | None,
        typer.Option(min=1, help="Output patch side in pixels (default: the largest that fits)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the draws.")] = 0,
) -> None:
    """Draw a grid of one patch under many draws of an augmentation pipeline."""
    from digipath.augment.preview import load_pipeline, preview_grid, read_patch, write_png

    try:
        pool = load_pipeline(config, purpose, rng=seed)
        patch = read_patch(image)
        grid = preview_grid(
            pool, patch, count=count, columns=columns,
            target_shape=None if size is None else (size, size), rng=seed,
        )  # fmt: skip
        written = write_png(out, grid)
    except (DigipathError, OSError) as error:
        fail(error)
    console.print(f"wrote {written} ({grid.shape[1]} x {grid.shape[0]} px, {count} draws)")
