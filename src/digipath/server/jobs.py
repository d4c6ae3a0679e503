"""What a job does, run in a worker process (or on a Dask worker) by :func:`run_job`.

A job reads its inputs from its row, works in its own folder
(``<data_dir>/jobs/<id>/``), logs to ``job.log`` there, and reports as it goes through a
:class:`Reporter`: progress (0-1) and a status line on the job's row, per-epoch metrics as
:class:`~digipath.server.models.JobMetric` rows. The reporter also checks, at most every
second, whether the job was stopped (``REVOKED``) and then ends it with :class:`JobRevoked`,
so a job on a Dask cluster stops as promptly as a local process that is terminated.

The kinds:

``train``
    :func:`digipath.training.deephealth.train_on_dataset` from a model family (new network)
    or from weights (fine-tuning); the best model becomes the job's output weights, made
    active on success. After a server restart it resumes from its last epoch.
``inference``
    :func:`digipath.inference.deephealth.infer_on_dataset` on one split of a dataset.
``inference_single``
    :func:`digipath.inference.deephealth.infer_image` on one uploaded image.
``wsi_apply``
    :func:`digipath.inference.apply.apply_network` on one slide of a dataset, written as a
    pyramidal TIFF that the viewer shows over the slide.
``nuclei``
    :func:`digipath.nuclei.inference.segment_slide` (HoVer-Net) on one slide of a dataset:
    QuPath GeoJSON of the nuclei and an instance-label TIFF that the viewer shows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from digipath.server.db import Database
from digipath.server.models import (
    Dataset,
    Job,
    JobKind,
    JobMetric,
    JobStatus,
    ModelFamily,
    Weights,
    utcnow,
)

__all__ = ["JobRevoked", "Reporter", "run_job", "run_local_job"]

logger = logging.getLogger(__name__)

LOG_NAME = "job.log"


class JobRevoked(Exception):
    """The job was stopped while it ran."""


class Reporter:
    """Writes a job's progress and metrics to its row, and notices when it is stopped.

    Parameters
    ----------
    database
        The server's database.
    job_id
        The job.
    interval_s
        Least time between two progress writes (metric rows are always written).
    """

    def __init__(self, database: Database, job_id: int, interval_s: float = 1.0) -> None:
        self.database = database
        self.job_id = job_id
        self.interval_s = interval_s
        self._last_write = 0.0
        self.epoch = 0
        self.epochs = 1

    def _status(self) -> JobStatus:
        with self.database.session() as session:
            return session.scalar(select(Job.status).where(Job.id == self.job_id))

    def set(self, progress: float | None = None, message: str | None = None, force=False) -> None:
        """Write the progress (0-1) and status line; raise :class:`JobRevoked` when stopped."""
        now = time.monotonic()
        if not force and now - self._last_write < self.interval_s:
            return
        self._last_write = now
        values: dict[str, Any] = {"updated": utcnow()}
        if progress is not None:
            values["progress"] = max(0.0, min(1.0, float(progress)))
        if message is not None:
            values["message"] = message[:500]
        with self.database.session() as session:
            session.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.status == JobStatus.STARTED)
                .values(**values)
            )
        if self._status() != JobStatus.STARTED:
            raise JobRevoked(f"job {self.job_id} was stopped")

    def metrics(self, epoch: int, values: dict[str, Any]) -> None:
        """Store one epoch's numeric values (replacing those of a resumed epoch)."""
        with self.database.session() as session:
            for name, value in values.items():
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    continue
                row = session.scalar(
                    select(JobMetric).where(
                        JobMetric.job_id == self.job_id,
                        JobMetric.epoch == epoch,
                        JobMetric.name == str(name),
                    )
                )
                if row is None:
                    session.add(
                        JobMetric(job_id=self.job_id, epoch=epoch, name=str(name), value=number)
                    )
                else:
                    row.value = number

    # -- callbacks of the library -----------------------------------------------------------

    def training(self, event: str, info: dict[str, Any]) -> None:
        """The :data:`~digipath.training.trainer.Progress` callback of a training."""
        if event == "epoch":
            self.epoch, self.epochs = int(info.get("epoch", 0)), max(1, int(info.get("epochs", 1)))
            self.set(self.epoch / self.epochs, f"epoch {self.epoch + 1} of {self.epochs}", True)
        elif event == "batch":
            total = max(1, int(info.get("total", 1)))
            done = int(info.get("done", 0))
            purpose = info.get("purpose", "training")
            share = (done / total) * (0.8 if purpose == "training" else 0.2)
            share += 0.8 if purpose != "training" else 0.0
            self.set(
                (self.epoch + share) / self.epochs,
                f"epoch {self.epoch + 1} of {self.epochs}: {purpose} batch {done} of {total}",
            )
        elif event == "row":
            row = dict(info.get("row", info))
            epoch = int(float(row.get("epoch", self.epoch)))
            self.metrics(epoch, {k: v for k, v in row.items() if k != "epoch"})
            self.set((epoch + 1) / self.epochs, f"epoch {epoch + 1} of {self.epochs} done", True)

    def counter(self, what: str):
        """A ``progress(done, total)`` callback that reports ``what``."""

        def report(done: int, total: int) -> None:
            self.set(done / max(1, total), f"{what} {done} of {total}")

        return report


def _log_handler(folder: Path) -> logging.Handler:
    handler = logging.FileHandler(folder / LOG_NAME, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    return handler


def _finish(database: Database, job_id: int, status: JobStatus, **values: Any) -> bool:
    """Set the final status if the job is still STARTED; whether it was."""
    with database.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.STARTED)
            .values(status=status, finished=utcnow(), updated=utcnow(), **values)
        )
        return result.rowcount == 1


def run_local_job(job_id: int, database_url: str, data_dir: str, nice: int, threads: int) -> str:
    """:func:`run_job` in a worker process of this machine, yielding to the web server.

    The process lowers its priority by ``nice`` and lets torch use ``threads`` threads, so
    that jobs sharing the server's CPUs cannot starve its requests (with two trainings at
    normal priority on two cores, the p95 latency of status polls grew 7-fold; niced and with
    one thread each, it stays within 1.4x, and the trainings ran as many epochs).
    """
    import torch

    if nice:
        os.nice(nice)
    torch.set_num_threads(max(1, threads))
    return run_job(job_id, database_url, data_dir)


def run_job(job_id: int, database_url: str, data_dir: str) -> str:
    """Run job ``job_id`` to its end and record the outcome; returns the final status.

    The job must be ``STARTED`` (the runner sets it). Exceptions are recorded as ``FAILURE``
    with the reason (and the traceback in the log); a job stopped meanwhile stays ``REVOKED``.
    """
    database = Database(database_url, upgrade=False)
    with database.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.STARTED:
            return "SKIPPED"
        folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handler = _log_handler(folder)
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    reporter = Reporter(database, job_id)
    try:
        logger.info("job %d started (%s)", job_id, folder)
        result = _execute(database, job_id, folder, reporter, Path(data_dir))
        done = _finish(
            database, job_id, JobStatus.SUCCESS, progress=1.0, message="done", result=result
        )
        logger.info("job %d finished: %s", job_id, "SUCCESS" if done else "stopped")
        return "SUCCESS" if done else "REVOKED"
    except JobRevoked:
        logger.info("job %d stopped", job_id)
        return "REVOKED"
    except BaseException as error:
        logger.error("job %d failed:\n%s", job_id, traceback.format_exc())
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        _finish(database, job_id, JobStatus.FAILURE, error=reason[:4000], message="failed")
        if not isinstance(error, Exception):
            raise
        return "FAILURE"
    finally:
        root.removeHandler(handler)
        handler.close()
        database.dispose()


def _execute(
    database: Database, job_id: int, folder: Path, reporter: Reporter, data_dir: Path
) -> dict[str, Any]:
    with database.session() as session:
        job = session.get(Job, job_id)
        kind, settings = job.kind, dict(job.settings)
        dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
        weights = session.get(Weights, job.weights_id) if job.weights_id else None
        family = session.get(ModelFamily, job.family_id) if job.family_id else None
        dataset_path = dataset.path if dataset else None
        weights_path = weights.location if weights else None
        model_type = family.model_type if family else None
        output_weights = job.output_weights_id
        resume = bool(settings.get("resume")) or job.attempts > 1
    reporter.set(0.0, "starting", force=True)
    if kind == JobKind.train:
        return _train(
            database, folder, reporter, dataset_path, weights_path or model_type, settings,
            resume, output_weights, data_dir,
        )  # fmt: skip
    if kind == JobKind.inference:
        from digipath.inference.deephealth import infer_on_dataset

        path = infer_on_dataset(
            dataset_path, weights_path, folder / "output", split=settings.get("split", "test"),
            progress=reporter.counter("image"),
        )  # fmt: skip
        return _summary(path)
    if kind == JobKind.inference_single:
        from digipath.inference.deephealth import infer_image

        path = infer_image(
            folder / settings["image"], weights_path, folder / "output",
            progress=reporter.counter("image"),
        )  # fmt: skip
        return _summary(path)
    if kind == JobKind.wsi_apply:
        return _apply(folder, reporter, dataset_path, weights_path, settings)
    if kind == JobKind.nuclei:
        return _nuclei(folder, reporter, dataset_path, weights_path, settings)
    raise ValueError(f"unknown job kind {kind!r}")


def _summary(path: Path) -> dict[str, Any]:
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        "results": str(Path(path).relative_to(Path(path).parents[1])),
        "task": document.get("task"),
        "count": document.get("count"),
        "metrics": document.get("metrics", {}),
    }


def _train(
    database, folder, reporter, dataset_path, model, settings, resume, output_weights, data_dir
) -> dict[str, Any]:
    from digipath.models.files import file_digest, read_header
    from digipath.training.deephealth import TrainSettings, train_on_dataset

    options = TrainSettings.from_mapping(settings.get("properties", {}))
    result = train_on_dataset(
        dataset_path, model, options, folder / "experiment", name="training", resume=resume,
        seed=settings.get("seed"), progress=reporter.training,
    )  # fmt: skip
    best = Path(result["best_model"])
    target = data_dir / "weights" / f"job{folder.name}_{best.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    shutil.copyfile(best, temporary)
    temporary.replace(target)
    header = read_header(target)
    header.pop("optimizer", None)
    with database.session() as session:
        weights = session.get(Weights, output_weights)
        if weights is not None:
            weights.location = str(target)
            weights.size = target.stat().st_size
            weights.digest = file_digest(target)
            weights.header = header
            weights.active = True
    rows = result.get("rows", [])
    for row in rows:  # the trainer's rows are the record: fill an epoch a restart cut short
        reporter.metrics(int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"})
    return {
        "best_model": target.name, "metric": result.get("metric"), "epochs": len(rows),
        "final": rows[-1] if rows else {}, "weights_id": output_weights,
    }  # fmt: skip


def _slide_and_model(dataset_path, weights_path, settings):
    """The job's slide (sample of the dataset), spacing (the job's, else the model's) and
    model."""
    from digipath.data.deephealth import load_dataset
    from digipath.models import files

    dataset = load_dataset(dataset_path)
    index = int(settings.get("sample", 0))
    slide = dataset.locations(index)[0]
    header = files.read_header(weights_path)
    spacing = settings.get("spacing") or (header.get("spacings") or [None])[0]
    if spacing is None:
        raise ValueError("the model file names no spacing; give one with the job")
    model = files.load_model(weights_path, device="cpu", optimizer=False)
    return index, slide, float(spacing), model


def _apply(folder, reporter, dataset_path, weights_path, settings) -> dict[str, Any]:
    from digipath.inference.apply import apply_network

    index, slide, spacing, model = _slide_and_model(dataset_path, weights_path, settings)
    output = folder / "output" / "prediction.tif"
    output.parent.mkdir(parents=True, exist_ok=True)
    result = apply_network(
        model, slide, output, spacing=float(spacing), tile_size=int(settings.get("tile", 512)),
        output_class=settings.get("output_class"), overwrite=True,
        progress=reporter.counter("tile row"),
    )  # fmt: skip
    return {
        "slide": Path(slide).name, "sample": index, "output": str(output.relative_to(folder)),
        "spacing": float(spacing), "report": _jsonable(getattr(result, "__dict__", {})),
    }  # fmt: skip


def _nuclei(folder, reporter, dataset_path, weights_path, settings) -> dict[str, Any]:
    from digipath.nuclei.inference import segment_slide

    index, slide, spacing, model = _slide_and_model(dataset_path, weights_path, settings)
    stem = folder / "output" / "nuclei"
    stem.parent.mkdir(parents=True, exist_ok=True)
    result = segment_slide(
        model, slide, stem, spacing=spacing, tile_size=int(settings.get("tile", 2048)),
        formats=("geojson", "tiff"), overwrite=True, progress=reporter.counter("tile"),
    )  # fmt: skip
    outputs = {kind: str(Path(path).relative_to(folder)) for kind, path in result.outputs.items()}
    return {
        "slide": Path(slide).name, "sample": index, "spacing": spacing, "nuclei": result.nuclei,
        "output": outputs["tiff"], "geojson": outputs["geojson"], "tiles": result.tiles,
    }  # fmt: skip


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return {}
