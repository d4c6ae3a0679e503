"""NatureNet, FCN and CifarNet: output shapes, dense maps, training, argument checks."""

from __future__ import annotations

import json

import pytest
import torch
from network_checks import sgd_step_changes_every_parameter
from torch import nn

from digipath.models.networks import FCN, CifarNet, NatureNet


def assert_bad_argument(cls: type, options: dict, argument: str, valid: str) -> None:
    with pytest.raises(ValueError) as error:
        cls(**options)
    assert argument in str(error.value)
    assert valid in str(error.value)


# --------------------------------------------------------------------------------------------
# NatureNet


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"batch_norm": True},
        {"dropout_layers": 2, "dropout_probability": 0.3},
        {"depth": 2, "input_size": 50},
        {"depth": 4, "input_size": 100},
    ],
)
def test_naturenet_gives_one_pixel_on_its_patch_size(options: dict) -> None:
    torch.manual_seed(0)
    net = NatureNet(in_channels=3, classes=3, branching_factor=2, **options).eval()
    size = net.input_size
    with torch.no_grad():
        output = net(torch.randn(2, 3, size, size))
    assert output.shape == (2, 3, 1, 1)
    assert net.output_shape((size, size)) == (1, 1)


@pytest.mark.parametrize("shape", [(64, 64), (72, 96), (70, 101), (65, 64)])
def test_naturenet_dense_output_shape(shape: tuple[int, int]) -> None:
    net = NatureNet(classes=2, branching_factor=2, depth=3, input_size=64).eval()
    with torch.no_grad():
        output = net(torch.randn(1, 3, *shape))
    assert tuple(output.shape) == (1, 2, *net.output_shape(shape))
    assert net.output_shape((64 + 8 * 3, 64 + 8 * 5)) == (4, 6)


def test_naturenet_dense_map_equals_patchwise_classification() -> None:
    torch.manual_seed(1)
    net = NatureNet(classes=2, branching_factor=2, depth=3, input_size=38, batch_norm=True)
    net.eval()
    stride = net.output_stride
    assert stride == 8
    image = torch.randn(1, 3, 38 + 2 * stride, 38 + 3 * stride)
    with torch.no_grad():
        dense = net(image)
        assert dense.shape == (1, 2, 3, 4)
        for i in range(3):
            for j in range(4):
                patch = image[:, :, i * stride : i * stride + 38, j * stride : j * stride + 38]
                torch.testing.assert_close(net(patch)[:, :, 0, 0], dense[:, :, i, j])


def test_naturenet_size_helpers() -> None:
    assert NatureNet.minimum_input_size(3) == 22
    assert NatureNet.minimum_input_size(1) == 4
    for depth in (1, 2, 3):
        smallest = NatureNet.minimum_input_size(depth)
        net = NatureNet(branching_factor=1, depth=depth, input_size=smallest).eval()
        with torch.no_grad():
            assert net(torch.zeros(1, 3, smallest, smallest)).shape == (1, 2, 1, 1)
        with pytest.raises(ValueError, match="input_size"):
            NatureNet(depth=depth, input_size=smallest - 1)
    net = NatureNet(branching_factor=1, depth=3, input_size=64)
    assert net.valid_input_shape((10, 64)) == (64, 64)
    assert net.valid_input_shape((65, 80)) == (72, 80)
    assert net.valid_input_shape((81, 200)) == (88, 200)
    with pytest.raises(ValueError, match="input_size"):
        net.output_shape((63, 100))
    with pytest.raises(ValueError, match="input_size"):
        net(torch.zeros(1, 3, 63, 100))


def test_naturenet_gradients_and_determinism() -> None:
    torch.manual_seed(2)
    net = NatureNet(branching_factor=2, depth=2, input_size=30, batch_norm=True, dropout_layers=2)
    sgd_step_changes_every_parameter(net, torch.randn(4, 3, 30, 30))
    x = torch.randn(2, 3, 46, 46)
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(x), net(x))
        net.train()
        assert not torch.equal(net(x), net(x))  # dropout is active in training


def test_naturenet_dropout_layers() -> None:
    for count in (0, 1, 2):
        net = NatureNet(branching_factor=1, dropout_layers=count)
        assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == count
    assert isinstance(NatureNet(branching_factor=1, dropout_layers=1).classifier[-2], nn.Dropout)


def test_naturenet_config_rebuilds_the_network() -> None:
    net = NatureNet(in_channels=1, classes=4, branching_factor=1, depth=2, input_size=30)
    rebuilt = NatureNet(**json.loads(json.dumps(net.config)))
    rebuilt.load_state_dict(net.state_dict())
    assert rebuilt.config == net.config


@pytest.mark.parametrize(
    "options, argument, valid",
    [
        ({"depth": 0}, "depth", ">= 1"),
        ({"dropout_layers": 3}, "dropout_layers", "0..2"),
        ({"dropout_probability": -0.1}, "dropout_probability", "[0, 1)"),
        ({"depth": 3, "input_size": 21}, "input_size", ">= 22"),
        ({"classes": 0}, "classes", ">= 1"),
        ({"batch_norm": 0}, "batch_norm", "True or False"),
    ],
)
def test_naturenet_bad_arguments(options: dict, argument: str, valid: str) -> None:
    assert_bad_argument(NatureNet, options, argument, valid)


# --------------------------------------------------------------------------------------------
# FCN


@pytest.mark.parametrize(
    "options",
    [{}, {"batch_norm": True}, {"dropout_probability": 0.5}, {"depth": 1}, {"depth": 4}],
)
@pytest.mark.parametrize("shape", [(64, 64), (37, 50)])
def test_fcn_output_shape(options: dict, shape: tuple[int, int]) -> None:
    net = FCN(in_channels=3, classes=5, branching_factor=2, **options).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, *shape)).shape == (2, 5)


def test_fcn_minimum_input_size() -> None:
    assert FCN.minimum_input_size(4) == 8
    net = FCN(depth=4, branching_factor=1).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 2)
    with pytest.raises(ValueError, match="at least 8"):
        net(torch.zeros(1, 3, 7, 8))


def test_fcn_gradients_and_determinism() -> None:
    torch.manual_seed(3)
    net = FCN(depth=3, branching_factor=2, batch_norm=True, dropout_probability=0.5)
    sgd_step_changes_every_parameter(net, torch.randn(4, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(x), net(x))
        net.train()
        assert not torch.equal(net(x), net(x))


def test_fcn_config_rebuilds_the_network() -> None:
    net = FCN(in_channels=2, classes=3, depth=2, branching_factor=1, dropout_probability=0.2)
    rebuilt = FCN(**json.loads(json.dumps(net.config)))
    rebuilt.load_state_dict(net.state_dict())


@pytest.mark.parametrize(
    "options, argument, valid",
    [
        ({"depth": 0}, "depth", ">= 1"),
        ({"dropout_probability": 1}, "dropout_probability", "[0, 1)"),
        ({"in_channels": 0}, "in_channels", ">= 1"),
        ({"branching_factor": "5"}, "branching_factor", ">= 0"),
    ],
)
def test_fcn_bad_arguments(options: dict, argument: str, valid: str) -> None:
    assert_bad_argument(FCN, options, argument, valid)


# --------------------------------------------------------------------------------------------
# CifarNet


def test_cifarnet_is_caffe_cifar10_quick() -> None:
    net = CifarNet(in_channels=3, classes=10).eval()
    assert sum(p.numel() for p in net.parameters()) == 145_578
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before_adaptive = net.features[:-1](x)
        assert before_adaptive.shape == (2, 64, 4, 4)  # Caffe's ceil-mode poolings: 16, 8, 4
        torch.testing.assert_close(net.features(x), before_adaptive)  # identity at 32x32
        assert net(x).shape == (2, 10)


@pytest.mark.parametrize("shape", [(32, 32), (48, 64), (20, 24)])
def test_cifarnet_other_sizes(shape: tuple[int, int]) -> None:
    net = CifarNet(in_channels=1, classes=2).eval()
    with torch.no_grad():
        assert net(torch.randn(3, 1, *shape)).shape == (3, 2)


def test_cifarnet_gradients_and_determinism() -> None:
    torch.manual_seed(4)
    net = CifarNet(classes=3)
    sgd_step_changes_every_parameter(net, torch.randn(4, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(x), net(x))
    rebuilt = CifarNet(**json.loads(json.dumps(net.config)))
    rebuilt.load_state_dict(net.state_dict())


@pytest.mark.parametrize(
    "options, argument", [({"classes": 0}, "classes"), ({"in_channels": True}, "in_channels")]
)
def test_cifarnet_bad_arguments(options: dict, argument: str) -> None:
    assert_bad_argument(CifarNet, options, argument, ">= 1")


def test_classifiers_reject_wrong_channels() -> None:
    for net in (NatureNet(branching_factor=1), FCN(branching_factor=1), CifarNet()):
        with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
            net(torch.zeros(1, 1, 128, 128))
