"""Georeferencing: the pixel-to-map affine, footprints, and whether two rasters share a grid.

    from edgecc.geo import pixel_ring, to_map
    to_map((0.5, 0, 500000, 0, -0.5, 4e6), 10, 20)               # -> (500005.0, 3999990.0)
    pixel_ring((0.5, 0, 500000, 0, -0.5, 4e6), (0, 0, 10, 20))   # closed ring of 5 map points, counter-clockwise

Transforms are GDAL-order affines (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f, with (col, row)
pixel-corner coordinates. This is the only place the affine is written out; everything else calls it.
"""

from __future__ import annotations

import numpy as np

from edgecc.errors import ImageryError, one_line, warn_imagery

__all__ = ["to_map", "to_map_points", "to_pixel_points", "pixel_ring", "counter_clockwise", "bounds", "same_grid",
           "same_crs", "check_overlap"]

Affine6 = tuple[float, float, float, float, float, float]


def to_map_points(transform: Affine6, pts) -> np.ndarray:
    """float [N,2] pixel (col, row) -> float64 [N,2] map (x, y) through a GDAL-order affine."""
    a, b, c, d, e, f = transform
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    return np.stack([a * p[:, 0] + b * p[:, 1] + c, d * p[:, 0] + e * p[:, 1] + f], axis=1)


def to_pixel_points(transform: Affine6, pts) -> np.ndarray:
    """float [N,2] map (x, y) -> float64 [N,2] pixel (col, row): the inverse of `to_map_points`."""
    a, b, c, d, e, f = transform
    inv = np.linalg.inv(np.array([[a, b], [d, e]], np.float64))
    return (np.asarray(pts, np.float64).reshape(-1, 2) - [c, f]) @ inv.T


def to_map(transform: Affine6, col: float, row: float) -> tuple[float, float]:
    """Pixel-corner coordinates (col, row) -> map coordinates (x, y) through a GDAL-order affine."""
    x, y = to_map_points(transform, (col, row))[0]
    return float(x), float(y)


def pixel_ring(transform: Affine6 | None, box: tuple[float, float, float, float], closed: bool = True
               ) -> list[tuple[float, float]]:
    """Pixel box (x0, y0, x1, y1) -> its corners from top-left, counter-clockwise in the output coordinates (the
    right-hand rule RFC 7946 asks of a polygon's outer ring; and the first again when `closed`), in map coordinates;
    with no transform, in pixel coordinates (col, row)."""
    x0, y0, x1, y1 = box
    ring = [(x0, y0), (x0, y1), (x1, y1), (x1, y0)]
    ring = [to_map(transform, x, y) for x, y in ring] if transform is not None else [
        (float(x), float(y)) for x, y in ring]
    ring = counter_clockwise(ring)  # a grid whose rows run north (or a mirrored one): the other way round
    return ring + ring[:1] if closed else ring


def counter_clockwise(ring: list) -> list:
    """An open ring of (x, y) -> the same ring counter-clockwise (positive shoelace area), same first point."""
    area2 = sum(ax * by - bx * ay for (ax, ay), (bx, by) in zip(ring, ring[1:] + ring[:1]))
    return ring if area2 >= 0 else ring[:1] + ring[:0:-1]


def bounds(transform: Affine6, width: int, height: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a width x height grid in its CRS."""
    xs, ys = zip(*pixel_ring(transform, (0, 0, width, height), closed=False), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def same_grid(pre, post) -> bool:
    """Same CRS, size and geotransform (offsets within 1% of a pixel) for two `Raster`s: post can be read window by
    window, no warp."""
    if (pre.width, pre.height) != (post.width, post.height) or not same_crs(pre.crs, post.crs):
        return False
    a = np.asarray(pre.transform, float)
    b = np.asarray(post.transform, float)
    px = max(abs(a[0]), abs(a[1]), abs(a[3]), abs(a[4]))
    lin = np.abs(a[[0, 1, 3, 4]] - b[[0, 1, 3, 4]]).max() <= 1e-9 * max(px, 1e-12) * max(pre.width, pre.height)
    off = np.abs(a[[2, 5]] - b[[2, 5]]).max() <= 0.01 * px
    return bool(lin and off)


def same_crs(a: str | None, b: str | None) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    from rasterio.crs import CRS

    return CRS.from_user_input(a) == CRS.from_user_input(b)


def check_overlap(pre, post) -> None:
    """ImageryError if post's footprint misses pre's (two georeferenced `Raster`s); ImageryWarning if it covers
    little of it."""
    from rasterio.warp import transform_bounds

    try:
        pl, pb, pr, pt = transform_bounds(post.crs, pre.crs, *post.bounds, densify_pts=21)
    except Exception as e:
        raise ImageryError(
            f"{post.path}: cannot transform its footprint from {post.crs} to {pre.crs} of {pre.path} "
            f"({one_line(e)})"
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
        warn_imagery(f"{post.path}: covers only about {frac:.0%} of {pre.path}; the rest is marked invalid")
