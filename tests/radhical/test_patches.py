"""RADHicaL level-wise patch databases from generated slides."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from digipath.data.patch_database import INDEX, PatchDatabase
from digipath.errors import ConfigError, FileError, SourceError
from digipath.io import ImageReader, ImageWriter
from digipath.radhical.patches import extract_level_patches, level_folder
from digipath.radhical.targets import (
    BACKGROUND_PART,
    EDGE_PART,
    background_heuristic,
    edge_ring,
    finest_parts,
    level_classes,
    level_fraction,
    nearest_resize,
)
from digipath.synthetic import nuclei_slide, write_nuclei_slide

SPACINGS = (0.25, 0.5, 1.0, 2.5)  # the 768-px slides have levels 0.25, 0.5, 1: 2.5 is resampled
CAPS = {"nucleus": 30, "edge": 30, "background": 12, "negative": 20, "mixed": 20, "positive": 20}
NAMES = ("P1_a", "P2_a", "P3_a", "P3_b")


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("radhical_slides")
    result = {}
    for seed, name in enumerate(NAMES):
        slide = nuclei_slide((768, 768), seed=seed, clusters=3, cluster_fraction=0.15)
        image, mask = write_nuclei_slide(folder, name, slide)
        result[str(image)] = (slide, mask)
    return result


def _items(slides) -> list[tuple[str, Path]]:
    return [(image, mask) for image, (_, mask) in slides.items()]


@pytest.fixture(scope="module")
def whole(slides, tmp_path_factory):
    out = tmp_path_factory.mktemp("radhical_whole")
    calls = []
    summary = extract_level_patches(
        _items(slides),
        out,
        SPACINGS,
        caps=CAPS,
        seed=5,
        progress=lambda done, total: calls.append((done, total)),
    )
    return out, summary, calls


@pytest.fixture(scope="module")
def tiled(slides, tmp_path_factory):
    out = tmp_path_factory.mktemp("radhical_tiled")
    summary = extract_level_patches(
        _items(slides), out, SPACINGS, caps=CAPS, seed=5, max_pixels=100_000, tile_size=256
    )
    return out, summary


def _databases(out: Path) -> list[PatchDatabase]:
    return [PatchDatabase(out / level_folder(k, s)) for k, s in enumerate(SPACINGS)]


def _everything(database: PatchDatabase, purpose: str):
    indices = np.arange(database.count(purpose))
    return (
        database.patches(purpose, indices),
        database.labels(purpose),
        database.origins(purpose, indices),
    )


def test_one_database_per_level(whole):
    out, summary, calls = whole
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "level_0_0.25um",
        "level_1_0.5um",
        "level_2_1um",
        "level_3_2.5um",
    ]
    databases = _databases(out)
    assert databases[0].classes == ["negative", "nucleus"]
    for k, database in enumerate(databases):
        assert database.spacing == SPACINGS[k]
        assert database.patch_shape == (32, 32)
        if k:
            assert database.classes == ["negative", "mixed", "positive"]
        metadata = database.index["metadata"]
        assert metadata["caps"] == CAPS and metadata["rotations"] == [0, 90]
        assert metadata["seed"] == 5 and metadata["level"] == k
        assert metadata["patient split"] == summary.split
        assert database.mean_image() is not None
        level = summary.levels[k]
        for purpose in database.purposes:
            counts = database.label_counts(purpose)
            assert level.purposes[purpose].classes == {
                name: counts[label] for label, name in enumerate(database.classes)
            }
            assert level.purposes[purpose].images == len(database.sources(purpose))
    for k in range(3):  # every class is found at the three finer levels
        totals = sum(
            np.array(list(p.classes.values())) for p in summary.levels[k].purposes.values()
        )
        assert (totals > 0).all()
    assert calls[-1] == (len(NAMES) * len(SPACINGS),) * 2
    assert [done for done, _ in calls] == list(range(1, len(NAMES) * len(SPACINGS) + 1))


def test_counts_within_caps(whole):
    out, _, _ = whole
    for k, database in enumerate(_databases(out)):
        caps = (
            {0: CAPS["edge"] + CAPS["background"], 1: CAPS["nucleus"]}
            if k == 0
            else {0: CAPS["negative"], 1: CAPS["mixed"], 2: CAPS["positive"]}
        )
        for purpose in database.purposes:
            _, labels, origins = _everything(database, purpose)
            for source in np.unique(origins[:, 0]):
                for label, cap in caps.items():
                    chosen = (origins[:, 0] == source) & (labels == label)
                    positions = {tuple(p) for p in origins[chosen, 1:]}
                    assert chosen.sum() == 2 * len(positions)  # one patch per rotation
                    assert len(positions) <= cap


def test_labels_match_the_targets_at_the_patch_centres(whole, slides):
    out, _, _ = whole
    databases = _databases(out)
    for image_path, (slide, _) in slides.items():
        mask = slide.mask
        with ImageReader(image_path) as reader:
            image = reader.content(0.25)
            background = background_heuristic(image)  # the coarser levels keep the ring
            parts = finest_parts(mask, background)
            maps = [None]
            for spacing in SPACINGS[1:]:
                shape = reader.shape(spacing)
                factor = reader.refine(spacing) / 0.25
                fraction = level_fraction(mask, factor, shape)
                maps.append(level_classes(fraction, nearest_resize(background, factor, shape)))
        for k, database in enumerate(databases):
            for purpose in database.purposes:
                if image_path not in database.sources(purpose):
                    continue
                source = database.sources(purpose).index(image_path)
                _, labels, origins = _everything(database, purpose)
                mine = origins[:, 0] == source
                rows, cols = origins[mine, 1], origins[mine, 2]
                assert mine.any()
                if k == 0:
                    np.testing.assert_array_equal(labels[mine], mask[rows, cols])
                    negatives = parts[rows, cols][labels[mine] == 0]
                    assert np.isin(negatives, [EDGE_PART, BACKGROUND_PART]).all()
                    assert (negatives == BACKGROUND_PART).any() and (negatives == EDGE_PART).any()
                else:
                    np.testing.assert_array_equal(labels[mine], maps[k][rows, cols])
                shape = (768, 768) if k == 0 else maps[k].shape
                assert rows.min() >= 32 and rows.max() <= shape[0] - 33
                assert cols.min() >= 32 and cols.max() <= shape[1] - 33


def test_no_patient_in_two_purposes(whole):
    out, summary, _ = whole
    assert set(summary.split) == {"training", "validation"}
    assert not set(summary.split["training"]) & set(summary.split["validation"])
    together = [p for p, images in summary.images.items() if any("P3_" in i for i in images)]
    assert len(together) == 1  # both images of P3 in one purpose
    for database in _databases(out):
        seen = [set(database.patients(p)) for p in database.purposes]
        assert sum(len(s) for s in seen) == len(set().union(*seen))


def test_patches_are_the_image_and_its_rotations(whole):
    out, _, _ = whole
    for k, database in enumerate(_databases(out)):
        purpose = database.purposes[0]
        patches, _, origins = _everything(database, purpose)
        sources = database.sources(purpose)
        for n in range(0, len(patches), 37 * 2):  # rotations 0, 90 follow each other
            source, row, col = origins[n]
            np.testing.assert_array_equal(origins[n + 1], origins[n])
            with ImageReader(sources[source]) as reader:
                expected = reader.read(SPACINGS[k], row - 16, col - 16, 32, 32)
            np.testing.assert_array_equal(patches[n], expected)
            np.testing.assert_array_equal(patches[n + 1], np.rot90(patches[n]))


def test_tile_path_equals_whole_image_path(whole, tiled):
    for a, b in zip(_databases(whole[0]), _databases(tiled[0]), strict=True):
        assert a.purposes == b.purposes
        for purpose in a.purposes:
            assert a.sources(purpose) == b.sources(purpose)
            for x, y in zip(_everything(a, purpose), _everything(b, purpose), strict=True):
                np.testing.assert_array_equal(x, y)
    assert whole[1].rows() == [
        {**row, "folder": row["folder"].replace(str(tiled[0]), str(whole[0]))}
        for row in tiled[1].rows()
    ]


def test_other_background_masks_and_rotations(slides, tmp_path):
    items, backgrounds = [], []
    for image, (slide, mask) in list(slides.items())[:2]:
        tissue = slide.tissue[4::8, 4::8].astype(np.uint8)  # a tissue mask at 2 µm/px
        path = tmp_path / f"{Path(image).stem}_tissue.tif"
        with ImageWriter(
            path, tissue.shape, spacing=2.0, channels=1, compression="lzw", interpolation="nearest"
        ) as writer:
            writer.fill(tissue[:, :, None])
        items.append((image, mask))
        backgrounds.append(path)
    runs = []
    for limit in (None, 50_000):
        out = tmp_path / f"out_{limit}"
        summary = extract_level_patches(
            items,
            out,
            (0.25, 1.0),
            caps=CAPS,
            background=backgrounds,
            rotations=(0, 90, 45),
            purposes={"training": 1.0},
            seed=2,
            **({"max_pixels": limit, "tile_size": 300} if limit else {}),
        )
        runs.append(out)
        assert summary.levels[0].purposes["training"].images == 2
    finest = PatchDatabase(runs[0] / "level_0_0.25um")
    assert finest.index["metadata"]["background"] == "masks"
    patches, labels, origins = _everything(finest, "training")
    sources = finest.sources("training")
    for n in range(0, len(patches), 3 * 11):  # rotations 0, 90, 45 follow each other
        np.testing.assert_array_equal(patches[n + 1], np.rot90(patches[n]))
        source, row, col = origins[n]
        with ImageReader(sources[source]) as reader:
            window = reader.read(0.25, row - 32, col - 32, 64, 64)
        matrix = cv2.getRotationMatrix2D((31.5, 31.5), 45.0, 1.0)
        rotated = cv2.warpAffine(
            window, matrix, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        np.testing.assert_array_equal(patches[n + 2], rotated[16:48, 16:48])
        np.testing.assert_array_equal(patches[n], window[16:48, 16:48])
    for source, image in enumerate(sources):
        slide = slides[image][0]
        chosen = (origins[:, 0] == source) & (labels == 0)
        rows, cols = origins[chosen, 1], origins[chosen, 2]
        tissue = np.kron(slide.tissue[4::8, 4::8], np.ones((8, 8), bool))  # as read at 0.25
        ring = edge_ring(slide.mask)
        assert (tissue[rows, cols] | ring[rows, cols]).all()
        assert (slide.mask[rows, cols] == 0).all()
    for a, b in zip(_databases_of(runs[0]), _databases_of(runs[1]), strict=True):
        for x, y in zip(_everything(a, "training"), _everything(b, "training"), strict=True):
            np.testing.assert_array_equal(x, y)


def _databases_of(out: Path) -> list[PatchDatabase]:
    return [PatchDatabase(p) for p in sorted(out.glob("level_*"))]


def test_seed_and_item_order(slides, whole, tmp_path):
    items = _items(slides)
    other = extract_level_patches(
        items[::-1], tmp_path / "reversed", SPACINGS[:2], caps=CAPS, seed=5
    )
    assert other.split == whole[1].split
    for k in range(2):
        a = PatchDatabase(whole[0] / level_folder(k, SPACINGS[k]))
        b = PatchDatabase(tmp_path / "reversed" / level_folder(k, SPACINGS[k]))
        for purpose in a.purposes:
            for image in a.sources(purpose):
                found = []
                for database in (a, b):
                    _, labels, origins = _everything(database, purpose)
                    mine = origins[:, 0] == database.sources(purpose).index(image)
                    found.append(
                        sorted(map(tuple, np.column_stack([labels[mine], origins[mine, 1:]])))
                    )
                assert found[0] == found[1]
    reseeded = extract_level_patches(items, tmp_path / "seed6", SPACINGS[:1], caps=CAPS, seed=6)
    assert reseeded.levels[0].purposes  # drawn again: other positions
    a = PatchDatabase(whole[0] / "level_0_0.25um")
    b = PatchDatabase(tmp_path / "seed6" / "level_0_0.25um")
    assert not all(
        np.array_equal(_everything(a, p)[2], _everything(b, p)[2])
        for p in a.purposes
        if p in b.purposes
    )


def test_bad_input_is_named(slides, tmp_path):
    items = _items(slides)
    with pytest.raises(ConfigError, match=r"caps\.cells"):
        extract_level_patches(items, tmp_path / "a", caps={"cells": 3})
    with pytest.raises(ConfigError, match="spacings"):
        extract_level_patches(items, tmp_path / "a", (0.5, 0.25))
    with pytest.raises(ConfigError, match="background"):
        extract_level_patches(items, tmp_path / "a", background=["x.tif"])
    small = tmp_path / "small_mask.tif"
    with ImageWriter(small, (512, 512), spacing=0.25, channels=1, compression="lzw") as writer:
        writer.fill(np.zeros((512, 512, 1), np.uint8))
    with pytest.raises(SourceError, match=r"small_mask\.tif"):
        extract_level_patches([(items[0][0], small)], tmp_path / "b", (0.25, 1.0))
    labelled = tmp_path / "labels.tif"
    with ImageWriter(labelled, (768, 768), spacing=0.25, channels=1, compression="lzw") as writer:
        writer.fill(np.full((768, 768, 1), 3, np.uint8))
    with pytest.raises(SourceError, match=r"labels\.tif.*binary mask"):
        extract_level_patches([(items[0][0], labelled)], tmp_path / "c", (0.25, 1.0))
    extract_level_patches(items[:1], tmp_path / "d", (0.25,), caps=CAPS, purposes={"training": 1})
    with pytest.raises(FileError, match="overwrite"):
        extract_level_patches(items[:1], tmp_path / "d", (0.25,), caps=CAPS)
    again = extract_level_patches(items[:2], tmp_path / "d", (0.25,), caps=CAPS, overwrite=True)
    assert sum(p.images for p in again.levels[0].purposes.values()) == 2


def test_interrupted_and_failing_runs(slides, tmp_path):
    items = _items(slides)

    def stop(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_level_patches(items, tmp_path / "out", SPACINGS, caps=CAPS, progress=stop)
    for k, spacing in enumerate(SPACINGS):
        folder = tmp_path / "out" / level_folder(k, spacing)
        assert not (folder / INDEX).exists() and not list(folder.glob("*.npy"))
    broken = [*items[:2], (str(tmp_path / "P9_missing.tif"), items[0][1])]
    summary = extract_level_patches(
        broken, tmp_path / "skip", (0.25, 1.0), caps=CAPS, skip_failures=True
    )
    assert [Path(image).name for image, _ in summary.failures] == ["P9_missing.tif"]
    assert "no such file" in summary.failures[0][1]
    assert sum(p.images for p in summary.levels[1].purposes.values()) == 2
    with pytest.raises(FileNotFoundError):
        extract_level_patches(broken, tmp_path / "stop", (0.25,), caps=CAPS)
    assert not (tmp_path / "stop" / "level_0_0.25um" / INDEX).exists()
