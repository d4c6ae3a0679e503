"""Properties and their allowed values per model family (and optional dataset)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from digipath.server.api.schemas import Body
from digipath.server.deps import Caller, caller, database, dataset_for, visible_datasets
from digipath.server.models import AllowedProperty, Dataset, ModelFamily, Property
from digipath.server.properties import check_allowed, check_value, property_rows

__all__ = ["router"]

router = APIRouter(tags=["properties"])


class AllowedCreate(Body):
    property_id: int
    family_id: int
    dataset_id: int | None = None
    allowed: str = ""
    default: str = ""


def property_document(prop: Property) -> dict:
    """A property as the API returns it."""
    return {
        "id": prop.id, "name": prop.name, "type": prop.type.value, "default": prop.default,
        "values": list(prop.values), "description": prop.description,
    }  # fmt: skip


@router.get("/properties")
def list_properties(
    name: str | None = None,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> list[dict]:
    """The properties (``name``: case-insensitive part of the name, ``_`` read as space)."""
    rows = db.scalars(select(Property).order_by(Property.id)).all()
    if name:
        wanted = name.replace("_", " ").lower()
        rows = [p for p in rows if wanted in p.name.lower()]
    return [property_document(p) for p in rows]


@router.get("/properties/table")
def property_table(
    family_id: int,
    dataset_id: int | None = None,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> list[dict]:
    """Per property, the default and allowed values for a model family (and dataset): the
    project page's properties table."""
    if db.get(ModelFamily, family_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model family with id {family_id}")
    if dataset_id is not None:
        dataset_for(db, who.user, dataset_id)
    return [
        {**property_document(prop), "default": default, "allowed": allowed}
        for prop, default, allowed in property_rows(db, family_id, dataset_id)
    ]


def _allowed_document(row: AllowedProperty) -> dict:
    return {
        "id": row.id, "property_id": row.property_id, "family_id": row.family_id,
        "dataset_id": row.dataset_id, "allowed": row.allowed, "default": row.default,
    }  # fmt: skip


@router.get("/allowed-properties")
def list_allowed(
    family_id: int,
    property_id: int | None = None,
    dataset_id: int | None = None,
    general: bool = False,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> list[dict]:
    """The allowed-value rows of a family (an empty list: use the property's own default):
    the general ones (``general=true``: only those), those of ``dataset_id``, or by default
    the general ones and those of every dataset the caller may see."""
    query = select(AllowedProperty).where(AllowedProperty.family_id == family_id)
    if property_id is not None:
        query = query.where(AllowedProperty.property_id == property_id)
    if general:
        query = query.where(AllowedProperty.dataset_id.is_(None))
    elif dataset_id is not None:
        dataset_for(db, who.user, dataset_id)
        query = query.where(AllowedProperty.dataset_id == dataset_id)
    else:
        visible = visible_datasets(who.user).with_only_columns(Dataset.id)
        query = query.where(
            or_(AllowedProperty.dataset_id.is_(None), AllowedProperty.dataset_id.in_(visible))
        )
    return [_allowed_document(row) for row in db.scalars(query)]


@router.put("/allowed-properties")
def set_allowed(
    body: AllowedCreate,
    who: Caller = Depends(caller),
    db: Session = Depends(database, scope="function"),
) -> dict:
    """Create or replace the allowed values and default of a property for a family: for one
    dataset (its owners), or for all (the family's owner and the administrators). The rule
    and the default are checked (augmentation defaults are parsed)."""
    prop = db.get(Property, body.property_id)
    if prop is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no property with id {body.property_id}")
    family = db.get(ModelFamily, body.family_id)
    if family is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model family with id {body.family_id}")
    if body.dataset_id is not None:
        dataset_for(db, who.user, body.dataset_id, change=True)
    elif not (who.user.admin or family.owner_id == who.user.id):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"only the administrators or the owner of {family.name!r} set its rules for all "
            "datasets; give a dataset_id of yours",
        )
    allowed = check_allowed(prop, body.allowed)
    default = check_value(prop, body.default, allowed) if body.default != "" else ""
    row = db.scalar(
        select(AllowedProperty).where(
            AllowedProperty.property_id == prop.id,
            AllowedProperty.family_id == body.family_id,
            AllowedProperty.dataset_id.is_(None)
            if body.dataset_id is None
            else AllowedProperty.dataset_id == body.dataset_id,
        )
    )
    if row is None:
        row = AllowedProperty(
            property_id=prop.id, family_id=body.family_id, dataset_id=body.dataset_id
        )
        db.add(row)
    row.allowed, row.default = allowed, default
    db.flush()
    return _allowed_document(row)
