"""The commands' shared terminal output and option parsing: errors, path replacements, ranges."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console(stderr=True)
"""Messages, progress bars and tables go to standard error; data (JSON lines) to standard out."""


def fail(error: Exception | str) -> NoReturn:
    """Print ``error`` in red, unwrapped (paths stay whole), and exit with code 1."""
    console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def path_replacements(values: list[str] | None, hint: str = "--path") -> dict[str, str]:
    """``TAG=VALUE`` options as a mapping (data config path replacements)."""
    result = {}
    for value in values or []:
        key, separator, replacement = value.partition("=")
        if not separator or not key:
            raise typer.BadParameter(f"expected TAG=VALUE, got {value!r}", param_hint=hint)
        result[key] = replacement
    return result


def number_pair(text: str, hint: str) -> list[float]:
    """``'low,high'`` as two numbers."""
    try:
        low, high = (float(value) for value in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected 'low,high', got {text!r}", param_hint=hint) from None
    return [low, high]
