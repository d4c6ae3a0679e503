"""Batch generators from a DigitalPathology training parameter file and a data config.

:func:`batch_generators` reads the sections of the parameter YAML that concern batches, as the
original library named them, and builds one :class:`~digipath.data.batch_generator.BatchGenerator`
per purpose:

``system``
    processes, pool size, request size, timeouts, ``strict`` (:mod:`digipath.data.system`);
``data.images``
    ``patch shapes`` (``{spacing in µm/px: [rows, cols]}``; the keys must be spacings such as
    ``2.0``, never level indices) and ``channels``;
``data.labels``
    ``mask pixel spacing``, ``label mode`` (``central``, ``synthesize``, ``load``),
    ``label map`` (mask value -> network class), ``label ratios``, ``strict selection``,
    ``one hot``;
``data.spacing tolerance``, ``data.normalization``, ``data.weight mapping``,
``data.categories`` (ratios of the open images), ``data.purposes`` (how the data config's
images are split between training and validation), ``data.resources`` (processes and open
images per purpose);
``augmentation``
    one augmenter pool per purpose (:func:`~digipath.augment.load_augmentation`);
``training``
    ``iterations.<purpose>.iteration count`` x ``batch size`` sizes the main and the read
    buffers (as in the original), ``buffer chunk size`` the transfer chunks.

Every key has the original's meaning and a documented default; a wrong value raises
:class:`~digipath.errors.ConfigError` naming its key path (``data.labels.label ratios.3``).

**From a patch database.** When ``data`` is a
:class:`~digipath.data.patch_database.PatchDatabase` (or its folder), the same sections build
one :class:`~digipath.data.database_generator.DatabaseBatchGenerator` per purpose of the
database: ``data.images.patch shapes`` must hold one entry whose shape is the database's (and
whose spacing matches the database's within ``data.spacing tolerance``), ``label ratios`` and
``label map`` are over the database labels (default ratios: equal over the labels a purpose
holds), ``label mode`` must be ``central``; ``normalization``, ``one hot``, ``channels``,
``augmentation`` and the buffer sizes of ``training`` mean what they mean for slides, and the
``system`` process count sets the loader threads. The keys about slides (``mask pixel
spacing``, ``categories``, ``purposes``, ``resources``, ``strict selection``) are accepted and
not used.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from digipath.config_section import Section
from digipath.data.batch_generator import BatchGenerator
from digipath.data.config import DataConfig, key_path
from digipath.data.database_generator import DatabaseBatchGenerator, shard_indices
from digipath.data.labels import LabelMap
from digipath.data.normalization import normalizer_from_config
from digipath.data.patch_database import PatchDatabase, is_database
from digipath.data.sampler import LABEL_MODES
from digipath.data.system import load_resources, load_system, purpose_resources
from digipath.data.weights import weight_mappers_from_config
from digipath.errors import ConfigError, LabelMapError

__all__ = ["as_database", "batch_generators", "load_parameters"]

logger = logging.getLogger(__name__)


def load_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a parameter YAML file into a mapping (errors name the file)."""
    source = os.fspath(path)
    try:
        content = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError("", f"cannot read the parameter file: {error.strerror}", source) from None
    except yaml.YAMLError as error:
        raise ConfigError("", f"not valid YAML: {error}", source) from None
    if not isinstance(content, Mapping):
        raise ConfigError("", "a parameter file must hold a mapping of sections", source)
    return dict(content)


def _patch_shapes(images: Section) -> dict[float, tuple[int, int]]:
    value = images.get("patch shapes")
    if not isinstance(value, Mapping) or not value:
        raise images.error(
            "patch shapes", "expected {spacing in µm/px: [rows, cols]}, e.g. 2.0: [128, 128]"
        )
    shapes: dict[float, tuple[int, int]] = {}
    for spacing, shape in value.items():
        where = key_path(images.path("patch shapes"), str(spacing))
        if isinstance(spacing, bool) or isinstance(spacing, int):
            raise ConfigError(
                where,
                f"{spacing} is a level index, not a pixel spacing: write the spacing in µm/px "
                f"as a float ({float(spacing)}) to mean {float(spacing):g} µm/px",
                images.source,
            )
        if not isinstance(spacing, float) or not math.isfinite(spacing) or spacing <= 0:
            raise ConfigError(where, f"expected a pixel spacing > 0 in µm/px, got {spacing!r}",
                              images.source)  # fmt: skip
        valid = (
            isinstance(shape, (list, tuple)) and len(shape) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
        )  # fmt: skip
        if not valid:
            raise ConfigError(where, f"expected [rows, cols] of positive integers, got {shape!r}",
                              images.source)  # fmt: skip
        shapes[float(spacing)] = (int(shape[0]), int(shape[1]))
    return shapes


def _channels(images: Section) -> tuple[int, ...] | None:
    value = images.get("channels")
    if value is None:
        return None
    valid = (
        isinstance(value, list) and value
        and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in value)
    )  # fmt: skip
    if not valid:
        raise images.error("channels", f"expected a list of channel indices >= 0, got {value!r}")
    if len(set(value)) != len(value):
        raise images.error("channels", f"a channel is listed twice: {value}")
    return tuple(value)


SECTIONS = ("model", "system", "training", "data", "augmentation")
DATA_KEYS = ("images", "labels", "spacing tolerance", "normalization", "weight mapping",
             "categories", "purposes", "resources")  # fmt: skip
LABEL_KEYS = ("mask pixel spacing", "label mode", "label map", "label ratios",
              "strict selection", "one hot")  # fmt: skip
TRAINING_KEYS = ("epoch count", "metric name", "higher is better", "averaging length",
                 "source step length", "iteration log percent", "buffer chunk size", "learning",
                 "boosting", "iterations")  # fmt: skip


def _label_map(labels: Section) -> LabelMap | None:
    if labels.get("label map") is None:
        return None
    try:
        return LabelMap(labels.get("label map"))
    except (LabelMapError, TypeError, ValueError) as error:
        raise labels.error("label map", str(error)) from None


def _check_ratios_in_map(labels: Section, ratios: Mapping[int, float], label_map) -> None:
    if label_map is not None:
        missing = sorted(set(ratios) - set(label_map.mapping))
        if missing:
            raise labels.error("label ratios", f"mask values {missing} are not in the label map")


def _augmenter_pools(top: Section, generator: np.random.Generator) -> dict[str, Any]:
    augmentation = top.get("augmentation")
    if not augmentation:
        return {}
    from digipath.augment import load_augmentation

    return load_augmentation({"augmentation": augmentation}, rng=generator.spawn(1)[0])


def _buffer_sizes(iterations: Mapping, purpose: str, source: str | None) -> tuple[int, int]:
    """``(batch size, buffer size)`` of ``training.iterations.<purpose>``."""
    counts_of = Section(
        iterations.get(purpose), key_path("training", "iterations", purpose), source,
        ("repetition count", "iteration count", "batch size"),
    )  # fmt: skip
    batch = int(counts_of.number("batch size", 32, low=1))
    return batch, int(counts_of.number("iteration count", 100, low=1)) * batch


def as_database(data: object) -> PatchDatabase | None:
    """``data`` as a patch database: itself, or the database a path names; else ``None``.

    A folder is always read as a database (a data config is a file), so that an incomplete
    one (no index) is refused with :class:`~digipath.data.patch_database.PatchDatabaseError`.
    """
    if isinstance(data, PatchDatabase):
        return data
    if isinstance(data, (str, os.PathLike)) and (is_database(data) or Path(data).is_dir()):
        return PatchDatabase(data)
    return None


def batch_generators(
    parameters: Mapping[str, Any] | str | os.PathLike[str],
    data: DataConfig | PatchDatabase | str | os.PathLike[str],
    purposes: list[str] | None = None,
    *,
    cpu_count: int | None = None,
    seed: np.random.Generator | int | None = None,
    prefetch: bool = True,
    source: str | None = None,
    shard: tuple[int, int] | None = None,
) -> dict[str, BatchGenerator | DatabaseBatchGenerator]:
    """One batch generator per purpose, as a DigitalPathology parameter file says.

    Parameters
    ----------
    parameters
        The parameter file (path) or its loaded mapping (sections ``system``, ``data``,
        ``augmentation``, ``training``; see the module docstring).
    data
        The data config (path or :class:`~digipath.data.config.DataConfig`): a config that is
        not yet split by purpose is distributed with ``data.purposes``; a distributed one must
        match those ratios. Or a patch database (a
        :class:`~digipath.data.patch_database.PatchDatabase` or its folder): its purposes are
        used as they are.
    purposes
        The purposes to build (default: every purpose of ``data.purposes``, or of the
        database).
    cpu_count
        CPUs a float ``process count`` multiplies (default: this machine's).
    seed
        Seed of every draw; each purpose gets its own stream.
    prefetch
        Passed to every :class:`BatchGenerator`.
    source
        The parameter file's name for error messages, when ``parameters`` is a mapping.
    shard
        Patch database only: ``(rank, world size)``; each generator draws from this rank's
        share of the patches (:func:`~digipath.data.database_generator.shard_indices`).

    Returns
    -------
    dict
        ``{purpose: generator}``, not started: :class:`BatchGenerator` for a data config,
        :class:`~digipath.data.database_generator.DatabaseBatchGenerator` for a database.
    """
    if isinstance(parameters, (str, os.PathLike)):
        source = os.fspath(parameters)
        parameters = load_parameters(parameters)
    database = as_database(data)
    if database is not None:
        return _database_generators(
            parameters, database, purposes, cpu_count=cpu_count, seed=seed, source=source,
            shard=shard,
        )  # fmt: skip
    if isinstance(data, (str, os.PathLike)):
        data = DataConfig.load(data)
    top = Section(parameters, "", source, SECTIONS)
    section = top.section("data", DATA_KEYS)
    images = section.section("images", ("patch shapes", "channels"))
    labels = section.section("labels", LABEL_KEYS)
    patch_shapes = _patch_shapes(images)
    channels = _channels(images)
    mask_spacing = labels.number("mask pixel spacing", None, open_low=True)
    label_mode = labels.get("label mode", "central")
    if label_mode not in LABEL_MODES:
        raise labels.error(
            "label mode", f"expected one of {', '.join(LABEL_MODES)}, got {label_mode!r}"
        )
    label_map = _label_map(labels)
    label_ratios = labels.ratios("label ratios", int)
    _check_ratios_in_map(labels, label_ratios, label_map)
    classes = label_map.classes if label_map is not None else max(label_ratios) + 1
    tolerance = section.number("spacing tolerance", 0.25)
    normalizer = normalizer_from_config(
        section.get("normalization"), key_path("data", "normalization"), source
    )
    patch_weights, batch_weights = weight_mappers_from_config(
        section.get("weight mapping"), classes, label_mode, key_path("data", "weight mapping"),
        source,
    )  # fmt: skip
    purpose_ratios = section.ratios("purposes", str, {"training": 1.0, "validation": 1.0})
    generator = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if data.distribution is None:
        data = data.distribute(purpose_ratios, generator)
    else:
        data.validate(purpose_ratios)
    collection = data.collection()
    wanted = list(purpose_ratios) if purposes is None else list(purposes)
    for purpose in wanted:
        if purpose not in collection:
            raise section.error("purposes", f"the data config has no purpose {purpose!r}")
    categories = section.get("categories")
    category_ratios = section.ratios("categories", str) if categories is not None else None
    system = load_system(top.get("system"), "system", source)
    resources = load_resources(section.get("resources"), key_path("data", "resources"), source)
    counts = {p: sum(len(items) for items in collection[p].values()) for p in wanted}
    shares = purpose_resources(system, resources, counts, cpu_count)
    pools = _augmenter_pools(top, generator)
    training = top.section("training", TRAINING_KEYS)
    chunk = training.get("buffer chunk size")
    iterations = training.get("iterations") or {}
    streams = generator.spawn(len(wanted))
    result: dict[str, BatchGenerator | DatabaseBatchGenerator] = {}
    for purpose, stream in zip(wanted, streams, strict=True):
        batch, buffer = _buffer_sizes(iterations, purpose, source)
        share = shares[purpose]
        result[purpose] = BatchGenerator(
            collection[purpose],
            label_ratios=label_ratios, patch_shapes=patch_shapes, mask_spacing=mask_spacing,
            main_buffer_size=buffer, read_buffer_size=buffer,
            buffer_chunk_size=int(chunk) if chunk else None,
            category_ratios=(
                {c: r for c, r in category_ratios.items() if c in collection[purpose]}
                if category_ratios else None
            ),
            tolerance=tolerance, channels=channels, label_mode=label_mode, label_map=label_map,
            strict_selection=labels.boolean("strict selection", False),
            augmenter=pools.get(purpose), normalizer=normalizer, patch_weights=patch_weights,
            batch_weights=batch_weights, one_hot=labels.boolean("one hot", True),
            processes=share.processes, pool_size=share.pool_size or None,
            ipc_chunk_size=share.ipc_chunk_size, join_timeout=share.join_timeout,
            response_timeout=share.response_timeout, poll_timeout=share.poll_timeout,
            strict=share.strict, prefetch=prefetch, batch_size=batch, seed=stream, name=purpose,
        )  # fmt: skip
    return result


def _database_generators(
    parameters: Mapping[str, Any],
    database: PatchDatabase,
    purposes: list[str] | None,
    *,
    cpu_count: int | None,
    seed: np.random.Generator | int | None,
    source: str | None,
    shard: tuple[int, int] | None,
) -> dict[str, BatchGenerator | DatabaseBatchGenerator]:
    """:func:`batch_generators` for a patch database (see the module docstring)."""
    folder = database.folder
    top = Section(parameters, "", source, SECTIONS)
    section = top.section("data", DATA_KEYS)
    images = section.section("images", ("patch shapes", "channels"))
    labels = section.section("labels", LABEL_KEYS)
    patch_shapes = _patch_shapes(images)
    where = images.path("patch shapes")
    if len(patch_shapes) != 1:
        raise images.error(
            "patch shapes",
            f"the patch database {folder} holds patches at one spacing: give one entry "
            f"{{spacing: {list(database.patch_shape)}}}, got {len(patch_shapes)}",
        )
    ((spacing, shape),) = patch_shapes.items()
    where = key_path(where, str(spacing))
    if tuple(shape) != tuple(database.patch_shape):
        raise ConfigError(
            where,
            f"{list(shape)} differs from the patch shape of the patch database {folder} "
            f"({list(database.patch_shape)}); a database's patches cannot be resized here",
            source,
        )
    tolerance = section.number("spacing tolerance", 0.25)
    if database.spacing is not None:
        if abs(spacing - database.spacing) > tolerance * database.spacing:
            raise ConfigError(
                where,
                f"spacing {spacing:g} µm/px differs from the patch database {folder}'s "
                f"{database.spacing:g} µm/px by more than the spacing tolerance {tolerance:g}",
                source,
            )
        spacing = float(database.spacing)
    channels = _channels(images)
    if channels is not None and max(channels) >= database.channels:
        raise images.error(
            "channels",
            f"{list(channels)}: the patch database {folder} has {database.channels} channels",
        )
    label_mode = labels.get("label mode", "central")
    if label_mode != "central":
        raise labels.error(
            "label mode",
            f"{label_mode!r}: a patch database holds one label per patch, so the label mode "
            "must be 'central'",
        )
    if labels.get("mask pixel spacing") is not None:
        labels.number("mask pixel spacing", None, open_low=True)  # validated, not used
    labels.boolean("strict selection", False)
    label_map = _label_map(labels)
    label_ratios = None
    if labels.get("label ratios") is not None:
        label_ratios = labels.ratios("label ratios", int)
        _check_ratios_in_map(labels, label_ratios, label_map)
        for label in label_ratios:
            if not 0 <= label < len(database.classes):
                raise ConfigError(
                    key_path(labels.path("label ratios"), str(label)),
                    f"the patch database {folder} has labels 0 .. {len(database.classes) - 1} "
                    f"({', '.join(database.classes)})",
                    source,
                )
    classes = label_map.classes if label_map is not None else len(database.classes)
    normalizer = normalizer_from_config(
        section.get("normalization"), key_path("data", "normalization"), source
    )
    weight_mappers_from_config(
        section.get("weight mapping"), classes, "central", key_path("data", "weight mapping"),
        source,
    )  # fmt: skip
    if section.get("categories") is not None:
        section.ratios("categories", str)
    load_resources(section.get("resources"), key_path("data", "resources"), source)
    system = load_system(top.get("system"), "system", source)
    threads = max(1, min(system.processes(cpu_count), os.cpu_count() or 1))
    wanted = list(database.purposes) if purposes is None else list(purposes)
    for purpose in wanted:
        if purpose not in database.purposes:
            raise ConfigError(
                key_path("data", "purposes"),
                f"the patch database {folder} has no purpose {purpose!r}; it has "
                f"{', '.join(database.purposes) or 'none'}",
                source,
            )
    generator = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    pools = _augmenter_pools(top, generator)
    training = top.section("training", TRAINING_KEYS)
    chunk = training.get("buffer chunk size")
    iterations = training.get("iterations") or {}
    streams = generator.spawn(len(wanted))
    result: dict[str, BatchGenerator | DatabaseBatchGenerator] = {}
    for purpose, stream in zip(wanted, streams, strict=True):
        batch, buffer = _buffer_sizes(iterations, purpose, source)
        stored = np.asarray(database.labels(purpose))
        indices = None if shard is None else shard_indices(stored, *shard)
        held = np.unique(stored if indices is None else stored[indices])
        ratios = dict(label_ratios) if label_ratios else label_ratios
        for label, ratio in (label_ratios or {}).items():
            if ratio > 0 and label not in held:
                if purpose != "training" and any(
                    r > 0 and k in held for k, r in label_ratios.items()
                ):  # a small validation set may lack a class: validate on the others
                    logger.warning(
                        "%s: no %r patch of label %d (%r): validating without it", folder,
                        purpose, label, database.classes[label],
                    )  # fmt: skip
                    ratios[label] = 0.0
                    continue
                raise ConfigError(
                    key_path(labels.path("label ratios"), str(label)),
                    f"the patch database {folder} holds no {purpose!r} patch of label {label} "
                    f"({database.classes[label]!r}); set its ratio to 0",
                    source,
                )
        result[purpose] = DatabaseBatchGenerator(
            database, purpose, main_buffer_size=buffer, read_buffer_size=buffer,
            label_ratios=ratios, label_map=label_map, spacing=spacing, channels=channels,
            augmenter=pools.get(purpose), normalizer=normalizer,
            one_hot=labels.boolean("one hot", True),
            buffer_chunk_size=int(chunk) if chunk else None, threads=threads, indices=indices,
            batch_size=batch, seed=stream, name=purpose,
        )  # fmt: skip
    return result
