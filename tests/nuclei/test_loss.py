"""The HoVer-Net loss: each term on hand-made cases, the weights, and a few training steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from digipath.nuclei.loss import (
    DICE_SMOOTH,
    LossWeights,
    cross_entropy_term,
    dice_term,
    hovernet_loss,
    hv_gradients,
    loss_weights,
    mse_term,
    msge_term,
    sobel_kernels,
)


def confident(target: torch.Tensor, classes: int) -> torch.Tensor:
    """Logits whose softmax is the one-hot target (to float32 precision)."""
    return torch.nn.functional.one_hot(target, classes).permute(0, 3, 1, 2).float() * 200.0


def square_nucleus(size: int = 16) -> dict[str, torch.Tensor]:
    """One 6x6 nucleus in a size x size patch, with its HV maps, as targets."""
    np_map = torch.zeros(1, size, size, dtype=torch.long)
    np_map[0, 5:11, 5:11] = 1
    coords = torch.arange(6, dtype=torch.float32) - 2.5
    hv = torch.zeros(1, 2, size, size)
    hv[0, 0, 5:11, 5:11] = (coords / 2.5)[None, :]  # horizontal: along the columns
    hv[0, 1, 5:11, 5:11] = (coords / 2.5)[:, None]  # vertical: along the rows
    tp = np_map * 2
    return {"np": np_map, "hv": hv, "tp": tp}


def test_sobel_kernels():
    kernel_h, kernel_v = sobel_kernels(5)
    assert kernel_h.shape == (5, 5) and kernel_h[2, 2] == 0
    assert torch.allclose(kernel_v, kernel_h.T)
    assert torch.allclose(kernel_h, -kernel_h.flip(1))  # odd along the columns
    assert kernel_h[2, 4] == pytest.approx(0.5) and kernel_h[0, 4] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="odd"):
        sobel_kernels(4)


def test_gradients_differentiate_h_along_columns_and_v_along_rows():
    ramp = torch.arange(9, dtype=torch.float32)
    hv = torch.stack([ramp[None, :].expand(9, 9), ramp[:, None].expand(9, 9)])[None]
    gradients = hv_gradients(hv)
    # interior: sum over the 5x5 window of dx^2 / (dx^2 + dy^2) = 24 / 2
    assert torch.allclose(gradients[0, :, 2:-2, 2:-2], torch.full((2, 5, 5), 12.0))
    swapped = hv_gradients(hv.flip(1))  # H varying along the rows has no horizontal gradient
    assert torch.allclose(swapped[0, :, 2:-2, 2:-2], torch.zeros(2, 5, 5), atol=1e-5)


def test_terms_are_zero_when_prediction_equals_target():
    targets = square_nucleus()
    outputs = {
        "np": confident(targets["np"], 2),
        "hv": targets["hv"].clone(),
        "tp": confident(targets["tp"], 3),
    }
    terms = hovernet_loss(outputs, targets)
    assert set(terms) == {"loss", "np_ce", "np_dice", "hv_mse", "hv_msge", "tp_ce", "tp_dice"}
    for name, value in terms.items():
        assert float(value) == pytest.approx(0.0, abs=1e-6), name
    # NP and HV only: no TP terms
    assert "tp_ce" not in hovernet_loss({"np": outputs["np"], "hv": outputs["hv"]}, targets)


def test_msge_counts_only_inside_nuclei():
    targets = square_nucleus()
    focus = targets["np"] == 1
    outside = targets["hv"].clone()
    outside[0, :, 0:2, :] += 0.7  # rows 0-1: more than 2 px (the kernel radius) from the nucleus
    assert float(msge_term(outside, targets["hv"], focus)) == 0.0
    assert float(mse_term(outside, targets["hv"])) > 0.0
    inside = targets["hv"].clone()
    inside[0, 0, 7, 7] += 0.5
    assert float(msge_term(inside, targets["hv"], focus)) > 0.0

    # a hand-computed value: a unit ramp along the columns in H, zero target, one focus pixel
    ramp = torch.arange(9, dtype=torch.float32)[None, :].expand(9, 9)
    prediction = torch.stack([ramp, torch.zeros(9, 9)])[None]
    pixel = torch.zeros(1, 9, 9, dtype=torch.bool)
    pixel[0, 4, 4] = True
    # gradient 12 in channel 0, 0 in channel 1; normalised by both channels' focus: 144 / 2
    assert float(msge_term(prediction, torch.zeros_like(prediction), pixel)) == pytest.approx(72)
    no_focus = torch.zeros_like(pixel)
    assert float(msge_term(prediction, torch.zeros_like(prediction), no_focus)) == 0.0


def test_dice_and_cross_entropy_by_hand():
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[:, :, :1] = 1  # 8 of 32 pixels are nuclei
    logits = torch.zeros(2, 2, 4, 4)  # p = 0.5 everywhere
    pixels, counts = 32, (24, 8)
    expected = sum(
        1 - (2 * 0.5 * n + DICE_SMOOTH) / (0.5 * pixels + n + DICE_SMOOTH) for n in counts
    )
    assert float(dice_term(logits, target)) == pytest.approx(expected, rel=1e-6)
    assert float(cross_entropy_term(logits, target)) == pytest.approx(math.log(2), rel=1e-6)
    # an ignored pixel (255) changes nothing, however wrong its logits
    ignored = target.clone()
    ignored[0, 0, 0] = 255
    wild = logits.clone()
    wild[0, :, 0, 0] = torch.tensor([-30.0, 30.0])
    kept = torch.ones_like(target, dtype=torch.bool)
    kept[0, 0, 0] = False
    assert float(cross_entropy_term(wild, ignored)) == pytest.approx(math.log(2), rel=1e-6)
    assert float(dice_term(wild, ignored)) == pytest.approx(float(dice_term(logits, target, kept)))
    # perfect prediction of one class present: its Dice term vanishes, the absent class's too
    assert float(dice_term(confident(target, 2), target)) == pytest.approx(0.0, abs=1e-6)


def test_weights_and_total():
    targets = square_nucleus()
    generator = torch.Generator().manual_seed(0)
    outputs = {
        "np": torch.randn(1, 2, 16, 16, generator=generator),
        "hv": torch.randn(1, 2, 16, 16, generator=generator) * 0.3,
        "tp": torch.randn(1, 3, 16, 16, generator=generator),
    }
    plain = hovernet_loss(outputs, targets)
    terms = [plain[n] for n in ("np_ce", "np_dice", "hv_mse", "hv_msge", "tp_ce", "tp_dice")]
    assert float(plain["loss"]) == pytest.approx(float(sum(terms)), rel=1e-6)
    weighted = hovernet_loss(outputs, targets, {"hv_msge": 2.0, "tp_dice": 0.0})
    assert float(weighted["loss"]) == pytest.approx(
        float(plain["loss"] + plain["hv_msge"] - plain["tp_dice"]), rel=1e-6
    )
    original = loss_weights({"np": {"bce": 1, "dice": 1}, "hv": {"mse": 1, "msge": 2}})
    assert original == LossWeights(hv_msge=2.0)
    assert LossWeights().to_dict() == dict.fromkeys(
        ("np_ce", "np_dice", "hv_mse", "hv_msge", "tp_ce", "tp_dice"), 1.0
    )
    with pytest.raises(ValueError, match="unknown loss term"):
        loss_weights({"hv_sobel": 1})
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(np_ce=-1)
    with pytest.raises(ValueError, match="'tp' map"):
        hovernet_loss(outputs, {"np": targets["np"], "hv": targets["hv"]})
    with pytest.raises(ValueError, match=r"outside 0 \.\. 2"):
        hovernet_loss(outputs, {**targets, "tp": targets["tp"] * 2})
    with pytest.raises(ValueError, match="np target must hold"):
        hovernet_loss(outputs, {**targets, "np": targets["np"] * 3})
    with pytest.raises(ValueError, match="hv target"):
        hovernet_loss(outputs, {**targets, "hv": targets["hv"][:, :1]})


def synthetic_batch(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images with bright round nuclei, and stacked (NP, H, V, TP) targets at the input size."""
    images = np.full((2, 3, size, size), 0.9, dtype=np.float32)
    targets = np.zeros((2, 4, size, size), dtype=np.float32)
    rows, cols = np.mgrid[:size, :size]
    for n in range(2):
        centres = [(size // 2, size // 2 - 1 + n)] + [
            tuple(rng.integers(size // 2 - 10, size // 2 + 10, size=2)) for _ in range(5)
        ]
        for r, c in centres:
            inside = (rows - r) ** 2 + (cols - c) ** 2 <= 9
            for channel, value in enumerate((0.3, 0.1, 0.5)):
                images[n, channel][inside] = value
            targets[n, 0][inside] = 1
            targets[n, 1][inside] = np.clip((cols - c)[inside] / 3.0, -1, 1)
            targets[n, 2][inside] = np.clip((rows - r)[inside] / 3.0, -1, 1)
            targets[n, 3][inside] = 1 + n
    return images, targets


def test_training_steps_lower_the_loss():
    from digipath.models import MODELS

    torch.manual_seed(0)
    model = MODELS["hovernet"](
        mode="fast", types=3, freeze_encoder=True, learning_rate=1e-4, input_shape=(96, 96)
    ).build()
    images, targets = synthetic_batch(96, np.random.default_rng(0))
    losses = []
    for _ in range(4):  # phase 1 of the original recipe: encoder frozen, Adam 1e-4
        metrics = model.update(images, targets)  # targets at the input size: cropped to 4 x 4
        losses.append(metrics["loss"])
    assert set(metrics) >= {"loss", "accuracy", "errors", "np_ce", "hv_msge", "tp_dice"}
    assert metrics["errors"].shape == (2,) and 0 <= metrics["errors"].min() <= 1
    assert losses[-1] < losses[0], losses
    validated = model.validate(images, {"np": targets[:, 0], "hv": targets[:, 1:3],
                                        "tp": targets[:, 3]})  # fmt: skip
    assert math.isfinite(validated["loss"])
    predicted = model.predict(images[:1])
    assert predicted["np"].shape == (1, 2, 4, 4) and predicted["tp"].shape == (1, 3, 4, 4)
    assert np.allclose(predicted["np"].sum(axis=1), 1, atol=1e-5)
    assert predicted["hv"].shape == (1, 2, 4, 4)
    assert predicted["predictions"].shape == (1, 7, 4, 4)
