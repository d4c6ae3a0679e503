"""The process-wide thread pool that decodes tiles in parallel.

Codecs (libjpeg-turbo, OpenJPEG, zlib) release the GIL, so decoding the tiles of one region in
threads scales with the cores. :func:`run_parallel` runs the tasks of one region on the calling
thread and up to ``n - 1`` pool threads, where ``n`` is :func:`default_thread_count`, so that
``DIGIPATH_THREADS=1`` means no extra threads at all. The pool is created on first use and
re-created in a child process after ``fork`` (a forked child must never reuse its parent's
threads).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

THREAD_PREFIX = "digipath-decode"

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def default_thread_count() -> int:
    """Number of decode threads: the CPUs this process may use (``DIGIPATH_THREADS`` overrides)."""
    configured = os.environ.get("DIGIPATH_THREADS")
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise ValueError(
                f"DIGIPATH_THREADS must be a positive integer, got {configured!r}"
            ) from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def decode_pool() -> ThreadPoolExecutor:
    """Return the shared decode pool, creating it on first use."""
    global _pool
    pool = _pool
    if pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=max(1, default_thread_count() - 1),
                    thread_name_prefix=THREAD_PREFIX,
                )
            pool = _pool
    return pool


def run_parallel(tasks: Sequence[Callable[[], None]]) -> None:
    """Run ``tasks`` on the calling thread and the decode pool; return when all are done.

    The calling thread and up to ``default_thread_count() - 1`` pool threads take the tasks in
    order from a shared queue until none is left, so uneven tasks balance out. Tasks run
    inline when there is only one, when one thread is configured, or when called from a pool
    thread (which must never wait on its own pool). The first exception raised by a task is
    raised again once every started task has finished.
    """
    helpers = min(len(tasks) - 1, default_thread_count() - 1)
    if helpers <= 0 or threading.current_thread().name.startswith(THREAD_PREFIX):
        for task in tasks:
            task()
        return
    order = itertools.count()  # next() on a count is atomic under the GIL
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            index = next(order)
            if index >= len(tasks) or errors:
                return
            try:
                tasks[index]()
            except BaseException as error:
                errors.append(error)
                return

    pool = decode_pool()
    futures = [pool.submit(work) for _ in range(helpers)]
    work()
    for future in futures:
        future.result()
    if errors:
        raise errors[0]


def _reset_after_fork() -> None:
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
