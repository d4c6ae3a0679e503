"""A torch ``IterableDataset`` over a :class:`~digipath.data.batch_generator.BatchGenerator`.

The generator already samples in its own worker processes and hands out whole batches, so the
dataset yields batches, not single patches: use it with ``DataLoader(dataset, batch_size=None,
num_workers=0)`` (a plain loop, or a Lightning ``train_dataloader``)::

    generator = BatchGenerator(sources, ..., processes=4, seed=0)
    loader = DataLoader(BatchDataset(generator, batch_size=16, batches=1000), batch_size=None)
    for item in loader:
        output = model(item["patches"])                 # (N, C, H, W) float32 tensor
        loss = criterion(output, item["labels"])
        dataset.update(item["indices"], per_patch_errors)   # optional: difficult-sample boosting

Each item is a dict of tensors: ``"patches"``, ``"labels"``, optionally ``"weights"``, and
``"indices"`` (the buffer slots, for boosting). With one patch spacing they are plain tensors;
with several, ``"patches"``, ``"labels"`` and ``"weights"`` are dicts keyed by spacing (µm/px).

:class:`PatchDatabaseDataset` is the map-style alternative for a
:class:`~digipath.data.patch_database.PatchDatabase`: one ``(patch, label)`` per index, for a
plain ``DataLoader`` with any sampler, batch size and number of workers::

    dataset = PatchDatabaseDataset("level_2", "training", normalizer=RgbToZeroOne(), seed=0)
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=4)
    for epoch in range(epochs):
        dataset.set_epoch(epoch)                        # new augmentation draws each epoch
        for patches, labels in loader:                  # (64, C, H, W) float32, (64,) int64
            ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from digipath.data.batch_generator import BatchGenerator, to_channels_first
from digipath.data.database_generator import mirror_pad
from digipath.data.labels import LabelMap
from digipath.data.patch_database import PatchDatabase

__all__ = ["BatchDataset", "PatchDatabaseDataset", "to_tensors"]


def to_tensors(
    batch: dict[float, dict[str, np.ndarray]], indices: np.ndarray
) -> dict[str, torch.Tensor | dict[float, torch.Tensor]]:
    """Turn a generator batch into tensors (plain for one spacing, dicts for several)."""
    spacings = list(batch)
    item: dict[str, torch.Tensor | dict[float, torch.Tensor]] = {}
    for key in ("patches", "labels", "weights"):
        if key not in batch[spacings[0]]:
            continue
        tensors = {spacing: torch.from_numpy(batch[spacing][key]) for spacing in spacings}
        item[key] = tensors[spacings[0]] if len(spacings) == 1 else tensors
    item["indices"] = torch.from_numpy(np.asarray(indices, dtype=np.int64))
    return item


class BatchDataset(IterableDataset):
    """Batches of a :class:`BatchGenerator` as an iterable torch dataset.

    Parameters
    ----------
    generator
        The generator; started (and its pool of images selected) on first iteration, and
        stopped when an iteration ends (exhausted, interrupted or garbage-collected).
    batch_size
        Patches per batch.
    batches
        Batches per iteration (an "epoch"); ``None``: endless.
    """

    def __init__(self, generator: BatchGenerator, batch_size: int, batches: int | None = None):
        super().__init__()
        if isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batches is not None and batches < 1:
            raise ValueError(f"batches must be a positive integer or None, got {batches!r}")
        self.generator = generator
        self.batch_size = int(batch_size)
        self.batches = batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor | dict[float, torch.Tensor]]]:
        if get_worker_info() is not None:
            raise RuntimeError(
                "BatchDataset samples in the generator's own processes: use it in a DataLoader "
                "with num_workers=0 (set BatchGenerator(processes=...) for parallelism)"
            )
        try:
            for batch, indices in self.generator.batches(self.batch_size, self.batches):
                yield to_tensors(batch, indices)
        finally:
            self.generator.stop()

    def update(self, indices: torch.Tensor | np.ndarray, errors: torch.Tensor | np.ndarray):
        """Feed per-patch errors in [0, 1] back to the generator (difficult-sample boosting)."""
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        if isinstance(errors, torch.Tensor):
            errors = errors.detach().cpu().numpy()
        self.generator.update(indices, errors)

    def __len__(self) -> int:
        if self.batches is None:
            raise TypeError("an endless BatchDataset has no length")
        return self.batches


class PatchDatabaseDataset(Dataset):
    """The patches of one purpose of a patch database as a map-style torch dataset.

    Item ``i`` is ``(patch, label)``: the float32 ``(C, H, W)`` tensor of patch ``i`` of
    ``purpose`` (augmented, then normalised) and its int64 label (mapped by ``label_map``;
    255 = ignore).

    Parameters
    ----------
    database
        The :class:`~digipath.data.patch_database.PatchDatabase` (or its folder). Each
        ``DataLoader`` worker process opens the database's memory maps itself, so the dataset
        pickles as its folder, never as patch data.
    purpose
        ``training``, ``validation`` ...
    normalizer
        Called on the ``(1, C, H, W)`` uint8 patch (returns float32), e.g.
        :class:`~digipath.data.normalization.RgbToZeroOne`; ``None``: the uint8 values as
        float32 (0 .. 255).
    augmenter
        An :class:`~digipath.augment.AugmenterPool` applied to each uint8 patch before
        normalising (the patch is mirrored at its borders when the pool asks for more
        context, as in :class:`~digipath.data.database_generator.DatabaseBatchGenerator`).
    seed
        With a seed, the augmentation of item ``i`` in epoch ``e`` (:meth:`set_epoch`) draws
        from ``default_rng([seed, e, i])``: the same with any number of workers and any
        order. ``None``: unpredictable draws (each process its own stream).
    label_map
        Database label -> network class (unlisted labels become 255). Default: the database
        labels.

    Attributes
    ----------
    labels
        int64 ``(n,)`` (mapped) labels of every item, e.g. for a
        ``WeightedRandomSampler`` that balances the classes.
    """

    def __init__(
        self,
        database: PatchDatabase | str | os.PathLike[str],
        purpose: str,
        *,
        normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
        augmenter=None,
        seed: int | None = None,
        label_map: LabelMap | Mapping[int, int] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(database, PatchDatabase):
            database = PatchDatabase(database)
        self._database: PatchDatabase | None = database
        self.folder = self._database.folder
        self.purpose = purpose
        self._count = self._database.count(purpose)  # PatchDatabaseError naming the purposes
        self.patch_shape = tuple(self._database.patch_shape)
        self.normalizer = normalizer
        self.augmenter = augmenter
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        if label_map is not None and not isinstance(label_map, LabelMap):
            label_map = LabelMap(label_map)
        self.label_map = label_map
        raw = np.asarray(self._database.labels(purpose))
        self.labels = (raw if label_map is None else label_map(raw)).astype(np.int64)
        self.epoch = 0
        self._rng: np.random.Generator | None = None
        self._owner: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentations of epoch ``epoch`` (with a seed; as ``DistributedSampler``).

        Call it before creating the epoch's ``DataLoader`` iterator (workers get a copy of the
        dataset then; with ``persistent_workers=True`` they keep the first epoch's).
        """
        self.epoch = int(epoch)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_database"] = None  # reopened (memory-mapped) in the worker
        state["_rng"] = state["_owner"] = None
        return state

    @property
    def database(self) -> PatchDatabase:
        """The database, opened in this process on first use."""
        if self._database is None:
            self._database = PatchDatabase(self.folder)
        return self._database

    def _generator(self, index: int) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng([self.seed, self.epoch, index])
        if self._rng is None or self._owner != os.getpid():
            # a forked worker must not continue its parent's stream: one per process
            self._rng, self._owner = np.random.default_rng(), os.getpid()
        return self._rng

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(
                f"{self.folder}: index {index} out of range for the {self._count} patches of "
                f"purpose {self.purpose!r}"
            )
        patches = self.database.patches(self.purpose, [index])  # (1, H, W, C) uint8
        if self.augmenter is not None:
            rows, cols = self.augmenter.input_shape(self.patch_shape)
            if rows > self.patch_shape[0] or cols > self.patch_shape[1]:
                patches = mirror_pad(patches, (rows, cols))
            patches, _ = self.augmenter.process(
                patches, None, shapes=self.patch_shape, rng=self._generator(index)
            )
            if patches.dtype != np.uint8:
                patches = np.clip(np.rint(patches), 0, 255).astype(np.uint8)
        patches = to_channels_first(patches)
        if self.normalizer is not None:
            patches = self.normalizer(patches)
        tensor = torch.from_numpy(np.ascontiguousarray(patches[0], dtype=np.float32))
        return tensor, torch.tensor(self.labels[index], dtype=torch.int64)

    def __repr__(self) -> str:
        return f"PatchDatabaseDataset({str(self.folder)!r}, {self.purpose!r}, {self._count})"
