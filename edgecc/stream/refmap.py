"""The reference map of `edgecc watch`: an image of any size (up to 20k x 20k) read by windows, an overview, LRUs.

Example:
    >>> ref = ReferenceMap.open("area.tif")             # GeoTIFF: windowed reads (rasterio), its overviews if any
    >>> ref.width, ref.height, ref.transform, ref.crs
    >>> ov, s = ref.overview()                          # uint8 RGB, long side <= 1024, and its scale (ov px / map px)
    >>> win = ref.read((x0, y0, x1, y1))                # uint8 [y1-y0, x1-x0, 3]; outside the map reads 0

Memory: a GeoTIFF is never loaded whole. Windows are read on demand through rasterio (decimated reads use the
file's overviews when it has them) and kept in an LRU of fixed-size blocks; the overview is read once by a
decimated read. A PNG/JPEG cannot be read by windows: it is decoded once (peak memory = its pixels, 1.2 GB for
20k x 20k RGB), copied to a disk-backed memory map in the temp folder, and the decoded copy is freed; from then on
pages are read as needed and the kernel keeps resident only what was touched recently. Convert a large PNG to a
tiled GeoTIFF with overviews (`gdal_translate -co TILED=YES` + `gdaladdo`) to avoid the one decode.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

import cv2
import numpy as np

from .. import geo

BLOCK = 512  # map pixels per side of one cached block
GDAL_CACHE_MB = 32


class LRU:
    """A bounded least-recently-used cache: `get(key, make)` returns the cached value or makes and stores it."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"LRU capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._d: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable, make: Callable[[], object]):
        if key in self._d:
            self._d.move_to_end(key)
            self.hits += 1
            return self._d[key]
        self.misses += 1
        value = make()
        self._d[key] = value
        if len(self._d) > self.capacity:
            self._d.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()


class ReferenceMap:
    """A reference image read by windows. Build with `open(path)` or `from_array(rgb)`. Not thread-safe.

    Attributes:
        width, height: map size in pixels.
        transform: GDAL-order affine (a, b, c, d, e, f) pixel -> map coordinates, or None.
        crs: the map's CRS ("EPSG:32615" or WKT), or None.
    """

    def __init__(self, width: int, height: int, read_block: Callable, read_decimated: Callable,
                 transform: tuple | None = None, crs: str | None = None, name: str = "reference",
                 cache_blocks: int = 64, closer: Callable | None = None):
        self.width, self.height = int(width), int(height)
        self.transform, self.crs, self.name = transform, crs, name
        self._read_block, self._read_decimated, self._closer = read_block, read_decimated, closer
        self.blocks = LRU(cache_blocks)
        self._overviews: dict[int, tuple[np.ndarray, float]] = {}

    # ------------------------------------------------------------------------------------------------ builders
    @classmethod
    def from_array(cls, rgb: np.ndarray, transform: tuple | None = None, crs: str | None = None,
                   name: str = "reference") -> ReferenceMap:
        """An in-memory map (uint8 [H,W,3] RGB; also any array-like, e.g. a np.memmap)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"{name}: reference must be uint8 [H,W,3] RGB, got {rgb.dtype} {rgb.shape}")

        def block(x0, y0, x1, y1):
            return np.ascontiguousarray(rgb[y0:y1, x0:x1])

        def decimated(w, h):
            # strided subsample first (touches few pages of a memmap), then an area resize
            step = max(1, min(rgb.shape[0] // (2 * h), rgb.shape[1] // (2 * w)))
            sub = np.ascontiguousarray(rgb[::step, ::step])
            return cv2.resize(sub, (w, h), interpolation=cv2.INTER_AREA)

        return cls(rgb.shape[1], rgb.shape[0], block, decimated, transform, crs, name)

    @classmethod
    def open(cls, path: str | Path, cache_blocks: int = 64) -> ReferenceMap:
        """A GeoTIFF (windowed, georeferenced) or PNG/JPEG (decoded once to a disk-backed map) file.

        Raises:
            edgecc.errors.ImageryError: not a readable image (one line naming the file).
        """
        from ..imagery import open_raster, read_image

        raster = open_raster(path)
        tf = raster.transform if raster.georeferenced else None
        if raster.reader == "gdal":
            return cls._open_gdal(Path(path), raster, tf, cache_blocks)
        rgb = read_image(path)  # PNG/JPEG: one decode
        mm = _to_memmap(rgb)
        del rgb
        m = cls.from_array(mm, tf, raster.crs, str(path))
        m.blocks = LRU(cache_blocks)
        return m

    @classmethod
    def _open_gdal(cls, p: Path, raster, tf, cache_blocks: int) -> ReferenceMap:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.windows import Window

        ds = rasterio.open(p)
        bands = [1, 2, 3] if ds.count >= 3 else [1, 1, 1]
        stretch: list = []  # (lo, hi) per band for non-uint8 data, from the overview

        def to_u8(a: np.ndarray) -> np.ndarray:
            a = a.transpose(1, 2, 0)
            if a.dtype == np.uint8:
                return np.ascontiguousarray(a)
            a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            if not stretch:
                lo, hi = np.percentile(a, 2, axis=(0, 1)), np.percentile(a, 98, axis=(0, 1))
                stretch.append((lo, np.maximum(hi, lo + 1e-6)))
            lo, hi = stretch[0]
            return np.clip((a - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)

        # GDAL's own block cache (default 5% of RAM) would duplicate the block LRU: keep it small
        def decimated(w, h):
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
                return to_u8(ds.read(bands, out_shape=(3, h, w), resampling=Resampling.average))

        def block(x0, y0, x1, y1):
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
                return to_u8(ds.read(bands, window=Window(x0, y0, x1 - x0, y1 - y0)))

        m = cls(ds.width, ds.height, block, decimated, tf, raster.crs, str(p), cache_blocks, ds.close)
        m.overview()  # fixes the stretch of non-uint8 data from the whole map
        return m

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    # ------------------------------------------------------------------------------------------------ reads
    def overview(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """The whole map downsampled so its long side is at most `max_side`: (uint8 RGB, scale ov px / map px)."""
        if max_side not in self._overviews:
            s = min(1.0, max_side / max(self.width, self.height))
            w, h = max(1, round(self.width * s)), max(1, round(self.height * s))
            self._overviews[max_side] = (self._read_decimated(w, h), s)
        return self._overviews[max_side]

    def read(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """Map pixels in box (x0, y0, x1, y1) at full resolution, through the block LRU; outside the map is 0."""
        x0, y0, x1, y1 = (int(v) for v in box)
        out = np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, self.width), min(y1, self.height)
        if cx1 <= cx0 or cy1 <= cy0:
            return out
        for by in range(cy0 // BLOCK, (cy1 - 1) // BLOCK + 1):
            for bx in range(cx0 // BLOCK, (cx1 - 1) // BLOCK + 1):
                bx0, by0 = bx * BLOCK, by * BLOCK
                blk = self.blocks.get((bx, by), lambda bx0=bx0, by0=by0: self._read_block(
                    bx0, by0, min(bx0 + BLOCK, self.width), min(by0 + BLOCK, self.height)))
                ix0, iy0 = max(cx0, bx0), max(cy0, by0)
                ix1, iy1 = min(cx1, bx0 + blk.shape[1]), min(cy1, by0 + blk.shape[0])
                out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = blk[iy0 - by0:iy1 - by0, ix0 - bx0:ix1 - bx0]
        return out

    def pixel_to_map(self, pts: np.ndarray) -> np.ndarray:
        """float [N,2] pixel (x, y) -> [N,2] map coordinates through the geotransform."""
        return geo.to_map_points(self.transform, pts)

    def map_to_pixel(self, pts: np.ndarray) -> np.ndarray:
        return geo.to_pixel_points(self.transform, pts)

    @functools.cached_property
    def ground(self) -> np.ndarray | None:
        """float [2,2]: a map pixel step (dx, dy) -> ground metres (east, north) at the map's centre; None when the
        map is not georeferenced. Tells square ground from square pixels: a lon/lat grid's pixel is cos(lat) as wide
        as it is tall, a Web Mercator one 1/cos(lat) too large, some GeoTIFFs' pixels are not square."""
        if self.transform is None or self.crs is None or _crs(self.crs) is None:
            return None
        a, b, _, d, e, _ = self.transform
        c = _crs(self.crs)
        if c.is_projected and (c.linear_units or "").lower() in ("metre", "meter", "m") and \
                c.to_dict().get("proj") != "merc":
            return np.array([[a, b], [d, e]], np.float64)  # map units are metres (grid north)
        cx, cy = self.width / 2, self.height / 2
        ll = to_wgs84(self.pixel_to_map(np.array([[cx, cy], [cx + 1, cy], [cx, cy + 1]], np.float64)), self.crs)
        if ll is None or not np.isfinite(ll).all():
            return None
        sin2 = math.sin(math.radians(ll[0, 1])) ** 2  # metres per degree on the WGS84 ellipsoid there
        m_lon = math.pi / 180 * _WGS84_A * math.cos(math.radians(ll[0, 1])) / math.sqrt(1 - _WGS84_E2 * sin2)
        m_lat = math.pi / 180 * _WGS84_A * (1 - _WGS84_E2) / (1 - _WGS84_E2 * sin2) ** 1.5
        j = np.array([[(ll[1, 0] - ll[0, 0]) * m_lon, (ll[2, 0] - ll[0, 0]) * m_lon],
                      [(ll[1, 1] - ll[0, 1]) * m_lat, (ll[2, 1] - ll[0, 1]) * m_lat]])
        return j if abs(np.linalg.det(j)) > 1e-12 else None


_WGS84_A, _WGS84_E2 = 6_378_137.0, 0.00669437999014  # semi-major axis (m), first eccentricity squared


def _to_memmap(rgb: np.ndarray, min_bytes: int = 64 * 2**20) -> np.ndarray:
    """Large arrays -> a read-only memory map on an unlinked temp file (freed when dropped); small ones as they are."""
    if rgb.nbytes < min_bytes:
        return rgb
    fd, name = tempfile.mkstemp(prefix="edgecc-ref-", suffix=".u8")
    try:
        with os.fdopen(fd, "wb") as f:
            rgb.tofile(f)
        mm = np.memmap(name, np.uint8, "r", shape=rgb.shape)
    finally:
        os.unlink(name)  # the mapping keeps the pages; the file vanishes with the last reference
    return mm


@functools.lru_cache(maxsize=16)
def _crs(crs: str):
    """A parsed CRS, once per string (every frame and event converts): None without rasterio."""
    try:
        from rasterio.crs import CRS
    except ImportError:
        return None
    return CRS.from_user_input(crs)


def to_wgs84(points: np.ndarray, crs: str) -> np.ndarray | None:
    """[N,2] map coordinates in `crs` -> [N,2] (lon, lat); None when no transformer is installed (rasterio)."""
    if _crs(crs) is None:
        return None
    from rasterio.warp import transform

    xs, ys = transform(_crs(crs), _crs("EPSG:4326"), points[:, 0].tolist(), points[:, 1].tolist())
    return np.stack([xs, ys], 1)


def from_wgs84(lon: float, lat: float, crs: str) -> tuple[float, float] | None:
    if _crs(crs) is None:
        return None
    from rasterio.warp import transform

    xs, ys = transform(_crs("EPSG:4326"), _crs(crs), [lon], [lat])
    return float(xs[0]), float(ys[0])
