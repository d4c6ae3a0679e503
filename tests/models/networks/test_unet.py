"""UNet: output sizes against real forward passes, size helpers, training, argument checks."""

from __future__ import annotations

import json

import pytest
import torch
from network_checks import sgd_step_changes_every_parameter
from torch import nn

from digipath.models.networks import UNet, unet_output_shape, unet_valid_input_shape

CONFIGS = [
    {},
    {"residual": True},
    {"downsampling": "strided"},
    {"upsampling": "interpolate"},
    {"batch_norm": True},
    {"dropout_layers": 2},
    {
        "residual": True,
        "downsampling": "strided",
        "upsampling": "interpolate",
        "batch_norm": True,
        "dropout_layers": 3,
    },
]


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("options", CONFIGS, ids=lambda options: "-".join(options) or "plain")
def test_forward_shape_matches_output_shape(padding: str, options: dict) -> None:
    torch.manual_seed(0)
    net = UNet(
        in_channels=3, classes=4, depth=2, branching_factor=2, padding=padding, **options
    ).eval()
    for shape in [(52, 44), (49, 46)]:  # exact and inexact sizes
        with torch.no_grad():
            output = net(torch.randn(1, 3, *shape))
        assert output.dtype == torch.float32
        assert output.shape == (1, 4, *net.output_shape(shape))
        if padding == "same":
            assert net.output_shape(shape) == shape


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_output_shape_for_many_sizes(padding: str, depth: int) -> None:
    net = UNet(in_channels=1, classes=1, depth=depth, branching_factor=1, padding=padding).eval()
    smallest = net.valid_input_shape((1, 1))[0]
    with torch.no_grad():
        for size in range(smallest, smallest + 2**depth + 1):
            output = net(torch.zeros(1, 1, size, smallest))
            assert tuple(output.shape[2:]) == net.output_shape((size, smallest))


def test_output_shape_is_arithmetic() -> None:
    assert unet_output_shape((572, 572), depth=4, padding="valid") == (388, 388)  # the paper
    assert unet_output_shape((572, 60), depth=4, padding="same") == (572, 60)
    for size in (188, 572, 60 + 16 * 20):  # (size + 4) % 16 == 0: size - 12 * 16 + 8
        assert unet_output_shape((size, size))[0] == size - 12 * 2**4 + 8
    net = UNet(depth=3, branching_factor=1)
    assert net.output_shape((100, 124)) == unet_output_shape((100, 124), depth=3)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_input_shape_is_the_smallest_exact_size(padding: str, depth: int) -> None:
    step = 2**depth
    for wanted in range(1, 3 * step + 120, 7):
        rows, cols = unet_valid_input_shape((wanted, wanted + 3), depth, padding)
        for asked, got in ((wanted, rows), (wanted + 3, cols)):
            assert got >= asked
            residue = (got + 4) % step if padding == "valid" else got % step
            assert residue == 0
            unet_output_shape((got, got), depth, padding)  # does not raise
            for smaller in range(asked, got):  # nothing smaller qualifies
                if ((smaller + 4) if padding == "valid" else smaller) % step == 0:
                    with pytest.raises(ValueError, match="too small"):
                        unet_output_shape((smaller, smaller), depth, padding)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_valid_input_shape_forward(padding: str) -> None:
    net = UNet(in_channels=3, classes=2, depth=3, branching_factor=2, padding=padding).eval()
    shape = net.valid_input_shape((90, 100))
    with torch.no_grad():
        output = net(torch.randn(1, 3, *shape))
    expected = shape if padding == "same" else tuple(s - 12 * 8 + 8 for s in shape)
    assert tuple(output.shape[2:]) == net.output_shape(shape) == expected


def test_same_padding_output_pixels_are_centred_on_their_input() -> None:
    """With 'same' padding output pixel (i, j) depends on a window centred on input (i, j)."""
    torch.manual_seed(0)
    net = UNet(in_channels=1, classes=1, depth=2, branching_factor=2, padding="same").eval()
    x = torch.randn(1, 1, 64, 64, requires_grad=True)
    net(x)[0, 0, 40, 20].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    assert abs((rows.min() + rows.max()).item() / 2 - 40) <= 1
    assert abs((cols.min() + cols.max()).item() / 2 - 20) <= 1


def test_too_small_input_raises() -> None:
    net = UNet(depth=2, branching_factor=1, padding="valid")
    with pytest.raises(ValueError, match="too small"):
        net.output_shape((20, 100))
    with pytest.raises(ValueError, match="too small"):
        net(torch.zeros(1, 3, 20, 100))
    with pytest.raises(ValueError, match="too small"):
        UNet(depth=3, branching_factor=1, padding="same")(torch.zeros(1, 3, 7, 8))


def test_wrong_channels_raise() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        UNet(depth=1, branching_factor=1)(torch.zeros(1, 1, 64, 64))


@pytest.mark.parametrize(
    "options",
    [
        {"padding": "valid"},
        {"padding": "same", "residual": True, "batch_norm": True},
        {"padding": "valid", "downsampling": "strided", "upsampling": "interpolate"},
    ],
)
def test_gradients_flow(options: dict) -> None:
    torch.manual_seed(1)
    net = UNet(in_channels=3, classes=2, depth=2, branching_factor=2, **options)
    sgd_step_changes_every_parameter(net, torch.randn(2, 3, 52, 52))


def test_eval_is_deterministic_and_dropout_is_active_in_training() -> None:
    torch.manual_seed(2)
    net = UNet(
        depth=2, branching_factor=2, batch_norm=True, dropout_layers=3, dropout_probability=0.5
    )
    x = torch.randn(2, 3, 68, 68)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        net.train()
        assert not torch.equal(net(x), net(x))


@pytest.mark.parametrize("dropout_layers, expected", [(0, 0), (1, 1), (2, 3), (4, 7)])
def test_dropout_layers_count_levels_from_the_bottom(dropout_layers: int, expected: int) -> None:
    net = UNet(depth=3, branching_factor=1, dropout_layers=dropout_layers)
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout2d)]
    assert len(dropouts) == expected
    if dropout_layers == 1:
        assert isinstance(net.bottom.dropout, nn.Dropout2d)


def test_filters_double_per_level() -> None:
    net = UNet(in_channels=3, classes=5, depth=3, branching_factor=3)
    assert [e.conv1.out_channels for e in net.encoders] == [8, 16, 32]
    assert net.bottom.conv1.out_channels == 64
    assert net.head.out_channels == 5


def test_config_rebuilds_the_network() -> None:
    net = UNet(in_channels=4, classes=3, depth=2, branching_factor=2, padding="same", residual=True)
    config = json.loads(json.dumps(net.config))
    rebuilt = UNet(**config)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), rebuilt.eval()(x))


@pytest.mark.parametrize(
    "options, argument, valid",
    [
        ({"padding": "full"}, "padding", "'valid', 'same'"),
        ({"depth": 0}, "depth", ">= 1"),
        ({"downsampling": "avgpool"}, "downsampling", "'maxpool', 'strided'"),
        ({"upsampling": "nearest"}, "upsampling", "'transposed', 'interpolate'"),
        ({"depth": 2, "dropout_layers": 4}, "dropout_layers", "0..3"),
        ({"dropout_probability": 1.0}, "dropout_probability", "[0, 1)"),
        ({"branching_factor": -1}, "branching_factor", ">= 0"),
        ({"classes": 0}, "classes", ">= 1"),
        ({"in_channels": 2.0}, "in_channels", ">= 1"),
        ({"batch_norm": "yes"}, "batch_norm", "True or False"),
        ({"residual": 1}, "residual", "True or False"),
    ],
)
def test_bad_arguments_raise(options: dict, argument: str, valid: str) -> None:
    with pytest.raises(ValueError) as error:
        UNet(**options)
    assert argument in str(error.value)
    assert valid in str(error.value)


def test_size_helpers_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="padding"):
        unet_output_shape((100, 100), padding="full")
    with pytest.raises(ValueError, match="depth"):
        unet_valid_input_shape((100, 100), depth=0)
    with pytest.raises(ValueError, match="input_shape"):
        unet_output_shape((100,))
