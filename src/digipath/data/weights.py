"""Weight maps for training U-Net-like networks on label maps (DigitalPathology semantics).

Labels are ``(N, rows, cols)`` uint8 arrays of network classes ``0 .. classes - 1``, where
:data:`~digipath.data.labels.IGNORE` (255) marks pixels that are no valid label (mask values the
label map does not list, padding). A weight map is a float32 array of the same shape; losses
multiply the per-pixel loss by it, so pixels of weight 0 are not learnt.

=====================  ==============================  =======================================
config ``type``        patch mapper                    batch mapper
=====================  ==============================  =======================================
``clean``              :class:`CleanWeights`           none
``balancing``          :class:`BalancingWeights`       none
``batch balancing``    :class:`CleanWeights`           :class:`BatchBalancingWeights`
=====================  ==============================  =======================================

A *patch mapper* makes the weight map of each patch from its labels as the patch is sampled; a
*batch mapper* remaps the weight maps of a whole batch once it is complete.

Balancing
---------
Over a group of pixels (one patch for :class:`BalancingWeights`, the whole batch for
:class:`BatchBalancingWeights`), with ``count_c`` the number of valid pixels of class ``c``,
``valid`` the number of valid pixels and ``present`` the number of classes with
``count_c > 0``:

* ``balanced = valid / present``, the pixel count every class would have if they were balanced;
* ``w_c = clip(balanced / count_c, min, max)`` for every present class;
* the map is ``w_label`` at valid pixels and 0 elsewhere;
* the map is then rescaled so that its sum is the group's pixel count (``normalize=True``) or
  its number of valid pixels (``normalize=False``).

Without clipping every present class thus gets the same total weight. A group without any valid
pixel gets a map of zeros.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from digipath.data.labels import IGNORE
from digipath.data.parameterized import Parameterized
from digipath.errors import ConfigError, WeightMappingError

__all__ = [
    "LABEL_MODES",
    "WEIGHT_MAPPERS",
    "BalancingWeights",
    "BatchBalancingWeights",
    "BatchWeightMapper",
    "CleanWeights",
    "PatchWeightMapper",
    "weight_mappers_from_config",
]

LABEL_MODES = ("central", "synthesize", "load")
"""The DigitalPathology label modes; only ``synthesize`` and ``load`` give label maps."""


@runtime_checkable
class PatchWeightMapper(Protocol):
    """Makes weight maps from the labels of patches: ``(N, rows, cols)`` uint8 -> float32."""

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        """The float32 weight maps of ``labels`` (same shape)."""
        ...


@runtime_checkable
class BatchWeightMapper(Protocol):
    """Remaps the weight maps of a complete batch from its labels and current weight maps."""

    def __call__(self, labels: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """New float32 weight maps for ``labels`` given the current ``weights`` (same shape)."""
        ...


# --------------------------------------------------------------------------------------------
# Validation


def _check_classes(classes: object) -> int:
    """``classes`` as an int in 1-255, else :class:`WeightMappingError`."""
    if isinstance(classes, bool | np.bool_) or not isinstance(classes, int | np.integer):
        raise WeightMappingError(f"classes must be an integer in 1-255, got {classes!r}")
    if not 1 <= int(classes) <= IGNORE:
        raise WeightMappingError(
            f"classes must lie in 1-255 (class {IGNORE} is the ignore value), got {classes}"
        )
    return int(classes)


def _is_number(value: object) -> bool:
    return not isinstance(value, bool | np.bool_) and isinstance(
        value, int | float | np.integer | np.floating
    )


def _clipping_problem(low: object, high: object) -> tuple[str, str] | None:
    """``(field, problem)`` if ``(low, high)`` is no valid clipping range, else ``None``.

    ``field`` is ``"min"``, ``"max"`` or ``""`` (the pair as a whole).
    """
    if not _is_number(low) or not math.isfinite(float(low)):  # type: ignore[arg-type]
        return "min", f"expected a finite number >= 0, got {low!r}"
    if not _is_number(high) or math.isnan(float(high)):  # type: ignore[arg-type]
        return "max", f"expected a number > 0 (may be .inf), got {high!r}"
    if float(low) < 0:  # type: ignore[arg-type]
        return "min", f"clipping bounds must not be negative, got {low!r}"
    if float(high) <= 0:  # type: ignore[arg-type]
        return "max", f"expected a number > 0 (a maximum of 0 zeroes every weight), got {high!r}"
    if float(low) > float(high):  # type: ignore[arg-type]
        return "", f"min {low!r} is greater than max {high!r}; expected min <= max"
    return None


def _check_clipping(clipping: object) -> tuple[float, float] | None:
    """``clipping`` as a ``(min, max)`` float pair or ``None``, else :class:`WeightMappingError`."""
    if clipping is None:
        return None
    try:
        low, high = clipping  # type: ignore[misc]
    except (TypeError, ValueError):
        raise WeightMappingError(
            f"clipping must be None or (min, max) with 0 <= min <= max, got {clipping!r}"
        ) from None
    problem = _clipping_problem(low, high)
    if problem is not None:
        field, reason = problem
        raise WeightMappingError(
            f"clipping{' ' + field if field else ''}: {reason} (clipping {clipping!r})"
        )
    return float(low), float(high)


def _check_labels(labels: np.ndarray, classes: int | None, batch: bool) -> np.ndarray:
    """``labels`` as a uint8 array with values in 0 .. classes - 1 or 255.

    The check of values below 255 against ``classes`` is left to the caller when it counts them
    anyway (``classes=None``).
    """
    array = np.asarray(labels)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise WeightMappingError(
            f"labels must be an integer array (uint8 network classes), got dtype {array.dtype}"
        )
    if batch and array.ndim != 3:
        raise WeightMappingError(
            f"labels must be a batch of label maps (N, rows, cols), got shape {array.shape}"
        )
    if array.dtype != np.uint8:
        if array.size:
            low, high = int(array.min()), int(array.max())
            if low < 0 or high > IGNORE:
                value = low if low < 0 else high
                raise WeightMappingError(
                    f"label value {value} is no network class; labels must lie in 0-254 "
                    f"or be {IGNORE} (ignored)"
                )
        array = array.astype(np.uint8)
    if classes is not None and classes < IGNORE:
        bad = (array >= classes) & (array != IGNORE)
        if bad.any():
            _raise_bad_values(np.unique(array[bad]), classes)
    return array


def _raise_bad_values(values: np.ndarray, classes: int) -> None:
    listed = ", ".join(str(int(v)) for v in values)
    what = "label value {} is" if len(values) == 1 else "label values {} are"
    raise WeightMappingError(
        f"{what.format(listed)} not network classes 0-{classes - 1} (nor {IGNORE}, ignored); "
        "check the label map and the number of classes"
    )


# --------------------------------------------------------------------------------------------
# Balancing arithmetic


def _group_counts(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row value counts of a ``(groups, pixels)`` uint8 array.

    Returns
    -------
    counts : numpy.ndarray
        ``(groups, 256)`` int64: ``counts[g, v]`` is the number of pixels of value ``v`` in row
        ``g``.
    index : numpy.ndarray
        ``(groups, pixels)`` intp: ``value + 256 * group``, the index of each pixel's entry in
        ``counts.ravel()`` (and in a per-group lookup table of 256 entries per group).
    """
    groups = flat.shape[0]
    index = flat.astype(np.intp)
    index += (np.arange(groups, dtype=np.intp) * 256)[:, None]
    counts = np.bincount(index.ravel(), minlength=groups * 256).reshape(groups, 256)
    return counts, index


def _balanced_lut(
    counts: np.ndarray,
    pixels: int,
    classes: int,
    clipping: tuple[float, float] | None,
    normalize: bool,
) -> np.ndarray:
    """Per-group lookup tables label value -> weight.

    Parameters
    ----------
    counts : numpy.ndarray
        ``(groups, 256)`` counts of the valid pixels of each value per group (entries at 255
        and at values >= ``classes`` are ignored).
    pixels : int
        The number of pixels of a group (the target sum when ``normalize``).
    classes, clipping, normalize
        As for :class:`BalancingWeights`.

    Returns
    -------
    numpy.ndarray
        ``(groups, 256)`` float32; 0 for classes absent from the group and for 255.
    """
    class_counts = counts[:, :classes].astype(np.float64)
    valid = class_counts.sum(axis=1)
    present = class_counts > 0
    n_present = present.sum(axis=1)
    balanced = np.divide(valid, n_present, out=np.zeros_like(valid), where=n_present > 0)
    weights = np.divide(
        balanced[:, None], class_counts, out=np.zeros_like(class_counts), where=present
    )
    if clipping is not None:
        weights = np.where(present, np.clip(weights, clipping[0], clipping[1]), 0.0)
    total = (weights * class_counts).sum(axis=1)
    target = np.full_like(valid, float(pixels)) if normalize else valid
    scale = np.divide(target, total, out=np.zeros_like(total), where=total > 0)
    lut = np.zeros((counts.shape[0], 256), dtype=np.float32)
    lut[:, :classes] = weights * scale[:, None]
    return lut


class _Balancing(Parameterized):
    def __init__(
        self,
        classes: int,
        clipping: tuple[float, float] | None = None,
        normalize: bool = True,
    ) -> None:
        self.classes = _check_classes(classes)
        self.clipping = _check_clipping(clipping)
        if not isinstance(normalize, bool | np.bool_):
            raise WeightMappingError(f"normalize must be True or False, got {normalize!r}")
        self.normalize = bool(normalize)

    def _parameters(self) -> dict[str, object]:
        return {"classes": self.classes, "clipping": self.clipping, "normalize": self.normalize}

    def _check_counts(self, counts: np.ndarray) -> None:
        """Raise if any of ``counts`` (last axis: values 0-255) counts a value >= classes."""
        per_value = counts.reshape(-1, 256)[:, self.classes : IGNORE].sum(axis=0)
        if per_value.any():
            _raise_bad_values(np.flatnonzero(per_value) + self.classes, self.classes)


# --------------------------------------------------------------------------------------------
# Weight mappers


class CleanWeights(Parameterized):
    """Weight 1 at valid label pixels, 0 at ignored ones (config type ``clean``).

    Parameters
    ----------
    classes : int, optional
        The number of network classes; when given, labels other than 255 that are not below it
        raise :class:`WeightMappingError`.
    """

    type = "clean"

    def __init__(self, classes: int | None = None) -> None:
        self.classes = None if classes is None else _check_classes(classes)

    def _parameters(self) -> dict[str, object]:
        return {} if self.classes is None else {"classes": self.classes}

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        """Weight maps of a batch.

        Parameters
        ----------
        labels : numpy.ndarray
            Network classes, integers of any shape (``(N, rows, cols)`` as a rule); 255 is
            ignored.

        Returns
        -------
        numpy.ndarray
            float32 of the same shape: 1 where ``labels != 255``, 0 elsewhere.

        Raises
        ------
        WeightMappingError
            ``labels`` is not an integer array, or holds a value that is neither a class nor
            255.
        """
        array = _check_labels(labels, self.classes, batch=False)
        out = np.empty(array.shape, dtype=np.float32)
        np.not_equal(array, IGNORE, out=out, casting="unsafe")
        return out


class BalancingWeights(_Balancing):
    """Class-balancing weight maps computed per patch (config type ``balancing``).

    See the module documentation for the formula; each patch of the batch is a group.

    Parameters
    ----------
    classes : int
        The number of network classes (1-255); labels are ``0 .. classes - 1`` or 255.
    clipping : tuple of float, optional
        ``(min, max)`` bounds of the class weights before rescaling, ``0 <= min <= max``,
        ``max > 0`` (``max`` may be ``inf``); ``None`` for no clipping.
    normalize : bool
        Rescale each patch's map to sum to the patch's pixel count (``True``) or to its number
        of valid pixels (``False``).

    Raises
    ------
    WeightMappingError
        An invalid parameter.
    """

    type = "balancing"

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        """Weight maps of a batch, balanced per patch.

        Parameters
        ----------
        labels : numpy.ndarray
            ``(N, rows, cols)`` network classes (uint8, or any integer type with values 0-255);
            255 is ignored.

        Returns
        -------
        numpy.ndarray
            ``(N, rows, cols)`` float32 weight maps; 0 at ignored pixels, and everywhere in a
            patch without valid pixel.

        Raises
        ------
        WeightMappingError
            ``labels`` is not a 3-D integer array, or holds a value that is neither a class nor
            255.
        """
        array = _check_labels(labels, None, batch=True)
        patches, rows, cols = array.shape
        pixels = rows * cols
        counts, index = _group_counts(array.reshape(patches, pixels))
        self._check_counts(counts)
        lut = _balanced_lut(counts, pixels, self.classes, self.clipping, self.normalize)
        return lut.ravel()[index].reshape(array.shape)


class BatchBalancingWeights(_Balancing):
    """Class-balancing weight maps computed over a whole batch (config type ``batch balancing``).

    The formula of :class:`BalancingWeights`, with the whole batch as one group: class counts
    are summed over all patches, and the maps are rescaled so that the batch total is the batch
    pixel count (``normalize=True``) or its number of valid pixels (``normalize=False``).

    Parameters
    ----------
    classes, clipping, normalize
        As for :class:`BalancingWeights`.
    """

    type = "batch balancing"

    def __call__(self, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """New weight maps for a complete batch.

        Parameters
        ----------
        labels : numpy.ndarray
            ``(N, rows, cols)`` network classes (uint8, or any integer type with values 0-255);
            255 is ignored.
        weights : numpy.ndarray, optional
            ``(N, rows, cols)`` weight maps made by the patch mapper (:class:`CleanWeights`): a
            pixel is valid where its weight is > 0 (and its label is not 255); only validity is
            used, not the values. ``None``: every pixel whose label is not 255 is valid.

        Returns
        -------
        numpy.ndarray
            ``(N, rows, cols)`` float32 weight maps, 0 at invalid pixels.

        Raises
        ------
        WeightMappingError
            ``labels`` is not a 3-D integer array or holds a value that is neither a class nor
            255, or ``weights`` does not have the shape of ``labels``.
        """
        array = _check_labels(labels, None, batch=True)
        all_counts = np.bincount(array.ravel(), minlength=256)
        self._check_counts(all_counts)
        valid = None
        if weights is not None:
            current = np.asarray(weights)
            if current.shape != array.shape:
                raise WeightMappingError(
                    f"weights of shape {current.shape} do not match labels of shape {array.shape}"
                )
            valid = current > 0
        counts = all_counts if valid is None else np.bincount(array[valid], minlength=256)
        lut = _balanced_lut(
            counts[None, :], array.size, self.classes, self.clipping, self.normalize
        )
        out = lut[0][array]
        if valid is not None:
            out *= valid
        return out


WEIGHT_MAPPERS: dict[str, type[Parameterized]] = {
    cls.type: cls for cls in (CleanWeights, BalancingWeights, BatchBalancingWeights)
}
"""``{config type: weight mapper class}`` (``batch balancing`` also uses :class:`CleanWeights`
as its patch mapper)."""

# --------------------------------------------------------------------------------------------
# Configuration

_KEYS = ("enabled", "type", "normalize", "clipping")
_CLIPPING_KEYS = ("min", "max")


def weight_mappers_from_config(
    config: Mapping[str, object] | None,
    classes: int,
    label_mode: str,
    key: str = "data.weight mapping",
    source: str | os.PathLike[str] | None = None,
) -> tuple[PatchWeightMapper | None, BatchWeightMapper | None]:
    """Build the weight mappers of a DigitalPathology ``weight mapping`` configuration section.

    Parameters
    ----------
    config : Mapping or None
        The section: ``enabled`` (bool, default true), ``type`` (required when enabled:
        ``clean``, ``balancing`` or ``batch balancing``), ``normalize`` (bool, default true)
        and ``clipping`` (``{min: float, max: float}``, default: no clipping; a missing ``min``
        is 0 and a missing ``max`` is infinity). ``normalize`` and ``clipping`` are ignored by
        ``clean``.
    classes : int
        The number of network classes (from the label map).
    label_mode : str
        The label mode of the data (``central``, ``synthesize`` or ``load``); weight maps need
        label maps, which ``central`` does not give.
    key : str
        The key path of the section, used in error messages.
    source : str or os.PathLike, optional
        The file the configuration came from, used in error messages.

    Returns
    -------
    tuple
        ``(patch mapper, batch mapper)``, either of which may be ``None``: ``(None, None)`` when
        ``config`` is ``None`` or disabled, ``(CleanWeights, None)`` for ``clean``,
        ``(BalancingWeights, None)`` for ``balancing`` and
        ``(CleanWeights, BatchBalancingWeights)`` for ``batch balancing``.

    Raises
    ------
    ConfigError
        The section is not a mapping, has an unknown key, an unknown or missing type, a
        non-boolean flag or an invalid clipping range; ``key`` of the error is the full key path
        of the offending entry (e.g. ``data.weight mapping.clipping.min``).
    WeightMappingError
        Weight mapping is enabled with label mode ``central``, or ``classes`` or
        ``label_mode`` is invalid.
    """
    classes = _check_classes(classes)
    if label_mode not in LABEL_MODES:
        raise WeightMappingError(
            f"unknown label mode {label_mode!r}; valid label modes are "
            f"{', '.join(map(repr, LABEL_MODES))}"
        )
    if config is None:
        return None, None
    keys = ", ".join(map(repr, _KEYS))
    if not isinstance(config, Mapping):
        raise ConfigError(key, f"expected a mapping with keys {keys}, got {config!r}", source)
    for name in config:
        if name not in _KEYS:
            raise ConfigError(f"{key}.{name}", f"unknown key; valid keys are {keys}", source)
    enabled = config.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{key}.enabled", f"expected true or false, got {enabled!r}", source)
    if not enabled:
        return None, None
    types = ", ".join(map(repr, WEIGHT_MAPPERS))
    if "type" not in config:
        raise ConfigError(f"{key}.type", f"missing; valid types are {types}", source)
    kind = config["type"]
    if not isinstance(kind, str) or kind not in WEIGHT_MAPPERS:
        raise ConfigError(
            f"{key}.type", f"unknown weight mapping type {kind!r}; valid types are {types}", source
        )
    if label_mode == "central":
        raise WeightMappingError(
            f"{key}: weight mapping {kind!r} needs label maps, but the label mode is 'central' "
            "(one label per patch); set the label mode to 'synthesize' or 'load', or disable "
            f"weight mapping ({key}.enabled: false)"
        )
    if kind == "clean":
        return CleanWeights(classes=classes), None
    normalize = config.get("normalize", True)
    if not isinstance(normalize, bool):
        raise ConfigError(f"{key}.normalize", f"expected true or false, got {normalize!r}", source)
    clipping = _clipping_from_config(config.get("clipping"), f"{key}.clipping", source)
    if kind == "balancing":
        return BalancingWeights(classes, clipping=clipping, normalize=normalize), None
    return CleanWeights(classes=classes), BatchBalancingWeights(
        classes, clipping=clipping, normalize=normalize
    )


def _clipping_from_config(
    section: object, key: str, source: str | os.PathLike[str] | None
) -> tuple[float, float] | None:
    """The ``clipping`` section as a ``(min, max)`` pair, ``None`` when absent or null."""
    if section is None:
        return None
    keys = ", ".join(map(repr, _CLIPPING_KEYS))
    if not isinstance(section, Mapping):
        raise ConfigError(
            key, f"expected a mapping with keys {keys} (0 <= min <= max), got {section!r}", source
        )
    for name in section:
        if name not in _CLIPPING_KEYS:
            raise ConfigError(f"{key}.{name}", f"unknown key; valid keys are {keys}", source)
    low = section.get("min", 0.0)
    high = section.get("max", math.inf)
    problem = _clipping_problem(low, high)
    if problem is not None:
        field, reason = problem
        raise ConfigError(f"{key}.{field}" if field else key, reason, source)
    return float(low), float(high)  # type: ignore[arg-type]
