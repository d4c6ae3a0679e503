"""Whole-slide jobs and the deep-zoom viewer's tiles (slide and output-map overlay)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
from server_support import login, wait_for

from digipath.io.reader import ImageReader
from digipath.io.writer import ImageWriter

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _slide(path, size=512):
    rows, cols = np.mgrid[:size, :size]
    image = np.full((size, size, 3), 235, np.uint8)
    image[(rows - 200) ** 2 + (cols - 300) ** 2 < 90**2] = (120, 40, 140)
    with ImageWriter(path, (size, size), spacing=0.5, channels=3, tile_size=256,
                     dtype="uint8") as writer:  # fmt: skip
        for r in range(0, size, 256):
            for c in range(0, size, 256):
                writer.write(image[r : r + 256, c : c + 256], r, c)


def _unet(folder):
    from digipath.models.registry import model_class

    model = model_class("unet")(classes=2, input_channels=3, input_shape=(64, 64), depth=2,
                                branching_factor=2, padding="same").build()  # fmt: skip
    return model.save(folder / "unet.safetensors", patch_shapes={0.5: (64, 64)})


def _dzi_size(text: str) -> tuple[int, int]:
    size = ET.fromstring(text).find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    return int(size.get("Width")), int(size.get("Height"))


def test_whole_slide_job_and_its_tiles(running, settings, tmp_path):
    client = login(running)
    _slide(settings.slide_root / "slide.tif")
    project = client.post("/api/v1/projects", json={"name": "S", "task": "segmentation"}).json()
    dataset = client.post(
        "/api/v1/datasets/register", json={"name": "slides", "images": ["slide.tif"]}
    ).json()
    families = client.get("/api/v1/models?task=segmentation").json()
    path = _unet(tmp_path)
    with open(path, "rb") as handle:
        weights = client.post(
            "/api/v1/weights", data={"name": "unet", "family_id": str(families[0]["id"])},
            files={"file": ("unet.safetensors", handle.read())},
        ).json()  # fmt: skip
    # the dataset's slide in the viewer, before any job
    dzi = client.get(f"/api/v1/datasets/{dataset['id']}/samples/0/slide.dzi")
    assert dzi.status_code == 200 and _dzi_size(dzi.text) == (512, 512)
    job = client.post(
        "/api/v1/jobs/wsi-apply",
        json={"project_id": project["id"], "dataset_id": dataset["id"],
              "weights_id": weights["id"], "sample": 0, "output_class": 1},
    )  # fmt: skip
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    assert client.get(f"/api/v1/jobs/{job_id}/overlay.dzi").status_code == 409  # not yet
    done = wait_for(client, job_id, {"SUCCESS"})
    assert done["result"]["output"] == "output/prediction.tif" and done["result"]["spacing"] == 0.5
    output = settings.data_dir / "jobs" / str(job_id) / "output" / "prediction.tif"
    with ImageReader(output) as prediction:
        assert prediction.shapes[0] == (512, 512)
    slide = client.get(f"/api/v1/jobs/{job_id}/slide.dzi")
    overlay = client.get(f"/api/v1/jobs/{job_id}/overlay.dzi")
    assert _dzi_size(slide.text) == _dzi_size(overlay.text) == (512, 512)
    # translucent overlay tiles do not overlap (they would be blended twice at the seams)
    assert ET.fromstring(overlay.text).get("Overlap") == "0"
    top = 10  # ceil(log2(512)) + 1 levels: 0..9
    tile = client.get(f"/api/v1/jobs/{job_id}/slide_files/{top - 1}/0_0.jpeg")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(tile.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (255, 255)  # 254 + 1 px of overlap on the right and bottom
    layer = client.get(f"/api/v1/jobs/{job_id}/overlay_files/{top - 1}/1_1.png")
    assert layer.status_code == 200 and layer.headers["content-type"] == "image/png"
    rgba = cv2.imdecode(np.frombuffer(layer.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert rgba.shape[2] == 4
    assert client.get(f"/api/v1/jobs/{job_id}/slide_files/{top}/0_0.jpeg").status_code == 404
    assert client.get(f"/api/v1/jobs/{job_id}/slide_files/0/5_5.jpeg").status_code == 404


def test_nuclei_job_with_a_stand_in_network(api, settings, monkeypatch, tmp_path):
    """The nuclei job's wiring, run in this process with a HoVer-Net stand-in (the real
    network takes seconds per window on a CPU; its inference is tested in tests/nuclei)."""
    from nuclei_standin import CoordinateModel, coordinate_image
    from scipy import ndimage
    from server_support import login

    from digipath.models import files
    from digipath.server.jobs import run_job
    from digipath.server.models import Job, JobKind, JobStatus, Weights, utcnow
    from digipath.synthetic import nuclei_slide

    client = login(api.app)
    generated = nuclei_slide((300, 400), spacing=0.5, seed=3)
    instances, count = ndimage.label(generated.mask)
    with ImageWriter(settings.slide_root / "nuclei.tif", instances.shape, spacing=0.5,
                     compression="lzw", tile_size=128) as writer:  # fmt: skip
        writer.fill(coordinate_image(instances.shape))
    project = client.post("/api/v1/projects", json={"name": "N", "task": "segmentation"}).json()
    dataset = client.post(
        "/api/v1/datasets/register", json={"name": "n", "images": ["nuclei.tif"]}
    ).json()
    family = next(f for f in client.get("/api/v1/models").json() if f["model_type"] == "hovernet")
    with api.app.state.database.session() as session:
        weights = Weights(name="hovernet", family_id=family["id"], location=str(tmp_path / "h"),
                          active=True, owner_id=1)  # fmt: skip
        session.add(weights)
    job = client.post(
        "/api/v1/jobs/nuclei",
        json={"project_id": project["id"], "dataset_id": dataset["id"],
              "weights_id": weights.id, "spacing": 0.5},
    )  # fmt: skip
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    with api.app.state.database.session() as session:  # what the runner does before starting
        row = session.get(Job, job_id)
        row.status, row.started, row.attempts = JobStatus.STARTED, utcnow(), 1
    monkeypatch.setattr(files, "read_header", lambda path: {"spacings": [0.5]})
    monkeypatch.setattr(files, "load_model", lambda *a, **k: CoordinateModel(instances))
    assert run_job(job_id, settings.url, str(settings.data_dir)) == "SUCCESS"
    done = client.get(f"/api/v1/jobs/{job_id}").json()
    assert done["kind"] == JobKind.nuclei.value and done["result"]["nuclei"] > 0.8 * count
    geojson = client.get(f"/api/v1/jobs/{job_id}/files/nuclei.geojson")
    assert geojson.status_code == 200
    assert len(geojson.json()["features"]) == done["result"]["nuclei"]
    overlay = client.get(f"/api/v1/jobs/{job_id}/overlay.dzi")
    assert _dzi_size(overlay.text) == (400, 300)
    tile = client.get(f"/api/v1/jobs/{job_id}/overlay_files/9/0_0.png")
    rgba = cv2.imdecode(np.frombuffer(tile.content, np.uint8), cv2.IMREAD_UNCHANGED)
    coloured = (rgba[..., 3] > 0).mean()
    expected = (instances[:255, :255] > 0).mean()  # tile (0, 0) of the full-resolution level
    assert expected > 0 and abs(coloured - expected) < 0.25 * expected
    other = client.post(
        "/api/v1/jobs/nuclei",
        json={"project_id": project["id"], "dataset_id": dataset["id"], "weights_id": 10**6},
    )
    assert other.status_code == 404
