"""Label-balanced patch sampling from one image and its mask statistics.

:class:`PatchSampler` draws mask pixels uniformly among the pixels of each requested label
(:class:`~digipath.data.stats.MaskStats`), and reads, for every drawn pixel, one patch per
requested spacing, all centred on the same physical point.

Centre rule (as in DigitalPathology): a mask pixel covers a block of ``ds x ds`` pixels at the
patch spacing (``ds`` = mask pixel size over patch pixel size). The patch centre is the pixel of
that block containing the block's centre; when the block's centre falls on a pixel corner (even
``ds``), the upper-left of the central four. A patch of size ``n`` starts ``(n - 1) // 2``
pixels before its centre, so for even sizes the centre is again the upper-left of the central
four pixels.

Label modes:

``central``
    one label per patch: the value of the drawn mask pixel;
``synthesize``
    a label patch per spacing, rebuilt from the statistics (untracked values become 255);
``load``
    a label patch per spacing, read from the mask.

Labels go through a :class:`~digipath.data.labels.LabelMap` when given (unlisted values -> 255).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digipath.data.labels import LabelMap
from digipath.data.stats import MaskStats
from digipath.errors import SamplingError, StatsError
from digipath.io import ImageReader
from digipath.io.spacing import check_spacing

logger = logging.getLogger(__name__)

LABEL_MODES = ("central", "synthesize", "load")
"""The accepted ``label_mode`` values."""

PathOrReader = str | os.PathLike[str] | ImageReader


@dataclass
class Samples:
    """What :meth:`PatchSampler.sample` returns.

    Attributes
    ----------
    patches
        ``{spacing: (N, rows, cols, channels) array}`` of image patches, uint8 for 8-bit images.
    labels
        ``central`` mode: (N,) uint8 classes; other modes: ``{spacing: (N, rows, cols)}`` uint8.
    centres
        (N, 2) (row, col) of the drawn pixels at the mask level.
    mask_values
        (N,) the mask value of each drawn pixel (before the label map).
    """

    patches: dict[float, np.ndarray]
    labels: np.ndarray | dict[float, np.ndarray]
    centres: np.ndarray
    mask_values: np.ndarray
    spacings: dict[float, float] = field(default_factory=dict)
    """``{requested spacing: spacing of the returned pixels}`` (µm/px)."""


def _open(source: PathOrReader) -> ImageReader:
    return source if isinstance(source, ImageReader) else ImageReader(source)


class PatchSampler:
    """Draws labelled patches from one image.

    Parameters
    ----------
    image
        The image (path or reader).
    mask
        The label mask (path or reader); needed for ``label_mode="load"`` and to build
        statistics.
    stats
        A :class:`MaskStats` or the path of a ``.stat`` file. A missing file is built from the
        mask and, with ``create_stats``, saved there.
    labels
        The mask values to track (when building statistics) and to sample; default: the
        labels of the statistics.
    mask_spacing
        Spacing of the mask level the statistics describe, in µm/px.
    tolerance
        Relative spacing tolerance for the mask and image levels.
    label_mode
        ``"central"``, ``"synthesize"`` or ``"load"``.
    label_map
        Mask value -> class map (a :class:`LabelMap` or a dict); default: none (mask values).
    create_stats
        Save statistics built from the mask to the ``stats`` path.
    fill
        Padding of image patches reaching outside the image (default: the reader's).
    """

    def __init__(
        self,
        image: PathOrReader,
        *,
        mask: PathOrReader | None = None,
        stats: MaskStats | str | os.PathLike[str] | None = None,
        labels: Sequence[int] | None = None,
        mask_spacing: float,
        tolerance: float = 0.25,
        label_mode: str = "central",
        label_map: LabelMap | Mapping[int, int] | None = None,
        create_stats: bool = False,
        fill: float | None = None,
    ) -> None:
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        self.image = _open(image)
        self.mask = _open(mask) if mask is not None else None
        if label_mode == "load" and self.mask is None:
            raise SamplingError(f"{self.image.path}: label mode 'load' needs the mask image")
        self.label_mode = label_mode
        self.tolerance = tolerance
        self.fill = fill
        self.mask_spacing = check_spacing(mask_spacing, "mask spacing")
        if label_map is not None and not isinstance(label_map, LabelMap):
            label_map = LabelMap(label_map)
        self.label_map: LabelMap | None = label_map
        self.stats = self._statistics(stats, labels, create_stats)
        if self.mask is not None and self.mask.spacings[0] is None:
            self.mask = ImageReader(self.mask.path, spacing=self._mask_level0_spacing())
        self.labels = tuple(labels) if labels is not None else self.stats.labels
        unknown = set(self.labels) - set(self.stats.labels)
        if unknown:
            raise SamplingError(
                f"{self.image.path}: labels {sorted(unknown)} are not in the statistics "
                f"(labels {list(self.stats.labels)})"
            )
        empty = [label for label in self.labels if self.stats.counts[label] == 0]
        if empty:
            logger.warning("%s: the mask has no pixel of labels %s", self.image.path, empty)
        if self.image.spacings[0] is None:
            raise SamplingError(
                f"{self.image.path}: the image states no pixel spacing; open it with "
                "ImageReader(path, spacing=<level-0 µm/px>)"
            )
        # Size of a mask pixel in image level-0 pixels.
        self._mask_scale = self.stats.spacing / float(self.image.spacings[0])
        rows0, cols0 = self.image.shapes[0]
        covered = (self.stats.shape[0] * self._mask_scale, self.stats.shape[1] * self._mask_scale)
        if abs(covered[0] - rows0) > self._mask_scale + 1 or abs(covered[1] - cols0) > (
            self._mask_scale + 1
        ):
            logger.warning(
                "%s: the mask (%dx%d at %.4g µm/px) covers %.0fx%.0f level-0 pixels of the "
                "image, which has %dx%d",
                self.image.path,
                *self.stats.shape,
                self.stats.spacing,
                *covered,
                rows0,
                cols0,
            )

    # ----------------------------------------------------------------------------------------
    # Set-up

    def _statistics(
        self,
        stats: MaskStats | str | os.PathLike[str] | None,
        labels: Sequence[int] | None,
        create: bool,
    ) -> MaskStats:
        if isinstance(stats, MaskStats):
            stats.check(spacing=self.mask_spacing, tolerance=self.tolerance)
            return stats
        if stats is not None and Path(stats).exists():
            return MaskStats.load(
                stats,
                mask=self.mask,
                spacing=self.mask_spacing,
                tolerance=self.tolerance,
                check_hash=False,
            )
        if self.mask is None:
            where = f" ({stats} does not exist)" if stats is not None else ""
            raise StatsError(
                self.image.path, f"neither a mask nor a statistics file to sample from{where}"
            )
        if labels is None:
            raise SamplingError(
                f"{self.mask.path}: give the labels to track to build the statistics"
            )
        built = MaskStats.from_mask(
            self.mask, self.mask_spacing, labels, tolerance=self.tolerance, image=self.image
        )
        if stats is not None and create:
            built.save(stats)
            logger.info("saved mask statistics to %s", stats)
        return built

    def _mask_level0_spacing(self) -> float:
        from digipath.data.stats import mask_spacing_from_image

        assert self.mask is not None
        return mask_spacing_from_image(self.mask, self.image)

    # ----------------------------------------------------------------------------------------
    # Sampling

    def sample(
        self,
        counts: Mapping[int, int],
        shapes: Mapping[float, tuple[int, int]],
        rng: np.random.Generator | int | None = None,
    ) -> Samples:
        """Draw patches centred on random pixels of the requested labels.

        Parameters
        ----------
        counts
            ``{mask value: number of patches}``; zero counts are skipped.
        shapes
            ``{spacing in µm/px: (rows, cols)}``: one patch per spacing and drawn pixel.
        rng
            Generator or seed.

        Returns
        -------
        Samples
            Patches sorted by position (row, col) at the mask level, for reading locality.
        """
        if not shapes:
            raise SamplingError("no patch shapes requested")
        for label in counts:
            if label not in self.labels:
                raise SamplingError(
                    f"{self.image.path}: label {label} is not sampled here (labels "
                    f"{list(self.labels)})"
                )
        positions, values = self.stats.sample(dict(counts), rng)
        order = np.lexsort((positions[:, 1], positions[:, 0]))
        positions, values = positions[order], values[order]
        count = len(positions)
        patches: dict[float, np.ndarray] = {}
        label_patches: dict[float, np.ndarray] = {}
        actual: dict[float, float] = {}
        for spacing, shape in shapes.items():
            rows, cols = (int(v) for v in shape)
            if rows < 1 or cols < 1:
                raise SamplingError(f"patch shape {shape} at {spacing} µm/px must be positive")
            actual[spacing] = self.image.refine(spacing, self.tolerance)
            ds = self._mask_scale * float(self.image.spacings[0]) / actual[spacing]
            starts = self.centres(positions, ds) - np.array([(rows - 1) // 2, (cols - 1) // 2])
            batch = np.empty((count, rows, cols, self.image.channels), dtype=self.image.dtype)
            for k, (row, col) in enumerate(starts.tolist()):
                batch[k] = self.image.read(
                    spacing, row, col, rows, cols, fill=self.fill, tolerance=self.tolerance
                )
            patches[spacing] = batch
            if self.label_mode != "central":
                label_patches[spacing] = self._label_patches(starts, rows, cols, ds)
        if self.label_mode == "central":
            labels: np.ndarray | dict[float, np.ndarray] = self._map(values)
        else:
            labels = {spacing: self._map(patch) for spacing, patch in label_patches.items()}
        return Samples(patches, labels, positions, values, actual)

    @staticmethod
    def centres(positions: np.ndarray, ds: float) -> np.ndarray:
        """Centre pixels at a patch spacing of mask pixels ``positions`` (N, 2).

        ``ds`` is the size of a mask pixel in patch pixels. The centre is the pixel holding the
        centre of the mask pixel's block, the upper-left one when that centre is a pixel corner.
        """
        centre = (positions.astype(np.float64) + 0.5) * ds
        return np.ceil(centre - 1 - 1e-9).astype(np.int64)

    def _label_patches(self, starts: np.ndarray, rows: int, cols: int, ds: float) -> np.ndarray:
        """(N, rows, cols) mask values at the patch spacing, by nearest neighbour."""
        out = np.empty((len(starts), rows, cols), dtype=np.uint8)
        offsets_r = np.arange(rows) + 0.5
        offsets_c = np.arange(cols) + 0.5
        for k, (row, col) in enumerate(starts.tolist()):
            mask_rows = np.floor((row + offsets_r) / ds).astype(np.int64)
            mask_cols = np.floor((col + offsets_c) / ds).astype(np.int64)
            r0, c0 = int(mask_rows[0]), int(mask_cols[0])
            height, width = int(mask_rows[-1]) - r0 + 1, int(mask_cols[-1]) - c0 + 1
            if self.label_mode == "synthesize":
                region = self.stats.construct(r0, c0, height, width)
            else:
                assert self.mask is not None
                region = self.mask.read(
                    self.stats.spacing, r0, c0, height, width, fill=255, tolerance=0.01,
                    interpolation="nearest",
                )[..., 0]  # fmt: skip
            out[k] = region[(mask_rows - r0)[:, None], (mask_cols - c0)[None, :]]
        return out

    def _map(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.uint8)
        return self.label_map(values) if self.label_map is not None else values

    def close(self) -> None:
        """Close the image and mask readers."""
        self.image.close()
        if self.mask is not None:
            self.mask.close()

    def __repr__(self) -> str:
        return (
            f"PatchSampler({self.image.path!r}, labels {list(self.labels)}, "
            f"mode {self.label_mode!r}, {self.stats!r})"
        )
