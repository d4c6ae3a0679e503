"""BatchGenerator: buffers, worker processes, label ratios, boosting and failure handling."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from batch_sources import RATIOS, generator
from scipy import stats as scipy_stats

from digipath.augment import AugmenterPool, Flip, HedColor, Rotate90
from digipath.data.batch_generator import boosting_transfer_count, one_hot, to_channels_first
from digipath.data.buffer import shared_segments
from digipath.data.config import PatchSource
from digipath.data.normalization import RgbToZeroOne
from digipath.data.weights import BatchBalancingWeights, CleanWeights
from digipath.data.workers import pieces
from digipath.errors import SamplingError, SourceError, WorkerError


def centre_labels(batch) -> np.ndarray:
    """The labels encoded in channel 0 at the patches' centres (see make_source)."""
    patches = batch[1.0]["patches"]  # (N, C, H, W)
    return np.rint(patches[:, 0, 15, 15].astype(float) / 40).astype(int)


def test_one_hot_encoding():
    labels = np.array([0, 2, 255, 1], np.uint8)
    np.testing.assert_array_equal(one_hot(labels, 3), [[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0]])
    maps = np.array([[[0, 1], [255, 1]]], np.uint8)
    first = one_hot(maps, 2, axis=1)
    assert first.shape == (1, 2, 2, 2) and first.dtype == np.float32
    np.testing.assert_array_equal(first[0, 1], [[0, 1], [0, 1]])
    assert one_hot(maps, 2, axis=-1).shape == (1, 2, 2, 2)


def test_boosting_transfer_count():
    assert boosting_transfer_count(100, 40, epoch=0, buffer_mode_switch=2, update_ratio=0.5) == 100
    assert boosting_transfer_count(100, 40, epoch=2, buffer_mode_switch=2, update_ratio=0.5) == 80
    assert boosting_transfer_count(100, 40, epoch=3, buffer_mode_switch=2, update_ratio=0.0) == 60
    with pytest.raises(ValueError, match="update ratio"):
        boosting_transfer_count(100, 40, 0, 0, 1.5)


def test_batches_have_the_layout_and_labels_of_their_patches(sources):
    with generator(sources, normalizer=RgbToZeroOne(), processes=0) as gen:
        batch, indices = gen.batch(16)
        assert set(batch) == {1.0, 2.0}
        assert batch[1.0]["patches"].shape == (16, 3, 32, 32)
        assert batch[2.0]["patches"].shape == (16, 3, 16, 16)
        assert batch[1.0]["patches"].dtype == np.float32 and batch[1.0]["patches"].max() <= 1.0
        labels = batch[1.0]["labels"]
        assert labels.shape == (16, 3) and np.all(labels.sum(axis=1) == 1)
        patches = gen.main.slots.patches[1.0][indices]  # uint8 (N, H, W, C) in the buffer
        truth = np.rint(patches[:, 15, 15, 0] / 40).astype(int)
        np.testing.assert_array_equal(labels.argmax(axis=1), truth)
        assert indices.shape == (16,) and len(set(indices.tolist())) == 16
    with generator(sources, dimension_order="bhwc", one_hot=False) as gen:
        batch, _ = gen.batch(4)
        assert batch[1.0]["patches"].shape == (4, 32, 32, 3)
        assert batch[1.0]["patches"].dtype == np.uint8
        assert batch[1.0]["labels"].dtype == np.int64 and batch[1.0]["labels"].shape == (4,)


def test_label_ratios_hold_per_batch(sources):
    totals = np.zeros(3)
    with generator(sources, processes=0, main_buffer_size=60, read_buffer_size=60) as gen:
        for batch, _ in gen.batches(30, count=20):
            counts = np.bincount(batch[1.0]["labels"].argmax(axis=1), minlength=3)
            assert np.all(np.abs(counts / 30 - np.array(list(RATIOS.values()))) < 0.25)
            np.testing.assert_array_equal(counts, np.bincount(centre_labels(batch), minlength=3))
            totals += counts
    expected = np.array(list(RATIOS.values())) * totals.sum()
    assert scipy_stats.chisquare(totals, expected).pvalue > 0.001


def test_label_maps_and_weights(sources):
    options = dict(
        label_mode="synthesize", patch_weights=CleanWeights(),
        batch_weights=BatchBalancingWeights(3), one_hot=True,
    )  # fmt: skip
    with generator(sources, **options) as gen:
        batch, _ = gen.batch(8)
        labels, weights = batch[1.0]["labels"], batch[1.0]["weights"]
        assert labels.shape == (8, 3, 32, 32) and weights.shape == (8, 32, 32)
        assert weights.dtype == np.float32 and weights.sum() == pytest.approx(8 * 32 * 32, rel=1e-4)
        centre = np.rint(batch[1.0]["patches"][:, 0].astype(float) / 40)
        np.testing.assert_array_equal(labels.argmax(axis=1), centre)  # maps match the pixels


def test_same_seed_same_batches_with_any_process_count(sources):
    augmenter = AugmenterPool(rng=0)
    augmenter.append_group("spatial")
    augmenter.append_augmenter(Flip(), "spatial")
    augmenter.append_augmenter(Rotate90(), "spatial")
    augmenter.append_group("colour")
    augmenter.append_augmenter(
        HedColor(haematoxylin={"sigma": [-0.1, 0.1], "bias": [-0.05, 0.05]}), "colour"
    )

    def run(processes: int) -> list[np.ndarray]:
        out = []
        with generator(sources, processes=processes, augmenter=augmenter, ipc_chunk_size=20) as g:
            for batch, indices in g.batches(12, count=6):
                out.append(batch[2.0]["patches"])
                g.update(indices, np.linspace(0, 1, 12))
        return out

    two = run(2)
    for first, second in zip(run(2), two, strict=True):
        np.testing.assert_array_equal(first, second)
    for first, second in zip(run(0), two, strict=True):
        np.testing.assert_array_equal(first, second)


def test_boosting_keeps_difficult_patches(sources):
    with generator(sources, main_buffer_size=32, read_buffer_size=32) as gen:
        gen.fill()
        before = gen.main.slots.patches[1.0].copy()
        gen.update(np.arange(32), np.where(np.arange(32) % 2 == 0, 0.9, 0.1))  # even: difficult
        gen.load()
        ratio = gen.boosted_transfer(
            epoch=1, buffer_mode_switch=1, difficult_threshold=0.5, difficult_update_ratio=0.0
        )
        assert ratio == 0.5
        after = gen.main.slots.patches[1.0]
        np.testing.assert_array_equal(after[0::2], before[0::2])  # difficult ones survive
        assert (
            np.mean([np.array_equal(a, b) for a, b in zip(after[1::2], before[1::2], strict=True)])
            < 0.2
        )
        assert gen.count(0.95) == 16  # the new patches start difficult (error 1)
        gen.load()
        gen.boosted_transfer(0, buffer_mode_switch=1, difficult_threshold=0.5,
                             difficult_update_ratio=0.0)  # fmt: skip
        assert gen.count(0.95) == 32  # before the switch epoch the whole buffer is replaced


def test_a_killed_worker_is_reported_within_the_timeout(sources):
    gen = generator(sources, processes=2, response_timeout=20.0, read_buffer_size=48)
    try:
        gen.start()
        gen.step()
        gen.fill()
        gen.batch(8)
        victim = gen.workers[0]
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(WorkerError) as caught:
            gen.load()
            gen.wait()
        assert time.monotonic() - started < 20.0
        assert caught.value.exitcode == -signal.SIGKILL and caught.value.pid == victim
        assert "out-of-memory" in str(caught.value)
    finally:
        gen.stop()
    assert not [name for name in shared_segments() if f"_{os.getpid()}_" in name]


def test_an_unreadable_source_raises_or_is_dropped(sources, tmp_path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 64)  # a TIFF header and nothing else
    bad = PatchSource(str(broken), sources["tumour"][0].mask, "", (0, 1, 2))
    with_bad = {"tumour": [*sources["tumour"], bad], "normal": sources["normal"]}
    for processes in (0, 1):
        gen = generator(with_bad, processes=processes)
        with pytest.raises((SourceError, WorkerError), match=r"broken\.tif"):
            with gen:
                gen.batch(4)
        lenient = generator(with_bad, processes=processes, strict=False)
        with lenient:
            batch, _ = lenient.batch(16)
            assert batch[1.0]["patches"].shape[0] == 16
            assert bad not in lenient.open_sources and len(lenient.open_sources) == 5


def test_worker_failure_carries_the_remote_traceback(sources, tmp_path):
    copy = tmp_path / "vanishing.tif"
    copy.write_bytes(Path(sources["normal"][0].image).read_bytes())
    source = PatchSource(str(copy), sources["normal"][0].mask, "", (0, 1))
    gen = generator({"normal": [source]}, label_ratios={0: 0.5, 1: 0.5}, processes=1)
    with gen:
        copy.write_bytes(copy.read_bytes()[:2000])  # truncate the tiles under the reader
        with pytest.raises(WorkerError) as caught:
            gen.fill()
    error = caught.value
    assert error.remote_traceback and "Traceback" in error.remote_traceback
    assert error.source == str(copy) and "vanishing.tif" in str(error)


def test_iteration_refreshes_the_buffer(sources):
    with generator(sources, main_buffer_size=24, read_buffer_size=24, batch_size=12) as gen:
        seen = [batch[1.0]["patches"] for batch, _ in itertools.islice(gen, 6)]
    # two batches per pass over the main buffer; the next pass comes from the read buffer
    passes = [np.concatenate(seen[k : k + 2]) for k in (0, 2, 4)]
    assert not np.array_equal(passes[0], passes[1])
    assert not np.array_equal(passes[1], passes[2])
    with generator(sources, main_buffer_size=24, read_buffer_size=0) as gen:
        first = [batch[1.0]["patches"] for batch, _ in gen.batches(24, count=2)]
        assert not np.array_equal(first[0], first[1])  # refilled between passes


def test_errors_before_start_and_bad_options(sources):
    gen = generator(sources)
    with pytest.raises(SamplingError, match="call start"):
        gen.fill()
    with pytest.raises(ValueError, match="dimension_order"):
        generator(sources, dimension_order="CHW")
    with pytest.raises(ValueError, match="main_buffer_size"):
        generator(sources, main_buffer_size=0)
    with pytest.raises(ValueError, match="weight maps need label maps"):
        generator(sources, patch_weights=CleanWeights())
    with pytest.raises(ValueError, match="response_timeout"):
        generator(sources, response_timeout=0)


def test_stop_frees_everything_even_on_interrupt(sources):
    mine = f"_{os.getpid()}_"
    gen = generator(sources, processes=1)
    with pytest.raises(KeyboardInterrupt):
        with gen:
            pids = gen.workers
            gen.batch(4)
            raise KeyboardInterrupt
    assert not [name for name in shared_segments() if mine in name]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_no_shared_memory_left_after_100_start_stop_cycles(sources):
    mine = f"_{os.getpid()}_"
    small = {"normal": sources["normal"][:1]}
    for cycle in range(100):
        gen = generator(
            small, label_ratios={0: 1.0}, processes=1, main_buffer_size=4, read_buffer_size=4,
            seed=cycle,
        )  # fmt: skip
        gen.start()
        if cycle % 25 == 0:
            gen.step()
            gen.batch(2)
        gen.stop()
    assert not [name for name in shared_segments() if mine in name]


@pytest.mark.parametrize(
    ("channels", "dtype"), [(1, np.uint8), (3, np.uint8), (4, np.float32), (5, np.uint8)]
)
def test_channels_first_matches_a_transpose(channels, dtype):
    patches = np.random.default_rng(0).integers(0, 255, (3, 7, 5, channels)).astype(dtype)
    np.testing.assert_array_equal(to_channels_first(patches), patches.transpose(0, 3, 1, 2))


def test_requests_are_produced_in_pieces():
    assert pieces({0: 40, 1: 30}, 32) == [{0: 32}, {0: 8, 1: 24}, {1: 6}]
    assert pieces({3: 5}, 32) == [{3: 5}]
    assert pieces({}, 32) == []


def test_prefetching_gives_the_same_batches(sources):
    def run(prefetch: bool) -> list[np.ndarray]:
        with generator(sources, processes=2, prefetch=prefetch, main_buffer_size=24,
                       read_buffer_size=24) as gen:  # fmt: skip
            assert (gen._spare is not None) == prefetch
            return [batch[1.0]["patches"] for batch, _ in gen.batches(12, count=8)]

    for first, second in zip(run(True), run(False), strict=True):
        np.testing.assert_array_equal(first, second)
