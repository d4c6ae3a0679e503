"""Automated threshold search for the RADHicaL cascade on fully computed validation images.

The search follows the original's coordinate-wise procedure (reference
``seeds-deephealth-radhical.md`` §5.4), automated and finest first, on validation images whose
probability maps were computed at **every pixel of every level**:

1. the finest level's ``final`` threshold, with every coarser level computing everything;
2. for each coarser level in turn, starting with the one just coarser than the finest: its
   ``upper`` threshold (with its ``lower`` at 0), then its ``lower`` threshold. ``upper[i]`` and
   ``lower[i]`` test the output of level ``i + 1`` and decide level ``i``
   (:class:`~digipath.radhical.decisions.Thresholds`).

While a level's pair is searched, the levels coarser than it still compute everything, so its
output is the full map (computed once per step), and the levels finer than it use the values
already chosen. Every grid value is simulated with exactly the deployed operator
(:func:`simulate`: :func:`~digipath.radhical.decisions.resize_probabilities`,
:func:`~digipath.radhical.decisions.decide`, :func:`~digipath.radhical.decisions.level_output`,
:func:`~digipath.radhical.decisions.final_mask`), holes in the final mask are filled and the
mask is graded with :func:`~digipath.metrics.objects.nucleus_scores`. The figure of merit is
the mean over images of the per-image mean per-nucleus F-score.

**Cost model.** A level's cost is its computed pixels times a per-pixel weight ``cost_l``
(default 1: the same network at every level). The compute fraction of a set of images is
``sum over images and levels of computed_l * cost_l`` divided by ``sum over images of
finest pixels * cost_0``: the time relative to the naive method (every finest pixel, no coarse
level), which is 1.0. The cascade computing everything costs more than 1 (``1 + 1/4 + 1/16 +
...`` for levels at halving resolutions).

**Objectives.** ``"loss"``: at each step, the grid value with the least compute among those
whose F is at least the step's bound (ties: the higher F, then the earlier grid value), where
the bound is ``F_naive - max_fscore_loss * k / n`` at coarse step ``k`` of ``n`` (the default
``"even"`` schedule; ``"greedy"``: ``F_naive - max_fscore_loss`` at every step) and ``F_naive``
is the F of the best final threshold with everything computed.
The step's starting value (``upper`` never forcing, ``lower = 0``) reproduces the previous
step's choice, so it is always a candidate and every step stays feasible. ``"budget"``: the
highest F with a compute fraction at most ``compute_budget``; see :func:`tune`.

Loading files (:func:`load_validation_image`) is separate from the search (:func:`tune`), which
takes arrays (:class:`ValidationImage`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from digipath.errors import (
    DigipathError,
    MissingImageError,
    NotAnImageError,
    UnsupportedImageError,
)
from digipath.metrics.objects import NucleusScores, nucleus_scores
from digipath.radhical.decisions import (
    COMPUTE,
    FORCED,
    Thresholds,
    as_probabilities,
    decide,
    final_mask,
    level_output,
    resize_probabilities,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_GRID",
    "NEVER",
    "LevelCounts",
    "Simulation",
    "TuningCurve",
    "TuningError",
    "TuningResult",
    "ValidationImage",
    "compute_fraction",
    "load_validation_image",
    "read_map",
    "read_mask",
    "simulate",
    "threshold_grid",
    "tune",
]

NEVER = 2.0
"""The ``upper`` threshold that never forces (probabilities are at most 1)."""


def threshold_grid(points: int = 41, fine: int = 11) -> tuple[float, ...]:
    """``points`` values evenly on [0, 1], plus ``fine`` values on [0, 0.1].

    The coarse levels' "not negative" probabilities decide at small values (a pixel far from
    any nucleus scores near 0), so the grid is denser there.
    """
    values = np.concatenate([np.linspace(0, 1, points), np.linspace(0, 0.1, fine)])
    return tuple(float(v) for v in np.unique(np.round(values, 6)))


DEFAULT_GRID: tuple[float, ...] = threshold_grid(41)
"""The default grid: 0, 0.01, ..., 0.1 and 0, 0.025, ..., 1 (49 values). ``upper`` also tries
:data:`NEVER`."""

OBJECTIVES = ("loss", "budget")
_SHAPE_TOLERANCE = 0.25  # relative, as spacing matching (DESIGN.md), plus 2 px for rounding


class TuningError(DigipathError, ValueError):
    """Invalid input to the threshold search: the message names the image, level and value."""


# --------------------------------------------------------------------------------------------
# Inputs


def _check_probabilities(values: Any, where: str, channels: tuple[int, ...]) -> np.ndarray:
    """A probability map as uint8 or float32, checked for shape, channels, dtype and range."""
    array = np.asarray(values)
    if array.ndim == 2 and 1 in channels:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in channels or min(array.shape[:2]) < 1:
        expected = " or ".join(str(c) for c in channels)
        raise TuningError(
            f"{where}: expected a (rows, cols, {expected}) probability map, got shape {array.shape}"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise TuningError(
            f"{where}: expected uint8 (0-255) or float (0-1) values, got {array.dtype}"
        )
    array = array.astype(np.float32, copy=False)
    low, high = float(np.min(array)), float(np.max(array))
    if not (low >= -1e-6 and high <= 1 + 1e-6):  # also catches NaN
        raise TuningError(f"{where}: float probabilities must lie in [0, 1], got {low}..{high}")
    return array


def _check_maps(maps: Sequence[Any], where: str) -> tuple[np.ndarray, ...]:
    """Finest first: the finest ``(rows, cols, >= 2)``, the others ``(rows, cols, 3)``.

    Coarse maps are quantised to uint8 here, as :func:`level_output` does on every use, so the
    result is the same and later calls are cheaper.
    """
    if isinstance(maps, np.ndarray) or not isinstance(maps, Sequence) or len(maps) == 0:
        raise TuningError(f"{where}: expected a non-empty list of probability maps, finest first")
    checked = [_check_probabilities(maps[0], f"{where}, level 0 (finest) map", (1, 2, 3))]
    for index, values in enumerate(maps[1:], start=1):
        array = _check_probabilities(values, f"{where}, level {index} map", (3,))
        if array.dtype != np.uint8:
            array = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
        finer = checked[-1].shape[:2]
        if array.shape[0] > finer[0] or array.shape[1] > finer[1]:
            raise TuningError(
                f"{where}: level {index} map {array.shape[:2]} is larger than level "
                f"{index - 1} {finer}; maps must be ordered finest first"
            )
        checked.append(array)
    return tuple(checked)


def _check_spacings(maps: Sequence[np.ndarray], spacings: Sequence[float], where: str) -> None:
    """Each level's shape agrees with its spacing relative to the finest level."""
    if len(spacings) != len(maps):
        raise TuningError(
            f"{where}: {len(maps)} probability maps but {len(spacings)} level spacings "
            f"({tuple(spacings)}); give one map per level, finest first"
        )
    rows, cols = maps[0].shape[:2]
    for index in range(1, len(maps)):
        ratio = spacings[0] / spacings[index]
        for axis, (size, base) in enumerate(zip(maps[index].shape[:2], (rows, cols), strict=True)):
            expected = base * ratio
            if abs(size - expected) > _SHAPE_TOLERANCE * expected + 2:
                name = ("rows", "cols")[axis]
                raise TuningError(
                    f"{where}: level {index} map has {size} {name}, but spacing "
                    f"{spacings[index]} µm/px against {spacings[0]} µm/px at level 0 "
                    f"({base} {name}) expects about {expected:.0f}"
                )


def _check_mask(values: Any, where: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 3 and array.shape[2] >= 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise TuningError(f"{where}: expected a (rows, cols) mask, got shape {array.shape}")
    if shape is not None and array.shape != tuple(shape):
        raise TuningError(
            f"{where}: mask shape {array.shape} differs from the finest map's {tuple(shape)}"
        )
    return array > 0


def _check_tissue(values: Any, shape: tuple[int, int], where: str) -> np.ndarray:
    """A tissue mask (non-zero = tissue), resized nearest to the coarsest level's shape."""
    import cv2

    mask = _check_mask(values, f"{where}, tissue")
    if mask.shape != tuple(shape):
        resized = cv2.resize(
            mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST
        )
        mask = resized > 0
    return mask


@dataclass(frozen=True, eq=False)
class ValidationImage:
    """One validation image: fully computed maps of every level, the truth, a tissue mask.

    Parameters
    ----------
    maps
        Probability maps, finest first, every pixel computed: the finest ``(rows0, cols0, 2)``
        P(negative), P(nucleus) (a third channel is ignored), the others ``(rows_l, cols_l,
        3)`` P(negative), P(mixed), P(all-positive); uint8 0-255 or float 0-1.
    truth
        The annotated nucleus mask at the finest map's shape (non-zero = nucleus).
    tissue
        Optional tissue mask (non-zero = tissue), any shape: resized (nearest) to the coarsest
        level, whose compute it restricts.
    name
        Used in error messages and logs.
    """

    maps: tuple[np.ndarray, ...]
    truth: np.ndarray
    tissue: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        where = f"validation image {self.name!r}" if self.name else "validation image"
        maps = _check_maps(self.maps, where)
        object.__setattr__(self, "maps", maps)
        object.__setattr__(
            self, "truth", _check_mask(self.truth, f"{where}, truth", maps[0].shape[:2])
        )
        if self.tissue is not None:
            object.__setattr__(
                self, "tissue", _check_tissue(self.tissue, maps[-1].shape[:2], where)
            )

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """``(rows, cols)`` of every level, finest first."""
        return tuple(m.shape[:2] for m in self.maps)


def _validation_images(images: Sequence[Any]) -> list[ValidationImage]:
    if isinstance(images, ValidationImage):
        images = [images]
    result = []
    for index, image in enumerate(images):
        if isinstance(image, ValidationImage):
            result.append(image)
        elif isinstance(image, (tuple, list)) and len(image) in (2, 3):
            result.append(ValidationImage(tuple(image[0]), *image[1:], name=f"#{index}"))
        else:
            raise TuningError(
                f"validation image #{index}: expected a ValidationImage or (maps, truth[, "
                f"tissue]), got {type(image).__name__}"
            )
    if not result:
        raise TuningError("no validation images given")
    return result


# --------------------------------------------------------------------------------------------
# Loading


def _read_tiff(path: str, spacing: float | None) -> np.ndarray:
    from digipath.io import ImageReader

    with ImageReader(path) as reader:
        if spacing is not None:
            return reader.content(spacing)
        if reader.spacings[0] is not None:
            return reader.content(reader.spacings[0])
    with ImageReader(path, spacing=1.0) as reader:  # no spacing stated: level 0 as it is
        return reader.content(1.0)


def _read_file(path: str | os.PathLike[str], spacing: float | None) -> np.ndarray:
    import cv2

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingImageError(path)
    if Path(path).suffix.lower() in (".tif", ".tiff", ".svs"):
        return _read_tiff(path, spacing)
    data = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if data is None:
        raise NotAnImageError(path, "not an image OpenCV can read (PNG, TIFF, BMP ...)")
    if data.ndim == 3 and data.shape[2] == 3:
        data = cv2.cvtColor(data, cv2.COLOR_BGR2RGB)
    elif data.ndim == 3 and data.shape[2] == 4:
        data = cv2.cvtColor(data, cv2.COLOR_BGRA2RGBA)
    return data


def read_map(path: str | os.PathLike[str], spacing: float | None = None) -> np.ndarray:
    """Read a probability map written by the cascade (uint8 soft map), ``(rows, cols, channels)``.

    Parameters
    ----------
    path
        A (pyramidal) TIFF, read with :class:`~digipath.io.ImageReader`, or a PNG (RGB order;
        an alpha channel is dropped).
    spacing
        µm/px to read a TIFF at; default its level 0.

    Raises
    ------
    MissingImageError, NotAnImageError, UnsupportedImageError
        The file is missing, unreadable or not 8-bit.
    """
    data = _read_file(path, spacing)
    if data.dtype != np.uint8:
        raise UnsupportedImageError(
            os.fspath(path), f"expected an 8-bit probability map (0-255), got {data.dtype}"
        )
    if data.ndim == 2:
        data = data[:, :, None]
    if data.shape[2] == 4:
        data = data[:, :, :3]
    return np.ascontiguousarray(data)


def read_mask(path: str | os.PathLike[str], spacing: float | None = None) -> np.ndarray:
    """Read a binary mask (non-zero = positive; the first channel of a colour image) as bool."""
    data = _read_file(path, spacing)
    if data.ndim == 3:
        data = data[:, :, 0]
    return data > 0


def load_validation_image(
    map_paths: Sequence[str | os.PathLike[str]],
    truth_path: str | os.PathLike[str],
    tissue_path: str | os.PathLike[str] | None = None,
    *,
    spacings: Sequence[float] | None = None,
    name: str | None = None,
) -> ValidationImage:
    """Load one validation image from files.

    Parameters
    ----------
    map_paths
        The fully computed probability map of every level, finest first (TIFF or PNG).
    truth_path
        The nucleus mask at the finest map's shape.
    tissue_path
        Optional tissue mask (non-zero = tissue; any shape, resized to the coarsest level).
    spacings
        µm/px of every level, finest first: TIFF maps are read at their level's spacing and the
        truth at the finest one. Default: each file's level 0.
    name
        Default: the finest map's file name.

    Raises
    ------
    TuningError
        The maps or masks have inconsistent shapes (the message names the file).
    """
    if spacings is not None and len(spacings) != len(map_paths):
        raise TuningError(
            f"{len(map_paths)} map files ({', '.join(map(os.fspath, map_paths))}) but "
            f"{len(spacings)} spacings {tuple(spacings)}"
        )
    maps = []
    for index, path in enumerate(map_paths):
        data = read_map(path, None if spacings is None else spacings[index])
        channels = (1, 2, 3) if index == 0 else (3,)
        if data.shape[2] not in channels:
            raise TuningError(
                f"{os.fspath(path)}: level {index} map has {data.shape[2]} channels, expected "
                f"{' or '.join(map(str, channels))}"
            )
        maps.append(data)
    truth = read_mask(truth_path, None if spacings is None else spacings[0])
    if truth.shape != maps[0].shape[:2]:
        raise TuningError(
            f"{os.fspath(truth_path)}: truth mask {truth.shape} differs from the finest map "
            f"{os.fspath(map_paths[0])} {maps[0].shape[:2]}"
        )
    tissue = None if tissue_path is None else read_mask(tissue_path)
    image = ValidationImage(tuple(maps), truth, tissue, name or Path(os.fspath(map_paths[0])).name)
    if spacings is not None:
        _check_spacings(image.maps, spacings, f"validation image {image.name!r}")
    return image


# --------------------------------------------------------------------------------------------
# Simulation


@dataclass(frozen=True)
class LevelCounts:
    """Pixels of one level: computed by its network, forced positive, and in total."""

    computed: int
    forced: int
    total: int


@dataclass(frozen=True, eq=False)
class Simulation:
    """The cascade's result on one image: the final mask and per-level counts (finest first)."""

    mask: np.ndarray
    levels: tuple[LevelCounts, ...]

    def compute_fraction(self, costs: Sequence[float] | None = None) -> float:
        """Compute relative to the naive method (see :func:`compute_fraction`)."""
        return compute_fraction([self.levels], costs)


def _costs(costs: Sequence[float] | None, levels: int) -> np.ndarray:
    if costs is None:
        return np.ones(levels)
    values = np.asarray(costs, dtype=np.float64)
    if values.shape != (levels,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise TuningError(
            f"costs: expected {levels} positive per-pixel cost weights (one per level, finest "
            f"first), got {tuple(costs)}"
        )
    return values


def compute_fraction(
    counts: Sequence[Sequence[LevelCounts]], costs: Sequence[float] | None = None
) -> float:
    """The compute of a set of images relative to the naive method.

    ``sum over images and levels of computed_l * cost_l`` over ``sum over images of
    finest pixels * cost_0``; ``counts`` holds one per-level sequence (finest first) per image,
    ``costs`` the per-pixel weight of each level (default 1).
    """
    if not counts:
        raise TuningError("compute_fraction: no images")
    weights = _costs(costs, len(counts[0]))
    numerator = sum(
        float(level.computed) * w
        for image in counts
        for level, w in zip(image, weights, strict=True)
    )
    denominator = sum(float(image[0].total) * weights[0] for image in counts)
    return numerator / denominator


def _finish(
    maps: Sequence[np.ndarray],
    thresholds: Thresholds,
    level: int,
    decisions: np.ndarray,
    counts: list[tuple[int, int]],
) -> np.ndarray:
    """From ``level``'s decisions down to the finest level's (unfilled) mask; fills ``counts``."""
    while True:
        counts[level] = (
            int(np.count_nonzero(decisions == COMPUTE)),
            int(np.count_nonzero(decisions == FORCED)),
        )
        if level == 0:
            return final_mask(maps[0], decisions, thresholds.final)
        output = level_output(maps[level], decisions)
        level -= 1
        previous = resize_probabilities(output, maps[level].shape[:2])
        decisions = decide(previous, thresholds.upper[level], thresholds.lower[level])


def _coarsest_decisions(shape: tuple[int, int], tissue: np.ndarray | None) -> np.ndarray:
    if tissue is None:
        return np.full(shape, COMPUTE, np.uint8)
    return np.where(tissue, COMPUTE, 0).astype(np.uint8)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled: background not 4-connected to the image border.

    The same result as :func:`scipy.ndimage.binary_fill_holes` (and MATLAB's ``imfill(mask,
    'holes')``, which the reference grades with), by labelling the background once instead of
    dilating it iteratively: several times faster on large masks.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise TuningError(f"expected a (rows, cols) mask, got shape {mask.shape}")
    background, count = ndimage.label(~mask)
    if count == 0:
        return mask.copy()
    border = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.zeros(count + 1, bool)
    outside[border] = True
    outside[0] = False  # label 0: the mask itself
    return ~outside[background]


def _fill(mask: np.ndarray, fill: bool) -> np.ndarray:
    return _fill_holes(mask) if fill else mask


def simulate(
    maps: Sequence[np.ndarray],
    thresholds: Thresholds,
    tissue: np.ndarray | None = None,
    *,
    fill_holes: bool = True,
) -> Simulation:
    """Run the cascade's decisions on fully computed maps.

    The coarsest level computes every pixel (every tissue pixel with ``tissue``); each finer
    level resizes the previous level's :func:`~digipath.radhical.decisions.level_output` to its
    shape (:func:`~digipath.radhical.decisions.resize_probabilities`), decides
    (:func:`~digipath.radhical.decisions.decide`) and takes the full map's values at the
    computed pixels; the finest level ends in
    :func:`~digipath.radhical.decisions.final_mask`. This is the deployed operator: the
    computed pixels of a real run get the same values as in the full maps.

    Parameters
    ----------
    maps
        Fully computed probability maps, finest first (see :class:`ValidationImage`).
    thresholds
        One level per map (``thresholds.spacings`` are checked against the maps' shapes).
    tissue
        Optional tissue mask, any shape (non-zero = tissue).
    fill_holes
        Fill holes in the final mask, as the reference grades it.

    Returns
    -------
    Simulation
        The bool final mask at the finest shape and each level's computed, forced and total
        pixel counts, finest first.

    Raises
    ------
    TuningError
        The maps are inconsistent with each other or with the thresholds' levels.
    """
    checked = _check_maps(maps, "simulate")
    _check_spacings(checked, thresholds.spacings, "simulate")
    coarsest = len(checked) - 1
    shape = checked[coarsest].shape[:2]
    mask_tissue = None if tissue is None else _check_tissue(tissue, shape, "simulate")
    counts: list[tuple[int, int]] = [(0, 0)] * len(checked)
    mask = _finish(checked, thresholds, coarsest, _coarsest_decisions(shape, mask_tissue), counts)
    levels = tuple(
        LevelCounts(computed, forced, int(m.shape[0] * m.shape[1]))
        for (computed, forced), m in zip(counts, checked, strict=True)
    )
    return Simulation(_fill(mask, fill_holes), levels)


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class TuningCurve:
    """The evaluations of one coordinate step.

    Attributes
    ----------
    step
        0-based position in the search (0 is the final threshold).
    parameter
        ``"final"``, ``"upper"`` or ``"lower"``.
    level
        The level whose output the threshold tests (0 for ``final``; ``upper``/``lower`` of
        level ``k`` are ``Thresholds.upper[k - 1]``/``lower[k - 1]`` and decide level ``k - 1``).
    values
        The grid values tried (:data:`NEVER` for "never force").
    f_score, tpr, ppv, detection_rate, compute_fraction
        Per value: the mean over images of the per-image means, and the compute fraction.
    level_fractions
        Per value: each level's computed fraction (computed / total pixels), finest first.
    chosen
        Index of the value kept.
    bound
        The F lower bound the choice respected (``F_naive - allowed loss``).
    """

    step: int
    parameter: str
    level: int
    values: tuple[float, ...]
    f_score: tuple[float, ...]
    tpr: tuple[float, ...]
    ppv: tuple[float, ...]
    detection_rate: tuple[float, ...]
    compute_fraction: tuple[float, ...]
    level_fractions: tuple[tuple[float, ...], ...]
    chosen: int
    bound: float

    @property
    def name(self) -> str:
        """``"final"`` or e.g. ``"level 2 upper"``."""
        return "final" if self.parameter == "final" else f"level {self.level} {self.parameter}"

    @property
    def value(self) -> float:
        """The value kept."""
        return self.values[self.chosen]


@dataclass(frozen=True)
class TuningResult:
    """The thresholds found, their scores on the validation images and every step's curve.

    Attributes
    ----------
    thresholds
        The cascade's thresholds (:meth:`Thresholds.save` writes them for deployment).
    f_score, tpr, ppv, detection_rate
        Mean over images of the per-image mean per-nucleus scores with these thresholds.
    compute_fraction
        Compute relative to the naive method (1.0); ``1 / compute_fraction`` is the speed-up.
    level_fractions
        Each level's computed fraction (computed / total pixels), finest first.
    naive_f_score, naive_tpr, naive_ppv, naive_detection_rate
        The same scores with every pixel computed and the best final threshold.
    everything_fraction
        The compute fraction of the cascade computing every pixel of every level.
    curves
        Every step of the search that produced ``thresholds``, in order.
    objective, max_fscore_loss, compute_budget, costs, images
        The search's settings; ``max_fscore_loss`` is the loss the chosen search allowed
        (for ``"budget"``, the one found).
    """

    thresholds: Thresholds
    f_score: float
    tpr: float
    ppv: float
    detection_rate: float
    compute_fraction: float
    level_fractions: tuple[float, ...]
    naive_f_score: float
    naive_tpr: float
    naive_ppv: float
    naive_detection_rate: float
    everything_fraction: float
    curves: tuple[TuningCurve, ...]
    objective: str = "loss"
    max_fscore_loss: float = 0.02
    compute_budget: float | None = None
    costs: tuple[float, ...] = ()
    images: int = 0

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: thresholds, scores, compute and settings."""

        def number(value: float | None) -> float | None:
            return None if value is None or not math.isfinite(value) else float(value)

        return {
            "thresholds": self.thresholds.to_dict(),
            "scores": {
                "f score": number(self.f_score),
                "tpr": number(self.tpr),
                "ppv": number(self.ppv),
                "detection rate": number(self.detection_rate),
            },
            "naive scores": {
                "f score": number(self.naive_f_score),
                "tpr": number(self.naive_tpr),
                "ppv": number(self.naive_ppv),
                "detection rate": number(self.naive_detection_rate),
            },
            "f score loss": number(self.naive_f_score - self.f_score),
            "compute fraction": number(self.compute_fraction),
            "speed-up": number(1 / self.compute_fraction) if self.compute_fraction > 0 else None,
            "level computed fractions": [number(v) for v in self.level_fractions],
            "everything computed fraction": number(self.everything_fraction),
            "objective": self.objective,
            "max f score loss": number(self.max_fscore_loss),
            "compute budget": number(self.compute_budget),
            "costs": list(self.costs),
            "images": self.images,
            "steps": [
                {
                    "step": c.step,
                    "name": c.name,
                    "value": c.value,
                    "f score": number(c.f_score[c.chosen]),
                    "compute fraction": number(c.compute_fraction[c.chosen]),
                }
                for c in self.curves
            ],
        }

    def curve_rows(self) -> list[dict[str, Any]]:
        """One row per step and grid value (the CSV's rows)."""
        rows = []
        for curve in self.curves:
            for index, value in enumerate(curve.values):
                row = {
                    "step": curve.step,
                    "parameter": curve.parameter,
                    "level": curve.level,
                    "value": value,
                    "never": value > 1 if curve.parameter == "upper" else False,
                    "f score": curve.f_score[index],
                    "tpr": curve.tpr[index],
                    "ppv": curve.ppv[index],
                    "detection rate": curve.detection_rate[index],
                    "compute fraction": curve.compute_fraction[index],
                }
                for level, fraction in enumerate(curve.level_fractions[index]):
                    row[f"level {level} computed"] = fraction
                row["feasible"] = curve.f_score[index] >= curve.bound - 1e-12
                row["chosen"] = index == curve.chosen
                rows.append(row)
        return rows

    def save(self, folder: str | os.PathLike[str], *, plot: bool = True) -> dict[str, Path]:
        """Write ``thresholds.yaml``, ``curves.csv``, ``summary.json`` (and ``tuning.png``).

        Every file is written under a temporary name and renamed. Returns the paths by kind.
        """
        from digipath.training.progress import write_json, write_rows

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "thresholds": folder / "thresholds.yaml",
            "curves": folder / "curves.csv",
            "summary": folder / "summary.json",
        }
        self.thresholds.save(paths["thresholds"])
        write_rows(paths["curves"], self.curve_rows())
        write_json(paths["summary"], self.summary())
        if plot:
            paths["plot"] = folder / "tuning.png"
            self.plot(paths["plot"])
        return paths

    def plot(self, path: str | os.PathLike[str]) -> None:
        """A PNG per step: F against compute fraction, and both against the threshold."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        from digipath.training.progress import write_atomic

        steps = len(self.curves)
        figure, axes = plt.subplots(steps, 2, figsize=(11, 3.2 * steps), dpi=90, squeeze=False)
        for row, curve in enumerate(self.curves):
            left, right = axes[row]
            f = np.asarray(curve.f_score, dtype=float)
            compute = np.asarray(curve.compute_fraction, dtype=float)
            x = np.asarray([min(v, 1.1) for v in curve.values], dtype=float)
            order = np.argsort(compute, kind="stable")
            left.plot(compute[order], f[order], "-o", markersize=3, color="tab:blue")
            left.plot(compute[curve.chosen], f[curve.chosen], "*", markersize=14, color="tab:red")
            left.axhline(curve.bound, linestyle="--", color="grey", linewidth=1)
            left.axhline(self.naive_f_score, linestyle=":", color="black", linewidth=1)
            if self.compute_budget is not None:
                left.axvline(self.compute_budget, linestyle="--", color="tab:orange", linewidth=1)
            left.set_xlabel("compute fraction (naive = 1)")
            left.set_ylabel("mean per-nucleus F")
            left.set_title(f"{curve.name}: F against compute")
            left.grid(alpha=0.3)
            right.plot(x, f, "-o", markersize=3, color="tab:blue", label="F")
            right.axvline(x[curve.chosen], color="tab:red", linewidth=1)
            right.set_xlabel(f"{curve.name} threshold" + (" (1.1 = never)" if x.max() > 1 else ""))
            right.set_ylabel("mean per-nucleus F", color="tab:blue")
            twin = right.twinx()
            twin.plot(x, compute, "-s", markersize=3, color="tab:green", label="compute")
            twin.set_ylabel("compute fraction", color="tab:green")
            right.set_title(f"{curve.name} = {curve.value:g}")
            right.grid(alpha=0.3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
        write_atomic(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------
# The search


def _digest(array: np.ndarray) -> bytes:
    data = np.packbits(array) if array.dtype == bool else np.ascontiguousarray(array)
    return hashlib.blake2b(data.tobytes(), digest_size=16).digest()


@dataclass
class _Evaluation:
    """One image at one grid value: scores and (computed, forced) per level."""

    scores: NucleusScores
    counts: tuple[tuple[int, int], ...]


@dataclass
class _Searcher:
    images: list[ValidationImage]
    spacings: tuple[float, ...]
    costs: np.ndarray
    fill_holes: bool
    upper_grid: tuple[float, ...]
    lower_grid: tuple[float, ...]
    final_grid: tuple[float, ...]
    progress: Callable[[str, int, int], None] | None
    compute_tolerance: float = 0.0
    curves: dict[tuple, TuningCurve] = field(default_factory=dict)
    _scores: list[dict[bytes, NucleusScores]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.levels = len(self.spacings)
        self._scores = [{} for _ in self.images]
        self.totals = np.array(
            [[m.shape[0] * m.shape[1] for m in image.maps] for image in self.images],
            dtype=np.float64,
        )
        steps = [("final", 0)]
        for level in range(1, self.levels):
            steps += [("upper", level), ("lower", level)]
        self.steps = steps

    # -- evaluation ---------------------------------------------------------------------------

    def _score(self, index: int, mask: np.ndarray) -> NucleusScores:
        """The scores of a final (unfilled) mask, remembered by the mask's digest."""
        key = _digest(mask)
        cache = self._scores[index]
        if key not in cache:
            cache[key] = nucleus_scores(_fill(mask, self.fill_holes), self.images[index].truth)
        return cache[key]

    def _thresholds(self, final: float, upper: list[float], lower: list[float]) -> Thresholds:
        return Thresholds(self.spacings, float(final), tuple(upper), tuple(lower))

    def _image_curve(
        self, index: int, step: tuple[str, int], state: Thresholds, values: Sequence[float]
    ) -> list[_Evaluation]:
        """One image's evaluations of every grid value of one step."""
        image = self.images[index]
        parameter, level = step
        maps = list(image.maps)
        maps[0] = as_probabilities(maps[0])  # once, instead of at every final_mask
        coarsest = self.levels - 1
        fixed: list[tuple[int, int]] = [(0, 0)] * self.levels
        for k in range(max(level, 1), self.levels):  # coarser levels compute everything
            fixed[k] = (int(self.totals[index, k]), 0)
        if image.tissue is not None and level <= coarsest:
            fixed[coarsest] = (int(np.count_nonzero(image.tissue)), 0)
        evaluations = []
        if parameter == "final":
            decisions = (
                _coarsest_decisions(maps[0].shape[:2], image.tissue)
                if coarsest == 0
                else np.full(maps[0].shape[:2], COMPUTE, np.uint8)
            )
            fixed[0] = (int(np.count_nonzero(decisions == COMPUTE)), 0)
            for value in values:
                mask = final_mask(maps[0], decisions, value)
                evaluations.append(_Evaluation(self._score(index, mask), tuple(fixed)))
            return evaluations
        # the output of `level` with everything coarser computing everything: the full map
        base = _coarsest_decisions(
            maps[level].shape[:2], image.tissue if level == coarsest else None
        )
        previous = resize_probabilities(level_output(maps[level], base), maps[level - 1].shape[:2])
        seen: dict[bytes, _Evaluation] = {}
        for value in values:
            upper = list(state.upper)
            lower = list(state.lower)
            (upper if parameter == "upper" else lower)[level - 1] = value
            thresholds = self._thresholds(state.final, upper, lower)
            decisions = decide(previous, upper[level - 1], lower[level - 1])
            key = _digest(decisions)
            if key not in seen:
                counts = list(fixed)
                mask = _finish(maps, thresholds, level - 1, decisions, counts)
                seen[key] = _Evaluation(self._score(index, mask), tuple(counts))
            evaluations.append(seen[key])
        return evaluations

    def curve(self, position: int, state: Thresholds, label: str = "") -> TuningCurve:
        """Evaluate (or recall) a step's curve for the state reached so far (unchosen)."""
        parameter, level = self.steps[position]
        key = (position, state.final, state.upper, state.lower)
        if key in self.curves:
            return self.curves[key]
        values = {"final": self.final_grid, "upper": self.upper_grid, "lower": self.lower_grid}[
            parameter
        ]
        per_image = []
        name = "final" if parameter == "final" else f"level {level} {parameter}"
        for index in range(len(self.images)):
            if self.progress is not None:
                self.progress(f"{label}{name}", index, len(self.images))
            per_image.append(self._image_curve(index, (parameter, level), state, values))
        if self.progress is not None:
            self.progress(f"{label}{name}", len(self.images), len(self.images))
        f, tpr, ppv, det, compute, fractions = [], [], [], [], [], []
        for column in range(len(values)):
            evaluations = [image[column] for image in per_image]
            f.append(_mean([e.scores.f_score for e in evaluations]))
            tpr.append(_mean([e.scores.tpr for e in evaluations]))
            ppv.append(_mean([e.scores.ppv for e in evaluations]))
            det.append(_mean([e.scores.detection_rate for e in evaluations]))
            computed = np.array([[c[0] for c in e.counts] for e in evaluations], np.float64)
            compute.append(
                float((computed @ self.costs).sum() / (self.totals[:, 0].sum() * self.costs[0]))
            )
            fractions.append(tuple(float(v) for v in computed.sum(0) / self.totals.sum(0)))
        curve = TuningCurve(
            position,
            parameter,
            level,
            tuple(float(v) for v in values),
            tuple(f),
            tuple(tpr),
            tuple(ppv),
            tuple(det),
            tuple(compute),
            tuple(fractions),
            chosen=-1,
            bound=math.nan,
        )
        self.curves[key] = curve
        return curve

    # -- the coordinate-wise search -----------------------------------------------------------

    def naive(self) -> TuningCurve:
        state = Thresholds.compute_all(self.spacings)
        curve = self.curve(0, state)
        if all(math.isnan(v) for v in curve.f_score):
            raise TuningError(
                "no validation image has an annotated nucleus (every truth mask "
                "is empty): the F-score is undefined"
            )
        return curve

    def search(
        self, loss: float, label: str = "", schedule: str = "even"
    ) -> tuple[Thresholds, list[TuningCurve]]:
        """The loss-constrained coordinate-wise search.

        ``schedule``: ``"even"`` lets coarse step ``k`` of ``n`` bring F down to ``F_naive -
        loss * k / n``; ``"greedy"`` lets every step spend the whole loss.
        """
        first = self.naive()
        naive = max(v for v in first.f_score if not math.isnan(v))
        state = Thresholds.compute_all(self.spacings)
        chosen_curves = []
        coarse_steps = sum(1 for parameter, _ in self.steps if parameter != "final")
        done = 0
        for position, (parameter, level) in enumerate(self.steps):
            if parameter != "final":
                done += 1
            share = 1.0 if schedule == "greedy" or not coarse_steps else done / coarse_steps
            bound = naive - loss * share
            curve = self.curve(position, state, label)
            index = _choose(curve, bound, self.compute_tolerance)
            chosen = replace(curve, chosen=index, bound=bound)
            chosen_curves.append(chosen)
            value = curve.values[index]
            upper, lower = list(state.upper), list(state.lower)
            final = state.final
            if parameter == "final":
                final = value
            elif parameter == "upper":
                upper[level - 1] = value
            else:
                lower[level - 1] = value
            state = self._thresholds(final, upper, lower)
            logger.info(
                "%s%s = %g: F %.4f, compute %.4f",
                label,
                chosen.name,
                value,
                curve.f_score[index],
                curve.compute_fraction[index],
            )
        return state, chosen_curves


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _choose(curve: TuningCurve, bound: float, tolerance: float = 0.0) -> int:
    """The feasible value (F >= bound) with the least compute; ties: higher F, earlier value.

    With a ``tolerance``, the feasible value with the highest F among those whose compute is
    within ``tolerance`` (a fraction of the naive compute) of the least.
    """
    feasible = [
        (compute, -f, index)
        for index, (f, compute) in enumerate(
            zip(curve.f_score, curve.compute_fraction, strict=True)
        )
        if not math.isnan(f) and f >= bound - 1e-12
    ]
    if not feasible:  # cannot happen with the identity value on the grid; keep the best F
        return int(np.nanargmax(curve.f_score))
    least = min(feasible)[0]
    close = [
        (negative_f, compute, index)
        for compute, negative_f, index in feasible
        if compute <= least + tolerance
    ]
    return min(close)[2]


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _outcome(curves: Sequence[TuningCurve]) -> tuple[float, float]:
    """F and compute fraction at the end of a search."""
    last = curves[-1]
    return last.f_score[last.chosen], last.compute_fraction[last.chosen]


def _grid(grid: Sequence[float]) -> tuple[float, ...]:
    try:
        values = sorted({float(v) for v in grid})
    except (TypeError, ValueError):
        raise TuningError(f"grid: expected numbers, got {grid!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise TuningError(f"grid: expected finite threshold values, got {tuple(grid)}")
    return tuple(values)


def tune(
    images: Sequence[ValidationImage],
    spacings: Sequence[float],
    *,
    objective: str = "loss",
    max_fscore_loss: float = 0.02,
    compute_budget: float | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    costs: Sequence[float] | None = None,
    fill_holes: bool = True,
    schedule: str = "even",
    compute_tolerance: float = 0.01,
    progress: Callable[[str, int, int], None] | None = None,
) -> TuningResult:
    """Search the cascade's thresholds on fully computed validation images.

    Parameters
    ----------
    images
        :class:`ValidationImage` objects (or ``(maps, truth[, tissue])`` tuples), every one
        with one map per level.
    spacings
        µm/px of every level, finest first (recorded in the thresholds; checked against the
        maps' shapes).
    objective
        ``"loss"``: the least compute with F at least ``F_naive - max_fscore_loss``, chosen
        step by step. ``"budget"``: the highest F with a compute fraction at most
        ``compute_budget`` (see Notes).
    max_fscore_loss
        The F-score the cascade may lose against the naive method (absolute, F in [0, 1];
        ``"loss"`` only).
    compute_budget
        The largest compute fraction allowed (``"budget"`` only; naive = 1).
    grid
        Threshold values tried at every step (default :data:`DEFAULT_GRID`, 49 values on
        [0, 1]). ``upper`` tries the values up to 1 and :data:`NEVER` (which stands for any
        value above 1); ``lower`` always tries 0 too. A step can thus always keep the previous
        step's result.
    costs
        Per-pixel cost weight of every level, finest first (default 1 each).
    fill_holes
        Fill holes in the final mask before grading, as the reference does.
    schedule
        How the allowed loss is spent over the coarse steps: ``"even"`` (default) lets step
        ``k`` of ``n`` bring F down to ``F_naive - max_fscore_loss * k / n``, so that a step
        with a poor trade (an ``upper`` that saves little compute for a lot of F) cannot take
        the loss the later steps need; ``"greedy"`` lets every step spend all of it (picking
        by eye as the reference did is closer to ``"even"``).
    compute_tolerance
        A step takes, among the feasible values whose compute fraction is within this much
        (of the naive compute, 1.0) of the least, the one with the highest F: a threshold on
        the edge of an F cliff that saves next to nothing (as forcing often does) is not
        worth its risk on new slides. 0 picks the least compute.
    progress
        Called as ``progress(description, done, total)`` while a step's images are evaluated.

    Returns
    -------
    TuningResult

    Raises
    ------
    TuningError
        Inconsistent maps or settings, no annotated nucleus, or a budget no grid value meets.

    Notes
    -----
    The ``"budget"`` search runs the loss-constrained search for allowed losses found by
    bisection between 0 and ``F_naive``: a larger allowed loss lets every step save more, so
    the compute falls (nearly always monotonically; the greedy steps can make exceptions).
    Among every search run that meets the budget, the one with the highest F is returned (ties:
    the least compute). Curves are cached by step and state, so runs that share their first
    choices share those evaluations.
    """
    if objective not in OBJECTIVES:
        raise TuningError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")
    if not (_is_number(compute_tolerance) and 0 <= compute_tolerance <= 1):
        raise TuningError(
            f"compute_tolerance: expected a number in [0, 1], got {compute_tolerance!r}"
        )
    if schedule not in ("even", "greedy"):
        raise TuningError(f"schedule: expected 'even' or 'greedy', got {schedule!r}")
    if not (_is_number(max_fscore_loss) and 0 <= max_fscore_loss <= 1):
        raise TuningError(f"max_fscore_loss: expected a number in [0, 1], got {max_fscore_loss!r}")
    if objective == "budget":
        if not _is_number(compute_budget) or not compute_budget > 0:
            raise TuningError(
                f"compute_budget: the budget objective needs a compute fraction > 0 (naive = 1),"
                f" got {compute_budget!r}"
            )
    spacings = tuple(float(s) for s in spacings)
    try:
        Thresholds.compute_all(spacings)
    except ValueError as error:
        raise TuningError(f"spacings: {error}") from None
    images = _validation_images(images)
    for index, image in enumerate(images):
        where = f"validation image {image.name!r}" if image.name else f"validation image #{index}"
        _check_spacings(image.maps, spacings, where)
    values = _grid(grid)
    searcher = _Searcher(
        images,
        spacings,
        _costs(costs, len(spacings)),
        fill_holes,
        upper_grid=(*(v for v in values if v <= 1), NEVER),
        lower_grid=tuple(sorted({0.0, *values})),
        final_grid=values,
        progress=progress,
        compute_tolerance=float(compute_tolerance),
    )
    first = searcher.naive()
    naive_index = _choose(first, max(v for v in first.f_score if not math.isnan(v)))
    everything = first.compute_fraction[naive_index]

    if objective == "loss":
        loss = float(max_fscore_loss)
        thresholds, curves = searcher.search(loss, schedule=schedule)
    else:
        budget = float(compute_budget)  # type: ignore[arg-type]
        naive_f = first.f_score[naive_index]
        runs: list[tuple[float, Thresholds, list[TuningCurve]]] = []

        def run(allowed: float) -> bool:
            thresholds, curves = searcher.search(
                allowed, f"loss {allowed:.4f}: ", schedule=schedule
            )
            runs.append((allowed, thresholds, curves))
            return _outcome(curves)[1] <= budget + 1e-12

        if not run(naive_f):
            f_last, compute_last = _outcome(runs[-1][2])
            raise TuningError(
                f"compute_budget: {budget} cannot be met on this grid: the least compute "
                f"fraction the search reaches is {compute_last:.4f} (F {f_last:.4f})"
            )
        if not run(0.0):
            low, high = 0.0, naive_f
            while high - low > 1e-3:
                middle = (low + high) / 2
                if run(middle):
                    high = middle
                else:
                    low = middle
        meeting = [r for r in runs if _outcome(r[2])[1] <= budget + 1e-12]
        loss, thresholds, curves = max(
            meeting, key=lambda r: (_outcome(r[2])[0], -_outcome(r[2])[1])
        )

    # the reported figures: the deployed operator on every image, as simulate() runs it
    results = [
        simulate(image.maps, thresholds, image.tissue, fill_holes=fill_holes) for image in images
    ]
    scores = [nucleus_scores(r.mask, image.truth) for r, image in zip(results, images, strict=True)]
    counts = [r.levels for r in results]
    level_fractions = tuple(
        sum(c[level].computed for c in counts) / sum(c[level].total for c in counts)
        for level in range(len(spacings))
    )
    return TuningResult(
        thresholds=thresholds,
        f_score=_mean([s.f_score for s in scores]),
        tpr=_mean([s.tpr for s in scores]),
        ppv=_mean([s.ppv for s in scores]),
        detection_rate=_mean([s.detection_rate for s in scores]),
        compute_fraction=compute_fraction(counts, searcher.costs),
        level_fractions=level_fractions,
        naive_f_score=first.f_score[naive_index],
        naive_tpr=first.tpr[naive_index],
        naive_ppv=first.ppv[naive_index],
        naive_detection_rate=first.detection_rate[naive_index],
        everything_fraction=everything,
        curves=tuple(curves),
        objective=objective,
        max_fscore_loss=float(loss),
        compute_budget=float(compute_budget) if objective == "budget" else None,
        costs=tuple(float(c) for c in searcher.costs),
        images=len(images),
    )
