"""The ``digipath nuclei`` commands: apply (with a stand-in model) and stats."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from nuclei_standin import CoordinateModel, coordinate_image
from scipy import ndimage
from typer.testing import CliRunner

from digipath.cli import nuclei as nuclei_cli
from digipath.cli.main import app
from digipath.io import ImageReader, ImageWriter
from digipath.synthetic import nuclei_slide

runner = CliRunner()
SPACING = 0.5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nuclei_cli")
    slide = nuclei_slide((320, 400), spacing=SPACING, seed=5)
    instances, _ = ndimage.label(slide.mask)
    image = coordinate_image(instances.shape)
    cv2.imwrite(str(folder / "tile.png"), image[:, :, ::-1])
    with ImageWriter(
        folder / "slide.tif", instances.shape, spacing=SPACING, compression="lzw", tile_size=128
    ) as writer:
        writer.fill(image)
    (folder / "model.safetensors").write_bytes(b"stand-in")
    (folder / "types.json").write_text(
        json.dumps(
            {
                "0": ["background", [0, 0, 0]],
                "1": ["tumour", [255, 0, 0]],
                "2": ["stroma", [0, 255, 0]],
            }
        )
    )
    return folder, instances


@pytest.fixture
def stand_in(monkeypatch, setup):
    model = CoordinateModel(setup[1])
    monkeypatch.setattr(nuclei_cli, "_load_model", lambda path, device: model)
    return model


def test_apply_tile_mode_writes_every_format(setup, stand_in, tmp_path):
    folder, instances = setup
    out = tmp_path / "out"
    arguments = [
        "nuclei",
        "apply",
        str(folder / "model.safetensors"),
        "--images",
        str(folder / "tile.png"),
        "--out",
        str(out),
        "--spacing",
        "0.5",
        "--format",
        "geojson,json,tiff,overlay",
        "--type-info",
        str(folder / "types.json"),
        "--draw-dot",
    ]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    features = json.loads((out / "tile.geojson").read_text())["features"]
    assert len(features) > 5
    assert {f["properties"]["classification"]["name"] for f in features} <= {"tumour", "stroma"}
    data = json.loads((out / "tile.json").read_text())
    assert len(data["nuc"]) == len(features) and data["mag"] == 20
    with ImageReader(out / "tile_labels.tif") as reader:
        labels = reader.read(0.5, 0, 0, *instances.shape)[..., 0]
    assert len(np.unique(labels)) - 1 >= len(features)
    assert cv2.imread(str(out / "tile_overlay.png")).shape[:2] == instances.shape
    again = runner.invoke(app, arguments)
    assert "exists" in again.output


def test_apply_wsi_mode_matches_tile_mode(setup, stand_in, tmp_path):
    folder, _ = setup
    out = tmp_path / "wsi"
    result = runner.invoke(
        app,
        [
            "nuclei",
            "apply",
            str(folder / "model.safetensors"),
            "--images",
            str(folder / "slide.tif"),
            "--out",
            str(out),
            "--mode",
            "wsi",
            "--spacing",
            "0.5",
            "--format",
            "json",
            "--tile-size",
            "128",
            "--margin",
            "48",
        ],
    )
    assert result.exit_code == 0, result.output
    tiled = json.loads((out / "slide.json").read_text())["nuc"]
    tile = runner.invoke(
        app,
        [
            "nuclei",
            "apply",
            str(folder / "model.safetensors"),
            "--images",
            str(folder / "slide.tif"),
            "--out",
            str(out),
            "--spacing",
            "0.5",
            "--format",
            "geojson",
        ],
    )
    assert tile.exit_code == 0, tile.output
    whole = json.loads((out / "slide.geojson").read_text())["features"]
    assert len(tiled) == len(whole)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mode", "batch"], "tile or wsi"),
        (["--format", "png"], "geojson"),
        (["--mode", "wsi", "--format", "overlay", "--spacing", "0.5"], "geojson"),
        (["--mode", "wsi"], "spacing"),
    ],
)
def test_apply_argument_errors(setup, stand_in, tmp_path, extra, message):
    folder, _ = setup
    result = runner.invoke(
        app,
        [
            "nuclei",
            "apply",
            str(folder / "model.safetensors"),
            "--images",
            str(folder / "tile.png"),
            "--out",
            str(tmp_path),
            *extra,
        ],
    )
    assert result.exit_code == 2
    assert message in result.output


def test_apply_without_images_or_model(setup, tmp_path):
    folder, _ = setup
    result = runner.invoke(
        app,
        [
            "nuclei",
            "apply",
            str(folder / "model.safetensors"),
            "--images",
            str(tmp_path / "*.png"),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1 and "no image matches" in result.output
    result = runner.invoke(
        app,
        [
            "nuclei",
            "apply",
            str(tmp_path / "none.safetensors"),
            "--images",
            str(folder / "tile.png"),
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1 and "no such model file" in result.output


def _square(x, y, side, name, colour):
    ring = [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": name, "color": colour},
        },
    }


def test_stats_counts_areas_density(tmp_path):
    features = [
        _square(0, 0, 10, "tumour", [255, 0, 0]),
        _square(90, 90, 10, "tumour", [255, 0, 0]),
        _square(50, 50, 20, "stroma", [0, 255, 0]),
    ]
    path = tmp_path / "n.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    nuc = {
        "1": {
            "bbox": [[0, 0], [4, 4]],
            "centroid": [2, 2],
            "contour": [[0, 0], [4, 0], [4, 4], [0, 4]],
            "type": 1,
            "type_prob": 1.0,
        }
    }
    hover = tmp_path / "n.json"
    hover.write_text(json.dumps({"mag": 40, "nuc": nuc}))
    result = runner.invoke(
        app, ["nuclei", "stats", str(path), str(hover), "--spacing", "0.5", "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    by = {(Path(r["file"]).name, r["type"]): r for r in rows}
    assert by[("n.geojson", "all")]["count"] == 3
    tumour = by[("n.geojson", "tumour")]
    assert tumour["count"] == 2 and tumour["mean_area"] == pytest.approx(100 * 0.25)
    # the nuclei's box: 100 x 100 px at 0.5 µm/px = 0.0025 mm²
    assert tumour["density_per_mm2"] == pytest.approx(2 / 0.0025)
    assert by[("n.json", "type 1")]["mean_area"] == pytest.approx(16 * 0.25)
    table = runner.invoke(app, ["nuclei", "stats", str(path), "--area-mm2", "1"])
    assert table.exit_code == 0 and "tumour" in table.output
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    failed = runner.invoke(app, ["nuclei", "stats", str(bad)])
    assert failed.exit_code == 1 and "JSON" in failed.output
    missing = runner.invoke(app, ["nuclei", "stats", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and "no such file" in missing.output
    negative = runner.invoke(app, ["nuclei", "stats", str(path), "--spacing", "-1"])
    assert negative.exit_code == 2


def test_train_command_on_real_tiles(test_data, tmp_path):
    """One frozen-encoder epoch in fast mode on a real annotated tile writes the model files."""
    folder = test_data / "nuclei" / "cellseg_models"
    parameters = tmp_path / "hovernet.yaml"
    parameters.write_text("hovernet: {mode: fast, phases: [{epochs: 1, batch size: 4}]}\n")
    result = runner.invoke(app, [
        "nuclei", "train", "--images", str(folder / "patch2.png"), "--out", str(tmp_path),
        "--parameters", str(parameters), "--input-size", "96",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "hovernet_phase1_best_model.safetensors").exists()
    bad = runner.invoke(app, [
        "nuclei", "train", "--images", str(folder / "patch2.png"), "--out", str(tmp_path),
        "--phases", "ten",
    ])  # fmt: skip
    assert bad.exit_code != 0
    missing = runner.invoke(app, [
        "nuclei", "train", "--images", str(folder / "patch2.png"), "--out", str(tmp_path),
        "--labels", "{dir}/{name}_none.mat",
    ])  # fmt: skip
    assert missing.exit_code == 1 and "no annotation" in missing.output


def test_apply_wsi_mode_on_dask_workers(setup, stand_in, tmp_path, monkeypatch):
    """--workers runs each slide as a Dask task (threads here, so the stand-in is seen)."""
    import distributed

    original = distributed.LocalCluster
    monkeypatch.setattr(distributed, "LocalCluster",
                        lambda **options: original(**{**options, "processes": False}))  # fmt: skip
    folder, _ = setup
    arguments = ["nuclei", "apply", str(folder / "model.safetensors"), "--images",
                 str(folder / "slide.tif"), "--mode", "wsi", "--spacing", "0.5", "--format",
                 "json", "--tile-size", "128", "--margin", "48"]  # fmt: skip
    local = runner.invoke(app, [*arguments, "--out", str(tmp_path / "local")])
    on_dask = runner.invoke(app, [*arguments, "--out", str(tmp_path / "dask"), "--workers", "1"])
    assert local.exit_code == 0 and on_dask.exit_code == 0, on_dask.output
    assert "slide.tif:" in on_dask.output
    first = json.loads((tmp_path / "local" / "slide.json").read_text())["nuc"]
    second = json.loads((tmp_path / "dask" / "slide.json").read_text())["nuc"]
    assert len(first) == len(second) > 0
