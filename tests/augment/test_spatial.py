"""Affine spatial augmenters: flip, rotate_90, transpose, rotate, scale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from label_maps import interior, labelled

from digipath.augment.base import LABEL_FILL, centre_crop, warp_affine
from digipath.augment.spatial import Flip, Rotate, Rotate90, Scale, Transpose
from digipath.errors import AugmentationError


def drawn(augmenter, seed: int):
    augmenter.randomize(np.random.default_rng(seed))
    return augmenter


EXACT = [
    Flip(),
    Flip(["vertical"]),
    Rotate90(),
    Rotate90([1, 3]),
    Transpose(),
]

NEAREST = [
    *EXACT,
    Rotate([-40, 40], interpolation="nearest"),
    Rotate([-180, 180], interpolation="nearest", border="constant"),
    Rotate([10, 20], centre=(30.0, 200.0), scale=1.3, interpolation="nearest"),
    Scale([0.6, 1.4], order=0),
]

LINEAR = [
    Rotate([-40, 40]),
    Rotate([-30, 30], scale=0.8, interpolation="cubic", border="constant"),
    Scale([0.7, 1.3]),
    Scale([0.5, 1.5], order=3),
]


# -- alignment of image and label map --------------------------------------------------------


@pytest.mark.parametrize("augmenter", NEAREST, ids=repr)
def test_label_follows_image_exactly_with_nearest(augmenter, he_patch):
    image, label = labelled(he_patch[:200, :240])
    for seed in range(6):
        out, moved = drawn(augmenter, seed)(image, label)
        assert out.shape[:2] == moved.shape == augmenter.output_shape(image.shape[:2])
        assert moved.dtype == label.dtype
        real = moved != LABEL_FILL
        np.testing.assert_array_equal(out[:, :, 0][real], (moved[real] * 40).astype(np.uint8))
        assert np.all(out[:, :, 0][~real] == 0)


@pytest.mark.parametrize("augmenter", LINEAR, ids=repr)
def test_label_follows_image_with_interpolation(augmenter, he_patch):
    """Away from region boundaries (7 x 7 neighbourhoods: wider than any kernel's reach at
    these zooms) the interpolated image decodes to the nearest-sampled label."""
    image, label = labelled(he_patch[:200, :240], block=24)
    for seed in range(6):
        out, moved = drawn(augmenter, seed)(image, label)
        inside = interior(moved, 7)
        assert inside.mean() > 0.2
        decoded = np.round(out[:, :, 0].astype(float) / 40)
        np.testing.assert_array_equal(decoded[inside], moved[inside])


def test_inputs_are_not_modified(he_patch):
    image, label = labelled(he_patch[:64, :80])
    copies = image.copy(), label.copy()
    for augmenter in [*NEAREST, *LINEAR]:
        out, moved = drawn(augmenter, 1)(image, label)
        out[...] = 0
        moved[...] = 0
        np.testing.assert_array_equal(image, copies[0])
        np.testing.assert_array_equal(label, copies[1])


# -- matrices describe what apply does --------------------------------------------------------


@pytest.mark.parametrize("augmenter", EXACT, ids=repr)
@pytest.mark.parametrize("shape", [(37, 53), (40, 40), (1, 9)])
def test_exact_matrix_matches_apply(augmenter, shape, he_patch):
    image = np.ascontiguousarray(he_patch[: shape[0], : shape[1]])
    for seed in range(8):
        drawn(augmenter, seed)
        assert augmenter.exact()
        expected, _ = augmenter(image)
        out_shape = augmenter.output_shape(shape)
        warped = warp_affine(image, augmenter.matrix(shape), out_shape, "nearest")
        np.testing.assert_array_equal(warped, expected)


@pytest.mark.parametrize("channels", [1, 3, 7])
def test_flip_names_follow_numpy(channels, he_patch):
    image = np.ascontiguousarray(np.dstack([he_patch[:20, :30]] * 3)[:, :, :channels])
    label = np.arange(20 * 30, dtype=np.int64).reshape(20, 30) * 10**10
    for name, index in {
        "none": np.s_[:, :],
        "vertical": np.s_[::-1, :],
        "horizontal": np.s_[:, ::-1],
        "both": np.s_[::-1, ::-1],
    }.items():
        out, moved = Flip([name])(image, label)
        np.testing.assert_array_equal(out, image[index])
        np.testing.assert_array_equal(moved, label[index])
        assert out.flags.c_contiguous and moved.flags.c_contiguous
        assert out.shape == image.shape


@pytest.mark.parametrize("channels", [1, 3, 7])
def test_rotate_90_follows_np_rot90_and_swaps_shape(channels, he_patch):
    image = np.ascontiguousarray(np.dstack([he_patch[:30, :50]] * 3)[:, :, :channels])
    label = np.arange(30 * 50, dtype=np.int64).reshape(30, 50) * 10**10
    for k in range(-2, 6):
        augmenter = Rotate90([k])
        out, moved = augmenter(image, label)
        np.testing.assert_array_equal(out, np.rot90(image, k, axes=(0, 1)))
        np.testing.assert_array_equal(moved, np.rot90(label, k, axes=(0, 1)))
        assert augmenter.output_shape((30, 50)) == out.shape[:2]
        assert out.flags.c_contiguous and moved.flags.c_contiguous


def test_rotate_90_input_shape():
    assert Rotate90().input_shape((30, 50)) == (50, 50)
    assert Rotate90([0, 2]).input_shape((30, 50)) == (30, 50)
    assert Rotate90([1, 3]).input_shape((30, 50)) == (50, 30)
    assert Rotate90().input_shape((40, 40)) == (40, 40)
    with pytest.raises(AugmentationError, match="randomize"):
        Rotate90().output_shape((30, 50))  # the shape depends on the draw


@pytest.mark.parametrize("channels", [1, 3, 7])
def test_transpose_swaps_axes(channels, he_patch):
    image = np.ascontiguousarray(np.dstack([he_patch[:20, :35]] * 3)[:, :, :channels])
    label = np.arange(20 * 35).reshape(20, 35)
    out, moved = Transpose()(image, label)
    np.testing.assert_array_equal(out, image.transpose(1, 0, 2))
    np.testing.assert_array_equal(moved, label.T)
    assert Transpose().input_shape((20, 35)) == (35, 20)


def test_fused_exact_matrices_match_sequential_application(he_patch):
    """The product of the matrices equals applying the augmenters one after another."""
    image = np.ascontiguousarray(he_patch[:41, :67])
    chain = [Flip(), Rotate90(), Transpose(), Rotate90([1, 3]), Flip(["horizontal", "both"])]
    for seed in range(10):
        rng = np.random.default_rng(seed)
        out, shape, matrix = image, image.shape[:2], np.eye(3)
        for augmenter in chain:
            augmenter.randomize(rng)
            matrix = augmenter.matrix(shape) @ matrix
            shape = augmenter.output_shape(shape)
            out, _ = augmenter(out)
        fused = warp_affine(image, matrix, shape, "nearest")
        np.testing.assert_array_equal(fused, out)


@pytest.mark.parametrize(
    "augmenter",
    [Rotate(30), Rotate(-75, scale=1.2), Rotate(20, centre=(10.0, 5.0)), Scale(1.3), Scale(0.7)],
    ids=repr,
)
def test_smooth_matrix_maps_a_point_where_apply_puts_it(augmenter):
    shape = (61, 81)
    point = np.array([30.0, 40.0, 1.0])  # (col, row, 1)
    image = np.zeros((*shape, 1), np.uint8)
    image = cv2.circle(image, (30, 40), 3, 255, -1)
    out, _ = augmenter(image)
    weights = out[:, :, 0].astype(float)
    rows, cols = np.indices(weights.shape)
    centroid = np.array([(cols * weights).sum(), (rows * weights).sum()]) / weights.sum()
    np.testing.assert_allclose(centroid, (augmenter.matrix(shape) @ point)[:2], atol=0.5)
    warped = warp_affine(image, augmenter.matrix(shape), shape, augmenter.interpolation)
    assert np.abs(warped.astype(int) - out.astype(int)).max() <= 1


# -- rotate -----------------------------------------------------------------------------------


def test_rotate_by_90_is_rot90_up_to_interpolation(he_patch):
    image = he_patch[:96, :96]
    for angle, k in ((90, 1), (-90, 3), (180, 2), (270, 3)):
        out, _ = Rotate(angle)(image)
        diff = np.abs(out.astype(int) - np.rot90(image, k, axes=(0, 1)).astype(int))
        assert diff[2:-2, 2:-2].max() <= 1


def test_rotate_is_counter_clockwise_as_displayed():
    image = np.zeros((51, 51, 1), np.uint8)
    image[25, 45] = 255  # right of the centre
    out, _ = Rotate(90, interpolation="nearest")(image)
    assert out[5, 25, 0] == 255  # now above the centre


def test_rotate_input_shape_covers_the_rotated_target():
    assert Rotate(0).input_shape((30, 50)) == (30, 50)
    assert Rotate(45).input_shape((40, 40)) == (58, 58)  # 40 * sqrt(2) = 56.6 -> 57 -> parity
    assert Rotate([-10, 10]).input_shape((64, 64)) == Rotate(10).input_shape((64, 64))
    assert Rotate([-180, 180]).input_shape((30, 40)) == (50, 50)  # the diagonal
    assert Rotate(90).input_shape((30, 50)) == (50, 50)
    assert Rotate(30, centre=(3, 4)).input_shape((30, 50)) == (30, 50)
    shrink = Rotate(0, scale=0.5).input_shape((30, 50))
    assert shrink == (60, 100)
    # the worst angle of a non-square rectangle is not 45 degrees
    rows, cols = Rotate([0, 90]).input_shape((20, 100))
    assert rows >= np.hypot(20, 100) - 1 and cols >= 100


@pytest.mark.parametrize(
    "augmenter",
    [
        Rotate([-35, 35], border="constant"),
        Rotate([60, 150], scale=0.7, border="constant", interpolation="cubic"),
        Rotate([-180, 180], border="constant", interpolation="lanczos4"),
    ],
    ids=repr,
)
def test_rotate_from_input_shape_shows_no_border(augmenter, he_patch):
    target = (70, 90)
    need = augmenter.input_shape(target)
    large_image, large_label = labelled(centre_crop(he_patch, (need[0] + 40, need[1] + 40)))
    image = np.ascontiguousarray(centre_crop(large_image, need))
    label = np.ascontiguousarray(centre_crop(large_label, need))
    for seed in range(8):
        out, moved = drawn(augmenter, seed)(image, label)
        assert LABEL_FILL not in centre_crop(moved, target)
        assert np.all(centre_crop(out, target).max(axis=2) > 0)  # no constant border
        reference, _ = augmenter(large_image)
        # the same up to OpenCV's fixed-point coordinates (1/32 px)
        diff = np.abs(centre_crop(out, target).astype(int) - centre_crop(reference, target))
        assert diff.max() <= 8 and (diff > 2).mean() < 0.005


# -- scale ------------------------------------------------------------------------------------


def test_scale_draws_within_range_and_zooms_about_the_centre():
    augmenter = Scale([0.8, 1.25])
    factors = [drawn(augmenter, seed).factor for seed in range(50)]
    assert 0.8 <= min(factors) < 0.85 and 1.2 < max(factors) <= 1.25
    matrix = drawn(Scale(2.0), 0).matrix((11, 21))
    np.testing.assert_allclose(matrix @ [10.0, 5.0, 1.0], [10.0, 5.0, 1.0])
    np.testing.assert_allclose(matrix @ [11.0, 5.0, 1.0], [12.0, 5.0, 1.0])


def test_scale_input_shape():
    assert Scale([0.8, 1.2]).input_shape((100, 64)) == (126, 80)
    assert Scale([1.0, 1.5]).input_shape((100, 64)) == (100, 64)
    assert Scale(0.5).input_shape((64, 64)) == (128, 128)
    assert Scale(0.7).input_shape((64, 65)) == (92, 93)  # ceil 91.4 / 92.9, parity of target
    assert Scale(0.5, order=3).input_shape((64, 64)) == (132, 132)  # cubic support


def test_scale_zoom_out_from_input_shape_is_a_plain_resize(he_patch):
    """Zooming out by the minimum factor from input_shape(out) reads only real pixels: it is
    the direct resize of the real context, with no reflected border."""
    target = (64, 64)
    augmenter = Scale(0.5)
    need = augmenter.input_shape(target)
    assert need == (128, 128)
    context = np.ascontiguousarray(centre_crop(he_patch, need))
    out, _ = augmenter(context)
    direct = cv2.resize(context, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_LINEAR)
    assert np.abs(centre_crop(out, target).astype(int) - direct.astype(int)).max() <= 1
    # without the context the corners are reflected border, not the resize
    small, _ = augmenter(np.ascontiguousarray(centre_crop(he_patch, target)))
    shrunk = cv2.resize(centre_crop(he_patch, target), None, fx=0.5, fy=0.5)
    assert np.abs(centre_crop(small, (32, 32)).astype(int) - shrunk.astype(int)).max() <= 1
    assert np.abs(small.astype(int) - direct.astype(int)).mean() > 10


def test_scale_from_input_shape_matches_a_larger_context(he_patch):
    target = (60, 60)
    augmenter = Scale([0.6, 1.4])
    need = augmenter.input_shape(target)
    small = np.ascontiguousarray(centre_crop(he_patch, need))
    large = np.ascontiguousarray(centre_crop(he_patch, (need[0] + 60, need[1] + 60)))
    for seed in range(10):
        drawn(augmenter, seed)
        out, _ = augmenter(small)
        reference, _ = augmenter(large)
        diff = centre_crop(out, target).astype(int) - centre_crop(reference, target)
        assert np.abs(diff).max() <= 1


def test_scale_labels_use_nearest(he_patch):
    """The original zoomed label maps with the image's spline order; labels stay labels."""
    image, label = labelled(he_patch[:100, :100], block=5)
    augmenter = drawn(Scale([0.55, 0.65], order=3), 0)
    _, moved = augmenter(image, label)
    assert set(np.unique(moved)) <= set(np.unique(label))


# -- draws, reproducibility, errors -----------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [Flip, Rotate90, lambda: Rotate([-90, 90]), lambda: Scale([0.5, 2.0])],
    ids=["flip", "rotate_90", "rotate", "scale"],
)
def test_seeded_draws_reproduce(factory, he_patch):
    image, label = labelled(he_patch[:80, :80])
    first, second = factory(), factory()
    outputs = set()
    for seed in range(12):
        a = drawn(first, seed)(image, label)
        b = drawn(second, seed)(image, label)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert np.array_equal(a[0], first(image, label)[0])  # apply is deterministic
        outputs.add(a[0].tobytes())
    assert len(outputs) >= 3


def test_flip_choice_is_uniform_over_the_list():
    augmenter = Flip(["none", "vertical", "vertical", "both"])
    rng = np.random.default_rng(0)
    counts = {}
    for _ in range(4000):
        augmenter.randomize(rng)
        counts[augmenter.flip] = counts.get(augmenter.flip, 0) + 1
    assert set(counts) == {"none", "vertical", "both"}
    assert abs(counts["vertical"] / 4000 - 0.5) < 0.04
    assert abs(counts["none"] / 4000 - 0.25) < 0.04


@pytest.mark.parametrize(
    ("factory", "parameter"),
    [
        (lambda: Flip(["diagonal"]), "flips"),
        (lambda: Flip([]), "flips"),
        (lambda: Flip("vertical"), "flips"),
        (lambda: Rotate90([1.5]), "rotations"),
        (lambda: Rotate90([]), "rotations"),
        (lambda: Rotate([30, -30]), "angle"),
        (lambda: Rotate("big"), "angle"),
        (lambda: Rotate(10, scale=0), "scale"),
        (lambda: Rotate(10, centre=(1.0,)), "centre"),
        (lambda: Rotate(10, interpolation="bicubic"), "interpolation"),
        (lambda: Rotate(10, border="mirror"), "border"),
        (lambda: Rotate(10, border="transparent"), "border"),
        (lambda: Scale([0.0, 1.0]), "scaling"),
        (lambda: Scale([1.2, 0.8]), "scaling"),
        (lambda: Scale(1.0, order=7), "order"),
    ],
)
def test_bad_parameters_name_the_parameter(factory, parameter):
    with pytest.raises(AugmentationError, match=parameter) as error:
        factory()
    assert any(keyword in str(error.value) for keyword in ("flip", "rotate", "scale"))


@pytest.mark.parametrize(
    "factory",
    [Flip, Rotate90, lambda: Rotate([0, 10]), lambda: Scale([0.9, 1.1])],
    ids=["flip", "rotate_90", "rotate", "scale"],
)
def test_apply_before_randomize_is_an_error(factory, he_patch):
    with pytest.raises(AugmentationError, match="randomize"):
        factory()(he_patch)


# -- invariants over shapes and draws -----------------------------------------------------------

FACTORIES = [
    Flip,
    Rotate90,
    Transpose,
    lambda: Rotate([-180, 180], interpolation="nearest", border="constant"),
    lambda: Scale([0.5, 2.0], order=0),
]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    channels=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    which=st.integers(0, len(FACTORIES) - 1),
    label_type=st.sampled_from([np.uint8, np.int32, np.int64]),
)
def test_shapes_dtypes_and_matrix_invariants(rows, cols, channels, seed, which, label_type):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (rows, cols, channels), dtype=np.uint8)
    label = rng.integers(0, 6, (rows, cols)).astype(label_type)
    augmenter = FACTORIES[which]()
    augmenter.randomize(rng)
    out, moved = augmenter(image, label)
    expected = augmenter.output_shape((rows, cols))
    assert out.shape == (*expected, channels) and out.dtype == np.uint8
    assert moved.shape == expected and moved.dtype == label_type
    assert set(np.unique(moved)) <= set(np.unique(label)) | {LABEL_FILL}
    warped = warp_affine(image, augmenter.matrix((rows, cols)), expected, "nearest", "constant")
    if augmenter.exact():
        np.testing.assert_array_equal(warped, out)
    need = augmenter.input_shape((rows, cols))
    assert need[0] >= 1 and need[1] >= 1
    result = augmenter.output_shape(need)
    assert result[0] >= rows and result[1] >= cols
