"""apply_many: slides in sequence and on a local Dask cluster with two workers."""

from __future__ import annotations

import numpy as np
import torch

from digipath.inference.cluster import Job, apply_many
from digipath.io import ImageReader, ImageWriter
from digipath.models import model_class

OPTIONS = {"spacing": 0.5, "tile_size": 128}


def slides(folder, count: int) -> list[str]:
    paths = []
    for k in range(count):
        image = np.random.default_rng(k).integers(0, 255, (200, 230, 3), dtype=np.uint8)
        path = folder / f"slide{k}.tif"
        with ImageWriter(path, image.shape[:2], spacing=0.5, compression="lzw") as writer:
            writer.fill(image)
        paths.append(str(path))
    return paths


def model_file(folder) -> str:
    torch.manual_seed(0)
    model = model_class("unet")(classes=2, depth=1, branching_factor=1, padding="same").build()
    return model.save(folder / "net.safetensors")


def test_a_local_cluster_with_two_workers_processes_three_slides(tmp_path):
    images = slides(tmp_path, 3)
    jobs = [Job(image, str(tmp_path / "out" / f"{k}.tif")) for k, image in enumerate(images)]
    jobs.append(Job(str(tmp_path / "missing.tif"), str(tmp_path / "out" / "missing.tif")))
    seen = []

    def progress(result, done, total):
        seen.append((done, total))

    results = apply_many(jobs, model_file(tmp_path), OPTIONS, workers=2, progress=progress)
    assert [r.state for r in results] == ["done", "done", "done", "failed"]
    assert "missing.tif" in results[3].detail
    assert seen[-1] == (4, 4)
    sequential = apply_many(jobs[:1], model_file(tmp_path),
                            {**OPTIONS, "overwrite": True})  # fmt: skip
    assert sequential[0].state == "done"
    for k in range(3):
        with ImageReader(tmp_path / "out" / f"{k}.tif") as reader:
            assert reader.shapes[0] == (200, 230)
