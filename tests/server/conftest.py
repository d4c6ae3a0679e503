"""Fixtures of the web-application tests: an app per test on SQLite or PostgreSQL, and clients.

``database_url`` is parametrised over SQLite (a file in the test's folder) and PostgreSQL
(one database of the session on the server named by ``DIGIPATH_TEST_POSTGRES_URL``, which
``.ci/run`` starts, emptied before each test; skipped when the server is absent unless
``DIGIPATH_REQUIRE_POSTGRES=1``), so the API suite runs on both. ``api`` is the started
application; ``users`` makes logged-in clients, each with its own cookie jar and the CSRF
header set; ``running`` is an application whose job runner runs jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from server_support import PASSWORD

from digipath.server.app import create_app
from digipath.server.settings import ServerSettings


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """One fresh PostgreSQL database for the session (migrated by the first app)."""
    from server.postgres import drop_database, fresh_database, require_postgres

    url = fresh_database(require_postgres())  # skips (or fails when required) without a server
    try:
        yield url
    finally:
        drop_database(url)


def _empty(url: str) -> None:
    """Delete every row of the server's tables (the schema stays)."""
    from sqlalchemy import create_engine, text

    from digipath.server.models import Base

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            existing = {
                row[0]
                for row in connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            }
            tables = [t.name for t in Base.metadata.sorted_tables if t.name in existing]
            if tables:
                connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """The database of one test: SQLite in ``tmp_path``, or the session's PostgreSQL database
    emptied first."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'server.sqlite'}"
        return
    url = request.getfixturevalue("postgres_database")
    _empty(url)
    yield url


@pytest.fixture
def settings(tmp_path, database_url) -> ServerSettings:
    """Settings with small limits, so the limit tests stay small."""
    (tmp_path / "slides").mkdir()
    return ServerSettings(
        data_dir=tmp_path / "data", database_url=database_url, slide_root=tmp_path / "slides",
        max_upload_bytes=2_000_000, max_model_bytes=2_000_000, max_unzipped_bytes=4_000_000,
        login_attempts=3,
    )  # fmt: skip


@pytest.fixture
def api(settings) -> Iterator[TestClient]:
    """The started application (no job runner thread) and an anonymous client."""
    app = create_app(settings, run_jobs=False)
    with TestClient(app) as client:
        yield client


class User(TestClient):
    """A logged-in client: ``.name``, and the CSRF header on every request."""

    name: str


@pytest.fixture
def users(api) -> Callable[[str], User]:
    """``users("alice")``: register (once) and log in ``alice``; a client of her own."""
    made: dict[str, User] = {}

    def make(name: str) -> User:
        if name in made:
            return made[name]
        client = TestClient(api.app)
        client.__class__ = User
        response = client.post(
            "/api/v1/auth/register", json={"username": name, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        response = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
        assert response.status_code == 200, response.text
        client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
        client.name = name
        made[name] = client
        return client

    return make


@pytest.fixture
def running(settings):
    """The application with its job runner (two jobs at a time, polling every 0.1 s)."""
    settings = settings.model_copy(update={"workers": 2, "poll_interval_s": 0.1})
    app = create_app(settings)
    with TestClient(app):
        yield app
