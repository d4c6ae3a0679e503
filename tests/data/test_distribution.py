"""Tests of digipath.data.distribution.distribute_population."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from digipath.data.distribution import distribute_population


@given(
    population=st.integers(0, 10_000),
    ratios=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=12),
    seed=st.integers(0, 2**32 - 1),
)
def test_shares_sum_to_the_population_and_stay_near_the_ratios(population, ratios, seed):
    if sum(ratios) <= 0:
        ratios = [1.0] * len(ratios)
    shares = distribute_population(population, ratios, seed)
    assert sum(shares) == population and all(s >= 0 for s in shares)
    total = sum(ratios)
    for share, ratio in zip(shares, ratios, strict=True):
        # Rounding moves a share by at most 1 from its exact value, and fixing the total by at
        # most the number of shares' half-units.
        assert abs(share - ratio / total * population) <= len(ratios) / 2 + 1


@given(
    population=st.integers(0, 500),
    data=st.data(),
    seed=st.integers(0, 1000),
)
def test_bounds_are_respected(population, data, seed):
    count = data.draw(st.integers(1, 8))
    ratios = data.draw(st.lists(st.floats(0.01, 5), min_size=count, max_size=count))
    low = data.draw(st.lists(st.integers(0, 20), min_size=count, max_size=count))
    high = [lo + data.draw(st.integers(0, 200)) for lo in low]
    if not sum(low) <= population <= sum(high):
        with pytest.raises(ValueError, match="cannot split"):
            distribute_population(population, ratios, seed, minimum=low, maximum=high)
        return
    shares = distribute_population(population, ratios, seed, minimum=low, maximum=high)
    assert sum(shares) == population
    assert all(lo <= s <= hi for s, lo, hi in zip(shares, low, high, strict=True))


def test_mapping_in_mapping_out_and_exact_ratios():
    assert distribute_population(100, {"a": 0.5, "b": 0.3, "c": 0.2}, 0) == {
        "a": 50,
        "b": 30,
        "c": 20,
    }
    assert distribute_population(10, [1, 1], 0) == [5, 5]
    assert distribute_population(0, {"x": 1.0}) == {"x": 0}


def test_random_tie_breaking_is_seeded_and_fair():
    outcomes = [tuple(distribute_population(10, [1, 1, 1], seed)) for seed in range(300)]
    assert outcomes == [tuple(distribute_population(10, [1, 1, 1], seed)) for seed in range(300)]
    # 10 / 3: every share gets 3 and one of them, chosen at random, the tenth unit.
    extra = np.array([[s == 4 for s in outcome] for outcome in outcomes]).sum(axis=0)
    assert (extra > 60).all()


def test_minimum_gives_every_share_one():
    assert distribute_population(3, [0.98, 0.01, 0.01], 0, minimum=1) == [1, 1, 1]


def test_invalid_input():
    with pytest.raises(ValueError, match=">= 0"):
        distribute_population(5, [1, -1])
    with pytest.raises(ValueError, match="all ratios are zero"):
        distribute_population(5, [0, 0])
    with pytest.raises(ValueError, match="integer"):
        distribute_population(2.5, [1])
    with pytest.raises(ValueError, match="population"):
        distribute_population(-1, [1])


def test_zero_ratios_get_nothing_extra():
    for seed in range(50):
        shares = distribute_population(7, {"train": 1, "validation": 1, "test": 0}, seed)
        assert shares["test"] == 0 and sum(shares.values()) == 7
    assert distribute_population(3, [1, 0], 0, maximum=[1, 5]) == [1, 2]
