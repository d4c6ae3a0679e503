"""Running a list of augmenters on one patch: fused warps and early cropping.

:func:`run_chain` is the engine behind containers and the pool. Given the augmenters that run
on this draw (in order) and the shape wanted at the end, it

* works out, backwards, the shape each step needs (:meth:`Augmenter.input_shape`), and crops
  the patch to it as early as possible, so colour and noise steps do not work on a margin only
  the spatial steps needed;
* fuses every run of consecutive affine augmenters (flip, rotate_90, transpose, rotate, scale)
  into one warp straight to the cropped shape, so the patch is interpolated once, however many
  of them run (exact permutations alone are done with numpy views instead);
* centre-crops the result to the wanted shape (offset ``(in - out) // 2``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from digipath.augment.base import (
    LABEL_FILL,
    AffineAugmenter,
    Augmenter,
    Shape,
    centre_crop,
    check_image,
    check_label,
    warp_affine,
)
from digipath.errors import AugmentationError

_SMOOTHNESS = {"nearest": 0, "linear": 1, "area": 1, "cubic": 2, "lanczos4": 3}


def required_shapes(leaves: Sequence[Augmenter], target: Shape) -> list[Shape]:
    """The shape needed before each of ``leaves`` (and ``target`` after the last one)."""
    needs = [tuple(target)] * (len(leaves) + 1)
    for index in range(len(leaves) - 1, -1, -1):
        needs[index] = tuple(leaves[index].input_shape(needs[index + 1]))
    return needs


def output_shape(leaves: Sequence[Augmenter], shape: Shape) -> Shape:
    """The shape ``leaves`` produce from a ``shape`` patch, before any cropping."""
    for leaf in leaves:
        shape = tuple(leaf.output_shape(shape))
    return shape


def _trim(array: np.ndarray, shape: Shape) -> np.ndarray:
    """Centre-crop ``array`` to ``shape`` on every axis where it is larger."""
    rows = min(array.shape[0], shape[0])
    cols = min(array.shape[1], shape[1])
    if (rows, cols) == array.shape[:2]:
        return array
    return centre_crop(array, (rows, cols))


def _translation(rows: float, cols: float) -> np.ndarray:
    matrix = np.eye(3)
    matrix[0, 2] = cols
    matrix[1, 2] = rows
    return matrix


def _fused(
    run: Sequence[AffineAugmenter],
    image: np.ndarray,
    label: np.ndarray | None,
    wanted: Shape,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply a run of affine augmenters as one warp, cropped to ``wanted`` where smaller."""
    shape = image.shape[:2]
    matrix = np.eye(3)
    for leaf in run:
        matrix = leaf.matrix(shape) @ matrix
        shape = tuple(leaf.output_shape(shape))
    out = (min(shape[0], wanted[0]), min(shape[1], wanted[1]))
    offset = ((shape[0] - out[0]) // 2, (shape[1] - out[1]) // 2)
    matrix = _translation(-offset[0], -offset[1]) @ matrix
    smooth = [leaf for leaf in run if not leaf.exact()]
    interpolation = max((leaf.interpolation for leaf in smooth), key=_SMOOTHNESS.__getitem__)
    border, value = smooth[0].border, smooth[0].border_value
    image = warp_affine(image, matrix, out, interpolation, border, value)
    if label is not None:
        label = warp_affine(label, matrix, out, "nearest", border, LABEL_FILL)
    return image, label


def _fusable(run: Sequence[AffineAugmenter]) -> bool:
    """Whether a run can be one warp: some leaf interpolates and all such share a border."""
    smooth = [leaf for leaf in run if not leaf.exact()]
    if not smooth:
        return False
    borders = {(leaf.border, float(leaf.border_value)) for leaf in smooth}
    return len(borders) == 1


def run_chain(
    leaves: Sequence[Augmenter],
    image: np.ndarray,
    label: np.ndarray | None = None,
    target: Shape | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply ``leaves`` (already randomised) in order to one patch and its label map.

    Parameters
    ----------
    leaves
        The augmenters to run, e.g. ``pool.leaves()`` after ``pool.randomize(rng)``.
    image
        The patch, (rows, cols, channels); uint8 unless only float conversions run.
    label
        Optional label map (rows, cols), transformed by spatial augmenters only.
    target
        The (rows, cols) wanted at the end; the patch is centre-cropped to it (and as early as
        the remaining steps allow). ``None`` keeps the natural output shape.

    Returns
    -------
    (image, label)
        The augmented patch of shape ``target`` and its label map (or ``None``).

    Raises
    ------
    AugmentationError
        When the augmenters produce a patch smaller than ``target``.
    """
    image = check_image(image, "augmentation", uint8=False)
    if label is not None:
        label = check_label(label, image, "augmentation")
    natural = output_shape(leaves, image.shape[:2])
    wanted = natural if target is None else (int(target[0]), int(target[1]))
    needs = required_shapes(leaves, wanted)
    index = 0
    count = len(leaves)
    while index < count:
        image = _trim(image, needs[index])
        if label is not None:
            label = _trim(label, needs[index])
        leaf = leaves[index]
        if isinstance(leaf, AffineAugmenter):
            stop = index
            while stop < count and isinstance(leaves[stop], AffineAugmenter):
                stop += 1
            run = leaves[index:stop]
            if _fusable(run):
                image, label = _fused(run, image, label, needs[stop])
                index = stop
                continue
        image, label = leaf(image, label)
        index += 1
    if image.shape[0] < wanted[0] or image.shape[1] < wanted[1]:
        raise AugmentationError(
            f"the augmentation produced a {image.shape[0]} x {image.shape[1]} patch, smaller "
            f"than the target {wanted[0]} x {wanted[1]}; extract at input_shape(target) or "
            "remove the size-reducing augmenter"
        )
    image = _trim(image, wanted)
    if label is not None:
        label = _trim(label, wanted)
    return np.ascontiguousarray(image), (None if label is None else np.ascontiguousarray(label))
