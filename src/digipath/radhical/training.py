"""Per-level classifiers: one experiment per level, from one parameter file.

RADHicaL trains the same small network once per magnification, on that level's patch
database (``digipath radhical patches``). :func:`train_levels` runs one
:class:`~digipath.training.ExperimentCommander` per level: the parameter file is a normal
experiment file plus a ``levels`` section of per-level overrides, merged key by key into the
other sections (``label ratios``, ``label map`` and ``patch shapes`` are replaced whole, as by
the command line's overrides)::

    model: {type: levelnet, widths: [32, 32, 64]}
    training: {epoch count: 20, ...}
    data:
      images: {patch shapes: {0.25: [32, 32]}}
      labels: {label ratios: {0: 1, 1: 1, 2: 1}}
    levels:
      0:                                  # the finest level: two classes
        data: {labels: {label ratios: {0: 1, 1: 1}}}
      3: {training: {epoch count: 10}}

Level keys are level indices (0 = finest) or spacings in µm/px as in the database names. The
patch-shape key is set to each level's spacing. Levels run one after another, in parallel
local processes (``processes``), or as tasks on a Dask cluster (``scheduler``); one level alone
(``levels=[k]``) is what a cluster job array runs. Each experiment resumes where it stopped
with ``resume``.

When every requested level is trained, ``<progress dir>/levels.yaml`` lists the levels: spacing
and best model file, finest first (the models ``digipath radhical apply`` runs).
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from digipath.errors import ConfigError
from digipath.training.parameters import REPLACED_WHOLE
from digipath.training.progress import write_atomic

logger = logging.getLogger(__name__)

__all__ = ["LEVELS_FILE", "level_databases", "level_parameters", "read_levels", "train_levels"]

LEVELS_FILE = "levels.yaml"
_NAME = re.compile(r"^level_(\d+)_([0-9.]+)um$")


def level_databases(folder: str | os.PathLike[str]) -> list[tuple[int, float, Path]]:
    """The ``(index, spacing µm/px, path)`` of the level databases in ``folder``, finest first."""
    from digipath.data.patch_database import is_database

    found = []
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError("databases", "not a folder of level patch databases", os.fspath(folder))
    for path in sorted(root.iterdir()):
        match = _NAME.match(path.name)
        if match and is_database(path):
            found.append((int(match.group(1)), float(match.group(2)), path))
    if not found:
        raise ConfigError(
            "databases",
            "no level databases (level_<index>_<spacing>um/ folders with a database.yaml)",
            os.fspath(folder),
        )  # fmt: skip
    found.sort()
    return found


def _merge(base: dict, override: Mapping) -> dict:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if (
            isinstance(value, Mapping)
            and isinstance(result.get(key), dict)
            and key not in REPLACED_WHOLE
        ):
            result[key] = _merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _level_key(levels: Mapping, index: int, spacing: float) -> Any:
    for key in levels:
        if isinstance(key, bool):
            continue
        if isinstance(key, int) and key == index:
            return key
        if isinstance(key, float) and abs(key - spacing) <= 1e-6 * max(1.0, spacing):
            return key
        if isinstance(key, str):
            try:
                number = float(key)
            except ValueError:
                continue
            if (key.isdigit() and int(key) == index) or (
                not key.isdigit() and abs(number - spacing) <= 1e-6 * max(1.0, spacing)
            ):
                return key
    return None


def level_parameters(
    parameters: Mapping[str, Any], index: int, spacing: float, source: str | None = None
) -> dict[str, Any]:
    """The experiment parameters of one level: the file's sections with its overrides merged.

    The ``levels`` section is removed; ``data.images.patch shapes`` is keyed by ``spacing``.
    """
    parameters = copy.deepcopy(dict(parameters))
    levels = parameters.pop("levels", None) or {}
    if not isinstance(levels, Mapping):
        raise ConfigError("levels", "expected a mapping of level -> overrides", source)
    key = _level_key(levels, index, spacing)
    if key is not None:
        override = levels[key]
        if not isinstance(override, Mapping):
            raise ConfigError(f"levels.{key}", "expected a mapping of overrides", source)
        parameters = _merge(parameters, override)
    data = parameters.setdefault("data", {}) or {}
    parameters["data"] = data
    images = data.setdefault("images", {}) or {}
    data["images"] = images
    shapes = images.get("patch shapes") or {}
    if len(shapes) > 1:
        raise ConfigError("data.images.patch shapes", "a level classifier has one patch shape",
                          source)  # fmt: skip
    shape = next(iter(shapes.values())) if shapes else [32, 32]
    images["patch shapes"] = {float(spacing): list(shape)}
    return parameters


def _present_labels(parameters: dict[str, Any], database: Path, index: int) -> dict[str, Any]:
    """Set to 0 the label ratios of classes a level's database has no patch of (warned).

    A class can be absent at a level: "all positive" 4x pixels are rare (a coarse pixel must
    lie wholly inside a nucleus), and a small data set may have none.
    """
    from digipath.data.patch_database import PatchDatabase

    labels = (parameters.get("data") or {}).get("labels") or {}
    ratios = labels.get("label ratios")
    if not isinstance(ratios, Mapping):
        return parameters
    database = PatchDatabase(database)
    if "training" not in database.purposes:
        return parameters  # the experiment says what is missing
    counts = database.label_counts("training")
    absent = {label for label in ratios if counts.get(int(label), 0) == 0}
    for label in sorted(absent):
        if ratios[label]:
            logger.warning(
                "level %d: %s has no %r patch (label %s): its ratio is set to 0", index,
                database.folder, database.classes[int(label)], label,
            )  # fmt: skip
    labels["label ratios"] = {k: (0.0 if k in absent else v) for k, v in ratios.items()}
    return parameters


def _train_one(
    parameters: dict[str, Any], database: str, name: str, progress_dir: str, seed: int | None,
    resume: bool, device: str | None, source: str | None,
) -> dict[str, Any]:  # fmt: skip
    """Train one level (runs in a worker process or a Dask task too)."""
    from digipath.training import ExperimentCommander

    commander = ExperimentCommander(
        parameters, database, experiment_name=name, progress_dir=progress_dir, seed=seed,
        resume=resume, device=device,
    )  # fmt: skip
    if source is not None:
        commander.source = source
    summary = commander.execute()
    best = commander.progress_directory / f"{name}_best_model.safetensors"
    return {"summary": summary, "model": str(best)}


def train_levels(
    parameters: str | os.PathLike[str] | Mapping[str, Any],
    databases: str | os.PathLike[str],
    progress_dir: str | os.PathLike[str],
    *,
    levels: Sequence[int] | None = None,
    processes: int = 1,
    scheduler: str | None = None,
    seed: int | None = 0,
    resume: bool = False,
    device: str | None = None,
    progress: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[int, dict[str, Any]]:
    """Train the classifier of every level (see the module docstring).

    Parameters
    ----------
    parameters
        The parameter file (path) or mapping, with an optional ``levels`` section.
    databases
        The folder of level databases written by :func:`~digipath.radhical.patches.
        extract_level_patches` (``level_<index>_<spacing>um/``).
    progress_dir
        Experiments are written to ``<progress_dir>/level_<index>/``.
    levels
        The level indices to train (default: all).
    processes
        Levels trained at once in local processes (1: one after another, in this process).
    scheduler
        Address of a Dask scheduler: each level is a task on the cluster.
    seed
        Seed of every level's experiment (the level index is added).
    resume
        Continue interrupted experiments.
    device
        Model device.
    progress
        ``callback(level index, result)`` as each level ends.

    Returns
    -------
    dict
        ``{level index: {"summary": ..., "model": best model path}}``.
    """
    source = None
    if isinstance(parameters, (str, os.PathLike)):
        from digipath.data.generator_config import load_parameters

        source = os.fspath(parameters)
        parameters = load_parameters(parameters)
    found = level_databases(databases)
    wanted = {index for index, _, _ in found} if levels is None else set(levels)
    unknown = sorted(wanted - {index for index, _, _ in found})
    if unknown:
        raise ConfigError(
            "levels", f"no database for level {unknown[0]} in {databases}", source
        )  # fmt: skip
    progress_dir = Path(progress_dir)
    progress_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for index, spacing, path in found:
        if index not in wanted:
            continue
        level = _present_labels(level_parameters(parameters, index, spacing, source), path, index)
        jobs.append((index, spacing, (
            level, str(path), f"level_{index}", str(progress_dir),
            None if seed is None else int(seed) + index, resume, device, source,
        )))  # fmt: skip
    results: dict[int, dict[str, Any]] = {}

    def finished(index: int, result: dict[str, Any]) -> None:
        results[index] = result
        logger.info("level %d trained: %s", index, result["model"])
        if progress is not None:
            progress(index, result)

    if scheduler is not None:
        from distributed import Client, as_completed

        with Client(scheduler) as client:
            futures = {client.submit(_train_one, *arguments, pure=False): index
                       for index, _, arguments in jobs}  # fmt: skip
            for future in as_completed(futures):
                finished(futures[future], future.result())
    elif processes > 1 and len(jobs) > 1:
        context = get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(min(processes, len(jobs)), mp_context=context) as pool:
            futures = {pool.submit(_train_one, *arguments): index for index, _, arguments in jobs}
            for future, index in futures.items():
                finished(index, future.result())
    else:
        for index, _, arguments in jobs:
            finished(index, _train_one(*arguments))
    _write_levels(progress_dir, found)
    return results


def _write_levels(progress_dir: Path, found: list[tuple[int, float, Path]]) -> None:
    """Write ``levels.yaml`` when every level has a best model."""
    entries = []
    for index, spacing, _ in found:
        model = progress_dir / f"level_{index}" / f"level_{index}_best_model.safetensors"
        if not model.exists():
            return
        entries.append({"level": index, "spacing": spacing, "model": str(model.resolve())})
    write_atomic(progress_dir / LEVELS_FILE, yaml.safe_dump({"levels": entries}, sort_keys=False))


def read_levels(path: str | os.PathLike[str]) -> list[tuple[float, str]]:
    """``[(spacing µm/px, model path)]`` of a ``levels.yaml``, finest first.

    Relative model paths are relative to the file.
    """
    source = os.fspath(path)
    try:
        document = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError("", f"cannot read: {error.strerror}", source) from None
    entries = document.get("levels") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError("levels", "expected a list of levels with spacing and model", source)
    result = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or "spacing" not in entry or "model" not in entry:
            raise ConfigError(f"levels.{position}", "expected spacing and model", source)
        model = Path(entry["model"])
        if not model.is_absolute():
            model = Path(source).parent / model
        result.append((float(entry["spacing"]), str(model)))
    result.sort()
    return result
