"""apply_network: seamless stitching, blending, mask skipping, resume, existing outputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from digipath.errors import ModelError
from digipath.inference import apply_network, tile_geometry
from digipath.io import ImageReader, ImageWriter
from digipath.models import model_class

SPACING = 0.5


def smooth_image(size: int, seed: int = 0) -> np.ndarray:
    """A (size, size, 3) uint8 image with structure at several scales."""
    rng = np.random.default_rng(seed)
    noise = rng.random((size, size, 3)).astype(np.float32)
    image = cv2.GaussianBlur(noise, (0, 0), 6) * 0.7 + cv2.GaussianBlur(noise, (0, 0), 1.5) * 0.3
    image = (image - image.min()) / np.ptp(image)
    return (image * 255).astype(np.uint8)


def write(path, array: np.ndarray, **options) -> str:
    array = array if array.ndim == 3 else array[:, :, None]
    with ImageWriter(path, array.shape[:2], spacing=SPACING, channels=array.shape[2],
                     compression="lzw", **options) as writer:  # fmt: skip
        writer.fill(array)
    return str(path)


def unet(padding: str, seed: int = 0):
    torch.manual_seed(seed)
    model = model_class("unet")(classes=3, depth=2, branching_factor=2, padding=padding)
    return model.build()


def read_back(path) -> np.ndarray:
    with ImageReader(path) as reader:
        rows, cols = reader.shapes[0]
        return reader.read(reader.spacings[0], 0, 0, rows, cols)


def whole_image_probabilities(model, image: np.ndarray, lost: int) -> np.ndarray:
    """The network on the whole image at once (padded white by the lost border)."""
    padded = np.pad(image, ((lost, lost), (lost, lost), (0, 0)), constant_values=255)
    x = torch.from_numpy((padded.astype(np.float32) / 255).transpose(2, 0, 1)[None])
    with torch.inference_mode():
        return torch.softmax(model.module.eval()(x), dim=1)[0].numpy()


def test_valid_padded_stitching_equals_the_whole_image_at_once(tmp_path):
    image = smooth_image(2000)
    slide = write(tmp_path / "slide.tif", image)
    model = unet("valid")
    lost = model.reconstruction_info((256, 256)).lost[0]
    assert lost == 20
    reference = whole_image_probabilities(model, image, lost)
    soft = apply_network(model, slide, tmp_path / "soft.tif", spacing=SPACING, tile_size=256,
                         soft=True, batch_size=8)  # fmt: skip
    assert soft.tiles == 10 * 10 and soft.computed == 100
    stitched = read_back(tmp_path / "soft.tif")
    assert stitched.shape == (2000, 2000, 3) and stitched.dtype == np.float32
    np.testing.assert_allclose(stitched, reference.transpose(1, 2, 0), atol=2e-5)
    apply_network(model, slide, tmp_path / "hard.tif", spacing=SPACING, tile_size=256)
    labels = read_back(tmp_path / "hard.tif")[..., 0]
    expected = reference.argmax(axis=0) + 1
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {1, 2, 3}
    assert np.mean(labels != expected) < 1e-4  # only exact ties may differ
    with ImageReader(tmp_path / "hard.tif") as reader:
        assert reader.spacings[0] == pytest.approx(SPACING)


def seam_ratio(probabilities: np.ndarray, stride: int) -> float:
    """Mean row-to-row change across block borders over the mean change elsewhere."""
    change = np.abs(np.diff(probabilities, axis=0)).mean(axis=(1, 2))
    borders = np.arange(stride - 1, len(change), stride)
    interior = np.setdiff1d(np.arange(len(change)), borders)
    return float(change[borders].mean() / change[interior].mean())


def test_same_padded_blending_leaves_no_seam(tmp_path):
    image = smooth_image(600, seed=3)
    slide = write(tmp_path / "slide.tif", image)
    model = unet("same", seed=1)
    plain = apply_network(model, slide, tmp_path / "plain.tif", spacing=SPACING, tile_size=128,
                          soft=True)  # fmt: skip
    blended = apply_network(model, slide, tmp_path / "blend.tif", spacing=SPACING,
                            tile_size=128, soft=True, overlap=32)  # fmt: skip
    assert blended.tiles > plain.tiles
    seams_plain = seam_ratio(read_back(tmp_path / "plain.tif"), 128)
    seams_blended = seam_ratio(read_back(tmp_path / "blend.tif"), 96)
    assert seams_blended < 1.3 < seams_plain


def test_tiles_outside_the_mask_are_never_read(tmp_path, monkeypatch):
    image = smooth_image(512, seed=2)
    slide = write(tmp_path / "slide.tif", image)
    tissue = np.zeros((128, 128), np.uint8)  # a 2 µm/px mask: tissue in the top-left quarter
    tissue[:50, :50] = 1
    with ImageWriter(tmp_path / "mask.tif", tissue.shape, spacing=4 * SPACING, channels=1,
                     compression="lzw", interpolation="nearest") as writer:  # fmt: skip
        writer.fill(tissue[:, :, None])
    reads = []
    original = ImageReader.read

    def counting(self, spacing, row, col, height, width, **options):
        if self.path.endswith("slide.tif"):
            reads.append((row, col))
        return original(self, spacing, row, col, height, width, **options)

    monkeypatch.setattr(ImageReader, "read", counting)
    model = unet("same")
    result = apply_network(model, slide, tmp_path / "out.tif", spacing=SPACING,
                           mask=tmp_path / "mask.tif", tile_size=128)  # fmt: skip
    assert result.tiles == 16 and result.computed == len(reads) == 4 and result.skipped == 12
    assert all(row < 256 and col < 256 for row, col in reads)
    labels = read_back(tmp_path / "out.tif")[..., 0]
    assert np.all(labels[200:, :] == 0) and np.all(labels[:, 200:] == 0)
    assert np.all(labels[:200, :200] > 0)


@pytest.mark.parametrize(("overlap", "soft"), [(16, True), (0, False)])
def test_an_interrupted_run_resumes_and_equals_an_uninterrupted_one(tmp_path, overlap, soft):
    image = smooth_image(700, seed=4)
    slide = write(tmp_path / "slide.tif", image)
    model = unet("same", seed=2)
    options = dict(spacing=SPACING, tile_size=128, soft=soft, quantize=True, overlap=overlap)
    apply_network(model, slide, tmp_path / "whole.tif", **options)

    def stop(done, total):
        if done >= total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        apply_network(model, slide, tmp_path / "resumed.tif", progress=stop, **options)
    assert not (tmp_path / "resumed.tif").exists()
    assert list((tmp_path / ".resumed.tif.partial").glob("strip_*.npy"))
    resumed = apply_network(model, slide, tmp_path / "resumed.tif", **options)
    assert resumed.strips_reused >= 2
    np.testing.assert_array_equal(read_back(tmp_path / "resumed.tif"),
                                  read_back(tmp_path / "whole.tif"))  # fmt: skip
    assert not (tmp_path / ".resumed.tif.partial").exists()
    again = apply_network(model, slide, tmp_path / "resumed.tif", **options)
    assert again.existed and again.computed == 0


def test_test_time_augmentation_and_bad_settings(tmp_path):
    slide = write(tmp_path / "slide.tif", smooth_image(256, seed=5))
    model = unet("same")
    result = apply_network(model, slide, tmp_path / "tta.tif", spacing=SPACING, tile_size=128,
                           augment=True, soft=True, output_class=1)  # fmt: skip
    probabilities = read_back(tmp_path / "tta.tif")
    assert result.computed == 4 and probabilities.shape == (256, 256, 1)
    assert 0 <= probabilities.min() and probabilities.max() <= 1
    with pytest.raises(ModelError, match="same-padded"):
        tile_geometry(unet("valid").reconstruction_info((256, 256)), overlap=16)
    with pytest.raises(ValueError, match="output_class"):
        apply_network(model, slide, tmp_path / "x.tif", spacing=SPACING, output_class=7)
    classifier = model_class("resnet18")(classes=2, width=8).build()
    with pytest.raises(ModelError, match="global pooling"):
        apply_network(classifier, slide, tmp_path / "y.tif", spacing=SPACING, tile_size=128)
