"""Untrusted uploads: file names, sizes, dataset zips, YAML and model files.

Nothing a user sends is trusted:

* file names are reduced to a plain name (no folders, ``..``, control characters);
* uploads are streamed to a temporary file and refused once over the size limit;
* a dataset zip is checked member by member before anything is extracted (no absolute or
  ``..`` paths, no links, no devices, bounded member count, total size and compression ratio)
  and then extracted with the bytes actually written counted, so a lying header cannot
  inflate it;
* model files must be digipath safetensors files: the header length and JSON are checked by
  hand before the safetensors reader sees the file, and nothing is ever unpickled (a pickle or
  a PyTorch ``.pt`` zip is refused by its first bytes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import tempfile
import unicodedata
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import yaml

from digipath.errors import DigipathError

__all__ = [
    "UploadError",
    "UploadTooLarge",
    "check_model_file",
    "contained",
    "extract_zip",
    "parse_yaml",
    "plain_name",
    "save_stream",
]

CHUNK = 1024 * 1024


class UploadError(DigipathError):
    """An upload is refused; the message says which file and why (answered with 422)."""


class UploadTooLarge(UploadError):
    """An upload is over a size limit (answered with 413)."""


_BAD_NAME = re.compile(r"[\x00-\x1f\x7f/\\:]")


def plain_name(name: str | None, what: str = "file name") -> str:
    """``name`` if it is a plain file name, else :class:`UploadError`.

    A plain name has no folder separators, is not ``.`` or ``..``, has no control characters,
    does not start with a dot and has at most 200 characters.
    """
    if not name:
        raise UploadError(f"{what}: missing")
    name = unicodedata.normalize("NFC", name)
    if _BAD_NAME.search(name) or name in (".", "..") or name.startswith(".") or len(name) > 200:
        raise UploadError(
            f"{what} {name!r}: expected a plain file name (no folders, '..', control "
            "characters or leading dot)"
        )
    return name


def contained(path: Path, root: Path) -> Path | None:
    """``path`` resolved (links followed), or ``None`` when it lies outside ``root``."""
    resolved = path.resolve()
    return resolved if resolved.is_relative_to(root.resolve()) else None


def save_stream(source: BinaryIO, target: Path, limit: int, what: str) -> int:
    """Copy ``source`` to ``target`` (via a temporary file), at most ``limit`` bytes.

    Returns the number of bytes written; :class:`UploadTooLarge` (and no file) when the
    stream is longer than ``limit``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".upload-", dir=target.parent)
    written = 0
    try:
        with os.fdopen(descriptor, "wb") as handle:
            while chunk := source.read(CHUNK):
                written += len(chunk)
                if written > limit:
                    raise UploadTooLarge(f"{what}: larger than the limit of {limit} bytes")
                handle.write(chunk)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return written


def parse_yaml(text: bytes | str, what: str) -> Any:
    """The document of a YAML text (safe loader), or :class:`UploadError` naming ``what``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UploadError(f"{what}: not valid YAML: {error}") from None


def _member_path(info: zipfile.ZipInfo, archive: str) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if (
        not name
        or name.startswith("/")
        or re.match(r"^[A-Za-z]:", name)
        or any(part in ("..",) for part in path.parts)
        or "\x00" in name
    ):
        raise UploadError(f"{archive}: member {info.filename!r} has an unsafe path")
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix mode
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise UploadError(f"{archive}: member {info.filename!r} is a link or special file")
    return path


def extract_zip(
    path: Path,
    folder: Path,
    *,
    max_bytes: int,
    max_entries: int,
    max_ratio: float,
    archive: str | None = None,
) -> list[str]:
    """Check and extract the zip ``path`` into the new folder ``folder``.

    Parameters
    ----------
    path
        The uploaded zip.
    folder
        Where its files go; it must not exist (it is made from a temporary folder renamed
        when the extraction is complete).
    max_bytes, max_entries, max_ratio
        Limits on the total uncompressed size (bytes), the number of members and the
        uncompressed / compressed ratio of a member larger than 1 MiB.
    archive
        Name used in messages (default the file name).

    Returns
    -------
    list of str
        The extracted files' paths relative to ``folder`` (POSIX separators).
    """
    archive = archive or path.name
    try:
        handle = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise UploadError(f"{archive}: not a zip file ({error})") from None
    with handle:
        members = handle.infolist()
        if len(members) > max_entries:
            raise UploadError(f"{archive}: {len(members)} members, more than {max_entries}")
        seen: set[str] = set()
        total = 0
        files: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        for info in members:
            member = _member_path(info, archive)
            key = member.as_posix().rstrip("/").lower()
            if key in seen:
                raise UploadError(f"{archive}: member {info.filename!r} appears twice")
            seen.add(key)
            if info.flag_bits & 0x1:
                raise UploadError(f"{archive}: member {info.filename!r} is encrypted")
            if info.is_dir():
                continue
            total += info.file_size
            if total > max_bytes:
                raise UploadError(f"{archive}: more than {max_bytes} bytes once extracted")
            if info.file_size > CHUNK and info.file_size > max_ratio * max(info.compress_size, 1):
                raise UploadError(
                    f"{archive}: member {info.filename!r} expands {info.file_size} bytes from "
                    f"{info.compress_size} (more than {max_ratio:g} times): refused as a zip bomb"
                )
            files.append((info, member))
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=".extract-", dir=folder.parent))
        written = 0
        try:
            for info, member in files:
                target = temporary.joinpath(*member.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with handle.open(info) as source, open(target, "wb") as output:
                    while chunk := source.read(CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise UploadError(
                                f"{archive}: more than {max_bytes} bytes once extracted"
                            )
                        output.write(chunk)
            os.replace(temporary, folder)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    return [member.as_posix() for _, member in files]


def check_model_file(path: Path, what: str) -> dict[str, Any]:
    """The digipath header of the uploaded model file ``path``, or :class:`UploadError`.

    The safetensors layout is checked by hand first (an 8-byte little-endian header length
    that fits in the file, then a JSON object), so pickles and PyTorch zips are refused before
    any reader sees them; then the digipath header is read and the network is built and its
    tensors loaded (no code from the file runs: safetensors holds only arrays).
    """
    from digipath.errors import ModelError
    from digipath.models.files import load_model, read_header

    size = path.stat().st_size
    with open(path, "rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise UploadError(f"{what}: too short to be a model file")
        if start[:2] == b"PK" or start[:1] == b"\x80":
            raise UploadError(
                f"{what}: a pickle or PyTorch file; upload a digipath model file (safetensors), "
                "e.g. made with 'digipath update-network --state-dict'"
            )
        (length,) = struct.unpack("<Q", start)
        if length < 2 or 8 + length > size or length > 100 * CHUNK:
            raise UploadError(f"{what}: not a safetensors file (bad header length)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UploadError(f"{what}: not a safetensors file (the header is not JSON)") from None
        if not isinstance(header, dict):
            raise UploadError(f"{what}: not a safetensors file (the header is not an object)")
    try:
        document = read_header(path)
        load_model(path, device="cpu", optimizer=False)
    except (ModelError, DigipathError) as error:
        raise UploadError(f"{what}: {error}") from None
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise UploadError(f"{what}: the model cannot be built from its file: {error}") from None
    return document
