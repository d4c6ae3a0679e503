"""Hyper-parameter properties: the fixtures, allowed-value syntax, checks and resolution.

A :class:`~digipath.server.models.Property` has a type (INT, FLT, LST, STR) and a default; an
:class:`~digipath.server.models.AllowedProperty` narrows it for a model family, optionally for
one dataset: ``allowed`` is DeepHealth's syntax (``>0`` integer above 0, ``>0.0`` float above
0, ``>=1``, ``[a,b,c]`` one of a list, empty for anything of the type) and ``default`` its
default. A training job's values are resolved as the DeepHealth back-end did (reference §4.3
step 4), each step overriding the one before:

1. the family's defaults (no dataset);
2. the family's defaults for the dataset;
3. the property's own default, for anything still missing;
4. the user's non-empty values, matched by name case-insensitively with ``_`` read as space.

Unlike DeepHealth, every resolved value is then checked against its type and allowed values,
and augmentation texts are parsed, so a bad value is refused when the job is submitted (422
naming the property) instead of failing inside the worker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from digipath.errors import DigipathError
from digipath.server.models import AllowedProperty, ModelFamily, Property, PropertyType, Task

__all__ = [
    "FAMILIES",
    "PROPERTIES",
    "PropertyError",
    "check_allowed",
    "check_value",
    "ensure_fixtures",
    "normalise_name",
    "resolve",
]


class PropertyError(DigipathError):
    """A property value or allowed-value rule is invalid (names the property)."""


AUGMENTATIONS = ("Training augmentations", "Validation augmentations", "Test augmentations")

PROPERTIES: tuple[tuple[str, PropertyType, str, tuple[str, ...], str], ...] = (
    ("Learning rate", PropertyType.FLT, "0.0001", (), "Adam learning rate"),
    ("Loss function", PropertyType.LST, "cross_entropy",
     ("cross_entropy", "dice", "focal", "lovasz"), "training loss"),
    ("Epochs", PropertyType.INT, "50", (), "training epochs (one pass over the training split)"),
    ("Batch size", PropertyType.INT, "1", (), "patches per batch"),
    ("Metric", PropertyType.LST, "accuracy", ("accuracy", "loss"),
     "validation metric that selects the best model"),
    ("Input height", PropertyType.INT, "100", (), "network input rows, in pixels"),
    ("Input width", PropertyType.INT, "100", (), "network input columns, in pixels"),
    ("Pixel spacing", PropertyType.FLT, "0.5", (),
     "µm/px at which slides and segmentation images are read"),
    *((name, PropertyType.STR, "", (), "DeepHealth augmentation text") for name in AUGMENTATIONS),
)  # fmt: skip
"""The property fixtures: name, type, default, choices, description."""

FAMILIES: tuple[tuple[str, str, Task, str, dict[str, tuple[str, str]]], ...] = (
    ("CifarNet", "cifar", Task.classification, "small CIFAR-10 style classifier",
     {"Input height": (">0", "32"), "Input width": (">0", "32"), "Batch size": (">0", "16"),
      "Epochs": (">0", "10")}),
    ("FCN", "fcn", Task.classification, "patch classifier with global pooling",
     {"Input height": (">0", "64"), "Input width": (">0", "64"), "Batch size": (">0", "16"),
      "Epochs": (">0", "10")}),
    ("ResNet-18", "resnet18", Task.classification, "ResNet-18 classifier",
     {"Input height": (">0", "224"), "Input width": (">0", "224"), "Batch size": (">0", "16")}),
    ("ResNet-50", "resnet50", Task.classification, "ResNet-50 classifier",
     {"Input height": (">0", "224"), "Input width": (">0", "224"), "Batch size": (">0", "8")}),
    ("U-Net", "unet", Task.segmentation, "U-Net segmentation",
     {"Input height": (">0", "128"), "Input width": (">0", "128"), "Batch size": (">0", "8"),
      "Epochs": (">0", "10"), "Metric": ("[loss,accuracy]", "loss"),
      "Loss function": ("[cross_entropy,dice,focal,lovasz]", "cross_entropy")}),
    ("HoVer-Net", "hovernet", Task.segmentation,
     "nuclear instance segmentation and classification (whole-slide nuclei jobs)", {}),
)  # fmt: skip
"""The model-family fixtures: name, digipath model type, task, description, and per property
the family's (allowed, default)."""


def normalise_name(name: str) -> str:
    """A property name for matching: lower case, ``_`` read as a space, spaces collapsed."""
    return " ".join(name.replace("_", " ").lower().split())


def ensure_fixtures(session: Session) -> None:
    """Add the fixture properties and families that are missing (existing rows are kept)."""
    existing = {p.name: p for p in session.scalars(select(Property))}
    for name, kind, default, values, description in PROPERTIES:
        if name not in existing:
            existing[name] = Property(
                name=name, type=kind, default=default, values=list(values),
                description=description,
            )  # fmt: skip
            session.add(existing[name])
    session.flush()
    families = {f.name for f in session.scalars(select(ModelFamily))}
    for name, model_type, task, description, allowed in FAMILIES:
        if name in families:
            continue
        family = ModelFamily(name=name, model_type=model_type, task=task, description=description)
        session.add(family)
        session.flush()
        for property_name, (rule, default) in allowed.items():
            session.add(
                AllowedProperty(
                    property_id=existing[property_name].id, family_id=family.id,
                    allowed=rule, default=default,
                )
            )  # fmt: skip


_LIMIT = re.compile(r"^(>=|>|<=|<)\s*(-?\d+(?:\.\d*)?(?:[eE]-?\d+)?)$")


def _parse_list(rule: str) -> list[str]:
    return [item.strip() for item in rule[1:-1].split(",") if item.strip()]


def check_allowed(prop: Property, rule: str) -> str:
    """``rule`` cleaned, if it is a valid allowed-value rule for ``prop``."""
    rule = rule.strip()
    if not rule:
        return ""
    if rule.startswith("[") and rule.endswith("]"):
        items = _parse_list(rule)
        if not items:
            raise PropertyError(f"{prop.name}: an empty list of allowed values")
        for item in items:
            _typed(prop, item)
        return "[" + ",".join(items) + "]"
    if _LIMIT.match(rule) and prop.type in (PropertyType.INT, PropertyType.FLT):
        return rule.replace(" ", "")
    raise PropertyError(
        f"{prop.name}: allowed values {rule!r}; expected '>0', '>=1', '<1.0', '[a,b,c]' or empty"
    )


def _typed(prop: Property, value: str) -> int | float | str:
    if prop.type == PropertyType.INT:
        try:
            return int(value)
        except ValueError:
            raise PropertyError(f"{prop.name}: {value!r} is not an integer") from None
    if prop.type == PropertyType.FLT:
        try:
            number = float(value)
        except ValueError:
            raise PropertyError(f"{prop.name}: {value!r} is not a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise PropertyError(f"{prop.name}: {value!r} is not a finite number")
        return number
    if prop.type == PropertyType.LST and prop.values and value not in prop.values:
        raise PropertyError(f"{prop.name}: {value!r} is not one of {', '.join(prop.values)}")
    return value


def check_value(prop: Property, value: str, rule: str = "") -> str:
    """``value`` (a string, normalised) if it suits ``prop`` and the allowed-value ``rule``.

    Augmentation texts are parsed with the DeepHealth parser; ``\\r`` is dropped and escaped
    ``\\n`` are read as line breaks (as DeepHealth saved them).
    """
    value = str(value).replace("\r", "")
    if prop.type == PropertyType.STR:
        value = value.replace("\\n", "\n")
        if prop.name in AUGMENTATIONS and value.strip():
            from digipath.augment.deephealth import parse_deephealth
            from digipath.errors import AugmentationConfigError

            try:
                parse_deephealth(value, source=prop.name)
            except AugmentationConfigError as error:
                raise PropertyError(f"{prop.name}: {error}") from None
        return value
    value = value.strip()
    typed = _typed(prop, value)
    rule = rule.strip()
    if rule.startswith("["):
        if value not in _parse_list(rule):
            raise PropertyError(f"{prop.name}: {value!r} is not one of {rule}")
    elif rule:
        operator, limit = _LIMIT.match(rule).groups()
        bound = float(limit)
        ok = {">": typed > bound, ">=": typed >= bound, "<": typed < bound, "<=": typed <= bound}
        if not ok[operator]:
            raise PropertyError(f"{prop.name}: {value} is not {rule}")
    return value


def property_rows(
    session: Session, family_id: int, dataset_id: int | None = None
) -> list[tuple[Property, str, str]]:
    """Per property: (property, default, allowed) for the family and optional dataset."""
    props = session.scalars(select(Property).order_by(Property.id)).all()
    rows = []
    for prop in props:
        default, allowed = prop.default, ""
        for dataset in (None, dataset_id) if dataset_id is not None else (None,):
            rule = session.scalar(
                select(AllowedProperty).where(
                    AllowedProperty.property_id == prop.id,
                    AllowedProperty.family_id == family_id,
                    AllowedProperty.dataset_id.is_(None)
                    if dataset is None
                    else AllowedProperty.dataset_id == dataset,
                )
            )
            if rule is not None:
                if rule.default != "":
                    default = rule.default
                if rule.allowed:
                    allowed = rule.allowed
        rows.append((prop, default, allowed))
    return rows


def resolve(
    session: Session,
    family_id: int,
    dataset_id: int | None,
    values: Mapping[str, object] | None,
) -> dict[str, str]:
    """The checked values of every property for a job (see the module docstring).

    Raises
    ------
    PropertyError
        An unknown property name, or a value that does not suit its property.
    """
    rows = property_rows(session, family_id, dataset_id)
    by_name = {
        normalise_name(prop.name): (prop, default, allowed) for prop, default, allowed in rows
    }
    given: dict[str, str] = {}
    for name, value in (values or {}).items():
        key = normalise_name(str(name))
        if key not in by_name:
            raise PropertyError(
                f"unknown property {name!r}; expected one of "
                f"{', '.join(prop.name for prop, _, _ in rows)}"
            )
        if value is not None and str(value).strip() != "":
            given[key] = str(value)
    resolved = {}
    for key, (prop, default, allowed) in by_name.items():
        value = given.get(key, default)
        if value == "" and prop.type != PropertyType.STR:
            raise PropertyError(f"{prop.name}: no value and no default")
        resolved[prop.name] = check_value(prop, value, allowed) if value != "" else ""
    return resolved
