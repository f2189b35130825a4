"""Properties of tiling and georeferenced outputs, over generated scenes (hypothesis, derandomized: seeded and
repeatable).

- tile_grid covers every pixel, inside the image, with the promised stride;
- the stitched heatmap counts every valid pixel exactly once: tiles that all report one value c give exactly c on
  every heatmap pixel holding a valid scene pixel (not 2c where tiles overlap, not nodata in a gap), and nodata
  where the scene has none;
- GeoJSON polygons are the changed windows in the declared CRS: the "crs" member parses (pyproj) to the pair's
  CRS, and every ring maps back (pyproj, then the inverse affine) onto its window's corners, also from EPSG:4326.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgecc.imagery import read_pair  # noqa: E402
from edgecc.tiling import HEATMAP_NODATA, TileOptions, caption_scene, tile_grid  # noqa: E402

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@dataclass(frozen=True)
class _Cap:
    text: str
    changed: bool
    change_score: float
    mask: np.ndarray | None


class ConstCaptioner:
    """MODEL DOUBLE: every tile reports change probability `value` everywhere (a [8,8] mask, or none)."""

    input_size = 32

    def __init__(self, value: float, with_mask: bool = True):
        self.value, self.with_mask = value, with_mask

    def caption_batch(self, pre, post):
        m = np.full((8, 8), self.value, np.float32) if self.with_mask else None
        return [_Cap("x", True, self.value, m) for _ in range(len(pre))]


class DiffCaptioner:
    """MODEL DOUBLE: a tile is changed when pre and post differ anywhere in it."""

    input_size = 32

    def caption_batch(self, pre, post):
        diff = np.abs(pre.astype(np.int16) - post.astype(np.int16)).max(axis=(1, 2, 3)) > 0
        return [_Cap("built" if d else "none", bool(d), float(d), None) for d in diff]


# ---------------------------------------------------------------------------------------------- tiling


@SETTINGS
@given(st.integers(1, 700), st.integers(1, 700), st.integers(1, 300), st.data())
def test_tile_grid_covers_every_pixel(width, height, tile, data):
    overlap = data.draw(st.integers(0, tile - 1))
    wins = tile_grid(width, height, tile, overlap)
    cover = np.zeros((height, width), np.int32)
    for c, r, w, h in wins:
        assert 0 <= c and 0 <= r and c + w <= width and r + h <= height and w == min(tile, width)
        cover[r : r + h, c : c + w] += 1
    assert cover.min() >= 1
    cols = sorted({c for c, _, _, _ in wins})
    assert all(b - a <= tile - overlap for a, b in zip(cols, cols[1:], strict=False))
    assert len(set(wins)) == len(wins)


@SETTINGS
@given(w=st.integers(1, 150), h=st.integers(1, 150), tile=st.integers(4, 96), data=st.data(),
       value=st.floats(0.0, 1.0), with_mask=st.booleans())
def test_heatmap_counts_every_valid_pixel_once(tmp_path_factory, w, h, tile, data, value, with_mask):
    overlap = data.draw(st.integers(0, tile - 1), label="overlap")
    # invalid pixels: alpha 0 in a drawn rectangle (maybe empty, maybe everything)
    x0, x1 = sorted(data.draw(st.tuples(st.integers(0, w), st.integers(0, w)), label="cols"))
    y0, y1 = sorted(data.draw(st.tuples(st.integers(0, h), st.integers(0, h)), label="rows"))
    rng = np.random.default_rng(w * 1000 + h)
    img = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    img[:, :, 3] = 255
    img[y0:y1, x0:x1, 3] = 0
    d = tmp_path_factory.mktemp("heat")
    cv2.imwrite(str(d / "pre.png"), img)
    cv2.imwrite(str(d / "post.png"), img)
    with read_pair(d / "pre.png", d / "post.png") as pair:
        caption_scene(ConstCaptioner(value, with_mask), pair, TileOptions(tile=tile, overlap=overlap, min_valid=0.0,
                                                                          progress=False),
                      heatmap_path=d / "heat.tif")
    import rasterio

    with rasterio.open(d / "heat.tif") as ds:
        heat = ds.read(1)
        scale = int(round(ds.transform.a))
    valid = img[:, :, 3] > 0
    hs, ws = heat.shape
    padded = np.zeros((hs * scale, ws * scale), bool)
    padded[:h, :w] = valid
    has_valid = padded.reshape(hs, scale, ws, scale).any(axis=(1, 3))  # heatmap pixel holds a valid scene pixel
    assert np.allclose(heat[has_valid], value, atol=1e-5), (heat[has_valid].min(), heat[has_valid].max(), value)
    assert np.all(heat[~has_valid] == HEATMAP_NODATA)


# ---------------------------------------------------------------------------------------------- GeoJSON in its CRS

_CRS = ("EPSG:32615", "EPSG:32633", "EPSG:3857", "EPSG:2154", "EPSG:32755")
_ORIGIN = {"EPSG:32615": (500000.0, 4100000.0), "EPSG:32633": (400000.0, 5800000.0),
           "EPSG:3857": (-10000000.0, 4500000.0), "EPSG:2154": (650000.0, 6860000.0),
           "EPSG:32755": (300000.0, 6000000.0)}


def _write_geotiff(path, data, crs, transform):
    import rasterio
    from affine import Affine

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3, dtype="uint8",
                       crs=crs, transform=Affine(*transform)) as ds:
        ds.write(data)


@SETTINGS
@given(crs=st.sampled_from(_CRS), px=st.floats(0.1, 30.0), w=st.integers(8, 160), h=st.integers(8, 160),
       tile=st.integers(8, 64), data=st.data(), out_crs=st.sampled_from(["image", "EPSG:4326"]))
def test_geojson_polygons_are_the_changed_windows_in_the_declared_crs(tmp_path_factory, crs, px, w, h, tile, data,
                                                                       out_crs):
    pytest.importorskip("rasterio", reason="georeferenced pairs need rasterio (edgecc[geo])")
    from pyproj import CRS, Transformer

    overlap = data.draw(st.integers(0, tile - 1), label="overlap")
    dx, dy = data.draw(st.tuples(st.floats(-5000, 5000), st.floats(-5000, 5000)), label="offset")
    ox, oy = _ORIGIN[crs]
    transform = (px, 0.0, ox + dx, 0.0, -px, oy + dy)
    rng = np.random.default_rng(w * 7 + h)
    pre = rng.integers(0, 200, (3, h, w), dtype=np.uint8)
    post = pre.copy()
    cx, cy = data.draw(st.integers(0, w - 1), label="cx"), data.draw(st.integers(0, h - 1), label="cy")
    post[:, cy, cx] = 255  # one changed pixel: every window holding it is changed
    d = tmp_path_factory.mktemp("gj")
    _write_geotiff(d / "pre.tif", pre, crs, transform)
    _write_geotiff(d / "post.tif", post, crs, transform)
    with read_pair(d / "pre.tif", d / "post.tif") as pair:
        scene = caption_scene(DiffCaptioner(), pair, TileOptions(tile=tile, overlap=overlap, progress=False),
                              geojson_path=d / "c.geojson", geojson_crs=out_crs)
    fc = json.loads((d / "c.geojson").read_text())
    expected = {(c, r, ww, hh) for c, r, ww, hh in tile_grid(w, h, tile, overlap)
                if c <= cx < c + ww and r <= cy < r + hh}
    got = {(f["properties"]["col"], f["properties"]["row"], f["properties"]["width"], f["properties"]["height"])
           for f in fc["features"]}
    assert got == expected == {(t.col, t.row, t.width, t.height) for t in scene.tiles if t.changed}
    declared = CRS.from_user_input(fc["crs"]["properties"]["name"]) if out_crs == "image" else CRS.from_epsg(4326)
    assert ("crs" in fc) == (out_crs == "image")
    if out_crs == "image":
        assert declared == CRS.from_user_input(crs)
    to_image = Transformer.from_crs(declared, CRS.from_user_input(crs), always_xy=True)
    a, b, c0, dd, e, f0 = transform
    inv = np.linalg.inv(np.array([[a, b], [dd, e]]))
    for feat in fc["features"]:
        p = feat["properties"]
        ring = np.array(feat["geometry"]["coordinates"][0], float)  # [5, 2] closed ring
        assert np.allclose(ring[0], ring[-1])
        xs, ys = to_image.transform(ring[:, 0], ring[:, 1])
        cols_rows = (inv @ (np.stack([xs, ys]) - np.array([[c0], [f0]]))).T  # map -> pixel corners
        want = [(p["col"], p["row"]), (p["col"] + p["width"], p["row"]),
                (p["col"] + p["width"], p["row"] + p["height"]), (p["col"], p["row"] + p["height"])]
        assert np.allclose(sorted(map(tuple, cols_rows[:4].round(6))), sorted(want), atol=1e-3), (cols_rows[:4], want)
        area2 = sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(ring[:4], np.roll(ring[:4], -1, 0)))
        assert area2 > 0  # counter-clockwise in the declared CRS (RFC 7946's right-hand rule)
