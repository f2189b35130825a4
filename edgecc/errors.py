"""Errors the runtime raises on bad input: one line naming the file and the problem.

    from edgecc.errors import EdgeccError, ImageryError
    try:
        pair = read_pair("pre.tif", "post.tif")
    except ImageryError as e:   # e.g. "post.tif: not a readable image (truncated TIFF?)"
        print(e)

Catch `EdgeccError` to handle every error edgecc raises about user input (imagery, bundles); programming
errors (wrong argument types) stay ordinary `TypeError` / `ValueError`.
"""

from __future__ import annotations


class EdgeccError(Exception):
    """Base of all edgecc input errors; the message is one line naming the file and the problem."""


class ImageryError(EdgeccError):
    """An image or image pair cannot be read or used (missing, corrupt, wrong footprint, size mismatch)."""


class BundleError(EdgeccError):
    """A model bundle cannot be loaded (missing file, checksum mismatch, unsupported manifest)."""


class ImageryWarning(UserWarning):
    """Imagery was usable but changed on the way in (band replicated or dropped, image resized, CRS ignored)."""
