"""Sampling on the real slides: masks drawn from GeoJSON, statistics, centres and ratios."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats
from typer.testing import CliRunner

from digipath.annotations.rasterize import annotations_to_mask_like
from digipath.cli.main import app
from digipath.data.sampler import PatchSampler
from digipath.data.stats import MaskStats
from digipath.io import ImageReader

runner = CliRunner()


def polygon(points, label, holes=()):
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [points, *holes]},
        "properties": {"classification": {"name": label}},
    }


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def write_geojson(path, features):
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture(scope="module")
def cmu(test_data, tmp_path_factory):
    """CMU-1-Small-Region (2967 x 2220 at 0.499 µm/px) with a mask at 4 x 0.499 µm/px."""
    folder = tmp_path_factory.mktemp("cmu")
    slide = test_data / "wsi" / "aperio" / "CMU-1-Small-Region.svs"
    geojson = write_geojson(folder / "cmu.geojson", [
        polygon(square(200, 300, 1400, 1500), "tumour", [square(600, 700, 900, 1000)]),
        polygon([[1500, 2000], [2100, 2100], [1800, 2800], [1500, 2000]], "stroma"),
    ])  # fmt: skip
    mask = folder / "cmu-mask.tif"
    arguments = [str(geojson), str(slide), str(mask), "-l", "tumour=1", "-l", "stroma=2"]
    result = runner.invoke(app, ["annotations-to-mask", *arguments, "--spacing", "1.996"])
    assert result.exit_code == 0, result.output
    return slide, mask


def test_stats_match_a_full_bincount_and_round_trip(cmu, tmp_path):
    _, mask = cmu
    content = ImageReader(mask).content(1.996)[..., 0]
    assert content.shape == (742, 555)
    stats = MaskStats.from_mask(mask, 1.996, [0, 1, 2], tile_size=128)
    full = np.bincount(content.ravel(), minlength=3)
    assert stats.counts == {0: full[0], 1: full[1], 2: full[2]}
    assert content[160, 100] == 1 and content[210, 190] == 0 and content[600, 420] == 2
    loaded = MaskStats.load(stats.save(tmp_path / "cmu.stat"), mask=mask, labels=[0, 1, 2])
    assert loaded.counts == stats.counts


def test_central_labels_and_shared_centres_on_cmu(cmu):
    slide, mask = cmu
    sampler = PatchSampler(slide, mask=mask, labels=[0, 1, 2], mask_spacing=1.996)
    shapes = {0.499: (128, 128), 0.998: (64, 64)}
    samples = sampler.sample({0: 10, 1: 10, 2: 10}, shapes, rng=0)
    content = ImageReader(mask).content(1.996)[..., 0]
    centres = samples.centres
    assert (content[centres[:, 0], centres[:, 1]] == samples.labels).all()
    fine = samples.patches[0.499].astype(np.float64)
    downsampled = fine.reshape(30, 64, 2, 64, 2, 3).mean(axis=(2, 4))
    assert np.abs(downsampled - samples.patches[0.998]).max() <= 0.5 + 1e-9
    shifted = np.abs(downsampled[:, 1:] - samples.patches[0.998][:, :-1]).mean()
    assert shifted > 1  # the comparison would notice a one-pixel shift


def test_label_ratios_on_the_tcga_slide(test_data, tmp_path):
    slide = ImageReader(test_data / "wsi" / "aperio" / "tcga-cr-7395-01a-01-ts1.svs", spacing=0.5)
    geojson = write_geojson(tmp_path / "tcga.geojson", [
        polygon(square(500, 500, 2500, 2000), "tumour"),
        polygon(square(3000, 2200, 4200, 3400), "necrosis"),
    ])  # fmt: skip
    mask = annotations_to_mask_like(geojson, tmp_path / "tcga-mask.tif", slide, 2.0,
                                    {"tumour": 1, "necrosis": 2})  # fmt: skip
    sampler = PatchSampler(slide, mask=mask, labels=[0, 1, 2], mask_spacing=2.0)
    rng = np.random.default_rng(11)
    ratios = np.array([0.5, 0.3, 0.2])
    drawn = rng.choice(3, size=600, p=ratios)
    counts = {label: int((drawn == label).sum()) for label in range(3)}
    samples = sampler.sample(counts, {0.5: (32, 32), 1.0005: (16, 16)}, rng)
    observed = np.bincount(samples.labels, minlength=3)
    assert scipy_stats.chisquare(observed, ratios * 600).pvalue > 0.01
    content = ImageReader(mask).content(2.0)[..., 0]
    assert (content[samples.centres[:, 0], samples.centres[:, 1]] == samples.labels).all()
    assert samples.patches[1.0005].shape == (600, 16, 16, 3)


def test_mask_to_annotations_command(cmu, tmp_path):
    _, mask = cmu
    output = tmp_path / "outlines.geojson"
    result = runner.invoke(app, ["mask-to-annotations", str(mask), str(output), "-n", "1=tumour",
                                 "-n", "2=stroma", "--spacing", "1.996"])  # fmt: skip
    assert result.exit_code == 0, result.output
    features = json.loads(output.read_text())["features"]
    names = {f["properties"]["classification"]["name"] for f in features}
    assert names == {"tumour", "stroma"}
