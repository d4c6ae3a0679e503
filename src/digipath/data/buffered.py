"""The main and read buffer mechanics the batch generators share (a mixin).

A generator keeps a *main* buffer that batches are drawn from and, with double buffering, a
*read* buffer loaded in the background; :class:`BufferedGenerator` moves patches between them
the way the original library did: :meth:`fill`, :meth:`load`, :meth:`transfer` (the whole
buffer is swapped instead of copied), :meth:`boosted_transfer` (difficult patches kept) and
the per-patch error feedback (:meth:`update`, :meth:`count`, :meth:`histogram`).

Subclasses (:class:`~digipath.data.batch_generator.BatchGenerator` sampling slides in worker
processes, :class:`~digipath.data.database_generator.DatabaseBatchGenerator` reading a patch
database in threads) provide how a load runs: ``main``, ``read`` (a
:class:`~digipath.data.buffer.PatchBuffer` or ``None``), ``_filled``, ``name``,
``start()``/``step()``/``stop()``,
``_start_load(buffer, count, background)``, ``_wait_for(buffer)``, ``_loading(buffer)``,
``_hand_out(slots)`` and ``start()``/``started``/``batch_size``; hooks let
:meth:`batches` step through the sources and prefetch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from digipath.errors import SamplingError

if TYPE_CHECKING:
    from digipath.data.buffer import PatchBuffer

__all__ = ["BufferedGenerator", "boosting_transfer_count"]


def boosting_transfer_count(
    size: int, difficult: int, epoch: int, buffer_mode_switch: int, update_ratio: float
) -> int:
    """How many new patches replace old ones after a training repetition (boosting).

    Before the ``buffer_mode_switch`` epoch the whole buffer is replaced. From then on,
    ``difficult - round(difficult * update_ratio)`` difficult patches are kept and the rest of
    the buffer is replaced (DigitalPathology's difficult-sample boosting).

    Parameters
    ----------
    size
        Main buffer size (patches).
    difficult
        Number of slots with an error above the difficult threshold.
    epoch
        The epoch index (0-based).
    buffer_mode_switch
        First epoch index that keeps difficult patches.
    update_ratio
        Share (in [0, 1]) of the difficult patches replaced anyway.
    """
    if not 0.0 <= update_ratio <= 1.0:
        raise ValueError(f"the difficult update ratio must be in [0, 1], got {update_ratio}")
    if epoch < buffer_mode_switch:
        return size
    keep = difficult - round(difficult * update_ratio)
    return size - keep


class BufferedGenerator:
    """Main/read buffer moves and error feedback (see the module docstring)."""

    main: PatchBuffer | None
    read: PatchBuffer | None
    _filled: bool
    main_buffer_size: int

    # -- provided by the generator ------------------------------------------------------------

    def _require_started(self) -> None:
        if not self.started:
            raise SamplingError(f"{self.name}: call start() first (or use the generator in a with)")

    def __enter__(self):
        self.start()
        self.step()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _start_load(self, buffer: PatchBuffer, count: int, background: bool) -> None:
        raise NotImplementedError  # pragma: no cover - overridden

    def _wait_for(self, buffer: PatchBuffer | None) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _loading(self, buffer: PatchBuffer | None) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def _hand_out(self, slots):  # pragma: no cover - overridden
        """The batch dict of buffer slots (normalised, channels first, labels encoded)."""
        raise NotImplementedError

    def _swapped(self) -> None:
        """Called after :meth:`transfer` swapped the main and read buffers."""

    def _before_batches(self) -> None:
        """Called by :meth:`batches` once the generator is started, before the first fill."""

    def _start_prefetch(self) -> None:
        """Called by :meth:`batches` after the read buffer started loading."""

    def _next_pass(self) -> None:
        """After a pass over the main buffer: transfer the loaded patches, load the next."""
        if self.read is not None:
            self.transfer()
        self.load()

    # -- buffer moves ---------------------------------------------------------------------------

    def fill(self) -> None:
        """Fill the whole main buffer (waits), then shuffle it."""
        self._require_started()
        assert self.main is not None
        self._start_load(self.main, self.main.size, background=False)
        self.main.shuffle()
        self._filled = True

    def load(self, batch_size: int = 0) -> None:
        """Load patches in the background: into the read buffer when there is one.

        Parameters
        ----------
        batch_size
            Number of patches; 0 = the whole read buffer. Without a read buffer the main
            buffer's next slots are refilled and the call waits (0 = the whole main buffer).
        """
        self._require_started()
        assert self.main is not None
        if self.read is not None:
            self._start_load(self.read, batch_size or self.read.size, background=True)
        else:
            self._start_load(self.main, batch_size or self.main.size, background=False)
            self.main.shuffle()

    def transfer(self, batch_size: int = 0, difficult_threshold: float = 0.0) -> None:
        """Move loaded patches from the read buffer into the main buffer, then shuffle it.

        Parameters
        ----------
        batch_size
            Patches moved; 0 = the whole read buffer. A partial transfer overwrites the main
            buffer's easy slots (error below ``difficult_threshold``) first.
        difficult_threshold
            Error in [0, 1] below which a slot counts as easy.

        Without a read buffer this does nothing.
        """
        self._require_started()
        if self.read is None:
            return
        assert self.main is not None
        self._wait_for(self.read)
        if batch_size in (0, self.read.size) and self.read.size == self.main.size:
            # the whole buffer: swap the two instead of copying (the old main is reloaded next)
            self.main, self.read = self.read, self.main
            self._swapped()
            self.main.fresh(slice(None))
            self.main.write_order = None
        else:
            self.main.copy_from(self.read, batch_size, difficult_threshold)
        self.main.shuffle()
        self._filled = True

    def boosted_transfer(
        self,
        epoch: int,
        buffer_mode_switch: int,
        difficult_threshold: float,
        difficult_update_ratio: float,
    ) -> float:
        """Transfer after a training repetition with difficult-sample boosting.

        Counts the difficult slots ``D`` (error above ``difficult_threshold``), keeps
        ``D - round(D * difficult_update_ratio)`` of them from epoch ``buffer_mode_switch`` on
        (:func:`boosting_transfer_count`) and transfers the rest of the buffer (at most the
        read buffer), easy slots replaced first.

        Returns
        -------
        float
            The difficult patch ratio ``D / size`` before the transfer.
        """
        self._require_started()
        assert self.main is not None
        difficult = self.main.count(difficult_threshold)
        count = boosting_transfer_count(
            self.main.size, difficult, epoch, buffer_mode_switch, difficult_update_ratio
        )
        if self.read is not None and count > self.read.size:
            count = self.read.size
        if count:
            self.transfer(count, difficult_threshold)
        return difficult / self.main.size

    # -- boosting feedback ------------------------------------------------------------------

    def update(self, indices, errors) -> None:
        """Record per-patch errors in [0, 1] for the slots a batch came from."""
        self._require_started()
        assert self.main is not None
        self.main.update(indices, errors)

    def count(self, threshold: float = 0.0) -> int:
        """Number of main-buffer patches with an error above ``threshold``."""
        self._require_started()
        assert self.main is not None
        return self.main.count(threshold)

    def histogram(self, bins: int = 10, raw: bool = True):
        """Histogram of the main buffer's errors over [0, 1].

        ``raw``: ``(counts, edges)``; otherwise ``{"0.00-0.10": count, ...}``.
        """
        self._require_started()
        assert self.main is not None
        counts, edges = self.main.histogram(bins)
        if raw:
            return counts, edges
        return {
            f"{low:.2f}-{high:.2f}": int(value)
            for low, high, value in zip(edges[:-1], edges[1:], counts, strict=True)
        }

    # -- batches ----------------------------------------------------------------------------

    def batch(self, batch_size: int):
        """The next ``batch_size`` patches of the main buffer, ready for a network.

        Returns
        -------
        (batch, indices)
            ``batch[spacing]`` holds ``"patches"`` ((N, C, H, W) or (N, H, W, C); float32 when
            normalised, else uint8), ``"labels"`` (one-hot float32 (N, K) / (N, K, H, W) /
            (N, H, W, K); without one-hot int64 (N,) or (N, H, W), 255 = ignore) and, with
            weight maps, ``"weights"`` (float32 (N, H, W)). ``indices`` are the (N,) buffer
            slots, for :meth:`update`.
        """
        self._require_started()
        assert self.main is not None
        if not self._filled:
            self.fill()
        slots, indices = self.main.batch(batch_size)
        return self._hand_out(slots), indices

    def batches(self, batch_size: int | None = None, count: int | None = None):
        """Yield ``(batch, indices)`` endlessly (or ``count`` times), refreshing the buffer.

        After each pass over the main buffer the patches loaded in the background are
        transferred in and the next load starts (without a read buffer the main buffer is
        refilled).
        """
        size = batch_size or self.batch_size
        if not size:
            raise ValueError(
                f"give a batch size (here or as {type(self).__name__}(batch_size=...))"
            )
        if not self.started:
            self.start()
        self._before_batches()
        assert self.main is not None
        if not self._filled:
            self.fill()
        if self.read is not None and not self._loading(self.read):
            self.load()
        self._start_prefetch()
        per_pass = max(1, self.main.size // size)
        produced = 0
        while count is None or produced < count:
            for _ in range(per_pass):
                if count is not None and produced >= count:
                    return
                yield self.batch(size)
                produced += 1
            self._next_pass()

    @property
    def size(self) -> int:
        """Main buffer size (patches)."""
        return self.main_buffer_size

    def __iter__(self):
        return self.batches()
