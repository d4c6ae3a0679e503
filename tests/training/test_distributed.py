"""Data-parallel training: two CPU ranks under torchrun; rank 0 writes the only files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from batch_sources import make_sources

from digipath.training.distributed import Ranks, shard

SCRIPT = Path(__file__).with_name("ddp_run.py")


def test_shard_deals_sources_round_robin():
    sources = {"a": [1, 2, 3, 4, 5], "b": [9]}
    assert shard(sources, Ranks(0, 2)) == {"a": [1, 3, 5], "b": [9]}
    assert shard(sources, Ranks(1, 2)) == {"a": [2, 4], "b": [9]}
    assert shard(sources, Ranks()) == sources


def test_two_ranks_train_and_only_rank_0_writes(tmp_path):
    slides, experiments, reports = tmp_path / "slides", tmp_path / "runs", tmp_path / "reports"
    for folder in (slides, experiments, reports):
        folder.mkdir()
    make_sources(slides)
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(SCRIPT), str(slides), str(experiments), str(reports)],
        capture_output=True, text=True, timeout=300, env=environment, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    first, second = (json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1))
    assert first["world"] == second["world"] == 2
    assert first["distributed"] == second["distributed"] == "DistributedDataParallel"
    assert first["summary"] == second["summary"]  # metrics averaged: the same decisions
    assert first["summary"]["epochs_run"] == 2
    # each rank its own images; a category with fewer images than ranks is shared
    shared = set(first["images"]) & set(second["images"])
    assert first["images"] != second["images"] and all(name.startswith("n") for name in shared)
    written = sorted(path.name for path in (experiments / "ddp").iterdir())
    assert "ddp_last_model.safetensors" in written and "ddp_progress.csv" in written
    assert len((experiments / "ddp" / "ddp_progress.csv").read_text().splitlines()) == 3
