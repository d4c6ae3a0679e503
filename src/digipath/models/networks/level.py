"""LevelNet: RADHicaL's per-level patch classifier, trained on patches, applied densely.

RADHicaL classifies every pixel of a level by the ``32 x 32`` patch centred on it, with a
CIFAR-10 "quick" style network (reference ``seeds-deephealth-radhical.md`` §5.1), patch by
patch. :class:`LevelNet` keeps that network's shape but with unpadded ("valid") convolutions,
so that the class of a pixel depends only on its own window; then one network runs in two
modes with the same weights:

* **patches** (an input of exactly ``input_size``): ``conv k x k -> max-pool 2/2 -> ReLU ->
  conv k x k -> ReLU -> avg-pool 2/2 -> conv (whole field) -> ReLU -> 1x1 -> 1x1`` gives
  ``(N, classes, 1, 1)``, cheap for training;
* **dense** (any larger input ``H x W``): the same layers with the poolings at stride 1 and the
  layers after them dilated by the accumulated stride (2, then 4) — the "filter rarefaction"
  of Giusti et al. 2013 — give ``(N, classes, H - input_size + 1, W - input_size + 1)``: the
  patch classification of *every* window, exactly, in one fully convolutional pass, instead
  of one forward pass per pixel.

Output pixel ``(i, j)`` of the dense mode classifies the window ``[i, i + input_size)``, i.e.
the pixel ``(i + input_size // 2, j + input_size // 2)`` with the window rows ``r - 16 ... r +
15`` of the reference (for 32 pixels).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from digipath.models.networks._checks import check_input, check_int


def _dilated_average(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """2x2 average pooling at stride 1 with ``dilation`` (torch has no dilated avg-pool)."""
    d = dilation
    return 0.25 * (x[..., :-d, :-d] + x[..., d:, :-d] + x[..., :-d, d:] + x[..., d:, d:])


class LevelNet(nn.Module):
    """RADHicaL's level classifier with an exact dense mode (see the module docstring).

    Parameters
    ----------
    in_channels
        Channels ``C`` of the input (3 for RGB).
    classes
        Number of outputs (3 at coarse levels: negative, mixed, all-positive; 2 at the
        finest).
    input_size
        The training patch side in pixels (32 as the reference): ``input_size - kernel + 1``
        and ``(input_size - kernel + 1) / 2 - kernel + 1`` must be even; the third convolution
        covers the half of the latter that is left (5 pixels for 32 and kernel 5).
    widths
        Filters of the three convolutions (reference: 32, 32, 64).
    hidden
        Units of the hidden fully connected layer (reference: 64).
    kernel
        Side of the first two convolutions (reference: 5).

    Notes
    -----
    Input ``(N, in_channels, H, W)`` float32; output raw logits ``(N, classes, h, w)``: ``1 x
    1`` for ``H = W = input_size`` and ``(H - input_size + 1, W - input_size + 1)`` for larger
    inputs. There is no nonlinearity between the two fully connected layers, as in Caffe's
    ``cifar10_quick``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 3,
        input_size: int = 32,
        widths: tuple[int, int, int] | list[int] = (32, 32, 64),
        hidden: int = 64,
        kernel: int = 5,
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, 1)
        classes = check_int("classes", classes, 1)
        kernel = check_int("kernel", kernel, 1)
        input_size = check_int("input_size", input_size, 3 * kernel + 1)
        field = input_size - (kernel - 1)  # after conv 1
        if field % 2:
            raise ValueError(f"input_size - kernel must be even, got {input_size} and {kernel}")
        field = field // 2 - (kernel - 1)  # after the 2x2 pooling and conv 2
        if field % 2 or field < 2:
            raise ValueError(f"input_size {input_size} does not fit kernel {kernel}")
        last = field // 2
        widths = [check_int("widths", w, 1) for w in widths]
        if len(widths) != 3:
            raise ValueError(f"widths must have 3 entries, got {widths}")
        hidden = check_int("hidden", hidden, 1)
        self._config: dict[str, Any] = {
            "in_channels": in_channels, "classes": classes, "input_size": input_size,
            "widths": list(widths), "hidden": hidden, "kernel": kernel,
        }  # fmt: skip
        self.in_channels = in_channels
        self.input_size = input_size
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel)
        self.conv2 = nn.Conv2d(widths[0], widths[1], kernel)
        self.conv3 = nn.Conv2d(widths[1], widths[2], last)
        self.fc1 = nn.Conv2d(widths[2], hidden, 1)
        self.fc2 = nn.Conv2d(hidden, classes, 1)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (plain JSON values): ``LevelNet(**config)`` rebuilds it."""
        return dict(self._config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch: ``1 x 1`` on patches, a dense map on larger inputs."""
        check_input("LevelNet", x, self.in_channels)
        rows, cols = x.shape[-2:]
        if rows < self.input_size or cols < self.input_size:
            raise ValueError(
                f"LevelNet needs inputs of at least {self.input_size} x {self.input_size} "
                f"pixels, got {rows} x {cols}"
            )
        if rows == cols == self.input_size:
            return self._patches(x)
        return self.dense(x)

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        return self.fc2(self.fc1(x))

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of every ``input_size`` (``s``) window: ``(N, K, H - s + 1, W - s + 1)``."""
        x = F.relu(F.max_pool2d(self.conv1(x), 2, stride=1))
        x = F.conv2d(x, self.conv2.weight, self.conv2.bias, dilation=2)
        x = _dilated_average(F.relu(x), 2)
        x = F.relu(F.conv2d(x, self.conv3.weight, self.conv3.bias, dilation=4))
        return self.fc2(self.fc1(x))
