"""The interface every image backend implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Level:
    """One resolution level of a multi-resolution image.

    Attributes
    ----------
    shape
        (rows, cols) in pixels.
    downsampling
        Size of level 0 over the size of this level (1.0 for level 0), averaged over the two
        axes as OpenSlide does.
    spacing
        Pixel spacing in µm/px from the file's own metadata for this level, or ``None``.
    tile_shape
        (rows, cols) of the storage tiles (strips count as tiles of full width), or ``None``
        when the format does not say.
    """

    shape: tuple[int, int]
    downsampling: float
    spacing: float | None = None
    tile_shape: tuple[int, int] | None = None


@dataclass
class ImageMetadata:
    """What a backend knows about a file, apart from its levels."""

    vendor: str
    compression: str
    channels: int
    dtype: np.dtype
    spacing: float | None
    properties: dict[str, str] = field(default_factory=dict)


class Backend(abc.ABC):
    """Reads the levels of one image file.

    Subclasses set :attr:`path`, :attr:`levels` and :attr:`metadata` when constructed and
    implement :meth:`read_region`, :meth:`associated` and :meth:`close`.
    """

    name: str = "abstract"
    path: str
    levels: list[Level]
    metadata: ImageMetadata

    @abc.abstractmethod
    def read_region(self, level: int, row: int, col: int, out: np.ndarray, fill: float) -> None:
        """Copy the region of ``level`` starting at (row, col) into ``out``.

        ``out`` has shape (height, width, channels) and the image's dtype; the region lies
        entirely inside the level (the reader clips and pads). Parts the file leaves empty
        (sparse tiles, transparent areas) are set to ``fill``. Must be safe to call from
        several threads at once.
        """

    @property
    def associated_names(self) -> tuple[str, ...]:
        """Names of the associated images (``label``, ``macro``, ``thumbnail``...)."""
        return ()

    def associated(self, name: str) -> np.ndarray:
        """Return the associated image ``name`` as a (rows, cols, channels) array."""
        raise KeyError(name)

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file handles."""
