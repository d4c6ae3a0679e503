"""ResNet (He et al., 2016) in plain :mod:`torch.nn`, layer for layer the standard architecture.

A 7x7 stride-2 stem convolution with batch norm and ReLU, a 3x3 stride-2 max-pooling, four
stages of residual blocks (the first block of stages 2-4 downsamples by 2 and projects its skip
connection with a 1x1 convolution and batch norm), a global average pooling and a fully connected
layer. Bottleneck blocks downsample in their 3x3 convolution ("ResNet v1.5", as torchvision), so
the parameter counts with 1000 classes are torchvision's: 11,689,512 for ResNet-18 and
25,557,032 for ResNet-50.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from digipath.models.networks._checks import check_choice, check_input, check_int


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; the residual block of ResNet-18 and -34."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, width * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with batch norm; ResNet-50 and deeper."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The 1x1 convolution + batch norm skip of a block that changes size or channels."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


ARCHITECTURES: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
"""Block type and blocks per stage for each accepted ``layers``."""


class ResNet(nn.Module):
    """ResNet image classifier returning class logits.

    Parameters
    ----------
    classes
        Number of outputs (classes).
    layers
        Depth of the network: 18 or 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
    in_channels
        Channels ``C`` of the input (3 for RGB).
    width
        Filters of the stem and the first stage (64 in the standard network); stages 2-4 have
        2, 4 and 8 times as many (times 4 at the output of bottleneck blocks).

    Notes
    -----
    Input ``(N, in_channels, H, W)`` float32, any size of at least 1 pixel (the network
    downsamples by 32 before the global average pooling: 224 gives a 7x7 map); output
    ``(N, classes)`` raw logits. Convolutions are initialised with Kaiming normal (fan out),
    batch norms with weight 1 and bias 0, as in torchvision.

    The constructor arguments are plain JSON values; :attr:`config` returns them, so that
    ``ResNet(**net.config)`` rebuilds the architecture.
    """

    def __init__(
        self, classes: int = 2, layers: int = 18, in_channels: int = 3, width: int = 64
    ) -> None:
        super().__init__()
        classes = check_int("classes", classes, 1)
        layers = check_choice("layers", layers, tuple(ARCHITECTURES))
        in_channels = check_int("in_channels", in_channels, 1)
        width = check_int("width", width, 1)
        self._config: dict[str, Any] = {
            "classes": classes,
            "layers": layers,
            "in_channels": in_channels,
            "width": width,
        }
        self.in_channels = in_channels
        block, counts = ARCHITECTURES[layers]

        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        previous = width
        for stage, count in enumerate(counts):
            stage_width = width * 2**stage
            blocks = []
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(block(previous, stage_width, stride))
                previous = stage_width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (plain JSON values): ``ResNet(**config)`` rebuilds the net."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)`` of an ``(N, in_channels, H, W)`` batch."""
        check_input("ResNet", x, self.in_channels)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
