"""ResNet: the standard architecture (torchvision's parameter counts), shapes, training, checks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from digipath.models.networks import ResNet
from digipath.models.networks.resnet import BasicBlock, Bottleneck


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    "layers, parameters",
    [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160)],
)
def test_parameter_counts_match_torchvision(layers: int, parameters: int) -> None:
    assert count_parameters(ResNet(classes=1000, layers=layers)) == parameters


def test_blocks_per_stage() -> None:
    net18, net50 = ResNet(layers=18, width=8), ResNet(layers=50, width=8)
    stages = ("layer1", "layer2", "layer3", "layer4")
    assert [len(getattr(net18, s)) for s in stages] == [2, 2, 2, 2]
    assert [len(getattr(net50, s)) for s in stages] == [3, 4, 6, 3]
    assert all(isinstance(b, BasicBlock) for s in stages for b in getattr(net18, s))
    assert all(isinstance(b, Bottleneck) for s in stages for b in getattr(net50, s))
    assert net50.fc.in_features == 8 * 8 * 4


@pytest.mark.parametrize(
    "options, shape",
    [
        ({"classes": 3}, (2, 3, 64, 64)),
        ({"classes": 2, "in_channels": 1, "width": 16}, (2, 1, 48, 80)),
        ({"classes": 5, "width": 8}, (1, 3, 16, 16)),
    ],
)
def test_resnet18_output_shape(options: dict, shape: tuple[int, ...]) -> None:
    net = ResNet(layers=18, **options).eval()
    with torch.no_grad():
        output = net(torch.randn(*shape))
    assert output.shape == (shape[0], options["classes"])
    assert output.dtype == torch.float32


def test_resnet50_forward() -> None:
    net = ResNet(classes=4, layers=50).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 4)


def test_gradients_and_determinism() -> None:
    torch.manual_seed(0)
    net = ResNet(classes=3, layers=18, width=8)
    net.train()
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    output = net(torch.randn(4, 3, 64, 64))
    (output - torch.randn_like(output)).pow(2).mean().backward()
    with torch.no_grad():  # one plain SGD step
        for p in net.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all()
            p -= 0.1 * p.grad
    for name, p in net.named_parameters():
        assert not torch.equal(before[name], p.detach()), f"{name} did not change"
    x = torch.randn(2, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_config_rebuilds_the_network() -> None:
    net = ResNet(classes=7, layers=34, in_channels=4, width=8)
    rebuilt = ResNet(**json.loads(json.dumps(net.config)))
    rebuilt.load_state_dict(net.state_dict())
    assert rebuilt.config == {"classes": 7, "layers": 34, "in_channels": 4, "width": 8}


@pytest.mark.parametrize(
    "options, argument, valid",
    [
        ({"layers": 19}, "layers", "18, 34, 50, 101, 152"),
        ({"layers": "18"}, "layers", "18, 34, 50, 101, 152"),
        ({"classes": 0}, "classes", ">= 1"),
        ({"width": 0}, "width", ">= 1"),
        ({"in_channels": 1.5}, "in_channels", ">= 1"),
    ],
)
def test_bad_arguments(options: dict, argument: str, valid: str) -> None:
    with pytest.raises(ValueError) as error:
        ResNet(**options)
    assert argument in str(error.value)
    assert valid in str(error.value)


def test_wrong_channels_raise() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ResNet(width=8)(torch.zeros(1, 1, 32, 32))
