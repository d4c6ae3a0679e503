"""Jobs run for real: training, inference, a single image; stop, crash, restart, Dask.

These start the job runner (the ``running`` fixture), so each job is a spawned worker process
running the digipath engines on a tiny dataset (a few seconds each, mostly the process start).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from fastapi.testclient import TestClient
from server_support import create_project, family_id, login, png, upload_dataset, wait_for
from sqlalchemy import select

from digipath.server.app import create_app
from digipath.server.models import Job, JobKind, JobStatus, utcnow


def _train(client, project, dataset, epochs=2, **extra) -> dict:
    response = client.post(
        "/api/v1/jobs/train",
        json={"project_id": project["id"], "dataset_id": dataset["id"],
              "family_id": family_id(client), "seed": 1,
              "properties": {"Epochs": epochs, "Batch size": 2, "Input height": 16,
                             "Input width": 16, "Learning rate": 0.01, **extra}},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()


def test_train_then_infer(running):
    client = login(running)
    project = create_project(client)
    dataset = upload_dataset(client)
    job = _train(client, project, dataset, epochs=3)
    assert job["status"] == "PENDING" and job["output_weights_id"]
    assert client.get(f"/api/v1/weights/{job['output_weights_id']}").json()["active"] is False
    done = wait_for(client, job["id"], {"SUCCESS"})
    assert done["progress"] == 1.0 and done["started"] and done["finished"]
    assert done["settings"]["properties"]["Epochs"] == "3"
    metrics = client.get(f"/api/v1/jobs/{job['id']}/metrics").json()
    assert metrics["epochs"] == [0, 1, 2]
    assert "validation loss" in metrics["series"] and "training loss" in metrics["series"]
    assert all(v is not None for v in metrics["series"]["validation loss"])
    weights = client.get(f"/api/v1/weights/{job['output_weights_id']}").json()
    assert weights["active"] and weights["classes"] == ["red", "blue"]
    log = client.get(f"/api/v1/jobs/{job['id']}/log").json()
    assert "started" in log["text"] and log["offset"] > 0

    inference = client.post(
        "/api/v1/jobs/inference",
        json={"project_id": project["id"], "dataset_id": dataset["id"],
              "weights_id": weights["id"], "split": "test"},
    ).json()  # fmt: skip
    single = client.post(
        "/api/v1/jobs/inference-single",
        data={"project_id": str(project["id"]), "weights_id": str(weights["id"])},
        files={"image": ("red.png", png((200, 40, 40)))},
    )
    assert single.status_code == 201, single.text
    wait_for(client, inference["id"], {"SUCCESS"})
    results = client.get(f"/api/v1/jobs/{inference['id']}/results").json()
    assert results["count"] == 4 and len(results["images"]) == 4
    assert all(len(entry["scores"]) == 2 for entry in results["images"])
    assert "accuracy" in results["metrics"]
    wait_for(client, single.json()["id"], {"SUCCESS"})
    one = client.get(f"/api/v1/jobs/{single.json()['id']}/results").json()
    assert one["count"] == 1 and one["images"][0]["predicted"] in ("red", "blue")
    listed = client.get(f"/api/v1/jobs?project_id={project['id']}").json()
    assert listed["total"] == 3
    assert {j["kind"] for j in listed["items"]} == {"train", "inference", "inference_single"}
    assert client.get("/api/v1/jobs?q=inference&per_page=1").json()["total"] == 2


def _pid(app, job_id: int) -> int:
    with app.state.database.session() as session:
        worker = session.scalar(select(Job.worker).where(Job.id == job_id))
    return int(worker.split()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie that the runner has not reaped yet counts as gone
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_stop_keeps_the_job_as_revoked(running):
    client = login(running)
    project = create_project(client)
    dataset = upload_dataset(client)
    job = _train(client, project, dataset, epochs=500)
    wait_for(client, job["id"], {"STARTED"}, check=lambda j: j["progress"] > 0)
    pid = _pid(running, job["id"])
    stopped = client.post(f"/api/v1/jobs/{job['id']}/stop")
    assert stopped.status_code == 200 and stopped.json()["status"] == "REVOKED"
    deadline = time.monotonic() + 60  # the runner kills it 5 s after SIGTERM; a loaded CI is slow
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    time.sleep(0.5)
    kept = client.get(f"/api/v1/jobs/{job['id']}").json()
    assert kept["status"] == "REVOKED" and kept["finished"]
    assert client.get("/api/v1/jobs?status=REVOKED").json()["total"] == 1
    assert client.post(f"/api/v1/jobs/{job['id']}/stop").status_code == 409
    assert client.get(f"/api/v1/weights/{job['output_weights_id']}").json()["active"] is False


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_killed_worker_fails_its_job(running):
    client = login(running)
    project = create_project(client)
    dataset = upload_dataset(client)
    job = _train(client, project, dataset, epochs=500)
    wait_for(client, job["id"], {"STARTED"}, check=lambda j: j["progress"] > 0)
    os.kill(_pid(running, job["id"]), signal.SIGKILL)
    failed = wait_for(client, job["id"], {"FAILURE"}, timeout=30)
    assert "SIGKILL" in failed["error"] and "memory" in failed["error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_restart_resumes_training_and_fails_the_rest(settings):
    settings = settings.model_copy(update={"poll_interval_s": 0.1})
    app = create_app(settings)
    with TestClient(app):
        client = login(app)
        project = create_project(client)
        dataset = upload_dataset(client)
        job = _train(client, project, dataset, epochs=12)

        def two_epochs(j):
            return len(client.get(f"/api/v1/jobs/{j['id']}/metrics").json()["epochs"]) >= 2

        wait_for(client, job["id"], {"STARTED"}, check=two_epochs)
        with app.state.database.session() as session:  # an inference the crash interrupts
            session.add(Job(kind=JobKind.inference, status=JobStatus.STARTED, started=utcnow(),
                            project_id=project["id"], settings={}, folder=""))  # fmt: skip
    # the server is gone (its runner terminated the worker); a new one starts on the same data
    app = create_app(settings)
    with TestClient(app):
        client = login(app)
        with app.state.database.session() as session:
            other = session.scalar(select(Job).where(Job.kind == JobKind.inference))
            assert other.status == JobStatus.FAILURE
            assert other.error == "interrupted by a server restart"
        done = wait_for(client, job["id"], {"SUCCESS"})
        assert done["attempts"] == 2
        metrics = client.get(f"/api/v1/jobs/{job['id']}/metrics").json()
        assert metrics["epochs"] == list(range(12))
        log = client.get(f"/api/v1/jobs/{job['id']}/log").json()["text"]
        assert log.count("started (") == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_jobs_on_a_dask_cluster(settings, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:  # fmt: skip
        settings = settings.model_copy(
            update={"dask_scheduler": cluster.scheduler_address, "poll_interval_s": 0.1}
        )
        app = create_app(settings)
        with TestClient(app):
            client = login(app)
            project = create_project(client)
            dataset = upload_dataset(client)
            job = _train(client, project, dataset, epochs=2)
            done = wait_for(client, job["id"], {"SUCCESS"})
            assert done["result"]["epochs"] == 2
            long = _train(client, project, dataset, epochs=500)
            wait_for(client, long["id"], {"STARTED"}, check=lambda j: j["progress"] > 0)
            client.post(f"/api/v1/jobs/{long['id']}/stop")
            # the task notices the stop through the database and ends; the cluster is free
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if not cluster.scheduler.tasks:
                    break
                time.sleep(0.2)
            assert not cluster.scheduler.tasks
            assert client.get(f"/api/v1/jobs/{long['id']}").json()["status"] == "REVOKED"
