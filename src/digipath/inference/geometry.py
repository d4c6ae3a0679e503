"""Tile geometry of whole-slide inference, derived once from the model.

A network maps an input tile of ``tile x tile`` pixels to an output that covers the tile minus a
lost border (valid padding) at ``downsampling`` input pixels per output pixel. The slide's
output is assembled from *output blocks* of ``extent`` pixels (the covered part of a tile, at
the input spacing) laid every ``stride`` pixels:

* valid-padded networks: ``extent = tile - lost``, ``stride = extent``; the input tile of the
  block at ``(row, col)`` starts at ``(row - top, col - left)``, so the first tiles start
  outside the image and the output covers its borders;
* same-padded networks may overlap: ``stride = extent - overlap``, and the overlapping outputs
  are blended with a window (linear ramp or Gaussian) that falls towards the block edges.

All sizes are in pixels at the processing spacing, (row, col) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from digipath.errors import ModelError
from digipath.models.reconstruction import ReconstructionInfo

BLENDINGS = ("linear", "gaussian")


@dataclass(frozen=True)
class TileGeometry:
    """Where input tiles and output blocks lie.

    Attributes
    ----------
    tile
        Input tile side (pixels).
    extent
        Output block side at the input spacing (pixels).
    stride
        Distance between consecutive blocks (pixels).
    offset
        ``(top, left)``: input tile start relative to its block start.
    output_shape
        The network's output shape for one tile (``(rows, cols)``).
    downsampling
        Input pixels per output pixel (1 for U-Nets).
    """

    tile: int
    extent: int
    stride: int
    offset: tuple[int, int]
    output_shape: tuple[int, int]
    downsampling: float

    @property
    def overlap(self) -> int:
        """Pixels shared by neighbouring blocks."""
        return self.extent - self.stride

    def blocks(self, size: int) -> int:
        """Number of blocks along an axis of ``size`` pixels."""
        if size <= self.extent:
            return 1
        return 1 + math.ceil((size - self.extent) / self.stride)

    def window(self, blending: str = "linear") -> np.ndarray:
        """(extent, extent) float32 blending weights (all ones without overlap)."""
        if self.overlap == 0:
            return np.ones((self.extent, self.extent), np.float32)
        if blending not in BLENDINGS:
            raise ValueError(f"blending must be one of {BLENDINGS}, got {blending!r}")
        positions = np.arange(self.extent, dtype=np.float64) + 0.5
        distance = np.minimum(positions, self.extent - positions)  # to the nearest edge
        if blending == "linear":
            profile = np.clip(distance / self.overlap, 1e-3, 1.0)
        else:
            sigma = self.extent / 8
            profile = np.exp(-0.5 * ((positions - self.extent / 2) / sigma) ** 2)
            profile = np.maximum(profile, 1e-3)
        return np.outer(profile, profile).astype(np.float32)


def tile_geometry(info: ReconstructionInfo, overlap: int = 0) -> TileGeometry:
    """The :class:`TileGeometry` of a network's reconstruction info for one input tile.

    Parameters
    ----------
    info
        :meth:`ModelBase.reconstruction_info` at the input tile shape (square).
    overlap
        Pixels of overlap between blocks (same-padded networks only; < extent / 2).
    """
    rows, cols = info.input_shape
    if rows != cols:
        raise ModelError(f"inference tiles are square, got {rows} x {cols}")
    if info.downsampling is None:
        raise ModelError(
            "the network does not map tiles to dense outputs (global pooling): it classifies "
            "patches and cannot be applied as a fully convolutional network"
        )
    top, bottom, left, right = info.lost
    extent = rows - top - bottom
    if extent <= 0 or cols - left - right != extent:
        raise ModelError(f"the network leaves no valid output on a {rows}-pixel tile")
    if overlap and info.lost != (0, 0, 0, 0):
        raise ModelError("overlap and blending need a same-padded network (no lost border)")
    if not 0 <= overlap < extent / 2:
        raise ModelError(f"overlap must be in [0, {extent / 2:g}), got {overlap}")
    return TileGeometry(
        tile=rows, extent=extent, stride=extent - overlap, offset=(top, left),
        output_shape=tuple(info.output_shape), downsampling=float(info.downsampling[0]),
    )  # fmt: skip
