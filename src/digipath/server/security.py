"""Passwords, tokens, CSRF and log-in rate limits.

* Passwords are hashed with argon2id (``argon2-cffi`` defaults) and re-hashed on log-in when
  the parameters change.
* Session cookies, API tokens and password-reset tokens are 256-bit random strings; the
  database keeps only their SHA-256, so a leaked database opens no account.
* CSRF: a browser session carries a random CSRF token; every state-changing request made with
  the session cookie must send it back (``X-CSRF-Token`` header or ``csrf_token`` form field),
  and a request whose ``Origin`` names another site is refused. Requests authenticated with an
  API token (``Authorization: Bearer``) carry no cookie and need no CSRF token.
* Log-in rate limit: failed attempts are rows (:class:`~digipath.server.models.LoginAttempt`),
  counted per user name and per client address over a sliding window.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from digipath.server.models import LoginAttempt, utcnow

__all__ = [
    "MIN_PASSWORD",
    "check_password",
    "hash_password",
    "hash_token",
    "new_token",
    "password_problem",
    "record_failure",
    "retry_after",
    "same_token",
]

MIN_PASSWORD = 8
"""Shortest accepted password, in characters."""

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``."""
    return _hasher.hash(password)


def check_password(stored: str, password: str) -> tuple[bool, str | None]:
    """Whether ``password`` matches the hash ``stored``, and a new hash when it should change.

    Returns
    -------
    (ok, rehash)
        ``rehash`` is the hash to store instead (the hasher's parameters changed), or ``None``.
    """
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    return True, (_hasher.hash(password) if _hasher.check_needs_rehash(stored) else None)


def password_problem(password: str, username: str = "") -> str | None:
    """Why ``password`` is refused, or ``None`` when it is acceptable."""
    if len(password) < MIN_PASSWORD:
        return f"the password must have at least {MIN_PASSWORD} characters"
    if len(password) > 1024:
        return "the password must have at most 1024 characters"
    if username and password.lower() == username.lower():
        return "the password must differ from the user name"
    return None


def new_token(prefix: str = "") -> str:
    """A new random token (256 bits, URL-safe), optionally prefixed (``dp_`` for API tokens)."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens; ``False`` when either is missing."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def _since(window_s: float) -> dt.datetime:
    return utcnow() - dt.timedelta(seconds=window_s)


def retry_after(
    session: Session, username: str, client: str, *, attempts: int, window_s: float
) -> int:
    """Seconds until another log-in may be tried (0: now).

    More than ``attempts`` failures for ``username``, or ``4 * attempts`` from ``client``,
    within ``window_s`` seconds block further attempts until the oldest one leaves the window.
    """
    since = _since(window_s)
    session.execute(delete(LoginAttempt).where(LoginAttempt.time < since))
    for column, value, limit in (
        (LoginAttempt.username, username.lower(), attempts),
        (LoginAttempt.client, client, 4 * attempts),
    ):
        count = session.scalar(
            select(func.count()).where(column == value, LoginAttempt.time >= since)
        )
        if count >= limit:
            times = session.scalars(
                select(LoginAttempt.time)
                .where(column == value, LoginAttempt.time >= since)
                .order_by(LoginAttempt.time.desc())
                .limit(limit)
            ).all()
            oldest = times[-1]
            return max(1, int((oldest - since).total_seconds()) + 1)
    return 0


def record_failure(session: Session, username: str, client: str) -> None:
    """Count a failed log-in of ``username`` from ``client``."""
    session.add(LoginAttempt(username=username.lower()[:64], client=client[:64]))
