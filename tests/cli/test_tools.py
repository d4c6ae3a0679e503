"""The image tools: save-level, to-png, set-spacing, threshold, zoom, overlay."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from digipath.cli.main import app
from digipath.io import ImageReader, ImageWriter

runner = CliRunner()


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    slide = tmp_path / "slide.tif"
    image = rng.integers(0, 255, (600, 500, 3), dtype=np.uint8)
    with ImageWriter(slide, (600, 500), spacing=0.5, compression="jpeg") as writer:
        writer.fill(image)
    labels = tmp_path / "labels.tif"
    values = np.zeros((300, 250), np.uint8)
    values[50:150, 60:200] = 2
    values[200:260, 10:90] = 1
    with ImageWriter(labels, (300, 250), spacing=1.0, channels=1, compression="lzw",
                     interpolation="nearest") as writer:  # fmt: skip
        writer.fill(values[:, :, None])
    return tmp_path, slide, labels


def ok(arguments):
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    return result


def test_the_image_tools(files):
    folder, slide, labels = files
    ok(["save-level", str(slide), str(folder / "level.tif"), "--spacing", "1.0"])
    with ImageReader(folder / "level.tif") as reader:
        assert reader.shapes[0] == (300, 250) and reader.spacings[0] == pytest.approx(1.0)
    ok(["to-png", str(labels), str(folder / "labels.png"), "--level", "0", "--multiplier", "100"])
    png = cv2.imread(str(folder / "labels.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape[:2] == (300, 250) and set(np.unique(png)) == {0, 100, 200}
    ok(["set-spacing", str(labels), str(folder / "respaced.tif"), "--spacing", "2.0"])
    with ImageReader(folder / "respaced.tif") as reader:
        assert reader.spacings[0] == pytest.approx(2.0)
    ok(["threshold", str(labels), str(folder / "binary.tif"), "--value", "2"])
    with ImageReader(folder / "binary.tif") as reader:
        binary = reader.read(1.0, 0, 0, 300, 250)[..., 0]
    assert binary.sum() == 100 * 140 and binary.max() == 1
    ok(["zoom", str(labels), str(slide), str(folder / "zoomed.tif")])
    with ImageReader(folder / "zoomed.tif") as reader:
        assert reader.shapes[0] == (600, 500)
        assert reader.spacings[0] == pytest.approx(0.5)
    ok(["overlay", str(slide), str(labels), str(folder / "overlay.png"), "--spacing", "1.0"])
    assert cv2.imread(str(folder / "overlay.png")).shape == (300, 250, 3)
    bad = runner.invoke(app, ["save-level", str(slide), str(folder / "x.tif")])
    assert bad.exit_code != 0 and "exactly one of --spacing and --level" in bad.output
