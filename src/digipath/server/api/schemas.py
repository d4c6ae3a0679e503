"""Request bodies shared by the API routers, with the checks every name gets."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

__all__ = ["Body", "Name", "Username"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$")


def _name(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if not value or len(value) > 128 or _CONTROL.search(value):
        raise ValueError("expected 1 to 128 characters, no control characters")
    return value


def _username(value: str) -> str:
    if not _USERNAME.match(value):
        raise ValueError(
            "expected 3 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(_name)]
"""A display name (project, dataset, weights): trimmed, 1-128 characters, no control
characters. Names are shown escaped, never as HTML."""

Username = Annotated[str, AfterValidator(_username)]
"""A user name: 3-64 of ``[A-Za-z0-9_.-]``."""


class Body(BaseModel):
    """Base of the request bodies: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")
