"""Tests of ``digipath augment-preview``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from digipath.cli.main import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "augmentation"


def test_preview_of_the_seed_yaml(test_data, tmp_path):
    patch = test_data / "patches" / "stain-norm" / "source_image.png"
    out = tmp_path / "grid.png"
    result = runner.invoke(
        app,
        [
            "augment-preview", "--config", str(EXAMPLES / "seed.yaml"), "--image", str(patch),
            "--out", str(out), "--count", "7", "--columns", "4",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    grid = cv2.imread(str(out), cv2.IMREAD_COLOR)
    assert grid is not None
    # 8 cells (original + 7 draws) in 2 rows of 4, square cells, white gutters
    cell = (grid.shape[1] - 5 * 4) // 4
    assert grid.shape[0] == 2 * cell + 3 * 4
    assert np.all(grid[:4] == 255)
    cells = [
        grid[4 + r * (cell + 4) : 4 + r * (cell + 4) + cell, 4 + c * (cell + 4) :][:, :cell]
        for r in range(2)
        for c in range(4)
    ]
    # the draws differ from each other and from the original
    assert len({cell_image.tobytes() for cell_image in cells}) == 8
    assert not list(tmp_path.glob(".*partial*"))


def test_preview_of_deephealth_text(test_data, tmp_path):
    patch = test_data / "patches" / "kather" / "kather1.tif"
    out = tmp_path / "grid.png"
    result = runner.invoke(
        app,
        [
            "augment-preview", "-c", str(EXAMPLES / "seed_deephealth.txt"), "-i", str(patch),
            "-o", str(out), "--count", "3",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out)).shape[0] > 224


def test_preview_errors_are_clear(tmp_path):
    bad = tmp_path / "aug.yaml"
    bad.write_text(
        "augmentation:\n  training:\n    - group: g\n      items:\n        - type: nope\n"
    )
    image = tmp_path / "patch.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    result = runner.invoke(
        app, ["augment-preview", "-c", str(bad), "-i", str(image), "-o", str(tmp_path / "g.png")]
    )
    assert result.exit_code == 1
    assert "augmentation.training[0].items[0].type" in result.output
    assert "unknown augmenter 'nope'" in result.output
    result = runner.invoke(
        app,
        [
            "augment-preview", "-c", str(EXAMPLES / "seed.yaml"), "-i", str(tmp_path / "no.png"),
            "-o", str(tmp_path / "g.png"),
        ],
    )  # fmt: skip
    assert result.exit_code == 1 and "no such patch file" in result.output
    result = runner.invoke(
        app,
        [
            "augment-preview", "-c", str(EXAMPLES / "seed.yaml"), "-i", str(image),
            "-o", str(tmp_path / "g.png"), "--purpose", "testing",
        ],
    )  # fmt: skip
    assert result.exit_code == 1 and "the file has: training" in result.output
