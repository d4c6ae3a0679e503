"""Tests of the DigitalPathology data config (digipath.data.config)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.data.config import DataConfig, PatchSource, format_path, key_path
from digipath.errors import ConfigError, DataConfigError

HERE = Path(__file__).parent
SEED_CONFIG = HERE / "seed_data_config.yaml"


def write(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def list_config(categories: dict[str, int]) -> dict:
    return {
        "type": "list",
        "path": {"root": "/data"},
        "data": {
            name: [
                {
                    "image": f"{{root}}/{name}_{i}.tif",
                    "mask": f"{{root}}/m_{name}_{i}.tif",
                    "labels": [1],
                }
                for i in range(count)
            ]
            for name, count in categories.items()
        },
    }


# --------------------------------------------------------------------------------------------
# The seed example


def test_seed_example_loads_unchanged():
    config = DataConfig.load(SEED_CONFIG)
    assert config.purposes() == ["training", "validation"]
    assert config.categories() == ["breast/hne", "kidney/pas"]
    assert config.categories("validation") == []
    assert config.count() == 2
    assert config.count("training", "kidney/pas") == 1
    assert config.items("validation") == []
    first = config.items("training", "breast/hne")[0]
    assert first == PatchSource(
        "/home/user/data/images/breast_hne_01_sp2.0.tif",
        "/home/user/data/masks/breast_hne_01_mask_sp2.0.tif",
        "/home/user/data/stats/breast_hne_01_mask_sp2.0.stat",
        (1, 2),
    )
    raw = config.items("training", "breast/hne", replace=False)[0]
    assert raw.image == "{root}/{images}/breast_hne_01{image_tag}.tif"
    assert config.distribution == {"training": 0.5, "validation": 0.5}
    config.validate({"training": 3, "validation": 3})


def test_seed_example_save_round_trip(tmp_path):
    config = DataConfig.load(SEED_CONFIG)
    for name in ("copy.yaml", "copy.json"):
        config.save(tmp_path / name)
        again = DataConfig.load(tmp_path / name)
        assert again.collection(replace=False) == config.collection(replace=False)
        assert again.replacements == config.replacements
        assert again.distribution == config.distribution
    saved = yaml.safe_load((tmp_path / "copy.yaml").read_text())
    assert saved["type"] == "distributed"
    assert saved["distribution"] == {"training": 1.0, "validation": 1.0}
    assert sorted(os.listdir(tmp_path)) == ["copy.json", "copy.yaml"]  # no temporary left


def test_update_overrides_replacements():
    config = DataConfig.load(SEED_CONFIG)
    config.update({"root": "/mnt/other/"})
    assert config.items()[0].image == "/mnt/other/images/breast_hne_01_sp2.0.tif"


def test_load_overrides_supply_missing_tag(tmp_path):
    document = list_config({"a": 1})
    del document["path"]
    path = write(tmp_path / "c.yml", document)
    with pytest.raises(DataConfigError, match=r"data\.a\[0\]\.image.*\{root\}"):
        DataConfig.load(path)
    config = DataConfig.load(path, overrides={"root": "/x"})
    assert config.items()[0].image == "/x/a_0.tif"


# --------------------------------------------------------------------------------------------
# PatchSource


def test_patch_source_is_immutable_hashable_orderable():
    a = PatchSource("b.tif", "m.tif", "", [2, 1])
    b = PatchSource("a.tif", labels=(1,))
    assert a.labels == (2, 1)
    assert sorted([a, b]) == [b, a]
    assert len({a, PatchSource("b.tif", "m.tif", "", (2, 1))}) == 1
    with pytest.raises(AttributeError):
        a.image = "c.tif"  # type: ignore[misc]


@pytest.mark.parametrize("labels", [[255], [-1], [True], ["1"]])
def test_patch_source_rejects_bad_labels(labels):
    with pytest.raises(DataConfigError, match="labels"):
        PatchSource("a.tif", labels=labels)


def test_format_path_normalises_and_names_missing_tag():
    assert format_path("{root}//x/../y.tif", {"root": "/d"}) == os.path.normpath("/d/y.tif")
    assert format_path("", {}) == ""
    with pytest.raises(DataConfigError, match=r"k: .*\{tag\}"):
        format_path("{tag}.tif", {}, "k")
    with pytest.raises(DataConfigError, match="not a valid template"):
        format_path("{a.tif", {}, "k")
    assert key_path("data", "training", "tumor", 3, "labels") == "data.training.tumor[3].labels"


# --------------------------------------------------------------------------------------------
# Errors name the file and the key path


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d["data"]["tumor"][3].update(labels=[1, 300]), r"data\.tumor\[3\]\.labels\[1\]"),
        (lambda d: d["data"]["tumor"][3].pop("labels"), r"data\.tumor\[3\]\.labels"),
        (lambda d: d["data"]["tumor"][1].pop("image"), r"data\.tumor\[1\]\.image"),
        (lambda d: d["data"]["tumor"][0].update(lables=[1]), r"data\.tumor\[0\]\.lables"),
        (lambda d: d["data"]["tumor"][2].update(image="{nope}/x.tif"), r"data\.tumor\[2\]\.image"),
        (lambda d: d["data"].update(tumor=5), r"data\.tumor"),
        (lambda d: d.update(type="mixed"), r"type: unknown type 'mixed'"),
        (lambda d: d.pop("data"), r"data: required key"),
        (lambda d: d.update(extra=1), r"extra: unknown key"),
    ],
)
def test_errors_name_file_and_key(tmp_path, edit, key):
    document = list_config({"tumor": 4})
    edit(document)
    path = write(tmp_path / "config.yaml", document)
    with pytest.raises(DataConfigError, match=key) as info:
        DataConfig.load(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_distributed_errors(tmp_path):
    document = {
        "type": "distributed",
        "distribution": {"training": 1.0},
        "data": {"training": {"tumor": [{"image": "a.tif", "labels": [1]}]}, "test": {}},
    }
    with pytest.raises(DataConfigError, match=r"data\.test: the purpose 'test' has no ratio"):
        DataConfig.load(write(tmp_path / "a.yaml", document))
    document["distribution"] = {"training": -1.0, "test": 1.0}
    with pytest.raises(DataConfigError, match=r"distribution\.training"):
        DataConfig.load(write(tmp_path / "b.yaml", document))
    del document["distribution"]
    with pytest.raises(DataConfigError, match="distribution"):
        DataConfig.load(write(tmp_path / "c.yaml", document))
    document["distribution"] = {"training": 1.0, "test": 1.0}
    document["data"]["test"] = [{"image": "a.tif", "labels": [1]}]
    with pytest.raises(DataConfigError, match=r"data\.test: expected a mapping"):
        DataConfig.load(write(tmp_path / "d.yaml", document))


def test_file_errors(tmp_path):
    with pytest.raises(DataConfigError, match=r"unknown data config extension '\.txt'"):
        DataConfig.load(tmp_path / "config.txt")
    with pytest.raises(DataConfigError, match="no such file"):
        DataConfig.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("type: [list\n")
    with pytest.raises(DataConfigError, match="not valid YAML"):
        DataConfig.load(tmp_path / "bad.yaml")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataConfigError, match="not valid JSON"):
        DataConfig.load(tmp_path / "bad.json")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(DataConfigError, match="expected a mapping"):
        DataConfig.load(tmp_path / "empty.yaml")
    config = DataConfig.load(SEED_CONFIG)
    with pytest.raises(DataConfigError, match="extension"):
        config.save(tmp_path / "out.cfg")


def test_json_list_config(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(list_config({"a": 2, "b": 1})))
    config = DataConfig.load(path)
    assert config.purposes() == []
    assert config.distribution is None
    assert config.count() == 3 and config.count(category="a") == 2
    assert config.items(category="b")[0] == PatchSource(
        "/data/b_0.tif", "/data/m_b_0.tif", "", (1,)
    )
    with pytest.raises(DataConfigError, match="not distributed"):
        config.items("training")
    config.validate({"training": 1.0})  # a list config always passes
    config.save(tmp_path / "out.yaml")
    assert yaml.safe_load((tmp_path / "out.yaml").read_text())["type"] == "list"


def test_validate_compares_normalised_ratios():
    config = DataConfig.load(SEED_CONFIG)
    with pytest.raises(DataConfigError, match=r"distribution\.training"):
        config.validate({"training": 0.8, "validation": 0.2})
    with pytest.raises(DataConfigError, match="distributed over"):
        config.validate({"training": 0.5, "test": 0.5})
    with pytest.raises(DataConfigError, match="unknown purpose"):
        config.items("test")


# --------------------------------------------------------------------------------------------
# distribute


def test_distribute_keeps_at_least_one_per_purpose(tmp_path):
    config = DataConfig.load(write(tmp_path / "c.yaml", list_config({"a": 3, "b": 2, "c": 10})))
    ratios = {"training": 0.98, "validation": 0.01, "test": 0.01}
    split = config.distribute(ratios, np.random.default_rng(0))
    assert config.distribution is None  # unchanged
    assert split.purposes() == ["training", "validation", "test"]
    for purpose in ("validation", "test"):
        assert split.count(purpose, "a") == 1
        assert split.count(purpose, "c") == 1
    assert split.count("training", "b") == 2  # fewer items than purposes: no minimum
    split.validate(ratios)
    split.save(tmp_path / "split.yaml")
    again = DataConfig.load(tmp_path / "split.yaml")
    assert again.collection(replace=False) == split.collection(replace=False)


def test_distribute_is_reproducible():
    config = DataConfig({"a": [PatchSource(f"{i}.tif", labels=(1,)) for i in range(20)]})
    ratios = {"training": 0.5, "validation": 0.5}
    first = config.distribute(ratios, 7).collection()
    assert first == config.distribute(ratios, 7).collection()


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 12), min_size=1, max_size=4),
    ratios=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4).filter(lambda r: sum(r) > 0),
    seed=st.integers(0, 2**32 - 1),
)
def test_distribute_assigns_every_item_exactly_once(sizes, ratios, seed):
    data = {
        f"c{c}": [PatchSource(f"c{c}_{i}.tif", labels=(1,)) for i in range(size)]
        for c, size in enumerate(sizes)
    }
    config = DataConfig(data)
    purposes = {f"p{i}": ratio for i, ratio in enumerate(ratios)}
    split = config.distribute(purposes, seed)
    positive = [p for p, r in purposes.items() if r > 0]
    for category, items in data.items():
        assigned = [item for p in purposes for item in split.items(p, category, replace=False)]
        assert sorted(assigned) == sorted(items)
        if len(items) >= len(positive):
            assert all(split.count(p, category) >= 1 for p in positive)
        assert all(split.count(p, category) == 0 for p, r in purposes.items() if r == 0)
