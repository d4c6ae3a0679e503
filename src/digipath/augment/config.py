"""Augmenter pools from the DigitalPathology ``augmentation`` YAML section.

The section maps a purpose (``training``, ``validation`` ...) to a list of groups::

    augmentation:
      training:
        - group: 'spatial'
          random: false            # sequential: every item runs, in order
          items:
            - type: 'flip'
              flips: ['none', 'horizontal']
            - type: 'scale'
              scaling: [0.75, 1.25]
              order: 1
        - group: 'color'
          random: true             # one item per patch, chosen by ratio
          items:
            - type: 'hsb_color'
              hue: [-0.05, 0.05]
              ratio: 1.0
            - type: 'contrast'
              sigma: [-0.25, 0.25]
              ratio: 1.0

``type`` names an augmenter (see :data:`~digipath.augment.registry.AUGMENTERS`; the original
library's names such as ``additive_gaussian_noise`` are accepted too); the other keys of an item
are that augmenter's constructor parameters, and ``ratio`` its chance in a random group. An
unknown type or parameter is an error that names the key path and lists what is valid.

A purpose's value may also be DeepHealth (ECVL) augmentation text
(:func:`~digipath.augment.deephealth.parse_deephealth`), so that a parameter file can carry the
augmentations a DeepHealth training names; its errors name ``augmentation.<purpose>`` and the
line. An empty (or blank) text means no augmentation for that purpose::

    augmentation:
      training: |
        SequentialAugmentationContainer
          AugMirror p=0.5
          AugRotate angle=[-10,10]
        end
      validation: ''
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from digipath.augment.base import Augmenter
from digipath.augment.deephealth import parse_deephealth
from digipath.augment.pool import AugmenterPool
from digipath.augment.registry import (
    ALIASES,
    AUGMENTERS,
    augmenter_class,
    parameter_names,
    required_parameters,
)
from digipath.errors import AugmentationConfigError, AugmentationError

GROUP_KEYS = ("group", "random", "items")


def _error(key: str, reason: str, source: str | None) -> AugmentationConfigError:
    return AugmentationConfigError(key, reason, source)


def augmenter_from_item(
    item: Any, key: str = "item", source: str | None = None
) -> tuple[Augmenter, float]:
    """Build one augmenter from a config item ``{type: ..., <parameters>, ratio: ...}``.

    Returns
    -------
    (augmenter, ratio)
        ``ratio`` defaults to 1.0.
    """
    if not isinstance(item, Mapping):
        raise _error(
            key, f"an augmenter item must be a mapping with a 'type', got {item!r}", source
        )
    if "type" not in item:
        raise _error(key, "missing 'type' (the augmenter name)", source)
    name = item["type"]
    try:
        cls = augmenter_class(name)
    except (KeyError, TypeError):
        valid = ", ".join(sorted(AUGMENTERS))
        raise _error(
            f"{key}.type", f"unknown augmenter {name!r}; valid names are: {valid}", source
        ) from None
    names = parameter_names(cls)
    params = {k: v for k, v in item.items() if k not in ("type", "ratio")}
    for param in params:
        if param not in names:
            raise _error(
                f"{key}.{param}",
                f"{name!r} has no parameter {param!r}; its parameters are: "
                f"{', '.join(names) or 'none'}",
                source,
            )
    missing = [p for p in required_parameters(cls) if p not in params]
    if missing:
        raise _error(key, f"{name!r} needs the parameter(s): {', '.join(missing)}", source)
    ratio = item.get("ratio", 1.0)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise _error(f"{key}.ratio", f"must be a number > 0, got {ratio!r}", source)
    try:
        augmenter = cls(**params)
    except AugmentationError as error:
        raise _error(key, str(error), source) from None
    return augmenter, float(ratio)


def pool_from_groups(
    groups: Any,
    key: str = "augmentation",
    source: str | os.PathLike[str] | None = None,
    rng: np.random.Generator | int | None = None,
) -> AugmenterPool:
    """Build an :class:`AugmenterPool` from a list of group entries (one purpose's section).

    Parameters
    ----------
    groups
        ``[{group: name, random: bool, items: [...]}, ...]``, or a DeepHealth augmentation text
        (one pool group ``"main"`` holding the text's augmenter; an empty or blank text gives
        an empty pool).
    key
        Key path of ``groups`` for error messages (e.g. ``augmentation.training``).
    source
        The file the section came from, for error messages.
    rng
        Generator or seed for the pool.
    """
    source = os.fspath(source) if source is not None else None
    if groups is None:
        groups = []
    if isinstance(groups, str):
        return _pool_from_text(groups, key, source, rng)
    if not isinstance(groups, list):
        raise _error(key, f"expected a list of groups, got {type(groups).__name__}", source)
    pool = AugmenterPool(rng)
    for index, entry in enumerate(groups):
        where = f"{key}[{index}]"
        if not isinstance(entry, Mapping):
            raise _error(where, "a group must be a mapping with 'group', 'random', 'items'", source)
        unknown = [k for k in entry if k not in GROUP_KEYS]
        if unknown:
            raise _error(
                f"{where}.{unknown[0]}",
                f"unknown group key; valid keys are: {', '.join(GROUP_KEYS)}",
                source,
            )
        name = entry.get("group", f"group {index}")
        if not isinstance(name, str) or not name:
            raise _error(f"{where}.group", f"must be a non-empty string, got {name!r}", source)
        random = entry.get("random", False)
        if not isinstance(random, bool):
            raise _error(f"{where}.random", f"must be true or false, got {random!r}", source)
        items = entry.get("items", [])
        if not isinstance(items, list):
            raise _error(f"{where}.items", f"must be a list of augmenters, got {items!r}", source)
        if not items:
            raise _error(f"{where}.items", f"group {name!r} has no augmenters", source)
        try:
            pool.append_group(name, random=random)
        except AugmentationError as error:
            raise _error(f"{where}.group", str(error), source) from None
        for position, item in enumerate(items):
            item_key = f"{where}.items[{position}]"
            augmenter, ratio = augmenter_from_item(item, item_key, source)
            try:
                pool.append_augmenter(augmenter, name, ratio)
            except AugmentationError as error:
                raise _error(f"{item_key}.ratio", str(error), source) from None
    return pool


def _pool_from_text(
    text: str, key: str, source: str | None, rng: np.random.Generator | int | None
) -> AugmenterPool:
    """The pool of one purpose given as DeepHealth augmentation text (see the module docstring)."""
    if not text.strip():
        return AugmenterPool(rng)
    try:
        augmenter = parse_deephealth(text, source=source)
    except AugmentationConfigError as error:
        raise _error(
            key,
            f"DeepHealth augmentation text, {error.key}: {error.reason} (a purpose holds a list "
            "of groups or DeepHealth augmentation text)",
            source,
        ) from None
    return AugmenterPool.from_augmenter(augmenter, rng)


def load_augmentation(
    config: str | os.PathLike[str] | Mapping[str, Any],
    rng: np.random.Generator | int | None = None,
) -> dict[str, AugmenterPool]:
    """Build one pool per purpose from an ``augmentation`` section.

    Parameters
    ----------
    config
        A YAML file (a whole parameter file with a top-level ``augmentation`` key, or the
        section itself), or the already-loaded mapping.
    rng
        Generator or seed; each purpose's pool gets its own stream spawned from it.

    Returns
    -------
    dict
        ``{purpose: AugmenterPool}`` in file order.
    """
    source = None
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        source = os.fspath(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            reason = f"cannot read the file: {error.strerror}"
            raise _error("augmentation", reason, source) from None
        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise _error("augmentation", f"not valid YAML: {error}", source) from None
    if not isinstance(config, Mapping):
        raise _error(
            "augmentation", "expected a mapping of purposes to group lists or texts", source
        )
    key = "augmentation"
    section = config.get("augmentation", config) if "augmentation" in config else config
    if not isinstance(section, Mapping):
        raise _error(key, "expected a mapping of purposes (training, validation ...)", source)
    parent = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    streams = parent.spawn(len(section)) if section else []
    return {
        str(purpose): pool_from_groups(groups, f"{key}.{purpose}", source, stream)
        for (purpose, groups), stream in zip(section.items(), streams, strict=True)
    }


__all__ = ["ALIASES", "augmenter_from_item", "load_augmentation", "pool_from_groups"]
