"""Sampling workers: processes that host patch samplers and write patches into shared buffers.

A worker hosts several :class:`~digipath.data.sampler.PatchSampler` objects (its share of the
pool of open images) and runs, for each request, the whole per-patch pipeline: sampling at the
extraction shapes the augmenter pool asks for, augmentation, label mapping, weight maps and the
channel selection. It writes the result into slots of a shared-memory
:class:`~digipath.data.buffer.PatchBuffer`; only a short message travels back.

Every request carries its own random seed, drawn by the parent in a fixed order, so the patches
do not depend on which worker ran a request, nor when: a seeded run is reproducible with any
number of processes, including none (:class:`LocalWorker` runs the same code in the calling
process).

Protocol (messages are tuples; the first item names them):

====================  ======================================  ==============================
parent -> worker      meaning                                 worker -> parent
====================  ======================================  ==============================
``open id source``    open a patch sampler                    ``opened id`` / ``failed``
``close id``          close it                                (none)
``sample task``       fill ``task.count`` slots               ``done task.id`` / ``failed``
``ping``              liveness                                ``pong``
``stop``              exit with code 0                        (none)
====================  ======================================  ==============================

``failed`` carries the request, the source image and the formatted remote traceback; the
worker keeps running (the parent decides whether the source is dropped). A worker that gets no
message for ``poll_timeout`` seconds, or whose parent went away, exits by itself. Workers ignore
SIGINT: Ctrl-C reaches the parent, which stops them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

import numpy as np

from digipath.data.buffer import BufferLayout, Slots, attach
from digipath.errors import WorkerError

logger = logging.getLogger(__name__)

SIGNAL_HINTS = {
    signal.SIGKILL: "killed by SIGKILL: most likely the out-of-memory killer; lower the pool "
    "size or the process count",
    signal.SIGSEGV: "crashed (segmentation fault)",
    signal.SIGTERM: "terminated (SIGTERM)",
}


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs, sent once when it starts.

    Attributes
    ----------
    label_ratios
        The sampled labels (to open samplers with).
    sampler_options
        Keyword arguments of :class:`~digipath.data.sampler.PatchSampler`.
    patch_shapes
        ``{spacing: (rows, cols)}`` wanted in the buffer.
    augmenter
        An :class:`~digipath.augment.AugmenterPool` or ``None``.
    patch_weights
        A patch weight mapper (label maps -> weight maps) or ``None``.
    channels
        Channel indices to keep, or ``None`` for all.
    buffers
        ``{buffer name: (segment name, layout)}`` of the shared buffers to write into.
    poll_timeout
        Seconds a worker waits for a message before exiting on its own.
    """

    label_ratios: Mapping[int, float]
    sampler_options: Mapping[str, object]
    patch_shapes: Mapping[float, tuple[int, int]]
    augmenter: object | None = None
    patch_weights: Callable[[np.ndarray], np.ndarray] | None = None
    channels: tuple[int, ...] | None = None
    buffers: Mapping[str, tuple[str, BufferLayout]] = field(default_factory=dict)
    poll_timeout: float = 1800.0


@dataclass(frozen=True)
class Task:
    """One sampling request: ``counts`` patches from one source into given buffer slots.

    Attributes
    ----------
    id
        Request number (unique per generator).
    source
        The id of the source (an open sampler of the worker).
    counts
        ``{mask value: number of patches}``.
    buffer
        Name of the buffer to write into (``"main"`` or ``"read"``).
    slots
        The ``sum(counts.values())`` slot indices written, in order.
    seed
        Seed of everything drawn for this request (positions and augmentation).
    """

    id: int
    source: int
    counts: Mapping[int, int]
    buffer: str
    slots: tuple[int, ...]
    seed: int

    @property
    def count(self) -> int:
        """Number of patches (and slots) of the request."""
        return int(sum(self.counts.values()))


PIECE = 32
"""Most patches sampled and augmented at once: bounds a worker's memory whatever the request
size, and keeps its arrays small enough to be reused instead of freshly mapped (page faults)."""


def pieces(counts: Mapping[int, int], size: int = PIECE) -> list[dict[int, int]]:
    """Split ``{label: count}`` into consecutive parts of at most ``size`` patches."""
    parts: list[dict[int, int]] = []
    current: dict[int, int] = {}
    room = size
    for label, count in counts.items():
        while count > 0:
            take = min(count, room)
            current[label] = current.get(label, 0) + take
            count -= take
            room -= take
            if room == 0:
                parts.append(current)
                current, room = {}, size
    if current:
        parts.append(current)
    return parts


def produce(sampler, counts: Mapping[int, int], rng: np.random.Generator, setup: WorkerSetup):
    """Run the per-patch pipeline on ``sampler``: sample, augment, select channels, weigh.

    Parameters
    ----------
    sampler
        The :class:`~digipath.data.sampler.PatchSampler` of the source.
    counts
        ``{mask value: number of patches}``.
    rng
        Every draw (positions, augmentation) comes from it.
    setup
        Shapes, augmenter, channel selection and weight mapper.

    Returns
    -------
    Slots
        Patches, labels and weight maps at the target ``setup.patch_shapes``.
    """
    augmenter = setup.augmenter
    extraction = (
        augmenter.shapes(setup.patch_shapes) if augmenter is not None else setup.patch_shapes
    )
    samples = sampler.sample(dict(counts), extraction, rng)
    patches = samples.patches
    if setup.channels is not None:
        patches = {spacing: array[..., list(setup.channels)] for spacing, array in patches.items()}
    labels = samples.labels
    if augmenter is not None:
        patches, labels = augmenter.process(patches, labels, shapes=setup.patch_shapes, rng=rng)
    weights = None
    if setup.patch_weights is not None:
        if isinstance(labels, np.ndarray):
            raise WorkerError("weight maps need label maps (label mode 'synthesize' or 'load')")
        weights = {spacing: setup.patch_weights(array) for spacing, array in labels.items()}
    return Slots(patches, labels, weights)


class LocalWorker:
    """Runs requests in the calling process, with the same code the worker processes run."""

    def __init__(self, setup: WorkerSetup, buffers: Mapping[str, Slots]) -> None:
        self.setup = setup
        self.buffers = dict(buffers)
        self.samplers: dict[int, object] = {}

    def open(self, source_id: int, source) -> None:
        from digipath.data.batch_sampler import open_sampler

        self.samplers[source_id] = open_sampler(
            source, self.setup.label_ratios, self.setup.sampler_options
        )

    def close(self, source_id: int) -> None:
        sampler = self.samplers.pop(source_id, None)
        if sampler is not None:
            sampler.close()

    def run(self, task: Task) -> None:
        """Produce the patches of ``task`` piece by piece and write them into its slots."""
        sampler = self.samplers[task.source]
        rng = np.random.default_rng(task.seed)
        slots = np.asarray(task.slots, dtype=np.int64)
        offset = 0
        for counts in pieces(task.counts):
            count = sum(counts.values())
            data = produce(sampler, counts, rng, self.setup)
            self.buffers[task.buffer].put(slots[offset : offset + count], data)
            offset += count

    def close_all(self) -> None:
        for source_id in list(self.samplers):
            self.close(source_id)


def worker_main(index: int, connection: Connection, setup: WorkerSetup) -> None:
    """The loop of a worker process (the target of :class:`multiprocessing.Process`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("DIGIPATH_THREADS", "1")  # one process per core: no decode threads
    try:
        import cv2

        cv2.setNumThreads(1)  # one process per core already
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass
    segments = {}
    views = {}
    for name, spec in setup.buffers.items():
        segments[name], views[name] = attach(spec)
    local = LocalWorker(setup, views)
    sources: dict[int, object] = {}
    code = 0
    try:
        while True:
            if not connection.poll(setup.poll_timeout):
                code = 2  # nobody asked for anything: the parent is gone or stuck
                break
            try:
                message = connection.recv()
            except (EOFError, OSError):
                break  # the parent closed its end
            kind = message[0]
            if kind == "stop":
                break
            if kind == "ping":
                connection.send(("pong",))
                continue
            if kind == "close":
                local.close(message[1])
                sources.pop(message[1], None)
                continue
            try:
                if kind == "open":
                    _, source_id, source = message
                    sources[source_id] = source
                    local.open(source_id, source)
                    connection.send(("opened", source_id))
                elif kind == "sample":
                    task = message[1]
                    local.run(task)
                    connection.send(("done", task.id))
                else:
                    connection.send(("failed", message, None, f"unknown message {kind!r}"))
            except Exception:
                source = sources.get(message[1] if kind == "open" else message[1].source)
                image = getattr(source, "image", None)
                connection.send(("failed", message, image, traceback.format_exc()))
    finally:
        local.close_all()
        views.clear()
        local.buffers.clear()
        for segment in segments.values():
            try:
                segment.close()
            except BufferError:
                pass
        connection.close()
    sys.exit(code)


def describe_exit(exitcode: int | None) -> str:
    """Words for a worker's exit code (negative: the signal that killed it)."""
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            number = signal.Signals(-exitcode)
        except ValueError:
            return f"was killed by signal {-exitcode}"
        hint = SIGNAL_HINTS.get(number, f"killed by {number.name}")
        return f"died with exit code {exitcode} ({hint})"
    if exitcode == 2:
        return "exited on its own after its poll timeout without any request"
    return f"exited with code {exitcode}"


@dataclass
class _Process:
    index: int
    process: multiprocessing.process.BaseProcess
    connection: Connection
    sources: set[int] = field(default_factory=set)
    inflight: dict[int, Task] = field(default_factory=dict)
    opening: set[int] = field(default_factory=set)


class WorkerPool:
    """A set of worker processes (spawned) sharing the pool of open images.

    Parameters
    ----------
    count
        Number of processes (>= 1).
    setup
        What each worker needs (:class:`WorkerSetup`).
    response_timeout
        Seconds to wait for an answer before raising :class:`~digipath.errors.WorkerError`.
    join_timeout
        Seconds :meth:`stop` waits for a worker to exit before terminating it.
    name
        Shown in process names (``digipath-training-0``) and errors.
    """

    def __init__(
        self,
        count: int,
        setup: WorkerSetup,
        *,
        response_timeout: float = 600.0,
        join_timeout: float = 30.0,
        name: str = "sampler",
    ) -> None:
        if count < 1:
            raise ValueError(f"a worker pool needs at least one process, got {count}")
        self.count = count
        self.setup = setup
        self.response_timeout = float(response_timeout)
        self.join_timeout = float(join_timeout)
        self.name = name
        self._workers: list[_Process] = []
        self._sources: dict[int, object] = {}
        # several loads may be in flight, each waited for by its own thread: one thread at a
        # time receives (and records what finished for the others), sends are serialised
        self._receiving = threading.Lock()
        self._sending = threading.Lock()
        self._failed: dict[int, tuple[Task, object, str]] = {}
        self.failures: list[tuple[str, object, str | None, str]] = []

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the worker processes (idempotent)."""
        if self._workers:
            return
        context = multiprocessing.get_context("spawn")
        for index in range(self.count):
            parent, child = context.Pipe(duplex=True)
            process = context.Process(
                target=worker_main,
                args=(index, child, self.setup),
                name=f"digipath-{self.name}-{index}",
                daemon=True,
            )
            process.start()
            child.close()
            self._workers.append(_Process(index, process, parent))
        logger.debug("%s: started %d worker processes", self.name, self.count)

    @property
    def pids(self) -> list[int | None]:
        """The process ids of the workers."""
        return [worker.process.pid for worker in self._workers]

    def stop(self) -> None:
        """Ask every worker to exit, terminate those that do not within the join timeout."""
        workers, self._workers = self._workers, []
        for worker in workers:
            try:
                if worker.process.is_alive():
                    worker.connection.send(("stop",))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + self.join_timeout
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                logger.warning(
                    "%s: worker %d did not exit, terminating it", self.name, worker.index
                )
                worker.process.terminate()
                worker.process.join(5.0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5.0)
            worker.connection.close()
            worker.process.close()
        self._sources.clear()

    # -- sources ----------------------------------------------------------------------------

    def hosting(self, source_id: int) -> _Process:
        for worker in self._workers:
            if source_id in worker.sources:
                return worker
        raise KeyError(source_id)

    def open(self, sources: Mapping[int, object]) -> dict[int, str]:
        """Open ``{source id: source}``, each on the worker hosting the fewest; wait for all.

        Returns ``{source id: remote traceback}`` of the sources that could not be opened
        (they are not hosted anywhere afterwards).
        """
        for source_id, source in sources.items():
            worker = min(self._workers, key=lambda w: (len(w.sources) + len(w.opening), w.index))
            self._send(worker, ("open", source_id, source))
            worker.opening.add(source_id)
            self._sources[source_id] = source
        failed: dict[int, str] = {}
        while any(worker.opening for worker in self._workers):
            for worker, message in self._receive():
                kind = message[0]
                if kind == "opened":
                    worker.opening.discard(message[1])
                    worker.sources.add(message[1])
                elif kind == "failed" and message[1][0] == "open":
                    source_id = message[1][1]
                    worker.opening.discard(source_id)
                    self._sources.pop(source_id, None)
                    failed[source_id] = message[3]
                else:
                    raise self._unexpected(worker, message)
        return failed

    def close(self, source_ids: Sequence[int]) -> None:
        """Close these sources on the workers hosting them."""
        for source_id in source_ids:
            try:
                worker = self.hosting(source_id)
            except KeyError:
                continue
            self._send(worker, ("close", source_id))
            worker.sources.discard(source_id)
            self._sources.pop(source_id, None)

    # -- requests ---------------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        """Send a request to the worker hosting its source (does not wait)."""
        worker = self.hosting(task.source)
        with self._sending:
            worker.inflight[task.id] = task
            self._send(worker, ("sample", task))

    @property
    def busy(self) -> bool:
        """Whether any request is still outstanding."""
        return any(worker.inflight for worker in self._workers)

    def _outstanding(self, ids: set[int]) -> bool:
        return any(not ids.isdisjoint(worker.inflight) for worker in self._workers)

    def collect(self, ids: Sequence[int] | None = None) -> list[tuple[Task, object, str]]:
        """Wait until the requests ``ids`` (default: every outstanding one) are done.

        Thread-safe: several threads may each wait for their own requests.

        Returns
        -------
        list
            ``(task, source, remote traceback)`` of those requests that failed in a worker
            (the worker keeps running).

        Raises
        ------
        WorkerError
            When a worker dies or does not answer within the response timeout.
        """
        if ids is None:
            wanted = {task for worker in self._workers for task in worker.inflight}
        else:
            wanted = set(ids)
        while self._outstanding(wanted):
            with self._receiving:
                if not self._outstanding(wanted):
                    break
                for worker, message in self._receive():
                    kind = message[0]
                    if kind == "done":
                        worker.inflight.pop(message[1], None)
                    elif kind == "failed" and message[1][0] == "sample":
                        task = message[1][1]
                        self._failed[task.id] = (task, self._sources.get(task.source), message[3])
                        worker.inflight.pop(task.id, None)
                    else:
                        raise self._unexpected(worker, message)
        return [self._failed.pop(task) for task in sorted(wanted) if task in self._failed]

    def ping(self) -> None:
        """Check that every worker is alive and answers (only when no request is outstanding)."""
        for worker in self._workers:
            self._check_alive(worker)
        if self.busy:
            return
        for worker in self._workers:
            self._send(worker, ("ping",))
        waiting = {worker.index for worker in self._workers}
        while waiting:
            for worker, message in self._receive(waiting):
                if message[0] != "pong":
                    raise self._unexpected(worker, message)
                waiting.discard(worker.index)

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, worker: _Process, message: tuple) -> None:
        self._check_alive(worker)
        try:
            worker.connection.send(message)
        except (OSError, ValueError) as error:
            raise self._died(worker, f"could not be sent a request ({error})") from None

    def _check_alive(self, worker: _Process) -> None:
        if not worker.process.is_alive():
            raise self._died(worker)

    def _died(self, worker: _Process, reason: str | None = None) -> WorkerError:
        worker.process.join(1.0)
        exitcode = worker.process.exitcode
        tasks = list(worker.inflight.values())
        source = self._sources.get(tasks[0].source) if tasks else None
        return WorkerError(
            reason or describe_exit(exitcode),
            worker=worker.index,
            pid=worker.process.pid,
            exitcode=exitcode,
            source=getattr(source, "image", None),
        )

    def _unexpected(self, worker: _Process, message: tuple) -> WorkerError:
        if message[0] == "failed":
            return WorkerError(
                f"failed on {message[1][0]!r}",
                worker=worker.index,
                pid=worker.process.pid,
                source=message[2],
                remote_traceback=message[3],
            )
        return WorkerError(f"unexpected answer {message!r}", worker=worker.index)

    def _receive(self, only: set[int] | None = None) -> list[tuple[_Process, tuple]]:
        """Wait for messages from the workers (or their death) up to the response timeout."""
        workers = [w for w in self._workers if only is None or w.index in only]
        by_connection = {worker.connection: worker for worker in workers}
        by_sentinel = {worker.process.sentinel: worker for worker in workers}
        ready = wait([*by_connection, *by_sentinel], timeout=self.response_timeout)
        if not ready:
            pending = [w for w in workers if w.inflight or w.opening] or workers
            worker = pending[0]
            tasks = list(worker.inflight.values())
            source = self._sources.get(tasks[0].source) if tasks else None
            raise WorkerError(
                f"gave no answer within the response timeout of {self.response_timeout:g} s",
                worker=worker.index,
                pid=worker.process.pid,
                source=getattr(source, "image", None),
            )
        messages: list[tuple[_Process, tuple]] = []
        for item in ready:
            worker = by_connection.get(item)
            if worker is None:
                continue
            try:
                while worker.connection.poll():
                    messages.append((worker, worker.connection.recv()))
            except (EOFError, OSError):
                raise self._died(worker) from None
        if not messages:
            for item in ready:
                if item in by_sentinel:
                    raise self._died(by_sentinel[item])
        return messages
