"""Tests of patient-level splits (digipath.data.split)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.data.config import DataConfig, PatchSource
from digipath.data.split import (
    folds,
    patient_key,
    read_patient_table,
    split_by_patient,
    split_config,
)
from digipath.errors import SplitError

SEED_CONFIG = Path(__file__).parent / "seed_data_config.yaml"


def images(sizes: list[int]) -> list[str]:
    """Image paths: patient ``P<i>`` has ``sizes[i]`` images."""
    return [f"/data/P{p}_slide{i}.tif" for p, size in enumerate(sizes) for i in range(size)]


def patient_of(path: str) -> str:
    return Path(path).stem.split("_")[0]


# --------------------------------------------------------------------------------------------
# Patient ids


def test_default_patient_is_text_before_first_underscore():
    key = patient_key()
    assert key("/a/b/P012_slide3_x.tif") == "P012"
    assert key("noscore.svs") == "noscore"
    assert key(Path("dir_1/T-9_HE.tif").as_posix()) == "T-9"


def test_patient_from_pattern():
    assert patient_key(r"case(?P<patient>\d+)")("/x/slide_case042_b.tif") == "042"
    assert patient_key(r"-(\d+)-")("TCGA-12-AB.svs") == "12"
    assert patient_key(re.compile(r"^\w{3}"))("abcdef.tif") == "abc"
    with pytest.raises(SplitError, match="does not match"):
        patient_key(r"case\d+")("other.tif")
    with pytest.raises(SplitError, match="invalid regular expression"):
        patient_key("(")


def test_patient_from_mapping_and_csv(tmp_path):
    key = patient_key({"/d/a.tif": "p1", "b.tif": "p2", "c": "p3"})
    assert key("/d/a.tif") == "p1"
    assert key("/other/b.tif") == "p2"
    assert key("/x/c.svs") == "p3"
    with pytest.raises(SplitError, match="no patient"):
        key("/d/z.tif")
    table = tmp_path / "patients.csv"
    table.write_text("image,patient,site\na.tif,p1,x\nb.tif,p1,y\nc.tif,p2,z\n")
    assert read_patient_table(table) == {"a.tif": "p1", "b.tif": "p1", "c.tif": "p2"}
    assert patient_key(table)("/somewhere/c.tif") == "p2"
    assert read_patient_table(table, "image", "site")["a.tif"] == "x"
    with pytest.raises(SplitError, match=r"patients\.csv: case: no such column"):
        read_patient_table(table, patient_column="case")
    table.write_text("image,patient\na.tif,p1\na.tif,p2\n")
    with pytest.raises(SplitError, match="line 3"):
        read_patient_table(table)
    with pytest.raises(SplitError, match="no such file"):
        read_patient_table(tmp_path / "none.csv")


# --------------------------------------------------------------------------------------------
# split_by_patient and folds


def test_split_sizes_follow_ratios_in_items():
    sources = images([1] * 100)
    parts = split_by_patient(sources, {"training": 0.7, "validation": 0.2, "test": 0.1}, 0)
    assert {p: len(v) for p, v in parts.items()} == {"training": 70, "validation": 20, "test": 10}


def test_split_keeps_input_order_and_accepts_patch_sources():
    sources = [PatchSource(path, labels=(1,)) for path in images([2, 3, 1, 4])]
    parts = split_by_patient(sources, {"a": 0.5, "b": 0.5}, 3)
    for items in parts.values():
        assert items == sorted(items, key=sources.index)
    assert sum(len(v) for v in parts.values()) == 10
    assert {len(v) for v in parts.values()} == {5}  # 2+3 and 1+4


def test_split_is_reproducible():
    sources = images([1, 2, 3, 1, 1, 2, 5, 1])
    ratios = {"training": 0.6, "validation": 0.4}
    assert split_by_patient(sources, ratios, 11) == split_by_patient(sources, ratios, 11)


def test_split_errors():
    with pytest.raises(SplitError, match="ratios"):
        split_by_patient(images([1]), {}, 0)
    with pytest.raises(SplitError, match=r"ratios\.a"):
        split_by_patient(images([1]), {"a": -1.0}, 0)
    with pytest.raises(SplitError, match="all zero"):
        split_by_patient(images([1]), {"a": 0.0}, 0)
    with pytest.raises(SplitError, match="k"):
        folds(images([1, 1]), 1, 0)
    with pytest.raises(SplitError, match="3 folds need at least 3 patients"):
        folds(images([4, 4]), 3, 0)


def test_folds_balance_items():
    sources = images([3, 3, 2, 2, 1, 1, 4])  # 16 items
    parts = folds(sources, 4, 0)
    assert sorted(len(p) for p in parts) == [4, 4, 4, 4]


patient_sizes = st.lists(st.integers(1, 6), min_size=1, max_size=25)
ratio_lists = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4).filter(lambda r: sum(r) > 0)


@settings(max_examples=60, deadline=None)
@given(sizes=patient_sizes, ratios=ratio_lists, seed=st.integers(0, 2**32 - 1))
def test_split_invariants(sizes, ratios, seed):
    sources = images(sizes)
    purposes = {f"p{i}": r for i, r in enumerate(ratios)}
    parts = split_by_patient(sources, purposes, seed)
    assert list(parts) == list(purposes)
    assigned = [item for items in parts.values() for item in items]
    assert Counter(assigned) == Counter(sources)  # every item exactly once
    owners: dict[str, str] = {}
    for purpose, items in parts.items():
        for item in items:
            assert owners.setdefault(patient_of(item), purpose) == purpose  # one purpose each
    positive = [p for p, r in purposes.items() if r > 0]
    if len(sizes) >= len(positive):
        assert all(parts[p] for p in positive)
    for purpose, ratio in purposes.items():
        if ratio == 0 and len(sizes) >= len(positive):
            assert parts[purpose] == []
    total = len(sources)
    # with single-image patients the split is exact up to rounding
    if set(sizes) == {1}:
        scale = sum(ratios)
        for purpose, ratio in purposes.items():
            assert abs(len(parts[purpose]) - ratio / scale * total) <= 1 + len(purposes)


@settings(max_examples=40, deadline=None)
@given(sizes=patient_sizes, k=st.integers(2, 5), seed=st.integers(0, 2**32 - 1))
def test_fold_invariants(sizes, k, seed):
    sources = images(sizes)
    if k > len(sizes):
        with pytest.raises(SplitError):
            folds(sources, k, seed)
        return
    parts = folds(sources, k, seed)
    assert len(parts) == k
    assert Counter(item for part in parts for item in part) == Counter(sources)
    patients = [{patient_of(item) for item in part} for part in parts]
    assert all(patients)  # no empty fold
    for i in range(k):
        for j in range(i + 1, k):
            assert not patients[i] & patients[j]
    # greedy + moves: no fold is farther than the largest patient from the mean
    mean = len(sources) / k
    assert all(abs(len(part) - mean) <= max(sizes) + 1 for part in parts)


# --------------------------------------------------------------------------------------------
# Data configs


def test_split_config_by_patient(tmp_path):
    data = {
        "tumor": [
            PatchSource(f"{{root}}/P{p}_t{i}.tif", labels=(1,)) for p in range(6) for i in (0, 1)
        ],
        "normal": [PatchSource(f"{{root}}/P{p}_n.tif", labels=(0,)) for p in range(6)],
    }
    config = DataConfig(data, replacements={"root": "/d"})
    split = split_config(config, {"training": 2, "validation": 1}, np.random.default_rng(4))
    assert split.purposes() == ["training", "validation"]
    split.validate({"training": 2 / 3, "validation": 1 / 3})
    assert split.count() == config.count()
    training = {patient_of(s.image) for s in split.items("training")}
    validation = {patient_of(s.image) for s in split.items("validation")}
    assert not training & validation
    assert training | validation == {f"P{p}" for p in range(6)}
    assert split.count("validation", "tumor") == 4 and split.count("validation", "normal") == 2
    raw = split.items("training", replace=False)[0]
    assert raw.image.startswith("{root}/")
    split.save(tmp_path / "split.yaml")
    assert DataConfig.load(tmp_path / "split.yaml").collection() == split.collection()


def test_split_seed_config_with_pattern():
    config = DataConfig.load(SEED_CONFIG)
    split = split_config(config, {"training": 1, "validation": 1}, 0, patient=r"^(\w+?)_")
    assert split.count("training") == 1 and split.count("validation") == 1
