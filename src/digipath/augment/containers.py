"""Containers: augmenters made of augmenters (all in order, or one of several).

:class:`Sequential` runs every child in order; :class:`OneOf` picks one child per draw, by
ratio, and applies it with probability ``p``. Containers nest, and are augmenters themselves:
``randomize`` draws the choice and the chosen children's parameters, ``leaves`` lists what will
run, and ``__call__`` runs it through :func:`~digipath.augment.chain.run_chain` (fused warps).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from digipath.augment.base import Augmenter, Shape, check_number
from digipath.augment.chain import run_chain
from digipath.errors import AugmentationError


class PassThrough(Augmenter):
    """Leave the patch and label map as they are (keyword ``pass_through``)."""

    keyword = "pass_through"

    def apply(self, image, label):
        return image, label


def _children(owner: str, children: Sequence[Augmenter]) -> list[Augmenter]:
    items = list(children)
    for index, child in enumerate(items):
        if not isinstance(child, Augmenter):
            raise AugmentationError(
                f"{owner}: child {index} must be an Augmenter, got {type(child).__name__}"
            )
    return items


class Sequential(Augmenter):
    """Apply every child, in order (keyword ``sequential``).

    Parameters
    ----------
    children
        The augmenters (or containers) to run; may be empty (the identity).
    """

    keyword = "sequential"
    uint8_only = False

    def __init__(self, children: Sequence[Augmenter] = ()) -> None:
        self.children = _children(self.keyword, children)

    @property
    def spatial(self) -> bool:  # type: ignore[override]
        return any(child.spatial for child in self.children)

    def append(self, child: Augmenter) -> None:
        """Add ``child`` at the end."""
        self.children.extend(_children(self.keyword, [child]))

    def randomize(self, rng: np.random.Generator) -> None:
        for child in self.children:
            child.randomize(rng)

    def leaves(self) -> list[Augmenter]:
        return [leaf for child in self.children for leaf in child.leaves()]

    def apply(self, image, label):
        return run_chain(self.leaves(), image, label)

    def input_shape(self, output_shape: Shape) -> Shape:
        shape = tuple(output_shape)
        for child in reversed(self.children):
            shape = tuple(child.input_shape(shape))
        return shape

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        for child in self.children:
            shape = tuple(child.output_shape(shape))
        return shape

    def __repr__(self) -> str:
        return f"Sequential({self.children!r})"


class OneOf(Augmenter):
    """Apply one child per draw, chosen by ratio, with probability ``p`` (keyword ``one_of``).

    Parameters
    ----------
    children
        The candidates (at least one).
    ratios
        Relative chance of each child (positive; normalised). ``None``: equal chances.
    p
        Probability that the chosen child is applied at all (DeepHealth's
        ``OneOfAugmentationContainer p``); the choice is drawn either way.
    """

    keyword = "one_of"
    uint8_only = False

    def __init__(
        self,
        children: Sequence[Augmenter],
        ratios: Sequence[float] | None = None,
        p: float = 1.0,
    ) -> None:
        self.children = _children(self.keyword, children)
        if not self.children:
            raise AugmentationError("one_of: needs at least one child augmenter")
        if ratios is None:
            ratios = [1.0] * len(self.children)
        ratios = [check_number(self.keyword, "ratio", r, low=0.0) for r in ratios]
        if len(ratios) != len(self.children):
            raise AugmentationError(
                f"one_of: {len(ratios)} ratios for {len(self.children)} children"
            )
        if any(r <= 0 for r in ratios):
            raise AugmentationError(f"one_of: every ratio must be > 0, got {ratios}")
        total = sum(ratios)
        self.ratios = [r / total for r in ratios]
        self.p = check_number(self.keyword, "p", p, low=0.0, high=1.0)
        self._chosen: int | None = None
        self._applied = False

    @property
    def spatial(self) -> bool:  # type: ignore[override]
        return any(child.spatial for child in self.children)

    @property
    def chosen(self) -> Augmenter | None:
        """The child that runs on the current draw (``None`` when nothing is applied)."""
        if self._chosen is None:
            raise AugmentationError("one_of: call randomize(rng) before applying")
        return self.children[self._chosen] if self._applied else None

    def randomize(self, rng: np.random.Generator) -> None:
        if len(self.children) == 1:
            self._chosen = 0
        else:
            self._chosen = int(rng.choice(len(self.children), p=self.ratios))
        self._applied = bool(self.p >= 1.0 or rng.random() <= self.p)
        if self._applied:
            self.children[self._chosen].randomize(rng)

    def leaves(self) -> list[Augmenter]:
        chosen = self.chosen
        return [] if chosen is None else chosen.leaves()

    def apply(self, image, label):
        return run_chain(self.leaves(), image, label)

    def input_shape(self, output_shape: Shape) -> Shape:
        shapes = [tuple(child.input_shape(output_shape)) for child in self.children]
        if self.p < 1.0:
            shapes.append(tuple(output_shape))
        return (max(s[0] for s in shapes), max(s[1] for s in shapes))

    def output_shape(self, input_shape: Shape) -> Shape:
        chosen = self.chosen
        return tuple(input_shape) if chosen is None else chosen.output_shape(input_shape)

    def __repr__(self) -> str:
        return f"OneOf({self.children!r}, ratios={self.ratios!r}, p={self.p!r})"
