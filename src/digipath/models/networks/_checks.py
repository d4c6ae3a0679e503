"""Argument checks shared by the networks: each raises :class:`ValueError` naming the argument.

Every message says which argument was wrong, what it was and which values are accepted, so that a
configuration can be fixed without reading the source.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

Shape = tuple[int, int]
"""A spatial size ``(rows, cols)`` in pixels."""


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` if it is an integer in ``[minimum, maximum]``, else raise ValueError."""
    accepted = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer {accepted}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {accepted}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    if isinstance(value, bool) or value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool, else raise ValueError."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_probability(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a number in ``[0, 1)``, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def check_shape(name: str, value: Any) -> Shape:
    """Return ``value`` as a ``(rows, cols)`` tuple of positive integers, else raise ValueError."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or len(value) != 2
        or any(isinstance(size, bool) or not isinstance(size, int) or size < 1 for size in value)
    ):
        raise ValueError(f"{name} must be (rows, cols), two integers >= 1, got {value!r}")
    return int(value[0]), int(value[1])


def check_input(name: str, tensor: Any, channels: int) -> None:
    """Raise ValueError unless ``tensor`` is ``(N, channels, H, W)``."""
    if tensor.ndim != 4 or tensor.shape[1] != channels:
        raise ValueError(
            f"{name} expects input of shape (N, {channels}, H, W), got {tuple(tensor.shape)}"
        )
