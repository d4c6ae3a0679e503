"""Pixel-spacing arithmetic: matching a requested spacing to a pyramid level.

Spacings are in µm per pixel throughout. A level *matches* a requested spacing ``s`` when the
level's spacing ``s_l`` satisfies ``|s - s_l| <= tolerance * s_l`` (a relative tolerance; the
default 0.25 accepts ±25 %). When several levels match, the finest one (smallest spacing) wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DEFAULT_TOLERANCE = 0.25
"""Default relative tolerance when matching a requested spacing to a level (±25 %)."""


def check_spacing(spacing: float, what: str = "spacing") -> float:
    """Return ``spacing`` as a float, or raise ``ValueError`` unless it is finite and > 0 µm/px."""
    try:
        value = float(spacing)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of µm/px, got {spacing!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a finite number of µm/px > 0, got {spacing!r}")
    return value


def check_tolerance(tolerance: float) -> float:
    """Return ``tolerance`` as a float, or raise ``ValueError`` unless it is finite and >= 0."""
    try:
        value = float(tolerance)
    except (TypeError, ValueError):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"tolerance must be a relative tolerance >= 0 (0.25 = ±25 %), got {tolerance!r}"
        )
    return value


def matching_level(
    spacings: Sequence[float | None], spacing: float, tolerance: float = DEFAULT_TOLERANCE
) -> int | None:
    """Return the index of the finest level whose spacing matches ``spacing``, else ``None``.

    Parameters
    ----------
    spacings
        Spacing of every level in µm/px (``None`` for a level without spacing).
    spacing
        The requested spacing in µm/px.
    tolerance
        Relative tolerance: a level of spacing ``s_l`` matches when
        ``|spacing - s_l| <= tolerance * s_l``.
    """
    best: int | None = None
    for index, level_spacing in enumerate(spacings):
        if level_spacing is None:
            continue
        # A tiny absolute slack keeps the interval edges inclusive despite rounding.
        if abs(spacing - level_spacing) <= tolerance * level_spacing * (1 + 1e-12) + 1e-12:
            if best is None or level_spacing < spacings[best]:  # type: ignore[operator]
                best = index
    return best


def nearest_finer_level(spacings: Sequence[float | None], spacing: float) -> int | None:
    """Return the level with the largest spacing still finer than ``spacing`` (µm/px).

    Returns ``None`` when every level is coarser than the requested spacing (or has none).
    """
    best: int | None = None
    for index, level_spacing in enumerate(spacings):
        if level_spacing is None or level_spacing > spacing:
            continue
        if best is None or level_spacing > spacings[best]:  # type: ignore[operator]
            best = index
    return best


def spacing_from_resolution(resolution: float, unit: int) -> float | None:
    """Convert a TIFF resolution (pixels per unit) to a spacing in µm/px.

    Parameters
    ----------
    resolution
        The XResolution or YResolution tag value, in pixels per ``unit``.
    unit
        The TIFF ResolutionUnit: 1 none, 2 inch, 3 centimetre (also 4 mm and 5 µm, as
        written by some tools).

    Returns
    -------
    The spacing in µm/px, or ``None`` when the tags carry no physical size: unit *none*, a
    resolution of 0 or 1, or the screen placeholders of 72 and 96 dpi.
    """
    if not resolution or not math.isfinite(resolution) or resolution <= 0 or resolution == 1:
        return None
    micrometres_per_unit = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}.get(int(unit))
    if micrometres_per_unit is None:
        return None
    if unit == 2 and resolution in (72, 96):
        return None
    return micrometres_per_unit / resolution
