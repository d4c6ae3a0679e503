"""PatchDatabaseWriter / PatchDatabase, and PatchDatabaseDataset in a torch DataLoader."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from digipath.augment import AugmenterPool, Flip
from digipath.data.normalization import RgbToZeroOne
from digipath.data.patch_database import (
    INDEX,
    PatchDatabase,
    PatchDatabaseError,
    PatchDatabaseWriter,
    is_database,
)
from digipath.data.torch_dataset import PatchDatabaseDataset

SHAPE = (8, 6)


def coded(start: int, count: int, channels: int = 3) -> np.ndarray:
    """uint8 ``(count, 8, 6, channels)`` patches whose pixels encode their number and position.

    Channel 0 is the number modulo 256, channel 1 the number // 256, channel 2 a gradient that
    tells flips apart.
    """
    numbers = np.arange(start, start + count)
    patches = np.zeros((count, *SHAPE, channels), np.uint8)
    patches[..., 0] = (numbers % 256)[:, None, None]
    patches[..., 1] = (numbers // 256)[:, None, None]
    if channels > 2:
        patches[..., 2] = (np.arange(SHAPE[0])[:, None] * 10 + np.arange(SHAPE[1]))[None]
    return patches


def numbers_of(patches: np.ndarray) -> np.ndarray:
    """The numbers :func:`coded` wrote into ``(N, rows, cols, C)`` patches."""
    return patches[:, 0, 0, 0].astype(np.int64) + 256 * patches[:, 0, 0, 1].astype(np.int64)


def write_database(folder, counts=None, shard_size=5, classes=("a", "b", "c")):
    """Training and validation patches numbered in write order, label = number % classes."""
    counts = counts or {"training": 23, "validation": 7}
    with PatchDatabaseWriter(
        folder, SHAPE, 3, classes, spacing=2.0, shard_size=shard_size, metadata={"level": 2}
    ) as writer:
        for purpose, count in counts.items():
            start = 0
            for source, size in (("slide_1.tif", count // 2), ("slide_2.tif", count - count // 2)):
                numbers = np.arange(start, start + size)
                writer.add(
                    purpose, coded(start, size), numbers % len(classes), source=source,
                    patient=source[:7], positions=np.stack([numbers, 2 * numbers], 1),
                )  # fmt: skip
                start += size
    return PatchDatabase(folder)


def test_a_database_reads_back_what_was_written(tmp_path):
    database = write_database(tmp_path / "db")
    assert is_database(tmp_path / "db") and is_database(tmp_path / "db" / INDEX)
    assert database.purposes == ["training", "validation"]
    assert database.patch_shape == SHAPE and database.channels == 3 and database.spacing == 2.0
    assert database.classes == ["a", "b", "c"] and database.index["metadata"] == {"level": 2}
    assert database.count("training") == 23 and database.count("validation") == 7
    np.testing.assert_array_equal(database.labels("training"), np.arange(23) % 3)
    assert database.label_counts("training") == {0: 8, 1: 8, 2: 7}
    order = np.array([22, 0, 5, 4, 11, 5, 17])  # across shards, unsorted, repeated
    patches = database.patches("training", order)
    assert patches.dtype == np.uint8 and patches.shape == (7, *SHAPE, 3)
    np.testing.assert_array_equal(numbers_of(patches), order)
    np.testing.assert_array_equal(patches, coded(0, 23)[order])
    origins = database.origins("training", [0, 12, 22])
    np.testing.assert_array_equal(origins, [[0, 0, 0], [1, 12, 24], [1, 22, 44]])
    assert database.sources("training") == ["slide_1.tif", "slide_2.tif"]
    assert database.patients("validation") == ["slide_1", "slide_2"]
    assert "training 23" in repr(database)
    with pytest.raises(IndexError, match="23 patches"):
        database.patches("training", [23])


def test_patches_go_to_shards_of_at_most_the_shard_size(tmp_path):
    database = write_database(tmp_path / "db", shard_size=5)
    shards = sorted(p.name for p in (tmp_path / "db").glob("training_*.patches.npy"))
    assert shards == [f"training_{k:04d}.patches.npy" for k in range(5)]  # 5+5+5+5+3
    sizes = [len(np.load(tmp_path / "db" / name, mmap_mode="r")) for name in shards]
    assert sizes == [5, 5, 5, 5, 3]
    assert database.index["purposes"]["training"]["shards"][0] == "training_0000"
    assert isinstance(database._shards["training"][0][0], np.memmap)  # read lazily
    assert not list((tmp_path / "db").glob(".*tmp"))  # no temporary file left


def test_the_mean_image_is_that_of_the_training_patches(tmp_path):
    database = write_database(tmp_path / "db")
    mean = database.mean_image()
    assert mean.dtype == np.float32 and mean.shape == (*SHAPE, 3)
    np.testing.assert_allclose(mean, coded(0, 23).mean(axis=0), rtol=1e-6)
    only_validation = write_database(tmp_path / "v", counts={"validation": 4})
    np.testing.assert_allclose(only_validation.mean_image(), coded(0, 4).mean(axis=0), rtol=1e-6)


def test_an_incomplete_database_is_refused(tmp_path):
    folder = tmp_path / "db"
    writer = PatchDatabaseWriter(folder, SHAPE, 3, shard_size=2)
    writer.add("training", coded(0, 5), 0)  # two shards written, no index yet
    assert list(folder.glob("training_*.patches.npy")) and not is_database(folder)
    with pytest.raises(PatchDatabaseError, match="not a patch database") as caught:
        PatchDatabase(folder)
    assert str(folder) in str(caught.value) and "interrupted" in str(caught.value)


def test_an_index_that_disagrees_with_its_shards_is_refused(tmp_path):
    write_database(tmp_path / "db")
    (tmp_path / "db" / "validation_0001.labels.npy").unlink()
    with pytest.raises(PatchDatabaseError, match=r"validation_0001\.labels\.npy"):
        PatchDatabase(tmp_path / "db")
    (tmp_path / INDEX).write_text("format: something else\n")
    with pytest.raises(PatchDatabaseError, match="expected format"):
        PatchDatabase(tmp_path)


def test_abort_removes_the_shards(tmp_path):
    folder = tmp_path / "db"
    with pytest.raises(RuntimeError, match="extraction failed"):
        with PatchDatabaseWriter(folder, SHAPE, 3, shard_size=2) as writer:
            writer.add("training", coded(0, 7), 1)
            raise RuntimeError("extraction failed")
    assert list(folder.iterdir()) == []
    with pytest.raises(PatchDatabaseError, match="closed"):
        writer.add("training", coded(0, 1), 1)


def test_purpose_and_patch_errors(tmp_path):
    database = write_database(tmp_path / "db")
    with pytest.raises(PatchDatabaseError, match="no purpose 'testing'; it has training, valid"):
        database.count("testing")
    with pytest.raises(PatchDatabaseError, match="testing"):
        database.labels("testing")
    writer = PatchDatabaseWriter(tmp_path / "w", SHAPE, 3, ("x", "y"))
    with pytest.raises(ValueError, match="plain purpose name"):
        writer.add("a/b", coded(0, 1), 0)
    with pytest.raises(ValueError, match=r"uint8 patches of shape \(n, 8, 6, 3\)"):
        writer.add("training", coded(0, 2).astype(np.float32), 0)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.1"):
        writer.add("training", coded(0, 2), [0, 2])
    writer.abort()


# -- the torch Dataset ------------------------------------------------------------------------


def test_the_dataset_gives_chw_float_tensors_and_int64_labels(tmp_path):
    database = write_database(tmp_path / "db")
    dataset = PatchDatabaseDataset(database, "training", normalizer=RgbToZeroOne())
    assert len(dataset) == 23
    patch, label = dataset[4]
    assert patch.shape == (3, *SHAPE) and patch.dtype == torch.float32
    assert label.dtype == torch.int64 and int(label) == 1
    np.testing.assert_allclose(patch.numpy(), coded(4, 1)[0].transpose(2, 0, 1) / 255, rtol=1e-6)
    raw, _ = PatchDatabaseDataset(tmp_path / "db", "validation")[-1]  # no normaliser: 0 .. 255
    assert float(raw[0, 0, 0]) == 6.0
    mapped = PatchDatabaseDataset(database, "training", label_map={0: 0, 2: 1})
    assert [int(mapped[i][1]) for i in range(3)] == [0, 255, 1]
    np.testing.assert_array_equal(mapped.labels[:3], [0, 255, 1])
    with pytest.raises(IndexError, match="out of range"):
        dataset[23]
    with pytest.raises(PatchDatabaseError, match="no purpose 'testing'"):
        PatchDatabaseDataset(database, "testing")


def test_the_dataset_pickles_as_its_folder(tmp_path):
    dataset = PatchDatabaseDataset(
        write_database(tmp_path / "db", counts={"training": 400}), "training"
    )
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 400 * 8 * 6 * 3  # the patches do not travel
    np.testing.assert_array_equal(copy[123][0].numpy(), dataset[123][0].numpy())


def test_a_dataloader_with_workers_gives_the_seeded_augmentations(tmp_path):
    write_database(tmp_path / "db", counts={"training": 40})
    pool = AugmenterPool.from_augmenter(Flip(["none", "horizontal"]))
    dataset = PatchDatabaseDataset(tmp_path / "db", "training", augmenter=pool, seed=3)

    def epoch(workers: int) -> tuple[np.ndarray, np.ndarray]:
        loader = DataLoader(dataset, batch_size=8, shuffle=False, num_workers=workers)
        patches, labels = zip(*[(p.numpy(), y.numpy()) for p, y in loader], strict=True)
        return np.concatenate(patches), np.concatenate(labels)

    serial, labels = epoch(0)
    parallel, parallel_labels = epoch(2)
    assert serial.shape == (40, 3, *SHAPE)
    np.testing.assert_array_equal(serial, parallel)  # the same draws in the workers
    np.testing.assert_array_equal(labels, parallel_labels)
    np.testing.assert_array_equal(labels, np.arange(40) % 3)
    gradient = coded(0, 1)[0, ..., 2].astype(np.float32)
    flipped = [bool((p[2] == gradient[:, ::-1]).all()) for p in serial]
    assert 5 < sum(flipped) < 35  # about half flipped horizontally
    assert all(flip or (p[2] == gradient).all() for p, flip in zip(serial, flipped, strict=True))
    np.testing.assert_array_equal(serial[:, 0, 0, 0], np.arange(40))  # order kept
    dataset.set_epoch(1)
    again, _ = epoch(0)
    assert not np.array_equal(again, serial)  # a new epoch draws anew
