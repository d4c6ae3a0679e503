"""Reading nucleus annotations: .mat, .npy, PNG instance maps, colour-coded type masks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from digipath.metrics.instances import nucleus_points
from digipath.nuclei.io import (
    NucleiError,
    NucleusFileError,
    NucleusMaps,
    TypeInfo,
    colours_to_types,
    instances_from_types,
    read_instance_png,
    read_mat,
    read_npy,
    read_nuclei,
    read_type_info,
    read_type_mask,
    remap_types,
)

PATCHES = ("patch1", "patch2")
# HoVer-Net's PanNuke type_info.json
PANNUKE_TYPE_INFO = {
    "0": ["nolabe", [0, 0, 0]],
    "1": ["neopla", [255, 0, 0]],
    "2": ["inflam", [0, 255, 0]],
    "3": ["connec", [0, 0, 255]],
    "4": ["necros", [255, 255, 0]],
    "5": ["no-neo", [255, 165, 0]],
}


@pytest.fixture(scope="module", params=PATCHES)
def patch(request, test_data):
    folder = test_data / "nuclei" / "cellseg_models"
    mat = folder / f"{request.param}.mat"
    if not mat.exists():
        pytest.fail(f"{mat} missing from the test data")
    return folder, request.param


def _paint(types: np.ndarray, info: dict) -> np.ndarray:
    rgb = np.zeros((*types.shape, 3), np.uint8)
    for key, (_, colour) in info.items():
        rgb[types == int(key)] = colour
    return rgb


# --------------------------------------------------------------------------------------------
# .mat


def test_read_mat_real_files(patch):
    folder, name = patch
    maps = read_mat(folder / f"{name}.mat")
    assert isinstance(maps, NucleusMaps)
    assert maps.instances.dtype == np.int32 and maps.instances.shape == (256, 256)
    assert maps.types is not None and maps.types.dtype == np.int32
    assert maps.shape == (256, 256)
    expected = {"patch1": 20, "patch2": 47}[name]
    assert len(maps) == expected
    np.testing.assert_array_equal(maps.ids, np.unique(maps.instances)[1:])
    assert maps.ids.max() > len(maps)  # ids are not consecutive in these files
    # inst_type / inst_centroid are in increasing id order: check them against the maps
    points = nucleus_points(maps.instances, maps.types)  # raster order, (row, col)
    order = np.argsort(points.ids)
    np.testing.assert_array_equal(points.ids[order], maps.ids)
    np.testing.assert_array_equal(maps.instance_types, points.types[order])
    np.testing.assert_allclose(maps.centroids, points.centroids[order][:, ::-1], atol=1e-9)
    present = set(np.unique(maps.types).tolist())
    assert present == {"patch1": {0, 2, 3, 5}, "patch2": {0, 1}}[name]


def test_read_mat_type_mapping(tmp_path):
    inst = np.zeros((8, 8), np.int32)
    inst[1:3, 1:3], inst[5:7, 5:7] = 4, 9
    types = np.where(inst == 4, 5, np.where(inst == 9, 7, 0)).astype(np.int32)
    path = tmp_path / "consep.mat"
    savemat(path, {"inst_map": inst, "type_map": types, "inst_type": np.array([[5], [7]])})
    maps = read_mat(path, type_mapping={3: 3, 4: 3, 5: 4, 6: 4, 7: 4})  # CoNSeP's merge
    assert set(np.unique(maps.types).tolist()) == {0, 4}
    np.testing.assert_array_equal(maps.instance_types, [4, 4])
    assert maps.centroids is None


def test_read_mat_errors(tmp_path):
    with pytest.raises(NucleusFileError, match="no such file"):
        read_mat(tmp_path / "absent.mat")
    path = tmp_path / "no_inst.mat"
    savemat(path, {"type_map": np.zeros((4, 4), np.int32)})
    with pytest.raises(NucleusFileError, match=r"inst_map: no such key \(keys: type_map\)") as info:
        read_mat(path)
    assert info.value.key == "inst_map" and info.value.path == str(path)
    inst = np.zeros((6, 6), np.int32)
    inst[1:3, 1:3], inst[4:6, 4:6] = 1, 2
    savemat(path, {"inst_map": inst, "inst_type": np.array([[1], [2], [3]])})
    with pytest.raises(NucleusFileError, match=r"inst_type: expected \(N, 1\) with N = 2"):
        read_mat(path)
    savemat(path, {"inst_map": inst, "inst_centroid": np.zeros((2, 3))})
    with pytest.raises(NucleusFileError, match="inst_centroid"):
        read_mat(path)
    savemat(path, {"inst_map": inst, "type_map": np.zeros((5, 6), np.int32)})
    with pytest.raises(NucleusFileError, match=r"type_map: shape \(5, 6\) differs"):
        read_mat(path)
    savemat(path, {"inst_map": inst - 3})
    with pytest.raises(NucleusFileError, match="inst_map: values must lie in 0"):
        read_mat(path)
    savemat(path, {"inst_map": inst + 0.5})
    with pytest.raises(NucleusFileError, match="inst_map: expected integer values"):
        read_mat(path)
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(NucleusFileError, match="MATLAB"):
        read_mat(bad)


# --------------------------------------------------------------------------------------------
# .npy training tiles


def test_read_npy_training_tile_layouts(patch, tmp_path):
    folder, name = patch
    maps = read_mat(folder / f"{name}.mat")
    rgb = cv2.cvtColor(cv2.imread(str(folder / f"{name}.png")), cv2.COLOR_BGR2RGB)
    # extract_patches.py concatenates uint8 RGB with the int32 annotations
    stacks = {
        5: np.concatenate([rgb, maps.instances[..., None], maps.types[..., None]], axis=-1),
        4: np.concatenate([rgb, maps.instances[..., None]], axis=-1),
        2: np.dstack([maps.instances, maps.types]),
        1: maps.instances[..., None],
        0: maps.instances,
    }
    for channels, stack in stacks.items():
        path = tmp_path / f"{name}_{channels}.npy"
        np.save(path, stack)
        read = read_npy(path)
        np.testing.assert_array_equal(read.instances, maps.instances)
        np.testing.assert_array_equal(read.ids, maps.ids)
        if channels in (5, 2):
            np.testing.assert_array_equal(read.types, maps.types)
        else:
            assert read.types is None
        if channels >= 4:
            assert read.image.dtype == np.uint8
            np.testing.assert_array_equal(read.image, rgb)
        else:
            assert read.image is None
        assert read_nuclei(path).instances.shape == (256, 256)


def test_read_npy_errors(tmp_path):
    path = tmp_path / "tile.npy"
    np.save(path, np.zeros((4, 4, 3), np.int32))
    with pytest.raises(NucleusFileError, match=r"got shape \(4, 4, 3\)"):
        read_npy(path)
    np.save(path, np.full((4, 4, 2), 1.5))
    with pytest.raises(NucleusFileError, match=r"channel 0 \(instances\): expected integer"):
        read_npy(path)
    stack = np.zeros((4, 4, 5), np.int32)
    stack[0, 0, 4] = -1
    np.save(path, stack)
    with pytest.raises(NucleusFileError, match=r"channel 4 \(types\): values must lie"):
        read_npy(path)
    stack[0, 0, 4], stack[0, 0, 0] = 0, 300
    np.save(path, stack)
    with pytest.raises(NucleusFileError, match="RGB values must lie in 0-255"):
        read_npy(path)
    np.save(path, np.array([{"inst": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(NucleusFileError, match=r"not a readable \.npy"):
        read_npy(path)


# --------------------------------------------------------------------------------------------
# PNG instance maps


def test_read_instance_png_16_bit(patch, tmp_path):
    folder, name = patch
    maps = read_mat(folder / f"{name}.mat")
    assert maps.ids.max() > 255  # needs 16 bits
    path = tmp_path / f"{name}_inst.png"
    cv2.imwrite(str(path), maps.instances.astype(np.uint16))
    read = read_instance_png(path)
    np.testing.assert_array_equal(read.instances, maps.instances)
    np.testing.assert_array_equal(read_nuclei(path).instances, maps.instances)
    grey_rgb = tmp_path / "grey_rgb.png"
    small = (maps.instances % 200).astype(np.uint8)
    cv2.imwrite(str(grey_rgb), np.dstack([small] * 3))
    np.testing.assert_array_equal(read_instance_png(grey_rgb).instances, small)


def test_read_instance_png_errors(tmp_path):
    with pytest.raises(NucleusFileError, match="no such file"):
        read_instance_png(tmp_path / "absent.png")
    path = tmp_path / "colour.png"
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 1] = 1
    cv2.imwrite(str(path), colour)
    with pytest.raises(NucleusFileError, match="read_type_mask"):
        read_instance_png(path)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG not really")
    with pytest.raises(NucleusFileError, match="not an image"):
        read_instance_png(junk)


# --------------------------------------------------------------------------------------------
# Colour-coded type masks and type_info.json


def test_type_info_round_trip(tmp_path):
    path = tmp_path / "type_info.json"
    path.write_text(json.dumps(PANNUKE_TYPE_INFO))
    info = read_type_info(path)
    assert info.names[1] == "neopla" and info.colours[5] == (255, 165, 0)
    assert info.to_dict() == PANNUKE_TYPE_INFO
    assert TypeInfo.from_dict(info.to_dict()) == info


def test_read_type_mask_maps_colours_to_classes(patch, tmp_path):
    folder, name = patch
    maps = read_mat(folder / f"{name}.mat")
    info_path = tmp_path / "type_info.json"
    info_path.write_text(json.dumps(PANNUKE_TYPE_INFO))
    rgb = _paint(maps.types, PANNUKE_TYPE_INFO)
    mask = tmp_path / f"{name}_types.png"
    cv2.imwrite(str(mask), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    for info in (info_path, PANNUKE_TYPE_INFO, read_type_info(info_path)):
        types = read_type_mask(mask, info)
        assert types.dtype == np.int32
        np.testing.assert_array_equal(types, maps.types)
    read = read_nuclei(mask, type_info=info_path)
    np.testing.assert_array_equal(read.types, maps.types)
    # instances from the colours: one per connected component of each class
    assert np.array_equal(read.instances > 0, maps.types > 0)
    assert 0 < len(read) <= len(maps)


def test_unknown_colour_is_named(tmp_path):
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[1, 2] = (255, 0, 0)
    rgb[3, 4:6] = (12, 34, 56)
    with pytest.raises(NucleusFileError) as info:
        colours_to_types(rgb, PANNUKE_TYPE_INFO, path="mask.png")
    message = str(info.value)
    assert "mask.png" in message
    assert "[12, 34, 56] (2 px, first at row 3, col 4)" in message
    assert "1: [255, 0, 0]" in message  # the palette is listed
    path = tmp_path / "mask.png"
    cv2.imwrite(str(path), rgb[..., ::-1])
    with pytest.raises(NucleusFileError, match=r"\[12, 34, 56\]"):
        read_type_mask(path, PANNUKE_TYPE_INFO)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({}, "non-empty object"),
        ({"a": ["x", [0, 0, 0]]}, "a: the class must be a non-negative integer"),
        ({"-1": ["x", [0, 0, 0]]}, "non-negative integer"),
        ({"0": ["x", [0, 0]]}, r"0: expected \[name, \[r, g, b\]\]"),
        ({"0": "background"}, r"expected \[name, \[r, g, b\]\]"),
        ({"0": ["x", [0, 0, 256]]}, "0-255"),
        ({"0": ["x", [0, 0, 0]], "1": ["y", [0, 0, 0]]}, r"1: colour \[0, 0, 0\] is also class 0"),
    ],
)
def test_type_info_errors(tmp_path, data, match):
    path = tmp_path / "type_info.json"
    path.write_text(json.dumps(data))
    with pytest.raises(NucleusFileError, match=match) as info:
        read_type_info(path)
    assert info.value.path == str(path)


def test_type_info_file_errors(tmp_path):
    with pytest.raises(NucleusFileError, match="no such file"):
        read_type_info(tmp_path / "absent.json")
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(NucleusFileError, match="not valid JSON"):
        read_type_info(path)


def test_instances_from_types_keeps_classes_apart():
    types = np.zeros((6, 9), np.int32)
    types[1:3, 1:3] = 2  # two class-2 squares touching a class-3 one
    types[1:3, 3:5] = 3
    types[1:3, 5:7] = 2
    types[4, 8] = 1
    types[5, 7] = 1  # diagonal to (4, 8): one 8-connected component, two 4-connected ones
    inst = instances_from_types(types)
    assert inst[1, 1] == 1 and inst[1, 3] == 2 and inst[1, 5] == 3  # raster order
    assert len(np.unique(inst)) - 1 == 4
    assert len(np.unique(instances_from_types(types, connectivity=1))) - 1 == 5
    with pytest.raises(NucleiError, match="connectivity"):
        instances_from_types(types, connectivity=3)


def test_remap_types():
    types = np.array([[0, 3, 4], [5, 6, 7]])
    merged = remap_types(types, {3: 3, 4: 3, 5: 4, 6: 4, 7: 4})
    np.testing.assert_array_equal(merged, [[0, 3, 3], [4, 4, 4]])
    np.testing.assert_array_equal(remap_types(types, {}), types)
    with pytest.raises(NucleiError, match="non-negative"):
        remap_types(types, {1: -1})
