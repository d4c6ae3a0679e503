"""Tests of digipath.data.system: the system and data.resources sections, resources by purpose."""

from __future__ import annotations

import logging
import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from digipath.data.system import (
    PurposeResources,
    ResourcesConfig,
    SystemConfig,
    load_resources,
    load_system,
    purpose_resources,
)
from digipath.errors import ConfigError

SEED_BLOCK = """
system:
  process count: 2.0
  pool size: 16
  multi-threaded: true
  ipc chunk size: 10000
  join timeout secs: 30
  response timeout secs: 600
  poll timeout secs: 1800
data:
  resources:
    workers:
      training: 1.0
      validation: 1.0
    samplers:
      training: 1.0
      validation: 1.0
"""


def _system(**values: object) -> SystemConfig:
    return load_system(values)


def _resources(workers=None, samplers=None) -> ResourcesConfig:
    return load_resources({"workers": workers, "samplers": samplers})


# --------------------------------------------------------------------------------------------
# system


def test_the_seed_block_parses():
    document = yaml.safe_load(SEED_BLOCK)
    system = load_system(document["system"])
    assert system == SystemConfig(
        process_count=2.0,
        pool_size=16,
        multi_threaded=True,
        ipc_chunk_size=10000,
        join_timeout=30.0,
        response_timeout=600.0,
        poll_timeout=1800.0,
    )
    assert isinstance(system.process_count, float)
    assert system.processes(cpu_count=2) == 4
    resources = load_resources(document["data"]["resources"])
    assert resources.processes == {"training": 1.0, "validation": 1.0}
    assert resources.open_images == {"training": 1.0, "validation": 1.0}


def test_an_integer_process_count_is_a_fixed_number_and_a_float_a_multiplier():
    fixed = load_system(yaml.safe_load("process count: 3"))
    assert isinstance(fixed.process_count, int) and fixed.process_count == 3
    assert fixed.processes(cpu_count=64) == 3 and fixed.processes() == 3
    multiplier = load_system(yaml.safe_load("process count: 3.0"))
    assert isinstance(multiplier.process_count, float)
    assert multiplier.processes(cpu_count=4) == 12
    assert load_system({"process count": 2}).processes(cpu_count=5) == 2


@pytest.mark.parametrize(
    ("value", "cpus", "expected"),
    [(0, 8, 0), (0.0, 8, 0), (0.5, 3, 2), (0.1, 2, 1), (1.0, 1, 1), (0.75, 4, 3), (1, 100, 1)],
)
def test_processes(value, cpus, expected):
    assert _system(**{"process count": value}).processes(cpu_count=cpus) == expected


def test_processes_defaults_to_the_cpu_count(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert _system(**{"process count": 0.5}).processes() == 3
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert _system(**{"process count": 2.0}).processes() == 2


@pytest.mark.parametrize("cpus", [0, -1, 2.0, True])
def test_processes_rejects_a_bad_cpu_count(cpus):
    with pytest.raises(ValueError, match="cpu_count"):
        _system(**{"process count": 1.0}).processes(cpu_count=cpus)


@pytest.mark.parametrize("section", [None, {}])
def test_every_key_has_its_default(section):
    system = load_system(section)
    assert system.process_count == 0 and isinstance(system.process_count, int)
    assert system.processes(cpu_count=8) == 0
    assert system.pool_size is None
    assert system.multi_threaded is True
    assert system.ipc_chunk_size == 10000
    assert system.join_timeout == 30.0
    assert system.response_timeout == 600.0
    assert system.poll_timeout == 1800.0
    assert system == SystemConfig()


def test_attribute_names_are_accepted_too():
    by_name = load_system({"process_count": 4, "pool_size": 8, "poll_timeout": 5})
    by_alias = load_system({"process count": 4, "pool size": 8, "poll timeout secs": 5})
    assert by_name == by_alias == SystemConfig(process_count=4, pool_size=8, poll_timeout=5.0)
    assert SystemConfig.model_validate({"ipc chunk size": 7}).ipc_chunk_size == 7


def test_system_round_trips_through_its_yaml_names():
    system = _system(**{"process count": 1.5, "pool size": 3, "join timeout secs": 2.5})
    dumped = system.model_dump(by_alias=True)
    assert set(dumped) == {
        "process count",
        "pool size",
        "multi-threaded",
        "ipc chunk size",
        "join timeout secs",
        "response timeout secs",
        "poll timeout secs",
        "strict",
    }
    assert load_system(dumped) == system


def test_strict_is_on_by_default_and_reaches_every_purpose():
    assert SystemConfig().strict is True
    lenient = load_system({"strict": False})
    shares = purpose_resources(lenient, load_resources(None), {"training": 3, "validation": 2})
    assert all(resources.strict is False for resources in shares.values())
    with pytest.raises(ConfigError, match=r"system\.strict"):
        load_system({"strict": "no"})


def test_system_is_frozen():
    system = SystemConfig()
    with pytest.raises(ValidationError):
        system.pool_size = 3  # type: ignore[misc]


def test_pool_size_null_means_all_images():
    assert load_system(yaml.safe_load("pool size:")).pool_size is None


def test_multi_threaded_false_is_accepted(caplog):
    with caplog.at_level(logging.INFO, logger="digipath.data.system"):
        assert load_system({"multi-threaded": False}).multi_threaded is False
    assert "no effect" in caplog.text


@pytest.mark.parametrize(
    ("section", "key", "fragment"),
    [
        ({"pool size": -1}, "system.pool size", "got -1"),
        ({"pool size": 0}, "system.pool size", "integer >= 1"),
        ({"pool size": True}, "system.pool size", "a boolean"),
        ({"pool size": "16"}, "system.pool size", "got '16'"),
        ({"pool size": 2.5}, "system.pool size", "got 2.5"),
        ({"poll timeout secs": 0}, "system.poll timeout secs", "seconds > 0, got 0"),
        ({"poll timeout secs": -3.0}, "system.poll timeout secs", "got -3.0"),
        ({"poll timeout secs": math.inf}, "system.poll timeout secs", "finite"),
        ({"join timeout secs": "30"}, "system.join timeout secs", "got '30'"),
        ({"response timeout secs": False}, "system.response timeout secs", "a boolean"),
        ({"process count": -1}, "system.process count", "number >= 0"),
        ({"process count": -0.5}, "system.process count", "got -0.5"),
        ({"process count": True}, "system.process count", "a boolean"),
        ({"process count": "2"}, "system.process count", "got '2'"),
        ({"process count": math.nan}, "system.process count", "got nan"),
        ({"ipc chunk size": 0}, "system.ipc chunk size", "integer >= 1"),
        ({"multi-threaded": "yes"}, "system.multi-threaded", "true or false, got 'yes'"),
        ({"multi-threaded": 1}, "system.multi-threaded", "true or false"),
        ({"pool_size": -2}, "system.pool_size", "got -2"),
    ],
)
def test_system_errors_name_the_key_path(section, key, fragment):
    with pytest.raises(ConfigError) as caught:
        load_system(section, source="params.yaml")
    assert caught.value.key == key
    assert fragment in caught.value.reason
    assert caught.value.source == "params.yaml"
    assert str(caught.value).startswith(f"params.yaml: {key}: expected")


def test_a_single_bad_value_does_not_report_more_errors():
    with pytest.raises(ConfigError) as caught:
        load_system({"process count": True})
    assert "more error" not in caught.value.reason
    with pytest.raises(ConfigError) as caught:
        load_system({"process count": -1, "pool size": 0})
    assert caught.value.reason.endswith("(and 1 more error)")


def test_unknown_system_key_lists_the_valid_keys():
    with pytest.raises(ConfigError) as caught:
        load_system({"process count": 1, "processes": 2})
    assert caught.value.key == "system.processes"
    assert "unknown key" in caught.value.reason
    for name in ("process count", "pool size", "ipc chunk size", "poll timeout secs"):
        assert name in caught.value.reason


def test_a_yaml_name_and_its_attribute_name_together_are_an_error():
    with pytest.raises(ConfigError) as caught:
        load_system({"pool size": 2, "pool_size": 3})
    assert "'system.pool size'" in caught.value.reason
    assert "'system.pool_size'" in caught.value.reason


def test_system_must_be_a_mapping():
    with pytest.raises(ConfigError) as caught:
        load_system([1, 2], key="training.system")  # type: ignore[arg-type]
    assert caught.value.key == "training.system" and "mapping" in caught.value.reason


def test_a_custom_key_prefixes_the_error():
    with pytest.raises(ConfigError) as caught:
        load_system({"pool size": 0}, key="params.system")
    assert caught.value.key == "params.system.pool size"


# --------------------------------------------------------------------------------------------
# data.resources


def test_seed_names_and_explicit_names_give_the_same_config():
    ratios_a = {"training": 3.0, "validation": 1}
    ratios_b = {"training": 0.5}
    seed = load_resources({"workers": ratios_a, "samplers": ratios_b})
    explicit = load_resources({"processes": ratios_a, "open images": ratios_b})
    mixed = load_resources({"processes": ratios_a, "samplers": ratios_b})
    by_attribute = load_resources({"workers": ratios_a, "open_images": ratios_b})
    assert seed == explicit == mixed == by_attribute
    assert seed.processes == {"training": 3.0, "validation": 1.0}  # workers = processes
    assert seed.open_images == {"training": 0.5}  # samplers = open images
    assert ResourcesConfig.model_validate({"workers": ratios_a}).processes == seed.processes


@pytest.mark.parametrize(
    ("section", "keys"),
    [
        ({"workers": {}, "processes": {}}, ("data.resources.workers", "data.resources.processes")),
        (
            {"open images": {"a": 1}, "samplers": {"a": 1}},
            ("data.resources.open images", "data.resources.samplers"),
        ),
        (
            {"samplers": None, "open_images": None},
            ("data.resources.samplers", "data.resources.open_images"),
        ),
    ],
)
def test_a_seed_name_with_its_explicit_equivalent_is_an_error(section, keys):
    with pytest.raises(ConfigError) as caught:
        load_resources(section)
    for key in keys:
        assert repr(key) in str(caught.value)
    assert "give only one" in caught.value.reason


def test_missing_purposes_default_to_ratio_one():
    for section in (None, {}, {"workers": None, "samplers": None}):
        resources = load_resources(section)
        assert resources.processes == {} and resources.open_images == {}
        assert resources.process_ratios(["training", "validation"]) == {
            "training": 1.0,
            "validation": 1.0,
        }
    resources = _resources(workers={"training": 2.0}, samplers={"validation": 0})
    assert resources.process_ratios(["training", "validation"]) == {
        "training": 2.0,
        "validation": 1.0,
    }
    assert resources.open_image_ratios(["training", "validation"]) == {
        "training": 1.0,
        "validation": 0.0,
    }


def test_resources_round_trip_through_the_explicit_names():
    resources = _resources(workers={"training": 2.0}, samplers={"validation": 0.5})
    dumped = resources.model_dump(by_alias=True)
    assert dumped == {"processes": {"training": 2.0}, "open images": {"validation": 0.5}}
    assert load_resources(dumped) == resources


@pytest.mark.parametrize(
    ("section", "key", "fragment"),
    [
        ({"workers": {"training": -1}}, "data.resources.workers.training", "ratio >= 0, got -1"),
        ({"workers": {"training": True}}, "data.resources.workers.training", "a boolean"),
        ({"workers": {"training": "1"}}, "data.resources.workers.training", "got '1'"),
        ({"workers": {"training": math.nan}}, "data.resources.workers.training", "finite"),
        ({"samplers": {"validation": math.inf}}, "data.resources.samplers.validation", "inf"),
        ({"open images": {"x": -0.5}}, "data.resources.open images.x", "got -0.5"),
        ({"processes": {"x": None}}, "data.resources.processes.x", "got None"),
        ({"workers": [1.0, 2.0]}, "data.resources.workers", "mapping of purpose -> ratio"),
        ({"samplers": 1.0}, "data.resources.samplers", "got float 1.0"),
        ({"samplers": {1: 1.0}}, "data.resources.samplers.1", "purpose name"),
        ({"pool": {}}, "data.resources.pool", "unknown key"),
    ],
)
def test_resources_errors_name_the_key_path(section, key, fragment):
    with pytest.raises(ConfigError) as caught:
        load_resources(section, source="params.yaml")
    assert caught.value.key == key
    assert fragment in caught.value.reason
    assert caught.value.source == "params.yaml"


def test_unknown_resources_key_explains_the_valid_keys():
    with pytest.raises(ConfigError) as caught:
        load_resources({"threads": {}})
    for name in ("workers", "processes", "samplers", "open images"):
        assert name in caught.value.reason


def test_resources_must_be_a_mapping():
    with pytest.raises(ConfigError) as caught:
        load_resources("workers")  # type: ignore[arg-type]
    assert caught.value.key == "data.resources"


# --------------------------------------------------------------------------------------------
# purpose_resources


def _split(result: dict[str, PurposeResources]) -> dict[str, tuple[int, int]]:
    """Purpose -> (processes, pool size)."""
    return {purpose: (value.processes, value.pool_size) for purpose, value in result.items()}


def test_the_seed_example_splits_evenly():
    document = yaml.safe_load(SEED_BLOCK)
    system = load_system(document["system"])
    resources = load_resources(document["data"]["resources"])
    result = purpose_resources(system, resources, {"training": 20, "validation": 10}, cpu_count=2)
    assert _split(result) == {"training": (2, 8), "validation": (2, 8)}
    assert result["training"] == PurposeResources(
        processes=2,
        pool_size=8,
        ipc_chunk_size=10000,
        join_timeout=30.0,
        response_timeout=600.0,
        poll_timeout=1800.0,
    )


def test_worker_settings_are_copied_to_every_purpose():
    system = _system(
        **{"ipc chunk size": 5, "join timeout secs": 1, "response timeout secs": 2.5},
        **{"poll timeout secs": 9},
    )
    result = purpose_resources(system, _resources(), {"a": 1, "b": 2})
    for value in result.values():
        assert (value.ipc_chunk_size, value.join_timeout) == (5, 1.0)
        assert (value.response_timeout, value.poll_timeout) == (2.5, 9.0)


def test_ratios_split_processes_and_pool():
    system = _system(**{"process count": 4, "pool size": 8})
    resources = _resources(
        workers={"training": 1.0, "validation": 3.0}, samplers={"training": 3, "validation": 1}
    )
    result = purpose_resources(system, resources, {"training": 100, "validation": 100})
    # Processes 1:3 of 4, pool 3:1 of 8; validation's 3 processes are capped at its 2 images
    # and the cut-off one goes to training.
    assert _split(result) == {"training": (2, 6), "validation": (2, 2)}
    resources = _resources(workers={"training": 1, "validation": 3}, samplers={"validation": 3})
    result = purpose_resources(system, resources, {"training": 100, "validation": 100})
    assert _split(result) == {"training": (1, 2), "validation": (3, 6)}


def test_the_pool_is_capped_by_image_counts_and_redistributed(caplog):
    system = _system(**{"process count": 8, "pool size": 16})
    with caplog.at_level(logging.WARNING, logger="digipath.data.system"):
        result = purpose_resources(system, _resources(), {"training": 20, "validation": 3})
    # Pool 8/8, validation capped at 3 -> training 13; processes 4/4, validation capped at 3.
    assert _split(result) == {"training": (5, 13), "validation": (3, 3)}
    assert "'validation' would get 4 worker processes but has only 3 open images" in caplog.text


def test_pool_none_opens_all_images():
    system = _system(**{"process count": 1})
    resources = _resources(workers={"training": 3.0, "validation": 1.0})
    result = purpose_resources(system, resources, {"training": 5, "validation": 2})
    # One process for two purposes: by ratio 3:1 training gets it; validation samples in the
    # calling process.
    assert _split(result) == {"training": (1, 5), "validation": (0, 2)}


def test_fewer_processes_than_purposes():
    system = _system(**{"process count": 2, "pool size": 9})
    counts = {"training": 10, "validation": 10, "test": 10}
    result = purpose_resources(system, _resources(), counts)
    assert [value.pool_size for value in result.values()] == [3, 3, 3]
    processes = [value.processes for value in result.values()]
    assert sorted(processes) == [0, 1, 1]
    assert purpose_resources(system, _resources(), counts) == result  # deterministic


def test_zero_processes_sample_in_the_calling_process():
    result = purpose_resources(SystemConfig(), _resources(), {"training": 4, "validation": 2})
    assert _split(result) == {"training": (0, 4), "validation": (0, 2)}
    system = _system(**{"process count": 0.0, "pool size": 2})
    assert _split(purpose_resources(system, _resources(), {"a": 4}, cpu_count=16)) == {"a": (0, 2)}


def test_a_float_process_count_multiplies_the_cpu_count():
    system = _system(**{"process count": 1.5, "pool size": 100})
    result = purpose_resources(system, _resources(), {"training": 50, "validation": 50}, 4)
    assert _split(result) == {"training": (3, 50), "validation": (3, 50)}


def test_more_processes_than_open_images_are_capped(caplog):
    system = _system(**{"process count": 10, "pool size": 4})
    with caplog.at_level(logging.WARNING, logger="digipath.data.system"):
        result = purpose_resources(system, _resources(), {"training": 30, "validation": 30})
    assert _split(result) == {"training": (2, 2), "validation": (2, 2)}
    assert "would idle" in caplog.text


def test_a_pool_larger_than_the_images_warns(caplog):
    system = _system(**{"pool size": 50})
    with caplog.at_level(logging.WARNING, logger="digipath.data.system"):
        result = purpose_resources(system, _resources(), {"training": 6, "validation": 4})
    assert _split(result) == {"training": (0, 6), "validation": (0, 4)}
    assert "pool size 50 exceeds the number of images (10)" in caplog.text


def test_a_pool_smaller_than_the_purposes_opens_one_image_each(caplog):
    system = _system(**{"process count": 3, "pool size": 1})
    with caplog.at_level(logging.WARNING, logger="digipath.data.system"):
        result = purpose_resources(system, _resources(), {"training": 6, "validation": 4})
    assert _split(result) == {"training": (1, 1), "validation": (1, 1)}
    assert "one image per purpose" in caplog.text


def test_a_purpose_without_images_gets_nothing():
    system = _system(**{"process count": 4, "pool size": 6})
    result = purpose_resources(system, _resources(), {"training": 10, "validation": 0})
    assert _split(result) == {"training": (4, 6), "validation": (0, 0)}


def test_zero_ratios():
    system = _system(**{"process count": 4, "pool size": 6})
    resources = _resources(workers={"validation": 0}, samplers={"validation": 0})
    result = purpose_resources(system, resources, {"training": 10, "validation": 10})
    # No processes for a ratio 0; one open image (the minimum) for a ratio 0.
    assert _split(result) == {"training": (4, 5), "validation": (0, 1)}
    # Ratio 0 takes more open images only when the others are full.
    result = purpose_resources(system, resources, {"training": 2, "validation": 10})
    assert _split(result) == {"training": (2, 2), "validation": (0, 4)}
    # All open-image ratios 0: the pool is shared equally.
    resources = _resources(samplers={"training": 0, "validation": 0})
    result = purpose_resources(system, resources, {"training": 10, "validation": 10})
    assert _split(result) == {"training": (2, 3), "validation": (2, 3)}


def test_ratios_of_other_purposes_are_ignored():
    resources = _resources(workers={"test": 5.0}, samplers={"test": 0.0})
    result = purpose_resources(_system(**{"process count": 2}), resources, {"training": 3})
    assert _split(result) == {"training": (2, 3)}


def test_no_purposes():
    assert purpose_resources(_system(**{"process count": 2}), _resources(), {}) == {}


@pytest.mark.parametrize("count", [-1, 1.5, True, "3"])
def test_bad_image_counts_are_rejected(count):
    with pytest.raises(ValueError, match="image count of 'training'"):
        purpose_resources(SystemConfig(), _resources(), {"training": count})


@settings(max_examples=300, deadline=None)
@given(
    counts=st.dictionaries(
        st.sampled_from(["training", "validation", "test", "extra", "more"]),
        st.integers(0, 40),
        min_size=1,
        max_size=5,
    ),
    workers=st.dictionaries(
        st.sampled_from(["training", "validation", "test", "extra"]), st.floats(0, 10)
    ),
    samplers=st.dictionaries(
        st.sampled_from(["training", "validation", "test", "extra"]), st.floats(0, 10)
    ),
    pool_size=st.none() | st.integers(1, 150),
    process_count=st.integers(0, 24) | st.floats(0, 4),
    cpu_count=st.integers(1, 32),
)
def test_split_properties(counts, workers, samplers, pool_size, process_count, cpu_count):
    system = SystemConfig(process_count=process_count, pool_size=pool_size)
    resources = _resources(workers=workers, samplers=samplers)
    result = purpose_resources(system, resources, counts, cpu_count=cpu_count)
    assert list(result) == list(counts)
    total = sum(counts.values())
    active = [purpose for purpose, count in counts.items() if count > 0]

    # Pools: one image at least and all of its images at most per purpose with images; they sum
    # to min(total, pool size), raised to one per purpose where the pool is smaller.
    pools = {purpose: value.pool_size for purpose, value in result.items()}
    requested = total if pool_size is None else min(total, pool_size)
    assert sum(pools.values()) == (max(requested, len(active)) if active else 0)
    for purpose, count in counts.items():
        assert (1 if count else 0) <= pools[purpose] <= count

    # Processes: never more than the pool; ratio 0 or no images gives none; they sum to P,
    # or to the open images of the purposes that take processes when those are fewer.
    processes_total = system.processes(cpu_count)
    ratios = resources.process_ratios(counts)
    eligible = [purpose for purpose in active if ratios[purpose] > 0]
    processes = {purpose: value.processes for purpose, value in result.items()}
    assert sum(processes.values()) <= processes_total
    assert sum(processes.values()) == min(
        processes_total, sum(pools[purpose] for purpose in eligible)
    )
    for purpose in counts:
        assert 0 <= processes[purpose] <= pools[purpose]
        if purpose not in eligible:
            assert processes[purpose] == 0
        elif processes_total >= len(eligible):
            assert processes[purpose] >= 1
    assert purpose_resources(system, resources, counts, cpu_count=cpu_count) == result
