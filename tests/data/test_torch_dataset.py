"""BatchDataset: a BatchGenerator feeding a torch DataLoader."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from batch_sources import SHAPES, generator
from torch.utils.data import DataLoader

from digipath.data.buffer import shared_segments
from digipath.data.normalization import RgbToZeroOne
from digipath.data.torch_dataset import BatchDataset


def test_a_dataloader_trains_on_generator_batches(sources):
    torch.manual_seed(0)
    gen = generator(sources, processes=1, normalizer=RgbToZeroOne(), patch_shapes={1.0: (32, 32)})
    dataset = BatchDataset(gen, batch_size=8, batches=10)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )  # fmt: skip
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = 0
    for item in DataLoader(dataset, batch_size=None, num_workers=0):
        assert item["patches"].shape == (8, 3, 32, 32) and item["patches"].dtype == torch.float32
        assert item["labels"].shape == (8, 3) and item["indices"].dtype == torch.int64
        loss = torch.nn.functional.cross_entropy(model(item["patches"]), item["labels"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        errors = 1 - torch.softmax(model(item["patches"]), 1)[item["labels"].bool()]
        dataset.update(item["indices"], errors.clamp(0, 1))
        seen += 1
    assert seen == len(dataset) == 10
    assert not gen.started  # stopped when the iteration ended
    assert not [name for name in shared_segments() if f"_{os.getpid()}_" in name]


def test_several_spacings_come_as_dicts(sources):
    dataset = BatchDataset(generator(sources, one_hot=False), batch_size=4, batches=1)
    (item,) = list(dataset)
    assert set(item["patches"]) == set(SHAPES)
    assert item["patches"][2.0].shape == (4, 3, 16, 16)
    assert item["labels"][1.0].dtype == torch.int64
    np.testing.assert_array_equal(item["labels"][1.0].numpy(), item["labels"][2.0].numpy())


def test_bad_arguments(sources):
    with pytest.raises(ValueError, match="batch_size"):
        BatchDataset(generator(sources), batch_size=0)
    with pytest.raises(TypeError, match="no length"):
        len(BatchDataset(generator(sources), batch_size=2))
