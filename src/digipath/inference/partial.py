"""Partial results of a long run, kept under the signature of its settings.

Whole-slide runs save each finished piece (a strip of output rows, a row of tiles, a band of a
level) so that an interrupted run resumes. :func:`signed_folder` keeps such a folder only while
the settings that produced it are the same: it records the settings as ``signature.json`` and
empties the folder when they changed. :class:`PartialResults` numbers the pieces in it, each
written under a temporary name and renamed. :func:`weights_digest` puts a network's weights in
a signature.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PartialResults", "signed_folder", "weights_digest"]

logger = logging.getLogger(__name__)


def weights_digest(module) -> str:
    """SHA-256 of a torch module's parameters, in order (for signatures)."""
    digest = hashlib.sha256()
    for parameter in module.parameters():
        digest.update(parameter.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def signed_folder(folder: Path, signature: dict) -> Path:
    """Create ``folder`` for the run ``signature`` describes; empty it if another run made it."""
    text = json.dumps(signature, sort_keys=True)
    meta = folder / "signature.json"
    if folder.exists() and (not meta.exists() or meta.read_text(encoding="utf-8") != text):
        logger.info("%s: settings changed, discarding partial results", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not meta.exists():
        meta.write_text(text, encoding="utf-8")
    return folder


class PartialResults:
    """Numbered pieces of one output in ``.<output name>.partial/`` (see the module docstring).

    Parameters
    ----------
    output
        The output the pieces make.
    signature
        The settings of the run (JSON values).
    name
        File name prefix of a piece (``strip``, ``row`` ...).
    kind
        ``"npy"`` (arrays) or ``"json"`` (JSON documents).
    """

    def __init__(self, output: Path, signature: dict, name: str, kind: str = "npy") -> None:
        if kind not in ("npy", "json"):
            raise ValueError(f"kind must be 'npy' or 'json', got {kind!r}")
        self.folder = signed_folder(output.parent / f".{output.name}.partial", signature)
        self.name = name
        self.kind = kind

    def path(self, index: int) -> Path:
        return self.folder / f"{self.name}_{index:06d}.{self.kind}"

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def save(self, index: int, content: Any) -> None:
        target = self.path(index)
        temporary = target.with_name(f".{target.name}.tmp")
        if self.kind == "npy":
            with open(temporary, "wb") as handle:
                np.save(handle, content)
        else:
            temporary.write_text(json.dumps(content), encoding="utf-8")
        os.replace(temporary, target)

    def load(self, index: int) -> Any:
        if self.kind == "npy":
            return np.load(self.path(index))
        return json.loads(self.path(index).read_text(encoding="utf-8"))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
