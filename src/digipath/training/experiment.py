"""ExperimentCommander: an experiment from a parameter file and a data config, start to end.

The data is a data config (slides, sampled on the fly) or a patch database folder
(:mod:`digipath.data.patch_database`, e.g. one RADHicaL magnification level): its
``training`` and ``validation`` purposes feed
:class:`~digipath.data.database_generator.DatabaseBatchGenerator` s built from the same
parameter sections; there is no distribution step, and under ``torchrun`` each rank draws from
its own disjoint share of the patches.

``ExperimentCommander(parameters, data, experiment_name=..., progress_dir=...).execute()``

1. reads the parameter file, applies the overrides and validates **every** section before any
   work: ``training`` (:mod:`digipath.training.parameters`), ``model`` (the network is built),
   ``system``/``data``/``augmentation`` (the batch generators are built, not started); any
   mistake raises :class:`~digipath.errors.ConfigError` naming its key path;
2. creates ``<progress_dir>/<experiment name>/`` and writes, prefixed by the experiment name:
   the parameter file as given, the overrides, the data config (as distributed) or, for a
   patch database, ``<name>_database.yaml`` (its path, classes, patch shape and counts), the
   provenance (package versions, git revision, seed, command line) and the log;
3. runs :class:`~digipath.training.trainer.NetworkTrainer`, which writes the best and last
   model files and states, the progress CSV and plot; with ``resume=True`` it continues from
   the last (or best) saved epoch.

The seed (``None``: taken from the clock) is logged and recorded in the provenance; a resumed
run restores the random states saved with the model instead.
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from digipath.data.config import DataConfig
from digipath.data.generator_config import as_database, batch_generators, load_parameters
from digipath.data.patch_database import PatchDatabase
from digipath.errors import ConfigError
from digipath.models.config import model_from_config
from digipath.training.distributed import setup, shard
from digipath.training.parameters import apply_overrides, training_parameters
from digipath.training.progress import write_atomic
from digipath.training.trainer import NetworkTrainer, Progress, copy_with_retries

logger = logging.getLogger(__name__)

SECTIONS = ("model", "system", "training", "data", "augmentation")


def _git_revision(folder: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def provenance_record(seed: int | None) -> dict[str, Any]:
    """Package versions, the git revision of digipath's source (if any), seed, command line."""
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("digipath", "torch", "numpy", "opencv-python-headless", "tifffile", "safetensors"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    source = Path(__file__).resolve().parents[3]
    return {
        "packages": packages,
        "python": sys.version.split()[0],
        "git revision": _git_revision(source),
        "seed": seed,
        "command": sys.argv,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


class ExperimentCommander:
    """Run one experiment (see the module docstring).

    Parameters
    ----------
    parameters
        The parameter file (path) or its mapping.
    data
        The data config (path or :class:`~digipath.data.config.DataConfig`), or a patch
        database (:class:`~digipath.data.patch_database.PatchDatabase` or its folder) with
        ``training`` and ``validation`` purposes.
    experiment_name
        Folder and file prefix (default ``experiment_YYYY-mm-dd_HH-MM``).
    progress_dir
        Where the experiment folder is created.
    overrides
        ``'key.path=value'`` strings (or a nested mapping) applied to the parameters.
    seed
        Seed of every draw; ``None``: from the clock (logged).
    cpu_count
        CPUs a float ``process count`` multiplies (the ``--cpu`` option).
    resume
        Continue the experiment in the folder from its last saved epoch.
    device
        Model device (``cpu``, ``cuda``, ``auto``); default the section's or CPU.
    progress
        Progress callback passed to the trainer.
    on_epoch_end
        ``callback(epoch, row)`` after each epoch's files are written.
    work_dir
        Write the files here (e.g. a node's local disk) and copy them to ``progress_dir``
        after every epoch; a resumed run first copies them back.
    """

    def __init__(
        self,
        parameters: str | os.PathLike[str] | Mapping[str, Any],
        data: str | os.PathLike[str] | DataConfig | PatchDatabase,
        *,
        experiment_name: str | None = None,
        progress_dir: str | os.PathLike[str] = ".",
        overrides: Sequence[str] | Mapping[str, Any] = (),
        seed: int | None = None,
        cpu_count: int | None = None,
        resume: bool = False,
        device: str | None = None,
        progress: Progress | None = None,
        on_epoch_end=None,
        work_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.source = None
        if isinstance(parameters, (str, os.PathLike)):
            self.source = os.fspath(parameters)
            parameters = load_parameters(parameters)
        self.original = dict(parameters)
        self.overrides = overrides
        self.parameters = apply_overrides(parameters, overrides) if overrides else dict(parameters)
        unknown = [key for key in self.parameters if key not in SECTIONS]
        if unknown:
            raise ConfigError(
                str(unknown[0]), f"unknown section; valid: {', '.join(SECTIONS)}", self.source
            )
        self.database = None if isinstance(data, DataConfig) else as_database(data)
        if self.database is not None:
            self.data_source = os.fspath(self.database.folder)
            self.data: DataConfig | PatchDatabase = self.database
        else:
            self.data_source = None if isinstance(data, DataConfig) else os.fspath(data)
            self.data = data if isinstance(data, DataConfig) else DataConfig.load(data)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M")
        self.name = experiment_name or f"experiment_{stamp}"
        if not self.name or os.sep in self.name:
            raise ConfigError("experiment name", f"expected a plain folder name, got {self.name!r}")
        self.progress_directory = Path(progress_dir) / self.name
        self.directory = self.progress_directory if work_dir is None else Path(work_dir) / self.name
        self.seed = int(time.time() * 1e7) % (2**63) if seed is None else int(seed)
        self.cpu_count = cpu_count
        self.resume = resume
        self.device = device
        self.progress = progress
        self.on_epoch_end = on_epoch_end
        self.ranks = setup(device)
        self._validate()

    def _rank_data(self) -> DataConfig | PatchDatabase:
        """The data this rank samples: split by purpose (the same on every rank), then dealt.

        A patch database is used as it is; its patches are dealt by the generators.
        """
        if self.database is not None:
            self.distributed_data = None
            return self.database
        data = self.data
        if data.distribution is None:
            ratios = (self.parameters.get("data") or {}).get("purposes") or {
                "training": 1.0, "validation": 1.0,
            }  # fmt: skip
            data = data.distribute(ratios, self.seed)
        self.distributed_data = data  # all ranks' images, saved with the experiment
        if not self.ranks.distributed:
            return data
        collection = {p: shard(c, self.ranks) for p, c in data.collection().items()}
        return DataConfig(collection, data.distribution)

    def _validate(self) -> None:
        """Build everything that can be wrong, before any file is written."""
        self.training = training_parameters(self.parameters.get("training"), self.source)
        self.data = self._rank_data()
        self.generators = batch_generators(
            self.parameters, self.data, ["training", "validation"], cpu_count=self.cpu_count,
            seed=self.seed + 7919 * self.ranks.rank, source=self.source,
            shard=(self.ranks.rank, self.ranks.world_size) if self.ranks.distributed else None,
        )  # fmt: skip
        for purpose, generator in self.generators.items():
            iterations = self.training.iterations[purpose]
            if iterations.batch_size > generator.main_buffer_size:
                raise ConfigError(
                    f"training.iterations.{purpose}.batch size",
                    f"{iterations.batch_size} is larger than the buffer", self.source,
                )  # fmt: skip
        first = self.generators["training"]
        shape = next(iter(first.patch_shapes.values()))
        channels = len(first.channels) if first.channels is not None else 3
        self.model = model_from_config(
            self.parameters.get("model") or {}, classes=first.classes, input_channels=channels,
            input_shape=shape, learning_rate=self.training.learning_rate, device=self.device,
            source=self.source,
        )  # fmt: skip
        if self.training.metric_key not in self.model.metric_names():
            raise ConfigError(
                "training.metric name",
                f"{self.training.metric!r}: the {self.model.type} model reports "
                f"{', '.join(self.model.metric_names())}",
                self.source,
            )
        labels = (self.parameters.get("data") or {}).get("labels") or {}
        self.header = {
            "label_map": labels.get("label map"),
            "patch_shapes": first.patch_shapes,
            "normalization": (self.parameters.get("data") or {}).get("normalization"),
        }
        if self.database is not None and labels.get("label map") is None:
            self.header["class_names"] = list(self.database.classes)

    def _write_inputs(self) -> None:
        prefix = self.directory / self.name
        given = self.original
        write_atomic(f"{prefix}_parameters.yaml", yaml.safe_dump(given, sort_keys=False))
        overrides = self.overrides if isinstance(self.overrides, Mapping) else list(self.overrides)
        write_atomic(f"{prefix}_overrides.yaml", yaml.safe_dump(overrides, sort_keys=False))
        if self.database is not None:
            write_atomic(
                f"{prefix}_database.yaml", yaml.safe_dump(self._database_record(), sort_keys=False)
            )
        else:
            self.distributed_data.save(f"{prefix}_data.yaml")
        record = provenance_record(self.seed)
        record["parameter file"] = self.source
        record["data file"] = self.data_source
        write_atomic(f"{prefix}_repo.yaml", yaml.safe_dump(record, sort_keys=False))

    def _database_record(self) -> dict[str, Any]:
        """What the experiment trained from: the database's path, classes, shape and counts."""
        database = self.database
        assert database is not None
        return {
            "patch database": str(Path(database.folder).resolve()),
            "classes": list(database.classes),
            "patch shape": list(database.patch_shape),
            "channels": database.channels,
            "spacing": database.spacing,
            "purposes": {
                purpose: {
                    "count": database.count(purpose),
                    "label counts": database.label_counts(purpose),
                }
                for purpose in database.purposes
            },
        }

    def _sync(self, source: Path, target: Path) -> None:
        """Copy the experiment's files from ``source`` to ``target`` (no-op without work dir)."""
        if source == target or not source.is_dir():
            return
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file() and not path.name.startswith("."):
                copy_with_retries(path, target / path.name)

    def _epoch_done(self, epoch: int, row: dict) -> None:
        self._sync(self.directory, self.progress_directory)
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, row)

    def execute(self) -> dict[str, Any]:
        """Run the experiment; return the trainer's summary (best epoch and metric ...)."""
        self.model.wrap_distributed()
        if not self.ranks.is_main:  # other ranks train and write nothing
            return NetworkTrainer(
                self.model, self.generators["training"], self.generators["validation"],
                self.training, self.directory, self.name, header=self.header, ranks=self.ranks,
            ).execute(resume=self.resume)  # fmt: skip
        if self.resume:
            self._sync(self.progress_directory, self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(
            self.directory / f"{self.name}_log.txt", mode="a" if self.resume else "w",
            encoding="utf-8",
        )  # fmt: skip
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger("digipath")
        root.addHandler(handler)
        previous_level = root.level
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
        try:
            ranks = f", {self.ranks.world_size} ranks" if self.ranks.distributed else ""
            logger.info(
                "experiment %s in %s, seed %d%s", self.name, self.directory, self.seed, ranks
            )
            if not self.resume or not (self.directory / f"{self.name}_parameters.yaml").exists():
                self._write_inputs()
            trainer = NetworkTrainer(
                self.model, self.generators["training"], self.generators["validation"],
                self.training, self.directory, self.name, header=self.header,
                progress=self.progress, on_epoch_end=self._epoch_done, ranks=self.ranks,
            )  # fmt: skip
            summary = trainer.execute(resume=self.resume)
            logger.info("finished: best %s %s at epoch %s", self.training.metric,
                        summary["best_metric"], summary["best_epoch"])  # fmt: skip
            return summary
        except BaseException:
            logger.exception("experiment %s failed", self.name)
            raise
        finally:
            root.removeHandler(handler)
            root.setLevel(previous_level)
            handler.close()
            self._sync(self.directory, self.progress_directory)
