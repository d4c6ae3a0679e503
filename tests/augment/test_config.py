"""Pools from the DigitalPathology augmentation YAML section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from digipath.augment import (
    AdditiveGaussianNoise,
    Contrast,
    Flip,
    GaussianBlur,
    HsbColor,
    OneOf,
    Rotate90,
    Scale,
    Sequential,
    load_augmentation,
    pool_from_groups,
)
from digipath.errors import AugmentationConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "augmentation"


def test_seed_example_parses_into_its_groups():
    pools = load_augmentation(EXAMPLES / "seed.yaml", rng=0)
    assert list(pools) == ["training"]
    pool = pools["training"]
    assert pool.groups == ["spatial", "color", "noise"]
    spatial, colour, noise = (pool.group(name) for name in pool.groups)
    assert isinstance(spatial, Sequential) and isinstance(colour, OneOf)
    assert [type(c) for c in spatial.children] == [Flip, Rotate90, Scale]
    assert [type(c) for c in colour.children] == [HsbColor, Contrast]
    assert colour.ratios == [0.5, 0.5]
    assert [type(c) for c in noise.children] == [AdditiveGaussianNoise, GaussianBlur]


def test_seed_example_runs_on_real_patches(he_patches):
    pool = load_augmentation(EXAMPLES / "seed.yaml", rng=1)["training"]
    for patch in he_patches:
        out, _ = pool.process(patch[None], shapes=(128, 128))
        assert out.shape == (1, 128, 128, 3) and out.dtype == np.uint8


def test_every_example_config_loads_and_runs(he_patch):
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for purpose, pool in load_augmentation(path, rng=0).items():
            pool.randomize()
            out, _ = pool.transform(he_patch, None, (96, 96))
            assert out.shape == (96, 96, 3), (path, purpose)


def test_purposes_get_independent_streams(he_patch):
    section = yaml.safe_load((EXAMPLES / "seed.yaml").read_text())["augmentation"]
    pools = load_augmentation({"training": section["training"], "validation": section["training"]})
    assert set(pools) == {"training", "validation"}


def _groups(items, random=False):
    return [{"group": "g", "random": random, "items": items}]


@pytest.mark.parametrize(
    ("groups", "key", "message"),
    [
        (_groups([{"type": "flipp"}]), "augmentation.training[0].items[0].type", "valid names"),
        (
            _groups([{"type": "flip", "flip": ["none"]}]),
            "augmentation.training[0].items[0].flip",
            "its parameters are: flips",
        ),
        (_groups([{"type": "contrast"}]), "augmentation.training[0].items[0]", "sigma"),
        (
            _groups([{"type": "contrast", "sigma": [0.5, -0.5]}]),
            "augmentation.training[0].items[0]",
            "min <= max",
        ),
        (
            _groups([{"type": "contrast", "sigma": [-0.1, 0.1], "ratio": 0}], random=True),
            "augmentation.training[0].items[0].ratio",
            "> 0",
        ),
        (
            [{"group": "g", "random": "yes", "items": [{"type": "flip"}]}],
            "augmentation.training[0].random",
            "true or false",
        ),
        ([{"group": "g", "items": []}], "augmentation.training[0].items", "no augmenters"),
        ([{"group": "g", "itemz": []}], "augmentation.training[0].itemz", "valid keys"),
        ("flip", "augmentation.training", "list of groups"),
    ],
)
def test_errors_name_the_key(groups, key, message):
    with pytest.raises(AugmentationConfigError, match=message) as caught:
        pool_from_groups(groups, "augmentation.training")
    assert caught.value.key == key


def test_duplicate_group_and_file_errors(tmp_path):
    groups = _groups([{"type": "flip"}]) * 2
    with pytest.raises(AugmentationConfigError, match="already exists"):
        pool_from_groups(groups)
    bad = tmp_path / "bad.yaml"
    bad.write_text("augmentation: [unclosed\n")
    with pytest.raises(AugmentationConfigError, match="not valid YAML") as caught:
        load_augmentation(bad)
    assert caught.value.source == str(bad)
    with pytest.raises(AugmentationConfigError, match="cannot read"):
        load_augmentation(tmp_path / "missing.yaml")


def test_original_keyword_aliases():
    pool = pool_from_groups(
        _groups(
            [
                {"type": "additive_gaussian_noise", "sigma": [0.0, 0.1]},
                {"type": "gaussian_blur", "sigma": [0.0, 1.0]},
                {"type": "pass-through"},
            ]
        )
    )
    assert [c.keyword for c in pool.group("g").children] == ["additive", "blur", "pass_through"]
