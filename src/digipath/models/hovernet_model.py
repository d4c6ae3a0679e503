"""The ``hovernet`` model type: HoVer-Net with its loss, and the import of original checkpoints.

:class:`HoVerNetModel` wraps :class:`~digipath.models.networks.hovernet.HoVerNet` in the
:class:`~digipath.models.base.ModelBase` interface:

``update(x, y)`` / ``validate(x, y)``
    ``x`` ``(N, C, H, W)`` float32 (RGB in [0, 1]); ``y`` the targets (see
    :meth:`HoVerNetModel.targets`); the HoVer-Net loss (:func:`digipath.nuclei.loss.hovernet_loss`).
    They return ``loss`` (the weighted total), ``accuracy`` (NP pixel accuracy), the unweighted
    terms ``np_ce``, ``np_dice``, ``hv_mse``, ``hv_msge`` (and ``tp_ce``, ``tp_dice``) and
    ``errors``, the per-patch NP errors ``mean(1 - p(true NP class))`` for difficult-sample
    boosting.
``predict(x)``
    ``"np"`` (N, 2, h, w) softmax (channel 1: nucleus), ``"hv"`` (N, 2, h, w), ``"tp"`` (N,
    types, h, w) softmax, and ``"predictions"``, the three concatenated along axis 1.
``freeze_encoder(True)`` / ``freeze_encoder(False)``
    the two training phases of the original recipe (encoder frozen, then all layers).

:func:`import_hovernet_checkpoint` converts a checkpoint of the original PyTorch code (e.g. the
published ``hovernet_fast_pannuke_type_tf2pytorch.tar``) into a digipath model file, the mode and
the number of types read from the tensor shapes; ``digipath update-network --from-hovernet``
runs it. The checkpoint is read with ``torch.load(weights_only=True)``: no code in it runs.

The original's training recipe (``models/hovernet/opt.py``), for reference: Adam, learning rate
1e-4, betas (0.9, 0.999), the rate divided by 10 every 25 epochs; phase 1: 50 epochs with the
encoder frozen, batch 16; phase 2: 50 epochs, all layers, batch 4; all six loss weights 1.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from digipath.data.labels import IGNORE
from digipath.errors import ModelError, ModelFileError
from digipath.models.base import ArrayLike, ModelBase
from digipath.models.losses import accuracy, patch_errors
from digipath.models.networks.hovernet import MODES, HoVerNet, hovernet_output_shape
from digipath.models.reconstruction import ReconstructionInfo
from digipath.models.registry import register_model

if TYPE_CHECKING:
    from digipath.nuclei.loss import LossWeights

logger = logging.getLogger(__name__)

__all__ = [
    "HoVerNetModel",
    "hovernet_architecture",
    "import_hovernet_checkpoint",
    "read_hovernet_checkpoint",
]

TRAINING_SHAPES = {"original": (270, 270), "fast": (256, 256)}
"""The input patch size each mode was published with."""


def _crop_to(array: torch.Tensor, shape: tuple[int, int], name: str) -> torch.Tensor:
    """Centre-crop the last two axes of ``array`` to ``shape`` (targets at the input size)."""
    rows, cols = array.shape[-2:]
    if (rows, cols) == tuple(shape):
        return array
    if rows < shape[0] or cols < shape[1]:
        raise ModelError(
            f"the {name} target is {rows} x {cols}, smaller than the network output "
            f"{shape[0]} x {shape[1]}"
        )
    top, left = (rows - shape[0]) // 2, (cols - shape[1]) // 2
    return array[..., top : top + shape[0], left : left + shape[1]]


@register_model("hovernet")
class HoVerNetModel(ModelBase):
    """HoVer-Net nuclear instance segmentation and classification (model type ``hovernet``).

    Parameters
    ----------
    types
        Nucleus types of the TP branch, background included (at least 2); ``None``: NP and HV
        branches only.
    mode
        ``"original"`` (270 -> 80) or ``"fast"`` (256 -> 164); see
        :mod:`digipath.models.networks.hovernet`.
    freeze_encoder
        Build with the encoder frozen (phase 1 of the original recipe); see
        :meth:`freeze_encoder`.
    classes
        Kept for the common constructor (the data section's class count); the model's
        :attr:`classes` is ``types``, or 2 (the NP classes) without a TP branch.
    loss
        ``"hovernet"``, the only loss of this type.
    loss_options
        The weights of the loss terms, ``{"np_ce", "np_dice", "hv_mse", "hv_msge", "tp_ce",
        "tp_dice"}`` (default all 1, as the original), see
        :func:`digipath.nuclei.loss.loss_weights`.
    learning_rate
        Initial learning rate (the original's 1e-4 by default).
    **options
        The other :class:`~digipath.models.base.ModelBase` parameters (``input_channels``,
        ``input_shape``, ``optimizer``, ``weight_decay``, ``device``, ``amp`` ...).
    """

    def __init__(
        self,
        *,
        types: int | None = None,
        mode: str = "original",
        freeze_encoder: bool = False,
        classes: int | None = None,
        loss: str = "hovernet",
        loss_options: Mapping[str, Any] | None = None,
        learning_rate: float = 1e-4,
        **options: Any,
    ) -> None:
        if loss != "hovernet":
            raise ModelError(f"model type 'hovernet' takes loss 'hovernet' only, got {loss!r}")
        if types is not None and (isinstance(types, bool) or not isinstance(types, int)):
            raise ModelError(f"types must be an integer >= 2 or None, got {types!r}")
        if types is not None and types < 2:
            raise ModelError(f"types must be an integer >= 2 (background included), got {types}")
        if mode not in MODES:
            raise ModelError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not isinstance(freeze_encoder, bool):
            raise ModelError(f"freeze_encoder must be True or False, got {freeze_encoder!r}")
        from digipath.nuclei.loss import loss_weights  # imported late: nuclei sits above models

        try:
            weights = loss_weights(loss_options)
        except ValueError as error:
            raise ModelError(f"loss_options: {error}") from None
        del classes  # informative only: the class count follows from ``types``
        super().__init__(
            classes=types if types is not None else 2,
            loss="cross_entropy",  # replaced below: the base class knows no HoVer-Net loss
            learning_rate=learning_rate,
            types=types,
            mode=mode,
            freeze_encoder=freeze_encoder,
            **options,
        )
        self.loss_name = "hovernet"
        self.loss_options = weights.to_dict()
        self.loss_weights: LossWeights = weights

    # -- construction -------------------------------------------------------------------------

    @property
    def types(self) -> int | None:
        """The TP branch's number of types (``None`` without one)."""
        return self.network_parameters["types"]

    @property
    def mode(self) -> str:
        """``"original"`` or ``"fast"``."""
        return self.network_parameters["mode"]

    def create_network(self) -> nn.Module:
        return HoVerNet(
            in_channels=self.input_channels, types=self.types, mode=self.mode,
            freeze_encoder=False,
        )  # fmt: skip

    def build(self) -> HoVerNetModel:
        """Create the network and an optimiser over all its parameters, then apply freezing.

        The optimiser holds the encoder's parameters too, so :meth:`freeze_encoder` can switch
        phases without rebuilding it (frozen parameters have no gradient and are skipped).
        """
        super().build()
        self._network().freeze_encoder(self.network_parameters["freeze_encoder"])
        return self

    def _network(self) -> HoVerNet:
        network = self.module
        assert isinstance(network, HoVerNet)
        return network

    def freeze_encoder(self, frozen: bool = True, *, update_statistics: bool = False) -> None:
        """Freeze or unfreeze the encoder (:meth:`HoVerNet.freeze_encoder`).

        Parameters
        ----------
        frozen
            ``True`` for phase 1 of the original recipe, ``False`` for phase 2.
        update_statistics
            Keep the frozen encoder's batch norms in training mode, as the original does.
        """
        if not isinstance(frozen, bool):
            raise ModelError(f"frozen must be True or False, got {frozen!r}")
        self.network_parameters["freeze_encoder"] = frozen
        if self.network is not None:
            self._network().freeze_encoder(frozen, update_statistics=update_statistics)

    def metric_names(self) -> list[str]:
        """``loss``, ``accuracy`` (NP) and the unweighted loss terms."""
        from digipath.nuclei.loss import TERMS

        terms = [t for t in TERMS if self.types is not None or not t.startswith("tp_")]
        return ["loss", "accuracy", *terms]

    # -- geometry -----------------------------------------------------------------------------

    def reconstruction_info(self, input_shape: tuple[int, int]) -> ReconstructionInfo:
        """The centred output of :func:`hovernet_output_shape` (no forward pass).

        Raises
        ------
        ValueError
            For an input size the network does not take (naming the nearest valid ones).
        """
        rows, cols = int(input_shape[0]), int(input_shape[1])
        out_rows, out_cols = hovernet_output_shape((rows, cols), self.mode)
        top, left = (rows - out_rows) // 2, (cols - out_cols) // 2
        lost = (top, rows - out_rows - top, left, cols - out_cols - left)
        return ReconstructionInfo((rows, cols), (out_rows, out_cols), lost, (1.0, 1.0))

    # -- batches ------------------------------------------------------------------------------

    def targets(
        self, y: ArrayLike | Mapping[str, ArrayLike], output_shape: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """The targets of a batch on the output grid, on the model's device.

        Parameters
        ----------
        y
            A mapping ``{"np": (N, H, W) 0/1 (255 ignored), "hv": (N, 2, H, W) float (channel
            0 horizontal, 1 vertical), "tp": (N, H, W) type indices}`` (``tp`` only with a TP
            branch; the original's ``np_map``, ``hv_map``, ``tp_map`` names are accepted), or
            one stacked ``(N, 3 [+ 1], H, W)`` array: NP, H, V [, TP]. Maps at the input size
            (or any size at least the output's) are centre-cropped to the output.
        output_shape
            ``(h, w)`` of the network output.

        Raises
        ------
        ModelError
            For missing maps or shapes that do not fit.
        """
        if isinstance(y, Mapping):
            found = {}
            for name in ("np", "hv", "tp"):
                value = y.get(name, y.get(f"{name}_map"))
                if value is not None:
                    found[name] = torch.as_tensor(value)
        else:
            stacked = torch.as_tensor(y)
            expected = 3 if self.types is None else 4
            if stacked.ndim != 4 or stacked.shape[1] not in (3, 4):
                raise ModelError(
                    f"stacked HoVer-Net targets must be (N, {expected}, H, W) (NP, H, V"
                    f"{', TP' if self.types else ''}), got shape {tuple(stacked.shape)}"
                )
            found = {"np": stacked[:, 0], "hv": stacked[:, 1:3]}
            if stacked.shape[1] == 4:
                found["tp"] = stacked[:, 3]
        required = ("np", "hv", "tp") if self.types is not None else ("np", "hv")
        missing = [name for name in required if name not in found]
        if missing:
            raise ModelError(f"the HoVer-Net targets lack the {', '.join(missing)} map(s)")
        targets = {}
        for name in required:
            value = _crop_to(found[name], output_shape, name).to(self.device)
            if name != "hv":
                if value.ndim == 4 and value.shape[1] == 1:
                    value = value[:, 0]
                value = (value.round() if value.is_floating_point() else value).long()
            targets[name] = value
        return targets

    def _valid(self, weights: ArrayLike | None, output_shape, batch: int) -> torch.Tensor | None:
        if weights is None:
            return None
        tensor = torch.as_tensor(weights).to(self.device)
        if tensor.ndim == 1:
            tensor = tensor[:, None, None].expand(batch, *output_shape)
        return _crop_to(tensor, output_shape, "weights") > 0

    def _step(self, x: ArrayLike, y, weights, *, training: bool) -> dict:
        from digipath.nuclei.loss import hovernet_loss

        network = self._require_built() if training else self.module
        inputs = self._inputs(x)
        with torch.autocast(self.device.type, enabled=self.amp):
            raw = network(inputs)
        outputs = {name: value.float() for name, value in raw.items()}
        grid = tuple(outputs["np"].shape[2:])
        targets = self.targets(y, grid)
        valid = self._valid(weights, grid, inputs.shape[0])
        try:
            terms = hovernet_loss(outputs, targets, self.loss_weights, valid)
        except ValueError as error:
            raise ModelError(f"HoVer-Net loss: {error}") from None
        if training:
            assert self.optimizer is not None
            loss = terms["loss"]
            if self._scaler is not None:
                self._scaler.scale(loss).backward()
                self._scaler.step(self.optimizer)
                self._scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
        with torch.no_grad():
            np_target = targets["np"]
            if valid is not None:
                np_target = torch.where(valid, np_target, torch.full_like(np_target, IGNORE))
            metrics: dict[str, Any] = {name: float(value.detach()) for name, value in terms.items()}
            metrics["accuracy"] = float(accuracy(outputs["np"], np_target))
            metrics["errors"] = patch_errors(outputs["np"], np_target).cpu().numpy()
        return metrics

    def update(
        self,
        x: ArrayLike,
        y: ArrayLike | Mapping[str, ArrayLike],
        weights: ArrayLike | None = None,
    ) -> dict:
        """One optimisation step on a batch with the HoVer-Net loss.

        Parameters
        ----------
        x
            ``(N, C, H, W)`` float32 images, RGB in [0, 1].
        y
            The targets (:meth:`targets`).
        weights
            Optional ``(N,)`` or ``(N, H, W)``; used as a validity mask only (pixels or patches
            of weight <= 0 take part in no term).

        Returns
        -------
        dict
            ``loss`` (weighted total), ``accuracy`` (NP), the unweighted terms (floats) and
            ``errors`` ((N,) float32 numpy array in [0, 1]).
        """
        network = self._require_built()
        assert self.optimizer is not None
        network.train()
        self.optimizer.zero_grad(set_to_none=True)
        return self._step(x, y, weights, training=True)

    @torch.no_grad()
    def validate(
        self,
        x: ArrayLike,
        y: ArrayLike | Mapping[str, ArrayLike],
        weights: ArrayLike | None = None,
    ) -> dict:
        """Evaluate a batch (no gradient, batch norms in evaluation mode); as :meth:`update`."""
        self.module.eval()
        return self._step(x, y, weights, training=False)

    @torch.no_grad()
    def predict(self, x: ArrayLike) -> dict[str, np.ndarray]:
        """The HoVer-Net maps of a batch, channel-first float32.

        Parameters
        ----------
        x
            ``(N, C, H, W)`` float32 images, RGB in [0, 1].

        Returns
        -------
        dict of str to numpy.ndarray
            ``"np"``: ``(N, 2, h, w)`` softmax (channel 1 = nucleus probability); ``"hv"``:
            ``(N, 2, h, w)`` horizontal and vertical maps; ``"tp"`` (with a TP branch): ``(N,
            types, h, w)`` softmax; ``"predictions"``: ``(N, 4 [+ types], h, w)``, NP, HV and TP
            concatenated along axis 1 (for generic tiled inference).
        """
        network = self.module
        network.eval()
        inputs = self._inputs(x)
        with torch.autocast(self.device.type, enabled=self.amp):
            raw = network(inputs)
        maps = {"np": torch.softmax(raw["np"].float(), dim=1), "hv": raw["hv"].float()}
        if "tp" in raw:
            maps["tp"] = torch.softmax(raw["tp"].float(), dim=1)
        result = {name: value.cpu().numpy() for name, value in maps.items()}
        result["predictions"] = np.concatenate(list(result.values()), axis=1)
        return result


# --------------------------------------------------------------------------------------------
# Original checkpoints


def read_hovernet_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The network state dict of an original HoVer-Net PyTorch checkpoint.

    Parameters
    ----------
    path
        A ``.tar`` / ``.pth`` file of ``vqdang/hover_net``: ``{"desc": state dict, ...}`` as
        its training saves and its published weights hold, or a bare state dict. It is read with
        ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
        containers: no code in the file runs.

    Returns
    -------
    dict of str to Tensor
        The state dict, ``module.`` (DataParallel) prefixes removed.

    Raises
    ------
    ModelFileError
        When the file is missing, not loadable with ``weights_only``, or holds no state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(path, "no such HoVer-Net checkpoint")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a bad or unsafe file
        raise ModelFileError(
            path, f"not a PyTorch checkpoint loadable with weights_only=True: {error}"
        ) from None
    if isinstance(content, Mapping) and isinstance(content.get("desc"), Mapping):
        content = content["desc"]
    if not isinstance(content, Mapping) or not content:
        raise ModelFileError(
            path, "expected the original's {'desc': state dict} or a state dict of tensors"
        )
    state = {}
    for name, value in content.items():
        if not isinstance(value, torch.Tensor):
            raise ModelFileError(
                path, f"expected a state dict of tensors; {name!r} is a {type(value).__name__}"
            )
        key = str(name)
        while key.startswith("module."):
            key = key[len("module.") :]
        state[key] = value
    return state


def hovernet_architecture(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """``in_channels``, ``types`` and ``mode`` of a HoVer-Net state dict, from tensor shapes.

    The decoder kernel (``decoder.np.u3.conva.weight``: 5 -> ``original``, 3 -> ``fast``), the
    stem's input channels (``conv0./.weight``) and the TP branch's outputs
    (``decoder.tp.u0.conv.weight``, absent without types).

    Raises
    ------
    ModelFileError
        When the keys are not those of the original HoVer-Net (naming what was expected and
        showing some keys found).
    """
    required = ("conv0./.weight", "decoder.np.u3.conva.weight")
    missing = [key for key in required if key not in state]
    if missing:
        shown = ", ".join(list(state)[:6])
        raise ModelFileError(
            path,
            f"not a state dict of the original HoVer-Net (vqdang/hover_net net_desc.py): no "
            f"{', '.join(map(repr, missing))}; its keys begin {shown} ...",
        )
    kernel = int(state["decoder.np.u3.conva.weight"].shape[-1])
    modes = {5: "original", 3: "fast"}
    if kernel not in modes:
        raise ModelFileError(
            path, f"decoder kernel {kernel} x {kernel}: HoVer-Net has 5 (original) or 3 (fast)"
        )
    tp = state.get("decoder.tp.u0.conv.weight")
    return {
        "in_channels": int(state["conv0./.weight"].shape[1]),
        "types": None if tp is None else int(tp.shape[0]),
        "mode": modes[kernel],
    }


def _mismatch(network: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    expected = network.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            parts.append(f"{label}: {', '.join(items[:5])}{more}")
    return "; ".join(parts)


def import_hovernet_checkpoint(
    checkpoint: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    name: str = "",
    description: str = "",
) -> str:
    """Convert an original HoVer-Net PyTorch checkpoint into a digipath model file.

    Parameters
    ----------
    checkpoint
        The original's checkpoint (:func:`read_hovernet_checkpoint`), e.g.
        ``hovernet_fast_pannuke_type_tf2pytorch.tar``.
    target
        The model file to write (``.safetensors``).
    name, description
        Kept in the model file (default name: the checkpoint's file name without suffix).

    Returns
    -------
    str
        The path written. The file records the mode and types read from the shapes
        (:func:`hovernet_architecture`), the published input size (270 or 256 pixels), the
        ``rgb_to_0-1`` normalisation the weights expect and, as provenance, the checkpoint's
        name and SHA-256.

    Raises
    ------
    ModelFileError
        When the checkpoint cannot be read or its names or shapes do not fit (listing the
        missing, unexpected and mis-shaped keys).
    """
    from digipath.models.files import file_digest, save_model

    path = os.fspath(checkpoint)
    state = read_hovernet_checkpoint(path)
    architecture = hovernet_architecture(state, path)
    model = HoVerNetModel(
        types=architecture["types"],
        mode=architecture["mode"],
        input_channels=architecture["in_channels"],
        input_shape=TRAINING_SHAPES[architecture["mode"]],
        name=name or Path(path).name.split(".")[0],
        description=description
        or f"HoVer-Net ({architecture['mode']} mode) imported from {Path(path).name}",
    ).build()
    network = model.module
    state = dict(state)
    for key, value in network.state_dict().items():
        constant = key.endswith("num_batches_tracked") or key == "upsample2x.unpool_mat"
        if constant and key not in state:
            state[key] = value  # not learned; converted checkpoints may lack them
    problems = _mismatch(network, state)
    if problems:
        raise ModelFileError(
            path,
            f"the weights do not fit a HoVer-Net ({architecture['mode']} mode, types "
            f"{architecture['types']}): {problems}",
        )
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelFileError(path, f"the weights do not fit a HoVer-Net: {error}") from None
    logger.info("imported %s: HoVer-Net %s", path, architecture)
    return save_model(
        model,
        target,
        normalization={"type": "rgb_to_0-1"},
        provenance={"imported_from": Path(path).name, "imported_sha256": file_digest(path)},
    )
