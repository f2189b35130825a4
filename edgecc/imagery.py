"""Read before/after imagery as uint8 RGB, one window at a time.

    from edgecc.imagery import ReadOptions, read_image, read_pair
    rgb = read_image("scene.png")                                   # uint8 [H,W,3] RGB
    with read_pair("pre.tif", "post.tif", ReadOptions(bands=(3, 2, 1))) as pair:
        pre, post, valid = pair.read_window(0, 0, 256, 256)         # uint8 [256,256,3] x2, bool [256,256]

GeoTIFF (and anything else GDAL reads) goes through rasterio, imported lazily (`pip install edgecc[geo]`);
PNG/JPEG go through OpenCV and need no rasterio. Rules:

- uint8 data is used as is; uint16 / int / float data is stretched to uint8 by per-band percentiles
  (`ReadOptions.stretch`) computed ONCE per raster from a decimated read, so all tiles of a scene agree.
- 1 band is replicated to RGB, 4+ bands without `bands` keep the first three (an `ImageryWarning` each, once
  per raster). An alpha band / channel, the nodata value and NaN become the `valid` mask.
- A georeferenced pair on different grids (CRS, resolution, origin) is resampled onto the pre image's grid
  (rasterio WarpedVRT, bilinear); non-overlapping footprints are an `ImageryError`. A non-georeferenced pair of
  different sizes is an error unless `ReadOptions(resize=True)` (`--resize` on the command line).
- Pixels are only ever read per window: a 10k x 10k scene is never held in memory at once (PNG/JPEG excepted:
  OpenCV decodes those whole, as uint8/uint16, when they fit `ReadOptions.max_decode_mb`).

The parts live in one module each: `edgecc._sniff` (what a file is, from its header), `edgecc._readers` (window
readers, GDAL and OpenCV), `edgecc.geo` (the pixel-to-map affine, footprints, grids); this module is the API.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecc import geo
from edgecc._readers import (
    _Reader,
    alpha_band,
    decode_cv2,
    has_rasterio,
    make_reader,
    rasterio_module,
    read_clipped,
)
from edgecc._sniff import (
    CV2_SUFFIXES,
    TIFF_SUFFIXES,
    check_file,
    check_png,
    check_tiff,
    cv2_header,
    describe_bytes,
    sniff,
)
from edgecc.errors import ImageryError, one_line, warn_imagery

__all__ = ["ReadOptions", "Raster", "Pair", "open_raster", "check_decodable", "read_image", "read_pair", "check_png"]


@dataclass(frozen=True)
class ReadOptions:
    """How to turn a file into uint8 RGB.

    Attributes:
        bands: 1-based band indices to use as R, G, B, e.g. (3, 2, 1); one index is replicated to grey RGB.
        resize: for a non-georeferenced pair of different sizes, resize post to pre's size instead of failing.
        stretch: low/high percentiles mapped to 0/255 for data that is not uint8.
        max_pixels: refuse files whose header claims more than width * height pixels (corrupt or hostile headers).
        max_decode_mb: memory one decode may take: refuse PNG/JPEG (decoded whole, not per window) whose header
            claims more than this (width * height * 4 channels * bytes per sample), GeoTIFF blocks larger than this,
            and `read_image` calls (a whole image, a watch frame) that would hold more: a small compressed file can
            claim gigabytes.
        cache_mb: GDAL block cache while reading (GDAL_CACHEMAX; GDAL's default is 5% of RAM, which for row-major
            tile reads only inflates RSS: two rows of 512-px blocks of a 10k-wide 3-band scene are 30 MB).
    """

    bands: tuple[int, ...] | None = None
    resize: bool = False
    stretch: tuple[float, float] = (2.0, 98.0)
    max_pixels: int = 2**31
    max_decode_mb: int = 512
    cache_mb: int = 128

    def __post_init__(self):
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))
            if len(self.bands) not in (1, 3) or min(self.bands) < 1:
                raise ValueError(f"bands must be 1 or 3 one-based indices, got {self.bands}")
        if min(self.cache_mb, self.max_pixels, self.max_decode_mb) < 1:
            raise ValueError(f"cache_mb, max_pixels and max_decode_mb must be positive, got {self.cache_mb}, "
                             f"{self.max_pixels}, {self.max_decode_mb}")
        lo, hi = self.stretch
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"stretch must be percentiles 0 <= low < high <= 100, got {self.stretch}")


@dataclass(frozen=True)
class Raster:
    """Metadata of one image file; no pixels.

    Attributes:
        transform: GDAL-order affine (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f; None when
            the file has no geotransform.
        crs: "EPSG:32615" style where the CRS has an authority code, else WKT; None when not georeferenced.
        reader: "gdal" (rasterio, windowed reads) or "cv2" (OpenCV, decoded whole).
    """

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: str | None = None
    transform: tuple[float, float, float, float, float, float] | None = None
    nodata: float | None = None
    reader: str = "gdal"

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None and self.transform is not None

    @property
    def bounds(self) -> tuple[float, float, float, float] | None:
        """(left, bottom, right, top) in the raster's CRS, or None when there is no transform."""
        if self.transform is None:
            return None
        return geo.bounds(self.transform, self.width, self.height)


def is_uri(path: str | os.PathLike) -> bool:
    """A GDAL virtual path or URL (/vsicurl/..., /vsis3/..., s3://..., https://...), read by GDAL, not a local file."""
    path = str(path)
    return path.startswith("/vsi") or bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path))


def open_raster(path: str | os.PathLike, *, max_pixels: int = 2**31) -> Raster:
    """Read the metadata of an image file without reading its pixels.

    A URI (`is_uri`) goes to GDAL as it is (needs rasterio): the local header checks do not apply to it.

    Raises:
        ImageryError: missing, a directory, empty, unreadable, not an image, corrupt, truncated, or claiming more
            than `max_pixels` pixels.
    """
    if is_uri(path):
        if not has_rasterio():
            raise ImageryError(f"{path}: a URI is read by GDAL: pip install 'edgecc[geo]'")
        return _checked(_open_gdal(str(path), max_pixels), str(path), max_pixels)  # str: Path() folds "//"
    p = Path(path)
    head = check_file(p)
    kind = sniff(head)
    if kind in ("png", "jpeg"):
        w, h, count, dtype = cv2_header(p, kind)
        raster = Raster(path=p, width=w, height=h, count=count, dtype=dtype, reader="cv2")
    elif p.suffix.lower() in TIFF_SUFFIXES and kind != "tiff":
        raise ImageryError(f"{p}: not a TIFF file ({describe_bytes(head)})")
    elif p.suffix.lower() in CV2_SUFFIXES - {".bmp", ".webp"}:
        raise ImageryError(f"{p}: not a {p.suffix.lstrip('.').upper()} image ({describe_bytes(head)})")
    elif head.lstrip()[:1] == b"<":
        raise ImageryError(f"{p}: an XML raster description (VRT, WMS, ...): not read, it can point at other files "
                           "or the network")
    else:
        if kind == "tiff":
            check_tiff(p)
        raster = _open_gdal(p, max_pixels) if has_rasterio() else None
    if raster is None:
        raster = _open_decode_cv2(p, max_pixels)  # no rasterio: OpenCV reads TIFF/BMP/WebP whole, no georef
    return _checked(raster, p, max_pixels)


def _checked(raster: Raster, p, max_pixels: int) -> Raster:
    if "complex" in raster.dtype:
        raise ImageryError(f"{p}: complex samples ({raster.dtype}, e.g. radar SLC) are not imagery edgecc reads")
    if raster.width <= 0 or raster.height <= 0 or raster.count <= 0:
        raise ImageryError(f"{p}: image has no pixels ({raster.width} x {raster.height} x {raster.count})")
    if raster.width * raster.height > max_pixels:
        raise ImageryError(
            f"{p}: header claims {raster.width} x {raster.height} pixels, more than the limit of {max_pixels} "
            "(corrupt header? if the image is real, raise the limit: --max-pixels)"
        )
    return raster


def read_image(path: str | os.PathLike, opts: ReadOptions = ReadOptions(), window=None) -> np.ndarray:
    """Read one image (or a window of it) as uint8 RGB.

    Args:
        window: (col_off, row_off, width, height) in pixels; None reads the whole image.

    Returns:
        uint8 [H,W,3] RGB; invalid pixels (nodata, alpha 0, NaN) are 0.
    """
    raster = check_decodable(path, opts, window)
    col, row, w, h = (int(v) for v in (window if window is not None else (0, 0, raster.width, raster.height)))
    reader = make_reader(raster, opts)
    try:
        rgb, _ = read_clipped(reader, raster.width, raster.height, col, row, w, h)
        return rgb
    finally:
        reader.close()


def check_decodable(path: str | os.PathLike, opts: ReadOptions = ReadOptions(), window=None) -> Raster:
    """The file's `Raster`, after checking that reading `window` (None: the whole image) at once fits
    `opts.max_decode_mb`: call it before handing a file of unknown origin to any decoder (a 400-byte PNG can claim
    30000 x 30000 pixels).

    Raises:
        ImageryError: as `open_raster`, or the read would take more memory than the limit.
    """
    raster = open_raster(path, max_pixels=opts.max_pixels)
    w, h = (raster.width, raster.height) if window is None else (int(window[2]), int(window[3]))
    # bytes the read holds at once: the samples of 3 bands (+ alpha), then float64 for the stretch, then uint8 RGB
    item = np.dtype(raster.dtype).itemsize
    need = w * h * (4 * item + (24 if raster.dtype != "uint8" else 0) + 4)
    if need > opts.max_decode_mb * 2**20:
        raise ImageryError(
            f"{path}: reading {w} x {h} pixels at once takes about {need / 2**20:.0f} MB, more than the "
            f"{opts.max_decode_mb} MB limit (read it by window or tile it: edgecc caption tiles large scenes; or raise "
            "the limit: --max-decode-mb)"
        )
    return raster


@dataclass
class Pair:
    """A before/after pair on one pixel grid (the pre image's), read window by window.

    Use as a context manager, or call `close()`: GeoTIFF file handles stay open between windows.

    Attributes:
        width, height: size of the common grid (the pre image's).
        crs, transform: the grid's georeferencing (the pre image's), None when pre is not georeferenced.
        georeferenced: the pair was aligned by georeferencing (both files georeferenced), not by pixel position.
        resampled: post was warped or resized onto pre's grid.
    """

    pre: Raster
    post: Raster
    width: int
    height: int
    crs: str | None
    transform: tuple[float, float, float, float, float, float] | None
    georeferenced: bool
    resampled: bool
    _pre_reader: _Reader = field(repr=False)
    _post_reader: _Reader = field(repr=False)

    def read_window(self, col_off: int, row_off: int, width: int, height: int):
        """Read the same window of the pre grid from both images.

        Returns:
            pre uint8 [h,w,3], post uint8 [h,w,3], valid bool [h,w] (both images have data there). Parts of the
            window outside the grid are zeros and invalid.
        """
        args = (self.width, self.height, int(col_off), int(row_off), int(width), int(height))
        pre, valid_pre = read_clipped(self._pre_reader, *args)
        post, valid_post = read_clipped(self._post_reader, *args)
        return pre, post, valid_pre & valid_post

    def close(self) -> None:
        self._pre_reader.close()
        self._post_reader.close()

    def __enter__(self) -> Pair:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_pair(pre_path: str | os.PathLike, post_path: str | os.PathLike, opts: ReadOptions = ReadOptions()) -> Pair:
    """Open a before/after pair and put post on pre's pixel grid.

    Raises:
        ImageryError: either file unreadable, footprints that do not overlap, or a non-georeferenced pair of
            different sizes without `opts.resize`.
    """
    pre = open_raster(pre_path, max_pixels=opts.max_pixels)
    post = open_raster(post_path, max_pixels=opts.max_pixels)
    georeferenced = pre.georeferenced and post.georeferenced
    resampled = False
    if georeferenced:
        same = geo.same_grid(pre, post)
        if not same:
            geo.check_overlap(pre, post)
            resampled = True
        pre_reader = make_reader(pre, opts)
        try:
            post_reader = make_reader(post, opts, warp_to=None if same else pre)
        except BaseException:
            pre_reader.close()
            raise
    else:
        if pre.georeferenced != post.georeferenced:
            ref, plain = (pre, post) if pre.georeferenced else (post, pre)
            warn_imagery(f"{plain.path}: not georeferenced while {ref.path} is; pairing the two by pixel position")
        scale_to = None
        if (pre.width, pre.height) != (post.width, post.height):
            if not opts.resize:
                raise ImageryError(
                    f"{post.path}: {post.width} x {post.height} pixels but {pre.path} is {pre.width} x {pre.height} "
                    "and the pair is not georeferenced; use --resize to resize post to pre"
                )
            warn_imagery(f"{post.path}: resized from {post.width} x {post.height} to {pre.width} x {pre.height} "
                         "to match pre")
            scale_to = (pre.width, pre.height)
            resampled = True
        pre_reader = make_reader(pre, opts)
        try:
            post_reader = make_reader(post, opts, scale_to=scale_to)
        except BaseException:
            pre_reader.close()
            raise
    return Pair(
        # a geotransform without a CRS places nothing on the earth: outputs stay in pixels, labelled so
        pre=pre, post=post, width=pre.width, height=pre.height, crs=pre.crs,
        transform=pre.transform if pre.crs is not None else None,
        georeferenced=georeferenced, resampled=resampled, _pre_reader=pre_reader, _post_reader=post_reader,
    )


def _open_gdal(p: Path, max_pixels: int) -> Raster:
    rasterio = rasterio_module()
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            ds = rasterio.open(p)
        except Exception as e:  # RasterioIOError, CPLE_* from a corrupt header
            raise ImageryError(f"{p}: not a readable image ({one_line(e)})") from e
    with ds:
        alpha = alpha_band(ds)
        count = ds.count - (1 if alpha else 0)
        crs = None
        if ds.crs is not None:
            epsg = ds.crs.to_epsg() if ds.crs.is_epsg_code else None
            crs = f"EPSG:{epsg}" if epsg else ds.crs.to_wkt()
        transform = tuple(ds.transform)[:6]
        if crs is None and transform == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0):
            transform = None  # GDAL's identity default: no geotransform in the file
        raster = Raster(
            path=p, width=ds.width, height=ds.height, count=count, dtype=ds.dtypes[0], crs=crs,
            transform=transform, nodata=ds.nodata, reader="gdal",
        )
        if ds.width * ds.height <= max_pixels and ds.driver == "GTiff" and not is_uri(p):  # a local file's size
            _check_tiff_blocks(ds, p)
    return raster


def _check_tiff_blocks(ds, p: Path) -> None:
    """Raise if the TIFF's block table points past the end of the file (a truncated download/copy)."""
    size = p.stat().st_size
    end = 0
    try:
        for bidx in sorted({1, ds.count}):
            bh, bw = ds.block_shapes[bidx - 1]
            nx, ny = math.ceil(ds.width / bw), math.ceil(ds.height / bh)
            for x, y in {(0, 0), (nx - 1, ny - 1), (nx - 1, 0), (0, ny - 1)}:
                off = ds.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=bidx)
                n = ds.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=bidx)
                if off and n:
                    end = max(end, int(off) + int(n))
    except Exception:  # older GDAL without the TIFF metadata domain: the read will tell
        return
    if end > size:
        raise ImageryError(f"{p}: truncated TIFF (pixel data runs to byte {end}, the file has {size})")


def _open_decode_cv2(p: Path, max_pixels: int) -> Raster:
    arr, _ = decode_cv2(p)
    return Raster(path=p, width=arr.shape[1], height=arr.shape[0], count=arr.shape[2], dtype=str(arr.dtype),
                  reader="cv2")

