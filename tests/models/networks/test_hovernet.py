"""HoVer-Net: sizes in both modes, the original checkpoints' names and shapes, freezing, import."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from digipath.errors import ModelError, ModelFileError
from digipath.models.networks.hovernet import (
    HoVerNet,
    TFSamePadding,
    Unpool2x,
    hovernet_input_shape,
    hovernet_output_shape,
)

# --------------------------------------------------------------------------------------------
# The original's state dict, written out from vqdang/hover_net models/hovernet/net_desc.py and
# net_utils.py (ResidualBlock, DenseBlock, create_decoder_branch) independently of the module


def _bn(keys: dict, prefix: str, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{prefix}.{name}"] = (channels,)
    keys[f"{prefix}.num_batches_tracked"] = ()


def original_state_shapes(types: int | None, mode: str, in_channels: int = 3) -> dict:
    """Every key of the original HoVer-Net's ``state_dict()`` with its shape."""
    k = 5 if mode == "original" else 3
    keys: dict[str, tuple[int, ...]] = {"conv0./.weight": (64, in_channels, 7, 7)}
    _bn(keys, "conv0.bn", 64)
    groups = [(64, (64, 64, 256), 3), (256, (128, 128, 512), 4),
              (512, (256, 256, 1024), 6), (1024, (512, 512, 2048), 3)]  # fmt: skip
    for g, (cin, (w1, w2, w3), count) in enumerate(groups):
        unit_in = cin
        for i in range(count):
            p = f"d{g}.units.{i}."
            if i > 0:  # the first unit has no pre-activation
                _bn(keys, p + "preact/bn", unit_in)
            keys[p + "conv1.weight"] = (w1, unit_in, 1, 1)
            _bn(keys, p + "conv1/bn", w1)
            keys[p + "conv2.weight"] = (w2, w1, 3, 3)
            _bn(keys, p + "conv2/bn", w2)
            keys[p + "conv3.weight"] = (w3, w2, 1, 1)
            unit_in = w3
        keys[f"d{g}.shortcut.weight"] = (w3, cin, 1, 1)  # every group changes channels or size
        _bn(keys, f"d{g}.blk_bna.bn", w3)
    keys["conv_bot.weight"] = (1024, 2048, 1, 1)
    branches = ([("tp", types)] if types else []) + [("np", 2), ("hv", 2)]
    for branch, out in branches:
        for u, cin, width, count in (("u3", 1024, 256, 8), ("u2", 512, 128, 4)):
            p = f"decoder.{branch}.{u}."
            keys[p + "conva.weight"] = (width, cin, k, k)
            channels = width
            for i in range(count):
                q = f"{p}dense.units.{i}."
                _bn(keys, q + "preact_bna/bn", channels)
                keys[q + "conv1.weight"] = (128, channels, 1, 1)
                _bn(keys, q + "conv1/bn", 128)
                keys[q + "conv2.weight"] = (32, 128 // 4, k, k)  # 4 groups
                channels += 32
            _bn(keys, p + "dense.blk_bna.bn", channels)
            keys[p + "convf.weight"] = (channels, channels, 1, 1)
        keys[f"decoder.{branch}.u1.conva.weight"] = (64, 256, k, k)
        _bn(keys, f"decoder.{branch}.u0.bn", 64)
        keys[f"decoder.{branch}.u0.conv.weight"] = (out, 64, 1, 1)
        keys[f"decoder.{branch}.u0.conv.bias"] = (out,)
    keys["upsample2x.unpool_mat"] = (2, 2)
    return keys


# Literal keys of the published checkpoints (as other converters of them name them).
PANNUKE_FAST_SAMPLES = {
    "conv0./.weight": (64, 3, 7, 7),
    "conv0.bn.running_var": (64,),
    "d0.units.0.conv1.weight": (64, 64, 1, 1),
    "d0.units.0.conv1/bn.running_mean": (64,),
    "d0.shortcut.weight": (256, 64, 1, 1),
    "d1.units.0.conv2.weight": (128, 128, 3, 3),
    "d1.shortcut.weight": (512, 256, 1, 1),
    "d2.units.5.preact/bn.weight": (1024,),
    "d3.units.2.conv3.weight": (2048, 512, 1, 1),
    "d3.blk_bna.bn.bias": (2048,),
    "conv_bot.weight": (1024, 2048, 1, 1),
    "decoder.np.u3.conva.weight": (256, 1024, 3, 3),
    "decoder.np.u3.dense.units.7.preact_bna/bn.weight": (480,),
    "decoder.np.u3.dense.units.7.conv2.weight": (32, 32, 3, 3),
    "decoder.np.u3.dense.blk_bna.bn.weight": (512,),
    "decoder.hv.u2.dense.units.3.conv1.weight": (128, 224, 1, 1),
    "decoder.hv.u2.convf.weight": (256, 256, 1, 1),
    "decoder.hv.u1.conva.weight": (64, 256, 3, 3),
    "decoder.tp.u0.bn.running_mean": (64,),
    "decoder.tp.u0.conv.weight": (6, 64, 1, 1),
    "decoder.tp.u0.conv.bias": (6,),
}


def random_state(shapes: dict, *, seed: int) -> dict[str, torch.Tensor]:
    """A state dict of these shapes, each tensor filled with its own value (cheap to make)."""
    state = {}
    for index, (key, shape) in enumerate(shapes.items()):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key == "upsample2x.unpool_mat":
            state[key] = torch.ones(2, 2)
        elif key.endswith("running_var"):
            state[key] = torch.full(shape, 1.0 + 0.01 * (index % 50))
        else:
            state[key] = torch.full(shape, 1e-4 * ((index * 7919 + seed) % 97 - 48))
    return state


@pytest.fixture(scope="module")
def fast_pannuke() -> HoVerNet:
    torch.manual_seed(0)
    return HoVerNet(types=6, mode="fast")


def test_state_dict_has_the_original_names_and_shapes(fast_pannuke):
    expected = original_state_shapes(6, "fast")
    for key, shape in PANNUKE_FAST_SAMPLES.items():
        assert expected[key] == shape, key  # the generated list agrees with the literal keys
    actual = {key: tuple(value.shape) for key, value in fast_pannuke.state_dict().items()}
    assert actual == expected
    assert len(expected) == 798  # conv0 6 + d0..d3 292 + conv_bot 1 + 3 x 166 + unpool_mat 1
    notype = HoVerNet(types=None, mode="original")
    shapes = {key: tuple(value.shape) for key, value in notype.state_dict().items()}
    assert shapes == original_state_shapes(None, "original")
    assert shapes["decoder.np.u3.conva.weight"] == (256, 1024, 5, 5)
    assert not any(key.startswith("decoder.tp") for key in shapes)


def test_original_checkpoint_loads_strictly(fast_pannuke):
    state = random_state(original_state_shapes(6, "fast"), seed=1)
    result = fast_pannuke.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    loaded = fast_pannuke.state_dict()
    assert torch.equal(loaded["decoder.tp.u0.conv.weight"], state["decoder.tp.u0.conv.weight"])
    # converted checkpoints may lack the constant buffers: still strict
    del state["upsample2x.unpool_mat"]
    fast_pannuke.load_state_dict(state, strict=True)
    with pytest.raises(RuntimeError, match=r"decoder\.tp\.u0\.conv\.bias"):
        fast_pannuke.load_state_dict(
            {k: v for k, v in state.items() if k != "decoder.tp.u0.conv.bias"}, strict=True
        )


# --------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize(
    ("mode", "size", "types", "expected"),
    [("original", 270, None, 80), ("fast", 256, 6, 164)],
)
def test_real_size_outputs(mode, size, types, expected):
    # the published input sizes, on the meta device: every layer runs, without the arithmetic
    with torch.device("meta"):
        net = HoVerNet(types=types, mode=mode)
        outputs = net(torch.empty(2, 3, size, size))
    assert list(outputs) == (["np", "hv", "tp"] if types else ["np", "hv"])
    assert tuple(outputs["np"].shape) == (2, 2, expected, expected)
    assert tuple(outputs["hv"].shape) == (2, 2, expected, expected)
    if types:
        assert tuple(outputs["tp"].shape) == (2, types, expected, expected)
    assert net.output_shape((size, size)) == (expected, expected)
    assert hovernet_input_shape((expected, expected), mode) == (size, size)


def test_forward_on_real_numbers_small_fast_input(fast_pannuke):
    net = fast_pannuke.eval()
    with torch.inference_mode():
        outputs = net(torch.rand(1, 3, 96, 104))
    assert tuple(outputs["np"].shape) == (1, 2, 4, 12) == (1, 2, *net.output_shape((96, 104)))
    assert tuple(outputs["tp"].shape) == (1, 6, 4, 12)
    assert all(torch.isfinite(v).all() for v in outputs.values())


def test_output_shape_arithmetic():
    assert hovernet_output_shape((270, 350)) == (80, 160)
    assert hovernet_output_shape((198, 198)) == (8, 8)
    assert hovernet_output_shape((256, 96), "fast") == (164, 4)
    assert hovernet_output_shape((1024, 1024), "fast") == (932, 932)
    with pytest.raises(ValueError, match=r"nearest valid size is 262 or 270"):
        hovernet_output_shape((265, 270))
    with pytest.raises(ValueError, match=r"256 or 264"):
        hovernet_output_shape((256, 260), "fast")
    with pytest.raises(ValueError, match="198"):  # too small: the smallest valid size
        hovernet_output_shape((100, 100))
    with pytest.raises(ValueError, match="multiple of 8"):
        hovernet_input_shape((81, 80))
    with pytest.raises(ValueError, match="mode"):
        hovernet_output_shape((270, 270), "medium")
    with pytest.raises(ValueError, match="types"):
        HoVerNet(types=1)
    net = HoVerNet(types=None, mode="fast")
    with pytest.raises(ValueError, match="nearest valid size"):
        net(torch.zeros(1, 3, 100, 100))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.zeros(1, 1, 96, 96))
    assert HoVerNet(**net.config).config == net.config


def test_blocks():
    pad = TFSamePadding(3, 2)
    assert tuple(pad(torch.zeros(1, 1, 8, 7)).shape) == (1, 1, 9, 9)  # (0, 1) rows, (1, 1) cols
    assert tuple(TFSamePadding(7, 1)(torch.zeros(1, 1, 5, 5)).shape) == (1, 1, 11, 11)
    up = Unpool2x()(torch.arange(4.0).reshape(1, 1, 2, 2))
    assert torch.equal(up[0, 0], torch.tensor([[0.0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3],
                                               [2, 2, 3, 3]]))  # fmt: skip


# --------------------------------------------------------------------------------------------
# Freezing


def _encoder_batch_norms(net: HoVerNet) -> list[nn.BatchNorm2d]:
    return [m for e in net.encoder_modules() for m in e.modules() if isinstance(m, nn.BatchNorm2d)]


def test_freezing_stops_encoder_gradients_and_statistics():
    torch.manual_seed(2)
    net = HoVerNet(types=None, mode="fast", freeze_encoder=True)
    assert net.encoder_frozen and net.config["freeze_encoder"]
    net.train()
    norms = _encoder_batch_norms(net)
    assert norms and not any(m.training for m in norms)
    assert net.decoder.np.u0.bn.training and net.training
    before = net.d1.blk_bna.bn.running_mean.clone()
    outputs = net(torch.rand(1, 3, 96, 96))
    (outputs["np"].sum() + outputs["hv"].square().sum()).backward()
    assert all(p.grad is None for p in net.encoder_parameters())
    assert net.conv_bot.weight.grad is not None
    assert net.decoder.np.u3.conva.weight.grad is not None
    assert torch.equal(net.d1.blk_bna.bn.running_mean, before)

    net.freeze_encoder(False)
    assert not net.encoder_frozen
    assert all(p.requires_grad for p in net.parameters())
    assert all(m.training for m in _encoder_batch_norms(net))
    net.freeze_encoder(True, update_statistics=True)  # the original's behaviour
    assert all(m.training for m in _encoder_batch_norms(net))
    assert not any(p.requires_grad for p in net.encoder_parameters())
    net.eval()
    assert not any(m.training for m in net.modules())


# --------------------------------------------------------------------------------------------
# The model type and the import of original checkpoints


class NotATensor:
    """Something a checkpoint must not smuggle in (unpickled only without weights_only)."""


def test_model_type_geometry_and_config():
    from digipath.models import MODELS, model_from_config

    assert MODELS["hovernet"].type == "hovernet"
    section = {"type": "hovernet", "mode": "fast", "types": 3, "freeze encoder": True}
    model = model_from_config(section, classes=3, input_channels=3, input_shape=(256, 256))
    assert model.types == 3 and model.mode == "fast" and model.classes == 3
    assert model.module.encoder_frozen
    info = model.reconstruction_info((256, 256))
    assert info.output_shape == (164, 164) and info.lost == (46, 46, 46, 46)
    assert model.metric_names() == ["loss", "accuracy", "np_ce", "np_dice", "hv_mse",
                                    "hv_msge", "tp_ce", "tp_dice"]  # fmt: skip
    # the optimiser holds the frozen encoder too, for phase 2
    held = {id(p) for group in model.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in held for p in model.module.encoder_parameters())
    model.freeze_encoder(False)
    assert not model.module.encoder_frozen and model.parameters()["freeze_encoder"] is False
    assert model.parameters()["loss"] == "hovernet"
    with pytest.raises(ModelError, match="loss"):
        MODELS["hovernet"](loss="dice")
    with pytest.raises(ModelError, match="unknown loss term"):
        MODELS["hovernet"](loss_options={"np_bce": 1.0})


def test_import_hovernet_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from digipath.cli.main import app
    from digipath.models import load_model, read_header
    from digipath.models.hovernet_model import import_hovernet_checkpoint

    state = random_state(original_state_shapes(6, "fast"), seed=3)
    # as the original's training saves it: DataParallel prefixes, under "desc"
    checkpoint = tmp_path / "hovernet_fast_pannuke_type_tf2pytorch.tar"
    desc = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save({"desc": desc}, checkpoint)
    target = tmp_path / "pannuke.safetensors"
    result = CliRunner().invoke(
        app, ["update-network", "--from-hovernet", str(checkpoint), "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert "hovernet model" in result.output and "fast mode, types 6" in result.output
    header = read_header(target)
    assert header["parameters"]["mode"] == "fast" and header["parameters"]["types"] == 6
    assert header["normalization"] == {"type": "rgb_to_0-1"}
    assert header["reconstruction"]["output_shape"] == [164, 164]
    assert header["provenance"]["imported_from"] == checkpoint.name
    model = load_model(target)
    loaded = model.module.state_dict()
    assert torch.equal(loaded["decoder.hv.u2.convf.weight"], state["decoder.hv.u2.convf.weight"])
    assert torch.equal(loaded["conv0./.weight"], state["conv0./.weight"])

    # names that do not match: a clear error
    renamed = tmp_path / "renamed.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, renamed)
    with pytest.raises(ModelFileError, match="not a state dict of the original HoVer-Net"):
        import_hovernet_checkpoint(renamed, tmp_path / "x.safetensors")
    broken = dict(state)
    broken["decoder.np.u2.convf.weight"] = torch.zeros(256, 255, 1, 1)
    del broken["d0.shortcut.weight"]
    broken["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.tar"
    torch.save({"desc": broken}, bad)
    with pytest.raises(ModelFileError) as caught:
        import_hovernet_checkpoint(bad, tmp_path / "x.safetensors")
    message = str(caught.value)
    assert "missing: d0.shortcut.weight" in message and "unexpected: extra.weight" in message
    assert "decoder.np.u2.convf.weight (256, 255, 1, 1)" in message
    # arbitrary objects are refused, never unpickled
    unsafe = tmp_path / "unsafe.tar"
    torch.save({"desc": {"conv0./.weight": NotATensor()}}, unsafe)
    with pytest.raises(ModelFileError, match="weights_only"):
        import_hovernet_checkpoint(unsafe, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    usage = CliRunner().invoke(app, ["update-network", "--from-hovernet", str(checkpoint)])
    assert usage.exit_code != 0 and "--output" in usage.output
