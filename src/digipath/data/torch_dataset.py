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
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from digipath.data.batch_generator import BatchGenerator

__all__ = ["BatchDataset", "to_tensors"]


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
