"""Server configuration: one validated object, from ``digipath serve`` options or Python."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ServerSettings"]

MiB = 1024 * 1024


class ServerSettings(BaseModel):
    """Everything the web application is configured by.

    Attributes
    ----------
    data_dir
        The server's folder: the SQLite database (by default), uploaded datasets and model
        weights, job folders and logs.
    database_url
        SQLAlchemy URL; default ``sqlite:///<data_dir>/digipath.sqlite``. PostgreSQL:
        ``postgresql+psycopg://user:password@host/database``.
    slide_root
        Folder of slides and masks on the server's disk that users may register as datasets;
        paths outside it (after resolving links) are refused. ``None``: registering is off.
    workers
        Jobs run at a time by the local runner (each in its own process).
    dask_scheduler
        Address of a Dask scheduler (``tcp://host:8786``): jobs are sent there instead of
        local processes.
    max_upload_bytes
        Largest accepted upload (dataset zip, image), in bytes.
    max_model_bytes
        Largest accepted model file, in bytes.
    max_unzipped_bytes, max_zip_entries, max_zip_ratio
        Limits on a dataset zip once extracted: total size, number of members, and the
        compression ratio of any member (zip bombs).
    session_hours
        Lifetime of a login session.
    login_attempts, login_window_s
        At most ``login_attempts`` failed log-ins per user name (and 4x that per client
        address) within ``login_window_s`` seconds; further attempts get 429.
    smtp_host, mail_from
        Mail server for password-reset tokens; without one the token is written to the server
        log.
    secure_cookies
        Mark cookies ``Secure`` (serve over HTTPS).
    poll_interval_s
        How often the job runner looks for new and finished jobs.
    job_nice
        How much lower the priority of local job processes is than the server's (``nice``
        increment), so that jobs on the server's CPUs do not slow its answers; each also uses
        ``cpu_count // workers`` torch threads.
    """

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Path("digipath-server")
    database_url: str | None = None
    slide_root: Path | None = None
    workers: int = Field(1, ge=1)
    dask_scheduler: str | None = None
    max_upload_bytes: int = Field(512 * MiB, gt=0)
    max_model_bytes: int = Field(1024 * MiB, gt=0)
    max_unzipped_bytes: int = Field(4096 * MiB, gt=0)
    max_zip_entries: int = Field(100_000, gt=0)
    max_zip_ratio: float = Field(200.0, gt=1)
    session_hours: float = Field(12.0, gt=0)
    login_attempts: int = Field(5, ge=1)
    login_window_s: float = Field(900.0, gt=0)
    smtp_host: str | None = None
    mail_from: str = "digipath@localhost"
    secure_cookies: bool = False
    poll_interval_s: float = Field(0.5, gt=0)
    job_nice: int = Field(10, ge=0, le=19)

    @field_validator("data_dir", "slide_root")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.abspath(os.path.expanduser(value)))

    @property
    def url(self) -> str:
        """The database URL in use."""
        return self.database_url or f"sqlite:///{self.data_dir / 'digipath.sqlite'}"

    def folder(self, *parts: str) -> Path:
        """``data_dir/<parts>``, created when missing."""
        path = self.data_dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path
