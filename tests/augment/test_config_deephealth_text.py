"""An ``augmentation`` section whose purposes carry DeepHealth augmentation text."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from digipath.augment import AugmenterPool, Flip, Rotate, Sequential, load_augmentation
from digipath.augment.deephealth import parse_deephealth
from digipath.errors import AugmentationConfigError

TEXT = """SequentialAugmentationContainer
    AugMirror p=0.5
    AugRotate angle=[-10,10]
end
"""


def _text_children(pool: AugmenterPool) -> list[type]:
    """The types of the children of the parsed text (the one member of group ``main``)."""
    (parsed,) = pool.group("main").children
    return [type(child) for child in parsed.children]


def test_a_text_purpose_becomes_a_pool_of_its_augmenter():
    pools = load_augmentation({"augmentation": {"training": TEXT}}, rng=0)
    pool = pools["training"]
    assert pool.groups == ["main"]
    reference = AugmenterPool.from_augmenter(parse_deephealth(TEXT), rng=0)
    assert _text_children(pool) == _text_children(reference)
    assert isinstance(pool.as_augmenter(), Sequential)


def test_text_and_group_lists_mix_in_one_section(tmp_path):
    section = {
        "augmentation": {
            "training": TEXT,
            "validation": [
                {"group": "spatial", "items": [{"type": "flip", "flips": ["none", "vertical"]}]}
            ],
        }
    }
    path = tmp_path / "parameters.yaml"
    path.write_text(yaml.safe_dump(section), encoding="utf-8")
    pools = load_augmentation(path, rng=1)
    assert list(pools) == ["training", "validation"]
    assert pools["validation"].groups == ["spatial"]
    assert isinstance(pools["validation"].group("spatial").children[0], Flip)
    assert Rotate in _text_children(pools["training"])


@pytest.mark.parametrize("text", ["", "   \n  "])
def test_an_empty_text_means_no_augmentation(text):
    pool = load_augmentation({"training": text}, rng=0)["training"]
    assert pool.groups == []
    patch = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(1, 8, 8, 3)
    out = pool.process(patch)
    out = out[0] if isinstance(out, tuple) else out
    np.testing.assert_array_equal(np.asarray(out), patch)


def test_the_pool_applies_the_text_reproducibly():
    patches = np.random.default_rng(3).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    results = []
    for _ in range(2):
        pool = load_augmentation({"training": "AugMirror p=1"}, rng=5)["training"]
        out = pool.process(patches)
        results.append(np.asarray(out[0] if isinstance(out, tuple) else out))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], patches[:, :, ::-1])


def test_errors_in_a_text_name_the_purpose_and_the_line(tmp_path):
    bad = "SequentialAugmentationContainer\n    AugRotate angel=[-5,5]\nend\n"
    with pytest.raises(AugmentationConfigError) as caught:
        load_augmentation({"augmentation": {"validation": bad}})
    error = caught.value
    assert error.key == "augmentation.validation"
    assert "line 2" in str(error) and "angel" in str(error)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"augmentation": {"training": "AugNoSuchThing"}}))
    with pytest.raises(AugmentationConfigError) as caught:
        load_augmentation(path)
    assert caught.value.key == "augmentation.training"
    assert caught.value.source == str(path)
    assert "AugNoSuchThing" in str(caught.value)
