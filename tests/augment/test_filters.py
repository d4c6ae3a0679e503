"""Filter augmenters: Gaussian blur, median blur, sharpening, and their border margins."""

from __future__ import annotations

import numpy as np
import pytest

from digipath.augment.base import centre_crop
from digipath.augment.filters import GaussianBlur, MedianBlur, Sharpen, gaussian_radius
from digipath.errors import AugmentationError


def applied(augmenter, image, seed=0):
    augmenter.randomize(np.random.default_rng(seed))
    out, _ = augmenter(image)
    return out


@pytest.mark.parametrize(
    ("sigma", "radius"), [(0.0, 0), (0.1, 1), (0.34, 2), (1.0, 3), (1.5, 5), (2.0, 6)]
)
def test_gaussian_radius(sigma, radius):
    assert gaussian_radius(sigma) == radius


@pytest.mark.parametrize(
    ("augmenter", "margin"),
    [
        (GaussianBlur([0.0, 1.0]), 3),
        (GaussianBlur([0.5, 2.0]), 6),
        (GaussianBlur([0.0, 0.0]), 0),
        (MedianBlur([1, 5]), 2),
        (MedianBlur([2, 8]), 3),
        (Sharpen([0.0, 1.0]), 3),
        (Sharpen([0.0, 1.0], sigma=0.5), 2),
    ],
    ids=lambda value: getattr(value, "keyword", str(value)),
)
def test_input_shape_margin(augmenter, margin):
    assert augmenter.input_shape((256, 200)) == (256 + 2 * margin, 200 + 2 * margin)
    assert augmenter.output_shape((256, 200)) == (256, 200)


@pytest.mark.parametrize(
    "augmenter",
    [GaussianBlur([0.5, 2.0]), MedianBlur([3, 7]), Sharpen([0.5, 2.0], sigma=1.5)],
    ids=lambda a: a.keyword,
)
def test_margin_removes_border_artefacts(augmenter, he_patch):
    """Filtering the extracted input_shape and cropping equals filtering a larger region."""
    target = (180, 170)
    augmenter.randomize(np.random.default_rng(4))
    for seed in range(3):
        augmenter.randomize(np.random.default_rng(seed))
        reference = centre_crop(augmenter(he_patch)[0], target)
        extracted = centre_crop(he_patch, augmenter.input_shape(target))
        np.testing.assert_array_equal(centre_crop(augmenter(extracted)[0], target), reference)


def test_without_margin_the_border_differs(he_patch):
    blur = GaussianBlur([2.0, 2.0])
    target = (180, 180)
    reference = centre_crop(applied(blur, he_patch), target)
    tight = applied(blur, np.ascontiguousarray(centre_crop(he_patch, target)))
    assert not np.array_equal(tight, reference)


def test_blur_zero_is_identity_and_blur_smooths(he_patch):
    np.testing.assert_array_equal(applied(GaussianBlur([0, 0]), he_patch), he_patch)
    blurred = applied(GaussianBlur([1.5, 1.5]), he_patch)
    assert blurred.dtype == np.uint8 and blurred.shape == he_patch.shape
    rough = np.abs(np.diff(he_patch.astype(int), axis=1)).mean()
    assert np.abs(np.diff(blurred.astype(int), axis=1)).mean() < 0.6 * rough
    assert abs(blurred.mean() - he_patch.mean()) < 0.5


def test_blur_is_per_channel_only():
    patch = np.zeros((21, 21, 3), np.uint8)
    patch[10, 10, 1] = 255
    out = applied(GaussianBlur([1.0, 1.0]), patch)
    assert out[..., 0].max() == 0 and out[..., 2].max() == 0
    assert out[10, 10, 1] == pytest.approx(255 / (2 * np.pi), abs=3)  # peak of a unit Gaussian
    assert np.all(out[:, :7, 1] == 0)  # nothing beyond the radius 3


def test_blur_reproducible(he_patch):
    blur = GaussianBlur([0.5, 2.0])
    out = applied(blur, he_patch, seed=9)
    np.testing.assert_array_equal(out, blur(he_patch)[0])
    np.testing.assert_array_equal(out, applied(GaussianBlur([0.5, 2.0]), he_patch, seed=9))


def test_median_draws_odd_sizes_only():
    median = MedianBlur([2, 8])
    sizes = set()
    rng = np.random.default_rng(0)
    for _ in range(60):
        median.randomize(rng)
        sizes.add(median._size)
    assert sizes == {3, 5, 7}


def test_median_removes_isolated_pixels():
    patch = np.full((15, 15, 3), 100, np.uint8)
    patch[7, 7] = 255
    np.testing.assert_array_equal(applied(MedianBlur([3, 3]), patch), 100)
    np.testing.assert_array_equal(applied(MedianBlur([1, 1]), patch), patch)


def test_median_any_channel_count():
    patch = np.random.default_rng(0).integers(0, 256, (16, 16, 2), dtype=np.uint8)
    out = applied(MedianBlur([3, 3]), patch)
    assert out.shape == patch.shape
    single = applied(MedianBlur([3, 3]), np.ascontiguousarray(patch[:, :, :1]))
    np.testing.assert_array_equal(out[:, :, :1], single)


def test_sharpen_formula(he_patch):
    np.testing.assert_array_equal(applied(Sharpen([0, 0]), he_patch), he_patch)
    out = applied(Sharpen([1.0, 1.0], sigma=1.0), he_patch).astype(float)
    blurred = applied(GaussianBlur([1.0, 1.0]), he_patch).astype(float)
    expected = np.clip(np.rint(2 * he_patch.astype(float) - blurred), 0, 255)
    assert np.abs(out - expected).max() <= 1
    assert out.std() > he_patch.std()


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: GaussianBlur([-1, 1]), "blur: sigma must be >= 0"),
        (lambda: GaussianBlur(None), "blur: sigma is required"),
        (lambda: MedianBlur([0, 3]), "median: size must be >= 1"),
        (lambda: MedianBlur([2, 2]), "median: size must contain an odd"),
        (lambda: Sharpen([-1, 1]), "sharpen: amount must be >= 0"),
        (lambda: Sharpen([0, 1], sigma=0), "sharpen: sigma must be > 0"),
    ],
)
def test_bad_parameters(build, match):
    with pytest.raises(AugmentationError, match=match):
        build()
