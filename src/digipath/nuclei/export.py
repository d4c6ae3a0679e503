"""Writing segmented nuclei: QuPath GeoJSON, the original hover_net JSON, label TIFF, overlay.

Every writer takes a :class:`~digipath.nuclei.postprocess.Nuclei` table (of one tile or one
image) and places it in the slide with ``offset`` and ``downsample``:

``offset``
    ``(row, col)`` of the table's pixel ``(0, 0)`` at the processing spacing (the tile's origin
    in the slide; ``(0, 0)`` for a whole image).
``downsample``
    Level-0 pixels per processing pixel (``processing spacing / level-0 spacing``, e.g. 2 for
    maps at 0.5 µm/px of a 0.25 µm/px scan). GeoJSON coordinates are level-0 pixels ``(x, y)``
    = ``(col, row)``, as QuPath expects; the hover_net JSON keeps processing pixels, as the
    original's (its ``mag`` says at which magnification).

Files are written under a temporary name in the target folder and renamed into place, so a
reader never sees half a file. :class:`GeoJSONStream` and :class:`HoverNetJSONStream` write
large outputs incrementally (one tile or tile row at a time), for whole slides.

Type names and colours come from a :class:`~digipath.nuclei.io.TypeInfo` (HoVer-Net's
``type_info.json``); without one, nuclei are named ``"type <k>"`` (or ``"nucleus"`` without a TP
branch) with colours from a fixed palette.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from digipath.nuclei.io import NucleiError, NucleusFileError, TypeInfo, _type_info
from digipath.nuclei.postprocess import Nuclei

__all__ = [
    "GeoJSONStream",
    "HoverNetJSONStream",
    "LabelTiffStream",
    "detection_features",
    "nuclei_records",
    "read_hovernet_json",
    "to_geojson",
    "to_hovernet_json",
    "write_geojson",
    "write_hovernet_json",
    "write_label_tiff",
    "write_overlay",
]

PathLike = str | os.PathLike[str]

_PALETTE = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 128, 0),
    (128, 0, 255),
    (0, 128, 255),
    (128, 255, 0),
)
_NO_TYPE_COLOUR = (255, 255, 0)


def _type_lookup(type_info: TypeInfo | Mapping | PathLike | None):
    info = None if type_info is None else _type_info(type_info)

    def lookup(kind: int | None) -> tuple[str, tuple[int, int, int]]:
        if kind is None:
            return "nucleus", _NO_TYPE_COLOUR
        if info is not None and kind in info.names:
            return info.names[kind], info.colours[kind]
        return f"type {kind}", _PALETTE[kind % len(_PALETTE)]

    return lookup


def _placement(offset: tuple[float, float], downsample: float) -> tuple[float, float, float]:
    try:
        row, col = (float(v) for v in offset)
    except (TypeError, ValueError):
        raise NucleiError(f"offset must be (row, col) pixels, got {offset!r}") from None
    downsample = float(downsample)
    if not np.isfinite(downsample) or downsample <= 0:
        raise NucleiError(f"downsample must be a positive number, got {downsample!r}")
    return row, col, downsample


def nuclei_records(
    nuclei: Nuclei, *, offset: tuple[float, float] = (0, 0), keep: np.ndarray | None = None
) -> Iterator[dict[str, Any]]:
    """The table's nuclei as plain dicts in slide pixels at the processing spacing.

    Each record has the hover_net JSON fields (``bbox`` ``[[row0, col0], [row1, col1]]``,
    ``centroid`` ``[x, y]``, ``contour`` ``[[x, y], ...]``, ``type``, ``type_prob``) plus
    ``area`` (pixels), shifted by ``offset`` ``(row, col)``. ``keep``: optional boolean
    selection of the table's rows.
    """
    row, col, _ = _placement(offset, 1.0)
    shift_xy = np.array([col, row])
    shift_rc = np.array([row, col])
    for i in range(len(nuclei)):
        if keep is not None and not keep[i]:
            continue
        bbox = nuclei.bboxes[i] + shift_rc
        contour = nuclei.contours[i] + shift_xy
        yield {
            "bbox": _plain(bbox),
            "centroid": (nuclei.centroids[i] + shift_xy).tolist(),
            "contour": _plain(contour),
            "type_prob": None if nuclei.type_probs is None else float(nuclei.type_probs[i]),
            "type": None if nuclei.types is None else int(nuclei.types[i]),
            "area": int(nuclei.areas[i]),
        }


def _plain(array: np.ndarray) -> list:
    """Integer-valued coordinates as ints (smaller files), others as floats."""
    if np.all(np.equal(np.mod(array, 1), 0)):
        return array.astype(np.int64).tolist()
    return array.astype(np.float64).tolist()


# --------------------------------------------------------------------------------------------
# GeoJSON


def _polygon(contour: np.ndarray):
    """A valid shapely polygon of a closed ``(K, 2)`` ring (repaired: its largest part)."""
    import shapely
    from shapely.geometry import Polygon

    polygon = Polygon(contour)
    if polygon.is_valid and polygon.area > 0:
        return polygon
    repaired = shapely.make_valid(polygon)
    parts = [g for g in getattr(repaired, "geoms", [repaired]) if g.geom_type == "Polygon"]
    if not parts:
        return None
    return max(parts, key=lambda g: g.area)


def detection_features(
    records: Iterable[Mapping[str, Any]],
    *,
    downsample: float = 1.0,
    type_info: TypeInfo | Mapping | PathLike | None = None,
) -> Iterator[dict[str, Any]]:
    """QuPath detection features of :func:`nuclei_records` (level-0 pixel coordinates).

    Each feature: a ``Polygon`` geometry (the contour times ``downsample``, closed, repaired to a
    valid polygon when the traced contour touches itself), ``id`` a UUID, and properties
    ``objectType: "detection"``, ``classification: {"name", "color": [r, g, b]}``,
    ``measurements: {"type_prob", "area_px"}`` (area at the processing spacing), ``type``,
    ``type_prob`` and ``centroid`` ``[x, y]`` (level 0). Nuclei whose contour encloses no area
    are skipped.
    """
    from shapely.geometry import mapping

    lookup = _type_lookup(type_info)
    _, _, scale = _placement((0, 0), downsample)
    for record in records:
        contour = np.asarray(record["contour"], np.float64) * scale
        polygon = _polygon(contour)
        if polygon is None:
            continue
        name, colour = lookup(record.get("type"))
        centroid = [float(v) * scale for v in record["centroid"]]
        measurements: dict[str, Any] = {"area_px": record.get("area")}
        if record.get("type_prob") is not None:
            measurements["type_prob"] = record["type_prob"]
        yield {
            "type": "Feature",
            "id": str(uuid.uuid4()),
            "geometry": mapping(polygon),
            "properties": {
                "objectType": "detection",
                "classification": {"name": name, "color": list(colour)},
                "isLocked": False,
                "type": record.get("type"),
                "type_prob": record.get("type_prob"),
                "centroid": centroid,
                "measurements": measurements,
            },
        }


def to_geojson(
    nuclei: Nuclei,
    *,
    offset: tuple[float, float] = (0, 0),
    downsample: float = 1.0,
    type_info: TypeInfo | Mapping | PathLike | None = None,
) -> dict[str, Any]:
    """The nuclei as a QuPath GeoJSON ``FeatureCollection`` of detections (a dict).

    See :func:`detection_features`; ``offset`` ``(row, col)`` at the processing spacing,
    ``downsample`` level-0 pixels per processing pixel.
    """
    records = nuclei_records(nuclei, offset=offset)
    features = list(detection_features(records, downsample=downsample, type_info=type_info))
    return {"type": "FeatureCollection", "features": features}


class _AtomicText:
    """A text file written under a temporary name and renamed into place by :meth:`close`."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))
        if not self.path.parent.is_dir():
            raise NucleusFileError(self.path, f"the folder {self.path.parent} does not exist")
        self.temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        try:
            self.handle: IO[str] | None = open(self.temporary, "w", encoding="utf-8")
        except OSError as error:
            raise NucleusFileError(self.path, f"cannot be written: {error}") from error

    def write(self, text: str) -> None:
        if self.handle is None:
            raise NucleiError(f"{self.path}: the writer is closed")
        self.handle.write(text)

    def close(self) -> str:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
            os.replace(self.temporary, self.path)
        return str(self.path)

    def abort(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
            self.temporary.unlink(missing_ok=True)


class _JSONStream:
    """A JSON document written piece by piece under a temporary name (see the subclasses).

    Subclasses write the opening text in ``__init__`` and set :attr:`ending`, the text that
    closes the document.
    """

    ending = ""
    _file: _AtomicText

    def close(self) -> str:
        """Finish the file and move it into place; returns its path."""
        if self._file.handle is not None:
            self._file.write(self.ending)
        return self._file.close()

    def abort(self) -> None:
        """Drop the temporary file."""
        self._file.abort()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class GeoJSONStream(_JSONStream):
    """Write a QuPath GeoJSON ``FeatureCollection`` of detections incrementally (atomically).

    Use as a context manager; :meth:`add` takes a tile's :func:`nuclei_records` (or a
    :class:`Nuclei` with its offset). The file appears at ``path`` on a clean exit only.

    Parameters
    ----------
    path
        The ``.geojson`` file.
    downsample
        Level-0 pixels per processing pixel.
    type_info
        Type names and colours.
    """

    ending = "\n]}\n"

    def __init__(
        self,
        path: PathLike,
        *,
        downsample: float = 1.0,
        type_info: TypeInfo | Mapping | PathLike | None = None,
    ) -> None:
        self.downsample = _placement((0, 0), downsample)[2]
        self.type_info = None if type_info is None else _type_info(type_info)
        self._file = _AtomicText(path)
        self._file.write('{"type": "FeatureCollection", "features": [\n')
        self.count = 0

    def add(
        self,
        nuclei: Nuclei | Iterable[Mapping[str, Any]],
        *,
        offset: tuple[float, float] = (0, 0),
        keep: np.ndarray | None = None,
    ) -> int:
        """Append nuclei (a table with its ``offset``, or records); returns how many."""
        records = (
            nuclei_records(nuclei, offset=offset, keep=keep)
            if isinstance(nuclei, Nuclei)
            else nuclei
        )
        added = 0
        for feature in detection_features(
            records, downsample=self.downsample, type_info=self.type_info
        ):
            self._file.write((",\n" if self.count else "") + json.dumps(feature))
            self.count += 1
            added += 1
        return added


def write_geojson(
    nuclei: Nuclei,
    path: PathLike,
    *,
    offset: tuple[float, float] = (0, 0),
    downsample: float = 1.0,
    type_info: TypeInfo | Mapping | PathLike | None = None,
) -> str:
    """Write :func:`to_geojson` of ``nuclei`` to ``path`` (atomically); returns the path."""
    with GeoJSONStream(path, downsample=downsample, type_info=type_info) as stream:
        stream.add(nuclei, offset=offset)
    return str(stream._file.path)


# --------------------------------------------------------------------------------------------
# hover_net JSON


def to_hovernet_json(
    nuclei: Nuclei, *, mag: float | None = None, offset: tuple[float, float] = (0, 0)
) -> dict[str, Any]:
    """The original's layout ``{"mag": mag, "nuc": {"<id>": {bbox, centroid, contour, type,
    type_prob}}}``, coordinates shifted by ``offset`` ``(row, col)`` (processing pixels)."""
    nuc = {}
    for inst_id, record in zip(
        nuclei.ids.tolist(), nuclei_records(nuclei, offset=offset), strict=True
    ):
        record.pop("area")
        nuc[str(inst_id)] = record
    return {"mag": mag, "nuc": nuc}


class HoverNetJSONStream(_JSONStream):
    """Write the hover_net JSON layout incrementally (atomically); ids numbered from 1.

    Parameters
    ----------
    path
        The ``.json`` file.
    mag
        The ``mag`` field: the processing magnification (e.g. 40), or ``None``.
    """

    ending = "\n}}\n"

    def __init__(self, path: PathLike, *, mag: float | None = None) -> None:
        self._file = _AtomicText(path)
        self._file.write('{"mag": ' + json.dumps(mag) + ', "nuc": {\n')
        self.count = 0

    def add(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append :func:`nuclei_records`; returns how many."""
        added = 0
        for record in records:
            entry = {k: record[k] for k in ("bbox", "centroid", "contour", "type_prob", "type")}
            self.count += 1
            prefix = ",\n" if self.count > 1 else ""
            self._file.write(f'{prefix}"{self.count}": {json.dumps(entry)}')
            added += 1
        return added


def write_hovernet_json(
    nuclei: Nuclei,
    path: PathLike,
    *,
    mag: float | None = None,
    offset: tuple[float, float] = (0, 0),
) -> str:
    """Write :func:`to_hovernet_json` to ``path`` (atomically, keeping the table's ids)."""
    target = _AtomicText(path)
    try:
        target.write(json.dumps(to_hovernet_json(nuclei, mag=mag, offset=offset)) + "\n")
    except BaseException:
        target.abort()
        raise
    return target.close()


def read_hovernet_json(path: PathLike) -> dict[str, Any]:
    """Read a hover_net JSON file (``{"mag", "nuc"}``), checking its layout.

    Raises
    ------
    NucleusFileError
        Missing, not JSON, or without a ``nuc`` object of nuclei with a ``contour``.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NucleusFileError(path, "no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NucleusFileError(path, f"cannot be read as JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("nuc"), dict):
        raise NucleusFileError(path, 'expected the hover_net layout {"mag": ..., "nuc": {...}}')
    for key, value in data["nuc"].items():
        if not isinstance(value, dict) or "contour" not in value or "centroid" not in value:
            raise NucleusFileError(path, "a nucleus without contour or centroid", str(key))
    return data


# --------------------------------------------------------------------------------------------
# Label TIFF and overlay


def write_label_tiff(
    instances: np.ndarray,
    path: PathLike,
    *,
    spacing: float | None,
    tile_size: int = 512,
) -> str:
    """Write an instance-label map as a pyramidal uint32 TIFF (LZW, nearest downsampling).

    Parameters
    ----------
    instances
        ``(rows, cols)`` non-negative integer ids, 0 background (e.g. ``Nuclei.instances``).
    path
        The ``.tif`` file (written under a temporary name, then renamed by the writer).
    spacing
        Pixel spacing of ``instances`` in µm/px, or ``None``.
    """
    from digipath.io import ImageWriter

    labels = np.asarray(instances)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise NucleiError(
            f"instances: expected (rows, cols) integers, got {labels.dtype} {labels.shape}"
        )
    if labels.size and labels.min() < 0:
        raise NucleiError("instances: ids must be >= 0")
    with ImageWriter(
        path,
        labels.shape,
        spacing=spacing,
        dtype="uint32",
        channels=1,
        compression="lzw",
        interpolation="nearest",
        fill=0,
        tile_size=tile_size,
    ) as writer:
        writer.fill(labels.astype(np.uint32)[:, :, None])
    return os.path.abspath(os.fspath(path))


class LabelTiffStream:
    """Write a slide-wide instance-label TIFF band by band (uint32, LZW, pyramidal).

    :meth:`add` paints :func:`nuclei_records` (filled contours, :func:`cv2.fillPoly`, in
    processing pixels) with ids numbered from 1 in the order they are added, as
    :class:`HoverNetJSONStream` numbers them; a later nucleus overwrites an earlier one where
    their fills overlap. The records are held in a band buffer from the first row not yet
    written to the lowest row painted; :meth:`release` declares the rows above a row final,
    and the complete ``tile_size``-row blocks among them are written out at once (the
    :class:`~digipath.io.ImageWriter` takes whole tile rows). Memory is thus one band: the
    rows still open plus less than one block. The file appears at ``path`` on :meth:`close`.

    Parameters
    ----------
    path
        The ``.tif`` file.
    shape
        ``(rows, cols)`` of the label image (the slide at the processing spacing).
    spacing
        Its spacing in µm/px, or ``None``.
    tile_size
        TIFF tile side (and block height) in pixels.
    """

    def __init__(
        self,
        path: PathLike,
        shape: tuple[int, int],
        *,
        spacing: float | None,
        tile_size: int = 512,
    ) -> None:
        from digipath.io import ImageWriter

        self.shape = (int(shape[0]), int(shape[1]))
        self.tile_size = int(tile_size)
        self._writer = ImageWriter(
            path,
            self.shape,
            spacing=spacing,
            dtype="uint32",
            channels=1,
            compression="lzw",
            interpolation="nearest",
            fill=0,
            tile_size=self.tile_size,
        )
        self.path = self._writer.path
        self._top = 0  # first row not yet written (a multiple of tile_size)
        self._final = 0  # rows above this are final
        self._band = np.zeros((0, self.shape[1]), np.int32)  # cv2 paints int32, not uint32
        self.count = 0

    def _extend(self, bottom: int) -> None:
        """Grow the band to cover the rows up to ``bottom`` (excluded)."""
        bottom = min(self.shape[0], bottom)
        missing = bottom - (self._top + self._band.shape[0])
        if missing > 0:
            extra = np.zeros((missing, self.shape[1]), np.int32)
            self._band = np.concatenate([self._band, extra]) if self._band.size else extra

    def add(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Paint :func:`nuclei_records` with the next ids; returns how many.

        Raises
        ------
        NucleiError
            A record reaches above the rows already released (written).
        """
        import cv2

        added = 0
        for record in records:
            contour = np.rint(np.asarray(record["contour"], np.float64)).astype(np.int32)
            contour = contour.reshape(-1, 2)
            if len(contour) and int(contour[:, 1].min()) < self._final:
                raise NucleiError(
                    f"{self.path}: nucleus {self.count + 1} reaches row "
                    f"{int(contour[:, 1].min())}, above the rows already released "
                    f"({self._final})"
                )
            self.count += 1
            added += 1
            if not len(contour):
                continue
            self._extend(int(contour[:, 1].max()) + 1)
            contour[:, 1] -= self._top
            cv2.fillPoly(self._band, [contour.reshape(-1, 1, 2)], int(self.count))
        if self.count >= 2**31:
            raise NucleiError(f"{self.path}: more than {2**31 - 1} nuclei for the label TIFF")
        return added

    def release(self, row: int) -> None:
        """Declare the rows above ``row`` final and write the complete blocks among them."""
        self._final = max(self._final, min(int(row), self.shape[0]))
        size = self.tile_size
        while self._top < self.shape[0] and (
            self._top + size <= self._final or self._final == self.shape[0]
        ):
            height = min(size, self.shape[0] - self._top)
            self._extend(self._top + height)
            block = self._band[:height].astype(np.uint32)
            for col in range(0, self.shape[1], size):
                self._writer.write(block[:, col : col + size], self._top, col)
            self._band = self._band[height:].copy()
            self._top += height

    def close(self) -> str:
        """Write the remaining rows, finish the pyramid and move the file into place."""
        self.release(self.shape[0])
        self._writer.close()
        return os.path.abspath(self.path)

    def abort(self) -> None:
        """Drop the temporary file."""
        self._writer.abort()

    def __enter__(self) -> LabelTiffStream:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_overlay(
    image: np.ndarray,
    nuclei: Nuclei,
    path: PathLike,
    *,
    type_info: TypeInfo | Mapping | PathLike | None = None,
    draw_dot: bool = False,
    thickness: int = 1,
) -> str:
    """Draw the nuclei's contours, coloured by type, on ``image`` and save it as PNG.

    Parameters
    ----------
    image
        ``(rows, cols, 3)`` uint8 RGB the nuclei were segmented on.
    nuclei
        The table, in ``image`` pixels.
    path
        The ``.png`` file (atomic).
    type_info
        Type colours (see the module notes).
    draw_dot
        Also mark each centroid with a dot (the original's ``--draw_dot``).
    thickness
        Contour line width in pixels.
    """
    import cv2

    picture = np.asarray(image)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise NucleiError(
            f"image: expected (rows, cols, 3) uint8, got {picture.dtype} {picture.shape}"
        )
    canvas = np.ascontiguousarray(picture[:, :, ::-1])  # BGR for OpenCV
    lookup = _type_lookup(type_info)
    for i, contour in enumerate(nuclei.contours):
        kind = None if nuclei.types is None else int(nuclei.types[i])
        colour = tuple(int(c) for c in lookup(kind)[1][::-1])
        cv2.drawContours(canvas, [contour.reshape(-1, 1, 2)], -1, colour, thickness)
        if draw_dot:
            x, y = (round(v) for v in nuclei.centroids[i])
            cv2.circle(canvas, (x, y), 3, (0, 0, 0), -1)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise NucleiError(f"{path}: PNG encoding failed")
    target = Path(os.path.abspath(os.fspath(path)))
    if not target.parent.is_dir():
        raise NucleusFileError(target, f"the folder {target.parent} does not exist")
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        temporary.write_bytes(encoded.tobytes())
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise NucleusFileError(target, f"cannot be written: {error}") from error
    return str(target)
