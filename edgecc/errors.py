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

import warnings


class EdgeccError(Exception):
    """Base of all edgecc input errors; the message is one line naming the file and the problem."""


class ImageryError(EdgeccError):
    """An image or image pair cannot be read or used (missing, corrupt, wrong footprint, size mismatch)."""


class BundleError(EdgeccError):
    """A model bundle cannot be loaded (missing file, checksum mismatch, unsupported manifest)."""


class OutputError(EdgeccError, OSError):
    """An output could not be written (disk full, permission denied); the target holds its old content or nothing."""


class ImageryWarning(UserWarning):
    """Imagery was usable but changed on the way in (band replicated or dropped, image resized, CRS ignored)."""


def one_line(e: BaseException, limit: int = 200) -> str:
    """First line of the most specific message in an exception chain (rasterio wraps GDAL's own error), at most
    `limit` characters: the part after "file: " in an error message."""
    while (e.__cause__ or e.__context__) is not None and "previous exception" in str(e):
        e = e.__cause__ or e.__context__
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:limit]


def warn_imagery(msg: str, stacklevel: int = 4) -> None:
    """Issue an `ImageryWarning` (default: attributed to the caller of the public function that warned)."""
    warnings.warn(msg, ImageryWarning, stacklevel=stacklevel)
