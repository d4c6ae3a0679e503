"""PatchBuffer: slots, read and write orders, errors, partitions and shared memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.data.buffer import BufferLayout, PatchBuffer, Slots, attach, shared_segments
from digipath.errors import PatchBufferError

SHAPES = {1.0: (4, 5), 2.0: (2, 3)}


def data(count: int, first: int = 0, maps: bool = False) -> Slots:
    """``count`` patches whose every pixel holds its number ``first + i`` (mod 256)."""
    values = (np.arange(first, first + count) % 256).astype(np.uint8)
    patches = {
        spacing: np.broadcast_to(values[:, None, None, None], (count, *shape, 3)).copy()
        for spacing, shape in SHAPES.items()
    }
    if maps:
        labels = {
            spacing: np.broadcast_to(values[:, None, None], (count, *shape)).copy()
            for spacing, shape in SHAPES.items()
        }
        return Slots(patches, labels)
    return Slots(patches, values.copy())


def buffer(size: int = 10, **options) -> PatchBuffer:
    return PatchBuffer(BufferLayout.create(size, SHAPES, 3, False), rng=0, **options)


def ids(slots: Slots) -> np.ndarray:
    return slots.patches[1.0][:, 0, 0, 0].astype(int)


def test_layout_validation():
    with pytest.raises(PatchBufferError, match="positive number of slots"):
        BufferLayout.create(0, SHAPES, 3, False)
    with pytest.raises(PatchBufferError, match="weight maps need label maps"):
        BufferLayout.create(4, SHAPES, 3, False, weight_maps=True)
    layout = BufferLayout.create(4, SHAPES, 3, True, weight_maps=True)
    kinds = [(kind, spacing) for kind, spacing, _, _ in layout.fields()]
    assert kinds == [
        ("patches", 1.0), ("patches", 2.0), ("labels", 1.0), ("labels", 2.0),
        ("weights", 1.0), ("weights", 2.0),
    ]  # fmt: skip
    offsets, total = layout.offsets()
    assert all(offset % 64 == 0 for offset in offsets) and total >= offsets[-1] + 4 * 2 * 3 * 4


def test_batches_follow_the_read_order_and_wrap():
    buf = buffer(10)
    buf.push(data(10))
    first, indices = buf.batch(4)
    np.testing.assert_array_equal(indices, [0, 1, 2, 3])
    np.testing.assert_array_equal(ids(first), [0, 1, 2, 3])
    buf.batch(4)
    _, wrapped = buf.batch(4)
    np.testing.assert_array_equal(wrapped, [8, 9, 0, 1])
    buf.shuffle()
    _, shuffled = buf.batch(10)
    assert sorted(shuffled.tolist()) == list(range(10)) and shuffled.tolist() != list(range(10))
    with pytest.raises(PatchBufferError, match="larger than the buffer"):
        buf.batch(11)


def test_batches_are_copies():
    buf = buffer(4)
    buf.push(data(4))
    batch, _ = buf.batch(2)
    batch.patches[1.0][:] = 99
    assert ids(buf.batch(4)[0]).tolist() == [2, 3, 0, 1]


def test_new_slots_are_difficult_and_updates_are_checked():
    buf = buffer(6)
    buf.push(data(6))
    assert buf.count(0.5) == 6
    buf.update([0, 2], [0.1, 0.2])
    assert buf.count(0.5) == 4 and buf.count(0.15) == 5
    counts, edges = buf.histogram(10)
    assert counts.sum() == 6 and counts[1] == 1 and counts[2] == 1 and counts[-1] == 4
    assert edges[0] == 0.0 and edges[-1] == 1.0
    buf.push(data(2, 50))  # rotating write index: slots 0 and 1
    np.testing.assert_array_equal(buf.errors[:3], [1.0, 1.0, 0.2])
    with pytest.raises(PatchBufferError, match=r"errors must be in \[0, 1\]"):
        buf.update([1], [1.5])
    with pytest.raises(PatchBufferError, match="slot indices"):
        buf.update([6], [0.5])
    with pytest.raises(PatchBufferError, match="2 slot indices but 1 errors"):
        buf.update([1, 2], [0.5])


def test_partition_overwrites_easy_slots_first():
    buf = buffer(8)
    buf.push(data(8))
    buf.update(np.arange(8), [0.0, 0.9, 0.1, 0.9, 0.2, 0.9, 0.3, 0.9])
    buf.partition(0.5)
    written = buf.push(data(4, 100))
    assert sorted(written.tolist()) == [0, 2, 4, 6]
    assert set(ids(Slots(buf.slots.patches, buf.slots.labels))[[1, 3, 5, 7]]) == {1, 3, 5, 7}


def test_copy_from_keeps_difficult_patches():
    main, read = buffer(8), buffer(8)
    main.push(data(8))
    read.push(data(8, 100))
    main.update(np.arange(8), [0.0, 1.0] * 4)  # odd slots are difficult
    main.copy_from(read, 4, threshold=0.5)
    kept = ids(main.slots)
    np.testing.assert_array_equal(kept[1::2], [1, 3, 5, 7])
    assert np.all(kept[0::2] >= 100)
    assert main.count(0.5) == 8 and main.write_order is None
    main.copy_from(read)  # the whole buffer
    np.testing.assert_array_equal(np.sort(ids(main.slots)), np.arange(100, 108))


def test_copy_from_in_chunks():
    main, read = buffer(8, chunk_size=3), buffer(8)
    main.push(data(8))
    read.push(data(8, 100))
    main.copy_from(read, 7)
    assert np.count_nonzero(ids(main.slots) >= 100) == 7


@settings(max_examples=30, deadline=None)
@given(
    size=st.integers(1, 20),
    steps=st.lists(st.integers(1, 20), min_size=1, max_size=8),
    threshold=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_partial_copies_never_overwrite_a_difficult_slot_while_easy_ones_remain(
    size, steps, threshold, seed
):
    rng = np.random.default_rng(seed)
    main, read = buffer(size), buffer(size)
    main.push(data(size))
    read.push(data(size, 100))
    for step in steps:
        count = min(step, size - 1)
        if count == 0:
            continue
        main.update(np.arange(size), rng.random(size))
        easy = main.errors < threshold
        main.copy_from(read, count, threshold)
        changed = main.errors == 1.0  # written slots start difficult; rng.random() < 1
        assert changed.sum() == count
        if count <= easy.sum():
            assert not np.any(changed & ~easy)  # only easy slots were replaced
        else:
            assert np.all(changed[easy])  # every easy slot went first


def test_label_maps_and_weights_round_trip():
    layout = BufferLayout.create(3, SHAPES, 3, True, weight_maps=True)
    buf = PatchBuffer(layout)
    item = data(3, 7, maps=True)
    item.weights = {
        spacing: np.full((3, *shape), 0.5, np.float32) for spacing, shape in SHAPES.items()
    }
    buf.push(item)
    batch, _ = buf.batch(3)
    np.testing.assert_array_equal(batch.labels[2.0][:, 0, 0], [7, 8, 9])
    assert batch.weights[1.0].dtype == np.float32 and np.all(batch.weights[1.0] == 0.5)
    with pytest.raises(PatchBufferError, match="holds label maps"):
        buf.push(data(3))


def test_shared_buffer_is_seen_through_attach_and_freed_on_close():
    before = set(shared_segments())
    buf = PatchBuffer(BufferLayout.create(4, SHAPES, 3, False), shared=True)
    assert buf.name in shared_segments()
    segment, slots = attach(buf.spec())
    slots.put(np.array([2]), data(1, 42))
    assert ids(buf.slots)[2] == 42
    del slots
    segment.close()
    buf.close()
    buf.close()  # idempotent
    assert set(shared_segments()) == before
    with pytest.raises(PatchBufferError, match="cannot be attached"):
        buffer(2).spec()
