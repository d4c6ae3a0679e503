"""The process-wide thread pool that decodes tiles in parallel.

Codecs (libjpeg-turbo, OpenJPEG, zlib) release the GIL, so decoding the tiles of one region in
threads scales with the cores. The pool is created on first use and re-created in a child
process after ``fork`` (a forked child must never reuse its parent's threads).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

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
                    max_workers=default_thread_count(), thread_name_prefix="digipath-decode"
                )
            pool = _pool
    return pool


def _reset_after_fork() -> None:
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
