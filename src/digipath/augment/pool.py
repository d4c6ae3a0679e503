"""The augmenter pool: ordered groups applied to batches of multi-spacing patches.

An :class:`AugmenterPool` holds named groups that run in the order they were added. A
*sequential* group applies every augmenter in it; a *random* group applies exactly one, chosen
per patch with probability proportional to its ratio. For each patch location the pool draws
once and applies the same parameters to that location's patches at every spacing and to their
label maps, so the spacings stay aligned.

Spatial augmenters need context (scaling down, rotating, blurring): the pool reports the
enlarged shape to extract per target shape (:meth:`AugmenterPool.input_shape`), and centre-crops
back to the target after augmenting. The crop happens as early as the remaining steps allow, and
consecutive affine steps are one warp (see :mod:`digipath.augment.chain`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from digipath.augment.base import Augmenter, Shape, check_number
from digipath.augment.chain import run_chain
from digipath.augment.containers import OneOf, Sequential
from digipath.errors import AugmentationError


class _Group:
    def __init__(self, name: str, random: bool) -> None:
        self.name = name
        self.random = random
        self.members: list[Augmenter] = []
        self.ratios: list[float] = []
        self._container: Augmenter | None = None

    def container(self) -> Augmenter:
        if self._container is None:
            if self.random:
                if not self.members:
                    raise AugmentationError(
                        f"augmentation group {self.name!r} is random but has no augmenters"
                    )
                self._container = OneOf(self.members, self.ratios)
            else:
                self._container = Sequential(self.members)
        return self._container


def _store(outputs: dict[float, np.ndarray], key: float, index: int, array: np.ndarray) -> None:
    """Write ``array`` as item ``index`` of ``outputs[key]``, widening its dtype if needed."""
    if array.dtype != outputs[key].dtype:
        outputs[key] = outputs[key].astype(np.result_type(outputs[key], array))
    if array.shape != outputs[key].shape[1:]:
        raise AugmentationError(
            f"this draw produced a {array.shape} patch where the first gave "
            f"{outputs[key].shape[1:]}; pass the target shapes to process()"
        )
    outputs[key][index] = array


class AugmenterPool:
    """Ordered groups of augmenters, drawn once per patch location.

    Parameters
    ----------
    rng
        The generator every draw comes from (or a seed for one). ``None``: a fresh,
        unpredictable generator; pass a seed for reproducible runs.

    Examples
    --------
    >>> from digipath.augment import AugmenterPool, Flip
    >>> pool = AugmenterPool(rng=0)
    >>> pool.append_group("spatial", random=False)
    >>> pool.append_augmenter(Flip(["none", "horizontal"]), "spatial")
    >>> pool.input_shape((256, 256))
    (256, 256)
    """

    def __init__(self, rng: np.random.Generator | int | None = None) -> None:
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._groups: dict[str, _Group] = {}
        self._randomized = False

    # -- building -------------------------------------------------------------------------

    @classmethod
    def from_augmenter(
        cls, augmenter: Augmenter, rng: np.random.Generator | int | None = None
    ) -> AugmenterPool:
        """A pool with one sequential group ``"main"`` holding ``augmenter`` (any container)."""
        pool = cls(rng)
        pool.append_group("main", random=False)
        pool.append_augmenter(augmenter, "main")
        return pool

    def append_group(self, name: str, random: bool = False) -> None:
        """Add an empty group after the existing ones.

        Parameters
        ----------
        name
            Unique group name.
        random
            ``False``: every augmenter of the group runs, in order. ``True``: one runs per
            patch, chosen by ratio.
        """
        if not isinstance(name, str) or not name:
            raise AugmentationError(f"a group name must be a non-empty string, got {name!r}")
        if name in self._groups:
            raise AugmentationError(f"augmentation group {name!r} already exists")
        self._groups[name] = _Group(name, bool(random))
        self._randomized = False

    def append_augmenter(self, augmenter: Augmenter, group: str, ratio: float = 1.0) -> None:
        """Add ``augmenter`` at the end of ``group``.

        ``ratio`` (> 0) is its relative chance in a random group; sequential groups ignore it.
        """
        if group not in self._groups:
            raise AugmentationError(
                f"unknown augmentation group {group!r}; groups are: "
                f"{', '.join(map(repr, self._groups)) or 'none (call append_group first)'}"
            )
        if not isinstance(augmenter, Augmenter):
            raise AugmentationError(
                f"group {group!r}: expected an Augmenter, got {type(augmenter).__name__}"
            )
        entry = self._groups[group]
        if entry.random:
            ratio = check_number(f"group {group!r}", "ratio", ratio, low=0.0)
            if ratio <= 0:
                raise AugmentationError(
                    f"group {group!r} is random: the ratio of {augmenter.keyword} must be > 0, "
                    f"got {ratio}"
                )
        entry.members.append(augmenter)
        entry.ratios.append(float(ratio))
        entry._container = None
        self._randomized = False

    @property
    def groups(self) -> list[str]:
        """The group names, in the order they run."""
        return list(self._groups)

    def group(self, name: str) -> Augmenter:
        """The container (:class:`Sequential` or :class:`OneOf`) that group ``name`` runs."""
        if name not in self._groups:
            raise AugmentationError(f"unknown augmentation group {name!r}")
        return self._groups[name].container()

    def as_augmenter(self) -> Sequential:
        """The whole pool as one :class:`Sequential` container of its groups."""
        return Sequential([entry.container() for entry in self._groups.values()])

    # -- drawing and shapes -----------------------------------------------------------------

    def randomize(self, rng: np.random.Generator | None = None) -> None:
        """Choose the member of each random group and draw the parameters of what will run."""
        generator = self.rng if rng is None else rng
        for entry in self._groups.values():
            entry.container().randomize(generator)
        self._randomized = True

    def leaves(self) -> list[Augmenter]:
        """The augmenters that run on the current draw, in order."""
        if not self._randomized:
            raise AugmentationError("the augmenter pool must be randomized before it is applied")
        return [leaf for entry in self._groups.values() for leaf in entry.container().leaves()]

    def input_shape(self, target_shape: Shape) -> Shape:
        """The (rows, cols) to extract so every draw can produce ``target_shape`` from real pixels.

        The requirement is chained backwards through the groups: each group needs what its
        most demanding member needs to feed the next group.
        """
        shape = (int(target_shape[0]), int(target_shape[1]))
        for entry in reversed(self._groups.values()):
            shape = tuple(entry.container().input_shape(shape))
        return shape

    def shapes(self, target_shapes: Mapping[float, Shape]) -> dict[float, Shape]:
        """:meth:`input_shape` per spacing: ``{spacing: (rows, cols)}`` to extract."""
        return {spacing: self.input_shape(shape) for spacing, shape in target_shapes.items()}

    # -- applying ---------------------------------------------------------------------------

    def transform(
        self,
        image: np.ndarray,
        label: np.ndarray | None = None,
        target_shape: Shape | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Apply the current draw to one patch (rows, cols, channels) and its label map.

        The result is centre-cropped to ``target_shape`` (default: the natural output shape).
        """
        return run_chain(self.leaves(), image, label, target_shape)

    def process(
        self,
        patches: Mapping[float, np.ndarray] | np.ndarray,
        labels: Mapping[float, np.ndarray] | np.ndarray | None = None,
        shapes: Mapping[float, Shape] | Shape | None = None,
        *,
        randomize: bool = True,
        rng: np.random.Generator | None = None,
    ):
        """Augment a batch of patches, one draw per patch location.

        Parameters
        ----------
        patches
            ``{spacing: (N, rows, cols, channels)}`` (as :class:`~digipath.data.Samples`
            holds them), or one (N, rows, cols, channels) array.
        labels
            ``None``; ``(N,)`` central labels (returned unchanged); or label maps shaped like
            ``patches`` without the channel axis (``{spacing: (N, rows, cols)}`` or one array).
        shapes
            Target (rows, cols) per spacing (or one shape for an array). ``None``: the natural
            output shape of the pipeline (the input shape unless it holds a crop or resize);
            every draw must then produce the shape the first one did.
        randomize
            Draw new parameters for every location (``False``: reuse the current draw for all).
        rng
            Draw from this generator instead of the pool's own (a batch worker passes one per
            request, so results do not depend on which process ran it).

        Returns
        -------
        (patches, labels)
            In the same structure as given, centre-cropped to ``shapes``.
        """
        single = isinstance(patches, np.ndarray)
        images = {0.0: patches} if single else dict(patches)
        maps: dict[float, np.ndarray] | None = None
        central = None
        if labels is not None:
            if isinstance(labels, np.ndarray) and labels.ndim == 1:
                central = labels
            elif single:
                maps = {0.0: labels}
            else:
                maps = dict(labels)
        targets: dict[float, Shape | None]
        if shapes is None:
            targets = dict.fromkeys(images)
        elif single:
            targets = {0.0: tuple(shapes)}
        else:
            targets = {key: tuple(shapes[key]) for key in images}
        counts = {len(value) for value in images.values()}
        if len(counts) > 1:
            raise AugmentationError(f"every spacing must hold the same number of patches: {counts}")
        count = counts.pop() if counts else 0
        if maps is not None:
            for key, value in maps.items():
                if key not in images or value.shape[:3] != images[key].shape[:3]:
                    raise AugmentationError(
                        f"the label maps at spacing {key} ({value.shape}) do not match the "
                        "patches (N, rows, cols)"
                    )
        out_images: dict[float, np.ndarray] = {}
        out_maps: dict[float, np.ndarray] = {}
        for index in range(count):
            if randomize or not self._randomized:
                self.randomize(rng)
            leaves = self.leaves()
            for key, value in images.items():
                label = maps[key][index] if maps is not None and key in maps else None
                image, label = run_chain(leaves, value[index], label, targets[key])
                if index == 0:  # the first draw sets the output shapes (and dtypes)
                    out_images[key] = np.empty((count, *image.shape), image.dtype)
                    if label is not None:
                        out_maps[key] = np.empty((count, *label.shape), label.dtype)
                _store(out_images, key, index, image)
                if label is not None:
                    _store(out_maps, key, index, label)
        if count == 0:
            for key, value in images.items():
                shape = value.shape[1:3] if targets[key] is None else targets[key]
                out_images[key] = np.empty((0, *shape, *value.shape[3:]), value.dtype)
                if maps is not None and key in maps:
                    out_maps[key] = np.empty((0, *shape), maps[key].dtype)
        result_labels = central
        if maps is not None:
            result_labels = out_maps[0.0] if single else out_maps
        if single:
            return out_images[0.0], result_labels
        return out_images, result_labels

    def __repr__(self) -> str:
        groups = ", ".join(
            f"{name}({'random' if entry.random else 'sequential'}: "
            f"{[member.keyword for member in entry.members]})"
            for name, entry in self._groups.items()
        )
        return f"AugmenterPool({groups})"
