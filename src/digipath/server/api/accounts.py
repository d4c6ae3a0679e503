"""Accounts: register, log in and out, the current user, passwords, API tokens.

A browser logs in with ``POST /auth/login`` and gets an HttpOnly, SameSite=Strict session
cookie plus the CSRF token its pages send back; a script creates an API token (``POST
/tokens``, once logged in, or ``POST /auth/token`` with its user name and password) and sends
``Authorization: Bearer <token>``. Password resets make a one-time token that is mailed when
a mail server is configured and written to the server log otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
from email.message import EmailMessage

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from digipath.server.api.schemas import Body, Name, Username
from digipath.server.deps import SESSION_COOKIE, Caller, caller, database
from digipath.server.models import ApiToken, PasswordReset, User, utcnow
from digipath.server.models import Session as LoginSession
from digipath.server.security import (
    check_password,
    hash_password,
    hash_token,
    new_token,
    password_problem,
    record_failure,
    retry_after,
)

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["accounts"])

RESET_HOURS = 1.0


class Registration(Body):
    username: Username
    password: str
    email: str = ""
    full_name: str = ""


class Credentials(Body):
    username: str
    password: str


class PasswordChange(Body):
    old_password: str
    new_password: str


class ResetRequest(Body):
    username: str


class ResetConfirm(Body):
    token: str
    password: str


class TokenRequest(Body):
    name: Name = "script"


class AccountDeletion(Body):
    password: str


def user_document(user: User) -> dict:
    """The public fields of a user."""
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "full_name": user.full_name,
        "admin": user.admin,
        "created": user.created.isoformat(),
    }


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _refuse_password(password: str, username: str) -> None:
    problem = password_problem(password, username)
    if problem:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problem)


@router.post("/auth/register", status_code=status.HTTP_201_CREATED)
def register(body: Registration, db: Session = Depends(database, scope="function")) -> dict:
    """Create an account (anyone may). The first account administers the server."""
    _refuse_password(body.password, body.username)
    if len(body.email) > 254 or len(body.full_name) > 128:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "e-mail or name too long")
    taken = db.scalar(select(User).where(User.username.ilike(body.username)))
    if taken is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"user name {body.username!r} is taken")
    first = db.scalar(select(func.count()).select_from(User)) == 0
    user = User(
        username=body.username, email=body.email.strip(), full_name=body.full_name.strip(),
        password_hash=hash_password(body.password), admin=first,
    )  # fmt: skip
    db.add(user)
    db.flush()
    logger.info("registered user %s", user.username)
    return user_document(user)


def _verify(request: Request, db: Session, username: str, password: str) -> User:
    settings = request.app.state.settings
    client = _client(request)
    wait = retry_after(
        db, username, client, attempts=settings.login_attempts, window_s=settings.login_window_s
    )
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed log-ins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    user = db.scalar(select(User).where(User.username == username))
    ok, rehash = check_password(user.password_hash, password) if user else (False, None)
    if not ok:
        record_failure(db, username, client)
        db.commit()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
    if rehash:
        user.password_hash = rehash
    return user


def start_session(request: Request, response: Response, db: Session, user: User) -> str:
    """Open a browser session for ``user``: set the cookie, return the CSRF token."""
    settings = request.app.state.settings
    token = new_token()
    login = LoginSession(
        token_hash=hash_token(token), user_id=user.id, csrf_token=new_token(),
        expires=utcnow() + dt.timedelta(hours=settings.session_hours),
    )  # fmt: skip
    db.add(login)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=int(settings.session_hours * 3600), httponly=True,
        samesite="strict", secure=settings.secure_cookies, path="/",
    )  # fmt: skip
    return login.csrf_token


@router.post("/auth/login")
def login(
    body: Credentials,
    request: Request,
    response: Response,
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Log in: a session cookie, and the CSRF token to send as ``X-CSRF-Token``."""
    user = _verify(request, db, body.username, body.password)
    csrf = start_session(request, response, db, user)
    logger.info("user %s logged in", user.username)
    return {"user": user_document(user), "csrf_token": csrf}


@router.post("/auth/logout")
def logout(
    response: Response,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
):
    """End this browser session (an API token is revoked with ``DELETE /tokens/{id}``)."""
    if who.session is not None:
        db.execute(delete(LoginSession).where(LoginSession.id == who.session.id))
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"result": "logged out"}


@router.get("/auth/me")
def me(who: Caller = Depends(caller)) -> dict:
    """The current user (and the session's CSRF token)."""
    return {"user": user_document(who.user), "csrf_token": who.csrf_token}


@router.post("/auth/password")
def change_password(
    body: PasswordChange,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Change the password; every other session of the user is closed."""
    ok, _ = check_password(who.user.password_hash, body.old_password)
    if not ok:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the old password is wrong")
    _refuse_password(body.new_password, who.user.username)
    who.user.password_hash = hash_password(body.new_password)
    keep = who.session.id if who.session else -1
    db.execute(
        delete(LoginSession).where(LoginSession.user_id == who.user.id, LoginSession.id != keep)
    )
    return {"result": "password changed"}


def _send_reset(request: Request, user: User, token: str) -> None:
    settings = request.app.state.settings
    if settings.smtp_host and user.email:
        message = EmailMessage()
        message["From"] = settings.mail_from
        message["To"] = user.email
        message["Subject"] = "digipath password reset"
        message.set_content(
            f"A password reset was asked for the digipath account {user.username}.\n"
            f"Reset token (valid {RESET_HOURS:g} h): {token}\n"
        )
        with smtplib.SMTP(settings.smtp_host, timeout=10) as server:
            server.send_message(message)
        logger.info("password reset token for %s mailed to %s", user.username, user.email)
    else:
        logger.warning("password reset token for user %s: %s", user.username, token)


@router.post("/auth/password-reset", status_code=status.HTTP_202_ACCEPTED)
def request_reset(
    body: ResetRequest, request: Request, db: Session = Depends(database, scope="function")
) -> dict:
    """Make a reset token for the user (mailed, or in the server log). The answer is the same
    whether or not the user exists; requests are rate limited as failed log-ins are."""
    settings = request.app.state.settings
    key, client = f"reset:{body.username}"[:64], _client(request)
    wait = retry_after(
        db, key, client, attempts=settings.login_attempts, window_s=settings.login_window_s
    )
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many password-reset requests; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    record_failure(db, key, client)
    user = db.scalar(select(User).where(User.username == body.username))
    if user is not None:
        token = new_token()
        db.add(
            PasswordReset(
                token_hash=hash_token(token), user_id=user.id,
                expires=utcnow() + dt.timedelta(hours=RESET_HOURS),
            )
        )  # fmt: skip
        _send_reset(request, user, token)
    return {"result": "if the user exists, a reset token was sent (or written to the log)"}


@router.post("/auth/password-reset/confirm")
def confirm_reset(body: ResetConfirm, db: Session = Depends(database, scope="function")) -> dict:
    """Set a new password with a reset token; the token then expires, as do all sessions."""
    reset = db.scalar(
        select(PasswordReset).where(PasswordReset.token_hash == hash_token(body.token))
    )
    if reset is None or reset.used or reset.expires <= utcnow():
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid or expired reset token")
    user = db.get(User, reset.user_id)
    _refuse_password(body.password, user.username)
    user.password_hash = hash_password(body.password)
    reset.used = True
    db.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
    return {"result": "password changed"}


@router.post("/auth/token", status_code=status.HTTP_201_CREATED)
def token_for_script(
    body: Credentials, request: Request, db: Session = Depends(database, scope="function")
) -> dict:
    """An API token from a user name and password (for scripts; rate limited as log-ins)."""
    user = _verify(request, db, body.username, body.password)
    return _make_token(db, user, "script")


def _make_token(db: Session, user: User, name: str) -> dict:
    token = new_token("dp_")
    row = ApiToken(name=name, prefix=token[:8], token_hash=hash_token(token), user_id=user.id)
    db.add(row)
    db.flush()
    return {"id": row.id, "name": row.name, "token": token, "created": row.created.isoformat()}


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
def create_token(
    body: TokenRequest,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """A new API token; the token itself is shown only in this answer."""
    return _make_token(db, who.user, body.name)


@router.get("/tokens")
def list_tokens(
    who: Caller = Depends(caller), db: Session = Depends(database, scope="function")
) -> list[dict]:
    """The user's API tokens (names and prefixes, never the tokens)."""
    rows = db.scalars(select(ApiToken).where(ApiToken.user_id == who.user.id)).all()
    return [
        {
            "id": row.id, "name": row.name, "prefix": row.prefix,
            "created": row.created.isoformat(),
            "last_used": row.last_used.isoformat() if row.last_used else None,
        }
        for row in rows
    ]  # fmt: skip


@router.delete("/tokens/{token_id}")
def delete_token(
    token_id: int, who: Caller = Depends(caller), db: Session = Depends(database, scope="function")
) -> dict:
    """Revoke one of the user's API tokens."""
    row = db.get(ApiToken, token_id)
    if row is None or row.user_id != who.user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no API token with id {token_id}")
    db.delete(row)
    return {"result": "revoked"}


@router.delete("/auth/account")
def delete_account(
    body: AccountDeletion,
    response: Response,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Delete the account (the password confirms it). Projects the user alone owned go too."""
    from digipath.server.api.projects import delete_orphaned_projects

    ok, _ = check_password(who.user.password_hash, body.password)
    if not ok:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong password")
    delete_orphaned_projects(db, who.user)
    db.delete(who.user)
    response.delete_cookie(SESSION_COOKIE, path="/")
    logger.info("deleted user %s", who.user.username)
    return {"result": "account deleted"}
