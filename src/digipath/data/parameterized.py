"""A base for small configured objects (normalisers, weight mappers) compared by parameters."""

from __future__ import annotations

from typing import ClassVar


class Parameterized:
    """Equality, hashing and ``repr`` from the constructor parameters.

    Subclasses return their parameters from :meth:`_parameters` and name their configuration
    ``type`` (the YAML name) in :attr:`type`.
    """

    type: ClassVar[str]
    """The configuration ``type`` naming the object in a parameter file."""

    def _parameters(self) -> dict[str, object]:
        return {}

    def __repr__(self) -> str:
        listed = ", ".join(f"{name}={value!r}" for name, value in self._parameters().items())
        return f"{type(self).__name__}({listed})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._parameters() == self._parameters()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self._parameters().items())))
