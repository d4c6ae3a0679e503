"""Source selection and patch distribution over many images (in-process).

:class:`BatchSampler` keeps a pool of open :class:`~digipath.data.sampler.PatchSampler` objects
and composes batches from them, as the original DigitalPathology BatchSampler did:

* :meth:`BatchSampler.step` selects which images are open: the pool is split over categories
  by the category ratios, each category's share over labels by the label ratios, and for each
  label images that *declare* it are drawn without replacement; the rest of the category's
  share is filled with other images of the category, then the pool with images of any
  category that declare a configured label. With ``strict_selection`` a label with a ratio
  > 0 that no selected image declares raises
  :class:`~digipath.errors.FailedSourceSelectionError`.
* :meth:`BatchSampler.batch` splits a batch over labels by the label ratios (restricted to the
  labels the open images declare, renormalised, unless strict) and each label's count evenly
  over the open images that declare it.

Category ratios decide how many images of each category are open, not directly the share of
patches: patches follow the labels. The multi-process version with shared buffers builds on this
class (batch generation).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from digipath.data.distribution import distribute_population
from digipath.data.labels import LabelMap
from digipath.data.sampler import PatchSampler
from digipath.errors import FailedSourceSelectionError, SamplingError, SourceError

logger = logging.getLogger(__name__)


class Source(Protocol):
    """What the sampler needs of a data source (see :class:`digipath.data.config.PatchSource`)."""

    image: str
    mask: str
    stat: str
    labels: tuple[int, ...]


@dataclass
class Batch:
    """A batch of patches.

    Attributes
    ----------
    patches
        ``{spacing: (N, rows, cols, channels)}`` image patches.
    labels
        (N,) classes (``central`` mode) or ``{spacing: (N, rows, cols)}`` label patches.
    sources
        (N,) index into :attr:`BatchSampler.open_sources` of the image each patch comes from.
    mask_values
        (N,) the mask value at each patch's centre.
    """

    patches: dict[float, np.ndarray]
    labels: np.ndarray | dict[float, np.ndarray]
    sources: np.ndarray
    mask_values: np.ndarray


def _normalised(ratios: Mapping, what: str) -> dict:
    values = {key: float(value) for key, value in ratios.items()}
    if not values:
        raise ValueError(f"{what} ratios are empty")
    if any(not np.isfinite(v) or v < 0 for v in values.values()):
        raise ValueError(f"{what} ratios must be finite and >= 0, got {values}")
    total = sum(values.values())
    if total <= 0:
        raise ValueError(f"{what} ratios are all zero: {values}")
    return {key: value / total for key, value in values.items()}


def open_sampler(
    source: Source, label_ratios: Mapping[int, float], options: Mapping[str, object]
) -> PatchSampler:
    """Open the :class:`PatchSampler` of ``source`` for the labels of ``label_ratios``.

    Parameters
    ----------
    source
        The image, mask, statistics paths and declared labels.
    label_ratios
        The labels being sampled; the sampler tracks those ``source`` declares.
    options
        Keyword arguments of :class:`PatchSampler` (``mask_spacing``, ``tolerance`` ...).

    Raises
    ------
    SourceError
        When the source declares a sampled label its mask has no pixel of.
    """
    labels = sorted(set(source.labels) & set(label_ratios)) or sorted(source.labels)
    sampler = PatchSampler(
        source.image,
        mask=source.mask or None,
        stats=source.stat or None,
        labels=labels if not (source.stat and os.path.isfile(source.stat)) else None,
        **options,
    )
    empty = [label for label in labels if sampler.stats.counts.get(label, 0) == 0]
    if empty:
        sampler.close()
        raise SourceError(
            source.stat or source.mask,
            f"declares labels {empty} but its mask has no pixel of them "
            f"(counts {sampler.stats.counts})",
        )
    return sampler


class BatchSampler:
    """Compose label-balanced batches from a pool of images.

    Parameters
    ----------
    sources
        ``{category: sources}``; each source has ``image``, ``mask``, ``stat`` paths (``""``
        when absent) and the ``labels`` it declares.
    label_ratios
        ``{mask value: ratio}`` of the patches (normalised).
    patch_shapes
        ``{spacing in µm/px: (rows, cols)}``.
    mask_spacing
        Spacing of the mask level the statistics describe (µm/px).
    category_ratios
        ``{category: ratio}`` of the open images; default: equal over the categories given.
    tolerance, label_mode, label_map, create_stats, fill
        Passed to every :class:`PatchSampler`.
    strict_selection
        Raise when the selected images cannot cover every label with a ratio > 0; otherwise
        batches use the labels available, renormalised.
    pool_size
        Number of images open at once (default: all).
    rng
        Generator or seed; the only source of randomness.
    """

    def __init__(
        self,
        sources: Mapping[str, Iterable[Source]],
        *,
        label_ratios: Mapping[int, float],
        patch_shapes: Mapping[float, tuple[int, int]],
        mask_spacing: float,
        category_ratios: Mapping[str, float] | None = None,
        tolerance: float = 0.25,
        label_mode: str = "central",
        label_map: LabelMap | Mapping[int, int] | None = None,
        strict_selection: bool = False,
        create_stats: bool = False,
        pool_size: int | None = None,
        fill: float | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        self.label_ratios = _normalised(label_ratios, "label")
        self.category_ratios = _normalised(
            category_ratios if category_ratios is not None else dict.fromkeys(sources, 1.0),
            "category",
        )
        unknown = set(self.category_ratios) - set(sources)
        if unknown:
            raise ValueError(
                f"category ratios name categories without sources: {sorted(unknown)} "
                f"(categories: {sorted(sources)})"
            )
        self.sources = {category: sorted(set(items)) for category, items in sources.items()}
        for items in self.sources.values():
            for source in items:
                self._check_files(source)
        if pool_size is not None and (not isinstance(pool_size, int) or pool_size < 1):
            raise ValueError(f"pool_size must be a positive integer, got {pool_size!r}")
        if label_map is not None and not isinstance(label_map, LabelMap):
            label_map = LabelMap(label_map)
        if label_map is not None:
            missing = set(self.label_ratios) - set(label_map.mapping)
            if missing:
                raise ValueError(f"label ratios name mask values the label map lacks: {missing}")
        self.patch_shapes = dict(patch_shapes)
        self.pool_size = pool_size
        self.strict_selection = strict_selection
        self.sampler_options = {
            "mask_spacing": mask_spacing,
            "tolerance": tolerance,
            "label_mode": label_mode,
            "label_map": label_map,
            "create_stats": create_stats,
            "fill": fill,
        }
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._samplers: dict[Source, PatchSampler] = {}

    @staticmethod
    def _check_files(source: Source) -> None:
        if not os.path.isfile(source.image):
            raise SourceError(source.image, "image file not found")
        has_mask = bool(source.mask) and os.path.isfile(source.mask)
        has_stat = bool(source.stat) and os.path.isfile(source.stat)
        if not (has_mask or has_stat):
            raise SourceError(
                source.image,
                f"neither the mask ({source.mask or 'none given'}) nor the statistics file "
                f"({source.stat or 'none given'}) exists",
            )

    # ----------------------------------------------------------------------------------------
    # Source selection

    @property
    def open_sources(self) -> list[Source]:
        """The images currently open, sorted."""
        return sorted(self._samplers)

    def _declaring(self, items: Iterable[Source], label: int) -> list[Source]:
        return [source for source in items if label in source.labels]

    def select(self) -> list[Source]:
        """Choose the images to open (see the module docstring); does not open them."""
        categories = [c for c in self.category_ratios if self.sources.get(c)]
        total = sum(len(self.sources[c]) for c in categories)
        if total == 0:
            raise SamplingError("no sources: every category with a ratio is empty")
        population = min(total, self.pool_size or total)
        ratios = {c: self.category_ratios[c] for c in categories}
        positive = [c for c in categories if ratios[c] > 0]
        minimum = {c: 1 if (c in positive and len(positive) <= population) else 0 for c in ratios}
        maximum = {c: len(self.sources[c]) for c in ratios}
        if sum(ratios.values()) == 0:
            ratios = dict.fromkeys(categories, 1.0)
        shares = distribute_population(
            population, ratios, self.rng, minimum=minimum, maximum=maximum
        )
        chosen: list[Source] = []
        taken: set[Source] = set()
        labels = [label for label, ratio in self.label_ratios.items() if ratio > 0]
        for category in categories:
            quota = shares[category]
            if quota == 0:
                continue
            items = self.sources[category]
            label_minimum = 1 if len(labels) <= quota else 0
            per_label = distribute_population(
                quota,
                {label: self.label_ratios[label] for label in labels},
                self.rng,
                minimum=label_minimum,
            )
            picked: list[Source] = []
            for label in self.rng.permutation(labels).tolist():
                candidates = [s for s in self._declaring(items, label) if s not in taken]
                number = min(per_label[label], len(candidates), quota - len(picked))
                for index in self.rng.choice(len(candidates), size=number, replace=False):
                    picked.append(candidates[int(index)])
                    taken.add(candidates[int(index)])
            rest = [s for s in items if s not in taken]
            number = min(quota - len(picked), len(rest))
            for index in self.rng.choice(len(rest), size=number, replace=False):
                picked.append(rest[int(index)])
                taken.add(rest[int(index)])
            chosen.extend(picked)
        if len(chosen) < population:
            wanted = set(self.label_ratios)
            rest = [
                s
                for c in categories
                for s in self.sources[c]
                if s not in taken and wanted & set(s.labels)
            ]
            number = min(population - len(chosen), len(rest))
            for index in self.rng.choice(len(rest), size=number, replace=False):
                chosen.append(rest[int(index)])
                taken.add(rest[int(index)])
        declared = set().union(*(set(s.labels) for s in chosen)) if chosen else set()
        uncovered = [label for label in labels if label not in declared]
        if uncovered and self.strict_selection:
            raise FailedSourceSelectionError(
                uncovered, [s.stat or s.mask or s.image for s in sorted(chosen)]
            )
        return sorted(chosen)

    def step(self) -> None:
        """Select the images to open, keep those already open, close the others, open the new."""
        selected = self.select()
        for source in [s for s in self._samplers if s not in selected]:
            self._samplers.pop(source).close()
        for source in selected:
            if source not in self._samplers:
                self._samplers[source] = self._open(source)
        logger.debug("open sources: %s", [s.image for s in self.open_sources])

    def _open(self, source: Source) -> PatchSampler:
        return open_sampler(source, self.label_ratios, self.sampler_options)

    # ----------------------------------------------------------------------------------------
    # Batches

    def label_counts(
        self, size: int, open_sources: Iterable[Source] | None = None
    ) -> dict[int, int]:
        """Split ``size`` patches over the labels (see the module docstring).

        ``open_sources`` are the images open now (default: this sampler's own).
        """
        ratios = {label: ratio for label, ratio in self.label_ratios.items() if ratio > 0}
        if not self.strict_selection:
            sources = self._samplers if open_sources is None else open_sources
            available = set().union(*(set(s.labels) for s in sources))
            ratios = {label: ratio for label, ratio in ratios.items() if label in available}
            if not ratios:
                raise SamplingError(
                    f"the open images declare none of the labels {sorted(self.label_ratios)}"
                )
        return distribute_population(size, ratios, self.rng)

    def plan(
        self, size: int, open_sources: Sequence[Source] | None = None
    ) -> dict[Source, dict[int, int]]:
        """How many patches of which label to draw from each open image for ``size`` patches.

        Parameters
        ----------
        size
            Number of patches.
        open_sources
            The images open now, sorted (default: this sampler's own).

        Returns
        -------
        dict
            ``{source: {mask value: count}}`` for every open source, in ``open_sources`` order;
            a source with nothing to draw maps to ``{}``.
        """
        sources = self.open_sources if open_sources is None else list(open_sources)
        plan: dict[Source, dict[int, int]] = {s: {} for s in sources}
        for label, count in self.label_counts(size, sources).items():
            holders = self._declaring(sources, label)
            if not holders:
                raise FailedSourceSelectionError(
                    [label], [s.stat or s.mask or s.image for s in sources]
                )
            shares = distribute_population(count, [1.0] * len(holders), self.rng)
            for holder, share in zip(holders, shares, strict=True):
                if share:
                    plan[holder][label] = share
        return plan

    def batch(self, size: int, *, shuffle: bool = True) -> Batch:
        """Sample ``size`` patches from the open images.

        Parameters
        ----------
        size
            Number of patches.
        shuffle
            Shuffle the patches (otherwise they come grouped by image).
        """
        if not self._samplers:
            self.step()
        open_sources = self.open_sources
        plan = self.plan(size, open_sources)
        patches: dict[float, list[np.ndarray]] = {s: [] for s in self.patch_shapes}
        labels: list = []
        sources: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for index, source in enumerate(open_sources):
            if not plan[source]:
                continue
            samples = self._samplers[source].sample(plan[source], self.patch_shapes, self.rng)
            for spacing in self.patch_shapes:
                patches[spacing].append(samples.patches[spacing])
            labels.append(samples.labels)
            sources.append(np.full(len(samples.mask_values), index, dtype=np.int32))
            values.append(samples.mask_values)
        order = self.rng.permutation(size) if shuffle else np.arange(size)
        stacked = {spacing: np.concatenate(parts)[order] for spacing, parts in patches.items()}
        if labels and isinstance(labels[0], dict):
            label_result: np.ndarray | dict[float, np.ndarray] = {
                spacing: np.concatenate([part[spacing] for part in labels])[order]
                for spacing in self.patch_shapes
            }
        else:
            label_result = np.concatenate(labels)[order]
        return Batch(stacked, label_result, np.concatenate(sources)[order],
                     np.concatenate(values)[order])  # fmt: skip

    def close(self) -> None:
        """Close every open image."""
        for sampler in self._samplers.values():
            sampler.close()
        self._samplers.clear()
