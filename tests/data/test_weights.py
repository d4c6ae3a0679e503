"""Tests of the weight maps (digipath.data.weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from digipath.data.labels import IGNORE
from digipath.data.weights import (
    LABEL_MODES,
    WEIGHT_MAPPERS,
    BalancingWeights,
    BatchBalancingWeights,
    BatchWeightMapper,
    CleanWeights,
    PatchWeightMapper,
    weight_mappers_from_config,
)
from digipath.errors import ConfigError, WeightMappingError


def batch(*patches: list[list[int]]) -> np.ndarray:
    """A uint8 (N, rows, cols) batch from nested lists."""
    return np.array(patches, dtype=np.uint8)


def reference(
    labels: np.ndarray, classes: int, clipping: tuple[float, float] | None, normalize: bool
) -> np.ndarray:
    """Per-patch balancing written out from the formula, one patch and class at a time."""
    out = np.zeros(labels.shape, dtype=np.float64)
    for index, patch in enumerate(labels):
        valid = patch != IGNORE
        if not valid.any():
            continue
        present = [c for c in range(classes) if np.count_nonzero(patch == c)]
        balanced = valid.sum() / len(present)
        for c in present:
            weight = balanced / np.count_nonzero(patch == c)
            if clipping is not None:
                weight = min(max(weight, clipping[0]), clipping[1])
            out[index][patch == c] = weight
        target = patch.size if normalize else valid.sum()
        out[index] *= target / out[index].sum()
    return out


@st.composite
def label_batches(draw, max_patches: int = 4, max_side: int = 8):
    """(classes, labels): labels (N, rows, cols) uint8 in 0 .. classes - 1 or 255."""
    classes = draw(st.integers(1, 5))
    shape = draw(
        st.tuples(st.integers(1, max_patches), st.integers(1, max_side), st.integers(1, max_side))
    )
    values = st.sampled_from([*range(classes), IGNORE])
    labels = draw(hnp.arrays(np.uint8, shape, elements=values))
    return classes, labels


clippings = st.one_of(
    st.none(),
    st.tuples(st.floats(0, 2), st.floats(0.5, 20)).filter(lambda pair: pair[0] <= pair[1]),
)


# --------------------------------------------------------------------------------------------
# Clean weights


def test_clean_weights():
    labels = batch([[0, 1], [255, 2]], [[255, 255], [255, 255]])
    weights = CleanWeights()(labels)
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, [[[1, 1], [0, 1]], [[0, 0], [0, 0]]])


def test_clean_weights_any_shape_and_integer_type():
    labels = np.array([0, 3, 255, 7], dtype=np.int32)
    np.testing.assert_array_equal(CleanWeights()(labels), [1, 1, 0, 1])


def test_clean_weights_checks_classes_when_given():
    labels = batch([[0, 1], [255, 3]])
    np.testing.assert_array_equal(CleanWeights(classes=4)(labels), [[[1, 1], [0, 1]]])
    with pytest.raises(WeightMappingError, match=r"label value 3 is not .* 0-2"):
        CleanWeights(classes=3)(labels)


@pytest.mark.parametrize("labels", [np.zeros(3, dtype=np.float32), np.zeros(3, dtype=bool)])
def test_clean_weights_need_integers(labels):
    with pytest.raises(WeightMappingError, match="integer"):
        CleanWeights()(labels)


# --------------------------------------------------------------------------------------------
# Balancing: hand-computed examples


def test_balancing_three_to_one():
    # valid 4, 2 classes: balanced 2; w0 = 2 / 3, w1 = 2 / 1; sum 4 = pixel count.
    labels = batch([[0, 0], [0, 1]])
    expected = [[[2 / 3, 2 / 3], [2 / 3, 2]]]
    for normalize in (True, False):
        weights = BalancingWeights(2, normalize=normalize)(labels)
        assert weights.dtype == np.float32
        np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_balancing_with_an_invalid_pixel():
    # valid 3, 2 classes: balanced 1.5; w0 = 1.5 / 2 = 0.75, w1 = 1.5; sum 3.
    labels = batch([[0, 0], [1, 255]])
    np.testing.assert_allclose(
        BalancingWeights(2, normalize=False)(labels), [[[0.75, 0.75], [1.5, 0]]], rtol=1e-6
    )
    # normalize: sum 4 (pixel count), scale 4 / 3.
    np.testing.assert_allclose(
        BalancingWeights(2, normalize=True)(labels), [[[1, 1], [2, 0]]], rtol=1e-6
    )


def test_balancing_single_class():
    labels = batch([[2, 2], [2, 255]])
    np.testing.assert_allclose(BalancingWeights(3, normalize=False)(labels), [[[1, 1], [1, 0]]])
    np.testing.assert_allclose(
        BalancingWeights(3)(labels), [[[4 / 3, 4 / 3], [4 / 3, 0]]], rtol=1e-6
    )


def test_balancing_clipping_max():
    # w0 = 2 / 3, w1 = 2 clipped to 1.5; sum 3.5; rescaled by 4 / 3.5.
    labels = batch([[0, 0], [0, 1]])
    weights = BalancingWeights(2, clipping=(0.5, 1.5), normalize=False)(labels)
    np.testing.assert_allclose(weights, [[[16 / 21, 16 / 21], [16 / 21, 12 / 7]]], rtol=1e-6)


def test_balancing_clipping_min():
    # 1 pixel of class 0, 7 of class 1: balanced 4; w0 = 4, w1 = 4 / 7 clipped to 1;
    # sum 4 + 7 = 11, rescaled to 8.
    labels = batch([[0, 1, 1, 1], [1, 1, 1, 1]])
    weights = BalancingWeights(2, clipping=(1, 10))(labels)
    expected = np.full((1, 2, 4), 8 / 11)
    expected[0, 0, 0] = 32 / 11
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_balancing_clipping_that_does_not_bind_changes_nothing():
    labels = batch([[0, 0], [0, 1]])
    np.testing.assert_allclose(
        BalancingWeights(2, clipping=(0, 100))(labels), BalancingWeights(2)(labels), rtol=1e-6
    )


def test_balancing_equal_clipping_bounds_give_clean_weights_rescaled():
    labels = batch([[0, 0], [1, 255]])
    weights = BalancingWeights(2, clipping=(1, 1), normalize=False)(labels)
    np.testing.assert_allclose(weights, CleanWeights()(labels), rtol=1e-6)


def test_balancing_patch_without_valid_pixel_is_zero():
    labels = batch([[255, 255], [255, 255]], [[0, 1], [1, 1]])
    weights = BalancingWeights(2)(labels)
    np.testing.assert_array_equal(weights[0], 0)
    np.testing.assert_allclose(weights[1].sum(), 4, rtol=1e-6)


def test_balancing_is_per_patch():
    first = batch([[0, 0], [0, 1]])
    second = batch([[1, 255], [2, 2]])
    together = BalancingWeights(3)(np.concatenate([first, second]))
    np.testing.assert_array_equal(together[:1], BalancingWeights(3)(first))
    np.testing.assert_array_equal(together[1:], BalancingWeights(3)(second))


def test_balancing_does_not_modify_labels_and_accepts_other_integer_types():
    labels = batch([[0, 0], [0, 1]], [[1, 255], [0, 0]])
    before = labels.copy()
    weights = BalancingWeights(2)(labels)
    np.testing.assert_array_equal(labels, before)
    np.testing.assert_array_equal(BalancingWeights(2)(labels.astype(np.int64)), weights)


def test_balancing_of_an_empty_batch():
    weights = BalancingWeights(2)(np.zeros((0, 4, 4), dtype=np.uint8))
    assert weights.shape == (0, 4, 4)
    assert weights.dtype == np.float32


# --------------------------------------------------------------------------------------------
# Balancing: properties


@settings(max_examples=80, deadline=None)
@given(data=label_batches(), clipping=clippings, normalize=st.booleans())
def test_balancing_matches_reference_and_sums(data, clipping, normalize):
    classes, labels = data
    weights = BalancingWeights(classes, clipping=clipping, normalize=normalize)(labels)
    assert weights.dtype == np.float32
    assert weights.shape == labels.shape
    np.testing.assert_allclose(
        weights, reference(labels, classes, clipping, normalize), rtol=1e-5, atol=1e-6
    )
    valid = labels != IGNORE
    assert np.all(weights[~valid] == 0)
    assert np.all(weights[valid] > 0)
    for patch, patch_valid in zip(weights, valid, strict=True):
        count = patch_valid.sum()
        if count == 0:
            assert patch.sum() == 0
            continue
        target = patch.size if normalize else count
        assert math.isclose(float(patch.sum(dtype=np.float64)), target, rel_tol=1e-3)


@settings(max_examples=40, deadline=None)
@given(data=label_batches(max_patches=2, max_side=6))
def test_balancing_without_clipping_gives_every_present_class_the_same_total(data):
    classes, labels = data
    weights = BalancingWeights(classes, normalize=False)(labels)
    for patch, patch_weights in zip(labels, weights, strict=True):
        totals = [patch_weights[patch == c].sum() for c in range(classes) if (patch == c).any()]
        if totals:
            np.testing.assert_allclose(totals, totals[0], rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Batch balancing


def test_batch_balancing_hand_computed():
    # Batch counts: class 0: 4, class 1: 2 (valid 6, 2 ignored); balanced 3;
    # w0 = 0.75, w1 = 1.5, sum 6; normalize: scaled to 8.
    labels = batch([[0, 0], [0, 1]], [[0, 1], [255, 255]])
    clean = CleanWeights()(labels)
    np.testing.assert_allclose(
        BatchBalancingWeights(2, normalize=False)(labels, clean),
        [[[0.75, 0.75], [0.75, 1.5]], [[0.75, 1.5], [0, 0]]],
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        BatchBalancingWeights(2)(labels, clean),
        [[[1, 1], [1, 2]], [[1, 2], [0, 0]]],
        rtol=1e-6,
    )


def test_batch_balancing_uses_the_validity_of_the_given_weights():
    labels = batch([[0, 0], [0, 1]])
    weights = np.array([[[1, 1], [0, 1]]], dtype=np.float32)  # (1, 0) marked invalid
    # counts 2 and 1 over 3 valid: balanced 1.5; w0 = 0.75, w1 = 1.5; normalize to 4.
    out = BatchBalancingWeights(2)(labels, weights)
    np.testing.assert_allclose(out, [[[1, 1], [0, 2]]], rtol=1e-6)
    # only validity counts, not the values of the given weights
    np.testing.assert_array_equal(BatchBalancingWeights(2)(labels, weights * 7.5), out)


def test_batch_balancing_without_weights_uses_the_labels():
    labels = batch([[0, 0], [1, 255]], [[2, 2], [2, 0]])
    mapper = BatchBalancingWeights(3, clipping=(0.1, 3))
    np.testing.assert_array_equal(mapper(labels), mapper(labels, CleanWeights()(labels)))


def test_batch_balancing_all_invalid():
    labels = batch([[255, 255]], [[255, 255]])
    np.testing.assert_array_equal(BatchBalancingWeights(2)(labels, CleanWeights()(labels)), 0)


@settings(max_examples=80, deadline=None)
@given(data=label_batches(), clipping=clippings, normalize=st.booleans())
def test_batch_balancing_is_balancing_of_the_batch_as_one_patch(data, clipping, normalize):
    classes, labels = data
    n, rows, cols = labels.shape
    mapper = BatchBalancingWeights(classes, clipping=clipping, normalize=normalize)
    before = labels.copy()
    weights = mapper(labels, CleanWeights()(labels))
    np.testing.assert_array_equal(labels, before)
    assert weights.dtype == np.float32 and weights.shape == labels.shape
    as_one = BalancingWeights(classes, clipping=clipping, normalize=normalize)(
        labels.reshape(1, n * rows, cols)
    )
    np.testing.assert_allclose(weights, as_one.reshape(labels.shape), rtol=1e-6, atol=0)
    valid = labels != IGNORE
    assert np.all(weights[~valid] == 0)
    if valid.any():
        target = labels.size if normalize else valid.sum()
        assert math.isclose(float(weights.sum(dtype=np.float64)), target, rel_tol=1e-3)
    else:
        assert weights.sum() == 0


def test_batch_balancing_shape_mismatch():
    labels = batch([[0, 1]])
    with pytest.raises(WeightMappingError, match="shape"):
        BatchBalancingWeights(2)(labels, np.ones((1, 1, 3), dtype=np.float32))


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("mapper", [BalancingWeights(3), BatchBalancingWeights(3)], ids=repr)
def test_labels_beyond_classes_are_rejected(mapper):
    labels = batch([[0, 1], [5, 255]], [[3, 0], [0, 0]])
    with pytest.raises(WeightMappingError, match=r"label values 3, 5 are not network classes 0-2"):
        mapper(labels)


@pytest.mark.parametrize("mapper", [BalancingWeights(3), BatchBalancingWeights(3)], ids=repr)
@pytest.mark.parametrize("value", [-1, 256, 1000])
def test_out_of_range_integer_labels_are_rejected(mapper, value):
    labels = np.array([[[0, value]]], dtype=np.int64)
    with pytest.raises(WeightMappingError, match=f"label value {value} "):
        mapper(labels)


@pytest.mark.parametrize("mapper", [BalancingWeights(3), BatchBalancingWeights(3)], ids=repr)
@pytest.mark.parametrize(
    "labels",
    [np.zeros((2, 2), dtype=np.uint8), np.zeros((1, 2, 2, 1), dtype=np.uint8)],
    ids=lambda a: str(a.shape),
)
def test_labels_must_be_a_batch_of_maps(mapper, labels):
    with pytest.raises(WeightMappingError, match=r"\(N, rows, cols\)"):
        mapper(labels)


@pytest.mark.parametrize("cls", [BalancingWeights, BatchBalancingWeights])
@pytest.mark.parametrize(
    ("clipping", "match"),
    [
        ((-1, 2), "negative"),
        ((2, 1), "greater than max"),
        ((0, 0), "max"),
        ((math.nan, 1), "min"),
        ((0, math.nan), "max"),
        ((math.inf, math.inf), "min"),
        ((1,), "min, max"),
        ("ab", "min"),
    ],
)
def test_invalid_clipping_is_rejected(cls, clipping, match):
    with pytest.raises(WeightMappingError, match=match):
        cls(2, clipping=clipping)


def test_infinite_clipping_max_is_accepted():
    mapper = BalancingWeights(2, clipping=(0, math.inf))
    assert mapper.clipping == (0.0, math.inf)


@pytest.mark.parametrize("classes", [0, 256, True, 2.0, "2"])
def test_invalid_classes(classes):
    with pytest.raises(WeightMappingError, match="classes"):
        BalancingWeights(classes)
    with pytest.raises(WeightMappingError, match="classes"):
        CleanWeights(classes)


def test_normalize_must_be_boolean():
    with pytest.raises(WeightMappingError, match="normalize"):
        BalancingWeights(2, normalize="yes")  # type: ignore[arg-type]


def test_repr_equality_and_protocols():
    assert repr(CleanWeights()) == "CleanWeights()"
    assert repr(BalancingWeights(3, (0.5, 2))) == (
        "BalancingWeights(classes=3, clipping=(0.5, 2.0), normalize=True)"
    )
    assert BatchBalancingWeights(2, [0, 5], False) == BatchBalancingWeights(2, (0.0, 5.0), False)
    assert BalancingWeights(2) != BatchBalancingWeights(2)
    assert isinstance(BalancingWeights(2), PatchWeightMapper)
    assert isinstance(CleanWeights(), PatchWeightMapper)
    assert isinstance(BatchBalancingWeights(2), BatchWeightMapper)
    assert WEIGHT_MAPPERS == {
        "clean": CleanWeights,
        "balancing": BalancingWeights,
        "batch balancing": BatchBalancingWeights,
    }
    assert LABEL_MODES == ("central", "synthesize", "load")


# --------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize("label_mode", LABEL_MODES)
def test_config_none_and_disabled(label_mode):
    assert weight_mappers_from_config(None, 2, label_mode) == (None, None)
    section = {"enabled": False, "type": "balancing"}
    assert weight_mappers_from_config(section, 2, label_mode) == (None, None)


def test_config_clean():
    patch, batch_mapper = weight_mappers_from_config({"type": "clean"}, 3, "synthesize")
    assert isinstance(patch, CleanWeights) and patch.classes == 3
    assert batch_mapper is None


def test_config_balancing_digitalpathology_section():
    section = {
        "enabled": True,
        "type": "balancing",
        "normalize": False,
        "clipping": {"min": 0.1, "max": 10.0},
    }
    patch, batch_mapper = weight_mappers_from_config(section, 4, "load")
    assert patch == BalancingWeights(4, clipping=(0.1, 10.0), normalize=False)
    assert batch_mapper is None


def test_config_batch_balancing():
    section = {"type": "batch balancing", "clipping": {"min": 0, "max": 5}}
    patch, batch_mapper = weight_mappers_from_config(section, 2, "load")
    assert patch == CleanWeights(classes=2)
    assert batch_mapper == BatchBalancingWeights(2, clipping=(0, 5), normalize=True)
    labels = batch([[0, 0], [0, 1]])
    np.testing.assert_allclose(
        batch_mapper(labels, patch(labels)), BalancingWeights(2, (0, 5))(labels), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("clipping", "expected"),
    [
        (None, None),
        ({"max": 4}, (0.0, 4.0)),
        ({"min": 0.5}, (0.5, math.inf)),
        ({}, (0.0, math.inf)),
    ],
)
def test_config_clipping_defaults(clipping, expected):
    section = {"type": "balancing", "clipping": clipping}
    patch, _ = weight_mappers_from_config(section, 2, "synthesize")
    assert patch.clipping == expected
    assert patch.normalize is True


@pytest.mark.parametrize("kind", ["clean", "balancing", "batch balancing"])
def test_config_central_label_mode_is_rejected(kind):
    with pytest.raises(WeightMappingError) as caught:
        weight_mappers_from_config({"type": kind}, 2, "central")
    message = str(caught.value)
    assert "data.weight mapping" in message
    assert "'central'" in message
    assert "'synthesize'" in message and "'load'" in message


def test_config_unknown_type_lists_valid_types():
    with pytest.raises(ConfigError) as caught:
        weight_mappers_from_config({"type": "focal"}, 2, "load", source="net.yaml")
    assert caught.value.key == "data.weight mapping.type"
    assert caught.value.source == "net.yaml"
    for name in ("'clean'", "'balancing'", "'batch balancing'", "'focal'"):
        assert name in str(caught.value)


def test_config_missing_type():
    with pytest.raises(ConfigError, match="'batch balancing'") as caught:
        weight_mappers_from_config({"enabled": True}, 2, "load")
    assert caught.value.key == "data.weight mapping.type"


def test_config_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as caught:
        weight_mappers_from_config({"type": "clean", "normalise": True}, 2, "load")
    assert caught.value.key == "data.weight mapping.normalise"
    assert "'normalize'" in str(caught.value) and "'clipping'" in str(caught.value)


@pytest.mark.parametrize(
    ("clipping", "key"),
    [
        ({"min": -1, "max": 2}, "data.weight mapping.clipping.min"),
        ({"min": 3, "max": 2}, "data.weight mapping.clipping"),
        ({"min": 0, "max": 0}, "data.weight mapping.clipping.max"),
        ({"min": "low", "max": 2}, "data.weight mapping.clipping.min"),
        ({"min": 0, "max": None}, "data.weight mapping.clipping.max"),
        ({"min": 0, "maximum": 2}, "data.weight mapping.clipping.maximum"),
        ([0, 2], "data.weight mapping.clipping"),
    ],
)
@pytest.mark.parametrize("kind", ["balancing", "batch balancing"])
def test_config_invalid_clipping_names_the_key(kind, clipping, key):
    with pytest.raises(ConfigError) as caught:
        weight_mappers_from_config({"type": kind, "clipping": clipping}, 2, "load")
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


@pytest.mark.parametrize("name", ["enabled", "normalize"])
def test_config_flags_must_be_boolean(name):
    with pytest.raises(ConfigError) as caught:
        weight_mappers_from_config({"type": "balancing", name: "yes"}, 2, "load")
    assert caught.value.key == f"data.weight mapping.{name}"


def test_config_custom_key_and_non_mapping():
    with pytest.raises(ConfigError) as caught:
        weight_mappers_from_config("balancing", 2, "load", key="training.weights")  # type: ignore[arg-type]
    assert caught.value.key == "training.weights"


def test_config_invalid_label_mode_and_classes():
    with pytest.raises(WeightMappingError, match="label mode"):
        weight_mappers_from_config({"type": "clean"}, 2, "centre")
    with pytest.raises(WeightMappingError, match="classes"):
        weight_mappers_from_config({"type": "clean"}, 0, "load")
