"""Batch normalisers: uint8 patches to the float32 values a network is trained on.

A normaliser is applied when a batch is handed out. It takes patches of any shape and layout
(typically ``(N, rows, cols, channels)`` uint8, values 0-255) and returns a new float32 array of
the same shape; every normaliser is elementwise, so the axis order does not matter. The input is
never modified.

=================  =========================  ================================================
config ``type``    class                      value
=================  =========================  ================================================
``rgb_to_0-1``     :class:`RgbToZeroOne`      ``x / 255``
``rgb``            :class:`RgbRange`          ``x * (b - a) / 255 + a``
``general``        :class:`GeneralRange`      ``(x - s0) / (s1 - s0) * (t1 - t0) + t0``
``pass-through``   :class:`PassThrough`       ``x`` (as float32)
=================  =========================  ================================================

:func:`normalizer_from_config` builds one from the DigitalPathology ``normalization`` section
of an experiment configuration.

Notes
-----
Arithmetic is done in float32 on the result array (the conversion from the input type is fused
with the first operation), so no float64 copy of a batch is ever made; results carry float32
rounding (a relative error of about 1e-7).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from digipath.data.parameterized import Parameterized
from digipath.errors import ConfigError, NormalizationError

__all__ = [
    "NORMALIZERS",
    "GeneralRange",
    "Normalizer",
    "PassThrough",
    "RgbRange",
    "RgbToZeroOne",
    "normalizer_from_config",
]


@runtime_checkable
class Normalizer(Protocol):
    """Anything that maps a batch of patches to a new float32 array of the same shape."""

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Normalise ``patches`` (any shape, real values) into a new float32 array."""
        ...


# --------------------------------------------------------------------------------------------
# Helpers


def _range_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a ``(min, max)`` range, or ``None`` when it is valid."""
    expected = "expected two finite numbers [min, max] with min < max"
    if isinstance(value, str | bytes | Mapping):
        return f"{expected}, got {value!r}"
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        return f"{expected}, got {value!r}"
    if len(items) != 2:
        return f"{expected}, got {len(items)} values: {value!r}"
    for item in items:
        if isinstance(item, bool | np.bool_) or not isinstance(item, int | float | np.number):
            return f"{expected}, got {value!r} ({item!r} is not a number)"
        if isinstance(item, complex | np.complexfloating) or not math.isfinite(float(item)):
            return f"{expected}, got {value!r} ({item!r} is not a finite real number)"
    low, high = float(items[0]), float(items[1])
    if not low < high:
        return f"{expected}, got {value!r} (min {low:g} is not below max {high:g})"
    return None


def _as_range(name: str, value: object) -> tuple[float, float]:
    """``value`` as a ``(min, max)`` float pair, or :class:`NormalizationError` naming ``name``."""
    problem = _range_problem(value)
    if problem is not None:
        raise NormalizationError(f"{name}: {problem}")
    low, high = value  # type: ignore[misc]
    return float(low), float(high)


def _check_patches(patches: np.ndarray, normalizer: object) -> np.ndarray:
    """``patches`` as an array of real numbers (integers or floats), else an error."""
    array = np.asarray(patches)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):
        raise NormalizationError(
            f"{normalizer!r}: patches must hold integers or floats (uint8 RGB as a rule), got "
            f"an array of dtype {array.dtype}"
        )
    return array


def _scale_offset(patches: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """``patches * scale + offset`` as a new float32 array, in two float32 passes."""
    out = np.empty(patches.shape, dtype=np.float32)
    np.multiply(patches, np.float32(scale), out=out, casting="same_kind")
    if offset != 0.0:
        np.add(out, np.float32(offset), out=out)
    return out


# --------------------------------------------------------------------------------------------
# Normalisers


class RgbToZeroOne(Parameterized):
    """Map 0-255 to 0-1: ``x / 255`` (config type ``rgb_to_0-1``).

    Examples
    --------
    >>> RgbToZeroOne()(np.array([0, 51, 255], dtype=np.uint8))
    array([0. , 0.2, 1. ], dtype=float32)
    """

    type = "rgb_to_0-1"

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Normalise a batch.

        Parameters
        ----------
        patches : numpy.ndarray
            Patches of any shape, e.g. ``(N, rows, cols, channels)`` uint8 (values 0-255).

        Returns
        -------
        numpy.ndarray
            A new float32 array of the same shape, ``patches / 255``.
        """
        array = _check_patches(patches, self)
        out = np.empty(array.shape, dtype=np.float32)
        np.divide(array, np.float32(255.0), out=out, casting="same_kind")
        return out


class RgbRange(Parameterized):
    """Map 0-255 linearly onto ``target_range``: ``x * (b - a) / 255 + a`` (config type ``rgb``).

    Parameters
    ----------
    target_range : tuple of float
        ``(a, b)``, the values 0 and 255 map to; finite, ``a < b``.

    Raises
    ------
    NormalizationError
        ``target_range`` is not two finite numbers with min < max.

    Examples
    --------
    >>> RgbRange((-1, 1))(np.array([0, 255], dtype=np.uint8))
    array([-1.,  1.], dtype=float32)
    """

    type = "rgb"

    def __init__(self, target_range: tuple[float, float]) -> None:
        self.target_range = _as_range("target_range", target_range)
        low, high = self.target_range
        self._scale = (high - low) / 255.0
        self._offset = low

    def _parameters(self) -> dict[str, object]:
        return {"target_range": self.target_range}

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Normalise a batch.

        Parameters
        ----------
        patches : numpy.ndarray
            Patches of any shape, e.g. ``(N, rows, cols, channels)`` uint8 (values 0-255).

        Returns
        -------
        numpy.ndarray
            A new float32 array of the same shape, ``patches * (b - a) / 255 + a``.
        """
        return _scale_offset(_check_patches(patches, self), self._scale, self._offset)


class GeneralRange(Parameterized):
    """Map ``source_range`` linearly onto ``target_range`` (config type ``general``).

    ``(x - s0) / (s1 - s0) * (t1 - t0) + t0``.

    Parameters
    ----------
    source_range : tuple of float
        ``(s0, s1)``, the input values that map to ``t0`` and ``t1``; finite, ``s0 < s1``.
    target_range : tuple of float
        ``(t0, t1)``; finite, ``t0 < t1``.

    Raises
    ------
    NormalizationError
        A range is not two finite numbers with min < max.

    Notes
    -----
    The DigitalPathology library's general normaliser divided by ``(t1 - t0)`` instead of
    multiplying by it, so it only gave the documented result for target ranges of width 1; this
    implementation uses the correct formula (source [0, 255] onto [-1, 1] maps 0 to -1, 127.5 to
    0 and 255 to 1).

    Values outside the source range are not clipped: they are mapped by the same linear function
    and land outside the target range.
    """

    type = "general"

    def __init__(
        self, source_range: tuple[float, float], target_range: tuple[float, float]
    ) -> None:
        self.source_range = _as_range("source_range", source_range)
        self.target_range = _as_range("target_range", target_range)
        (s0, s1), (t0, t1) = self.source_range, self.target_range
        self._scale = (t1 - t0) / (s1 - s0)
        self._offset = t0 - s0 * self._scale

    def _parameters(self) -> dict[str, object]:
        return {"source_range": self.source_range, "target_range": self.target_range}

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Normalise a batch.

        Parameters
        ----------
        patches : numpy.ndarray
            Patches of any shape and real dtype (values in the source range as a rule).

        Returns
        -------
        numpy.ndarray
            A new float32 array of the same shape, ``(x - s0) / (s1 - s0) * (t1 - t0) + t0``.
        """
        return _scale_offset(_check_patches(patches, self), self._scale, self._offset)


class PassThrough(Parameterized):
    """Keep the values, as float32 (config type ``pass-through``)."""

    type = "pass-through"

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Return ``patches`` as a new float32 array of the same shape and values."""
        return np.array(_check_patches(patches, self), dtype=np.float32, copy=True)


NORMALIZERS: dict[str, type[Parameterized]] = {
    cls.type: cls for cls in (RgbToZeroOne, RgbRange, GeneralRange, PassThrough)
}
"""``{config type: normaliser class}``."""

# --------------------------------------------------------------------------------------------
# Configuration

_KEYS = ("enabled", "type", "target range", "source range")
_REQUIRED_RANGES = {
    "rgb_to_0-1": (),
    "rgb": ("target range",),
    "general": ("source range", "target range"),
    "pass-through": (),
}


def normalizer_from_config(
    config: Mapping[str, object] | None,
    key: str = "data.normalization",
    source: str | os.PathLike[str] | None = None,
) -> Normalizer | None:
    """Build the normaliser of a DigitalPathology ``normalization`` configuration section.

    Parameters
    ----------
    config : Mapping or None
        The section: ``enabled`` (bool, default true), ``type`` (required when enabled:
        ``rgb_to_0-1``, ``rgb``, ``general`` or ``pass-through``), ``target range`` (``[a, b]``,
        required by ``rgb`` and ``general``) and ``source range`` (``[s0, s1]``, required by
        ``general``). A range a type does not use is ignored, so configurations that list both
        ranges for every type are accepted as they are.
    key : str
        The key path of the section, used in error messages.
    source : str or os.PathLike, optional
        The file the configuration came from, used in error messages.

    Returns
    -------
    Normalizer or None
        The normaliser; ``None`` when ``config`` is ``None`` or ``enabled`` is false (the uint8
        patches then reach the model as they are).

    Raises
    ------
    ConfigError
        The section is not a mapping, has an unknown key, an unknown or missing type, a
        non-boolean ``enabled``, or a missing or invalid range; ``key`` of the error is the full
        key path of the offending entry (e.g. ``data.normalization.target range``).
    """
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise ConfigError(
            key,
            f"expected a mapping with keys {', '.join(map(repr, _KEYS))}, got {config!r}",
            source,
        )
    for name in config:
        if name not in _KEYS:
            raise ConfigError(
                f"{key}.{name}",
                f"unknown key; valid keys are {', '.join(map(repr, _KEYS))}",
                source,
            )
    enabled = config.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{key}.enabled", f"expected true or false, got {enabled!r}", source)
    if not enabled:
        return None
    types = ", ".join(map(repr, NORMALIZERS))
    if "type" not in config:
        raise ConfigError(f"{key}.type", f"missing; valid types are {types}", source)
    kind = config["type"]
    if not isinstance(kind, str) or kind not in NORMALIZERS:
        raise ConfigError(
            f"{key}.type", f"unknown normalization type {kind!r}; valid types are {types}", source
        )
    ranges: dict[str, tuple[float, float]] = {}
    for name in _REQUIRED_RANGES[kind]:
        if config.get(name) is None:
            raise ConfigError(
                f"{key}.{name}",
                f"missing; normalization type {kind!r} needs {name!r} as [min, max]",
                source,
            )
        problem = _range_problem(config[name])
        if problem is not None:
            raise ConfigError(f"{key}.{name}", problem, source)
        low, high = config[name]  # type: ignore[misc]
        ranges[name] = (float(low), float(high))
    if kind == "rgb":
        return RgbRange(target_range=ranges["target range"])
    if kind == "general":
        return GeneralRange(
            source_range=ranges["source range"], target_range=ranges["target range"]
        )
    return NORMALIZERS[kind]()
