"""A HoVer-Net stand-in for the nuclei inference tests: it reads the ground truth.

The slide's pixels encode their own coordinates (R = row % 256, G = col % 256,
B = row // 256 + 16 * (col // 256)); :class:`CoordinateModel` decodes them from its input
window and returns the maps of the generated slide's ground truth there: NP = the nucleus mask,
HV = ``hv_maps`` of the whole instance map, TP = a type per nucleus. White padding decodes to
coordinates beyond the slide (background), mirrored padding to mirrored maps. The outputs are
thus exact and independent of the tiling, so the tests isolate the tiling and merging.
"""

from __future__ import annotations

import numpy as np

from digipath.nuclei.targets import hv_maps


class CoordinateModel:
    """A HoVer-Net stand-in (fast geometry, 256 -> 164) computing maps from coordinates."""

    mode = "fast"

    def __init__(self, instances: np.ndarray, types: int = 3) -> None:
        self.instances = instances
        self.hv = np.moveaxis(hv_maps(instances), 2, 0)
        self.types = types
        self.windows = 0
        self.signature = "coordinates"

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        code = np.rint(np.asarray(x) * 255).astype(np.int64)  # (N, 3, 256, 256)
        code = code[:, :, 46:-46, 46:-46]
        row = code[:, 0] + 256 * (code[:, 2] % 16)
        col = code[:, 1] + 256 * (code[:, 2] // 16)
        rows, cols = self.instances.shape
        inside = (row < rows) & (col < cols)
        row, col = np.minimum(row, rows - 1), np.minimum(col, cols - 1)
        labels = np.where(inside, self.instances[row, col], 0)
        fg = (labels > 0).astype(np.float32)
        hv = np.where(inside[:, None], self.hv[:, row, col].transpose(1, 0, 2, 3), 0)
        kind = np.where(labels > 0, 1 + labels % (self.types - 1), 0)
        tp = np.stack([(kind == k).astype(np.float32) for k in range(self.types)], axis=1)
        self.windows += len(x)
        return {"np": np.stack([1 - fg, fg], axis=1), "hv": hv.astype(np.float32), "tp": tp}


def coordinate_image(shape: tuple[int, int]) -> np.ndarray:
    row, col = np.mgrid[: shape[0], : shape[1]]
    return np.stack([row % 256, col % 256, row // 256 + 16 * (col // 256)], axis=2).astype(np.uint8)
