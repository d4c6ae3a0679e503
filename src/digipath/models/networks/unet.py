"""U-Net for dense segmentation of patches (Ronneberger et al., 2015), in plain :mod:`torch.nn`.

The network has ``depth`` poolings. Level ``i`` (``0`` at the top) has ``2 ** (branching_factor
+ i)`` filters; every level applies two 3x3 convolutions (each followed by batch normalisation
when enabled, and a ReLU) on the contracting and on the expanding path, the bottom level once.
The expanding path upsamples, halves the channels, concatenates the skip connection of the same
level and convolves; a final 1x1 convolution maps to the classes.

Sizes
-----
With ``padding="valid"`` no convolution pads, so the output is smaller than the input and the
skip connections are centre-cropped to the upsampled map. For an input of ``s`` pixels along an
axis for which every pooling divides exactly (``(s + 4)`` a multiple of ``2 ** depth``), the
output has ``s - 12 * 2 ** depth + 8`` pixels: the original U-Net (``depth=4``) maps 572 to 388.
With ``padding="same"`` every convolution pads by one pixel and the output has the input's size;
an input divisible by ``2 ** depth`` needs no correction, otherwise the upsampled maps are
zero-padded at the bottom/right to the size of their skip connection.

:func:`unet_output_shape` and :func:`unet_valid_input_shape` (and the methods of the same name on
:class:`UNet`) compute these sizes arithmetically, without running the network.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from digipath.models.networks._checks import (
    Shape,
    check_bool,
    check_choice,
    check_input,
    check_int,
    check_probability,
    check_shape,
)

PADDINGS = ("valid", "same")
"""Accepted values of ``padding``."""

DOWNSAMPLINGS = ("maxpool", "strided")
"""Accepted values of ``downsampling``."""

UPSAMPLINGS = ("transposed", "interpolate")
"""Accepted values of ``upsampling``."""

_VALID_LOSS = 4
"""Pixels one level's two unpadded 3x3 convolutions remove along an axis."""


# --------------------------------------------------------------------------------------------
# Size arithmetic


def _trace(size: int, depth: int, padding: str) -> int | None:
    """Output size along one axis for input ``size``, or ``None`` if some map would be empty."""
    loss = _VALID_LOSS if padding == "valid" else 0
    current = size
    for _ in range(depth):
        current -= loss
        if current < 2:  # the 2x2 downsampling needs two pixels
            return None
        current //= 2
    current -= loss  # bottom level
    if current < 1:
        return None
    if padding == "same":
        return size
    for _ in range(depth):
        current = 2 * current - loss
        if current < 1:
            return None
    return current


def _is_exact(size: int, depth: int, padding: str) -> bool:
    """Whether every downsampling of an input of ``size`` pixels divides exactly."""
    loss = _VALID_LOSS if padding == "valid" else 0
    current = size
    for _ in range(depth):
        current -= loss
        if current < 2 or current % 2:
            return False
        current //= 2
    return _trace(size, depth, padding) is not None


def _check_sizes(depth: Any, padding: Any) -> tuple[int, str]:
    return check_int("depth", depth, 1), check_choice("padding", padding, PADDINGS)


def unet_output_shape(input_shape: Shape, depth: int = 4, padding: str = "valid") -> Shape:
    """Spatial output size of a :class:`UNet` for an input of ``input_shape`` pixels.

    Parameters
    ----------
    input_shape
        Input size ``(rows, cols)`` in pixels.
    depth
        Number of downsamplings of the network.
    padding
        ``"valid"`` or ``"same"``, as for :class:`UNet`.

    Returns
    -------
    tuple of int
        Output size ``(rows, cols)`` in pixels, as a forward pass produces it (downsampling
        floors odd sizes).

    Raises
    ------
    ValueError
        If an argument is invalid or the input is too small for the network (some feature map
        would be empty).
    """
    rows, cols = check_shape("input_shape", input_shape)
    depth, padding = _check_sizes(depth, padding)
    output = tuple(_trace(size, depth, padding) for size in (rows, cols))
    if output[0] is None or output[1] is None:
        smallest = unet_valid_input_shape((1, 1), depth, padding)[0]
        raise ValueError(
            f"input_shape {(rows, cols)} is too small for a U-Net of depth {depth} with "
            f"padding={padding!r}: the smallest exact input size is {smallest} pixels"
        )
    return output[0], output[1]


def unet_valid_input_shape(shape: Shape, depth: int = 4, padding: str = "valid") -> Shape:
    """The smallest input size ``>= shape`` for which every downsampling divides exactly.

    For such inputs no row or column is dropped by a downsampling, skip connections are cropped
    symmetrically (``padding="valid"``) or not at all (``padding="same"``), and the output is
    non-empty.

    Parameters
    ----------
    shape
        Wanted input size ``(rows, cols)`` in pixels.
    depth
        Number of downsamplings of the network.
    padding
        ``"valid"`` (exact sizes are those with ``(size + 4)`` a multiple of ``2 ** depth``) or
        ``"same"`` (multiples of ``2 ** depth``).

    Returns
    -------
    tuple of int
        Input size ``(rows, cols)`` in pixels, each at least the one asked for.
    """
    wanted = check_shape("shape", shape)
    depth, padding = _check_sizes(depth, padding)
    result = []
    for size in wanted:
        while not _is_exact(size, depth, padding):
            size += 1
        result.append(size)
    return result[0], result[1]


# --------------------------------------------------------------------------------------------
# Layers


def _centre_crop(tensor: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The centre ``(rows, cols)`` region of an ``(N, C, H, W)`` tensor."""
    top = (tensor.shape[2] - rows) // 2
    left = (tensor.shape[3] - cols) // 2
    return tensor[:, :, top : top + rows, left : left + cols]


class _LevelBlock(nn.Module):
    """Two 3x3 convolutions (+ batch norm) + ReLU, an optional residual skip and dropout."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        padding: int,
        batch_norm: bool,
        residual: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=not batch_norm)
        self.norm1 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=padding, bias=not batch_norm)
        self.norm2 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.projection = nn.Conv2d(in_channels, out_channels, 1) if residual else None
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        if self.projection is not None:
            y = y + _centre_crop(self.projection(x), y.shape[2], y.shape[3])
        return self.dropout(F.relu(y))


# --------------------------------------------------------------------------------------------
# Network


class UNet(nn.Module):
    """U-Net returning per-pixel class logits.

    Parameters
    ----------
    in_channels
        Channels ``C`` of the input (3 for RGB).
    classes
        Number of output channels (classes).
    depth
        Number of downsamplings (levels below the top), at least 1.
    branching_factor
        The top level has ``2 ** branching_factor`` filters; each level below doubles them.
    batch_norm
        Batch normalisation after every 3x3 convolution (the convolutions then have no bias).
    dropout_layers
        Number of the deepest levels, counted from the bottom (``0 .. depth + 1``), whose blocks
        end with ``nn.Dropout2d(dropout_probability)``: 1 is the bottom block only, 2 adds the
        contracting and expanding blocks of the level above, and so on.
    dropout_probability
        Probability of zeroing a channel in those dropout layers, in ``[0, 1)``.
    padding
        ``"valid"``: unpadded convolutions, output smaller than the input, skip connections
        centre-cropped; ``"same"``: convolutions padded by one pixel, output the size of the input.
    residual
        Add a 1x1-convolution projection of each block's input to the output of its two
        convolutions (before the last ReLU; centre-cropped with ``padding="valid"``).
    downsampling
        ``"maxpool"`` (2x2 max-pooling) or ``"strided"`` (a learned 2x2 convolution with stride 2,
        same channels); both halve the size, flooring odd sizes.
    upsampling
        ``"transposed"`` (2x2 transposed convolution with stride 2, halving the channels) or
        ``"interpolate"`` (bilinear x2 upsampling then a 1x1 convolution halving the channels);
        both exactly double the size.

    Notes
    -----
    Input ``(N, in_channels, H, W)`` float32; output ``(N, classes, H', W')`` raw logits with
    ``(H', W') = self.output_shape((H, W))``. With ``padding="valid"`` and exact inputs
    (``(H + 4)`` and ``(W + 4)`` multiples of ``2 ** depth``, see :meth:`valid_input_shape`)
    ``H' = H - 12 * 2 ** depth + 8`` (572 -> 388 for ``depth=4``); with ``padding="same"``
    ``(H', W') = (H, W)`` for any input of at least ``2 ** depth`` pixels.

    The constructor arguments are plain JSON values; :attr:`config` returns them, so that
    ``UNet(**net.config)`` rebuilds the architecture.
    """

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 2,
        depth: int = 4,
        branching_factor: int = 5,
        batch_norm: bool = False,
        dropout_layers: int = 0,
        dropout_probability: float = 0.5,
        padding: str = "valid",
        residual: bool = False,
        downsampling: str = "maxpool",
        upsampling: str = "transposed",
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, 1)
        classes = check_int("classes", classes, 1)
        depth = check_int("depth", depth, 1)
        branching_factor = check_int("branching_factor", branching_factor, 0)
        batch_norm = check_bool("batch_norm", batch_norm)
        dropout_layers = check_int("dropout_layers", dropout_layers, 0, depth + 1)
        dropout_probability = check_probability("dropout_probability", dropout_probability)
        padding = check_choice("padding", padding, PADDINGS)
        residual = check_bool("residual", residual)
        downsampling = check_choice("downsampling", downsampling, DOWNSAMPLINGS)
        upsampling = check_choice("upsampling", upsampling, UPSAMPLINGS)
        self._config: dict[str, Any] = {
            "in_channels": in_channels,
            "classes": classes,
            "depth": depth,
            "branching_factor": branching_factor,
            "batch_norm": batch_norm,
            "dropout_layers": dropout_layers,
            "dropout_probability": dropout_probability,
            "padding": padding,
            "residual": residual,
            "downsampling": downsampling,
            "upsampling": upsampling,
        }
        self.in_channels = in_channels
        self.depth = depth
        self.padding = padding

        filters = [2 ** (branching_factor + level) for level in range(depth + 1)]
        pad = 1 if padding == "same" else 0

        def block(level: int, in_ch: int) -> _LevelBlock:
            # Level ``depth`` is the bottom; it is the first of the ``dropout_layers`` levels.
            rate = dropout_probability if depth - level < dropout_layers else 0.0
            return _LevelBlock(in_ch, filters[level], pad, batch_norm, residual, rate)

        self.encoders = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        previous = in_channels
        for level in range(depth):
            self.encoders.append(block(level, previous))
            previous = filters[level]
            if downsampling == "maxpool":
                self.downsamplers.append(nn.MaxPool2d(2))
            else:
                self.downsamplers.append(nn.Conv2d(previous, previous, 2, stride=2))
        self.bottom = block(depth, previous)

        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(depth):
            below, here = filters[level + 1], filters[level]
            if upsampling == "transposed":
                self.upsamplers.append(nn.ConvTranspose2d(below, here, 2, stride=2))
            else:
                self.upsamplers.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                        nn.Conv2d(below, here, 1),
                    )
                )
            self.decoders.append(block(level, 2 * here))
        self.head = nn.Conv2d(filters[0], classes, 1)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (plain JSON values): ``UNet(**config)`` rebuilds the net."""
        return dict(self._config)

    def output_shape(self, input_shape: Shape) -> Shape:
        """Output size ``(rows, cols)`` in pixels for an input of ``input_shape`` pixels.

        See :func:`unet_output_shape`; raises ValueError for inputs too small for the network.
        """
        return unet_output_shape(input_shape, self.depth, self.padding)

    def valid_input_shape(self, shape: Shape) -> Shape:
        """The smallest input size ``>= shape`` whose downsamplings all divide exactly.

        See :func:`unet_valid_input_shape`.
        """
        return unet_valid_input_shape(shape, self.depth, self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits ``(N, classes, H', W')`` of an ``(N, in_channels, H, W)`` batch."""
        check_input("UNet", x, self.in_channels)
        self.output_shape((x.shape[2], x.shape[3]))  # raises ValueError if too small
        skips = []
        for encoder, downsample in zip(self.encoders, self.downsamplers, strict=True):
            x = encoder(x)
            skips.append(x)
            x = downsample(x)
        x = self.bottom(x)
        for level in reversed(range(self.depth)):
            x = self.upsamplers[level](x)
            skip = skips[level]
            if self.padding == "valid":
                skip = _centre_crop(skip, x.shape[2], x.shape[3])
            else:  # floored odd sizes: pad the upsampled map at the bottom/right
                x = F.pad(x, (0, skip.shape[3] - x.shape[3], 0, skip.shape[2] - x.shape[2]))
            x = self.decoders[level](torch.cat([skip, x], dim=1))
        return self.head(x)
