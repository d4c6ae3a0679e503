"""HoVer-Net (Graham et al., 2019) in plain :mod:`torch.nn`, weight-compatible with the original.

HoVer-Net segments and classifies nuclei with one encoder and three decoders of identical
structure:

* the encoder is a pre-activation ResNet-50 (``conv0`` + residual groups ``d0`` .. ``d3`` of 3,
  4, 6 and 3 bottleneck units): a 7x7 stride-1 stem convolution, no max-pooling, strides 1, 2,
  2, 2, so the deepest map is 1/8 of the input; a 1x1 convolution ``conv_bot`` reduces its
  2048 channels to 1024;
* every decoder upsamples by 2 three times (fixed 2x2 "unpooling", i.e. nearest neighbour),
  adds the encoder map of the same scale and applies ``u3`` (a convolution, a dense block of 8
  units, a 1x1 convolution), ``u2`` (the same with 4 dense units), ``u1`` (a "same"-padded
  convolution) and ``u0`` (batch norm, ReLU and a 1x1 convolution with bias to the outputs);
* **NP** (nuclear pixels): 2 channels, background/nucleus logits; **HV**: 2 channels, the
  horizontal (channel 0, along columns) and vertical (channel 1, along rows) distance maps in
  [-1, 1]; **TP** (types, optional): ``types`` logits, type 0 being the background.

Modes
-----
``"original"``
    valid (unpadded) stem and decoder convolutions, decoder kernel 5: 270 x 270 -> 80 x 80
    (the CoNSeP, Kumar and CPM17 checkpoints). In general an input of ``8k + 6`` pixels
    (``k >= 24``) gives ``8k - 184``: the output is the input minus 190.
``"fast"``
    "same"-padded stem, decoder kernel 3: 256 x 256 -> 164 x 164 (the PanNuke and MoNuSAC
    checkpoints); an input of ``8k`` pixels (``k >= 12``) gives ``8k - 92``.

The output is centred on the input (the original crops its targets to the central output
window): 95 pixels are lost on each side in ``original`` mode, 46 in ``fast`` mode. Other input
sizes raise :class:`ValueError` naming the nearest valid ones. :func:`hovernet_output_shape`
and :func:`hovernet_input_shape` compute the sizes without running the network.

Weights
-------
Module and parameter names are those of the original PyTorch code (``vqdang/hover_net``,
``models/hovernet/net_desc.py``), slashes included (``conv0./.weight``,
``d1.units.2.conv1/bn.running_mean``, ``decoder.np.u3.dense.units.0.preact_bna/bn.weight``,
``upsample2x.unpool_mat``), so the published checkpoints (the ``"desc"`` state dict of
``hovernet_original_kumar_notype_tf2pytorch.tar``, ``hovernet_fast_pannuke_type_tf2pytorch.tar``
...) load with ``load_state_dict(..., strict=True)`` once a ``module.`` prefix is removed
(:func:`digipath.models.hovernet_model.import_hovernet_checkpoint` does that and writes a
digipath model file).

Input scaling differs from the original on purpose: the original divides its 0-255 input by 255
inside ``forward``; this network takes the already normalised image, RGB in [0, 1] (the
``rgb_to_0-1`` normalisation), which is what the published weights expect after that division.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from digipath.models.networks._checks import (
    Shape,
    check_bool,
    check_choice,
    check_input,
    check_int,
    check_shape,
)

MODES = ("original", "fast")
"""Accepted values of ``mode``."""

ENCODER_MODULES = ("conv0", "d0", "d1", "d2", "d3")
"""The modules :meth:`HoVerNet.freeze_encoder` freezes (``conv_bot`` stays trainable, as in the
original)."""

_DECODER_KERNEL = {"original": 5, "fast": 3}
_SKIP_CROP = {"original": (184, 72), "fast": (92, 36)}
"""Pixels the original removes from the ``d0`` and ``d1`` skip connections (centre crop)."""
_BN_EPS = 1e-5


# --------------------------------------------------------------------------------------------
# Size arithmetic


def _trace(size: int, mode: str) -> int | None:
    """Output size along one axis for an input of ``size`` pixels, ``None`` if it does not fit."""
    kernel = _DECODER_KERNEL[mode]
    crop0, crop1 = _SKIP_CROP[mode]
    d0 = size - 6 if mode == "original" else size  # the 7x7 stem: valid / same
    if d0 < 1:
        return None
    d1 = -(-d0 // 2)  # TF "same" padding with stride 2: ceil
    d2 = -(-d1 // 2)
    d3 = -(-d2 // 2)
    skip0, skip1 = d0 - crop0, d1 - crop1
    u3 = 2 * d3
    if u3 != d2:
        return None
    u3 -= (kernel - 1) * (1 + 8)  # conva and 8 dense units, all valid
    if u3 < 1 or 2 * u3 != skip1:
        return None
    u2 = 2 * u3 - (kernel - 1) * (1 + 4)  # conva and 4 dense units
    if u2 < 1 or 2 * u2 != skip0:
        return None
    return 2 * u2  # u1 pads ("same"), u0 is 1x1


def _nearest_valid(size: int, mode: str) -> tuple[int | None, int | None]:
    """The nearest input sizes below and above ``size`` that the network accepts."""
    below = next((s for s in range(size, 0, -1) if _trace(s, mode) is not None), None)
    above = max(size, 1)
    while _trace(above, mode) is None:
        above += 1
    return below, above


def hovernet_output_shape(input_shape: Shape, mode: str = "original") -> Shape:
    """Output size of a :class:`HoVerNet` for an input of ``input_shape`` pixels.

    Parameters
    ----------
    input_shape
        Input size ``(rows, cols)`` in pixels.
    mode
        ``"original"`` (valid convolutions; ``rows = 8k + 6``, ``k >= 24``, gives
        ``rows - 190``) or ``"fast"`` (``rows = 8k``, ``k >= 12``, gives ``rows - 92``).

    Returns
    -------
    tuple of int
        Output size ``(rows, cols)`` in pixels: 80 x 80 for 270 x 270 in ``original`` mode,
        164 x 164 for 256 x 256 in ``fast`` mode.

    Raises
    ------
    ValueError
        If the mode is unknown or an axis does not fit the network, naming the nearest valid
        input sizes.
    """
    rows, cols = check_shape("input_shape", input_shape)
    mode = check_choice("mode", mode, MODES)
    output = []
    for axis, size in (("rows", rows), ("cols", cols)):
        traced = _trace(size, mode)
        if traced is None:
            below, above = _nearest_valid(size, mode)
            rule = "8k + 6 with k >= 24" if mode == "original" else "8k with k >= 12"
            nearest = f"{below} or {above}" if below is not None else f"{above}"
            raise ValueError(
                f"input_shape {(rows, cols)}: {size} {axis} do not fit a HoVer-Net in {mode!r} "
                f"mode (sizes {rule}); the nearest valid size is {nearest}"
            )
        output.append(traced)
    return output[0], output[1]


def hovernet_input_shape(output_shape: Shape, mode: str = "original") -> Shape:
    """The input size whose :func:`hovernet_output_shape` is ``output_shape``.

    Parameters
    ----------
    output_shape
        Wanted output size ``(rows, cols)`` in pixels: a multiple of 8 (at least 8) in
        ``original`` mode, ``8k + 4`` (at least 4) in ``fast`` mode.
    mode
        ``"original"`` or ``"fast"``.

    Returns
    -------
    tuple of int
        Input size ``(rows, cols)``: the output plus 190 (``original``) or 92 (``fast``).

    Raises
    ------
    ValueError
        If no input size gives that output.
    """
    rows, cols = check_shape("output_shape", output_shape)
    mode = check_choice("mode", mode, MODES)
    border = 190 if mode == "original" else 92
    shape = (rows + border, cols + border)
    for size, wanted in zip(shape, (rows, cols), strict=True):
        if _trace(size, mode) != wanted:
            rule = "a multiple of 8" if mode == "original" else "8k + 4"
            raise ValueError(
                f"output_shape {(rows, cols)}: a HoVer-Net in {mode!r} mode produces outputs of "
                f"{rule} pixels per axis, got {wanted}"
            )
    return shape


# --------------------------------------------------------------------------------------------
# Building blocks (names as in the original, for its checkpoints)


def _centre_crop(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The central ``rows x cols`` window of an ``(N, C, H, W)`` tensor (extra pixel at the end)."""
    top = (x.shape[2] - rows) // 2
    left = (x.shape[3] - cols) // 2
    return x[:, :, top : top + rows, left : left + cols]


class TFSamePadding(nn.Module):
    """Zero padding that makes the following convolution behave like TensorFlow's ``"same"``.

    For an axis of ``n`` pixels, a kernel ``k`` and a stride ``s`` it pads ``max(k - s, 0)``
    (``n`` divisible by ``s``) or ``max(k - n % s, 0)`` pixels in total, the extra pixel of an
    odd total at the bottom/right; the convolution then yields ``ceil(n / s)`` pixels. The
    original computes the padding from the rows only (square inputs); this one per axis.

    Parameters
    ----------
    kernel_size
        Side ``k`` of the (square) kernel of the following convolution, in pixels.
    stride
        Its stride ``s``.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def _amount(self, size: int) -> tuple[int, int]:
        if size % self.stride == 0:
            total = max(self.kernel_size - self.stride, 0)
        else:
            total = max(self.kernel_size - size % self.stride, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(N, C, H, W)`` zero-padded on the four sides."""
        top, bottom = self._amount(x.shape[2])
        left, right = self._amount(x.shape[3])
        return F.pad(x, (left, right, top, bottom), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


def _conv(in_channels: int, out_channels: int, kernel_size: int, **options: Any) -> nn.Conv2d:
    options.setdefault("bias", False)
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=0, **options)


class ResidualGroup(nn.Module):
    """A group of pre-activation bottleneck units (the original's ``ResidualBlock``).

    Unit ``i`` is ``[preact/bn, preact/relu,] conv1 (1x1), conv1/bn, conv1/relu, conv2/pad,
    conv2 (3x3, stride on the first unit), conv2/bn, conv2/relu, conv3 (1x1)``; the first unit
    has no pre-activation (the previous group's ``blk_bna``, or the stem, ends with one). Each
    unit's output is added to its input (through the 1x1 ``shortcut`` convolution for the
    first unit when the channels or the size change); ``blk_bna`` (batch norm + ReLU) closes the
    group.

    Parameters
    ----------
    in_channels
        Input channels.
    widths
        Output channels of ``conv1``, ``conv2`` and ``conv3``.
    count
        Number of units.
    stride
        Stride of the first unit's ``conv2`` (and of the shortcut).
    """

    def __init__(
        self, in_channels: int, widths: tuple[int, int, int], count: int, stride: int = 1
    ) -> None:
        super().__init__()
        self.units = nn.ModuleList()
        unit_in = in_channels
        for index in range(count):
            unit_stride = stride if index == 0 else 1
            layers: list[tuple[str, nn.Module]] = []
            if index > 0:
                layers += [("preact/bn", _bn(unit_in)), ("preact/relu", nn.ReLU(inplace=True))]
            layers += [
                ("conv1", _conv(unit_in, widths[0], 1)),
                ("conv1/bn", _bn(widths[0])),
                ("conv1/relu", nn.ReLU(inplace=True)),
                ("conv2/pad", TFSamePadding(3, unit_stride)),
                ("conv2", _conv(widths[0], widths[1], 3, stride=unit_stride)),
                ("conv2/bn", _bn(widths[1])),
                ("conv2/relu", nn.ReLU(inplace=True)),
                ("conv3", _conv(widths[1], widths[2], 1)),
            ]
            self.units.append(nn.Sequential(OrderedDict(layers)))
            unit_in = widths[2]
        if in_channels != widths[2] or stride != 1:
            self.shortcut: nn.Conv2d | None = _conv(in_channels, widths[2], 1, stride=stride)
        else:
            self.shortcut = None
        self.blk_bna = nn.Sequential(
            OrderedDict([("bn", _bn(widths[2])), ("relu", nn.ReLU(inplace=True))])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The group's activated output ``(N, widths[2], ceil(H / stride), ceil(W / stride))``."""
        shortcut = x if self.shortcut is None else self.shortcut(x)
        for unit in self.units:
            x = unit(x) + shortcut
            shortcut = x
        return self.blk_bna(x)


class DenseGroup(nn.Module):
    """A dense block of the decoder (the original's ``DenseBlock``), valid convolutions only.

    Unit ``i`` is ``preact_bna/bn, preact_bna/relu, conv1 (1x1 to 128), conv1/bn, conv1/relu,
    conv2 (k x k to 32, 4 groups)``; its output is concatenated to its (centre-cropped) input, so
    each unit adds 32 channels and removes ``k - 1`` pixels per axis. ``blk_bna`` (batch norm +
    ReLU) closes the block.

    Parameters
    ----------
    in_channels
        Input channels.
    kernel_size
        ``k`` of the units' second convolution.
    count
        Number of units.
    """

    def __init__(self, in_channels: int, kernel_size: int, count: int) -> None:
        super().__init__()
        self.units = nn.ModuleList()
        channels = in_channels
        for _ in range(count):
            layers = [
                ("preact_bna/bn", _bn(channels)),
                ("preact_bna/relu", nn.ReLU(inplace=True)),
                ("conv1", _conv(channels, 128, 1)),
                ("conv1/bn", _bn(128)),
                ("conv1/relu", nn.ReLU(inplace=True)),
                ("conv2", _conv(128, 32, kernel_size, groups=4)),
            ]
            self.units.append(nn.Sequential(OrderedDict(layers)))
            channels += 32
        self.out_channels = channels
        self.blk_bna = nn.Sequential(
            OrderedDict([("bn", _bn(channels)), ("relu", nn.ReLU(inplace=True))])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels + 32 * count, H - count * (k - 1), W - count * (k - 1))``."""
        for unit in self.units:
            new = unit(x)
            x = torch.cat([_centre_crop(x, new.shape[2], new.shape[3]), new], dim=1)
        return self.blk_bna(x)


class Unpool2x(nn.Module):
    """Fixed 2x2 unpooling (TensorPack's ``FixedUnpooling``): every pixel becomes a 2x2 block.

    Output pixel ``(2i + a, 2j + b)`` is ``x[i, j] * unpool_mat[a, b]``; ``unpool_mat`` is a
    constant 2x2 buffer of ones (kept, as in the original, because its checkpoints hold it), so
    this is nearest-neighbour upsampling, deterministic and bit-exact.
    """

    unpool_mat: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("unpool_mat", torch.ones(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, C, 2H, 2W)``."""
        n, c, h, w = x.shape
        matrix = self.unpool_mat.to(dtype=x.dtype)
        blocks = x[:, :, :, None, :, None] * matrix[None, None, None, :, None, :]
        return blocks.reshape(n, c, 2 * h, 2 * w)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The buffer is a constant; a checkpoint converted without it still loads strictly.
        state_dict.setdefault(prefix + "unpool_mat", self.unpool_mat.detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _decoder_branch(out_channels: int, kernel_size: int) -> nn.Sequential:
    """One decoder (``u3``, ``u2``, ``u1``, ``u0``) with ``out_channels`` outputs."""
    u3 = nn.Sequential(
        OrderedDict([
            ("conva", _conv(1024, 256, kernel_size)),
            ("dense", DenseGroup(256, kernel_size, 8)),
            ("convf", _conv(512, 512, 1)),
        ])
    )  # fmt: skip
    u2 = nn.Sequential(
        OrderedDict([
            ("conva", _conv(512, 128, kernel_size)),
            ("dense", DenseGroup(128, kernel_size, 4)),
            ("convf", _conv(256, 256, 1)),
        ])
    )  # fmt: skip
    u1 = nn.Sequential(
        OrderedDict([
            ("conva/pad", TFSamePadding(kernel_size, 1)),
            ("conva", _conv(256, 64, kernel_size)),
        ])
    )  # fmt: skip
    u0 = nn.Sequential(
        OrderedDict([
            ("bn", _bn(64)),
            ("relu", nn.ReLU(inplace=True)),
            ("conv", _conv(64, out_channels, 1, bias=True)),
        ])
    )  # fmt: skip
    return nn.Sequential(OrderedDict([("u3", u3), ("u2", u2), ("u1", u1), ("u0", u0)]))


# --------------------------------------------------------------------------------------------
# The network


class HoVerNet(nn.Module):
    """HoVer-Net: nuclear pixel, horizontal/vertical distance and type maps of an image.

    Parameters
    ----------
    in_channels
        Channels ``C`` of the input (3 for RGB, as the published weights).
    types
        Number of nucleus types of the TP branch, background (type 0) included (6 for PanNuke,
        5 for CoNSeP), at least 2; ``None`` (default): no TP branch.
    mode
        ``"original"`` (270 -> 80, decoder kernel 5) or ``"fast"`` (256 -> 164, kernel 3); see
        the module docstring. It must match the checkpoint.
    freeze_encoder
        Start with the encoder frozen (see :meth:`freeze_encoder`), as the first training phase
        of the original recipe.

    Notes
    -----
    Input ``(N, in_channels, H, W)`` float32, RGB in [0, 1]; :func:`hovernet_output_shape`
    gives the accepted sizes and the output size ``(h, w)``. :meth:`forward` returns raw
    outputs (no softmax): ``{"np": (N, 2, h, w), "hv": (N, 2, h, w)[, "tp": (N, types, h,
    w)]}``.

    Convolutions are initialised as in the original (Kaiming normal, fan out), batch norms with
    weight 1 and bias 0. The constructor arguments are plain JSON values; :attr:`config`
    returns them, so that ``HoVerNet(**net.config)`` rebuilds the architecture.
    """

    def __init__(
        self,
        in_channels: int = 3,
        types: int | None = None,
        mode: str = "original",
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, 1)
        if types is not None:
            types = check_int("types", types, 2)
        mode = check_choice("mode", mode, MODES)
        freeze_encoder = check_bool("freeze_encoder", freeze_encoder)
        self.in_channels = in_channels
        self.types = types
        self.mode = mode
        self._frozen = False
        self._update_statistics = False

        stem: list[tuple[str, nn.Module]] = [
            ("/", _conv(in_channels, 64, 7)),
            ("bn", _bn(64)),
            ("relu", nn.ReLU(inplace=True)),
        ]
        if mode == "fast":
            stem.insert(0, ("pad", TFSamePadding(7, 1)))
        self.conv0 = nn.Sequential(OrderedDict(stem))
        self.d0 = ResidualGroup(64, (64, 64, 256), 3, stride=1)
        self.d1 = ResidualGroup(256, (128, 128, 512), 4, stride=2)
        self.d2 = ResidualGroup(512, (256, 256, 1024), 6, stride=2)
        self.d3 = ResidualGroup(1024, (512, 512, 2048), 3, stride=2)
        self.conv_bot = _conv(2048, 1024, 1)

        kernel = _DECODER_KERNEL[mode]
        branches: list[tuple[str, nn.Module]] = []
        if types is not None:
            branches.append(("tp", _decoder_branch(types, kernel)))  # the original's order
        branches += [("np", _decoder_branch(2, kernel)), ("hv", _decoder_branch(2, kernel))]
        self.decoder = nn.ModuleDict(OrderedDict(branches))
        self.upsample2x = Unpool2x()

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if freeze_encoder:
            self.freeze_encoder(True)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (plain JSON values): ``HoVerNet(**config)`` rebuilds it."""
        return {
            "in_channels": self.in_channels,
            "types": self.types,
            "mode": self.mode,
            "freeze_encoder": self._frozen,
        }

    # -- geometry -----------------------------------------------------------------------------

    def output_shape(self, input_shape: Shape) -> Shape:
        """Output size ``(rows, cols)`` in pixels for an input of ``input_shape`` pixels.

        See :func:`hovernet_output_shape`: ``(270, 270) -> (80, 80)`` in ``original`` mode,
        ``(256, 256) -> (164, 164)`` in ``fast`` mode; ValueError for sizes that do not fit.
        """
        return hovernet_output_shape(input_shape, self.mode)

    def input_shape(self, output_shape: Shape) -> Shape:
        """The input size ``(rows, cols)`` for ``output_shape`` (:func:`hovernet_input_shape`)."""
        return hovernet_input_shape(output_shape, self.mode)

    @property
    def border(self) -> int:
        """Input pixels lost on each side of the output: 95 (``original``) or 46 (``fast``)."""
        return 95 if self.mode == "original" else 46

    # -- encoder freezing ---------------------------------------------------------------------

    def encoder_modules(self) -> Iterator[nn.Module]:
        """The encoder's modules: ``conv0`` and the residual groups ``d0`` .. ``d3``."""
        for name in ENCODER_MODULES:
            yield getattr(self, name)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """The encoder's parameters (those :meth:`freeze_encoder` freezes)."""
        for module in self.encoder_modules():
            yield from module.parameters()

    @property
    def encoder_frozen(self) -> bool:
        """Whether the encoder is frozen."""
        return self._frozen

    def freeze_encoder(self, frozen: bool = True, *, update_statistics: bool = False) -> None:
        """Freeze (or unfreeze) the encoder, for the first phase of the original recipe.

        A frozen encoder's parameters (``conv0``, ``d0`` .. ``d3``) get no gradient
        (``requires_grad=False``), and its batch norms stay in evaluation mode even while the
        network trains (:meth:`train` keeps them so), using and keeping their running
        statistics; ``conv_bot`` and the decoders train. Unfreezing restores gradients and lets
        :meth:`train` / :meth:`eval` switch the batch norms again.

        Parameters
        ----------
        frozen
            Freeze (``True``) or unfreeze (``False``).
        update_statistics
            Keep the frozen encoder's batch norms in training mode (batch statistics, running
            averages updated), as the original's ``freeze=True`` does: it only disables
            gradients (of ``d0``'s residual units and of ``d1`` .. ``d3``; the original still
            trains ``conv0``, ``d0.shortcut`` and ``d0.blk_bna`` in that phase, which is not
            reproduced here).

        Notes
        -----
        An optimiser built over all parameters simply skips the frozen ones (they have no
        gradient), so the same optimiser serves both phases.
        """
        frozen = check_bool("frozen", frozen)
        update_statistics = check_bool("update_statistics", update_statistics)
        for parameter in self.encoder_parameters():
            parameter.requires_grad_(not frozen)
        self._frozen = frozen
        self._update_statistics = update_statistics
        self.train(self.training)

    def train(self, mode: bool = True) -> HoVerNet:
        """Set training mode; a frozen encoder's batch norms stay in evaluation mode."""
        super().train(mode)
        if mode and self._frozen and not self._update_statistics:
            for module in self.encoder_modules():
                module.eval()
        return self

    # -- forward ------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four maps the decoders take: ``d0`` and ``d1`` cropped, ``d2``, ``conv_bot(d3)``.

        Parameters
        ----------
        x
            ``(N, in_channels, H, W)`` float32, a size :meth:`output_shape` accepts.

        Returns
        -------
        list of Tensor
            ``[d0 (256 ch), d1 (512 ch), d2 (1024 ch), bottleneck (1024 ch)]``, full resolution
            to 1/8.
        """
        d0 = self.d0(self.conv0(x))
        d1 = self.d1(d0)
        d2 = self.d2(d1)
        d3 = self.conv_bot(self.d3(d2))
        crop0, crop1 = _SKIP_CROP[self.mode]
        d0 = _centre_crop(d0, d0.shape[2] - crop0, d0.shape[3] - crop0)
        d1 = _centre_crop(d1, d1.shape[2] - crop1, d1.shape[3] - crop1)
        return [d0, d1, d2, d3]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs of an ``(N, in_channels, H, W)`` batch (RGB in [0, 1]).

        Returns
        -------
        dict of str to Tensor
            ``"np"``: ``(N, 2, h, w)`` background/nucleus logits; ``"hv"``: ``(N, 2, h, w)``
            horizontal (channel 0) and vertical (channel 1) maps; ``"tp"``: ``(N, types, h,
            w)`` type logits (only with ``types``). ``(h, w)`` is :meth:`output_shape`.

        Raises
        ------
        ValueError
            If the input is not ``(N, in_channels, H, W)`` or its size does not fit.
        """
        check_input("HoVerNet", x, self.in_channels)
        self.output_shape((int(x.shape[2]), int(x.shape[3])))  # raises ValueError naming sizes
        d0, d1, d2, d3 = self.encode(x)
        outputs: dict[str, torch.Tensor] = {}
        for name, branch in self.decoder.items():
            u3 = branch.u3(self.upsample2x(d3) + d2)
            u2 = branch.u2(self.upsample2x(u3) + d1)
            u1 = branch.u1(self.upsample2x(u2) + d0)
            outputs[name] = branch.u0(u1)
        return {name: outputs[name] for name in ("np", "hv", "tp") if name in outputs}
