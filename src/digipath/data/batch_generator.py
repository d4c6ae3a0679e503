"""The batch generator: label-balanced training batches from many slides, by many processes.

:class:`BatchGenerator` keeps a pool of open images (selected by category and label ratios, see
:class:`~digipath.data.batch_sampler.BatchSampler`), split over worker processes
(:mod:`digipath.data.workers`). The workers sample, augment, map labels and make weight maps,
and write the patches into shared-memory buffers (:mod:`digipath.data.buffer`):

* the **main** buffer, from which :meth:`BatchGenerator.batch` hands out batches;
* the optional **read** buffer (``read_buffer_size > 0``), which :meth:`BatchGenerator.load`
  fills in the background while training reads the main buffer, and from which
  :meth:`BatchGenerator.transfer` moves patches into the main buffer, keeping the difficult
  ones when boosting.

Buffers hold uint8; a batch is normalised, one-hot encoded and laid out ``(N, C, H, W)`` (or
``(N, H, W, C)``) only when it is handed out. A batch is a dict keyed by spacing (µm/px):
``{spacing: {"patches": ..., "labels": ..., "weights": ...}}``; several spacings are the same
locations seen at several resolutions.

Life cycle (the DigitalPathology names)::

    generator.start()        # buffers and worker processes
    generator.step()         # select and open the pool of images (again: a new selection)
    generator.fill()         # fill the main buffer
    generator.load()         # background: fill the read buffer
    batch, indices = generator.batch(16)
    generator.update(indices, errors)      # per-patch errors in [0, 1] (boosting)
    generator.transfer(count, threshold)   # read -> main, easy patches replaced first
    generator.stop()

or, the Pythonic way, ``with BatchGenerator(...) as generator: for batch, indices in
generator.batches(16): ...`` and :class:`~digipath.data.torch_dataset.BatchDataset` for a
torch ``DataLoader``.

Reproducibility: every draw comes from the generator's seed, in a fixed order; each sampling
request carries its own seed, so the batches of a seeded run are the same with any number of
processes.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from digipath.data.batch_sampler import BatchSampler, Source
from digipath.data.buffer import BufferLayout, PatchBuffer, Slots
from digipath.data.buffered import BufferedGenerator, boosting_transfer_count  # noqa: F401 (re-export)
from digipath.data.distribution import distribute_population
from digipath.data.labels import LabelMap
from digipath.data.workers import LocalWorker, Task, WorkerPool, WorkerSetup
from digipath.errors import (
    DigipathError,
    PatchBufferError,
    SamplingError,
    SourceError,
    WorkerError,
)

logger = logging.getLogger(__name__)

DIMENSION_ORDERS = ("BCHW", "BHWC")
"""Layouts of handed-out batches: channels first (PyTorch) or last."""


def one_hot(labels: np.ndarray, classes: int, axis: int = 1) -> np.ndarray:
    """One-hot float32 encoding of integer labels, the class axis inserted at ``axis``.

    Labels outside ``0 .. classes - 1`` (the ignore value 255) encode as all zeros.

    Parameters
    ----------
    labels
        (N,) or (N, rows, cols) integer labels.
    classes
        Number of classes ``K``.
    axis
        Where the class axis goes: 1 gives (N, K) or (N, K, rows, cols); -1 gives
        (N, rows, cols, K).
    """
    eye = np.vstack([np.eye(classes, dtype=np.float32), np.zeros((1, classes), np.float32)])
    index = np.where(labels < classes, labels, classes).astype(np.intp)
    encoded = eye[index]  # (..., K)
    if axis == -1 or labels.ndim == 1:
        return encoded
    return np.ascontiguousarray(np.moveaxis(encoded, -1, axis))


def to_channels_first(patches: np.ndarray) -> np.ndarray:
    """``(N, H, W, C)`` patches as a contiguous ``(N, C, H, W)`` array of the same dtype.

    OpenCV's channel split per patch (SIMD de-interleaving) is 3-6 times faster than a numpy
    transpose copy for a few interleaved channels.
    """
    count, rows, cols, channels = patches.shape
    if not 1 < channels <= 4 or patches.dtype not in (np.uint8, np.uint16, np.float32):
        return np.ascontiguousarray(patches.transpose(0, 3, 1, 2))
    out = np.empty((count, channels, rows, cols), patches.dtype)
    for index in range(count):
        for channel, plane in enumerate(cv2.split(patches[index])):
            out[index, channel] = plane
    return out


@dataclass
class _Load:
    """A background load into one buffer: its thread and what it raised."""

    buffer: PatchBuffer
    thread: threading.Thread | None = None
    error: BaseException | None = None


def _stop_resources(pool: WorkerPool | None, local: LocalWorker | None, buffers: list) -> None:
    """Stop workers, close samplers and free shared buffers; never raises."""
    if pool is not None:
        try:
            pool.stop()
        except Exception:
            logger.exception("stopping the sampling workers failed")
    if local is not None:
        try:
            local.close_all()
        except Exception:
            logger.exception("closing the patch samplers failed")
    for buffer in buffers:
        try:
            buffer.close()
        except Exception:
            logger.exception("freeing a shared patch buffer failed")


class BatchGenerator(BufferedGenerator):
    """Label-balanced batches from a pool of images, sampled by worker processes.

    Parameters
    ----------
    sources
        ``{category: sources}`` (:class:`~digipath.data.config.PatchSource` items: image,
        mask, stat paths and declared labels), e.g. ``DataConfig.collection()[purpose]``.
    label_ratios
        ``{mask value: ratio}`` of the patches in every request (normalised).
    patch_shapes
        ``{spacing in µm/px: (rows, cols)}``: one patch per spacing and location.
    mask_spacing
        Spacing (µm/px) of the mask level the statistics describe.
    main_buffer_size
        Patches in the main buffer (batches are drawn from it).
    read_buffer_size
        Patches in the read buffer; 0 (default) disables double buffering: :meth:`load` then
        refills the main buffer and waits.
    buffer_chunk_size
        Most patches moved per step from the read to the main buffer (default: all).
    category_ratios
        ``{category: ratio}`` of the open images (default: equal).
    tolerance
        Relative spacing tolerance (0.25 = ±25 %).
    channels
        Channel indices to keep (default: all channels of the images).
    label_mode
        ``"central"`` (one class per patch), ``"synthesize"`` or ``"load"`` (label maps).
    label_map
        Mask value -> network class (unlisted values become 255, ignored by losses).
    strict_selection
        Every label with a ratio > 0 must be declared by an open image
        (:class:`~digipath.errors.FailedSourceSelectionError` otherwise).
    create_stats
        Save statistics built from masks next to the sources' ``stat`` paths.
    fill
        Fill value of patches reaching outside an image (default: the reader's, white).
    augmenter
        An :class:`~digipath.augment.AugmenterPool`, run in the workers. Patches are sampled
        at the enlarged shapes it asks for and cropped back to ``patch_shapes``.
    normalizer
        Called on the uint8 patches of a handed-out batch (returns float32), e.g.
        :class:`~digipath.data.normalization.RgbToZeroOne`; ``None``: uint8 batches.
    patch_weights, batch_weights
        Weight mappers (:mod:`digipath.data.weights`): per patch in the workers, and over the
        whole batch when it is handed out (needs ``patch_weights``, whose maps mark validity).
    one_hot
        Hand out labels one-hot encoded (float32), class axis after the batch axis.
    dimension_order
        ``"BCHW"`` (default, PyTorch) or ``"BHWC"``.
    processes
        Worker processes; 0 samples in the calling process (same results, no parallelism).
    pool_size
        Most images open at once (default: all); bounds memory.
    ipc_chunk_size
        Most patches per sampling request split over the images (each chunk follows the label
        ratios).
    join_timeout, response_timeout, poll_timeout
        Seconds: how long :meth:`stop` waits for a worker to exit; how long any wait for a
        worker's answer lasts before :class:`~digipath.errors.WorkerError`; how long an idle
        worker waits for a request before it exits by itself.
    strict
        ``True``: a source that cannot be opened or read raises; ``False``: it is reported,
        dropped from the pool and its patches are drawn from the other images.
    prefetch
        With a read buffer and worker processes: keep a second read buffer loading while the
        first waits for its transfer, so the workers never wait for each other or for the
        training loop at a transfer (used by :meth:`batches`; one more buffer of memory).
        The batches are the same as without it.
    batch_size
        Default batch size of iteration (``for batch, indices in generator``).
    seed
        Seed (or generator) of every draw; ``None``: unpredictable.
    name
        Shown in logs, process names and errors (e.g. the purpose).
    """

    def __init__(
        self,
        sources: Mapping[str, Sequence[Source]],
        *,
        label_ratios: Mapping[int, float],
        patch_shapes: Mapping[float, tuple[int, int]],
        mask_spacing: float,
        main_buffer_size: int,
        read_buffer_size: int = 0,
        buffer_chunk_size: int | None = None,
        category_ratios: Mapping[str, float] | None = None,
        tolerance: float = 0.25,
        channels: Sequence[int] | None = None,
        label_mode: str = "central",
        label_map: LabelMap | Mapping[int, int] | None = None,
        strict_selection: bool = False,
        create_stats: bool = False,
        fill: float | None = None,
        augmenter=None,
        normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
        patch_weights: Callable[[np.ndarray], np.ndarray] | None = None,
        batch_weights: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        one_hot: bool = True,
        dimension_order: str = "BCHW",
        processes: int = 0,
        pool_size: int | None = None,
        ipc_chunk_size: int = 10000,
        join_timeout: float = 30.0,
        response_timeout: float = 600.0,
        poll_timeout: float = 1800.0,
        strict: bool = True,
        prefetch: bool = False,
        batch_size: int | None = None,
        seed: np.random.Generator | int | None = None,
        name: str = "training",
    ) -> None:
        self.name = name
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.planner = BatchSampler(
            sources,
            label_ratios=label_ratios,
            patch_shapes=patch_shapes,
            mask_spacing=mask_spacing,
            category_ratios=category_ratios,
            tolerance=tolerance,
            label_mode=label_mode,
            label_map=label_map,
            strict_selection=strict_selection,
            create_stats=create_stats,
            pool_size=pool_size,
            fill=fill,
            rng=self.rng,
        )
        self.patch_shapes = {float(s): (int(r), int(c)) for s, (r, c) in patch_shapes.items()}
        self.label_mode = label_mode
        mapping = self.planner.sampler_options["label_map"]
        self.classes = (
            mapping.classes if mapping is not None else max(self.planner.label_ratios) + 1
        )
        dimension = str(dimension_order).upper()
        if dimension not in DIMENSION_ORDERS:
            raise ValueError(
                f"dimension_order must be one of {DIMENSION_ORDERS}, got {dimension_order!r}"
            )
        self.dimension_order = dimension
        for what, value, low in (
            ("main_buffer_size", main_buffer_size, 1),
            ("read_buffer_size", read_buffer_size, 0),
            ("processes", processes, 0),
            ("ipc_chunk_size", ipc_chunk_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
        for what, value in (
            ("join_timeout", join_timeout),
            ("response_timeout", response_timeout),
            ("poll_timeout", poll_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{what} must be > 0 seconds, got {value!r}")
        if batch_weights is not None and patch_weights is None:
            raise ValueError("batch_weights needs patch_weights (its maps mark valid pixels)")
        if patch_weights is not None and label_mode == "central":
            raise ValueError("weight maps need label maps: label mode 'synthesize' or 'load'")
        self.main_buffer_size = int(main_buffer_size)
        self.read_buffer_size = int(read_buffer_size)
        self.buffer_chunk_size = buffer_chunk_size
        self.channels = None if channels is None else tuple(int(c) for c in channels)
        self.augmenter = augmenter
        self.normalizer = normalizer
        self.patch_weights = patch_weights
        self.batch_weights = batch_weights
        self.one_hot = bool(one_hot)
        self.processes = int(processes)
        self.ipc_chunk_size = int(ipc_chunk_size)
        self.join_timeout = float(join_timeout)
        self.response_timeout = float(response_timeout)
        self.poll_timeout = float(poll_timeout)
        self.strict = bool(strict)
        self.prefetch = bool(prefetch)
        self.batch_size = batch_size
        # shuffles and partitions draw from their own stream, so that when loads are planned
        # (prefetching or not) does not change the batches
        self._order_rng = np.random.default_rng(self.rng.integers(0, 2**63 - 1))
        self.main: PatchBuffer | None = None
        self.read: PatchBuffer | None = None
        self._pool: WorkerPool | None = None
        self._local: LocalWorker | None = None
        self._ids: dict[Source, int] = {}
        self._open: list[Source] = []
        self._task = 0
        self._loads: list[_Load] = []
        self._state = threading.Lock()  # guards the pool of open images against loader threads
        self._spare: PatchBuffer | None = None
        self._finalizer: weakref.finalize | None = None
        self._filled = False

    # -- life cycle -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran (and :meth:`stop` did not)."""
        return self.main is not None

    @property
    def multiprocess(self) -> bool:
        """Whether worker processes sample (``processes > 0``)."""
        return self.processes > 0

    @property
    def double_buffered(self) -> bool:
        """Whether a read buffer is filled in the background."""
        return self.read_buffer_size > 0

    @property
    def workers(self) -> list[int | None]:
        """Process ids of the worker processes (empty without processes)."""
        return self._pool.pids if self._pool is not None else []

    @property
    def open_sources(self) -> list[Source]:
        """The images open now, sorted."""
        return list(self._open)

    def _image_channels(self) -> int:
        if self.channels is not None:
            return len(self.channels)
        from digipath.io import ImageReader

        problems = []
        for source in (s for items in self.planner.sources.values() for s in items):
            try:
                with ImageReader(source.image) as reader:
                    return int(reader.channels)
            except DigipathError as error:  # unreadable: step() reports or drops it
                problems.append(str(error))
        raise SamplingError(f"{self.name}: no image can be read: {'; '.join(problems[:3])}")

    def start(self) -> None:
        """Create the buffers and the worker processes (idempotent)."""
        if self.started:
            return
        label_maps = self.label_mode != "central"
        channels = self._image_channels()
        shared = self.multiprocess
        buffers: list[PatchBuffer] = []
        try:
            layout = BufferLayout.create(
                self.main_buffer_size, self.patch_shapes, channels, label_maps,
                self.patch_weights is not None,
            )  # fmt: skip
            main = PatchBuffer(
                layout, shared=shared, chunk_size=self.buffer_chunk_size, rng=self._order_rng
            )
            buffers.append(main)
            read = spare = None
            if self.double_buffered:
                read_layout = BufferLayout.create(
                    self.read_buffer_size, self.patch_shapes, channels, label_maps,
                    self.patch_weights is not None,
                )  # fmt: skip
                read = PatchBuffer(
                    read_layout, shared=shared, chunk_size=self.buffer_chunk_size,
                    rng=self._order_rng,
                )  # fmt: skip
                buffers.append(read)
                if self.prefetch and shared and read_layout.size == layout.size:
                    spare = PatchBuffer(
                        read_layout, shared=True, chunk_size=self.buffer_chunk_size,
                        rng=self._order_rng,
                    )  # fmt: skip
                    buffers.append(spare)
            setup = WorkerSetup(
                label_ratios=dict(self.planner.label_ratios),
                sampler_options=dict(self.planner.sampler_options),
                patch_shapes=self.patch_shapes,
                augmenter=self.augmenter,
                patch_weights=self.patch_weights,
                channels=self.channels,
                buffers={str(k): buf.spec() for k, buf in enumerate(buffers)} if shared else {},
                poll_timeout=self.poll_timeout,
            )
            pool = local = None
            if shared:
                pool = WorkerPool(
                    self.processes, setup, response_timeout=self.response_timeout,
                    join_timeout=self.join_timeout, name=self.name,
                )  # fmt: skip
                self._finalizer = weakref.finalize(self, _stop_resources, pool, None, buffers)
                pool.start()
            else:
                views = {str(k): buf.slots for k, buf in enumerate(buffers)}
                local = LocalWorker(setup, views)
                self._finalizer = weakref.finalize(self, _stop_resources, None, local, buffers)
        except BaseException:
            if self._finalizer is not None:
                self._finalizer()
            else:
                _stop_resources(None, None, buffers)
            raise
        self.main, self.read, self._spare = main, read, spare
        self._pool, self._local = pool, local
        self._names = {id(buffer): str(k) for k, buffer in enumerate(buffers)}
        logger.info(
            "%s: %d-patch main buffer%s, %s", self.name, self.main_buffer_size,
            f", {self.read_buffer_size}-patch read buffer" if read else "",
            f"{self.processes} worker processes" if pool else "sampling in-process",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the workers and free the shared memory (idempotent; never raises)."""
        loads, self._loads = self._loads, []
        if self._finalizer is not None:  # workers first: a loader waiting on them then ends
            self._finalizer()
            self._finalizer = None
        for load in loads:
            if load.thread is not None:
                load.thread.join(self.join_timeout)
        self.main = self.read = self._spare = None
        self._pool = self._local = None
        self._open = []
        self._filled = False

    # -- the pool of open images ------------------------------------------------------------

    def _drop(self, source: Source, reason: str) -> None:
        """Take a failed source out of the pool and of future selections (non-strict)."""
        logger.warning("%s: dropping %s from the pool: %s", self.name, source.image, reason)
        with self._state:
            for items in self.planner.sources.values():
                if source in items:
                    items.remove(source)
            if source not in self._open:
                return
            self._open = [s for s in self._open if s != source]
        if self._local is not None:
            self._local.close(self._ids[source])
        elif self._pool is not None:
            self._pool.close([self._ids[source]])

    def step(self) -> None:
        """Select the pool of open images again; keep those still selected, open the new ones.

        Raises
        ------
        SourceError
            (strict) when an image cannot be opened; :class:`~digipath.errors.WorkerError`
            when a worker fails.
        """
        self._require_started()
        self.wait()
        for _ in range(1 + sum(len(items) for items in self.planner.sources.values())):
            selected = self.planner.select()
            dropped = [s for s in self._open if s not in selected]
            new = [s for s in selected if s not in self._open]
            for source in new:
                self._ids.setdefault(source, len(self._ids))
            failed = self._open_sources(dropped, new)
            self._open = sorted(s for s in selected if s not in failed)
            if not failed:
                break
            for source, reason in failed.items():
                if self.strict:
                    raise SourceError(
                        source.image, f"cannot be opened for sampling:\n{reason.rstrip()}"
                    )
                self._drop(source, reason.strip().splitlines()[-1])
        if not self._open:
            raise SamplingError(f"{self.name}: no image could be opened for sampling")
        logger.debug("%s: open images %s", self.name, [s.image for s in self._open])

    def _open_sources(self, dropped: list[Source], new: list[Source]) -> dict[Source, str]:
        if self._pool is not None:
            self._pool.close([self._ids[s] for s in dropped])
            failures = self._pool.open({self._ids[s]: s for s in new})
            by_id = {self._ids[s]: s for s in new}
            return {by_id[i]: reason for i, reason in failures.items()}
        assert self._local is not None
        for source in dropped:
            self._local.close(self._ids[source])
        failed: dict[Source, str] = {}
        for source in new:
            try:
                self._local.open(self._ids[source], source)
            except Exception as error:
                failed[source] = f"{type(error).__name__}: {error}"
        return failed

    # -- loading ----------------------------------------------------------------------------

    def _tasks(self, buffer: str, slots: np.ndarray) -> list[Task]:
        """Plan the requests filling ``slots`` of ``buffer``: chunks, labels, images, seeds."""
        tasks: list[Task] = []
        offset = 0
        total = len(slots)
        while offset < total:
            size = min(self.ipc_chunk_size, total - offset)
            for source, counts in self.planner.plan(size, self._open).items():
                count = sum(counts.values())
                if not count:
                    continue
                self._task += 1
                tasks.append(
                    Task(
                        id=self._task,
                        source=self._ids[source],
                        counts=dict(counts),
                        buffer=buffer,
                        slots=tuple(int(v) for v in slots[offset : offset + count]),
                        seed=int(self.rng.integers(0, 2**63 - 1)),
                    )
                )
                offset += count
        return tasks

    def _replan(self, failed: list[tuple[Task, object, str]]) -> list[Task]:
        """Non-strict: drop the sources of failed requests and redraw their patches elsewhere."""
        tasks: list[Task] = []
        for task, source, reason in failed:
            if self.strict or source is None:
                raise WorkerError(
                    "failed to sample", source=getattr(source, "image", None),
                    remote_traceback=reason,
                )  # fmt: skip
            self._drop(source, reason.strip().splitlines()[-1])
            rng = np.random.default_rng(task.seed)
            offset = 0
            for label, count in task.counts.items():
                holders = [s for s in self._open if label in s.labels]
                if not holders:
                    raise SamplingError(
                        f"{self.name}: no open image declares label {label} after dropping "
                        f"{getattr(source, 'image', source)}"
                    )
                shares = distribute_population(count, [1.0] * len(holders), rng)
                for holder, share in zip(holders, shares, strict=True):
                    if not share:
                        continue
                    self._task += 1
                    tasks.append(
                        Task(
                            self._task, self._ids[holder], {label: share}, task.buffer,
                            task.slots[offset : offset + share],
                            int(rng.integers(0, 2**63 - 1)),
                        )
                    )  # fmt: skip
                    offset += share
        return tasks

    def _execute(self, tasks: list[Task]) -> None:
        """Run ``tasks`` to completion (workers or in-process), redrawing failed ones."""
        while tasks:
            failed: list[tuple[Task, object, str]] = []
            if self._pool is not None:
                for task in tasks:
                    self._pool.submit(task)
                failed = self._pool.collect([task.id for task in tasks])
            else:
                assert self._local is not None
                by_id = {self._ids[s]: s for s in self._open}
                for task in tasks:
                    try:
                        self._local.run(task)
                    except Exception:
                        import traceback

                        failed.append((task, by_id.get(task.source), traceback.format_exc()))
                        if self.strict:
                            raise
            tasks = self._replan(failed) if failed else []

    def _background(self, load: _Load, tasks: list[Task]) -> None:
        try:
            self._execute(tasks)
        except BaseException as error:  # handed to wait()
            load.error = error

    def _start_load(self, buffer: PatchBuffer, count: int, background: bool) -> None:
        self._wait_for(buffer)
        if not self._open:
            self.step()
        if count > buffer.size:
            raise PatchBufferError(
                f"{self.name}: cannot load {count} patches into a {buffer.size}-slot buffer"
            )
        slots = buffer.claim(count)
        buffer.fresh(slots)
        tasks = self._tasks(self._names[id(buffer)], slots)
        if background and self._pool is not None:
            load = _Load(buffer)
            load.thread = threading.Thread(
                target=self._background, args=(load, tasks), name=f"digipath-{self.name}-loader",
                daemon=True,
            )  # fmt: skip
            self._loads.append(load)
            load.thread.start()
        else:
            self._execute(tasks)

    def wait(self) -> None:
        """Wait for the background loads to finish; raise what they raised.

        Raises
        ------
        WorkerError
            When a worker died, failed or did not answer within the response timeout.
        """
        self._wait_for(None)

    def _wait_for(self, buffer: PatchBuffer | None) -> None:
        """Wait for the loads into ``buffer`` (``None``: all of them); re-raise their errors."""
        mine = [load for load in self._loads if buffer is None or load.buffer is buffer]
        error: BaseException | None = None
        for load in mine:
            while load.thread is not None and load.thread.is_alive():
                load.thread.join(0.2)  # short joins keep Ctrl-C responsive
            self._loads.remove(load)
            error = error or load.error
        if error is not None:
            raise error

    def _loading(self, buffer: PatchBuffer | None) -> bool:
        return buffer is not None and any(load.buffer is buffer for load in self._loads)

    def _rotate(self) -> None:
        """Prefetching: the loaded read buffer becomes main, the spare becomes the read buffer
        and the old main buffer starts loading as the spare."""
        assert self.read is not None and self._spare is not None
        self.transfer()  # main <-> read
        self.read, self._spare = self._spare, self.read
        self._start_load(self._spare, self._spare.size, background=True)

    def ping(self) -> None:
        """Check that the worker processes are alive (keeps their poll timers fresh)."""
        self._require_started()
        if self._pool is not None and not self._loads:
            self._pool.ping()
        elif self._pool is not None:
            for pid, alive in zip(self._pool.pids, self._alive(), strict=True):
                if not alive:
                    raise WorkerError("is not alive", pid=pid)

    def _alive(self) -> list[bool]:
        assert self._pool is not None
        return [worker.process.is_alive() for worker in self._pool._workers]

    # -- batches ----------------------------------------------------------------------------

    def _hand_out(self, slots: Slots) -> dict[float, dict[str, np.ndarray]]:
        channels_first = self.dimension_order == "BCHW"
        result: dict[float, dict[str, np.ndarray]] = {}
        for spacing, patches in slots.patches.items():
            if channels_first:  # on uint8, before normalising makes it 4 times larger
                patches = to_channels_first(patches)
            if self.normalizer is not None:
                patches = self.normalizer(patches)
            labels = slots.labels if isinstance(slots.labels, np.ndarray) else slots.labels[spacing]
            entry: dict[str, np.ndarray] = {"patches": patches}
            if slots.weights is not None:
                weights = slots.weights[spacing]
                if self.batch_weights is not None:
                    weights = self.batch_weights(labels, weights)
                entry["weights"] = weights
            if self.one_hot:
                entry["labels"] = one_hot(labels, self.classes, axis=1 if channels_first else -1)
            else:
                entry["labels"] = labels.astype(np.int64)
            result[spacing] = entry
        return result

    def _before_batches(self) -> None:
        if not self._open:
            self.step()

    def _start_prefetch(self) -> None:
        if self._spare is not None and not self._loading(self._spare):
            self._start_load(self._spare, self._spare.size, background=True)

    def _next_pass(self) -> None:
        if self._spare is not None:
            self._rotate()
        else:
            super()._next_pass()

    # -- boosting feedback ------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"BatchGenerator({self.name!r}, {len(self._open)} open images, main "
            f"{self.main_buffer_size}, read {self.read_buffer_size}, {self.processes} processes)"
        )
