"""Request dependencies: the database session, the current user, and access checks.

Access rules (every check answers 404 for what the user may not see, so ids cannot be probed):

* a project is seen by its members; changed (renamed, members, jobs started, deleted) by its
  owners;
* a dataset or weights is seen by its owner, the users it is shared with, and everyone when
  public; changed or deleted by its owner and the users it is shared with as ``owner``;
* a job is seen by the members of its project and stopped by the project's owners and the
  user who started it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from digipath.server.models import (
    ApiToken,
    Dataset,
    DatasetShare,
    Job,
    Project,
    ProjectMember,
    Role,
    User,
    Weights,
    WeightsShare,
    utcnow,
)
from digipath.server.models import Session as LoginSession
from digipath.server.security import hash_token, same_token

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Caller",
    "caller",
    "can_change_dataset",
    "can_change_weights",
    "database",
    "dataset_for",
    "job_for",
    "optional_caller",
    "project_for",
    "visible_datasets",
    "visible_weights",
    "weights_for",
]

SESSION_COOKIE = "digipath_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def database(request: Request) -> Iterator[Session]:
    """A session of the application's database, committed when the endpoint succeeds.

    Declared with ``Depends(database, scope="function")`` everywhere, so that the commit
    happens before the response is sent: a client that is told "created" can use the thing at
    once, and a failed commit is an error answer, not a lost write.
    """
    with request.app.state.database.session() as session:
        yield session


@dataclass
class Caller:
    """The authenticated user of a request and how they authenticated."""

    user: User
    session: LoginSession | None = None
    token: ApiToken | None = None

    @property
    def csrf_token(self) -> str | None:
        """The CSRF token of the browser session (``None`` for API tokens)."""
        return None if self.session is None else self.session.csrf_token


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _authenticate(request: Request, db: Session) -> Caller | None:
    bearer = _bearer(request)
    if bearer is not None:
        token = db.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(bearer)))
        if token is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API token")
        user = db.get(User, token.user_id)
        now = utcnow()
        if token.last_used is None or now - token.last_used > dt.timedelta(minutes=1):
            token.last_used = now
        return Caller(user=user, token=token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    login = db.scalar(select(LoginSession).where(LoginSession.token_hash == hash_token(cookie)))
    if login is None or login.expires <= utcnow():
        return None
    if request.method not in SAFE_METHODS and not same_token(
        request.headers.get(CSRF_HEADER), login.csrf_token
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing or wrong {CSRF_HEADER} header")
    return Caller(user=db.get(User, login.user_id), session=login)


def optional_caller(
    request: Request, db: Session = Depends(database, scope="function")
) -> Caller | None:
    """The caller, or ``None`` for an anonymous request."""
    return _authenticate(request, db)


def caller(request: Request, db: Session = Depends(database, scope="function")) -> Caller:
    """The caller; 401 for anonymous requests."""
    found = _authenticate(request, db)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "log in or send an API token (Authorization: Bearer ...)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


def _not_found(what: str, ident: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {what} with id {ident}")


def project_for(db: Session, user: User, project_id: int, *, owner: bool = False) -> Project:
    """The project ``project_id`` if ``user`` is a member (an owner when ``owner``)."""
    member = db.scalar(
        select(ProjectMember).where(
            ProjectMember.project_id == project_id, ProjectMember.user_id == user.id
        )
    )
    if member is None:
        raise _not_found("project", project_id)
    if owner and member.role != Role.owner:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the project's owners may do this")
    return member.project


def project_role(db: Session, user: User, project_id: int) -> Role | None:
    """``user``'s role in the project, or ``None``."""
    return db.scalar(
        select(ProjectMember.role).where(
            ProjectMember.project_id == project_id, ProjectMember.user_id == user.id
        )
    )


def visible_datasets(user: User):
    """The ``select`` of the datasets ``user`` may see."""
    shared = select(DatasetShare.dataset_id).where(DatasetShare.user_id == user.id)
    return select(Dataset).where(
        or_(Dataset.public.is_(True), Dataset.owner_id == user.id, Dataset.id.in_(shared))
    )


def visible_weights(user: User):
    """The ``select`` of the weights ``user`` may see."""
    shared = select(WeightsShare.weights_id).where(WeightsShare.user_id == user.id)
    return select(Weights).where(
        or_(Weights.public.is_(True), Weights.owner_id == user.id, Weights.id.in_(shared))
    )


def can_change_dataset(db: Session, dataset: Dataset, user: User) -> bool:
    """Whether ``user`` owns ``dataset`` or has it shared as an owner."""
    if dataset.owner_id == user.id:
        return True
    role = db.scalar(
        select(DatasetShare.role).where(
            DatasetShare.dataset_id == dataset.id, DatasetShare.user_id == user.id
        )
    )
    return role == Role.owner


def can_change_weights(db: Session, weights: Weights, user: User) -> bool:
    """Whether ``user`` owns ``weights`` or has them shared as an owner."""
    if weights.owner_id == user.id:
        return True
    role = db.scalar(
        select(WeightsShare.role).where(
            WeightsShare.weights_id == weights.id, WeightsShare.user_id == user.id
        )
    )
    return role == Role.owner


def dataset_for(db: Session, user: User, dataset_id: int, *, change: bool = False) -> Dataset:
    """The dataset if ``user`` may see it (and change it when ``change``)."""
    dataset = db.scalar(visible_datasets(user).where(Dataset.id == dataset_id))
    if dataset is None:
        raise _not_found("dataset", dataset_id)
    if change and not can_change_dataset(db, dataset, user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the dataset's owners may do this")
    return dataset


def weights_for(db: Session, user: User, weights_id: int, *, change: bool = False) -> Weights:
    """The weights if ``user`` may see them (and change them when ``change``)."""
    weights = db.scalar(visible_weights(user).where(Weights.id == weights_id))
    if weights is None:
        raise _not_found("weights", weights_id)
    if change and not can_change_weights(db, weights, user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the weights' owners may do this")
    return weights


def job_for(db: Session, user: User, job_id: int, *, stop: bool = False) -> Job:
    """The job if ``user`` is a member of its project (and may stop it when ``stop``)."""
    job = db.get(Job, job_id)
    role = None if job is None else project_role(db, user, job.project_id)
    if role is None:
        raise _not_found("job", job_id)
    if stop and role != Role.owner and job.user_id != user.id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only the project's owners may stop it")
    return job
