"""Splitting a population into integer shares by ratios, with per-share bounds.

:func:`distribute_population` is used wherever a count is divided: items over purposes, images
over categories and labels, patches over labels and sources. It follows the original
DigitalPathology rule: start from ``round(ratio * population)`` clamped into each share's
``[minimum, maximum]``, then fix the total by adding or removing single units at shares chosen
at random among those that still have room. The random tie-breaking matters for small pools:
with three labels and a batch of 10, each label gets the extra patch in turn.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar, overload

import numpy as np

K = TypeVar("K", bound=Hashable)

Bound = int | Mapping[K, int] | Sequence[int] | None


def _as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _bounds(bound: object, keys: list, default: int, name: str) -> np.ndarray:
    if bound is None:
        return np.full(len(keys), default, dtype=np.int64)
    if isinstance(bound, (int, np.integer)):
        return np.full(len(keys), int(bound), dtype=np.int64)
    if isinstance(bound, Mapping):
        unknown = set(bound) - set(keys)
        if unknown:
            raise ValueError(f"{name} has keys {sorted(map(str, unknown))} that have no ratio")
        return np.array([int(bound.get(key, default)) for key in keys], dtype=np.int64)
    values = list(bound)  # type: ignore[call-overload]
    if len(values) != len(keys):
        raise ValueError(f"{name} has {len(values)} entries, expected {len(keys)}")
    return np.array([int(v) for v in values], dtype=np.int64)


@overload
def distribute_population(
    population: int,
    ratios: Mapping[K, float],
    rng: np.random.Generator | int | None = ...,
    *,
    minimum: Bound = ...,
    maximum: Bound = ...,
) -> dict[K, int]: ...


@overload
def distribute_population(
    population: int,
    ratios: Sequence[float],
    rng: np.random.Generator | int | None = ...,
    *,
    minimum: Bound = ...,
    maximum: Bound = ...,
) -> list[int]: ...


def distribute_population(population, ratios, rng=None, *, minimum=None, maximum=None):
    """Split ``population`` into integer shares proportional to ``ratios``.

    Parameters
    ----------
    population
        The total to split (>= 0).
    ratios
        Non-negative weights per share, as a mapping (key -> ratio) or a sequence; they are
        normalised to sum 1 (they need not sum to 1 already).
    rng
        Generator (or seed) for the random choice of which shares absorb the rounding
        difference.
    minimum, maximum
        Bounds per share: one integer for all, a mapping or a sequence like ``ratios``.
        Default 0 and unbounded.

    Returns
    -------
    dict or list
        The shares, in the container type of ``ratios``; they sum to ``population`` and respect
        the bounds.

    Raises
    ------
    ValueError
        Negative or non-finite ratios, all ratios zero (with a population > 0), or bounds that
        cannot hold the population (sum of minima > population or sum of maxima < population).

    Notes
    -----
    Shares start at ``clamp(round(ratio * population), minimum, maximum)``. While the total is
    short (or over), units are added to (removed from) shares still below their maximum (above
    their minimum): when the difference is at least the number of such shares each of them
    takes an equal part, and the last units go to distinct shares drawn at random. Shares of
    ratio 0 receive units only when no other share has room left.
    """
    as_mapping = isinstance(ratios, Mapping)
    keys = list(ratios) if as_mapping else list(range(len(ratios)))
    values = np.array([float(ratios[k]) for k in keys] if as_mapping else list(ratios), float)
    if isinstance(population, bool) or not isinstance(population, (int, np.integer)):
        raise ValueError(f"population must be an integer, got {population!r}")
    population = int(population)
    if population < 0:
        raise ValueError(f"population must be >= 0, got {population}")
    if values.size and (not np.isfinite(values).all() or (values < 0).any()):
        raise ValueError(f"ratios must be finite and >= 0, got {values.tolist()}")
    low = _bounds(minimum, keys, 0, "minimum")
    high = _bounds(maximum, keys, int(population), "maximum")
    if (low < 0).any() or (high < low).any():
        raise ValueError("bounds must satisfy 0 <= minimum <= maximum for every share")
    if low.sum() > population or high.sum() < population:
        raise ValueError(
            f"cannot split {population} into shares between minima {low.tolist()} and maxima "
            f"{high.tolist()}"
        )
    total = values.sum()
    if total <= 0:
        if population > 0 and not keys:
            raise ValueError(f"cannot split {population} over no shares")
        if population > 0 and low.sum() < population:
            raise ValueError(f"all ratios are zero; cannot split a population of {population}")
        shares = low.copy()
    else:
        shares = np.clip(np.rint(values / total * population).astype(np.int64), low, high)
    generator = _as_generator(rng)
    difference = population - int(shares.sum())
    while difference != 0:
        step = 1 if difference > 0 else -1
        room = (high - shares) if step > 0 else (shares - low)
        open_shares = np.flatnonzero(room > 0)
        if step > 0 and (values[open_shares] > 0).any():
            open_shares = open_shares[values[open_shares] > 0]  # zero ratios take nothing extra
        if len(open_shares) <= abs(difference):
            part = min(abs(difference) // len(open_shares), int(room[open_shares].min()))
            shares[open_shares] += step * part
            difference -= step * part * len(open_shares)
            if part > 0:
                continue
        chosen = generator.choice(
            open_shares, size=min(abs(difference), len(open_shares)), replace=False
        )
        shares[chosen] += step
        difference -= step * len(chosen)
    result = [int(v) for v in shares]
    return dict(zip(keys, result, strict=True)) if as_mapping else result
