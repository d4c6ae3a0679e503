"""Data-parallel training over several processes or nodes, launched by ``torchrun``.

``torchrun --nproc_per_node=4 -m digipath.cli.main train data.yaml parameters.yaml`` starts one
process per rank with ``RANK``, ``WORLD_SIZE`` and the rendezvous in the environment. Each rank:

* joins the process group (:func:`setup`: ``gloo`` on CPU, ``nccl`` on GPU, one GPU per local
  rank);
* samples its own images (:func:`shard`: the sources of every category dealt round-robin over
  the ranks, all of them where a category has fewer images than ranks) with its own seed;
* wraps its network in ``DistributedDataParallel`` (gradients are averaged in ``backward``);
* averages the epoch's metrics over the ranks (:func:`all_mean`), so every rank takes the same
  decisions (best epoch, learning-rate decay, stop);
* writes nothing unless it is rank 0, which writes every file of the experiment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes the experiment's files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1


def current() -> Ranks:
    """The ranks from the environment (``torchrun`` sets them; one process without it)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Ranks(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def setup(device: str | None = None) -> Ranks:
    """Join the process group when launched with several ranks; return the ranks.

    ``device`` ``cuda`` (or ``auto`` with a GPU) uses ``nccl`` and this local rank's GPU;
    otherwise ``gloo``.
    """
    ranks = current()
    if not ranks.distributed or (dist.is_available() and dist.is_initialized()):
        return ranks
    cuda = device in ("cuda", "auto") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    logger.info("rank %d of %d joined (%s)", ranks.rank, ranks.world_size,
                "nccl" if cuda else "gloo")  # fmt: skip
    return current()


def teardown() -> None:
    """Leave the process group (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(sources: Mapping[str, Sequence], ranks: Ranks) -> dict[str, list]:
    """This rank's sources: each category's list dealt round-robin over the ranks.

    A category with fewer sources than ranks is used whole by every rank.
    """
    result = {}
    for category, items in sources.items():
        items = list(items)
        result[category] = (
            items if len(items) < ranks.world_size else items[ranks.rank :: ranks.world_size]
        )
    return result


def all_mean(values: Mapping[str, float]) -> dict[str, float]:
    """The mean of each value over the ranks (the values themselves when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(values)
    names = sorted(values)
    tensor = torch.tensor([float(values[name]) for name in names], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= dist.get_world_size()
    return {name: float(value) for name, value in zip(names, tensor.cpu().tolist(), strict=True)}


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
