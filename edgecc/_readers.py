"""Window readers: one raster, already on the pair's grid, read window by window as uint8 RGB plus a valid mask.

    reader = make_reader(raster, ReadOptions())          # a GDAL (rasterio) or OpenCV reader for an imagery.Raster
    rgb, valid = read_clipped(reader, raster.width, raster.height, 0, 0, 256, 256)   # uint8 [256,256,3], bool

GDAL readers open the file once and read only the window asked for (warped or resized onto the pre grid when
needed); OpenCV readers decode PNG/JPEG whole, after checking that the decoded pixels fit `ReadOptions.max_decode_mb`.
Non-uint8 data is stretched by per-band percentiles computed once per raster.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecc._sniff import check_png
from edgecc.errors import ImageryError, one_line, warn_imagery

if TYPE_CHECKING:
    from edgecc.imagery import Raster, ReadOptions

_STRETCH_SIDE = 1024  # long side of the decimated read that the stretch percentiles come from


def has_rasterio() -> bool:
    try:
        import rasterio  # noqa: F401
    except ImportError:
        return False
    return True


def rasterio_module():
    try:
        import rasterio
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImageryError("GeoTIFF support needs rasterio: pip install 'edgecc[geo]'") from e
    return rasterio


def alpha_band(ds) -> int | None:
    """1-based index of an alpha band, if the file declares one."""
    from rasterio.enums import ColorInterp

    try:
        for i, ci in enumerate(ds.colorinterp, start=1):
            if ci == ColorInterp.alpha and ds.count > 1:
                return i
    except Exception:
        return None
    return None


def decode_cv2(p: Path, expect: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode with OpenCV. Returns RGB-ordered data [H,W,C] (C = 1 or 3) and valid bool [H,W] from alpha (or None).

    Args:
        expect: (width, height) the header claims; a decode of another size is an error (the memory budget was
            checked against the header).
    """
    import cv2

    try:
        buf = np.fromfile(p, dtype=np.uint8)
        check_png(p, buf)
        arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error) as e:
        raise ImageryError(f"{p}: not a readable image ({one_line(e)})") from e
    del buf
    if arr is None or arr.size == 0:
        raise ImageryError(f"{p}: not a readable image (corrupt or truncated {p.suffix.lstrip('.').upper()}?)")
    if expect is not None and (arr.shape[1], arr.shape[0]) != tuple(expect):
        raise ImageryError(f"{p}: not a readable image (decoded {arr.shape[1]} x {arr.shape[0]} pixels, the header "
                           f"says {expect[0]} x {expect[1]})")
    valid = None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.shape[2] == 4:
        valid = arr[:, :, 3] > 0
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    elif arr.shape[2] == 3:
        cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)  # in place: no second copy of a large image
    else:  # 2 channels (grey + alpha, a TIFF without rasterio): grey, alpha as the mask
        valid = arr[:, :, 1] > 0
        arr = np.ascontiguousarray(arr[:, :, :1])
    return arr, valid


def _select_bands(path: Path, count: int, opts: ReadOptions) -> tuple[int, int, int]:
    """1-based bands to use as R, G, B (repeated for grey) for a file with `count` bands."""
    if opts.bands is not None:
        bad = [b for b in opts.bands if b > count]
        if bad:
            raise ImageryError(f"{path}: band {bad[0]} requested but the file has {count} band(s)")
        return (opts.bands * 3)[:3] if len(opts.bands) == 1 else opts.bands
    if count == 1:
        warn_imagery(f"{path}: single band; replicated to RGB")
        return (1, 1, 1)
    if count == 2:
        warn_imagery(f"{path}: 2 bands; using band 1 as grey (choose with --bands)")
        return (1, 1, 1)
    if count > 3:
        warn_imagery(f"{path}: {count} bands; using bands 1, 2, 3 as RGB (choose with --bands)")
    return (1, 2, 3)


def _percentiles(data: np.ndarray, valid: np.ndarray, pct: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band stretch limits from decimated data [C,h,w] and valid bool [h,w] -> lo [C], hi [C] float64 (finite,
    hi > lo, whatever extremes the data holds)."""
    lo = np.zeros(data.shape[0], np.float64)
    hi = np.full(data.shape[0], 255.0, np.float64)
    for i, band in enumerate(data):
        v = band[valid & np.isfinite(band)]
        if v.size:
            lo[i], hi[i] = np.percentile(v.astype(np.float64), pct)
        if not hi[i] - lo[i] > 0 or not np.isfinite(hi[i] - lo[i]):  # flat band, or a range beyond float64
            lo[i] = lo[i] if np.isfinite(lo[i]) else 0.0
            hi[i] = lo[i] + max(1.0, abs(lo[i]) * 1e-6)
    return lo, hi


def _to_uint8(data: np.ndarray, stretch) -> np.ndarray:
    """[C,h,w] any dtype -> uint8 [h,w,C], by the raster's fixed stretch (None: already uint8)."""
    if stretch is None:
        return np.ascontiguousarray(np.moveaxis(data, 0, -1))
    lo, hi = stretch
    with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN and values far outside [lo, hi] end at 0/255
        x = data.astype(np.float64)  # one tile: [C,h,w] float64 is small, and holds any sample exactly enough
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
        rasterio = rasterio_module()
        from rasterio.errors import NotGeoreferencedWarning

        self.path = raster.path
        self._env = lambda: rasterio.Env(GDAL_CACHEMAX=int(opts.cache_mb) * 2**20)  # bytes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            try:
                self._src = rasterio.open(raster.path)
            except Exception as e:
                raise ImageryError(f"{raster.path}: not a readable image ({one_line(e)})") from e
        self._ds = self._src
        try:
            paletted = self._src.colorinterp[0] == rasterio.enums.ColorInterp.palette
            if paletted:  # a grey ramp (entry i is grey level i) reads as it is; a colour table does not
                paletted = any(c[:3] != (i, i, i) for i, c in self._src.colormap(1).items())
        except Exception as e:  # noqa: BLE001 - a corrupt header: GDAL raises its own errors on the query
            self.close()
            raise ImageryError(f"{raster.path}: not a readable image ({one_line(e)})") from e
        if paletted:
            self.close()  # its values are colour-table indices, not brightness
            raise ImageryError(f"{raster.path}: a paletted image (colour table); expand it to RGB first "
                               "(gdal_translate -expand rgb)")
        self.bands = _select_bands(raster.path, raster.count, opts)
        self._uniq = sorted(set(self.bands))  # read each band once; [C] indices into the file
        self._pos = [self._uniq.index(b) for b in self.bands]  # [3] positions in the read stack
        bh, bw = self._src.block_shapes[0]
        block = bh * bw * self._src.count * np.dtype(self._src.dtypes[0]).itemsize  # worst case: pixel-interleaved
        if block > opts.max_decode_mb * 2**20:
            self.close()
            raise ImageryError(
                f"{raster.path}: blocks of {bw} x {bh} pixels ({block / 2**20:.0f} MB each) are too large to read by "
                f"window (limit {opts.max_decode_mb} MB); rewrite it tiled (gdal_translate -co TILED=YES)"
            )
        self._nodata = self._src.nodata
        self._alpha = alpha_band(self._src)
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
                f"{self.path}: not a readable image{where} ({one_line(e)}; corrupt or truncated file?)"
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
        arr, valid = decode_cv2(raster.path, (raster.width, raster.height))  # [H,W,C], bool [H,W] or None
        self.bands = _select_bands(raster.path, arr.shape[2], opts)
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


def make_reader(raster: Raster, opts: ReadOptions, warp_to: Raster | None = None, scale_to=None) -> _Reader:
    """A window reader for `raster` (warped onto `warp_to`'s grid, or resized to `scale_to` (w, h), when given)."""
    if raster.reader == "cv2":
        need = raster.width * raster.height * 4 * np.dtype(raster.dtype).itemsize  # worst case: 4 channels decoded
        if need > opts.max_decode_mb * 2**20:
            raise ImageryError(
                f"{raster.path}: {raster.width} x {raster.height} pixels take up to {need / 2**20:.0f} MB decoded, "
                f"more than the {opts.max_decode_mb} MB limit for PNG/JPEG, which are decoded whole (convert it to a "
                "tiled GeoTIFF, read window by window, or raise the limit: --max-decode-mb)"
            )
        return _ArrayReader(raster, opts, scale_to)
    return _GdalReader(raster, opts, warp_to, scale_to)


def read_clipped(reader: _Reader, width: int, height: int, col: int, row: int, w: int, h: int):
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
