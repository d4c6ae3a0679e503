"""Label-balanced training batches from a patch database, a drop-in for the batch generator.

:class:`DatabaseBatchGenerator` hands out batches from one purpose of a
:class:`~digipath.data.patch_database.PatchDatabase` with the interface, the buffer semantics
and the batch layout of :class:`~digipath.data.batch_generator.BatchGenerator`, so that
:class:`~digipath.training.trainer.NetworkTrainer` (and
:class:`~digipath.data.torch_dataset.BatchDataset`) train from a database as they do from
slides:

* a **main** buffer (:class:`~digipath.data.buffer.PatchBuffer`) from which :meth:`batch`
  hands out batches and to which :meth:`update` feeds per-patch errors back;
* an optional **read** buffer that :meth:`load` fills in the background (threads gather the
  patches from the memory-mapped shards and augment them) while training reads the main
  buffer; :meth:`transfer` and :meth:`boosted_transfer` move them in, keeping the difficult
  patches when boosting.

Which patches: every load of ``n`` patches is split over the database labels by the label
ratios (:func:`~digipath.data.distribution.distribute_population`), and each label's share is
taken from a shuffled cycle over that label's patches, so every patch of a label is used once
before any is used again. A batch is ``{spacing: {"patches": (N, C, H, W) float32 (normalised),
"labels": one-hot float32 (N, K) or int64 (N,)}}``, with ``spacing`` the database's (µm/px).

Reproducibility: which patches go where, and every augmentation draw, come from the seed in a
fixed order (planned in the calling thread, each chunk of a load with its own seed), so a
seeded run gives the same batches with any number of loader threads.
"""

from __future__ import annotations

import concurrent.futures
import copy
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from digipath.data.batch_generator import DIMENSION_ORDERS, one_hot, to_channels_first
from digipath.data.buffer import BufferLayout, PatchBuffer, Slots
from digipath.data.buffered import BufferedGenerator
from digipath.data.distribution import distribute_population
from digipath.data.labels import LabelMap
from digipath.data.patch_database import PatchDatabase, PatchDatabaseError
from digipath.errors import SamplingError

__all__ = ["DatabaseBatchGenerator", "mirror_pad", "shard_indices"]

logger = logging.getLogger(__name__)


def shard_indices(labels: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The patch indices of one rank: each label's patches dealt round-robin over the ranks.

    Parameters
    ----------
    labels
        ``(n,)`` labels of every patch of a purpose.
    rank, world_size
        This rank (0-based) and the number of ranks.

    Returns
    -------
    numpy.ndarray
        int64 sorted indices into ``labels``. The ranks' shards are disjoint, except for a label
        with fewer patches than ranks, whose patches every rank uses (as
        :func:`~digipath.training.distributed.shard` does with categories of few images).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"expected 0 <= rank < world_size, got rank {rank} of {world_size}")
    labels = np.asarray(labels)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.append(members if len(members) < world_size else members[rank::world_size])
    if not chosen:
        return np.zeros(0, np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@dataclass
class _Load:
    """A load into one buffer: its chunks (futures) and its description for errors."""

    buffer: PatchBuffer
    futures: list[concurrent.futures.Future] = field(default_factory=list)


@dataclass(frozen=True)
class _Chunk:
    """One piece of a load: the buffer slots, the database indices and the augmentation seed."""

    slots: np.ndarray
    indices: np.ndarray
    seed: int


class DatabaseBatchGenerator(BufferedGenerator):
    """Label-balanced batches from one purpose of a patch database (see the module docstring).

    Parameters
    ----------
    database
        The :class:`~digipath.data.patch_database.PatchDatabase` (or its folder).
    purpose
        The purpose to draw from (``training``, ``validation`` ...).
    main_buffer_size
        Patches in the main buffer (batches are drawn from it).
    read_buffer_size
        Patches in the read buffer; 0 (default) disables double buffering: :meth:`load` then
        refills the main buffer and waits.
    label_ratios
        ``{database label: ratio}`` of the patches of every load (normalised; a label with
        ratio 0 is never drawn). Default: equal over the labels the purpose holds (that the
        label map lists, with a map).
    label_map
        Database label -> network class (unlisted labels become 255, ignored by losses).
        Default: the database labels are the classes.
    spacing
        Pixel spacing (µm/px) that keys the batches and :attr:`patch_shapes`. Default: the
        database's; required when the database names none.
    channels
        Channel indices to keep (default: all of the database's).
    augmenter
        An :class:`~digipath.augment.AugmenterPool`, run on the loaded uint8 patches. A stored
        patch has no context around it: when the pool asks for a larger extraction shape
        (rotations, scaling down), the patch is mirrored at its borders to that shape first.
    normalizer
        Called on the uint8 patches of a handed-out batch (returns float32), e.g.
        :class:`~digipath.data.normalization.RgbToZeroOne`; ``None``: uint8 batches.
    one_hot
        Hand out labels one-hot encoded (float32 ``(N, K)``); else int64 ``(N,)``.
    dimension_order
        ``"BCHW"`` (default, PyTorch) or ``"BHWC"``.
    buffer_chunk_size
        Most patches moved per step from the read to the main buffer (default: all).
    threads
        Loader threads gathering and augmenting patches (default 1).
    chunk_size
        Patches per loader task; every chunk has its own augmentation seed, so the batches do
        not depend on ``threads``.
    indices
        Draw only from these patch indices of ``purpose`` (e.g. this rank's
        :func:`shard_indices`); default: all.
    batch_size
        Default batch size of iteration (``for batch, indices in generator``).
    seed
        Seed (or generator) of every draw; ``None``: unpredictable.
    name
        Shown in logs and errors (default: the purpose).

    Raises
    ------
    PatchDatabaseError
        When the database is incomplete or has no such purpose.
    SamplingError
        When a label with a ratio > 0 has no patch in the purpose (or in ``indices``), or a
        ratio names a label the database does not have.
    """

    label_mode = "central"

    def __init__(
        self,
        database: PatchDatabase | str | os.PathLike[str],
        purpose: str = "training",
        *,
        main_buffer_size: int,
        read_buffer_size: int = 0,
        label_ratios: Mapping[int, float] | None = None,
        label_map: LabelMap | Mapping[int, int] | None = None,
        spacing: float | None = None,
        channels: Sequence[int] | None = None,
        augmenter=None,
        normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
        one_hot: bool = True,
        dimension_order: str = "BCHW",
        buffer_chunk_size: int | None = None,
        threads: int = 1,
        chunk_size: int = 1024,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int | None = None,
        seed: np.random.Generator | int | None = None,
        name: str | None = None,
    ) -> None:
        self.database = database if isinstance(database, PatchDatabase) else PatchDatabase(database)
        self.purpose = purpose
        self.name = name or purpose
        folder = self.database.folder
        self.database.count(purpose)  # PatchDatabaseError naming the purposes it has
        for what, value, low in (
            ("main_buffer_size", main_buffer_size, 1),
            ("read_buffer_size", read_buffer_size, 0),
            ("threads", threads, 1),
            ("chunk_size", chunk_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
        dimension = str(dimension_order).upper()
        if dimension not in DIMENSION_ORDERS:
            raise ValueError(
                f"dimension_order must be one of {DIMENSION_ORDERS}, got {dimension_order!r}"
            )
        self.dimension_order = dimension
        spacing = self.database.spacing if spacing is None else spacing
        if spacing is None:
            raise ValueError(
                f"{folder}: the database names no spacing; give spacing= (µm/px) to key the batches"
            )
        self.spacing = float(spacing)
        self.patch_shapes = {self.spacing: tuple(self.database.patch_shape)}
        if channels is None:
            self.channels = tuple(range(self.database.channels))
            self._select = None
        else:
            self.channels = tuple(int(c) for c in channels)
            bad = [c for c in self.channels if not 0 <= c < self.database.channels]
            if bad or not self.channels:
                raise ValueError(
                    f"{folder}: channels {list(self.channels)} must be indices into the "
                    f"database's {self.database.channels} channels"
                )
            self._select = list(self.channels)
        if label_map is not None and not isinstance(label_map, LabelMap):
            label_map = LabelMap(label_map)
        self.label_map = label_map
        self.classes = label_map.classes if label_map is not None else len(self.database.classes)

        # the patches to draw from, by database label
        labels = np.asarray(self.database.labels(purpose))
        if indices is None:
            pool = np.arange(len(labels), dtype=np.int64)
        else:
            pool = np.unique(np.asarray(indices, dtype=np.int64).reshape(-1))
            if len(pool) and (pool[0] < 0 or pool[-1] >= len(labels)):
                raise IndexError(f"{folder}: purpose {purpose!r} has {len(labels)} patches")
        present = {int(v): pool[labels[pool] == v] for v in np.unique(labels[pool])}
        if label_ratios is None:  # equal over the labels held (and mapped, with a map)
            mapped = present if label_map is None else set(label_map.mapping)
            label_ratios = {label: 1.0 for label in present if label in mapped}
        ratios = {int(k): float(v) for k, v in label_ratios.items()}
        for label, ratio in ratios.items():
            if not 0 <= label < len(self.database.classes):
                raise SamplingError(
                    f"{folder}: label ratio for label {label}, but the database's labels are "
                    f"0 .. {len(self.database.classes) - 1} ({', '.join(self.database.classes)})"
                )
            if not np.isfinite(ratio) or ratio < 0:
                raise SamplingError(f"{self.name}: label ratio {label}: {ratio} is not >= 0")
            if ratio > 0 and label not in present:
                raise SamplingError(
                    f"{folder}: purpose {purpose!r} holds no patch of label {label} "
                    f"({self.database.classes[label]!r}) to draw; set its ratio to 0"
                )
        self.label_ratios = {k: v for k, v in sorted(ratios.items()) if v > 0}
        if not self.label_ratios:
            raise SamplingError(f"{folder}: {self.name}: every label ratio is zero")
        self._members = {label: present[label] for label in self.label_ratios}
        self._cycles: dict[int, np.ndarray] = {}
        self._cursors: dict[int, int] = {}

        self.main_buffer_size = int(main_buffer_size)
        self.read_buffer_size = int(read_buffer_size)
        self.buffer_chunk_size = buffer_chunk_size
        self.augmenter = augmenter
        self.normalizer = normalizer
        self.one_hot = bool(one_hot)
        self.threads = int(threads)
        self.chunk_size = int(chunk_size)
        self.batch_size = batch_size
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        # shuffles and partitions draw from their own stream, as in BatchGenerator
        self._order_rng = np.random.default_rng(self.rng.integers(0, 2**63 - 1))
        self.main: PatchBuffer | None = None
        self.read: PatchBuffer | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loads: list[_Load] = []
        self._filled = False
        self._local = threading.local()

    # -- life cycle -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran (and :meth:`stop` did not)."""
        return self.main is not None

    @property
    def double_buffered(self) -> bool:
        """Whether a read buffer is filled in the background."""
        return self.read_buffer_size > 0

    def start(self) -> None:
        """Create the buffers and the loader threads (idempotent)."""
        if self.started:
            return
        layout = BufferLayout.create(
            self.main_buffer_size, self.patch_shapes, len(self.channels), False
        )
        main = PatchBuffer(layout, chunk_size=self.buffer_chunk_size, rng=self._order_rng)
        read = None
        if self.double_buffered:
            read_layout = BufferLayout.create(
                self.read_buffer_size, self.patch_shapes, len(self.channels), False
            )
            read = PatchBuffer(read_layout, chunk_size=self.buffer_chunk_size, rng=self._order_rng)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.threads, thread_name_prefix=f"digipath-{self.name}-loader"
        )
        self.main, self.read = main, read
        self._names = {id(main): "main", **({id(read): "read"} if read is not None else {})}
        logger.info(
            "%s: %d-patch main buffer%s from %s (%s, %d patches)", self.name,
            self.main_buffer_size,
            f", {self.read_buffer_size}-patch read buffer" if read is not None else "",
            self.database.folder, self.purpose, sum(len(m) for m in self._members.values()),
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the loader threads and drop the buffers (idempotent; never raises)."""
        loads, self._loads = self._loads, []
        for load in loads:
            for future in load.futures:
                future.cancel()
        if self._executor is not None:
            try:
                self._executor.shutdown(wait=True, cancel_futures=True)
            except Exception:
                logger.exception("%s: stopping the loader threads failed", self.name)
            self._executor = None
        self.main = self.read = None
        self._filled = False

    def step(self) -> None:
        """Nothing to select in a database (the images were chosen when it was written)."""
        self._require_started()

    # -- planning ---------------------------------------------------------------------------

    def _draw(self, label: int, count: int) -> np.ndarray:
        """The next ``count`` patches of ``label`` from its shuffled cycle."""
        members = self._members[label]
        parts = []
        while count > 0:
            cycle = self._cycles.get(label)
            cursor = self._cursors.get(label, 0)
            if cycle is None or cursor >= len(cycle):
                cycle = self._cycles[label] = members[self.rng.permutation(len(members))]
                cursor = 0
            take = min(count, len(cycle) - cursor)
            parts.append(cycle[cursor : cursor + take])
            self._cursors[label] = cursor + take
            count -= take
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _plan(self, slots: np.ndarray) -> list[_Chunk]:
        """Which patch goes to which slot, by label ratio, in chunks with their seeds."""
        counts = distribute_population(len(slots), self.label_ratios, self.rng)
        chosen = np.concatenate([self._draw(label, n) for label, n in counts.items()])
        chosen = chosen[self.rng.permutation(len(chosen))]  # labels mixed over the slots
        chunks = []
        for start in range(0, len(slots), self.chunk_size):
            stop = start + self.chunk_size
            seed = int(self.rng.integers(0, 2**63 - 1))
            chunks.append(_Chunk(slots[start:stop], chosen[start:stop], seed))
        return chunks

    # -- loading ----------------------------------------------------------------------------

    def _thread_augmenter(self):
        """This loader thread's copy of the augmenter (augmenters hold their current draw)."""
        if self.augmenter is None:
            return None
        held = getattr(self._local, "augmenter", None)
        if held is None or held[0] is not self.augmenter:
            held = self._local.augmenter = (self.augmenter, copy.deepcopy(self.augmenter))
        return held[1]

    def _produce(self, chunk: _Chunk) -> Slots:
        """Gather, select channels, map labels and augment one chunk (in a loader thread)."""
        patches = self.database.patches(self.purpose, chunk.indices)
        labels = np.asarray(self.database.labels(self.purpose))[chunk.indices]
        if self._select is not None:
            patches = np.ascontiguousarray(patches[..., self._select])
        if self.label_map is not None:
            labels = self.label_map(labels)
        augmenter = self._thread_augmenter()
        if augmenter is not None:
            target = tuple(self.database.patch_shape)
            rows, cols = augmenter.input_shape(target)
            if rows > target[0] or cols > target[1]:
                patches = mirror_pad(patches, (rows, cols))
            patches, _ = augmenter.process(
                patches, None, shapes=target, rng=np.random.default_rng(chunk.seed)
            )
            if patches.dtype != np.uint8:
                patches = np.clip(np.rint(patches), 0, 255).astype(np.uint8)
        return Slots({self.spacing: patches}, labels.astype(np.uint8))

    def _run(self, buffer: PatchBuffer, chunk: _Chunk) -> None:
        try:
            data = self._produce(chunk)
            buffer.slots.put(chunk.slots, data)
        except Exception as error:
            raise PatchDatabaseError(
                f"{self.database.folder}: {self.name}: loading {len(chunk.slots)} patches of "
                f"purpose {self.purpose!r} into the {self._names.get(id(buffer), '')} buffer "
                f"failed: {type(error).__name__}: {error}"
            ) from error

    def _start_load(self, buffer: PatchBuffer, count: int, background: bool) -> None:
        self._wait_for(buffer)
        if count > buffer.size:
            raise SamplingError(
                f"{self.name}: cannot load {count} patches into a {buffer.size}-slot buffer"
            )
        slots = buffer.claim(count)
        buffer.fresh(slots)
        assert self._executor is not None
        load = _Load(buffer)
        for chunk in self._plan(np.asarray(slots, dtype=np.int64)):
            load.futures.append(self._executor.submit(self._run, buffer, chunk))
        self._loads.append(load)
        if not background:
            self._wait_for(buffer)

    def wait(self) -> None:
        """Wait for the background loads to finish; raise what they raised.

        Raises
        ------
        PatchDatabaseError
            When gathering or augmenting patches failed (names the database folder).
        """
        self._wait_for(None)

    def _wait_for(self, buffer: PatchBuffer | None) -> None:
        """Wait for the loads into ``buffer`` (``None``: all of them); re-raise their errors."""
        mine = [load for load in self._loads if buffer is None or load.buffer is buffer]
        error: BaseException | None = None
        for load in mine:
            pending = set(load.futures)
            while pending:  # short waits keep Ctrl-C responsive
                _, pending = concurrent.futures.wait(pending, timeout=0.2)
            self._loads.remove(load)
            for future in load.futures:
                if error is None and not future.cancelled() and future.exception() is not None:
                    error = future.exception()
        if error is not None:
            raise error

    def _swapped(self) -> None:
        self._names = {id(self.main): "main", id(self.read): "read"}

    def _loading(self, buffer: PatchBuffer | None) -> bool:
        return buffer is not None and any(load.buffer is buffer for load in self._loads)

    def ping(self) -> None:
        """Raise now what a finished background load raised (nothing else to keep alive)."""
        self._require_started()
        for load in list(self._loads):
            done = all(future.done() for future in load.futures)
            if done and any(not f.cancelled() and f.exception() is not None for f in load.futures):
                self._wait_for(load.buffer)

    # -- batches ----------------------------------------------------------------------------

    def _hand_out(self, slots: Slots) -> dict[float, dict[str, np.ndarray]]:
        patches = slots.patches[self.spacing]
        channels_first = self.dimension_order == "BCHW"
        if channels_first:  # on uint8, before normalising makes it 4 times larger
            patches = to_channels_first(patches)
        if self.normalizer is not None:
            patches = self.normalizer(patches)
        labels = np.asarray(slots.labels)
        entry = {
            "patches": patches,
            "labels": one_hot(labels, self.classes) if self.one_hot else labels.astype(np.int64),
        }
        return {self.spacing: entry}

    # -- boosting feedback ------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"DatabaseBatchGenerator({self.name!r}, {str(self.database.folder)!r}, "
            f"{self.purpose!r}, main {self.main_buffer_size}, read {self.read_buffer_size})"
        )


def mirror_pad(patches: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(N, rows, cols, C)`` patches mirrored at their borders to ``shape`` ``(rows, cols)``.

    The patch stays centred (odd extra pixels go to the bottom and right); the mirror does not
    repeat the border pixel (OpenCV's ``BORDER_REFLECT_101``). Used to give augmenters that
    need context (rotation, scaling down) pixels around a stored patch.
    """
    rows, cols = patches.shape[1:3]
    top, left = (shape[0] - rows) // 2, (shape[1] - cols) // 2
    bottom, right = shape[0] - rows - top, shape[1] - cols - left
    out = np.empty((len(patches), shape[0], shape[1], patches.shape[3]), patches.dtype)
    for index, patch in enumerate(patches):
        padded = cv2.copyMakeBorder(
            np.ascontiguousarray(patch), max(top, 0), max(bottom, 0), max(left, 0),
            max(right, 0), cv2.BORDER_REFLECT_101,
        )  # fmt: skip
        out[index] = padded.reshape(out.shape[1:])
    return out
