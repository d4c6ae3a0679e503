"""The database tables (SQLAlchemy 2 declarative), for SQLite and PostgreSQL alike.

The data model follows the DeepHealth back-end (reference ``seeds-deephealth-radhical.md``
§4.1) without its flaws: a stopped job is kept (``REVOKED``), progress and per-epoch metrics
are rows (:class:`JobMetric`), not log lines, and model weights are digipath model files
(safetensors), never pickles. Every table has an integer ``id``; access is always checked
against the current user, so guessing ids gets a 404.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql import false

__all__ = [
    "AllowedProperty",
    "ApiToken",
    "Base",
    "Dataset",
    "DatasetShare",
    "Job",
    "JobKind",
    "JobMetric",
    "JobStatus",
    "LoginAttempt",
    "ModelFamily",
    "PasswordReset",
    "Project",
    "ProjectMember",
    "Property",
    "PropertyType",
    "Role",
    "Session",
    "Task",
    "User",
    "Weights",
    "WeightsShare",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware timestamps on every back-end (SQLite drops the zone: put UTC back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value

    def process_result_value(self, value, dialect):
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base of every table."""

    type_annotation_map: ClassVar[dict] = {dt.datetime: UTCDateTime, dict[str, Any]: JSON}


class Task(enum.StrEnum):
    """What a dataset holds and a model family does."""

    classification = "classification"
    segmentation = "segmentation"


class Role(enum.StrEnum):
    """A user's role in a project, or on a shared dataset or weights."""

    owner = "owner"
    viewer = "viewer"


class JobKind(enum.StrEnum):
    """What a job does."""

    train = "train"
    inference = "inference"
    inference_single = "inference_single"
    wsi_apply = "wsi_apply"
    nuclei = "nuclei"


class JobStatus(enum.StrEnum):
    """A job's status (Celery's names, as the DeepHealth front-end shows them)."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"

    @property
    def finished(self) -> bool:
        """Whether the job has ended (successfully or not)."""
        return self in (JobStatus.SUCCESS, JobStatus.FAILURE, JobStatus.REVOKED)


class PropertyType(enum.StrEnum):
    """Value type of a property: integer, float, one of a list, free text (augmentations)."""

    INT = "INT"
    FLT = "FLT"
    LST = "LST"
    STR = "STR"


def _enum(kind: type[enum.Enum]) -> Enum:
    return Enum(kind, name=kind.__name__.lower(), native_enum=False, length=24)


class User(Base):
    """An account. ``password_hash`` is argon2id; ``admin`` may change what all users share
    (the fixture model families' allowed values); the first account registered is one."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    email: Mapped[str] = mapped_column(String(254), default="")
    full_name: Mapped[str] = mapped_column(String(128), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Session(Base):
    """A browser log-in: the SHA-256 of the cookie's token and the CSRF token of its forms."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires: Mapped[dt.datetime]


class ApiToken(Base):
    """A token for scripts (``Authorization: Bearer <token>``); only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used: Mapped[dt.datetime | None] = mapped_column(default=None)


class PasswordReset(Base):
    """A one-time password-reset token (SHA-256 stored), valid until ``expires``."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires: Mapped[dt.datetime]
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class LoginAttempt(Base):
    """A failed log-in, for rate limiting by user name and by client address."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    time: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class Project(Base):
    """A project: its task, members, and the jobs run in it."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    task: Mapped[Task] = mapped_column(_enum(Task))
    description: Mapped[str] = mapped_column(Text, default="")
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    members: Mapped[list[ProjectMember]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True
    )


class ProjectMember(Base):
    """A user's role in a project."""

    __tablename__ = "project_members"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(_enum(Role))
    project: Mapped[Project] = relationship(back_populates="members")
    user: Mapped[User] = relationship()


class Dataset(Base):
    """A DeepHealth dataset: an uploaded YAML with its images, or slides on the server's disk.

    ``path`` is the dataset YAML inside the server's data folder (written by the server);
    ``kind`` is ``upload`` or ``server``; ``classes`` the class names of a classification set.
    """

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    task: Mapped[Task] = mapped_column(_enum(Task))
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    classes: Mapped[list[str]] = mapped_column(JSON, default=list)
    splits: Mapped[dict[str, Any]] = mapped_column(default=dict)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    spacing: Mapped[float | None] = mapped_column(Float, default=None)
    single_image: Mapped[bool] = mapped_column(Boolean, default=False)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DatasetShare(Base):
    """A dataset shared with another user."""

    __tablename__ = "dataset_shares"
    __table_args__ = (UniqueConstraint("dataset_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(_enum(Role))


class ModelFamily(Base):
    """A network family (DeepHealth's ``Model``): a digipath model type for a task.

    ``owner_id`` is the user who added it (``None`` for the fixtures); the owner and the
    administrators set its allowed values for all datasets."""

    __tablename__ = "model_families"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    model_type: Mapped[str] = mapped_column(String(64))
    task: Mapped[Task] = mapped_column(_enum(Task))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )


class Weights(Base):
    """A digipath model file of a family: uploaded, or made by a training job.

    ``active`` is false while the training job that makes it runs (and stays false when that
    job fails); ``header`` is the file's digipath header (model type, parameters, provenance).
    """

    __tablename__ = "weights"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    family_id: Mapped[int] = mapped_column(ForeignKey("model_families.id"), index=True)
    location: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(Integer, default=0)
    digest: Mapped[str] = mapped_column(String(64), default="")
    classes: Mapped[list[str]] = mapped_column(JSON, default=list)
    header: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), default=None
    )
    pretrained_on_id: Mapped[int | None] = mapped_column(
        ForeignKey("weights.id", ondelete="SET NULL"), default=None
    )
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    family: Mapped[ModelFamily] = relationship()


class WeightsShare(Base):
    """Model weights shared with another user."""

    __tablename__ = "weights_shares"
    __table_args__ = (UniqueConstraint("weights_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    weights_id: Mapped[int] = mapped_column(ForeignKey("weights.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(_enum(Role))


class Property(Base):
    """A hyper-parameter users set (DeepHealth's fixtures: learning rate, epochs, ...).

    ``values`` are the choices of a ``LST`` property.
    """

    __tablename__ = "properties"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[PropertyType] = mapped_column(_enum(PropertyType))
    default: Mapped[str] = mapped_column(Text, default="")
    values: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(Text, default="")


class AllowedProperty(Base):
    """Allowed values and default of a property for a model family (and optionally a dataset).

    ``allowed`` uses DeepHealth's syntax: ``>0``, ``>0.0``, ``[a,b,c]``, or empty (anything of
    the property's type).
    """

    __tablename__ = "allowed_properties"
    __table_args__ = (UniqueConstraint("property_id", "family_id", "dataset_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    property_id: Mapped[int] = mapped_column(ForeignKey("properties.id", ondelete="CASCADE"))
    family_id: Mapped[int] = mapped_column(ForeignKey("model_families.id", ondelete="CASCADE"))
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), default=None
    )
    allowed: Mapped[str] = mapped_column(Text, default="")
    default: Mapped[str] = mapped_column(Text, default="")


class Job(Base):
    """A training or inference job.

    ``settings`` holds the resolved properties and the job's inputs; ``progress`` is the
    fraction done (0-1) and ``message`` a short status line, both written by the job as it
    runs; ``result`` is the job's summary (outputs, metrics); ``error`` the reason of a
    ``FAILURE``; ``attempts`` counts starts (a resumed training starts again).
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind))
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus), default=JobStatus.PENDING, index=True
    )
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    family_id: Mapped[int | None] = mapped_column(ForeignKey("model_families.id"), default=None)
    weights_id: Mapped[int | None] = mapped_column(
        ForeignKey("weights.id", ondelete="SET NULL"), default=None
    )
    output_weights_id: Mapped[int | None] = mapped_column(
        ForeignKey("weights.id", ondelete="SET NULL"), default=None
    )
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", ondelete="SET NULL"), default=None
    )
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    folder: Mapped[str] = mapped_column(String(1024), default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str] = mapped_column(String(128), default="")
    created: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    started: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobMetric(Base):
    """One value a job reported: a metric of an epoch (training) or of the run (inference)."""

    __tablename__ = "job_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
