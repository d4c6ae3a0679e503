"""LevelNet: patch mode for training, an exact dense mode for whole-slide inference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from network_checks import sgd_step_changes_every_parameter

from digipath.models.networks import LevelNet
from digipath.models.registry import model_class


def test_patch_output_and_reference_size():
    net = LevelNet(classes=3)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 3, 1, 1)
    assert LevelNet(**net.config).config == net.config
    # the reference network's widths: conv 5x5 32, 32, 64 (the last covers the 5x5 field)
    assert net.conv3.kernel_size == (5, 5)


@settings(max_examples=15, deadline=None)
@given(
    rows=st.integers(32, 70), cols=st.integers(32, 70), seed=st.integers(0, 2**16),
    size=st.sampled_from([26, 32]),
)  # fmt: skip
def test_dense_mode_is_every_patch_exactly(rows, cols, seed, size):
    """Dense output (i, j) is the patch classification of the window at (i, j)."""
    torch.manual_seed(seed)
    net = LevelNet(
        classes=2, input_size=size, widths=[4, 5, 6], hidden=7, kernel=3 if size == 26 else 5
    )
    net.eval()
    x = torch.randn(1, 3, rows, cols)
    with torch.no_grad():
        dense = net(x)
        assert dense.shape == (1, 2, rows - size + 1, cols - size + 1)
        for i, j in [(0, 0), (rows - size, cols - size), ((rows - size) // 2, (cols - size) // 3)]:
            patch = net(x[:, :, i : i + size, j : j + size])[0, :, 0, 0]
            torch.testing.assert_close(dense[0, :, i, j], patch, rtol=1e-4, atol=1e-5)


def test_invalid_sizes_are_refused():
    with pytest.raises(ValueError, match="input_size"):
        LevelNet(input_size=33)
    with pytest.raises(ValueError, match="at least"):
        LevelNet()(torch.zeros(1, 3, 31, 40))


def test_gradients_reach_every_parameter():
    sgd_step_changes_every_parameter(
        LevelNet(classes=3, widths=[4, 4, 8]), torch.randn(4, 3, 32, 32)
    )


def test_model_reconstruction_centres_the_window():
    """Output pixel i stands for input pixel i + 16: the reference's window r - 16 ... r + 15."""
    model = model_class("levelnet")(classes=3, input_shape=(32, 32), widths=[4, 4, 8]).build()
    info = model.reconstruction_info((287, 287))
    assert info.output_shape == (256, 256)
    assert info.lost == (16, 15, 16, 15)
    assert info.downsampling == (1.0, 1.0)
    assert model.module.input_size == 32
