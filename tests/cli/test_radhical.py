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
