"""Model families and model weights (digipath model files: uploaded, checked, downloaded)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile, status
from fastapi.responses import FileResponse
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from digipath.server.api.datasets import Share, _checked_name, set_shares
from digipath.server.api.schemas import Body, Name
from digipath.server.deps import (
    Caller,
    caller,
    can_change_weights,
    database,
    dataset_for,
    visible_weights,
    weights_for,
)
from digipath.server.models import ModelFamily, Task, User, Weights, WeightsShare
from digipath.server.uploads import UploadError, check_model_file, save_stream

__all__ = ["family_document", "router", "weights_document"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["models"])


class FamilyCreate(Body):
    name: Name
    model_type: str
    task: Task
    description: str = ""


class WeightsUpdate(Body):
    name: Name | None = None
    public: bool | None = None
    shares: list[Share] | None = None


def family_document(family: ModelFamily) -> dict:
    """A model family as the API returns it."""
    return {
        "id": family.id, "name": family.name, "model_type": family.model_type,
        "task": family.task.value, "description": family.description,
        "owner_id": family.owner_id,
    }  # fmt: skip


def weights_document(db: Session, weights: Weights, user: User) -> dict:
    """Model weights as the API returns them (never the server path)."""
    owner = db.get(User, weights.owner_id) if weights.owner_id else None
    shares = db.scalars(select(WeightsShare).where(WeightsShare.weights_id == weights.id)).all()
    header = weights.header or {}
    return {
        "id": weights.id, "name": weights.name, "family_id": weights.family_id,
        "family": weights.family.name, "model_type": (header.get("model") or {}).get("type"),
        "classes": list(weights.classes), "size": weights.size, "digest": weights.digest,
        "dataset_id": weights.dataset_id, "pretrained_on_id": weights.pretrained_on_id,
        "active": weights.active, "public": weights.public, "created": weights.created.isoformat(),
        "owner": owner.username if owner else None, "mine": weights.owner_id == user.id,
        "can_change": can_change_weights(db, weights, user),
        "shares": [{"username": db.get(User, s.user_id).username, "role": s.role.value}
                   for s in shares],
    }  # fmt: skip


@router.get("/models")
def list_families(
    task: Task | None = None,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> list[dict]:
    """The model families, optionally of one task."""
    query = select(ModelFamily).order_by(ModelFamily.id)
    if task is not None:
        query = query.where(ModelFamily.task == task)
    return [family_document(f) for f in db.scalars(query)]


@router.post("/models", status_code=status.HTTP_201_CREATED)
def create_family(
    body: FamilyCreate,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Add a model family for a registered digipath model type."""
    from digipath.models.registry import MODELS

    if body.model_type not in MODELS:
        raise UploadError(
            f"model_type: {body.model_type!r}; registered types: {', '.join(sorted(MODELS))}"
        )
    if db.scalar(select(ModelFamily).where(ModelFamily.name == body.name)) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"a model family {body.name!r} exists")
    family = ModelFamily(
        name=body.name, model_type=body.model_type, task=body.task,
        description=body.description[:4000], owner_id=who.user.id,
    )  # fmt: skip
    db.add(family)
    db.flush()
    return family_document(family)


def _family(db: Session, family_id: int) -> ModelFamily:
    family = db.get(ModelFamily, family_id)
    if family is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model family with id {family_id}")
    return family


@router.get("/weights")
def list_weights(
    family_id: int | None = None,
    dataset_id: int | None = None,
    include_inactive: bool = False,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> list[dict]:
    """Active weights the caller may use; of one family, and with ``dataset_id`` those trained
    on that dataset or without a dataset (which can be fine-tuned on it). With
    ``include_inactive`` also the caller's own weights that a training is still making (or
    that a failed training left)."""
    query = visible_weights(who.user)
    if include_inactive:
        query = query.where(or_(Weights.active.is_(True), Weights.owner_id == who.user.id))
    else:
        query = query.where(Weights.active.is_(True))
    if family_id is not None:
        query = query.where(Weights.family_id == family_id)
    if dataset_id is not None:
        query = query.where(or_(Weights.dataset_id == dataset_id, Weights.dataset_id.is_(None)))
    rows = db.scalars(query.order_by(Weights.created.desc())).all()
    return [weights_document(db, row, who.user) for row in rows]


@router.post("/weights", status_code=status.HTTP_201_CREATED)
def upload_weights(
    request: Request,
    name: str = Form(...),
    family_id: int = Form(...),
    file: UploadFile = File(..., description="digipath model file (.safetensors)"),
    dataset_id: int | None = Form(None),
    public: bool = Form(False),
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Upload a digipath model file. It is checked (format, header, the network builds from
    it, its type is the family's) before it is kept; pickles are refused unread."""
    from digipath.models.files import file_digest  # torch: only once a model file comes

    settings = request.app.state.settings
    name = _checked_name(name)
    family = _family(db, family_id)
    if dataset_id is not None:
        dataset_for(db, who.user, dataset_id)
    what = file.filename or "model file"
    target = settings.folder("weights") / f"{uuid.uuid4().hex}.safetensors"
    size = save_stream(file.file, target, settings.max_model_bytes, what)
    try:
        header = check_model_file(target, what)
        model_type = (header.get("model") or {}).get("type")
        if model_type != family.model_type:
            raise UploadError(
                f"{what}: a {model_type!r} model, but the family {family.name!r} is "
                f"{family.model_type!r}"
            )
        classes = _classes(header)
        weights = Weights(
            name=name, family_id=family.id, location=str(target), size=size,
            digest=file_digest(target), classes=classes, header=_small(header),
            dataset_id=dataset_id, public=public, owner_id=who.user.id,
        )  # fmt: skip
        db.add(weights)
        db.flush()
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    logger.info("user %s uploaded weights %d (%s)", who.user.username, weights.id, name)
    return weights_document(db, weights, who.user)


def _classes(header: dict) -> list[str]:
    names = header.get("class_names")
    if isinstance(names, list):
        return [str(n) for n in names]
    count = header.get("classes")
    return [str(i) for i in range(count)] if isinstance(count, int) else []


def _small(header: dict) -> dict:
    """The header without bulky entries (kept in the file)."""
    return {k: v for k, v in header.items() if k != "optimizer"}


@router.get("/weights/{weights_id}")
def get_weights(
    weights_id: int,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """One set of weights."""
    return weights_document(db, weights_for(db, who.user, weights_id), who.user)


@router.get("/weights/{weights_id}/download")
def download_weights(
    weights_id: int,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> FileResponse:
    """The model file."""
    weights = weights_for(db, who.user, weights_id)
    if not weights.active or not Path(weights.location).is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"weights {weights_id} have no file yet")
    filename = f"{weights.name}.safetensors".replace("/", "_").replace('"', "")
    return FileResponse(weights.location, filename=filename, media_type="application/octet-stream")


@router.patch("/weights/{weights_id}")
def update_weights(
    weights_id: int,
    body: WeightsUpdate,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Rename, publish or share weights (their owners only); ``shares`` replaces the list."""
    weights = weights_for(db, who.user, weights_id, change=True)
    if body.name is not None:
        weights.name = body.name
    if body.public is not None:
        weights.public = body.public
    if body.shares is not None:
        set_shares(db, WeightsShare, "weights_id", weights.id, weights.owner_id, body.shares)
    return weights_document(db, weights, who.user)


@router.delete("/weights/{weights_id}")
def delete_weights(
    weights_id: int,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Delete weights and their file."""
    weights = weights_for(db, who.user, weights_id, change=True)
    location = Path(weights.location)
    db.delete(weights)
    db.flush()
    location.unlink(missing_ok=True)
    return {"result": "deleted", "id": weights_id}
