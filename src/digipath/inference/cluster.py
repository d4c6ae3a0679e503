"""Many slides: one task per slide, in this process or on a Dask distributed cluster.

:func:`apply_many` runs :func:`~digipath.inference.apply_network` for a list of
:class:`Job` s and returns one :class:`JobResult` each; a failing slide is recorded and never
stops the others.

* no cluster: the slides run one after another in this process (one model load);
* ``workers=N``: a local Dask cluster of ``N`` single-threaded worker processes;
* ``scheduler="tcp://host:8786"``: any running Dask scheduler, for instance one started by
  ``dask-jobqueue`` on a SLURM or PBS cluster::

      from dask_jobqueue import SLURMCluster
      cluster = SLURMCluster(cores=8, memory="32GB", walltime="04:00:00")
      cluster.scale(jobs=10)                         # ten batch jobs of workers
      results = apply_many(jobs, "model.safetensors", options,
                           scheduler=cluster.scheduler_address)

Workers load the model file once each (cached by path and modification time) and read the
slides from paths they can see (a shared file system).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

logger = logging.getLogger(__name__)

_MODELS: dict[tuple[str, float, str | None], Any] = {}


@dataclass(frozen=True)
class Job:
    """One slide: its image, optional mask and output paths."""

    image: str
    output: str
    mask: str | None = None


@dataclass
class JobResult:
    """What happened to a slide: ``state`` is ``done``, ``exists`` or ``failed``."""

    job: Job
    state: str
    detail: str = ""
    seconds: float = 0.0
    computed: int = 0
    skipped: int = 0


def _model(path: str, device: str | None):
    """The model of a file, loaded once per process (and again when the file changes)."""
    from digipath.models import load_model

    key = (os.path.abspath(path), os.path.getmtime(path), device)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(path, device=device, optimizer=False)
    return _MODELS[key]


def run_job(model_path: str, job: Job, options: Mapping[str, Any], device: str | None = None):
    """Apply the model to one slide; never raises (failures become a ``failed`` result).

    ``options["postprocess"]`` (keyword arguments of
    :func:`~digipath.inference.postprocess.postprocess`) runs the post-processing chain on
    the prediction, which is then written as ``<output>_prediction.tif`` first.
    """
    from digipath.inference.apply import ApplyResult, apply_network
    from digipath.inference.postprocess import postprocess

    started = time.perf_counter()
    options = dict(options)
    chain = options.pop("postprocess", None) or {}
    normalization = options.pop("normalization", None)
    work_dir = options.pop("work_dir", None)
    copy_dir = options.pop("copy_dir", None)
    keep_copies = options.pop("keep_copies", False)
    auto_mask = options.pop("auto_mask", False)
    final = job.output
    vector = os.path.splitext(job.output)[1].lower() in (".geojson", ".json", ".xml")
    copies: list[str] = []
    try:
        if normalization:
            from digipath.data.normalization import normalizer_from_config

            options["normalizer"] = normalizer_from_config(normalization, "--normalizer")
        if copy_dir:  # read the slide from a local copy (e.g. off a network share)
            os.makedirs(copy_dir, exist_ok=True)
            for name in ("image", "mask"):
                path = getattr(job, name)
                if path:
                    copied = os.path.join(copy_dir, os.path.basename(path))
                    shutil.copy2(path, copied)
                    copies.append(copied)
                    job = replace(job, **{name: copied})
        if auto_mask and job.mask is None:  # a tissue mask computed from the slide itself
            from digipath.tissue import quality_mask, write_mask

            found = quality_mask(job.image)
            mask_path = f"{os.path.splitext(final)[0]}_tissue.tif"
            os.makedirs(os.path.dirname(os.path.abspath(mask_path)), exist_ok=True)
            write_mask(mask_path, found.tissue.astype("uint8"), found.spacing)
            job = replace(job, mask=mask_path)
        if work_dir:  # write locally, move to the target when complete
            os.makedirs(work_dir, exist_ok=True)
            if os.path.exists(final) and not options.get("overwrite"):
                job = replace(job, output=final)
            else:
                job = replace(job, output=os.path.join(work_dir, os.path.basename(final)))
        model = _model(model_path, device)
        os.makedirs(os.path.dirname(os.path.abspath(job.output)), exist_ok=True)
        if not (chain or vector):
            result = apply_network(model, job.image, job.output, mask=job.mask, **options)
        elif os.path.exists(job.output) and not options.get("overwrite"):
            result = ApplyResult(job.output, (0, 0), options["spacing"], existed=True)
        else:
            stem = os.path.splitext(job.output)[0]
            prediction = f"{stem}_prediction.tif"
            result = apply_network(model, job.image, prediction, mask=job.mask,
                                   **{**options, "overwrite": True})  # fmt: skip
            from digipath.io import ImageReader

            with ImageReader(job.image) as slide:
                level0 = slide.spacings[0]
            postprocess(prediction, job.output, image_spacing=level0, **chain)
        if job.output != final and os.path.exists(job.output):
            os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
            shutil.move(job.output, final)
    except Exception as error:  # recorded per slide: one failure never stops the others
        logger.debug("%s failed:\n%s", job.image, traceback.format_exc())
        return JobResult(replace(job, output=final), "failed", f"{type(error).__name__}: {error}",
                         time.perf_counter() - started)  # fmt: skip
    finally:
        if not keep_copies:
            for copied in copies:
                if os.path.exists(copied):
                    os.remove(copied)
    job = replace(job, output=final)
    state = "exists" if result.existed else "done"
    detail = f"{result.computed} tiles computed, {result.skipped} skipped"
    return JobResult(job, state, detail, result.seconds, result.computed, result.skipped)


def apply_many(
    jobs: Sequence[Job],
    model_path: str | os.PathLike[str],
    options: Mapping[str, Any],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    device: str | None = None,
    progress: Callable[[JobResult, int, int], None] | None = None,
) -> list[JobResult]:
    """Apply a model file to every job (see the module docstring).

    Parameters
    ----------
    jobs
        The slides.
    model_path
        The model file (read by every worker).
    options
        Keyword arguments of :func:`~digipath.inference.apply_network` (``spacing``,
        ``tile_size`` ...), except the image, output and mask.
    workers
        Local Dask worker processes (ignored with ``scheduler``).
    scheduler
        Address of a running Dask scheduler.
    device
        Model device in each worker.
    progress
        ``callback(result, finished, total)`` as each slide ends.

    Returns
    -------
    list
        One :class:`JobResult` per job, in the order of ``jobs``.
    """
    model_path = os.fspath(model_path)
    results: list[JobResult | None] = [None] * len(jobs)
    if scheduler is None and not workers:
        for index, job in enumerate(jobs):
            results[index] = run_job(model_path, job, options, device)
            if progress is not None:
                progress(results[index], index + 1, len(jobs))
        return results  # type: ignore[return-value]
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                               dashboard_address=None)  # fmt: skip
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = {
            client.submit(run_job, model_path, job, dict(options), device, pure=False): index
            for index, job in enumerate(jobs)
        }
        finished = 0
        for future in as_completed(futures):
            index = futures[future]
            try:
                results[index] = future.result()
            except Exception as error:  # a worker that died: the slide failed
                results[index] = JobResult(jobs[index], "failed", f"worker lost: {error}")
            finished += 1
            if progress is not None:
                progress(results[index], finished, len(jobs))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results  # type: ignore[return-value]
