"""Tests of digipath.models.losses: losses, registry and metrics."""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.data.labels import IGNORE
from digipath.models.losses import (
    LOSSES,
    accuracy,
    cross_entropy,
    dice_loss,
    dice_scores,
    focal_loss,
    loss_from_name,
    lovasz_grad,
    lovasz_softmax,
    patch_errors,
)

ALL_LOSSES = {
    "cross_entropy": cross_entropy,
    "dice": dice_loss,
    "focal": focal_loss,
    "lovasz": lovasz_softmax,
}


def _random_problem(seed: int, n: int = 2, k: int = 3, h: int = 4, w: int = 5, scale: float = 2.0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=generator, dtype=torch.float64) * scale
    target = torch.randint(0, k, (n, h, w), generator=generator)
    return logits, target


def _grad(fn, logits: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.detach().clone().requires_grad_(True)
    loss = fn(logits, *args, **kwargs)
    loss.backward()
    return loss.detach(), logits.grad


def _logits_from_probabilities(probabilities: list[list[float]]) -> torch.Tensor:
    """``(P, K)`` probabilities -> ``(1, K, P)`` logits whose softmax gives them back."""
    return torch.tensor(probabilities, dtype=torch.float64).log().T.unsqueeze(0)


# --------------------------------------------------------------------------------------------
# cross_entropy


def test_cross_entropy_equals_torch_without_weights_or_ignore() -> None:
    logits, target = _random_problem(0)
    expected = F.cross_entropy(logits, target)
    assert torch.allclose(cross_entropy(logits, target), expected, atol=1e-12)
    classifier_logits = logits[:, :, 0, 0]
    classifier_target = target[:, 0, 0]
    assert torch.allclose(
        cross_entropy(classifier_logits, classifier_target),
        F.cross_entropy(classifier_logits, classifier_target),
        atol=1e-12,
    )


def test_cross_entropy_averages_per_sample_then_over_batch() -> None:
    logits, target = _random_problem(1, n=2, h=1, w=4)
    target[0, 0, 1:] = IGNORE  # sample 0: one valid pixel, sample 1: four
    nll = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    expected = (nll[0, 0, 0] + nll[1].mean()) / 2
    assert torch.allclose(cross_entropy(logits, target), expected, atol=1e-12)
    # a single sample: the plain mean over non-ignored pixels
    assert torch.allclose(
        cross_entropy(logits[:1], target[:1]),
        F.cross_entropy(logits[:1], target[:1], ignore_index=IGNORE),
        atol=1e-12,
    )


def test_cross_entropy_weights_hand_example() -> None:
    # classifier: zero logits give log(K) per sample; sample 1 has weight 0 and drops out
    logits = torch.zeros(2, 2)
    target = torch.tensor([0, 1])
    loss = cross_entropy(logits, target, torch.tensor([2.0, 0.0]))
    assert loss.item() == pytest.approx(2 * math.log(2))
    # segmentation: sample 0 pixels p_true = 0.8, 0.5 with weights 1, 3 and one 255 (weight 7);
    # sample 1 pixels p_true = 0.25 (weight 0.5) and two with weight 0
    seg_logits = torch.stack(
        [
            torch.log(torch.tensor([[0.8, 0.5, 0.5], [0.2, 0.5, 0.5]])),
            torch.log(torch.tensor([[0.75, 0.6, 0.5], [0.25, 0.4, 0.5]])),
        ]
    ).unsqueeze(2)  # (N=2, K=2, H=1, W=3)
    seg_target = torch.tensor([[[0, 1, IGNORE]], [[1, 0, 0]]])
    weights = torch.tensor([[[1.0, 3.0, 7.0]], [[0.5, 0.0, 0.0]]])
    sample0 = (1.0 * -math.log(0.8) + 3.0 * -math.log(0.5)) / 2
    sample1 = 0.5 * -math.log(0.25) / 1
    loss = cross_entropy(seg_logits, seg_target, weights)
    assert loss.item() == pytest.approx((sample0 + sample1) / 2, rel=1e-6)
    # doubling every weight doubles the loss
    assert cross_entropy(seg_logits, seg_target, 2 * weights).item() == pytest.approx(
        2 * loss.item(), rel=1e-6
    )
    # per-sample weights (N,) with a segmentation target weight whole patches
    per_patch = cross_entropy(seg_logits, seg_target, torch.tensor([2.0, 0.0]))
    assert per_patch.item() == pytest.approx(2 * (-math.log(0.8) - math.log(0.5)) / 2, rel=1e-6)


def test_nothing_valid_gives_zero_with_gradient() -> None:
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    target = torch.full((2, 2, 2), IGNORE)
    for fn in ALL_LOSSES.values():
        loss = fn(logits, target)
        assert loss.item() == 0.0
        assert loss.requires_grad
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.count_nonzero(grad) == 0


# --------------------------------------------------------------------------------------------
# Ignored elements and zero weights, for every loss


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_ignored_and_zero_weight_elements_change_nothing(name: str) -> None:
    fn = ALL_LOSSES[name]
    logits, target = _random_problem(2)
    ignored = torch.zeros_like(target, dtype=torch.bool)
    ignored[0, 1:3, 2:] = True
    ignored[1, 0] = True
    with_ignore = target.clone()
    with_ignore[ignored] = IGNORE
    loss_a, grad_a = _grad(fn, logits, with_ignore)
    # other scores at the ignored pixels: same loss, same gradient, zero gradient there
    changed = logits.clone()
    changed[ignored.unsqueeze(1).expand_as(logits)] = 50.0 * torch.randn(
        int(ignored.sum()) * 3, dtype=torch.float64
    )
    loss_b, grad_b = _grad(fn, changed, with_ignore)
    assert torch.allclose(loss_a, loss_b, atol=1e-12)
    assert torch.allclose(grad_a, grad_b, atol=1e-12)
    assert torch.count_nonzero(grad_a[ignored.unsqueeze(1).expand_as(logits)]) == 0
    # weight 0 is the same as 255, whatever the label there
    weights = (~ignored).double()
    loss_c, grad_c = _grad(fn, changed, target, weights)
    assert torch.allclose(loss_a, loss_c, atol=1e-12)
    assert torch.allclose(grad_a, grad_c, atol=1e-12)


def test_lovasz_uses_weights_as_validity_only() -> None:
    logits, target = _random_problem(3)
    weights = torch.rand(target.shape, generator=torch.Generator().manual_seed(3)) * 3 + 0.1
    assert torch.allclose(lovasz_softmax(logits, target, weights), lovasz_softmax(logits, target))


def test_bad_inputs_raise() -> None:
    logits, target = _random_problem(4)
    with pytest.raises(ValueError, match="shape"):
        cross_entropy(logits, target[:, :2])
    with pytest.raises(ValueError, match="outside"):
        cross_entropy(logits, torch.full_like(target, 3))
    with pytest.raises(TypeError):
        cross_entropy(logits, target.double())
    with pytest.raises(ValueError, match="weights"):
        dice_loss(logits, target, torch.ones(3))
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(logits, target, alpha=[1.0, 2.0])
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(logits, target, gamma=-1.0)


# --------------------------------------------------------------------------------------------
# Dice and focal


def test_dice_loss_perfect_and_wrong_predictions() -> None:
    target = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    onehot = F.one_hot(target, 3).permute(0, 3, 1, 2).double()
    perfect = 40.0 * onehot
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    wrong = 40.0 * F.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).double()
    # no overlap: each class scores smooth / (4 + smooth) = 1/5
    assert dice_loss(wrong, target).item() == pytest.approx(1 - 1 / 5, abs=1e-6)
    loss, grad = _grad(dice_loss, torch.zeros_like(perfect), target)
    assert 0 < loss.item() < 1
    assert torch.count_nonzero(grad) > 0 and torch.isfinite(grad).all()


def test_dice_loss_hand_example() -> None:
    # 2 classes, 2 pixels: p = (0.75, 0.25), (0.5, 0.5); target 0, 1; smooth 1
    logits = _logits_from_probabilities([[0.75, 0.25], [0.5, 0.5]])
    target = torch.tensor([[0, 1]])
    dice0 = (2 * 0.75 + 1) / ((0.75 + 0.5) + 1 + 1)
    dice1 = (2 * 0.5 + 1) / ((0.25 + 0.5) + 1 + 1)
    assert dice_loss(logits, target).item() == pytest.approx(1 - (dice0 + dice1) / 2)
    # weights multiply each pixel's terms: weight 3 on pixel 0
    weights = torch.tensor([[3.0, 1.0]])
    dice0 = (2 * 3 * 0.75 + 1) / ((3 * 0.75 + 0.5) + 3 + 1)
    dice1 = (2 * 0.5 + 1) / ((3 * 0.25 + 0.5) + 1 + 1)
    assert dice_loss(logits, target, weights).item() == pytest.approx(1 - (dice0 + dice1) / 2)


def test_focal_gamma_zero_equals_cross_entropy() -> None:
    logits, target = _random_problem(5)
    target[0, 0] = IGNORE
    weights = torch.rand(target.shape, generator=torch.Generator().manual_seed(5))
    weights[1, 1] = 0.0
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), cross_entropy(logits, target))
    assert torch.allclose(
        focal_loss(logits, target, weights, gamma=0.0), cross_entropy(logits, target, weights)
    )
    # alpha is a per-class factor: the same as weights alpha[target]
    alpha = torch.tensor([0.25, 0.5, 2.0], dtype=torch.float64)
    as_weights = alpha[target.clamp(max=2)]
    assert torch.allclose(
        focal_loss(logits, target, gamma=0.0, alpha=alpha.tolist()),
        cross_entropy(logits, target, as_weights),
    )


def test_focal_hand_example() -> None:
    logits = _logits_from_probabilities([[0.8, 0.2], [0.4, 0.6]])[0].T  # (2, 2) classifier
    target = torch.tensor([0, 0])
    expected = (-(0.2**2) * math.log(0.8) - (0.6**2) * math.log(0.4)) / 2
    assert focal_loss(logits, target).item() == pytest.approx(expected)
    expected_alpha = (-3 * 0.2**2 * math.log(0.8) - 3 * 0.6**2 * math.log(0.4)) / 2
    assert focal_loss(logits, target, alpha=[3.0, 1.0]).item() == pytest.approx(expected_alpha)
    # focusing down-weights the easy sample relative to the cross-entropy
    assert focal_loss(logits, target).item() < cross_entropy(logits, target).item()


def test_focal_saturated_predictions_have_finite_gradients() -> None:
    logits = torch.tensor([[200.0, -200.0], [-200.0, 200.0]])
    for gamma in (0.0, 0.5, 2.0):
        loss, grad = _grad(focal_loss, logits, torch.tensor([0, 0]), gamma=gamma)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


# --------------------------------------------------------------------------------------------
# Lovasz-softmax


def _jaccard_loss_of_set(errors_at: set[int], foreground: set[int]) -> float:
    """Jaccard loss |M| / |F u M| of the mispredicted set M (0 for an empty set)."""
    union = foreground | errors_at
    return len(errors_at) / len(union) if union else 0.0


def _lovasz_reference(probabilities: list[list[float]], labels: list[int]) -> float:
    """Lovasz-softmax as the integral int_0^1 Delta({i: m_i >= tau}) dtau, present classes."""
    classes = len(probabilities[0])
    losses = []
    for c in range(classes):
        foreground = {i for i, label in enumerate(labels) if label == c}
        if not foreground:
            continue
        errors = [
            abs((label == c) - row[c]) for label, row in zip(labels, probabilities, strict=True)
        ]
        levels = sorted({0.0, *errors})
        total = 0.0
        for low, high in itertools.pairwise(levels):
            above = {i for i, e in enumerate(errors) if e >= high}
            total += (high - low) * _jaccard_loss_of_set(above, foreground)
        losses.append(total)
    return sum(losses) / len(losses)


def test_lovasz_two_classes_four_pixels_hand_value() -> None:
    probabilities = [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]]
    labels = [0, 0, 1, 1]
    # class 0: errors 0.1, 0.6, 0.3, 0.8; F = {0, 1}
    #   tau <= 0.1: M = all, 4/4; 0.1-0.3: {1,2,3}, 3/4; 0.3-0.6: {1,3}, 2/3; 0.6-0.8: {3}, 1/3
    class0 = 0.1 * 1 + 0.2 * 3 / 4 + 0.3 * 2 / 3 + 0.2 * 1 / 3
    # class 1: errors 0.1, 0.6, 0.3, 0.8 as well (2 classes), F = {2, 3}:
    #   all, 4/4; {1,2,3}, 3/3; {1,3} (M u F = {1,2,3}), 2/3; {3} (M u F = {2,3}), 1/2
    class1 = 0.1 * 1 + 0.2 * 1 + 0.3 * 2 / 3 + 0.2 * 1 / 2
    expected = (class0 + class1) / 2
    assert _lovasz_reference(probabilities, labels) == pytest.approx(expected)
    logits = _logits_from_probabilities(probabilities)
    assert lovasz_softmax(logits, torch.tensor([labels])).item() == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(6))
def test_lovasz_matches_integral_reference(seed: int) -> None:
    logits, target = _random_problem(seed, n=2, k=4, h=2, w=3)
    target[0, 0, 0] = IGNORE
    target[target == 3] = 2  # class 3 absent: it must not contribute
    probabilities = torch.softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(-1, 4)
    labels = target.reshape(-1)
    keep = labels != IGNORE
    expected = _lovasz_reference(probabilities[keep].tolist(), labels[keep].tolist())
    assert lovasz_softmax(logits, target).item() == pytest.approx(expected, rel=1e-9)


def test_lovasz_grad_matches_jaccard_differences() -> None:
    gt_sorted = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    foreground = {0, 2, 3}
    jaccard = [_jaccard_loss_of_set(set(range(i + 1)), foreground) for i in range(5)]
    expected = [jaccard[0], *(b - a for a, b in itertools.pairwise(jaccard))]
    assert torch.allclose(lovasz_grad(gt_sorted), torch.tensor(expected))


def test_lovasz_perfect_is_zero_and_descent_reduces_it() -> None:
    target = torch.tensor([[[0, 1, 2, 1], [2, 2, 0, IGNORE]]])
    onehot = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).double()
    assert lovasz_softmax(60.0 * onehot, target).item() == pytest.approx(0.0, abs=1e-12)
    parameters = torch.zeros(1, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.SGD([parameters], lr=5.0)
    start = lovasz_softmax(parameters, target).item()
    for _ in range(60):
        optimiser.zero_grad()
        loss = lovasz_softmax(parameters, target)
        loss.backward()
        optimiser.step()
    end = lovasz_softmax(parameters, target).item()
    assert end < 0.25 * start
    predicted = parameters.argmax(dim=1)
    valid = target != IGNORE
    assert torch.equal(predicted[valid], target[valid])


# --------------------------------------------------------------------------------------------
# Registry


def test_registry_names_and_options() -> None:
    assert set(LOSSES) == {
        "cross_entropy",
        "categorical_crossentropy",
        "ce",
        "dice",
        "focal",
        "lovasz",
    }
    assert LOSSES["ce"] is LOSSES["categorical_crossentropy"] is cross_entropy
    assert loss_from_name("Cross_Entropy") is cross_entropy
    assert loss_from_name("lovasz") is lovasz_softmax
    focal = loss_from_name("focal", gamma=0.0)
    assert isinstance(focal, functools.partial)
    logits, target = _random_problem(6)
    assert torch.allclose(focal(logits, target), cross_entropy(logits, target))
    smooth = loss_from_name("dice", smooth=0.5)
    assert torch.allclose(smooth(logits, target), dice_loss(logits, target, smooth=0.5))
    with pytest.raises(ValueError, match="valid names: categorical_crossentropy, ce"):
        loss_from_name("hinge")
    with pytest.raises(ValueError, match="smooth"):
        loss_from_name("dice", gamma=2.0)


# --------------------------------------------------------------------------------------------
# Metrics


def test_patch_errors_hand_example() -> None:
    # sample 0: p_true 0.5 (target 0) and 0.1 (target 1); sample 1: 255 and p_true 0.7;
    # sample 2: nothing valid
    logits = torch.stack(
        [
            _logits_from_probabilities([[0.5, 0.5], [0.9, 0.1]])[0],
            _logits_from_probabilities([[0.2, 0.8], [0.3, 0.7]])[0],
            _logits_from_probabilities([[0.6, 0.4], [0.6, 0.4]])[0],
        ]
    ).unsqueeze(2)  # (3, 2, 1, 2)
    target = torch.tensor([[[0, 1]], [[IGNORE, 1]], [[IGNORE, IGNORE]]])
    errors = patch_errors(logits, target)
    assert errors.shape == (3,)
    assert errors.tolist() == pytest.approx([(0.5 + 0.9) / 2, 0.3, 0.0])
    expected = 1 - torch.softmax(logits, 1).gather(1, target.clamp(max=1).unsqueeze(1))
    assert errors[0].item() == pytest.approx(expected[0].mean().item())
    weights = torch.tensor([[[1.0, 3.0]], [[1.0, 0.0]], [[1.0, 1.0]]])
    assert patch_errors(logits, target, weights).tolist() == pytest.approx(
        [(0.5 + 3 * 0.9) / 4, 0.0, 0.0]
    )
    assert not patch_errors(logits.requires_grad_(True), target).requires_grad


def test_patch_errors_classifier_and_range() -> None:
    logits, target = _random_problem(7, n=5, k=3, h=3, w=3, scale=10.0)
    target[2] = IGNORE
    errors = patch_errors(logits, target)
    assert ((errors >= 0) & (errors <= 1)).all() and errors[2] == 0
    classifier = patch_errors(logits[:, :, 0, 0], target[:, 0, 0])
    p_true = torch.softmax(logits[:, :, 0, 0], 1).gather(1, target[:, 0, 0, None].clamp(max=2))
    expected = torch.where(target[:, 0, 0] == IGNORE, 0.0, 1 - p_true[:, 0])
    assert torch.allclose(classifier, expected.float())


def test_accuracy_hand_example() -> None:
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 1.0, 2.0], [3.0, 0.0, 1.0], [0.0, 0.0, 9.0]])
    target = torch.tensor([0, 1, IGNORE, 2])  # predictions 0, 2, 0, 2
    assert accuracy(logits, target).item() == pytest.approx(2 / 3)
    weights = torch.tensor([0.5, 2.0, 1.0, 0.0])  # unweighted fraction over valid 0, 1
    assert accuracy(logits, target, weights).item() == pytest.approx(1 / 2)
    assert math.isnan(accuracy(logits, torch.full((4,), IGNORE)).item())


def test_dice_scores_hand_example() -> None:
    target = torch.tensor([[[0, 0, 1, 1], [2, 2, IGNORE, IGNORE]]])
    predicted = torch.tensor([[[0, 1, 1, 1], [2, 0, 3, 3]]])  # class 3 only on ignored pixels
    # class 0: P={0,5}, T={0,1} -> 2*1/4; class 1: P={1,2,3}, T={2,3} -> 2*2/5;
    # class 2: P={4}, T={4,5} -> 2*1/3; class 3: absent from both (valid pixels) -> NaN
    scores = dice_scores(predicted, target, 4)
    assert scores[:3].tolist() == pytest.approx([0.5, 0.8, 2 / 3])
    assert math.isnan(scores[3].item())
    logits = F.one_hot(predicted, 4).permute(0, 3, 1, 2).float()
    assert torch.allclose(dice_scores(logits, target, 4), scores, equal_nan=True)
    assert dice_scores(predicted, target, [2, 0]).tolist() == pytest.approx([2 / 3, 0.5])
    classifier = dice_scores(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), 2)
    assert classifier.tolist() == pytest.approx([2 / 3, 0.0])


# --------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 3),
    k=st.integers(2, 4),
    h=st.integers(1, 4),
    w=st.integers(1, 4),
    scale=st.sampled_from([0.01, 1.0, 10.0, 60.0]),
    ignore_fraction=st.sampled_from([0.0, 0.3, 1.0]),
    weighted=st.booleans(),
)
def test_losses_are_finite_non_negative_with_finite_gradients(
    seed: int, n: int, k: int, h: int, w: int, scale: float, ignore_fraction: float, weighted: bool
) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=generator) * scale
    target = torch.randint(0, k, (n, h, w), generator=generator)
    target[torch.rand(target.shape, generator=generator) < ignore_fraction] = IGNORE
    weights = None
    if weighted:
        weights = torch.rand(target.shape, generator=generator) * 2
        weights[weights < 0.4] = 0.0
    for name, fn in ALL_LOSSES.items():
        loss, grad = _grad(fn, logits, target, weights)
        assert loss.ndim == 0, name
        assert torch.isfinite(loss) and loss.item() >= 0.0, (name, loss)
        assert torch.isfinite(grad).all(), name
    errors = patch_errors(logits, target, weights)
    assert ((errors >= 0) & (errors <= 1)).all()
