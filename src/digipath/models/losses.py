"""Losses and metrics for patch classifiers and segmentation networks.

Conventions shared by every function here:

* ``logits`` are raw scores (no softmax), shaped ``(N, K)`` for a classifier or
  ``(N, K, H, W)`` (any number of trailing spatial axes) for a segmentation network;
* ``target`` holds integer class indices ``0 .. K - 1``, shaped ``(N,)`` or ``(N, H, W)``; the
  value :data:`~digipath.data.labels.IGNORE` (255) marks an element that has no label: it gets
  no loss, no gradient and is left out of every metric;
* ``weights`` (optional) are float per-sample or per-pixel weights shaped like ``target`` (a
  ``(N,)`` vector is also accepted for a segmentation target and then weights whole patches);
  a weight of 0 (or below) ignores the element just like 255 does.

An element is *valid* when ``target != 255`` and (there are no weights or its weight is > 0).
Losses are computed in float32 at least (half-precision logits are upcast) and return a
differentiable scalar; when nothing is valid they return 0, still attached to the graph (its
gradient is 0), so that a training step never breaks on an empty batch.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from digipath.data.labels import IGNORE

__all__ = [
    "IGNORE",
    "LOSSES",
    "LossFunction",
    "accuracy",
    "cross_entropy",
    "dice_loss",
    "dice_scores",
    "focal_loss",
    "loss_from_name",
    "lovasz_grad",
    "lovasz_softmax",
    "patch_errors",
]

LossFunction = Callable[..., Tensor]
"""``fn(logits, target, weights=None) -> Tensor``: a scalar, differentiable loss."""


# --------------------------------------------------------------------------------------------
# Input handling


def _as_float(logits: Tensor) -> Tensor:
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        raise TypeError(
            f"logits must be a floating-point tensor, got "
            f"{logits.dtype if torch.is_tensor(logits) else type(logits).__name__}"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float()
    return logits


def _prepare(
    logits: Tensor, target: Tensor, weights: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check the inputs and flatten the spatial axes.

    Returns
    -------
    logits
        ``(N, K, P)`` (float32 at least), ``P`` the number of elements per sample.
    target
        ``(N, P)`` int64, with every invalid element replaced by class 0 (safe for indexing).
    valid
        ``(N, P)`` bool.
    weights
        ``(N, P)`` in the dtype of ``logits``: the weights (1 without weights), 0 where invalid.
    """
    logits = _as_float(logits)
    if logits.ndim < 2:
        raise ValueError(f"logits must be (N, K) or (N, K, H, W), got shape {tuple(logits.shape)}")
    if not torch.is_tensor(target):
        raise TypeError(f"target must be an integer tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    n, k = logits.shape[:2]
    expected = (n, *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape "
            f"{tuple(logits.shape)}: expected {expected}"
        )
    target = target.to(device=logits.device, dtype=torch.long).reshape(n, -1)
    valid = target != IGNORE
    if weights is not None:
        if not torch.is_tensor(weights):
            weights = torch.as_tensor(weights)
        weights = weights.to(device=logits.device, dtype=logits.dtype)
        if tuple(weights.shape) == expected:
            weights = weights.reshape(n, -1)
        elif tuple(weights.shape) == (n,):
            weights = weights.reshape(n, 1).expand_as(target)
        else:
            raise ValueError(
                f"weights shape {tuple(weights.shape)} must be {expected} (like target) or ({n},)"
            )
        valid = valid & (weights > 0)
    out_of_range = valid & ((target < 0) | (target >= k))
    if bool(out_of_range.any()):
        bad = torch.unique(target[out_of_range]).tolist()
        raise ValueError(
            f"target holds class indices {bad} outside 0 .. {k - 1} (and not {IGNORE}, ignored)"
        )
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    if weights is None:
        w = valid.to(logits.dtype)
    else:
        w = torch.where(valid, weights, torch.zeros_like(weights))
    return logits.reshape(n, k, -1), safe_target, valid, w


def _zero(logits: Tensor) -> Tensor:
    """A 0 attached to the graph of ``logits`` (gradient 0)."""
    return logits.sum() * 0.0


def _per_sample_mean(values: Tensor, w: Tensor, valid: Tensor) -> Tensor:
    """``mean over samples with a valid element of (sum_p w * values / #valid_p)``."""
    weighted = torch.where(valid, values * w, torch.zeros_like(values))
    count = valid.sum(dim=1)
    per_sample = weighted.sum(dim=1) / count.clamp(min=1).to(values.dtype)
    has_valid = count > 0
    return (per_sample * has_valid).sum() / has_valid.sum().clamp(min=1).to(values.dtype)


# --------------------------------------------------------------------------------------------
# Losses


def cross_entropy(logits: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    r"""Weighted categorical cross-entropy, averaged per sample, then over the batch.

    Parameters
    ----------
    logits
        Raw scores, ``(N, K)`` or ``(N, K, H, W)``.
    target
        Class indices, ``(N,)`` or ``(N, H, W)``; 255 is ignored.
    weights
        Optional per-element weights shaped like ``target`` (or ``(N,)``); 0 ignores.

    Returns
    -------
    Tensor
        The scalar loss.

    Notes
    -----
    With :math:`V_n` the valid elements of sample :math:`n` and :math:`B` the samples that have
    at least one valid element,

    .. math::

        \ell_{n,i} = -\log \operatorname{softmax}(z_{n,:,i})_{y_{n,i}}, \qquad
        L = \frac{1}{|B|} \sum_{n \in B} \frac{1}{|V_n|} \sum_{i \in V_n} w_{n,i}\, \ell_{n,i}

    (:math:`w = 1` without weights): the per-pixel loss times the weight, averaged over the
    pixels with weight > 0, averaged over the batch (the DigitalPathology semantics). The
    denominator counts valid elements, not the sum of weights, so weights scale the loss. Without
    weights and ignored elements, this equals ``torch.nn.functional.cross_entropy``. 0 (with a
    zero gradient) when nothing is valid.
    """
    z, y, valid, w = _prepare(logits, target, weights)
    nll = -torch.log_softmax(z, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    return _per_sample_mean(nll, w, valid)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    weights: Tensor | None = None,
    gamma: float = 2.0,
    alpha: Sequence[float] | Tensor | None = None,
) -> Tensor:
    r"""Multi-class focal loss (Lin et al. 2017), weighted and averaged like :func:`cross_entropy`.

    Parameters
    ----------
    logits
        Raw scores, ``(N, K)`` or ``(N, K, H, W)``.
    target
        Class indices, ``(N,)`` or ``(N, H, W)``; 255 is ignored.
    weights
        Optional per-element weights shaped like ``target`` (or ``(N,)``); 0 ignores.
    gamma
        Focusing parameter :math:`\gamma \ge 0`; 0 gives the cross-entropy.
    alpha
        Optional per-class weights :math:`\alpha_k` (K floats); a factor on each element's loss.

    Returns
    -------
    Tensor
        The scalar loss.

    Notes
    -----
    With :math:`p_t = \operatorname{softmax}(z_{n,:,i})_{y_{n,i}}`,

    .. math::

        \ell_{n,i} = -\alpha_{y_{n,i}} (1 - p_t)^\gamma \log p_t, \qquad
        L = \frac{1}{|B|} \sum_{n \in B} \frac{1}{|V_n|} \sum_{i \in V_n} w_{n,i}\, \ell_{n,i}

    (:math:`\alpha = 1` without ``alpha``, :math:`V_n`, :math:`B` as in :func:`cross_entropy`).
    :math:`1 - p_t` is computed as ``-expm1(log p_t)`` and floored at 1e-30 so that saturated
    predictions keep a finite gradient for any :math:`\gamma`.
    """
    gamma = float(gamma)
    if not gamma >= 0.0 or math.isinf(gamma):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma}")
    z, y, valid, w = _prepare(logits, target, weights)
    log_pt = torch.log_softmax(z, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    loss = -log_pt
    if gamma != 0.0:
        loss = (-torch.expm1(log_pt)).clamp(min=1e-30).pow(gamma) * loss
    if alpha is not None:
        factors = torch.as_tensor(alpha, dtype=z.dtype, device=z.device).reshape(-1)
        if factors.numel() != z.shape[1]:
            raise ValueError(
                f"alpha must hold one weight per class ({z.shape[1]}), got {factors.numel()}"
            )
        loss = factors[y] * loss
    return _per_sample_mean(loss, w, valid)


def dice_loss(
    logits: Tensor, target: Tensor, weights: Tensor | None = None, smooth: float = 1.0
) -> Tensor:
    r"""Soft multi-class Dice loss over the whole batch.

    Parameters
    ----------
    logits
        Raw scores, ``(N, K)`` or ``(N, K, H, W)``.
    target
        Class indices, ``(N,)`` or ``(N, H, W)``; 255 is ignored.
    weights
        Optional per-element weights shaped like ``target`` (or ``(N,)``); 0 ignores.
    smooth
        Additive smoothing :math:`s \ge 0` of numerator and denominator (with 0, a class absent
        from target and prediction gives NaN).

    Returns
    -------
    Tensor
        The scalar loss, in :math:`[0, 1]`.

    Notes
    -----
    With :math:`p = \operatorname{softmax}(z)` over the classes, :math:`t` the one-hot target
    and :math:`w` the weights (1 without weights) times validity, sums running over all samples
    and elements of the batch,

    .. math::

        L = 1 - \frac{1}{K} \sum_{k=1}^{K}
            \frac{2 \sum p_k t_k w + s}{\sum p_k w + \sum t_k w + s}

    It is evaluated as the equal :math:`\frac{1}{K}\sum_k \frac{\sum w (p_k (1 - t_k) + t_k (1 -
    p_k))}{\sum p_k w + \sum t_k w + s}`, whose terms are all non-negative, so rounding never
    makes it negative. 0 when nothing is valid.
    """
    smooth = float(smooth)
    if not smooth >= 0.0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    z, y, _, w = _prepare(logits, target, weights)
    k = z.shape[1]
    p = torch.softmax(z, dim=1)  # (N, K, P)
    t = F.one_hot(y, k).permute(0, 2, 1).to(p.dtype)  # (N, K, P)
    w = w.unsqueeze(1)
    dims = (0, 2)
    denominator = (p * w).sum(dim=dims) + (t * w).sum(dim=dims) + smooth
    mismatch = (w * (p * (1.0 - t) + t * (1.0 - p))).sum(dim=dims)
    return (mismatch / denominator).mean()


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    r"""Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors.

    Parameters
    ----------
    gt_sorted
        Foreground indicators (0/1 floats) ordered by decreasing error, ``(P,)`` or ``(P, C)``
        (then each column independently, sorted along axis 0).

    Returns
    -------
    Tensor
        Same shape: :math:`g_1 = J_1`, :math:`g_i = J_i - J_{i-1}` with
        :math:`J_i = 1 - \frac{G - \sum_{j \le i} t_j}{G + \sum_{j \le i} (1 - t_j)}` the
        Jaccard loss of the set of the ``i`` largest errors and :math:`G = \sum_j t_j`.
    """
    gts = gt_sorted.sum(dim=0, keepdim=True)
    intersection = gts - gt_sorted.cumsum(dim=0)
    union = gts + (1.0 - gt_sorted).cumsum(dim=0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.shape[0] > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)
    return jaccard


def lovasz_softmax(logits: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    r"""Lovasz-softmax loss (Berman et al. 2018) over the batch, averaged over present classes.

    Parameters
    ----------
    logits
        Raw scores, ``(N, K)`` or ``(N, K, H, W)``.
    target
        Class indices, ``(N,)`` or ``(N, H, W)``; 255 is ignored.
    weights
        Optional weights shaped like ``target`` (or ``(N,)``), **used as validity only**: an
        element with weight > 0 counts fully, one with weight <= 0 is ignored. The Lovasz
        extension is defined on sets of pixels and has no per-pixel weighting.

    Returns
    -------
    Tensor
        The scalar loss, in :math:`[0, 1]`.

    Notes
    -----
    All valid elements of the batch are flattened into one set of :math:`P` pixels. For each
    class :math:`c` present in the target (:math:`C_p`), with :math:`p_c` the softmax
    probability and :math:`t_c` the foreground indicator, the errors
    :math:`m_i = |t_{c,i} - p_{c,i}|` are sorted in decreasing order (permutation :math:`\pi`)
    and

    .. math::

        \bar\Delta_c(m) = \sum_{i=1}^{P} m_{\pi_i}\, g_i(t_{c,\pi}), \qquad
        L = \frac{1}{|C_p|} \sum_{c \in C_p} \bar\Delta_c(m)

    with :math:`g` from :func:`lovasz_grad`: the Lovasz extension of the Jaccard loss
    :math:`\Delta(M) = |M| / |F \cup M|` (:math:`F` the foreground), which equals
    :math:`\int_0^1 \Delta(\{i : m_i \ge \tau\})\, d\tau`. 0 when nothing is valid.
    """
    z, y, valid, _ = _prepare(logits, target, weights)
    k = z.shape[1]
    mask = valid.reshape(-1)
    probabilities = torch.softmax(z, dim=1).permute(0, 2, 1).reshape(-1, k)[mask]  # (P, K)
    labels = y.reshape(-1)[mask]
    if labels.numel() == 0:
        return _zero(z)
    foreground = F.one_hot(labels, k).to(probabilities.dtype)  # (P, K)
    errors = (foreground - probabilities).abs()
    errors_sorted, order = torch.sort(errors, dim=0, descending=True)
    foreground_sorted = foreground.gather(0, order)
    per_class = (errors_sorted * lovasz_grad(foreground_sorted)).sum(dim=0)  # (K,)
    present = foreground.sum(dim=0) > 0
    return (per_class * present).sum() / present.sum().to(per_class.dtype)


# --------------------------------------------------------------------------------------------
# Registry

LOSSES: dict[str, LossFunction] = {
    "cross_entropy": cross_entropy,
    "categorical_crossentropy": cross_entropy,
    "ce": cross_entropy,
    "dice": dice_loss,
    "focal": focal_loss,
    "lovasz": lovasz_softmax,
}
"""Loss functions by name (``categorical_crossentropy`` and ``ce`` alias ``cross_entropy``)."""

_DATA_ARGUMENTS = ("logits", "target", "weights")


def loss_from_name(name: str, **options: object) -> LossFunction:
    """The loss called ``name`` in :data:`LOSSES`, with ``options`` bound.

    Parameters
    ----------
    name
        A key of :data:`LOSSES` (case and surrounding spaces do not matter, ``-`` reads ``_``).
    **options
        Keyword options of that loss (``gamma``/``alpha`` for ``focal``, ``smooth`` for
        ``dice``), bound with :func:`functools.partial`.

    Returns
    -------
    Callable
        ``fn(logits, target, weights=None) -> Tensor``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or an option the loss lacks.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    function = LOSSES[key]
    if not options:
        return function
    parameters = inspect.signature(function).parameters
    allowed = [p for p in parameters if p not in _DATA_ARGUMENTS]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"loss {key!r} has no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(allowed) or 'none'}"
        )
    return functools.partial(function, **options)


# --------------------------------------------------------------------------------------------
# Metrics


@torch.no_grad()
def patch_errors(logits: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    r"""Per-patch error, for boosting the sampling of difficult patches.

    Parameters
    ----------
    logits
        Raw scores, ``(N, K)`` or ``(N, K, H, W)``.
    target
        Class indices, ``(N,)`` or ``(N, H, W)``; 255 is ignored.
    weights
        Optional per-element weights shaped like ``target`` (or ``(N,)``); 0 ignores.

    Returns
    -------
    Tensor
        ``(N,)`` float32, detached, in :math:`[0, 1]`:

        .. math::

            e_n = \operatorname{clip}\Big(\frac{\sum_{i \in V_n} w_{n,i}
                  (1 - \operatorname{softmax}(z_{n,:,i})_{y_{n,i}})}
                  {\sum_{i \in V_n} w_{n,i}}, 0, 1\Big)

        the weighted mean over the valid elements (a plain mean without weights); 0 for a patch
        without valid elements.
    """
    z, y, valid, w = _prepare(logits, target, weights)
    p_true = torch.softmax(z, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    error = torch.where(valid, (1.0 - p_true) * w, torch.zeros_like(p_true)).sum(dim=1)
    total = w.sum(dim=1)
    per_patch = torch.where(total > 0, error / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0)
    return per_patch.clamp(0.0, 1.0).float()


@torch.no_grad()
def class_argmax(scores: torch.Tensor) -> torch.Tensor:
    """The index of the largest score along the class axis 1 (ties: the first).

    ``scores.max(dim=1).indices``, which on the CPU is an order of magnitude faster than
    ``argmax(dim=1)`` for (N, K, H, W) tensors with few classes (torch 2.x).
    """
    return scores.max(dim=1).indices


def accuracy(logits: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Fraction of valid elements whose argmax prediction equals the target.

    Parameters
    ----------
    logits
        Raw scores, ``(N, K)`` or ``(N, K, H, W)``.
    target
        Class indices, ``(N,)`` or ``(N, H, W)``; 255 is ignored.
    weights
        Optional weights shaped like ``target`` (or ``(N,)``), used as validity only.

    Returns
    -------
    Tensor
        Scalar float32 ``#{valid i : argmax_k z_{k,i} = y_i} / #{valid i}`` (unweighted); NaN
        when nothing is valid.
    """
    z, y, valid, _ = _prepare(logits, target, weights)
    correct = (class_argmax(z) == y) & valid
    count = valid.sum()
    if int(count) == 0:
        return torch.tensor(float("nan"), device=z.device)
    return (correct.sum().float() / count.float()).float()


@torch.no_grad()
def dice_scores(
    logits_or_labels: Tensor,
    target: Tensor,
    classes: int | Sequence[int],
    weights: Tensor | None = None,
) -> Tensor:
    r"""Hard Dice per class of argmax predictions, over the valid elements of the batch.

    Parameters
    ----------
    logits_or_labels
        Either raw scores ``(N, K, ...)`` (floating point, one axis more than ``target``; the
        prediction is their argmax over axis 1) or predicted labels shaped like ``target``.
    target
        Class indices, ``(N,)`` or ``(N, H, W)``; 255 is ignored.
    classes
        The number of classes K (scores for ``0 .. K - 1``) or the class indices to score.
    weights
        Optional weights shaped like ``target`` (or ``(N,)``), used as validity only.

    Returns
    -------
    Tensor
        ``(len(classes),)`` float32: for class :math:`c`,
        :math:`D_c = 2 |P_c \cap T_c| / (|P_c| + |T_c|)` with :math:`P_c`, :math:`T_c` the valid
        elements predicted as / labelled :math:`c`; NaN when :math:`|P_c| + |T_c| = 0`.
    """
    if isinstance(classes, int):
        if classes < 1:
            raise ValueError(f"classes must be >= 1, got {classes}")
        class_list = list(range(classes))
    else:
        class_list = [int(c) for c in classes]
    if not torch.is_tensor(logits_or_labels):
        raise TypeError(f"logits_or_labels must be a tensor, got {type(logits_or_labels).__name__}")
    if not torch.is_tensor(target):
        raise TypeError(f"target must be an integer tensor, got {type(target).__name__}")
    if logits_or_labels.is_floating_point() and logits_or_labels.ndim == target.ndim + 1:
        if logits_or_labels.shape[0] != target.shape[0] or (
            logits_or_labels.shape[2:] != target.shape[1:]
        ):
            raise ValueError(
                f"logits shape {tuple(logits_or_labels.shape)} does not match target shape "
                f"{tuple(target.shape)}"
            )
        predicted = class_argmax(logits_or_labels)
    elif logits_or_labels.shape == target.shape:
        if logits_or_labels.is_floating_point():
            raise TypeError("predicted labels must be integers (pass logits with a class axis)")
        predicted = logits_or_labels
    else:
        raise ValueError(
            f"logits_or_labels shape {tuple(logits_or_labels.shape)} must be target's "
            f"{tuple(target.shape)} (labels) or add a class axis 1 (logits)"
        )
    target = target.to(device=predicted.device, dtype=torch.long)
    predicted = predicted.to(dtype=torch.long)
    valid = target != IGNORE
    if weights is not None:
        weights = torch.as_tensor(weights, device=predicted.device)
        if weights.shape == target.shape:
            valid = valid & (weights > 0)
        elif weights.shape == target.shape[:1]:
            valid = valid & (weights > 0).reshape(-1, *([1] * (target.ndim - 1)))
        else:
            raise ValueError(
                f"weights shape {tuple(weights.shape)} must be {tuple(target.shape)} "
                f"(like target) or ({target.shape[0]},)"
            )
    predicted, target = predicted[valid], target[valid]
    scores = []
    for c in class_list:
        in_prediction = predicted == c
        in_target = target == c
        total = int(in_prediction.sum()) + int(in_target.sum())
        overlap = int((in_prediction & in_target).sum())
        scores.append(2.0 * overlap / total if total > 0 else float("nan"))
    return torch.tensor(scores, dtype=torch.float32, device=predicted.device)
