"""The ``apply`` command: a network over every slide of a file, folder, pattern or data config."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from digipath.cli.console import console, fail, number_pair, path_replacements
from digipath.errors import DigipathError

IMAGE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".svslide")


def find_slides(
    source: str,
    purposes: list[str] | None = None,
    categories: list[str] | None = None,
    *,
    replacements: dict[str, str] | None = None,
    pattern: str | None = None,
    masks: bool = True,
) -> list[tuple[Path, Path | None]]:
    """``(image, mask or None)`` pairs of a file, folder, glob pattern or data config.

    ``replacements`` override a data config's path tags, ``pattern`` (a regular expression)
    keeps the images whose file name it matches, ``masks=False`` ignores a data config's masks.
    """
    import re

    pairs = _sources(source, purposes, categories, replacements or {})
    if pattern is not None:
        expression = re.compile(pattern)
        pairs = [pair for pair in pairs if expression.search(pair[0].name)]
    return pairs if masks else [(image, None) for image, _ in pairs]


def _sources(source, purposes, categories, replacements) -> list[tuple[Path, Path | None]]:
    path = Path(source)
    if path.suffix.lower() in (".yaml", ".yml", ".json") and path.is_file():
        from digipath.data.config import DataConfig

        config = DataConfig.load(path, overrides=replacements)
        pairs = []
        for purpose, by_category in config.collection().items():
            if purposes and purpose not in purposes:
                continue
            for category, items in by_category.items():
                if categories and category not in categories:
                    continue
                pairs.extend((Path(item.image), Path(item.mask) if item.mask else None)
                             for item in items)  # fmt: skip
        return pairs
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(source) if Path(p).is_file())
    return [(file, None) for file in files]


def _format(template: str, image: Path, mask: Path | None, model: Path) -> Path:
    try:
        return Path(template.format(image=image.stem, mask=mask.stem if mask else "",
                                    model=model.stem))  # fmt: skip
    except (KeyError, IndexError, ValueError) as error:
        raise typer.BadParameter(
            f"{template!r}: the templates know {{image}}, {{mask}} and {{model}} ({error})"
        ) from None


def apply(
    source: Annotated[str, typer.Argument(help="Slide, folder, glob pattern or data config.")],
    model: Annotated[Path, typer.Option("--model", "-n", help="Model file (.safetensors).")],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Output template ({image}, {mask}, {model}): .tif map, .geojson or .xml outlines.",
        ),
    ],
    spacing: Annotated[float, typer.Option("--spacing", "-l", help="Processing spacing in µm/px.")],
    mask: Annotated[
        str | None,
        typer.Option(
            "--mask",
            "-m",
            help="Mask file, template with {image}, or 'auto' (tissue detected per slide).",
        ),
    ] = None,
    tile_size: Annotated[int, typer.Option("--tile-size", "-p", min=16)] = 1024,
    batch_size: Annotated[int, typer.Option(min=1, help="Tiles per forward pass.")] = 4,
    output_class: Annotated[
        int | None, typer.Option("--output-class", "-c", help="Keep this class (soft).")
    ] = None,
    soft: Annotated[bool, typer.Option("--soft", "-s", help="Probabilities, not labels.")] = False,
    quantize: Annotated[
        bool, typer.Option("--quantize", "-q", help="Soft output as uint8.")
    ] = False,
    channels: Annotated[
        str | None, typer.Option(help="Input channels, e.g. '0,1,2' (default: all).")
    ] = None,
    padding: Annotated[str, typer.Option(help="Outside the image: constant or reflect.")] = (
        "constant"
    ),
    fill: Annotated[float, typer.Option(help="Constant padding value.")] = 255,
    overlap: Annotated[int, typer.Option(min=0, help="Overlap (same-padded nets).")] = 0,
    blending: Annotated[str, typer.Option(help="linear or gaussian.")] = "linear",
    augment: Annotated[
        bool, typer.Option("--augment", help="Test-time augmentation (8 flips/rotations).")
    ] = False,
    tolerance: Annotated[float, typer.Option(help="Relative spacing tolerance.")] = 0.25,
    purposes: Annotated[
        list[str] | None, typer.Option("--purpose", help="Data config purposes to apply to.")
    ] = None,
    categories: Annotated[
        list[str] | None, typer.Option("--category", help="Data config categories.")
    ] = None,
    path: Annotated[
        list[str] | None, typer.Option("--path", help="Data config path replacement TAG=VALUE.")
    ] = None,
    name_filter: Annotated[
        str | None, typer.Option("--filter", help="Regular expression on the image file names.")
    ] = None,
    no_mask: Annotated[
        bool, typer.Option("--no-mask", help="Ignore the masks a data config lists.")
    ] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, auto.")] = None,
    normalizer: Annotated[
        str | None,
        typer.Option(help="rgb_to_0-1, rgb, general or pass-through (default: the model's)."),
    ] = None,
    source_range: Annotated[
        str | None, typer.Option(help="'low,high' of the general normaliser's input.")
    ] = None,
    target_range: Annotated[
        str | None, typer.Option(help="'low,high' of the rgb and general normalisers' output.")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Write outputs here first, move them when complete.")
    ] = None,
    copy_dir: Annotated[
        Path | None, typer.Option(help="Copy each slide (and mask) here before reading it.")
    ] = None,
    keep_copies: Annotated[bool, typer.Option(help="Keep the copies of --copy-dir.")] = False,
    output_spacing: Annotated[
        float | None, typer.Option(help="Resample the result to this spacing (µm/px).")
    ] = None,
    confidence: Annotated[
        float, typer.Option(help="Threshold a soft output: value >= confidence is 1.")
    ] = 0.0,
    region_diagonal: Annotated[
        float, typer.Option(help="Remove regions with a bounding-box diagonal <= this (µm).")
    ] = 0.0,
    dilation: Annotated[float, typer.Option(help="Dilate the result by this distance (µm).")] = 0.0,
    hole_diagonal: Annotated[
        float, typer.Option(help="Fill holes with a bounding-box diagonal <= this (µm).")
    ] = 0.0,
    keep_intermediates: Annotated[
        bool, typer.Option(help="Keep the prediction and intermediate maps.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Slides in parallel on a local Dask cluster.")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address (e.g. from dask-jobqueue).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Recompute existing outputs.")] = False,
) -> None:
    """Apply a network to whole slides; the exit code is the number of failed slides.

    One failing slide never stops the others; an interrupted slide resumes where it stopped.
    With --workers or --scheduler, one task per slide runs on a Dask cluster.
    """
    from digipath.inference.cluster import Job, JobResult, apply_many
    from digipath.models.files import read_header

    try:
        read_header(model)  # a bad model file stops everything before any slide
    except DigipathError as error:
        fail(error)
    replacements = path_replacements(path)
    try:
        slides = find_slides(source, purposes, categories, replacements=replacements,
                             pattern=name_filter, masks=not no_mask)  # fmt: skip
    except (DigipathError, ValueError) as error:  # a bad data config or expression
        fail(error)
    if not slides:
        console.print(f"[red]error:[/red] no slides found in {source!r}", highlight=False)
        raise typer.Exit(code=1)
    selected = None if channels is None else [int(c) for c in channels.split(",") if c.strip()]
    jobs, skipped = [], []
    for image, listed_mask in slides:
        mask_path = listed_mask
        if mask is not None and mask != "auto":
            mask_path = _format(mask, image, None, model) if "{" in mask else Path(mask)
            if not mask_path.exists():
                skipped.append(JobResult(Job(str(image), ""), "skipped", f"no mask {mask_path}"))
                continue
        target = _format(output, image, mask_path, model)
        jobs.append(Job(str(image), str(target), None if mask_path is None else str(mask_path)))
    options = dict(
        spacing=spacing, tile_size=tile_size, batch_size=batch_size, output_class=output_class,
        soft=soft, quantize=quantize, channels=selected, padding=padding, fill=fill,
        overlap=overlap, blending=blending, augment=augment, tolerance=tolerance,
        overwrite=overwrite,
    )  # fmt: skip
    if normalizer is not None:
        section = {"type": normalizer}
        for key, text, name in (("source range", source_range, "--source-range"),
                                ("target range", target_range, "--target-range")):  # fmt: skip
            if text is not None:
                section[key] = number_pair(text, name)
        options["normalization"] = section
    for key, value in (("work_dir", work_dir), ("copy_dir", copy_dir)):
        if value is not None:
            options[key] = str(value)
    options["keep_copies"] = keep_copies
    options["auto_mask"] = mask == "auto"
    chain = {
        "output_spacing": output_spacing, "soft": soft and not confidence,
        "confidence": confidence, "region_diagonal_um": region_diagonal,
        "dilation_um": dilation, "hole_diagonal_um": hole_diagonal,
        "keep_intermediates": keep_intermediates,
    }  # fmt: skip
    if any(value for key, value in chain.items() if key not in ("keep_intermediates", "soft")):
        options["postprocess"] = chain
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:  # fmt: skip
        task = progress.add_task("slides", total=len(jobs))
        results = apply_many(
            jobs, model, options, workers=workers, scheduler=scheduler, device=device,
            progress=lambda result, done, total: progress.update(task, completed=done),
        )  # fmt: skip
    table = Table("slide", "result", "detail")
    for result in [*results, *skipped]:
        colour = {"failed": "red", "skipped": "yellow"}.get(result.state, "green")
        detail = (
            result.detail if result.state != "done" else f"{result.job.output} ({result.detail})"
        )
        table.add_row(Path(result.job.image).name, f"[{colour}]{result.state}[/{colour}]", detail)
    Console(stderr=True, width=max(120, console.width)).print(table)
    failures = sum(result.state == "failed" for result in results)
    raise typer.Exit(code=min(failures, 255))
