"""Pairs that are not comparable: a single-channel date against a colour one, ground resolutions far apart."""

import cv2
import numpy as np
import pytest

from edgecc.imagery import read_pair
from edgecc.sensors import colourfulness, pair_warnings


def _write(path, img):
    cv2.imwrite(str(path), img[:, :, ::-1])
    return path


def test_grey_against_colour_warns_and_colour_pairs_do_not(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)
    grey = np.repeat(rng.integers(0, 255, (300, 300, 1), dtype=np.uint8), 3, axis=2)  # speckle, R = G = B
    assert colourfulness(grey) == 0.0 and colourfulness(colour) > 30
    a, b = _write(tmp_path / "a.png", colour), _write(tmp_path / "b.png", grey)
    c = _write(tmp_path / "c.png", colour[::-1])
    with read_pair(a, b) as pair:
        msgs = pair_warnings(pair)
    assert len(msgs) == 1 and "different sensors" in msgs[0] and str(b) in msgs[0]
    with read_pair(a, c) as pair:
        assert pair_warnings(pair) == []
    with read_pair(b, b) as pair:  # two grey dates: the same kind of sensor
        assert pair_warnings(pair) == []


def test_ground_resolutions_far_apart_warn(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(1)
    paths = []
    for name, res in (("fine.tif", 0.5), ("coarse.tif", 2.0)):
        data = rng.integers(0, 255, (3, 128, 128), dtype=np.uint8)
        p = tmp_path / name
        with rasterio.open(p, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8", crs="EPSG:32615",
                           transform=from_origin(500000, 4100000, res, res)) as ds:
            ds.write(data)
        paths.append(p)
    with read_pair(*paths) as pair:
        msgs = pair_warnings(pair)
    assert any("ground resolution" in m and "coarse.tif" in m for m in msgs)


def test_tile_for_gsd():
    from edgecc.sensors import tile_for_gsd

    assert tile_for_gsd(256, None) == 256 and tile_for_gsd(256, 0.5) == 256 and tile_for_gsd(256, 0.3) == 256
    assert tile_for_gsd(256, 1.5) == 85 and tile_for_gsd(256, 1.0) == 128
    assert tile_for_gsd(256, 10.0) == 64  # outside the domain: the upsampling factor stops at 4


def test_coarse_georeferenced_scene_is_cut_finer(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    import edgecc

    rng = np.random.default_rng(2)
    paths = []
    for name in ("pre.tif", "post.tif"):
        p = tmp_path / name
        with rasterio.open(p, "w", driver="GTiff", width=256, height=256, count=3, dtype="uint8", crs="EPSG:32615",
                           transform=from_origin(500000, 4100000, 1.0, 1.0)) as ds:
            ds.write(rng.integers(0, 255, (3, 256, 256), dtype=np.uint8))
        paths.append(p)
    cap = edgecc.load()
    scene = cap.caption(*paths)  # 1 m/px: 128-px tiles, so more than one
    assert len(scene.tiles) > 1 and max(t.width for t in scene.tiles) == 128
    assert len(cap.caption(*paths, gsd=0.5).tiles) == 1  # an explicit resolution wins


def test_web_mercator_metres_are_corrected_to_ground_metres():
    from edgecc.sensors import grid_gsd

    pytest.importorskip("rasterio")
    assert grid_gsd((0.6, 0, 366000, 0, -0.6, 4104000), "EPSG:32615") == 0.6
    # the same 0.6 m ground pixel near Joplin (37.1 N) is 0.75 "metres" of Web Mercator
    lat = 37.1
    y = 6378137.0 * np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))
    assert grid_gsd((0.75, 0, -10526000, 0, -0.75, y), "EPSG:3857") == pytest.approx(0.75 * np.cos(np.radians(lat)))
