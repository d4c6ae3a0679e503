"""Typed, validated reads from the mappings of a YAML parameter file.

:class:`Section` wraps one mapping with its key path, so that every wrong or unknown value
raises :class:`~digipath.errors.ConfigError` naming where it is
(``training.learning.learning rate``) and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from digipath.data.config import key_path
from digipath.errors import ConfigError


class Section:
    """Typed reads from one mapping of a parameter file, with key paths in every error.

    Parameters
    ----------
    value
        The mapping (``None``: empty).
    key
        Its key path (``""`` for the top level), e.g. ``"training.learning"``.
    source
        The file, named in errors.
    known
        The keys the mapping may hold; any other is an error listing them.
    """

    def __init__(self, value: Any, key: str, source: str | None, known: tuple[str, ...]) -> None:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {value!r}", source)
        unknown = [str(name) for name in value if name not in known]
        if unknown:
            raise ConfigError(
                key_path(key, unknown[0]),
                f"unknown key; valid keys are: {', '.join(known)}",
                source,
            )
        self.value, self.key, self.source = value, key, source

    def path(self, name: str) -> str:
        return key_path(self.key, name)

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.path(name), reason, self.source)

    def section(self, name: str, known: tuple[str, ...]) -> Section:
        return Section(self.value.get(name), self.path(name), self.source, known)

    def get(self, name: str, default: Any = None) -> Any:
        return self.value.get(name, default)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.value.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {value!r}")
        return value

    def number(self, name: str, default: float | None, *, low: float = 0.0, open_low=False):
        value = self.value.get(name, default)
        if value is None:
            raise self.error(name, "is required")
        valid = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not valid or not math.isfinite(value) or value < low or (open_low and value == low):
            relation = ">" if open_low else ">="
            raise self.error(name, f"expected a finite number {relation} {low:g}, got {value!r}")
        return float(value)

    def ratios(self, name: str, key_type: type, default: Mapping | None = None) -> dict:
        value = self.value.get(name, default)
        if not isinstance(value, Mapping) or not value:
            raise self.error(name, f"expected a non-empty mapping of ratios, got {value!r}")
        result = {}
        for item, ratio in value.items():
            where = key_path(self.path(name), str(item))
            if key_type is int and (not isinstance(item, int) or isinstance(item, bool)):
                raise ConfigError(
                    where, f"expected an integer mask value, got {item!r}", self.source
                )
            valid = isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
            if not valid or not math.isfinite(ratio) or ratio < 0:
                raise ConfigError(where, f"expected a ratio >= 0, got {ratio!r}", self.source)
            result[item] = float(ratio)
        if sum(result.values()) <= 0:
            raise self.error(name, "the ratios are all zero")
        return result
