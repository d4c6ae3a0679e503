"""Tests of the data preparation commands."""

from __future__ import annotations

import numpy as np
import yaml
from typer.testing import CliRunner

from digipath.cli.main import app
from digipath.data.config import DataConfig
from digipath.data.deephealth import load_dataset
from digipath.data.stats import MaskStats
from digipath.io import ImageReader, ImageWriter

runner = CliRunner()


def write_pair(folder, name: str, labels: list[int]) -> None:
    with ImageWriter(folder / f"{name}.tif", (128, 128), spacing=1.0, compression="lzw") as w:
        w.fill(np.full((128, 128, 3), 200, np.uint8))
    mask = np.zeros((64, 64, 1), np.uint8)
    for k, label in enumerate(labels):
        mask[10 * k : 10 * k + 8, :20] = label
    with ImageWriter(folder / f"{name}_mask.tif", (64, 64), spacing=2.0, channels=1,
                     compression="lzw", interpolation="nearest") as w:  # fmt: skip
        w.fill(mask)


def write_config(folder, names: dict[str, list[int]]) -> None:
    items = [
        {
            "image": f"{{root}}/{name}.tif",
            "mask": f"{{root}}/{name}_mask.tif",
            "stat": f"{{root}}/stats/{name}.stat",
            "labels": labels,
        }
        for name, labels in names.items()
    ]
    config = {"type": "list", "path": {"root": str(folder)}, "data": {"tissue": items}}
    (folder / "data.yaml").write_text(yaml.safe_dump(config))


def test_preprocess_masks_continues_past_failures(tmp_path):
    write_pair(tmp_path, "p1_a", [1, 2])
    write_pair(tmp_path, "p2_a", [1])
    write_config(tmp_path, {"p1_a": [1, 2], "p2_a": [1], "p3_missing": [1]})
    result = runner.invoke(app, ["preprocess-masks", str(tmp_path / "data.yaml"), "-s", "2.0"])
    assert result.exit_code == 1, result.output
    assert "p3_missing" in result.output and "2 built" in result.output
    stats = MaskStats.load(tmp_path / "stats" / "p1_a.stat", labels=[1, 2], spacing=2.0)
    assert stats.counts == {1: 160, 2: 160}
    again = runner.invoke(app, ["preprocess-masks", str(tmp_path / "data.yaml"), "-s", "2.0"])
    assert "2 kept" in again.output and again.exit_code == 1


def test_normalize_masks(tmp_path):
    write_pair(tmp_path, "m", [1, 2, 3])
    target = tmp_path / "out.tif"
    result = runner.invoke(
        app, ["normalize-masks", str(tmp_path / "m_mask.tif"), str(target), "-m", "3=1",
              "-m", "2=0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    original = ImageReader(tmp_path / "m_mask.tif").content(2.0)
    remapped = ImageReader(target).content(2.0)
    expected = np.where(original == 3, 1, np.where(original == 2, 0, original))
    assert np.array_equal(remapped, expected)
    bad = runner.invoke(app, ["normalize-masks", str(target), str(target), "-m", "x"])
    assert bad.exit_code != 0


def test_make_dataset(tmp_path):
    for split_name in ("training", "test"):
        for label in ("benign", "tumour"):
            folder = tmp_path / "tree" / split_name / label
            folder.mkdir(parents=True)
            for k in range(2):
                (folder / f"{label}{k}.png").write_bytes(b"png")
    output = tmp_path / "dataset.yml"
    result = runner.invoke(app, ["make-dataset", str(tmp_path / "tree"), str(output)])
    assert result.exit_code == 0, result.output
    dataset = load_dataset(output)
    assert dataset.classes == ["benign", "tumour"]
    assert {name: len(indices) for name, indices in dataset.split.items()} == {
        "test": 4,
        "training": 4,
    }


def test_split_keeps_patients_together(tmp_path):
    names = {f"p{p}_{s}": [1] for p in range(6) for s in range(3)}
    for name in names:
        write_pair(tmp_path, name, [1])
    write_config(tmp_path, names)
    output = tmp_path / "split.yaml"
    result = runner.invoke(
        app, ["split", str(tmp_path / "data.yaml"), str(output), "-r", "training=0.67",
              "-r", "validation=0.33", "--seed", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = DataConfig.load(output)
    patients = {
        purpose: {item.image.split("/")[-1].split("_")[0] for item in config.items(purpose)}
        for purpose in config.purposes()
    }
    assert not patients["training"] & patients["validation"]
    assert config.count() == 18 and config.count("validation") == 6
