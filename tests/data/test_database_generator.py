"""DatabaseBatchGenerator: label ratios, seeds, augmentation, boosting, failures, the config."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from digipath.augment import Augmenter, AugmenterPool, Flip, Rotate
from digipath.data.batch_generator import boosting_transfer_count
from digipath.data.database_generator import DatabaseBatchGenerator, mirror_pad, shard_indices
from digipath.data.generator_config import batch_generators
from digipath.data.normalization import RgbToZeroOne
from digipath.data.patch_database import PatchDatabase, PatchDatabaseError, PatchDatabaseWriter
from digipath.data.torch_dataset import BatchDataset
from digipath.errors import ConfigError, SamplingError

SHAPE = (8, 8)
COUNTS = {0: 120, 1: 40, 2: 12}  # training patches per label


def coded(numbers: np.ndarray) -> np.ndarray:
    """uint8 (N, 8, 8, 3) patches: channel 0/1 the number (mod 256 / div 256), 2 a gradient."""
    patches = np.zeros((len(numbers), *SHAPE, 3), np.uint8)
    patches[..., 0] = (numbers % 256)[:, None, None]
    patches[..., 1] = (numbers // 256)[:, None, None]
    patches[..., 2] = (np.arange(SHAPE[0])[:, None] * 8 + np.arange(SHAPE[1]))[None]
    return patches


def numbers_of(patches: np.ndarray) -> np.ndarray:
    """The numbers of (N, H, W, C) uint8 patches."""
    return patches[:, 0, 0, 0].astype(np.int64) + 256 * patches[:, 0, 0, 1].astype(np.int64)


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> PatchDatabase:
    """Training: 120 / 40 / 12 patches of labels 0 / 1 / 2 (interleaved); validation: 30."""
    folder = tmp_path_factory.mktemp("database")
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(list(COUNTS), list(COUNTS.values())))
    with PatchDatabaseWriter(folder, SHAPE, 3, ("stroma", "tumour", "fat"), spacing=2.0,
                             shard_size=50) as writer:  # fmt: skip
        writer.add("training", coded(np.arange(len(labels))), labels)
        writer.add("validation", coded(np.arange(30)), np.arange(30) % 3)
    return PatchDatabase(folder)


def make(database, **options) -> DatabaseBatchGenerator:
    settings = dict(main_buffer_size=64, read_buffer_size=64, seed=1)
    settings.update(options)
    return DatabaseBatchGenerator(database, "training", **settings)


def test_every_load_keeps_the_label_ratios(database):
    labels = database.labels("training")
    with make(database, main_buffer_size=400, label_ratios={0: 1, 1: 1, 2: 2}) as generator:
        generator.fill()
        held = numbers_of(generator.main.slots.patches[2.0])
        assert np.bincount(labels[held], minlength=3).tolist() == [100, 100, 200]
        np.testing.assert_array_equal(generator.main.slots.labels, labels[held])
        # each label's patches are drawn in cycles: the 12 of label 2 are each used 16 or 17x
        uses = np.bincount(held[labels[held] == 2], minlength=len(labels))[labels == 2]
        assert uses.min() >= 16 and uses.max() <= 17
        seen = []
        for _ in range(20):
            batch, _ = generator.batch(20)
            seen.append(batch[2.0]["labels"].argmax(1))
        share = np.bincount(np.concatenate(seen), minlength=3) / 400
        np.testing.assert_allclose(share, [0.25, 0.25, 0.5], atol=1e-9)  # one full pass


def test_a_batch_is_laid_out_as_the_slide_generator_s(database):
    with make(database, normalizer=RgbToZeroOne(), label_map={0: 0, 1: 1, 2: 1}) as generator:
        assert generator.classes == 2 and generator.patch_shapes == {2.0: SHAPE}
        assert generator.channels == (0, 1, 2)
        assert generator.label_ratios == {0: 1.0, 1: 1.0, 2: 1.0}
        batch, indices = generator.batch(16)
        assert list(batch) == [2.0] and indices.shape == (16,)
        patches, labels = batch[2.0]["patches"], batch[2.0]["labels"]
        assert patches.shape == (16, 3, *SHAPE) and patches.dtype == np.float32
        assert patches.max() <= 1.0 and labels.shape == (16, 2) and labels.dtype == np.float32
        numbers = np.rint(patches[:, 0, 0, 0] * 255).astype(np.int64)
        stored = database.labels("training")[numbers]
        np.testing.assert_array_equal(labels.argmax(1), np.minimum(stored, 1))
    with make(database, one_hot=False, dimension_order="BHWC", channels=[2, 0]) as generator:
        batch, _ = generator.batch(4)
        assert batch[2.0]["patches"].shape == (4, *SHAPE, 2)
        assert batch[2.0]["patches"].dtype == np.uint8 and batch[2.0]["labels"].dtype == np.int64
        assert batch[2.0]["patches"][0, 0, 1, 0] == 1  # the gradient channel first


def _run(generator, steps=3) -> list[np.ndarray]:
    out = []
    with generator:
        generator.fill()
        for _ in range(steps):
            generator.load()
            for _ in range(4):
                batch, _ = generator.batch(16)
                out.append(batch[2.0]["patches"])
            generator.transfer()
    return out


def test_a_seed_gives_the_same_batches_with_any_thread_count(database):
    pool = AugmenterPool.from_augmenter(Flip())
    first = _run(make(database, augmenter=pool, seed=5, chunk_size=10))
    again = _run(make(database, augmenter=pool, seed=5, chunk_size=10, threads=3))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = _run(make(database, augmenter=pool, seed=6, chunk_size=10))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_augmentation_is_applied_when_loading(database):
    always = AugmenterPool.from_augmenter(Flip(["horizontal"]))
    with make(database, augmenter=always) as generator:
        generator.fill()
        gradient = coded(np.zeros(1, np.int64))[0, ..., 2]
        np.testing.assert_array_equal(
            generator.main.slots.patches[2.0][..., 2],
            np.broadcast_to(gradient[:, ::-1], (64, *SHAPE)),
        )
    # a rotation needs context: the stored patch is mirrored to the larger shape first
    rotate = AugmenterPool.from_augmenter(Rotate((30, 60)))
    assert rotate.input_shape(SHAPE) > SHAPE
    with make(database, augmenter=rotate, normalizer=RgbToZeroOne()) as generator:
        batch, _ = generator.batch(8)
        assert batch[2.0]["patches"].shape == (8, 3, *SHAPE)
    padded = mirror_pad(coded(np.arange(2)), (12, 11))
    assert padded.shape == (2, 12, 11, 3)
    np.testing.assert_array_equal(padded[:, 2:10, 1:9], coded(np.arange(2)))
    np.testing.assert_array_equal(padded[:, 1, 1:9], padded[:, 3, 1:9])  # reflected, 101


def test_boosting_keeps_the_difficult_patches(database):
    with make(database, main_buffer_size=40, read_buffer_size=40) as generator:
        generator.fill()
        _, slots = generator.batch(40)
        before = numbers_of(generator.main.slots.patches[2.0]).copy()
        difficult = slots[::4]  # 10 difficult slots, 30 easy ones
        errors = np.where(np.isin(slots, difficult), 0.9, 0.1)
        generator.update(slots, errors)
        assert generator.count(0.5) == 10
        generator.load()
        ratio = generator.boosted_transfer(
            epoch=2, buffer_mode_switch=1, difficult_threshold=0.5, difficult_update_ratio=0.2
        )
        assert ratio == 10 / 40
        after = numbers_of(generator.main.slots.patches[2.0])
        # 10 - round(10 * 0.2) = 8 difficult patches stay, every easy slot is replaced
        assert boosting_transfer_count(40, 10, 2, 1, 0.2) == 32
        kept = difficult[generator.main.errors[difficult] == 0.9]
        assert len(kept) == 8
        np.testing.assert_array_equal(after[kept], before[kept])
        easy = np.setdiff1d(slots, difficult)
        assert (generator.main.errors[easy] == 1.0).all()  # new patches start difficult
        # before the switch epoch the whole buffer is replaced
        generator.update(slots, errors)
        generator.load()
        assert generator.boosted_transfer(0, 1, 0.5, 0.2) == 10 / 40
        assert (generator.main.errors == 1.0).all()


class Broken(Augmenter):
    """An augmenter that fails (a bug in a user's augmenter)."""

    keyword = "broken"

    def apply(self, image, label=None):
        raise RuntimeError("the augmenter broke")


def test_a_failing_background_load_surfaces_with_the_database_path(database):
    with make(database) as generator:
        generator.fill()
        generator.augmenter = AugmenterPool.from_augmenter(Broken())
        generator.load()  # returns at once: the load runs in the background
        with pytest.raises(PatchDatabaseError) as caught:
            generator.transfer()
        message = str(caught.value)
        assert str(database.folder) in message and "read buffer" in message
        assert "RuntimeError: the augmenter broke" in message
        assert isinstance(caught.value.__cause__, RuntimeError)
        generator.load()
        deadline = time.monotonic() + 10
        with pytest.raises(PatchDatabaseError, match="the augmenter broke"):
            while time.monotonic() < deadline:  # ping raises once the load has failed
                generator.ping()
                time.sleep(0.01)
    with pytest.raises(PatchDatabaseError, match="main buffer"):
        with make(database, augmenter=AugmenterPool.from_augmenter(Broken())) as generator:
            generator.fill()
    assert not generator.started


def test_without_a_read_buffer_load_refills_the_main_buffer(database):
    with make(database, read_buffer_size=0) as generator:
        generator.fill()
        before = numbers_of(generator.main.slots.patches[2.0]).copy()
        generator.transfer()  # nothing to transfer
        np.testing.assert_array_equal(numbers_of(generator.main.slots.patches[2.0]), before)
        generator.load()
        assert not np.array_equal(numbers_of(generator.main.slots.patches[2.0]), before)


def test_wrong_arguments_are_named(database):
    with pytest.raises(SamplingError, match="holds no patch of label 2"):
        DatabaseBatchGenerator(
            database, "validation", main_buffer_size=8, label_ratios={2: 1.0},
            indices=[0, 1, 3, 4],
        )  # fmt: skip
    with pytest.raises(SamplingError, match=r"labels are 0 \.\. 2"):
        make(database, label_ratios={3: 1.0})
    with pytest.raises(PatchDatabaseError, match="no purpose 'testing'"):
        DatabaseBatchGenerator(database, "testing", main_buffer_size=8)
    with pytest.raises(ValueError, match="channels"):
        make(database, channels=[3])
    with pytest.raises(SamplingError, match="start"):
        make(database).batch(4)


def test_ranks_draw_from_disjoint_shards():
    labels = np.array([0] * 10 + [1] * 7 + [2])
    shards = [shard_indices(labels, rank, 3) for rank in range(3)]
    common = {17}  # the one patch of label 2 is used by every rank
    for a in range(3):
        assert 17 in shards[a]
        for b in range(a + 1, 3):
            assert set(shards[a]) & set(shards[b]) == common
    assert set(np.concatenate(shards)) == set(range(18))
    assert [np.bincount(labels[s], minlength=3)[0] for s in shards] == [4, 3, 3]


def test_a_batch_dataset_iterates_a_database_generator(database):
    dataset = BatchDataset(make(database, normalizer=RgbToZeroOne()), batch_size=16, batches=6)
    items = list(DataLoader(dataset, batch_size=None, num_workers=0))
    assert len(items) == 6 and items[0]["patches"].shape == (16, 3, *SHAPE)
    assert items[0]["labels"].dtype == torch.float32 and not dataset.generator.started


# -- from the parameter file --------------------------------------------------------------------

PARAMETERS = {
    "system": {"process count": 2},
    "training": {
        "iterations": {
            "training": {"iteration count": 4, "batch size": 8},
            "validation": {"iteration count": 2, "batch size": 6},
        }
    },
    "data": {
        "images": {"patch shapes": {2.0: [8, 8]}},
        "labels": {"label ratios": {0: 1.0, 1: 1.0}, "label map": {0: 0, 1: 1, 2: 1}},
        "normalization": {"enabled": True, "type": "rgb_to_0-1"},
    },
    "augmentation": {
        "training": [{"group": "g", "random": False, "items": [{"type": "flip"}]}],
    },
}


def test_the_parameter_file_builds_database_generators(database):
    generators = batch_generators(PARAMETERS, str(database.folder), seed=2, source="p.yaml")
    assert list(generators) == ["training", "validation"]
    training, validation = generators["training"], generators["validation"]
    assert isinstance(training, DatabaseBatchGenerator) and training.main_buffer_size == 32
    assert validation.read_buffer_size == 12 and training.batch_size == 8
    assert training.augmenter is not None and validation.augmenter is None
    assert training.classes == 2 and training.threads == 2
    assert training.label_ratios == {0: 1.0, 1: 1.0}
    with training:
        batch, _ = training.batch(8)
        assert batch[2.0]["patches"].dtype == np.float32 and batch[2.0]["labels"].shape == (8, 2)
    shards = batch_generators(PARAMETERS, database, ["training"], seed=2, shard=(1, 2))
    assert len(shards["training"]._members[0]) == COUNTS[0] // 2


@pytest.mark.parametrize(
    ("edit", "key", "says"),
    [
        (lambda p: p["data"]["images"].update({"patch shapes": {2.0: [16, 16]}}),
         "data.images.patch shapes.2.0", "differs from the patch shape"),
        (lambda p: p["data"]["images"].update({"patch shapes": {4.0: [8, 8]}}),
         "data.images.patch shapes.4.0", "spacing tolerance"),
        (lambda p: p["data"]["images"].update({"patch shapes": {2.0: [8, 8], 4.0: [8, 8]}}),
         "data.images.patch shapes", "one spacing"),
        (lambda p: p["data"]["labels"].update({"label mode": "synthesize"}),
         "data.labels.label mode", "central"),
        (lambda p: p["data"]["labels"].update({"label ratios": {0: 1.0, 5: 1.0},
                                               "label map": None}),
         "data.labels.label ratios.5", "labels 0 .. 2"),
        (lambda p: p["data"]["images"].update({"channels": [0, 3]}),
         "data.images.channels", "3 channels"),
    ],
)  # fmt: skip
def test_a_wrong_parameter_names_its_key(database, edit, key, says):
    parameters = copy.deepcopy(PARAMETERS)
    edit(parameters)
    with pytest.raises(ConfigError, match=says) as caught:
        batch_generators(parameters, database, source="p.yaml")
    assert caught.value.key == key and caught.value.source == "p.yaml"


def test_a_missing_purpose_or_label_is_a_config_error(database, tmp_path):
    with pytest.raises(ConfigError, match="no purpose 'testing'; it has training, validation"):
        batch_generators(PARAMETERS, database, ["training", "testing"])
    with PatchDatabaseWriter(tmp_path / "db", SHAPE, 3, ("a", "b"), spacing=2.0) as writer:
        writer.add("training", coded(np.arange(4)), 0)
        writer.add("validation", coded(np.arange(4)), [0, 1, 0, 1])
    parameters = copy.deepcopy(PARAMETERS)
    parameters["data"]["labels"] = {"label ratios": {0: 1.0, 1: 1.0}}
    with pytest.raises(ConfigError, match="no 'training' patch of label 1") as caught:
        batch_generators(parameters, tmp_path / "db")
    assert caught.value.key == "data.labels.label ratios.1"


def test_a_validation_set_without_a_class_validates_on_the_others(tmp_path, caplog):
    """A small validation split may lack a rare class (all-positive pixels at 4x)."""
    with PatchDatabaseWriter(tmp_path / "db", SHAPE, 3, ("a", "b"), spacing=2.0) as writer:
        writer.add("training", coded(np.arange(4)), [0, 1, 0, 1])
        writer.add("validation", coded(np.arange(4)), 0)
    parameters = copy.deepcopy(PARAMETERS)
    parameters["data"]["labels"] = {"label ratios": {0: 1.0, 1: 1.0}}
    generators = batch_generators(parameters, tmp_path / "db")
    assert "validating without it" in caplog.text
    validation = generators["validation"]
    validation.start()
    try:
        batch, _ = validation.batch(4)
        labels = next(iter(batch.values()))["labels"]
        assert (labels.argmax(axis=1) == 0).all()
    finally:
        validation.stop()
