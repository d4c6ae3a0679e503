"""The cascade's decision operator, shared by threshold tuning and deployment.

RADHicaL (reference ``seeds-deephealth-radhical.md`` §5.2-5.3) classifies each pixel of a
level into three classes: 0 "all negative", 1 "mixed, needs the finer level", 2 "all
positive". Going from a coarse level to the next finer one:

1. the coarse level's probability map ``(rows, cols, 3)`` is **resized bilinearly** to the finer
   level's shape (:func:`resize_rows`; half-pixel centres, edges replicated, as
   ``cv2.resize(..., INTER_LINEAR)``), so that upsampling acts on probabilities, before any
   threshold;
2. per finer pixel, with ``P`` the resized probabilities: **forced** (accepted as positive
   without compute) when ``P2 >= upper``; **compute** when ``P1 + P2 >= lower`` and not
   forced; **negative** otherwise (:func:`decide`). ``upper`` tests the all-positive class
   alone and ``lower`` the sum of the other two: ``lower > upper`` is meaningful, not a swap;
3. the finer level's output (:func:`level_output`) is the network's probabilities at computed
   pixels, ``(0, 0, 1)`` at forced pixels (so forcing propagates to the levels below) and
   ``(1, 0, 0)`` elsewhere;
4. at the finest level (two classes) the final mask is ``P(positive) >= threshold`` at computed
   pixels, or forced (:func:`final_mask`).

Both the threshold search (:mod:`digipath.radhical.tune`) and the cascade
(:mod:`digipath.radhical.cascade`) call these functions, so thresholds are tuned on exactly the
operator that is deployed (the original tuned on thresholded-then-resized masks and deployed
resize-then-threshold, with ``>`` in one and ``>=`` in the other).

Probability maps are float32 in ``[0, 1]`` or uint8 ``0-255`` (divided by 255), ``(rows, cols,
classes)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

NEGATIVE, COMPUTE, FORCED = 0, 1, 2
"""Decision values."""

__all__ = [
    "COMPUTE",
    "FORCED",
    "NEGATIVE",
    "Thresholds",
    "as_probabilities",
    "decide",
    "final_mask",
    "level_output",
    "resize_probabilities",
    "resize_rows",
    "source_rows",
]


def as_probabilities(values: np.ndarray) -> np.ndarray:
    """float32 probabilities of a uint8 (0-255) or float map."""
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values.astype(np.float32) * np.float32(1 / 255)
    return values.astype(np.float32, copy=False)


def _coordinates(start: int, stop: int, source: int, target: int) -> np.ndarray:
    """Source coordinates of target pixels ``start..stop-1`` (half-pixel centres, clamped)."""
    scale = source / target
    return np.clip((np.arange(start, stop, dtype=np.float64) + 0.5) * scale - 0.5, 0, source - 1)


def source_rows(start: int, stop: int, source: int, target: int) -> tuple[int, int]:
    """The source rows ``[top, bottom)`` that target rows ``[start, stop)`` interpolate from."""
    if stop <= start:
        return 0, 0
    y = _coordinates(start, stop, source, target)
    return int(np.floor(y[0])), min(source, int(np.floor(y[-1])) + 2)


def resize_rows(
    read: Callable[[int, int], np.ndarray],
    source_shape: tuple[int, int],
    target_shape: tuple[int, int],
    start: int,
    stop: int,
) -> np.ndarray:
    """Rows ``[start, stop)`` of a map bilinearly resized from ``source_shape`` to ``target_shape``.

    Parameters
    ----------
    read
        ``read(top, height)`` returns source rows ``[top, top + height)``, all columns, as
        ``(height, cols, channels)``.
    source_shape, target_shape
        ``(rows, cols)`` in pixels.
    start, stop
        Target rows.

    Returns
    -------
    numpy.ndarray
        float32 ``(stop - start, target cols, channels)`` probabilities.
    """
    top, bottom = source_rows(start, stop, source_shape[0], target_shape[0])
    source = as_probabilities(read(top, bottom - top))
    if source.ndim == 2:
        source = source[:, :, None]
    rows = _coordinates(start, stop, source_shape[0], target_shape[0]) - top
    cols = _coordinates(0, target_shape[1], source_shape[1], target_shape[1])
    map_y = np.repeat(rows.astype(np.float32)[:, None], target_shape[1], axis=1)
    map_x = np.repeat(cols.astype(np.float32)[None, :], stop - start, axis=0)
    planes = [
        cv2.remap(
            np.ascontiguousarray(source[:, :, k]),
            map_x,
            map_y,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        for k in range(source.shape[2])
    ]
    return np.stack(planes, axis=-1)


def resize_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A whole map bilinearly resized to ``shape`` (the same operator as :func:`resize_rows`)."""
    probabilities = np.asarray(probabilities)
    return resize_rows(
        lambda top, height: probabilities[top : top + height], probabilities.shape[:2], shape,
        0, shape[0],
    )  # fmt: skip


def decide(previous: np.ndarray, upper: float, lower: float) -> np.ndarray:
    """uint8 decisions (``NEGATIVE``, ``COMPUTE``, ``FORCED``) from resized probabilities.

    ``previous`` is the coarser level's ``(rows, cols, 3)`` map at this level's shape.
    """
    previous = as_probabilities(previous)
    forced = previous[..., 2] >= upper
    compute = (previous[..., 1] + previous[..., 2] >= lower) & ~forced
    decisions = np.zeros(previous.shape[:2], np.uint8)
    decisions[compute] = COMPUTE
    decisions[forced] = FORCED
    return decisions


def level_output(probabilities: np.ndarray, decisions: np.ndarray) -> np.ndarray:
    """A level's uint8 ``(rows, cols, 3)`` output: computed, ``(0, 0, 1)`` forced, else negative.

    ``probabilities`` (float or uint8, 3 classes) are used at computed pixels only.
    """
    values = np.asarray(probabilities)
    if values.dtype != np.uint8:
        values = np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
    output = np.zeros((*decisions.shape, 3), np.uint8)
    output[..., 0] = 255
    compute = decisions == COMPUTE
    output[compute] = values[compute][:, :3]
    output[decisions == FORCED] = (0, 0, 255)
    return output


def final_mask(probabilities: np.ndarray, decisions: np.ndarray, threshold: float) -> np.ndarray:
    """The cascade's bool result at the finest level.

    ``probabilities``: the finest network's ``(rows, cols, classes)`` map, class 1 the positive
    one (or ``(rows, cols)`` of P(positive)); positive where computed and ``>= threshold``, or
    forced.
    """
    values = as_probabilities(probabilities)
    positive = values[..., 1] if values.ndim == 3 else values
    return ((decisions == COMPUTE) & (positive >= threshold)) | (decisions == FORCED)


@dataclass(frozen=True)
class Thresholds:
    """The cascade's thresholds, levels ordered finest first.

    Attributes
    ----------
    spacings
        µm/px of every level, finest first (``spacings[0]`` is the finest).
    final
        P(positive) threshold of the finest level's computed pixels.
    upper, lower
        ``upper[i]``, ``lower[i]`` test the output of level ``i + 1`` (the one coarser than
        level ``i``) and decide level ``i``: forced when P2 >= upper, computed when
        P1 + P2 >= lower. ``upper > 1`` never forces; ``lower <= 0`` computes every pixel.
    """

    spacings: tuple[float, ...]
    final: float = 0.5
    upper: tuple[float, ...] = ()
    lower: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        levels = len(self.spacings)
        if levels < 1:
            raise ValueError("expected at least one level")
        if len(self.upper) != levels - 1 or len(self.lower) != levels - 1:
            raise ValueError(
                f"{levels} levels need {levels - 1} upper and lower thresholds, got "
                f"{len(self.upper)} and {len(self.lower)}"
            )
        if any(b <= a for a, b in zip(self.spacings, self.spacings[1:], strict=False)):
            raise ValueError(f"spacings must grow from the finest level, got {self.spacings}")

    @classmethod
    def compute_all(cls, spacings, final: float = 0.5) -> Thresholds:
        """Thresholds that compute every pixel at every level (the naive cascade)."""
        count = len(spacings) - 1
        return cls(tuple(float(s) for s in spacings), final, (2.0,) * count, (0.0,) * count)

    def to_dict(self) -> dict:
        """The YAML form: ``levels`` finest first, each with its spacing and thresholds."""
        levels = [{"spacing": self.spacings[0], "threshold": self.final}]
        for spacing, upper, lower in zip(self.spacings[1:], self.upper, self.lower, strict=True):
            levels.append({"spacing": spacing, "upper": upper, "lower": lower})
        return {"levels": levels}

    @classmethod
    def from_dict(cls, document, source: str | None = None) -> Thresholds:
        """Inverse of :meth:`to_dict`; a wrong entry raises ``ConfigError`` naming its key."""
        from digipath.errors import ConfigError

        levels = document.get("levels") if isinstance(document, dict) else None
        if not isinstance(levels, list) or not levels:
            raise ConfigError("levels", "expected a list of levels, finest first", source)
        spacings, upper, lower = [], [], []
        final = 0.5
        for index, level in enumerate(levels):
            where = f"levels.{index}"
            if not isinstance(level, dict):
                raise ConfigError(where, "expected a mapping with spacing and thresholds", source)
            keys = ("spacing", "threshold") if index == 0 else ("spacing", "upper", "lower")
            for key in keys:
                value = level.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"{where}.{key}", f"expected a number, got {value!r}", source)
            unknown = sorted(set(level) - set(keys))
            if unknown:
                raise ConfigError(f"{where}.{unknown[0]}", f"unknown key; valid: {keys}", source)
            spacings.append(float(level["spacing"]))
            if index == 0:
                final = float(level["threshold"])
            else:
                upper.append(float(level["upper"]))
                lower.append(float(level["lower"]))
        try:
            return cls(tuple(spacings), final, tuple(upper), tuple(lower))
        except ValueError as error:
            raise ConfigError("levels", str(error), source) from None

    def save(self, path) -> None:
        """Write the YAML form (atomically)."""
        import yaml

        from digipath.training.progress import write_atomic

        write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path) -> Thresholds:
        """Read a thresholds YAML file (errors name the file)."""
        import yaml

        from digipath.errors import ConfigError

        source = os.fspath(path)
        try:
            document = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError("", f"cannot read: {error.strerror}", source) from None
        except yaml.YAMLError as error:
            raise ConfigError("", f"not valid YAML: {error}", source) from None
        return cls.from_dict(document, source)
