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
  OpenCV decodes those whole, as uint8/uint16).
"""

from __future__ import annotations

import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecc.errors import ImageryError, ImageryWarning

__all__ = ["ReadOptions", "Raster", "Pair", "open_raster", "read_image", "read_pair"]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_SUFFIXES = {".tif", ".tiff"}
_CV2_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
_STRETCH_SIDE = 1024  # long side of the decimated read that the stretch percentiles come from


@dataclass(frozen=True)
class ReadOptions:
    """How to turn a file into uint8 RGB.

    Attributes:
        bands: 1-based band indices to use as R, G, B, e.g. (3, 2, 1); one index is replicated to grey RGB.
        resize: for a non-georeferenced pair of different sizes, resize post to pre's size instead of failing.
        stretch: low/high percentiles mapped to 0/255 for data that is not uint8.
        max_pixels: refuse files whose header claims more than width * height pixels (corrupt or hostile headers).
        cache_mb: GDAL block cache while reading (GDAL_CACHEMAX; GDAL's default is 5% of RAM, which for row-major
            tile reads only inflates RSS: two rows of 512-px blocks of a 10k-wide 3-band scene are 30 MB).
    """

    bands: tuple[int, ...] | None = None
    resize: bool = False
    stretch: tuple[float, float] = (2.0, 98.0)
    max_pixels: int = 2**31
    cache_mb: int = 128

    def __post_init__(self):
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))
            if len(self.bands) not in (1, 3) or min(self.bands) < 1:
                raise ValueError(f"bands must be 1 or 3 one-based indices, got {self.bands}")
        if self.cache_mb < 1 or self.max_pixels < 1:
            raise ValueError(f"cache_mb and max_pixels must be positive, got {self.cache_mb}, {self.max_pixels}")
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
        xs, ys = zip(*_pixel_corners(self.transform, 0, 0, self.width, self.height), strict=True)
        return min(xs), min(ys), max(xs), max(ys)


def open_raster(path: str | os.PathLike, *, max_pixels: int = 2**31) -> Raster:
    """Read the metadata of an image file without reading its pixels.

    Raises:
        ImageryError: missing, a directory, empty, unreadable, not an image, corrupt, truncated, or claiming more
            than `max_pixels` pixels.
    """
    p = Path(path)
    head = _check_file(p)
    if head.startswith(_PNG_MAGIC) or head.startswith(_JPEG_MAGIC):
        raster = _open_header_cv2(p, head)
    elif p.suffix.lower() in _TIFF_SUFFIXES and not head.startswith(_TIFF_MAGIC):
        raise ImageryError(f"{p}: not a TIFF file ({_describe_bytes(head)})")
    elif p.suffix.lower() in _CV2_SUFFIXES - {".bmp", ".webp"}:
        raise ImageryError(f"{p}: not a {p.suffix.lstrip('.').upper()} image ({_describe_bytes(head)})")
    elif _has_rasterio():
        raster = _open_gdal(p, max_pixels)
    else:
        raster = _open_decode_cv2(p, max_pixels)  # no rasterio: OpenCV reads TIFF/BMP/WebP whole, no georef
    if raster.width <= 0 or raster.height <= 0 or raster.count <= 0:
        raise ImageryError(f"{p}: image has no pixels ({raster.width} x {raster.height} x {raster.count})")
    if raster.width * raster.height > max_pixels:
        raise ImageryError(
            f"{p}: header claims {raster.width} x {raster.height} pixels, more than the limit of {max_pixels} "
            "(corrupt header? if the image is real, raise the limit: --max-pixels, API: ReadOptions.max_pixels)"
        )
    return raster


def read_image(path: str | os.PathLike, opts: ReadOptions = ReadOptions(), window=None) -> np.ndarray:
    """Read one image (or a window of it) as uint8 RGB.

    Args:
        window: (col_off, row_off, width, height) in pixels; None reads the whole image.

    Returns:
        uint8 [H,W,3] RGB; invalid pixels (nodata, alpha 0, NaN) are 0.
    """
    raster = open_raster(path, max_pixels=opts.max_pixels)
    reader = _make_reader(raster, opts)
    try:
        col, row, w, h = window if window is not None else (0, 0, raster.width, raster.height)
        rgb, _ = _read_clipped(reader, raster.width, raster.height, int(col), int(row), int(w), int(h))
        return rgb
    finally:
        reader.close()


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
        pre, valid_pre = _read_clipped(self._pre_reader, *args)
        post, valid_post = _read_clipped(self._post_reader, *args)
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
        same = _same_grid(pre, post)
        if not same:
            _check_overlap(pre, post)
            resampled = True
        pre_reader = _make_reader(pre, opts)
        try:
            post_reader = _make_reader(post, opts, warp_to=None if same else pre)
        except BaseException:
            pre_reader.close()
            raise
    else:
        if pre.georeferenced != post.georeferenced:
            geo, plain = (pre, post) if pre.georeferenced else (post, pre)
            _warn(f"{plain.path}: not georeferenced while {geo.path} is; pairing the two by pixel position")
        scale_to = None
        if (pre.width, pre.height) != (post.width, post.height):
            if not opts.resize:
                raise ImageryError(
                    f"{post.path}: {post.width} x {post.height} pixels but {pre.path} is {pre.width} x {pre.height} "
                    "and the pair is not georeferenced; use --resize (API: ReadOptions(resize=True)) to resize post "
                    "to pre"
                )
            _warn(f"{post.path}: resized from {post.width} x {post.height} to {pre.width} x {pre.height} to match pre")
            scale_to = (pre.width, pre.height)
            resampled = True
        pre_reader = _make_reader(pre, opts)
        try:
            post_reader = _make_reader(post, opts, scale_to=scale_to)
        except BaseException:
            pre_reader.close()
            raise
    return Pair(
        pre=pre, post=post, width=pre.width, height=pre.height, crs=pre.crs, transform=pre.transform,
        georeferenced=georeferenced, resampled=resampled, _pre_reader=pre_reader, _post_reader=post_reader,
    )


# ---------------------------------------------------------------------------------------------- file checks


def _check_file(p: Path) -> bytes:
    """Return the first 16 bytes of `p`, or raise a one-line ImageryError saying why the file is unusable."""
    if not p.exists():
        raise ImageryError(f"{p}: no such file")
    if p.is_dir():
        raise ImageryError(f"{p}: is a directory, not an image file")
    if not p.is_file():
        raise ImageryError(f"{p}: not a regular file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise ImageryError(f"{p}: cannot be read ({e.strerror or e})") from e
    if size == 0:
        raise ImageryError(f"{p}: empty file (0 bytes)")
    return head


def _describe_bytes(head: bytes) -> str:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return f"starts with bytes {head[:8].hex(' ')}"
    if text.isprintable() or all(c.isprintable() or c.isspace() for c in text):
        return f"looks like text: {text.strip()[:16]!r}"
    return f"starts with bytes {head[:8].hex(' ')}"


def _has_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def _rasterio():
    try:
        import rasterio
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImageryError("GeoTIFF support needs rasterio: pip install 'edgecc[geo]'") from e
    return rasterio


def _gdal_message(e: BaseException) -> str:
    """First line of the most specific message in the exception chain (rasterio wraps GDAL's own error)."""
    while (e.__cause__ or e.__context__) is not None and "previous exception" in str(e):
        e = e.__cause__ or e.__context__
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:200]


def _open_gdal(p: Path, max_pixels: int) -> Raster:
    rasterio = _rasterio()
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            ds = rasterio.open(p)
        except Exception as e:  # RasterioIOError, CPLE_* from a corrupt header
            raise ImageryError(f"{p}: not a readable image ({_gdal_message(e)})") from e
    with ds:
        alpha = _alpha_band(ds)
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
        if ds.width * ds.height <= max_pixels and ds.driver == "GTiff":
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


def _alpha_band(ds) -> int | None:
    """1-based index of an alpha band, if the file declares one."""
    from rasterio.enums import ColorInterp

    try:
        for i, ci in enumerate(ds.colorinterp, start=1):
            if ci == ColorInterp.alpha and ds.count > 1:
                return i
    except Exception:
        return None
    return None


def _open_header_cv2(p: Path, head: bytes) -> Raster:
    """PNG/JPEG size from the header bytes alone (no decode)."""
    if head.startswith(_PNG_MAGIC):
        with open(p, "rb") as f:
            ihdr = f.read(33)
        if len(ihdr) < 29 or ihdr[12:16] != b"IHDR":
            raise ImageryError(f"{p}: corrupt PNG (no IHDR header)")
        w, h, depth, color = struct.unpack(">IIBB", ihdr[16:26])
        count = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}.get(color, 3)  # alpha channels are a mask, not a band
        return Raster(path=p, width=w, height=h, count=count, dtype="uint16" if depth == 16 else "uint8",
                      reader="cv2")
    w, h, count = _jpeg_size(p)
    return Raster(path=p, width=w, height=h, count=count, dtype="uint8", reader="cv2")


def _jpeg_size(p: Path) -> tuple[int, int, int]:
    sof = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
    with open(p, "rb") as f:
        f.seek(2)
        while True:
            marker = f.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                break
            if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
                continue
            seg = f.read(2)
            if len(seg) < 2:
                break
            n = struct.unpack(">H", seg)[0]
            if marker[1] in sof:
                body = f.read(6)
                if len(body) < 6:
                    break
                _, h, w, comps = struct.unpack(">BHHB", body)
                return w, h, (1 if comps == 1 else 3)
            f.seek(n - 2, os.SEEK_CUR)
    raise ImageryError(f"{p}: corrupt JPEG (no frame header found)")


def _open_decode_cv2(p: Path, max_pixels: int) -> Raster:
    arr, _ = _decode_cv2(p)
    return Raster(path=p, width=arr.shape[1], height=arr.shape[0], count=arr.shape[2], dtype=str(arr.dtype),
                  reader="cv2")


def _decode_cv2(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode with OpenCV. Returns RGB-ordered data [H,W,C] (C = 1 or 3) and valid bool [H,W] from alpha (or None)."""
    import cv2

    try:
        buf = np.fromfile(p, dtype=np.uint8)
        check_png(p, buf)
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error) as e:
        raise ImageryError(f"{p}: not a readable image ({_gdal_message(e)})") from e
    if arr is None or arr.size == 0:
        raise ImageryError(f"{p}: not a readable image (corrupt or truncated {p.suffix.lstrip('.').upper()}?)")
    valid = None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.shape[2] == 4:
        valid = arr[:, :, 3] > 0
        arr = np.ascontiguousarray(arr[:, :, 2::-1])  # BGRA -> RGB
    elif arr.shape[2] == 3:
        arr = np.ascontiguousarray(arr[:, :, ::-1])  # BGR -> RGB
    return arr, valid


def check_png(p: Path, data: np.ndarray) -> None:
    """If uint8 `data` is a PNG, walk its chunks: ImageryError on truncation or a CRC error (libpng would print its
    own line on stderr for these, beside ours)."""
    if data[:8].tobytes() != _PNG_MAGIC:
        return
    mv, pos = memoryview(data), 8
    while True:
        if pos + 12 > len(mv):
            raise ImageryError(f"{p}: not a readable image (truncated PNG: it ends at byte {len(mv)}, no IEND chunk)")
        n, kind = struct.unpack(">I4s", mv[pos : pos + 8])
        kind, end = kind.decode("ascii", "replace"), pos + 12 + n
        if end > len(mv):
            raise ImageryError(f"{p}: not a readable image (truncated PNG: the {kind} chunk at byte {pos} runs to "
                               f"byte {end}, the file has {len(mv)})")
        if zlib.crc32(mv[pos + 4 : end - 4]) != struct.unpack(">I", mv[end - 4 : end])[0]:
            raise ImageryError(f"{p}: not a readable image (corrupt PNG: CRC error in the {kind} chunk at byte {pos})")
        if kind == "IEND":
            return
        pos = end


# ---------------------------------------------------------------------------------------------- readers


def _warn(msg: str) -> None:
    warnings.warn(msg, ImageryWarning, stacklevel=3)


def _select_bands(raster: Raster, opts: ReadOptions) -> tuple[int, int, int]:
    """1-based bands to use as R, G, B (repeated for grey)."""
    if opts.bands is not None:
        bad = [b for b in opts.bands if b > raster.count]
        if bad:
            raise ImageryError(f"{raster.path}: band {bad[0]} requested but the file has {raster.count} band(s)")
        return (opts.bands * 3)[:3] if len(opts.bands) == 1 else opts.bands
    if raster.count == 1:
        _warn(f"{raster.path}: single band; replicated to RGB")
        return (1, 1, 1)
    if raster.count == 2:
        _warn(f"{raster.path}: 2 bands; using band 1 as grey (choose with --bands, API: ReadOptions.bands)")
        return (1, 1, 1)
    if raster.count > 3:
        _warn(f"{raster.path}: {raster.count} bands; using bands 1, 2, 3 as RGB (choose with --bands, API: "
              "ReadOptions.bands)")
    return (1, 2, 3)


def _percentiles(data: np.ndarray, valid: np.ndarray, pct: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band stretch limits from decimated data [C,h,w] and valid bool [h,w] -> lo [C], hi [C] float32."""
    lo = np.zeros(data.shape[0], np.float32)
    hi = np.full(data.shape[0], 255.0, np.float32)
    for i, band in enumerate(data):
        v = band[valid & np.isfinite(band)]
        if v.size:
            lo[i], hi[i] = np.percentile(v, pct)
        if hi[i] <= lo[i]:
            hi[i] = lo[i] + 1.0
    return lo, hi


def _to_uint8(data: np.ndarray, stretch) -> np.ndarray:
    """[C,h,w] any dtype -> uint8 [h,w,C], by the raster's fixed stretch (None: already uint8)."""
    if stretch is None:
        return np.ascontiguousarray(np.moveaxis(data, 0, -1))
    lo, hi = stretch
    x = data.astype(np.float32)  # one tile: [C,h,w] float32 is small
    x -= lo[:, None, None]
    x *= (255.0 / (hi - lo))[:, None, None]
    np.nan_to_num(x, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(x, 0, 255, out=x)
    return np.ascontiguousarray(np.moveaxis(np.rint(x).astype(np.uint8), 0, -1))


class _Reader:
    """Reads windows of one raster, already on the pair's grid: read(col,row,w,h) -> uint8 [h,w,3], bool [h,w]."""

    path: Path

    def read(self, col: int, row: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _GdalReader(_Reader):
    def __init__(self, raster: Raster, opts: ReadOptions, warp_to: Raster | None, scale_to: tuple[int, int] | None):
        rasterio = _rasterio()
        from rasterio.errors import NotGeoreferencedWarning

        self.path = raster.path
        self._env = lambda: rasterio.Env(GDAL_CACHEMAX=int(opts.cache_mb) * 2**20)  # bytes
        self.bands = _select_bands(raster, opts)
        self._uniq = sorted(set(self.bands))  # read each band once; [C] indices into the file
        self._pos = [self._uniq.index(b) for b in self.bands]  # [3] positions in the read stack
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                self._src = rasterio.open(raster.path)
            except Exception as e:
                raise ImageryError(f"{raster.path}: not a readable image ({_gdal_message(e)})") from e
        self._ds = self._src
        self._nodata = self._src.nodata
        self._alpha = _alpha_band(self._src)
        self._internal_mask = self._alpha is None and any(
            rasterio.enums.MaskFlags.per_dataset in flags and rasterio.enums.MaskFlags.nodata not in flags
            for flags in self._src.mask_flag_enums
        )
        self._scale = None
        if scale_to is not None:  # non-georeferenced resize: window in post pixels = pre window * (sx, sy)
            self._scale = (raster.width / scale_to[0], raster.height / scale_to[1])
        try:
            self.stretch = self._compute_stretch(raster, opts)
            if warp_to is not None:
                self._open_warp(warp_to)
        except BaseException:
            self.close()
            raise

    def _open_warp(self, grid: Raster) -> None:
        from affine import Affine
        from rasterio.crs import CRS
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        kwargs = {}
        if self._nodata is None and self._alpha is None:
            kwargs["add_alpha"] = True  # outside post's footprint -> alpha 0 -> invalid
            self._alpha = self._src.count + 1
        self._ds = WarpedVRT(
            self._src, crs=CRS.from_user_input(grid.crs), transform=Affine(*grid.transform), width=grid.width,
            height=grid.height, resampling=Resampling.bilinear, **kwargs,
        )
        self._internal_mask = False

    def _compute_stretch(self, raster: Raster, opts: ReadOptions):
        """Per-band percentiles from one decimated read (long side <= 1024) of the source; None for uint8."""
        if raster.dtype == "uint8":
            return None
        from rasterio.enums import Resampling

        f = max(1.0, max(raster.width, raster.height) / _STRETCH_SIDE)
        shape = (max(1, round(raster.height / f)), max(1, round(raster.width / f)))
        data, valid = self._read_raw(self._src, None, shape, Resampling.nearest)
        return _percentiles(data, valid, opts.stretch)

    def _read_raw(self, ds, window, out_shape, resampling):
        """-> data [C,h,w] (file dtype) for the selected bands, valid bool [h,w]."""
        indexes = list(self._uniq) + ([self._alpha] if self._alpha else [])
        shape = None if out_shape is None else (len(indexes), *out_shape)
        try:
            with self._env():
                stack = ds.read(indexes, window=window, out_shape=shape, resampling=resampling)
                mask = None
                if self._internal_mask:
                    mask = ds.dataset_mask(window=window, out_shape=out_shape, resampling=resampling) > 0
        except Exception as e:
            where = "" if window is None else f" at window {_fmt_window(window)}"
            raise ImageryError(
                f"{self.path}: not a readable image{where} ({_gdal_message(e)}; corrupt or truncated file?)"
            ) from e
        data = stack[: len(self._uniq)]
        valid = np.ones(data.shape[1:], bool) if mask is None else mask
        if self._alpha:
            valid &= stack[-1] > 0
        if self._nodata is not None and not (isinstance(self._nodata, float) and math.isnan(self._nodata)):
            valid &= ~np.all(data == self._nodata, axis=0)
        if data.dtype.kind == "f":
            valid &= np.all(np.isfinite(data), axis=0)
        return data, valid

    def read(self, col, row, w, h):
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        if self._scale is None:
            data, valid = self._read_raw(self._ds, Window(col, row, w, h), None, Resampling.nearest)
        else:
            sx, sy = self._scale
            win = Window(col * sx, row * sy, w * sx, h * sy)
            data, valid = self._read_raw(self._ds, win, (h, w), Resampling.bilinear)
        rgb = _to_uint8(data, self.stretch)[:, :, self._pos]  # [h,w,3]
        rgb[~valid] = 0
        return rgb, valid

    def close(self):
        for ds in {id(self._ds): self._ds, id(self._src): self._src}.values() if hasattr(self, "_ds") else ():
            try:
                ds.close()
            except Exception:
                pass


class _ArrayReader(_Reader):
    """PNG/JPEG (or anything without rasterio), decoded whole by OpenCV: [H,W,C] uint8/uint16 in memory."""

    def __init__(self, raster: Raster, opts: ReadOptions, scale_to: tuple[int, int] | None):
        import cv2

        self.path = raster.path
        arr, valid = _decode_cv2(raster.path)  # [H,W,C], bool [H,W] or None
        raster = Raster(path=raster.path, width=arr.shape[1], height=arr.shape[0], count=arr.shape[2],
                        dtype=str(arr.dtype), reader="cv2")
        self.bands = _select_bands(raster, opts)
        if scale_to is not None and (arr.shape[1], arr.shape[0]) != scale_to:
            arr = cv2.resize(arr, scale_to, interpolation=cv2.INTER_AREA)
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            if valid is not None:
                valid = cv2.resize(valid.astype(np.uint8), scale_to, interpolation=cv2.INTER_NEAREST) > 0
        self._arr, self._valid = arr, valid
        self.stretch = None
        if arr.dtype != np.uint8:
            f = max(1, math.ceil(max(arr.shape[:2]) / _STRETCH_SIDE))
            dec = np.moveaxis(arr[::f, ::f], -1, 0)  # [C,h,w] view
            dv = np.ones(dec.shape[1:], bool) if valid is None else valid[::f, ::f]
            self.stretch = _percentiles(dec, dv, opts.stretch)

    def read(self, col, row, w, h):
        data = np.moveaxis(self._arr[row : row + h, col : col + w], -1, 0)  # [C,h,w]
        valid = np.ones((h, w), bool) if self._valid is None else self._valid[row : row + h, col : col + w].copy()
        if data.dtype.kind == "f":
            valid &= np.all(np.isfinite(data), axis=0)
        rgb = _to_uint8(data, self.stretch)[:, :, [b - 1 for b in self.bands]]  # [h,w,3]
        rgb[~valid] = 0
        return rgb, valid


def _make_reader(raster: Raster, opts: ReadOptions, warp_to: Raster | None = None, scale_to=None) -> _Reader:
    if raster.reader == "cv2":
        return _ArrayReader(raster, opts, scale_to)
    return _GdalReader(raster, opts, warp_to, scale_to)


def _read_clipped(reader: _Reader, width: int, height: int, col: int, row: int, w: int, h: int):
    """Read window (col,row,w,h) of a width x height grid; parts outside are zeros / invalid."""
    if w <= 0 or h <= 0:
        raise ValueError(f"window size must be positive, got {w} x {h}")
    c0, r0, c1, r1 = max(col, 0), max(row, 0), min(col + w, width), min(row + h, height)
    if (c0, r0, c1, r1) == (col, row, col + w, row + h):
        return reader.read(col, row, w, h)
    rgb = np.zeros((h, w, 3), np.uint8)
    valid = np.zeros((h, w), bool)
    if c1 > c0 and r1 > r0:
        part, pv = reader.read(c0, r0, c1 - c0, r1 - r0)
        rgb[r0 - row : r1 - row, c0 - col : c1 - col] = part
        valid[r0 - row : r1 - row, c0 - col : c1 - col] = pv
    return rgb, valid


def _fmt_window(win) -> str:
    return f"col {win.col_off:g}, row {win.row_off:g}, {win.width:g} x {win.height:g}"


# ---------------------------------------------------------------------------------------------- geometry


def _pixel_corners(transform, col, row, w, h) -> list[tuple[float, float]]:
    """Corners of pixel window (col,row,w,h) in CRS coordinates, clockwise from top-left, as a closed ring's 4."""
    a, b, c, d, e, f = transform
    pts = [(col, row), (col + w, row), (col + w, row + h), (col, row + h)]
    return [(a * x + b * y + c, d * x + e * y + f) for x, y in pts]


def _same_grid(pre: Raster, post: Raster) -> bool:
    """Same CRS, size and geotransform (offsets within 1% of a pixel): read post window by window, no warp."""
    if (pre.width, pre.height) != (post.width, post.height) or not _same_crs(pre.crs, post.crs):
        return False
    a = np.asarray(pre.transform, float)
    b = np.asarray(post.transform, float)
    px = max(abs(a[0]), abs(a[1]), abs(a[3]), abs(a[4]))
    lin = np.abs(a[[0, 1, 3, 4]] - b[[0, 1, 3, 4]]).max() <= 1e-9 * max(px, 1e-12) * max(pre.width, pre.height)
    off = np.abs(a[[2, 5]] - b[[2, 5]]).max() <= 0.01 * px
    return bool(lin and off)


def _same_crs(a: str | None, b: str | None) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    from rasterio.crs import CRS

    return CRS.from_user_input(a) == CRS.from_user_input(b)


def _check_overlap(pre: Raster, post: Raster) -> None:
    """ImageryError if post's footprint misses pre's; ImageryWarning if it covers little of it."""
    from rasterio.warp import transform_bounds

    try:
        pl, pb, pr, pt = transform_bounds(post.crs, pre.crs, *post.bounds, densify_pts=21)
    except Exception as e:
        raise ImageryError(
            f"{post.path}: cannot transform its footprint from {post.crs} to {pre.crs} of {pre.path} "
            f"({_gdal_message(e)})"
        ) from e
    left, b, r, t = pre.bounds
    iw, ih = min(r, pr) - max(left, pl), min(t, pt) - max(b, pb)
    if not (np.isfinite([iw, ih]).all()) or iw <= 0 or ih <= 0:
        raise ImageryError(
            f"{pre.path} and {post.path}: footprints do not overlap (pre {(left, b, r, t)} vs post "
            f"{(pl, pb, pr, pt)} in {pre.crs})"
        )
    frac = iw * ih / max((r - left) * (t - b), 1e-30)
    if frac < 0.5:
        _warn(f"{post.path}: covers only about {frac:.0%} of {pre.path}; the rest is marked invalid")
