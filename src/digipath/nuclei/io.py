"""Reading nucleus annotations: instance maps, type maps and colour-coded type masks.

HoVer-Net's training and evaluation data come in a few layouts, all read here into one
:class:`NucleusMaps` (``(rows, cols)`` maps, 0 background, pixel coordinates):

``.mat`` (:func:`read_mat`)
    The CoNSeP / HoVer-Net layout, also used by PanNuke conversions and cellseg_models:
    ``inst_map`` (required; ``(rows, cols)`` instance ids, not necessarily consecutive),
    ``type_map`` (optional; ``(rows, cols)`` class per pixel), ``inst_type`` (optional;
    ``(N, 1)`` class per instance, in increasing id order), ``inst_centroid`` (optional;
    ``(N, 2)`` centroids as ``(x, y)`` = ``(col, row)``, in increasing id order). Other keys
    (``inst_bbox``, ``sem_map``...) are ignored.
``.npy`` (:func:`read_npy`)
    HoVer-Net's training tiles as ``extract_patches.py`` writes them: ``(rows, cols, 5)``
    RGB + instance + type, ``(rows, cols, 4)`` RGB + instance, or the annotation stacks alone,
    ``(rows, cols, 2)`` instance + type and ``(rows, cols, 1)`` / ``(rows, cols)`` instance.
PNG instance maps (:func:`read_instance_png`)
    One channel (8 or 16 bit) of instance ids.
RGB colour-coded type masks (:func:`read_type_mask`)
    Each pixel's colour names its class through a ``type_info.json`` (:func:`read_type_info`),
    HoVer-Net's format ``{"0": ["background", [0, 0, 0]], "1": ["neoplastic", [255, 0, 0]],
    ...}``. A colour that the file does not list is an error that names the colour, its pixel
    count and where it first occurs. :func:`instances_from_types` makes an instance map from
    such a mask by connected components (touching nuclei of one class merge).

:func:`read_nuclei` picks the reader by extension. Errors are :class:`NucleusFileError` (with
``path``, ``key`` and ``reason``); invalid arrays raise :class:`NucleiError`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from digipath.errors import DataError, FileError

__all__ = [
    "NucleiError",
    "NucleusFileError",
    "NucleusMaps",
    "TypeInfo",
    "colours_to_types",
    "instances_from_types",
    "read_instance_png",
    "read_mat",
    "read_npy",
    "read_nuclei",
    "read_type_info",
    "read_type_mask",
    "remap_types",
]

PathLike = str | os.PathLike[str]


class NucleiError(DataError, ValueError):
    """Invalid nucleus data: instance, type, NP/HV/TP maps or parameters (the message says)."""


class NucleusFileError(NucleiError, FileError):
    """A nucleus annotation file is missing, unreadable or malformed.

    Attributes
    ----------
    path
        The file.
    key
        The offending key, channel or entry (``"inst_map"``, ``"channel 4"``, ``"3"``...), or
        ``None`` for the whole file.
    reason
        What was wrong and what was expected.
    """

    def __init__(self, path: PathLike | None, reason: str, key: str | None = None) -> None:
        self.key = key
        FileError.__init__(self, path, f"{key}: {reason}" if key else reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Type information (type_info.json)


@dataclass(frozen=True)
class TypeInfo:
    """Class names and display colours, as in HoVer-Net's ``type_info.json``.

    Attributes
    ----------
    names
        ``{class: name}``.
    colours
        ``{class: (r, g, b)}``, 0-255 each; no two classes share a colour.
    """

    names: dict[int, str]
    colours: dict[int, tuple[int, int, int]]

    @classmethod
    def from_dict(cls, data: object, source: PathLike | None = None) -> TypeInfo:
        """Validate ``{"0": [name, [r, g, b]], ...}`` (keys: class numbers as strings or ints).

        Raises
        ------
        NucleusFileError
            Naming the entry that is not ``[name, [r, g, b]]``, a class that is not a
            non-negative integer, a colour outside 0-255 or a colour used twice.
        """
        if not isinstance(data, Mapping) or not data:
            raise NucleusFileError(
                source, 'expected a non-empty object {"class": [name, [r, g, b]], ...}'
            )
        names: dict[int, str] = {}
        colours: dict[int, tuple[int, int, int]] = {}
        used: dict[tuple[int, int, int], int] = {}
        for key, value in data.items():
            try:
                label = int(key)
            except (TypeError, ValueError):
                label = -1
            if label < 0 or str(key).strip() != str(label):
                raise NucleusFileError(
                    source, f"the class must be a non-negative integer, got {key!r}", str(key)
                )
            if (
                not isinstance(value, (list, tuple))
                or len(value) != 2
                or not isinstance(value[1], (list, tuple))
                or len(value[1]) != 3
            ):
                raise NucleusFileError(
                    source, f"expected [name, [r, g, b]], got {value!r}", str(key)
                )
            name, rgb = value
            if not all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in rgb
            ):
                raise NucleusFileError(
                    source, f"colour components must be integers in 0-255, got {rgb!r}", str(key)
                )
            colour = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
            if colour in used:
                raise NucleusFileError(
                    source, f"colour {list(colour)} is also class {used[colour]}", str(key)
                )
            if label in names:
                raise NucleusFileError(source, "the class is listed twice", str(key))
            used[colour] = label
            names[label] = str(name)
            colours[label] = colour
        return cls(names=names, colours=colours)

    def to_dict(self) -> dict[str, list]:
        """The ``type_info.json`` form, ``{"0": [name, [r, g, b]], ...}``."""
        return {str(k): [self.names[k], list(self.colours[k])] for k in sorted(self.names)}


def read_type_info(path: PathLike) -> TypeInfo:
    """Read a HoVer-Net ``type_info.json`` (``{"0": ["background", [0, 0, 0]], ...}``).

    Raises
    ------
    NucleusFileError
        The file is missing, not JSON, or an entry is invalid (see :meth:`TypeInfo.from_dict`).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NucleusFileError(path, "no such file") from None
    except OSError as error:
        raise NucleusFileError(path, f"cannot read the file ({error})") from error
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise NucleusFileError(path, f"not valid JSON ({error})") from error
    return TypeInfo.from_dict(data, source=path)


def _type_info(type_info: TypeInfo | Mapping | PathLike) -> TypeInfo:
    if isinstance(type_info, TypeInfo):
        return type_info
    if isinstance(type_info, Mapping):
        return TypeInfo.from_dict(type_info)
    return read_type_info(type_info)


def colours_to_types(
    rgb: np.ndarray, type_info: TypeInfo | Mapping | PathLike, *, path: PathLike | None = None
) -> np.ndarray:
    """Map a colour-coded ``(rows, cols, 3)`` RGB mask to classes.

    Parameters
    ----------
    rgb
        ``(rows, cols, 3)`` (or ``(rows, cols, 4)``, alpha ignored) integer colours, 0-255, in
        RGB order.
    type_info
        A :class:`TypeInfo`, its ``{"0": [name, [r, g, b]], ...}`` dict or a
        ``type_info.json`` path.
    path
        The file the mask came from, for error messages.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` int32 classes.

    Raises
    ------
    NucleusFileError
        Some colours are not in ``type_info``: the message lists up to five with their pixel
        counts and the ``(row, col)`` of their first pixel.
    """
    info = _type_info(type_info)
    data = np.asarray(rgb)
    if data.ndim != 3 or data.shape[2] not in (3, 4):
        raise NucleusFileError(path, f"expected a (rows, cols, 3) RGB mask, got shape {data.shape}")
    if data.dtype.kind not in "ui" or (data.size and (data.min() < 0 or data.max() > 255)):
        raise NucleusFileError(path, f"expected 8-bit colours, got {data.dtype}")
    codes = (
        (data[..., 0].astype(np.int32) << 16)
        | (data[..., 1].astype(np.int32) << 8)
        | data[..., 2].astype(np.int32)
    )
    labels = np.array(sorted(info.colours), np.int32)
    known = np.array([(r << 16) | (g << 8) | b for r, g, b in (info.colours[k] for k in labels)])
    order = np.argsort(known)
    known, labels = known[order], labels[order]
    index = np.searchsorted(known, codes).clip(0, known.size - 1)
    found = known[index] == codes
    if not found.all():
        bad, first, counts = np.unique(codes[~found], return_index=True, return_counts=True)
        where = np.flatnonzero(~found.ravel())[first]
        listed = []
        for position in np.argsort(-counts, kind="stable")[:5]:
            code = int(bad[position])
            row, col = divmod(int(where[position]), codes.shape[1])
            listed.append(
                f"[{code >> 16}, {(code >> 8) & 255}, {code & 255}] ({counts[position]} px, "
                f"first at row {row}, col {col})"
            )
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        palette = ", ".join(f"{k}: {list(info.colours[k])}" for k in sorted(info.colours))
        raise NucleusFileError(
            path,
            f"{bad.size} colour(s) not in type_info: {'; '.join(listed)}{more} "
            f"(type_info colours: {palette})",
        )
    return labels[index].astype(np.int32)


def read_type_mask(path: PathLike, type_info: TypeInfo | Mapping | PathLike) -> np.ndarray:
    """Read a colour-coded type mask (PNG, TIFF...) and map its colours to classes.

    Parameters
    ----------
    path
        An RGB image whose colours are those of ``type_info`` (a grey image is read as RGB).
    type_info
        See :func:`colours_to_types`.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` int32 classes.
    """
    data = _read_image(path)
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    elif data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    else:
        data = data[..., 2::-1]  # BGR(A) -> RGB
    return colours_to_types(data, type_info, path=path)


def instances_from_types(types: np.ndarray, *, connectivity: int = 2) -> np.ndarray:
    """An instance map from a type map: the connected components of each class.

    Use it for colour-coded masks that carry no instance ids. Touching nuclei of one class
    become one instance; nuclei of different classes stay apart even when they touch.

    Parameters
    ----------
    types
        ``(rows, cols)`` classes, 0 background.
    connectivity
        1 (4-neighbours) or 2 (8-neighbours, default).

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` int32 instance ids 1..N, numbered in raster order of each component's
        first pixel.
    """
    data = _integer_map(types, "types")
    if connectivity not in (1, 2):
        raise NucleiError(f"connectivity must be 1 or 2, got {connectivity!r}")
    structure = ndimage.generate_binary_structure(2, connectivity)
    out = np.zeros(data.shape, np.int32)
    offset = 0
    for value in np.unique(data[data != 0]):  # each class on its own: classes never merge
        labels, count = ndimage.label(data == value, structure=structure)
        inside = labels > 0
        out[inside] = labels[inside] + offset
        offset += count
    if offset:  # renumber in raster order of the first pixel
        flat = out.ravel()
        nz = np.flatnonzero(flat)
        _, first = np.unique(flat[nz], return_index=True)
        order = np.argsort(nz[first], kind="stable")
        lookup = np.zeros(offset + 1, np.int32)
        lookup[order + 1] = np.arange(1, offset + 1, dtype=np.int32)
        out = lookup[out]
    return out


def remap_types(types: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Merge or renumber classes, e.g. CoNSeP's 7 classes into HoVer-Net's 4.

    ``remap_types(t, {3: 3, 4: 3, 5: 4, 6: 4, 7: 4})`` is HoVer-Net's CoNSeP merge (classes
    not in ``mapping`` keep their value).

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)`` int32.
    """
    data = _integer_map(types, "types")
    if not mapping:
        return data.copy()
    top = max(int(data.max(initial=0)), *(int(k) for k in mapping))
    if min(int(k) for k in mapping) < 0 or any(int(v) < 0 for v in mapping.values()):
        raise NucleiError(f"type mapping must map non-negative classes, got {dict(mapping)!r}")
    lookup = np.arange(top + 1, dtype=np.int32)
    for key, value in mapping.items():
        lookup[int(key)] = int(value)
    return lookup[data]


# --------------------------------------------------------------------------------------------
# Instance and type maps


@dataclass(frozen=True)
class NucleusMaps:
    """Nucleus annotations of one image.

    Attributes
    ----------
    instances
        ``(rows, cols)`` int32 instance ids, 0 background (ids need not be consecutive).
    types
        ``(rows, cols)`` int32 class per pixel (0 background), or ``None``.
    ids
        ``(N,)`` int32 instance ids present, increasing.
    instance_types
        ``(N,)`` int32 class of each instance (in ``ids`` order) as stored in the file
        (``.mat`` ``inst_type``), or ``None``.
    centroids
        ``(N, 2)`` float64 centroids as stored in the file, ``(x, y)`` = ``(col, row)`` in
        pixels (``.mat`` ``inst_centroid``), or ``None``.
    image
        ``(rows, cols, 3)`` uint8 RGB image for ``.npy`` training tiles that hold one, else
        ``None``.
    path
        The file read, or ``None``.
    """

    instances: np.ndarray
    types: np.ndarray | None = None
    ids: np.ndarray | None = None
    instance_types: np.ndarray | None = None
    centroids: np.ndarray | None = None
    image: np.ndarray | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.ids is None:
            object.__setattr__(self, "ids", _present_ids(self.instances))

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return self.instances.shape  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.ids.size)  # type: ignore[union-attr]


def _present_ids(instances: np.ndarray) -> np.ndarray:
    top = int(instances.max(initial=0))
    if top <= 4 * instances.size + 1024:
        present = np.flatnonzero(np.bincount(instances.ravel(), minlength=top + 1))
        return present[present > 0].astype(np.int32)
    ids = np.unique(instances)
    return ids[ids > 0].astype(np.int32)


def _invalid(path: PathLike | None, name: str, reason: str) -> NucleiError:
    if path is not None:
        return NucleusFileError(path, reason, name)
    return NucleiError(f"{name}: {reason}")


def _integer_map(array: object, name: str, path: PathLike | None = None) -> np.ndarray:
    data = np.asarray(array)
    if data.ndim != 2:
        raise _invalid(path, name, f"expected a (rows, cols) map, got shape {data.shape}")
    if data.dtype == bool:
        return data.astype(np.int32)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise _invalid(path, name, "expected integer values, got non-integer floats")
    elif data.dtype.kind not in "ui":
        raise _invalid(path, name, f"expected an integer map, got dtype {data.dtype}")
    limit = np.iinfo(np.int32).max
    if data.size and (data.min() < 0 or data.max() > limit):
        raise _invalid(path, name, f"values must lie in 0..{limit}, got {data.min()}..{data.max()}")
    return data.astype(np.int32)


def read_mat(path: PathLike, *, type_mapping: Mapping[int, int] | None = None) -> NucleusMaps:
    """Read a HoVer-Net / CoNSeP ``.mat`` annotation.

    Parameters
    ----------
    path
        MATLAB v5 file with ``inst_map`` and optionally ``type_map``, ``inst_type`` and
        ``inst_centroid`` (see the module notes). MATLAB v7.3 (HDF5) files are not read.
    type_mapping
        Optional class merge applied to ``type_map`` and ``inst_type``
        (see :func:`remap_types`).

    Raises
    ------
    NucleusFileError
        Missing file or ``inst_map`` key, maps of the wrong shape or dtype, or per-instance
        arrays whose length differs from the number of instances (the key is named).
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    if not Path(path).is_file():
        raise NucleusFileError(path, "no such file")
    try:
        data = loadmat(os.fspath(path))
    except (MatReadError, ValueError, OSError, NotImplementedError) as error:
        raise NucleusFileError(
            path, f"not a readable MATLAB v5 file ({error}); save it with scipy.io.savemat"
        ) from error
    keys = sorted(k for k in data if not k.startswith("__"))
    if "inst_map" not in data:
        raise NucleusFileError(path, f"no such key (keys: {', '.join(keys) or 'none'})", "inst_map")
    instances = _integer_map(data["inst_map"], "inst_map", path)
    types = None
    if "type_map" in data:
        types = _integer_map(data["type_map"], "type_map", path)
        if types.shape != instances.shape:
            raise NucleusFileError(
                path, f"shape {types.shape} differs from inst_map's {instances.shape}", "type_map"
            )
        if type_mapping:
            types = remap_types(types, type_mapping)
    ids = _present_ids(instances)
    instance_types = None
    if "inst_type" in data:
        values = np.asarray(data["inst_type"])
        if values.size == 0 and ids.size == 0:
            values = values.reshape(0)
        if values.ndim == 2 and 1 in values.shape:
            values = values.ravel()
        if values.ndim != 1 or values.size != ids.size:
            raise NucleusFileError(
                path,
                f"expected (N, 1) with N = {ids.size} instances in inst_map, got shape "
                f"{np.asarray(data['inst_type']).shape}",
                "inst_type",
            )
        instance_types = _integer_map(values[None], "inst_type", path)[0]
        if type_mapping:
            instance_types = remap_types(instance_types[None], type_mapping)[0]
    centroids = None
    if "inst_centroid" in data:
        values = np.asarray(data["inst_centroid"], dtype=np.float64)
        if values.size == 0 and ids.size == 0:
            values = values.reshape(0, 2)
        if values.shape != (ids.size, 2):
            raise NucleusFileError(
                path,
                f"expected (N, 2) (x, y) with N = {ids.size} instances in inst_map, got shape "
                f"{values.shape}",
                "inst_centroid",
            )
        centroids = values
    return NucleusMaps(
        instances=instances,
        types=types,
        ids=ids,
        instance_types=instance_types,
        centroids=centroids,
        path=os.fspath(path),
    )


def read_npy(path: PathLike) -> NucleusMaps:
    """Read a HoVer-Net training tile or annotation stack saved as ``.npy``.

    Layouts (channels last): ``(rows, cols, 5)`` RGB + instance + type, ``(rows, cols, 4)``
    RGB + instance, ``(rows, cols, 2)`` instance + type, ``(rows, cols, 1)`` or
    ``(rows, cols)`` instance. Pickled arrays are refused.

    Raises
    ------
    NucleusFileError
        Missing file, pickled or unreadable array, another layout, RGB values outside 0-255 or
        non-integer / negative ids (the channel is named).
    """
    if not Path(path).is_file():
        raise NucleusFileError(path, "no such file")
    try:
        data = np.load(os.fspath(path), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise NucleusFileError(path, f"not a readable .npy array ({error})") from error
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.shape[2] not in (1, 2, 4, 5):
        raise NucleusFileError(
            path,
            f"expected (rows, cols, C) with C = 5 (RGB + instance + type), 4 (RGB + instance), "
            f"2 (instance + type) or 1 (instance), got shape {data.shape}",
        )
    image = None
    first = 0
    if data.shape[2] >= 4:
        rgb = data[..., :3]
        if rgb.dtype.kind not in "uif" or (rgb.size and (rgb.min() < 0 or rgb.max() > 255)):
            raise NucleusFileError(path, "RGB values must lie in 0-255", "channels 0-2")
        image = rgb.astype(np.uint8)
        first = 3
    instances = _integer_map(data[..., first], f"channel {first} (instances)", path)
    types = None
    if data.shape[2] in (2, 5):
        types = _integer_map(data[..., first + 1], f"channel {first + 1} (types)", path)
    return NucleusMaps(instances=instances, types=types, image=image, path=os.fspath(path))


def _read_image(path: PathLike) -> np.ndarray:
    import cv2

    if not Path(path).is_file():
        raise NucleusFileError(path, "no such file")
    data = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise NucleusFileError(path, "not an image OpenCV can read (PNG, TIFF, BMP...)")
    return data


def read_instance_png(path: PathLike) -> NucleusMaps:
    """Read an instance map stored as a one-channel (8- or 16-bit) image.

    An RGB image whose three channels are equal is read as one channel; a colour image is
    refused (read it with :func:`read_type_mask`).

    Raises
    ------
    NucleusFileError
        Missing or unreadable file, or a colour image.
    """
    data = _read_image(path)
    if data.ndim == 3:
        if data.shape[2] == 1 or (
            np.array_equal(data[..., 0], data[..., 1])
            and np.array_equal(data[..., 0], data[..., 2])
        ):
            data = data[..., 0]
        else:
            raise NucleusFileError(
                path,
                f"an instance map must have one channel, got {data.shape[2]} different channels; "
                "for a colour-coded type mask use read_type_mask(path, type_info)",
            )
    instances = _integer_map(data, "instances", path)
    return NucleusMaps(instances=instances, path=os.fspath(path))


def read_nuclei(
    path: PathLike,
    *,
    type_info: TypeInfo | Mapping | PathLike | None = None,
    type_mapping: Mapping[int, int] | None = None,
) -> NucleusMaps:
    """Read nucleus annotations, choosing the reader by extension.

    ``.mat`` -> :func:`read_mat`; ``.npy`` -> :func:`read_npy`; an image (``.png``, ``.tif``,
    ...) -> :func:`read_instance_png`, or, when ``type_info`` is given, a colour-coded type mask
    (:func:`read_type_mask`) with instances from :func:`instances_from_types`.

    Parameters
    ----------
    path
        The annotation file.
    type_info
        For colour-coded masks: a :class:`TypeInfo`, its dict or a ``type_info.json`` path.
    type_mapping
        Optional class merge (:func:`remap_types`) applied to the types.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".mat":
        return read_mat(path, type_mapping=type_mapping)
    if suffix == ".npy":
        maps = read_npy(path)
    elif type_info is not None:
        types = read_type_mask(path, type_info)
        maps = NucleusMaps(instances=instances_from_types(types), types=types, path=os.fspath(path))
    else:
        maps = read_instance_png(path)
    if type_mapping and maps.types is not None:
        maps = NucleusMaps(
            instances=maps.instances,
            types=remap_types(maps.types, type_mapping),
            ids=maps.ids,
            image=maps.image,
            path=maps.path,
        )
    return maps
