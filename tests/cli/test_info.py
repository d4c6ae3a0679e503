"""Tests of ``digipath info``."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from digipath.cli.main import app
from digipath.io import ImageWriter

runner = CliRunner()


def test_info_prints_every_real_slide(wsi_files):
    result = runner.invoke(app, ["info", *map(str, wsi_files)])
    assert result.exit_code == 0, result.output
    for path in wsi_files:
        assert path.name in result.output.replace("\n", "")
    assert "spacing (µm/px)" in result.output


def test_info_json_on_real_slides(wsi_files):
    result = runner.invoke(app, ["info", "--json", *map(str, wsi_files)])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert [d["path"] for d in described] == [str(p) for p in wsi_files]
    svs = next(d for d in described if d["path"].endswith("CMU-1-Small-Region.svs"))
    assert svs["vendor"] == "aperio" and svs["compression"] == "jpeg"
    assert svs["levels"][0] == {
        "level": 0,
        "shape": [2967, 2220],
        "spacing": 0.499,
        "downsampling": 1.0,
        "tile_shape": [240, 240],
    }
    assert set(svs["associated"]) == {"thumbnail", "label", "macro"}


def test_info_on_a_written_mask(tmp_path):
    path = tmp_path / "mask.tif"
    with ImageWriter(
        path,
        (3000, 2500),
        spacing=0.5,
        dtype="uint8",
        channels=1,
        compression="lzw",
        interpolation="nearest",
    ) as writer:
        writer.fill(np.zeros((3000, 2500, 1), np.uint8))
    result = runner.invoke(app, ["info", "--json", str(path)])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["channels"] == 1 and described["dtype"] == "uint8"
    assert [level["spacing"] for level in described["levels"]] == [0.5, 1.0, 2.0]
    assert described["compression"] == "lzw"


def test_info_reports_bad_files_and_fails(tmp_path):
    garbage = tmp_path / "garbage.svs"
    garbage.write_bytes(b"not an image at all")
    result = runner.invoke(app, ["info", str(garbage), str(tmp_path / "missing.tif")])
    assert result.exit_code == 1
    assert "garbage.svs" in result.output and "missing.tif" in result.output
    assert "Traceback" not in result.output
