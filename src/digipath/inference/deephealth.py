"""Run a trained digipath model on a DeepHealth dataset split, or on one image.

:func:`infer_on_dataset` and :func:`infer_image` write ``results.json`` into an output folder
(under a temporary name, then renamed)::

    {"task": "classification", "model": "<model file name>", "dataset": "<yaml name or null>",
     "split": "test", "classes": ["red", "blue"], "count": 2,
     "metrics": {"accuracy": 1.0},                  # when some images have labels
     "images": [{"image": "<location>", "scores": [0.97, 0.03], "predicted": "red",
                 "label": "red",                     # null when unknown
                 "preview": "previews/00000_a.png"}, ...]}

    {"task": "segmentation", ..., "classes": ["background", "foreground"],
     "metrics": {"dice": 0.91},                     # mean over images with a ground truth
     "images": [{"image": "<location>", "mask": "masks/00000_s5.png",
                 "overlay": "overlays/00000_s5.png", "dice": 0.91}, ...]}

Classification images are read whole, resized to the model's input shape (``cv2.INTER_AREA``),
normalised as the model file says and classified in batches; ``scores`` are the softmax
probabilities per class. Segmentation images are written as tiled TIFFs at the model's pixel
spacing (slides that :class:`~digipath.io.ImageReader` reads are used as they are) and
:func:`~digipath.inference.apply.apply_network` computes the label map; ``mask`` is a PNG of
the class index per pixel (at the processing spacing, which is the image's own size for
ordinary images), ``overlay`` the image with the foreground classes tinted, ``dice`` the Dice
coefficient of the foreground (every class > 0) against the ground truth (1.0 when both are
empty). ``preview`` is the classified image at most 256 pixels on a side. Paths in
``mask``, ``overlay`` and ``preview`` are relative to the output folder; ``model`` and
``dataset`` are file names only (the output is shown to users who need not know the server's
folders).

The task, class names, input shape and spacing come from the model file's header (the
``deephealth`` entry :func:`~digipath.training.deephealth.train_on_dataset` writes, else the
generic ``class_names`` / ``patch_shapes`` entries).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from digipath.data.config import write_text_atomic
from digipath.data.deephealth import Dataset, Sample, load_dataset
from digipath.data.deephealth_convert import (
    read_ground_truth,
    read_rgb,
    resize_area,
)
from digipath.errors import DatasetFormatError, ModelFileError

__all__ = ["RESULTS", "infer_image", "infer_on_dataset", "model_description"]

logger = logging.getLogger(__name__)

RESULTS = "results.json"
SEGMENTATION_TYPES = ("unet", "hovernet")
OVERLAY_COLOURS = np.array(
    [[0, 0, 0], [255, 40, 40], [40, 200, 40], [40, 90, 255], [255, 200, 0], [200, 0, 200]],
    np.float32,
)

Progress = Callable[[int, int], None]
"""``progress(done, total)`` after each image."""


def model_description(model_file: str | os.PathLike[str]) -> dict[str, Any]:
    """What inference needs from a model file's header.

    Returns
    -------
    dict
        ``task`` (``classification`` or ``segmentation``), ``classes`` (names),
        ``input_shape`` (rows, cols) in pixels and ``spacing`` in µm/px (segmentation).
    """
    from digipath.models.files import read_header

    header = read_header(model_file)
    extra = header.get("deephealth") or {}
    count = int(header.get("classes") or 2)
    kind = str((header.get("model") or {}).get("type", ""))
    task = extra.get("task") or ("segmentation" if kind in SEGMENTATION_TYPES else "classification")
    classes = extra.get("classes") or header.get("class_names")
    if not classes:
        classes = (["background", "foreground"] if task == "segmentation" and count == 2
                   else [str(k) for k in range(count)])  # fmt: skip
    patch_shapes = header.get("patch_shapes") or {}
    shape = extra.get("input_shape")
    if shape is None and patch_shapes:
        shape = next(iter(patch_shapes.values()))
    if shape is None:
        shape = (header.get("parameters") or {}).get("input_shape")
    if shape is None:
        raise ModelFileError(model_file, "the header states no input shape (patch_shapes)")
    spacing = extra.get("spacing")
    if spacing is None and patch_shapes:
        spacing = float(next(iter(patch_shapes)))
    return {
        "task": task,
        "classes": [str(c) for c in classes],
        "input_shape": (int(shape[0]), int(shape[1])),
        "spacing": None if spacing is None else float(spacing),
    }


def _normalizer(model):
    from digipath.data.normalization import RgbToZeroOne, normalizer_from_config

    section = (getattr(model, "header", None) or {}).get("normalization")
    if section:
        configured = normalizer_from_config(section)
        if configured is not None:
            return configured
    return RgbToZeroOne()


def infer_on_dataset(
    dataset_yaml: str | os.PathLike[str],
    model_file: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    split: str = "test",
    progress: Progress | None = None,
    batch_size: int = 8,
    device: str | None = None,
) -> Path:
    """Apply a model to the images of one split of a DeepHealth dataset.

    Parameters
    ----------
    dataset_yaml
        The DeepHealth dataset file.
    model_file
        A digipath model file (e.g. ``best_model`` of
        :func:`~digipath.training.deephealth.train_on_dataset`).
    output_dir
        Where ``results.json`` (and for segmentation ``masks/``, ``overlays/``) go.
    split
        The split to run on.
    progress
        ``progress(done, total)`` after each image.
    batch_size
        Images (classification) or tiles (segmentation) per forward pass.
    device
        ``cpu`` (default), ``cuda``, ``auto``.

    Returns
    -------
    pathlib.Path
        ``output_dir/results.json`` (format in the module docstring).

    Raises
    ------
    DatasetFormatError
        No such split, or an unreadable image (naming the dataset file and sample key).
    ModelFileError
        An unreadable model file.
    """
    source = os.fspath(dataset_yaml)
    dataset = load_dataset(source)
    if split not in dataset.split:
        raise DatasetFormatError(
            f"split.{split}", f"no such split; splits are {', '.join(dataset.split) or 'none'}",
            source,
        )  # fmt: skip
    return _infer(dataset, list(dataset.split[split]), source, split, model_file, output_dir,
                  progress, batch_size, device)  # fmt: skip


def infer_image(
    image_path: str | os.PathLike[str],
    model_file: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    device: str | None = None,
) -> Path:
    """Apply a model to one image; ``results.json`` as :func:`infer_on_dataset` (no label).

    Parameters
    ----------
    image_path
        A PNG, JPEG, TIFF... image or a slide.
    model_file, output_dir, progress, device
        As for :func:`infer_on_dataset`.
    """
    path = os.path.abspath(os.fspath(image_path))
    description = model_description(model_file)
    classes = description["classes"] if description["task"] == "classification" else []
    dataset = Dataset([Sample((path,))], classes=list(classes), split={"test": [0]},
                      root=os.path.dirname(path))  # fmt: skip
    return _infer(dataset, [0], None, None, model_file, output_dir, progress, 1, device)


def _infer(
    dataset: Dataset, indices: list[int], source: str | None, split: str | None,
    model_file: str | os.PathLike[str], output_dir: str | os.PathLike[str],
    progress: Progress | None, batch_size: int, device: str | None,
) -> Path:  # fmt: skip
    from digipath.models.files import load_model

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    description = model_description(model_file)
    model = load_model(model_file, device=device, optimizer=False)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "task": description["task"],
        "model": os.path.basename(os.fspath(model_file)),
        "dataset": None if source is None else os.path.basename(source),
        "split": split,
        "classes": description["classes"],
    }
    if description["task"] == "classification":
        entries, metrics = _classify(dataset, indices, source, model, description, output,
                                     progress, batch_size)  # fmt: skip
    else:
        entries, metrics = _segment(dataset, indices, source, model, description, output,
                                    progress, batch_size)  # fmt: skip
    document["count"] = len(entries)
    document["metrics"] = metrics
    document["images"] = entries
    target = output / RESULTS
    write_text_atomic(str(target), json.dumps(document, indent=1) + "\n")
    return target


# --------------------------------------------------------------------------------------------
# Classification


PREVIEW_SIDE = 256
"""Largest side of a classification preview, in pixels."""


def _preview(image: np.ndarray, path: Path) -> None:
    side = max(image.shape[:2])
    if side > PREVIEW_SIDE:
        scale = PREVIEW_SIDE / side
        shape = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, shape, interpolation=cv2.INTER_AREA)
    _write_png(path, image)


def _classify(dataset, indices, source, model, description, output, progress, batch_size):
    from digipath.data.deephealth_convert import sample_stem

    (output / "previews").mkdir(exist_ok=True)
    classes = description["classes"]
    shape = description["input_shape"]
    normalise = _normalizer(model)
    entries: list[dict[str, Any]] = []
    total = len(indices)
    for start in range(0, total, batch_size):
        chunk = indices[start : start + batch_size]
        patches, previews = [], []
        for index in chunk:
            location = dataset.locations(index)[0]
            image = read_rgb(location, f"images[{index}].location", source)
            patches.append(resize_area(image, shape))
            preview = f"previews/{sample_stem(index, location)}.png"
            _preview(image, output / preview)
            previews.append(preview)
        batch = normalise(np.stack(patches)).astype(np.float32).transpose(0, 3, 1, 2)
        scores = np.asarray(model.predict(np.ascontiguousarray(batch))["predictions"])
        if scores.ndim == 4:
            scores = scores.reshape(*scores.shape[:2], -1).mean(axis=2)
        for index, row, preview in zip(chunk, scores, previews, strict=True):
            label = dataset.images[index].label
            if isinstance(label, tuple):
                label = label[0] if len(label) == 1 else None
            entries.append({
                "image": dataset.images[index].location[0],
                "scores": [float(v) for v in row],
                "predicted": classes[int(np.argmax(row))] if int(np.argmax(row)) < len(classes)
                else str(int(np.argmax(row))),
                "label": dataset.classes[label] if label is not None
                and label < len(dataset.classes) else None,
                "preview": preview,
            })  # fmt: skip
            if progress is not None:
                progress(len(entries), total)
    labelled = [e for e in entries if e["label"] is not None]
    metrics: dict[str, float] = {}
    if labelled:
        metrics["accuracy"] = float(np.mean([e["label"] == e["predicted"] for e in labelled]))
    return entries, metrics


# --------------------------------------------------------------------------------------------
# Segmentation


def _dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Dice of the foreground (values > 0) of two label maps; 1.0 when both are empty."""
    a, b = predicted > 0, truth > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def _overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    colours = OVERLAY_COLOURS[np.minimum(labels, len(OVERLAY_COLOURS) - 1)]
    tinted = image.astype(np.float32)
    where = labels > 0
    tinted[where] = (1 - alpha) * tinted[where] + alpha * colours[where]
    return np.clip(tinted + 0.5, 0, 255).astype(np.uint8)


def _write_png(path: Path, array: np.ndarray) -> None:
    image = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: cannot encode the PNG")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(encoded.tobytes())
    os.replace(temporary, path)


def _segment(dataset, indices, source, model, description, output, progress, batch_size):
    from digipath.data.deephealth_convert import open_slide, sample_stem, write_tiff
    from digipath.inference.apply import apply_network
    from digipath.io import ImageReader

    spacing = description["spacing"] or 0.5
    rows, cols = description["input_shape"]
    tile = max(256, ((max(rows, cols) + 63) // 64) * 64)
    work = output / ".work"
    work.mkdir(exist_ok=True)
    (output / "masks").mkdir(exist_ok=True)
    (output / "overlays").mkdir(exist_ok=True)
    entries: list[dict[str, Any]] = []
    total = len(indices)
    for index in indices:
        key = f"images[{index}]"
        location = dataset.locations(index)[0]
        stem = sample_stem(index, location)
        reader = open_slide(location)
        if reader is not None:
            reader.close()
            image_file = location
        else:
            image = read_rgb(location, f"{key}.location", source)
            image_file = str(work / f"{stem}.tif")
            write_tiff(Path(image_file), image, spacing, mask=False, jpeg=False)
        labels_file = work / f"{stem}_labels.tif"
        apply_network(model, image_file, labels_file, spacing=spacing, tile_size=tile,
                      batch_size=batch_size, overwrite=True, read_threads=1)  # fmt: skip
        with ImageReader(labels_file) as reader:
            height, width = reader.shapes[0]
            labels = reader.read(reader.spacings[0] or spacing, 0, 0, height, width)[:, :, 0]
        labels = np.where(labels > 0, labels.astype(np.int32) - 1, 0).astype(np.uint8)
        with ImageReader(image_file) as reader:
            pixels = reader.read(spacing, 0, 0, height, width)[:, :, :3]
        mask_name = f"masks/{stem}.png"
        overlay_name = f"overlays/{stem}.png"
        _write_png(output / mask_name, labels)
        _write_png(output / overlay_name, _overlay(pixels, labels))
        entry: dict[str, Any] = {"image": dataset.images[index].location[0], "mask": mask_name,
                                 "overlay": overlay_name, "dice": None}  # fmt: skip
        truth_path = dataset.ground_truth(index)
        if truth_path is not None:
            truth = read_ground_truth(truth_path, f"{key}.label", source)
            if truth.shape != labels.shape:
                truth = cv2.resize(truth, (labels.shape[1], labels.shape[0]),
                                   interpolation=cv2.INTER_NEAREST)  # fmt: skip
            entry["dice"] = _dice(labels, truth)
        entries.append(entry)
        for path in (labels_file, work / f"{stem}.tif"):
            if path.exists():
                path.unlink()
        if progress is not None:
            progress(len(entries), total)
    try:
        work.rmdir()
    except OSError:
        pass
    scored = [e["dice"] for e in entries if e["dice"] is not None]
    metrics = {"dice": float(np.mean(scored))} if scored else {}
    return entries, metrics
