"""Training commands: train an experiment, summarise experiments, update model files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from digipath.cli.console import console, fail, path_replacements
from digipath.errors import DigipathError


class _EpochBars:
    """A progress bar per epoch phase and a one-line summary per epoch (rich)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None
        self.epoch = 0
        self.epochs = 0

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "epoch":
            self.epoch, self.epochs = info["epoch"], info["epochs"]
        elif event == "phase":
            if self.task is not None:
                self.progress.remove_task(self.task)
            label = f"epoch {self.epoch + 1}/{self.epochs} {info['purpose']}"
            self.task = self.progress.add_task(label, total=info["total"], loss="")
        elif event == "batch" and self.task is not None:
            loss = info["metrics"].get("loss")
            self.progress.update(self.task, completed=info["done"],
                                 loss=f"loss {loss:.4f}" if loss is not None else "")  # fmt: skip
        elif event == "row":
            shown = ", ".join(
                f"{key} {value:.4g}" for key, value in info.items()
                if isinstance(value, float) and not key.endswith("time")
            )  # fmt: skip
            self.progress.console.print(f"epoch {info['epoch'] + 1}/{self.epochs}: {shown}")


def train(
    data: Annotated[
        Path, typer.Argument(help="Data config (YAML or JSON), or a patch database folder.")
    ],
    parameters: Annotated[Path, typer.Argument(help="Parameter file (YAML).")],
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Experiment name (folder, prefix).")
    ] = None,
    progress_dir: Annotated[
        Path, typer.Option("--progress-dir", "-o", help="Where the experiment folder goes.")
    ] = Path("."),
    work_dir: Annotated[
        Path | None,
        typer.Option(help="Write here (e.g. local disk) and copy to the progress folder."),
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option("--override", "-p", help="Parameter override 'key.path=value' (repeat)."),
    ] = None,
    path: Annotated[
        list[str] | None, typer.Option("--path", help="Data path replacement TAG=VALUE.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: from the clock).")] = None,
    cpu: Annotated[
        int | None, typer.Option("--cpu", help="CPUs a float 'process count' multiplies.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or auto.")] = None,
    resume: Annotated[
        bool, typer.Option("--continue", help="Continue the experiment from its last epoch.")
    ] = False,
) -> None:
    """Train a network as a DigitalPathology parameter file describes (the old trainnetwork).

    DATA is a data config (slides) or a patch database folder (its training and validation
    patches).
    """
    from digipath.data.config import DataConfig
    from digipath.data.patch_database import is_database
    from digipath.training.experiment import ExperimentCommander

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=console,
    )  # fmt: skip
    try:
        if is_database(data) or data.is_dir():  # a folder: a (maybe incomplete) database
            if path:
                raise typer.BadParameter(
                    f"{data} is a patch database: --path replaces tags in data configs only",
                    param_hint="--path",
                )
            config = data
        else:
            config = DataConfig.load(data, overrides=path_replacements(path))
        commander = ExperimentCommander(
            parameters, config, experiment_name=experiment, progress_dir=progress_dir,
            work_dir=work_dir, overrides=override or [], seed=seed, cpu_count=cpu,
            resume=resume, device=device, progress=_EpochBars(progress),
        )  # fmt: skip
        with progress:
            summary = commander.execute()
    except DigipathError as error:
        fail(error)
    metric = commander.training.metric
    console.print(
        f"{commander.name}: best {metric} {summary['best_metric']:.4g} at epoch "
        f"{summary['best_epoch'] + 1}; files in {commander.progress_directory}",
        highlight=False,
    )


def _experiment_metric(folder: Path, name: str) -> tuple[str, bool]:
    import yaml

    try:
        parameters = yaml.safe_load((folder / f"{name}_parameters.yaml").read_text("utf-8"))
        training = parameters.get("training") or {}
        return training.get("metric name", "validation accuracy"), training.get(
            "higher is better", True
        )
    except (OSError, AttributeError, yaml.YAMLError):
        return "validation accuracy", True


def summarize_logs(
    folder: Annotated[Path, typer.Argument(help="Folder holding experiment folders.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """The best value and epoch of the selection metric of every experiment under a folder."""
    from digipath.training.progress import read_rows

    entries = []
    for csv_path in sorted(folder.rglob("*_progress.csv")):
        name = csv_path.name[: -len("_progress.csv")]
        metric, higher = _experiment_metric(csv_path.parent, name)
        rows = read_rows(csv_path)
        values = [(float(row[metric]), int(row["epoch"])) for row in rows if row.get(metric)]
        if not values:
            continue
        best_value, best_epoch = (max if higher else min)(values, key=lambda item: item[0])
        entries.append({
            "experiment": name, "metric": metric, "best": best_value,
            "best epoch": best_epoch + 1, "epochs": len(rows), "last": values[-1][0],
            "folder": str(csv_path.parent),
        })  # fmt: skip
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry))
        return
    if not entries:
        console.print(f"no experiments with a progress table under {folder}")
        raise typer.Exit(code=1)
    table = Table("experiment", "metric", "best", "best epoch", "epochs", "last")
    for entry in entries:
        table.add_row(
            entry["experiment"], entry["metric"], f"{entry['best']:.4g}",
            str(entry["best epoch"]), str(entry["epochs"]), f"{entry['last']:.4g}",
        )  # fmt: skip
    Console().print(table)


def update_network(
    model: Annotated[
        Path | None,
        typer.Argument(help="Model file to check or convert (not with --from-hovernet)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the converted file here.")
    ] = None,
    state_dict: Annotated[
        Path | None,
        typer.Option(help="Import this PyTorch state dict (weights only) into MODEL's network."),
    ] = None,
    from_hovernet: Annotated[
        Path | None,
        typer.Option(
            "--from-hovernet",
            help="Convert this original HoVer-Net checkpoint (.tar/.pth of vqdang/hover_net; "
            "mode and types read from its shapes) into a model file (needs --output).",
        ),
    ] = None,
) -> None:
    """Migrate a model file to the current format, or import plain PyTorch weights.

    With --state-dict, MODEL is a digipath model file giving the architecture; the weights are
    read with torch.load(weights_only=True) (no code runs) and written to --output. With
    --from-hovernet, an original HoVer-Net checkpoint (e.g.
    hovernet_fast_pannuke_type_tf2pytorch.tar) becomes a 'hovernet' model file, read the same
    safe way.
    """
    from digipath.models.files import import_state_dict, load_model, migrate, read_header

    try:
        if from_hovernet is not None:
            from digipath.models.hovernet_model import import_hovernet_checkpoint

            if model is not None or state_dict is not None:
                raise typer.BadParameter(
                    "--from-hovernet takes no MODEL and no --state-dict", param_hint="MODEL"
                )
            if output is None:
                raise typer.BadParameter("--from-hovernet needs --output", param_hint="--output")
            written = import_hovernet_checkpoint(from_hovernet, output)
        elif model is None:
            raise typer.BadParameter("give a MODEL file (or --from-hovernet)", param_hint="MODEL")
        elif state_dict is not None:
            if output is None:
                raise typer.BadParameter("--state-dict needs --output", param_hint="--output")
            like = load_model(model, optimizer=False)
            header = {k: v for k, v in like.header.items() if k in ("label_map", "normalization")}
            written = import_state_dict(state_dict, like, output, **header)
        else:
            written = migrate(model, output)
        document = read_header(written)
    except DigipathError as error:
        fail(error)
    detail = ""
    if document["model"]["type"] == "hovernet":
        parameters = document["parameters"]
        detail = f", {parameters.get('mode')} mode, types {parameters.get('types')}"
    console.print(
        f"{written}: {document['model']['type']} model, format version "
        f"{document['format_version']}, {document['classes']} classes{detail}",
        highlight=False,
    )
