"""Tests of digipath.data.sampler.PatchSampler: centres, labels, spacings."""

from __future__ import annotations

import numpy as np
import pytest

from digipath.data.labels import IGNORE, LabelMap
from digipath.data.sampler import PatchSampler
from digipath.data.stats import MaskStats
from digipath.errors import LabelMapError, SamplingError, StatsError
from digipath.io import ImageReader, ImageWriter

ROWS, COLS = 2048, 1536  # level 0 at 0.5 µm/px; the mask at 2.0 µm/px is 512 x 384


def coordinate_image() -> np.ndarray:
    """RGB whose pixels encode their own position: R = row % 256, G = col % 256,
    B = 16 * (row // 256) + col // 256."""
    rows, cols = np.mgrid[0:ROWS, 0:COLS]
    return np.stack([rows % 256, cols % 256, 16 * (rows // 256) + cols // 256], axis=-1).astype(
        np.uint8
    )


def decode_position(pixel: np.ndarray) -> tuple[int, int]:
    red, green, blue = (int(v) for v in pixel)
    return 256 * (blue // 16) + red, 256 * (blue % 16) + green


def label_mask() -> np.ndarray:
    rng = np.random.default_rng(3)
    mask = np.zeros((512, 384), np.uint8)
    y, x = np.mgrid[0:512, 0:384]
    mask[(y - 200) ** 2 + (x - 150) ** 2 < 80**2] = 1
    mask[300:420, 250:370] = 2
    mask[rng.random(mask.shape) < 0.01] = 3
    mask[0:20, 0:20] = 9  # a value no label map lists
    return mask


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sampler")
    image = folder / "image.tif"
    with ImageWriter(image, (ROWS, COLS), spacing=0.5, compression="lzw") as writer:
        writer.fill(coordinate_image())
    mask = folder / "mask.tif"
    with ImageWriter(
        mask, (512, 384), spacing=2.0, channels=1, compression="lzw", interpolation="nearest"
    ) as writer:
        writer.fill(label_mask()[:, :, None])
    return image, mask


def test_centres_follow_the_upper_left_rule():
    positions = np.array([[0, 0], [3, 5]])
    assert PatchSampler.centres(positions, 4.0).tolist() == [[1, 1], [13, 21]]
    assert PatchSampler.centres(positions, 2.0).tolist() == [[0, 0], [6, 10]]
    assert PatchSampler.centres(positions, 1.0).tolist() == [[0, 0], [3, 5]]
    assert PatchSampler.centres(positions, 3.0).tolist() == [[1, 1], [10, 16]]
    assert PatchSampler.centres(positions, 0.5).tolist() == [[0, 0], [1, 2]]


def test_patches_are_centred_on_the_drawn_mask_pixel(files):
    image, mask = files
    sampler = PatchSampler(image, mask=mask, labels=[0, 1, 2, 3], mask_spacing=2.0)
    samples = sampler.sample({1: 20, 2: 20, 3: 10}, {0.5: (64, 64), 1.0: (31, 31)}, rng=0)
    reference = label_mask()
    centres = samples.centres
    assert (reference[centres[:, 0], centres[:, 1]] == samples.mask_values).all()
    assert sorted(samples.mask_values.tolist()) == [1] * 20 + [2] * 20 + [3] * 10
    for k, (row, col) in enumerate(centres.tolist()):
        # At 0.5 µm/px a mask pixel is a 4 x 4 block; its centre is the block's pixel (1, 1).
        fine = samples.patches[0.5][k]
        assert decode_position(fine[31, 31]) == (4 * row + 1, 4 * col + 1)
    assert samples.spacings == {0.5: 0.5, 1.0: 1.0}


def test_multi_spacing_patches_share_their_centre(files):
    image, mask = files
    sampler = PatchSampler(image, mask=mask, labels=[1, 2], mask_spacing=2.0)
    samples = sampler.sample({1: 10, 2: 10}, {0.5: (128, 128), 1.0: (64, 64)}, rng=1)
    fine = samples.patches[0.5].astype(np.float64)
    downsampled = fine.reshape(-1, 64, 2, 64, 2, 3).mean(axis=(2, 4))
    coarse = samples.patches[1.0].astype(np.float64)
    # Compare where the coordinate code is smooth (R and G do not wrap inside a 2x2 block).
    smooth = (fine.reshape(-1, 64, 2, 64, 2, 3).max(axis=(2, 4)) - fine.reshape(
        -1, 64, 2, 64, 2, 3).min(axis=(2, 4))).max(axis=-1) <= 1  # fmt: skip
    assert smooth.mean() > 0.9
    assert np.abs(downsampled - coarse)[smooth].max() <= 1


def test_label_modes_agree(files):
    image, mask = files
    label_map = {0: 0, 1: 1, 2: 2, 3: 1}
    shapes = {0.5: (40, 40), 2.0: (9, 9)}
    results = {}
    for mode in ("central", "synthesize", "load"):
        sampler = PatchSampler(image, mask=mask, labels=[0, 1, 2, 3], mask_spacing=2.0,
                               label_mode=mode, label_map=label_map)  # fmt: skip
        results[mode] = sampler.sample({1: 8, 2: 8, 3: 4}, shapes, rng=5)
    central = results["central"].labels
    assert set(np.unique(central)) <= {1, 2}
    for mode in ("synthesize", "load"):
        labels = results[mode].labels
        assert labels[0.5].shape == (20, 40, 40) and labels[2.0].shape == (20, 9, 9)
        assert np.array_equal(labels[0.5][:, 19, 19], central)
        assert np.array_equal(labels[2.0][:, 4, 4], central)
    # The mask, upsampled by nearest neighbour, is what 'load' returns at 0.5 µm/px.
    mapped = LabelMap(label_map)(label_mask())
    for k, (row, col) in enumerate(results["load"].centres.tolist()):
        r0, c0 = 4 * row + 1 - 19, 4 * col + 1 - 19
        rows = np.clip((r0 + np.arange(40)) // 4, 0, 511)
        cols = np.clip((c0 + np.arange(40)) // 4, 0, 383)
        expected = mapped[rows[:, None], cols[None, :]]
        r, c = r0 + np.arange(40), c0 + np.arange(40)
        inside = ((r >= 0) & (r < ROWS))[:, None] & ((c >= 0) & (c < COLS))[None, :]
        assert np.array_equal(results["load"].labels[0.5][k][inside], expected[inside])
        assert (results["load"].labels[0.5][k][~inside] == IGNORE).all()  # outside the mask
    # 'synthesize' and 'load' agree on tracked values.
    assert np.array_equal(results["synthesize"].labels[2.0], results["load"].labels[2.0])


def test_stats_file_is_created_and_reused(files, tmp_path):
    image, mask = files
    stat = tmp_path / "mask.stat"
    PatchSampler(image, mask=mask, stats=stat, labels=[1, 2], mask_spacing=2.0, create_stats=True)
    assert stat.exists()
    sampler = PatchSampler(image, stats=stat, mask_spacing=2.0)
    assert sampler.labels == (1, 2)
    samples = sampler.sample({2: 5}, {2.0: (8, 8)}, rng=0)
    assert (label_mask()[samples.centres[:, 0], samples.centres[:, 1]] == 2).all()
    assert isinstance(sampler.stats, MaskStats)


def test_errors(files, tmp_path):
    image, mask = files
    with pytest.raises(ValueError, match="label_mode"):
        PatchSampler(image, mask=mask, labels=[1], mask_spacing=2.0, label_mode="centre")
    with pytest.raises(SamplingError, match="needs the mask"):
        PatchSampler(image, stats=tmp_path / "x.stat", mask_spacing=2.0, label_mode="load")
    with pytest.raises(StatsError, match="neither a mask"):
        PatchSampler(image, stats=tmp_path / "x.stat", mask_spacing=2.0)
    sampler = PatchSampler(image, mask=mask, labels=[1, 2], mask_spacing=2.0)
    with pytest.raises(SamplingError, match="label 3"):
        sampler.sample({3: 1}, {2.0: (8, 8)})
    with pytest.raises(SamplingError, match="no patch shapes"):
        sampler.sample({1: 1}, {})


def test_label_map():
    label_map = LabelMap({0: 0, 1: 1, 2: 1, 5: 2})
    assert label_map.classes == 3
    values = np.array([0, 1, 2, 5, 7, 255], np.uint8)
    assert label_map(values).tolist() == [0, 1, 1, 2, IGNORE, IGNORE]
    assert LabelMap.identity([4, 2]).mapping == {2: 0, 4: 1}
    with pytest.raises(LabelMapError, match="without gaps"):
        LabelMap({0: 0, 1: 2})
    with pytest.raises(LabelMapError, match="0-254"):
        LabelMap({255: 0})
    with pytest.raises(LabelMapError, match="empty"):
        LabelMap({})


def test_reader_objects_are_accepted(files):
    image, mask = files
    sampler = PatchSampler(ImageReader(image), mask=ImageReader(mask), labels=[1],
                           mask_spacing=2.0)  # fmt: skip
    samples = sampler.sample({1: 3}, {4.0: (16, 16)}, rng=2)
    assert samples.patches[4.0].shape == (3, 16, 16, 3)
    sampler.close()
