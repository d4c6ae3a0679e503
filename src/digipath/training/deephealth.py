"""Train digipath networks on DeepHealth datasets with DeepHealth's training settings.

The DeepHealth back-end trains a model on a dataset YAML with a handful of properties
(``Learning rate``, ``Epochs``, ``Batch size``, ``Metric``, ``Loss function``, ``Input height``,
``Input width`` and the three augmentation texts). This module is the engine a web application
calls to do the same with digipath:

* :class:`TrainSettings` holds those properties (DeepHealth's defaults), read case-insensitively
  from a mapping of property names (``_`` reads as a space) by :meth:`TrainSettings.from_mapping`;
* :func:`experiment_parameters` turns them into a DigitalPathology parameter mapping for
  :class:`~digipath.training.experiment.ExperimentCommander`;
* :func:`train_on_dataset` converts the dataset (a patch database of resized images for
  classification, tiled TIFFs and a data config for segmentation;
  :mod:`digipath.data.deephealth_convert`), runs the experiment and returns the model files and
  the per-epoch metrics.

Names map as follows. Metrics (the selection metric, always measured on the validation split):
``accuracy`` (also ``categorical_accuracy``) is ``validation accuracy`` (higher is better);
``loss`` is ``validation loss`` (lower is better); ``dice``, ``mean_squared_error``,
``mean_absolute_error`` and ``mean_relative_error`` are accepted names, but the digipath models
report only ``loss`` and ``accuracy``, so :func:`experiment_parameters` refuses them naming what
the model reports. Losses: ``cross_entropy``, ``softmax_cross_entropy`` and
``binary_cross_entropy`` are digipath's softmax cross entropy (for two classes the same optimum
as a sigmoid binary cross entropy); ``dice`` is the soft Dice loss; ``focal`` and ``lovasz`` are
digipath's own; ``mean_squared_error`` is refused (no classifier trains with it here).

Augmentation texts: digipath samples uint8 patches and normalises batches itself (the model
file records how, ``rgb_to_0-1``), so the intensity conversions of a DeepHealth text
(``AugToFloat32``, ``AugDivBy255``, ``AugNormalize``, ``AugScaleTo``, ``AugScaleFromTo``, which
DeepHealth needs to make float tensors) are left out of the training and validation pools
(logged; :func:`digipath_augmentation`). ``AugResizeDim`` to the input size is a no-op (the
images already have that size); a resize to another size is refused when the batches are made.

One epoch is one pass over the training split: ``iteration count`` = samples // batch size (at
least 1), as DeepHealth drops the last partial batch; for segmentation a sample is a patch of
``Input height`` x ``Input width`` pixels at ``spacing``, and an image counts as many patches as
cover it. Validation covers the validation split once (rounded up). Without a validation split,
the training split validates (logged).

Fine-tuning: ``model`` may name a digipath model file. Its type and network parameters define
the network; after the experiment is built its weights are copied into the new network (tensors
whose shape differs, such as the last layer when the class count changes, keep their fresh
initialisation, DeepHealth's "layer to remove"). A resumed run continues from its own saved
state instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digipath.errors import AugmentationConfigError, ConfigError

__all__ = [
    "CONVERSIONS",
    "LOSSES",
    "METRICS",
    "TrainSettings",
    "digipath_augmentation",
    "experiment_parameters",
    "train_on_dataset",
]

logger = logging.getLogger(__name__)

METRICS: dict[str, tuple[str, bool]] = {
    "accuracy": ("accuracy", True),
    "categorical_accuracy": ("accuracy", True),
    "loss": ("loss", False),
    "dice": ("dice", True),
    "mean_squared_error": ("mean_squared_error", False),
    "mean_absolute_error": ("mean_absolute_error", False),
    "mean_relative_error": ("mean_relative_error", False),
}
"""DeepHealth metric name -> (model metric, higher is better)."""

LOSSES: dict[str, str | None] = {
    "cross_entropy": "cross_entropy",
    "softmax_cross_entropy": "cross_entropy",
    "binary_cross_entropy": "cross_entropy",
    "categorical_crossentropy": "cross_entropy",
    "dice": "dice",
    "focal": "focal",
    "lovasz": "lovasz",
    "mean_squared_error": None,
}
"""DeepHealth loss name -> digipath loss (``None``: known but not supported)."""

CONVERSIONS = ("AugToFloat32", "AugDivBy255", "AugNormalize", "AugScaleTo", "AugScaleFromTo")
"""DeepHealth intensity conversions that digipath's normalisation replaces."""

_PROPERTIES = {
    "learning rate": "learning_rate",
    "lr": "learning_rate",
    "epochs": "epochs",
    "batch size": "batch_size",
    "metric": "metric",
    "loss function": "loss",
    "loss": "loss",
    "input height": "input_height",
    "input width": "input_width",
    "training augmentations": "training_augmentations",
    "validation augmentations": "validation_augmentations",
    "test augmentations": "test_augmentations",
    "spacing": "spacing",
    "pixel spacing": "spacing",
}

_BASE_PARAMETERS = {
    "classes", "input_channels", "input_shape", "name", "description", "loss", "loss_options",
    "optimizer", "learning_rate", "weight_decay", "channels_last", "device", "amp",
}  # fmt: skip


def _loose(name: str) -> str:
    return re.sub(r"[\s_]+", " ", str(name)).strip().casefold()


def _title(field_name: str) -> str:
    """The DeepHealth property name of a field (``Learning rate``)."""
    names = {"loss": "Loss function"}
    return names.get(field_name, field_name.replace("_", " ").capitalize())


@dataclass
class TrainSettings:
    """DeepHealth training properties (defaults: DeepHealth's).

    Parameters
    ----------
    learning_rate
        Adam learning rate (> 0).
    epochs
        Epochs to train (>= 1).
    batch_size
        Samples per batch (>= 1).
    metric
        Selection metric, a key of :data:`METRICS` (see the module docstring).
    loss
        Loss function, a key of :data:`LOSSES`.
    input_height, input_width
        Network input in pixels: classification images are resized to it; segmentation
        patches of this size are sampled at ``spacing``.
    training_augmentations, validation_augmentations, test_augmentations
        DeepHealth augmentation texts (``""``: none); the test text is kept, not used in
        training.
    spacing
        Segmentation only: the pixel spacing in µm/px given to the ordinary images and at which
        patches are sampled.
    """

    learning_rate: float = 1e-4
    epochs: int = 50
    batch_size: int = 1
    metric: str = "accuracy"
    loss: str = "cross_entropy"
    input_height: int = 100
    input_width: int = 100
    training_augmentations: str = ""
    validation_augmentations: str = ""
    test_augmentations: str = ""
    spacing: float = 0.5

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> TrainSettings:
        """Read DeepHealth property names and values.

        Parameters
        ----------
        mapping
            Property name -> value, e.g. ``{"Learning rate": "0.001", "Batch size": 8}``.
            Names are case-insensitive and ``_`` reads as a space (``learning_rate``); values
            may be strings (as a web form sends them). Missing properties take the defaults;
            ``None`` or ``""`` for a number means the default too.

        Raises
        ------
        ConfigError
            Unknown property, or a value of the wrong type or range (``key`` is the property
            name; the message says what is expected).
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError("settings", f"expected a mapping of properties, got {mapping!r}")
        values: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, value in mapping.items():
            loose = _loose(name)
            target = _PROPERTIES.get(loose)
            if target is None and loose.replace(" ", "_") in fields:
                target = loose.replace(" ", "_")
            if target is None:
                valid = ", ".join(_title(f) for f in fields)
                raise ConfigError(str(name), f"unknown training property; valid: {valid}")
            if target in values:
                raise ConfigError(str(name), f"given twice (as {_title(target)})")
            values[target] = _convert(target, value, str(name))
        return cls(**values)

    def validate(self) -> None:
        """Check every value (see :meth:`from_mapping`); normalises names and types in place."""
        for item in dataclasses.fields(self):
            setattr(self, item.name, _convert(item.name, getattr(self, item.name)))

    def to_mapping(self) -> dict[str, Any]:
        """The settings by DeepHealth property name (``{"Learning rate": 0.0001, ...}``)."""
        return {_title(k): v for k, v in dataclasses.asdict(self).items()}

    @property
    def metric_key(self) -> str:
        """The model metric of :attr:`metric` (``accuracy`` ...)."""
        return METRICS[self.metric][0]

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric][1]

    @property
    def digipath_loss(self) -> str:
        """The digipath loss name of :attr:`loss`."""
        loss = LOSSES[self.loss]
        assert loss is not None
        return loss


def _convert(name: str, value: Any, key: str | None = None) -> Any:
    """``value`` of field ``name`` converted and checked (errors name ``key``)."""
    key = key or _title(name)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
    if name in ("learning_rate", "spacing"):
        if value is None or (isinstance(value, str) and not value.strip()):
            return defaults[name]
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number <= 0:
            unit = " µm/px" if name == "spacing" else ""
            raise ConfigError(key, f"expected a number > 0{unit}, got {value!r}")
        return number
    if name in ("epochs", "batch_size", "input_height", "input_width"):
        if value is None or (isinstance(value, str) and not value.strip()):
            return defaults[name]
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and re.fullmatch(r"\s*\+?\d+\s*", value):
            number = int(value)
        if number is None or number < 1:
            raise ConfigError(key, f"expected an integer >= 1, got {value!r}")
        return number
    if name in ("metric", "loss"):
        table = METRICS if name == "metric" else LOSSES
        text = _loose(value).replace(" ", "_") if isinstance(value, str) else None
        if text not in table:
            raise ConfigError(key, f"expected one of {', '.join(table)}, got {value!r}")
        if name == "loss" and LOSSES[text] is None:
            supported = ", ".join(k for k, v in LOSSES.items() if v is not None)
            raise ConfigError(
                key, f"{value!r} is not supported by digipath's classifiers; use one of {supported}"
            )
        return text
    if name.endswith("_augmentations"):
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ConfigError(key, f"expected DeepHealth augmentation text, got {value!r}")
        text = value.replace("\r", "").replace("\\n", "\n")
        if text.strip():
            from digipath.augment.deephealth import parse_deephealth

            try:
                parse_deephealth(text)
            except AugmentationConfigError as error:
                raise ConfigError(
                    key, f"invalid DeepHealth augmentation text: {error.key}: {error.reason}"
                ) from None
        return text
    raise ConfigError(key, "unknown training property")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Parameters


def _model_section(
    model_type_or_file: str | os.PathLike[str], settings: TrainSettings,
    options: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], str]:  # fmt: skip
    """The ``model`` section and the model type."""
    from digipath.models.registry import MODELS

    section: dict[str, Any]
    if _is_model_file(model_type_or_file):
        from digipath.models.files import read_header

        header = read_header(model_type_or_file)
        kind = str(header["model"]["type"])
        parameters = header.get("parameters") or {}
        section = {"type": kind}
        for name, value in parameters.items():
            if name not in _BASE_PARAMETERS and value is not None:
                section[name.replace("_", " ")] = value
        if kind == "levelnet":
            section.pop("input size", None)
    else:
        kind = str(model_type_or_file)
        if kind not in MODELS:
            raise ConfigError(
                "model",
                f"{kind!r} is neither a model file nor a model type; types: "
                f"{', '.join(sorted(MODELS))}",
            )
        section = {"type": kind}
        if kind == "unet":
            section["padding"] = "same"  # DeepHealth's U-Net keeps the input size
    section.update(dict(options or {}))
    section["loss"] = settings.digipath_loss
    return section, kind


def _is_model_file(value: str | os.PathLike[str]) -> bool:
    text = os.fspath(value)
    return text.endswith(".safetensors") or os.path.isfile(text)


def _reported_metrics(kind: str, classes: int) -> list[str] | None:
    """The metrics a model type reports (``None`` when it cannot be asked cheaply)."""
    from digipath.models.registry import model_class

    try:
        return list(model_class(kind)(classes=max(classes, 1)).metric_names())
    except Exception:
        return None


def digipath_augmentation(text: str, key: str = "augmentations") -> str:
    """A DeepHealth augmentation text without its intensity conversions (:data:`CONVERSIONS`).

    Parameters
    ----------
    text
        DeepHealth augmentation text (one augmentation per line).
    key
        The property named in errors (``Training augmentations``).

    Returns
    -------
    str
        The text without the lines of those augmentations (``""`` stays ``""``).

    Raises
    ------
    ConfigError
        When the rest is no valid text (e.g. a ``OneOfAugmentationContainer`` left empty).
    """
    kept, removed = [], []
    for line in text.splitlines():
        words = line.split(None, 1)
        if words and words[0] in CONVERSIONS:
            removed.append(words[0])
        else:
            kept.append(line)
    if not removed:
        return text
    logger.info(
        "%s: %s left out: digipath normalises the batches itself (rgb_to_0-1)",
        key, ", ".join(removed),
    )  # fmt: skip
    result = "\n".join(kept)
    if result.strip():
        from digipath.augment.deephealth import parse_deephealth

        try:
            parse_deephealth(result)
        except AugmentationConfigError as error:
            raise ConfigError(
                key,
                f"without its intensity conversions ({', '.join(removed)}; digipath normalises "
                f"the batches itself) the text is invalid: {error.key}: {error.reason}",
            ) from None
    return result


def experiment_parameters(
    model_type_or_file: str | os.PathLike[str],
    settings: TrainSettings | Mapping[str, Any],
    task: str,
    classes: Sequence[str] | int,
    *,
    counts: Mapping[str, int] | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The DigitalPathology parameter mapping of a DeepHealth training.

    Parameters
    ----------
    model_type_or_file
        A registered model type (``cifar``, ``unet`` ...) or a digipath model file to start
        from (its type and network parameters are used; see the module docstring).
    settings
        The training properties (or a mapping for :meth:`TrainSettings.from_mapping`).
    task
        ``classification`` (data from a patch database) or ``segmentation`` (a data config).
    classes
        The class names, or their number (segmentation: the label values 0 .. K-1).
    counts
        Purpose (``training``, ``validation``) -> samples in one pass (images, or patches for
        segmentation); default: one batch per epoch.
    model_options
        More ``model`` section keys (e.g. ``{"depth": 2, "branching factor": 3}``).

    Returns
    -------
    dict
        Sections ``model``, ``system``, ``training``, ``data`` and ``augmentation``.

    Raises
    ------
    ConfigError
        Unknown task or model, or a metric the model does not report (key ``Metric``).
    """
    if not isinstance(settings, TrainSettings):
        settings = TrainSettings.from_mapping(settings)
    if task not in ("classification", "segmentation"):
        raise ConfigError("task", f"expected classification or segmentation, got {task!r}")
    count = classes if isinstance(classes, int) else len(classes)
    if count < 1:
        raise ConfigError("classes", f"expected at least one class, got {classes!r}")
    model, kind = _model_section(model_type_or_file, settings, model_options)
    reported = _reported_metrics(kind, count)
    if reported is not None and settings.metric_key not in reported:
        raise ConfigError(
            "Metric",
            f"{settings.metric!r}: the {kind} model reports {', '.join(reported)}; choose "
            "accuracy or loss",
        )
    counts = dict(counts or {})
    batch = settings.batch_size

    def iterations(purpose: str) -> dict[str, int]:
        samples = int(counts.get(purpose, batch))
        number = samples // batch if purpose == "training" else math.ceil(samples / batch)
        return {"repetition count": 1, "iteration count": max(1, number), "batch size": batch}

    shape = [settings.input_height, settings.input_width]
    if task == "classification":
        data: dict[str, Any] = {
            "images": {"patch shapes": {1.0: shape}},
            "labels": {"label mode": "central"},
            "normalization": {"enabled": True, "type": "rgb_to_0-1"},
        }
    else:
        spacing = float(settings.spacing)
        data = {
            "images": {"patch shapes": {spacing: shape}},
            "labels": {
                "mask pixel spacing": spacing,
                "label mode": "load",
                "label map": {k: k for k in range(count)},
                "label ratios": {k: 1.0 for k in range(count)},
                "strict selection": False,
                "one hot": True,
            },
            "spacing tolerance": 0.25,
            "normalization": {"enabled": True, "type": "rgb_to_0-1"},
            "purposes": {"training": 1.0, "validation": 1.0},
        }
    return {
        "model": model,
        "system": {"process count": 0, "pool size": max(2, sum(counts.values()) or 2)},
        "training": {
            "epoch count": settings.epochs,
            "metric name": f"validation {settings.metric_key}",
            "higher is better": settings.higher_is_better,
            "averaging length": 1,
            "iteration log percent": 1.0,
            "learning": {"learning rate": settings.learning_rate},
            "boosting": {"enabled": False},
            "iterations": {p: iterations(p) for p in ("training", "validation")},
        },
        "data": data,
        "augmentation": {
            "training": digipath_augmentation(
                settings.training_augmentations, "Training augmentations"
            ),
            "validation": digipath_augmentation(
                settings.validation_augmentations, "Validation augmentations"
            ),
        },
    }


# --------------------------------------------------------------------------------------------
# Training


def _number(value: str) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and "." not in str(value) else number


def _segmentation_counts(config, purposes: Sequence[str], spacing: float, shape) -> dict[str, int]:
    """Patches of ``shape`` covering the images of each purpose at ``spacing``."""
    from digipath.io import ImageReader

    counts = {}
    for purpose in purposes:
        total = 0
        for item in config.items(purpose):
            with ImageReader(item.image) as reader:
                rows, cols = reader.shape(spacing)
            total += math.ceil(rows / shape[0]) * math.ceil(cols / shape[1])
        counts[purpose] = total
    return counts


def _load_weights(model, path: str | os.PathLike[str]) -> None:
    """Copy the weights of a model file into ``model`` (tensors of another shape are kept)."""
    from digipath.models.files import load_model

    loaded = load_model(path, optimizer=False)
    target = model.module.state_dict()
    state, skipped = {}, []
    for name, value in loaded.network.state_dict().items():
        if name in target and tuple(target[name].shape) == tuple(value.shape):
            state[name] = value
        else:
            skipped.append(name)
    model.module.load_state_dict(state, strict=False)
    if skipped:
        logger.info("%s: %d tensors of another shape left as initialised: %s", path,
                    len(skipped), ", ".join(skipped[:8]))  # fmt: skip


def train_on_dataset(
    dataset_yaml: str | os.PathLike[str],
    model: str | os.PathLike[str],
    settings: TrainSettings | Mapping[str, Any],
    output_dir: str | os.PathLike[str],
    *,
    name: str = "training",
    resume: bool = False,
    seed: int | None = None,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    device: str | None = None,
    model_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a model on a DeepHealth dataset.

    Parameters
    ----------
    dataset_yaml
        The DeepHealth dataset file (classification or segmentation; see
        :mod:`digipath.data.deephealth_convert` for what it may hold).
    model
        A registered model type name, or the path of a digipath model file to fine-tune.
    settings
        :class:`TrainSettings` or a mapping of DeepHealth properties.
    output_dir
        The converted data go to ``output_dir/data``, the experiment to ``output_dir/<name>``.
    name
        The experiment name (folder and file prefix).
    resume
        Continue an interrupted run from its last saved epoch.
    seed
        Seed of every draw (``None``: from the clock).
    progress
        :data:`~digipath.training.trainer.Progress` callback ``progress(event, info)``.
    on_epoch_end
        ``callback(epoch, row)`` after each epoch's files are written.
    device
        ``cpu``, ``cuda``, ``auto`` (default CPU).
    model_options
        More ``model`` section keys (see :func:`experiment_parameters`).

    Returns
    -------
    dict
        ``best_model`` and ``last_model`` (paths), ``rows`` (one dict per epoch: ``epoch``,
        ``training loss``, ``validation loss``, ``validation accuracy`` ... as numbers),
        ``metric`` (the selection metric, e.g. ``validation accuracy``), ``task``, ``classes``
        and ``experiment`` (the experiment folder).

    Raises
    ------
    DatasetFormatError
        An invalid dataset (no training split, unreadable image, missing ground truth).
    ConfigError
        Invalid settings or a metric the model does not report.
    """
    from digipath.data.config import DataConfig
    from digipath.data.deephealth import load_dataset
    from digipath.data.deephealth_convert import classification_database, segmentation_config
    from digipath.data.patch_database import PatchDatabase
    from digipath.training.experiment import ExperimentCommander
    from digipath.training.progress import read_rows

    if not isinstance(settings, TrainSettings):
        settings = TrainSettings.from_mapping(settings)
    dataset = load_dataset(dataset_yaml)
    output = Path(output_dir)
    validation = "validation" if dataset.split.get("validation") else "training"
    if validation == "training":
        logger.warning("%s: no validation split; the training split validates", dataset_yaml)
    purposes = {"training": "training", "validation": validation}
    shape = (settings.input_height, settings.input_width)
    data: Any
    if dataset.task == "classification":
        folder = classification_database(
            dataset_yaml, output / "data" / "classification", shape=shape, purposes=purposes
        )
        database = PatchDatabase(folder)
        counts = {p: database.count(p) for p in purposes}
        classes: list[str] = list(dataset.classes)
        data = folder
    else:
        path = segmentation_config(
            dataset_yaml, output / "data" / "segmentation", spacing=settings.spacing,
            purposes=purposes,
        )  # fmt: skip
        data = DataConfig.load(path)
        counts = _segmentation_counts(data, list(purposes), settings.spacing, shape)
        values = {label for item in data.items() for label in item.labels}
        count = max(2, max(values, default=1) + 1)
        classes = ["background", "foreground"] if count == 2 else [f"class {k}" for k in
                                                                   range(count)]  # fmt: skip
    parameters = experiment_parameters(
        model, settings, dataset.task, classes, counts=counts, model_options=model_options
    )
    images = {i for split in set(purposes.values()) for i in dataset.split[split]}
    parameters["system"]["pool size"] = max(1, len(images))
    commander = ExperimentCommander(
        parameters, data, experiment_name=name, progress_dir=output, resume=resume, seed=seed,
        device=device, progress=progress, on_epoch_end=on_epoch_end,
    )  # fmt: skip
    if _is_model_file(model):
        _load_weights(commander.model, model)
    commander.header["class_names"] = classes
    commander.header["deephealth"] = {
        "task": dataset.task,
        "classes": classes,
        "input_shape": list(shape),
        "spacing": settings.spacing if dataset.task == "segmentation" else None,
        "dataset": os.path.abspath(os.fspath(dataset_yaml)),
        "settings": settings.to_mapping(),
    }
    summary = commander.execute()
    folder = commander.progress_directory
    rows = [
        {key: _number(value) for key, value in row.items()}
        for row in read_rows(folder / f"{name}_progress.csv")
    ]
    return {
        "best_model": str(folder / f"{name}_best_model.safetensors"),
        "last_model": str(folder / f"{name}_last_model.safetensors"),
        "rows": rows,
        "metric": parameters["training"]["metric name"],
        "task": dataset.task,
        "classes": classes,
        "experiment": str(folder),
        "best_epoch": summary.get("best_epoch"),
    }
