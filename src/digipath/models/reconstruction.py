"""Reconstruction information: how a network's output grid lies on its input.

Whole-slide inference tiles a slide, runs the network on each tile and stitches the outputs;
training crops label maps to the output of valid-padded networks. Both need, for an input of
``(rows, cols)`` pixels, the output shape, how many input pixels are lost on each side and how
many input pixels one output pixel stands for. :func:`reconstruction_info` measures them from
the network itself, by forward passes on zeros, so any fully convolutional network works:

* the output shape at the input shape;
* the downsampling (input pixels per output pixel) from the change of the output shape when the
  input grows by 128 pixels per axis;
* the lost border ``input - output * downsampling``, split evenly between the two sides (the
  extra pixel, if odd, at the bottom/right).

The split assumes the network is symmetric (each output pixel's receptive field is centred on
it), which holds for every network digipath ships (U-Net, NatureNet); a model whose network is
not can override :meth:`ModelBase.reconstruction_info`. A network whose output size does not
follow its input (a classifier with global pooling) gets ``downsampling`` ``None``: its output
describes the whole input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

GROWTH = 128
"""Input pixels per axis added to measure the downsampling (a multiple of any stride up to
128, i.e. up to seven 2x poolings)."""


@dataclass(frozen=True)
class ReconstructionInfo:
    """Where a network's output lies on its input; all sizes in input pixels, (row, col) order.

    Attributes
    ----------
    input_shape
        ``(rows, cols)`` of the input.
    output_shape
        ``(rows, cols)`` of the output (1 x 1, or ``()`` for a classifier without spatial
        output).
    lost
        ``(top, bottom, left, right)``: input pixels not covered by the output grid per side.
    downsampling
        ``(rows, cols)`` input pixels per output pixel, or ``None`` when the output does not
        follow the input size (global pooling).
    """

    input_shape: tuple[int, int]
    output_shape: tuple[int, ...]
    lost: tuple[int, int, int, int]
    downsampling: tuple[float, float] | None

    @property
    def offset(self) -> tuple[int, int]:
        """``(top, left)`` crop offset of the output's first pixel block in the input."""
        return self.lost[0], self.lost[2]

    @property
    def valid_shape(self) -> tuple[int, int]:
        """The ``(rows, cols)`` of input covered by the output (input minus the lost border)."""
        top, bottom, left, right = self.lost
        return self.input_shape[0] - top - bottom, self.input_shape[1] - left - right

    def to_dict(self) -> dict:
        """JSON-serialisable form (for model files)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ReconstructionInfo:
        """Inverse of :meth:`to_dict`."""
        downsampling = values.get("downsampling")
        return cls(
            tuple(values["input_shape"]),
            tuple(values["output_shape"]),
            tuple(values["lost"]),
            None if downsampling is None else tuple(downsampling),
        )


def _output_shape(network: nn.Module, channels: int, shape: tuple[int, int], device) -> tuple:
    probe = torch.zeros((1, channels, *shape), device=device)
    output = network(probe)
    return tuple(output.shape[2:])


@torch.no_grad()
def reconstruction_info(
    network: nn.Module, input_shape: tuple[int, int], channels: int
) -> ReconstructionInfo:
    """Measure the :class:`ReconstructionInfo` of ``network`` for ``input_shape``.

    Parameters
    ----------
    network
        A module mapping (N, C, H, W) to (N, K, h, w) or (N, K).
    input_shape
        ``(rows, cols)`` in pixels.
    channels
        Input channels ``C``.

    Raises
    ------
    ValueError
        When the network cannot run on ``input_shape`` (too small for its poolings).
    """
    rows, cols = int(input_shape[0]), int(input_shape[1])
    training = network.training
    network.eval()
    try:
        device = next(network.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    try:
        try:
            first = _output_shape(network, channels, (rows, cols), device)
        except RuntimeError as error:
            raise ValueError(
                f"the network cannot run on a {rows} x {cols} input: {error}"
            ) from None
        if len(first) != 2:
            return ReconstructionInfo((rows, cols), first, (0, 0, 0, 0), None)
        second = _output_shape(network, channels, (rows + GROWTH, cols + GROWTH), device)
    finally:
        network.train(training)
    grown = (second[0] - first[0], second[1] - first[1])
    if grown == (0, 0):
        return ReconstructionInfo((rows, cols), first, (0, 0, 0, 0), None)
    downsampling = (GROWTH / grown[0], GROWTH / grown[1])
    lost_rows = rows - first[0] * downsampling[0]
    lost_cols = cols - first[1] * downsampling[1]
    top, left = int(lost_rows // 2), int(lost_cols // 2)
    bottom, right = round(lost_rows - top), round(lost_cols - left)
    return ReconstructionInfo((rows, cols), first, (top, bottom, left, right), downsampling)
