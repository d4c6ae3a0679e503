"""Resources for multi-process batch generation: processes, open images, timeouts.

Two sections of the DigitalPathology training parameter YAML drive how patches are sampled in
the background::

    system:
      process count: 2.0          # float: multiplier of the CPU count; int: a fixed number;
                                  # 0: sample in the calling process
      pool size: 16               # most images open at once, over all purposes together
      multi-threaded: true        # accepted; digipath always fills buffers in the background
      ipc chunk size: 10000       # most patches per sampling request to a worker process
      join timeout secs: 30       # how long stop() waits for a worker before terminating it
      response timeout secs: 600  # how long the parent waits for a worker's answer
      poll timeout secs: 1800     # how long an idle worker waits for a command before exiting
      strict: true                # false: drop an unreadable image from the pool, not stop
    data:
      resources:
        workers:                  # share of the worker PROCESSES per purpose
          training: 1.0
          validation: 1.0
        samplers:                 # share of the OPEN IMAGES (the pool) per purpose
          training: 1.0
          validation: 1.0

:func:`load_system` reads the ``system`` section into a :class:`SystemConfig`,
:func:`load_resources` reads ``data.resources`` into a :class:`ResourcesConfig`, and
:func:`purpose_resources` derives from both, and from the number of images of each purpose,
how many worker processes and open images every purpose gets (:class:`PurposeResources`).

The meaning of ``workers`` and ``samplers``
-------------------------------------------
The seed's slides say "workers: processes, samplers: PatchSampler objects", but the original
code used the two ratio maps the other way round. **digipath follows the slides**:

``workers`` (or, unambiguously, ``processes``)
    Purpose -> ratio of the **worker processes**: the total process count
    (``system.process count``) is split over the purposes in these proportions.
``samplers`` (or, unambiguously, ``open images``)
    Purpose -> ratio of the **open images** (PatchSampler objects, the pool): the pool
    (``system.pool size``) is split over the purposes in these proportions.

A configuration written for the original code, where the two were swapped, has to swap its
``workers`` and ``samplers`` maps (or, better, rename them to ``processes`` and
``open images``). Giving a seed name together with its explicit equivalent (``workers`` and
``processes``, or ``samplers`` and ``open images``) is an error. A purpose missing from a
ratio map gets the ratio 1.0; ratios are finite and >= 0.

Every error is a :class:`~digipath.errors.ConfigError` naming the full key path of the
offending entry (e.g. ``system.pool size`` or ``data.resources.workers.training``), the value
found and what was expected.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from digipath.data.config import key_path
from digipath.data.distribution import distribute_population
from digipath.errors import ConfigError

__all__ = [
    "PurposeResources",
    "ResourcesConfig",
    "SystemConfig",
    "load_resources",
    "load_system",
    "purpose_resources",
]

logger = logging.getLogger(__name__)

Source = str | os.PathLike[str] | None

#: A ratio of a resources map: a finite number >= 0 (an int is taken as a float).
Ratio = Annotated[float, Field(ge=0, allow_inf_nan=False)]


# --------------------------------------------------------------------------------------------
# system


class SystemConfig(BaseModel):
    """The ``system`` section: worker processes, open images, message sizes and timeouts.

    Fields are populated by their YAML names (``process count``, ...) or by their attribute
    names (``process_count``, ...); unknown keys are rejected. Values are checked strictly: a
    boolean or a string is never taken as a number. The model is immutable.

    Attributes
    ----------
    process_count
        YAML ``process count``. How many worker processes sample patches, over all purposes
        together. A **float** is a multiplier of the CPU count (``2.0``: twice as many
        processes as CPUs; ``round(cpu_count * value)``, at least 1 when the value is > 0), an
        **int** is a fixed number (``2``: two processes). ``0`` (the default) samples in the
        calling process. YAML keeps the distinction: ``2.0`` is a float, ``2`` an int. See
        :meth:`processes`.
    pool_size
        YAML ``pool size``. The most images (PatchSampler objects) open at once, over all
        purposes together (>= 1); ``None`` (the default) opens all images.
    multi_threaded
        YAML ``multi-threaded``. Accepted for compatibility (default ``True``); digipath always
        fills its patch buffers in the background, whatever the value.
    ipc_chunk_size
        YAML ``ipc chunk size``. The most patches asked of a worker process in one sampling
        request (>= 1, default 10000); larger requests are sent in chunks.
    join_timeout
        YAML ``join timeout secs``. Seconds (> 0, default 30) that stopping the generator waits
        for each worker process to exit before terminating it.
    response_timeout
        YAML ``response timeout secs``. Seconds (> 0, default 600) that the parent process
        waits for a worker's answer before giving the worker up as hung.
    poll_timeout
        YAML ``poll timeout secs``. Seconds (> 0, default 1800) that an idle worker process
        waits for a command before exiting on its own (so that workers of a dead parent do
        not live forever).
    strict
        YAML ``strict`` (default true): an image that cannot be opened or read stops the run
        with an error; with false it is reported, dropped from the pool and its patches are
        drawn from the other images.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, validate_by_name=True, validate_by_alias=True
    )

    process_count: (
        Annotated[int, Field(ge=0)] | Annotated[float, Field(ge=0, allow_inf_nan=False)]
    ) = Field(
        0,
        alias="process count",
        description=(
            "Worker processes over all purposes: a float multiplies the CPU count "
            "(round(cpu_count * value), at least 1 if > 0), an int is a fixed number, "
            "0 samples in the calling process."
        ),
    )
    pool_size: Annotated[int, Field(ge=1)] | None = Field(
        None,
        alias="pool size",
        description="Most images (PatchSampler objects) open at once over all purposes; "
        "None: all images.",
    )
    multi_threaded: bool = Field(
        True,
        alias="multi-threaded",
        description="Accepted for compatibility; digipath always fills buffers in the background.",
    )
    ipc_chunk_size: int = Field(
        10000,
        ge=1,
        alias="ipc chunk size",
        description="Most patches per sampling request to a worker process.",
    )
    join_timeout: float = Field(
        30.0,
        gt=0,
        allow_inf_nan=False,
        alias="join timeout secs",
        description="Seconds stop() waits for a worker to exit before terminating it.",
    )
    response_timeout: float = Field(
        600.0,
        gt=0,
        allow_inf_nan=False,
        alias="response timeout secs",
        description="Seconds the parent waits for a worker's answer.",
    )
    poll_timeout: float = Field(
        1800.0,
        gt=0,
        allow_inf_nan=False,
        alias="poll timeout secs",
        description="Seconds an idle worker waits for a command before exiting on its own.",
    )

    strict: bool = Field(
        True,
        alias="strict",
        description="True: an image that cannot be opened or read stops the run with an error; "
        "false: it is reported, dropped from the pool and its patches are drawn from the "
        "other images.",
    )

    def processes(self, cpu_count: int | None = None) -> int:
        """The total number of worker processes, over all purposes.

        Parameters
        ----------
        cpu_count
            The CPU count a float ``process_count`` multiplies (>= 1); ``None`` uses
            :func:`os.cpu_count` (1 when unknown). Ignored for an int ``process_count``.

        Returns
        -------
        int
            ``process_count`` itself when it is an int; ``round(cpu_count * process_count)``,
            at least 1, when it is a float > 0; 0 (sample in the calling process) for 0. Never
            negative.

        Raises
        ------
        ValueError
            ``cpu_count`` is not an integer >= 1.
        """
        if cpu_count is not None and (
            isinstance(cpu_count, bool)
            or not isinstance(cpu_count, int | np.integer)
            or cpu_count < 1
        ):
            raise ValueError(f"cpu_count must be an integer >= 1, got {cpu_count!r}")
        value = self.process_count
        if isinstance(value, int):
            return max(0, value)
        if value <= 0:
            return 0
        cpus = int(cpu_count) if cpu_count is not None else (os.cpu_count() or 1)
        return max(1, round(cpus * value))


#: YAML name -> (attribute, what a valid value is), in file order.
_SYSTEM_KEYS: dict[str, tuple[str, str]] = {
    "process count": (
        "process_count",
        "a number >= 0: a float multiplies the CPU count (e.g. 2.0), an integer is a fixed "
        "number of processes (e.g. 2), 0 samples in the calling process",
    ),
    "pool size": (
        "pool_size",
        "an integer >= 1 (the most images open at once), or null for all images",
    ),
    "multi-threaded": ("multi_threaded", "true or false"),
    "ipc chunk size": (
        "ipc_chunk_size",
        "an integer >= 1 (the most patches per sampling request to a worker)",
    ),
    "join timeout secs": ("join_timeout", "a finite number of seconds > 0"),
    "response timeout secs": ("response_timeout", "a finite number of seconds > 0"),
    "poll timeout secs": ("poll_timeout", "a finite number of seconds > 0"),
    "strict": ("strict", "true or false"),
}


def load_system(
    mapping: Mapping[str, Any] | None, key: str = "system", source: Source = None
) -> SystemConfig:
    """Read the ``system`` section of a training parameter file.

    Parameters
    ----------
    mapping
        The section's content (YAML names such as ``process count`` or attribute names such
        as ``process_count``); ``None`` (an empty or absent section) gives the defaults.
    key
        The section's key path, put in front of each key in errors.
    source
        The file the section came from, named in errors.

    Returns
    -------
    SystemConfig

    Raises
    ------
    ConfigError
        Not a mapping, an unknown key (the message lists the valid ones), a key given under
        both its YAML and its attribute name, or an invalid value; ``key`` is the full key
        path, e.g. ``system.pool size``.
    """
    names = {yaml_name: field for yaml_name, (field, _) in _SYSTEM_KEYS.items()}
    names.update({field: field for field, _ in _SYSTEM_KEYS.values()})
    valid = ", ".join(_SYSTEM_KEYS)
    meanings = {
        field: f"{yaml_name!r} is the YAML name of {field!r}"
        for yaml_name, (field, _) in _SYSTEM_KEYS.items()
    }
    values, written = _canonical(mapping, names, meanings, key, source, f"valid keys are: {valid}")
    expected = {field: text for field, text in _SYSTEM_KEYS.values()}
    try:
        config = SystemConfig.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        field = _field_of(first["loc"][0], SystemConfig)
        value = values[field]
        got = repr(value)
        if isinstance(value, bool) and field != "multi_threaded":
            got += " (a boolean, not a number)"
        reason = f"expected {expected[field]}, got {got}" + _more(error, 1)
        raise ConfigError(key_path(key, written[field]), reason, source) from None
    if not config.multi_threaded:
        logger.info(
            "%s: false is accepted but has no effect; digipath always fills buffers in the "
            "background",
            key_path(key, written["multi_threaded"]),
        )
    return config


# --------------------------------------------------------------------------------------------
# data.resources


class ResourcesConfig(BaseModel):
    """The ``data.resources`` section: how processes and open images are shared by purpose.

    Attributes
    ----------
    processes
        Purpose -> ratio of the **worker processes** (``system.process count``). YAML
        ``workers`` (the seed's name; the seed's slides say "workers: processes") or
        ``processes``.
    open_images
        Purpose -> ratio of the **open images** (PatchSampler objects, ``system.pool size``).
        YAML ``samplers`` (the seed's name; the slides say "samplers: PatchSampler objects")
        or ``open images``.

    Notes
    -----
    The original DigitalPathology code used ``workers`` and ``samplers`` the other way round;
    digipath follows the slides. A purpose missing from a map gets the ratio 1.0 (see
    :meth:`process_ratios` and :meth:`open_image_ratios`); ratios are finite and >= 0. The
    model is immutable; an empty map (``None`` in YAML) is all defaults.
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, validate_by_name=True, validate_by_alias=True
    )

    processes: dict[str, Ratio] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("processes", "workers"),
        serialization_alias="processes",
        description="Purpose -> share of the worker PROCESSES (YAML 'workers' or 'processes'); "
        "a missing purpose has ratio 1.0.",
    )
    open_images: dict[str, Ratio] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("open images", "samplers", "open_images"),
        serialization_alias="open images",
        description="Purpose -> share of the OPEN IMAGES, the pool of PatchSampler objects "
        "(YAML 'samplers' or 'open images'); a missing purpose has ratio 1.0.",
    )

    @field_validator("processes", "open_images", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        if value is None:
            return {}
        return dict(value) if isinstance(value, Mapping) else value

    def process_ratios(self, purposes: Iterable[str]) -> dict[str, float]:
        """Purpose -> process ratio for ``purposes`` (1.0 where the map has none)."""
        return {purpose: float(self.processes.get(purpose, 1.0)) for purpose in purposes}

    def open_image_ratios(self, purposes: Iterable[str]) -> dict[str, float]:
        """Purpose -> open-image ratio for ``purposes`` (1.0 where the map has none)."""
        return {purpose: float(self.open_images.get(purpose, 1.0)) for purpose in purposes}


_RESOURCE_NAMES = {
    "workers": "processes",
    "processes": "processes",
    "samplers": "open_images",
    "open images": "open_images",
    "open_images": "open_images",
}

_RESOURCE_MEANINGS = {
    "processes": "both are purpose -> share of the worker processes; 'workers' is the seed's "
    "name for 'processes'",
    "open_images": "both are purpose -> share of the open images; 'samplers' is the seed's "
    "name for 'open images'",
}

_RESOURCE_VALID = (
    "valid keys are: workers (or processes): purpose -> share of the worker processes; "
    "samplers (or open images): purpose -> share of the open images"
)


def load_resources(
    mapping: Mapping[str, Any] | None, key: str = "data.resources", source: Source = None
) -> ResourcesConfig:
    """Read the ``data.resources`` section of a training parameter file.

    Parameters
    ----------
    mapping
        The section's content: ``workers`` (or ``processes``), purpose -> share of the worker
        processes, and ``samplers`` (or ``open images``), purpose -> share of the open images;
        ``None`` (an empty or absent section) gives ratio 1.0 for every purpose.
    key
        The section's key path, put in front of each key in errors.
    source
        The file the section came from, named in errors.

    Returns
    -------
    ResourcesConfig

    Raises
    ------
    ConfigError
        Not a mapping, an unknown key, a seed name given with its explicit equivalent (the
        message names both keys), a map that is not purpose -> number, or a ratio that is
        negative or not finite; ``key`` is the full key path, e.g.
        ``data.resources.workers.training``.
    """
    values, written = _canonical(
        mapping, _RESOURCE_NAMES, _RESOURCE_MEANINGS, key, source, _RESOURCE_VALID
    )
    try:
        return ResourcesConfig.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        field = _field_of(first["loc"][0], ResourcesConfig)
        loc = first["loc"][1:]
        where = key_path(key, written[field])
        if not loc:
            value = values[field]
            reason = (
                "expected a mapping of purpose -> ratio (e.g. training: 1.0), got "
                f"{type(value).__name__} {value!r}"
            )
            raise ConfigError(where, reason + _more(error, 2), source) from None
        purpose = loc[0]
        if loc[-1] == "[key]":
            reason = f"expected a purpose name (a string), got {purpose!r}"
        else:
            value = values[field][purpose]
            got = f"{value!r} (a boolean, not a number)" if isinstance(value, bool) else repr(value)
            reason = f"expected a finite ratio >= 0, got {got}"
        raise ConfigError(key_path(where, str(purpose)), reason + _more(error, 2), source) from None


# --------------------------------------------------------------------------------------------
# Shared parsing helpers


def _canonical(
    mapping: Mapping[str, Any] | None,
    names: Mapping[str, str],
    meanings: Mapping[str, str],
    key: str,
    source: Source,
    valid: str,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Map the section's keys to attribute names.

    Returns attribute -> value and attribute -> the key as written (for error key paths).
    Raises :class:`ConfigError` for a non-mapping, an unknown key or two keys naming the same
    attribute.
    """
    if mapping is None:
        return {}, {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            key, f"expected a mapping of settings, got {type(mapping).__name__} {mapping!r}", source
        )
    values: dict[str, Any] = {}
    written: dict[str, str] = {}
    for name, value in mapping.items():
        if not isinstance(name, str) or name not in names:
            raise ConfigError(key_path(key, str(name)), f"unknown key; {valid}", source)
        field = names[name]
        if field in written:
            raise ConfigError(
                key_path(key, name),
                f"{key_path(key, written[field])!r} and {key_path(key, name)!r} are the same "
                f"setting ({meanings[field]}); give only one of them",
                source,
            )
        values[field] = value
        written[field] = name
    return values, written


def _field_of(location: int | str, model: type[BaseModel]) -> str:
    """The attribute named by a pydantic error location (an alias or the attribute name)."""
    for field, info in model.model_fields.items():
        aliases: set[Any] = {field, info.alias}
        choices = info.validation_alias
        if isinstance(choices, AliasChoices):
            aliases.update(choices.choices)
        elif choices is not None:
            aliases.add(choices)
        if location in aliases:
            return field
    raise AssertionError(f"no field for error location {location!r}")  # pragma: no cover


def _more(error: ValidationError, depth: int) -> str:
    """`` (and N more errors)`` for errors at other locations (``depth`` leading parts)."""
    count = len({tuple(item["loc"][:depth]) for item in error.errors()}) - 1
    return f" (and {count} more error{'s' if count > 1 else ''})" if count > 0 else ""


# --------------------------------------------------------------------------------------------
# Resources by purpose


@dataclass(frozen=True)
class PurposeResources:
    """The resources of one purpose (training, validation, ...).

    Attributes
    ----------
    processes
        Worker processes sampling this purpose's patches; 0 samples in the calling process.
    pool_size
        The most images (PatchSampler objects) of this purpose open at once; 0 only for a
        purpose without images.
    ipc_chunk_size
        The most patches per sampling request to one worker process.
    join_timeout
        Seconds that stopping waits for a worker process to exit before terminating it.
    response_timeout
        Seconds that the parent waits for a worker's answer.
    poll_timeout
        Seconds that an idle worker waits for a command before exiting on its own.
    strict
        Whether an unreadable image raises (``True``) or is dropped from the pool.
    """

    processes: int
    pool_size: int
    ipc_chunk_size: int
    join_timeout: float
    response_timeout: float
    poll_timeout: float
    strict: bool = True


def purpose_resources(
    system: SystemConfig,
    resources: ResourcesConfig,
    image_counts: Mapping[str, int],
    cpu_count: int | None = None,
) -> dict[str, PurposeResources]:
    """Split the worker processes and the pool of open images over the purposes.

    Parameters
    ----------
    system
        The ``system`` section: total processes (:meth:`SystemConfig.processes`), pool size
        and the per-worker settings copied into every purpose.
    resources
        The ``data.resources`` ratios: ``processes`` (YAML ``workers``) splits the processes,
        ``open_images`` (YAML ``samplers``) splits the pool; a missing purpose has ratio 1.0.
    image_counts
        Purpose -> number of images (>= 0) it samples from; the purposes of the result, in
        this order.
    cpu_count
        The CPU count a float ``process count`` multiplies; ``None``: :func:`os.cpu_count`.

    Returns
    -------
    dict of str to PurposeResources
        Purpose -> its processes, pool size and worker settings.

    Raises
    ------
    ValueError
        An image count that is not an integer >= 0, or a bad ``cpu_count``.

    Notes
    -----
    The split is deterministic (the random tie-breaking of
    :func:`~digipath.data.distribution.distribute_population` uses a generator seeded with 0).

    *Open images.* The pool is ``min(total images, pool size)`` (all images when the pool
    size is ``None``; a warning when the pool size exceeds the number of images), split over
    the purposes that have images by the ``open_images`` ratios, each purpose getting at least
    1 and at most its own number of images; what a cap cuts off goes to the other purposes.
    A purpose of ratio 0 gets one image (more only when the others are full); when every ratio
    is 0, the pool is split equally. A pool smaller than the number of purposes with images is
    raised to one image per purpose (with a warning). A purpose without images gets 0.

    *Processes.* The total ``P`` is split over the purposes that have images and a
    ``processes`` ratio > 0 by those ratios, each getting at least 1 when ``P`` is at least the
    number of such purposes (otherwise some get 0 and are sampled in the calling process).
    ``P == 0`` gives 0 everywhere; a purpose of ratio 0 gets 0. A purpose never gets more
    processes than open images (the extra ones would idle): when the split gives it more, a
    warning is logged, it is capped at its pool and what was cut off goes to purposes with
    room left, so the processes sum to ``P``, or less when ``P`` exceeds the open images.
    """
    counts: dict[str, int] = {}
    for purpose, count in image_counts.items():
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise ValueError(f"image count of {purpose!r} must be an integer >= 0, got {count!r}")
        counts[purpose] = int(count)
    total_processes = system.processes(cpu_count)
    if not counts:
        return {}
    rng = np.random.default_rng(0)
    pools = _split_pool(system.pool_size, resources.open_image_ratios(counts), counts, rng)
    processes = _split_processes(total_processes, resources.process_ratios(counts), pools, rng)
    return {
        purpose: PurposeResources(
            processes=processes[purpose],
            pool_size=pools[purpose],
            ipc_chunk_size=system.ipc_chunk_size,
            join_timeout=system.join_timeout,
            response_timeout=system.response_timeout,
            poll_timeout=system.poll_timeout,
            strict=system.strict,
        )
        for purpose in counts
    }


def _split_pool(
    pool_size: int | None,
    ratios: dict[str, float],
    counts: dict[str, int],
    rng: np.random.Generator,
) -> dict[str, int]:
    total = sum(counts.values())
    pools = dict.fromkeys(counts, 0)
    if pool_size is not None and pool_size > total:
        logger.warning(
            "pool size %d exceeds the number of images (%d); all %d images are opened",
            pool_size,
            total,
            total,
        )
    pool = total if pool_size is None else min(total, pool_size)
    active = [purpose for purpose, count in counts.items() if count > 0]
    if not active:
        return pools
    if pool < len(active):
        logger.warning(
            "pool size %d is smaller than the number of purposes with images (%d); opening "
            "one image per purpose",
            pool,
            len(active),
        )
        pool = len(active)
    shares = {purpose: ratios[purpose] for purpose in active}
    if not any(shares.values()):
        shares = dict.fromkeys(active, 1.0)
    split = distribute_population(
        pool, shares, rng, minimum=1, maximum={purpose: counts[purpose] for purpose in active}
    )
    pools.update(split)
    return pools


def _split_processes(
    total: int, ratios: dict[str, float], pools: dict[str, int], rng: np.random.Generator
) -> dict[str, int]:
    processes = dict.fromkeys(pools, 0)
    eligible = [purpose for purpose in pools if pools[purpose] > 0 and ratios[purpose] > 0]
    if total == 0 or not eligible:
        return processes
    shares = {purpose: ratios[purpose] for purpose in eligible}
    if total < len(eligible):
        logger.info(
            "%d worker processes for %d purposes: some purposes get none and are sampled in the "
            "calling process",
            total,
            len(eligible),
        )
    split = distribute_population(total, shares, rng, minimum=1 if total >= len(eligible) else 0)
    over = [purpose for purpose in eligible if split[purpose] > pools[purpose]]
    if over:
        for purpose in over:
            logger.warning(
                "purpose %r would get %d worker processes but has only %d open images; the "
                "extra processes would idle, so it gets %d",
                purpose,
                split[purpose],
                pools[purpose],
                pools[purpose],
            )
        capped = min(total, sum(pools[purpose] for purpose in eligible))
        split = distribute_population(
            capped,
            shares,
            rng,
            minimum=1 if capped >= len(eligible) else 0,
            maximum={purpose: pools[purpose] for purpose in eligible},
        )
    processes.update(split)
    return processes
