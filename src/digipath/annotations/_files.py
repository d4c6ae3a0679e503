"""Atomic text output shared by the annotation writers."""

from __future__ import annotations

import os
import secrets

from digipath.errors import AnnotationError


def write_text_atomically(path: str | os.PathLike[str], text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` under a temporary name, then rename it into place.

    Returns the absolute path written.

    Raises
    ------
    AnnotationError
        The folder does not exist or the file cannot be written.
    """
    target = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(target)
    if not os.path.isdir(folder):
        raise AnnotationError(target, f"the folder {folder!r} does not exist")
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, target)
    except OSError as error:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise AnnotationError(target, f"cannot be written: {error}") from error
    return target


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a whole annotation file, turning OS errors into :class:`AnnotationError`."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise AnnotationError(path, "no such file") from None
    except IsADirectoryError:
        raise AnnotationError(path, "is a directory, expected an annotation file") from None
    except OSError as error:
        raise AnnotationError(path, f"cannot be read: {error}") from error
