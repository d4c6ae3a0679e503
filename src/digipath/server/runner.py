"""The job runner: starts pending jobs in worker processes (or on a Dask cluster), watches them.

One runner thread lives in the web server. Every ``poll_interval_s`` it

1. looks at the jobs it runs: a process that ended while its job is still ``STARTED`` died
   (killed, out of memory, a crash in native code): the job becomes ``FAILURE`` with the exit
   code and the likely cause; a job that was stopped (``REVOKED``) has its process terminated
   (SIGTERM, then SIGKILL after a grace period);
2. starts ``PENDING`` jobs, oldest first, while fewer than ``workers`` run: the job is marked
   ``STARTED`` with its start time and attempt count, then handed to a spawned process running
   :func:`digipath.server.jobs.run_job` (or submitted to the Dask scheduler).

The web server's requests never wait on a job: jobs run in other processes and report through
the database. On start, :meth:`JobRunner.recover` handles the jobs a previous server left
``STARTED``: trainings go back to ``PENDING`` and resume from their last epoch, the others
become ``FAILURE`` with the reason.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from digipath.server.db import Database
from digipath.server.models import Job, JobKind, JobStatus, utcnow
from digipath.server.settings import ServerSettings

__all__ = ["JobRunner"]

logger = logging.getLogger(__name__)

GRACE_S = 5.0


def _death_reason(code: int | None) -> str:
    if code is None:
        return "the worker process vanished"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else code
        hint = " (killed: probably out of memory)" if -code == signal.SIGKILL else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {code} without finishing the job"


@dataclass
class _Running:
    job_id: int
    process: Any = None  # multiprocessing.Process
    future: Any = None  # distributed.Future
    stopping_since: float | None = None
    extra: dict = field(default_factory=dict)


class JobRunner:
    """Runs the jobs of one server.

    Parameters
    ----------
    settings
        The server's settings (``workers``, ``dask_scheduler``, ``poll_interval_s``).
    database
        The server's database.
    """

    def __init__(self, settings: ServerSettings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.running: dict[int, _Running] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._context = multiprocessing.get_context("spawn")
        self._client = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Recover jobs of a previous run, then start the runner thread."""
        self.recover()
        if self.settings.dask_scheduler:
            from distributed import Client

            self._client = Client(self.settings.dask_scheduler, timeout=30)
            logger.info("jobs go to the Dask scheduler %s", self.settings.dask_scheduler)
        self._thread = threading.Thread(target=self._loop, name="digipath-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and terminate running jobs' processes (they resume or fail on the
        next start, as after a crash)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for entry in list(self.running.values()):
                if entry.process is not None and entry.process.is_alive():
                    entry.process.terminate()
                    entry.process.join(GRACE_S)
                    if entry.process.is_alive():
                        entry.process.kill()
                        entry.process.join(GRACE_S)
            self.running.clear()
        if self._client is not None:
            self._client.close()

    def wake(self) -> None:
        """Look for work now (a job was submitted or stopped)."""
        self._wake.set()

    def recover(self) -> None:
        """Handle jobs left ``STARTED`` by a previous server (see the module docstring)."""
        with self.database.session() as session:
            jobs = session.scalars(select(Job).where(Job.status == JobStatus.STARTED)).all()
            for job in jobs:
                if job.kind == JobKind.train:
                    job.status = JobStatus.PENDING
                    job.settings = {**job.settings, "resume": True}
                    job.message = "interrupted by a server restart; resumes from its last epoch"
                    logger.info("job %d will resume", job.id)
                else:
                    job.status = JobStatus.FAILURE
                    job.finished = utcnow()
                    job.error = "interrupted by a server restart"
                    job.message = "failed"
                    logger.info("job %d was interrupted", job.id)

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("job runner error")
            self._wake.wait(self.settings.poll_interval_s)
            self._wake.clear()

    def tick(self) -> None:
        """One round: watch the running jobs, then start pending ones."""
        with self._lock, self.database.session() as session:
            for job_id, entry in list(self.running.items()):
                status = session.scalar(select(Job.status).where(Job.id == job_id))
                if self._ended(entry):
                    self.running.pop(job_id)
                    if status == JobStatus.STARTED:
                        self._mark_dead(session, job_id, entry)
                elif status != JobStatus.STARTED:
                    now = time.monotonic()
                    if entry.stopping_since is None:
                        entry.stopping_since = now
                        self._terminate(entry)
                    elif now - entry.stopping_since > GRACE_S and entry.process is not None:
                        entry.process.kill()
            free = self.settings.workers - len(self.running)
            if free <= 0:
                return
            pending = session.scalars(
                select(Job.id)
                .where(Job.status == JobStatus.PENDING)
                .order_by(Job.created, Job.id)
                .limit(free)
            ).all()
            for job_id in pending:
                claimed = session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.status == JobStatus.PENDING)
                    .values(
                        status=JobStatus.STARTED, started=utcnow(), updated=utcnow(),
                        attempts=Job.attempts + 1, message="starting", error="",
                    )
                )  # fmt: skip
                if claimed.rowcount != 1:
                    continue
                session.commit()
                self.running[job_id] = self._launch(job_id)

    def _launch(self, job_id: int) -> _Running:
        from digipath.server.jobs import run_job, run_local_job

        args = (job_id, self.database.url, str(self.settings.data_dir))
        if self._client is not None:
            future = self._client.submit(run_job, *args, pure=False, key=f"digipath-job-{job_id}")
            return _Running(job_id, future=future)
        threads = max(1, (os.cpu_count() or 1) // self.settings.workers)
        process = self._context.Process(
            target=run_local_job, args=(*args, self.settings.job_nice, threads),
            name=f"digipath-job-{job_id}",
        )  # fmt: skip
        process.start()
        logger.info("job %d started in process %d", job_id, process.pid)
        with self.database.session() as session:
            session.execute(update(Job).where(Job.id == job_id).values(worker=f"pid {process.pid}"))
        return _Running(job_id, process=process)

    @staticmethod
    def _ended(entry: _Running) -> bool:
        if entry.process is not None:
            return not entry.process.is_alive()
        return entry.future.done()

    @staticmethod
    def _terminate(entry: _Running) -> None:
        if entry.process is not None:
            entry.process.terminate()
        elif entry.future is not None:
            entry.future.cancel()

    def _mark_dead(self, session: Session, job_id: int, entry: _Running) -> None:
        if entry.process is not None:
            entry.process.join(1)
            reason = _death_reason(entry.process.exitcode)
        else:
            error = entry.future.exception() if entry.future.status == "error" else None
            reason = f"the Dask task failed: {error}" if error else "the Dask task was lost"
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.STARTED)
            .values(status=JobStatus.FAILURE, finished=utcnow(), error=reason, message="failed")
        )
        logger.warning("job %d: %s", job_id, reason)

    # -- requests -----------------------------------------------------------------------------

    def stop(self, session: Session, job: Job) -> None:
        """Mark ``job`` ``REVOKED`` (it stays in the history); its process is ended by the
        runner thread."""
        if job.status.finished:
            return
        job.status = JobStatus.REVOKED
        job.finished = utcnow()
        job.message = "stopped"
        session.flush()
        self.wake()

    def stop_project(self, session: Session, project_id: int) -> None:
        """Stop every unfinished job of a project."""
        jobs = session.scalars(
            select(Job).where(
                Job.project_id == project_id,
                Job.status.in_([JobStatus.PENDING, JobStatus.STARTED]),
            )
        ).all()
        for job in jobs:
            self.stop(session, job)
