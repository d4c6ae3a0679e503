"""ModelBase: a PyTorch network with its optimiser, loss, metrics and model file.

A :class:`ModelBase` wraps one ``torch.nn.Module`` and everything training and inference need
around it, with the DigitalPathology interface:

``build()``
    create the network (:meth:`ModelBase.create_network`), the optimiser and the loss, on the
    model's device;
``update(x, y, weights=None)`` / ``validate(x, y, weights=None)``
    one optimisation step / an evaluation on a batch; both return ``{"loss", "accuracy",
    "errors"}``, where ``errors`` are the per-patch errors ``1 - p(true class)`` in [0, 1] that
    difficult-sample boosting feeds back to the batch generator;
``predict(x)``
    ``{"predictions": class probabilities}``;
``reconstruction_info(input_shape)``
    where the output lies on the input (:mod:`digipath.models.reconstruction`);
``save(path)`` / ``ModelBase.load(path)``
    safetensors model files with a JSON header (:mod:`digipath.models.files`).

Batches are ``(N, C, H, W)`` float32 (numpy arrays or tensors). Labels are class indices
(``(N,)`` or ``(N, H, W)``, 255 = ignore) or one-hot ``(N, K)`` / ``(N, K, H, W)`` as the batch
generator hands them out (an all-zero vector = ignore); weights are ``(N,)`` or ``(N, H, W)``.
For valid-padded networks, label maps and weights are centre-cropped to the output using the
reconstruction offsets.

Devices: CPU by default, ``device="cuda"`` (or ``"auto"``) for a GPU, ``amp=True`` for mixed
precision on CUDA, ``channels_last=True`` for the channels-last memory format.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from digipath.data.labels import IGNORE
from digipath.errors import ModelError
from digipath.models.losses import accuracy, class_argmax, loss_from_name, patch_errors
from digipath.models.reconstruction import ReconstructionInfo, reconstruction_info

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")
"""Optimisers a model can be built with."""

ArrayLike = np.ndarray | torch.Tensor


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"cpu"`` -> CPU; ``"auto"`` -> CUDA when available; otherwise as given."""
    if device is None:
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} was asked for, but CUDA is not available here")
    return resolved


def class_indices(labels: ArrayLike, classes: int, spatial: bool | None = None) -> torch.Tensor:
    """Labels as int64 class indices, 255 where ignored.

    Parameters
    ----------
    labels
        ``(N,)`` / ``(N, H, W)`` indices, or one-hot ``(N, K)`` / ``(N, K, H, W)`` (an all-zero
        vector means ignored).
    classes
        ``K``, to tell one-hot labels from index maps.
    spatial
        Whether labels are maps; ``None``: guess from the shape.
    """
    tensor = torch.as_tensor(labels)
    one_hot = tensor.ndim in (2, 4) and tensor.shape[1] == classes and tensor.is_floating_point()
    if one_hot:
        indices = class_argmax(tensor)
        indices[tensor.sum(dim=1) == 0] = IGNORE
        return indices.long()
    return tensor.long()


def _centre_crop(array: torch.Tensor, shape: tuple[int, ...], offset: tuple[int, int]):
    """Crop the last two axes of ``array`` to ``shape`` starting at ``offset`` (top, left)."""
    if tuple(array.shape[-2:]) == tuple(shape):
        return array
    top, left = offset
    return array[..., top : top + shape[0], left : left + shape[1]]


class ModelBase(ABC):
    """A network with its optimiser, loss and metrics (see the module docstring).

    Parameters
    ----------
    classes
        Number of output classes ``K``.
    input_channels
        Channels of the input patches.
    input_shape
        ``(rows, cols)`` of the training patches (kept in the model file).
    name, description
        Free text, kept in the model file.
    loss
        ``cross_entropy`` (default), ``dice``, ``focal`` or ``lovasz``
        (:mod:`digipath.models.losses`).
    loss_options
        Keyword arguments of the loss (e.g. ``{"gamma": 2.0}`` for focal).
    optimizer
        ``adam`` (default), ``adamw`` or ``sgd`` (momentum 0.9).
    learning_rate
        Initial learning rate (> 0).
    weight_decay
        L2 penalty (the original's ``L2 lambda``).
    device
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"``, ``"auto"``.
    amp
        Mixed precision (float16 autocast with gradient scaling) on CUDA; ignored on CPU.
    channels_last
        Use the channels-last memory format (faster convolutions on recent GPUs and CPUs).
    **network
        The network's own parameters (see the subclass).
    """

    type: ClassVar[str] = ""
    """The ``model.type`` name this class is registered under."""

    def __init__(
        self,
        *,
        classes: int,
        input_channels: int = 3,
        input_shape: tuple[int, int] | None = None,
        name: str = "",
        description: str = "",
        loss: str = "cross_entropy",
        loss_options: Mapping[str, Any] | None = None,
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        device: str | None = None,
        amp: bool = False,
        channels_last: bool = False,
        **network: Any,
    ) -> None:
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
            raise ModelError(f"classes must be a positive integer, got {classes!r}")
        if (
            isinstance(input_channels, bool)
            or not isinstance(input_channels, int)
            or (input_channels < 1)
        ):
            raise ModelError(f"input_channels must be a positive integer, got {input_channels!r}")
        if optimizer not in OPTIMIZERS:
            raise ModelError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if not learning_rate > 0:
            raise ModelError(f"learning_rate must be > 0, got {learning_rate!r}")
        if not weight_decay >= 0:
            raise ModelError(f"weight_decay must be >= 0, got {weight_decay!r}")
        try:
            loss_from_name(loss, **dict(loss_options or {}))
        except (TypeError, ValueError) as error:
            raise ModelError(f"loss {loss!r}: {error}") from None
        self.classes = classes
        self.input_channels = input_channels
        self.input_shape = (
            None if input_shape is None else (int(input_shape[0]), int(input_shape[1]))
        )
        self.name = name
        self.description = description
        self.loss_name = loss
        self.loss_options = dict(loss_options or {})
        self.optimizer_name = optimizer
        self.initial_learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.device = resolve_device(device)
        self.amp = bool(amp) and self.device.type == "cuda"
        self.channels_last = bool(channels_last)
        self.network_parameters = dict(network)
        self.network: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._loss = loss_from_name(loss, **self.loss_options)
        self._scaler: torch.amp.GradScaler | None = None
        self._reconstruction: dict[tuple[int, int], ReconstructionInfo] = {}
        self._distributed = False

    # -- construction -------------------------------------------------------------------------

    @abstractmethod
    def create_network(self) -> nn.Module:
        """The network for this model's parameters (``self.network_parameters`` etc.)."""

    def build(self) -> ModelBase:
        """Create the network, the optimiser and the loss (returns ``self``)."""
        network = self.create_network().to(self.device)
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        parameters = [p for p in network.parameters() if p.requires_grad]
        rate, decay = self.initial_learning_rate, self.weight_decay
        if self.optimizer_name == "adam":
            self.optimizer = torch.optim.Adam(parameters, lr=rate, weight_decay=decay)
        elif self.optimizer_name == "adamw":
            self.optimizer = torch.optim.AdamW(parameters, lr=rate, weight_decay=decay)
        else:
            self.optimizer = torch.optim.SGD(parameters, lr=rate, momentum=0.9, weight_decay=decay)
        self._scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self._reconstruction.clear()
        self._distributed = False
        return self

    @property
    def module(self) -> nn.Module:
        """The network itself (unwrapped from ``DistributedDataParallel``)."""
        network = self._require_built()
        return getattr(network, "module", network) if self._distributed else network

    def wrap_distributed(self) -> None:
        """Wrap the network in ``DistributedDataParallel`` when a process group is running.

        Training steps then average gradients over the ranks; evaluation, prediction, files and
        reconstruction use the unwrapped :attr:`module`. No-op in a single process.
        """
        import torch.distributed as dist

        network = self._require_built()
        if self._distributed or not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_world_size() == 1:
            return
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.network = DistributedDataParallel(network, device_ids=ids)
        self._distributed = True

    def parameters(self) -> dict[str, Any]:
        """The constructor parameters, JSON-serialisable (what a model file stores)."""
        return {
            "classes": self.classes,
            "input_channels": self.input_channels,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "name": self.name,
            "description": self.description,
            "loss": self.loss_name,
            "loss_options": self.loss_options,
            "optimizer": self.optimizer_name,
            "learning_rate": self.initial_learning_rate,
            "weight_decay": self.weight_decay,
            "channels_last": self.channels_last,
            **self.network_parameters,
        }

    def _require_built(self) -> nn.Module:
        if self.network is None:
            raise ModelError(f"{type(self).__name__}: call build() (or load a model file) first")
        return self.network

    @property
    def dimension_order(self) -> str:
        """``"BCHW"``: PyTorch networks take channels first."""
        return "BCHW"

    def metric_names(self) -> list[str]:
        """The metrics :meth:`update` and :meth:`validate` report (besides ``errors``)."""
        return ["loss", "accuracy"]

    # -- learning rate ------------------------------------------------------------------------

    @property
    def learning_rate(self) -> float:
        """The current learning rate (setting it updates every parameter group)."""
        if self.optimizer is None:
            return self.initial_learning_rate
        return float(self.optimizer.param_groups[0]["lr"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if not value > 0:
            raise ModelError(f"the learning rate must be > 0, got {value!r}")
        if self.optimizer is None:
            self.initial_learning_rate = float(value)
            return
        for group in self.optimizer.param_groups:
            group["lr"] = float(value)

    # -- geometry -----------------------------------------------------------------------------

    def reconstruction_info(self, input_shape: tuple[int, int]) -> ReconstructionInfo:
        """Output shape, lost border and downsampling for an input of ``(rows, cols)``."""
        network = self.module
        key = (int(input_shape[0]), int(input_shape[1]))
        if key not in self._reconstruction:
            self._reconstruction[key] = reconstruction_info(network, key, self.input_channels)
        return self._reconstruction[key]

    # -- batches ------------------------------------------------------------------------------

    def _inputs(self, x: ArrayLike) -> torch.Tensor:
        tensor = torch.as_tensor(x)
        if tensor.ndim != 4 or tensor.shape[1] != self.input_channels:
            raise ModelError(
                f"expected a (N, {self.input_channels}, H, W) batch, got shape "
                f"{tuple(tensor.shape)}"
            )
        if not tensor.is_floating_point():
            tensor = tensor.float()
        tensor = tensor.to(self.device, dtype=torch.float32, non_blocking=True)
        if self.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _targets(
        self, y: ArrayLike, weights: ArrayLike | None, output: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        target = class_indices(y, self.classes).to(self.device)
        weight = None if weights is None else torch.as_tensor(weights).float().to(self.device)
        if output.ndim == 4 and target.ndim == 3:
            info = self.reconstruction_info(tuple(x.shape[2:]))
            target = _centre_crop(target, output.shape[2:], info.offset)
            if weight is not None and weight.ndim == 3:
                weight = _centre_crop(weight, output.shape[2:], info.offset)
            if tuple(target.shape[1:]) != tuple(output.shape[2:]):
                raise ModelError(
                    f"label maps of {tuple(target.shape[1:])} cannot be cropped to the network "
                    f"output {tuple(output.shape[2:])}"
                )
        elif output.ndim == 4 and target.ndim == 1 and output.shape[2:] == (1, 1):
            pass  # a patch classifier on its training size: (N, K, 1, 1) against (N,)
        return target, weight

    @staticmethod
    def _flat_logits(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.ndim == 4 and target.ndim == 1:
            return output.flatten(2).mean(dim=2)  # (N, K, 1, 1) -> (N, K)
        return output

    def _metrics(self, logits: torch.Tensor, target, weight, loss: torch.Tensor) -> dict:
        with torch.no_grad():
            logits = logits.float()
            return {
                "loss": float(loss.detach()),
                "accuracy": float(accuracy(logits, target, weight)),
                "errors": patch_errors(logits, target, weight).cpu().numpy(),
            }

    def update(self, x: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None) -> dict:
        """One optimisation step on a batch.

        Returns
        -------
        dict
            ``loss`` (float), ``accuracy`` (float, over valid labels) and ``errors`` ((N,)
            numpy array of per-patch errors in [0, 1]).
        """
        network = self._require_built()
        assert self.optimizer is not None
        network.train()
        inputs = self._inputs(x)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.amp):
            output = network(inputs)
        target, weight = self._targets(y, weights, output, inputs)
        logits = self._flat_logits(output.float(), target)
        loss = self._loss(logits, target, weight)
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return self._metrics(logits, target, weight, loss)

    @torch.no_grad()
    def validate(self, x: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None) -> dict:
        """Evaluate a batch (no gradient); the same metrics as :meth:`update`."""
        network = self.module
        network.eval()
        inputs = self._inputs(x)
        with torch.autocast(self.device.type, enabled=self.amp):
            output = network(inputs)
        target, weight = self._targets(y, weights, output, inputs)
        logits = self._flat_logits(output.float(), target)
        loss = self._loss(logits, target, weight)
        return self._metrics(logits, target, weight, loss)

    @torch.no_grad()
    def predict(self, x: ArrayLike) -> dict[str, np.ndarray]:
        """Class probabilities: ``{"predictions": (N, K) or (N, K, h, w) float32}``."""
        network = self.module
        network.eval()
        inputs = self._inputs(x)
        with torch.autocast(self.device.type, enabled=self.amp):
            output = network(inputs)
        return {"predictions": torch.softmax(output.float(), dim=1).cpu().numpy()}

    # -- files --------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], **header: Any) -> str:
        """Write a model file (see :func:`digipath.models.files.save_model`); returns its path."""
        from digipath.models.files import save_model

        return save_model(self, path, **header)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | None = None) -> ModelBase:
        """Read a model file into a built model (see :func:`digipath.models.files.load_model`)."""
        from digipath.models.files import load_model

        model = load_model(path, device=device)
        if cls is not ModelBase and not isinstance(model, cls):
            raise ModelError(f"{path}: holds a {type(model).__name__} model, not a {cls.__name__}")
        return model

    def __repr__(self) -> str:
        state = "built" if self.network is not None else "not built"
        return f"{type(self).__name__}({self.classes} classes, {self.device}, {state})"
