"""Invariants every registered augmenter keeps (hypothesis over shapes, draws and patches)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.augment import AUGMENTERS
from digipath.augment.base import LABEL_FILL
from digipath.augment.registry import augmenter_class, parameter_names

EXAMPLES: dict[str, dict] = {
    "hed_color": {
        "haematoxylin": {"sigma": [-0.1, 0.1], "bias": [-0.1, 0.1]},
        "eosin": {"sigma": [-0.1, 0.1], "bias": [-0.1, 0.1]},
        "dab": {"sigma": [-0.05, 0.05], "bias": None},
    },
    "hsb_color": {"hue": [-0.1, 0.1], "saturation": [-0.2, 0.2], "brightness": [-0.2, 0.2]},
    "contrast": {"sigma": [-0.3, 0.3]},
    "brightness": {"beta": [-30, 30]},
    "gamma": {"gamma": [0.7, 1.5]},
    "stain": {},
    "additive": {"sigma": [0.0, 0.1]},
    "laplace_noise": {"scale": [0.0, 10.0]},
    "poisson_noise": {"lam": [0.0, 10.0]},
    "salt_and_pepper": {"p": [0.0, 0.1]},
    "coarse_dropout": {"p": [0.0, 0.2], "drop_size": [0.05, 0.2]},
    "blur": {"sigma": [0.0, 2.0]},
    "median": {"size": [1, 5]},
    "sharpen": {"amount": [0.0, 1.0]},
    "flip": {},
    "rotate_90": {},
    "transpose": {},
    "rotate": {"angle": [-45, 45]},
    "scale": {"scaling": [0.7, 1.3]},
    "elastic": {"sigma": [4.0, 8.0], "alpha": [10.0, 30.0]},
    "grid_distortion": {},
    "optical_distortion": {},
    "crop": {"size": (20, 30), "position": "random"},
    "resize": {"factor": (0.5, 1.5)},
    "to_float32": {"divisor": 255.0},
    "normalize": {"mean": 128.0, "std": 64.0},
    "scale_to": {"new_min": 0.0, "new_max": 1.0},
    "scale_from_to": {"old_min": 0.0, "old_max": 255.0, "new_min": -1.0, "new_max": 1.0},
    "pass_through": {},
}
FLOAT_OUTPUT = {"to_float32", "normalize", "scale_to", "scale_from_to"}


def test_every_augmenter_has_an_example():
    assert set(EXAMPLES) == set(AUGMENTERS)
    for keyword, params in EXAMPLES.items():
        assert set(params) <= set(parameter_names(augmenter_class(keyword)))


def test_keywords_match_the_classes():
    for keyword, cls in AUGMENTERS.items():
        assert cls.keyword == keyword


@st.composite
def patches(draw):
    rows = draw(st.integers(8, 48))
    cols = draw(st.integers(8, 48))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (rows, cols, 3), dtype=np.uint8)
    label = np.kron(rng.integers(0, 4, (rows // 4 + 1, cols // 4 + 1)), np.ones((4, 4)))
    return image, label[:rows, :cols].astype(np.uint8), seed


@pytest.mark.parametrize("keyword", sorted(EXAMPLES))
@settings(max_examples=15, deadline=None)
@given(data=patches())
def test_shape_dtype_and_label_invariants(keyword, data):
    image, label, seed = data
    original_image, original_label = image.copy(), label.copy()
    augmenter = AUGMENTERS[keyword](**EXAMPLES[keyword])
    augmenter.randomize(np.random.default_rng(seed))
    out, moved = augmenter(image, label)
    again, moved_again = augmenter(image, label)
    np.testing.assert_array_equal(image, original_image)
    np.testing.assert_array_equal(label, original_label)
    np.testing.assert_array_equal(out, again)
    expected = augmenter.output_shape(image.shape[:2])
    assert out.shape == (*expected, 3)
    assert out.dtype == (np.float32 if keyword in FLOAT_OUTPUT else np.uint8)
    if augmenter.spatial:
        assert moved.shape == expected
        np.testing.assert_array_equal(moved, moved_again)
        assert set(np.unique(moved)) <= set(np.unique(label)) | {LABEL_FILL}
    elif keyword != "to_float32":
        assert moved is label
    assert augmenter.input_shape(expected)[0] >= 1
