"""DeepHealth (ECVL) augmentation text: grammar, catalogue and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digipath.augment import (
    AugmenterPool,
    DatasetAugmentations,
    Flip,
    OneOf,
    Resize,
    Rotate,
    Sequential,
    load_deephealth,
    parse_deephealth,
)
from digipath.augment.deephealth import CATALOGUE
from digipath.errors import AugmentationConfigError, AugmentationError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "augmentation"
SEED_TEXT = EXAMPLES / "seed_deephealth.txt"

NESTED = """
SequentialAugmentationContainer
    AugResizeDim dims=(224,224) interp="linear"
    AugMirror p=0.5
    OneOfAugmentationContainer p=0.3
        AugElasticTransform alpha=[10,20] sigma=[2,4]
        AugGridDistortion num_steps=[2,5] distort_limit=[-0.3,0.3]
        AugOpticalDistortion distort_limit=[-0.3,0.3] shift_limit=[-0.1,0.1]
    end
    AugRotate angle=[-30,30]
end
"""

# One example line per catalogue entry (its required parameters and a few optional ones).
EXAMPLE_LINES = {
    "AugRotate": 'AugRotate angle=[-5,5] center=(10,20) scale=1.0 interp="cubic"',
    "AugResizeDim": 'AugResizeDim dims=(64,48) interp="nearest"',
    "AugResizeScale": "AugResizeScale scale=(0.5,0.75)",
    "AugFlip": "AugFlip p=0.5",
    "AugMirror": "AugMirror p=0.5",
    "AugTranspose": "AugTranspose p=0.5",
    "AugGaussianBlur": "AugGaussianBlur sigma=[0.5,1.5]",
    "AugAdditiveLaplaceNoise": "AugAdditiveLaplaceNoise std_dev=[0,12.75]",
    "AugAdditivePoissonNoise": "AugAdditivePoissonNoise lambda=[0,10]",
    "AugGammaContrast": "AugGammaContrast gamma=[0.5,1.5]",
    "AugCoarseDropout": "AugCoarseDropout p=[0,0.05] drop_size=[0.02,0.1] per_channel=0.5",
    "AugBrightness": "AugBrightness beta=[0,100]",
    "AugGridDistortion": "AugGridDistortion num_steps=[2,5] distort_limit=[-0.3,0.3] "
    'border_type="reflect_101"',
    "AugElasticTransform": 'AugElasticTransform alpha=[10,20] sigma=[2,4] interp="linear"',
    "AugOpticalDistortion": "AugOpticalDistortion distort_limit=[-0.3,0.3] shift_limit=[-0.1,0.1]",
    "AugSalt": "AugSalt p=[0,0.1] per_channel=0",
    "AugPepper": "AugPepper p=[0,0.1] per_channel=0.5",
    "AugSaltAndPepper": "AugSaltAndPepper p=[0,0.1] per_channel=1",
    "AugNormalize": "AugNormalize mean=(0.6681, 0.5301, 0.5247) std=(0.1, 0.1, 0.1)",
    "AugCenterCrop": "AugCenterCrop size=(100,80)",
    "AugToFloat32": "AugToFloat32 divisor=255",
    "AugDivBy255": "AugDivBy255",
    "AugScaleTo": "AugScaleTo new_min=0 new_max=1",
    "AugScaleFromTo": "AugScaleFromTo old_min=0 old_max=255 new_min=-1 new_max=1",
    "AugRandomCrop": 'AugRandomCrop size=(100,80) border_type="reflect101"',
}

OUTPUT_SHAPES = {
    "AugResizeDim": (48, 64),
    "AugResizeScale": (96, 64),
    "AugCenterCrop": (80, 100),
    "AugRandomCrop": (80, 100),
}


def test_seed_text_parses_and_runs(he_patches):
    root = load_deephealth(SEED_TEXT)
    assert isinstance(root, Sequential) and len(root.children) == 5
    rng = np.random.default_rng(0)
    for patch in he_patches:
        root.randomize(rng)
        label = np.zeros(patch.shape[:2], np.uint8)
        out, moved = root(patch, label)
        assert out.shape == (224, 224, 3) and out.dtype == np.uint8
        assert moved.shape == (224, 224)


def test_nested_containers():
    root = parse_deephealth(NESTED)
    resize, mirror, one_of, rotate = root.children
    assert isinstance(resize, Resize)
    assert isinstance(mirror, OneOf) and mirror.p == 0.5 and isinstance(mirror.children[0], Flip)
    assert isinstance(one_of, OneOf) and one_of.p == pytest.approx(0.3)
    assert len(one_of.children) == 3 and one_of.ratios == pytest.approx([1 / 3] * 3)
    assert isinstance(rotate, Rotate)


def test_angles_are_clockwise_in_the_text():
    rotate = parse_deephealth("AugRotate angle=[10,20]")
    assert rotate.angle == (-20.0, -10.0)


def test_flattened_single_line_text():
    root = parse_deephealth(
        'SequentialAugmentationContainer AugResizeDim dims=(28,28) interp="cubic" '
        "AugRotate angle=[-5,5] AugToFloat32 divisor=255 end"
    )
    assert [c.keyword for c in root.children] == ["resize", "rotate", "to_float32"]


def test_two_argument_form():
    rotate = parse_deephealth("angle=[-5,5]", name="AugRotate")
    assert isinstance(rotate, Rotate)


def test_catalogue_is_covered():
    assert set(EXAMPLE_LINES) == set(CATALOGUE)


@pytest.mark.parametrize("name", sorted(EXAMPLE_LINES))
def test_every_catalogue_entry_runs(name, he_patch):
    augmenter = parse_deephealth(EXAMPLE_LINES[name])
    pool = AugmenterPool.from_augmenter(augmenter, rng=0)
    pool.randomize()
    patch = he_patch[:128, :128]
    label = (np.arange(128)[:, None] // 16 % 3 * np.ones(128, int)).astype(np.uint8)
    out, moved = pool.transform(patch, label)
    assert out.shape[:2] == OUTPUT_SHAPES.get(name, (128, 128))
    assert moved.shape == out.shape[:2]
    if name in ("AugNormalize", "AugToFloat32", "AugDivBy255", "AugScaleTo", "AugScaleFromTo"):
        assert out.dtype == np.float32
    else:
        assert out.dtype == np.uint8


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("AugRotat angle=[-5,5]", "line 1: AugRotat", "valid names: SequentialAugmentation"),
        ("AugRotate angle=(-5,5)", "line 1: AugRotate.angle", "must be a range"),
        ("AugRotate", "line 1: AugRotate.angle", "required parameter"),
        ("AugRotate angle=[-5,5] angel=3", "line 1: AugRotate.angel", "its parameters are"),
        ("AugRotate angle=[-5,5,6]", "line 1: AugRotate.angle", "range must be"),
        ("AugRotate angle=[a,5]", "line 1: AugRotate.angle", "not numbers"),
        ('AugRotate angle=[-5,5] interp="linear', "line 1: AugRotate.interp", "closing"),
        (
            "SequentialAugmentationContainer\n  AugFlip p=0.5\n",
            "line 1: SequentialAugmentationContainer",
            "no 'end'",
        ),
        (
            "SequentialAugmentationContainer\nOneOfAugmentationContainer\nAugFlip\nend\nend",
            "line 2: OneOfAugmentationContainer",
            "must be the probability p",
        ),
        ("end", "line 1: end", "without an open container"),
        ("AugFlip p=0.5\nAugMirror p=0.5", "line 2: AugMirror", "text after the end"),
        ("", "line 1: text", "empty"),
        ('AugRotate angle=[-5,5] gt_interp="linear"', "line 1: AugRotate", "nearest"),
        ("AugFlip p=1.5", "line 1: AugFlip", "p must be in"),
    ],
)
def test_errors_name_the_line(text, key, message):
    with pytest.raises(AugmentationConfigError, match=message) as caught:
        parse_deephealth(text)
    assert caught.value.key == key


def test_line_numbers_count_from_the_text_start():
    text = "SequentialAugmentationContainer\n\n    AugFlip p=0.5\n    AugBogus x=1\nend\n"
    with pytest.raises(AugmentationConfigError) as caught:
        parse_deephealth(text)
    assert caught.value.key == "line 4: AugBogus"


def test_dataset_augmentations_by_split_position():
    augmentations = DatasetAugmentations(
        ["AugResizeDim dims=(32,32)", None, parse_deephealth("AugMirror p=0.5")]
    )
    assert isinstance(augmentations[0], Resize)
    assert augmentations[1] is None
    assert augmentations.for_split("test", ["training", "validation", "test"]) is augmentations[2]
    with pytest.raises(AugmentationError, match="Augmentation for split 3 does not exist"):
        augmentations[3]
    with pytest.raises(AugmentationConfigError) as caught:
        DatasetAugmentations(["AugMirror p=0.5", "AugNope"])
    assert caught.value.key.startswith("split 1: line 1")
