"""Models from the ``model`` section of a parameter file.

The DigitalPathology section is read as it is::

    model:
      backend: 'pytorch'          # digipath builds PyTorch networks; others are refused
      type: 'unet'                # a registered model type (digipath.models.registry)
      name: 'unet_tissue'
      description: 'U-Net for tissue segmentation.'
      branching factor: 5         # the network's own parameters, with spaces for underscores
      depth: 4
      dropout layers: 1
      dropout probability: 0.5
      batch norm: true
      padding: 'valid'
      L2 lambda: 0.00001          # weight decay
      channels first: true        # accepted: PyTorch networks are channels first
      loss: 'dice'

The number of classes comes from the label map, the input channels and patch shape from the
data section, the learning rate from ``training.learning``. A key the model type does not know is
an error naming its key path and listing the valid keys.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from digipath.errors import ConfigError, ModelError
from digipath.models.base import ModelBase
from digipath.models.registry import MODELS, NetworkModel, model_class

logger = logging.getLogger(__name__)

GENERAL_KEYS = {
    "backend": None,
    "type": None,
    "name": "name",
    "description": "description",
    "loss": "loss",
    "loss options": "loss_options",
    "optimizer": "optimizer",
    "L2 lambda": "weight_decay",
    "weight decay": "weight_decay",
    "channels first": None,
    "channels last": "channels_last",
    "amp": "amp",
    "device": "device",
}
"""Section keys every model type takes -> constructor argument (``None``: read, not passed)."""


def _network_keys(cls: type[ModelBase]) -> dict[str, str]:
    """YAML key -> network parameter name of a model type (from its network's signature)."""
    if issubclass(cls, NetworkModel):
        signature = inspect.signature(cls.network_class.__init__)
        names = [
            name
            for name, parameter in signature.parameters.items()
            if name not in ("self", "in_channels", "classes", *cls.fixed)
            and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        ]
    else:  # a user's own ModelBase: its constructor's extra keyword parameters
        base = set(inspect.signature(ModelBase.__init__).parameters)
        names = [n for n in inspect.signature(cls.__init__).parameters if n not in base]
    return {name.replace("_", " "): name for name in names}


def model_from_config(
    section: Mapping[str, Any],
    *,
    classes: int,
    input_channels: int,
    input_shape: tuple[int, int] | None,
    learning_rate: float = 1e-3,
    device: str | None = None,
    key: str = "model",
    source: str | None = None,
) -> ModelBase:
    """Build (and ``build()``) the model a ``model`` section describes.

    Parameters
    ----------
    section
        The ``model`` mapping.
    classes, input_channels, input_shape
        From the data section: the label map's class count, the channels, the first patch shape.
    learning_rate
        From ``training.learning.learning rate``.
    device
        Overrides the section's ``device``.
    key, source
        Key path of the section and the file, for errors.
    """
    if not isinstance(section, Mapping):
        raise ConfigError(key, f"expected a mapping, got {section!r}", source)
    backend = section.get("backend", "pytorch")
    if backend not in ("pytorch", "torch"):
        raise ConfigError(
            f"{key}.backend",
            f"digipath builds PyTorch networks; backend {backend!r} cannot be built (use "
            "'pytorch', or leave the key out)",
            source,
        )
    name = section.get("type")
    try:
        cls = model_class(name)
    except (KeyError, TypeError):
        raise ConfigError(
            f"{key}.type", f"unknown model type {name!r}; valid: {', '.join(sorted(MODELS))}",
            source,
        ) from None  # fmt: skip
    network_keys = _network_keys(cls)
    arguments: dict[str, Any] = {}
    for item, value in section.items():
        if item in GENERAL_KEYS:
            target = GENERAL_KEYS[item]
            if target is not None:
                arguments[target] = value
        elif item in network_keys:
            arguments[network_keys[item]] = value
        else:
            valid = ", ".join([*GENERAL_KEYS, *network_keys])
            raise ConfigError(
                f"{key}.{item}", f"unknown key for model type {name!r}; valid keys: {valid}",
                source,
            )  # fmt: skip
    if section.get("channels first") is False:
        logger.info("%s: 'channels first: false' ignored: PyTorch networks take (N, C, H, W)", key)
    if device is not None:
        arguments["device"] = device
    try:
        model = cls(
            classes=classes, input_channels=input_channels, input_shape=input_shape,
            learning_rate=learning_rate, **arguments,
        )  # fmt: skip
        model.build()
    except (ModelError, ValueError, TypeError) as error:
        raise ConfigError(key, f"model type {name!r}: {error}", source) from None
    if input_shape is not None:
        try:
            model.reconstruction_info(input_shape)
        except ValueError as error:
            raise ConfigError(
                "data.images.patch shapes", f"the {name} network cannot take it: {error}", source
            ) from None
    return model
