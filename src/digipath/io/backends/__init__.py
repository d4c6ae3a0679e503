"""Image backends: the objects that know one file format family.

A backend exposes the levels of an image and copies in-bounds regions of a level into a
caller's array; everything about spacings, padding and resampling lives in
:class:`digipath.io.ImageReader`.
"""

from digipath.io.backends.base import Backend, Level

__all__ = ["Backend", "Level"]
