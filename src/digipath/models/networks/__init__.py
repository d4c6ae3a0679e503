"""Network architectures in plain :mod:`torch.nn`: U-Net, patch classifiers and ResNet.

Every network takes ``(N, C, H, W)`` float32 input and returns raw logits (no softmax). Every
constructor argument is a plain JSON value and each network's :attr:`config` returns them, so
``type(net)(**net.config)`` rebuilds the architecture. Bad arguments raise :class:`ValueError`
naming the argument and the accepted values.

:class:`UNet`
    dense segmentation, ``(N, classes, H', W')``; :func:`unet_output_shape` and
    :func:`unet_valid_input_shape` give the sizes.
:class:`NatureNet`
    fully convolutional patch classifier: ``(N, classes, 1, 1)`` on its training patch size, a
    dense map on larger inputs.
:class:`FCN`
    convolutions + global average pooling: ``(N, classes)`` for any input size.
:class:`CifarNet`
    the Caffe ``cifar10_quick`` classifier for 32x32 patches: ``(N, classes)``.
:class:`LevelNet`
    RADHicaL's per-level classifier: ``(N, classes, 1, 1)`` on its patches, the exact patch
    classification of every window on larger inputs.
:class:`ResNet`
    ResNet-18/34/50/101/152: ``(N, classes)``.
"""

from digipath.models.networks.classifiers import FCN, CifarNet, NatureNet
from digipath.models.networks.level import LevelNet
from digipath.models.networks.resnet import ResNet
from digipath.models.networks.unet import UNet, unet_output_shape, unet_valid_input_shape

__all__ = [
    "FCN",
    "CifarNet",
    "LevelNet",
    "NatureNet",
    "ResNet",
    "UNet",
    "unet_output_shape",
    "unet_valid_input_shape",
]
