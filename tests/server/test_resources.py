"""Projects, datasets, model families and weights, properties: the API's happy paths."""

from __future__ import annotations

import json

import pytest
from server_support import (
    classification_upload,
    create_project,
    family_id,
    model_file,
    upload_dataset,
    upload_weights,
)


def test_projects_and_members(users):
    alice, bob, carol = users("alice"), users("bob"), users("carol")
    project = create_project(alice, "Tumour", members=[{"username": "bob", "role": "viewer"}])
    assert project["role"] == "owner"
    assert {m["username"]: m["role"] for m in project["members"]} == {
        "alice": "owner", "bob": "viewer"
    }  # fmt: skip
    pid = project["id"]
    assert bob.get(f"/api/v1/projects/{pid}").json()["role"] == "viewer"
    assert bob.patch(f"/api/v1/projects/{pid}", json={"name": "mine"}).status_code == 403
    assert carol.get(f"/api/v1/projects/{pid}").status_code == 404
    assert [p["id"] for p in carol.get("/api/v1/projects").json()] == []
    changed = alice.patch(
        f"/api/v1/projects/{pid}",
        json={"name": "Renamed", "members": [{"username": "carol", "role": "owner"}]},
    )
    assert changed.status_code == 200
    assert {m["username"] for m in changed.json()["members"]} == {"alice", "carol"}
    assert bob.get(f"/api/v1/projects/{pid}").status_code == 404
    unknown = alice.patch(f"/api/v1/projects/{pid}", json={"members": [{"username": "zed"}]})
    assert unknown.status_code == 422
    assert carol.delete(f"/api/v1/projects/{pid}").status_code == 200
    assert alice.get(f"/api/v1/projects/{pid}").status_code == 404


def test_upload_dataset_and_samples(users, settings):
    alice = users("alice")
    dataset = upload_dataset(alice, spacing="0.5")
    assert dataset["task"] == "classification"
    assert dataset["classes"] == ["red", "blue"]
    assert dataset["samples"] == 12 and dataset["splits"] == {
        "training": 4, "validation": 4, "test": 4
    }  # fmt: skip
    assert dataset["spacing"] == 0.5 and "path" not in dataset
    samples = alice.get(f"/api/v1/datasets/{dataset['id']}/samples?split=test").json()
    assert [s["index"] for s in samples] == [8, 9, 10, 11]
    assert samples[0]["label"] == "red"
    assert [d["id"] for d in alice.get("/api/v1/datasets?task=classification").json()] == [
        dataset["id"]
    ]
    assert alice.get("/api/v1/datasets?task=segmentation").json() == []
    folder = next((settings.data_dir / "datasets").iterdir())
    assert (folder / "dataset.yml").is_file() and (folder / "images").is_dir()
    assert alice.delete(f"/api/v1/datasets/{dataset['id']}").status_code == 200
    assert not folder.exists()


def test_dataset_sharing_and_public(users):
    alice, bob = users("alice"), users("bob")
    dataset = upload_dataset(alice)
    did = dataset["id"]
    assert bob.get(f"/api/v1/datasets/{did}").status_code == 404
    alice.patch(f"/api/v1/datasets/{did}", json={"shares": [{"username": "bob"}]})
    assert bob.get(f"/api/v1/datasets/{did}").status_code == 200
    assert bob.patch(f"/api/v1/datasets/{did}", json={"name": "x"}).status_code == 403
    assert bob.delete(f"/api/v1/datasets/{did}").status_code == 403
    alice.patch(f"/api/v1/datasets/{did}", json={"shares": [], "public": True})
    assert bob.get(f"/api/v1/datasets/{did}").json()["public"] is True


def test_register_slides_under_the_root(users, settings, tmp_path):
    import numpy as np

    from digipath.io.writer import ImageWriter

    alice = users("alice")
    for name, channels in (("slide.tif", 3), ("mask.tif", 1)):
        with ImageWriter(settings.slide_root / name, (64, 64), spacing=0.5, channels=channels,
                         tile_size=64, dtype="uint8") as writer:  # fmt: skip
            writer.write(np.full((64, 64, channels), 100, np.uint8), 0, 0)
    response = alice.post(
        "/api/v1/datasets/register",
        json={"name": "slides", "images": ["slide.tif"], "masks": ["mask.tif"],
              "split": {"test": [0]}, "spacing": 0.5},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["task"] == "segmentation" and response.json()["kind"] == "server"
    outside = alice.post(
        "/api/v1/datasets/register", json={"name": "x", "images": ["../escape.tif"]}
    )
    assert outside.status_code == 422 and "outside" in outside.json()["detail"]
    (tmp_path / "secret.tif").write_bytes(b"x")
    (settings.slide_root / "link.tif").symlink_to(tmp_path / "secret.tif")
    linked = alice.post("/api/v1/datasets/register", json={"name": "x", "images": ["link.tif"]})
    assert linked.status_code == 422 and "outside" in linked.json()["detail"]
    missing = alice.post("/api/v1/datasets/register", json={"name": "x", "images": ["no.tif"]})
    assert missing.status_code == 422


def test_families_and_weights(users, tmp_path):
    alice, bob = users("alice"), users("bob")
    families = alice.get("/api/v1/models?task=segmentation").json()
    assert [f["model_type"] for f in families] == ["unet", "hovernet"]
    weights = upload_weights(alice, model_file(tmp_path), name="cifar weights")
    assert weights["model_type"] == "cifar" and weights["classes"] == ["0", "1"]
    assert weights["active"] and weights["size"] > 0 and len(weights["digest"]) == 64
    assert "location" not in weights
    wid = weights["id"]
    listed = alice.get(f"/api/v1/weights?family_id={family_id(alice)}").json()
    assert [w["id"] for w in listed] == [wid]
    download = alice.get(f"/api/v1/weights/{wid}/download")
    assert download.status_code == 200
    assert download.content == (tmp_path / "cifar.safetensors").read_bytes()
    assert bob.get(f"/api/v1/weights/{wid}").status_code == 404
    alice.patch(f"/api/v1/weights/{wid}", json={"public": True})
    assert bob.get(f"/api/v1/weights/{wid}/download").status_code == 200
    assert bob.delete(f"/api/v1/weights/{wid}").status_code == 403
    assert alice.delete(f"/api/v1/weights/{wid}").status_code == 200


def test_weights_of_another_family_are_refused(users, tmp_path):
    alice = users("alice")
    response = alice.post(
        "/api/v1/weights",
        data={"name": "w", "family_id": str(family_id(alice, "unet"))},
        files={"file": ("m.safetensors", model_file(tmp_path).read_bytes())},
    )
    assert response.status_code == 422 and "'cifar' model" in response.json()["detail"]


def test_new_family(users):
    alice = users("alice")
    made = alice.post(
        "/api/v1/models",
        json={"name": "ResNet tiny", "model_type": "resnet18", "task": "classification"},
    )
    assert made.status_code == 201
    bad = alice.post(
        "/api/v1/models", json={"name": "X", "model_type": "nope", "task": "classification"}
    )
    assert bad.status_code == 422 and "registered types" in bad.json()["detail"]


def test_property_table_and_allowed_values(users):
    alice = users("alice")
    fid = family_id(alice)
    table = {
        row["name"]: row for row in alice.get(f"/api/v1/properties/table?family_id={fid}").json()
    }
    assert table["Input height"]["default"] == "32" and table["Input height"]["allowed"] == ">0"
    assert table["Learning rate"]["default"] == "0.0001" and table["Learning rate"]["allowed"] == ""
    assert table["Loss function"]["values"][0] == "cross_entropy"
    prop = table["Learning rate"]["id"]
    put = alice.put(
        "/api/v1/allowed-properties",
        json={"property_id": prop, "family_id": fid, "allowed": ">0.0", "default": "0.001"},
    )
    assert put.status_code == 200
    table = {
        row["name"]: row for row in alice.get(f"/api/v1/properties/table?family_id={fid}").json()
    }
    assert (
        table["Learning rate"]["default"] == "0.001" and table["Learning rate"]["allowed"] == ">0.0"
    )
    bad_default = alice.put(
        "/api/v1/allowed-properties",
        json={"property_id": prop, "family_id": fid, "allowed": ">0.0", "default": "-1"},
    )
    assert bad_default.status_code == 422
    bad_rule = alice.put(
        "/api/v1/allowed-properties",
        json={"property_id": prop, "family_id": fid, "allowed": "between 1 and 2"},
    )
    assert bad_rule.status_code == 422


def test_augmentation_defaults_are_parsed(users):
    alice = users("alice")
    fid = family_id(alice)
    props = {p["name"]: p["id"] for p in alice.get("/api/v1/properties").json()}
    good = "SequentialAugmentationContainer\\n  AugMirror p=0.5\\nend"
    response = alice.put(
        "/api/v1/allowed-properties",
        json={"property_id": props["Training augmentations"], "family_id": fid, "default": good},
    )
    assert response.status_code == 200, response.text
    assert response.json()["default"].count("\n") == 2  # escaped line breaks are read
    bad = alice.put(
        "/api/v1/allowed-properties",
        json={"property_id": props["Training augmentations"], "family_id": fid,
              "default": "AugNoSuchThing p=1"},
    )  # fmt: skip
    assert bad.status_code == 422 and "Training augmentations" in bad.json()["detail"]


def test_properties_search(users):
    alice = users("alice")
    names = [p["name"] for p in alice.get("/api/v1/properties?name=learning_rate").json()]
    assert names == ["Learning rate"]


@pytest.mark.parametrize("split", [{"training": [0], "test": [5]}])
def test_malformed_dataset_documents(users, split):
    alice = users("alice")
    yaml_bytes, zip_bytes = classification_upload(4)
    document = json.loads(yaml_bytes)
    document["split"] = split
    response = alice.post(
        "/api/v1/datasets",
        data={"name": "bad"},
        files={"dataset": ("d.yml", json.dumps(document)), "images": ("i.zip", zip_bytes)},
    )
    assert response.status_code == 422
    assert "split" in response.json()["detail"]


def test_openapi_page(api):
    from digipath.server.app import vendor_folder

    schema = api.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/jobs/train", "/api/v1/datasets", "/api/v1/weights", "/api/v1/tokens"):
        assert path in schema["paths"]
    assert "/login" not in schema["paths"]  # pages are not API
    docs = api.get("/api/v1/docs")
    if vendor_folder("swagger-ui") is None:
        assert docs.status_code == 404 and "make venv" in docs.json()["detail"]
    else:
        assert docs.status_code == 200 and "/vendor/swagger-ui/swagger-ui-bundle.js" in docs.text
        assert api.get("/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200


def test_family_rules_need_an_administrator_or_the_family_owner(users):
    alice, bob = users("alice"), users("bob")  # alice registered first: an administrator
    assert alice.get("/api/v1/auth/me").json()["user"]["admin"] is True
    assert bob.get("/api/v1/auth/me").json()["user"]["admin"] is False
    fid = family_id(bob)
    epochs = next(p["id"] for p in bob.get("/api/v1/properties?name=epochs").json())
    rule = {"property_id": epochs, "family_id": fid, "allowed": ">0", "default": "2"}
    assert bob.put("/api/v1/allowed-properties", json=rule).status_code == 403
    dataset = upload_dataset(bob)
    mine = bob.put("/api/v1/allowed-properties", json={**rule, "dataset_id": dataset["id"]})
    assert mine.status_code == 200  # for a dataset of his own he may
    assert alice.put("/api/v1/allowed-properties", json=rule).status_code == 200
    family = bob.post(
        "/api/v1/models",
        json={"name": "Bob's net", "model_type": "cifar", "task": "classification"},
    ).json()
    assert bob.put(
        "/api/v1/allowed-properties", json={**rule, "family_id": family["id"]}
    ).status_code == 200  # fmt: skip
    # alice sees the general rule, not the rule of bob's private dataset
    query = f"/api/v1/allowed-properties?family_id={fid}&property_id={epochs}"
    assert [r["dataset_id"] for r in alice.get(query).json()] == [None]
    assert len(bob.get(query).json()) == 2
    assert len(bob.get(query + "&general=true").json()) == 1


def test_shares_are_checked_and_owners_by_share_may_change(users, tmp_path):
    alice, bob = users("alice"), users("bob")
    dataset = upload_dataset(alice)
    url = f"/api/v1/datasets/{dataset['id']}"
    twice = alice.patch(url, json={"shares": [{"username": "bob"}, {"username": "bob"}]})
    assert twice.status_code == 422 and "twice" in twice.json()["detail"]
    self_share = alice.patch(url, json={"shares": [{"username": "alice"}]})
    assert self_share.status_code == 422 and "owner" in self_share.json()["detail"]
    alice.patch(url, json={"shares": [{"username": "bob", "role": "owner"}]})
    shared = bob.get(url).json()
    assert shared["mine"] is False and shared["can_change"] is True
    assert bob.patch(url, json={"name": "renamed by bob"}).status_code == 200
    weights = upload_weights(alice, model_file(tmp_path))
    assert weights["can_change"] is True


def test_inactive_weights_are_listed_on_request(users, api, tmp_path):
    from digipath.server.models import Weights

    alice, bob = users("alice"), users("bob")
    weights = upload_weights(alice, model_file(tmp_path))
    with api.app.state.database.session() as session:
        session.get(Weights, weights["id"]).active = False  # as while a training makes them
    assert alice.get("/api/v1/weights").json() == []
    assert [w["id"] for w in alice.get("/api/v1/weights?include_inactive=true").json()] == [
        weights["id"]
    ]
    assert bob.get("/api/v1/weights?include_inactive=true").json() == []
