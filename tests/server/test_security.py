"""Security: anonymous requests, other users' ids, hostile uploads, CSRF, injection.

Bad input gets a 4xx and nothing is stored.
"""

from __future__ import annotations

import io
import json
import pickle
import stat
import struct
import zipfile

import pytest
from fastapi.testclient import TestClient
from server_support import (
    classification_upload,
    create_project,
    family_id,
    model_file,
    upload_dataset,
    upload_weights,
)
from sqlalchemy import func, select

from digipath.server.models import Dataset, Job, Project, Weights


def _count(api, table) -> int:
    with api.app.state.database.session() as session:
        return session.scalar(select(func.count()).select_from(table))


def _routes(api):
    for path, operations in api.app.openapi()["paths"].items():
        for method in operations:
            yield method.upper(), path


OPEN = {
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/password-reset"),
    ("POST", "/api/v1/auth/password-reset/confirm"),
}


def test_every_endpoint_refuses_anonymous_users(api):
    checked = 0
    for method, path in _routes(api):
        if (method, path) in OPEN:
            continue
        url = path
        for name in ("project_id", "dataset_id", "weights_id", "job_id", "token_id", "index",
                     "level", "col", "row"):  # fmt: skip
            url = url.replace("{" + name + "}", "1")
        url = url.replace("{name:path}", "x.png")
        response = api.request(method, url)
        assert response.status_code == 401, (method, path, response.status_code)
        checked += 1
    assert checked > 30


@pytest.fixture
def owned(users, tmp_path, api):
    """Alice's project, dataset, weights and job; Bob is another user."""
    alice = users("alice")
    project = create_project(alice)
    dataset = upload_dataset(alice)
    weights = upload_weights(alice, model_file(tmp_path))
    job = alice.post(
        "/api/v1/jobs/inference",
        json={"project_id": project["id"], "dataset_id": dataset["id"],
              "weights_id": weights["id"]},
    )  # fmt: skip
    assert job.status_code == 201, job.text
    return {"project": project["id"], "dataset": dataset["id"], "weights": weights["id"],
            "job": job.json()["id"], "bob": users("bob")}  # fmt: skip


def test_ids_of_other_users_are_not_found(owned):
    bob = owned["bob"]
    p, d, w, j = owned["project"], owned["dataset"], owned["weights"], owned["job"]
    for method, url, body in (
        ("GET", f"/api/v1/projects/{p}", None),
        ("PATCH", f"/api/v1/projects/{p}", {"name": "mine"}),
        ("DELETE", f"/api/v1/projects/{p}", None),
        ("GET", f"/api/v1/datasets/{d}", None),
        ("GET", f"/api/v1/datasets/{d}/samples", None),
        ("PATCH", f"/api/v1/datasets/{d}", {"public": True}),
        ("DELETE", f"/api/v1/datasets/{d}", None),
        ("GET", f"/api/v1/datasets/{d}/samples/0/slide.dzi", None),
        ("GET", f"/api/v1/weights/{w}", None),
        ("GET", f"/api/v1/weights/{w}/download", None),
        ("PATCH", f"/api/v1/weights/{w}", {"public": True}),
        ("DELETE", f"/api/v1/weights/{w}", None),
        ("GET", f"/api/v1/jobs/{j}", None),
        ("GET", f"/api/v1/jobs/{j}/metrics", None),
        ("GET", f"/api/v1/jobs/{j}/log", None),
        ("GET", f"/api/v1/jobs/{j}/results", None),
        ("GET", f"/api/v1/jobs/{j}/files/results.json", None),
        ("POST", f"/api/v1/jobs/{j}/stop", None),
        ("GET", f"/api/v1/jobs/{j}/slide.dzi", None),
        ("GET", f"/api/v1/jobs?project_id={p}", None),
    ):
        response = bob.request(method, url, json=body)
        assert response.status_code == 404, (method, url, response.status_code, response.text)
    assert bob.get("/api/v1/jobs").json()["total"] == 0
    assert bob.get("/api/v1/datasets").json() == []
    assert bob.get("/api/v1/weights").json() == []


def test_others_resources_cannot_be_used_in_jobs(owned):
    bob = owned["bob"]
    mine = create_project(bob, "bob's")
    for kind, body in (
        ("inference", {"project_id": mine["id"], "dataset_id": owned["dataset"],
                       "weights_id": owned["weights"]}),
        ("train", {"project_id": mine["id"], "dataset_id": owned["dataset"], "family_id": 1}),
        ("inference", {"project_id": owned["project"], "dataset_id": owned["dataset"],
                       "weights_id": owned["weights"]}),
    ):  # fmt: skip
        response = bob.post(f"/api/v1/jobs/{kind}", json=body)
        assert response.status_code == 404, response.text


def test_viewers_cannot_change_or_start(owned, users):
    alice, bob = users("alice"), owned["bob"]
    alice.patch(f"/api/v1/projects/{owned['project']}", json={"members": [{"username": "bob"}]})
    assert bob.get(f"/api/v1/jobs/{owned['job']}").status_code == 200
    assert bob.post(f"/api/v1/jobs/{owned['job']}/stop").status_code == 403
    assert bob.delete(f"/api/v1/projects/{owned['project']}").status_code == 403
    assert bob.post(
        "/api/v1/jobs/inference",
        json={"project_id": owned["project"], "dataset_id": owned["dataset"],
              "weights_id": owned["weights"]},
    ).status_code == 403  # fmt: skip


def test_csrf_and_cross_site_requests(users, api):
    alice = users("alice")
    token = alice.headers.pop("X-CSRF-Token")
    assert (
        alice.post("/api/v1/projects", json={"name": "P", "task": "segmentation"}).status_code
        == 403
    )
    alice.headers["X-CSRF-Token"] = "wrong"
    assert (
        alice.post("/api/v1/projects", json={"name": "P", "task": "segmentation"}).status_code
        == 403
    )
    alice.headers["X-CSRF-Token"] = token
    evil = alice.post(
        "/api/v1/projects", json={"name": "P", "task": "segmentation"},
        headers={"Origin": "https://evil.example"},
    )  # fmt: skip
    assert evil.status_code == 403
    assert _count(api, Project) == 0
    assert (
        alice.post("/api/v1/projects", json={"name": "P", "task": "segmentation"}).status_code
        == 201
    )


def _upload(client, yaml_bytes, zip_bytes, name="d"):
    return client.post(
        "/api/v1/datasets", data={"name": name},
        files={"dataset": ("dataset.yml", yaml_bytes), "images": ("images.zip", zip_bytes)},
    )  # fmt: skip


def _zip(members: dict[str, bytes], compression=zipfile.ZIP_STORED, modes=None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as handle:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            if modes and name in modes:
                info.external_attr = modes[name] << 16
            handle.writestr(info, data)
    return buffer.getvalue()


def _dataset_yaml(location: str) -> bytes:
    return json.dumps({"classes": ["a"], "images": [{"location": location, "label": "a"}]}).encode()


@pytest.mark.parametrize(
    "case", ["dotdot", "absolute", "symlink", "bomb", "too_big", "not_zip", "yaml_escape",
             "url", "missing_file", "bad_yaml", "not_mapping"],
)  # fmt: skip
def test_hostile_dataset_uploads_are_refused(users, api, settings, case):
    alice = users("alice")
    image = b"\x89PNG fake"
    yaml_bytes, zip_bytes = _dataset_yaml("a.png"), _zip({"a.png": image})
    if case == "dotdot":
        zip_bytes = _zip({"../../escape.png": image})
        yaml_bytes = _dataset_yaml("../../escape.png")
    elif case == "absolute":
        zip_bytes = _zip({"/tmp/abs.png": image})
    elif case == "symlink":
        zip_bytes = _zip({"a.png": b"/etc/passwd"}, modes={"a.png": stat.S_IFLNK | 0o777})
    elif case == "bomb":
        zip_bytes = _zip({"a.png": b"\0" * 3_000_000}, zipfile.ZIP_DEFLATED)
    elif case == "too_big":
        zip_bytes = _zip({f"{i}.bin": bytes(range(256)) * 1000 for i in range(10)})
    elif case == "not_zip":
        zip_bytes = b"this is not a zip"
    elif case == "yaml_escape":
        yaml_bytes = _dataset_yaml("../../../../etc/passwd")
    elif case == "url":
        yaml_bytes = _dataset_yaml("http://example.com/a.png")
    elif case == "missing_file":
        yaml_bytes = _dataset_yaml("b.png")
    elif case == "bad_yaml":
        yaml_bytes = b"images: [a.png\nclasses: {"
    elif case == "not_mapping":
        yaml_bytes = b"- just\n- a list\n"
    response = _upload(alice, yaml_bytes, zip_bytes)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    assert _count(api, Dataset) == 0
    folder = settings.data_dir / "datasets"
    assert not folder.exists() or list(folder.iterdir()) == []
    assert not (settings.data_dir.parent / "escape.png").exists()


def test_oversized_zip_gets_413(users, api):
    alice = users("alice")
    big = _zip({"a.bin": bytes(2_100_000)})
    response = _upload(alice, _dataset_yaml("a.bin"), big)
    assert response.status_code == 413
    assert _count(api, Dataset) == 0


class _Boom:
    def __reduce__(self):
        return (print, ("pickle ran",))


@pytest.mark.parametrize("case", ["pickle", "torch_zip", "bad_length", "not_json", "no_header"])
def test_disguised_model_files_are_refused(users, api, settings, tmp_path, case, capsys):
    alice = users("alice")
    if case == "pickle":
        data = pickle.dumps({"weights": _Boom()})
    elif case == "torch_zip":
        data = _zip({"archive/data.pkl": pickle.dumps(_Boom())})
    elif case == "bad_length":
        data = struct.pack("<Q", 10**12) + b"{}"
    elif case == "not_json":
        data = struct.pack("<Q", 4) + b"\x80abc"
    else:  # a real safetensors file without a digipath header
        import numpy as np
        from safetensors.numpy import save

        data = save({"x": np.zeros(3, np.float32)})
    response = alice.post(
        "/api/v1/weights", data={"name": "evil", "family_id": str(family_id(alice))},
        files={"file": ("model.safetensors", data)},
    )  # fmt: skip
    assert response.status_code == 422, response.text
    assert "pickle ran" not in capsys.readouterr().out
    assert _count(api, Weights) == 0
    folder = settings.data_dir / "weights"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_oversized_model_file_gets_413(users, api, settings):
    alice = users("alice")
    response = alice.post(
        "/api/v1/weights", data={"name": "big", "family_id": str(family_id(alice))},
        files={"file": ("m.safetensors", bytes(2_100_000))},
    )  # fmt: skip
    assert response.status_code == 413
    assert list((settings.data_dir / "weights").iterdir()) == []


def test_single_image_uploads_are_checked(owned, users, api):
    alice = users("alice")
    before = _count(api, Job)
    for name, data in (("../x.png", b"x"), ("x.exe", b"x"), ("x.png", b"not a png"), ("", b"")):
        response = alice.post(
            "/api/v1/jobs/inference-single",
            data={"project_id": str(owned["project"]), "weights_id": str(owned["weights"])},
            files={"image": (name, data)},
        )
        assert 400 <= response.status_code < 500, (name, response.text)
    pending = select(func.count()).select_from(Job).where(Job.status == "PENDING")
    with api.app.state.database.session() as session:
        assert session.scalar(pending) == 1  # only the fixture's inference job
    assert _count(api, Job) >= before


def test_job_files_stay_in_the_job_folder(owned, users):
    alice = users("alice")
    response = alice.get(f"/api/v1/jobs/{owned['job']}/files/../../../../etc/passwd")
    assert response.status_code == 404
    response = alice.get(f"/api/v1/jobs/{owned['job']}/files/%2e%2e/%2e%2e/secret")
    assert response.status_code == 404


def test_names_are_stored_verbatim_and_never_as_markup(users):
    alice = users("alice")
    script = "<script>alert(1)</script>"
    project = create_project(alice, script)
    assert project["name"] == script  # JSON carries text; the pages show it as text
    response = alice.get(f"/api/v1/projects/{project['id']}")
    assert response.headers["content-type"].startswith("application/json")
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    control = alice.post("/api/v1/projects", json={"name": "a\x00b", "task": "segmentation"})
    assert control.status_code == 422


def test_malformed_json_and_unknown_keys(users, api):
    alice = users("alice")
    bad = alice.post(
        "/api/v1/projects", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 422
    extra = alice.post("/api/v1/projects", json={"name": "P", "task": "segmentation", "x": 1})
    assert extra.status_code == 422
    assert _count(api, Project) == 0


def test_training_properties_are_checked_at_submission(owned, users, api):
    alice = users("alice")
    before = _count(api, Job)
    for properties in (
        {"Epochs": "-1"}, {"Learning rate": "fast"}, {"No such": "1"},
        {"Loss function": "hinge"}, {"Training augmentations": "AugBogus x=1"},
    ):  # fmt: skip
        response = alice.post(
            "/api/v1/jobs/train",
            json={"project_id": owned["project"], "dataset_id": owned["dataset"],
                  "family_id": family_id(alice), "properties": properties},
        )  # fmt: skip
        assert response.status_code == 422, (properties, response.text)
    assert _count(api, Job) == before


def test_unauthenticated_client_gets_no_cookie_tricks(api):
    forged = TestClient(api.app, cookies={"digipath_session": "forged"})
    assert forged.get("/api/v1/projects").status_code == 401


def test_register_then_upload_is_rejected_when_yaml_names_other_upload(users, api, settings):
    alice, bob = users("alice"), users("bob")
    first = upload_dataset(alice)
    folder = next((settings.data_dir / "datasets").iterdir()).name
    yaml_bytes, _ = classification_upload(2)
    document = json.loads(yaml_bytes)
    document["images"] = [{"location": f"../{folder}/images/red_0.png", "label": "red"}]
    document.pop("split")
    response = bob.post(
        "/api/v1/datasets", data={"name": "steal"},
        files={"dataset": ("d.yml", json.dumps(document)), "images": ("i.zip", _zip({}))},
    )  # fmt: skip
    assert response.status_code == 422 and "outside" in response.json()["detail"]
    assert [d["id"] for d in bob.get("/api/v1/datasets").json()] == []
    assert first["id"]
