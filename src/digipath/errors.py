"""The digipath exception hierarchy.

Every error digipath raises derives from :class:`DigipathError`, through one base class per
domain (:class:`ImageError` for reading and writing images, :class:`ConfigError` for
configuration). Each error carries the offending path, key or value as attributes and says in its
message what was expected, so that a user can fix the input without reading the source.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


class DigipathError(Exception):
    """Base class of every exception raised by digipath."""


# --------------------------------------------------------------------------------------------
# Images


class FileError(DigipathError):
    """Base class of errors about one file: carries ``path`` and ``reason``.

    Parameters
    ----------
    path
        The file concerned (may be ``None`` when there is no file yet).
    reason
        What went wrong and what was expected.
    """

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)

    def __reduce__(self):  # keep the structured fields when sent between processes
        return (_rebuild_error, (type(self), self.__dict__, self.args))


class ImageError(FileError):
    """Base class of errors about one image file (``path``, ``reason``)."""


def _rebuild_error(cls, state, args):
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class MissingImageError(ImageError, FileNotFoundError):
    """The image file does not exist."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, "no such file")


class NotAnImageError(ImageError):
    """The file exists but is no image format digipath can read."""


class UnsupportedImageError(ImageError):
    """The file is an image, but of a kind digipath cannot read (layout, data type, channels)."""


class UnsupportedCompressionError(UnsupportedImageError):
    """The image uses a compression scheme that no installed codec decodes."""

    def __init__(self, path: str | os.PathLike[str] | None, compression: object) -> None:
        self.compression = compression
        super().__init__(
            path,
            f"unsupported compression {compression!r}; digipath decodes JPEG, JPEG 2000 "
            "(including Aperio 33003/33005), LZW, Deflate, PackBits, Zstandard, WebP and "
            "uncompressed tiles",
        )


class CorruptImageError(ImageError):
    """Image data (a tile, a strip, a directory) is truncated or cannot be decoded.

    Attributes
    ----------
    level, tile
        The pyramid level and the (row, col) index of the tile concerned, where known.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        reason: str,
        *,
        level: int | None = None,
        tile: tuple[int, int] | None = None,
    ) -> None:
        self.level = level
        self.tile = tile
        where = ""
        if level is not None:
            where = f"level {level}"
            if tile is not None:
                where += f", tile (row {tile[0]}, col {tile[1]})"
            where += ": "
        super().__init__(path, where + reason)


class SpacingError(ImageError):
    """The requested pixel spacing is not available in the image.

    Attributes
    ----------
    spacing
        The requested spacing in µm/px (``None`` when the image has no spacing at all).
    spacings
        The spacings of the image's levels in µm/px.
    tolerance
        The relative tolerance used when matching.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        spacing: float | None,
        spacings: Sequence[float | None],
        tolerance: float | None = None,
        reason: str | None = None,
    ) -> None:
        self.spacing = spacing
        self.spacings = list(spacings)
        self.tolerance = tolerance
        if reason is None:
            levels = ", ".join(
                f"{i}: {s:.6g}" if s is not None else f"{i}: unknown"
                for i, s in enumerate(self.spacings)
            )
            reason = (
                f"no level matches spacing {spacing} µm/px within a relative tolerance of "
                f"{tolerance} (levels: {levels})"
            )
        super().__init__(path, reason)


class RegionTooLargeError(ImageError):
    """A requested region would need more memory than the caller allowed."""

    def __init__(
        self, path: str | os.PathLike[str] | None, shape: Sequence[int], nbytes: int, limit: int
    ) -> None:
        self.shape = tuple(shape)
        self.nbytes = nbytes
        self.limit = limit
        super().__init__(
            path,
            f"a region of shape {self.shape} needs {nbytes / 2**20:.1f} MiB, more than the "
            f"limit of {limit / 2**20:.1f} MiB; read it in parts or raise the limit "
            "(max_bytes=...)",
        )


class ImageClosedError(ImageError):
    """The image was closed and cannot be read or written any more."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        super().__init__(path, "the image is closed")


class ImageWriteError(ImageError):
    """Invalid input to an :class:`~digipath.io.ImageWriter` (tile, address, parameter)."""


# --------------------------------------------------------------------------------------------
# Training data


class DataError(DigipathError):
    """Base class of errors about training data: masks, statistics, sources, sampling."""


class StatsError(DataError, FileError):
    """A mask statistics (``.stat``) file cannot be built, read or used (``path``, ``reason``)."""


class StatsMismatchError(StatsError):
    """A ``.stat`` file does not describe the mask, spacing or labels it is used with.

    Attributes
    ----------
    differences
        ``{field: (stored, expected)}`` for every field that differs (``mask hash``,
        ``shape``, ``spacing``, ``labels``...).
    """

    def __init__(
        self, path: str | os.PathLike[str] | None, differences: dict[str, tuple[object, object]]
    ) -> None:
        self.differences = dict(differences)
        listed = "; ".join(
            f"{name}: stored {stored!r}, expected {expected!r}"
            for name, (stored, expected) in self.differences.items()
        )
        super().__init__(path, f"the statistics do not match ({listed}); rebuild them")


class LabelMapError(DataError, ValueError):
    """A label map (mask value -> network class) is invalid."""


class SamplingError(DataError):
    """Patches cannot be sampled as requested (unknown label, no such pixels, bad shapes)."""


class SourceError(DataError, FileError):
    """A data source (image, mask or stat file of a data config item) is missing or unusable."""


class FailedSourceSelectionError(DataError):
    """Strict source selection found no open image declaring some labels.

    Attributes
    ----------
    labels
        The labels with a ratio > 0 that no selected image declares.
    sources
        The images (stat or mask paths) that were selected.
    """

    def __init__(self, labels: Sequence[int], sources: Sequence[str]) -> None:
        self.labels = list(labels)
        self.sources = list(sources)
        shown = ", ".join(self.sources[:10]) + (" ..." if len(self.sources) > 10 else "")
        super().__init__(
            f"no selected image declares labels {self.labels} (selected: {shown or 'none'}); "
            "raise the pool size, add images with these labels or turn strict selection off"
        )


class NormalizationError(DataError, ValueError):
    """A batch normaliser got an invalid range or input (the message names the key and value)."""


class WeightMappingError(DataError, ValueError):
    """Weight maps cannot be made as configured (label mode, clipping range, classes)."""


class PatchBufferError(DataError, ValueError):
    """A patch buffer operation is invalid: sizes, slot indices, errors outside [0, 1]."""


class WorkerError(DataError):
    """A sampling worker process failed, died or stopped answering.

    Attributes
    ----------
    worker
        The worker's index (0-based) among the generator's processes.
    pid
        Its process id, if it started.
    exitcode
        Its exit code when it died (negative: killed by that signal, e.g. -9 for SIGKILL, which
        is usually the out-of-memory killer), ``None`` when it is alive but failed or timed out.
    source
        The image it was sampling when it failed, if known.
    remote_traceback
        The formatted traceback of the exception raised in the worker, if any.
    """

    def __init__(
        self,
        reason: str,
        *,
        worker: int | None = None,
        pid: int | None = None,
        exitcode: int | None = None,
        source: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        self.reason = reason
        self.worker = worker
        self.pid = pid
        self.exitcode = exitcode
        self.source = source
        self.remote_traceback = remote_traceback
        who = "sampling worker" if worker is None else f"sampling worker {worker}"
        if pid is not None:
            who += f" (pid {pid})"
        message = f"{who}: {reason}"
        if source:
            message += f" while sampling {source}"
        if remote_traceback:
            message += f"\n--- worker traceback ---\n{remote_traceback.rstrip()}"
        super().__init__(message)

    def __reduce__(self):
        return (_rebuild_error, (type(self), self.__dict__, self.args))


# --------------------------------------------------------------------------------------------
# Configuration


class ConfigError(DigipathError):
    """A configuration value is missing or invalid.

    Parameters
    ----------
    key
        The key path of the offending entry, e.g. ``"training.learning.learning rate"``.
    reason
        What was wrong and what was expected.
    source
        The file the configuration came from, if any.
    """

    def __init__(self, key: str, reason: str, source: str | os.PathLike[str] | None = None) -> None:
        self.key = key
        self.reason = reason
        self.source = os.fspath(source) if source is not None else None
        prefix = f"{self.source}: " if self.source else ""
        super().__init__(f"{prefix}{key}: {reason}")


class DataConfigError(ConfigError):
    """A data config (image, mask and stat sources by purpose and category) is invalid.

    ``key`` is the YAML key path of the offending entry, e.g. ``data.training.tumor[3].labels``;
    it is empty for errors about the whole file (unknown extension, unreadable YAML), in which
    case the message is ``"<source>: <reason>"``.
    """

    def __init__(self, key: str, reason: str, source: str | os.PathLike[str] | None = None) -> None:
        super().__init__(key, reason, source)
        if not key:
            self.args = (f"{self.source}: {reason}" if self.source else reason,)


class DatasetFormatError(DataConfigError):
    """A DeepHealth dataset file (or the folder tree it is generated from) is invalid."""


class SplitError(DataConfigError):
    """Sources cannot be split by patient as requested (ratios, fold count, patient ids)."""


# --------------------------------------------------------------------------------------------
# Annotations


class AnnotationError(DigipathError):
    """Base class of errors about vector annotations (ASAP XML, QuPath GeoJSON) and masks.

    Parameters
    ----------
    path
        The annotation file (or mask) concerned, ``None`` for annotations built in memory.
    reason
        What went wrong and what was expected.
    item
        The offending item where known, e.g. ``"annotation 'Annotation 3' (index 3)"`` or
        ``"feature 7"``; it is put in front of the reason.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None, reason: str, *, item: str | None = None
    ) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.reason = reason
        self.item = item
        message = f"{item}: {reason}" if item else reason
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)

    def __reduce__(self):  # keep the structured fields when sent between processes
        return (_rebuild_error, (type(self), self.__dict__, self.args))


class AnnotationFormatError(AnnotationError, ValueError):
    """An annotation file is malformed: not XML/JSON, a missing element, a bad coordinate."""


class AnnotationLabelError(AnnotationError, ValueError):
    """Annotations carry labels that the label map does not list.

    Attributes
    ----------
    labels
        The unlisted labels (``None`` stands for annotations without a label).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        labels: Sequence[str | None],
        known: Sequence[str],
    ) -> None:
        self.labels = list(labels)
        self.known = list(known)
        shown = ", ".join("<no label>" if label is None else repr(label) for label in self.labels)
        super().__init__(
            path,
            f"labels not in the label map: {shown} (label map: {', '.join(map(repr, self.known))}"
            "); add them to the label map or pass unknown_labels='ignore'",
        )


# -- augmentation -------------------------------------------------------------------------------


class AugmentationError(DigipathError, ValueError):
    """An augmenter, container or pool got an invalid parameter, patch or call order.

    The message names the augmenter (by its keyword, e.g. ``hed_color``) and the parameter or
    array that was wrong, and says what was expected.
    """


class AugmentationConfigError(ConfigError, AugmentationError):
    """An augmentation configuration (YAML section or DeepHealth text) is invalid.

    ``key`` names where: the YAML key path (``augmentation.training[1].items[0].sigma``) or the
    text line (``line 3: AugRotate.angle``).
    """


# -- models -------------------------------------------------------------------------------------


class ModelError(DigipathError, ValueError):
    """A model was built, called or configured wrongly (the message names the value)."""


class ModelFileError(ModelError, FileError):
    """A model file is missing, unreadable, of an unknown format version or inconsistent."""
