"""rescale_image: finer and coarser spacings and template shapes, independent of the banding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from digipath.io import ImageReader, ImageWriter
from digipath.io.rescale import rescale_image


def write(path, array, spacing=1.0):
    array = array if array.ndim == 3 else array[:, :, None]
    with ImageWriter(path, array.shape[:2], spacing=spacing, channels=array.shape[2],
                     compression="lzw", interpolation="nearest") as writer:  # fmt: skip
        writer.fill(array)
    return str(path)


def read(path):
    with ImageReader(path) as reader:
        return reader.read(reader.spacings[0], 0, 0, *reader.shapes[0]), reader.spacings[0]


@pytest.mark.parametrize("spacing", [0.5, 2.5])
def test_labels_resample_by_nearest_like_one_remap(tmp_path, spacing):
    labels = np.random.default_rng(0).integers(0, 4, (1100, 300), dtype=np.uint8)
    source = write(tmp_path / "labels.tif", labels)
    out = rescale_image(source, tmp_path / "out.tif", spacing=spacing)
    result, recorded = read(out)
    rows, cols = round(1100 / spacing), round(300 / spacing)
    assert result.shape == (rows, cols, 1) and recorded == pytest.approx(spacing, rel=1e-3)
    ys = ((np.arange(rows) + 0.5) * (1100 / rows) - 0.5).astype(np.float32)
    xs = ((np.arange(cols) + 0.5) * (300 / cols) - 0.5).astype(np.float32)
    expected = cv2.remap(labels, np.broadcast_to(xs, (rows, cols)).copy(),
                         np.broadcast_to(ys[:, None], (rows, cols)).copy(), cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    np.testing.assert_array_equal(result[..., 0], expected)
    assert set(np.unique(result)) <= {0, 1, 2, 3}


def test_a_template_shape_and_linear_interpolation(tmp_path):
    ramp = np.tile(np.linspace(0, 250, 64, dtype=np.float32), (40, 1)).astype(np.uint8)
    source = write(tmp_path / "ramp.tif", ramp)
    out = rescale_image(source, tmp_path / "out.tif", shape=(80, 128), interpolation="linear")
    result, _ = read(out)
    assert result.shape == (80, 128, 1)
    assert np.all(np.diff(result[0, :, 0].astype(int)) >= 0)  # still a ramp
    with pytest.raises(ValueError, match="interpolation"):
        rescale_image(source, tmp_path / "x.tif", spacing=2.0, interpolation="cubic")
