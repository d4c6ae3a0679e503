"""HoVer-Net targets (NP, HV, TP) and training-tile extraction.

The reference implementations below restate the original code's algorithm the slow way (one
full-image comparison per nucleus), so the vectorised targets are checked value for value.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from digipath.nuclei.io import NucleiError, read_mat
from digipath.nuclei.targets import (
    HOVERNET_GEOMETRY,
    TRAINING_STEP,
    TRAINING_WINDOW,
    center_crop,
    extract_patches,
    hovernet_targets,
    hv_maps,
    relabel_split_instances,
)

PATCHES = ("patch1", "patch2")


@pytest.fixture(scope="module", params=PATCHES)
def real(request, test_data):
    path = test_data / "nuclei" / "cellseg_models" / f"{request.param}.mat"
    if not path.exists():
        pytest.fail(f"{path} missing from the test data")
    return read_mat(path)


# --------------------------------------------------------------------------------------------
# The original's algorithm, one nucleus at a time over the full image


def reference_relabel(ann: np.ndarray) -> np.ndarray:
    ann = ann.copy()
    current = ann.max()
    for inst_id in [i for i in np.unique(ann) if i != 0]:
        pieces = ndimage.label(ann == inst_id)[0]
        pieces[pieces > 1] += current
        ann[pieces > 1] = pieces[pieces > 1]
        current = ann.max()
    return ann


def reference_hv(ann: np.ndarray, crop_shape, min_size: int = 30) -> np.ndarray:
    """gen_instance_hv_map: unclipped box expansion, so valid 2 px away from the top/left."""
    fixed = reference_relabel(ann)
    r0 = int((ann.shape[0] - crop_shape[0]) * 0.5)
    c0 = int((ann.shape[1] - crop_shape[1]) * 0.5)
    crop = fixed[r0 : r0 + crop_shape[0], c0 : c0 + crop_shape[1]]
    ids, counts = np.unique(crop, return_counts=True)
    x_map = np.zeros(ann.shape, np.float32)
    y_map = np.zeros(ann.shape, np.float32)
    for inst_id, count in zip(ids, counts, strict=True):
        if inst_id == 0 or count < min_size:
            continue
        mask = (fixed == inst_id).astype(np.uint8)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = [rows[0] - 2, rows[-1] + 1 + 2, cols[0] - 2, cols[-1] + 1 + 2]
        assert box[0] >= 0 and box[2] >= 0, "the reference needs 2 px of margin"
        mask = mask[box[0] : box[1], box[2] : box[3]]
        com = ndimage.center_of_mass(mask)
        com = (int(com[0] + 0.5), int(com[1] + 0.5))
        x, y = np.meshgrid(
            np.arange(1, mask.shape[1] + 1) - com[1], np.arange(1, mask.shape[0] + 1) - com[0]
        )
        x[mask == 0] = 0
        y[mask == 0] = 0
        x, y = x.astype(np.float32), y.astype(np.float32)
        for a in (x, y):
            if a.min() < 0:
                a[a < 0] /= -np.amin(a[a < 0])
            if a.max() > 0:
                a[a > 0] /= np.amax(a[a > 0])
        x_map[box[0] : box[1], box[2] : box[3]][mask > 0] = x[mask > 0]
        y_map[box[0] : box[1], box[2] : box[3]][mask > 0] = y[mask > 0]
    return np.dstack([x_map, y_map])


# --------------------------------------------------------------------------------------------
# HV maps


@pytest.mark.parametrize("crop", [None, (80, 80), (164, 164), (101, 57)])
def test_hv_maps_equal_the_reference_on_real_maps(real, crop):
    padded = np.pad(real.instances, ((3, 0), (3, 0)))  # the reference needs a top/left margin
    shape = padded.shape if crop is None else crop
    expected = reference_hv(padded, shape)
    got = hv_maps(padded, crop)
    assert got.dtype == np.float32 and got.shape == (*padded.shape, 2)
    np.testing.assert_array_equal(got, expected)


def test_hv_maps_properties_on_real_maps(real):
    inst = real.instances
    hv = hv_maps(inst)
    assert hv.min() >= -1 and hv.max() <= 1
    assert not hv[inst == 0].any()
    means = []
    for inst_id in real.ids:
        mask = inst == inst_id
        if mask.sum() < 30:
            assert not hv[mask].any()  # too small in the crop: no HV values
            continue
        rows, cols = np.nonzero(mask)
        x, y = hv[..., 0][mask], hv[..., 1][mask]
        # sign convention: x grows left -> right, y top -> bottom
        assert np.corrcoef(x, cols)[0, 1] > 0.9
        assert np.corrcoef(y, rows)[0, 1] > 0.9
        # 0 falls one pixel before the rounded centre (the original's grid starts at 1)
        assert x[cols == cols.min()].max() <= 0 < x[cols == cols.max()].min()
        assert y[rows == rows.min()].max() <= 0 < y[rows == rows.max()].min()
        # each side is normalised on its own: the extremes are exactly -1 and 1
        assert x.max() == 1 and y.max() == 1
        assert x.min() == -1 or (np.ptp(cols) < 3 and x.min() == 0)
        assert y.min() == -1 or (np.ptp(rows) < 3 and y.min() == 0)
        means.append((x.mean(), y.mean()))
    means = np.abs(np.array(means))
    assert means.mean() < 0.15  # zero-mean-ish; skewed shapes move a nucleus's mean


def test_hv_maps_rounded_centre_and_offset():
    inst = np.zeros((12, 12), np.int32)
    inst[3:8, 2:9] = 7  # rows 3-7, cols 2-8; centre of mass (5, 5)
    hv = hv_maps(inst, min_size=1)
    # box enlarged to rows 1-9, cols 0-10 (clipped); centre in the box (4, 5), so
    # x = (col - 0 + 1) - 5 = col - 4 and y = (row - 1 + 1) - 4 = row - 4
    x = hv[5, 2:9, 0]
    np.testing.assert_allclose(
        x, np.array([-2, -1, 0, 1, 2, 3, 4]) / np.array([2, 2, 1, 4, 4, 4, 4])
    )
    y = hv[3:8, 5, 1]
    np.testing.assert_allclose(y, np.array([-1, 0, 1, 2, 3]) / np.array([1, 1, 3, 3, 3]))


def test_hv_maps_clip_the_box_at_the_border():
    inst = np.zeros((10, 10), np.int32)
    inst[0:4, 0:4] = 1  # touches the top-left corner: the original would give it no values
    hv = hv_maps(inst, min_size=1)
    assert hv[0:4, 0:4, 0].min() == -1 and hv[0:4, 0:4, 0].max() == 1
    assert hv[0:4, 0:4, 1].min() == -1 and hv[0:4, 0:4, 1].max() == 1


def test_hv_maps_crop_size_rule():
    inst = np.zeros((40, 40), np.int32)
    inst[10:16, 10:16] = 1  # 36 px, all inside the central 20 x 20 crop
    inst[2:12, 2:10] = 2  # 80 px, none inside the crop (rows and cols 10-29)
    inst[25:35, 25:35] = 3  # 100 px, 5 x 5 = 25 px inside the crop: < 30
    inst[15:30, 15:20] = 4
    hv = hv_maps(inst, (20, 20))
    assert hv[inst == 1].any() and hv[inst == 4].any()
    assert not hv[inst == 2].any() and not hv[inst == 3].any()
    hv_all = hv_maps(inst)
    assert all(hv_all[inst == i].any() for i in (1, 2, 3, 4))


def test_relabel_split_instances_matches_reference(real):
    inst = real.instances.copy()
    # cut two nuclei in pieces as mirror padding does
    for inst_id in real.ids[:2]:
        cols = np.nonzero(inst == inst_id)[1]
        inst[(inst == inst_id) & (np.arange(256)[None, :] == int(np.median(cols)))] = 0
    got = relabel_split_instances(inst)
    expected = reference_relabel(inst)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(got)) > len(np.unique(inst))
    rng = np.random.default_rng(3)
    noisy = np.where(rng.random((50, 60)) < 0.6, rng.integers(0, 6, (50, 60)), 0)
    np.testing.assert_array_equal(relabel_split_instances(noisy), reference_relabel(noisy))
    expected = reference_hv(np.pad(noisy, ((2, 0), (2, 0))), (52, 62), 2)[2:, 2:]
    np.testing.assert_array_equal(hv_maps(noisy, min_size=2), expected)


def test_hv_maps_sparse_ids_and_errors():
    inst = np.zeros((20, 20), np.int64)
    inst[2:9, 3:10] = 2_000_000_000
    inst[11:18, 4:12] = 5
    dense = np.where(inst == 5, 1, np.where(inst > 0, 2, 0))
    np.testing.assert_array_equal(hv_maps(inst, min_size=1), hv_maps(dense, min_size=1))
    with pytest.raises(NucleiError, match="expected a \\(rows, cols\\) instance map"):
        hv_maps(np.zeros((2, 3, 4), np.int32))
    with pytest.raises(NucleiError, match="values must be >= 0"):
        hv_maps(-np.ones((3, 3), np.int32))
    with pytest.raises(NucleiError, match="larger than the instance map"):
        hv_maps(np.zeros((10, 10), np.int32), (11, 5))
    assert not hv_maps(np.zeros((5, 5), np.int32)).any()


# --------------------------------------------------------------------------------------------
# NP, HV, TP for one training sample


def test_hovernet_targets_original_geometry(real):
    # a 270 network input cut from the tile (mirror-padded as extract_patches would) -> 80 output
    (input_shape, output_shape) = HOVERNET_GEOMETRY["original"]
    inst = np.pad(real.instances, 7, mode="reflect")
    types = np.pad(real.types, 7, mode="reflect")
    inst = relabel_split_instances(inst)
    assert inst.shape == input_shape
    targets = hovernet_targets(inst, types, output_shape)
    assert targets.np.shape == targets.tp.shape == output_shape
    assert targets.hv.shape == (*output_shape, 2)
    np.testing.assert_array_equal(targets.np, center_crop(inst > 0, output_shape))
    np.testing.assert_array_equal(targets.tp, center_crop(types, output_shape))
    np.testing.assert_array_equal(
        targets.hv, center_crop(hv_maps(inst, output_shape), output_shape)
    )
    assert targets.np.dtype == np.uint8 and targets.tp.dtype == np.int32
    assert hovernet_targets(inst).tp is None
    with pytest.raises(NucleiError, match="types: shape"):
        hovernet_targets(inst, types[1:], output_shape)


def test_center_crop_offsets():
    a = np.arange(7 * 6).reshape(7, 6)
    np.testing.assert_array_equal(center_crop(a, (4, 3)), a[1:5, 1:4])  # int(1.5), int(1.5)
    np.testing.assert_array_equal(center_crop(a, 2), a[2:4, 2:4])
    with pytest.raises(NucleiError, match="cannot crop"):
        center_crop(a, (8, 2))


# --------------------------------------------------------------------------------------------
# Training tiles


def test_extract_patches_mirror_covers_the_image(real):
    image = np.dstack([real.instances, real.types])
    step = 80
    patches = extract_patches(image, TRAINING_WINDOW, (step, step), mode="mirror")
    # padded 256 + 460 = 716: grid 0, 80, 160 (3 steps) plus one flush at 716 - 540 = 176
    starts = [0, 80, 160, 176]
    assert len(patches) == 16 and patches.patches.shape == (16, 540, 540, 2)
    expected = [(r, c) for r in starts[:3] for c in starts[:3]]
    expected += [(176, c) for c in starts[:3]] + [(r, 176) for r in starts[:3]] + [(176, 176)]
    np.testing.assert_array_equal(patches.origins, np.array(expected) - 230)
    # the central step x step parts cover the image: put them back
    rebuilt = np.full(image.shape, -1)
    for patch, (r, c) in zip(patches.patches, patches.origins, strict=True):
        r, c = r + 230, c + 230
        rebuilt[r : r + step, c : c + step] = center_crop(patch, (step, step))
    np.testing.assert_array_equal(rebuilt, image)
    # content equals the reflect-padded image
    padded = np.pad(image, ((230, 230), (230, 230), (0, 0)), mode="reflect")
    r, c = patches.origins[5] + 230
    np.testing.assert_array_equal(patches.patches[5], padded[r : r + 540, c : c + 540])


def test_extract_patches_valid_grid_and_edges():
    image = np.arange(1000 * 1200).reshape(1000, 1200)
    patches = extract_patches(image, TRAINING_WINDOW, TRAINING_STEP, mode="valid")
    # rows: (1000 - 540) // 164 = 2 -> 0, 164, 328 (+ 460 flush with the bottom);
    # cols: (1200 - 540) // 164 = 4 -> 0 ... 656 (+ 660 flush with the right border)
    rows, cols = [0, 164, 328], [0, 164, 328, 492, 656]
    expected = [(r, c) for r in rows for c in cols] + [(460, c) for c in cols]
    expected += [(r, 660) for r in rows] + [(460, 660)]
    np.testing.assert_array_equal(patches.origins, expected)
    for patch, (r, c) in zip(patches.patches, patches.origins, strict=True):
        np.testing.assert_array_equal(patch, image[r : r + 540, c : c + 540])
    exact = extract_patches(np.zeros((540 + 164, 540)), TRAINING_WINDOW, TRAINING_STEP, "valid")
    np.testing.assert_array_equal(exact.origins, [(0, 0), (164, 0)])  # no flush windows needed


def test_extract_patches_errors():
    with pytest.raises(NucleiError, match="smaller than the window"):
        extract_patches(np.zeros((500, 600)), mode="valid")
    with pytest.raises(NucleiError, match="mode must be"):
        extract_patches(np.zeros((600, 600)), mode="same")  # type: ignore[arg-type]
    with pytest.raises(NucleiError, match="must not exceed the window"):
        extract_patches(np.zeros((600, 600)), (100, 100), (200, 200))
    mirrored = extract_patches(np.zeros((100, 120)), (540, 540), (80, 80))
    assert mirrored.patches.shape[1:] == (540, 540)
