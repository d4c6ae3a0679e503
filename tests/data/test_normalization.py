"""Tests of the batch normalisers (digipath.data.normalization)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from digipath.data.normalization import (
    NORMALIZERS,
    GeneralRange,
    Normalizer,
    PassThrough,
    RgbRange,
    RgbToZeroOne,
    normalizer_from_config,
)
from digipath.errors import ConfigError, NormalizationError

ALL_VALUES = np.arange(256, dtype=np.uint8)

uint8_batches = hnp.arrays(
    np.uint8,
    hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6),
    elements=st.integers(0, 255),
)


def finite_ranges(bound: float = 1e3):
    """(low, high) float pairs with low < high, of moderate width."""
    return (
        st.tuples(
            st.floats(-bound, bound, allow_nan=False, allow_infinity=False),
            st.floats(0.01, bound, allow_nan=False, allow_infinity=False),
        )
        .map(lambda pair: (pair[0], pair[0] + pair[1]))
        .filter(lambda pair: pair[0] < pair[1])
    )


# --------------------------------------------------------------------------------------------
# Values


def test_rgb_to_zero_one_values():
    out = RgbToZeroOne()(ALL_VALUES)
    assert out.dtype == np.float32
    assert out[0] == 0.0
    assert out[255] == 1.0
    assert out[51] == np.float32(0.2)
    np.testing.assert_allclose(out, np.arange(256) / 255.0, rtol=1e-6, atol=0)


def test_rgb_range_values():
    out = RgbRange(target_range=(-1, 1))(ALL_VALUES)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[[0, 255]], [-1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(out, np.arange(256) * 2 / 255 - 1, atol=1e-6)


def test_rgb_range_offset_range():
    out = RgbRange(target_range=(10, 20))(np.array([0, 51, 255], dtype=np.uint8))
    np.testing.assert_allclose(out, [10.0, 12.0, 20.0], rtol=1e-6)


def test_general_range_multiplies_by_target_width():
    # The DigitalPathology library divided by (t1 - t0): it would give 0 -> -1, 255 -> -0.5.
    normalizer = GeneralRange(source_range=(0, 255), target_range=(-1, 1))
    out = normalizer(np.array([0.0, 127.5, 255.0]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [-1.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(normalizer(ALL_VALUES), np.arange(256) * 2 / 255 - 1, atol=1e-6)


def test_general_range_with_shifted_source():
    normalizer = GeneralRange(source_range=(100, 200), target_range=(0, 10))
    out = normalizer(np.array([100, 150, 200], dtype=np.uint8))
    np.testing.assert_allclose(out, [0.0, 5.0, 10.0], atol=1e-5)


def test_general_range_does_not_clip_outside_source():
    normalizer = GeneralRange(source_range=(100, 200), target_range=(0, 1))
    out = normalizer(np.array([0, 50, 250, 255], dtype=np.uint8))
    np.testing.assert_allclose(out, [-1.0, -0.5, 1.5, 1.55], atol=1e-6)


def test_general_range_equals_rgb_range_for_rgb_source():
    general = GeneralRange(source_range=(0, 255), target_range=(-3, 5))
    rgb = RgbRange(target_range=(-3, 5))
    np.testing.assert_allclose(general(ALL_VALUES), rgb(ALL_VALUES), atol=1e-6)


def test_pass_through_keeps_values():
    out = PassThrough()(ALL_VALUES)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.arange(256, dtype=np.float32))


def test_pass_through_returns_a_copy_of_float32_input():
    patches = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    out = PassThrough()(patches)
    assert out is not patches
    assert not np.shares_memory(out, patches)
    np.testing.assert_array_equal(out, patches)


@pytest.mark.parametrize(
    "normalizer",
    [
        RgbToZeroOne(),
        RgbRange((-1, 1)),
        GeneralRange((0, 255), (-1, 1)),
        PassThrough(),
    ],
    ids=repr,
)
def test_every_normaliser_keeps_shape_and_input(normalizer):
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(4, 8, 6, 3), dtype=np.uint8)
    before = patches.copy()
    out = normalizer(patches)
    assert isinstance(normalizer, Normalizer)
    assert out.shape == patches.shape
    assert out.dtype == np.float32
    assert not np.shares_memory(out, patches)
    np.testing.assert_array_equal(patches, before)


@pytest.mark.parametrize("normalizer", [RgbToZeroOne(), RgbRange((-1, 1)), PassThrough()], ids=repr)
def test_float32_input_is_not_modified(normalizer):
    patches = np.full((2, 3), 255.0, dtype=np.float32)
    out = normalizer(patches)
    np.testing.assert_array_equal(patches, 255.0)
    assert not np.shares_memory(out, patches)


def test_non_contiguous_input():
    patches = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    view = patches[:, ::2, :, 1]  # not contiguous
    np.testing.assert_allclose(RgbToZeroOne()(view), view / 255.0, rtol=1e-6)


def test_integer_inputs_of_other_types():
    values = np.array([0, 255], dtype=np.int64)
    out = RgbRange((-1, 1))(values)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [-1, 1], atol=1e-6)


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64, object])
def test_non_numeric_input_is_rejected(dtype):
    with pytest.raises(NormalizationError, match="dtype"):
        RgbToZeroOne()(np.zeros(3, dtype=dtype))


@settings(max_examples=60, deadline=None)
@given(patches=uint8_batches, target=finite_ranges())
def test_rgb_range_matches_formula(patches, target):
    low, high = target
    out = RgbRange(target)(patches)
    expected = patches.astype(np.float64) * (high - low) / 255 + low
    assert out.dtype == np.float32 and out.shape == patches.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * max(abs(low), abs(high)))


@settings(max_examples=60, deadline=None)
@given(patches=uint8_batches, source=finite_ranges(300), target=finite_ranges())
def test_general_range_matches_formula(patches, source, target):
    (s0, s1), (t0, t1) = source, target
    out = GeneralRange(source, target)(patches)
    expected = (patches.astype(np.float64) - s0) / (s1 - s0) * (t1 - t0) + t0
    scale = max(abs(t0), abs(t1), np.abs(expected).max())
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5 * scale)


@settings(max_examples=30, deadline=None)
@given(patches=uint8_batches)
def test_rgb_to_zero_one_lies_in_unit_interval(patches):
    out = RgbToZeroOne()(patches)
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out == 0, patches == 0)
    np.testing.assert_array_equal(out == 1, patches == 255)


# --------------------------------------------------------------------------------------------
# Construction


@pytest.mark.parametrize(
    "value",
    [
        (1, 1),
        (1, 0),
        (0, math.inf),
        (math.nan, 1),
        (0,),
        (0, 1, 2),
        "01",
        None,
        (True, 2),
        ("0", "1"),
        {"min": 0, "max": 1},
    ],
    ids=repr,
)
def test_invalid_target_range_is_rejected(value):
    with pytest.raises(NormalizationError, match="target_range") as caught:
        RgbRange(target_range=value)
    assert repr(value) in str(caught.value)


def test_invalid_source_range_names_the_parameter():
    with pytest.raises(NormalizationError, match=r"source_range.*\(5, 5\)"):
        GeneralRange(source_range=(5, 5), target_range=(0, 1))
    with pytest.raises(NormalizationError, match="target_range"):
        GeneralRange(source_range=(0, 255), target_range=(1, -1))


def test_ranges_accept_lists_and_numpy_numbers():
    normalizer = GeneralRange([np.uint8(0), np.float32(255)], [-1, 1])
    assert normalizer.source_range == (0.0, 255.0)
    assert normalizer.target_range == (-1.0, 1.0)


def test_repr_and_equality():
    assert repr(RgbToZeroOne()) == "RgbToZeroOne()"
    assert repr(RgbRange((-1, 1))) == "RgbRange(target_range=(-1.0, 1.0))"
    assert repr(GeneralRange((0, 255), (0, 1))) == (
        "GeneralRange(source_range=(0.0, 255.0), target_range=(0.0, 1.0))"
    )
    assert repr(PassThrough()) == "PassThrough()"
    assert RgbRange([-1, 1]) == RgbRange((-1.0, 1.0))
    assert RgbRange((-1, 1)) != RgbRange((0, 1))
    assert RgbToZeroOne() != PassThrough()
    assert len({RgbRange((-1, 1)), RgbRange((-1.0, 1.0))}) == 1


def test_normalizers_registry():
    assert NORMALIZERS == {
        "rgb_to_0-1": RgbToZeroOne,
        "rgb": RgbRange,
        "general": GeneralRange,
        "pass-through": PassThrough,
    }


# --------------------------------------------------------------------------------------------
# Configuration


def test_config_none_and_disabled_give_no_normaliser():
    assert normalizer_from_config(None) is None
    assert normalizer_from_config({"enabled": False, "type": "rgb"}) is None
    # a disabled section is not checked further
    assert normalizer_from_config({"enabled": False, "type": "nonsense"}) is None


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"type": "rgb_to_0-1"}, RgbToZeroOne()),
        ({"enabled": True, "type": "pass-through"}, PassThrough()),
        ({"type": "rgb", "target range": [-1, 1]}, RgbRange((-1, 1))),
        (
            {"type": "general", "source range": [0, 255], "target range": [-1, 1]},
            GeneralRange((0, 255), (-1, 1)),
        ),
        # a DigitalPathology section listing both ranges whatever the type
        (
            {
                "enabled": True,
                "type": "rgb_to_0-1",
                "source range": [0.0, 255.0],
                "target range": [-1.0, 1.0],
            },
            RgbToZeroOne(),
        ),
        ({"type": "rgb", "target range": [0, 1], "source range": None}, RgbRange((0, 1))),
    ],
    ids=lambda item: repr(item) if not isinstance(item, dict) else item["type"],
)
def test_config_builds_normaliser(section, expected):
    normalizer = normalizer_from_config(section)
    assert normalizer == expected
    assert type(normalizer) is type(expected)


def test_config_general_normaliser_works():
    normalizer = normalizer_from_config(
        {"type": "general", "source range": [0, 255], "target range": [-1, 1]}
    )
    np.testing.assert_allclose(
        normalizer(np.array([0, 255], dtype=np.uint8)), [-1.0, 1.0], atol=1e-6
    )


def test_config_unknown_type_lists_valid_types():
    with pytest.raises(ConfigError) as caught:
        normalizer_from_config({"type": "zscore"}, source="experiment.yaml")
    error = caught.value
    assert error.key == "data.normalization.type"
    assert error.source == "experiment.yaml"
    message = str(error)
    assert message.startswith("experiment.yaml: data.normalization.type:")
    assert "'zscore'" in message
    for name in NORMALIZERS:
        assert repr(name) in message


def test_config_missing_type():
    with pytest.raises(ConfigError, match="rgb_to_0-1") as caught:
        normalizer_from_config({"enabled": True})
    assert caught.value.key == "data.normalization.type"


def test_config_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as caught:
        normalizer_from_config({"type": "rgb", "target_range": [0, 1]})
    assert caught.value.key == "data.normalization.target_range"
    assert "'target range'" in str(caught.value)
    assert "'source range'" in str(caught.value)


@pytest.mark.parametrize(
    ("section", "missing"),
    [
        ({"type": "rgb"}, "target range"),
        ({"type": "rgb", "target range": None}, "target range"),
        ({"type": "general", "target range": [0, 1]}, "source range"),
        ({"type": "general", "source range": [0, 255]}, "target range"),
    ],
)
def test_config_missing_range(section, missing):
    with pytest.raises(ConfigError, match="missing") as caught:
        normalizer_from_config(section)
    assert caught.value.key == f"data.normalization.{missing}"


@pytest.mark.parametrize("value", [[1, 0], [0], [0, ".inf"], "0, 1", [0, float("nan")]])
def test_config_invalid_range_names_key_and_value(value):
    with pytest.raises(ConfigError) as caught:
        normalizer_from_config(
            {"type": "general", "source range": [0, 255], "target range": value},
            key="model.data.normalization",
        )
    assert caught.value.key == "model.data.normalization.target range"
    assert "min < max" in str(caught.value)


@pytest.mark.parametrize("enabled", ["yes", 1, None])
def test_config_enabled_must_be_boolean(enabled):
    with pytest.raises(ConfigError) as caught:
        normalizer_from_config({"enabled": enabled, "type": "rgb_to_0-1"})
    assert caught.value.key == "data.normalization.enabled"


def test_config_section_must_be_mapping():
    with pytest.raises(ConfigError) as caught:
        normalizer_from_config(["rgb"])  # type: ignore[arg-type]
    assert caught.value.key == "data.normalization"
