"""Multi-resolution images read and written by pixel spacing (µm/px).

* :class:`ImageReader` reads regions of whole-slide images, masks and probability maps at a
  spacing: digipath's own tile decoder for tiled TIFF (SVS, OME-TIFF, pyramidal TIFF),
  OpenSlide for the other vendor formats.
* :class:`ImageWriter` streams tiles into a tiled pyramidal TIFF.
* :mod:`digipath.io.spacing` holds the spacing arithmetic both follow.
"""

from digipath.io.reader import ImageReader
from digipath.io.spacing import DEFAULT_TOLERANCE
from digipath.io.writer import ImageWriter

__all__ = ["DEFAULT_TOLERANCE", "ImageReader", "ImageWriter"]
