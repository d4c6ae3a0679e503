"""The ``digipath radhical`` commands: RADHicaL's level-wise training data (and, later, training,
cascade inference and threshold tuning).

Each command is a function registered on :data:`app` at the end of its section; shared option
parsing lives at the top, so the commands added later reuse it.
"""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from digipath.cli.console import console, fail
from digipath.errors import DigipathError

app = typer.Typer(
    help="RADHicaL: resolution-adaptive hierarchical inference (one small classifier per "
    "magnification, coarse to fine).",
    no_args_is_help=True,
)


# --------------------------------------------------------------------------------------------
# Shared option parsing


def parse_numbers(text: str, hint: str) -> list[float]:
    """``'0.25,0.5,1'`` as numbers."""
    try:
        values = [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"expected comma-separated numbers, got {text!r}", param_hint=hint
        ) from None
    if not values:
        raise typer.BadParameter(f"expected at least one number, got {text!r}", param_hint=hint)
    return values


def parse_assignments(text: str | None, hint: str, kind: type = int) -> dict[str, float | int]:
    """``'KEY=VALUE,KEY=VALUE'`` as a mapping (values of ``kind``)."""
    result: dict[str, float | int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, separator, value = part.partition("=")
        try:
            if not separator or not key.strip():
                raise ValueError
            result[key.strip()] = kind(value)
        except ValueError:
            raise typer.BadParameter(
                f"expected KEY=VALUE pairs, got {part!r}", param_hint=hint
            ) from None
    return result


def _format(pattern: str, image: Path) -> Path:
    try:
        return Path(pattern.format(name=image.stem, dir=str(image.parent), file=image.name))
    except (KeyError, IndexError, ValueError) as error:
        raise typer.BadParameter(
            f"{pattern!r}: only {{name}}, {{dir}} and {{file}} may be used ({error})"
        ) from None


def _read_list(path: Path) -> list[tuple[Path, Path, Path | None]]:
    """Rows ``image, mask[, background]`` of a list file (tabs, commas or spaces; ``#``
    comments; relative paths are relative to the file's folder)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        fail(f"{path}: cannot read the list: {error.strerror or error}")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" in line or "," in line:
            fields = next(csv.reader([line], delimiter="\t" if "\t" in line else ","))
        else:
            fields = line.split()
        fields = [value.strip() for value in fields if value.strip()]
        if len(fields) not in (2, 3):
            fail(
                f"{path}: line {number}: expected 'image mask' or 'image mask background', got "
                f"{len(fields)} columns"
            )
        paths = [
            Path(value) if Path(value).is_absolute() else path.parent / value for value in fields
        ]
        rows.append((paths[0], paths[1], paths[2] if len(paths) == 3 else None))
    if not rows:
        fail(f"{path}: the list names no images")
    return rows


def find_items(
    images: str | None, masks: str, listing: Path | None, background: str
) -> list[tuple[Path, Path, Path | None]]:
    """``(image, mask, background mask or None)`` of a glob and patterns, or of a list file.

    Files the glob matches that are the mask (or background mask) of another image are not
    images themselves, so ``'slides/*.tif'`` works with masks beside the slides.
    """
    if listing is not None:
        rows = _read_list(listing)
        if background != "heuristic":
            rows = [(image, mask, _format(background, image)) for image, mask, _ in rows]
        return rows
    if images is None:
        raise typer.BadParameter("give --images GLOB or --list FILE", param_hint="--images")
    files = sorted(Path(p) for p in glob.glob(images, recursive=True) if Path(p).is_file())
    rows = [
        (
            image,
            _format(masks, image),
            None if background == "heuristic" else _format(background, image),
        )
        for image in files
    ]
    derived = {path.resolve() for _, mask, other in rows for path in (mask, other) if path}
    rows = [row for row in rows if row[0].resolve() not in derived]
    if not rows:
        fail(f"no images match {images!r}")
    return rows


def progress_bar() -> Progress:
    """The progress bar of the radhical commands (on standard error)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


# --------------------------------------------------------------------------------------------
# patches: the level-wise training data


def _summary_table(summary) -> Table:
    names = list(dict.fromkeys(name for level in summary.levels for name in level.classes))
    table = Table(
        "level",
        "µm/px",
        "purpose",
        "images",
        "patients",
        *names,
        "total",
        title="RADHicaL training patches",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )
    for level in summary.levels:
        for purpose, entry in level.purposes.items():
            counts = [str(entry.classes[name]) if name in entry.classes else "" for name in names]
            table.add_row(
                str(level.index),
                f"{level.spacing:g}",
                purpose,
                str(entry.images),
                str(entry.patients),
                *counts,
                str(entry.patches),
            )
    return table


def patches(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Output folder (one database per level: level_<index>_<spacing>um)."
        ),
    ],
    images: Annotated[
        str | None,
        typer.Option("--images", "-i", help="Glob of the images (quote it), e.g. 'tiles/*.tif'."),
    ] = None,
    masks: Annotated[
        str,
        typer.Option(
            "--masks",
            "-m",
            help="Nucleus mask of each image (0/1 or 0/255, at the finest "
            "spacing): a pattern with {name} (image file name without suffix), {dir}, {file}.",
        ),
    ] = "{dir}/{name}_mask.tif",
    listing: Annotated[
        Path | None,
        typer.Option(
            "--list",
            help="Instead of --images/--masks: a file of 'image mask' or 'image mask background' "
            "lines (tab, comma or space separated).",
        ),
    ] = None,
    spacings: Annotated[
        str, typer.Option(help="Level spacings in µm/px, finest first (40x, 20x, 10x, 4x).")
    ] = "0.25,0.5,1,2.5",
    patch_size: Annotated[int, typer.Option(help="Patch side in pixels.")] = 32,
    caps: Annotated[
        str | None,
        typer.Option(
            help="Most positions per image and group, e.g. 'nucleus=500,edge=500,background=150,"
            "negative=500,mixed=500,positive=500' (the defaults; one patch per rotation each)."
        ),
    ] = None,
    rotations: Annotated[str, typer.Option(help="Rotations in degrees.")] = "0,90",
    purposes: Annotated[
        str, typer.Option(help="Purpose ratios, split by patient.")
    ] = "training=0.8,validation=0.2",
    patient: Annotated[
        str | None,
        typer.Option(
            help="Patient of an image: a regular expression on the file name (group 'patient' or "
            "1), or a CSV table with image and patient columns (default: the text before the "
            "first '_')."
        ),
    ] = None,
    background: Annotated[
        str,
        typer.Option(
            help="'heuristic' (the original's background heuristic) or a pattern with {name} "
            "naming a mask (e.g. a tissue mask) that is nonzero where negatives may be sampled."
        ),
    ] = "heuristic",
    seed: Annotated[int, typer.Option(help="Seed of the patient split and the draws.")] = 0,
    image_spacing: Annotated[
        float | None, typer.Option(help="Level-0 spacing (µm/px) of files that state none.")
    ] = None,
    max_pixels: Annotated[
        int,
        typer.Option(
            help="Images larger than this (pixels at the finest level) are processed in tiles."
        ),
    ] = 2**25,
    tile_size: Annotated[int, typer.Option(help="Tile side of the tiled processing.")] = 2048,
    overwrite: Annotated[bool, typer.Option(help="Replace existing databases.")] = False,
    skip_failures: Annotated[
        bool, typer.Option(help="Skip images that cannot be read (the exit code counts them).")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the summary as JSON lines (one per level and purpose)."),
    ] = False,
) -> None:
    """Cut level-wise training patches (one patch database per magnification)."""
    from digipath.radhical.patches import extract_level_patches

    rows = find_items(images, masks, listing, background)
    levels = parse_numbers(spacings, "--spacings")
    angles = parse_numbers(rotations, "--rotations")
    caps_map = parse_assignments(caps, "--caps", int)
    ratios = parse_assignments(purposes, "--purposes", float)
    patient_spec: str | Path | None = patient
    if patient and patient.lower().endswith(".csv") and Path(patient).is_file():
        patient_spec = Path(patient)
    others = [other for _, _, other in rows]
    try:
        with progress_bar() as bar:
            task = bar.add_task("patches", total=len(rows) * len(levels))
            summary = extract_level_patches(
                [(image, mask) for image, mask, _ in rows],
                out,
                levels,
                patch_size=patch_size,
                caps=caps_map,
                rotations=angles,
                purposes=ratios,
                patient=patient_spec,
                background="heuristic" if all(o is None for o in others) else others,
                seed=seed,
                image_spacing=image_spacing,
                max_pixels=max_pixels,
                tile_size=tile_size,
                overwrite=overwrite,
                skip_failures=skip_failures,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except DigipathError as error:
        fail(error)
    if as_json:
        for row in summary.rows():
            typer.echo(json.dumps(row))
    else:
        console.print(_summary_table(summary))
        console.print(f"databases: {out}/level_<index>_<spacing>um", highlight=False)
        for purpose, patients in summary.split.items():
            console.print(
                f"{purpose}: {len(patients)} patients ({', '.join(patients)})", highlight=False
            )
    for image, message in summary.failures:
        console.print(f"[red]skipped:[/red] {image}: {message}", highlight=False)
    raise typer.Exit(code=min(len(summary.failures), 255))


app.command(name="patches")(patches)
