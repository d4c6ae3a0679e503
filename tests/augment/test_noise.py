"""Noise augmenters: Gaussian, Laplace, Poisson, salt and pepper, coarse dropout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from digipath.augment.noise import (
    GAUSSIAN_TABLE,
    LAPLACE_TABLE,
    AdditiveGaussianNoise,
    AdditiveLaplaceNoise,
    AdditivePoissonNoise,
    CoarseDropout,
    SaltAndPepper,
    quantile_noise,
    uniform16,
)
from digipath.errors import AugmentationError

GREY = np.full((256, 256, 3), 128, np.uint8)


def applied(augmenter, image, seed=0):
    augmenter.randomize(np.random.default_rng(seed))
    out, _ = augmenter(image)
    return out


FACTORIES = {
    "additive": lambda: AdditiveGaussianNoise([0.02, 0.1]),
    "laplace_noise": lambda: AdditiveLaplaceNoise([1.0, 10.0]),
    "poisson_noise": lambda: AdditivePoissonNoise([1.0, 10.0]),
    "salt_and_pepper": lambda: SaltAndPepper([0.01, 0.2], per_channel=0.5),
    "coarse_dropout": lambda: CoarseDropout([0.1, 0.5], [0.05, 0.2], per_channel=0.5),
}


@pytest.mark.parametrize("keyword", sorted(FACTORIES))
def test_seeded_draws_reproduce(keyword, he_patch):
    augmenter = FACTORIES[keyword]()
    label = np.zeros(he_patch.shape[:2], np.uint8)
    original = he_patch.copy()
    augmenter.randomize(np.random.default_rng(11))
    first, moved = augmenter(he_patch, label)
    second, _ = augmenter(he_patch, label)  # the same draw, applied again
    np.testing.assert_array_equal(first, second)
    assert moved is label
    np.testing.assert_array_equal(he_patch, original)
    assert first.dtype == np.uint8 and first.shape == he_patch.shape
    other = FACTORIES[keyword]()
    np.testing.assert_array_equal(applied(other, he_patch, seed=11), first)
    assert not np.array_equal(applied(other, he_patch, seed=12), first)


@pytest.mark.parametrize("keyword", sorted(FACTORIES))
def test_apply_before_randomize_is_an_error(keyword):
    with pytest.raises(AugmentationError, match=f"{keyword}: call randomize"):
        FACTORIES[keyword]()(GREY)


@pytest.mark.parametrize(
    "augmenter",
    [
        AdditiveGaussianNoise([0, 0]),
        AdditiveLaplaceNoise([0, 0]),
        AdditivePoissonNoise([0, 0]),
        SaltAndPepper([0, 0]),
        CoarseDropout([0, 0], [0.1, 0.1]),
    ],
    ids=lambda a: a.keyword,
)
def test_zero_parameter_is_identity(augmenter, he_patch):
    out = applied(augmenter, he_patch)
    np.testing.assert_array_equal(out, he_patch)
    assert out is not he_patch


def test_gaussian_noise_std_is_sigma_full_scale():
    out = applied(AdditiveGaussianNoise([0.05, 0.05]), GREY).astype(float)
    assert out.std() == pytest.approx(0.05 * 255, rel=0.02)
    assert out.mean() == pytest.approx(128, abs=0.2)
    # independent per channel
    assert abs(np.corrcoef(out[..., 0].ravel(), out[..., 1].ravel())[0, 1]) < 0.02


def test_quantile_noise_follows_its_distribution():
    gaussian = quantile_noise(3, (200_000,), GAUSSIAN_TABLE).astype(np.float64)
    assert stats.kstest(gaussian, "norm").pvalue > 0.001
    assert abs(gaussian).max() > 4.0  # the tails reach past 4 standard deviations
    laplace = quantile_noise(4, (200_000,), LAPLACE_TABLE).astype(np.float64)
    assert stats.kstest(laplace, "laplace").pvalue > 0.001
    assert GAUSSIAN_TABLE.std() == pytest.approx(1.0, rel=1e-5)


def test_uniform16_is_uniform_and_replayable():
    values = uniform16(5, (300, 301))
    assert values.dtype == np.uint16 and values.shape == (300, 301)
    np.testing.assert_array_equal(values, uniform16(5, (300, 301)))
    counts = np.bincount(values.ravel() >> 12, minlength=16)  # 16 bins of 4096 values
    assert stats.chisquare(counts).pvalue > 0.001
    assert not np.array_equal(values, uniform16(6, (300, 301)))


def test_gaussian_noise_saturates():
    white = np.full((64, 64, 3), 250, np.uint8)
    out = applied(AdditiveGaussianNoise([0.2, 0.2]), white)
    assert out.max() == 255 and (out == 255).mean() > 0.3


def test_laplace_noise_statistics():
    out = applied(AdditiveLaplaceNoise([8.0, 8.0]), GREY).astype(float) - 128
    assert out.std() == pytest.approx(np.sqrt(2) * 8, rel=0.03)
    assert out.mean() == pytest.approx(0, abs=0.1)
    assert np.abs(out).mean() == pytest.approx(8, rel=0.03)  # E|X| = b


def test_poisson_noise_statistics():
    base = np.full((256, 256, 3), 100, np.uint8)
    added = applied(AdditivePoissonNoise([5.0, 5.0]), base).astype(float) - 100
    assert added.min() >= 0
    assert added.mean() == pytest.approx(5.0, rel=0.02)
    assert added.var() == pytest.approx(5.0, rel=0.03)
    assert (added == 0).mean() == pytest.approx(np.exp(-5.0), abs=0.002)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lam=st.floats(0.0, 300.0))
def test_poisson_noise_only_brightens(seed, lam):
    image = np.random.default_rng(seed).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    out = applied(AdditivePoissonNoise([lam, lam]), image, seed)
    assert np.all(out >= image)


@pytest.mark.parametrize(("mode", "values"), [("salt", {255}), ("pepper", {0}), ("both", {0, 255})])
def test_salt_and_pepper_whole_pixels(mode, values):
    out = applied(SaltAndPepper([0.1, 0.1], mode=mode), GREY)
    hit = np.any(out != 128, axis=2)
    assert hit.mean() == pytest.approx(0.1, abs=0.005)
    assert set(np.unique(out[hit])) == values
    assert np.all(out[hit] == out[hit][:, :1])  # all channels of a hit pixel
    if mode == "both":
        assert (out[hit][:, 0] == 255).mean() == pytest.approx(0.5, abs=0.03)


def test_salt_and_pepper_per_channel():
    out = applied(SaltAndPepper([0.1, 0.1], per_channel=1.0), GREY)
    hit = out != 128
    assert hit.mean() == pytest.approx(0.1, abs=0.005)
    partly = np.any(hit, axis=2) & ~np.all(hit, axis=2)
    assert partly.mean() > 0.2  # channels are hit independently


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p=st.floats(0.0, 1.0))
def test_salt_and_pepper_only_writes_extremes(seed, p):
    image = np.random.default_rng(seed).integers(1, 255, (9, 11, 3), dtype=np.uint8)
    out = applied(SaltAndPepper([p, p], per_channel=0.5), image, seed)
    changed = out != image
    assert set(np.unique(out[changed])) <= {0, 255}


def test_coarse_dropout_fraction_is_p():
    dropout = CoarseDropout([0.3, 0.3], [0.02, 0.02])
    out = applied(dropout, GREY)
    dropped = np.all(out == 0, axis=2)
    assert np.all((out == 0) == dropped[:, :, None])  # whole pixels
    assert dropped.mean() == pytest.approx(0.3, abs=0.03)
    # 5 x 5 rectangles (0.02 * 256 = 5.12, rounded down) aligned on the grid
    blocks = dropped[:255, :255].reshape(51, 5, 51, 5)
    assert np.all(blocks.all(axis=(1, 3)) == blocks.any(axis=(1, 3)))


def test_coarse_dropout_per_channel_and_fill():
    dropout = CoarseDropout([0.3, 0.3], [0.02, 0.02], per_channel=1.0, fill=7)
    out = applied(dropout, GREY)
    dropped = out == 7
    assert set(np.unique(out)) == {7, 128}
    assert dropped.mean() == pytest.approx(0.1, abs=0.02)  # p / channels per channel
    assert not np.all(dropped == dropped[:, :, :1])


def test_coarse_dropout_rectangles_at_least_one_pixel():
    tiny = np.full((10, 10, 3), 128, np.uint8)
    out = applied(CoarseDropout([1.0, 1.0], [0.01, 0.01]), tiny)
    assert np.all(out == 0)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: AdditiveGaussianNoise([-0.1, 0.1]), "additive: sigma must be >= 0"),
        (lambda: AdditiveLaplaceNoise([-1, 1]), "laplace_noise: scale must be >= 0"),
        (lambda: AdditivePoissonNoise([-1, 1]), "poisson_noise: lam must be >= 0"),
        (lambda: SaltAndPepper([0, 1.5]), "salt_and_pepper: p must be <= 1"),
        (lambda: SaltAndPepper([0, 0.1], per_channel=2), "salt_and_pepper: per_channel"),
        (lambda: SaltAndPepper([0, 0.1], mode="sugar"), "salt_and_pepper: mode must be one"),
        (lambda: CoarseDropout([0, 0.1], [0, 0.1]), "coarse_dropout: drop_size must be > 0"),
        (lambda: CoarseDropout([0, 0.1], [0.1, 1.2]), "coarse_dropout: drop_size must be <= 1"),
        (lambda: CoarseDropout([0, 0.1], [0.1, 0.1], fill=300), "coarse_dropout: fill"),
    ],
)
def test_bad_parameters(build, match):
    with pytest.raises(AugmentationError, match=match):
        build()
