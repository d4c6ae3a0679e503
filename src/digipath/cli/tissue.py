"""The tissue-mask command: tissue and artefact masks of slides, with a QC summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from digipath.cli.console import console
from digipath.errors import DigipathError

OVERLAY_COLOURS = {1: (40, 170, 60), 2: (0, 200, 200), 3: (230, 30, 30), 4: (30, 30, 30),
                   5: (240, 200, 0), 6: (30, 60, 230)}  # fmt: skip


def _overlay(thumbnail: np.ndarray, labels: np.ndarray, path: Path) -> None:
    import cv2

    picture = thumbnail[..., :3].astype(np.float32)
    for value, colour in OVERLAY_COLOURS.items():
        where = labels == value
        picture[where] = 0.55 * picture[where] + 0.45 * np.array(colour, np.float32)
    cv2.imwrite(str(path), cv2.cvtColor(picture.astype(np.uint8), cv2.COLOR_RGB2BGR))


def tissue_mask(
    slides: Annotated[list[Path], typer.Argument(help="Slides.")],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Mask path template with {image}.")
    ] = "{image}_tissue.tif",
    spacing: Annotated[float, typer.Option(help="Spacing of the masks (µm/px).")] = 8.0,
    qc: Annotated[
        bool, typer.Option(help="Write all labels (tissue, pens, edges, blur), not tissue only.")
    ] = False,
    overlay: Annotated[bool, typer.Option(help="Also write {image}_tissue.png over the slide.")] = (
        False
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON lines.")] = (
        False
    ),
) -> None:
    """Tissue (and artefact) masks of slides; the exit code is the number of failed slides."""
    from digipath.io import ImageReader
    from digipath.tissue import quality_mask, write_mask

    rows, failures = [], 0
    for slide in slides:
        target = Path(out.format(image=slide.stem))
        try:
            with ImageReader(slide) as reader:
                result = quality_mask(reader, spacing)
                labels = result.labels if qc else result.tissue.astype(np.uint8)
                target.parent.mkdir(parents=True, exist_ok=True)
                write_mask(target, labels, result.spacing)
                if overlay:
                    thumbnail = reader.read(result.spacing, 0, 0, *result.labels.shape)
                    _overlay(thumbnail, result.labels, target.with_suffix(".png"))
            entry = {"slide": str(slide), "mask": str(target),
                     "tissue fraction": round(result.tissue_fraction, 4),
                     **{f"{k} mm2": round(v, 4) for k, v in result.areas_mm2.items()}}  # fmt: skip
        except (DigipathError, OSError, ValueError) as error:
            failures += 1
            entry = {"slide": str(slide), "error": str(error)}
        rows.append(entry)
        if as_json:
            typer.echo(json.dumps(entry))
    if not as_json:
        table = Table("slide", "tissue", "tissue mm²", "pen mm²", "edge mm²", "blur mm²", "mask")
        for entry in rows:
            if "error" in entry:
                table.add_row(Path(entry["slide"]).name, "[red]failed[/red]", "", "", "", "",
                              entry["error"])  # fmt: skip
                continue
            pen = entry["pen green mm2"] + entry["pen red mm2"] + entry["pen blue mm2"]
            table.add_row(Path(entry["slide"]).name, f"{entry['tissue fraction']:.1%}",
                          f"{entry['tissue mm2']:.2f}", f"{pen:.2f}", f"{entry['edge mm2']:.2f}",
                          f"{entry['blur mm2']:.2f}", entry["mask"])  # fmt: skip
        console.print(table)
    raise typer.Exit(code=min(failures, 255))
