"""The ``digipath radhical`` commands: level-wise training data, per-level training, full level
outputs, threshold tuning and cascade inference.

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


# --------------------------------------------------------------------------------------------
# train: one experiment per level


def train(
    parameters: Annotated[
        Path, typer.Argument(help="Parameter file (an experiment's, plus a 'levels' section).")
    ],
    databases: Annotated[
        Path, typer.Argument(help="Folder of level databases (from 'digipath radhical patches').")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Experiments go to OUT/level_<index>/.")],
    level: Annotated[
        list[int] | None,
        typer.Option("--level", "-l", help="Train only this level (repeatable; 0 = finest)."),
    ] = None,
    processes: Annotated[
        int, typer.Option(min=1, help="Levels trained at once in local processes.")
    ] = 1,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address: one task per level.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed (the level index is added).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue interrupted experiments.")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, auto.")] = None,
) -> None:
    """Train the classifier of every level (one experiment each); list them in levels.yaml."""
    from digipath.radhical.training import LEVELS_FILE, train_levels

    try:
        results = train_levels(
            parameters, databases, out, levels=level, processes=processes, scheduler=scheduler,
            seed=seed, resume=resume, device=device,
            progress=lambda index, result: console.print(
                f"level {index}: best {result['summary'].get('best_metric')} at epoch "
                f"{result['summary'].get('best_epoch')}: {result['model']}", highlight=False,
            ),
        )  # fmt: skip
    except DigipathError as error:
        fail(error)
    levels_file = out / LEVELS_FILE
    if levels_file.exists():
        console.print(f"levels: {levels_file}", highlight=False)
    else:
        console.print(f"trained levels {sorted(results)}; train the others to get {levels_file}")


app.command(name="train")(train)


# --------------------------------------------------------------------------------------------
# outputs and tune: the threshold search on validation slides


def _load_levels(levels: Path, device: str | None):
    from digipath.models import load_model
    from digipath.radhical.training import read_levels

    entries = read_levels(levels)
    return [spacing for spacing, _ in entries], [load_model(p, device) for _, p in entries]


def _full_outputs(levels: Path, images: list[Path], folder: Path, masks, device) -> list:
    from digipath.radhical.cascade import full_outputs

    spacings, models = _load_levels(levels, device)
    result = []
    with progress_bar() as bar:
        task = bar.add_task("full outputs", total=len(images))
        for image, tissue in zip(images, masks, strict=True):
            result.append(full_outputs(models, image, folder, spacings, mask=tissue))
            bar.advance(task)
    return spacings, result


def outputs(
    levels: Annotated[Path, typer.Argument(help="levels.yaml (from 'digipath radhical train').")],
    images: Annotated[str, typer.Option("--images", "-i", help="Glob of the slides (quoted).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the level maps.")],
    tissue: Annotated[
        str | None, typer.Option(help="Tissue mask pattern with {name}, {dir}, {file}.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, auto.")] = None,
) -> None:
    """Compute every level at every pixel (the maps the threshold search needs)."""
    files = sorted(Path(p) for p in glob.glob(images, recursive=True) if Path(p).is_file())
    if not files:
        fail(f"no images match {images!r}")
    masks = [None if tissue is None else _format(tissue, f) for f in files]
    try:
        _, maps = _full_outputs(levels, files, out, masks, device)
    except DigipathError as error:
        fail(error)
    for image, paths in zip(files, maps, strict=True):
        typer.echo(json.dumps({"image": str(image), "maps": [str(p) for p in paths]}))


app.command(name="outputs")(outputs)


def tune(
    levels: Annotated[Path, typer.Argument(help="levels.yaml (from 'digipath radhical train').")],
    images: Annotated[
        str, typer.Option("--images", "-i", help="Glob of the validation slides (quoted).")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Folder for thresholds.yaml, curves, summary, plot."),
    ],
    masks: Annotated[
        str, typer.Option("--masks", "-m", help="Nucleus mask pattern with {name}, {dir}, {file}.")
    ] = "{dir}/{name}_mask.tif",
    tissue: Annotated[
        str | None, typer.Option(help="Tissue mask pattern (restricts the coarsest level).")
    ] = None,
    maps: Annotated[
        Path | None,
        typer.Option(help="Folder of the full level maps (computed there when missing)."),
    ] = None,
    objective: Annotated[
        str, typer.Option(help="'loss': least compute within --max-loss; 'budget': best F.")
    ] = "loss",
    max_loss: Annotated[
        float, typer.Option(help="F-score the cascade may lose against the naive run.")
    ] = 0.02,
    budget: Annotated[
        float | None, typer.Option(help="Largest compute fraction (naive = 1) for 'budget'.")
    ] = None,
    grid: Annotated[
        int, typer.Option(min=3, help="Threshold values on [0, 1] per step (plus 0-0.1 by 0.01).")
    ] = 41,
    schedule: Annotated[str, typer.Option(help="'even' or 'greedy' loss spending.")] = "even",
    device: Annotated[str | None, typer.Option(help="cpu, cuda, auto.")] = None,
) -> None:
    """Search the thresholds on validation slides; print and plot the trade-off per level."""
    from digipath.radhical.tune import load_validation_image, threshold_grid
    from digipath.radhical.tune import tune as search

    files = sorted(Path(p) for p in glob.glob(images, recursive=True) if Path(p).is_file())
    truths = [_format(masks, f) for f in files]
    derived = {t.resolve() for t in truths}
    pairs = [(f, t) for f, t in zip(files, truths, strict=True) if f.resolve() not in derived]
    if not pairs:
        fail(f"no images match {images!r}")
    tissues = [None if tissue is None else _format(tissue, f) for f, _ in pairs]
    values = threshold_grid(grid)
    try:
        spacings, level_maps = _full_outputs(
            levels, [f for f, _ in pairs], maps or out / "maps", tissues, device
        )
        validation = [
            load_validation_image(paths, truth, tissue_path, spacings=spacings)
            for paths, (_, truth), tissue_path in zip(level_maps, pairs, tissues, strict=True)
        ]
        with progress_bar() as bar:
            task = bar.add_task("threshold search", total=None)
            result = search(
                validation, spacings, objective=objective, max_fscore_loss=max_loss,
                compute_budget=budget, grid=values, schedule=schedule,
                progress=lambda name, done, total: bar.update(task, description=name),
            )  # fmt: skip
        files_written = result.save(out)
    except DigipathError as error:
        fail(error)
    table = Table("step", "value", "F", "compute", title="threshold search", box=box.SIMPLE_HEAD)
    for curve in result.curves:
        table.add_row(curve.name, f"{curve.value:g}", f"{curve.f_score[curve.chosen]:.4f}",
                      f"{curve.compute_fraction[curve.chosen]:.4f}")  # fmt: skip
    console.print(table)
    console.print(
        f"F {result.f_score:.4f} (naive {result.naive_f_score:.4f}), compute fraction "
        f"{result.compute_fraction:.4f} of the naive run", highlight=False,
    )  # fmt: skip
    for name, path in files_written.items():
        console.print(f"{name}: {path}", highlight=False)


app.command(name="tune")(tune)


# --------------------------------------------------------------------------------------------
# apply: the cascade


def apply(
    levels: Annotated[Path, typer.Argument(help="levels.yaml (from 'digipath radhical train').")],
    images: Annotated[str, typer.Option("--images", "-i", help="Slide or glob (quoted).")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Output template with {name}: a .tif mask.")
    ],
    thresholds: Annotated[
        Path | None,
        typer.Argument(help="thresholds.yaml (from 'digipath radhical tune'); none with --naive."),
    ] = None,
    mask: Annotated[
        str | None, typer.Option("--mask", help="Tissue mask pattern with {name}, {dir}, {file}.")
    ] = None,
    naive: Annotated[
        bool, typer.Option(help="Every pixel at the finest level only (the baseline).")
    ] = False,
    threshold: Annotated[
        float | None, typer.Option(help="P(nucleus) threshold with --naive (default 0.5).")
    ] = None,
    fill_holes: Annotated[
        float, typer.Option(help="Fill holes up to this diagonal in µm (0: off).")
    ] = 20.0,
    overwrite: Annotated[bool, typer.Option(help="Recompute existing outputs.")] = False,
    keep_levels: Annotated[bool, typer.Option(help="Keep the per-level maps.")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, auto.")] = None,
) -> None:
    """Run the cascade (coarse levels decide where finer ones compute); print each report."""
    from digipath.radhical.cascade import cascade_apply
    from digipath.radhical.decisions import Thresholds

    files = sorted(Path(p) for p in glob.glob(images, recursive=True) if Path(p).is_file())
    if not files:
        fail(f"no images match {images!r}")
    try:
        spacings, models = _load_levels(levels, device)
        if naive:
            final = threshold if threshold is not None else (
                Thresholds.load(thresholds).final if thresholds is not None else 0.5
            )  # fmt: skip
            chosen, models = Thresholds(tuple(spacings[:1]), final), models[:1]
        elif thresholds is None:
            fail("give the thresholds file (or --naive)")
        else:
            chosen = Thresholds.load(thresholds)
            if tuple(chosen.spacings) != tuple(spacings):
                fail(f"{thresholds}: its levels {chosen.spacings} are not those of {levels} "
                     f"({tuple(spacings)})")  # fmt: skip
        with progress_bar() as bar:
            for image in files:
                target = Path(_format(output, image))
                target.parent.mkdir(parents=True, exist_ok=True)
                task = bar.add_task(image.name, total=None)
                report = cascade_apply(
                    models, image, target, chosen,
                    mask=None if mask is None else _format(mask, image),
                    fill_holes_um=fill_holes or None, keep_levels=keep_levels,
                    overwrite=overwrite,
                    report=target.with_name(target.stem + "_report.json"),
                    progress=lambda level, done, total, t=task, n=image.name: bar.update(
                        t, completed=done, total=total, description=f"{n} level {level}"
                    ),
                )  # fmt: skip
                bar.remove_task(task)
                typer.echo(json.dumps({"image": str(image), **report.to_dict()}))
    except DigipathError as error:
        fail(error)


app.command(name="apply")(apply)
