"""Non-affine spatial augmenters: elastic, grid distortion, optical distortion."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from label_maps import interior, labelled

from digipath.augment.base import LABEL_FILL, centre_crop
from digipath.augment.deform import Elastic, GridDistortion, OpticalDistortion, remap
from digipath.errors import AugmentationError


def drawn(augmenter, seed: int):
    augmenter.randomize(np.random.default_rng(seed))
    return augmenter


NEAREST = [
    Elastic([4.0, 8.0], [20.0, 40.0], order=0),
    Elastic(6.0, 30.0, maps=2, order=0, border="constant"),
    GridDistortion([3, 7], (-0.4, 0.4), interpolation="nearest"),
    GridDistortion(5, (-0.5, 0.5), interpolation="nearest", border="constant", normalized=False),
    OpticalDistortion((-0.5, 0.5), (-0.1, 0.1), interpolation="nearest"),
    OpticalDistortion((0.3, 0.6), 0.05, interpolation="nearest", border="constant"),
]

SMOOTH = [
    Elastic([4.0, 8.0], [10.0, 20.0]),
    Elastic([5.0, 6.0], [10.0, 15.0], order=3),
    GridDistortion([2, 6], (-0.3, 0.3)),
    OpticalDistortion((-0.5, 0.5), (-0.1, 0.1), interpolation="cubic"),
]


# -- alignment of image and label map --------------------------------------------------------


@pytest.mark.parametrize("label_type", [np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("augmenter", NEAREST, ids=repr)
def test_label_follows_image_exactly_with_nearest(augmenter, label_type, he_patch):
    image, label = labelled(he_patch[:200, :240])
    label = label.astype(label_type)
    for seed in range(4):
        out, moved = drawn(augmenter, seed)(image, label)
        assert out.shape == image.shape and moved.shape == label.shape
        assert moved.dtype == label_type
        real = moved != LABEL_FILL
        np.testing.assert_array_equal(out[:, :, 0][real], (moved[real] * 40).astype(np.uint8))
        assert np.all(out[:, :, 0][~real] == 0)
        assert not np.array_equal(moved, label)  # it did move


@pytest.mark.parametrize("augmenter", SMOOTH, ids=repr)
def test_label_follows_image_with_interpolation(augmenter, he_patch):
    image, label = labelled(he_patch[:200, :240], block=24)
    for seed in range(4):
        out, moved = drawn(augmenter, seed)(image, label)
        inside = interior(moved, 7)
        assert inside.mean() > 0.2
        decoded = np.round(out[:, :, 0].astype(float) / 40)
        np.testing.assert_array_equal(decoded[inside], moved[inside])


@pytest.mark.parametrize("augmenter", [*NEAREST, *SMOOTH], ids=repr)
def test_same_draw_same_result_and_inputs_untouched(augmenter, he_patch):
    image, label = labelled(he_patch[:96, :128])
    copies = image.copy(), label.copy()
    drawn(augmenter, 3)
    first = augmenter(image, label)
    second = augmenter(image, label)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(image, copies[0])
    np.testing.assert_array_equal(label, copies[1])
    # a copy drawn from the same seed reproduces it
    twin = copy.deepcopy(augmenter)
    np.testing.assert_array_equal(drawn(twin, 3)(image, label)[0], first[0])


# -- elastic ----------------------------------------------------------------------------------


def test_elastic_one_field_for_all_channels(he_patch):
    """The original filtered noise across channels; here every channel moves alike."""
    grey = np.repeat(he_patch[:80, :100, :1], 5, axis=2)
    out, _ = drawn(Elastic(4.0, 20.0), 0)(grey)
    assert out.shape == grey.shape
    for channel in range(1, 5):
        np.testing.assert_array_equal(out[:, :, channel], out[:, :, 0])


def test_elastic_field_statistics_match_the_margin():
    sigma, alpha = 6.0, 25.0
    dy, dx = Elastic.displacement((400, 400), 123, sigma, alpha)
    assert dy.dtype == np.float32 and dy.shape == (400, 400)
    expected = alpha / math.sqrt(3.0) / (2.0 * math.sqrt(math.pi) * sigma)
    for field in (dy, dx):
        assert abs(field[50:-50, 50:-50].std() / expected - 1.0) < 0.2
    np.testing.assert_array_equal(Elastic.displacement((400, 400), 123, sigma, alpha)[0], dy)
    margin = Elastic([sigma, 10.0], [5.0, alpha]).margin()
    assert margin == math.ceil(4 * expected - 1e-6) or margin == math.ceil(4 * expected) + 1
    assert Elastic([sigma, 10.0], [5.0, alpha]).input_shape((64, 80)) == (
        64 + 2 * margin,
        80 + 2 * margin,
    )


def test_elastic_from_input_shape_shows_no_border(he_patch):
    augmenter = Elastic([3.0, 6.0], [10.0, 30.0], border="constant")
    target = (96, 96)
    image, label = labelled(centre_crop(he_patch, augmenter.input_shape(target)))
    for seed in range(10):
        _, moved = drawn(augmenter, seed)(image, label)
        assert LABEL_FILL not in centre_crop(moved, target)


def test_elastic_maps_cycle_through_all_of_them(he_patch):
    """n maps: all n are used (the original never picked the last, and crashed for n = 1)."""
    image = he_patch[:48, :64]
    single = Elastic(4.0, 20.0, maps=1)
    rng = np.random.default_rng(0)
    single.randomize(rng)
    first, _ = single(image)
    single.randomize(rng)
    np.testing.assert_array_equal(single(image)[0], first)
    several = Elastic([3.0, 6.0], [10.0, 30.0], maps=3)
    outputs = set()
    for _ in range(40):
        several.randomize(rng)
        outputs.add(several(image)[0].tobytes())
    assert len(outputs) == 3
    fresh = Elastic([3.0, 6.0], [10.0, 30.0])
    outputs = set()
    for _ in range(10):
        fresh.randomize(rng)
        outputs.add(fresh(image)[0].tobytes())
    assert len(outputs) == 10


# -- grid and optical distortion ----------------------------------------------------------------


def test_grid_without_distortion_is_the_identity(he_patch):
    image, label = labelled(he_patch[:90, :110])
    for normalized in (True, False):
        augmenter = drawn(GridDistortion([2, 9], 0.0, normalized=normalized), 0)
        out, moved = augmenter(image, label)
        np.testing.assert_array_equal(out, image)
        np.testing.assert_array_equal(moved, label)


def test_grid_is_separable_monotonic_and_draws_num_steps():
    augmenter = GridDistortion([2, 4], (-0.5, 0.5))
    counts = set()
    for seed in range(30):
        drawn(augmenter, seed)
        counts.add(len(augmenter._steps[0]))
        map_x, map_y = augmenter.maps((50, 70))
        assert np.all(map_x == map_x[:1]) and np.all(map_y == map_y[:, :1])
        assert np.all(np.diff(map_x[0]) > 0) and np.all(np.diff(map_y[:, 0]) > 0)
        assert map_x.min() >= 0 and map_x.max() <= 69
        assert map_y.min() >= 0 and map_y.max() <= 49
    assert counts == {2, 3, 4}


def test_grid_normalized_never_shows_border(he_patch):
    augmenter = GridDistortion([2, 8], (-0.6, 0.6), border="constant")
    image, label = labelled(he_patch[:100, :100])
    assert augmenter.input_shape((100, 100)) == (100, 100)
    for seed in range(10):
        _, moved = drawn(augmenter, seed)(image, label)
        assert LABEL_FILL not in moved


def test_optical_distortion_model():
    augmenter = OpticalDistortion(0.2, 0.0)
    drawn(augmenter, 0)
    map_x, map_y = augmenter.maps((101, 201))
    assert (map_x[50, 100], map_y[50, 100]) == (100.0, 50.0)  # the centre stays
    half_diagonal = math.hypot(101, 201) / 2
    r = 100 / half_diagonal
    np.testing.assert_allclose(map_x[50, 200], 100 + 100 * (1 + 0.2 * r * r), rtol=1e-6)
    np.testing.assert_allclose(map_y[50, 200], 50.0)
    shifted = OpticalDistortion(0.0, 0.1)
    drawn(shifted, 0)
    identity_x, identity_y = shifted.maps((40, 60))  # k = 0: identity whatever the shift
    np.testing.assert_allclose(identity_x, np.broadcast_to(np.arange(60), (40, 60)), atol=1e-4)
    np.testing.assert_allclose(identity_y, np.broadcast_to(np.arange(40)[:, None], (40, 60)))


def test_optical_distortion_from_input_shape_shows_no_border(he_patch):
    augmenter = OpticalDistortion((-0.8, 0.8), (-0.1, 0.1), border="constant")
    target = (80, 100)
    need = augmenter.input_shape(target)
    assert need[0] > target[0] and need[1] > target[1]
    assert (need[0] - target[0]) % 2 == 0 and (need[1] - target[1]) % 2 == 0
    image, label = labelled(centre_crop(he_patch, need))
    border = False
    for seed in range(20):
        _, moved = drawn(augmenter, seed)(image, label)
        assert LABEL_FILL not in centre_crop(moved, target)
        border |= LABEL_FILL in moved
    assert border  # the margin was needed
    assert OpticalDistortion(0.0, 0.3).input_shape(target) == target


def test_transparent_border_keeps_the_input_pixel(he_patch):
    image, label = labelled(he_patch[:60, :80])
    augmenter = OpticalDistortion(0.8, 0.0, interpolation="nearest", border="transparent")
    out, moved = drawn(augmenter, 0)(image, label)
    map_x, map_y = augmenter.maps((60, 80))
    outside = (map_x < -0.6) | (map_x > 79.6) | (map_y < -0.6) | (map_y > 59.6)
    assert outside.any()
    np.testing.assert_array_equal(out[outside], image[outside])
    np.testing.assert_array_equal(moved[outside], label[outside])
    np.testing.assert_array_equal(augmenter(image, label)[0], out)


def test_remap_keeps_dtype_and_channels(he_patch):
    map_x, map_y = (m.astype(np.float32) + 0.5 for m in np.meshgrid(np.arange(30), np.arange(20)))
    many = np.dstack([he_patch[:20, :30]] * 3)  # nine channels
    out = remap(many, map_x, map_y, "cubic")
    assert out.shape == many.shape and out.dtype == np.uint8
    for channels in (1, 2):
        assert remap(many[:, :, :channels], map_x, map_y).shape == (20, 30, channels)
    big = np.arange(600, dtype=np.int64).reshape(20, 30) * 10**9
    np.testing.assert_array_equal(remap(big, map_x - 0.5, map_y - 0.5, "nearest"), big)
    with pytest.raises(AugmentationError, match="nearest"):
        remap(big, map_x, map_y, "linear")


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "parameter"),
    [
        (lambda: Elastic(0.0, 10.0), "sigma"),
        (lambda: Elastic([2.0, 1.0], 10.0), "sigma"),
        (lambda: Elastic(2.0, [-1.0, 5.0]), "alpha"),
        (lambda: Elastic(2.0, None), "alpha"),
        (lambda: Elastic(2.0, 5.0, maps=0), "maps"),
        (lambda: Elastic(2.0, 5.0, maps=1.5), "maps"),
        (lambda: Elastic(2.0, 5.0, order=9), "order"),
        (lambda: Elastic(2.0, 5.0, border="mirror"), "border"),
        (lambda: Elastic(2.0, 5.0, border_value=[0, 0]), "border_value"),
        (lambda: GridDistortion(0), "num_steps"),
        (lambda: GridDistortion([2.5, 4]), "num_steps"),
        (lambda: GridDistortion(5, (-1.5, 0.3)), "distort_limit"),
        (lambda: GridDistortion(5, interpolation="bicubic"), "interpolation"),
        (lambda: GridDistortion(5, normalized="yes"), "normalized"),
        (lambda: OpticalDistortion((0.5, -0.5)), "distort_limit"),
        (lambda: OpticalDistortion(0.1, (-1.0, 1.0)), "shift_limit"),
        (lambda: OpticalDistortion(0.1, 0.1, border_value="white"), "border_value"),
    ],
)
def test_bad_parameters_name_the_parameter(factory, parameter):
    with pytest.raises(AugmentationError, match=parameter) as error:
        factory()
    assert any(k in str(error.value) for k in ("elastic", "grid_distortion", "optical"))


@pytest.mark.parametrize("augmenter", [Elastic(2.0, 5.0), GridDistortion(), OpticalDistortion()])
def test_apply_before_randomize_is_an_error(augmenter, he_patch):
    with pytest.raises(AugmentationError, match="randomize"):
        augmenter(he_patch)


# -- invariants over shapes and draws -----------------------------------------------------------

FACTORIES = [
    lambda: Elastic([1.0, 5.0], [1.0, 20.0], order=0, border="constant"),
    lambda: Elastic([0.3, 3.0], [1.0, 5.0], maps=2),
    lambda: GridDistortion([1, 6], (-0.5, 0.5), interpolation="nearest", normalized=False),
    lambda: OpticalDistortion((-0.6, 0.6), (-0.2, 0.2), interpolation="nearest"),
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
def test_shapes_dtypes_and_alignment_invariants(rows, cols, channels, seed, which, label_type):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 6, (rows, cols)).astype(label_type)
    image = rng.integers(0, 256, (rows, cols, channels), dtype=np.uint8)
    image[:, :, 0] = label * 40
    augmenter = FACTORIES[which]()
    augmenter.randomize(rng)
    out, moved = augmenter(image, label)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert moved.shape == label.shape and moved.dtype == label_type
    assert set(np.unique(moved)) <= set(np.unique(label)) | {LABEL_FILL}
    if augmenter.interpolation == "nearest":
        real = moved != LABEL_FILL
        np.testing.assert_array_equal(out[:, :, 0][real], (moved[real] * 40).astype(np.uint8))
    need = augmenter.input_shape((rows, cols))
    assert need[0] >= rows and need[1] >= cols
    assert (need[0] - rows) % 2 == 0 and (need[1] - cols) % 2 == 0
