"""The ``digipath nuclei`` commands: HoVer-Net training, segmentation of images and slides, stats.

``apply`` runs a HoVer-Net model file over images (tile mode: each image at once) or slides (WSI
mode: tile by tile with margins, resumable) and writes the formats asked for; ``stats`` counts
the nuclei of GeoJSON or hover_net JSON files per type, with areas and densities; ``train``
runs the two-phase recipe (:func:`~digipath.nuclei.training.train_hovernet`) on annotated tiles.
"""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from digipath.cli.console import console, fail
from digipath.errors import DigipathError

app = typer.Typer(
    help="HoVer-Net nuclei: segment images and slides, summarise the results.",
    no_args_is_help=True,
)

TILE_FORMATS = ("geojson", "json", "tiff", "overlay")
_PLAIN_IMAGES = (".png", ".jpg", ".jpeg", ".bmp")


def _load_model(path: Path, device: str | None):
    """The model file as a built model (a function, so tests can substitute a stand-in)."""
    from digipath.models import load_model

    return load_model(path, device, optimizer=False)


def _formats(text: str, mode: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    allowed = TILE_FORMATS if mode == "tile" else ("geojson", "json", "tiff")
    wrong = [f for f in formats if f not in allowed]
    if wrong or not formats:
        raise typer.BadParameter(
            f"expected a comma-separated list of {', '.join(allowed)} in {mode} mode, got {text!r}",
            param_hint="--format",
        )
    return formats


def _read_image(path: Path, spacing: float | None) -> tuple[np.ndarray, float | None, float]:
    """``(RGB uint8 image, its spacing or None, level-0 pixels per image pixel)``."""
    if path.suffix.lower() in _PLAIN_IMAGES:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise DigipathError(f"{path}: cannot be read as an image")
        return np.ascontiguousarray(image[:, :, ::-1]), spacing, 1.0
    from digipath.io import ImageReader

    with ImageReader(path) as reader:
        level0 = reader.spacings[0]
        read_at = spacing if spacing is not None else level0
        if read_at is None:
            raise DigipathError(f"{path}: states no pixel spacing; pass --spacing")
        actual = reader.refine(read_at)
        rows, cols = reader.shape(read_at)
        image = reader.read(read_at, 0, 0, rows, cols)
    if image.shape[2] != 3:
        raise DigipathError(f"{path}: expected an RGB image, got {image.shape[2]} channels")
    return np.ascontiguousarray(image.astype(np.uint8)), actual, actual / level0


@app.command()
def apply(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="HoVer-Net model file.")],
    images: Annotated[str, typer.Option("--images", "-i", help="Image file or glob pattern.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created).")],
    mode: Annotated[
        str, typer.Option("--mode", help="tile: each image at once; wsi: slides tile by tile.")
    ] = "tile",
    spacing: Annotated[
        float | None,
        typer.Option("--spacing", "-s", help="Processing spacing, µm/px (wsi: required)."),
    ] = None,
    formats: Annotated[
        str, typer.Option("--format", "-f", help="Comma-separated: geojson,json,tiff,overlay.")
    ] = "geojson",
    type_info: Annotated[
        Path | None, typer.Option("--type-info", help="HoVer-Net type_info.json.")
    ] = None,
    mask: Annotated[
        str | None,
        typer.Option("--mask", help="wsi: tissue mask path, '{image}' replaced by the stem."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 8,
    tile_size: Annotated[
        int, typer.Option("--tile-size", min=16, help="wsi: core side, px.")
    ] = 2048,
    margin: Annotated[int, typer.Option("--margin", min=0, help="wsi: context, px.")] = 128,
    padding: Annotated[str, typer.Option("--padding", help="reflect or constant.")] = "reflect",
    draw_dot: Annotated[bool, typer.Option("--draw-dot", help="Overlay: centroid dots.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute outputs.")] = False,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 ...")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="wsi: local Dask worker processes.")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="wsi: Dask scheduler address (a cluster).")
    ] = None,
) -> None:
    """Segment and classify the nuclei of images (tile mode) or whole slides (wsi mode).

    In wsi mode ``--workers`` or ``--scheduler`` run the slides as Dask tasks (one slide per
    task, each worker loading the model once per task), locally or on a cluster.
    """
    if mode not in ("tile", "wsi"):
        raise typer.BadParameter(f"expected tile or wsi, got {mode!r}", param_hint="--mode")
    wanted = _formats(formats, mode)
    if mode == "wsi" and spacing is None:
        raise typer.BadParameter(
            "the processing spacing is required in wsi mode", param_hint="--spacing"
        )
    if spacing is not None and not (math.isfinite(spacing) and spacing > 0):
        raise typer.BadParameter(
            f"expected a positive spacing, got {spacing}", param_hint="--spacing"
        )
    files = sorted(Path(p) for p in glob.glob(images)) if glob.has_magic(images) else [Path(images)]
    files = [f for f in files if f.is_file()]
    if not files:
        fail(f"no image matches {images!r}")
    if not model_path.is_file():
        fail(f"{model_path}: no such model file")
    try:
        from digipath.nuclei.io import read_type_info

        info = read_type_info(type_info) if type_info is not None else None
        model = _load_model(model_path, device)
    except DigipathError as error:
        fail(error)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "wsi" and (workers or scheduler):
        options = {
            "wanted": wanted, "spacing": spacing, "type_info": type_info, "mask": mask,
            "batch_size": batch_size, "tile_size": tile_size, "margin": margin,
            "padding": padding, "overwrite": overwrite, "device": device,
        }  # fmt: skip
        failed = 0
        for path, (state, message) in _on_dask(model_path, files, out, options, workers,
                                               scheduler):  # fmt: skip
            if state == "failed":
                failed += 1
                console.print(f"[red]failed:[/red] {path}: {message}", highlight=False,
                              soft_wrap=True)  # fmt: skip
            else:
                console.print(f"{path.name}: {message}", highlight=False)
        if failed:
            console.print(f"[red]{failed} of {len(files)} images failed[/red]")
            raise typer.Exit(code=1)
        return
    failed = 0
    for path in files:
        try:
            if mode == "tile":
                count = _apply_tile(
                    model,
                    path,
                    out,
                    wanted,
                    spacing,
                    info,
                    batch_size,
                    padding,
                    draw_dot,
                    overwrite,
                )
            else:
                count = _apply_wsi(
                    model,
                    path,
                    out,
                    wanted,
                    spacing,
                    info,
                    mask,
                    batch_size,
                    tile_size,
                    margin,
                    padding,
                    overwrite,
                )
        except (DigipathError, OSError) as error:
            failed += 1
            console.print(f"[red]failed:[/red] {path}: {error}", highlight=False, soft_wrap=True)
            continue
        console.print(f"{path.name}: {count}", highlight=False)
    if failed:
        console.print(f"[red]{failed} of {len(files)} images failed[/red]")
        raise typer.Exit(code=1)


def _apply_tile(
    model, path, out, wanted, spacing, info, batch_size, padding, draw_dot, overwrite
) -> str:
    from digipath.nuclei import export
    from digipath.nuclei.inference import segment_tile

    stem = path.stem
    targets = {
        "geojson": out / f"{stem}.geojson",
        "json": out / f"{stem}.json",
        "tiff": out / f"{stem}_labels.tif",
        "overlay": out / f"{stem}_overlay.png",
    }
    if not overwrite and all(targets[f].exists() for f in wanted):
        return "exists (use --overwrite)"
    image, actual, downsample = _read_image(path, spacing)
    nuclei = segment_tile(model, image, batch_size=batch_size, padding=padding, spacing=actual)
    if "geojson" in wanted:
        export.write_geojson(nuclei, targets["geojson"], downsample=downsample, type_info=info)
    if "json" in wanted:
        mag = None if actual is None else 10.0 / actual
        export.write_hovernet_json(nuclei, targets["json"], mag=mag)
    if "tiff" in wanted:
        export.write_label_tiff(nuclei.instances, targets["tiff"], spacing=actual)
    if "overlay" in wanted:
        export.write_overlay(image, nuclei, targets["overlay"], type_info=info, draw_dot=draw_dot)
    return f"{len(nuclei)} nuclei"


def _apply_wsi(
    model, path, out, wanted, spacing, info, mask, batch_size, tile_size, margin, padding, overwrite
) -> str:
    from digipath.nuclei.inference import segment_slide

    mask_path = None
    if mask is not None:
        mask_path = Path(mask.replace("{image}", path.stem))
        if not mask_path.is_file():
            raise DigipathError(f"{mask_path}: no such mask")
    result = segment_slide(
        model,
        path,
        out / path.stem,
        spacing=spacing,
        mask=mask_path,
        tile_size=tile_size,
        margin=margin,
        formats=wanted,
        type_info=info,
        batch_size=batch_size,
        padding=padding,
        overwrite=overwrite,
    )
    if result.existed:
        return "exists (use --overwrite)"
    return (
        f"{result.nuclei} nuclei, {result.computed} tiles computed, {result.skipped} "
        f"skipped, {result.seconds:.1f} s"
    )


def slide_job(model_path: str, path: str, out: str, options: dict) -> tuple[str, str]:
    """One slide in a Dask worker: load the model, segment, ``("done" | "failed", message)``."""
    from digipath.nuclei.io import read_type_info

    try:
        model = _load_model(Path(model_path), options["device"])
        info = read_type_info(options["type_info"]) if options["type_info"] else None
        message = _apply_wsi(
            model, Path(path), Path(out), options["wanted"], options["spacing"], info,
            options["mask"], options["batch_size"], options["tile_size"], options["margin"],
            options["padding"], options["overwrite"],
        )  # fmt: skip
    except (DigipathError, OSError) as error:
        return "failed", str(error)
    return "done", message


def _on_dask(model_path, files, out, options, workers, scheduler):
    """Yield ``(path, (state, message))`` as the slides' Dask tasks finish."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                               dashboard_address=None)  # fmt: skip
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = {
            client.submit(
                slide_job,
                str(model_path.resolve()),
                str(path.resolve()),
                str(out.resolve()),
                options,
                pure=False,
            ): path
            for path in files
        }
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as error:  # a worker that died: the slide failed
                outcome = ("failed", f"worker lost: {error}")
            yield futures[future], outcome
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------------------------
# stats


def _nuclei_of(path: Path, names: dict[int, str]) -> list[tuple[str, Any]]:
    """``(type name, shapely polygon)`` of a QuPath GeoJSON or hover_net JSON file."""
    from shapely.geometry import Polygon, shape

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DigipathError(f"{path}: cannot be read as JSON ({error})") from None
    result = []
    if isinstance(data, dict) and isinstance(data.get("nuc"), dict):
        for key, nucleus in data["nuc"].items():
            contour = nucleus.get("contour") if isinstance(nucleus, dict) else None
            if not contour or len(contour) < 3:
                raise DigipathError(f"{path}: nucleus {key} has no contour")
            kind = nucleus.get("type")
            name = "nucleus" if kind is None else names.get(int(kind), f"type {kind}")
            result.append((name, Polygon(contour)))
        return result
    features = data.get("features") if isinstance(data, dict) else data
    if not isinstance(features, list):
        raise DigipathError(f"{path}: neither a GeoJSON FeatureCollection nor hover_net JSON")
    for index, feature in enumerate(features):
        try:
            geometry = shape(feature["geometry"])
        except Exception:  # malformed geometry: several exception types
            raise DigipathError(f"{path}: feature {index} has no valid geometry") from None
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            continue
        classification = (feature.get("properties") or {}).get("classification")
        if isinstance(classification, dict):
            name = str(classification.get("name", "unclassified"))
        else:
            name = str(classification) if classification else "unclassified"
        result.append((name, geometry))
    return result


def nucleus_stats(
    paths: list[Path],
    *,
    spacing: float | None = None,
    area_mm2: float | None = None,
    type_info: Path | None = None,
) -> list[dict[str, Any]]:
    """Per file and type: count, area statistics (px², and µm² with ``spacing``), density.

    The density is per mm² of ``area_mm2``, or else of the bounding box of all the file's
    nuclei (an upper bound of the density over the tissue); it needs ``spacing`` (µm/px of
    the file's coordinates: level 0 for GeoJSON, the processing spacing for hover_net JSON).
    """
    from digipath.nuclei.io import read_type_info

    names = read_type_info(type_info).names if type_info is not None else {}
    rows = []
    for path in paths:
        nuclei = _nuclei_of(path, names)
        region = area_mm2
        if region is None and spacing is not None and nuclei:
            import shapely

            x0, y0, x1, y1 = shapely.total_bounds([g for _, g in nuclei])
            region = (x1 - x0) * (y1 - y0) * (spacing / 1000) ** 2
        groups: dict[str, list[float]] = {}
        for name, geometry in nuclei:
            groups.setdefault(name, []).append(geometry.area)
        groups = {"all": [a for values in groups.values() for a in values], **groups}
        for name, values in groups.items():
            areas = np.asarray(values, np.float64)
            if spacing is not None:
                areas = areas * spacing**2
            row: dict[str, Any] = {
                "file": str(path),
                "type": name,
                "count": int(areas.size),
                "unit": "um2" if spacing is not None else "px2",
            }
            if areas.size:
                row.update(
                    mean_area=float(areas.mean()),
                    median_area=float(np.median(areas)),
                    std_area=float(areas.std()),
                    min_area=float(areas.min()),
                    max_area=float(areas.max()),
                )
            if region:
                row["density_per_mm2"] = areas.size / region
                row["region_mm2"] = region
            rows.append(row)
    return rows


@app.command()
def stats(
    files: Annotated[list[Path], typer.Argument(help="GeoJSON or hover_net JSON files.")],
    spacing: Annotated[
        float | None,
        typer.Option("--spacing", "-s", help="µm/px of the coordinates (areas in µm², density)."),
    ] = None,
    area_mm2: Annotated[
        float | None,
        typer.Option("--area-mm2", help="Region for the density (default: the nuclei's box)."),
    ] = None,
    type_info: Annotated[
        Path | None, typer.Option("--type-info", help="type_info.json: names of hover_net types.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines on standard output.")] = False,
) -> None:
    """Count nuclei per type, with area statistics and density per mm²."""
    if spacing is not None and not (math.isfinite(spacing) and spacing > 0):
        raise typer.BadParameter(
            f"expected a positive spacing, got {spacing}", param_hint="--spacing"
        )
    if area_mm2 is not None and not (math.isfinite(area_mm2) and area_mm2 > 0):
        raise typer.BadParameter(
            f"expected a positive area, got {area_mm2}", param_hint="--area-mm2"
        )
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        fail(f"no such file: {', '.join(missing)}")
    try:
        rows = nucleus_stats(files, spacing=spacing, area_mm2=area_mm2, type_info=type_info)
    except DigipathError as error:
        fail(error)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    unit = "µm²" if spacing is not None else "px²"
    table = Table(
        "file", "type", "count", f"mean area ({unit})", f"median ({unit})", "density (/mm²)"
    )
    for row in rows:
        density = row.get("density_per_mm2")
        table.add_row(
            Path(row["file"]).name,
            row["type"],
            str(row["count"]),
            f"{row.get('mean_area', 0):.1f}",
            f"{row.get('median_area', 0):.1f}",
            "" if density is None else f"{density:.0f}",
        )
    console.print(table)


def _tiles(images: str, labels: str) -> list:
    """``(image, annotation)`` pairs of a glob and a label pattern (``.npy`` tiles alone)."""
    files = sorted(Path(p) for p in glob.glob(images, recursive=True) if Path(p).is_file())
    if not files:
        fail(f"no images match {images!r}")
    tiles = []
    for image in files:
        if image.suffix == ".npy":
            tiles.append(image)
            continue
        label = Path(labels.format(name=image.stem, dir=str(image.parent), file=image.name))
        if not label.exists():
            fail(f"{image}: no annotation {label} (--labels {labels!r})")
        tiles.append((image, label))
    return tiles


def _phases(text: str) -> list[tuple[int, bool]]:
    """``'50:frozen,50'`` as ``[(50, True), (50, False)]``."""
    phases = []
    for part in text.split(","):
        epochs, _, kind = part.strip().partition(":")
        if not epochs.isdigit() or int(epochs) < 1 or kind not in ("", "frozen", "all"):
            raise typer.BadParameter(
                f"expected EPOCHS[:frozen|all] items, got {part!r}", param_hint="--phases"
            )
        phases.append((int(epochs), kind == "frozen"))
    return phases


@app.command()
def train(
    images: Annotated[
        str, typer.Option("--images", "-i", help="Glob of training tiles (images or .npy).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created).")],
    labels: Annotated[
        str,
        typer.Option(
            "--labels",
            "-l",
            help="Annotation of each image (.mat, .npy, PNG): a pattern with {name}, {dir}, "
            "{file}.",
        ),
    ] = "{dir}/{name}.mat",
    validation: Annotated[
        str | None, typer.Option("--validation", help="Glob of validation tiles.")
    ] = None,
    parameters: Annotated[
        Path | None,
        typer.Option(
            "--parameters",
            "-p",
            help="YAML parameter file (hovernet and augmentation sections, e.g. "
            "examples/nuclei/hovernet.yaml); the options below override it.",
        ),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="original (270 -> 80) or fast (256 -> 164).")
    ] = None,
    type_info: Annotated[
        Path | None, typer.Option("--type-info", help="type_info.json (names, colours, types).")
    ] = None,
    phases: Annotated[
        str | None,
        typer.Option(help="Phases EPOCHS[:frozen|all], e.g. '50:frozen,50' (the original's)."),
    ] = None,
    input_size: Annotated[
        int | None, typer.Option(help="Network input side (default: the mode's).")
    ] = None,
    augmentation: Annotated[
        Path | None,
        typer.Option(
            help="YAML augmentation section: its pixel-wise 'training' augmenters (HED, HSB, "
            "noise ...) run after the original's colour jitter."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="File prefix (default hovernet).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the batches (default 0).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted training.")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, auto.")] = None,
) -> None:
    """Train a HoVer-Net with the two-phase recipe (encoder frozen, then all layers)."""
    from digipath.nuclei.training import train_hovernet, training_options

    tiles = _tiles(images, labels)
    held_out = _tiles(validation, labels) if validation else None
    try:
        options = training_options(parameters) if parameters is not None else {}
        given = {
            "mode": mode, "type_info": type_info, "name": name, "seed": seed,
            "phases": None if phases is None else _phases(phases),
            "input_shape": None if input_size is None else (input_size, input_size),
            "augmentation": augmentation,
        }  # fmt: skip
        options.update({key: value for key, value in given.items() if value is not None})
        result = train_hovernet(
            tiles, out, validation=held_out, resume=resume, device=device, **options
        )
    except DigipathError as error:
        fail(error)
    console.print(f"best model: {result['best']}", highlight=False)
    console.print(f"last model: {result['last']}", highlight=False)
