"""The ``training`` section of a parameter file, and command-line overrides.

The DigitalPathology keys, with their meaning and defaults::

    training:
      epoch count: 4                        # epochs to run
      metric name: 'validation accuracy'    # '<training|validation> <model metric>'
      higher is better: true
      averaging length: 1                   # the metric is averaged over the last N epochs
      source step length: 0                 # re-select the open images every N epochs (0: never)
      iteration log percent: 0.2            # log every 20 % of an epoch's iterations
      buffer chunk size: 10000              # read -> main transfer chunk (patches)
      learning:
        learning rate: 0.0005
        learning rate decay: {enabled: false, update factor: 0.5, plateau length: 5}
        stop plateau: {enabled: false, plateau length: 0}
      boosting:
        enabled: false
        buffer mode switch: 2               # first epoch that keeps difficult patches
        difficult threshold: 0.5            # error above which a patch is difficult
        difficult update ratio: 0.5         # share of the difficult patches replaced anyway
      iterations:
        training: {repetition count: 4, iteration count: 100, batch size: 32}
        validation: {repetition count: 2, iteration count: 100, batch size: 32}

Overrides (``--override 'training.epoch count=10'``) change keys that exist in the file; the
mappings ``patch shapes``, ``label map``, ``label ratios`` and ``categories`` are replaced as a
whole, as in the original.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from digipath.config_section import Section
from digipath.errors import ConfigError

PURPOSES = ("training", "validation")
REPLACED_WHOLE = ("patch shapes", "label map", "label ratios", "categories")
"""Mappings an override replaces instead of merging into."""


@dataclass(frozen=True)
class Iterations:
    """Per epoch of one purpose: ``repetitions`` x ``iterations`` batches of ``batch_size``."""

    repetitions: int = 1
    iterations: int = 100
    batch_size: int = 32


@dataclass(frozen=True)
class TrainingParameters:
    """The validated ``training`` section (see the module docstring for the keys)."""

    epochs: int = 4
    metric: str = "validation accuracy"
    higher_is_better: bool = True
    averaging_length: int = 1
    source_step_length: int = 0
    log_percent: float = 0.2
    buffer_chunk_size: int | None = None
    learning_rate: float = 0.0005
    decay_enabled: bool = False
    decay_factor: float = 0.5
    decay_plateau: int = 5
    stop_enabled: bool = False
    stop_plateau: int = 0
    boosting: bool = False
    buffer_mode_switch: int = 2
    difficult_threshold: float = 0.5
    difficult_update_ratio: float = 0.5
    iterations: dict[str, Iterations] = field(
        default_factory=lambda: {p: Iterations() for p in PURPOSES}
    )

    @property
    def metric_purpose(self) -> str:
        """``training`` or ``validation``: the first word of the metric name."""
        return self.metric.split(" ", 1)[0]

    @property
    def metric_key(self) -> str:
        """The model metric of the metric name (``accuracy`` of ``validation accuracy``)."""
        return self.metric.split(" ", 1)[1]


def _integer(section: Section, name: str, default: int, low: int) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise section.error(name, f"expected an integer >= {low}, got {value!r}")
    return value


def training_parameters(
    mapping: Mapping[str, Any] | None, source: str | None = None, key: str = "training"
) -> TrainingParameters:
    """Validate the ``training`` section; every error names its key path."""
    section = Section(
        mapping, key, source,
        ("epoch count", "metric name", "higher is better", "averaging length",
         "source step length", "iteration log percent", "buffer chunk size", "learning",
         "boosting", "iterations"),
    )  # fmt: skip
    metric = section.get("metric name", "validation accuracy")
    if not isinstance(metric, str) or metric.split(" ", 1)[0] not in PURPOSES or " " not in metric:
        raise section.error(
            "metric name",
            f"expected '<training|validation> <metric>' such as 'validation accuracy', got "
            f"{metric!r}",
        )
    log_percent = section.number("iteration log percent", 0.2, open_low=True)
    if log_percent > 1:
        raise section.error(
            "iteration log percent", f"expected a value in (0, 1], got {log_percent}"
        )
    chunk = section.get("buffer chunk size")
    if chunk is not None:
        chunk = _integer(section, "buffer chunk size", 0, 1)
    learning = section.section("learning", ("learning rate", "learning rate decay", "stop plateau"))
    decay = learning.section("learning rate decay", ("enabled", "update factor", "plateau length"))
    stop = learning.section("stop plateau", ("enabled", "plateau length"))
    factor = decay.number("update factor", 0.5, open_low=True)
    if factor > 1:
        raise decay.error("update factor", f"expected a factor in (0, 1], got {factor}")
    boosting = section.section(
        "boosting",
        ("enabled", "buffer mode switch", "difficult threshold", "difficult update ratio"),
    )
    threshold = boosting.number("difficult threshold", 0.5)
    ratio = boosting.number("difficult update ratio", 0.5)
    for name, value in (("difficult threshold", threshold), ("difficult update ratio", ratio)):
        if value > 1:
            raise boosting.error(name, f"expected a value in [0, 1], got {value}")
    iterations_section = section.section("iterations", PURPOSES)
    iterations = {}
    for purpose in PURPOSES:
        item = iterations_section.section(
            purpose, ("repetition count", "iteration count", "batch size")
        )
        iterations[purpose] = Iterations(
            _integer(item, "repetition count", 1, 1),
            _integer(item, "iteration count", 100, 1),
            _integer(item, "batch size", 32, 1),
        )
    return TrainingParameters(
        epochs=_integer(section, "epoch count", 4, 1),
        metric=metric,
        higher_is_better=section.boolean("higher is better", True),
        averaging_length=_integer(section, "averaging length", 1, 1),
        source_step_length=_integer(section, "source step length", 0, 0),
        log_percent=log_percent,
        buffer_chunk_size=chunk,
        learning_rate=learning.number("learning rate", 0.0005, open_low=True),
        decay_enabled=decay.boolean("enabled", False),
        decay_factor=factor,
        decay_plateau=_integer(decay, "plateau length", 5, 0),
        stop_enabled=stop.boolean("enabled", False),
        stop_plateau=_integer(stop, "plateau length", 0, 0),
        boosting=boosting.boolean("enabled", False),
        buffer_mode_switch=_integer(boosting, "buffer mode switch", 2, 0),
        difficult_threshold=threshold,
        difficult_update_ratio=ratio,
        iterations=iterations,
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'training.epoch count=10'`` -> ``(["training", "epoch count"], 10)`` (YAML value)."""
    if "=" not in text:
        raise ConfigError(text, "an override is 'key.path=value', e.g. 'training.epoch count=10'")
    path, _, value = text.partition("=")
    keys = [part.strip() for part in path.split(".")]
    if not all(keys):
        raise ConfigError(path, "an empty key in the override's key path")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(path, f"the override value is not valid YAML: {error}") from None
    return keys, parsed


def _coerce_key(mapping: Mapping, key: str):
    """The existing key of ``mapping`` that ``key`` (a string) names (``'2.0'`` -> ``2.0``)."""
    if key in mapping:
        return key
    for existing in mapping:
        if str(existing) == key:
            return existing
    return None


def apply_overrides(
    parameters: Mapping[str, Any], overrides: list[str] | Mapping[str, Any]
) -> dict[str, Any]:
    """A copy of ``parameters`` with ``overrides`` applied (see the module docstring).

    ``overrides`` are ``'key.path=value'`` strings or a nested mapping. A key path that does not
    exist in ``parameters`` is an error naming it.
    """
    result = copy.deepcopy(dict(parameters))
    items: list[tuple[list[str], Any]]
    if isinstance(overrides, Mapping):
        items = []

        def flatten(prefix: list[str], value: Any) -> None:
            if isinstance(value, Mapping) and (not prefix or prefix[-1] not in REPLACED_WHOLE):
                for name, inner in value.items():
                    flatten([*prefix, str(name)], inner)
            else:
                items.append((prefix, value))

        flatten([], overrides)
    else:
        items = [parse_override(text) for text in overrides]
    for keys, value in items:
        target: Any = result
        for depth, name in enumerate(keys):
            where = ".".join(keys[: depth + 1])
            if not isinstance(target, dict):
                raise ConfigError(where, "cannot override inside a value that is not a mapping")
            existing = _coerce_key(target, name)
            if existing is None:
                raise ConfigError(
                    where,
                    "no such key in the parameter file (overrides change existing keys only); "
                    f"keys here: {', '.join(map(str, target)) or 'none'}",
                )
            if depth == len(keys) - 1:
                target[existing] = copy.deepcopy(value)
            else:
                target = target[existing]
    return result
