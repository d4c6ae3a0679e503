"""NetworkTrainer: the epoch loop of the original, with plateaus, boosting, saving and resuming.

Per epoch:

1. **training**: for each repetition, the training generator starts loading its read buffer in
   the background, the validation generator is pinged, ``iteration count`` batches go through
   ``model.update`` (per-patch errors fed back when boosting), then the read buffer is
   transferred in: with boosting, from the ``buffer mode switch`` epoch on, the difficult
   patches are kept (:meth:`BatchGenerator.boosted_transfer`);
2. **validation**: the same with ``model.validate`` and full transfers;
3. the selection metric (``metric name``) is averaged over the last ``averaging length``
   epochs; the plateau is the number of epochs since the best averaged value when the newest is
   strictly worse (ties count as improvement), else 0;
4. learning-rate decay: when enabled and ``min(epochs since the last decay, plateau) >=
   plateau length``, the rate is multiplied by ``update factor`` for the next epoch;
5. the images are re-selected every ``source step length`` epochs;
6. files: the last model and state always, the best ones when the plateau is 0, a CSV row and
   the plot; stop when the stop plateau is reached.

The state (JSON) records the epoch, the learning rate for the next epoch, the plateau series,
the random states of the generators and of torch, and the SHA-256 of the model file it belongs
to. Resuming loads the last state and model (hash checked), falling back to the best, trims the
CSV to the epochs before the resumed one and restores the learning rate and random states.
Exceptions propagate; the generators are always stopped.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from digipath.data.batch_generator import BatchGenerator
from digipath.errors import ConfigError, ModelFileError
from digipath.models.base import ModelBase
from digipath.models.files import file_digest, load_model
from digipath.training.distributed import Ranks, all_mean, barrier
from digipath.training.parameters import TrainingParameters
from digipath.training.progress import plot_rows, read_rows, write_json, write_rows

logger = logging.getLogger(__name__)

Progress = Callable[[str, dict[str, Any]], None]
"""Progress callback: ``progress(event, info)`` with events ``"epoch"`` (epoch, epochs),
``"phase"`` (purpose, total batches), ``"batch"`` (purpose, done, total, metrics) and
``"row"`` (the epoch's CSV row)."""


@dataclass
class TrainingState:
    """What a resumed run needs (written as JSON next to each model file)."""

    epoch: int
    learning_rate: float
    decay_epoch: int
    raw_metric: list[float] = field(default_factory=list)
    averaged_metric: list[float] = field(default_factory=list)
    model_digest: str = ""
    random: dict[str, Any] = field(default_factory=dict)


def _rng_states(generators: list[BatchGenerator]) -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii")
    }
    for generator in generators:
        states[generator.name] = {
            "planning": generator.rng.bit_generator.state,
            "order": generator._order_rng.bit_generator.state,
        }
    return states


def _restore_rng_states(states: dict[str, Any], generators: list[BatchGenerator]) -> None:
    if "torch" in states:
        raw = np.frombuffer(base64.b64decode(states["torch"]), dtype=np.uint8).copy()
        torch.set_rng_state(torch.from_numpy(raw))
    for generator in generators:
        saved = states.get(generator.name)
        if saved:
            generator.rng.bit_generator.state = saved["planning"]
            generator._order_rng.bit_generator.state = saved["order"]


class NetworkTrainer:
    """Train a model with two batch generators and write the experiment's files.

    Parameters
    ----------
    model
        A built :class:`~digipath.models.base.ModelBase`.
    training, validation
        The batch generators (not started; the trainer starts and stops them).
    parameters
        The validated ``training`` section.
    directory
        Where the files go.
    prefix
        The experiment id prefixing every file name.
    header
        More model-file header entries (label map, patch shapes, normalisation).
    progress
        Optional :data:`Progress` callback (the CLI draws bars with it).
    on_epoch_end
        Optional ``callback(epoch, row)`` after each epoch's files are written (tests use it
        to interrupt a run).
    ranks
        This process's rank (:mod:`digipath.training.distributed`); only rank 0 writes files,
        and the epoch's metrics are averaged over the ranks.
    """

    def __init__(
        self,
        model: ModelBase,
        training: BatchGenerator,
        validation: BatchGenerator,
        parameters: TrainingParameters,
        directory: str | Path,
        prefix: str,
        *,
        header: dict[str, Any] | None = None,
        progress: Progress | None = None,
        on_epoch_end: Callable[[int, dict], None] | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        metric = parameters.metric_key
        if metric not in model.metric_names():
            raise ConfigError(
                "training.metric name",
                f"{parameters.metric!r}: the model reports {', '.join(model.metric_names())}",
            )
        self.model = model
        self.generators = {"training": training, "validation": validation}
        self.parameters = parameters
        self.directory = Path(directory)
        self.prefix = prefix
        self.header = dict(header or {})
        self.progress = progress
        self.on_epoch_end = on_epoch_end
        self.ranks = ranks or Ranks()
        if not self.ranks.is_main:
            self.progress = None
        self.spacing = next(iter(training.patch_shapes))  # the network's input spacing

    # -- files ---------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """``<directory>/<prefix>_<name>``."""
        return self.directory / f"{self.prefix}_{name}"

    @property
    def csv_path(self) -> Path:
        return self.path("progress.csv")

    def _save(self, kind: str, state: TrainingState) -> None:
        model_path = self.path(f"{kind}_model.safetensors")
        self.model.save(model_path, **self.header, provenance={"experiment": self.prefix,
                                                                "epoch": state.epoch})  # fmt: skip
        state.model_digest = file_digest(model_path)
        write_json(self.path(f"{kind}_state.json"), asdict(state))

    def _resume(self) -> TrainingState | None:
        for kind in ("last", "best"):
            state_path = self.path(f"{kind}_state.json")
            model_path = self.path(f"{kind}_model.safetensors")
            if not state_path.exists():
                continue
            try:
                state = TrainingState(**json.loads(state_path.read_text(encoding="utf-8")))
                digest = file_digest(model_path) if model_path.exists() else ""
                if digest != state.model_digest:
                    raise ModelFileError(
                        model_path,
                        f"SHA-256 {digest or 'missing file'} differs from the state's "
                        f"{state.model_digest}: the file changed or its save was interrupted",
                    )
                loaded = load_model(model_path, device=str(self.model.device))
                self.model.module.load_state_dict(loaded.network.state_dict())
                if self.model.optimizer is not None and loaded.optimizer is not None:
                    self.model.optimizer.load_state_dict(loaded.optimizer.state_dict())
            except (ModelFileError, OSError, ValueError, TypeError, KeyError) as error:
                logger.warning("cannot resume from the %s state: %s", kind, error)
                continue
            logger.info("resuming after epoch %d from the %s model", state.epoch, kind)
            return state
        return None

    # -- epochs --------------------------------------------------------------------------------

    def _phase(self, purpose: str, epoch: int) -> tuple[dict[str, float], float, float]:
        """Run one epoch of ``purpose``; return the mean metrics, model time and boosting ratio."""
        generator = self.generators[purpose]
        counts = self.parameters.iterations[purpose]
        training = purpose == "training"
        total = counts.repetitions * counts.iterations
        log_every = max(1, int(counts.iterations * self.parameters.log_percent))
        sums: dict[str, float] = {}
        seen: dict[str, int] = {}
        model_time = 0.0
        difficult = math.nan
        done = 0
        if self.progress:
            self.progress("phase", {"purpose": purpose, "total": total})
        for _ in range(counts.repetitions):
            generator.load()
            if training:
                self.generators["validation"].ping()
            for iteration in range(counts.iterations):
                batch, indices = generator.batch(counts.batch_size)
                item = batch[self.spacing]
                started = time.perf_counter()
                step = self.model.update if training else self.model.validate
                metrics = step(item["patches"], item["labels"], item.get("weights"))
                model_time += time.perf_counter() - started
                if training and self.parameters.boosting:
                    generator.update(indices, metrics["errors"])
                for name in self.model.metric_names():
                    value = float(metrics[name])
                    if math.isfinite(value):  # e.g. no valid label in the batch: no accuracy
                        sums[name] = sums.get(name, 0.0) + value
                        seen[name] = seen.get(name, 0) + 1
                done += 1
                if (iteration + 1) % log_every == 0 or iteration + 1 == counts.iterations:
                    logger.debug("%s iteration %d of %d", purpose, done, total)
                if self.progress:
                    self.progress("batch", {"purpose": purpose, "done": done, "total": total,
                                            "metrics": metrics})  # fmt: skip
            boosting = training and self.parameters.boosting
            if boosting and self.parameters.difficult_update_ratio < 1:
                difficult = generator.boosted_transfer(
                    epoch, self.parameters.buffer_mode_switch,
                    self.parameters.difficult_threshold, self.parameters.difficult_update_ratio,
                )  # fmt: skip
            else:
                generator.transfer()
        means = {
            f"{purpose} {name}": sums[name] / seen[name] if seen.get(name) else math.nan
            for name in self.model.metric_names()
        }
        return means, model_time, difficult

    @staticmethod
    def _plateau(values: list[float], higher_is_better: bool) -> int:
        """Epochs since the best earlier value when the newest is strictly worse, else 0."""
        if len(values) < 2:
            return 0
        newest, earlier = values[-1], values[:-1]
        best = max(earlier) if higher_is_better else min(earlier)
        worse = newest < best if higher_is_better else newest > best
        if not worse:
            return 0
        index = max(i for i, v in enumerate(earlier) if v == best)
        return len(values) - 1 - index

    def execute(self, resume: bool = False) -> dict[str, Any]:
        """Train (or continue training) for the configured epochs.

        Returns
        -------
        dict
            ``epochs_run``, ``best_epoch``, ``best_metric`` and the last CSV row.
        """
        if self.ranks.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
        parameters = self.parameters
        state = self._resume() if resume else None
        rows = read_rows(self.csv_path) if state is not None else []
        if state is None:
            start = 0
            state = TrainingState(epoch=-1, learning_rate=parameters.learning_rate, decay_epoch=0)
        else:
            start = state.epoch + 1
            rows = [row for row in rows if int(row["epoch"]) < start]
            _restore_rng_states(state.random, list(self.generators.values()))
        self.model.learning_rate = state.learning_rate
        epochs_run = 0
        try:
            for generator in self.generators.values():
                generator.start()
                generator.step()
                generator.fill()
            for epoch in range(start, parameters.epochs):
                if self.progress:
                    self.progress("epoch", {"epoch": epoch, "epochs": parameters.epochs})
                rate = self.model.learning_rate
                started = time.perf_counter()
                training, training_time, difficult = self._phase("training", epoch)
                training_wall = time.perf_counter() - started
                started_validation = time.perf_counter()
                validation, validation_time, _ = self._phase("validation", epoch)
                validation_wall = time.perf_counter() - started_validation
                metrics = all_mean({**training, **validation})
                raw = metrics[parameters.metric]
                state.raw_metric.append(raw)
                window = state.raw_metric[-parameters.averaging_length :]
                state.averaged_metric.append(float(np.mean(window)))
                plateau = self._plateau(state.averaged_metric, parameters.higher_is_better)
                if parameters.decay_enabled:
                    count = min(epoch - state.decay_epoch, plateau)
                    if count >= parameters.decay_plateau:
                        self.model.learning_rate = (
                            self.model.learning_rate * parameters.decay_factor
                        )
                        state.decay_epoch = epoch
                        logger.info("learning rate decayed to %.3g", self.model.learning_rate)
                step = parameters.source_step_length
                if step and (epoch + 1) % step == 0:
                    for generator in self.generators.values():
                        generator.step()
                row: dict[str, Any] = {"epoch": epoch, "learning rate": rate, **metrics}
                if parameters.averaging_length > 1:
                    row[f"averaged {parameters.metric}"] = state.averaged_metric[-1]
                if parameters.boosting:
                    row["training difficult patch ratio"] = difficult
                row.update({
                    "training epoch gpu time": training_time,
                    "validation epoch gpu time": validation_time,
                    "training epoch execution time": training_wall,
                    "validation epoch execution time": validation_wall,
                    "total epoch execution time": training_wall + validation_wall,
                })  # fmt: skip
                state.epoch = epoch
                state.learning_rate = self.model.learning_rate
                state.random = _rng_states(list(self.generators.values()))
                rows.append(row)
                if self.ranks.is_main:
                    if plateau == 0:
                        self._save("best", state)
                    self._save("last", state)
                    write_rows(self.csv_path, rows)
                    plot_rows(self.path("progress.png"), rows, parameters.metric)
                barrier()  # the files exist for every rank before the next epoch
                epochs_run += 1
                logger.info(
                    "epoch %d/%d: %s", epoch + 1, parameters.epochs,
                    ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()),
                )  # fmt: skip
                if self.progress:
                    self.progress("row", row)
                if self.on_epoch_end:
                    self.on_epoch_end(epoch, row)
                if parameters.stop_enabled and plateau >= parameters.stop_plateau > 0:
                    logger.info("stopping: no improvement for %d epochs", plateau)
                    break
        finally:
            for generator in self.generators.values():
                generator.stop()
        values = [float(row[parameters.metric]) for row in rows]
        best = (int(np.argmax(values)) if parameters.higher_is_better else int(np.argmin(values))
                ) if values else None  # fmt: skip
        return {
            "epochs_run": epochs_run,
            "best_epoch": None if best is None else int(rows[best]["epoch"]),
            "best_metric": None if best is None else values[best],
            "last_row": rows[-1] if rows else None,
        }


def copy_with_retries(source: Path, target: Path, attempts: int = 4) -> None:
    """Copy a file, retrying (network file systems fail now and then)."""
    for attempt in range(attempts):
        try:
            shutil.copy2(source, target)
            return
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
