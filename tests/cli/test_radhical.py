"""The ``digipath radhical patches`` command on generated slides."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from digipath.cli.main import app
from digipath.data.patch_database import PatchDatabase
from digipath.synthetic import nuclei_slide, write_nuclei_slide

runner = CliRunner()


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("radhical_cli")
    paths = []
    for seed, name in enumerate(("A1_x", "A2_x", "A3_x")):
        slide = nuclei_slide((768, 768), seed=seed, clusters=3, cluster_fraction=0.15)
        paths.append(write_nuclei_slide(folder / "slides", name, slide))
    return folder, paths


def test_patches_from_a_glob(slides, tmp_path):
    folder, _ = slides
    out = tmp_path / "levels"
    arguments = [
        "radhical",
        "patches",
        "--images",
        str(folder / "slides" / "*.tif"),
        "--out",
        str(out),
        "--spacings",
        "0.25,0.5,1,2.5",
        "--seed",
        "3",
        "--caps",
        "nucleus=10,edge=10,background=5,negative=8,mixed=8,positive=8",
    ]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "RADHicaL training patches" in result.output and "level_<index>" in result.output
    assert "training: 2 patients" in result.output  # the masks beside the slides are no images
    finest = PatchDatabase(out / "level_0_0.25um")
    assert finest.classes == ["negative", "nucleus"]
    assert finest.index["metadata"]["caps"]["background"] == 5
    assert sum(finest.count(p) for p in finest.purposes) <= 3 * 2 * 25
    assert PatchDatabase(out / "level_3_2.5um").classes == ["negative", "mixed", "positive"]
    again = runner.invoke(app, arguments)
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_patches_from_a_list_as_json(slides, tmp_path):
    _, paths = slides
    listing = tmp_path / "pairs.tsv"
    listing.write_text("# image\tmask\n" + "".join(f"{i}\t{m}\n" for i, m in paths))
    out = tmp_path / "levels"
    result = runner.invoke(
        app,
        [
            "radhical",
            "patches",
            "--list",
            str(listing),
            "--out",
            str(out),
            "--spacings",
            "0.25,1",
            "--purposes",
            "training=1",
            "--rotations",
            "0",
            "--json",
            "--max-pixels",
            "200000",
            "--tile-size",
            "384",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(row["level"], row["purpose"]) for row in rows] == [(0, "training"), (1, "training")]
    assert rows[0]["images"] == 3 and rows[0]["patients"] == 3
    assert rows[0]["patches"] == rows[0]["negative"] + rows[0]["nucleus"] > 0
    assert PatchDatabase(out / "level_1_1um").count("training") == rows[1]["patches"]


def test_patches_reports_bad_input(slides, tmp_path):
    folder, _ = slides
    nothing = runner.invoke(
        app,
        ["radhical", "patches", "--images", str(tmp_path / "*.svs"), "--out", str(tmp_path / "o")],
    )
    assert nothing.exit_code == 1 and "no images match" in nothing.output
    missing = runner.invoke(
        app,
        [
            "radhical",
            "patches",
            "--images",
            str(folder / "slides" / "*.tif"),
            "--masks",
            "{dir}/{name}_labels.tif",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert missing.exit_code == 1 and "_labels.tif" in missing.output
    caps = runner.invoke(
        app,
        [
            "radhical",
            "patches",
            "--images",
            str(folder / "slides" / "*.tif"),
            "--out",
            str(tmp_path / "o"),
            "--caps",
            "cells=3",
        ],
    )
    assert caps.exit_code == 1 and "caps.cells" in caps.output
    assert runner.invoke(app, ["radhical"]).exit_code in (0, 2)  # help


@pytest.fixture(scope="module")
def levels(tmp_path_factory):
    """levels.yaml of the hand-set darkness classifiers (tests/radhical_models.py)."""
    import yaml
    from radhical_models import SPACINGS, darkness_model

    folder = tmp_path_factory.mktemp("radhical_levels")
    entries = []
    for index, spacing in enumerate(SPACINGS):
        path = folder / f"level_{index}.safetensors"
        darkness_model(index).save(path)
        entries.append({"level": index, "spacing": spacing, "model": path.name})
    (folder / "levels.yaml").write_text(yaml.safe_dump({"levels": entries}))
    return folder / "levels.yaml"


def test_tune_then_apply_the_cascade(slides, levels, tmp_path):
    _, paths = slides
    validation = str(paths[0][0])
    tuned = runner.invoke(app, [
        "radhical", "tune", str(levels), "--images", validation, "--out", str(tmp_path / "tune"),
        "--grid", "6", "--max-loss", "0.02",
    ])  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    thresholds = tmp_path / "tune" / "thresholds.yaml"
    assert thresholds.exists() and (tmp_path / "tune" / "tuning.png").exists()
    assert "compute fraction" in tuned.output
    applied = runner.invoke(app, [
        "radhical", "apply", str(levels), str(thresholds), "--images", str(paths[1][0]),
        "--output", str(tmp_path / "out" / "{name}_nuclei.tif"),
    ])  # fmt: skip
    assert applied.exit_code == 0, applied.output
    report = json.loads(applied.stdout.strip().splitlines()[-1])
    assert (tmp_path / "out" / "A2_x_nuclei.tif").exists()
    assert (tmp_path / "out" / "A2_x_nuclei_report.json").exists()
    assert report["compute fraction"] < 1.0
    naive = runner.invoke(app, [
        "radhical", "apply", str(levels), "--naive", "--images", str(paths[1][0]),
        "--output", str(tmp_path / "naive" / "{name}.tif"),
    ])  # fmt: skip
    assert naive.exit_code == 0, naive.output
    assert json.loads(naive.stdout.strip().splitlines()[-1])["compute fraction"] == 1.0


def test_apply_refuses_thresholds_of_other_levels(slides, levels, tmp_path):
    from digipath.radhical.decisions import Thresholds

    _, paths = slides
    Thresholds.compute_all([0.25, 0.5]).save(tmp_path / "two.yaml")
    result = runner.invoke(app, [
        "radhical", "apply", str(levels), str(tmp_path / "two.yaml"), "--images",
        str(paths[0][0]), "--output", str(tmp_path / "{name}.tif"),
    ])  # fmt: skip
    assert result.exit_code == 1
    assert "are not those of" in result.output


def test_train_command_writes_levels(tmp_path):
    import yaml
    from radhical_models import write_level_databases

    write_level_databases(tmp_path / "databases")
    parameters = tmp_path / "parameters.yaml"
    parameters.write_text(yaml.safe_dump(yaml.safe_load(TRAINING_PARAMETERS)))
    result = runner.invoke(app, [
        "radhical", "train", str(parameters), str(tmp_path / "databases"), "--out",
        str(tmp_path / "experiments"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "experiments" / "levels.yaml").exists()


TRAINING_PARAMETERS = """
model: {type: 'levelnet', widths: [4, 4, 8], hidden: 8}
system: {process count: 0}
training:
  epoch count: 1
  metric name: 'validation accuracy'
  higher is better: true
  averaging length: 1
  iterations:
    training: {repetition count: 1, iteration count: 2, batch size: 16}
    validation: {repetition count: 1, iteration count: 1, batch size: 16}
data:
  images: {patch shapes: {1.0: [32, 32]}}
  labels: {label ratios: {0: 1.0, 1: 1.0, 2: 1.0}}
levels:
  0: {data: {labels: {label ratios: {0: 1.0, 1: 1.0}}}}
"""
