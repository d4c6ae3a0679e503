"""Run by test_distributed.py under torchrun: a tiny experiment on two CPU ranks.

Arguments: SLIDES_FOLDER EXPERIMENT_FOLDER REPORT_FOLDER. Rank 0 writes into
EXPERIMENT_FOLDER; other ranks get an unwritable folder there, so a file written by any rank
but 0 fails the run. Every rank reports what it sampled into REPORT_FOLDER/rank<N>.json.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers

from batch_sources import make_sources
from tiny_experiment import PARAMETERS

from digipath.data.config import DataConfig
from digipath.training.experiment import ExperimentCommander


def main() -> None:
    slides, experiments, reports = (Path(a) for a in sys.argv[1:4])
    rank = int(os.environ["RANK"])
    sources = make_sources(slides, write=False)  # the test wrote them before the launch
    parameters = copy.deepcopy(PARAMETERS)
    parameters["training"]["epoch count"] = 2
    progress = experiments if rank == 0 else Path("/proc/digipath-no-writing-here")
    commander = ExperimentCommander(
        parameters, DataConfig(sources), experiment_name="ddp", progress_dir=progress, seed=5
    )
    summary = commander.execute()
    images = sorted(
        Path(s.image).name for items in commander.data.collection()["training"].values()
        for s in items
    )  # fmt: skip
    (reports / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": commander.ranks.world_size, "images": images,
        "summary": {k: v for k, v in summary.items() if k != "last_row"},
        "distributed": type(commander.model.network).__name__,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
