"""The tissue-mask command and apply --mask auto on a real slide."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from digipath.cli.main import app
from digipath.io import ImageReader
from digipath.models import model_class

runner = CliRunner()


def test_tissue_mask_command_and_automatic_masks(test_data, tmp_path):
    slide = test_data / "wsi" / "aperio" / "CMU-1-Small-Region.svs"
    result = runner.invoke(app, ["tissue-mask", str(slide), str(tmp_path / "missing.svs"),
                                 "-o", str(tmp_path / "{image}_tissue.tif"), "--qc", "--overlay",
                                 "--json"])  # fmt: skip
    assert result.exit_code == 1  # the missing slide
    first, second = (json.loads(line) for line in result.output.strip().splitlines()[:2])
    assert 0.1 < first["tissue fraction"] < 0.95 and "error" in second
    assert (tmp_path / "CMU-1-Small-Region_tissue.png").is_file()
    torch.manual_seed(0)
    model = model_class("unet")(classes=2, depth=1, branching_factor=1, padding="same").build()
    model_path = model.save(tmp_path / "net.safetensors")
    out = tmp_path / "maps" / "cmu.tif"
    applied = runner.invoke(app, ["apply", str(slide), "-n", str(model_path), "-o", str(out),
                                  "-l", "4.0", "--tile-size", "128", "--mask", "auto"])  # fmt: skip
    assert applied.exit_code == 0, applied.output
    assert (tmp_path / "maps" / "cmu_tissue.tif").is_file()
    with ImageReader(out) as reader:
        labels = reader.read(reader.spacings[0], 0, 0, *reader.shapes[0])
    assert (labels == 0).mean() > 0.05  # glass outside the tissue mask is 0
