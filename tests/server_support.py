"""Helpers of the web-application tests: small uploads, model files, projects."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

PASSWORD = "correct horse battery"


def png(colour: tuple[int, int, int], size: int = 16, seed: int = 0) -> bytes:
    """A small noisy PNG of one colour (RGB)."""
    rng = np.random.default_rng(seed)
    image = np.clip(np.array(colour)[None, None] + rng.normal(0, 8, (size, size, 3)), 0, 255)
    ok, data = cv2.imencode(".png", image.astype(np.uint8)[..., ::-1])
    assert ok
    return data.tobytes()


def classification_upload(count: int = 12) -> tuple[bytes, bytes]:
    """(YAML, zip) of a DeepHealth classification dataset: red and blue images."""
    archive = io.BytesIO()
    images = []
    with zipfile.ZipFile(archive, "w") as handle:
        for i in range(count):
            label = ("red", "blue")[i % 2]
            colour = (200, 40, 40) if label == "red" else (40, 40, 200)
            name = f"images/{label}_{i}.png"
            handle.writestr(name, png(colour, seed=i))
            images.append({"location": name, "label": label})
    third = count // 3
    document = {
        "name": "colours", "classes": ["red", "blue"], "images": images,
        "split": {"training": list(range(0, count - 2 * third)),
                  "validation": list(range(count - 2 * third, count - third)),
                  "test": list(range(count - third, count))},
    }  # fmt: skip
    return json.dumps(document).encode(), archive.getvalue()


def upload_dataset(client: TestClient, name: str = "colours", **fields) -> dict:
    """Upload the classification dataset; the created dataset's document."""
    yaml_bytes, zip_bytes = classification_upload()
    response = client.post(
        "/api/v1/datasets",
        data={"name": name, **fields},
        files={"dataset": ("dataset.yml", yaml_bytes), "images": ("images.zip", zip_bytes)},
    )
    assert response.status_code == 201, response.text
    return response.json()


def model_file(folder: Path, model_type: str = "cifar", classes: int = 2) -> Path:
    """A small digipath model file of ``model_type``."""
    from digipath.models.registry import model_class

    model = model_class(model_type)(classes=classes, input_shape=(32, 32)).build()
    return Path(model.save(folder / f"{model_type}.safetensors", patch_shapes={0.5: (32, 32)}))


def family_id(client: TestClient, model_type: str = "cifar") -> int:
    """The id of the fixture family of ``model_type``."""
    families = client.get("/api/v1/models").json()
    return next(f["id"] for f in families if f["model_type"] == model_type)


def upload_weights(client: TestClient, path: Path, name: str = "w", **fields) -> dict:
    """Upload a model file to the cifar family; the weights' document."""
    response = client.post(
        "/api/v1/weights",
        data={"name": name, "family_id": str(family_id(client)), **fields},
        files={"file": (path.name, path.read_bytes())},
    )
    assert response.status_code == 201, response.text
    return response.json()


def create_project(client: TestClient, name: str = "P", task: str = "classification", **body):
    """Create a project; its document."""
    response = client.post("/api/v1/projects", json={"name": name, "task": task, **body})
    assert response.status_code == 201, response.text
    return response.json()


JOB_TIMEOUT_S = 120


def login(app, name: str = "alice") -> TestClient:
    """A client of ``app`` logged in as ``name`` (registered when new), CSRF header set."""
    client = TestClient(app)
    client.post("/api/v1/auth/register", json={"username": name, "password": PASSWORD})
    response = client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client


def wait_for(client, job_id: int, statuses, timeout=JOB_TIMEOUT_S, check=None) -> dict:
    """Poll the job until its status is one of ``statuses`` (and ``check(job)`` holds); fail
    with the job's error and log when it ends otherwise or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in statuses and (check is None or check(job)):
            return job
        if job["status"] in ("SUCCESS", "FAILURE", "REVOKED") and job["status"] not in statuses:
            log = client.get(f"/api/v1/jobs/{job_id}/log").json()["text"]
            pytest.fail(f"job {job_id} ended {job['status']}: {job['error']}\n{log[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} is still {job['status']} after {timeout} s")
        time.sleep(0.2)
