"""PostgreSQL for the server tests: the configured server, and throw-away databases on it.

The server is named by ``DIGIPATH_TEST_POSTGRES_URL``, a SQLAlchemy URL
(``postgresql+psycopg://user:password@127.0.0.1:54329/digipath_test``) whose role may create
databases; ``.ci/run`` starts one and sets it. Without it, tests that need PostgreSQL are
skipped, unless ``DIGIPATH_REQUIRE_POSTGRES=1`` (set by ``.ci/run``): then they fail.

The API (import it as ``from server.postgres import ...``; ``tests`` is on the path):

``postgres_url()``
    The configured URL, or ``None``.
``require_postgres()``
    The configured URL, or skip the test (fail when PostgreSQL is required).
``fresh_database(url=None)``
    Create a new, empty database (a unique name) on the server of ``url`` (``None``: the
    configured server, skipping or failing as ``require_postgres`` does) and return its URL.
``drop_database(url)``
    Drop a database made by ``fresh_database`` (its connections are ended first).

A fixture of one database per test module::

    @pytest.fixture(scope="module")
    def database_url():
        url = fresh_database()
        yield url
        drop_database(url)

Dispose of the engines on the database before dropping it when you can; ``drop_database``
ends the connections that are left anyway.
"""

from __future__ import annotations

import os
import uuid

import pytest

__all__ = ["PREFIX", "drop_database", "fresh_database", "postgres_url", "require_postgres"]

URL_VARIABLE = "DIGIPATH_TEST_POSTGRES_URL"
REQUIRE_VARIABLE = "DIGIPATH_REQUIRE_POSTGRES"
PREFIX = "digipath_t_"
"""Name prefix of the databases :func:`fresh_database` makes (and the only ones
:func:`drop_database` drops)."""


def postgres_url() -> str | None:
    """``DIGIPATH_TEST_POSTGRES_URL``, or ``None`` when it is unset or empty."""
    return os.environ.get(URL_VARIABLE, "").strip() or None


def require_postgres() -> str:
    """The configured server's URL; skips the test without one, or fails it when
    ``DIGIPATH_REQUIRE_POSTGRES=1``."""
    url = postgres_url()
    if url is None:
        message = f"no PostgreSQL server for the tests (set {URL_VARIABLE})"
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


def _connect(url, database: str):
    """An autocommit psycopg connection to ``database`` on the server of ``url``."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"{parsed.render_as_string()}: not a PostgreSQL URL")
    options = {
        "host": parsed.host, "port": parsed.port, "user": parsed.username,
        "password": parsed.password, "dbname": database, "connect_timeout": 10,
    }  # fmt: skip
    return psycopg.connect(autocommit=True, **{k: v for k, v in options.items() if v is not None})


def fresh_database(url: str | None = None) -> str:
    """Create an empty database with a unique name on the server of ``url`` and return its
    URL (``url`` with that database).

    ``None`` stands for the configured server (:func:`require_postgres`: skips or fails
    without one). Each call makes a new database; drop it with :func:`drop_database`.
    """
    from psycopg import sql
    from sqlalchemy.engine import make_url

    url = url or require_postgres()
    name = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with _connect(url, make_url(url).database or "postgres") as connection:
        connection.execute(sql.SQL("CREATE DATABASE {} ENCODING 'UTF8' TEMPLATE template0").format(
            sql.Identifier(name)))  # fmt: skip
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop the database of ``url``, made by :func:`fresh_database`, ending its connections
    first; nothing happens when it is already gone. Other databases are refused
    (``ValueError``), so a test can never drop the server's own."""
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = make_url(url).database or ""
    if not name.startswith(PREFIX):
        raise ValueError(f"{name!r}: not a database made by fresh_database ({PREFIX}...)")
    configured = postgres_url()
    base = (make_url(configured).database if configured else None) or "postgres"
    with _connect(url, base) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))  # fmt: skip
