"""Hand-set RADHicaL level classifiers for the tests (no training needed).

:func:`darkness_model` sets the weights of a one-filter :class:`LevelNet` so that it reads
nuclei as dark, haematoxylin-coloured pixels (``relu(0.5 - (R + G) / 2)`` on 0-1 RGB): the
finest level's P(nucleus) rises with the darkness of the centre pixels, a coarse level's
classes follow the mean darkness of its window (none: negative; some: mixed; a lot: all
positive). They need no training, so the cascade's mechanics are tested in seconds.
"""

from __future__ import annotations

import torch

from digipath.models.registry import model_class

SPACINGS = (0.25, 0.5, 1.0, 2.5)


def darkness_model(level: int, *, mixed: float = 2e-4, positive: float = 0.25, gain: float = 4e4):
    """A built ``levelnet`` model with hand-set weights (see the module docstring)."""
    classes = 2 if level == 0 else 3
    model = model_class("levelnet")(
        classes=classes, input_shape=(32, 32), widths=[1, 1, 1], hidden=1
    ).build()
    net = model.module
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        net.conv1.weight[0, 0, 2, 2] = -0.5
        net.conv1.weight[0, 1, 2, 2] = -0.5
        net.conv1.bias[0] = 0.5
        if level == 0:  # the centre pixels
            net.conv2.weight[0, 0, 2, 2] = 1.0
            net.conv3.weight[0, 0, 2, 2] = 1.0
            net.fc1.weight[0, 0, 0, 0] = 1.0
            net.fc2.weight[:, 0, 0, 0] = torch.tensor([-40.0, 40.0])
            net.fc2.bias[:] = torch.tensor([2.0, -2.0])  # P(nucleus) = 0.5 at darkness 0.05
        else:  # the window's mean darkness g
            net.conv2.weight[:] = 1 / 25
            net.conv3.weight[:] = 1 / 25
            net.fc1.weight[0, 0, 0, 0] = 1.0
            # logits: negative -gain (g - mixed), mixed 0, positive 40 (g - positive)
            net.fc2.weight[:, 0, 0, 0] = torch.tensor([-gain, 0.0, 40.0])
            net.fc2.bias[:] = torch.tensor([gain * mixed, 0.0, -40.0 * positive])
    return model
