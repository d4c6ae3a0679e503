"""AugmenterPool: groups, one draw per location at every spacing, shapes and cropping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digipath.augment import (
    AdditiveGaussianNoise,
    AugmenterPool,
    Contrast,
    Flip,
    GaussianBlur,
    HsbColor,
    Resize,
    Rotate,
    Rotate90,
    Scale,
    load_augmentation,
)
from digipath.augment.base import LABEL_FILL
from digipath.errors import AugmentationError

SEED_YAML = Path(__file__).resolve().parents[2] / "examples" / "augmentation" / "seed.yaml"


def seed_pool(seed: int = 0) -> AugmenterPool:
    return load_augmentation(SEED_YAML, rng=seed)["training"]


def test_groups_are_validated():
    pool = AugmenterPool(rng=0)
    pool.append_group("spatial")
    with pytest.raises(AugmentationError, match="already exists"):
        pool.append_group("spatial")
    with pytest.raises(AugmentationError, match="unknown augmentation group 'colour'"):
        pool.append_augmenter(Contrast([-0.1, 0.1]), "colour")
    pool.append_group("colour", random=True)
    with pytest.raises(AugmentationError, match="ratio"):
        pool.append_augmenter(Contrast([-0.1, 0.1]), "colour", ratio=0.0)
    with pytest.raises(AugmentationError, match="randomized"):
        pool.leaves()
    with pytest.raises(AugmentationError, match="no augmenters"):
        pool.randomize()
    assert pool.groups == ["spatial", "colour"]


def test_random_group_picks_by_ratio():
    pool = AugmenterPool(rng=3)
    pool.append_group("colour", random=True)
    first, second = Contrast([-0.1, 0.1]), HsbColor(hue=[-0.1, 0.1])
    pool.append_augmenter(first, "colour", ratio=3.0)
    pool.append_augmenter(second, "colour", ratio=1.0)
    chosen = []
    for _ in range(2000):
        pool.randomize()
        (leaf,) = pool.leaves()
        chosen.append(leaf is first)
    assert 0.72 < np.mean(chosen) < 0.78


def test_seed_input_shape_chains_requirements():
    pool = seed_pool()
    # blur sigma <= 1 needs a 3-pixel margin (262); scaling down to 0.75 needs 262 / 0.75.
    rows, cols = pool.input_shape((256, 256))
    assert rows == cols
    blur_margin = GaussianBlur([0.0, 1.0]).input_shape((256, 256))[0]
    assert rows == int(np.ceil(blur_margin / 0.75))
    assert pool.shapes({0.5: (256, 256), 2.0: (128, 64)})[2.0] == pool.input_shape((128, 64))


def test_process_is_reproducible_and_shapes(he_patch):
    patches = np.stack([he_patch, he_patch[::-1], he_patch[:, ::-1]])
    first, _ = seed_pool(7).process(patches, shapes=(200, 200))
    second, _ = seed_pool(7).process(patches, shapes=(200, 200))
    other, _ = seed_pool(8).process(patches, shapes=(200, 200))
    assert first.shape == (3, 200, 200, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_same_draw_at_every_spacing(he_patch):
    """One location's patches at two spacings get the same parameters (identical inputs stay
    identical, noise included), and label maps move with their patches."""
    pool = seed_pool(11)
    stack = np.stack([he_patch] * 4)
    label = (np.arange(256)[:, None] // 32 + np.arange(256)[None, :] // 32).astype(np.uint8)
    labels = np.stack([label] * 4)
    patches, maps = pool.process(
        {0.5: stack, 1.0: stack.copy()},
        {0.5: labels, 1.0: labels.copy()},
        shapes={0.5: (180, 180), 1.0: (180, 180)},
    )
    np.testing.assert_array_equal(patches[0.5], patches[1.0])
    np.testing.assert_array_equal(maps[0.5], maps[1.0])
    assert maps[0.5].shape == (4, 180, 180)
    # different locations got different draws
    assert not np.array_equal(patches[0.5][0], patches[0.5][1])


def test_central_labels_pass_through(he_patch):
    central = np.array([1, 0], np.uint8)
    _, labels = seed_pool().process(np.stack([he_patch, he_patch]), central, shapes=(128, 128))
    assert labels is central


def test_label_maps_stay_aligned_through_fused_warps():
    """Image channel 0 encodes the label; with nearest interpolation the fused warp of
    flip + rotate_90 + scale + rotate must move both identically."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 6, (12, 12), dtype=np.uint8)
    label = np.kron(blocks, np.ones((24, 24), np.uint8))  # 288 x 288
    image = np.stack([label * 40, rng.integers(0, 255, label.shape, np.uint8), label], axis=2)
    pool = AugmenterPool(rng=5)
    pool.append_group("spatial")
    for augmenter in (
        Flip(),
        Rotate90(),
        Scale([0.8, 1.2], order=0),
        Rotate([-30, 30], interpolation="nearest"),
    ):
        pool.append_augmenter(augmenter, "spatial")
    target = (160, 160)
    for _ in range(20):
        pool.randomize()
        out, moved = pool.transform(image, label, target)
        assert out.shape[:2] == moved.shape == target
        np.testing.assert_array_equal(out[:, :, 0], moved.astype(np.uint8) * 40)
        assert LABEL_FILL not in moved


def test_no_invented_border_when_extracting_input_shape():
    """Zooming out to the minimum scale from the enlarged extraction keeps a ramp monotonic
    (a reflected border would fold it back)."""
    pool = AugmenterPool(rng=0)
    pool.append_group("spatial")
    pool.append_augmenter(Scale([0.75, 0.75], order=1), "spatial")
    target = (64, 64)
    rows, cols = pool.input_shape(target)
    ramp = np.tile(np.linspace(0, 250, cols).astype(np.uint8)[None, :, None], (rows, 1, 3))
    pool.randomize()
    out, _ = pool.transform(ramp, None, target)
    assert np.all(np.diff(out[:, :, 0].astype(int), axis=1) >= 0)
    # the same zoom without the margin reflects the border
    small = np.ascontiguousarray(ramp[: target[0], : target[1]])
    folded, _ = pool.transform(small, None, target)
    assert np.any(np.diff(folded[:, :, 0].astype(int), axis=1) < 0)


def test_early_crop_matches_crop_at_the_end(he_patches):
    """Cropping before the colour and blur steps gives what cropping after them gives."""
    pool = AugmenterPool(rng=2)
    pool.append_group("spatial")
    pool.append_augmenter(Scale([0.9, 1.1]), "spatial")
    pool.append_group("colour", random=True)
    pool.append_augmenter(HsbColor(hue=[-0.1, 0.1], saturation=[-0.2, 0.2]), "colour")
    pool.append_group("blur")
    pool.append_augmenter(GaussianBlur([0.5, 1.5]), "blur")
    target = (96, 96)
    for patch in he_patches:
        pool.randomize()
        cropped, _ = pool.transform(patch[:200, :200], None, target)
        full, _ = pool.transform(patch[:200, :200], None, None)
        top = (full.shape[0] - target[0]) // 2
        left = (full.shape[1] - target[1]) // 2
        reference = full[top : top + target[0], left : left + target[1]]
        assert np.abs(cropped.astype(int) - reference).max() <= 1


def test_too_small_result_is_an_error(he_patch):
    pool = AugmenterPool(rng=0)
    pool.append_group("noise")
    pool.append_augmenter(AdditiveGaussianNoise([0.0, 0.01]), "noise")
    pool.randomize()
    with pytest.raises(AugmentationError, match="smaller than the target"):
        pool.transform(he_patch[:50, :50], None, (64, 64))


def test_without_shapes_the_natural_output_shape_is_kept(he_patch):
    pool = AugmenterPool(rng=0)
    pool.append_group("size")
    pool.append_augmenter(Resize(shape=(100, 120)), "size")
    pool.append_augmenter(Flip(["none", "vertical"]), "size")
    labels = np.zeros((3, 256, 256), np.uint8)
    out, maps = pool.process(np.stack([he_patch] * 3), labels)
    assert out.shape == (3, 100, 120, 3) and maps.shape == (3, 100, 120)
    empty, _ = pool.process(np.empty((0, 256, 256, 3), np.uint8))
    assert empty.shape == (0, 256, 256, 3)


def test_draws_of_different_shapes_need_target_shapes(he_patch):
    pool = AugmenterPool(rng=0)
    pool.append_group("size", random=True)
    pool.append_augmenter(Resize(shape=(100, 100)), "size")
    pool.append_augmenter(Resize(shape=(80, 80)), "size")
    with pytest.raises(AugmentationError, match="pass the target shapes"):
        pool.process(np.stack([he_patch] * 20))
    out, _ = pool.process(np.stack([he_patch] * 20), shapes=(64, 64))
    assert out.shape == (20, 64, 64, 3)


def test_process_draws_from_the_given_generator(he_patch):
    pool = load_augmentation(SEED_YAML, rng=0)["training"]
    batch = np.stack([he_patch] * 4)
    first, _ = pool.process(batch, rng=np.random.default_rng(5))
    pool.process(batch)  # advances the pool's own generator only
    second, _ = pool.process(batch, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(first, second)
