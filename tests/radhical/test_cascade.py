"""The cascade on a generated slide with hand-set level classifiers (tests/radhical/conftest.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from radhical_models import SPACINGS, darkness_model

from digipath.inference.apply import apply_network
from digipath.io import ImageReader, ImageWriter
from digipath.metrics.objects import nucleus_scores
from digipath.radhical.cascade import cascade_apply
from digipath.radhical.decisions import Thresholds

THRESHOLDS = Thresholds(SPACINGS, 0.5, (0.9, 0.9, 0.9), (0.5, 0.5, 0.5))


def _read(path) -> np.ndarray:
    with ImageReader(path) as reader:
        return reader.read(reader.spacings[0], 0, 0, *reader.shapes[0])[..., 0]


def test_cascade_computes_far_less_at_the_same_fscore(tmp_path, generated_slide, darkness_models):
    slide, image, _ = generated_slide
    naive = cascade_apply(darkness_models[:1], image, tmp_path / "naive.tif",
                          Thresholds(SPACINGS[:1], 0.5))  # fmt: skip
    cascade = cascade_apply(darkness_models, image, tmp_path / "cascade.tif", THRESHOLDS,
                            report=tmp_path / "report.json")  # fmt: skip
    naive_scores = nucleus_scores(_read(tmp_path / "naive.tif"), slide.mask)
    cascade_scores = nucleus_scores(_read(tmp_path / "cascade.tif"), slide.mask)
    assert naive.compute_fraction == 1.0
    assert cascade.compute_fraction < 0.15
    assert cascade.levels[0].network_pixels < naive.levels[0].network_pixels / 4
    assert cascade.compute_saved > 0.5 and naive.compute_saved == 0
    assert cascade_scores.f_score >= naive_scores.f_score - 0.03
    assert cascade_scores.detection_rate >= naive_scores.detection_rate - 0.05
    report = json.loads((tmp_path / "report.json").read_text())
    assert [level["spacing"] for level in report["levels"]] == list(SPACINGS)
    assert report["levels"][-1]["computed_pixels"] == report["levels"][-1]["pixels"]
    assert 0 < report["compute saved"] < 1
    assert not (tmp_path / ".cascade.tif.levels").exists()  # intermediate maps removed


def test_one_level_is_apply_then_threshold(tmp_path, generated_slide, darkness_models):
    """The naive cascade equals apply_network + P(positive) >= threshold (no hole filling)."""
    _, image, _ = generated_slide
    cascade_apply(darkness_models[:1], image, tmp_path / "naive.tif",
                  Thresholds(SPACINGS[:1], 0.5), fill_holes_um=None)  # fmt: skip
    apply_network(darkness_models[0], image, tmp_path / "soft.tif", spacing=0.25, soft=True,
                  quantize=True, tile_size=255)  # fmt: skip
    with ImageReader(tmp_path / "soft.tif") as reader:
        soft = reader.read(0.25, 0, 0, *reader.shapes[0])
    # regions and tiles give the same probabilities (a valid network), up to float rounding
    different = _read(tmp_path / "naive.tif") != (soft[..., 1] >= 0.5 * 255)
    assert different.mean() < 1e-4


def test_forced_pixels_skip_compute_and_propagate(tmp_path, generated_slide):
    """With a low all-positive level, the coarse levels force nuclei areas as positive."""
    _, image, _ = generated_slide
    models = [darkness_model(0)] + [darkness_model(k, positive=0.02) for k in (1, 2, 3)]
    forced = Thresholds(SPACINGS, 0.5, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    report = cascade_apply(models, image, tmp_path / "out.tif", forced, keep_levels=True)
    assert report.levels[0].forced_pixels > 0
    folder = tmp_path / ".out.tif.levels"
    decisions = _read(folder / "level_0_decisions.tif")
    result = _read(tmp_path / "out.tif")
    assert result[decisions == 2].all()  # forced pixels are positive without compute
    coarse = _read(folder / "level_1_decisions.tif")
    assert (coarse == 2).sum() > 0
    # a pixel forced at level 1 stays forced at level 0 (away from borders of forced areas)
    inner = np.zeros_like(coarse, bool)
    inner[1:-1, 1:-1] = (
        (coarse[1:-1, 1:-1] == 2) & (coarse[:-2, 1:-1] == 2) & (coarse[2:, 1:-1] == 2)
        & (coarse[1:-1, :-2] == 2) & (coarse[1:-1, 2:] == 2)
    )  # fmt: skip
    rows, cols = np.nonzero(inner)
    assert (decisions[2 * rows, 2 * cols] == 2).all()


def test_mask_restricts_the_coarsest_level(tmp_path, generated_slide, darkness_models):
    slide, image, _ = generated_slide
    mask = np.zeros(slide.mask.shape, np.uint8)
    mask[: mask.shape[0] // 2] = 1
    with ImageWriter(tmp_path / "tissue.tif", mask.shape, spacing=0.25, channels=1,
                     compression="lzw", interpolation="nearest") as writer:  # fmt: skip
        writer.fill(mask[:, :, None])
    report = cascade_apply(darkness_models, image, tmp_path / "out.tif", THRESHOLDS,
                           mask=tmp_path / "tissue.tif")  # fmt: skip
    coarsest = report.levels[-1]
    assert coarsest.computed_pixels == pytest.approx(coarsest.pixels / 2, rel=0.02)
    assert not _read(tmp_path / "out.tif")[mask.shape[0] // 2 + 64 :].any()


def test_interrupted_run_resumes_from_the_finished_levels(
    tmp_path, generated_slide, darkness_models, monkeypatch
):
    _, image, _ = generated_slide
    from digipath.radhical import cascade as module

    calls = []
    armed = [True]
    original = module.RegionClassifier.classify

    def failing(self, prepared):
        calls.append(self.spacing)
        if armed[0] and calls.count(0.25) == 5:  # in the middle of the finest level
            raise KeyboardInterrupt
        return original(self, prepared)

    monkeypatch.setattr(module.RegionClassifier, "classify", failing)
    with pytest.raises(KeyboardInterrupt):
        cascade_apply(darkness_models, image, tmp_path / "out.tif", THRESHOLDS)
    assert not (tmp_path / "out.tif").exists()
    folder = tmp_path / ".out.tif.levels"
    assert (folder / "level_1.tif").exists()  # the coarse levels are done
    assert list(folder.glob("level_0_band_*.npz"))  # and the finest level's first bands
    calls.clear()
    armed[0] = False
    resumed = cascade_apply(darkness_models, image, tmp_path / "out.tif", THRESHOLDS)
    assert 0.5 not in calls  # the finished levels were not recomputed
    again = cascade_apply(darkness_models, image, tmp_path / "fresh.tif", THRESHOLDS)
    np.testing.assert_array_equal(_read(tmp_path / "out.tif"), _read(tmp_path / "fresh.tif"))
    assert [level.network_pixels for level in resumed.levels] == [
        level.network_pixels for level in again.levels
    ]


def test_wrong_models_are_refused(tmp_path, generated_slide, darkness_models):
    _, image, _ = generated_slide
    with pytest.raises(ValueError, match="need 4 models"):
        cascade_apply(darkness_models[:2], image, tmp_path / "out.tif", THRESHOLDS)
    with pytest.raises(ValueError, match=r"level 0 .* 2-class"):
        cascade_apply(darkness_models[1:] + darkness_models[:1], image, tmp_path / "out.tif",
                      THRESHOLDS)  # fmt: skip
