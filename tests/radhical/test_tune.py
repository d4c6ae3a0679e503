"""RADHicaL threshold search: the simulation, the coordinate-wise search, its files and errors."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from digipath.errors import MissingImageError
from digipath.metrics import nucleus_scores
from digipath.radhical.decisions import Thresholds
from digipath.radhical.tune import (
    NEVER,
    LevelCounts,
    TuningError,
    ValidationImage,
    compute_fraction,
    load_validation_image,
    simulate,
    tune,
)

SPACINGS = (0.25, 0.5, 1.0)  # levels at factors 1, 2 and 4
GRID = tuple(np.linspace(0, 1, 21))


def nuclei_mask(rng: np.random.Generator, shape=(192, 192), count=22) -> np.ndarray:
    """Separate disks (radius 5-8), none touching the border."""
    mask = np.zeros(shape, np.uint8)
    placed = 0
    for _ in range(count * 20):
        radius = int(rng.integers(5, 9))
        row, col = (int(rng.integers(12, s - 12)) for s in shape)
        window = mask[row - radius - 3 : row + radius + 4, col - radius - 3 : col + radius + 4]
        if window.any():
            continue
        cv2.circle(mask, (col, row), radius, 1, -1)
        placed += 1
        if placed == count:
            break
    return mask.astype(bool)


def level_map(mask: np.ndarray, factor: int, rng: np.random.Generator, noise=0.08) -> np.ndarray:
    """A 3-class soft map from the mask's per-pixel fractions at a coarser level (uint8)."""
    rows, cols = mask.shape[0] // factor, mask.shape[1] // factor
    fraction = cv2.resize(mask.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    classes = np.where(fraction > 0.99, 2, np.where(fraction > 0.01, 1, 0))
    soft = np.eye(3, dtype=np.float32)[classes] + rng.uniform(0, noise, (rows, cols, 3))
    soft /= soft.sum(axis=2, keepdims=True)
    return np.rint(soft * 255).astype(np.uint8)


def finest_map(mask: np.ndarray, rng: np.random.Generator, noise=0.1) -> np.ndarray:
    positive = np.clip(0.15 + 0.7 * mask + rng.normal(0, noise, mask.shape), 0, 1)
    return np.stack([1 - positive, positive], axis=-1).astype(np.float32)


def synthetic_image(seed: int, name: str = "") -> ValidationImage:
    rng = np.random.default_rng(seed)
    mask = nuclei_mask(rng)
    maps = (finest_map(mask, rng), level_map(mask, 2, rng), level_map(mask, 4, rng))
    return ValidationImage(maps, mask, name=name or f"synthetic {seed}")


@pytest.fixture(scope="module")
def images() -> list[ValidationImage]:
    return [synthetic_image(seed) for seed in range(3)]


@pytest.fixture(scope="module")
def loss_result(images):
    return tune(images, SPACINGS, grid=GRID, max_fscore_loss=0.02)


# -- simulate -----------------------------------------------------------------------------------


def test_compute_everything_reproduces_thresholding_the_finest_map(images):
    image = images[0]
    thresholds = Thresholds.compute_all(SPACINGS, final=0.4)
    result = simulate(image.maps, thresholds, fill_holes=False)
    np.testing.assert_array_equal(result.mask, image.maps[0][..., 1] >= np.float32(0.4))
    assert [level.computed for level in result.levels] == [192**2, 96**2, 48**2]
    assert all(level.forced == 0 for level in result.levels)
    assert result.compute_fraction() == pytest.approx(1 + 1 / 4 + 1 / 16)
    assert result.compute_fraction(costs=(1, 2, 4)) == pytest.approx(1 + 2 / 4 + 4 / 16)
    filled = simulate(image.maps, thresholds).mask
    np.testing.assert_array_equal(filled, ndimage.binary_fill_holes(result.mask))


def hand_made():
    """Two levels, 8 x 8 and 4 x 4: a forced block, a computed block, negatives elsewhere."""
    coarse = np.zeros((4, 4, 3), np.float32)
    coarse[..., 0] = 1
    coarse[:2, :2] = (0, 0, 1)  # all positive: forced
    coarse[2:, 2:] = (0, 1, 0)  # mixed: computed
    finest = np.zeros((8, 8, 2), np.float32)
    finest[..., 0] = 1
    finest[5, 5] = (0.2, 0.8)  # a nucleus pixel where the fine level computes
    finest[1, 1] = (1, 0)  # the fine net says negative inside the forced block
    return [finest, coarse]


def test_forced_pixels_propagate_and_counts_by_hand():
    maps = hand_made()
    thresholds = Thresholds((0.5, 1.0), final=0.5, upper=(0.9,), lower=(0.5,))
    result = simulate(maps, thresholds, fill_holes=False)
    # bilinear upsampling of the 4 x 4 output (half-pixel centres): the forced block keeps
    # P2 = 1 on rows/cols 0-2 and blends to 0.75 on row/col 3; the mixed block has P1 + P2
    # >= 0.5 on rows/cols 4-7, and the forced block's blended rim (0.75) is computed too
    forced = np.zeros((8, 8), bool)
    forced[:3, :3] = True
    assert result.mask[forced].all()  # forced positive although the finest map says negative
    assert result.mask[5, 5] and result.mask.sum() == forced.sum() + 1
    coarse, fine = result.levels[1], result.levels[0]
    assert coarse == LevelCounts(16, 0, 16)
    assert fine == LevelCounts(computed=16 + 7, forced=9, total=64)
    assert result.compute_fraction() == pytest.approx((23 + 16) / 64)


def test_forcing_propagates_through_a_middle_level():
    coarse = np.zeros((2, 2, 3), np.uint8)
    coarse[..., 0] = 255
    coarse[0, 0] = (0, 0, 255)
    middle = np.zeros((4, 4, 3), np.uint8)
    middle[..., 0] = 255  # the middle network says "negative" everywhere
    finest = np.zeros((8, 8, 2), np.uint8)
    finest[..., 0] = 255
    thresholds = Thresholds((0.25, 0.5, 1.0), 0.5, upper=(0.9, 0.9), lower=(0.5, 0.5))
    result = simulate([finest, middle, coarse], thresholds, fill_holes=False)
    # the coarse forced pixel forces the middle's top-left pixel, which forces the finest's
    # top-left pixel; at both levels the blended rim (P2 0.56-0.75 < 0.9) is computed: 3 px
    assert result.levels[1] == LevelCounts(3, 1, 16)
    assert result.levels[0] == LevelCounts(3, 1, 64)
    assert result.mask[0, 0] and result.mask.sum() == 1


def test_tissue_restricts_the_coarsest_level():
    maps = hand_made()
    tissue = np.zeros((4, 4), bool)
    tissue[:, :2] = True
    thresholds = Thresholds((0.5, 1.0), final=0.5, upper=(0.9,), lower=(0.5,))
    result = simulate(maps, thresholds, tissue=tissue, fill_holes=False)
    assert result.levels[1].computed == 8
    assert not result.mask[5, 5]  # the mixed block lies outside the tissue: not computed
    big = cv2.resize(tissue.astype(np.uint8), (40, 40), interpolation=cv2.INTER_NEAREST)
    again = simulate(maps, thresholds, tissue=big, fill_holes=False)  # any shape
    np.testing.assert_array_equal(again.mask, result.mask)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    upper=st.floats(0, 1),
    lowers=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    uppers=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    lower=st.floats(0, 1),
)
def test_compute_is_monotone_in_the_finest_decision_thresholds(seed, upper, lowers, uppers, lower):
    rng = np.random.default_rng(seed)
    finest = rng.uniform(0, 1, (16, 16, 2)).astype(np.float32)
    middle = rng.dirichlet((1, 1, 1), (8, 8)).astype(np.float32)
    coarse = rng.dirichlet((1, 1, 1), (4, 4)).astype(np.float32)
    maps = [finest, middle, coarse]

    def fraction(finest_upper, finest_lower):
        thresholds = Thresholds(SPACINGS, 0.5, (finest_upper, 0.7), (finest_lower, 0.3))
        return simulate(maps, thresholds).compute_fraction()

    low, high = sorted(lowers)
    assert fraction(upper, high) <= fraction(upper, low)  # raising lower computes less
    low, high = sorted(uppers)
    assert fraction(low, lower) <= fraction(high, lower)  # raising upper forces less


# -- the search -----------------------------------------------------------------------------


def test_the_loss_search_saves_compute_within_the_allowed_loss(images, loss_result):
    result = loss_result
    assert result.naive_f_score > 0.9  # the finest map alone is nearly right
    assert result.f_score >= result.naive_f_score - 0.02 - 1e-9
    assert result.compute_fraction < 0.45  # most of the finest level is never computed
    assert result.level_fractions[0] < 0.4 and result.level_fractions[2] == 1.0
    assert result.everything_fraction == pytest.approx(1 + 1 / 4 + 1 / 16)
    # the order of the steps: final, then per level (finest first) upper then lower
    assert [c.name for c in result.curves] == [
        "final",
        "level 1 upper",
        "level 1 lower",
        "level 2 upper",
        "level 2 lower",
    ]
    assert NEVER in result.curves[1].values and 0.0 in result.curves[2].values
    thresholds = result.thresholds
    assert thresholds.final == result.curves[0].value
    assert (thresholds.upper[0], thresholds.lower[0]) == (
        result.curves[1].value,
        result.curves[2].value,
    )
    assert (thresholds.upper[1], thresholds.lower[1]) == (
        result.curves[3].value,
        result.curves[4].value,
    )
    # every step kept what the previous one reached or saved compute, within the bound
    last = result.curves[-1]
    assert last.compute_fraction[last.chosen] == pytest.approx(result.compute_fraction)
    assert last.f_score[last.chosen] == pytest.approx(result.f_score)
    for curve in result.curves[1:]:
        assert curve.f_score[curve.chosen] >= curve.bound - 1e-12
        feasible = [c for f, c in zip(curve.f_score, curve.compute_fraction, strict=True)
                    if f >= curve.bound - 1e-12]  # fmt: skip
        # the best F among the feasible values within the compute tolerance (0.01) of the least
        least = min(feasible)
        assert curve.compute_fraction[curve.chosen] <= least + 0.01
        close = [f for f, c in zip(curve.f_score, curve.compute_fraction, strict=True)
                 if f >= curve.bound - 1e-12 and c <= least + 0.01]  # fmt: skip
        assert curve.f_score[curve.chosen] == max(close)
    # the even schedule: coarse step k of n may bring F down to F_naive - loss * k / n
    bounds = [curve.bound for curve in result.curves[1:]]
    assert bounds == sorted(bounds, reverse=True)
    assert bounds[-1] == pytest.approx(result.naive_f_score - result.max_fscore_loss)
    # the reported scores are those of simulate() with the thresholds found
    scores = [nucleus_scores(simulate(i.maps, thresholds).mask, i.truth) for i in images]
    assert result.f_score == pytest.approx(np.mean([s.f_score for s in scores]))


def test_a_zero_loss_search_keeps_the_naive_f(images):
    image = images[0]
    result = tune([(image.maps, image.truth)], SPACINGS, grid=GRID, max_fscore_loss=0.0)
    assert result.f_score >= result.naive_f_score - 1e-12
    assert result.compute_fraction < result.everything_fraction


def test_the_budget_objective_respects_the_budget(images, loss_result):
    budget = 0.08
    assert loss_result.compute_fraction > budget  # the budget binds harder than the loss
    result = tune(images, SPACINGS, grid=GRID, objective="budget", compute_budget=budget)
    assert result.compute_fraction <= budget
    assert result.objective == "budget" and result.compute_budget == budget
    assert result.max_fscore_loss > 0.02
    assert result.f_score >= result.naive_f_score - result.max_fscore_loss - 1e-9
    generous = tune(images, SPACINGS, grid=GRID, objective="budget", compute_budget=2.0)
    assert generous.max_fscore_loss == 0.0  # everything fits: no loss needed
    assert generous.f_score >= generous.naive_f_score - 1e-12


def test_an_impossible_budget_says_what_is_reachable(images):
    with pytest.raises(TuningError, match=r"compute_budget: 0\.001 cannot be met.*least compute"):
        tune(images[:1], SPACINGS, grid=(0.0, 0.5, 1.0), objective="budget", compute_budget=0.001)


def test_costs_weigh_the_levels(images):
    thresholds = Thresholds.compute_all(SPACINGS)
    counts = [simulate(i.maps, thresholds).levels for i in images[:2]]
    assert compute_fraction(counts) == pytest.approx(1 + 1 / 4 + 1 / 16)
    assert compute_fraction(counts, (2, 1, 1)) == pytest.approx((2 + 1 / 4 + 1 / 16) / 2)


def test_progress_is_reported(images):
    calls = []
    two_levels = [ValidationImage(i.maps[:2], i.truth) for i in images[:2]]
    tune(two_levels, SPACINGS[:2], grid=(0.0, 0.5, 1.0), progress=lambda *a: calls.append(a))
    assert ("final", 2, 2) in calls and ("level 1 lower", 0, 2) in calls


# -- files ----------------------------------------------------------------------------------


def test_save_and_plot_write_their_files(loss_result, tmp_path):
    paths = loss_result.save(tmp_path / "tuning")
    assert set(paths) == {"thresholds", "curves", "summary", "plot"}
    assert Thresholds.load(paths["thresholds"]) == loss_result.thresholds
    with open(paths["curves"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(len(c.values) for c in loss_result.curves)
    assert {"step", "parameter", "level", "value", "f score", "compute fraction",
            "level 0 computed", "chosen"} <= set(rows[0])  # fmt: skip
    assert sum(row["chosen"] == "True" for row in rows) == len(loss_result.curves)
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    assert summary["compute fraction"] == pytest.approx(loss_result.compute_fraction)
    assert summary["thresholds"] == loss_result.thresholds.to_dict()
    assert len(summary["steps"]) == 5
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["plot"].stat().st_size > 10_000
    assert not list(tmp_path.rglob(".*.tmp"))


def test_load_validation_image_from_pngs(tmp_path, images):
    image = images[0]
    paths = []
    for level, values in enumerate(image.maps):
        values = np.clip(np.rint(values * 255), 0, 255).astype(np.uint8) if level == 0 else values
        if values.shape[2] == 2:
            values = np.concatenate([values, np.zeros_like(values[..., :1])], axis=2)
        path = tmp_path / f"image_{level}_prob.png"
        cv2.imwrite(str(path), cv2.cvtColor(values, cv2.COLOR_RGB2BGR))
        paths.append(path)
    cv2.imwrite(str(tmp_path / "image_mask.png"), image.truth.astype(np.uint8) * 255)
    loaded = load_validation_image(paths, tmp_path / "image_mask.png", spacings=SPACINGS)
    assert loaded.name == "image_0_prob.png" and loaded.shapes == image.shapes
    np.testing.assert_array_equal(loaded.maps[1], image.maps[1])  # RGB order kept
    np.testing.assert_array_equal(loaded.truth, image.truth)
    with pytest.raises(MissingImageError):
        load_validation_image([tmp_path / "nothing.png"], tmp_path / "image_mask.png")


def test_load_validation_image_from_tiffs(tmp_path, images):
    from digipath.io import ImageWriter

    image = images[0]
    paths = []
    for level, (values, spacing) in enumerate(zip(image.maps, SPACINGS, strict=True)):
        if level == 0:  # the cascade writes uint8 soft maps
            values = np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
        path = tmp_path / f"image_{level}.tif"
        with ImageWriter(path, values.shape[:2], spacing=spacing, channels=values.shape[2],
                         compression="lzw", tile_size=64) as writer:  # fmt: skip
            writer.fill(values)
        paths.append(path)
    mask = tmp_path / "mask.tif"
    with ImageWriter(mask, image.truth.shape, spacing=SPACINGS[0], channels=1, tile_size=64,
                     compression="lzw", interpolation="nearest") as writer:  # fmt: skip
        writer.fill(image.truth.astype(np.uint8)[:, :, None])
    tissue = tmp_path / "tissue.png"
    cv2.imwrite(str(tissue), np.ones((24, 24), np.uint8))
    loaded = load_validation_image(paths, mask, tissue, spacings=SPACINGS)
    assert loaded.shapes == image.shapes and loaded.tissue.shape == (48, 48)
    np.testing.assert_array_equal(loaded.maps[2], image.maps[2])
    np.testing.assert_array_equal(loaded.truth, image.truth)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((96, 96), np.uint8))
    with pytest.raises(TuningError, match=r"small.png: truth mask \(96, 96\) differs"):
        load_validation_image(paths, small)


# -- errors ---------------------------------------------------------------------------------


def test_inconsistent_inputs_name_what_is_wrong(images):
    image = images[0]
    finest, middle, coarse = image.maps
    with pytest.raises(TuningError, match="3 probability maps but 2 level spacings"):
        tune(images[:1], SPACINGS[:2])
    with pytest.raises(TuningError, match=r"level 2 map has 96 rows.*expects about 48"):
        simulate([finest, middle, middle], Thresholds.compute_all(SPACINGS))
    with pytest.raises(TuningError, match=r"image 'x', truth: mask shape \(10, 10\) differs"):
        ValidationImage(image.maps, np.zeros((10, 10)), name="x")
    with pytest.raises(TuningError, match=r"level 1 map: expected a \(rows, cols, 3\)"):
        ValidationImage((finest, middle[..., :2]), image.truth)
    with pytest.raises(TuningError, match=r"level 1 map .* is larger than level 0"):
        simulate([coarse, middle], Thresholds.compute_all(SPACINGS[:2]))
    with pytest.raises(TuningError, match=r"float probabilities must lie in \[0, 1\]"):
        ValidationImage((finest * 2, middle, coarse), image.truth)
    with pytest.raises(TuningError, match=r"uint8 .* or float .* got int64"):
        ValidationImage((finest.astype(np.int64), middle, coarse), image.truth)
    with pytest.raises(TuningError, match="max_fscore_loss: expected a number in"):
        tune(images[:1], SPACINGS, max_fscore_loss=-0.1)
    with pytest.raises(TuningError, match="objective: expected one of"):
        tune(images[:1], SPACINGS, objective="speed")
    with pytest.raises(TuningError, match="compute_budget: the budget objective needs"):
        tune(images[:1], SPACINGS, objective="budget")
    with pytest.raises(TuningError, match="costs: expected 3 positive"):
        tune(images[:1], SPACINGS, costs=(1, 1))
    with pytest.raises(TuningError, match="spacings: spacings must grow"):
        tune(images[:1], SPACINGS[::-1])
    empty = ValidationImage(image.maps, np.zeros_like(image.truth))
    with pytest.raises(TuningError, match="no validation image has an annotated nucleus"):
        tune([empty], SPACINGS, grid=(0.5,))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), density=st.floats(0.2, 0.8))
def test_hole_filling_matches_scipy(seed, density):
    from digipath.radhical.tune import _fill_holes

    mask = np.random.default_rng(seed).uniform(size=(23, 31)) < density
    np.testing.assert_array_equal(_fill_holes(mask), ndimage.binary_fill_holes(mask))
