"""Float conversions: to_float32, normalize, scale_to, scale_from_to."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.augment.colour import HedColor
from digipath.augment.intensity import Normalize, ScaleFromTo, ScaleTo, ToFloat32
from digipath.errors import AugmentationError

PATCH = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5


def test_conversions_accept_float_input():
    for cls in (ToFloat32, Normalize, ScaleTo, ScaleFromTo):
        assert cls.uint8_only is False


def test_to_float32_divides_image_only_by_default():
    label = np.ones((4, 4), np.uint8)
    out, moved = ToFloat32(divisor=255.0)(PATCH, label)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, PATCH / 255.0, rtol=1e-6)
    assert moved is label


def test_to_float32_label_divisor():
    label = np.full((4, 4), 255, np.uint8)
    out, moved = ToFloat32(divisor=1.0, label_divisor=255.0)(PATCH, label)
    np.testing.assert_array_equal(out, PATCH.astype(np.float32))
    assert moved.dtype == np.float32
    np.testing.assert_array_equal(moved, 1.0)
    assert label.dtype == np.uint8 and np.all(label == 255)
    _, none = ToFloat32(label_divisor=2.0)(PATCH)
    assert none is None


def test_to_float32_on_float_input_copies():
    image = PATCH.astype(np.float32)
    out, _ = ToFloat32()(image)
    assert out is not image
    np.testing.assert_array_equal(out, image)


def test_normalize_scalar_and_per_channel():
    out, _ = Normalize(mean=100.0, std=50.0)(PATCH)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (PATCH - 100.0) / 50.0, rtol=1e-6, atol=1e-6)
    mean, std = (10.0, 20.0, 30.0), (1.0, 2.0, 4.0)
    out, _ = Normalize(mean=mean, std=std)(PATCH)
    np.testing.assert_allclose(out, (PATCH - np.array(mean)) / np.array(std), rtol=1e-6)


def test_normalize_channel_count_checked_at_call_time():
    normalize = Normalize(mean=(0.5, 0.5), std=1.0)
    with pytest.raises(AugmentationError, match="normalize: mean has 2 values but the patch has 3"):
        normalize(PATCH)
    out, _ = normalize(np.zeros((2, 2, 2), np.uint8))
    assert out.shape == (2, 2, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": 0.0, "std": 0.0}, "normalize: std must be non-zero"),
        ({"mean": 0.0, "std": (1.0, 0.0, 1.0)}, "normalize: std must be non-zero"),
        ({"mean": "a", "std": 1.0}, "normalize: mean must be a number"),
        ({"mean": (), "std": 1.0}, "normalize: mean must be a number or a non-empty"),
        ({"mean": (0.0, None), "std": 1.0}, r"normalize: mean\[1\] must be a number"),
    ],
)
def test_normalize_bad_parameters(kwargs, match):
    with pytest.raises(AugmentationError, match=match):
        Normalize(**kwargs)


def test_scale_to_uses_the_patch_range():
    out, _ = ScaleTo(new_min=-1.0, new_max=1.0)(PATCH)
    assert out.dtype == np.float32
    assert out.min() == pytest.approx(-1.0) and out.max() == pytest.approx(1.0)
    np.testing.assert_allclose(out, (PATCH - 0.0) / 235.0 * 2 - 1, atol=1e-6)
    constant, _ = ScaleTo(new_min=0.25, new_max=1.0)(np.full((3, 3, 3), 7, np.uint8))
    np.testing.assert_array_equal(constant, 0.25)


def test_scale_from_to_maps_and_clamps():
    scale = ScaleFromTo(old_min=50, old_max=150, new_min=0.0, new_max=1.0)
    image = np.array([[[0, 50, 100], [150, 200, 255]]], np.uint8)
    out, _ = scale(image)
    np.testing.assert_allclose(out, [[[0.0, 0.0, 0.5], [1.0, 1.0, 1.0]]], atol=1e-6)
    inverted, _ = ScaleFromTo(old_min=0, old_max=255, new_min=1.0, new_max=-1.0)(image)
    assert inverted[0, 0, 0] == pytest.approx(1.0) and inverted[0, 1, 2] == pytest.approx(-1.0)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    old=st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)).filter(
        lambda t: np.float32(t[0]) != np.float32(t[1])
    ),
    new=st.tuples(st.floats(-10, 10), st.floats(-10, 10)),
)
def test_scale_from_to_stays_in_the_new_range(seed, old, new):
    image = np.random.default_rng(seed).normal(0, 500, (5, 6, 3)).astype(np.float32)
    out, _ = ScaleFromTo(old[0], old[1], new[0], new[1])(image)
    low, high = min(new), max(new)
    tolerance = 1e-4 * (1 + abs(low) + abs(high))
    assert out.dtype == np.float32
    assert out.min() >= low - tolerance and out.max() <= high + tolerance


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    spread=st.floats(1e-30, 1e6),
    new=st.tuples(st.floats(-10, 10), st.floats(-10, 10)),
)
def test_scale_to_reaches_the_new_range(seed, spread, new):
    image = (np.random.default_rng(seed).random((5, 6, 3)) * spread).astype(np.float32)
    out, _ = ScaleTo(new[0], new[1])(image)
    low, high = min(new), max(new)
    tolerance = 1e-4 * (1 + abs(low) + abs(high))
    assert out.min() >= low - tolerance and out.max() <= high + tolerance
    if image.max() > image.min():
        assert out.flat[np.argmin(image)] == pytest.approx(new[0], abs=tolerance)
        assert out.flat[np.argmax(image)] == pytest.approx(new[1], abs=tolerance)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ToFloat32(divisor=0), "to_float32: divisor must be non-zero"),
        (lambda: ToFloat32(label_divisor=0.0), "to_float32: label_divisor must be non-zero"),
        (lambda: ScaleTo(new_min="a", new_max=1.0), "scale_to: new_min must be a number"),
        (lambda: ScaleFromTo(1, 1, 0, 1), "scale_from_to: old_min and old_max must differ"),
        (lambda: ScaleFromTo(0, 1e-50, 0, 1), "scale_from_to: old_min and old_max must differ"),
    ],
)
def test_bad_parameters(build, match):
    with pytest.raises(AugmentationError, match=match):
        build()


def test_other_augmenters_reject_float_so_conversions_come_last():
    image, _ = ToFloat32(divisor=255.0)(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(AugmentationError, match="hed_color: the patch must be uint8"):
        HedColor()(image)
