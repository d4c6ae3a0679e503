"""Entry point of the ``digipath`` command."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from digipath.cli import (
    annotations,
    apply,
    augment,
    data,
    info,
    nuclei,
    radhical,
    serve,
    tissue,
    tools,
    train,
)

app = typer.Typer(
    name="digipath",
    help="Deep learning on whole-slide pathology images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(name="info")(info.info)
app.command(name="preprocess-masks")(data.preprocess_masks)
app.command(name="normalize-masks")(data.normalize_masks)
app.command(name="make-dataset")(data.make_dataset)
app.command(name="split")(data.split)
app.command(name="annotations-to-mask")(annotations.annotations_to_mask)
app.command(name="mask-to-annotations")(annotations.mask_to_annotations)
app.command(name="augment-preview")(augment.augment_preview)
app.command(name="train")(train.train)
app.command(name="summarize-logs")(train.summarize_logs)
app.command(name="update-network")(train.update_network)
app.command(name="apply")(apply.apply)
app.command(name="save-level")(tools.save_level)
app.command(name="to-png")(tools.to_png)
app.command(name="set-spacing")(tools.set_spacing)
app.command(name="threshold")(tools.threshold)
app.command(name="zoom")(tools.zoom)
app.command(name="overlay")(tools.overlay)
app.command(name="tissue-mask")(tissue.tissue_mask)
app.command(name="serve")(serve.serve)
app.add_typer(radhical.app, name="radhical")
app.add_typer(nuclei.app, name="nuclei")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    """Deep learning on whole-slide pathology images."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":  # pragma: no cover
    app()
