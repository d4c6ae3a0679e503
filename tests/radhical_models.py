"""Hand-set RADHicaL level classifiers for the tests (no training needed).

:func:`darkness_model` sets the weights of a one-filter :class:`LevelNet` so that it reads
nuclei as dark, haematoxylin-coloured pixels (``relu(0.5 - (R + G) / 2)`` on 0-1 RGB): the
finest level's P(nucleus) rises with the darkness of the centre pixels, a coarse level's
classes follow the mean darkness of its window (none: negative; some: mixed; a lot: all
positive). They need no training, so the cascade's mechanics are tested in seconds.
"""

from __future__ import annotations

import numpy as np
import torch

from digipath.data.patch_database import PatchDatabaseWriter
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


COLOURS = np.array([[200, 60, 60], [60, 180, 70], [70, 80, 210]], np.float64)


def write_level_databases(folder, seed: int = 0) -> None:
    """Two small level databases (0.25 µm/px, 2 classes; 0.5 µm/px, 3 classes) of patches
    coloured by class, in ``folder/level_<index>_<spacing>um``."""
    rng = np.random.default_rng(seed)
    levels = (
        ("level_0_0.25um", 0.25, ["negative", "nucleus"]),
        ("level_1_0.5um", 0.5, ["negative", "mixed", "positive"]),
    )
    for name, spacing, classes in levels:
        with PatchDatabaseWriter(folder / name, (32, 32), 3, classes, spacing=spacing) as writer:
            for purpose, count in (("training", 96), ("validation", 48)):
                labels = rng.integers(0, len(classes), count)
                noise = rng.normal(0, 20, (count, 32, 32, 3))
                patches = np.clip(COLOURS[labels][:, None, None] + noise, 0, 255)
                writer.add(purpose, patches.astype(np.uint8), labels, source=f"{purpose}.tif")
