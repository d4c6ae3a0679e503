"""Patch classifiers: NatureNet (dense fully convolutional), FCN (global pooling) and CifarNet.

All take ``(N, C, H, W)`` float32 patches and return raw logits (no softmax):

:class:`NatureNet`
    valid 3x3 convolutions and max-poolings, then "dense" layers written as convolutions: a
    convolution whose kernel covers the whole remaining field and 1x1 convolutions. On its
    training patch size (``input_size``) it gives ``(N, classes, 1, 1)``; on a larger image a
    dense ``(N, classes, h, w)`` map of the same classifier slid with a stride of
    ``2 ** depth`` pixels.
:class:`FCN`
    same-padded convolution blocks, a 1x1 classifier convolution and global average pooling:
    ``(N, classes)`` for any input size.
:class:`CifarNet`
    the Caffe ``cifar10_quick`` network used by RADHicaL, for 32x32 patches: ``(N, classes)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from digipath.models.networks._checks import (
    Shape,
    check_bool,
    check_input,
    check_int,
    check_probability,
    check_shape,
)

# --------------------------------------------------------------------------------------------
# NatureNet


def _naturenet_field(size: int, depth: int) -> int:
    """Size of the feature map left after ``depth`` (3x3 valid conv + 2x2 pool) blocks."""
    for _ in range(depth):
        size = (size - 2) // 2
    return size


class NatureNet(nn.Module):
    """Fully convolutional patch classifier giving a dense map of logits on large inputs.

    ``depth`` blocks of a 3x3 unpadded convolution (+ batch norm) + ReLU + 2x2 max-pooling, block
    ``i`` with ``2 ** (branching_factor + i)`` filters, reduce a patch of ``input_size`` pixels to
    a field of ``f`` pixels (each block maps ``s`` to ``(s - 2) // 2``). Three "dense" layers
    follow, written as convolutions so that the net slides over larger inputs: an ``f x f``
    convolution covering the whole field and a 1x1 convolution, both with
    ``2 ** (branching_factor + depth)`` filters and a ReLU, then a 1x1 convolution to the classes.

    Parameters
    ----------
    in_channels
        Channels ``C`` of the input (3 for RGB).
    classes
        Number of output channels (classes).
    branching_factor
        The first block has ``2 ** branching_factor`` filters; each block doubles them.
    depth
        Number of convolution + pooling blocks, at least 1.
    batch_norm
        Batch normalisation after each 3x3 convolution (the convolutions then have no bias).
    dropout_layers
        Number of the two hidden dense layers, counted from the last, followed by
        ``nn.Dropout(dropout_probability)``: 0, 1 or 2.
    dropout_probability
        Dropout probability, in ``[0, 1)``.
    input_size
        The training patch size in pixels (square patches): the smallest input for which the
        output is ``1 x 1``. At least :meth:`minimum_input_size` ``(depth)``
        (``3 * 2 ** depth - 2``: 22 pixels for ``depth=3``).

    Notes
    -----
    Input ``(N, in_channels, H, W)`` float32; output ``(N, classes, h, w)`` raw logits with
    ``(h, w) = self.output_shape((H, W))``: ``(1, 1)`` for ``H = W = input_size``. For inputs
    with ``H - input_size`` and ``W - input_size`` multiples of :attr:`output_stride`
    (``2 ** depth``; see :meth:`valid_input_shape`) ``h = (H - input_size) // 2 ** depth + 1``
    and output ``(i, j)`` equals the logits of the ``input_size`` patch whose top-left corner is
    at pixel ``(i * 2 ** depth, j * 2 ** depth)``.

    The constructor arguments are plain JSON values; :attr:`config` returns them, so that
    ``NatureNet(**net.config)`` rebuilds the architecture.
    """

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 2,
        branching_factor: int = 4,
        depth: int = 3,
        batch_norm: bool = False,
        dropout_layers: int = 0,
        dropout_probability: float = 0.5,
        input_size: int = 128,
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, 1)
        classes = check_int("classes", classes, 1)
        branching_factor = check_int("branching_factor", branching_factor, 0)
        depth = check_int("depth", depth, 1)
        batch_norm = check_bool("batch_norm", batch_norm)
        dropout_layers = check_int("dropout_layers", dropout_layers, 0, 2)
        dropout_probability = check_probability("dropout_probability", dropout_probability)
        input_size = check_int("input_size", input_size, self.minimum_input_size(depth))
        self._config: dict[str, Any] = {
            "in_channels": in_channels,
            "classes": classes,
            "branching_factor": branching_factor,
            "depth": depth,
            "batch_norm": batch_norm,
            "dropout_layers": dropout_layers,
            "dropout_probability": dropout_probability,
            "input_size": input_size,
        }
        self.in_channels = in_channels
        self.depth = depth
        self.input_size = input_size

        layers: list[nn.Module] = []
        previous = in_channels
        for block in range(depth):
            width = 2 ** (branching_factor + block)
            layers.append(nn.Conv2d(previous, width, 3, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            previous = width
        self.features = nn.Sequential(*layers)

        field = _naturenet_field(input_size, depth)
        dense = 2 ** (branching_factor + depth)
        hidden: list[nn.Module] = [nn.Conv2d(previous, dense, field), nn.ReLU(inplace=True)]
        if dropout_layers >= 2:
            hidden.append(nn.Dropout(dropout_probability))
        hidden += [nn.Conv2d(dense, dense, 1), nn.ReLU(inplace=True)]
        if dropout_layers >= 1:
            hidden.append(nn.Dropout(dropout_probability))
        hidden.append(nn.Conv2d(dense, classes, 1))
        self.classifier = nn.Sequential(*hidden)

    @staticmethod
    def minimum_input_size(depth: int = 3) -> int:
        """The smallest ``input_size`` for a NatureNet of ``depth`` blocks: ``3 * 2**depth - 2``.

        It leaves a ``1 x 1`` field after the blocks (22 pixels for ``depth=3``).
        """
        depth = check_int("depth", depth, 1)
        return 3 * 2**depth - 2

    @property
    def output_stride(self) -> int:
        """Pixels of input between neighbouring outputs of the dense map: ``2 ** depth``."""
        return 2**self.depth

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (plain JSON values): ``NatureNet(**config)`` rebuilds it."""
        return dict(self._config)

    def output_shape(self, input_shape: Shape) -> Shape:
        """Output size ``(rows, cols)`` of the logit map for an input of ``input_shape`` pixels.

        ``(1, 1)`` for ``(input_size, input_size)``; raises ValueError for smaller inputs.
        """
        rows, cols = check_shape("input_shape", input_shape)
        if rows < self.input_size or cols < self.input_size:
            raise ValueError(
                f"input_shape {(rows, cols)} is smaller than the NatureNet input_size "
                f"{self.input_size} pixels"
            )
        field = _naturenet_field(self.input_size, self.depth)
        return (
            _naturenet_field(rows, self.depth) - field + 1,
            _naturenet_field(cols, self.depth) - field + 1,
        )

    def valid_input_shape(self, shape: Shape) -> Shape:
        """The smallest input size ``>= shape`` whose outputs lie on the exact patch grid.

        Each size is ``input_size + k * 2 ** depth`` pixels for the smallest ``k >= 0``.
        """
        stride = self.output_stride
        result = []
        for size in check_shape("shape", shape):
            steps = max(0, -(-(size - self.input_size) // stride))
            result.append(self.input_size + steps * stride)
        return result[0], result[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes, h, w)`` of an ``(N, in_channels, H, W)`` batch."""
        check_input("NatureNet", x, self.in_channels)
        self.output_shape((x.shape[2], x.shape[3]))  # raises ValueError if too small
        return self.classifier(self.features(x))


# --------------------------------------------------------------------------------------------
# FCN


class FCN(nn.Module):
    """Fully convolutional patch classifier with global average pooling.

    ``depth`` blocks of two 3x3 convolutions padded by one pixel (each + batch norm when
    enabled + ReLU), block ``i`` with ``2 ** (branching_factor + i)`` filters and a 2x2 max-pooling
    between consecutive blocks; then optional channel dropout, a 1x1 convolution to the classes
    and a global average over the remaining map.

    Parameters
    ----------
    in_channels
        Channels ``C`` of the input (3 for RGB).
    classes
        Number of outputs (classes).
    depth
        Number of convolution blocks, at least 1 (``depth - 1`` poolings).
    branching_factor
        The first block has ``2 ** branching_factor`` filters; each block doubles them.
    batch_norm
        Batch normalisation after every 3x3 convolution (the convolutions then have no bias).
    dropout_probability
        Probability of ``nn.Dropout2d`` before the classifier convolution, in ``[0, 1)``; 0 means
        no dropout layer.

    Notes
    -----
    Input ``(N, in_channels, H, W)`` float32 with ``H, W >= 2 ** (depth - 1)`` pixels (see
    :meth:`minimum_input_size`); output ``(N, classes)`` raw logits, for any such input size.

    The constructor arguments are plain JSON values; :attr:`config` returns them, so that
    ``FCN(**net.config)`` rebuilds the architecture.
    """

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 2,
        depth: int = 4,
        branching_factor: int = 5,
        batch_norm: bool = False,
        dropout_probability: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, 1)
        classes = check_int("classes", classes, 1)
        depth = check_int("depth", depth, 1)
        branching_factor = check_int("branching_factor", branching_factor, 0)
        batch_norm = check_bool("batch_norm", batch_norm)
        dropout_probability = check_probability("dropout_probability", dropout_probability)
        self._config: dict[str, Any] = {
            "in_channels": in_channels,
            "classes": classes,
            "depth": depth,
            "branching_factor": branching_factor,
            "batch_norm": batch_norm,
            "dropout_probability": dropout_probability,
        }
        self.in_channels = in_channels
        self.depth = depth

        layers: list[nn.Module] = []
        previous = in_channels
        for block in range(depth):
            if block > 0:
                layers.append(nn.MaxPool2d(2))
            width = 2 ** (branching_factor + block)
            for _ in range(2):
                layers.append(nn.Conv2d(previous, width, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True))
                previous = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(dropout_probability) if dropout_probability > 0 else None
        self.classifier = nn.Conv2d(previous, classes, 1)

    @staticmethod
    def minimum_input_size(depth: int = 4) -> int:
        """The smallest input size in pixels of an FCN of ``depth`` blocks: ``2 ** (depth - 1)``.

        Each of the ``depth - 1`` max-poolings halves the size (flooring odd sizes).
        """
        depth = check_int("depth", depth, 1)
        return 2 ** (depth - 1)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (plain JSON values): ``FCN(**config)`` rebuilds the net."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)`` of an ``(N, in_channels, H, W)`` batch."""
        check_input("FCN", x, self.in_channels)
        smallest = self.minimum_input_size(self.depth)
        if x.shape[2] < smallest or x.shape[3] < smallest:
            raise ValueError(
                f"FCN of depth {self.depth} needs inputs of at least {smallest} x {smallest} "
                f"pixels, got {tuple(x.shape[2:])}"
            )
        x = self.features(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return torch.flatten(F.adaptive_avg_pool2d(self.classifier(x), 1), 1)


# --------------------------------------------------------------------------------------------
# CifarNet


class CifarNet(nn.Module):
    """The small CIFAR-10 "quick" classifier (Caffe ``cifar10_quick``), as used by RADHicaL.

    ``conv 5x5/32 (pad 2) -> max-pool 3/2 -> ReLU -> conv 5x5/32 (pad 2) -> ReLU -> avg-pool 3/2
    -> conv 5x5/64 (pad 2) -> ReLU -> avg-pool 3/2 -> fully connected 64 -> fully connected
    classes``. Poolings round up like Caffe's (``ceil_mode``), so a 32x32 patch gives 16, 8 and 4
    pixel maps; an adaptive average pooling to 4x4 before the first fully connected layer (the
    identity for 32x32 inputs) lets other input sizes through. There is no nonlinearity between
    the two fully connected layers, as in Caffe's model.

    Parameters
    ----------
    in_channels
        Channels ``C`` of the input (3 for RGB).
    classes
        Number of outputs (classes).

    Notes
    -----
    Input ``(N, in_channels, H, W)`` float32, 32x32 pixels as trained (any size works);
    output ``(N, classes)`` raw logits. With 3 input channels and 10 classes the network has the
    145,578 parameters of the Caffe model.

    The constructor arguments are plain JSON values; :attr:`config` returns them, so that
    ``CifarNet(**net.config)`` rebuilds the architecture.
    """

    def __init__(self, in_channels: int = 3, classes: int = 2) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, 1)
        classes = check_int("classes", classes, 1)
        self._config: dict[str, Any] = {"in_channels": in_channels, "classes": classes}
        self.in_channels = in_channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(3, stride=2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(nn.Linear(64 * 4 * 4, 64), nn.Linear(64, classes))

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (plain JSON values): ``CifarNet(**config)`` rebuilds it."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)`` of an ``(N, in_channels, H, W)`` batch."""
        check_input("CifarNet", x, self.in_channels)
        return self.classifier(torch.flatten(self.features(x), 1))
