"""RADHicaL targets: level fractions, classes, the edge ring and the background heuristic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from digipath.radhical import targets
from digipath.radhical.targets import (
    BACKGROUND_PART,
    EDGE_PART,
    IGNORE,
    NUCLEUS_PART,
    FractionPlan,
    background_heuristic,
    edge_ring,
    finest_classes,
    finest_parts,
    level_classes,
    level_fraction,
    nearest_indices,
    nearest_resize,
    resize_taps,
    stretch_limits,
)
from digipath.synthetic import nuclei_slide


def test_fraction_of_a_full_mask_by_hand():
    # 2 x 2 box (rows r..r+1, zero-padded) then MATLAB's antialiased bilinear taps
    # [1, 3, 3, 1] / 8: the last row and column see the zero padding (0.75), the corner 0.5625
    fraction = level_fraction(np.ones((8, 8), np.uint8), 2)
    expected = np.ones((4, 4))
    expected[3, :] = expected[:, 3] = 0.75
    expected[3, 3] = 0.56  # 0.5625 rounded to 2 decimals
    np.testing.assert_array_equal(fraction, expected)


def test_fraction_of_one_block_by_hand():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 255  # 0/255 masks count as 0/1
    fraction = level_fraction(mask, 2)
    # box means around the block: rows 1-3 x cols 1-3 = [.25 .5 .25; .5 1 .5; .25 .5 .25]
    # coarse (1, 1): rows and cols weighted (.125 .375 .375) over box rows/cols 1, 2, 3
    assert fraction[1, 1] == 0.39  # 0.390625
    assert fraction[0, 0] == 0.10  # 0.09765625 (mirrored border taps)
    assert fraction[0, 1] == fraction[1, 0] == 0.20  # 0.1953125
    assert fraction[3, 3] == 0.0
    assert fraction.shape == (4, 4)


def test_resize_taps_are_matlab_bilinear():
    indices, weights = resize_taps(8, 4, 2)
    np.testing.assert_allclose(weights, np.tile([0.125, 0.375, 0.375, 0.125], (4, 1)))
    np.testing.assert_array_equal(indices[0], [0, 0, 1, 2])  # index -1 mirrored to 0
    np.testing.assert_array_equal(indices[3], [5, 6, 7, 7])
    identity_indices, identity_weights = resize_taps(5, 5, 1)
    np.testing.assert_array_equal(
        (identity_weights * (identity_indices == np.arange(5)[:, None])).sum(axis=1), np.ones(5)
    )


def test_fraction_in_blocks_equals_whole_and_non_integer_factors():
    rng = np.random.default_rng(3)
    mask = cv2.dilate((rng.random((203, 157)) < 0.01).astype(np.uint8), np.ones((9, 9), np.uint8))
    for factor in (2, 4, 10, 2.5):
        whole = level_fraction(mask, factor, block=10_000)
        blocks = level_fraction(mask, factor, block=7)
        np.testing.assert_array_equal(whole, blocks)
        assert whole.shape == tuple(int(np.ceil(n / factor)) for n in mask.shape)
        assert whole.min() >= 0 and whole.max() <= 1
        np.testing.assert_array_equal(whole, np.round(whole, 2))
    # a given output shape (the image's at the level) and explicit windows
    plan = FractionPlan(mask.shape, 4, (50, 39))
    r0, r1, c0, c1 = plan.source_window((10, 20), (5, 15))
    window = targets._padded(mask, r0, r1, c0, c1)
    np.testing.assert_array_equal(
        plan.compute(window, (10, 20), (5, 15)), level_fraction(mask, 4, (50, 39))[10:20, 5:15]
    )
    with pytest.raises(ValueError, match="factor"):
        level_fraction(mask, 0.5)


def test_level_classes_and_the_boundary_at_0_99():
    fraction = np.array([[0.0, 0.01, 0.5], [0.99, 1.0, 0.0]])
    background = np.array([[True, False, True], [True, True, False]])
    classes = level_classes(fraction, background)
    # 0.99 is mixed (the original's '< 0.99' left it in no class); 0 off the background: 255
    np.testing.assert_array_equal(classes, [[0, 1, 1], [1, 2, IGNORE]])
    with pytest.raises(ValueError, match="background"):
        level_classes(fraction, background[:1])


def test_edge_ring_and_finest_classes():
    mask = np.zeros((15, 15), np.uint8)
    mask[7, 7] = 1
    ring = edge_ring(mask)
    distance = np.maximum(*np.abs(np.mgrid[:15, :15] - 7))  # Chebyshev distance to the nucleus
    np.testing.assert_array_equal(ring, (distance >= 1) & (distance <= 3))
    background = np.ones((15, 15), bool)
    background[:, :2] = False
    parts = finest_parts(mask, background)
    assert parts[7, 7] == NUCLEUS_PART
    assert (parts[ring] == EDGE_PART).all()
    assert (parts[distance > 3][background[distance > 3]] == BACKGROUND_PART).all()
    assert (parts[:, :2] == IGNORE).all()
    classes = finest_classes(mask, background)
    assert classes[7, 7] == 1 and (classes[ring] == 0).all() and classes[0, 0] == IGNORE
    assert set(np.unique(classes)) == {0, 1, IGNORE}


def test_nearest_resize_is_matlab_nearest():
    np.testing.assert_array_equal(nearest_indices(8, 4, 2), [1, 3, 5, 7])
    # the last output pixel reaches past the input and is mirrored back (95 -> 94)
    np.testing.assert_array_equal(nearest_indices(95, 10, 10)[[0, 1, 9]], [5, 15, 94])
    image = np.arange(100).reshape(10, 10)
    np.testing.assert_array_equal(nearest_resize(image, 2), image[1::2, 1::2])


def test_stretch_limits_by_hand():
    values = np.array([10] * 10 + [50] * 40 + [200] * 50, np.uint8)
    assert stretch_limits(values) == (10, 50)  # share > 5 % from 10, >= 50 % at 50
    assert stretch_limits(np.full(20, 7, np.uint8)) == (0, 255)  # flat: MATLAB's [0, 1]
    histogram = np.bincount(values, minlength=256)
    assert stretch_limits(histogram) == (10, 50)


def _drawing() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((300, 300, 3), 230, np.uint8)
    cv2.circle(image, (150, 150), 65, (30, 30, 30), 10)  # a dark ring with a large hole
    cv2.circle(image, (40, 40), 8, (30, 30, 30), -1)  # a blob of ~200 px, cols 32-48
    image[39:42, 259:262] = 30  # a speck of 9 px (< 100 px): dropped
    image[250:290, 100:200] = 30  # a dark bar: the darkest 5 % are at 30
    cv2.circle(image, (40, 250), 10, (60, 60, 60), -1)  # grey: 0.15 once stretched
    mask = np.zeros((300, 300), np.uint8)
    mask[38:43, 38:43] = 1
    return image, mask


def test_background_heuristic_on_a_drawing():
    image, mask = _drawing()
    assert stretch_limits(image[:, :, 0]) == (30, 230)
    background = background_heuristic(image)
    assert not background[150, 150]  # inside the ring: the hole is filled
    # the box reaches rows/cols r-24 .. r+25: the blob (cols 32-48) darkens cols 7-72
    assert not background[40, 40] and not background[40, 72] and not background[40, 7]
    assert background[40, 73] and background[40, 6]
    assert background[40, 260]  # the speck is too small to count
    assert not background[250, 40]  # grey but below 0.3 once stretched
    assert background[200, 10]
    with_ring = background_heuristic(image, mask)
    assert not (with_ring & edge_ring(mask)).any()
    np.testing.assert_array_equal(with_ring, background & ~edge_ring(mask))
    # at 0.5 µm/px the sizes halve: a 25-pixel box (r-12 .. r+12), a 25-pixel blob threshold
    coarse = background_heuristic(image, spacing=0.5)
    assert coarse[40, 61] and not coarse[40, 60]
    assert background_heuristic(image, threshold=1 / 510)[250, 40]  # see the next test


def test_background_heuristic_with_the_original_uint8_threshold():
    image, _ = _drawing()
    red = image[:, :, 0]
    low, high = stretch_limits(red)
    original = background_heuristic(image, threshold=1 / 510)
    # what MATLAB computes: imadjust's uint8 output compared with 0.3, i.e. == 0
    stretched = (np.clip(red, low, high).astype(np.float64) - low) / (high - low)
    adjusted = np.round(255 * stretched).astype(np.uint8)
    dark = adjusted < 0.3
    labels, _ = ndimage.label(dark, np.ones((3, 3)))
    dark = (np.bincount(labels.ravel()) >= 100)[labels] & dark
    dark = ndimage.binary_fill_holes(dark, np.ones((3, 3)))
    near = ndimage.maximum_filter(dark.astype(np.uint8), 50, mode="constant", origin=(0, 0))
    expected = np.zeros_like(near)
    # the 50-box of MATLAB covers rows r-24 .. r+25: shift scipy's centred r-25 .. r+24 by one
    expected[:-1, :-1] = near[1:, 1:]
    np.testing.assert_array_equal(original[:-30, :-30], expected[:-30, :-30] == 0)


def test_background_heuristic_on_a_generated_slide():
    slide = nuclei_slide((1024, 1024), seed=1)
    background = background_heuristic(slide.image, slide.mask)
    nuclei = slide.mask > 0
    assert not (background & nuclei).any()
    distance = ndimage.distance_transform_edt(~nuclei)
    assert (distance[background] > 20).mean() > 0.99  # far from nuclei
    glass = ~slide.tissue
    assert background[glass].mean() > 0.5
    far_stroma = slide.tissue & (distance > 60)
    assert background[far_stroma].mean() > 0.2
    assert not background[distance < 5].any()
