"""The augmenters by configuration keyword, with the original library's aliases."""

from __future__ import annotations

import inspect

from digipath.augment.base import Augmenter
from digipath.augment.colour import Brightness, Contrast, Gamma, HedColor, HsbColor
from digipath.augment.containers import OneOf, PassThrough, Sequential
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
from digipath.augment.resize import Crop, Resize
from digipath.augment.spatial import Flip, Rotate, Rotate90, Scale, Transpose
from digipath.augment.stain import StainAugmenter

AUGMENTERS: dict[str, type[Augmenter]] = {
    cls.keyword: cls
    for cls in (
        # colour and stain
        HedColor,
        HsbColor,
        Contrast,
        Brightness,
        Gamma,
        StainAugmenter,
        # noise and filters
        AdditiveGaussianNoise,
        AdditiveLaplaceNoise,
        AdditivePoissonNoise,
        SaltAndPepper,
        CoarseDropout,
        GaussianBlur,
        MedianBlur,
        Sharpen,
        # spatial
        Flip,
        Rotate90,
        Transpose,
        Rotate,
        Scale,
        Elastic,
        GridDistortion,
        OpticalDistortion,
        Crop,
        Resize,
        # conversions and plumbing
        ToFloat32,
        Normalize,
        ScaleTo,
        ScaleFromTo,
        PassThrough,
    )
}
"""Leaf augmenter classes by the ``type`` keyword used in YAML configs."""

CONTAINERS: dict[str, type[Augmenter]] = {"sequential": Sequential, "one_of": OneOf}

ALIASES: dict[str, str] = {
    "pass-through": "pass_through",
    "additive_gaussian_noise": "additive",
    "gaussian_blur": "blur",
    "scaling": "scale",
    "hed": "hed_color",
    "hsb": "hsb_color",
    "hsv_color": "hsb_color",
    "rotate90": "rotate_90",
    "median_blur": "median",
}
"""Other names accepted for ``type`` (the original library's keyword names among them)."""


def augmenter_class(name: str) -> type[Augmenter]:
    """The augmenter class for a ``type`` keyword or alias; ``KeyError`` when unknown."""
    return AUGMENTERS[ALIASES.get(name, name)]


def parameter_names(cls: type[Augmenter]) -> list[str]:
    """The constructor parameters of ``cls``, i.e. the keys its config entry may hold."""
    signature = inspect.signature(cls.__init__)
    return [
        name
        for name, parameter in signature.parameters.items()
        if name != "self"
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]


def required_parameters(cls: type[Augmenter]) -> list[str]:
    """The constructor parameters of ``cls`` without a default."""
    signature = inspect.signature(cls.__init__)
    return [
        name
        for name, parameter in signature.parameters.items()
        if name != "self"
        and parameter.default is parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
