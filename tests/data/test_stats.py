"""Tests of digipath.data.stats.MaskStats against the full mask."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.data.stats import IGNORE, MaskStats
from digipath.errors import SamplingError, StatsError, StatsMismatchError
from digipath.io import ImageReader, ImageWriter


def blob_mask(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Background 0, two labelled discs (1, 2), a uniform block of 1 and a patch of value 7."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((rows, cols), np.uint8)
    y, x = np.mgrid[0:rows, 0:cols]
    for label in (1, 2):
        cy, cx, radius = rng.integers(0, rows), rng.integers(0, cols), rng.integers(20, 90)
        mask[(y - cy) ** 2 + (x - cx) ** 2 < radius**2] = label
    mask[0:128, 64:192] = 1  # whole tiles of one label (uniform tiles at tile size 64)
    mask[rows - 30 :, : cols // 3] = 7  # an untracked value
    mask[rng.random((rows, cols)) < 0.002] = 2  # scattered pixels
    return mask


def write_mask(path, mask: np.ndarray, spacing: float | None = 2.0):
    with ImageWriter(
        path, mask.shape, spacing=spacing, channels=1, compression="lzw", interpolation="nearest"
    ) as writer:
        writer.fill(mask[:, :, None])
    return path


@pytest.fixture(scope="module")
def mask_file(tmp_path_factory):
    mask = blob_mask(333, 470)
    return write_mask(tmp_path_factory.mktemp("mask") / "mask.tif", mask), mask


def test_counts_match_a_full_bincount(mask_file):
    path, mask = mask_file
    stats = MaskStats.from_mask(path, 2.0, [0, 1, 2], tile_size=64)
    full = np.bincount(mask.ravel(), minlength=256)
    assert stats.counts == {0: full[0], 1: full[1], 2: full[2]}
    assert stats.shape == (333, 470) and stats.spacing == 2.0
    assert stats.present_labels == (0, 1, 2)
    kinds = np.bincount(stats.tile_kind.ravel(), minlength=3)
    assert kinds[1] > 0 and kinds[2] > 0  # some uniform and some mixed tiles


def test_every_pixel_index_maps_to_a_distinct_pixel_of_its_label(mask_file):
    path, mask = mask_file
    stats = MaskStats.from_mask(path, 2.0, [0, 1, 2, 7], tile_size=64)
    for label in (0, 1, 2, 7):
        positions = stats.positions(label, np.arange(stats.counts[label]))
        assert (mask[positions[:, 0], positions[:, 1]] == label).all()
        expected = set(zip(*np.nonzero(mask == label), strict=True))
        assert set(map(tuple, positions.tolist())) == expected


@settings(max_examples=30, deadline=None)
@given(row=st.integers(-50, 400), col=st.integers(-50, 500), height=st.integers(1, 150),
       width=st.integers(1, 150))  # fmt: skip
def test_construct_rebuilds_the_mask(row, col, height, width):
    mask = _MASK
    region = _STATS.construct(row, col, height, width)
    expected = np.full((height, width), IGNORE, np.uint8)
    r0, r1 = max(row, 0), min(row + height, mask.shape[0])
    c0, c1 = max(col, 0), min(col + width, mask.shape[1])
    if r0 < r1 and c0 < c1:
        source = mask[r0:r1, c0:c1]
        expected[r0 - row : r1 - row, c0 - col : c1 - col] = np.where(
            np.isin(source, [0, 1, 2]), source, IGNORE
        )
    assert np.array_equal(region, expected)


_MASK = blob_mask(333, 470)


def _build_module_stats(tmp_dir) -> MaskStats:
    return MaskStats.from_mask(write_mask(tmp_dir / "m.tif", _MASK), 2.0, [0, 1, 2], tile_size=64)


@pytest.fixture(scope="module", autouse=True)
def _module_stats(tmp_path_factory):
    global _STATS
    _STATS = _build_module_stats(tmp_path_factory.mktemp("construct"))


def test_sampling_draws_pixels_of_the_requested_labels(mask_file):
    path, mask = mask_file
    stats = MaskStats.from_mask(path, 2.0, [0, 1, 2], tile_size=64)
    positions, labels = stats.sample({1: 500, 2: 300, 0: 0}, rng=np.random.default_rng(1))
    assert positions.shape == (800, 2)
    assert (mask[positions[:, 0], positions[:, 1]] == labels).all()
    assert (labels[:500] == 1).all() and (labels[500:] == 2).all()
    again, _ = stats.sample({1: 500, 2: 300}, rng=np.random.default_rng(1))
    assert np.array_equal(positions, again)
    with pytest.raises(SamplingError, match="not tracked"):
        stats.sample({5: 1})


def test_sampling_is_uniform_over_the_pixels_of_a_label(tmp_path):
    mask = np.zeros((128, 128), np.uint8)
    mask[0:64, 0:64] = 1  # a uniform tile ...
    mask[64:128:2, 64:128] = 1  # ... and a mixed one with half as many pixels of label 1
    stats = MaskStats.from_mask(write_mask(tmp_path / "u.tif", mask), 2.0, [0, 1], tile_size=64)
    positions, _ = stats.sample({1: 20000}, rng=7)
    in_first = np.mean((positions[:, 0] < 64) & (positions[:, 1] < 64))
    assert abs(in_first - 2 / 3) < 0.015  # 4096 of the 6144 pixels of label 1


def test_save_and_load_round_trip(mask_file, tmp_path):
    path, _ = mask_file
    stats = MaskStats.from_mask(path, 2.0, [0, 1, 2], tile_size=64)
    saved = stats.save(tmp_path / "mask.stat")
    assert [p.name for p in tmp_path.iterdir()] == ["mask.stat"]
    loaded = MaskStats.load(saved, mask=path, spacing=2.0, labels=[0, 1, 2])
    assert loaded.counts == stats.counts
    indices = np.arange(0, stats.counts[1], 97)
    assert np.array_equal(loaded.positions(1, indices), stats.positions(1, indices))
    with pytest.raises(StatsMismatchError) as caught:
        MaskStats.load(saved, spacing=8.0, labels=[0, 1])
    assert set(caught.value.differences) == {"spacing", "labels"}
    assert "mask.stat" in str(caught.value)


def test_load_notices_a_changed_mask(mask_file, tmp_path):
    path, mask = mask_file
    stats = MaskStats.from_mask(path, 2.0, [0, 1, 2], tile_size=64)
    saved = stats.save(tmp_path / "mask.stat")
    changed = mask.copy()
    changed[5, 5] = 2
    other = write_mask(tmp_path / "changed.tif", changed)
    with pytest.raises(StatsMismatchError, match="mask hash"):
        MaskStats.load(saved, mask=other)
    MaskStats.load(saved, mask=other, check_hash=False)


def test_bad_stat_files(tmp_path):
    with pytest.raises(StatsError, match="no such"):
        MaskStats.load(tmp_path / "none.stat")
    garbage = tmp_path / "garbage.stat"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(StatsError, match="not a readable"):
        MaskStats.load(garbage)
    other = tmp_path / "other.stat"
    with open(other, "wb") as handle:
        np.savez(handle, format=np.array("something else"))
    with pytest.raises(StatsError, match="not a digipath statistics file"):
        MaskStats.load(other)


def test_mask_without_spacing_takes_the_image_spacing(tmp_path, caplog):
    mask = blob_mask(200, 300)
    mask_path = write_mask(tmp_path / "bare.tif", mask, spacing=None)
    image = tmp_path / "image.tif"
    with ImageWriter(image, (400, 600), spacing=0.5, min_level_size=250) as writer:
        writer.fill(np.full((400, 600, 3), 200, np.uint8))
    with pytest.raises(StatsError, match="no pixel spacing"):
        MaskStats.from_mask(mask_path, 1.0, [1])
    with caplog.at_level("INFO"):
        stats = MaskStats.from_mask(mask_path, 1.0, [1], image=image, tile_size=64)
    assert stats.spacing == pytest.approx(1.0)
    assert "has no pixel spacing" in caplog.text
    with pytest.raises(StatsError, match="no level of"):
        MaskStats.from_mask(mask_path, 1.0, [1], image=ImageReader(mask_path, spacing=3.0).path)


def test_invalid_labels(mask_file):
    path, _ = mask_file
    with pytest.raises(ValueError, match="empty"):
        MaskStats.from_mask(path, 2.0, [])
    with pytest.raises(ValueError, match="0-254"):
        MaskStats.from_mask(path, 2.0, [255])


@given(labels=st.integers(1, 40), seed=st.integers(0, 100))
def test_label_index_packing_round_trips(labels, seed):
    from digipath.data.stats import _bits, _pack, _unpack

    bits = _bits(labels)
    indices = np.random.default_rng(seed).integers(0, labels + 1, (16, 64)).astype(np.uint8)
    packed = _pack(indices, bits)
    assert packed.shape == (16, 64 * bits // 8)
    assert np.array_equal(_unpack(packed, bits, 64), indices)


def test_mixed_tiles_are_packed(mask_file):
    path, _ = mask_file
    one = MaskStats.from_mask(path, 2.0, [1], tile_size=64)
    assert one.bits == 1 and one.mixed_tiles.shape[1:] == (64, 8)
    assert one.nbytes < 470 * 333 / 2
