"""Models: ModelBase (PyTorch), the networks, losses, reconstruction information, model files.

:class:`ModelBase` wraps a network with its optimiser, loss and metrics; model types are
registered by name (:func:`register_model`) so the parameter file's ``model.type`` builds them
(:func:`model_from_config`), and model files are safetensors with a JSON header
(:func:`save_model`, :func:`load_model`).
"""

from digipath.models.base import ModelBase
from digipath.models.config import model_from_config
from digipath.models.files import file_digest, load_model, read_header, save_model
from digipath.models.reconstruction import ReconstructionInfo, reconstruction_info
from digipath.models.registry import MODELS, NetworkModel, model_class, register_model

__all__ = [
    "MODELS",
    "ModelBase",
    "NetworkModel",
    "ReconstructionInfo",
    "file_digest",
    "load_model",
    "model_class",
    "model_from_config",
    "read_header",
    "reconstruction_info",
    "register_model",
    "save_model",
]
