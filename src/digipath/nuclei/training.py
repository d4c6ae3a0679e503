"""HoVer-Net training: the original's two-phase recipe over digipath's ``NetworkTrainer``.

The official repository (``models/hovernet/opt.py``; reference notes §2.4) trains in two
phases: 50 epochs with the encoder frozen (batch 16), then 50 epochs of all layers (batch 4),
each with a fresh Adam optimiser (lr 1e-4, betas 0.9 / 0.999) and a step decay of the learning
rate by 10 every 25 epochs; phase 2 starts from phase 1's last weights. :func:`train_hovernet`
does the same:

* the tiles are cut into a :class:`~digipath.nuclei.dataset.NucleusPatchSet` under
  ``<output_dir>/patches/<purpose>`` (reused when it exists);
* every phase runs one :class:`~digipath.training.trainer.NetworkTrainer` with
  :class:`~digipath.nuclei.dataset.HoVerNetBatchSource` generators (augmented for training,
  centre crop only for validation), writing ``<name>_phase<k>_best_model.safetensors``,
  ``..._last_model.safetensors``, their state files, ``..._progress.csv`` and the plot into
  ``output_dir``; the selection metric is the validation loss (lower is better);
* the step decay is applied at the start of each epoch from the epoch number
  (``lr * gamma ** (epoch // step)``), so a resumed phase continues with the right rate;
* ``resume=True`` skips finished phases (their last state reached the phase's last epoch)
  and continues an interrupted one from its last (or best) state.

Why ``NetworkTrainer`` directly and not :class:`~digipath.training.experiment.
ExperimentCommander`: the commander builds its generators from a ``data`` section (a data
config of slides or a classification patch database) and one model for one phase; HoVer-Net
needs dense instance targets computed after augmentation and two phases with different
freezing, batch sizes and a fresh optimiser, so the phases drive the trainer themselves.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from digipath.nuclei.dataset import (
    HoVerNetBatchSource,
    NucleusPatchSet,
    Tile,
    build_patch_set,
)
from digipath.nuclei.io import NucleiError, TypeInfo
from digipath.nuclei.targets import HOVERNET_GEOMETRY, TRAINING_STEP, TRAINING_WINDOW

__all__ = ["ORIGINAL_PHASES", "Phase", "train_hovernet"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Phase:
    """One training phase.

    Attributes
    ----------
    epochs
        Epochs of the phase.
    freeze_encoder
        Train with the encoder frozen (its batch norms still update their statistics, as the
        original's ``freeze=True``).
    batch_size
        Training batch size.
    learning_rate
        Initial learning rate of the phase's fresh Adam optimiser.
    step_size, gamma
        Step decay: the rate is multiplied by ``gamma`` every ``step_size`` epochs.
    iterations
        Training batches per epoch; ``None``: one pass over the patch set
        (``ceil(patches / batch_size)``).
    """

    epochs: int
    freeze_encoder: bool = True
    batch_size: int = 16
    learning_rate: float = 1e-4
    step_size: int = 25
    gamma: float = 0.1
    iterations: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "step_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NucleiError(f"phase {name} must be an integer >= 1, got {value!r}")
        if self.iterations is not None and (
            isinstance(self.iterations, bool)
            or not isinstance(self.iterations, int)
            or self.iterations < 1
        ):
            raise NucleiError(f"phase iterations must be None or >= 1, got {self.iterations!r}")
        if not isinstance(self.freeze_encoder, bool):
            raise NucleiError(f"phase freeze_encoder must be True or False, got "
                              f"{self.freeze_encoder!r}")  # fmt: skip
        if not self.learning_rate > 0 or not 0 < self.gamma <= 1:
            raise NucleiError(
                f"phase learning_rate must be > 0 and gamma in (0, 1], got "
                f"{self.learning_rate!r} and {self.gamma!r}"
            )

    def rate(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (0-based) of the phase."""
        return self.learning_rate * self.gamma ** (epoch // self.step_size)


ORIGINAL_PHASES = (Phase(50, True, 16), Phase(50, False, 4))
"""The official recipe: 50 epochs frozen (batch 16), 50 epochs all layers (batch 4)."""


def _phase(value: Phase | Mapping[str, Any] | Sequence[Any], number: int) -> Phase:
    try:
        if isinstance(value, Phase):
            return value
        if isinstance(value, Mapping):
            return Phase(**value)
        items = list(value)
        if len(items) == 2:  # (epochs, freeze): the original's batch size for that phase
            return Phase(int(items[0]), bool(items[1]), 16 if items[1] else 4)
        return Phase(*items)
    except (TypeError, ValueError) as error:
        raise NucleiError(f"phases[{number}]: {error} (got {value!r})") from None


def _patch_set(
    tiles: Sequence[Tile] | NucleusPatchSet | PathLike,
    folder: Path,
    resume: bool,
    **options: Any,
) -> NucleusPatchSet:
    if isinstance(tiles, NucleusPatchSet):
        return tiles
    if isinstance(tiles, (str, os.PathLike)):
        return NucleusPatchSet(tiles)
    if resume and (folder / "patches.json").exists():
        return NucleusPatchSet(folder)
    return build_patch_set(tiles, folder, overwrite=True, **options)


def _finished(state_path: Path, epochs: int) -> bool:
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return int(state.get("epoch", -1)) >= epochs - 1


def _colour(augmentation: Any, seed: int):
    """The batch source's ``colour`` argument for ``augmentation`` (``True``: the jitter)."""
    if augmentation is None:
        return True
    from digipath.augment import AugmenterPool, load_augmentation
    from digipath.nuclei.dataset import pool_colour

    pool = augmentation
    if not isinstance(pool, AugmenterPool):
        pools = load_augmentation(augmentation, rng=seed)
        if "training" not in pools:
            raise NucleiError(f"augmentation: no 'training' pool in {augmentation!r}")
        pool = pools["training"]
    return pool_colour(pool)


def train_hovernet(
    tiles: Sequence[Tile] | NucleusPatchSet | PathLike,
    output_dir: PathLike,
    *,
    mode: str = "original",
    types: int | None = None,
    type_info: TypeInfo | Mapping | PathLike | None = None,
    type_mapping: Mapping[int, int] | None = None,
    validation: Sequence[Tile] | NucleusPatchSet | PathLike | None = None,
    phases: Sequence[Phase | Mapping[str, Any] | Sequence[Any]] = ORIGINAL_PHASES,
    input_shape: Sequence[int] | None = None,
    window: int | Sequence[int] = TRAINING_WINDOW,
    step: int | Sequence[int] = TRAINING_STEP,
    validation_batch_size: int | None = None,
    validation_iterations: int | None = None,
    main_buffer_size: int | None = None,
    read_buffer_size: int = 0,
    initial_weights: Mapping[str, Any] | None = None,
    augmentation: Any = None,
    device: str | None = None,
    seed: int = 0,
    name: str = "hovernet",
    resume: bool = False,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a HoVer-Net with the original's two-phase recipe.

    Parameters
    ----------
    tiles
        Training tiles (:data:`~digipath.nuclei.dataset.Tile`), or a built
        :class:`~digipath.nuclei.dataset.NucleusPatchSet` (or its folder).
    output_dir
        Where the patch sets, model files, states and progress CSVs go.
    mode
        ``"original"`` (270 -> 80) or ``"fast"`` (256 -> 164).
    types
        Nucleus types of the TP branch, background included; default: from ``type_info``,
        else from the patch set's type maps; ``None`` there: no TP branch.
    type_info, type_mapping
        See :func:`~digipath.nuclei.dataset.build_patch_set`.
    validation
        Validation tiles or patch set; ``None``: the training patches without augmentation
        (a smoke check of fitting, not of generalisation).
    phases
        :class:`Phase` objects, their keyword mappings, or ``(epochs, freeze_encoder)`` pairs
        (batch 16 frozen, 4 unfrozen, as the original). Default :data:`ORIGINAL_PHASES`.
    input_shape
        Network input (default: the mode's 270 or 256 px); smaller valid sizes (e.g. 96 or
        112 px in fast mode) make quick experiments.
    window, step
        Patch extraction (540 / 164 by default); the window must hold the input.
    validation_batch_size, validation_iterations
        Default: the phase's batch size, one pass over the validation patches.
    main_buffer_size, read_buffer_size
        Of the batch sources (:class:`~digipath.nuclei.dataset.HoVerNetBatchSource`).
    initial_weights
        A network state dict loaded (non-strictly: e.g. encoder weights only) before phase 1;
        missing and unexpected keys are logged.
    augmentation
        digipath's pixel-wise augmenters after the original's colour jitter: an
        :class:`~digipath.augment.AugmenterPool`, or a YAML file or mapping with an
        ``augmentation`` section (its ``training`` pool); see
        :func:`~digipath.nuclei.dataset.pool_colour`.
    device
        Torch device (default: the model's default).
    seed
        Seeds the batch sources (phase ``k`` uses ``seed + k``).
    name
        File prefix; phase ``k`` (1-based) writes ``<name>_phase<k>_*``.
    resume
        Continue: reuse the patch sets, skip finished phases, resume an interrupted one.
    progress
        Optional :data:`~digipath.training.trainer.Progress` callback; gets ``"phase start"``
        events (phase, phases) besides the trainer's.

    Returns
    -------
    dict
        ``phases``: the trainer summaries (``None`` for phases skipped on resume), ``best``
        and ``last``: the final phase's model file paths, ``types``, ``input_shape``,
        ``output_shape``.

    Raises
    ------
    NucleiError
        For invalid phases, geometry or data.
    """
    import torch

    from digipath.models.files import load_model
    from digipath.models.hovernet_model import HoVerNetModel
    from digipath.training.parameters import Iterations, TrainingParameters
    from digipath.training.trainer import NetworkTrainer

    colour = _colour(augmentation, seed)
    if mode not in HOVERNET_GEOMETRY:
        raise NucleiError(f"mode must be one of {', '.join(HOVERNET_GEOMETRY)}, got {mode!r}")
    plan = [_phase(value, number) for number, value in enumerate(phases)]
    if not plan:
        raise NucleiError("phases: give at least one phase")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    extraction = {"window": window, "step": step, "type_info": type_info,
                  "type_mapping": type_mapping}  # fmt: skip
    training_set = _patch_set(tiles, output / "patches" / "training", resume, **extraction)
    validation_set = (
        training_set if validation is None
        else _patch_set(validation, output / "patches" / "validation", resume, **extraction)
    )  # fmt: skip
    if types is None:
        types = training_set.types
    if types is not None and not training_set.has_types:
        raise NucleiError(f"{training_set.folder}: types={types} but the patches have no types")
    shape = tuple(input_shape) if input_shape is not None else HOVERNET_GEOMETRY[mode][0]
    use_types = types is not None
    summaries: list[dict[str, Any] | None] = []
    previous: Path | None = None
    output_shape = None
    for number, phase in enumerate(plan, start=1):
        prefix = f"{name}_phase{number}"
        last = output / f"{prefix}_last_model.safetensors"
        if resume and last.exists() and _finished(output / f"{prefix}_last_state.json",
                                                  phase.epochs):  # fmt: skip
            logger.info("phase %d already finished (%s)", number, last)
            summaries.append(None)
            previous = last
            continue
        options: dict[str, Any] = {"device": device} if device is not None else {}
        model = HoVerNetModel(
            types=types, mode=mode, freeze_encoder=phase.freeze_encoder,
            learning_rate=phase.learning_rate, input_shape=shape, **options,
        ).build()  # fmt: skip
        model.freeze_encoder(phase.freeze_encoder, update_statistics=phase.freeze_encoder)
        if previous is not None:
            loaded = load_model(previous, device=str(model.device), optimizer=False)
            model.module.load_state_dict(loaded.module.state_dict())
        elif initial_weights is not None:
            state = {k: torch.as_tensor(v) for k, v in initial_weights.items()}
            result = model.module.load_state_dict(state, strict=False)
            logger.info("initial weights: %d missing, %d unexpected keys",
                        len(result.missing_keys), len(result.unexpected_keys))  # fmt: skip
        common = {"mode": mode, "input_shape": shape, "types": use_types}
        training = HoVerNetBatchSource(
            training_set, augment=True, colour=colour, main_buffer_size=main_buffer_size,
            read_buffer_size=read_buffer_size, seed=seed + number, name="training", **common,
        )  # fmt: skip
        checking = HoVerNetBatchSource(
            validation_set, augment=False, main_buffer_size=main_buffer_size,
            seed=seed + 1000 + number, name="validation", **common,
        )  # fmt: skip
        output_shape = training.output_shape
        batch = validation_batch_size or phase.batch_size
        iterations = phase.iterations or -(-len(training_set) // phase.batch_size)
        checks = validation_iterations or -(-len(validation_set) // batch)
        parameters = TrainingParameters(
            epochs=phase.epochs, metric="validation loss", higher_is_better=False,
            learning_rate=phase.learning_rate,
            iterations={"training": Iterations(1, iterations, phase.batch_size),
                        "validation": Iterations(1, checks, batch)},
        )  # fmt: skip

        def scheduled(event: str, info: dict[str, Any], phase=phase, model=model) -> None:
            if event == "epoch":  # before the trainer reads the epoch's rate
                model.learning_rate = phase.rate(int(info["epoch"]))
            if progress is not None:
                progress(event, info)

        if progress is not None:
            progress("phase start", {"phase": number, "phases": len(plan), **asdict(phase)})
        header = {
            "patch_shapes": training.patch_shapes,
            "normalization": {"type": "rgb_to_0-1"},
        }
        trainer = NetworkTrainer(
            model, training, checking, parameters, output, prefix, header=header,
            progress=scheduled,
        )  # fmt: skip
        logger.info("HoVer-Net phase %d/%d: %s", number, len(plan), phase)
        summaries.append(trainer.execute(resume=resume))
        previous = last
    final = f"{name}_phase{len(plan)}"
    if output_shape is None:
        from digipath.models.networks.hovernet import hovernet_output_shape

        output_shape = tuple(hovernet_output_shape(shape, mode))
    return {
        "phases": summaries,
        "best": output / f"{final}_best_model.safetensors",
        "last": output / f"{final}_last_model.safetensors",
        "types": types,
        "input_shape": tuple(shape),
        "output_shape": tuple(output_shape),
    }


TRAINING_KEYS = ("mode", "types", "type info", "input size", "window", "step", "phases",
                 "validation batch size", "validation iterations", "name", "seed")  # fmt: skip
PHASE_KEYS = ("epochs", "freeze encoder", "batch size", "learning rate", "step size", "gamma",
              "iterations")  # fmt: skip


def training_options(parameters: PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`train_hovernet` from a YAML parameter file (or its mapping).

    The file has a ``hovernet`` section (keys with spaces, as digipath's other parameter
    files: ``mode``, ``types``, ``type info``, ``input size``, ``window``, ``step``,
    ``phases`` — a list of ``{epochs, freeze encoder, batch size, learning rate, step size,
    gamma, iterations}`` —, ``validation batch size``, ``validation iterations``, ``name``,
    ``seed``) and optionally digipath's ``augmentation`` section (its ``training`` pool's
    pixel-wise augmenters run after the colour jitter). Relative paths are relative to the
    file. A wrong key raises :class:`~digipath.errors.ConfigError` naming its key path.
    """
    import yaml

    from digipath.errors import ConfigError

    source = None
    folder = Path(".")
    if isinstance(parameters, (str, os.PathLike)):
        source = os.fspath(parameters)
        folder = Path(source).parent
        try:
            parameters = yaml.safe_load(Path(source).read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise ConfigError("", f"cannot read: {error.strerror}", source) from None
        except yaml.YAMLError as error:
            raise ConfigError("", f"not valid YAML: {error}", source) from None
    if not isinstance(parameters, Mapping):
        raise ConfigError("", "expected a mapping with a 'hovernet' section", source)
    unknown = sorted(set(parameters) - {"hovernet", "augmentation"})
    if unknown:
        raise ConfigError(unknown[0], "unknown section; valid: hovernet, augmentation", source)
    section = parameters.get("hovernet") or {}
    if not isinstance(section, Mapping):
        raise ConfigError("hovernet", "expected a mapping", source)
    options: dict[str, Any] = {}
    for key, value in section.items():
        if key not in TRAINING_KEYS:
            raise ConfigError(f"hovernet.{key}", f"unknown key; valid: {', '.join(TRAINING_KEYS)}",
                              source)  # fmt: skip
        if key == "phases":
            if not isinstance(value, list) or not value:
                raise ConfigError("hovernet.phases", "expected a list of phases", source)
            phases = []
            for number, phase in enumerate(value):
                if not isinstance(phase, Mapping):
                    raise ConfigError(f"hovernet.phases.{number}", "expected a mapping", source)
                wrong = sorted(set(phase) - set(PHASE_KEYS))
                if wrong:
                    valid = ", ".join(PHASE_KEYS)
                    raise ConfigError(f"hovernet.phases.{number}.{wrong[0]}",
                                      f"unknown key; valid: {valid}", source)  # fmt: skip
                try:
                    phases.append(Phase(**{k.replace(" ", "_"): v for k, v in phase.items()}))
                except (TypeError, ValueError, NucleiError) as error:
                    raise ConfigError(f"hovernet.phases.{number}", str(error), source) from None
            options["phases"] = phases
        elif key == "input size":
            options["input_shape"] = (int(value), int(value))
        elif key == "type info":
            path = Path(value)
            options["type_info"] = path if path.is_absolute() else folder / path
        else:
            options[key.replace(" ", "_")] = value
    if parameters.get("augmentation"):
        options["augmentation"] = {"augmentation": parameters["augmentation"]}
    return options
