"""edgecc.geo: the one pixel-to-map affine, footprints and grid comparison."""

from __future__ import annotations

import numpy as np
import pytest

from edgecc.geo import bounds, pixel_ring, same_grid, to_map, to_map_points, to_pixel_points
from edgecc.imagery import Raster, open_raster

UTM = (0.5, 0.0, 500000.0, 0.0, -0.5, 4_000_000.0)
ROTATED = (0.6, 0.2, 1000.0, 0.1, -0.7, 2000.0)


def test_to_map_is_the_gdal_affine():
    assert to_map(UTM, 10, 20) == (500005.0, 3_999_990.0)
    assert to_map(ROTATED, 3, 4) == (0.6 * 3 + 0.2 * 4 + 1000.0, 0.1 * 3 - 0.7 * 4 + 2000.0)


def _signed_area(ring):
    return sum(ax * by - bx * ay for (ax, ay), (bx, by) in zip(ring, ring[1:] + ring[:1])) / 2


def test_pixel_ring_closed_counter_clockwise_and_without_transform():
    ring = pixel_ring(UTM, (0, 0, 10, 20))  # RFC 7946: an outer ring follows the right-hand rule
    assert ring == [(500000.0, 4e6), (500000.0, 3_999_990.0), (500005.0, 3_999_990.0), (500005.0, 4e6),
                    (500000.0, 4e6)]
    assert _signed_area(ring[:-1]) == 50.0  # counter-clockwise, 5 m x 10 m
    south_up = (0.5, 0.0, 500000.0, 0.0, 0.5, 4_000_000.0)  # rows run north: the corners are listed the other way
    assert _signed_area(pixel_ring(south_up, (0, 0, 10, 20), closed=False)) == 50.0
    assert pixel_ring(None, (1, 2, 3, 4), closed=False) == [(1.0, 2.0), (3.0, 2.0), (3.0, 4.0), (1.0, 4.0)]


def test_bounds_of_a_rotated_grid_hold_every_corner():
    left, bottom, right, top = bounds(ROTATED, 100, 50)
    for x, y in pixel_ring(ROTATED, (0, 0, 100, 50), closed=False):
        assert left <= x <= right and bottom <= y <= top


def test_stream_events_use_the_same_affine():
    from edgecc.stream.events import bbox_polygon

    assert bbox_polygon((0, 0, 10, 20), UTM) == [list(p) for p in pixel_ring(UTM, (0, 0, 10, 20))]


def test_same_grid_tolerates_a_hundredth_of_a_pixel(fixtures_dir):
    pytest.importorskip("rasterio")
    pre = open_raster(fixtures_dir / "geo_pre.tif")
    a, b, c, d, e, f = pre.transform
    near = Raster(pre.path, pre.width, pre.height, pre.count, pre.dtype, pre.crs, (a, b, c + 0.005 * a, d, e, f))
    far = Raster(pre.path, pre.width, pre.height, pre.count, pre.dtype, pre.crs, (a, b, c + 0.5 * a, d, e, f))
    assert same_grid(pre, near) and not same_grid(pre, far)
    assert pre.bounds == bounds(pre.transform, pre.width, pre.height)


def test_points_round_trip_through_the_inverse():
    pts = np.random.default_rng(0).uniform(-50, 500, (20, 2))
    assert np.allclose(to_pixel_points(ROTATED, to_map_points(ROTATED, pts)), pts)
    assert to_map_points(UTM, pts)[3].tolist() == list(to_map(UTM, *pts[3]))
