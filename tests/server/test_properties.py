"""Property rules and the resolution order of a training's hyper-parameters."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digipath.server.db import Database
from digipath.server.models import AllowedProperty, Dataset, ModelFamily, Property, Task
from digipath.server.properties import (
    PropertyError,
    check_allowed,
    check_value,
    ensure_fixtures,
    normalise_name,
    resolve,
)
from digipath.server.uploads import UploadError, plain_name


@pytest.fixture
def session(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'p.sqlite'}")
    with database.session() as session:
        ensure_fixtures(session)
        yield session
    database.dispose()


def _prop(session, name) -> Property:
    return next(p for p in session.query(Property) if p.name == name)


def test_fixtures_are_idempotent(session):
    count = session.query(Property).count()
    families = session.query(ModelFamily).count()
    ensure_fixtures(session)
    assert session.query(Property).count() == count and count >= 11
    assert session.query(ModelFamily).count() == families


def test_resolution_order(session):
    family = session.query(ModelFamily).filter_by(model_type="cifar").one()
    dataset = Dataset(name="d", task=Task.classification, kind="upload", path="/x")
    session.add(dataset)
    session.flush()
    epochs, batch, rate = (_prop(session, n) for n in ("Epochs", "Batch size", "Learning rate"))
    session.add(AllowedProperty(property_id=epochs.id, family_id=family.id, dataset_id=dataset.id,
                                allowed=">=2", default="7"))  # fmt: skip
    session.flush()
    values = resolve(session, family.id, None, {})
    assert values["Epochs"] == "10"  # the family's default (fixtures)
    assert values["Learning rate"] == "0.0001"  # the property's own default
    values = resolve(session, family.id, dataset.id, {"batch_size": "4", "LEARNING RATE": ""})
    assert values["Epochs"] == "7"  # the dataset's default wins over the family's
    assert values["Batch size"] == "4"  # the user's value wins; '_' reads as a space
    assert values["Learning rate"] == "0.0001"  # an empty value keeps the default
    with pytest.raises(PropertyError, match="Epochs: 1 is not >=2"):
        resolve(session, family.id, dataset.id, {"Epochs": 1})
    assert batch.type.value == "INT" and rate.type.value == "FLT"


@pytest.mark.parametrize(
    ("name", "value", "rule", "ok"),
    [
        ("Epochs", "3", ">0", True), ("Epochs", "0", ">0", False), ("Epochs", "2.5", "", False),
        ("Learning rate", "1e-3", ">0.0", True), ("Learning rate", "nan", "", False),
        ("Learning rate", "0.5", "<0.1", False), ("Metric", "accuracy", "", True),
        ("Metric", "f1", "", False), ("Loss function", "dice", "[cross_entropy]", False),
        ("Loss function", "dice", "[cross_entropy,dice]", True),
    ],
)  # fmt: skip
def test_check_value(session, name, value, rule, ok):
    prop = _prop(session, name)
    if ok:
        assert check_value(prop, value, rule) == value
    else:
        with pytest.raises(PropertyError, match=name):
            check_value(prop, value, rule)


def test_check_allowed(session):
    epochs, metric = _prop(session, "Epochs"), _prop(session, "Metric")
    assert check_allowed(epochs, " > 0 ") == ">0"
    assert check_allowed(metric, "[accuracy, loss]") == "[accuracy,loss]"
    for bad in ("[]", "between", "[1, x]"):
        with pytest.raises(PropertyError):
            check_allowed(epochs, bad)
    with pytest.raises(PropertyError):
        check_allowed(metric, ">0")  # limits need a number property


def test_normalise_name():
    assert normalise_name("Input_height") == normalise_name(" input  HEIGHT ") == "input height"


@given(st.text(max_size=250))
def test_plain_names_never_hold_a_path(name):
    try:
        accepted = plain_name(name)
    except UploadError:
        return
    assert "/" not in accepted and "\\" not in accepted and accepted not in (".", "..")
    assert not accepted.startswith(".") and "\x00" not in accepted and len(accepted) <= 200


def test_migrations_match_the_models(tmp_path):
    """The alembic migrations make exactly the tables the models declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from digipath.server.models import Base

    database = Database(f"sqlite:///{tmp_path / 'm.sqlite'}")
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    database.dispose()
    assert differences == []
