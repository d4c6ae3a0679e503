"""Patient-level splits: purposes and cross-validation folds with no patient in two parts.

Images of one patient are correlated; a model validated on a patient it was trained on is
judged too kindly. These functions group sources by patient and assign whole patients to
purposes (or folds), keeping the number of *items* per purpose as close as possible to the
requested ratios (and, when strata such as data-config categories are given, per stratum too).

The patient of an image comes from its file name (by default the text before the first ``_``
of the file's stem: ``P012_slide3.tif`` -> ``P012``), from a regular expression, from a
mapping image -> patient, or from a CSV table with ``image`` and ``patient`` columns.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from digipath.data.config import DataConfig, PatchSource
from digipath.data.distribution import distribute_population
from digipath.errors import SplitError

__all__ = [
    "PatientKey",
    "folds",
    "patient_key",
    "read_patient_table",
    "split_by_patient",
    "split_config",
]

T = TypeVar("T")

#: A function from an image path to its patient id.
PatientKey = Callable[[str], str]

#: What identifies patients: a regex (str or compiled), a mapping image -> patient, a CSV
#: file (``os.PathLike``), a function, or ``None`` for the default (text before the first _).
PatientSpec = str | re.Pattern[str] | Mapping[str, str] | os.PathLike[str] | PatientKey | None


# --------------------------------------------------------------------------------------------
# Patient ids


def _default_patient(path: str) -> str:
    return Path(path).stem.split("_", 1)[0]


def _pattern_key(pattern: re.Pattern[str]) -> PatientKey:
    def key(path: str) -> str:
        stem = Path(path).stem
        match = pattern.search(stem)
        if match is None:
            raise SplitError(
                "patient pattern",
                f"the file name {stem!r} (of {path}) does not match {pattern.pattern!r}",
            )
        if "patient" in pattern.groupindex:
            return match.group("patient")
        return match.group(1) if pattern.groups else match.group(0)

    return key


def _mapping_key(mapping: Mapping[str, str], source: str | None = None) -> PatientKey:
    exact = {os.path.normpath(str(image)): str(patient) for image, patient in mapping.items()}
    names: dict[str, str] = {}
    stems: dict[str, str] = {}
    for image, patient in exact.items():
        names.setdefault(os.path.basename(image), patient)
        stems.setdefault(Path(image).stem, patient)

    def key(path: str) -> str:
        for table, lookup in (
            (exact, os.path.normpath(path)),
            (names, os.path.basename(path)),
            (stems, Path(path).stem),
        ):
            if lookup in table:
                return table[lookup]
        raise SplitError(
            "patient",
            f"the image {path} has no patient in the table (by path, name or stem)",
            source,
        )

    return key


def read_patient_table(
    path: str | os.PathLike[str], image_column: str = "image", patient_column: str = "patient"
) -> dict[str, str]:
    """Read an image -> patient table from a CSV file with a header row.

    Parameters
    ----------
    path
        The CSV file.
    image_column, patient_column
        Column names of the image (path, file name or stem) and of the patient id.

    Returns
    -------
    dict
        Image -> patient id.

    Raises
    ------
    SplitError
        Missing file or column, an empty cell, or an image listed with two patients.
    """
    source = os.fspath(path)
    try:
        with open(source, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
            header = rows[0].keys() if rows else []
    except FileNotFoundError:
        raise SplitError("", "no such file", source) from None
    for column in (image_column, patient_column):
        if column not in header:
            raise SplitError(
                column, f"no such column; columns are {', '.join(header) or 'none'}", source
            )
    table: dict[str, str] = {}
    for number, row in enumerate(rows, start=2):
        image, patient = (row[image_column] or "").strip(), (row[patient_column] or "").strip()
        if not image or not patient:
            raise SplitError(f"line {number}", "empty image or patient cell", source)
        if table.get(image, patient) != patient:
            raise SplitError(
                f"line {number}",
                f"the image {image} is listed with patients {table[image]} and {patient}",
                source,
            )
        table[image] = patient
    return table


def patient_key(patient: PatientSpec = None) -> PatientKey:
    """Make a function image path -> patient id.

    Parameters
    ----------
    patient
        ``None``: the text before the first ``_`` of the file's stem (the whole stem when it
        has no ``_``). A ``str`` or compiled regex: searched in the file's stem; the id is the
        group named ``patient``, else group 1, else the whole match. A mapping image ->
        patient (images by path, file name or stem). An ``os.PathLike``: a CSV file read by
        :func:`read_patient_table`. A callable is returned unchanged.

    Returns
    -------
    PatientKey

    Raises
    ------
    SplitError
        An invalid regular expression (the returned function raises it for an image without
        patient).
    """
    if patient is None:
        return _default_patient
    if isinstance(patient, str):
        try:
            patient = re.compile(patient)
        except re.error as error:
            raise SplitError("patient pattern", f"invalid regular expression: {error}") from None
    if isinstance(patient, re.Pattern):
        return _pattern_key(patient)
    if isinstance(patient, os.PathLike):
        return _mapping_key(read_patient_table(patient), os.fspath(patient))
    if isinstance(patient, Mapping):
        return _mapping_key(patient)
    if callable(patient):
        return patient
    raise SplitError("patient", f"expected a pattern, mapping, CSV path or function: {patient!r}")


def _image_path(item: Any) -> str:
    return item.image if isinstance(item, PatchSource) else os.fspath(item)


# --------------------------------------------------------------------------------------------
# Assignment


def _check_ratios(ratios: Mapping[Hashable, float]) -> None:
    if not ratios:
        raise SplitError("ratios", "expected at least one purpose")
    for name, ratio in ratios.items():
        if isinstance(ratio, bool) or not np.isfinite(ratio) or ratio < 0:
            raise SplitError(f"ratios.{name}", f"expected a finite ratio >= 0, got {ratio!r}")
    if sum(ratios.values()) <= 0:
        raise SplitError("ratios", "the ratios are all zero")


def _added_deviation(current: np.ndarray, targets: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Change of each part's total absolute deviation from its targets when ``row`` is added."""
    return np.abs(current + row - targets).sum(axis=-1) - np.abs(current - targets).sum(axis=-1)


def _fill_empty(
    counts: np.ndarray,
    targets: np.ndarray,
    positive: np.ndarray,
    assignment: np.ndarray,
    current: np.ndarray,
    sizes: np.ndarray,
) -> None:
    """Give every empty part with a positive ratio one group, taken from a zero-ratio part or
    from a part that keeps one (the move that adds the least deviation), in place."""
    for part in np.flatnonzero(positive & (sizes == 0)):
        best: tuple[int, int] | None = None
        movable = (sizes[assignment] >= 2) | ~positive[assignment]
        for group in np.flatnonzero(movable):
            source, row = assignment[group], counts[group]
            change = _added_deviation(current[part], targets[part], row) + _added_deviation(
                current[source], targets[source], -row
            )
            if best is None or change < best[0]:
                best = (int(change), int(group))
        if best is None:
            return
        group = best[1]
        source = assignment[group]
        assignment[group] = part
        current[source] -= counts[group]
        current[part] += counts[group]
        sizes[source] -= 1
        sizes[part] += 1


def _assign(
    counts: np.ndarray, targets: np.ndarray, positive: np.ndarray, generator: np.random.Generator
) -> np.ndarray:
    """Assign groups (rows of ``counts``: items per stratum) to parts (rows of ``targets``).

    Greedy (largest groups first, random order among equal sizes) to the part whose deviation
    from its targets grows least, then single-group moves while they lower the total absolute
    deviation. Parts with a positive ratio are kept non-empty when there are enough groups.
    """
    groups, parts = counts.shape[0], targets.shape[0]
    order = generator.permutation(groups)
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    current = np.zeros_like(targets)
    assignment = np.full(groups, -1)
    for group in order:
        row = counts[group]
        cost = _added_deviation(current, targets, row)
        room = targets.sum(axis=1) - current.sum(axis=1)
        part = min(range(parts), key=lambda p: (cost[p], -room[p], p))
        assignment[group] = part
        current[part] += row
    sizes = np.bincount(assignment, minlength=parts) if groups else np.zeros(parts, int)
    if groups >= positive.sum():
        _fill_empty(counts, targets, positive, assignment, current, sizes)
    for _ in range(4 * groups):
        improved = False
        for group in order:
            source = assignment[group]
            if positive[source] and sizes[source] == 1 and groups >= positive.sum():
                continue
            row = counts[group]
            gain_out = -_added_deviation(current[source : source + 1], targets[source], -row)[0]
            deltas = _added_deviation(current, targets, row).astype(float)
            deltas[source] = np.inf
            part = int(np.argmin(deltas))
            if deltas[part] < gain_out:
                assignment[group] = part
                current[source] -= row
                current[part] += row
                sizes[source] -= 1
                sizes[part] += 1
                improved = True
        if not improved:
            break
    return assignment


def split_by_patient(
    sources: Sequence[T],
    ratios: Mapping[Hashable, float],
    rng: np.random.Generator | int | None = None,
    *,
    patient: PatientSpec = None,
    strata: Callable[[T], Hashable] | None = None,
    path: Callable[[T], str] | None = None,
) -> dict[Hashable, list[T]]:
    """Split sources over purposes so that no patient is in two purposes.

    Parameters
    ----------
    sources
        Items to split: :class:`PatchSource` (its ``image`` identifies the patient), paths, or
        anything ``patient`` accepts when it is a function of the item's path.
    ratios
        Purpose -> ratio (>= 0, not all zero; normalised) of the number of items.
    rng
        Generator or seed (tie-breaking among equal-sized patients).
    patient
        How to find an image's patient; see :func:`patient_key`.
    strata
        Optional item -> stratum (e.g. category); the item counts per purpose are then kept
        close to the ratios within each stratum too.
    path
        Optional item -> image path given to ``patient`` (default: ``item.image`` for a
        :class:`PatchSource`, else ``os.fspath(item)``).

    Returns
    -------
    dict
        Purpose -> items, every item exactly once, in input order within each purpose.

    Raises
    ------
    SplitError
        Invalid ratios, or an item without patient.

    Notes
    -----
    Targets per purpose (and stratum) come from
    :func:`~digipath.data.distribution.distribute_population`. Patients are placed largest
    first where the total absolute deviation from the targets grows least, then moved one at
    a time while that lowers it. Every purpose with a ratio > 0 gets at least one patient when
    there are enough patients.
    """
    _check_ratios(ratios)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    key = patient_key(patient)
    image_path = path or _image_path
    patients = [key(image_path(item)) for item in sources]
    names = sorted(set(patients))
    layers = [strata(item) for item in sources] if strata is not None else [0] * len(sources)
    layer_names = list(dict.fromkeys(layers))
    patient_index = {name: i for i, name in enumerate(names)}
    layer_index = {name: i for i, name in enumerate(layer_names)}
    counts = np.zeros((len(names), len(layer_names)), dtype=np.int64)
    for person, layer in zip(patients, layers, strict=True):
        counts[patient_index[person], layer_index[layer]] += 1
    purposes = list(ratios)
    closed = {purpose: 0 for purpose in purposes if ratios[purpose] == 0}
    targets = np.zeros((len(purposes), len(layer_names)), dtype=np.int64)
    for column in range(len(layer_names)):
        shares = distribute_population(
            int(counts[:, column].sum()), ratios, generator, maximum=closed
        )
        targets[:, column] = [shares[p] for p in purposes]
    positive = np.array([ratios[p] > 0 for p in purposes])
    assignment = _assign(counts, targets, positive, generator)
    result: dict[Hashable, list[T]] = {purpose: [] for purpose in purposes}
    for item, person in zip(sources, patients, strict=True):
        result[purposes[assignment[patient_index[person]]]].append(item)
    return result


def folds(
    sources: Sequence[T],
    k: int,
    rng: np.random.Generator | int | None = None,
    *,
    patient: PatientSpec = None,
    strata: Callable[[T], Hashable] | None = None,
    path: Callable[[T], str] | None = None,
) -> list[list[T]]:
    """Split sources into ``k`` folds of near-equal item counts, no patient in two folds.

    Parameters
    ----------
    sources, rng, patient, strata, path
        As for :func:`split_by_patient`.
    k
        The number of folds (>= 2, at most the number of patients).

    Returns
    -------
    list of list
        ``k`` folds; every item is in exactly one.

    Raises
    ------
    SplitError
        ``k`` < 2 or more folds than patients.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise SplitError("k", f"expected an integer number of folds >= 2, got {k!r}")
    key = patient_key(patient)
    count = len({key((path or _image_path)(item)) for item in sources})
    if k > count:
        raise SplitError("k", f"{k} folds need at least {k} patients; there are {count}")
    ratios = dict.fromkeys(range(k), 1.0)
    parts = split_by_patient(sources, ratios, rng, patient=key, strata=strata, path=path)
    return [parts[i] for i in range(k)]


def split_config(
    config: DataConfig,
    ratios: Mapping[str, float],
    rng: np.random.Generator | int | None = None,
    *,
    patient: PatientSpec = None,
) -> DataConfig:
    """Distribute a data config over purposes by patient.

    All sources of the config (of every category and current purpose) are split together so
    that no patient is in two purposes, with the item counts per purpose close to the ratios
    within each category. Patients are found from the formatted image paths.

    Parameters
    ----------
    config
        A list or distributed config.
    ratios
        Purpose -> ratio.
    rng, patient
        As for :func:`split_by_patient`.

    Returns
    -------
    DataConfig
        A new distributed config with the same replacements and the given ratios.
    """
    replacements = config.replacements
    entries = [
        (category, raw)
        for category in config.categories()
        for raw in config.items(category=category, replace=False)
    ]
    formatted = {raw: raw.format(replacements).image for _, raw in entries}
    parts = split_by_patient(
        entries,
        ratios,
        rng,
        patient=patient,
        strata=lambda entry: entry[0],
        path=lambda entry: formatted[entry[1]],
    )
    data = {
        purpose: {
            category: [raw for name, raw in parts[purpose] if name == category]
            for category in config.categories()
        }
        for purpose in ratios
    }
    return DataConfig(data, dict(ratios), replacements, config.source)
