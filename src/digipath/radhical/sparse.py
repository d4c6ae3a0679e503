"""A sparse fully convolutional pass: a valid network run only over the regions to compute.

A network with unpadded ("valid") convolutions and no downsampling, such as
:class:`~digipath.models.networks.LevelNet`, gives each output pixel from its own input window
alone, so *any* partition of the pixels to compute into rectangles gives exactly the same
probabilities. The cascade exploits this: instead of running whole tiles that contain a few
pixels to compute, :func:`compute_regions` covers the pixels with rectangles built from a grid
of small cells (runs of marked cells in a row of cells, stacked while the next row has the same
run, each shrunk to the bounding box of its pixels), and :class:`RegionClassifier` runs the
network on each rectangle with its window margin (``s // 2`` pixels above and left, ``s // 2 -
1`` below and right for a window of ``s``): the work follows the compute map within a cell,
and the margins are paid once per rectangle rather than once per tile.

Outside the image the input is constant ``fill`` (white), as
:func:`~digipath.inference.apply_network` pads, so a region pass over every pixel gives
``apply_network``'s probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from digipath.data.batch_generator import to_channels_first
from digipath.errors import ModelError
from digipath.io import ImageReader

__all__ = ["RegionClassifier", "compute_regions"]


def compute_regions(
    compute: np.ndarray, cell: int = 32, max_size: int = 512
) -> list[tuple[int, int, int, int]]:
    """Rectangles ``(top, bottom, left, right)`` (pixels, end exclusive) covering ``compute``.

    Parameters
    ----------
    compute
        bool ``(rows, cols)``: the pixels to compute.
    cell
        Side of the grid cells (pixels) the rectangles are made of.
    max_size
        Longest rectangle side in pixels (bounds the network's memory per pass).

    Returns
    -------
    list
        Disjoint rectangles, each shrunk to the bounding box of its compute pixels; together
        they hold every compute pixel. None crosses a multiple of ``max_size`` columns (rounded
        down to whole cells), so that the image can be read in blocks of that width.
    """
    rows, cols = compute.shape
    if rows == 0 or cols == 0 or not compute.any():
        return []
    cell = max(1, int(cell))
    span = max(1, int(max_size) // cell)  # most cells per rectangle side
    cell_rows, cell_cols = -(-rows // cell), -(-cols // cell)
    padded = np.zeros((cell_rows * cell, cell_cols * cell), bool)
    padded[:rows, :cols] = compute
    marked = padded.reshape(cell_rows, cell, cell_cols, cell).any(axis=(1, 3))
    boxes: list[tuple[int, int, int, int]] = []
    open_runs: dict[tuple[int, int], int] = {}  # (first cell col, end cell col) -> first cell row

    def runs(row: np.ndarray) -> list[tuple[int, int]]:
        edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
        starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
        pieces = []
        for start, end in zip(starts, ends, strict=True):
            first = int(start)
            while first < end:  # split at multiples of max_size: no region crosses a block
                last = min(int(end), (first // span + 1) * span)
                pieces.append((first, last))
                first = last
        return pieces

    for index in range(cell_rows + 1):
        current = runs(marked[index]) if index < cell_rows else []
        still = {}
        for run in current:
            first_row = open_runs.get(run)
            if first_row is not None and index - first_row < span:
                still[run] = first_row
            else:
                still[run] = index
        for run, first_row in open_runs.items():
            if still.get(run) != first_row:
                boxes.append((first_row, index, run[0], run[1]))
        open_runs = still
    regions = []
    for r0, r1, c0, c1 in boxes:
        top, bottom = r0 * cell, min(rows, r1 * cell)
        left, right = c0 * cell, min(cols, c1 * cell)
        inside = compute[top:bottom, left:right]
        hit_rows = np.nonzero(inside.any(axis=1))[0]
        hit_cols = np.nonzero(inside.any(axis=0))[0]
        regions.append((top + int(hit_rows[0]), top + int(hit_rows[-1]) + 1,
                        left + int(hit_cols[0]), left + int(hit_cols[-1]) + 1))  # fmt: skip
    return regions


class RegionClassifier:
    """Quantised class probabilities of image regions from a valid, full-resolution network.

    Parameters
    ----------
    model
        A built :class:`~digipath.models.ModelBase` whose network keeps the resolution and has
        a fixed window (``model.module.input_size``, e.g. ``levelnet``).
    reader
        The slide.
    spacing
        The spacing (µm/px) the network runs at.
    tolerance
        Relative spacing tolerance.
    normalizer
        Applied to the uint8 input (default: the model file's, else ``x / 255``).
    fill
        Input value outside the image.
    """

    def __init__(
        self,
        model,
        reader: ImageReader,
        spacing: float,
        *,
        tolerance: float = 0.25,
        normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
        fill: float = 255,
    ) -> None:
        from digipath.inference.apply import _normalizer

        size = getattr(model.module, "input_size", None)
        if not isinstance(size, int):
            raise ModelError(
                f"model type {model.type!r}: region inference needs a valid network with a "
                "fixed window (input_size), such as levelnet"
            )
        info = model.reconstruction_info((size + 7, size + 7))
        if info.downsampling != (1.0, 1.0) or info.output_shape != (8, 8):
            raise ModelError(f"model type {model.type!r}: the network must keep the resolution")
        self.model = model
        self.reader = reader
        self.spacing = spacing
        self.tolerance = tolerance
        self.fill = fill
        self.before = info.lost[0], info.lost[2]
        self.after = info.lost[1], info.lost[3]
        self.normalise = _normalizer(model, normalizer)

    def margin_pixels(self, rows: int, cols: int) -> int:
        """Input pixels the network reads for a ``rows x cols`` region."""
        return (rows + self.before[0] + self.after[0]) * (cols + self.before[1] + self.after[1])

    def cut(self, block: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """The input of the region ``rows x cols`` (relative to a :meth:`read` block's origin)."""
        height = rows[1] - rows[0] + self.before[0] + self.after[0]
        width = cols[1] - cols[0] + self.before[1] + self.after[1]
        return block[:, :, rows[0] : rows[0] + height, cols[0] : cols[0] + width]

    def read(self, top: int, left: int, rows: int, cols: int) -> np.ndarray:
        """The normalised ``(1, C, H, W)`` float32 input of a region (with its margins)."""
        tile = self.reader.read(
            self.spacing, top - self.before[0], left - self.before[1],
            rows + self.before[0] + self.after[0], cols + self.before[1] + self.after[1],
            fill=self.fill, tolerance=self.tolerance,
        )  # fmt: skip
        return np.ascontiguousarray(self.normalise(to_channels_first(tile[None])), np.float32)

    @torch.inference_mode()
    def classify(self, prepared: np.ndarray) -> np.ndarray:
        """uint8 ``(rows, cols, K)`` probabilities (0-255) of a :meth:`read` input."""
        model = self.model
        network = model.module
        network.eval()
        x = torch.from_numpy(np.ascontiguousarray(prepared)).to(model.device, dtype=torch.float32)
        if model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(model.device.type, enabled=model.amp):
            logits = network(x)
        probabilities = torch.softmax(logits.float(), dim=1)[0]
        quantised = torch.clamp(torch.round(probabilities * 255), 0, 255).to(torch.uint8)
        return quantised.permute(1, 2, 0).contiguous().cpu().numpy()
