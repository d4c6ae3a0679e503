"""Tests of digipath.data.batch_sampler.BatchSampler (in-process)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats as scipy_stats

from digipath.data.batch_sampler import BatchSampler
from digipath.errors import FailedSourceSelectionError, SourceError
from digipath.io import ImageWriter


@dataclass(frozen=True, order=True)
class Item:
    image: str
    mask: str = ""
    stat: str = ""
    labels: tuple[int, ...] = ()


def make_item(folder, name: str, labels: tuple[int, ...], seed: int) -> Item:
    """A 256 x 256 image at 1 µm/px and its mask at 2 µm/px with blocks of ``labels``."""
    rng = np.random.default_rng(seed)
    image = folder / f"{name}.tif"
    with ImageWriter(image, (256, 256), spacing=1.0, compression="lzw") as writer:
        writer.fill(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    mask = np.zeros((128, 128), np.uint8)
    for k, label in enumerate(labels):
        mask[16 * k : 16 * k + 12, 10 : 10 + 20 * (k + 1)] = label
    path = folder / f"{name}-mask.tif"
    with ImageWriter(path, (128, 128), spacing=2.0, channels=1, compression="lzw",
                     interpolation="nearest") as writer:  # fmt: skip
        writer.fill(mask[:, :, None])
    return Item(str(image), str(path), str(folder / f"{name}.stat"), tuple(labels))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    return {
        "tumour": [
            make_item(folder, "t1", (1, 2), 1),
            make_item(folder, "t2", (1,), 2),
            make_item(folder, "t3", (2, 3), 3),
        ],
        "normal": [make_item(folder, "n1", (1,), 4), make_item(folder, "n2", (3,), 5)],
    }


def sampler(items, **options) -> BatchSampler:
    defaults = dict(
        label_ratios={1: 0.5, 2: 0.3, 3: 0.2},
        patch_shapes={2.0: (8, 8), 1.0: (16, 16)},
        mask_spacing=2.0,
        rng=0,
    )
    defaults.update(options)
    return BatchSampler(items, **defaults)


def test_label_frequencies_match_the_ratios(items):
    batches = sampler(items)
    batches.step()
    observed = np.zeros(4)
    for _ in range(20):
        batch = batches.batch(50)
        assert batch.patches[2.0].shape == (50, 8, 8, 3)
        assert batch.patches[1.0].shape == (50, 16, 16, 3)
        observed += np.bincount(batch.labels, minlength=4)
    expected = np.array([0, 0.5, 0.3, 0.2]) * observed.sum()
    assert scipy_stats.chisquare(observed[1:], expected[1:]).pvalue > 0.01


def test_central_labels_come_from_the_mask(items):
    batches = sampler(items, label_map={1: 0, 2: 1, 3: 2})
    batch = batches.batch(40)
    assert np.array_equal(batch.labels, batch.mask_values - 1)
    opened = batches.open_sources
    for source_index, value in zip(batch.sources, batch.mask_values, strict=True):
        assert value in opened[source_index].labels


def test_pool_size_and_category_ratios(items):
    batches = sampler(items, pool_size=2, category_ratios={"tumour": 1, "normal": 1})
    for _ in range(10):
        chosen = batches.select()
        assert len(chosen) == 2
        assert {("t" in s.image.split("/")[-1][:1]) for s in chosen} == {True, False}
    batches.step()
    first = batches.open_sources
    batches.step()
    assert len(batches.open_sources) == 2 and first  # re-selection keeps the pool size


def test_strict_selection_names_the_missing_labels(items):
    only_normal = {"normal": [items["normal"][0]]}
    with pytest.raises(FailedSourceSelectionError) as caught:
        sampler(only_normal, strict_selection=True).step()
    assert caught.value.labels == [2, 3]
    relaxed = sampler(only_normal)
    batch = relaxed.batch(10)
    assert (batch.mask_values == 1).all()  # renormalised to the labels available


def test_missing_files_are_reported(items, tmp_path):
    with pytest.raises(SourceError, match="image file not found"):
        sampler({"x": [Item(str(tmp_path / "none.tif"), labels=(1,))]})
    with pytest.raises(SourceError, match="neither the mask"):
        sampler({"x": [Item(items["normal"][0].image, labels=(1,))]})


def test_a_declared_label_without_pixels_is_an_error(items):
    wrong = Item(items["normal"][0].image, items["normal"][0].mask, "", (1, 2))
    with pytest.raises(SourceError, match="declares labels"):
        sampler({"x": [wrong]}).step()


def test_seeded_runs_repeat(items):
    first = sampler(items, rng=3).batch(30)
    second = sampler(items, rng=3).batch(30)
    assert np.array_equal(first.patches[1.0], second.patches[1.0])
