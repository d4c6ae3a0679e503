"""Deep Zoom tiles of slides and output maps, for the OpenSeadragon viewer.

``GET /jobs/{id}/slide.dzi`` describes the slide a whole-slide job ran on and
``/jobs/{id}/slide_files/{level}/{col}_{row}.jpeg`` serves its tiles, read by spacing through
:class:`~digipath.io.reader.ImageReader`; ``overlay.dzi`` and ``overlay_files/...png`` serve
the job's output map, coloured and registered on the slide's grid, so the viewer layers it
exactly. ``GET /datasets/{id}/samples/{index}/slide.dzi`` shows a dataset's slide.
Open readers are kept in a small cache shared by the requests.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Response, status
from sqlalchemy.orm import Session

from digipath.server.deps import Caller, caller, database, dataset_for, job_for
from digipath.server.models import JobKind, JobStatus
from digipath.server.uploads import contained

__all__ = ["router"]

router = APIRouter(tags=["viewer"])

_CACHE: OrderedDict[tuple, object] = OrderedDict()
_LOCK = threading.Lock()
CACHE_SIZE = 16


def _source(key: tuple, make):
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    source = make()
    with _LOCK:
        _CACHE[key] = source
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return source


def _slide(path: str):
    from digipath.io.deepzoom import DeepZoom
    from digipath.io.reader import ImageReader

    return _source(("slide", path), lambda: DeepZoom(ImageReader(path)))


def _overlay(slide_path: str, map_path: str):
    from digipath.io.deepzoom import DeepZoomOverlay
    from digipath.io.reader import ImageReader

    def make():
        # No overlap: overlapping translucent tiles would be blended twice (a seam).
        slide = _slide(slide_path)
        return DeepZoomOverlay(slide.reader, ImageReader(map_path), overlap=0)

    return _source(("overlay", slide_path, map_path), make)


def _tile(source, level: int, col: int, row: int, media: str) -> Response:
    from digipath.errors import DigipathError

    try:
        data = source.tile(level, col, row)
    except DigipathError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600"})


def _dzi(source) -> Response:
    return Response(source.dzi(), media_type="application/xml")


def _slide_path(dataset_path: str, index: int) -> str | None:
    """The slide of sample ``index`` of a dataset YAML (``None``: no such sample), parsed once:
    tile requests come by the hundred, and the server never rewrites a dataset's YAML."""
    from digipath.data.deephealth import load_dataset

    def locate():
        parsed = load_dataset(dataset_path)
        return parsed.locations(index)[0] if 0 <= index < len(parsed.images) else None

    return _source(("slide path", dataset_path, index), locate)


def _apply_job(db: Session, caller_: Caller, job_id: int):
    job = job_for(db, caller_.user, job_id)
    if job.kind not in (JobKind.wsi_apply, JobKind.nuclei):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} is not a whole-slide job")
    from digipath.server.models import Dataset

    dataset = db.get(Dataset, job.dataset_id) if job.dataset_id else None
    slide = _slide_path(dataset.path, int(job.settings.get("sample", 0))) if dataset else None
    if slide is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id}: its slide is gone")
    return job, slide


@router.get("/jobs/{job_id}/slide.dzi")
def job_slide(
    job_id: int, who: Caller = Depends(caller), db: Session = Depends(database, scope="function")
):
    """The Deep Zoom descriptor of a whole-slide job's slide."""
    _, slide = _apply_job(db, who, job_id)
    return _dzi(_slide(slide))


@router.get("/jobs/{job_id}/slide_files/{level}/{col}_{row}.jpeg")
def job_slide_tile(
    job_id: int, level: int, col: int, row: int,
    who: Caller = Depends(caller), db: Session = Depends(database, scope="function"),
):  # fmt: skip
    """A JPEG tile of the slide."""
    _, slide = _apply_job(db, who, job_id)
    return _tile(_slide(slide), level, col, row, "image/jpeg")


def _output(job) -> str:
    if job.status != JobStatus.SUCCESS or not job.result.get("output"):
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job.id} has no output map yet")
    path = contained(Path(job.folder) / job.result["output"], Path(job.folder))
    if path is None or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job.id}: the output map is gone")
    return str(path)


@router.get("/jobs/{job_id}/overlay.dzi")
def job_overlay(
    job_id: int, who: Caller = Depends(caller), db: Session = Depends(database, scope="function")
):
    """The Deep Zoom descriptor of the output map (the slide's grid)."""
    job, slide = _apply_job(db, who, job_id)
    return _dzi(_overlay(slide, _output(job)))


@router.get("/jobs/{job_id}/overlay_files/{level}/{col}_{row}.png")
def job_overlay_tile(
    job_id: int, level: int, col: int, row: int,
    who: Caller = Depends(caller), db: Session = Depends(database, scope="function"),
):  # fmt: skip
    """A PNG (RGBA) tile of the coloured output map."""
    job, slide = _apply_job(db, who, job_id)
    return _tile(_overlay(slide, _output(job)), level, col, row, "image/png")


def _sample_slide(db: Session, who: Caller, dataset_id: int, index: int) -> str:
    dataset = dataset_for(db, who.user, dataset_id)
    slide = _slide_path(dataset.path, index)
    if slide is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"dataset {dataset_id} has no sample {index}"
        )
    return slide


@router.get("/datasets/{dataset_id}/samples/{index}/slide.dzi")
def sample_slide(
    dataset_id: int,
    index: int,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
):
    """The Deep Zoom descriptor of a dataset's slide."""
    return _dzi(_slide(_sample_slide(db, who, dataset_id, index)))


@router.get("/datasets/{dataset_id}/samples/{index}/slide_files/{level}/{col}_{row}.jpeg")
def sample_slide_tile(
    dataset_id: int, index: int, level: int, col: int, row: int,
    who: Caller = Depends(caller), db: Session = Depends(database, scope="function"),
):  # fmt: skip
    """A JPEG tile of a dataset's slide."""
    return _tile(_slide(_sample_slide(db, who, dataset_id, index)), level, col, row, "image/jpeg")
