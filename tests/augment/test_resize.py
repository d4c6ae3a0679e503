"""Size-changing spatial augmenters: resize and crop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from label_maps import interior, labelled

from digipath.augment.base import LABEL_FILL, centre_crop
from digipath.augment.resize import Crop, Resize
from digipath.errors import AugmentationError


def drawn(augmenter, seed: int):
    augmenter.randomize(np.random.default_rng(seed))
    return augmenter


# -- resize -----------------------------------------------------------------------------------


def test_resize_to_shape_and_by_factor(he_patch):
    image = he_patch[:100, :120]
    out, _ = Resize((50, 80))(image)
    assert out.shape == (50, 80, 3)
    np.testing.assert_array_equal(out, cv2.resize(image, (80, 50), interpolation=cv2.INTER_LINEAR))
    by_factor = Resize(factor=(0.5, 1.5))
    assert by_factor.output_shape((100, 120)) == (50, 180)
    assert by_factor(image)[0].shape == (50, 180, 3)
    assert Resize(factor=0.3).output_shape((10, 1)) == (3, 1)  # never empty
    area, _ = Resize(factor=0.5, interpolation="area")(image)
    np.testing.assert_array_equal(area, cv2.resize(image, (60, 50), interpolation=cv2.INTER_AREA))


def test_resize_input_shape():
    assert Resize((50, 80)).input_shape((50, 80)) == (50, 80)
    assert Resize(factor=(0.5, 0.3)).input_shape((50, 30)) == (100, 100)
    assert Resize(factor=0.7).input_shape((70, 71)) == (100, 102)
    augmenter = Resize(factor=(0.37, 1.9))
    for rows, cols in ((33, 57), (128, 128), (1, 2)):
        out = augmenter.output_shape(augmenter.input_shape((rows, cols)))
        assert out[0] >= rows and out[1] >= cols


@pytest.mark.parametrize(
    "augmenter",
    [Resize((70, 150), interpolation="nearest"), Resize(None, (0.45, 1.7), "nearest")],
    ids=repr,
)
def test_resize_label_follows_image_exactly_with_nearest(augmenter, he_patch):
    image, label = labelled(he_patch[:200, :240])
    out, moved = augmenter(image, label)
    assert moved.dtype == label.dtype and moved.shape == out.shape[:2]
    np.testing.assert_array_equal(out[:, :, 0], (moved * 40).astype(np.uint8))


@pytest.mark.parametrize("interpolation", ["linear", "area", "cubic", "lanczos4"])
def test_resize_label_follows_image_with_interpolation(interpolation, he_patch):
    image, label = labelled(he_patch[:200, :240], block=24)
    for factor in ((0.5, 0.6), (1.3, 1.7), (0.8, 1.25)):
        out, moved = Resize(factor=factor, interpolation=interpolation)(image, label)
        inside = interior(moved, 7)
        assert inside.mean() > 0.2
        decoded = np.round(out[:, :, 0].astype(float) / 40)
        np.testing.assert_array_equal(decoded[inside], moved[inside])


def test_resize_keeps_label_values_and_inputs(he_patch):
    image, label = labelled(he_patch[:64, :64], block=3)
    copies = image.copy(), label.copy()
    _, moved = Resize(factor=0.37, interpolation="cubic")(image, label)
    assert set(np.unique(moved)) <= set(np.unique(label))
    same, same_label = Resize((64, 64))(image, label)
    np.testing.assert_array_equal(same, image)
    same[...] = 0
    same_label[...] = 0
    np.testing.assert_array_equal(image, copies[0])
    np.testing.assert_array_equal(label, copies[1])


# -- crop -------------------------------------------------------------------------------------


def test_centre_crop_and_largest_square(he_patch):
    image, label = labelled(he_patch[:100, :131])
    out, moved = Crop((40, 51))(image, label)
    np.testing.assert_array_equal(out, centre_crop(image, (40, 51)))
    np.testing.assert_array_equal(moved, centre_crop(label, (40, 51)))
    square = Crop()
    assert square.output_shape((100, 131)) == (100, 100)
    assert square.input_shape((64, 64)) == (64, 64)
    np.testing.assert_array_equal(square(image)[0], image[:, 15:115])


def test_random_crop_is_reproducible_aligned_and_covers_positions(he_patch):
    image, label = labelled(he_patch[:60, :70])
    augmenter = Crop((50, 50), position="random")
    positions = set()
    for seed in range(200):
        out, moved = drawn(augmenter, seed)(image, label)
        again, moved_again = augmenter(image, label)
        np.testing.assert_array_equal(out, again)
        np.testing.assert_array_equal(moved, moved_again)
        np.testing.assert_array_equal(out[:, :, 0], (moved * 40).astype(np.uint8))
        top, left = augmenter.offsets((60, 70))
        np.testing.assert_array_equal(out, image[top : top + 50, left : left + 50])
        positions.add((top, left))
    rows = {top for top, _ in positions}
    cols = {left for _, left in positions}
    assert rows == set(range(11)) and cols == set(range(21))


def test_crop_larger_than_patch_pads_with_the_border(he_patch):
    image, label = labelled(he_patch[:30, :40])
    out, moved = Crop((50, 44), border="constant", border_value=7)(image, label)
    np.testing.assert_array_equal(out[10:40, 2:42], image)
    np.testing.assert_array_equal(moved[10:40, 2:42], label)
    assert np.all(out[:10] == 7) and np.all(moved[:10] == LABEL_FILL)
    assert np.all(out[:, :2] == 7) and np.all(moved[:, 42:] == LABEL_FILL)
    reflected, moved = Crop((50, 44), border="reflect_101")(image, label)
    reference = cv2.copyMakeBorder(image, 10, 10, 2, 2, cv2.BORDER_REFLECT_101)
    np.testing.assert_array_equal(reflected, reference)
    np.testing.assert_array_equal(reflected[:, :, 0], (moved * 40).astype(np.uint8))


def test_random_crop_larger_than_patch_places_it_randomly(he_patch):
    image = he_patch[:20, :20]
    augmenter = Crop((30, 24), position="random", border_value=0)
    placements = set()
    for seed in range(100):
        out, _ = drawn(augmenter, seed)(image)
        top, left = augmenter.offsets((20, 20))
        assert -10 <= top <= 0 and -4 <= left <= 0
        np.testing.assert_array_equal(out[-top : -top + 20, -left : -left + 20], image)
        placements.add((top, left))
    assert len(placements) > 20


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "parameter"),
    [
        (lambda: Resize(), "shape"),
        (lambda: Resize((10, 10), factor=2.0), "factor"),
        (lambda: Resize((0, 10)), "shape"),
        (lambda: Resize((10.5, 10)), "shape"),
        (lambda: Resize((10, 10, 3)), "shape"),
        (lambda: Resize(factor=(0.0, 1.0)), "factor"),
        (lambda: Resize(factor="half"), "factor"),
        (lambda: Resize((10, 10), interpolation="bilinear"), "interpolation"),
        (lambda: Crop((0, 5)), "size"),
        (lambda: Crop(position="corner"), "position"),
        (lambda: Crop(border="transparent"), "border"),
        (lambda: Crop(border_value=None), "border_value"),
    ],
)
def test_bad_parameters_name_the_parameter(factory, parameter):
    with pytest.raises(AugmentationError, match=parameter) as error:
        factory()
    assert any(keyword in str(error.value) for keyword in ("resize", "crop"))


def test_random_crop_before_randomize_is_an_error(he_patch):
    with pytest.raises(AugmentationError, match="randomize"):
        Crop((10, 10), position="random")(he_patch)


# -- invariants over shapes and draws -----------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 40),
    channels=st.integers(1, 6),
    size=st.tuples(st.integers(1, 50), st.integers(1, 50)),
    factor=st.tuples(st.floats(0.2, 3.0), st.floats(0.2, 3.0)),
    position=st.sampled_from(["centre", "random"]),
    border=st.sampled_from(["constant", "reflect_101", "reflect", "replicate", "wrap"]),
    interpolation=st.sampled_from(["nearest", "linear", "area", "cubic"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_shapes_dtypes_and_alignment_invariants(
    rows, cols, channels, size, factor, position, border, interpolation, seed
):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 6, (rows, cols)).astype(np.int32)
    image = rng.integers(0, 256, (rows, cols, channels), dtype=np.uint8)
    image[:, :, 0] = label * 40
    for augmenter in (
        Crop(size, position=position, border=border),
        Resize(size, interpolation=interpolation),
        Resize(factor=factor, interpolation=interpolation),
    ):
        augmenter.randomize(rng)
        out, moved = augmenter(image, label)
        expected = augmenter.output_shape((rows, cols))
        assert out.shape == (*expected, channels) and out.dtype == np.uint8
        assert moved.shape == expected and moved.dtype == np.int32
        assert set(np.unique(moved)) <= set(np.unique(label)) | {LABEL_FILL}
        if isinstance(augmenter, Crop) or interpolation == "nearest":
            real = moved != LABEL_FILL
            decoded = (moved[real] * 40).astype(np.uint8)
            np.testing.assert_array_equal(out[:, :, 0][real], decoded)
        need = augmenter.input_shape(expected)
        result = augmenter.output_shape(need)
        assert result[0] >= expected[0] and result[1] >= expected[1]
