"""Image tools: save a level, PNG export, spacing fix, thresholding, zooming, overlays."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from digipath.cli.console import console, fail
from digipath.errors import DigipathError

MAX_PNG_PIXELS = 20000 * 20000


def _spacing_of(reader, spacing: float | None, level: int | None) -> float:
    if (spacing is None) == (level is None):
        raise typer.BadParameter("give exactly one of --spacing and --level")
    if level is not None:
        if not 0 <= level < len(reader.spacings):
            raise typer.BadParameter(f"the image has levels 0..{len(reader.spacings) - 1}")
        if reader.spacings[level] is None:
            raise typer.BadParameter(f"{reader.path} states no spacing: use set-spacing first")
        return float(reader.spacings[level])
    return float(spacing)


def save_level(
    image: Annotated[Path, typer.Argument(help="Input image.")],
    output: Annotated[Path, typer.Argument(help="Output pyramidal TIFF.")],
    spacing: Annotated[float | None, typer.Option(help="Spacing to save (µm/px).")] = None,
    level: Annotated[int | None, typer.Option(help="Or a level index.")] = None,
    nearest: Annotated[bool, typer.Option(help="Nearest resampling (label images).")] = False,
) -> None:
    """Save one level (or spacing) of an image as a new pyramid."""
    from digipath.io import ImageReader
    from digipath.io.rescale import rescale_image

    try:
        with ImageReader(image) as reader:
            chosen = _spacing_of(reader, spacing, level)
        written = rescale_image(image, output, spacing=chosen,
                                interpolation="nearest" if nearest else "linear")  # fmt: skip
    except (DigipathError, ValueError) as error:
        fail(error)
    console.print(f"wrote {written}")


def to_png(
    image: Annotated[Path, typer.Argument(help="Input image.")],
    output: Annotated[Path, typer.Argument(help="Output PNG.")],
    spacing: Annotated[float | None, typer.Option(help="Spacing to export (µm/px).")] = None,
    level: Annotated[int | None, typer.Option(help="Or a level index.")] = None,
    multiplier: Annotated[
        float, typer.Option(help="Multiply the values (e.g. 100 to see labels 0-2).")
    ] = 1.0,
) -> None:
    """Export one level as PNG (values multiplied, clipped to 0-255)."""
    import cv2

    from digipath.io import ImageReader

    try:
        with ImageReader(image) as reader:
            chosen = _spacing_of(reader, spacing, level)
            rows, cols = reader.shape(chosen)
            if rows * cols > MAX_PNG_PIXELS:
                raise typer.BadParameter(
                    f"{rows} x {cols} is too large for a PNG; pick a coarser level"
                )
            array = reader.read(chosen, 0, 0, rows, cols).astype(np.float64) * multiplier
    except (DigipathError, ValueError) as error:
        fail(error)
    array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.shape[2] != 1:
        array = array[..., :1]
    if not cv2.imwrite(str(output), array):
        fail(OSError(f"{output}: cannot write a PNG there"))
    console.print(f"wrote {output} ({cols} x {rows})")


def set_spacing(
    image: Annotated[Path, typer.Argument(help="Input image.")],
    output: Annotated[Path, typer.Argument(help="Output pyramidal TIFF.")],
    spacing: Annotated[float, typer.Option(help="The level-0 spacing to record (µm/px).")],
) -> None:
    """Copy an image's level 0 into a new pyramid that records the given spacing."""
    from digipath.io import ImageReader, ImageWriter

    try:
        with ImageReader(image, spacing=spacing) as reader:
            rows, cols = reader.shapes[0]
            compression = "jpeg" if reader.channels == 3 and reader.dtype == np.uint8 else "lzw"
            options = {
                "dtype": reader.dtype,
                "channels": reader.channels,
                "compression": compression,
            }
            with ImageWriter(output, (rows, cols), spacing=spacing, **options) as writer:
                for top in range(0, rows, 512):
                    for left in range(0, cols, 512):
                        height, width = min(512, rows - top), min(512, cols - left)
                        writer.write(reader.read(spacing, top, left, height, width), top, left)
    except (DigipathError, ValueError) as error:
        fail(error)
    console.print(f"wrote {output} at {spacing} µm/px")


def threshold(
    image: Annotated[Path, typer.Argument(help="Input map (level 0 is used).")],
    output: Annotated[Path, typer.Argument(help="Output 0/1 map.")],
    value: Annotated[float, typer.Option(help="Pixels >= value become 1 (in the map's units).")],
) -> None:
    """Threshold a map into a 0/1 mask."""
    from digipath.inference import postprocess

    try:
        written = postprocess.threshold_value(image, output, value)
    except (DigipathError, ValueError) as error:
        fail(error)
    console.print(f"wrote {written}")


def zoom(
    image: Annotated[Path, typer.Argument(help="Image to resample.")],
    template: Annotated[Path, typer.Argument(help="Image whose level-0 shape to match.")],
    output: Annotated[Path, typer.Argument(help="Output pyramidal TIFF.")],
    nearest: Annotated[bool, typer.Option(help="Nearest resampling (label images).")] = True,
) -> None:
    """Resample an image to the level-0 shape of a template image."""
    from digipath.io import ImageReader
    from digipath.io.rescale import rescale_image

    try:
        with ImageReader(template) as reader:
            shape = reader.shapes[0]
        written = rescale_image(image, output, shape=shape,
                                interpolation="nearest" if nearest else "linear")  # fmt: skip
    except (DigipathError, ValueError) as error:
        fail(error)
    console.print(f"wrote {written} ({shape[1]} x {shape[0]})")


def overlay(
    image: Annotated[Path, typer.Argument(help="The slide.")],
    result: Annotated[Path, typer.Argument(help="A map over it (labels or probabilities).")],
    output: Annotated[Path, typer.Argument(help="Output PNG.")],
    spacing: Annotated[float, typer.Option(help="Spacing of the picture (µm/px).")],
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Opacity of the map.")] = 0.5,
    colormap: Annotated[str, typer.Option(help="Matplotlib colour map for soft maps.")] = (
        "viridis"
    ),
) -> None:
    """Draw a map over its slide as a PNG: labels in distinct colours, probabilities coloured."""
    import cv2
    from matplotlib import colormaps

    from digipath.io import ImageReader

    try:
        with ImageReader(image) as slide, ImageReader(result) as mapped:
            rows, cols = slide.shape(spacing)
            if rows * cols > MAX_PNG_PIXELS:
                raise typer.BadParameter(f"{rows} x {cols} is too large; use a coarser spacing")
            picture = slide.read(spacing, 0, 0, rows, cols)[..., :3].astype(np.float32)
            # the map covers the slide: stretch its level 0 over the picture
            level0 = mapped.spacings[0] or spacing
            values = mapped.read(level0, 0, 0, *mapped.shapes[0], interpolation="nearest")
        values = cv2.resize(values[..., 0], (cols, rows), interpolation=cv2.INTER_NEAREST)
    except (DigipathError, ValueError) as error:
        fail(error)
    if np.issubdtype(values.dtype, np.integer) and values.max() <= 20:
        palette = (np.array(colormaps["tab10"].colors) * 255).astype(np.float32)
        colours = palette[(values.astype(int) - 1) % len(palette)]
        weight = (values > 0)[..., None] * alpha
    else:
        scaled = values.astype(np.float32) / (255.0 if values.dtype == np.uint8 else 1.0)
        colours = colormaps[colormap](np.clip(scaled, 0, 1))[..., :3].astype(np.float32) * 255
        weight = np.full((rows, cols, 1), alpha, np.float32)
    blended = picture * (1 - weight) + colours * weight
    image_out = cv2.cvtColor(np.clip(blended, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(output), image_out):
        fail(OSError(f"{output}: cannot write a PNG there"))
    console.print(f"wrote {output} ({cols} x {rows})")
