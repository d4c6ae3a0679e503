"""PostgreSQL: the migrations build the schema on an empty database, and rows round-trip.

Runs on the server named by ``DIGIPATH_TEST_POSTGRES_URL`` (see ``server/postgres.py``);
skipped without one unless ``DIGIPATH_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from server.postgres import PREFIX, drop_database, fresh_database
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from digipath.server.db import Database
from digipath.server.models import Base, Job, JobKind, JobStatus, Project, Task, User


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    url = fresh_database()
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="module")
def database(database_url) -> Iterator[Database]:
    database = Database(database_url)
    try:
        yield database
    finally:
        database.dispose()


def test_fresh_database_is_new_and_empty():
    url = fresh_database()
    try:
        assert make_url(url).database.startswith(PREFIX)
        engine = Database(url, upgrade=False).engine
        try:
            assert inspect(engine).get_table_names() == []
            assert engine.dialect.name == "postgresql"
        finally:
            engine.dispose()
    finally:
        drop_database(url)
    drop_database(url)  # already gone: nothing happens
    with pytest.raises(ValueError):
        drop_database(make_url(url).set(database="digipath_test").render_as_string(False))


def test_migrations_make_every_table(database):
    tables = set(inspect(database.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    created = next(
        c for c in inspect(database.engine).get_columns("jobs") if c["name"] == "created"
    )
    assert created["type"].timezone  # TIMESTAMP WITH TIME ZONE
    with database.engine.connect() as connection:
        version = connection.scalar(text("SELECT version_num FROM alembic_version"))
    assert version
    Database(database.url).dispose()  # upgrading an up-to-date database changes nothing
    with database.engine.connect() as connection:
        assert connection.scalar(text("SELECT version_num FROM alembic_version")) == version


def test_round_trip_with_aware_datetimes(database):
    paris = dt.timezone(dt.timedelta(hours=1))
    created = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=paris)
    with database.session() as session:
        session.add(
            User(username="émilie", email="e@example.org", password_hash="x", created=created)
        )
    with database.session() as session:
        user = session.scalar(select(User).where(User.username == "émilie"))
        assert user.email == "e@example.org"
        assert user.created == created  # the same instant
        assert user.created.utcoffset() == dt.timedelta(0)  # read back in UTC
        project = Project(name="smoke", task=Task.classification)
        session.add(project)
        session.flush()
        session.add(Job(kind=JobKind.train, project_id=project.id, user_id=user.id,
                        settings={"properties": {"Epochs": 2}, "seed": None}))  # fmt: skip
    with database.session() as session:
        job = session.scalar(select(Job).where(Job.user_id == user.id))
        assert job.status == JobStatus.PENDING
        assert job.settings == {"properties": {"Epochs": 2}, "seed": None}
        assert job.created.tzinfo is not None and job.created.utcoffset() == dt.timedelta(0)
        assert abs(job.created - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
