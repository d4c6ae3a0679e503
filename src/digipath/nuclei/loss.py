r"""The HoVer-Net loss: NP cross-entropy + Dice, HV MSE + MSGE, TP cross-entropy + Dice.

.. math::

    L = \lambda_a L_a + \lambda_b L_b + \lambda_c L_c + \lambda_d L_d + \lambda_e L_e
        + \lambda_f L_f

with, on the network's output grid (see :class:`~digipath.models.networks.hovernet.HoVerNet`):

``hv_mse`` (:math:`L_a`)
    the mean squared error of the two HV maps over every valid pixel;
``hv_msge`` (:math:`L_b`)
    the mean squared error of the map *gradients*: the horizontal derivative of the horizontal
    map (channel 0) and the vertical derivative of the vertical map (channel 1), each computed
    with the original's 5x5 Sobel-like kernel ``x / (x^2 + y^2)`` (zero padding, over the whole
    map) and compared **only inside nuclei** (the focus mask is the NP target), normalised by
    the focus area of both channels: :math:`\sum_{c, i \in F} (g^p_{c,i} - g^t_{c,i})^2 /
    (2 |F| + 10^{-8})`;
``np_ce``, ``tp_ce`` (:math:`L_c`, :math:`L_e`)
    the cross-entropy of the softmax, averaged over valid pixels;
``np_dice``, ``tp_dice`` (:math:`L_d`, :math:`L_f`)
    the soft Dice loss of the softmax against the one-hot target, per channel over the whole
    batch, :math:`1 - (2 \sum p t + s) / (\sum p + \sum t + s)` with :math:`s = 10^{-3}`,
    **summed** over the channels (background included).

The weights default to 1 for all six terms, as the original PyTorch training configuration
(``models/hovernet/opt.py``); MONAI's ``HoVerNetLoss`` uses ``hv_mse=2``. They are given as
:class:`LossWeights` or a mapping with the term names above; the original's nested form
``{"np": {"bce": 1, "dice": 1}, "hv": {"mse": 1, "msge": 1}, "tp": {...}}`` is accepted too.

Differences from the original PyTorch code, on purpose
------------------------------------------------------
* The original's PyTorch port builds its Sobel kernels with ``torch.meshgrid``'s ``"ij"``
  indexing, which transposes them (it differentiates the horizontal map along the rows); its
  TensorFlow code, the paper and MONAI differentiate the horizontal map along the columns, as
  here.
* Cross-entropy uses ``log_softmax`` instead of clamping probabilities to ``[1e-7, 1 - 1e-7]``
  (the same value except for saturated pixels, which keep their gradient).
* Pixels whose NP target is 255 (:data:`~digipath.data.labels.IGNORE`) take part in no term,
  pixels whose TP target is 255 in no TP term; without such pixels every term is the
  original's.

Tensors are channel-first: logits ``(N, K, H, W)``, HV maps ``(N, 2, H, W)``, label maps
``(N, H, W)``; all terms are computed in float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from digipath.data.labels import IGNORE

__all__ = [
    "TERMS",
    "LossWeights",
    "cross_entropy_term",
    "dice_term",
    "hovernet_loss",
    "hv_gradients",
    "loss_weights",
    "mse_term",
    "msge_term",
    "sobel_kernels",
]

TERMS = ("np_ce", "np_dice", "hv_mse", "hv_msge", "tp_ce", "tp_dice")
"""The loss terms, in the order of the paper (:math:`L_c, L_d, L_a, L_b, L_e, L_f`)."""

DICE_SMOOTH = 1e-3
"""The Dice loss's smoothing constant (the original's)."""

_ORIGINAL_NAMES = {"bce": "ce", "ce": "ce", "dice": "dice", "mse": "mse", "msge": "msge"}


@dataclass(frozen=True)
class LossWeights:
    """Weights of the six HoVer-Net loss terms (all 1 by default, as the original ``opt.py``).

    Attributes
    ----------
    np_ce, np_dice
        NP branch: cross-entropy and Dice.
    hv_mse, hv_msge
        HV branch: MSE of the maps and MSE of their gradients inside nuclei.
    tp_ce, tp_dice
        TP branch: cross-entropy and Dice (unused without a TP branch).
    """

    np_ce: float = 1.0
    np_dice: float = 1.0
    hv_mse: float = 1.0
    hv_msge: float = 1.0
    tp_ce: float = 1.0
    tp_dice: float = 1.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"loss weight {field.name} must be a number >= 0, got {value!r}")
            object.__setattr__(self, field.name, float(value))

    def to_dict(self) -> dict[str, float]:
        """The weights as ``{term: weight}`` (JSON-serialisable)."""
        return asdict(self)


def loss_weights(weights: LossWeights | Mapping[str, Any] | None = None) -> LossWeights:
    """Loss weights from :class:`LossWeights`, a mapping or ``None`` (the defaults).

    Parameters
    ----------
    weights
        ``{"np_ce": 1, "hv_msge": 2, ...}`` (missing terms keep their default), or the
        original's nested form ``{"np": {"bce": 1, "dice": 1}, "hv": {"mse": 1, "msge": 1},
        "tp": {"bce": 1, "dice": 1}}``.

    Raises
    ------
    ValueError
        For an unknown term (listing the valid ones) or a weight that is not a number >= 0.
    """
    if weights is None:
        return LossWeights()
    if isinstance(weights, LossWeights):
        return weights
    if not isinstance(weights, Mapping):
        raise ValueError(f"loss weights must be a mapping of term -> weight, got {weights!r}")
    flat: dict[str, Any] = {}
    for key, value in weights.items():
        if key in ("np", "hv", "tp") and isinstance(value, Mapping):
            for name, weight in value.items():
                if name not in _ORIGINAL_NAMES:
                    raise ValueError(
                        f"unknown loss term {key}.{name!r}; valid: bce (or ce), dice, mse, msge"
                    )
                flat[f"{key}_{_ORIGINAL_NAMES[name]}"] = weight
        else:
            flat[str(key)] = value
    unknown = sorted(set(flat) - set(TERMS))
    if unknown:
        raise ValueError(
            f"unknown loss term(s) {', '.join(map(repr, unknown))}; valid: {', '.join(TERMS)}"
        )
    return LossWeights(**flat)


# --------------------------------------------------------------------------------------------
# Gradients of the HV maps


def sobel_kernels(
    size: int = 5, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """The original's Sobel-like derivative kernels ``x / (x^2 + y^2)`` and ``y / (x^2 + y^2)``.

    Parameters
    ----------
    size
        Odd kernel side in pixels (5 in HoVer-Net).
    dtype, device
        Of the kernels.

    Returns
    -------
    kernel_h, kernel_v : Tensor
        ``(size, size)`` kernels, axis 0 the rows (``y``, down) and axis 1 the columns (``x``,
        right), both ``-size // 2 .. size // 2``; the centre is 0. Applied by cross-correlation
        (:func:`torch.nn.functional.conv2d`), ``kernel_h`` gives a positive response where a map
        increases to the right, ``kernel_v`` where it increases downwards.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 3 or size % 2 == 0:
        raise ValueError(f"the Sobel kernel size must be an odd integer >= 3, got {size!r}")
    offsets = torch.arange(-(size // 2), size // 2 + 1, dtype=dtype, device=device)
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    norm = x * x + y * y + 1.0e-15
    return x / norm, y / norm


def hv_gradients(hv: Tensor, size: int = 5) -> Tensor:
    """The horizontal derivative of the H map and the vertical derivative of the V map.

    Parameters
    ----------
    hv
        ``(N, 2, H, W)``: channel 0 the horizontal map, channel 1 the vertical map.
    size
        Side of the Sobel-like kernels (:func:`sobel_kernels`).

    Returns
    -------
    Tensor
        ``(N, 2, H, W)``: ``d H / d x`` and ``d V / d y`` (zero padding at the map's border).
    """
    if hv.ndim != 4 or hv.shape[1] != 2:
        raise ValueError(f"HV maps must be (N, 2, H, W), got shape {tuple(hv.shape)}")
    kernel_h, kernel_v = sobel_kernels(size, dtype=hv.dtype, device=hv.device)
    weight = torch.stack([kernel_h, kernel_v])[:, None]  # (2, 1, k, k): one kernel per channel
    return F.conv2d(hv, weight, padding=size // 2, groups=2)


# --------------------------------------------------------------------------------------------
# Terms


def _zero(like: Tensor) -> Tensor:
    return like.sum() * 0.0  # stays attached to the graph: a zero gradient


def cross_entropy_term(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of ``softmax(logits)`` over the valid pixels.

    Parameters
    ----------
    logits
        ``(N, K, H, W)`` raw scores.
    target
        ``(N, H, W)`` int class indices; 255 is ignored.
    valid
        Optional ``(N, H, W)`` bool mask of the pixels to count (besides ``target != 255``).

    Returns
    -------
    Tensor
        Scalar; 0 (attached to the graph) when no pixel is valid.
    """
    logits = logits.float()
    mask = target != IGNORE if valid is None else valid & (target != IGNORE)
    count = mask.sum()
    if int(count) == 0:
        return _zero(logits)
    safe = torch.where(mask, target, torch.zeros_like(target)).long()
    losses = F.cross_entropy(logits, safe, reduction="none")
    return (losses * mask).sum() / count


def dice_term(
    logits: Tensor, target: Tensor, valid: Tensor | None = None, smooth: float = DICE_SMOOTH
) -> Tensor:
    r"""Soft Dice loss of ``softmax(logits)``, per channel over the batch, summed over channels.

    Parameters
    ----------
    logits
        ``(N, K, H, W)`` raw scores.
    target
        ``(N, H, W)`` int class indices; 255 is ignored.
    valid
        Optional ``(N, H, W)`` bool mask of the pixels to count.
    smooth
        The smoothing constant ``s``.

    Returns
    -------
    Tensor
        Scalar :math:`\sum_k 1 - (2 \sum_i p_{k,i} t_{k,i} + s) / (\sum_i p_{k,i} + \sum_i
        t_{k,i} + s)` over the valid pixels ``i`` of all patches, in ``[0, K]``.
    """
    logits = logits.float()
    classes = logits.shape[1]
    mask = target != IGNORE if valid is None else valid & (target != IGNORE)
    safe = torch.where(mask, target, torch.zeros_like(target)).long()
    one_hot = F.one_hot(safe, classes).permute(0, 3, 1, 2).float()
    weight = mask[:, None].float()
    probabilities = torch.softmax(logits, dim=1) * weight
    one_hot = one_hot * weight
    axes = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dim=axes)
    total = probabilities.sum(dim=axes) + one_hot.sum(dim=axes)
    return (1.0 - (2.0 * intersection + smooth) / (total + smooth)).sum()


def mse_term(prediction: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean squared error of ``(N, C, H, W)`` maps over the valid pixels and all channels.

    Parameters
    ----------
    prediction, target
        ``(N, C, H, W)`` float maps.
    valid
        Optional ``(N, H, W)`` bool mask of the pixels to count.

    Returns
    -------
    Tensor
        Scalar; 0 when no pixel is valid.
    """
    prediction, target = prediction.float(), target.float()
    squared = (prediction - target) ** 2
    if valid is None:
        return squared.mean()
    weight = valid[:, None].float().expand_as(squared)
    count = weight.sum()
    if int(count) == 0:
        return _zero(prediction)
    return (squared * weight).sum() / count


def msge_term(prediction: Tensor, target: Tensor, focus: Tensor, size: int = 5) -> Tensor:
    r"""Mean squared error of the HV map gradients inside the focus area (the nuclei).

    Parameters
    ----------
    prediction, target
        ``(N, 2, H, W)`` HV maps (channel 0 horizontal, 1 vertical).
    focus
        ``(N, H, W)`` bool (or 0/1) mask where the error counts: the NP target.
    size
        Sobel kernel side.

    Returns
    -------
    Tensor
        Scalar :math:`\sum_{c, i} f_i (g^p_{c,i} - g^t_{c,i})^2 / (2 \sum_i f_i + 10^{-8})`,
        ``g`` the :func:`hv_gradients` of the maps computed over the whole map; 0 without
        focus pixels.
    """
    prediction, target = prediction.float(), target.float()
    difference = hv_gradients(prediction, size) - hv_gradients(target, size)
    weight = focus[:, None].float().expand_as(difference)
    return (weight * difference**2).sum() / (weight.sum() + 1.0e-8)


# --------------------------------------------------------------------------------------------
# The loss


def _label_map(value: Any, name: str, shape: tuple[int, ...], device: torch.device) -> Tensor:
    tensor = torch.as_tensor(value, device=device)
    if tensor.ndim == 4 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tuple(tensor.shape) != shape:
        raise ValueError(f"the {name} target must be {shape} (N, H, W), got {tuple(tensor.shape)}")
    if tensor.is_floating_point():
        tensor = tensor.round()
    return tensor.long()


def hovernet_loss(
    outputs: Mapping[str, Tensor],
    targets: Mapping[str, Any],
    weights: LossWeights | Mapping[str, Any] | None = None,
    valid: Tensor | None = None,
) -> dict[str, Tensor]:
    """The HoVer-Net loss and each of its terms.

    Parameters
    ----------
    outputs
        The network's raw outputs: ``"np"`` ``(N, 2, H, W)`` logits, ``"hv"`` ``(N, 2, H,
        W)`` maps, optionally ``"tp"`` ``(N, T, H, W)`` logits.
    targets
        On the same grid: ``"np"`` ``(N, H, W)`` 0/1 (nucleus) with 255 = ignored, ``"hv"``
        ``(N, 2, H, W)`` float in [-1, 1] (channel 0 horizontal, 1 vertical; 0 outside nuclei),
        and ``"tp"`` ``(N, H, W)`` type indices ``0 .. T - 1`` (0 = background, 255 = ignored)
        when the outputs have a TP branch.
    weights
        :class:`LossWeights` or a mapping (:func:`loss_weights`); default all 1.
    valid
        Optional ``(N, H, W)`` bool mask of the pixels that count (e.g. from per-pixel weights
        > 0), combined with the NP target's 255.

    Returns
    -------
    dict of str to Tensor
        ``"loss"``: the weighted total (differentiable scalar); ``"np_ce"``, ``"np_dice"``,
        ``"hv_mse"``, ``"hv_msge"`` and, with a TP branch, ``"tp_ce"``, ``"tp_dice"``: the
        unweighted terms (differentiable scalars, float32).

    Raises
    ------
    ValueError
        For missing outputs or targets, shapes that do not match, or bad weights.
    """
    weights = loss_weights(weights)
    for name in ("np", "hv"):
        if name not in outputs:
            raise ValueError(f"the outputs have no {name!r} map; got {', '.join(outputs)}")
        if name not in targets:
            raise ValueError(f"the targets have no {name!r} map; got {', '.join(targets)}")
    np_logits, hv_prediction = outputs["np"], outputs["hv"]
    if np_logits.ndim != 4 or np_logits.shape[1] != 2:
        raise ValueError(f"NP logits must be (N, 2, H, W), got {tuple(np_logits.shape)}")
    if tuple(hv_prediction.shape) != (np_logits.shape[0], 2, *np_logits.shape[2:]):
        raise ValueError(
            f"HV maps must be (N, 2, H, W) like the NP logits {tuple(np_logits.shape)}, got "
            f"{tuple(hv_prediction.shape)}"
        )
    grid = (np_logits.shape[0], *np_logits.shape[2:])
    device = np_logits.device
    np_target = _label_map(targets["np"], "np", grid, device)
    bad_np = (np_target != IGNORE) & ((np_target < 0) | (np_target > 1))
    if bool(bad_np.any()):
        raise ValueError(
            f"the np target must hold 0 (background), 1 (nucleus) or 255 (ignored), got "
            f"{sorted(set(np_target[bad_np].unique().tolist()))[:10]}"
        )
    hv_target = torch.as_tensor(targets["hv"], device=device).float()
    if tuple(hv_target.shape) != tuple(hv_prediction.shape):
        raise ValueError(
            f"the hv target must be {tuple(hv_prediction.shape)} (N, 2, H, W), got "
            f"{tuple(hv_target.shape)}"
        )
    mask = np_target != IGNORE
    if valid is not None:
        valid = torch.as_tensor(valid, device=device).bool()
        if tuple(valid.shape) != grid:
            raise ValueError(f"the valid mask must be {grid} (N, H, W), got {tuple(valid.shape)}")
        mask = mask & valid
    terms = {
        "np_ce": cross_entropy_term(np_logits, np_target, mask),
        "np_dice": dice_term(np_logits, np_target, mask),
        "hv_mse": mse_term(hv_prediction, hv_target, mask),
        "hv_msge": msge_term(hv_prediction, hv_target, mask & (np_target == 1)),
    }
    if "tp" in outputs:
        if "tp" not in targets:
            raise ValueError("the outputs have a TP branch but the targets no 'tp' map")
        tp_logits = outputs["tp"]
        if tp_logits.ndim != 4 or tuple(tp_logits.shape[2:]) != tuple(grid[1:]):
            raise ValueError(
                f"TP logits must be (N, T, H, W) on the NP grid {grid}, got "
                f"{tuple(tp_logits.shape)}"
            )
        tp_target = _label_map(targets["tp"], "tp", grid, device)
        bad = (tp_target != IGNORE) & ((tp_target < 0) | (tp_target >= tp_logits.shape[1]))
        if bool(bad.any()):
            raise ValueError(
                f"the tp target holds values outside 0 .. {tp_logits.shape[1] - 1} (and 255): "
                f"{sorted(set(tp_target[bad].unique().tolist()))[:10]}"
            )
        terms["tp_ce"] = cross_entropy_term(tp_logits, tp_target, mask)
        terms["tp_dice"] = dice_term(tp_logits, tp_target, mask)
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return {"loss": total, **terms}
