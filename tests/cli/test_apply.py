"""The apply command: a folder of slides with one corrupt file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from digipath.cli.main import app
from digipath.io import ImageReader, ImageWriter
from digipath.models import model_class

runner = CliRunner()


def slide(path, seed: int) -> None:
    image = np.random.default_rng(seed).integers(0, 255, (300, 260, 3), dtype=np.uint8)
    with ImageWriter(path, image.shape[:2], spacing=0.5, compression="lzw") as writer:
        writer.fill(image)


def test_a_folder_with_a_corrupt_slide_finishes_the_others_and_exits_1(tmp_path):
    torch.manual_seed(0)
    model = model_class("unet")(classes=2, depth=2, branching_factor=2, padding="same").build()
    model_path = model.save(tmp_path / "net.safetensors")
    slides = tmp_path / "slides"
    slides.mkdir()
    slide(slides / "a.tif", 1)
    slide(slides / "b.tif", 2)
    (slides / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 100)
    out = tmp_path / "out"
    template = str(out / "{image}_{model}.tif")
    arguments = ["apply", str(slides), "-n", str(model_path), "-o", template, "-l", "0.5",
                 "--tile-size", "128"]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 1, result.output
    assert "broken.tif" in result.output and "failed" in result.output
    for name in ("a", "b"):
        with ImageReader(out / f"{name}_net.tif") as reader:
            assert reader.shapes[0] == (300, 260)
    again = runner.invoke(app, arguments)  # finished outputs are kept, the broken one fails again
    assert again.exit_code == 1 and "exists" in again.output
    missing = runner.invoke(app, ["apply", str(tmp_path / "none*.tif"), "-n", str(model_path),
                                  "-o", str(out / "x.tif"), "-l", "0.5"])  # fmt: skip
    assert missing.exit_code == 1 and "no slides found" in missing.output


def test_apply_with_post_processing_writes_outlines(tmp_path):
    torch.manual_seed(0)
    model = model_class("unet")(classes=2, depth=2, branching_factor=2, padding="same").build()
    model_path = model.save(tmp_path / "net.safetensors")
    slide(tmp_path / "s.tif", 3)
    target = tmp_path / "s.geojson"
    arguments = ["apply", str(tmp_path / "s.tif"), "-n", str(model_path), "-o", str(target),
                 "-l", "0.5", "--tile-size", "128", "--soft", "--output-class", "1",
                 "--confidence", "0.5", "--region-diagonal", "2", "--dilation", "1"]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    import json

    assert json.loads(target.read_text())["type"] == "FeatureCollection"
    assert not (tmp_path / "s_prediction.tif").exists()  # intermediates removed


def test_apply_with_an_output_spacing(tmp_path):
    torch.manual_seed(0)
    model = model_class("unet")(classes=2, depth=2, branching_factor=2, padding="same").build()
    model_path = model.save(tmp_path / "net.safetensors")
    slide(tmp_path / "s.tif", 4)
    target = tmp_path / "s_map.tif"
    result = runner.invoke(app, ["apply", str(tmp_path / "s.tif"), "-n", str(model_path), "-o",
                                 str(target), "-l", "0.5", "--tile-size", "128",
                                 "--output-spacing", "1.0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    with ImageReader(target) as reader:
        assert reader.shapes[0] == (150, 130) and reader.spacings[0] == pytest.approx(1.0)


def test_apply_with_a_normaliser_a_work_and_a_copy_directory(tmp_path):
    torch.manual_seed(0)
    model = model_class("unet")(classes=2, depth=2, branching_factor=2, padding="same").build()
    model_path = model.save(tmp_path / "net.safetensors")
    slide(tmp_path / "s.tif", 5)
    target = tmp_path / "final" / "s.tif"
    arguments = ["apply", str(tmp_path / "s.tif"), "-n", str(model_path), "-o", str(target),
                 "-l", "0.5", "--tile-size", "128", "--normalizer", "general",
                 "--source-range", "0,255", "--target-range", "-1,1",
                 "--work-dir", str(tmp_path / "work"),
                 "--copy-dir", str(tmp_path / "copies")]  # fmt: skip
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert target.is_file() and not list((tmp_path / "work").iterdir())
    assert not list((tmp_path / "copies").iterdir())  # copies removed without --keep-copies
    bad = runner.invoke(app, [*arguments[:-6], "--source-range", "0;255", "--overwrite"])
    assert bad.exit_code != 0 and "low,high" in bad.output


def test_find_slides_from_a_data_config_with_filters(tmp_path):
    from digipath.cli.apply import find_slides
    from digipath.data.config import DataConfig, PatchSource

    for name in ("a1", "a2", "b1"):
        slide(tmp_path / f"{name}.tif", 0)
    items = [PatchSource("{root}/" + f"{n}.tif", "{root}/" + f"{n}_mask.tif", "", (1,))
             for n in ("a1", "a2", "b1")]  # fmt: skip
    config = tmp_path / "data.yaml"
    DataConfig({"training": {"t": items[:2]}, "validation": {"t": items[2:]}},
               {"training": 0.5, "validation": 0.5}, {"root": "/nowhere"}).save(config)  # fmt: skip
    found = find_slides(str(config), ["training"], replacements={"root": str(tmp_path)},
                        pattern=r"a\d")  # fmt: skip
    assert [image.name for image, _ in found] == ["a1.tif", "a2.tif"]
    assert found[0][1] == tmp_path / "a1_mask.tif"
    bare = find_slides(str(config), replacements={"root": str(tmp_path)}, masks=False)
    assert len(bare) == 3 and all(mask is None for _, mask in bare)
