"""Augmentation: colour (HED, HSB, stain), noise, filters and spatial transforms of patches.

Every augmenter is a small class: ``randomize(rng)`` draws its parameters from a
:class:`numpy.random.Generator`; ``augmenter(image, label=None)`` applies them to a
``(rows, cols, channels)`` uint8 patch and, for spatial augmenters, to its ``(rows, cols)`` label
map (nearest interpolation, same parameters), returning ``(image, label)``.
:class:`AugmenterPool` chains them in sequential or random groups, draws once per patch
location for all spacings, and tells the enlarged shape to extract. Pools come from the
DigitalPathology YAML section (:func:`load_augmentation`) or DeepHealth's text syntax
(:func:`parse_deephealth`).
"""

from digipath.augment.base import AffineAugmenter, Augmenter
from digipath.augment.chain import run_chain
from digipath.augment.colour import Brightness, Contrast, Gamma, HedColor, HsbColor
from digipath.augment.config import augmenter_from_item, load_augmentation, pool_from_groups
from digipath.augment.containers import OneOf, PassThrough, Sequential
from digipath.augment.deephealth import DatasetAugmentations, load_deephealth, parse_deephealth
from digipath.augment.deform import Elastic, GridDistortion, OpticalDistortion
from digipath.augment.filters import GaussianBlur, MedianBlur, Sharpen
from digipath.augment.intensity import Normalize, ScaleFromTo, ScaleTo, ToFloat32
from digipath.augment.noise import (
    AdditiveGaussianNoise,
    AdditiveLaplaceNoise,
    AdditivePoissonNoise,
    CoarseDropout,
    SaltAndPepper,
)
from digipath.augment.pool import AugmenterPool
from digipath.augment.registry import AUGMENTERS
from digipath.augment.resize import Crop, Resize
from digipath.augment.spatial import Flip, Rotate, Rotate90, Scale, Transpose
from digipath.augment.stain import StainAugmenter

__all__ = [
    "AUGMENTERS",
    "AdditiveGaussianNoise",
    "AdditiveLaplaceNoise",
    "AdditivePoissonNoise",
    "AffineAugmenter",
    "Augmenter",
    "AugmenterPool",
    "Brightness",
    "CoarseDropout",
    "Contrast",
    "Crop",
    "DatasetAugmentations",
    "Elastic",
    "Flip",
    "Gamma",
    "GaussianBlur",
    "GridDistortion",
    "HedColor",
    "HsbColor",
    "MedianBlur",
    "Normalize",
    "OneOf",
    "OpticalDistortion",
    "PassThrough",
    "Resize",
    "Rotate",
    "Rotate90",
    "SaltAndPepper",
    "Scale",
    "ScaleFromTo",
    "ScaleTo",
    "Sequential",
    "Sharpen",
    "StainAugmenter",
    "ToFloat32",
    "Transpose",
    "augmenter_from_item",
    "load_augmentation",
    "load_deephealth",
    "parse_deephealth",
    "pool_from_groups",
    "run_chain",
]
