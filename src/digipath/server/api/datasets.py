"""Datasets: upload a DeepHealth dataset (YAML + zip of its images), or register slides and
masks that are on the server's disk under the configured slide root.

Unlike the DeepHealth back-end, nothing is fetched from URLs, and every path a dataset names
must stay inside its own folder (uploads) or inside the slide root (registered slides): the
YAML is parsed and every location and ground-truth path resolved (links included) before the
dataset is stored.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile, status
from pydantic import Field
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from digipath.errors import DigipathError
from digipath.server.api.schemas import Body, Name
from digipath.server.deps import (
    Caller,
    caller,
    can_change_dataset,
    database,
    dataset_for,
    visible_datasets,
)
from digipath.server.models import Dataset, DatasetShare, Role, Task, User
from digipath.server.uploads import UploadError, contained, extract_zip, parse_yaml, save_stream

__all__ = ["router", "store_dataset"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["datasets"])

MAX_YAML = 16 * 1024 * 1024
DATASET_FILE = "dataset.yml"


class Share(Body):
    username: str
    role: Role = Role.viewer


class DatasetUpdate(Body):
    name: Name | None = None
    public: bool | None = None
    shares: list[Share] | None = None


class Registration(Body):
    name: Name
    images: list[str]
    masks: list[str | None] | None = None
    classes: list[str] = Field(default_factory=list)
    labels: list[str | None] | None = None
    split: dict[str, list[int]] | None = None
    spacing: float | None = None
    public: bool = False


def dataset_document(db: Session, dataset: Dataset, user: User) -> dict:
    """A dataset as the API returns it."""
    owner = db.get(User, dataset.owner_id) if dataset.owner_id else None
    shares = db.scalars(select(DatasetShare).where(DatasetShare.dataset_id == dataset.id)).all()
    return {
        "id": dataset.id, "name": dataset.name, "task": dataset.task.value,
        "kind": dataset.kind, "classes": list(dataset.classes), "splits": dataset.splits,
        "samples": dataset.samples, "spacing": dataset.spacing, "public": dataset.public,
        "single_image": dataset.single_image, "created": dataset.created.isoformat(),
        "owner": owner.username if owner else None, "mine": dataset.owner_id == user.id,
        "can_change": can_change_dataset(db, dataset, user),
        "shares": [{"username": db.get(User, s.user_id).username, "role": s.role.value}
                   for s in shares],
    }  # fmt: skip


def _inside(path: Path, root: Path, what: str) -> Path:
    resolved = contained(path, root)
    if resolved is None:
        raise UploadError(f"{what}: {path} is outside {root}")
    return resolved


def _check_paths(dataset, folder: Path, root: Path, source: str, *, must_exist: bool) -> None:
    for index, sample in enumerate(dataset.images):
        paths = [*sample.location, *([sample.label_path] if sample.label_path else [])]
        for path in paths:
            if "://" in path:
                raise UploadError(f"{source}: images[{index}]: {path!r}: URLs are not fetched")
            target = _inside(folder / path, root, f"{source}: images[{index}]")
            if must_exist and not target.is_file():
                raise UploadError(f"{source}: images[{index}]: {path!r} is not in the upload")


def store_dataset(
    db: Session,
    owner: User,
    *,
    name: str,
    folder: Path,
    document: dict,
    kind: str,
    root: Path,
    spacing: float | None = None,
    public: bool = False,
    single_image: bool = False,
    source: str = "dataset",
) -> Dataset:
    """Check a DeepHealth dataset ``document`` whose paths are relative to ``folder``, write it
    as ``folder/dataset.yml`` and add its row.

    Every location must lie inside ``root`` (the upload's folder, or the slide root) and
    exist. Raises :class:`UploadError` otherwise, or for a malformed document.
    """
    from digipath.data.deephealth import load_dataset, parse_dataset, save_dataset

    try:
        parsed = parse_dataset(document, source=source)
    except DigipathError as error:
        raise UploadError(str(error)) from None
    if not parsed.images:
        raise UploadError(f"{source}: the dataset has no images")
    _check_paths(parsed, folder, root, source, must_exist=True)
    path = folder / DATASET_FILE
    save_dataset(parsed, path)
    dataset_file = load_dataset(path)
    row = Dataset(
        name=name, task=Task(dataset_file.task), kind=kind, path=str(path),
        classes=list(dataset_file.classes),
        splits={key: len(value) for key, value in dataset_file.split.items()},
        samples=len(dataset_file.images), spacing=spacing, public=public,
        single_image=single_image, owner_id=owner.id,
    )  # fmt: skip
    db.add(row)
    db.flush()
    return row


@router.get("/datasets")
def list_datasets(
    task: Task | None = None,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> list[dict]:
    """The datasets the caller may use (public, own, shared), optionally of one task."""
    query = visible_datasets(who.user).where(Dataset.single_image.is_(False))
    if task is not None:
        query = query.where(Dataset.task == task)
    rows = db.scalars(query.order_by(Dataset.created.desc())).all()
    return [dataset_document(db, row, who.user) for row in rows]


@router.post("/datasets", status_code=status.HTTP_201_CREATED)
def upload_dataset(
    request: Request,
    name: str = Form(...),
    dataset: UploadFile = File(..., description="DeepHealth dataset YAML"),
    images: UploadFile | None = File(None, description="zip of the files the YAML names"),
    public: bool = Form(False),
    spacing: float | None = Form(None),
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Upload a DeepHealth dataset: its YAML and a zip of the images it names (paths in the
    YAML are relative to the zip's root)."""
    settings = request.app.state.settings
    name = _checked_name(name)
    if spacing is not None and not spacing > 0:
        raise UploadError(f"spacing: {spacing} µm/px, expected a positive number")
    text = dataset.file.read(MAX_YAML + 1)
    if len(text) > MAX_YAML:
        raise UploadError(f"{dataset.filename}: a dataset YAML over {MAX_YAML} bytes")
    document = parse_yaml(text, dataset.filename or "dataset")
    folder = settings.folder("datasets") / uuid.uuid4().hex
    try:
        if images is not None:
            archive = folder.with_suffix(".zip")
            save_stream(images.file, archive, settings.max_upload_bytes, images.filename or "zip")
            try:
                extract_zip(
                    archive, folder, max_bytes=settings.max_unzipped_bytes,
                    max_entries=settings.max_zip_entries, max_ratio=settings.max_zip_ratio,
                    archive=images.filename,
                )  # fmt: skip
            finally:
                archive.unlink(missing_ok=True)
        else:
            folder.mkdir(parents=True)
        row = store_dataset(
            db, who.user, name=name, folder=folder, document=document, kind="upload",
            root=folder, spacing=spacing, public=public, source=dataset.filename or "dataset",
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    logger.info("user %s uploaded dataset %d (%s)", who.user.username, row.id, row.name)
    return dataset_document(db, row, who.user)


def _checked_name(name: str) -> str:
    from digipath.server.api.schemas import _name

    try:
        return _name(name)
    except ValueError as error:
        raise UploadError(f"name: {error}") from None


@router.post("/datasets/register", status_code=status.HTTP_201_CREATED)
def register_slides(
    body: Registration,
    request: Request,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Register slides (and masks) on the server's disk, by paths relative to the slide root.

    Without ``classes`` the masks make a segmentation dataset; with ``classes`` and
    ``labels`` (one class name per slide) a classification one.
    """
    settings = request.app.state.settings
    root = settings.slide_root
    if root is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this server has no slide root to register")
    if not body.images:
        raise UploadError("images: expected at least one slide")
    masks = body.masks or [None] * len(body.images)
    labels = body.labels or [None] * len(body.images)
    if len(masks) != len(body.images) or len(labels) != len(body.images):
        raise UploadError("masks and labels: expected one entry per image")
    entries = []
    for index, (image, mask, label) in enumerate(zip(body.images, masks, labels, strict=True)):
        entry: dict = {"location": str(_inside(root / image, root, f"images[{index}]"))}
        if mask:
            entry["label"] = str(_inside(root / mask, root, f"masks[{index}]"))
        elif label is not None:
            entry["label"] = label
        entries.append(entry)
    document = {"name": body.name, "images": entries}
    if body.classes:
        document["classes"] = body.classes
    if body.split is not None:
        document["split"] = body.split
    folder = settings.folder("datasets") / uuid.uuid4().hex
    folder.mkdir(parents=True)
    try:
        row = store_dataset(
            db, who.user, name=body.name, folder=folder, document=document, kind="server",
            root=root, spacing=body.spacing, public=body.public, source="registration",
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return dataset_document(db, row, who.user)


@router.get("/datasets/{dataset_id}")
def get_dataset(
    dataset_id: int,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """One dataset."""
    return dataset_document(db, dataset_for(db, who.user, dataset_id), who.user)


@router.get("/datasets/{dataset_id}/samples")
def dataset_samples(
    dataset_id: int,
    split: str | None = None,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> list[dict]:
    """The samples (index, file name, label) of a dataset or of one of its splits."""
    from digipath.data.deephealth import load_dataset

    dataset = dataset_for(db, who.user, dataset_id)
    parsed = load_dataset(dataset.path)
    indices = parsed.split.get(split) if split else range(len(parsed.images))
    if indices is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"dataset {dataset_id} has no split {split!r}"
        )
    rows = []
    for index in indices:
        sample = parsed.images[index]
        label = sample.label
        rows.append({
            "index": index, "name": Path(sample.location[0]).name,
            "label": parsed.classes[label] if isinstance(label, int) else None,
            "has_mask": sample.label_path is not None,
        })  # fmt: skip
    return rows


@router.patch("/datasets/{dataset_id}")
def update_dataset(
    dataset_id: int,
    body: DatasetUpdate,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Rename, publish or share a dataset (its owners only); ``shares`` replaces the list."""
    dataset = dataset_for(db, who.user, dataset_id, change=True)
    if body.name is not None:
        dataset.name = body.name
    if body.public is not None:
        dataset.public = body.public
    if body.shares is not None:
        set_shares(db, DatasetShare, "dataset_id", dataset.id, dataset.owner_id, body.shares)
    return dataset_document(db, dataset, who.user)


def set_shares(db: Session, table, column: str, ident: int, owner_id, shares) -> None:
    """Replace the shares of a dataset or weights (``table``, keyed by ``column``)."""
    names = [share.username for share in shares]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"shares: {', '.join(repeated)} listed twice"
        )
    db.execute(delete(table).where(getattr(table, column) == ident))
    for share in shares:
        user = db.scalar(select(User).where(User.username == share.username))
        if user is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"shares: no user {share.username!r}"
            )
        if user.id == owner_id:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"shares: {share.username!r} is the owner (owners need no share)",
            )
        db.add(table(**{column: ident, "user_id": user.id, "role": share.role}))
    db.flush()


@router.delete("/datasets/{dataset_id}")
def delete_dataset(
    dataset_id: int,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Delete a dataset and the files the server keeps for it (never registered slides)."""
    dataset = dataset_for(db, who.user, dataset_id, change=True)
    folder = Path(dataset.path).parent
    db.delete(dataset)
    db.flush()
    shutil.rmtree(folder, ignore_errors=True)
    return {"result": "deleted", "id": dataset_id}
