"""Colour augmenters: HED stain jitter, HSB, contrast, brightness, gamma."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.augment.colour import (
    HED_FROM_RGB,
    RGB_FROM_HED,
    Brightness,
    Contrast,
    Gamma,
    HedColor,
    HsbColor,
    hed_to_rgb,
    od_to_rgb,
    rgb_to_hed,
    rgb_to_od,
)
from digipath.errors import AugmentationError


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def mean_hed(image: np.ndarray) -> np.ndarray:
    return rgb_to_hed(image).reshape(-1, 3).mean(axis=0)


def applied(augmenter, image, seed=0):
    augmenter.randomize(np.random.default_rng(seed))
    out, _ = augmenter(image)
    return out


# -- optical density and HED conversions ---------------------------------------------------------


def test_od_definition():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    od = rgb_to_od(levels)
    assert od.dtype == np.float32 and od.shape == levels.shape
    expected = -np.log((levels.astype(np.float64) + 1.0) / 256.0)
    np.testing.assert_allclose(od, expected, rtol=1e-6, atol=1e-6)
    assert od[-1, -1, 0] == 0.0  # white is transparent
    np.testing.assert_array_equal(od_to_rgb(od), levels)


def test_stain_matrix_rows_are_unit_ruifrok_vectors():
    np.testing.assert_allclose(np.linalg.norm(RGB_FROM_HED, axis=1), 1.0)
    np.testing.assert_allclose(RGB_FROM_HED @ HED_FROM_RGB, np.eye(3), atol=1e-12)
    ruifrok_h = np.array([0.65, 0.70, 0.29])
    assert RGB_FROM_HED[0] @ ruifrok_h / np.linalg.norm(ruifrok_h) == pytest.approx(1.0)


def test_hed_round_trip_on_real_patches(he_patches):
    for patch in he_patches:
        hed = rgb_to_hed(patch)
        assert hed.dtype == np.float32 and hed.shape == patch.shape
        assert max_diff(hed_to_rgb(hed), patch) <= 1


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 20), cols=st.integers(1, 20))
def test_hed_round_trip_property(seed, rows, cols):
    image = np.random.default_rng(seed).integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    assert max_diff(hed_to_rgb(rgb_to_hed(image)), image) <= 1


def test_pure_haematoxylin_pixel_has_only_h_concentration():
    concentrations = np.zeros((1, 1, 3), np.float32)
    concentrations[..., 0] = 1.0
    pixel = hed_to_rgb(concentrations)
    hed = rgb_to_hed(pixel)[0, 0]
    assert hed[0] == pytest.approx(1.0, abs=0.02)
    assert abs(hed[1]) < 0.02 and abs(hed[2]) < 0.02


def test_conversion_shape_errors():
    with pytest.raises(AugmentationError, match="rgb_to_hed"):
        rgb_to_hed(np.zeros((4, 4), np.uint8))
    with pytest.raises(AugmentationError, match="hed_to_rgb"):
        hed_to_rgb(np.zeros((4, 4, 2), np.float32))


# -- HedColor ------------------------------------------------------------------------------------

ZERO = {"sigma": [0.0, 0.0], "bias": [0.0, 0.0]}


def test_hed_zero_sigma_and_bias_is_identity(he_patches):
    augmenter = HedColor(haematoxylin=ZERO, eosin=ZERO, dab=ZERO)
    for patch in he_patches:
        assert max_diff(applied(augmenter, patch), patch) <= 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"haematoxylin": None, "eosin": None, "dab": None},
        {"haematoxylin": {"sigma": None, "bias": None}, "eosin": {}},
    ],
)
def test_hed_null_ranges_are_identity(he_patch, kwargs):
    # the original library drew sigma = 1 (doubling the stain) for a null range
    augmenter = HedColor(**kwargs)
    np.testing.assert_array_equal(augmenter.sigma, 0.0)
    np.testing.assert_array_equal(augmenter.bias, 0.0)
    assert max_diff(applied(augmenter, he_patch), he_patch) <= 1


@pytest.mark.parametrize("bias", [0.1, -0.1, 0.2, -0.2])
def test_haematoxylin_bias_moves_only_haematoxylin(he_patches, bias):
    """Raising (lowering) the H bias raises (lowers) the mean H concentration by about the bias.

    In concentration space the map is exact, so the eosin mean moves only through rounding to
    grey levels (about 0.5 / (I + 1) OD per level, averaging out) and through saturation at
    white when the bias is negative (a few per cent of pixels). On these patches it moves by
    < 3 % of the bias; we allow 5 %. The H mean moves by the bias up to the same saturation
    (< 10 %).
    """
    augmenter = HedColor(haematoxylin={"bias": [bias, bias]})
    for patch in he_patches:
        change = mean_hed(applied(augmenter, patch)) - mean_hed(patch)
        assert np.sign(change[0]) == np.sign(bias)
        assert abs(change[0]) == pytest.approx(abs(bias), rel=0.1)
        assert abs(change[1]) < 0.05 * abs(bias)


def test_eosin_sigma_scales_eosin(he_patch):
    before = mean_hed(he_patch)
    after = mean_hed(applied(HedColor(eosin={"sigma": [0.2, 0.2]}), he_patch))
    assert after[1] == pytest.approx(1.2 * before[1], rel=0.02)
    assert after[0] == pytest.approx(before[0], abs=0.01)


def test_hed_cutoff_outside_the_mean_leaves_patch_unchanged(he_patch):
    strong = {"sigma": [0.5, 0.5], "bias": [0.3, 0.3]}
    mean = he_patch.mean() / 255.0
    outside = HedColor(haematoxylin=strong, cutoff=[min(mean + 0.1, 1.0), 1.0])
    out = applied(outside, he_patch)
    np.testing.assert_array_equal(out, he_patch)
    assert out is not he_patch
    inside = HedColor(haematoxylin=strong, cutoff=[mean - 0.1, mean + 0.1])
    assert max_diff(applied(inside, he_patch), he_patch) > 10


def test_hed_reproducible_and_replayable(he_patch):
    params = {"sigma": [-0.2, 0.2], "bias": [-0.2, 0.2]}
    first = HedColor(haematoxylin=params, eosin=params)
    second = HedColor(haematoxylin=params, eosin=params)
    out = applied(first, he_patch, seed=5)
    np.testing.assert_array_equal(out, applied(second, he_patch, seed=5))
    np.testing.assert_array_equal(out, first(he_patch)[0])  # apply twice, same draw
    assert not np.array_equal(out, applied(second, he_patch, seed=6))


def test_hed_label_and_input_untouched(he_patch):
    label = np.zeros(he_patch.shape[:2], np.uint8)
    original = he_patch.copy()
    augmenter = HedColor(haematoxylin={"sigma": [0.1, 0.2]})
    augmenter.randomize(np.random.default_rng(0))
    _, moved = augmenter(he_patch, label)
    assert moved is label
    np.testing.assert_array_equal(he_patch, original)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"haematoxylin": {"sigm": [0, 0.1]}}, r"haematoxylin.*'sigm'.*valid keys.*'sigma'"),
        ({"eosin": {"bias": [-2, 0.1]}}, r"hed_color: eosin.bias must be >= -1"),
        ({"dab": {"sigma": [0.2, 0.1]}}, r"dab.sigma must have min <= max"),
        ({"haematoxylin": [0.1, 0.2]}, r"haematoxylin must be a mapping"),
        ({"cutoff": [0.5, 1.5]}, r"hed_color: cutoff must be <= 1"),
    ],
)
def test_hed_bad_parameters(kwargs, match):
    with pytest.raises(AugmentationError, match=match):
        HedColor(**kwargs)


def test_hed_needs_rgb():
    with pytest.raises(AugmentationError, match=r"hed_color.*3 channels"):
        HedColor()(np.zeros((4, 4, 4), np.uint8))


def test_hed_needs_a_draw_for_ranges():
    with pytest.raises(AugmentationError, match="randomize"):
        HedColor(haematoxylin={"bias": [0, 0.1]})(np.zeros((4, 4, 3), np.uint8))


# -- HsbColor ------------------------------------------------------------------------------------


def test_hsb_zero_is_identity(he_patches):
    augmenter = HsbColor(hue=[0, 0], saturation=[0, 0], brightness=[0, 0])
    for patch in he_patches:
        assert max_diff(applied(augmenter, patch), patch) <= 1
    assert max_diff(applied(HsbColor(), he_patches[0]), he_patches[0]) <= 1


def test_hue_half_turn_twice_is_identity(he_patches):
    half = HsbColor(hue=[0.5, 0.5])
    for patch in he_patches:
        once = applied(half, patch)
        assert max_diff(once, patch) > 20
        assert max_diff(applied(half, once), patch) <= 2


def test_hue_shift_wraps():
    # a hue shift of -0.25 equals one of +0.75
    patch = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    minus = applied(HsbColor(hue=[-0.25, -0.25]), patch)
    plus = applied(HsbColor(hue=[0.75, 0.75]), patch)
    assert max_diff(minus, plus) <= 1


def test_saturation_and_brightness_formulas():
    pixel = np.array([[[200, 100, 50]]], np.uint8)  # v = 200/255, s = 0.75, h = 20 degrees
    v, s = 200 / 255, 0.75
    grey = applied(HsbColor(saturation=[-1, -1]), pixel)
    assert np.all(grey == 200)  # s = 0: grey at the value
    more = applied(HsbColor(saturation=[0.5, 0.5]), pixel)
    s_new = s * (1 + (1 - s) * 0.5)
    assert more[0, 0, 2] == pytest.approx(200 * (1 - s_new), abs=1)
    darker = applied(HsbColor(brightness=[-0.5, -0.5]), pixel)
    assert darker[0, 0, 0] == pytest.approx(100, abs=1)
    brighter = applied(HsbColor(brightness=[0.5, 0.5]), pixel)
    assert brighter[0, 0, 0] == pytest.approx(255 * (v + (1 - v) * 0.5), abs=1)
    assert np.all(applied(HsbColor(brightness=[1, 1]), pixel)[0, 0, 0] == 255)
    assert np.all(applied(HsbColor(brightness=[-1, -1]), pixel) == 0)


def test_hsb_reproducible(he_patch):
    params = {"hue": [-0.1, 0.1], "saturation": [-0.3, 0.3], "brightness": [-0.3, 0.3]}
    first, second = HsbColor(**params), HsbColor(**params)
    out = applied(first, he_patch, seed=3)
    np.testing.assert_array_equal(out, applied(second, he_patch, seed=3))
    np.testing.assert_array_equal(out, first(he_patch)[0])


@pytest.mark.parametrize("name", ["hue", "saturation", "brightness"])
def test_hsb_bad_ranges(name):
    with pytest.raises(AugmentationError, match=f"hsb_color: {name} must be <= 1"):
        HsbColor(**{name: [0.0, 1.5]})


def test_hsb_needs_rgb():
    with pytest.raises(AugmentationError, match="hsb_color"):
        HsbColor()(np.zeros((4, 4, 1), np.uint8))


# -- contrast, brightness, gamma -----------------------------------------------------------------


def test_contrast_changes_spread_around_the_mean(he_patches):
    for patch in he_patches:
        std = patch.std()
        assert applied(Contrast([0.3, 0.3]), patch).std() > 1.1 * std
        assert applied(Contrast([-0.3, -0.3]), patch).std() < 0.9 * std
        np.testing.assert_array_equal(applied(Contrast([0, 0]), patch), patch)


def test_contrast_table_fixes_the_mean():
    contrast = Contrast([0.4, 0.4])
    table = contrast.table(100.0)
    assert table[100] == 100 and table[0] == 0 and table[255] == 255
    # input range (sigma c, 255 - sigma (255 - c)) = (40, 193) maps to (0, 255)
    assert table[40] == 0 and table[193] == 255
    assert table[45] == round(5 * 255 / 153)
    threshold = Contrast([1.0, 1.0]).table(120.0)
    assert set(np.unique(threshold)) == {0, 255} and threshold[119] == 0


def test_contrast_uses_luma_mean():
    patch = np.zeros((4, 4, 3), np.uint8)
    patch[..., 1] = 200  # luma 0.7154 * 200 = 143.1
    out = applied(Contrast([0.5, 0.5]), patch)
    # input range (71.5, 199.5): 200 -> 255, 0 -> 0
    assert out[0, 0, 1] == 255 and out[0, 0, 0] == 0


def test_brightness_saturates_and_rounds():
    patch = np.array([[[0, 100, 250]]], np.uint8)
    np.testing.assert_array_equal(applied(Brightness([10.4, 10.4]), patch), [[[10, 110, 255]]])
    np.testing.assert_array_equal(applied(Brightness([-10.6, -10.6]), patch), [[[0, 89, 239]]])


def test_gamma_curve():
    patch = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_array_equal(applied(Gamma([1, 1]), patch), patch)
    np.testing.assert_array_equal(applied(Gamma([2, 2]), patch), [[[0, 64, 255]]])
    assert applied(Gamma([0.5, 0.5]), patch)[0, 0, 1] == round(255 * (128 / 255) ** 0.5)


def test_grey_level_curves_accept_any_channel_count():
    patch = np.random.default_rng(2).integers(0, 256, (8, 8, 5), dtype=np.uint8)
    for augmenter in (Contrast([0.2, 0.2]), Brightness([5, 5]), Gamma([1.2, 1.2])):
        out = applied(augmenter, patch)
        assert out.shape == patch.shape and out.dtype == np.uint8


@pytest.mark.parametrize(
    ("cls", "value", "match"),
    [
        (Contrast, [-1.5, 0.0], "contrast: sigma must be >= -1"),
        (Brightness, [0, 300], "brightness: beta must be <= 255"),
        (Gamma, [0, 1], "gamma: gamma must be > 0"),
        (Gamma, None, "gamma: gamma is required"),
    ],
)
def test_curve_bad_parameters(cls, value, match):
    with pytest.raises(AugmentationError, match=match):
        cls(value)
