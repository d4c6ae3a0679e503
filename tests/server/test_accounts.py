"""Accounts: register, log in/out, passwords, resets, tokens, rate limits, deletion."""

from __future__ import annotations

import logging
import re

from fastapi.testclient import TestClient
from server_support import PASSWORD, create_project
from sqlalchemy import select

from digipath.server.models import User


def _register(client, name="alice", password=PASSWORD):
    return client.post("/api/v1/auth/register", json={"username": name, "password": password})


def _login(client, name="alice", password=PASSWORD):
    return client.post("/api/v1/auth/login", json={"username": name, "password": password})


def test_register_login_logout(api):
    assert _register(api).status_code == 201
    response = _login(api)
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    csrf = response.json()["csrf_token"]
    me = api.get("/api/v1/auth/me")
    assert me.json()["user"]["username"] == "alice" and me.json()["csrf_token"] == csrf
    assert api.post("/api/v1/auth/logout").status_code == 403  # no CSRF header
    assert api.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert api.get("/api/v1/auth/me").status_code == 401


def test_password_is_hashed_with_argon2(api):
    _register(api)
    with api.app.state.database.session() as session:
        user = session.scalar(select(User).where(User.username == "alice"))
        assert user.password_hash.startswith("$argon2id$")
        assert PASSWORD not in user.password_hash


def test_register_refuses_bad_names_weak_passwords_and_duplicates(api):
    assert _register(api, "<b>x</b>").status_code == 422
    assert _register(api, "al").status_code == 422
    assert _register(api, "bob", "short").status_code == 422
    assert _register(api, "carol", "carol").status_code == 422
    assert _register(api).status_code == 201
    assert _register(api, "ALICE").status_code == 409


def test_wrong_password_and_unknown_user_get_the_same_answer(api):
    _register(api)
    a = _login(api, "alice", "wrong password")
    b = _login(api, "nobody", "wrong password")
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json()


def test_login_rate_limit(api):
    _register(api)
    for _ in range(3):  # the settings allow 3 failures
        assert _login(api, password="wrong password").status_code == 401
    blocked = _login(api)  # even the right password waits now
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0


def test_change_password_closes_other_sessions(users, api):
    alice = users("alice")
    other = TestClient(api.app)
    assert _login(other).status_code == 200
    response = alice.post(
        "/api/v1/auth/password", json={"old_password": "nope", "new_password": "new password 1"}
    )
    assert response.status_code == 403
    response = alice.post(
        "/api/v1/auth/password", json={"old_password": PASSWORD, "new_password": "new password 1"}
    )
    assert response.status_code == 200
    assert alice.get("/api/v1/auth/me").status_code == 200
    assert other.get("/api/v1/auth/me").status_code == 401
    assert _login(TestClient(api.app), password="new password 1").status_code == 200


def test_password_reset_token_in_the_log(api, caplog):
    _register(api)
    with caplog.at_level(logging.WARNING, logger="digipath.server"):
        response = api.post("/api/v1/auth/password-reset", json={"username": "alice"})
        unknown = api.post("/api/v1/auth/password-reset", json={"username": "nobody"})
    assert response.status_code == unknown.status_code == 202
    assert response.json() == unknown.json()  # no user enumeration
    match = re.search(r"password reset token for user alice: (\S+)", caplog.text)
    assert match, caplog.text
    token = match.group(1)
    bad = api.post(
        "/api/v1/auth/password-reset/confirm", json={"token": "x", "password": "abcdefgh1"}
    )
    assert bad.status_code == 400
    ok = api.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": "brand new pass"}
    )
    assert ok.status_code == 200
    again = api.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": "another pass 2"}
    )
    assert again.status_code == 400  # one use
    assert _login(api, password="brand new pass").status_code == 200


def test_api_tokens(users, api):
    alice = users("alice")
    made = alice.post("/api/v1/tokens", json={"name": "my script"})
    assert made.status_code == 201
    token = made.json()["token"]
    script = TestClient(api.app, headers={"Authorization": f"Bearer {token}"})
    assert script.get("/api/v1/auth/me").json()["user"]["username"] == "alice"
    # no CSRF token needed with a bearer token (no cookie is involved)
    assert (
        script.post("/api/v1/projects", json={"name": "S", "task": "segmentation"}).status_code
        == 201
    )
    listed = alice.get("/api/v1/tokens").json()
    assert [t["name"] for t in listed] == ["my script"] and "token" not in listed[0]
    assert alice.delete(f"/api/v1/tokens/{made.json()['id']}").status_code == 200
    assert script.get("/api/v1/auth/me").status_code == 401
    bogus = TestClient(api.app, headers={"Authorization": "Bearer dp_not-a-token"})
    assert bogus.get("/api/v1/projects").status_code == 401


def test_token_from_password(api):
    _register(api)
    response = api.post("/api/v1/auth/token", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 201
    script = TestClient(api.app, headers={"Authorization": f"Bearer {response.json()['token']}"})
    assert script.get("/api/v1/projects").status_code == 200


def test_delete_account(users, api):
    alice, bob = users("alice"), users("bob")
    mine = create_project(alice, "alone")
    shared = create_project(alice, "shared", members=[{"username": "bob", "role": "owner"}])
    assert (
        alice.request("DELETE", "/api/v1/auth/account", json={"password": "nope"}).status_code
        == 403
    )
    assert (
        alice.request("DELETE", "/api/v1/auth/account", json={"password": PASSWORD}).status_code
        == 200
    )
    assert _login(TestClient(api.app)).status_code == 401
    assert bob.get(f"/api/v1/projects/{shared['id']}").status_code == 200
    ids = [p["id"] for p in bob.get("/api/v1/projects").json()]
    assert mine["id"] not in ids


def test_password_reset_requests_are_rate_limited(api):
    _register(api)
    for _ in range(3):
        assert (
            api.post("/api/v1/auth/password-reset", json={"username": "alice"}).status_code == 202
        )
    limited = api.post("/api/v1/auth/password-reset", json={"username": "alice"})
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert _login(api).status_code == 200  # log-ins of the user are not blocked by it
