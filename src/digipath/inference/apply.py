"""Apply a network to a whole slide: tiled, stitched, mask-restricted, resumable.

:func:`apply_network` walks the slide in rows of output blocks (:mod:`digipath.inference.geometry`):

1. the mask of the block row is read once; blocks whose mask is empty are skipped (their image
   tile is never read, no forward pass runs) and output 0;
2. the image tiles of the next block row are read by background threads while the network runs
   on the current one, in batches, under ``torch.inference_mode``;
3. the block outputs (class probabilities, upsampled when the network downsamples) are blended
   into a row accumulator (weights 1 without overlap) and each finished strip of output rows is
   turned into hard labels (``argmax + 1``, 0 outside the mask) or soft probabilities
   (float32, or uint8 with ``quantize``) and saved by a background thread as a partial result;
4. when every strip is done, the strips stream into a pyramidal TIFF at the processing spacing
   (:class:`~digipath.io.ImageWriter`, written under a temporary name and renamed).

Memory holds two rows of tiles and one accumulator row, whatever the slide size. An
interrupted run leaves its strips in ``.<output name>.partial/``; running again with the same
settings computes only the missing strips. A finished output is never rewritten unless
``overwrite``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from digipath.data.batch_generator import to_channels_first
from digipath.errors import ModelError
from digipath.inference.geometry import TileGeometry, tile_geometry
from digipath.inference.partial import PartialResults, weights_digest
from digipath.io import ImageReader, ImageWriter

logger = logging.getLogger(__name__)

PADDINGS = ("constant", "reflect")
WRITER_TILE = 512


@dataclass
class ApplyResult:
    """What :func:`apply_network` did for one slide."""

    output: str
    shape: tuple[int, int]
    spacing: float
    tiles: int = 0
    computed: int = 0
    skipped: int = 0
    strips_reused: int = 0
    seconds: float = 0.0
    existed: bool = False


def _normalizer(model, normalizer):
    if normalizer is not None:
        return normalizer
    from digipath.data.normalization import RgbToZeroOne, normalizer_from_config

    section = (getattr(model, "header", None) or {}).get("normalization")
    if section:
        configured = normalizer_from_config(section)
        if configured is not None:
            return configured
    return RgbToZeroOne()


def _dihedral(batch: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    out = torch.rot90(batch, k, dims=(2, 3))
    return torch.flip(out, dims=(3,)) if flip else out


def _undo_dihedral(batch: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    out = torch.flip(batch, dims=(3,)) if flip else batch
    return torch.rot90(out, -k, dims=(2, 3))


def _mask_reader(mask, spacing: float, tolerance: float, values=None):
    reader = mask if isinstance(mask, ImageReader) else ImageReader(mask)
    spacings = [s for s in reader.spacings if s is not None]
    if not spacings:
        raise ModelError(f"{reader.path}: the mask states no pixel spacing")
    coarser_or_equal = [s for s in spacings if s >= spacing * (1 - tolerance)]
    mask_spacing = min(coarser_or_equal) if coarser_or_equal else spacing
    values = None if values is None else np.asarray(sorted(int(v) for v in values))
    return reader, reader.refine(mask_spacing, tolerance), values


def apply_network(
    model,
    image: str | os.PathLike[str] | ImageReader,
    output: str | os.PathLike[str],
    *,
    spacing: float,
    mask: str | os.PathLike[str] | ImageReader | None = None,
    mask_values: Sequence[int] | None = None,
    tile_size: int = 1024,
    batch_size: int = 4,
    output_class: int | None = None,
    soft: bool = False,
    quantize: bool = False,
    normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
    channels: Sequence[int] | None = None,
    padding: str = "constant",
    fill: float = 255,
    overlap: int = 0,
    blending: str = "linear",
    augment: bool = False,
    tolerance: float = 0.25,
    overwrite: bool = False,
    read_threads: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> ApplyResult:
    """Apply ``model`` to a slide and write the result as a pyramidal TIFF.

    Parameters
    ----------
    model
        A built :class:`~digipath.models.base.ModelBase` (e.g. from
        :func:`~digipath.models.load_model`).
    image
        The slide (path or reader).
    output
        The output TIFF.
    spacing
        Processing spacing in µm/px (the level read; the output has this spacing).
    mask
        Optional tissue mask: tiles whose mask region is 0 are skipped and output 0.
    mask_values
        The mask values that mark pixels to compute (default: every value > 0), e.g.
        ``(1,)`` for one label of a label map.
    tile_size
        Input tile side in pixels.
    batch_size
        Tiles per forward pass.
    output_class
        Keep only this class's probability (soft output), or ``None`` for all.
    soft, quantize
        Probabilities instead of labels; as uint8 0-255 instead of float32.
    normalizer
        Applied to the uint8 tiles (default: the model file's, else ``x / 255``).
    channels
        Input channels to use (default: all).
    padding, fill
        Outside the image: ``"constant"`` ``fill`` (white) or ``"reflect"``.
    overlap, blending
        Overlap in pixels between the outputs of same-padded networks, blended with a
        ``"linear"`` or ``"gaussian"`` window.
    augment
        Test-time augmentation: the mean over the 8 flips and quarter turns.
    tolerance
        Relative spacing tolerance.
    overwrite
        Recompute and rewrite an existing output.
    read_threads
        Threads reading tiles ahead of the network.
    progress
        ``callback(done, total)`` per tile.
    """
    started = time.perf_counter()
    output = Path(output)
    owned: list[ImageReader] = []  # the readers opened here, closed when done
    if not isinstance(image, ImageReader):
        image = ImageReader(image)
        owned.append(image)
    if mask is not None and not isinstance(mask, ImageReader):
        mask = ImageReader(mask)
        owned.append(mask)
    try:
        return _apply(
            model, image, output, spacing, mask, mask_values, tile_size, batch_size,
            output_class, soft, quantize, normalizer, channels, padding, fill, overlap,
            blending, augment, tolerance, overwrite, read_threads, progress, started,
        )  # fmt: skip
    finally:
        for opened in owned:
            opened.close()


def _apply(
    model, reader, output, spacing, mask, mask_values, tile_size, batch_size, output_class, soft,
    quantize, normalizer, channels, padding, fill, overlap, blending, augment, tolerance, overwrite,
    read_threads, progress, started,
) -> ApplyResult:  # fmt: skip
    """The body of :func:`apply_network`, on open readers."""
    actual = reader.refine(spacing, tolerance)
    rows, cols = reader.shape(spacing, tolerance)
    result = ApplyResult(str(output), (rows, cols), actual)
    if output.exists() and not overwrite:
        result.existed = True
        logger.info("%s exists: not recomputed (use overwrite)", output)
        return result
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    geometry = tile_geometry(model.reconstruction_info((tile_size, tile_size)), overlap)
    normalise = _normalizer(model, normalizer)
    classes = model.classes
    if output_class is not None and not 0 <= output_class < classes:
        raise ValueError(f"output_class must be in 0..{classes - 1}, got {output_class}")
    masks = _mask_reader(mask, actual, tolerance, mask_values) if mask is not None else None
    signature = {
        "image": os.path.abspath(reader.path), "spacing": actual, "tile": tile_size,
        "overlap": overlap, "blending": blending, "soft": soft, "quantize": quantize,
        "output_class": output_class, "augment": augment, "padding": padding, "fill": fill,
        "mask": None if masks is None else os.path.abspath(masks[0].path),
        "mask values": None if mask_values is None else sorted(int(v) for v in mask_values),
        "model": model.type, "parameters": model.parameters(),
        "weights": weights_digest(model.module),
    }  # fmt: skip
    strips = PartialResults(output, signature, "strip")
    block_rows, block_cols = geometry.blocks(rows), geometry.blocks(cols)
    result.tiles = block_rows * block_cols
    window = geometry.window(blending)
    width = (block_cols - 1) * geometry.stride + geometry.extent
    channels_out = 1 if (not soft or output_class is not None) else classes
    dtype = np.float32 if soft and not quantize else np.uint8
    first = next((k for k in range(block_rows) if not strips.done(k)), block_rows)
    result.strips_reused = first
    start_row = max(0, first - 1) if geometry.overlap else first
    sink = _Sink(output, strips, (rows, cols), channels_out, dtype, actual, soft)
    saver = ThreadPoolExecutor(1, thread_name_prefix="digipath-strips")
    readers = ThreadPoolExecutor(max(1, read_threads), thread_name_prefix="digipath-tiles")
    saved: list[Future] = []
    mask_rows: dict[int, np.ndarray | None] = {}

    def mask_of(k: int) -> np.ndarray | None:
        if k not in mask_rows:
            mask_rows[k] = (
                None if masks is None
                else _read_mask(masks, k * geometry.stride, geometry.extent, width, actual)
            )  # fmt: skip
        return mask_rows[k]

    def scheduled():
        """(row, col, tile or None) in raster order, a bounded number of reads ahead."""
        positions = ((k, c) for k in range(start_row, block_rows) for c in range(block_cols))
        queue: deque = deque()
        ahead = max(2 * batch_size, 2 * read_threads)
        reading = 0

        def top_up() -> None:
            nonlocal reading
            while reading < ahead:
                position = next(positions, None)
                if position is None:
                    return
                k, c = position
                mask = mask_of(k)
                if mask is not None and not _block_has_tissue(mask, c, geometry):
                    queue.append((k, c, None))
                    continue
                top = k * geometry.stride - geometry.offset[0]
                left = c * geometry.stride - geometry.offset[1]
                queue.append((k, c, readers.submit(
                    _prepared_tile, normalise, reader, actual, top, left, geometry.tile,
                    padding, fill, tolerance, channels,
                )))  # fmt: skip
                reading += 1

        top_up()
        while queue:
            k, c, future = queue.popleft()
            if future is not None:
                reading -= 1
                tile = future.result()
            else:
                tile = None
            top_up()
            yield k, c, tile

    if geometry.overlap:
        accumulator = np.zeros((classes, geometry.extent, width), np.float32)
        weights = np.zeros((geometry.extent, width), np.float32)
    else:  # blocks are final at once: keep only the output strip, in the output dtype
        strip_shape = (geometry.extent, width) + ((channels_out,) if soft else ())
        direct = np.zeros(strip_shape, dtype)

    hard_direct = not soft and not geometry.overlap and not augment

    def place(k: int, group: list[tuple[int, np.ndarray]]) -> None:
        outputs = _forward(model, np.stack([t for _, t in group]), geometry, augment,
                           labels=hard_direct)  # fmt: skip
        for (c, _), block in zip(group, outputs, strict=True):
            left = c * geometry.stride
            span = slice(left, left + geometry.extent)
            if hard_direct:  # labels straight from the logits
                mask = mask_of(k)
                direct[:, span] = block if mask is None else block * mask[:, span]
            elif geometry.overlap:
                accumulator[:, :, span] += block * window
                weights[:, span] += window
            else:
                mask = mask_of(k)
                direct[:, span] = _finish_strip(
                    block, window, None if mask is None else mask[:, span], soft, quantize,
                    output_class,
                )  # fmt: skip
        result.computed += len(group)

    def finish_row(k: int) -> None:
        nonlocal accumulator, weights
        remaining = rows - k * geometry.stride  # the last strip takes its block's rest
        strip_rows = remaining if k == block_rows - 1 else min(geometry.stride, remaining)
        mask = mask_of(k)
        if geometry.overlap:
            strip = _finish_strip(
                accumulator[:, :strip_rows, :cols], weights[:strip_rows, :cols],
                None if mask is None else mask[:strip_rows, :cols], soft, quantize, output_class,
            )  # fmt: skip
            accumulator = np.roll(accumulator, -geometry.stride, axis=1)
            weights = np.roll(weights, -geometry.stride, axis=0)
            accumulator[:, -geometry.stride :] = 0
            weights[-geometry.stride :] = 0
        else:
            strip = direct[:strip_rows, :cols].copy()
            direct[:] = 0
        if not strips.done(k):
            saved.append(saver.submit(sink.feed, k, strip))
        for old in [row for row in mask_rows if row <= k]:
            del mask_rows[old]

    try:
        for k in range(first):
            saved.append(saver.submit(sink.feed, k, strips.load(k)))  # replay finished strips
        current, group, seen = start_row, [], 0
        for k, c, tile in scheduled():
            if k != current:
                if group:
                    place(current, group)
                    group = []
                finish_row(current)
                current = k
            if tile is not None:
                group.append((c, tile))
                if len(group) == batch_size:
                    place(k, group)
                    group = []
            else:
                result.skipped += 1
            seen += 1
            if progress is not None and (c == block_cols - 1):
                progress(start_row * block_cols + seen, result.tiles)
        if start_row < block_rows:
            if group:
                place(current, group)
            finish_row(current)
        for future in saved:
            future.result()
        sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        saver.shutdown(wait=True)
    strips.remove()
    result.seconds = time.perf_counter() - started
    logger.info("%s: %d tiles (%d computed, %d skipped) in %.1f s", output, result.tiles,
                result.computed, result.skipped, result.seconds)  # fmt: skip
    return result


def _read_mask(masks, top: int, height: int, width: int, spacing: float) -> np.ndarray:
    """The mask over output rows ``[top, top + height)`` and ``width`` columns as bool.

    True where the mask is > 0, or holds one of the mask values when they are given.
    """
    reader, mask_spacing, values = masks
    scale = spacing / mask_spacing  # mask pixels per output pixel (<= 1 for coarser masks)
    m_top, m_left = int(np.floor(top * scale)), 0
    m_height = max(1, int(np.ceil((top + height) * scale)) - m_top)
    m_width = max(1, int(np.ceil(width * scale)))
    region = reader.read(mask_spacing, m_top, m_left, m_height, m_width, fill=0,
                         interpolation="nearest")[..., 0]  # fmt: skip
    if region.shape != (height, width):
        # nearest: output pixel i takes mask pixel floor((top + i) * scale) - m_top
        rows_index = np.clip(np.floor((top + np.arange(height) + 0.5) * scale).astype(int) - m_top,
                             0, region.shape[0] - 1)  # fmt: skip
        cols_index = np.clip(np.floor((np.arange(width) + 0.5) * scale).astype(int), 0,
                             region.shape[1] - 1)  # fmt: skip
        region = region[rows_index[:, None], cols_index[None, :]]
    return region > 0 if values is None else np.isin(region, values)


def _block_has_tissue(mask_rows: np.ndarray, c: int, geometry: TileGeometry) -> bool:
    left = c * geometry.stride
    return bool(mask_rows[:, left : left + geometry.extent].any())


def _read_tile(reader, spacing, top, left, size, padding, fill, tolerance, channels):
    if padding == "constant":
        tile = reader.read(spacing, top, left, size, size, fill=fill, tolerance=tolerance)
    else:
        rows, cols = reader.shape(spacing, tolerance)
        r0, c0 = max(0, top), max(0, left)
        r1, c1 = min(rows, top + size), min(cols, left + size)
        inner = reader.read(spacing, r0, c0, max(1, r1 - r0), max(1, c1 - c0), tolerance=tolerance)
        pads = ((r0 - top, top + size - r1), (c0 - left, left + size - c1), (0, 0))
        tile = np.pad(inner, pads, mode="reflect" if min(inner.shape[:2]) > 1 else "edge")
        tile = tile[:size, :size]
    if channels is not None:
        tile = tile[..., list(channels)]
    return np.ascontiguousarray(tile)


def _prepared_tile(normalise, *arguments) -> np.ndarray:
    """A tile read and made network input in a reader thread: (C, H, W) float32, normalised."""
    tile = _read_tile(*arguments)
    return np.ascontiguousarray(normalise(to_channels_first(tile[None]))[0], dtype=np.float32)


@torch.inference_mode()
def _forward(model, batch: np.ndarray, geometry: TileGeometry, augment: bool, labels=False):
    """(N, K, extent, extent) float32 probabilities of (N, C, H, W) prepared tiles.

    ``labels``: (N, extent, extent) uint8 ``argmax + 1`` instead, taken on the logits (no
    softmax, no float copy; only without test-time augmentation).
    """
    network = model.module
    network.eval()
    x = torch.from_numpy(batch)  # normalised (N, C, H, W) from the reader threads
    x = x.to(model.device, dtype=torch.float32)
    if model.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if labels and not augment:
        with torch.autocast(model.device.type, enabled=model.amp):
            logits = network(x)
        result = (logits.max(dim=1).indices + 1).to(torch.uint8).cpu().numpy()
        if geometry.downsampling != 1.0:
            size = (geometry.extent, geometry.extent)
            result = np.stack(
                [cv2.resize(r, size, interpolation=cv2.INTER_NEAREST) for r in result]
            )
        return result
    transforms = [(k, f) for f in (False, True) for k in range(4)] if augment else [(0, False)]
    total = None
    for k, flip in transforms:
        with torch.autocast(model.device.type, enabled=model.amp):
            logits = network(_dihedral(x, k, flip) if (k or flip) else x)
        probabilities = torch.softmax(logits.float(), dim=1)
        probabilities = _undo_dihedral(probabilities, k, flip) if (k or flip) else probabilities
        total = probabilities if total is None else total + probabilities
    probabilities = (total / len(transforms)).cpu().numpy()
    if geometry.downsampling != 1.0:
        size = (geometry.extent, geometry.extent)
        probabilities = np.stack([
            np.stack([cv2.resize(plane, size, interpolation=cv2.INTER_LINEAR) for plane in p])
            for p in probabilities
        ])  # fmt: skip
    return probabilities


def _argmax_classes(values: np.ndarray) -> np.ndarray:
    """uint8 index of the largest of ``values[k]`` over the class axis 0 (ties: the first).

    A loop of comparisons over the few classes, several times faster than ``argmax(axis=0)``.
    """
    best = values[0].copy()
    index = np.zeros(values.shape[1:], np.uint8)
    for k in range(1, len(values)):
        better = values[k] > best
        index[better] = k
        np.maximum(best, values[k], out=best)
    return index


def _finish_strip(accumulated, weights, mask, soft, quantize, output_class) -> np.ndarray:
    """Blend, then labels (argmax + 1, 0 outside the mask) or probabilities."""
    covered = weights > 0
    if not soft:  # the weights scale every class alike: no division for the argmax
        labels = _argmax_classes(accumulated) + 1
        labels[~covered] = 0
        if mask is not None:
            labels[~mask] = 0
        return labels
    probabilities = np.divide(accumulated, np.maximum(weights, 1e-12)[None])
    if output_class is not None:
        probabilities = probabilities[output_class : output_class + 1]
    if mask is not None:
        probabilities = probabilities * mask[None]
    values = np.moveaxis(probabilities, 0, -1)
    if quantize:
        return np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
    return values.astype(np.float32)


class _Sink:
    """Writes finished strips, in order, to the partial results and into the output TIFF.

    The TIFF is written under a temporary name while the strips arrive and renamed by
    :meth:`close`; :meth:`abort` discards it (the partial strips stay for a resume).
    """

    def __init__(self, output, strips, shape, channels, dtype, spacing, soft) -> None:
        self.strips = strips
        self.rows, self.cols = shape
        self.writer = ImageWriter(
            output, shape, spacing=spacing, dtype=dtype, channels=channels, compression="lzw",
            interpolation="mean" if soft else "nearest", tile_size=WRITER_TILE, threads=1,
        )  # fmt: skip
        self.band: list[np.ndarray] = []
        self.held = 0
        self.written = 0
        self.next = 0

    def feed(self, index: int, strip: np.ndarray) -> None:
        if index != self.next:
            raise RuntimeError(f"strip {index} arrived before strip {self.next}")
        self.next += 1
        if not self.strips.done(index):
            self.strips.save(index, strip)
        self.band.append(strip if strip.ndim == 3 else strip[:, :, None])
        self.held += strip.shape[0]
        last = self.written + self.held >= self.rows
        while self.held >= WRITER_TILE or (last and self.held > 0):
            block = np.concatenate(self.band) if len(self.band) > 1 else self.band[0]
            take = min(WRITER_TILE, block.shape[0])
            for col in range(0, self.cols, WRITER_TILE):
                self.writer.write(block[:take, col : col + WRITER_TILE], self.written, col)
            self.written += take
            rest = block[take:]
            self.band, self.held = ([rest] if len(rest) else []), len(rest)

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        try:
            self.writer.abort()
        except Exception:  # the writer may be half-open after a failure
            logger.debug("could not abort the output writer", exc_info=True)
