"""Model types by name: the networks digipath ships, and a decorator for your own.

A model type is a :class:`~digipath.models.base.ModelBase` subclass registered under the name
the parameter file's ``model.type`` uses::

    from digipath.models import ModelBase, register_model

    @register_model("mynet")
    class MyNet(ModelBase):
        def create_network(self):
            return MyModule(self.input_channels, self.classes, **self.network_parameters)

Model files name their type, and loading looks it up here (never importing a class named in a
file), so a custom type must be registered (imported) before its files are loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from torch import nn

from digipath.errors import ModelError
from digipath.models.base import ModelBase
from digipath.models.networks import FCN, CifarNet, LevelNet, NatureNet, ResNet, UNet
from digipath.models.reconstruction import ReconstructionInfo

MODELS: dict[str, type[ModelBase]] = {}
"""Registered model types by name."""


def register_model(name: str) -> Callable[[type[ModelBase]], type[ModelBase]]:
    """Class decorator: register a :class:`ModelBase` subclass as model type ``name``."""

    def decorate(cls: type[ModelBase]) -> type[ModelBase]:
        if not (isinstance(cls, type) and issubclass(cls, ModelBase)):
            raise ModelError(f"model type {name!r}: {cls!r} is not a ModelBase subclass")
        if name in MODELS and MODELS[name] is not cls:
            raise ModelError(f"model type {name!r} is already registered ({MODELS[name]})")
        cls.type = name
        MODELS[name] = cls
        return cls

    return decorate


def model_class(name: str) -> type[ModelBase]:
    """The model class registered as ``name``; ``KeyError`` naming the valid types."""
    if name not in MODELS:
        raise KeyError(
            f"unknown model type {name!r}; registered types: {', '.join(sorted(MODELS))}"
        )
    return MODELS[name]


class NetworkModel(ModelBase):
    """A model whose network is ``network_class(in_channels, classes, **parameters)``."""

    network_class: ClassVar[type[nn.Module]]
    fixed: ClassVar[Mapping[str, Any]] = {}
    """Network parameters this type sets itself (e.g. ResNet's depth)."""

    def create_network(self) -> nn.Module:
        try:
            return self.network_class(
                in_channels=self.input_channels, classes=self.classes,
                **self.fixed, **self.network_parameters,
            )  # fmt: skip
        except TypeError as error:
            raise ModelError(f"model type {self.type!r}: {error}") from None


@register_model("unet")
class UNetModel(NetworkModel):
    """U-Net segmentation (:class:`~digipath.models.networks.UNet`)."""

    network_class = UNet


@register_model("naturenet")
class NatureNetModel(NetworkModel):
    """Fully convolutional patch classifier (:class:`~digipath.models.networks.NatureNet`)."""

    network_class = NatureNet


@register_model("fcn")
class FCNModel(NetworkModel):
    """Patch classifier with global pooling (:class:`~digipath.models.networks.FCN`)."""

    network_class = FCN


@register_model("cifar")
class CifarModel(NetworkModel):
    """RADHicaL's small CIFAR-style classifier (:class:`~digipath.models.networks.CifarNet`)."""

    network_class = CifarNet


@register_model("levelnet")
class LevelNetModel(NetworkModel):
    """RADHicaL's per-level classifier (:class:`~digipath.models.networks.LevelNet`).

    Trained on patches; applied to a tile of ``T`` pixels it classifies the ``T - s + 1``
    windows of side ``s`` (``input_size``), output pixel ``i`` standing for input pixel
    ``i + s // 2``: the lost border is ``s // 2`` at the top/left and ``s // 2 - 1`` at the
    bottom/right (the reference's window ``r - 16 ... r + 15``).
    """

    network_class = LevelNet

    def create_network(self) -> nn.Module:
        if "input_size" not in self.network_parameters and self.input_shape is not None:
            self.network_parameters["input_size"] = int(self.input_shape[0])  # the patches'
        return super().create_network()

    def reconstruction_info(self, input_shape: tuple[int, int]) -> ReconstructionInfo:
        rows, cols = int(input_shape[0]), int(input_shape[1])
        size = self.module.input_size
        if rows < size or cols < size:
            raise ValueError(f"LevelNet needs at least {size} x {size} pixels, got {rows} x {cols}")
        before, after = size // 2, size - size // 2 - 1
        output = (rows - size + 1, cols - size + 1)
        return ReconstructionInfo((rows, cols), output, (before, after, before, after), (1.0, 1.0))


@register_model("resnet18")
class ResNet18Model(NetworkModel):
    """ResNet-18 classifier (:class:`~digipath.models.networks.ResNet`)."""

    network_class = ResNet
    fixed: ClassVar[Mapping[str, Any]] = {"layers": 18}


@register_model("resnet50")
class ResNet50Model(NetworkModel):
    """ResNet-50 classifier (:class:`~digipath.models.networks.ResNet`)."""

    network_class = ResNet
    fixed: ClassVar[Mapping[str, Any]] = {"layers": 50}


# Model types defined in their own modules register themselves on import (last: they import
# ``register_model`` from here).
import digipath.models.hovernet_model  # noqa: E402, F401
