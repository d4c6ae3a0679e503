"""Patch buffers: fixed sets of slots holding patches, labels, weights and per-patch errors.

A :class:`PatchBuffer` holds ``size`` slots. Each slot is one patch location: an image patch per
spacing (uint8, ``(rows, cols, channels)``), its label (one class in ``central`` mode, else a
``(rows, cols)`` uint8 label map per spacing), optionally a float32 weight map per spacing, and
an error in [0, 1] fed back by training (difficult-sample boosting). Buffers stay uint8 and
compact; normalisation, one-hot encoding and the ``(N, C, H, W)`` layout happen only when a
batch is handed out (:class:`~digipath.data.batch_generator.BatchGenerator`).

The arrays can live in shared memory (``shared=True``) so that worker processes write sampled
patches straight into slots (:func:`attach`), with no pickling of pixel data. Semantics follow
the DigitalPathology ``PatchBuffer``:

* :meth:`PatchBuffer.batch` hands out the next slots in a shuffled read order (wrapping) and their
  slot indices, which :meth:`PatchBuffer.update` takes back with the per-patch errors;
* every newly written slot gets error 1.0: difficult until proven easy;
* :meth:`PatchBuffer.partition` makes easy slots (error below a threshold) the first to be
  overwritten, so difficult ones survive a partial refill (:meth:`PatchBuffer.copy_from`).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from digipath.errors import PatchBufferError

logger = logging.getLogger(__name__)

SHM_PREFIX = "digipath_"
"""Prefix of the shared-memory segments digipath creates (``/dev/shm/digipath_*`` on Linux)."""

_ALIGN = 64


@dataclass(frozen=True)
class BufferLayout:
    """What a buffer holds per slot.

    Attributes
    ----------
    size
        Number of slots.
    shapes
        ``{spacing in µm/px: (rows, cols)}`` of the patches.
    channels
        Channels of the image patches.
    label_maps
        ``True``: a (rows, cols) uint8 label map per spacing; ``False``: one uint8 class per slot.
    weight_maps
        Whether a (rows, cols) float32 weight map per spacing is kept.
    """

    size: int
    shapes: tuple[tuple[float, tuple[int, int]], ...]
    channels: int
    label_maps: bool
    weight_maps: bool = False

    @classmethod
    def create(
        cls,
        size: int,
        shapes: Mapping[float, tuple[int, int]],
        channels: int,
        label_maps: bool,
        weight_maps: bool = False,
    ) -> BufferLayout:
        """Validate and build a layout (``shapes`` as a mapping)."""
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise PatchBufferError(f"a buffer needs a positive number of slots, got {size!r}")
        if not shapes:
            raise PatchBufferError("a buffer needs at least one patch shape")
        if weight_maps and not label_maps:
            raise PatchBufferError("weight maps need label maps")
        items = tuple(
            sorted(
                (float(spacing), (int(shape[0]), int(shape[1])))
                for spacing, shape in shapes.items()
            )
        )
        return cls(int(size), items, int(channels), bool(label_maps), bool(weight_maps))

    @property
    def spacings(self) -> list[float]:
        """The patch spacings in µm/px, ascending."""
        return [spacing for spacing, _ in self.shapes]

    def fields(self) -> list[tuple[str, float | None, tuple[int, ...], np.dtype]]:
        """Every array: ``(kind, spacing or None, shape, dtype)``, in storage order."""
        fields: list[tuple[str, float | None, tuple[int, ...], np.dtype]] = []
        for spacing, (rows, cols) in self.shapes:
            fields.append(("patches", spacing, (self.size, rows, cols, self.channels), np.uint8))
        if self.label_maps:
            for spacing, (rows, cols) in self.shapes:
                fields.append(("labels", spacing, (self.size, rows, cols), np.uint8))
        else:
            fields.append(("labels", None, (self.size,), np.uint8))
        if self.weight_maps:
            for spacing, (rows, cols) in self.shapes:
                fields.append(("weights", spacing, (self.size, rows, cols), np.float32))
        return fields

    def offsets(self) -> tuple[list[int], int]:
        """Byte offset of every field (64-byte aligned) and the total size in bytes."""
        offsets, total = [], 0
        for _, _, shape, dtype in self.fields():
            offsets.append(total)
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            total += -(-nbytes // _ALIGN) * _ALIGN
        return offsets, max(total, _ALIGN)


@dataclass
class Slots:
    """The arrays of a buffer (or a batch gathered from one), first axis = slot.

    Attributes
    ----------
    patches
        ``{spacing: (N, rows, cols, channels) uint8}``.
    labels
        ``(N,)`` uint8 classes, or ``{spacing: (N, rows, cols) uint8}`` label maps.
    weights
        ``{spacing: (N, rows, cols) float32}`` or ``None``.
    """

    patches: dict[float, np.ndarray]
    labels: np.ndarray | dict[float, np.ndarray]
    weights: dict[float, np.ndarray] | None = None

    def take(self, indices: np.ndarray) -> Slots:
        """A copy of the slots ``indices``, in that order."""
        labels = self.labels
        return Slots(
            {spacing: array[indices] for spacing, array in self.patches.items()},
            labels[indices]
            if isinstance(labels, np.ndarray)
            else {spacing: array[indices] for spacing, array in labels.items()},
            None
            if self.weights is None
            else {spacing: array[indices] for spacing, array in self.weights.items()},
        )

    def put(self, indices: np.ndarray, data: Slots) -> None:
        """Copy the items of ``data`` into the slots ``indices`` (one slot per item)."""
        for spacing, array in self.patches.items():
            source = data.patches[spacing]
            if source.shape[1:] != array.shape[1:]:
                raise PatchBufferError(
                    f"patches at {spacing} µm/px are {source.shape[1:]}, the buffer holds "
                    f"{array.shape[1:]}"
                )
            array[indices] = source
        if isinstance(self.labels, np.ndarray):
            if not isinstance(data.labels, np.ndarray):
                raise PatchBufferError("the buffer holds central labels, got label maps")
            self.labels[indices] = data.labels
        else:
            if isinstance(data.labels, np.ndarray):
                raise PatchBufferError("the buffer holds label maps, got central labels")
            for spacing, array in self.labels.items():
                array[indices] = data.labels[spacing]
        if self.weights is not None:
            if data.weights is None:
                raise PatchBufferError("the buffer holds weight maps, none were given")
            for spacing, array in self.weights.items():
                array[indices] = data.weights[spacing]

    def __len__(self) -> int:
        return len(next(iter(self.patches.values())))


def _views(layout: BufferLayout, memory: memoryview | bytearray) -> Slots:
    offsets, _ = layout.offsets()
    patches: dict[float, np.ndarray] = {}
    labels: dict[float, np.ndarray] = {}
    weights: dict[float, np.ndarray] = {}
    central: np.ndarray | None = None
    for (kind, spacing, shape, dtype), offset in zip(layout.fields(), offsets, strict=True):
        count = int(np.prod(shape))
        array = np.frombuffer(memory, dtype=dtype, count=count, offset=offset).reshape(shape)
        if kind == "patches":
            patches[spacing] = array
        elif kind == "labels" and spacing is None:
            central = array
        elif kind == "labels":
            labels[spacing] = array
        else:
            weights[spacing] = array
    return Slots(
        patches,
        central if central is not None else labels,
        weights if layout.weight_maps else None,
    )


def shared_segments() -> list[str]:
    """Names of the digipath shared-memory segments that exist now (Linux ``/dev/shm``)."""
    try:
        return sorted(name for name in os.listdir("/dev/shm") if name.startswith(SHM_PREFIX))
    except OSError:
        return []


class PatchBuffer:
    """A fixed number of patch slots with read order, write order and per-slot errors.

    Parameters
    ----------
    layout
        What each slot holds (:meth:`BufferLayout.create`).
    shared
        Keep the arrays in a shared-memory segment that worker processes can
        :func:`attach` to; :meth:`close` frees it.
    chunk_size
        Most patches moved per step by :meth:`copy_from` (default: all at once).
    rng
        Generator for shuffling and partitioning (or a seed).
    """

    def __init__(
        self,
        layout: BufferLayout,
        *,
        shared: bool = False,
        chunk_size: int | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        self.layout = layout
        self.size = layout.size
        if chunk_size is not None and (isinstance(chunk_size, bool) or chunk_size < 1):
            raise PatchBufferError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        _, nbytes = layout.offsets()
        self._shm: shared_memory.SharedMemory | None = None
        if shared:
            name = f"{SHM_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:16]}"
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=nbytes)
            memory: memoryview | bytearray = self._shm.buf
        else:
            memory = bytearray(nbytes)
        self.slots = _views(layout, memory)
        self.errors = np.ones(self.size, dtype=np.float64)
        self.read_order = np.arange(self.size)
        self.write_order: np.ndarray | None = None
        self._read = 0
        self._write = 0

    # -- sharing ---------------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The shared-memory segment's name (``None`` for a private buffer)."""
        return None if self._shm is None else self._shm.name

    def spec(self) -> tuple[str, BufferLayout]:
        """``(segment name, layout)``: what a worker process needs to :func:`attach`."""
        if self._shm is None:
            raise PatchBufferError("a private buffer cannot be attached; create it shared=True")
        return self._shm.name, self.layout

    def close(self) -> None:
        """Free the shared-memory segment (no-op for a private buffer). Idempotent."""
        if self._shm is None:
            return
        shm, self._shm = self._shm, None
        self.slots = Slots({}, np.empty(0, np.uint8))  # drop the views before closing
        try:
            shm.close()
        except BufferError:  # a view still exported elsewhere: the unlink below still frees it
            logger.debug("shared buffer %s still had views when closed", shm.name)
        try:
            shm.unlink()
        except FileNotFoundError:
            pass

    def __del__(self) -> None:  # last resort; stop()/close() are the documented way
        try:
            self.close()
        except Exception:
            pass

    # -- reading ---------------------------------------------------------------------------

    def batch(self, count: int) -> tuple[Slots, np.ndarray]:
        """The next ``count`` slots in read order (wrapping) and their slot indices.

        Returns
        -------
        (Slots, numpy.ndarray)
            Copies of the slots' arrays, and the (count,) slot indices for :meth:`update`.
        """
        if isinstance(count, bool) or count < 1:
            raise PatchBufferError(f"the batch size must be positive, got {count!r}")
        if count > self.size:
            raise PatchBufferError(
                f"a batch of {count} patches is larger than the buffer ({self.size} slots)"
            )
        positions = (self._read + np.arange(count)) % self.size
        self._read = int((self._read + count) % self.size)
        indices = self.read_order[positions]
        return self.slots.take(indices), indices

    def shuffle(self) -> None:
        """Draw a new read order and start reading from its beginning."""
        self.read_order = self.rng.permutation(self.size)
        self._read = 0

    # -- writing ---------------------------------------------------------------------------

    def fresh(self, indices: np.ndarray | slice) -> None:
        """Mark slots as newly written: their error becomes 1.0 (difficult)."""
        self.errors[indices] = 1.0

    def claim(self, count: int) -> np.ndarray:
        """The slots the next ``count`` written patches go to (and advance the write index).

        ``size`` patches take the whole buffer; fewer take the next slots of the write order
        (see :meth:`partition`; identity when none is set) from a rotating write index.
        """
        if count > self.size:
            raise PatchBufferError(
                f"cannot write {count} patches into a buffer of {self.size} slots"
            )
        if count == self.size:
            self._write = 0
            return np.arange(self.size)
        order = self.write_order if self.write_order is not None else np.arange(self.size)
        positions = (self._write + np.arange(count)) % self.size
        self._write = int((self._write + count) % self.size)
        return order[positions]

    def push(self, data: Slots) -> np.ndarray:
        """Write patches into the next slots (:meth:`claim`); they get error 1.0.

        Returns the slot indices written.
        """
        indices = self.claim(len(data))
        self.slots.put(indices, data)
        self.fresh(indices)
        return indices

    # -- errors (difficult-sample boosting) -------------------------------------------------

    def update(self, indices: Sequence[int] | np.ndarray, errors: Sequence[float] | np.ndarray):
        """Record the per-patch errors (in [0, 1]) of the slots a batch came from."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        errors = np.asarray(errors, dtype=np.float64).reshape(-1)
        if indices.shape != errors.shape:
            raise PatchBufferError(
                f"{len(indices)} slot indices but {len(errors)} errors were given"
            )
        if indices.size and (indices.min() < 0 or indices.max() >= self.size):
            raise PatchBufferError(
                f"slot indices must be in [0, {self.size - 1}], got {indices.min()} .. "
                f"{indices.max()}"
            )
        if not np.all(np.isfinite(errors)) or np.any((errors < 0) | (errors > 1)):
            bad = errors[~(np.isfinite(errors) & (errors >= 0) & (errors <= 1))][:5]
            raise PatchBufferError(f"errors must be in [0, 1], got {bad.tolist()}")
        self.errors[indices] = errors

    def count(self, threshold: float = 0.0) -> int:
        """Number of slots whose error is above ``threshold`` (the difficult ones)."""
        return int(np.count_nonzero(self.errors > threshold))

    def histogram(self, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Histogram of the slot errors over [0, 1]: ``(counts, bin edges)``."""
        return np.histogram(self.errors, bins=bins, range=(0.0, 1.0))

    def partition(self, threshold: float) -> None:
        """Set the write order: easy slots (error below ``threshold``) first, then the others.

        Both groups are shuffled. ``threshold <= 0`` clears the write order (identity).
        """
        self._write = 0
        if threshold <= 0:
            self.write_order = None
            return
        easy = np.flatnonzero(self.errors < threshold)
        hard = np.flatnonzero(self.errors >= threshold)
        self.write_order = np.concatenate([self.rng.permutation(easy), self.rng.permutation(hard)])

    def copy_from(self, other: PatchBuffer, count: int = 0, threshold: float = 0.0) -> None:
        """Move patches from ``other`` (the read buffer) into this one.

        Parameters
        ----------
        other
            A buffer of the same layout shapes.
        count
            0 or ``other.size`` (with equal sizes): copy the whole buffer. Otherwise
            :meth:`partition` by ``threshold`` and pull ``count`` patches from ``other`` in
            ``chunk_size`` chunks (``other.batch``), so slots with an error below the threshold
            are overwritten first and difficult ones survive.
        threshold
            Error below which a slot counts as easy.
        """
        if other.layout.shapes != self.layout.shapes or other.layout.label_maps != (
            self.layout.label_maps
        ):
            raise PatchBufferError("cannot copy between buffers of different layouts")
        if count < 0:
            raise PatchBufferError(f"the transfer count must be >= 0, got {count}")
        if (count == 0 or count == other.size) and other.size == self.size:
            self.slots.put(np.arange(self.size), other.slots)
            self.fresh(slice(None))
            self.write_order = None
            self._write = 0
            return
        count = count or other.size
        self.partition(threshold)
        chunk = self.chunk_size or count
        moved = 0
        while moved < count:
            step = min(chunk, count - moved, other.size)
            data, _ = other.batch(step)
            self.push(data)
            moved += step
        self.partition(0.0)

    def __repr__(self) -> str:
        where = f"shared {self.name}" if self._shm is not None else "private"
        return f"PatchBuffer({self.size} slots, {dict(self.layout.shapes)}, {where})"


def attach(spec: tuple[str, BufferLayout]) -> tuple[shared_memory.SharedMemory, Slots]:
    """Open a shared buffer's slots in another process (:meth:`PatchBuffer.spec`).

    Returns the segment (keep it referenced while the views are used) and the slot arrays.
    """
    name, layout = spec
    shm = shared_memory.SharedMemory(name=name)
    return shm, _views(layout, shm.buf)
