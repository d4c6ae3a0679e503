"""Regions to compute, and the region pass against apply_network."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from digipath.radhical.sparse import compute_regions


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 150), st.integers(1, 150)),
    density=st.floats(0, 0.2),
    cell=st.sampled_from([4, 8, 16]),
    max_size=st.sampled_from([16, 32, 64]),
    seed=st.integers(0, 2**16),
)
def test_regions_cover_every_pixel_once_within_blocks(shape, density, cell, max_size, seed):
    rng = np.random.default_rng(seed)
    compute = rng.random(shape) < density
    regions = compute_regions(compute, cell, max_size)
    covered = np.zeros(shape, np.int32)
    width = max(1, max_size // cell) * cell
    for top, bottom, left, right in regions:
        assert 0 <= top < bottom <= shape[0] and 0 <= left < right <= shape[1]
        assert bottom - top <= width and right - left <= width
        assert left // width == (right - 1) // width  # never across a block of columns
        assert compute[top:bottom, left:right].any()
        covered[top:bottom, left:right] += 1
    assert covered.max(initial=0) <= 1  # disjoint
    assert (covered[compute] == 1).all()  # every compute pixel


def test_blobs_give_few_regions():
    compute = np.zeros((256, 256), bool)
    compute[10:60, 20:90] = True  # one blob: one region, its bounding box
    compute[200:210, 200:205] = True
    assert compute_regions(compute, 32, 512) == [(10, 60, 20, 90), (200, 210, 200, 205)]
    assert compute_regions(np.zeros((5, 5), bool)) == []
