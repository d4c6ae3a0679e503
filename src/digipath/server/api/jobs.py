"""Jobs: submit trainings and inferences, list and search them, follow, stop, read results.

Statuses are ``PENDING``, ``STARTED``, ``SUCCESS``, ``FAILURE`` and ``REVOKED``; a stopped job
stays in the history. Progress, the status line and per-epoch metrics are data
(``GET /jobs/{id}``, ``GET /jobs/{id}/metrics``); the log is there to read
(``GET /jobs/{id}/log``), not to parse.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
    status,
)
from fastapi.responses import FileResponse
from pydantic import Field
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from digipath.server.api.schemas import Body
from digipath.server.deps import (
    Caller,
    caller,
    database,
    dataset_for,
    job_for,
    project_for,
    weights_for,
)
from digipath.server.jobs import LOG_NAME
from digipath.server.models import (
    Dataset,
    Job,
    JobKind,
    JobMetric,
    JobStatus,
    ModelFamily,
    Project,
    ProjectMember,
    User,
    Weights,
)
from digipath.server.properties import resolve
from digipath.server.uploads import UploadError, contained, plain_name, save_stream

__all__ = ["job_document", "router"]

router = APIRouter(tags=["jobs"])

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


class TrainRequest(Body):
    project_id: int
    dataset_id: int
    family_id: int | None = None
    weights_id: int | None = None
    properties: dict[str, str | int | float | None] = Field(default_factory=dict)
    seed: int | None = None


class InferenceRequest(Body):
    project_id: int
    dataset_id: int
    weights_id: int
    split: str = "test"


class SlideRequest(Body):
    project_id: int
    dataset_id: int
    weights_id: int
    sample: int = Field(0, ge=0)
    spacing: float | None = Field(None, gt=0)


class ApplyRequest(SlideRequest):
    output_class: int | None = Field(None, ge=0)


def job_document(db: Session, job: Job) -> dict:
    """A job as the API returns it."""

    def stamp(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    user = db.get(User, job.user_id) if job.user_id else None
    dataset = db.get(Dataset, job.dataset_id) if job.dataset_id else None
    weights = db.get(Weights, job.weights_id) if job.weights_id else None
    family = db.get(ModelFamily, job.family_id) if job.family_id else None
    return {
        "id": job.id, "kind": job.kind.value, "status": job.status.value,
        "project_id": job.project_id, "user": user.username if user else None,
        "dataset_id": job.dataset_id, "dataset": dataset.name if dataset else None,
        "weights_id": job.weights_id, "weights": weights.name if weights else None,
        "family_id": job.family_id, "family": family.name if family else None,
        "output_weights_id": job.output_weights_id,
        "settings": {k: v for k, v in job.settings.items() if k != "image"},
        "progress": job.progress, "message": job.message, "result": job.result,
        "error": job.error, "attempts": job.attempts,
        "created": stamp(job.created), "started": stamp(job.started),
        "finished": stamp(job.finished), "updated": stamp(job.updated),
    }  # fmt: skip


def _new_job(request: Request, db: Session, job: Job) -> Job:
    db.add(job)
    db.flush()
    job.folder = str(request.app.state.settings.folder("jobs") / str(job.id))
    Path(job.folder).mkdir(parents=True, exist_ok=True)
    db.commit()
    request.app.state.runner.wake()
    return job


def _usable_weights(db: Session, user: User, weights_id: int) -> Weights:
    weights = weights_for(db, user, weights_id)
    if not weights.active:
        raise HTTPException(status.HTTP_409_CONFLICT, f"weights {weights_id} are not ready")
    return weights


@router.post("/jobs/train", status_code=status.HTTP_201_CREATED)
def submit_training(
    body: TrainRequest,
    request: Request,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Train a network of a model family (``family_id``) or fine-tune weights (``weights_id``)
    on a dataset. The properties are resolved and checked now; the new weights appear
    (inactive) at once and become active when the training succeeds."""
    project = project_for(db, who.user, body.project_id, owner=True)
    dataset = dataset_for(db, who.user, body.dataset_id)
    if dataset.single_image:
        raise UploadError(f"dataset {dataset.id} is a single image; train on a dataset")
    if dataset.task != project.task:
        raise UploadError(f"dataset {dataset.id} is for {dataset.task.value}, the project for "
                          f"{project.task.value}")  # fmt: skip
    parent = None
    if body.weights_id is not None:
        parent = _usable_weights(db, who.user, body.weights_id)
        family = parent.family
    elif body.family_id is not None:
        family = db.get(ModelFamily, body.family_id)
        if family is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model family {body.family_id}")
    else:
        raise UploadError("give family_id (a new network) or weights_id (fine-tuning)")
    if family.task != dataset.task:
        raise UploadError(f"model family {family.name!r} is for {family.task.value}")
    values = resolve(db, family.id, dataset.id, body.properties)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    output = Weights(
        name=f"{family.name}_{dataset.name}_{stamp}"[:128], family_id=family.id, location="",
        classes=list(dataset.classes), dataset_id=dataset.id,
        pretrained_on_id=parent.id if parent else None, active=False, owner_id=who.user.id,
    )  # fmt: skip
    db.add(output)
    db.flush()
    job = Job(
        kind=JobKind.train, project_id=project.id, user_id=who.user.id, family_id=family.id,
        weights_id=parent.id if parent else None, dataset_id=dataset.id,
        output_weights_id=output.id, settings={"properties": values, "seed": body.seed},
    )  # fmt: skip
    return job_document(db, _new_job(request, db, job))


@router.post("/jobs/inference", status_code=status.HTTP_201_CREATED)
def submit_inference(
    body: InferenceRequest,
    request: Request,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Run weights on one split of a dataset (the test split by default)."""
    project = project_for(db, who.user, body.project_id, owner=True)
    dataset = dataset_for(db, who.user, body.dataset_id)
    weights = _usable_weights(db, who.user, body.weights_id)
    if body.split not in dataset.splits:
        raise UploadError(f"split {body.split!r}: dataset {dataset.id} has "
                          f"{', '.join(dataset.splits) or 'no splits'}")  # fmt: skip
    job = Job(
        kind=JobKind.inference, project_id=project.id, user_id=who.user.id,
        family_id=weights.family_id, weights_id=weights.id, dataset_id=dataset.id,
        settings={"split": body.split},
    )  # fmt: skip
    return job_document(db, _new_job(request, db, job))


@router.post("/jobs/inference-single", status_code=status.HTTP_201_CREATED)
def submit_single(
    request: Request,
    project_id: int = Form(...),
    weights_id: int = Form(...),
    image: UploadFile = File(...),
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Run weights on one uploaded image (PNG, JPEG, TIFF, BMP)."""
    settings = request.app.state.settings
    project = project_for(db, who.user, project_id, owner=True)
    weights = _usable_weights(db, who.user, weights_id)
    name = plain_name(image.filename, "image")
    if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        raise UploadError(f"image {name!r}: expected one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    job = Job(
        kind=JobKind.inference_single, project_id=project.id, user_id=who.user.id,
        family_id=weights.family_id, weights_id=weights.id, settings={"image": name},
        status=JobStatus.REVOKED,  # not runnable until the image is stored
    )  # fmt: skip
    db.add(job)
    db.flush()
    folder = settings.folder("jobs") / str(job.id)
    job.folder = str(folder)
    save_stream(image.file, folder / name, settings.max_upload_bytes, name)
    _check_image(folder / name)
    job.status = JobStatus.PENDING
    db.commit()
    request.app.state.runner.wake()
    return job_document(db, job)


def _check_image(path: Path) -> None:
    import cv2

    if cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is None:
        path.unlink(missing_ok=True)
        raise UploadError(f"image {path.name!r}: not an image that can be decoded")


@router.post("/jobs/wsi-apply", status_code=status.HTTP_201_CREATED)
def submit_apply(
    body: ApplyRequest,
    request: Request,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Apply weights to one slide of a dataset (sample index) and write the map as a
    pyramidal TIFF, shown over the slide in the viewer."""
    return _slide_job(request, db, who, body, JobKind.wsi_apply,
                      {"output_class": body.output_class})  # fmt: skip


def _slide_job(
    request: Request, db: Session, who: Caller, body: SlideRequest, kind: JobKind, extra: dict
) -> dict:
    """Submit a job on slide ``body.sample`` of a dataset (whole-slide apply or nuclei)."""
    project = project_for(db, who.user, body.project_id, owner=True)
    dataset = dataset_for(db, who.user, body.dataset_id)
    weights = _usable_weights(db, who.user, body.weights_id)
    if kind == JobKind.nuclei and weights.family.model_type != "hovernet":
        raise UploadError(f"weights {weights.id}: a {weights.family.model_type!r} model; "
                          "nuclei jobs need HoVer-Net weights")  # fmt: skip
    if body.sample >= dataset.samples:
        raise UploadError(f"sample {body.sample}: dataset {dataset.id} has {dataset.samples}")
    job = Job(
        kind=kind, project_id=project.id, user_id=who.user.id, family_id=weights.family_id,
        weights_id=weights.id, dataset_id=dataset.id,
        settings={"sample": body.sample, "spacing": body.spacing, **extra},
    )  # fmt: skip
    return job_document(db, _new_job(request, db, job))


@router.post("/jobs/nuclei", status_code=status.HTTP_201_CREATED)
def submit_nuclei(
    body: SlideRequest,
    request: Request,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Segment and classify the nuclei of one slide of a dataset with HoVer-Net weights:
    QuPath GeoJSON, and an instance-label map shown over the slide in the viewer."""
    return _slide_job(request, db, who, body, JobKind.nuclei, {})


@router.get("/jobs")
def list_jobs(
    project_id: int | None = None,
    status_: JobStatus | None = Query(None, alias="status"),
    kind: JobKind | None = None,
    q: str | None = None,
    page: int = 1,
    per_page: int = 20,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """The jobs of the caller's projects, newest first: filtered by project, status, kind and
    a search text (id, kind, status, user, dataset or weights name), paginated."""
    page, per_page = max(1, page), min(max(1, per_page), 200)
    member = select(ProjectMember.project_id).where(ProjectMember.user_id == who.user.id)
    query = select(Job).where(Job.project_id.in_(member))
    if project_id is not None:
        project_for(db, who.user, project_id)
        query = query.where(Job.project_id == project_id)
    if status_ is not None:
        query = query.where(Job.status == status_)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if q:
        text = f"%{q.strip()[:64]}%"
        users = select(User.id).where(User.username.ilike(text))
        datasets = select(Dataset.id).where(Dataset.name.ilike(text))
        weights = select(Weights.id).where(Weights.name.ilike(text))
        projects = select(Project.id).where(Project.name.ilike(text))
        clauses = [
            Job.kind.ilike(text), Job.status.ilike(text), Job.user_id.in_(users),
            Job.dataset_id.in_(datasets), Job.weights_id.in_(weights),
            Job.project_id.in_(projects),
        ]  # fmt: skip
        if q.strip().isdigit():
            clauses.append(Job.id == int(q.strip()))
        query = query.where(or_(*clauses))
    total = db.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.scalars(
        query.order_by(Job.created.desc(), Job.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    return {
        "items": [job_document(db, row) for row in rows], "total": total, "page": page,
        "per_page": per_page,
    }  # fmt: skip


@router.get("/jobs/{job_id}")
def get_job(
    job_id: int, who: Caller = Depends(caller), db: Session = Depends(database, scope="function")
) -> dict:
    """One job: status, times, progress, settings, result."""
    return job_document(db, job_for(db, who.user, job_id))


@router.post("/jobs/{job_id}/stop")
def stop_job(
    job_id: int,
    request: Request,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Stop a job: it becomes ``REVOKED`` and stays in the history."""
    job = job_for(db, who.user, job_id, stop=True)
    if job.status.finished:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is already {job.status.value}")
    request.app.state.runner.stop(db, job)
    return job_document(db, job)


@router.get("/jobs/{job_id}/metrics")
def job_metrics(
    job_id: int, who: Caller = Depends(caller), db: Session = Depends(database, scope="function")
) -> dict:
    """Per-epoch metrics: ``{"epochs": [...], "series": {name: [value per epoch]}}``."""
    job = job_for(db, who.user, job_id)
    rows = db.scalars(
        select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.epoch)
    ).all()
    epochs = sorted({row.epoch for row in rows})
    index = {epoch: i for i, epoch in enumerate(epochs)}
    series: dict[str, list[float | None]] = {}
    for row in rows:
        series.setdefault(row.name, [None] * len(epochs))[index[row.epoch]] = row.value
    return {"epochs": epochs, "series": series}


@router.get("/jobs/{job_id}/log")
def job_log(
    job_id: int,
    offset: int = 0,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """The job's log from byte ``offset`` (at most 1 MiB), and the offset to ask next."""
    job = job_for(db, who.user, job_id)
    path = Path(job.folder) / LOG_NAME
    if not path.is_file():
        return {"text": "", "offset": 0}
    with open(path, "rb") as handle:
        handle.seek(max(0, offset))
        data = handle.read(1024 * 1024)
    return {"text": data.decode("utf-8", "replace"), "offset": max(0, offset) + len(data)}


def _job_file(job: Job, name: str) -> Path:
    path = contained(Path(job.folder) / name, Path(job.folder))
    if path is None or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job.id} has no file {name!r}")
    return path


@router.get("/jobs/{job_id}/results")
def job_results(
    job_id: int, who: Caller = Depends(caller), db: Session = Depends(database, scope="function")
) -> dict:
    """An inference's results (``results.json``: scores per image, or mask files)."""
    job = job_for(db, who.user, job_id)
    if job.kind not in (JobKind.inference, JobKind.inference_single):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} is not an inference")
    if job.status != JobStatus.SUCCESS:
        raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} is {job.status.value}")
    return json.loads(_job_file(job, "output/results.json").read_text(encoding="utf-8"))


@router.get("/jobs/{job_id}/files/{name:path}")
def job_file(
    job_id: int,
    name: str,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> FileResponse:
    """A file of the job's outputs (masks, overlays, the output TIFF)."""
    job = job_for(db, who.user, job_id)
    return FileResponse(_job_file(job, f"output/{name}"))
