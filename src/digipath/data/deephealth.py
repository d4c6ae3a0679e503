"""DeepHealth (ECVL) dataset files: read, write, and generate from a folder tree.

A DeepHealth dataset is a YAML file::

    name: my dataset                 # optional (default "DeepHealth dataset")
    description: what it is          # optional
    classes: [benign, malignant]     # optional; non-empty means a classification task
    features: [age, sex]             # optional names of per-image values
    images:                          # required; the position is the sample index
      - a.png                        # location only
      - [t1.png, t2.png]             # several planes of one sample
      - location: b.png
        label: malignant             # class name, class index, list of either (multi-label),
                                     # or the path of a ground-truth image (segmentation)
        values: [63, null]           # by position in features, or {feature: value}
    split:                           # optional; any split names, sample indices
      training: [0, 1]
      test: [2]

Relative locations and ground-truth paths are relative to the folder of the YAML file;
``http(s)://`` locations are kept as they are. Unlike ECVL, this reader checks class indices,
split indices and feature names, and names the file and key of every error.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from digipath.data.config import key_path, write_text_atomic
from digipath.errors import DatasetFormatError

__all__ = ["Dataset", "Sample", "load_dataset", "make_dataset", "save_dataset"]

logger = logging.getLogger(__name__)

DEFAULT_NAME = "DeepHealth dataset"
DEFAULT_DESCRIPTION = "This is the DeepHealth example dataset!"
_URL = re.compile(r"^https?://", re.IGNORECASE)
_TOP_KEYS = {"name", "description", "classes", "features", "images", "split"}


@dataclass(frozen=True)
class Sample:
    """One sample of a DeepHealth dataset.

    Parameters
    ----------
    location
        One path (or URL) per plane, as written in the file.
    label
        Class index (``int``), class indices of a multi-label sample (``tuple``), or ``None``.
    label_path
        Path of the ground-truth image of a segmentation sample, or ``None``.
    values
        Feature index -> value (as a string); missing values are absent.
    """

    location: tuple[str, ...]
    label: int | tuple[int, ...] | None = None
    label_path: str | None = None
    values: Mapping[int, str] = field(default_factory=dict)


@dataclass
class Dataset:
    """A DeepHealth dataset.

    Parameters
    ----------
    images
        The samples, in index order.
    name, description
        Descriptive strings.
    classes
        Class names; non-empty for a classification task.
    features
        Names of the per-sample values.
    split
        Split name -> sample indices, in file order.
    root
        Folder that relative locations are resolved against (the YAML file's folder).
    """

    images: list[Sample]
    name: str = DEFAULT_NAME
    description: str = DEFAULT_DESCRIPTION
    classes: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    split: dict[str, list[int]] = field(default_factory=dict)
    root: str | None = None

    @property
    def task(self) -> Literal["classification", "segmentation"]:
        """``classification`` when there are classes, ``segmentation`` otherwise (as ECVL)."""
        return "classification" if self.classes else "segmentation"

    def resolve(self, path: str) -> str:
        """Resolve a location or ground-truth path against :attr:`root` (URLs unchanged)."""
        if _URL.match(path) or os.path.isabs(path) or self.root is None:
            return path
        return os.path.normpath(os.path.join(self.root, path))

    def locations(self, index: int) -> list[str]:
        """The resolved locations (planes) of sample ``index``."""
        return [self.resolve(location) for location in self.images[index].location]

    def ground_truth(self, index: int) -> str | None:
        """The resolved ground-truth path of sample ``index``, or ``None``."""
        path = self.images[index].label_path
        return self.resolve(path) if path is not None else None

    def samples(self, split: str) -> list[Sample]:
        """The samples of one split.

        Raises
        ------
        DatasetFormatError
            Unknown split name.
        """
        if split not in self.split:
            raise DatasetFormatError(
                key_path("split", split),
                f"no such split; splits are {', '.join(self.split) or 'none'}",
            )
        return [self.images[i] for i in self.split[split]]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the dataset as YAML (see :func:`save_dataset`)."""
        save_dataset(self, path)


# --------------------------------------------------------------------------------------------
# Reading


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read a DeepHealth dataset YAML file.

    Parameters
    ----------
    path
        The YAML file. An OpenCV-style ``%YAML:1.2`` first line is accepted.

    Returns
    -------
    Dataset
        With :attr:`Dataset.root` set to the file's folder.

    Raises
    ------
    DatasetFormatError
        Missing or unreadable file, invalid YAML, or invalid content (naming the key, e.g.
        ``images[3].label``).
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetFormatError("", "no such file", source) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetFormatError("", f"cannot read the file: {error}", source) from None
    text = re.sub(r"\A%YAML:[^\n]*\n", "", text)
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DatasetFormatError("", f"not valid YAML: {error}", source) from None
    dataset = parse_dataset(content, source)
    dataset.root = os.path.dirname(os.path.abspath(source))
    return dataset


def parse_dataset(content: Any, source: str | None = None) -> Dataset:
    """Build a :class:`Dataset` from the parsed YAML document.

    Parameters
    ----------
    content
        The document (a mapping).
    source
        The file named in errors.

    Returns
    -------
    Dataset
        With ``root`` unset.

    Raises
    ------
    DatasetFormatError
        Invalid content.
    """
    if not isinstance(content, Mapping):
        raise DatasetFormatError("", "expected a mapping with an 'images' list", source)
    for key in content:
        if key not in _TOP_KEYS:
            logger.warning("%s: unknown key %r ignored", source or "dataset", key)
    name = _string(content.get("name", DEFAULT_NAME), "name", source)
    description = _string(content.get("description", DEFAULT_DESCRIPTION), "description", source)
    classes = _string_list(content.get("classes"), "classes", source)
    features = _string_list(content.get("features"), "features", source)
    if "images" not in content:
        raise DatasetFormatError("images", "required key is missing", source)
    raw_images = content["images"]
    if not isinstance(raw_images, list):
        raise DatasetFormatError("images", "expected a list of samples", source)
    images = [
        _sample(raw, key_path("images", i), classes, features, source)
        for i, raw in enumerate(raw_images)
    ]
    split = _split(content.get("split"), len(images), source)
    return Dataset(images, name, description, classes, features, split)


def _string(value: Any, key: str, source: str | None) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise DatasetFormatError(key, f"expected a string, got {value!r}", source)
    return str(value).strip() if key == "description" else str(value)


def _string_list(value: Any, key: str, source: str | None) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DatasetFormatError(key, f"expected a list of names, got {value!r}", source)
    names = [_string(item, key_path(key, i), source) for i, item in enumerate(value)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DatasetFormatError(key, f"duplicate names {duplicates}", source)
    return names


def _locations(value: Any, key: str, source: str | None) -> tuple[str, ...]:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise DatasetFormatError(
        key, f"expected a path or a non-empty list of paths, got {value!r}", source
    )


def _sample(
    raw: Any, key: str, classes: list[str], features: list[str], source: str | None
) -> Sample:
    if not isinstance(raw, Mapping):
        return Sample(_locations(raw, key, source))
    unknown = sorted(set(map(str, raw)) - {"location", "label", "values"})
    if unknown:
        raise DatasetFormatError(
            key_path(key, unknown[0]), "unknown key; expected location, label, values", source
        )
    if "location" not in raw:
        raise DatasetFormatError(key_path(key, "location"), "required key is missing", source)
    location = _locations(raw["location"], key_path(key, "location"), source)
    label, label_path = _label(raw.get("label"), key_path(key, "label"), classes, source)
    values = _values(raw.get("values"), key_path(key, "values"), features, source)
    return Sample(location, label, label_path, values)


def _class_index(value: Any, key: str, classes: list[str], source: str | None) -> int | None:
    """Class index of an int or class-name label; ``None`` for a string that is no class."""
    if isinstance(value, bool):
        raise DatasetFormatError(key, f"expected a class name or index, got {value!r}", source)
    if isinstance(value, int):
        if not 0 <= value < len(classes):
            raise DatasetFormatError(
                key,
                f"class index {value} out of range; there are {len(classes)} classes",
                source,
            )
        return value
    if isinstance(value, str):
        return classes.index(value) if value in classes else None
    raise DatasetFormatError(
        key, f"expected a class name, a class index or a path, got {value!r}", source
    )


def _label(
    value: Any, key: str, classes: list[str], source: str | None
) -> tuple[int | tuple[int, ...] | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, list):
        indices = []
        for i, element in enumerate(value):
            index = _class_index(element, key_path(key, i), classes, source)
            if index is None:
                raise DatasetFormatError(
                    key_path(key, i),
                    f"{element!r} is not a class name (classes: {', '.join(classes) or 'none'})",
                    source,
                )
            indices.append(index)
        return tuple(indices), None
    index = _class_index(value, key, classes, source)
    if index is not None:
        return index, None
    if classes:
        logger.warning(
            "%s: %s: %r is not a class name; taken as a ground-truth path",
            source or "dataset",
            key,
            value,
        )
    return None, value


def _loose(name: str) -> str:
    return re.sub(r"[\s_]+", " ", name).strip().casefold()


def _feature_index(name: str, features: list[str], key: str, source: str | None) -> int:
    """Index of feature ``name``: an exact match, else the one match ignoring case and
    treating spaces and underscores alike (the format's own example writes ``feature_1``
    for the feature ``feature 1``)."""
    if name in features:
        return features.index(name)
    loose = [i for i, feature in enumerate(features) if _loose(feature) == _loose(name)]
    if len(loose) == 1:
        return loose[0]
    raise DatasetFormatError(
        key, f"unknown feature; features are {', '.join(features) or 'none'}", source
    )


def _values(value: Any, key: str, features: list[str], source: str | None) -> dict[int, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        if features and len(value) > len(features):
            raise DatasetFormatError(
                key, f"{len(value)} values for {len(features)} features", source
            )
        return {i: str(v) for i, v in enumerate(value) if v is not None}
    if isinstance(value, Mapping):
        result = {}
        for name, item in value.items():
            index = _feature_index(str(name), features, key_path(key, str(name)), source)
            if item is not None:
                result[index] = str(item)
        return result
    raise DatasetFormatError(
        key, f"expected a list (by feature position) or a mapping, got {value!r}", source
    )


def _split(value: Any, count: int, source: str | None) -> dict[str, list[int]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DatasetFormatError("split", "expected a mapping of split name -> indices", source)
    result = {}
    for name, indices in value.items():
        key = key_path("split", str(name))
        if indices is None:
            indices = []
        if not isinstance(indices, list):
            raise DatasetFormatError(key, "expected a list of sample indices", source)
        for i, index in enumerate(indices):
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
                raise DatasetFormatError(
                    key_path(key, i),
                    f"expected a sample index in 0..{count - 1}, got {index!r}",
                    source,
                )
        if not indices:
            logger.warning("%s: split %r is empty", source or "dataset", name)
        result[str(name)] = list(indices)
    return result


# --------------------------------------------------------------------------------------------
# Writing


def _sample_document(sample: Sample, dataset: Dataset) -> Any:
    location: Any = sample.location[0] if len(sample.location) == 1 else list(sample.location)
    if sample.label is None and sample.label_path is None and not sample.values:
        return location
    entry: dict[str, Any] = {"location": location}

    def name(index: int) -> str | int:
        return dataset.classes[index] if 0 <= index < len(dataset.classes) else index

    if isinstance(sample.label, tuple):
        entry["label"] = [name(i) for i in sample.label]
    elif sample.label is not None:
        entry["label"] = name(sample.label)
    elif sample.label_path is not None:
        entry["label"] = sample.label_path
    if sample.values:
        if dataset.features:
            entry["values"] = {dataset.features[i]: v for i, v in sorted(sample.values.items())}
        else:
            last = max(sample.values)
            entry["values"] = [sample.values.get(i) for i in range(last + 1)]
    return entry


def dataset_document(dataset: Dataset) -> dict[str, Any]:
    """The dataset as a YAML-ready mapping (labels as class names, values by feature name)."""
    document: dict[str, Any] = {"name": dataset.name, "description": dataset.description}
    if dataset.classes:
        document["classes"] = list(dataset.classes)
    if dataset.features:
        document["features"] = list(dataset.features)
    document["images"] = [_sample_document(sample, dataset) for sample in dataset.images]
    if dataset.split:
        document["split"] = {name: list(indices) for name, indices in dataset.split.items()}
    return document


def save_dataset(dataset: Dataset, path: str | os.PathLike[str]) -> None:
    """Write a DeepHealth dataset YAML file (temporary name, then renamed).

    Unlike ECVL's ``Dump``, ``features`` and ``values`` are written (values by feature name).
    Locations are written as stored (relative ones stay relative to the file's folder).

    Parameters
    ----------
    dataset
        The dataset.
    path
        The target file.
    """
    text = yaml.safe_dump(
        dataset_document(dataset), sort_keys=False, allow_unicode=True, width=1000
    )
    write_text_atomic(os.fspath(path), text)


# --------------------------------------------------------------------------------------------
# Generating from a folder tree

_IGNORED_SUFFIXES = {".yml", ".yaml"}


def _files(folder: Path, recursive: bool) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in pattern
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in _IGNORED_SUFFIXES
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def make_dataset(
    root: str | os.PathLike[str],
    task: Literal["classification", "segmentation"] = "classification",
    *,
    suffix: str | None = None,
    gt_name: str | None = None,
    images_folder: str = "images",
    ground_truth_folder: str = "ground_truth",
) -> Dataset:
    """Build a dataset from a folder tree, as ECVL's dataset generators do.

    Every immediate subfolder of ``root`` is a split (sorted by name); without subfolders
    there is no split. ``name`` and ``description`` are the root folder's name; locations are
    relative to ``root``; samples of each split get consecutive indices.

    * classification: ``root/<split>/<class>/<images>`` (files under a class folder, at any
      depth). The classes are the class folder names of all splits together, sorted, so a
      split that lacks a class folder does not shift the labels (unlike ECVL).
    * segmentation, separate folders (default): ``root/<split>/images/<name>`` with the
      ground truth ``root/<split>/ground_truth/<stem>.*`` (matched by file stem; an exact file
      name match wins). ``root/images`` + ``root/ground_truth`` is taken as a dataset without
      splits (ECVL would take them as two splits).
    * segmentation, one folder (``suffix`` given): images and ground truth together in each
      split folder; a file whose name contains ``suffix`` is ground truth, the ground truth of
      ``x.png`` is ``x<suffix>``.
    * ``gt_name``: a ground-truth file (in the split folder, or in the ground-truth folder)
      used for every image of the split that has none of its own.
    * An image without ground truth is dropped with a warning, except in a split named
      ``test`` and in a dataset without splits.

    Parameters
    ----------
    root
        The top folder.
    task
        ``"classification"`` or ``"segmentation"``.
    suffix, gt_name
        Segmentation only, see above.
    images_folder, ground_truth_folder
        Names of the separate image and ground-truth folders (segmentation).

    Returns
    -------
    Dataset
        With ``root`` set; save it inside ``root`` so the relative locations resolve.

    Raises
    ------
    DatasetFormatError
        ``root`` is no folder, or ``task`` is unknown.
    """
    top = Path(root)
    if not top.is_dir():
        raise DatasetFormatError("", "no such folder", top)
    if task not in ("classification", "segmentation"):
        raise DatasetFormatError(
            "task", f"unknown task {task!r}; expected classification or segmentation", top
        )
    separate = task == "segmentation" and suffix is None
    split_folders: list[Path | None] = [None]
    if not (separate and (top / images_folder).is_dir()):
        split_folders = list(_subfolders(top)) or [None]
    classes: list[str] = []
    if task == "classification":
        folders = [f or top for f in split_folders]
        classes = sorted({c.name for folder in folders for c in _subfolders(folder)})
    images: list[Sample] = []
    split: dict[str, list[int]] = {}
    for folder in split_folders:
        base = folder or top
        if task == "classification":
            samples = _classification_samples(base, top, classes)
        else:
            keep_missing = folder is None or folder.name == "test"
            samples = _segmentation_samples(
                base, top, suffix, gt_name, images_folder, ground_truth_folder, keep_missing
            )
        if folder is not None:
            split[folder.name] = list(range(len(images), len(images) + len(samples)))
        images.extend(samples)
    return Dataset(images, top.name, top.name, classes, [], split, str(top.resolve()))


def _classification_samples(base: Path, top: Path, classes: list[str]) -> list[Sample]:
    for stray in _files(base, recursive=False):
        logger.warning("%s: not inside a class folder; skipped", stray)
    samples = []
    for class_folder in _subfolders(base):
        label = classes.index(class_folder.name)
        samples.extend(
            Sample((_relative(p, top),), label) for p in _files(class_folder, recursive=True)
        )
    return samples


def _segmentation_samples(
    base: Path,
    top: Path,
    suffix: str | None,
    gt_name: str | None,
    images_folder: str,
    ground_truth_folder: str,
    keep_missing: bool,
) -> list[Sample]:
    if suffix is not None:
        files = _files(base, recursive=False)
        by_name = {p.name: p for p in files}
        pairs = [
            (p, by_name.get(p.stem + suffix))
            for p in files
            if suffix not in p.name and p.name != gt_name
        ]
        shared = by_name.get(gt_name) if gt_name else None
    else:
        image_dir, truth_dir = base / images_folder, base / ground_truth_folder
        images = _files(image_dir, recursive=False) if image_dir.is_dir() else []
        truths = _files(truth_dir, recursive=False) if truth_dir.is_dir() else []
        by_name = {p.name: p for p in truths}
        by_stem: dict[str, Path] = {}
        for p in truths:
            by_stem.setdefault(p.stem, p)
        pairs = [(p, by_name.get(p.name) or by_stem.get(p.stem)) for p in images]
        shared = None
        if gt_name:
            shared = next((c for c in (truth_dir / gt_name, base / gt_name) if c.is_file()), None)
    samples = []
    for image, truth in pairs:
        truth = truth or shared
        if truth is None and not keep_missing:
            logger.warning("%s: no ground truth; dropped", image)
            continue
        label_path = _relative(truth, top) if truth is not None else None
        samples.append(Sample((_relative(image, top),), None, label_path))
    return samples
