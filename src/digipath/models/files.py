"""Model files: safetensors weights with a JSON header. Loading never executes code.

A digipath model file is one `safetensors <https://huggingface.co/docs/safetensors>`_ file:

* tensors ``network.<name>``: the network's state dict;
* tensors ``optimizer.<index>.<state>``: the optimiser's tensors (moments), for resuming;
* metadata key ``digipath``: a JSON header::

      {"format": "digipath-model", "format_version": 1,
       "model": {"type": "unet", "class": "digipath.models.registry.UNetModel"},
       "parameters": {...constructor parameters...},
       "classes": 2, "label_map": {"1": 0, "2": 1}, "spacings": [0.5],
       "patch_shapes": {"0.5": [256, 256]}, "normalization": {"type": "rgb_to_0-1"},
       "reconstruction": {...ReconstructionInfo...},
       "optimizer": {"param_groups": [...], "scalars": {...}},
       "provenance": {"digipath": "0.1.0", "torch": "2.13.0", "created": "...", ...}}

The model type is looked up in the registry (:mod:`digipath.models.registry`); the ``class``
entry is informative only and is never imported from the file. Files are written to a
temporary name and renamed, and :func:`file_digest` gives the SHA-256 that experiment states
record. :func:`migrate` rewrites files of older format versions and imports plain PyTorch
state dicts (read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from digipath.errors import ModelFileError

FORMAT = "digipath-model"
FORMAT_VERSION = 1
"""The current model file format version."""

HEADER_KEY = "digipath"


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance() -> dict[str, str]:
    """Versions and host that produced a file."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        digipath_version = version("digipath")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        digipath_version = "unknown"
    return {
        "digipath": digipath_version,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _optimizer_tensors(model) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimiser's tensors (flat names) and its JSON part (groups and scalar state)."""
    if model.optimizer is None:
        return {}, {}
    state = model.optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, float]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = float(value)
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_model(model, path: str | os.PathLike[str], **header: Any) -> str:
    """Write ``model`` (a built :class:`~digipath.models.base.ModelBase`) to ``path``.

    Parameters
    ----------
    model
        The model; its network and optimiser state are saved.
    path
        The target file (conventionally ``.safetensors``); written under a temporary name in
        the same folder and renamed when complete.
    **header
        More JSON-serialisable header entries: ``label_map``, ``patch_shapes`` (spacing ->
        (rows, cols)), ``normalization``, ``provenance`` (merged with the versions) ...

    Returns
    -------
    str
        The path written.
    """
    network = model.module
    tensors = {
        f"network.{name}": value.detach().cpu().contiguous()
        for name, value in network.state_dict().items()
    }
    optimizer_tensors, optimizer_json = _optimizer_tensors(model)
    tensors.update(optimizer_tensors)
    reconstruction = None
    if model.input_shape is not None:
        try:
            reconstruction = model.reconstruction_info(model.input_shape).to_dict()
        except ValueError:
            reconstruction = None
    extra_provenance = header.pop("provenance", {}) or {}
    patch_shapes = header.pop("patch_shapes", None)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"type": model.type, "class": f"{type(model).__module__}.{type(model).__name__}"},
        "parameters": model.parameters(),
        "classes": model.classes,
        "reconstruction": reconstruction,
        "optimizer": optimizer_json,
        "provenance": {**provenance(), **extra_provenance},
    }
    if patch_shapes is not None:
        document["patch_shapes"] = {str(float(k)): list(v) for k, v in patch_shapes.items()}
        document["spacings"] = sorted(float(k) for k in patch_shapes)
    for key, value in header.items():
        document[key] = _jsonable(value)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(temporary), metadata={HEADER_KEY: json.dumps(document)})
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()
    return str(target)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a model file, without reading its tensors.

    Raises
    ------
    ModelFileError
        When the file is missing, not a safetensors file, has no digipath header, or has a
        format version this digipath does not know (run ``digipath update-network``).
    """
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(path, "no such model file")
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(
            path,
            f"not a digipath model file (safetensors: {error}); a PyTorch state dict can be "
            "imported with 'digipath update-network --state-dict'",
        ) from None
    if HEADER_KEY not in metadata:
        raise ModelFileError(path, "a safetensors file without a digipath header")
    try:
        document = json.loads(metadata[HEADER_KEY])
    except json.JSONDecodeError as error:
        raise ModelFileError(path, f"the digipath header is not valid JSON: {error}") from None
    if document.get("format") != FORMAT:
        raise ModelFileError(path, f"unknown file format {document.get('format')!r}")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"format version {version!r}, this digipath reads version {FORMAT_VERSION}; "
            "convert it with 'digipath update-network'",
        )
    return document


def load_model(path: str | os.PathLike[str], device: str | None = None, *, optimizer=True):
    """Read a model file into a built model of the registered type.

    Parameters
    ----------
    path
        The model file.
    device
        Where to put the network (default: CPU).
    optimizer
        Restore the optimiser state too (for resuming training).

    Returns
    -------
    ModelBase
        Built, with the saved weights; ``model.header`` holds the file's JSON header.
    """
    from digipath.models.registry import model_class

    document = read_header(path)
    path = os.fspath(path)
    try:
        cls = model_class(document["model"]["type"])
    except KeyError as error:
        raise ModelFileError(path, str(error.args[0]) if error.args else "no model type") from None
    parameters = dict(document["parameters"])
    if parameters.get("input_shape") is not None:
        parameters["input_shape"] = tuple(parameters["input_shape"])
    try:
        model = cls(**parameters, device=device)
    except TypeError as error:
        raise ModelFileError(path, f"the parameters do not fit {cls.__name__}: {error}") from None
    model.build()
    try:
        tensors = load_file(path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise ModelFileError(path, f"cannot read the tensors: {error}") from None
    prefix = "network."
    state = {
        name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)
    }
    try:
        model.network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelFileError(path, f"the weights do not fit the network: {error}") from None
    if optimizer and model.optimizer is not None and document.get("optimizer"):
        _restore_optimizer(model, document["optimizer"], tensors, path)
    model.header = document
    return model


def _restore_optimizer(model, saved: dict, tensors: dict[str, torch.Tensor], path: str) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value.to(model.device)
    for index, values in saved.get("scalars", {}).items():
        for key, value in values.items():
            state.setdefault(int(index), {})[key] = torch.tensor(value)
    try:
        model.optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    except (ValueError, KeyError) as error:
        raise ModelFileError(path, f"the optimiser state does not fit: {error}") from None


def import_state_dict(
    state_path: str | os.PathLike[str], model, target: str | os.PathLike[str], **header: Any
) -> str:
    """Load a plain PyTorch state dict (``torch.load(weights_only=True)``) into ``model``.

    ``model`` is a built model of the right architecture; the keys may carry a ``module.``
    (DataParallel) or ``network.`` prefix. Writes a digipath model file to ``target``.
    """
    state_path = os.fspath(state_path)
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a bad or unsafe file
        raise ModelFileError(state_path, f"not a loadable PyTorch weights file: {error}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(state_path, "expected a state dict of tensors")
    cleaned = {}
    for name, value in state.items():
        for prefix in ("module.", "network."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        cleaned[name] = value
    network = model.module
    try:
        network.load_state_dict(cleaned, strict=True)
    except RuntimeError as error:
        raise ModelFileError(state_path, f"the weights do not fit {model.type}: {error}") from None
    return save_model(model, target, **header)


def migrate(path: str | os.PathLike[str], target: str | os.PathLike[str] | None = None) -> str:
    """Rewrite a model file of an older format version in the current one.

    Version 1 is the first format, so there is nothing older to convert yet: a current file is
    checked and copied (or left alone when ``target`` is ``None``).
    """
    document = read_header(path)  # raises for unknown versions
    if target is None:
        return os.fspath(path)
    model = load_model(path)
    extra = {k: v for k, v in document.items() if k in ("label_map", "normalization")}
    return save_model(model, target, **extra)
