"""DeepHealth datasets as digipath training data: data configs and patch databases.

A DeepHealth dataset (:mod:`digipath.data.deephealth`) lists ordinary images (PNG, JPEG,
TIFF...) with a class or a ground-truth image per sample, and splits them by name. digipath's
engines train on multi-resolution images named by a data config, or on a patch database:

:func:`segmentation_config`
    converts every ordinary image of a segmentation dataset to a tiled TIFF at a chosen pixel
    spacing (µm/px) and its ground truth to a uint8 label TIFF (nearest pyramid), references
    the images that :class:`~digipath.io.ImageReader` already reads as slides (multi-level or
    tiled TIFF with a spacing, SVS, MRXS...), and writes a distributed data config (image and
    mask per sample, one purpose per split);
:func:`classification_database`
    resizes every image of a classification dataset to one patch shape (``cv2.INTER_AREA``)
    and writes a :class:`~digipath.data.patch_database.PatchDatabase` with the class labels
    and names, one purpose per split.

Both are cached: a JSON record of the inputs (path, size, modification time) and settings
lets a second call with the same inputs reuse what the first wrote.

Ground-truth images are label images: a mask whose only values are 0 and one other value
(DeepHealth's 0/255 binary masks) becomes 0/1; a mask holding 255 among other values is
thresholded (>= 128 is 1); any other mask keeps its values as class indices (0 .. 254).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from digipath.data.config import DataConfig, PatchSource, key_path, write_text_atomic
from digipath.data.deephealth import Dataset, load_dataset
from digipath.errors import DatasetFormatError, DigipathError

__all__ = [
    "ORDINARY_EXTENSIONS",
    "classification_database",
    "dataset_purposes",
    "label_image",
    "open_slide",
    "read_ground_truth",
    "read_rgb",
    "resize_area",
    "sample_stem",
    "segmentation_config",
    "write_tiff",
]

logger = logging.getLogger(__name__)

ORDINARY_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
"""Extensions of the images read whole (TIFFs only when they are no slide)."""

CACHE = "conversion.json"
CONFIG = "data.yaml"
CATEGORY = "images"
TILE = 256


# --------------------------------------------------------------------------------------------
# Datasets and purposes


def _open(dataset: Dataset | str | os.PathLike[str]) -> tuple[Dataset, str | None]:
    """The dataset and the file it came from (named in errors)."""
    if isinstance(dataset, Dataset):  # the file is unknown: name its folder
        return dataset, dataset.root
    source = os.fspath(dataset)
    return load_dataset(source), source


def dataset_purposes(
    dataset: Dataset, purposes: Mapping[str, str] | None = None, source: str | None = None
) -> dict[str, list[int]]:
    """Purpose -> sample indices, from the dataset's splits.

    Parameters
    ----------
    dataset
        The DeepHealth dataset.
    purposes
        Purpose -> split name (e.g. ``{"training": "training", "validation": "training"}`` to
        validate on the training split); ``None``: one purpose per split, named as the split.
    source
        The dataset file, named in errors.

    Raises
    ------
    DatasetFormatError
        The dataset has no (non-empty) ``training`` split or a named split does not exist.
    """
    if purposes is None:
        purposes = {name: name for name in dataset.split}
    training = purposes.get("training")
    if training is None or not dataset.split.get(training):
        raise DatasetFormatError(
            key_path("split", training or "training"),
            "the dataset has no training split (or it is empty): add 'split: {training: "
            f"[...]}}' listing sample indices; splits are {', '.join(dataset.split) or 'none'}",
            source,
        )
    result = {}
    for purpose, split in purposes.items():
        if split not in dataset.split:
            raise DatasetFormatError(
                key_path("split", split),
                f"no such split (for purpose {purpose!r}); the dataset's splits are "
                f"{', '.join(dataset.split) or 'none'}",
                source,
            )
        result[str(purpose)] = list(dataset.split[split])
    return result


# --------------------------------------------------------------------------------------------
# Reading ordinary images


def _read_array(path: str, key: str, source: str | None) -> np.ndarray:
    if path.lower().startswith(("http://", "https://")):
        raise DatasetFormatError(
            key, f"{path}: remote images are not supported; download them first", source
        )
    if not os.path.isfile(path):
        raise DatasetFormatError(key, f"{path}: no such image file", source)
    image = None
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            image = tifffile.imread(path)
        else:
            image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if image is not None and image.ndim == 3:
                image = cv2.cvtColor(
                    image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
                )
    except Exception as error:  # tifffile and cv2 raise many kinds for a bad file
        raise DatasetFormatError(key, f"{path}: cannot read the image: {error}", source) from None
    if image is None or image.size == 0:
        raise DatasetFormatError(
            key, f"{path}: cannot read the image (not a PNG, JPEG, TIFF... file?)", source
        )
    return np.asarray(image)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.integer) and image.max(initial=0) > 255:
        return (
            (image.astype(np.float64) * (255.0 / np.iinfo(image.dtype).max))
            .round()
            .astype(np.uint8)
        )
    if np.issubdtype(image.dtype, np.floating) and image.max(initial=0) <= 1.0:
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def read_rgb(path: str, key: str = "image", source: str | None = None) -> np.ndarray:
    """Read an ordinary image as RGB.

    Parameters
    ----------
    path
        A PNG, JPEG, TIFF... file (TIFF with tifffile, others with OpenCV).
    key, source
        The dataset key (``images[3].location``) and file named in errors.

    Returns
    -------
    numpy.ndarray
        uint8 ``(rows, cols, 3)``; grey images are repeated over the channels, alpha dropped.

    Raises
    ------
    DatasetFormatError
        Missing or unreadable file, or an unsupported layout.
    """
    image = _to_uint8(_read_array(path, key, source))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[:, :, :3]
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    else:
        raise DatasetFormatError(
            key, f"{path}: expected a grey or RGB(A) image, got shape {image.shape}", source
        )
    return np.ascontiguousarray(image)


def label_image(ground_truth: np.ndarray) -> np.ndarray:
    """A ground-truth image as a uint8 label image (see the module docstring).

    Parameters
    ----------
    ground_truth
        ``(rows, cols)`` or ``(rows, cols, channels)`` (a colour mask: the channel maximum).

    Returns
    -------
    numpy.ndarray
        uint8 ``(rows, cols)`` labels in 0 .. 254.
    """
    mask = np.asarray(ground_truth)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    values = np.unique(mask)
    if values.size == 2 and values[0] == 0 and values[1] > 1:
        return (mask > 0).astype(np.uint8)
    if values.size == 1 and values[0] > 1:
        return np.ones(mask.shape, np.uint8)
    if values.size and values[-1] >= 255:
        return (mask >= 128).astype(np.uint8)
    return mask.astype(np.uint8)


def read_ground_truth(path: str, key: str = "label", source: str | None = None) -> np.ndarray:
    """Read a ground-truth image as uint8 ``(rows, cols)`` labels (see :func:`label_image`)."""
    return label_image(_read_array(path, key, source))


def open_slide(path: str) -> Any:
    """An :class:`~digipath.io.ImageReader` when ``path`` is a slide it reads, else ``None``.

    Files with an ordinary extension are slides only when they are TIFFs with several levels
    or with tiles and a pixel spacing.
    """
    from digipath.io import ImageReader

    lower = path.lower()
    ordinary = lower.endswith(ORDINARY_EXTENSIONS)
    if ordinary and not lower.endswith((".tif", ".tiff")):
        return None
    try:
        reader = ImageReader(path)
    except (DigipathError, OSError, ValueError):
        return None
    if ordinary and not (
        reader.level_count > 1 or (reader.tile_shape is not None and reader.spacings[0])
    ):
        reader.close()
        return None
    return reader


# --------------------------------------------------------------------------------------------
# The cache


def _fingerprint(path: str) -> list[Any]:
    status = os.stat(path)
    return [os.path.abspath(path), status.st_size, status.st_mtime_ns]


class _Cache:
    """Output name -> record of its inputs and settings (``conversion.json`` in a folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, Any] = {}
        if path.is_file():
            try:
                self.records = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                logger.warning("%s: unreadable conversion cache; converting again", path)
        if not isinstance(self.records, dict):
            self.records = {}

    def fresh(self, output: Path, record: Mapping[str, Any]) -> bool:
        """Whether ``output`` exists and was made from ``record`` (results such as the mask's
        ``labels`` that the record also stores are not compared)."""
        stored = self.records.get(output.name)
        if not output.exists() or not isinstance(stored, dict):
            return False
        return {k: v for k, v in stored.items() if k != "labels"} == json.loads(json.dumps(record))

    def store(self, output: Path, record: Any) -> None:
        self.records[output.name] = record

    def save(self) -> None:
        write_text_atomic(str(self.path), json.dumps(self.records, indent=1) + "\n")


def sample_stem(index: int, path: str) -> str:
    """``<index:05d>_<file stem>`` with unusual characters replaced: converted file names."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).stem)
    return f"{index:05d}_{name}"


# --------------------------------------------------------------------------------------------
# Segmentation: data config


def write_tiff(path: Path, array: np.ndarray, spacing: float, *, mask: bool, jpeg: bool) -> None:
    """Write an image or a label mask as a tiled TIFF (one level unless larger than 1024 px).

    Parameters
    ----------
    path
        The target (written under a temporary name and renamed by the writer).
    array
        uint8 ``(rows, cols, 3)`` RGB, or ``(rows, cols)`` labels when ``mask``.
    spacing
        Pixel spacing of the full resolution in µm/px.
    mask
        A label mask: one channel, LZW, nearest-neighbour pyramid.
    jpeg
        JPEG (quality 95) for an RGB image, else lossless LZW.
    """
    from digipath.io import ImageWriter

    channels = 1 if mask else 3
    with ImageWriter(
        path, array.shape[:2], spacing=spacing, channels=channels, tile_size=TILE,
        compression="jpeg" if jpeg and not mask else "lzw", jpeg_quality=95,
        interpolation="nearest" if mask else "mean",
    ) as writer:  # fmt: skip
        writer.fill(array[:, :, None] if mask else array)


def _mask_values(path: str) -> list[int]:
    """The label values of a mask slide (from its coarsest level)."""
    from digipath.io import ImageReader

    with ImageReader(path) as reader:
        level = reader.level_count - 1
        spacing = reader.spacings[level]
        rows, cols = reader.shapes[level]
        if spacing is None:
            raise DatasetFormatError("", f"{path}: the mask states no pixel spacing")
        content = reader.read(spacing, 0, 0, rows, cols, interpolation="nearest")
    return sorted(int(v) for v in np.unique(content) if v != 255)


def segmentation_config(
    dataset: Dataset | str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    spacing: float = 0.5,
    purposes: Mapping[str, str] | None = None,
) -> Path:
    """Convert a segmentation dataset to tiled TIFFs and a data config.

    Parameters
    ----------
    dataset
        The DeepHealth dataset (YAML path or :class:`~digipath.data.deephealth.Dataset`);
        every sample of the chosen splits needs a ground-truth image.
    folder
        Where the converted images (``images/``), masks (``masks/``), the data config
        (``data.yaml``) and the cache record (``conversion.json``) go.
    spacing
        Pixel spacing in µm/px given to the ordinary images (they state none).
    purposes
        Purpose -> split name; default one purpose per split (see :func:`dataset_purposes`).

    Returns
    -------
    pathlib.Path
        The data config: distributed, ratio 1.0 per purpose, one category ``images``, items
        with absolute ``image`` and ``mask`` paths and the mask's label values as ``labels``.

    Raises
    ------
    DatasetFormatError
        A classification dataset, no training split, a missing ground truth, an unreadable
        image, or an image and ground truth of different sizes (naming the sample's key).
    """
    data, source = _open(dataset)
    if not spacing > 0:
        raise DatasetFormatError("spacing", f"expected a pixel spacing > 0 µm/px, got {spacing!r}")
    if data.task != "segmentation":
        raise DatasetFormatError(
            "classes", "a classification dataset (it lists classes); use classification_database",
            source,
        )  # fmt: skip
    chosen = dataset_purposes(data, purposes, source)
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    cache = _Cache(folder / CACHE)
    converted: dict[int, PatchSource] = {}
    for index in sorted({i for indices in chosen.values() for i in indices}):
        converted[index] = _segmentation_sample(data, index, folder, spacing, cache, source)
    cache.save()
    config = DataConfig(
        {p: {CATEGORY: [converted[i] for i in indices]} for p, indices in chosen.items()},
        {p: 1.0 for p in chosen},
    )
    target = folder / CONFIG
    config.save(target)
    return target


def _segmentation_sample(
    data: Dataset, index: int, folder: Path, spacing: float, cache: _Cache, source: str | None
) -> PatchSource:
    key = key_path("images", index)
    locations = data.locations(index)
    if len(locations) != 1:
        raise DatasetFormatError(
            key_path(key, "location"), f"{len(locations)} planes; one image is supported", source
        )
    location = locations[0]
    truth = data.ground_truth(index)
    if truth is None:
        raise DatasetFormatError(
            key_path(key, "label"),
            f"sample {index} ({location}) has no ground-truth image; a segmentation sample "
            "needs 'label: <path of its mask>'",
            source,
        )
    if not os.path.isfile(truth) and not truth.lower().startswith(("http://", "https://")):
        raise DatasetFormatError(
            key_path(key, "label"), f"{truth}: the ground-truth image does not exist", source
        )
    if not location.lower().startswith(("http://", "https://")) and not os.path.exists(location):
        raise DatasetFormatError(
            key_path(key, "location"), f"{location}: no such image file", source
        )
    stem = sample_stem(index, location)
    reader = open_slide(location)
    if reader is not None:  # referenced, not copied
        with reader:
            level_spacing = reader.spacings[0]
            shape = reader.shapes[0]
        if level_spacing is None:
            raise DatasetFormatError(
                key_path(key, "location"), f"{location}: the slide states no pixel spacing", source
            )
        mask_reader = open_slide(truth)
        if mask_reader is not None:
            mask_reader.close()
            return PatchSource(os.path.abspath(location), os.path.abspath(truth), "",
                               tuple(_mask_values(truth)))  # fmt: skip
        mask_path = folder / "masks" / f"{stem}_mask.tif"
        record = {"inputs": [_fingerprint(truth)], "shape": list(shape), "spacing": level_spacing}
        if not cache.fresh(mask_path, record):
            labels = read_ground_truth(truth, key_path(key, "label"), source)
            mask_spacing = level_spacing * shape[1] / labels.shape[1]
            write_tiff(mask_path, labels, mask_spacing, mask=True, jpeg=False)
            record["labels"] = sorted(int(v) for v in np.unique(labels) if v != 255)
            cache.store(mask_path, record)
        return PatchSource(os.path.abspath(location), str(mask_path.resolve()), "",
                           tuple(cache.records[mask_path.name]["labels"]))  # fmt: skip
    image_path = folder / "images" / f"{stem}.tif"
    mask_path = folder / "masks" / f"{stem}_mask.tif"
    record = {"inputs": [_fingerprint(location), _fingerprint(truth)], "spacing": spacing}
    if not (cache.fresh(image_path, record) and cache.fresh(mask_path, record)):
        image = read_rgb(location, key_path(key, "location"), source)
        labels = read_ground_truth(truth, key_path(key, "label"), source)
        if labels.shape != image.shape[:2]:
            raise DatasetFormatError(
                key_path(key, "label"),
                f"{truth}: the ground truth is {labels.shape[0]} x {labels.shape[1]} pixels, the "
                f"image {location} {image.shape[0]} x {image.shape[1]}; they must be the same",
                source,
            )
        jpeg = location.lower().endswith((".jpg", ".jpeg"))
        write_tiff(image_path, image, spacing, mask=False, jpeg=jpeg)
        write_tiff(mask_path, labels, spacing, mask=True, jpeg=False)
        record = {**record, "labels": sorted(int(v) for v in np.unique(labels) if v != 255)}
        cache.store(image_path, record)
        cache.store(mask_path, record)
    labels = cache.records[mask_path.name]["labels"]
    return PatchSource(str(image_path.resolve()), str(mask_path.resolve()), "", tuple(labels))


# --------------------------------------------------------------------------------------------
# Classification: patch database


def _class_label(data: Dataset, index: int, source: str | None) -> int | None:
    label = data.images[index].label
    if isinstance(label, tuple):
        if len(label) != 1:
            raise DatasetFormatError(
                key_path("images", index, "label"),
                f"a multi-label sample ({len(label)} classes); one class per sample is supported",
                source,
            )
        return int(label[0])
    return None if label is None else int(label)


def classification_database(
    dataset: Dataset | str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    shape: tuple[int, int] = (100, 100),
    purposes: Mapping[str, str] | None = None,
) -> Path:
    """Write a classification dataset as a patch database of resized images.

    Parameters
    ----------
    dataset
        The DeepHealth dataset (YAML path or :class:`~digipath.data.deephealth.Dataset`)
        with ``classes``.
    folder
        The database folder (its ``database.yaml`` and shards, plus ``conversion.json``).
    shape
        ``(rows, cols)`` every image is resized to (``cv2.INTER_AREA``), in pixels.
    purposes
        Purpose -> split name; default one purpose per split (see :func:`dataset_purposes`).

    Returns
    -------
    pathlib.Path
        The database folder: uint8 RGB patches, the sample's class as label, the dataset's
        class names, the image location as each patch's source, no spacing.

    Raises
    ------
    DatasetFormatError
        A segmentation dataset, no training split, an unreadable image, or a sample of the
        ``training`` or ``validation`` purpose without a class (naming the sample's key).
        Unlabelled samples of other purposes (e.g. ``test``) are left out.
    """
    from digipath.data.patch_database import INDEX, PatchDatabaseWriter

    data, source = _open(dataset)
    if data.task != "classification":
        raise DatasetFormatError(
            "classes", "the dataset lists no classes (a segmentation dataset); use "
            "segmentation_config", source,
        )  # fmt: skip
    rows, cols = _shape(shape)
    chosen = dataset_purposes(data, purposes, source)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inputs = {}
    for indices in chosen.values():
        for index in indices:
            for location in data.locations(index):
                if not os.path.isfile(location):
                    raise DatasetFormatError(
                        key_path("images", index, "location"),
                        f"{location}: no such image file",
                        source,
                    )
                inputs[location] = _fingerprint(location)
    record = {
        "inputs": sorted(inputs.values()),
        "shape": [rows, cols],
        "classes": list(data.classes),
        "purposes": chosen,
        "sample labels": {str(i): data.images[i].label for ids in chosen.values() for i in ids},
    }
    cache = _Cache(folder / CACHE)
    if cache.fresh(folder / INDEX, record):
        return folder
    with PatchDatabaseWriter(folder, (rows, cols), 3, data.classes) as writer:
        for purpose, indices in chosen.items():
            for index in indices:
                label = _class_label(data, index, source)
                key = key_path("images", index)
                if label is None:
                    if purpose in ("training", "validation"):
                        raise DatasetFormatError(
                            key_path(key, "label"),
                            f"sample {index} of the {purpose} split has no class; classes are "
                            f"{', '.join(data.classes)}",
                            source,
                        )
                    logger.info("%s: %s has no class; left out of %s", source, key, purpose)
                    continue
                location = data.locations(index)[0]
                image = read_rgb(location, key_path(key, "location"), source)
                patch = resize_area(image, (rows, cols))
                writer.add(purpose, patch[None], label, source=location)
    cache.store(folder / INDEX, record)
    cache.save()
    return folder


def _shape(shape: Sequence[int]) -> tuple[int, int]:
    valid = (
        isinstance(shape, (tuple, list)) and len(shape) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                for v in shape)
    )  # fmt: skip
    if not valid:
        raise DatasetFormatError(
            "shape", f"expected (rows, cols) of positive integers, got {shape!r}"
        )
    return int(shape[0]), int(shape[1])


def resize_area(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``(rows, cols)`` with ``cv2.INTER_AREA`` (unchanged when equal)."""
    rows, cols = shape
    if image.shape[:2] == (rows, cols):
        return image
    resized = cv2.resize(image, (cols, rows), interpolation=cv2.INTER_AREA)
    return resized if resized.ndim == image.ndim else resized[:, :, None]
