"""Training: experiment parameters, the NetworkTrainer epoch loop and the ExperimentCommander."""

from digipath.training.experiment import ExperimentCommander
from digipath.training.parameters import TrainingParameters, apply_overrides, training_parameters
from digipath.training.trainer import NetworkTrainer, TrainingState

__all__ = [
    "ExperimentCommander",
    "NetworkTrainer",
    "TrainingParameters",
    "TrainingState",
    "apply_overrides",
    "training_parameters",
]
