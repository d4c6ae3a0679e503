"""Data preparation commands: mask statistics, mask remapping, datasets and splits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from digipath.cli.console import console, fail, path_replacements
from digipath.errors import DigipathError


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def preprocess_masks(
    config: Annotated[Path, typer.Argument(help="Data config (YAML or JSON).")],
    mask_spacing: Annotated[
        float, typer.Option("--mask-spacing", "-s", help="Spacing of the mask level, µm/px.")
    ],
    tolerance: Annotated[float, typer.Option(help="Relative spacing tolerance.")] = 0.25,
    overwrite: Annotated[bool, typer.Option(help="Rebuild existing .stat files.")] = False,
    path: Annotated[
        list[str] | None, typer.Option("--path", help="Path replacement TAG=VALUE.")
    ] = None,
) -> None:
    """Build the .stat file of every item of a data config.

    Continues past failing items and reports them; the exit code is the number of failures.
    """
    from digipath.data.config import DataConfig
    from digipath.data.masks import preprocess_masks as build

    try:
        items = DataConfig.load(config, overrides=path_replacements(path)).items()
    except DigipathError as error:
        fail(error)
    with _progress() as progress:
        task = progress.add_task("mask statistics", total=len(items))
        results = build(
            items,
            mask_spacing,
            tolerance=tolerance,
            overwrite=overwrite,
            progress=lambda done, total, result: progress.update(task, completed=done),
        )
    failures = [r for r in results if r.error]
    skipped = sum(r.skipped for r in results)
    console.print(
        f"{len(results) - len(failures) - skipped} built, {skipped} kept, {len(failures)} failed"
    )
    for result in failures:
        console.print(f"[red]failed:[/red] {result.image}: {result.error}", highlight=False)
    raise typer.Exit(code=min(len(failures), 255))


def normalize_masks(
    source: Annotated[Path, typer.Argument(help="Input mask.")],
    target: Annotated[Path, typer.Argument(help="Output mask (tiled pyramidal TIFF).")],
    mapping: Annotated[
        list[str], typer.Option("--map", "-m", help="Value remapping OLD=NEW (repeatable).")
    ],
    default: Annotated[
        int | None, typer.Option(help="New value of unlisted values (default: unchanged).")
    ] = None,
    spacing: Annotated[
        float | None, typer.Option(help="Spacing of the level to copy, µm/px (default level 0).")
    ] = None,
) -> None:
    """Remap the label values of a mask (e.g. --map 3=1 --map 4=1)."""
    from digipath.data.masks import remap_mask

    pairs = {}
    for item in mapping:
        old, separator, new = item.partition("=")
        try:
            pairs[int(old)] = int(new)
        except ValueError:
            raise typer.BadParameter(f"expected OLD=NEW integers, got {item!r}") from None
        if not separator:
            raise typer.BadParameter(f"expected OLD=NEW, got {item!r}")
    try:
        with _progress() as progress:
            task = progress.add_task(f"remapping {source.name}", total=None)
            remap_mask(
                source,
                target,
                pairs,
                spacing=spacing,
                default=default,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except (DigipathError, OSError) as error:
        fail(error)
    console.print(f"wrote {target}")


def make_dataset(
    root: Annotated[Path, typer.Argument(help="Folder tree of images (splits, classes).")],
    output: Annotated[Path, typer.Argument(help="DeepHealth dataset YAML to write.")],
    task: Annotated[str, typer.Option(help="classification or segmentation.")] = "classification",
    suffix: Annotated[
        str | None, typer.Option(help="Ground-truth file suffix (images and masks together).")
    ] = None,
    gt_name: Annotated[
        str | None, typer.Option(help="One ground-truth file shared by all images.")
    ] = None,
) -> None:
    """Write a DeepHealth dataset YAML from a folder tree."""
    from digipath.data.deephealth import make_dataset as build
    from digipath.data.deephealth import save_dataset

    if task not in ("classification", "segmentation"):
        raise typer.BadParameter(f"expected classification or segmentation, got {task!r}")
    try:
        dataset = build(root, task, suffix=suffix, gt_name=gt_name)  # type: ignore[arg-type]
        save_dataset(dataset, output)
    except (DigipathError, OSError) as error:
        fail(error)
    console.print(f"wrote {output}: {len(dataset.images)} images, splits {list(dataset.split)}")


def split(
    config: Annotated[Path, typer.Argument(help="Data config to split (YAML or JSON).")],
    output: Annotated[Path, typer.Argument(help="Distributed data config to write.")],
    ratio: Annotated[list[str], typer.Option("--ratio", "-r", help="PURPOSE=RATIO (repeatable).")],
    seed: Annotated[int, typer.Option(help="Seed of the random split.")] = 0,
    patient_pattern: Annotated[
        str | None,
        typer.Option(help="Regex for the patient id in file names (default: text before '_')."),
    ] = None,
    patient_table: Annotated[
        Path | None, typer.Option(help="CSV with image and patient columns.")
    ] = None,
) -> None:
    """Split a data config over purposes by patient: no patient is in two purposes."""
    from digipath.data.config import DataConfig
    from digipath.data.split import split_config

    ratios = {}
    for item in ratio:
        purpose, separator, value = item.partition("=")
        try:
            ratios[purpose] = float(value)
        except ValueError:
            raise typer.BadParameter(f"expected PURPOSE=RATIO, got {item!r}") from None
        if not separator or not purpose:
            raise typer.BadParameter(f"expected PURPOSE=RATIO, got {item!r}")
    patient = patient_table if patient_table is not None else patient_pattern
    try:
        result = split_config(DataConfig.load(config), ratios, seed, patient=patient)
        result.save(output)
    except (DigipathError, OSError) as error:
        fail(error)
    counts = {purpose: result.count(purpose) for purpose in result.purposes()}
    console.print(f"wrote {output}: {json.dumps(counts)}")
