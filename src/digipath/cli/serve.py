"""``digipath serve``: the web application."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer


def serve(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Server folder: database, uploads, jobs, logs.")
    ] = Path("digipath-server"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLAlchemy URL, e.g. postgresql+psycopg://user:pass@host/db "
            "(default: SQLite in the data folder).",
        ),
    ] = None,
    slide_root: Annotated[
        Path | None,
        typer.Option("--slide-root", help="Folder of slides users may register as datasets."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Jobs run at a time (local processes).")] = 1,
    dask_scheduler: Annotated[
        str | None,
        typer.Option(
            "--dask-scheduler", help="Send jobs to this Dask scheduler (tcp://host:port)."
        ),
    ] = None,
    max_upload_mb: Annotated[int, typer.Option(help="Largest upload, in MiB.")] = 512,
    max_model_mb: Annotated[int, typer.Option(help="Largest model file, in MiB.")] = 1024,
    smtp_host: Annotated[
        str | None, typer.Option(help="Mail server for password resets (default: the log).")
    ] = None,
    secure_cookies: Annotated[
        bool, typer.Option(help="Mark cookies Secure (behind HTTPS).")
    ] = False,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (uvicorn's access log).")
    ] = False,
) -> None:
    """Start the web application (pages at /, the REST API and its docs at /api/v1/docs)."""
    import uvicorn

    from digipath.server.app import create_app
    from digipath.server.settings import MiB, ServerSettings

    settings = ServerSettings(
        data_dir=data_dir, database_url=database_url, slide_root=slide_root, workers=workers,
        dask_scheduler=dask_scheduler, max_upload_bytes=max_upload_mb * MiB,
        max_model_bytes=max_model_mb * MiB, smtp_host=smtp_host, secure_cookies=secure_cookies,
    )  # fmt: skip
    logging.getLogger("digipath").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    typer.echo(f"digipath server on http://{host}:{port}/ (data in {settings.data_dir})")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=access_log)
