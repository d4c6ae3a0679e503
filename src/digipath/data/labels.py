"""Mapping mask values to network classes."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from digipath.errors import LabelMapError

IGNORE = 255
"""The class of mask values the label map does not list: losses and metrics skip it."""


class LabelMap:
    """An explicit map from mask values to network classes.

    Parameters
    ----------
    mapping
        ``{mask value: class}`` with mask values in 0-254 and classes exactly ``0 .. K - 1``
        (every class used at least once; several mask values may share a class).

    Notes
    -----
    Mask values not in the map become :data:`IGNORE` (255), whatever they are, so an unexpected
    value in a mask never crashes training and is never learnt.
    """

    def __init__(self, mapping: Mapping[int, int]) -> None:
        if not mapping:
            raise LabelMapError("the label map is empty; map at least one mask value to class 0")
        items = {}
        for key, value in mapping.items():
            try:
                mask_value, network_class = int(key), int(value)
            except (TypeError, ValueError):
                raise LabelMapError(
                    f"label map entries must be integers, got {key!r}: {value!r}"
                ) from None
            if not 0 <= mask_value <= 254:
                raise LabelMapError(f"mask values must lie in 0-254, got {mask_value}")
            items[mask_value] = network_class
        classes = sorted(set(items.values()))
        if classes != list(range(len(classes))):
            raise LabelMapError(
                f"network classes must be 0 .. K-1 without gaps, got {classes} (from {items})"
            )
        self._mapping = dict(sorted(items.items()))
        self._lut = np.full(256, IGNORE, dtype=np.uint8)
        for mask_value, network_class in self._mapping.items():
            self._lut[mask_value] = network_class

    @classmethod
    def identity(cls, values: list[int] | tuple[int, ...]) -> LabelMap:
        """Map the mask values ``values`` (sorted) to classes 0 .. K-1 in order."""
        return cls({value: index for index, value in enumerate(sorted(set(values)))})

    @property
    def mapping(self) -> dict[int, int]:
        """The map ``{mask value: class}``."""
        return dict(self._mapping)

    @property
    def classes(self) -> int:
        """Number of network classes K."""
        return max(self._mapping.values()) + 1

    @property
    def lookup(self) -> np.ndarray:
        """The 256-entry uint8 lookup table (unlisted values map to 255)."""
        return self._lut.copy()

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        """Map an array of mask values (any shape, integers) to classes (uint8)."""
        values = np.asarray(labels)
        if values.dtype != np.uint8:
            values = np.where((values < 0) | (values > 255), IGNORE, values).astype(np.uint8)
        return self._lut[values]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and other._mapping == self._mapping

    def __hash__(self) -> int:
        return hash(tuple(self._mapping.items()))

    def __repr__(self) -> str:
        return f"LabelMap({self._mapping})"
