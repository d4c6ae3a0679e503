"""HoVer-Net training data: patch sets, augmentation, targets after augmentation, batches."""

from __future__ import annotations

import numpy as np
import pytest

from digipath.nuclei.dataset import (
    HoVerNetBatchSource,
    NucleusPatchSet,
    augment_sample,
    build_patch_set,
    geometric_augment,
    hovernet_colour_jitter,
    read_tile,
)
from digipath.nuclei.io import NucleiError
from digipath.nuclei.targets import (
    HOVERNET_GEOMETRY,
    center_crop,
    extract_patches,
    hovernet_targets,
    hv_maps,
)


@pytest.fixture(scope="module")
def tiles(test_data):
    folder = test_data / "nuclei" / "cellseg_models"
    pairs = [(folder / f"patch{n}.png", folder / f"patch{n}.mat") for n in (1, 2)]
    for image, annotation in pairs:
        if not image.exists() or not annotation.exists():
            pytest.fail(f"{image} or {annotation} missing from the test data")
    return pairs


@pytest.fixture(scope="module")
def small_set(tiles, tmp_path_factory):
    return build_patch_set(tiles, tmp_path_factory.mktemp("small"), window=160, step=96)


@pytest.fixture(scope="module")
def full_set(tiles, tmp_path_factory):
    """The original's geometry: 540 px windows every 164 px, mirror padded."""
    return build_patch_set(tiles[:1], tmp_path_factory.mktemp("full"))


def _dihedral(array: np.ndarray) -> list[np.ndarray]:
    out = []
    for flip in (False, True):
        base = array[:, ::-1] if flip else array
        for k in range(4):
            out.append(np.rot90(base, k, axes=(0, 1)))
            out.append(np.rot90(base[::-1], k, axes=(0, 1)))
    return out


# --------------------------------------------------------------------------------------------
# Patch sets


def test_patch_set_matches_extract_patches(tiles, small_set):
    image, maps = read_tile(tiles[0])
    assert image.dtype == np.uint8 and image.shape == (*maps.shape, 3)
    expected = extract_patches(
        np.dstack([image.astype(np.int64), maps.instances, maps.types]), 160, 96, "mirror"
    )
    first = small_set.origins[:, 0] == 0
    assert first.sum() == len(expected)
    np.testing.assert_array_equal(small_set.origins[first, 1:], expected.origins)
    for index in (0, len(expected) // 2, len(expected) - 1):
        patch_image, patch_inst, patch_type = small_set.get(index)
        assert patch_image.shape == (160, 160, 3) and patch_inst.dtype == np.int32
        np.testing.assert_array_equal(patch_image, expected.patches[index, ..., :3])
        np.testing.assert_array_equal(patch_inst, expected.patches[index, ..., 3])
        np.testing.assert_array_equal(patch_type, expected.patches[index, ..., 4])
    assert small_set.has_types and small_set.types == int(maps.types.max()) + 1
    reopened = NucleusPatchSet(small_set.folder)
    assert len(reopened) == len(small_set) and reopened.window == (160, 160)
    assert reopened.tiles == [str(tiles[0][1]), str(tiles[1][1])]


def test_patch_set_errors(tiles, small_set, tmp_path):
    with pytest.raises(NucleiError, match="exists already"):
        build_patch_set(tiles, small_set.folder, window=160, step=96)
    with pytest.raises(NucleiError, match="no patch set index"):
        NucleusPatchSet(tmp_path)
    image = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(NucleiError, match=r"is \(100, 100\) px but its annotation"):
        build_patch_set([(image, tiles[0][1])], tmp_path / "bad")
    with pytest.raises(NucleiError, match="holds no image"):
        build_patch_set([tiles[0][1]], tmp_path / "bad2")


def test_type_info_sets_the_type_count(tiles, tmp_path):
    info = {str(k): [f"class {k}", [k * 20, 0, 0]] for k in range(8)}
    built = build_patch_set(tiles[:1], tmp_path, window=256, step=256, type_info=info)
    assert built.types == 8 and built.type_info == info
    few = {str(k): [f"class {k}", [k * 20, 0, 0]] for k in range(2)}
    with pytest.raises(NucleiError, match="names 2 types"):
        build_patch_set(tiles[:1], tmp_path / "few", window=256, step=256, type_info=few)


# --------------------------------------------------------------------------------------------
# Augmentation


def test_geometric_augment_moves_image_and_instances_together(small_set):
    _, instances, types = small_set.get(3)
    # colour each nucleus by its id: after augmentation every pixel keeps its id's colour
    ids = np.unique(instances)
    palette = np.random.default_rng(0).integers(0, 256, size=(int(ids.max()) + 1, 3))
    palette = palette.astype(np.uint8)
    coded = palette[instances]
    transforms = set()
    for seed in range(12):
        out_image, out_inst, out_types = geometric_augment(
            [coded, instances, types], np.random.default_rng(seed)
        )
        np.testing.assert_array_equal(out_image, palette[out_inst])
        candidates = [i for i, c in enumerate(_dihedral(instances)) if np.array_equal(c, out_inst)]
        assert candidates, "not a flip / 90-degree rotation of the instances"
        assert any(np.array_equal(_dihedral(types)[i], out_types) for i in candidates)
        transforms.add(candidates[0])
    assert len(transforms) > 2  # the transforms vary with the draw


def test_augmented_sample_keeps_nuclei_under_their_colour(small_set):
    _, instances, _ = small_set.get(5)
    ids = np.unique(instances)
    palette = np.random.default_rng(1).integers(0, 256, size=(int(ids.max()) + 1, 3))
    coded = palette.astype(np.uint8)[instances]
    for seed in range(4):
        out, targets = augment_sample(
            coded, instances, None, (112, 112), (20, 20), np.random.default_rng(seed),
            colour=False,
        )  # fmt: skip
        # reproduce the instances: the geometric draw comes first from the same stream
        (aug_inst,) = geometric_augment([instances], np.random.default_rng(seed))
        crop = center_crop(aug_inst, (112, 112))
        np.testing.assert_array_equal(out, palette.astype(np.uint8)[crop])
        np.testing.assert_array_equal(targets.np, center_crop(crop > 0, (20, 20)))


def test_targets_follow_the_augmented_instances(small_set):
    image, instances, types = small_set.get(7)
    for seed in range(6):
        out, targets = augment_sample(
            image, instances, types, (112, 112), (20, 20), np.random.default_rng(seed)
        )
        aug_inst, aug_types = geometric_augment([instances, types], np.random.default_rng(seed))
        crop_inst = center_crop(aug_inst, (112, 112))
        expected_hv = center_crop(hv_maps(crop_inst, (20, 20)), (20, 20))
        np.testing.assert_array_equal(targets.hv, expected_hv)
        expected = hovernet_targets(crop_inst, center_crop(aug_types, (112, 112)), (20, 20))
        np.testing.assert_array_equal(targets.np, expected.np)
        np.testing.assert_array_equal(targets.tp, expected.tp)
        assert out.shape == (112, 112, 3) and out.dtype == np.uint8


def test_hv_is_recomputed_not_transformed(small_set):
    """A vertical flip negates V only up to the original's rounding: the maps are recomputed."""
    _, instances, _ = small_set.get(7)
    flipped = np.ascontiguousarray(instances[::-1])
    hv, hv_flipped = hv_maps(instances), hv_maps(flipped)
    assert not np.array_equal(hv_flipped[..., 1], -hv[::-1, :, 1])
    np.testing.assert_allclose(hv_flipped[..., 0], hv[::-1, :, 0])


def test_colour_jitter(small_set):
    image = small_set.get(0)[0]
    rng = np.random.default_rng(0)
    off = {"hue": None, "saturation": None, "contrast": None, "brightness": None}
    np.testing.assert_array_equal(hovernet_colour_jitter(image, rng, ranges=off, blur=False), image)
    brighter = hovernet_colour_jitter(
        image, rng, ranges={**off, "brightness": (20, 20)}, blur=False
    )
    np.testing.assert_array_equal(brighter, np.clip(image.astype(int) + 20, 0, 255))
    grey = hovernet_colour_jitter(image, rng, ranges={**off, "saturation": (-1, -1)}, blur=False)
    assert np.abs(grey.astype(int) - grey[..., :1]).max() <= 1  # saturation 0: grey
    jittered = hovernet_colour_jitter(image, np.random.default_rng(3))
    assert jittered.shape == image.shape and jittered.dtype == np.uint8
    assert not np.array_equal(jittered, image)
    with pytest.raises(NucleiError, match="'gamma'"):
        hovernet_colour_jitter(image, rng, ranges={"gamma": (1, 2)})


# --------------------------------------------------------------------------------------------
# Batch source


@pytest.mark.parametrize("mode", ["original", "fast"])
def test_crop_sizes_of_the_original_geometry(full_set, mode):
    assert full_set.window == (540, 540)
    (input_shape, output_shape) = HOVERNET_GEOMETRY[mode]
    with HoVerNetBatchSource(full_set, mode=mode, main_buffer_size=2, seed=0) as source:
        assert source.patch_shapes == {1.0: input_shape}
        batch, indices = source.batch(2)
    entry = batch[1.0]
    assert entry["patches"].shape == (2, 3, *input_shape)
    assert entry["patches"].dtype == np.float32 and 0 <= entry["patches"].min()
    assert entry["patches"].max() <= 1
    assert entry["labels"]["np"].shape == (2, *output_shape)
    assert entry["labels"]["hv"].shape == (2, 2, *output_shape)
    assert entry["labels"]["tp"].shape == (2, *output_shape)
    assert sorted(indices) == [0, 1]


def test_validation_source_is_a_centre_crop(small_set):
    with HoVerNetBatchSource(
        small_set, mode="fast", input_shape=(112, 112), augment=False, main_buffer_size=3, seed=0
    ) as source:
        source.fill()
        batch, indices = source.batch(3)
        for position, slot in enumerate(indices):
            index = int(source.patch_indices([slot])[0])
            image, instances, types = small_set.get(index)
            expected = center_crop(image, (112, 112)).transpose(2, 0, 1) / 255.0
            np.testing.assert_allclose(batch[1.0]["patches"][position], expected, atol=1e-6)
            targets = hovernet_targets(
                center_crop(instances, (112, 112)), center_crop(types, (112, 112)), (20, 20)
            )
            np.testing.assert_array_equal(batch[1.0]["labels"]["np"][position], targets.np)
            np.testing.assert_array_equal(
                batch[1.0]["labels"]["hv"][position], np.moveaxis(targets.hv, 2, 0)
            )


def test_generator_interface(small_set):
    def make():
        return HoVerNetBatchSource(
            small_set, mode="fast", input_shape=(96, 96), main_buffer_size=4,
            read_buffer_size=4, seed=5, name="training",
        )  # fmt: skip

    source = make()
    with pytest.raises(NucleiError, match="call start"):
        source.batch(1)
    for name in ("start", "stop", "step", "fill", "load", "transfer", "boosted_transfer",
                 "ping", "batch", "update"):  # fmt: skip
        assert callable(getattr(source, name))
    assert isinstance(source.rng, np.random.Generator)
    assert isinstance(source._order_rng, np.random.Generator)
    source.start()
    source.step()
    source.fill()
    first, indices = source.batch(2)
    source.update(indices, [0.0, 0.0])
    assert source.count(0.5) == 2  # the two unseen slots are still difficult
    source.load()
    source.ping()
    source.transfer()
    assert source.count(0.5) == 4  # fresh buffer
    source.update(np.arange(4), [0.9, 0.1, 0.1, 0.1])
    source.load()
    ratio = source.boosted_transfer(epoch=5, buffer_mode_switch=0, difficult_threshold=0.5,
                                    difficult_update_ratio=0.0)  # fmt: skip
    assert ratio == 0.25
    assert 0.9 in source.main.errors  # the difficult sample was kept
    source.stop()
    source.stop()
    # the same seed gives the same batches
    again = make()
    with again:
        again.fill()
        repeat, _ = again.batch(2)
    np.testing.assert_array_equal(first[1.0]["patches"], repeat[1.0]["patches"])
    np.testing.assert_array_equal(first[1.0]["labels"]["hv"], repeat[1.0]["labels"]["hv"])


def test_source_errors(small_set):
    with pytest.raises(NucleiError, match="input_shape"):
        HoVerNetBatchSource(small_set, mode="fast", input_shape=(100, 100))
    with pytest.raises(NucleiError, match="smaller than the network input"):
        HoVerNetBatchSource(small_set, mode="original")
    with pytest.raises(NucleiError, match="mode"):
        HoVerNetBatchSource(small_set, mode="slow")


def test_digipath_augmenters_after_the_jitter(small_set):
    """Pixel-wise digipath augmenters (here HED colour) run on the image only."""
    from digipath.augment import AugmenterPool, HedColor
    from digipath.augment.spatial import Flip
    from digipath.nuclei.dataset import pool_colour

    pool = AugmenterPool()
    pool.append_group("colour", random=False)
    stain = {"sigma": [-0.3, 0.3], "bias": [-0.1, 0.1]}
    pool.append_augmenter(HedColor(stain, stain, stain), "colour")
    colour = pool_colour(pool, jitter=False)
    image, _, _ = small_set.get(0)
    changed = colour(image, np.random.default_rng(1))
    assert changed.shape == image.shape and changed.dtype == np.uint8
    assert not np.array_equal(changed, image)
    np.testing.assert_array_equal(colour(image, np.random.default_rng(1)), changed)  # seeded
    spatial = AugmenterPool()
    spatial.append_group("spatial", random=False)
    spatial.append_augmenter(Flip(["none", "horizontal"]), "spatial")
    with pytest.raises(NucleiError, match="flip move pixels"):
        pool_colour(spatial)
