"""Per-label pixel statistics of a label mask: uniform sampling of "a pixel of label L".

:class:`MaskStats` scans a mask level once, tile by tile, and keeps for every tile the number of
pixels of each tracked label. Tiles are of three kinds:

* *empty*: no tracked label at all (nothing kept but the zero counts);
* *uniform*: every pixel is the same tracked label (only its index is kept);
* *mixed*: the tile's label indices are kept, bit-packed (1 bit per pixel for one tracked
  label, 2 for up to three, 4 for up to fifteen, 8 beyond), with per-row cumulative counts per
  label.

With the counts cumulated over tiles in row-major order, "the n-th pixel of label L" resolves
by two binary searches (tile, then row inside a mixed tile) and a scan of one row, without the
mask. Memory is that of the mixed tiles: the borders of annotated regions.

Statistics are saved as a versioned ``.npz`` file (no pickle) recording the mask's SHA-256,
spacing, shape and label list; :meth:`MaskStats.load` checks them against the mask and says
what differs.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from digipath.errors import SamplingError, StatsError, StatsMismatchError
from digipath.io import ImageReader
from digipath.io.spacing import check_spacing

logger = logging.getLogger(__name__)

FORMAT = "digipath-mask-stats"
VERSION = 1
DEFAULT_TILE_SIZE = 512
IGNORE = 255
"""Value of pixels whose mask value is not a tracked label, in :meth:`MaskStats.construct`."""

_EMPTY, _UNIFORM, _MIXED = 0, 1, 2


def _check_labels(labels: Iterable[int]) -> tuple[int, ...]:
    values = tuple(int(v) for v in labels)
    if not values:
        raise ValueError("the label list is empty; list the mask values to track (0-254)")
    bad = [v for v in values if not 0 <= v <= 254]
    if bad:
        raise ValueError(f"label values must lie in 0-254, got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"label values repeat: {list(values)}")
    return values


def mask_spacing_from_image(mask: ImageReader, image: ImageReader) -> float:
    """Spacing (µm/px) of level 0 of a mask that states none, taken from the image.

    The mask is assumed to cover the image: its level 0 takes the spacing of the first image
    level with exactly the same shape.

    Raises
    ------
    StatsError
        No image level has the shape of the mask's level 0, or the image has no spacing.
    """
    shape = mask.shapes[0]
    for level, level_shape in enumerate(image.shapes):
        spacing = image.spacings[level]
        if level_shape == shape and spacing is not None:
            logger.info(
                "%s has no pixel spacing: using %.6g µm/px of level %d of %s, which has its "
                "shape %s",
                mask.path,
                spacing,
                level,
                image.path,
                shape,
            )
            return spacing
    raise StatsError(
        mask.path,
        f"the mask states no pixel spacing and no level of {image.path} has its shape {shape} "
        f"(image levels: {image.shapes}); write the mask with a spacing or open it with "
        "ImageReader(mask, spacing=...)",
    )


class MaskStats:
    """Per-label pixel counts of one mask level, for uniform sampling of labelled pixels.

    Build with :meth:`from_mask`, or read a saved file with :meth:`load`.

    Attributes
    ----------
    labels
        The tracked mask values, in the order of the count arrays.
    spacing
        Spacing of the mask level in µm/px.
    shape
        (rows, cols) of the mask level.
    tile_size
        Side of the statistics tiles in pixels.
    mask_hash
        SHA-256 of the mask file.
    """

    def __init__(
        self,
        *,
        labels: Sequence[int],
        spacing: float,
        shape: tuple[int, int],
        tile_size: int,
        mask_hash: str,
        mask_path: str,
        tile_counts: np.ndarray,
        tile_kind: np.ndarray,
        tile_ref: np.ndarray,
        mixed_tiles: np.ndarray,
        mixed_row_counts: np.ndarray,
    ) -> None:
        self.labels = _check_labels(labels)
        self.spacing = float(spacing)
        self.shape = (int(shape[0]), int(shape[1]))
        self.tile_size = int(tile_size)
        self.mask_hash = mask_hash
        self.mask_path = mask_path
        self.tile_counts = tile_counts  # (tile rows, tile cols, labels) int64
        self.tile_kind = tile_kind  # (tile rows, tile cols) int8: empty, uniform, mixed
        self.tile_ref = tile_ref  # uniform: label index; mixed: index into mixed_tiles
        self.mixed_tiles = mixed_tiles  # (M, tile, tile * bits / 8) packed label indices
        self.bits = _bits(len(self.labels))
        self.mixed_row_counts = mixed_row_counts  # (M, tile, labels) int32 cumulative per row
        flat = tile_counts.reshape(-1, len(self.labels))
        self._cumulative = np.cumsum(flat, axis=0)  # (tiles, labels) int64, row-major

    # ----------------------------------------------------------------------------------------
    # Building

    @classmethod
    def from_mask(
        cls,
        mask: str | os.PathLike[str] | ImageReader,
        spacing: float,
        labels: Iterable[int],
        *,
        tolerance: float = 0.25,
        tile_size: int = DEFAULT_TILE_SIZE,
        image: str | os.PathLike[str] | ImageReader | None = None,
        progress: bool = False,
    ) -> MaskStats:
        """Scan a mask level and count the pixels of each label per tile.

        Parameters
        ----------
        mask
            The label mask (path or open reader); channel 0 is used.
        spacing
            Spacing of the mask level to scan, in µm/px (it must exist in the mask within
            ``tolerance``; no resampling).
        labels
            Mask values to track (0-254).
        tolerance
            Relative tolerance for matching ``spacing`` to a mask level.
        tile_size
            Side of the statistics tiles in pixels.
        image
            The image the mask belongs to: used for the spacing of a mask that states none.
        progress
            Show a progress bar on the terminal.
        """
        labels = _check_labels(labels)
        spacing = check_spacing(spacing, "mask spacing")
        if not isinstance(tile_size, int) or tile_size < 16 or tile_size % 8:
            raise ValueError(
                f"tile_size must be a multiple of 8 pixels, at least 16, got {tile_size!r}"
            )
        reader = mask if isinstance(mask, ImageReader) else ImageReader(mask)
        if reader.spacings[0] is None:
            if image is None:
                raise StatsError(
                    reader.path,
                    "the mask states no pixel spacing; pass the image it belongs to (image=...) "
                    "or open it with ImageReader(mask, spacing=...)",
                )
            image_reader = image if isinstance(image, ImageReader) else ImageReader(image)
            reader = ImageReader(reader.path, spacing=mask_spacing_from_image(reader, image_reader))
        level = reader.level(spacing, tolerance)
        level_spacing = float(reader.spacings[level])  # type: ignore[arg-type]
        rows, cols = reader.shapes[level]
        grid = (-(-rows // tile_size), -(-cols // tile_size))
        count = len(labels)
        lut = np.full(256, count, dtype=np.uint8)
        lut[list(labels)] = np.arange(count, dtype=np.uint8)
        tile_counts = np.zeros((*grid, count), dtype=np.int64)
        tile_kind = np.zeros(grid, dtype=np.int8)
        tile_ref = np.zeros(grid, dtype=np.int32)
        mixed: list[np.ndarray] = []
        mixed_rows: list[np.ndarray] = []
        iterator = _progress(range(grid[0]), progress, f"mask statistics of {reader.path}")
        for tile_row in iterator:
            top = tile_row * tile_size
            height = min(tile_size, rows - top)
            band = reader.read(level_spacing, top, 0, height, cols, tolerance=0.0)[..., 0]
            if band.dtype != np.uint8:
                if band.max(initial=0) > 255 or band.min(initial=0) < 0:
                    raise StatsError(
                        reader.path, f"mask values must lie in 0-255, found up to {band.max()}"
                    )
                band = band.astype(np.uint8)
            indices = lut[band]
            for tile_col in range(grid[1]):
                left = tile_col * tile_size
                tile_indices = indices[:, left : left + tile_size]
                counts = np.bincount(tile_indices.ravel(), minlength=count + 1)[:count]
                tile_counts[tile_row, tile_col] = counts
                pixels = tile_indices.size
                present = np.flatnonzero(counts)
                if present.size == 0:
                    tile_kind[tile_row, tile_col] = _EMPTY
                elif present.size == 1 and counts[present[0]] == pixels:
                    tile_kind[tile_row, tile_col] = _UNIFORM
                    tile_ref[tile_row, tile_col] = present[0]
                else:
                    tile_kind[tile_row, tile_col] = _MIXED
                    tile_ref[tile_row, tile_col] = len(mixed)
                    raw = np.full((tile_size, tile_size), IGNORE, dtype=np.uint8)
                    source = band[:, left : left + tile_size]
                    raw[: source.shape[0], : source.shape[1]] = source
                    tile_index = lut[raw]
                    # Padding (255) maps to no tracked label (labels are 0-254): never counted.
                    one_hot = tile_index[:, :, None] == np.arange(count, dtype=np.uint8)
                    mixed.append(_pack(tile_index, _bits(count)))
                    mixed_rows.append(np.cumsum(one_hot.sum(axis=1), axis=0).astype(np.int32))
        return cls(
            labels=labels,
            spacing=level_spacing,
            shape=(rows, cols),
            tile_size=tile_size,
            mask_hash=reader.hash(),
            mask_path=reader.path,
            tile_counts=tile_counts,
            tile_kind=tile_kind,
            tile_ref=tile_ref,
            mixed_tiles=(
                np.stack(mixed)
                if mixed
                else np.zeros((0, tile_size, tile_size * _bits(count) // 8), np.uint8)
            ),
            mixed_row_counts=(
                np.stack(mixed_rows) if mixed_rows else np.zeros((0, tile_size, count), np.int32)
            ),
        )

    # ----------------------------------------------------------------------------------------
    # Files

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the statistics to ``path`` (a versioned ``.npz``; temporary name, then rename)."""
        target = Path(path)
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temporary, "wb") as handle:
                np.savez_compressed(
                    handle,
                    format=np.array(FORMAT),
                    version=np.array(VERSION),
                    labels=np.array(self.labels, dtype=np.int64),
                    spacing=np.array(self.spacing),
                    shape=np.array(self.shape, dtype=np.int64),
                    tile_size=np.array(self.tile_size),
                    mask_hash=np.array(self.mask_hash),
                    mask_path=np.array(self.mask_path),
                    tile_counts=self.tile_counts,
                    tile_kind=self.tile_kind,
                    tile_ref=self.tile_ref,
                    mixed_tiles=self.mixed_tiles,
                    mixed_row_counts=self.mixed_row_counts,
                )
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        mask: str | os.PathLike[str] | ImageReader | None = None,
        spacing: float | None = None,
        labels: Iterable[int] | None = None,
        tolerance: float = 0.25,
        check_hash: bool = True,
    ) -> MaskStats:
        """Read statistics saved by :meth:`save`, checking them against what they are used for.

        Parameters
        ----------
        path
            The ``.stat`` file.
        mask
            The mask they must describe: its SHA-256 (unless ``check_hash`` is false) and the
            shape of its level at the stored spacing are compared.
        spacing
            The mask spacing expected, in µm/px (relative ``tolerance``).
        labels
            The label list expected (same values, same order).

        Raises
        ------
        StatsError
            The file is missing, unreadable or of another format or version.
        StatsMismatchError
            It describes another mask, spacing or label list; the message lists every field
            that differs.
        """
        path = Path(path)
        if not path.exists():
            raise StatsError(path, "no such statistics file")
        try:
            with np.load(path, allow_pickle=False) as data:
                fields = {key: data[key] for key in data.files}
        except (OSError, ValueError) as error:
            raise StatsError(path, f"not a readable statistics file ({error})") from None
        if str(fields.get("format", "")) != FORMAT:
            raise StatsError(path, f"not a digipath statistics file (expected format {FORMAT})")
        version = int(fields["version"])
        if version != VERSION:
            raise StatsError(path, f"statistics format version {version}, expected {VERSION}")
        missing = {
            "labels", "spacing", "shape", "tile_size", "mask_hash", "tile_counts", "tile_kind",
            "tile_ref", "mixed_tiles", "mixed_row_counts",
        } - set(fields)  # fmt: skip
        if missing:
            raise StatsError(path, f"the file lacks {sorted(missing)}")
        stats = cls(
            labels=fields["labels"].tolist(),
            spacing=float(fields["spacing"]),
            shape=tuple(fields["shape"].tolist()),  # type: ignore[arg-type]
            tile_size=int(fields["tile_size"]),
            mask_hash=str(fields["mask_hash"]),
            mask_path=str(fields.get("mask_path", "")),
            tile_counts=fields["tile_counts"],
            tile_kind=fields["tile_kind"],
            tile_ref=fields["tile_ref"],
            mixed_tiles=fields["mixed_tiles"],
            mixed_row_counts=fields["mixed_row_counts"],
        )
        stats.check(path, mask=mask, spacing=spacing, labels=labels, tolerance=tolerance,
                    check_hash=check_hash)  # fmt: skip
        return stats

    def check(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        mask: str | os.PathLike[str] | ImageReader | None = None,
        spacing: float | None = None,
        labels: Iterable[int] | None = None,
        tolerance: float = 0.25,
        check_hash: bool = True,
    ) -> None:
        """Raise :class:`StatsMismatchError` listing what differs from the expectations."""
        differences: dict[str, tuple[object, object]] = {}
        if labels is not None and tuple(int(v) for v in labels) != self.labels:
            differences["labels"] = (list(self.labels), [int(v) for v in labels])
        if spacing is not None and abs(spacing - self.spacing) > tolerance * self.spacing:
            differences["spacing"] = (self.spacing, float(spacing))
        if mask is not None:
            reader = mask if isinstance(mask, ImageReader) else ImageReader(mask)
            shapes = [
                shape
                for shape, level_spacing in zip(reader.shapes, reader.spacings, strict=True)
                if level_spacing is None
                or abs(level_spacing - self.spacing) <= tolerance * self.spacing
            ]
            if self.shape not in shapes:
                differences["shape"] = (self.shape, shapes[0] if shapes else reader.shapes)
            if check_hash and reader.hash() != self.mask_hash:
                differences["mask hash"] = (self.mask_hash, reader.hash())
        if differences:
            raise StatsMismatchError(path if path is not None else self.mask_path, differences)

    # ----------------------------------------------------------------------------------------
    # Queries

    @property
    def counts(self) -> dict[int, int]:
        """Total number of pixels of every tracked label (``{mask value: pixels}``)."""
        totals = self._cumulative[-1] if len(self._cumulative) else np.zeros(len(self.labels))
        return {label: int(total) for label, total in zip(self.labels, totals, strict=True)}

    @property
    def present_labels(self) -> tuple[int, ...]:
        """Tracked labels with at least one pixel."""
        return tuple(label for label, total in self.counts.items() if total > 0)

    @property
    def nbytes(self) -> int:
        """Memory held by the statistics, in bytes."""
        return int(
            self.tile_counts.nbytes
            + self.tile_kind.nbytes
            + self.tile_ref.nbytes
            + self.mixed_tiles.nbytes
            + self.mixed_row_counts.nbytes
            + self._cumulative.nbytes
        )

    def positions(self, label: int, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Return the (row, col) of the ``indices``-th pixels of ``label`` at the mask level.

        Pixels of a label are numbered tile by tile (tiles in row-major order), and in row-major
        order inside a tile.

        Parameters
        ----------
        label
            A tracked mask value.
        indices
            Integers in ``[0, counts[label])``.

        Returns
        -------
        numpy.ndarray
            (N, 2) int64 array of (row, col) in pixels of the mask level.
        """
        index = self._label_index(label)
        wanted = np.asarray(indices, dtype=np.int64).ravel()
        total = self.counts[label]
        if wanted.size and (wanted.min() < 0 or wanted.max() >= total):
            raise SamplingError(
                f"pixel indices of label {label} must lie in [0, {total}), got "
                f"[{wanted.min()}, {wanted.max()}]"
            )
        cumulative = self._cumulative[:, index]
        flat_tiles = np.searchsorted(cumulative, wanted, side="right")
        before = np.where(flat_tiles > 0, cumulative[np.maximum(flat_tiles - 1, 0)], 0)
        within = wanted - before
        grid_cols = self.tile_kind.shape[1]
        tile_rows, tile_cols = np.divmod(flat_tiles, grid_cols)
        result = np.empty((wanted.size, 2), dtype=np.int64)
        size = self.tile_size
        for k in range(wanted.size):
            tr, tc, n = int(tile_rows[k]), int(tile_cols[k]), int(within[k])
            kind = self.tile_kind[tr, tc]
            if kind == _UNIFORM:
                width = min(size, self.shape[1] - tc * size)
                row, col = divmod(n, width)
            else:  # mixed: rows by binary search, then the n-th occurrence in the row
                ref = int(self.tile_ref[tr, tc])
                row_counts = self.mixed_row_counts[ref, :, index]
                row = int(np.searchsorted(row_counts, n, side="right"))
                n -= int(row_counts[row - 1]) if row > 0 else 0
                packed = self.mixed_tiles[ref, row : row + 1]
                hits = np.flatnonzero(_unpack(packed, self.bits, size)[0] == index)
                col = int(hits[n])
            result[k] = (tr * size + row, tc * size + col)
        return result

    def sample(
        self, counts: dict[int, int], rng: np.random.Generator | int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw pixels uniformly (with replacement) from each label's pixels.

        Parameters
        ----------
        counts
            ``{mask value: number of pixels}`` to draw.
        rng
            Generator or seed.

        Returns
        -------
        positions, labels
            (N, 2) int64 (row, col) at the mask level and the (N,) mask values, in the order of
            ``counts``.
        """
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        positions, values = [], []
        totals = self.counts
        for label, number in counts.items():
            if number <= 0:
                continue
            self._label_index(label)
            if totals[label] == 0:
                raise SamplingError(f"{self.mask_path}: the mask has no pixel of label {label}")
            drawn = generator.integers(0, totals[label], size=int(number))
            positions.append(self.positions(label, drawn))
            values.append(np.full(int(number), label, dtype=np.uint8))
        if not positions:
            return np.zeros((0, 2), np.int64), np.zeros(0, np.uint8)
        return np.concatenate(positions), np.concatenate(values)

    def construct(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Rebuild a region of the mask from the statistics alone.

        Pixels of tracked labels get their mask value; untracked values and pixels outside
        the mask get :data:`IGNORE` (255), so that losses skip them.

        Returns
        -------
        numpy.ndarray
            (height, width) uint8 array at the mask level.
        """
        out = np.full((height, width), IGNORE, dtype=np.uint8)
        size = self.tile_size
        r0, r1 = max(row, 0), min(row + height, self.shape[0])
        c0, c1 = max(col, 0), min(col + width, self.shape[1])
        if r0 >= r1 or c0 >= c1:
            return out
        values = np.array([*self.labels, IGNORE], dtype=np.uint8)
        for tr in range(r0 // size, (r1 - 1) // size + 1):
            for tc in range(c0 // size, (c1 - 1) // size + 1):
                top, left = tr * size, tc * size
                a0, a1 = max(r0, top), min(r1, top + size)
                b0, b1 = max(c0, left), min(c1, left + size)
                target = out[a0 - row : a1 - row, b0 - col : b1 - col]
                kind = self.tile_kind[tr, tc]
                if kind == _UNIFORM:
                    target[...] = self.labels[int(self.tile_ref[tr, tc])]
                elif kind == _MIXED:
                    packed = self.mixed_tiles[int(self.tile_ref[tr, tc]), a0 - top : a1 - top]
                    indices = _unpack(packed, self.bits, size)[:, b0 - left : b1 - left]
                    target[...] = values[indices]
        return out

    def _label_index(self, label: int) -> int:
        try:
            return self.labels.index(int(label))
        except ValueError:
            raise SamplingError(
                f"{self.mask_path}: label {label} is not tracked by these statistics "
                f"(labels {list(self.labels)})"
            ) from None

    def __repr__(self) -> str:
        return (
            f"MaskStats({self.mask_path!r}, {self.shape[0]}x{self.shape[1]} at "
            f"{self.spacing:.4g} µm/px, counts {self.counts}, {len(self.mixed_tiles)} mixed tiles)"
        )


def _bits(labels: int) -> int:
    """Bits per pixel for label indices 0 .. ``labels`` (the last one: untracked)."""
    for bits in (1, 2, 4):
        if labels < 2**bits:
            return bits
    return 8


def _pack(indices: np.ndarray, bits: int) -> np.ndarray:
    """Pack (rows, cols) label indices of ``bits`` bits into (rows, cols * bits / 8) bytes."""
    if bits == 8:
        return indices.astype(np.uint8)
    per_byte = 8 // bits
    groups = indices.reshape(indices.shape[0], -1, per_byte).astype(np.uint8)
    packed = np.zeros(groups.shape[:2], dtype=np.uint8)
    for k in range(per_byte):
        packed |= groups[:, :, k] << np.uint8(bits * k)
    return packed


def _unpack(packed: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """Inverse of :func:`_pack`: (rows, cols * bits / 8) bytes to (rows, cols) indices."""
    if bits == 8:
        return packed
    per_byte = 8 // bits
    shifts = (bits * np.arange(per_byte)).astype(np.uint8)
    values = (packed[:, :, None] >> shifts) & np.uint8(2**bits - 1)
    return values.reshape(packed.shape[0], cols)


def _progress(items: range, enabled: bool, description: str) -> Iterable[int]:
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=description, transient=True)
