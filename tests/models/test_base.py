"""ModelBase: update/validate/predict, labels, cropping, learning rate, reconstruction, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from digipath.errors import ConfigError, ModelError, ModelFileError
from digipath.models import (
    ModelBase,
    file_digest,
    load_model,
    model_class,
    model_from_config,
    read_header,
    register_model,
)
from digipath.models.base import class_indices
from digipath.models.files import FORMAT_VERSION, import_state_dict, migrate
from digipath.models.registry import MODELS


def unet(padding: str = "same", **options):
    cls = model_class("unet")
    settings = dict(classes=3, input_channels=3, input_shape=(64, 64), depth=2,
                    branching_factor=2, padding=padding, learning_rate=0.01)  # fmt: skip
    settings.update(options)
    return cls(**settings).build()


def batch(size: int = 4, shape=(64, 64), classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, classes, (size, shape[0] // 8 + 1, shape[1] // 8 + 1))
    labels = blocks.repeat(8, axis=1).repeat(8, axis=2)[:, : shape[0], : shape[1]]
    x = np.zeros((size, 3, *shape), np.float32)
    x[:, 0] = labels / classes  # the labels are readable from channel 0
    x[:, 1:] = rng.random((size, 2, *shape), dtype=np.float32) * 0.1
    return x, labels


def test_class_indices_from_one_hot_and_maps():
    one_hot = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0]], np.float32)
    assert class_indices(one_hot, 3).tolist() == [0, 2, 255]
    maps = np.array([[[0, 1], [255, 2]]])
    assert class_indices(maps, 3).tolist() == maps.tolist()


def test_update_learns_and_validate_reports_errors():
    torch.manual_seed(0)
    model = unet(branching_factor=3)
    x, labels = batch()
    first = model.validate(x, labels)
    for _ in range(40):
        metrics = model.update(x, labels)
    last = model.validate(x, labels)
    assert set(metrics) == {"loss", "accuracy", "errors"}
    assert last["loss"] < 0.7 * first["loss"] and last["accuracy"] > 0.8
    assert last["errors"].shape == (4,) and np.all((last["errors"] >= 0) & (last["errors"] <= 1))
    assert last["errors"].mean() < first["errors"].mean()
    probabilities = model.predict(x)["predictions"]
    assert probabilities.shape == (4, 3, 64, 64)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_valid_padding_crops_labels_and_weights_to_the_output():
    model = unet("valid")
    info = model.reconstruction_info((92, 92))
    assert info.output_shape == (52, 52) and info.downsampling == (1.0, 1.0)
    assert info.lost == (20, 20, 20, 20) and info.offset == (20, 20)
    x, labels = batch(shape=(92, 92))
    weights = np.ones((4, 92, 92), np.float32)
    weights[:, :20] = 0  # the cropped-away border carries no weight anyway
    metrics = model.update(x, labels, weights)
    assert np.isfinite(metrics["loss"])
    with pytest.raises(ModelError, match=r"\(N, 3, H, W\)"):
        model.update(x[:, :2], labels)


def test_same_padding_keeps_the_shape():
    info = unet("same").reconstruction_info((64, 64))
    assert info.output_shape == (64, 64) and info.lost == (0, 0, 0, 0)


def test_classifier_reconstruction_has_no_downsampling():
    model = model_class("resnet18")(classes=2, input_shape=(64, 64), width=8).build()
    info = model.reconstruction_info((64, 64))
    assert info.downsampling is None and info.output_shape == ()
    x, _ = batch(2)
    metrics = model.update(x, np.array([0, 1]))
    assert metrics["errors"].shape == (2,)


def test_learning_rate_property_reaches_the_optimiser():
    model = unet()
    assert model.learning_rate == pytest.approx(0.01)
    model.learning_rate = 0.002
    assert all(group["lr"] == 0.002 for group in model.optimizer.param_groups)
    with pytest.raises(ModelError, match="must be > 0"):
        model.learning_rate = 0


def test_a_model_file_round_trips_weights_optimiser_and_header(tmp_path):
    torch.manual_seed(0)
    model = unet(loss="dice", weight_decay=1e-4)
    x, labels = batch()
    for _ in range(3):
        model.update(x, labels)
    header = {"label_map": {1: 0, 2: 1}, "normalization": {"type": "rgb_to_0-1"}}
    path = model.save(tmp_path / "m.safetensors", patch_shapes={0.5: (64, 64)}, **header)
    header = read_header(path)
    assert header["format_version"] == FORMAT_VERSION and header["model"]["type"] == "unet"
    assert header["parameters"]["loss"] == "dice" and header["parameters"]["depth"] == 2
    assert header["label_map"] == {"1": 0, "2": 1} and header["spacings"] == [0.5]
    assert header["reconstruction"]["output_shape"] == [64, 64]
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict(x)["predictions"], model.predict(x)["predictions"])
    # the optimiser state came back too: the next steps are identical
    np.testing.assert_allclose(loaded.update(x, labels)["loss"], model.update(x, labels)["loss"])
    assert type(ModelBase.load(path)) is type(model)
    assert len(file_digest(path)) == 64


def test_bad_model_files_are_reported(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a digipath model file"):
        read_header(garbage)
    pickled = tmp_path / "pickled.pt"
    torch.save({"weight": torch.ones(2)}, pickled)
    with pytest.raises(ModelFileError, match="not a digipath model file"):
        load_model(pickled)  # a torch pickle is never unpickled by load_model


def test_a_plain_state_dict_is_imported_with_weights_only(tmp_path):
    source = unet()
    state = tmp_path / "weights.pt"
    torch.save({f"module.{k}": v for k, v in source.network.state_dict().items()}, state)
    target = import_state_dict(state, unet(), tmp_path / "imported.safetensors")
    x, _ = batch(2)
    np.testing.assert_array_equal(
        load_model(target).predict(x)["predictions"], source.predict(x)["predictions"]
    )
    assert migrate(target) == str(target)

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    bad = tmp_path / "evil.pt"
    torch.save({"weight": Evil()}, bad)
    with pytest.raises(ModelFileError, match="not a loadable PyTorch weights file"):
        import_state_dict(bad, unet(), tmp_path / "never.safetensors")


def test_a_users_model_type_plugs_in(tmp_path):
    @register_model("tiny-test-net")
    class Tiny(ModelBase):
        def __init__(self, *, hidden: int = 4, **options):
            super().__init__(**options, hidden=hidden)

        def create_network(self) -> nn.Module:
            hidden = self.network_parameters["hidden"]
            return nn.Sequential(
                nn.Conv2d(self.input_channels, hidden, 3, padding=1), nn.ReLU(),
                nn.Conv2d(hidden, self.classes, 1),
            )  # fmt: skip

    try:
        model = model_from_config({"type": "tiny-test-net", "hidden": 6}, classes=2,
                                  input_channels=3, input_shape=(16, 16))  # fmt: skip
        assert model.network[0].out_channels == 6
        path = model.save(tmp_path / "tiny.safetensors")
        assert isinstance(load_model(path), Tiny)
    finally:
        MODELS.pop("tiny-test-net")


def test_model_sections_are_validated():
    section = {"type": "unet", "depth": 2, "branching factor": 2, "padding": "valid",
               "L2 lambda": 1e-5, "channels first": True, "batch norm": True}  # fmt: skip
    model = model_from_config(section, classes=2, input_channels=3, input_shape=(92, 92))
    assert model.weight_decay == 1e-5 and model.network_parameters["batch_norm"] is True
    for bad, key in (
        ({"type": "unet", "colour": 1}, "model.colour"),
        ({"type": "nope"}, "model.type"),
        ({"type": "unet", "backend": "keras"}, "model.backend"),
        ({"type": "unet", "padding": "full"}, "model"),
        ({"type": "unet", "loss": "hinge"}, "model"),
    ):
        with pytest.raises(ConfigError) as caught:
            model_from_config(bad, classes=2, input_channels=3, input_shape=(92, 92))
        assert caught.value.key == key
    with pytest.raises(ConfigError, match="cannot take it") as caught:
        model_from_config({"type": "unet", "depth": 4, "padding": "valid"}, classes=2,
                          input_channels=3, input_shape=(40, 40))  # fmt: skip
    assert caught.value.key == "data.images.patch shapes"


def test_naturenet_reconstruction_has_its_stride_and_border():
    model = model_class("naturenet")(classes=2, input_shape=(46, 46), depth=3,
                                      branching_factor=2, input_size=46).build()  # fmt: skip
    info = model.reconstruction_info((46 + 8 * 4, 46 + 8 * 4))
    assert info.downsampling == (8.0, 8.0) and info.output_shape == (5, 5)
    top, bottom, left, right = info.lost
    assert top + bottom == left + right == 78 - 5 * 8  # input minus output x stride
    assert 0 <= bottom - top <= 1 and 0 <= right - left <= 1  # split evenly, odd pixel last
    x, _ = batch(3, shape=(46, 46))
    assert model.update(x, np.array([0, 1, 1]))["errors"].shape == (3,)


def test_channels_last_trains_like_the_default():
    x, labels = batch(2)
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = unet(channels_last=channels_last)
        results.append([model.update(x, labels)["loss"] for _ in range(3)])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4)
