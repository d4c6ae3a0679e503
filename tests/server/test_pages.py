"""The server-rendered pages: log-in redirects, rendering, escaping of names, and the
Content-Security-Policy rules the templates and scripts keep (no inline script or style)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from server.browser_support import make_classification_dataset

from digipath.server.app import create_app
from digipath.server.settings import ServerSettings

EVIL = "<script>alert(1)</script>"
PASSWORD = "a long enough passphrase 42"
STATIC = Path(__file__).resolve().parents[2] / "src" / "digipath" / "server" / "static"
PROTECTED = [
    "/", "/projects/1", "/notifications", "/notifications?project_id=1", "/jobs/1",
    "/jobs/1/viewer", "/datasets/1/samples/0/viewer", "/account", "/logout",
]  # fmt: skip


class Page(HTMLParser):
    """What the CSP checks need from a page: scripts, styles, attributes."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[dict] = []
        self.styles = 0
        self.style_attributes: list[str] = []
        self.handlers: list[str] = []
        self.links: list[str] = []
        self.meta: dict[str, str] = {}
        self._in_script: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        for name, value in attrs:
            if name == "style":
                self.style_attributes.append(f"<{tag} style={value!r}>")
            if name.startswith("on"):
                self.handlers.append(f"<{tag} {name}={value!r}>")
            if name in ("href", "src", "action") and value:
                self.links.append(value)
        if tag == "script":
            self._in_script = {"src": values.get("src"), "body": ""}
            self.scripts.append(self._in_script)
        elif tag == "style":
            self.styles += 1
        elif tag == "meta" and values.get("name"):
            self.meta[values["name"]] = values.get("content", "")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_script is not None:
            self._in_script["body"] += data


@pytest.fixture
def app(tmp_path):
    return create_app(ServerSettings(data_dir=tmp_path / "data"), run_jobs=False)


@pytest.fixture
def client(app):
    with TestClient(app) as client:
        yield client


def _login(client: TestClient, username: str = "alice") -> str:
    answer = client.post("/api/v1/auth/register", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    answer = client.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return answer.json()["csrf_token"]


@pytest.fixture
def world(client, tmp_path):
    """A logged-in user with a project, a dataset (both named EVIL) and a pending training."""
    csrf = _login(client)
    headers = {"X-CSRF-Token": csrf}
    project = client.post(
        "/api/v1/projects", json={"name": EVIL, "task": "classification"}, headers=headers
    ).json()
    yaml_path, zip_path = make_classification_dataset(tmp_path / "dataset", count=6)
    answer = client.post(
        "/api/v1/datasets", data={"name": EVIL}, headers=headers,
        files={"dataset": ("colours.yml", yaml_path.read_bytes()),
               "images": ("images.zip", zip_path.read_bytes())},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    dataset = answer.json()
    family = client.get("/api/v1/models?task=classification").json()[0]
    answer = client.post(
        "/api/v1/jobs/train", headers=headers,
        json={"project_id": project["id"], "dataset_id": dataset["id"],
              "family_id": family["id"], "properties": {"Epochs": "2"}},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    return {"csrf": csrf, "project": project, "dataset": dataset, "job": answer.json()}


def _pages(world) -> list[str]:
    project, dataset, job = world["project"]["id"], world["dataset"]["id"], world["job"]["id"]
    return [
        "/", f"/projects/{project}", "/notifications", f"/notifications?project_id={project}",
        f"/jobs/{job}", f"/datasets/{dataset}/samples/0/viewer", "/account", "/logout",
    ]  # fmt: skip


@pytest.mark.parametrize("path", PROTECTED)
def test_anonymous_pages_go_to_login(client, path):
    answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith("/login")
    if path != "/logout":
        assert location == "/login?next=" + quote(path, safe="")


@pytest.mark.parametrize("path", ["/login", "/register", "/reset-password"])
def test_account_pages_render_for_anyone(client, path):
    answer = client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = Page(answer.text)
    assert "csrf-token" not in page.meta  # no session, no token
    assert "/static/common.js" in [s["src"] for s in page.scripts]


def test_login_page_links_and_reset_explains_the_log(client):
    login = client.get("/login").text
    assert 'href="/register"' in login and 'href="/reset-password"' in login
    reset = client.get("/reset-password").text
    assert "server log" in reset  # no mail server configured


def test_logged_in_user_is_sent_from_login_to_projects(client):
    _login(client)
    answer = client.get("/login", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/"


def test_pages_render_for_a_user_with_the_csrf_token(client, world):
    for path in _pages(world):
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.text[:300])
        page = Page(answer.text)
        assert page.meta.get("csrf-token") == world["csrf"], path
        assert "alice" in answer.text
        for link in ("/notifications", "/api/v1/docs", "/account"):
            assert f'href="{link}"' in answer.text, (path, link)
        assert 'id="logout-button"' in answer.text


def test_names_are_escaped_everywhere(client, world):
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for path in _pages(world):
        text = client.get(path).text
        assert EVIL not in text, path
        assert "alert(1)</script>" not in text, path
    project = client.get(f"/projects/{world['project']['id']}").text
    assert f'<span id="project-title">{escaped}</span>' in project
    assert f"<title>{escaped} · digipath</title>" in project
    viewer = client.get(f"/datasets/{world['dataset']['id']}/samples/0/viewer").text
    assert escaped in viewer


def test_pages_keep_the_content_security_policy(client, world):
    paths = ["/login", "/register", "/reset-password", *_pages(world)]
    for path in paths:
        answer = client.get(path)
        policy = answer.headers["content-security-policy"]
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert "script-src 'self'" in policy and "style-src 'self'" in policy
        page = Page(answer.text)
        for script in page.scripts:
            assert script["src"], (path, "inline <script>")
            assert not script["body"].strip(), (path, script)
        assert page.styles == 0, (path, "a <style> block")
        assert not page.style_attributes, (path, page.style_attributes)
        assert not page.handlers, (path, page.handlers)
        assert not [link for link in page.links if link.lower().startswith("javascript:")]
        for link in page.links:
            if link.startswith("/static/"):
                assert client.get(link).status_code == 200, (path, link)


def test_scripts_never_write_html():
    scripts = sorted(STATIC.glob("*.js"))
    assert {"common.js", "project.js", "job.js", "notifications.js"} <= {p.name for p in scripts}
    for path in scripts:
        text = path.read_text(encoding="utf-8")
        for pattern in (r"\.innerHTML", r"\.outerHTML", r"insertAdjacentHTML", r"document\.write",
                        r"\beval\(", r"new Function", r"setAttribute\(\s*['\"]style"):  # fmt: skip
            assert not re.search(pattern, text), (path.name, pattern)
    for path in STATIC.glob("*.css"):
        assert "expression(" not in path.read_text(encoding="utf-8")


def test_project_page_has_the_configuration_cards(client, world):
    text = client.get(f"/projects/{world['project']['id']}").text
    for ident in (
        "configuration", "datasets-table", "datasets-message", "weights-table",
        "weights-table-message", "allowed-form", "allowed-property", "allowed-only-dataset",
        "allowed-rule", "allowed-default-field", "allowed-message", "allowed-table",
        "edit-dialog", "edit-dialog-form", "edit-dialog-name", "edit-dialog-public",
        "edit-dialog-shares",
    ):  # fmt: skip
        assert f'id="{ident}"' in text, ident
    assert text.count("<details open>") == 3
    for title in ("Datasets", "Model weights", "Allowed properties", "Configuration"):
        assert f">{title}</h2>" in text, title
    assert "&gt;=1" in text and "[a,b,c]" in text  # the rule hint
    assert '<dialog id="edit-dialog" class="edit-dialog" aria-labelledby' in text  # closed


def test_project_page_of_another_user_is_not_found(client, world, app):
    with TestClient(app) as other:
        _login(other, "bob")
        answer = other.get(f"/projects/{world['project']['id']}")
        assert answer.status_code == 404
        assert EVIL not in answer.text
        assert other.get(f"/jobs/{world['job']['id']}").status_code == 404
        assert other.get(f"/datasets/{world['dataset']['id']}/samples/0/viewer").status_code == 404


def test_viewer_pages(client, world, monkeypatch):
    job = world["job"]["id"]
    assert client.get(f"/jobs/{job}/viewer").status_code == 404  # a training, not a slide job
    dataset = world["dataset"]["id"]
    assert client.get(f"/datasets/{dataset}/samples/99/viewer").status_code == 404
    import digipath.server.app as application

    monkeypatch.setattr(application, "openseadragon_folder", lambda: None)
    text = client.get(f"/datasets/{dataset}/samples/0/viewer").text
    assert "not installed" in text and 'id="viewer-missing"' in text
    assert "openseadragon.min.js" not in text
    monkeypatch.setattr(application, "openseadragon_folder", lambda: STATIC)
    page = client.get(f"/datasets/{dataset}/samples/0/viewer").text
    assert '<script src="/vendor/openseadragon/openseadragon.min.js" defer></script>' in page
    assert f'data-slide-url="/api/v1/datasets/{dataset}/samples/0/slide.dzi"' in page
    assert "data-overlay-url" not in page


def test_whole_slide_viewer_adds_the_overlay_when_the_job_succeeded(client, world, app):
    from digipath.server.models import Job, JobKind, JobStatus

    with app.state.database.session() as session:
        jobs = {}
        for status in (JobStatus.STARTED, JobStatus.SUCCESS):
            job = Job(kind=JobKind.wsi_apply, status=status, project_id=world["project"]["id"],
                      dataset_id=world["dataset"]["id"], settings={"sample": 0})  # fmt: skip
            session.add(job)
            session.flush()
            jobs[status] = job.id
    running = client.get(f"/jobs/{jobs[JobStatus.STARTED]}/viewer").text
    assert f'data-slide-url="/api/v1/jobs/{jobs[JobStatus.STARTED]}/slide.dzi"' in running
    assert "data-overlay-url" not in running and "once the job has succeeded" in running
    done = jobs[JobStatus.SUCCESS]
    text = client.get(f"/jobs/{done}/viewer").text
    assert f'data-overlay-url="/api/v1/jobs/{done}/overlay.dzi"' in text
    assert 'id="overlay-opacity"' in text
    assert f'href="/jobs/{done}"' in text
