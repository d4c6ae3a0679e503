"""Training throughput: digipath's NetworkTrainer against a hand-written PyTorch loop.

What is measured
----------------
Patches per second through one training epoch of a small U-Net (depth 3, 16 first-level
filters, same padding, batch norm) on 64 x 64 RGB patches with 2-class label maps, batches of
16, on the same in-memory batches:

``trainer``
    :class:`~digipath.training.trainer.NetworkTrainer` with its whole epoch: batches from an
    in-memory stand-in of the batch generator (one-hot label maps, as the generator hands them
    out), ``ModelBase.update`` (label conversion, loss, backward, step, accuracy and per-patch
    errors), difficult-sample boosting feedback, the validation pass, and the epoch's files
    (best/last model, state, CSV, plot);
``plain``
    the loop users write: ``optimizer.zero_grad(); loss = F.cross_entropy(net(x), y);
    loss.backward(); optimizer.step()`` on the same patches, with the labels already as class
    index tensors (nothing converted inside the loop), plus the same validation passes.

Both run the same network class, initialised identically, single-threaded (``torch`` and
OpenCV at 1 thread, as in a data-parallel worker); the repeats alternate between the two and
the medians are compared.

Run ``python benchmarks/train_step.py [--quick]``; the last line printed is a JSON object
``{"benchmark": "train_step", "figures": {...}, "ratios": {"trainer_vs_plain_loop": ...}}``
(throughput ratio: above 1 means the trainer is faster).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHAPE = (64, 64)
BATCH = 16
CLASSES = 2


def make_batches(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (patches (N, 3, H, W) float32, one-hot labels (N, 2, H, W)) pairs."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        labels = (rng.random((BATCH, *SHAPE)) < 0.3).astype(np.int64)
        patches = rng.random((BATCH, 3, *SHAPE), dtype=np.float32) * 0.5
        patches[:, 0] += labels * 0.5
        one_hot = np.stack([labels == 0, labels == 1], axis=1).astype(np.float32)
        batches.append((patches, one_hot))
    return batches


class InMemoryBatches:
    """The part of the BatchGenerator interface the trainer uses, over fixed batches."""

    def __init__(self, batches, name: str) -> None:
        self.batches = batches
        self.name = name
        self.patch_shapes = {0.5: SHAPE}
        self.rng = np.random.default_rng(0)
        self._order_rng = np.random.default_rng(1)
        self.index = 0

    def start(self) -> None: ...
    def step(self) -> None: ...
    def fill(self) -> None: ...
    def load(self, batch_size: int = 0) -> None: ...
    def ping(self) -> None: ...
    def stop(self) -> None: ...
    def transfer(self, batch_size: int = 0, difficult_threshold: float = 0.0) -> None: ...

    def update(self, indices, errors) -> None:
        np.asarray(errors, dtype=np.float64)

    def boosted_transfer(self, *args) -> float:
        return 0.0

    def batch(self, size: int):
        patches, labels = self.batches[self.index % len(self.batches)]
        self.index += 1
        return {0.5: {"patches": patches, "labels": labels}}, np.arange(size)


def build_model(seed: int):
    import torch

    from digipath.models import model_class

    torch.manual_seed(seed)
    return model_class("unet")(
        classes=CLASSES, input_shape=SHAPE, depth=3, branching_factor=4, padding="same",
        batch_norm=True, learning_rate=1e-3,
    ).build()  # fmt: skip


def run_trainer(train, validation, seed: int) -> float:
    from digipath.training.parameters import Iterations, TrainingParameters
    from digipath.training.trainer import NetworkTrainer

    model = build_model(seed)
    parameters = TrainingParameters(
        epochs=1, metric="validation loss", higher_is_better=False, learning_rate=1e-3,
        boosting=True, buffer_mode_switch=0,
        iterations={"training": Iterations(1, len(train), BATCH),
                    "validation": Iterations(1, len(validation), BATCH)},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        trainer = NetworkTrainer(
            model, InMemoryBatches(train, "training"), InMemoryBatches(validation, "validation"),
            parameters, folder, "bench",
        )  # fmt: skip
        start = time.perf_counter()
        trainer.execute()
        elapsed = time.perf_counter() - start
    return len(train) * BATCH / elapsed


def run_plain(train, validation, seed: int) -> float:
    import torch
    import torch.nn.functional as F

    network = build_model(seed).network
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    # the strictest baseline: class-index labels ready as tensors, nothing converted in the loop
    train = [(torch.from_numpy(p), torch.from_numpy(y[:, 1]).long()) for p, y in train]
    validation = [(torch.from_numpy(p), torch.from_numpy(y[:, 1]).long()) for p, y in validation]
    start = time.perf_counter()
    network.train()
    for x, y in train:
        optimizer.zero_grad()
        loss = F.cross_entropy(network(x), y)
        loss.backward()
        optimizer.step()
    network.eval()
    with torch.no_grad():
        for x, y in validation:
            F.cross_entropy(network(x), y)
    return len(train) * BATCH / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and repeats")
    parser.add_argument(
        "--batches", type=int, help="training batches per epoch (default 60, 30 with --quick)"
    )
    parser.add_argument("--repeats", type=int, help="repeats, medians taken (default 5)")
    args = parser.parse_args(argv)
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    count = args.batches or (30 if args.quick else 60)
    repeats = args.repeats or (3 if args.quick else 5)
    train = make_batches(count, seed=0)
    validation = make_batches(max(2, count // 10), seed=1)
    run_trainer(train[:2], validation[:1], 0)  # warm-up (first optimiser and library use)
    run_plain(train[:2], validation[:1], 0)
    rates: dict[str, list[float]] = {"trainer": [], "plain": []}
    for repeat in range(repeats):
        rates["trainer"].append(run_trainer(train, validation, repeat))
        rates["plain"].append(run_plain(train, validation, repeat))
        print(f"  repeat {repeat + 1}: trainer {rates['trainer'][-1]:.1f}, plain "
              f"{rates['plain'][-1]:.1f} patches/s", flush=True)  # fmt: skip
    median = {key: statistics.median(values) for key, values in rates.items()}
    ratio = median["trainer"] / median["plain"]
    print(f"{count} training batches of {BATCH} x 3 x {SHAPE[0]} x {SHAPE[1]}, {repeats} repeats")
    print(f"NetworkTrainer     {median['trainer']:8.1f} patches/s")
    print(f"hand-written loop  {median['plain']:8.1f} patches/s")
    print(f"trainer / plain    {ratio:8.3f}")
    print(json.dumps({
        "benchmark": "train_step",
        "figures": {"trainer_patches_per_s": round(median["trainer"], 2),
                    "plain_patches_per_s": round(median["plain"], 2),
                    "batches": count, "batch_size": BATCH, "repeats": repeats},
        "ratios": {"trainer_vs_plain_loop": round(ratio, 3)},
    }))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
