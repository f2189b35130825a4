"""The reference map (windowed GeoTIFF, PNG memory map, LRU), telemetry priors, and the reference-tile cache.

    pytest tests/test_stream_refmap.py
"""

from __future__ import annotations

import cv2
import make_flight
import numpy as np
import pytest

from edgecc.bundle import DEFAULT_BUNDLE
from edgecc.stream import (
    LRU,
    CachedReferenceEngine,
    ReferenceMap,
    RegisterOptions,
    Registrar,
    Telemetry,
    TelemetryError,
)


@pytest.fixture(scope="module")
def big():
    """A 640 x 640 map of four different rendered scenes (no repeats: a global search has one answer)."""
    return np.vstack([np.hstack([make_flight.render_scene(320, seed=2 * r + c)[0] for c in (0, 1)]) for r in (0, 1)])


@pytest.fixture(scope="module")
def geotiff(big, tmp_path_factory):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    p = tmp_path_factory.mktemp("map") / "map.tif"
    with rasterio.open(p, "w", driver="GTiff", width=640, height=640, count=3, dtype="uint8", crs="EPSG:32615",
                       transform=from_origin(500000, 4e6, 0.5, 0.5), tiled=True, blockxsize=256,
                       blockysize=256) as ds:
        ds.write(big.transpose(2, 0, 1))
    return p


def test_lru_is_bounded_and_counts():
    c = LRU(2)
    made = []
    for k in (1, 2, 1, 3, 2):
        c.get(k, lambda k=k: made.append(k) or k * 10)
    assert made == [1, 2, 3, 2] and len(c) == 2 and c.hits == 1 and c.misses == 4


def test_geotiff_windows_match_the_pixels(big, geotiff):
    m = ReferenceMap.open(geotiff, cache_blocks=2)
    assert (m.width, m.height, m.crs) == (640, 640, "EPSG:32615")
    np.testing.assert_array_equal(m.read((100, 50, 612, 600)), big[50:600, 100:612])
    edge = m.read((600, 620, 700, 700))  # outside the map reads 0
    assert edge.shape == (80, 100, 3) and not edge[20:, 40:].any()
    np.testing.assert_array_equal(edge[:20, :40], big[620:, 600:])
    assert len(m.blocks) <= 2  # the block LRU stays bounded
    ov, s = m.overview(160)
    assert ov.shape == (160, 160, 3) and s == 0.25
    assert np.abs(ov.astype(int) - cv2.resize(big, (160, 160), interpolation=cv2.INTER_AREA)).mean() < 3
    px = np.array([[10.0, 20.0]])
    np.testing.assert_allclose(m.pixel_to_map(px), [[500005.0, 4e6 - 10]])
    np.testing.assert_allclose(m.map_to_pixel(m.pixel_to_map(px)), px)
    m.close()


def test_png_is_memory_mapped_once(big, tmp_path, monkeypatch):
    from edgecc.stream import refmap

    p = tmp_path / "map.png"
    cv2.imwrite(str(p), cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    monkeypatch.setattr(refmap, "_to_memmap", lambda a, min_bytes=0, f=refmap._to_memmap: f(a, min_bytes))
    m = ReferenceMap.open(p)
    np.testing.assert_array_equal(m.read((0, 0, 640, 640)), big)
    assert m.transform is None and m.overview(320)[0].shape == (320, 320, 3)


def test_unreadable_reference_is_one_line(tmp_path):
    from edgecc.errors import EdgeccError

    bad = tmp_path / "ref.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnope")
    with pytest.raises(EdgeccError, match="ref.png"):
        ReferenceMap.open(bad)


# ---------------------------------------------------------------------------------------------- telemetry


def _latlon(m: ReferenceMap, x: float, y: float) -> tuple[float, float]:
    from edgecc.stream.refmap import to_wgs84

    lon, lat = to_wgs84(m.pixel_to_map(np.array([[x, y]])), m.crs)[0]
    return float(lat), float(lon)


def test_telemetry_csv_and_srt_give_the_pose_prior(geotiff, tmp_path):
    m = ReferenceMap.open(geotiff)
    lat, lon = _latlon(m, 300.0, 200.0)
    csv = tmp_path / "t.csv"
    csv.write_text(f"Frame,Latitude,Longitude,Yaw,Alt\n0,{lat},{lon},90,100\n1,bad,row,0,0\n")
    srt = tmp_path / "t.srt"
    srt.write_text(f"1\n00:00:00,000 --> 00:00:00,033\n[latitude: {lat}] [longitude: {lon}] [rel_alt: 100.0]\n\n"
                   f"2\n00:00:00,033 --> 00:00:00,066\nGPS({lon},{lat},50)\n")
    for path in (csv, srt):
        t = Telemetry.open(path)
        assert t.get(0).lat == pytest.approx(lat) and t.get(5) is None
        h = t.prior(0, m, (100, 200))
        np.testing.assert_allclose(cv2.perspectiveTransform(np.float32([[[100, 50]]]), h)[0, 0], [300, 200], atol=0.01)
    h = Telemetry.open(csv).prior(0, m, (100, 200), fov_deg=90)  # heading 90: the frame's top edge points east
    assert h[0, 0] == pytest.approx(0, abs=1e-9) and np.hypot(*h[:2, 0]) == pytest.approx(2 * 100 / 200 / 0.5)
    assert Telemetry.open(srt).get(1).altitude == 50


def test_bad_telemetry_is_one_line(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("frame,x,y\n0,1,2\n")
    with pytest.raises(TelemetryError, match="t.csv: telemetry CSV needs lat and lon"):
        Telemetry.open(p)
    with pytest.raises(TelemetryError, match="nope.srt: cannot read"):
        Telemetry.open(tmp_path / "nope.srt")


def test_messy_telemetry_is_cleaned_and_said(geotiff, tmp_path):
    from edgecc.stream.telemetry import TelemetryWarning

    m = ReferenceMap.open(geotiff)
    lat, lon = _latlon(m, 300.0, 200.0)
    p = tmp_path / "excel.csv"  # a spreadsheet's byte-order mark, a NaN heading, a negative altitude, a text cell
    p.write_text(f"\ufeffframe,lat,lon,heading,altitude\n2,{lat},{lon},nan,-5\n4,{lat},x,0,100\n", encoding="utf-8")
    with pytest.warns(TelemetryWarning, match="excel.csv: 1 of 2 rows skipped"):
        t = Telemetry.open(p)
    assert set(t.records) == {2} and t.get(2).heading is None and t.get(2).altitude is None
    h = t.prior(2, m, (100, 200), fov_deg=90)  # no heading, no altitude: north up at the map's resolution
    np.testing.assert_allclose(h[:2, :2], np.eye(2), atol=1e-9)
    p = tmp_path / "noframe.csv"
    p.write_text(f"lat,lon\n{lat},{lon}\n")
    with pytest.warns(TelemetryWarning, match="no frame column"):
        assert Telemetry.open(p).get(0) is not None
    p = tmp_path / "dji.srt"  # firmware that spells it "longtitude"
    p.write_text(f"\ufeff1\n00:00:00,000 --> 00:00:00,033\n[latitude: {lat}] [longtitude: {lon}] [rel_alt: 80]\n")
    assert Telemetry.open(p).get(0).lon == pytest.approx(lon)


def test_telemetry_prior_localises_where_global_search_cannot(big, geotiff):
    """A frame too small for the overview search registers from its telemetry prior; a wrong prior is flagged."""
    m = ReferenceMap.open(geotiff)
    frame = np.ascontiguousarray(big[400:512, 200:312])  # 112 px: a global search needs the frame >= 16 overview px
    t = Telemetry({0: _rec(m, 262.0, 450.0), 1: _rec(m, 560.0, 100.0)})
    reg = Registrar(m, RegisterOptions(search_max_side=64))
    assert reg.register(frame).reason == "not_found"
    r = reg.register(frame, t.prior(0, m, frame.shape[:2]))
    err = cv2.perspectiveTransform(np.float32([[[0, 0], [112, 112]]]), r.homography)[0] - [[200, 400], [312, 512]]
    assert r.ok and r.coarse == "prior" and np.abs(err).max() < 1.5, (r, err)
    r2 = reg.register(frame, t.prior(1, m, frame.shape[:2]))  # telemetry 330 px away; the image still registers
    assert r2.ok and r2.reason == "prior_disagrees" and r2.coarse in ("track", "last"), r2


def _rec(m, x, y):
    from edgecc.stream.telemetry import Record

    lat, lon = _latlon(m, x, y)
    return Record(lat, lon, 0.0)


# ---------------------------------------------------------------------------------------------- reference cache


def test_cached_reference_encoding_matches_full_encoding():
    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        pytest.skip(f"no default bundle at {DEFAULT_BUNDLE}")
    import edgecc

    cap = edgecc.load(precision="fp32")
    if not getattr(cap.engine, "can_encode_tokens", False):
        pytest.skip("the default bundle's engine has no split encoder here")
    pre, post, _ = make_flight.render_scene(256, seed=3)
    cached = CachedReferenceEngine(cap.engine, capacity=4)
    for _ in range(3):
        a, b = cap.engine.encode(pre[None], post[None]), cached.encode(pre[None], post[None])
        np.testing.assert_allclose(a.gate_prob, b.gate_prob, atol=1e-5)
        np.testing.assert_allclose(a.mask, b.mask, atol=1e-5)
        for k in a.memory:
            np.testing.assert_allclose(a.memory[k], b.memory[k], atol=1e-4)
    assert cached.cache.misses == 1 and cached.cache.hits == 2  # the reference tile's trunk ran once


def test_trusted_telemetry_registers_what_the_image_cannot(big, geotiff):
    """An area rebuilt since the map: nothing to align on; with trust_prior the telemetry pose is used, flagged."""
    m = ReferenceMap.open(geotiff)
    rebuilt = cv2.GaussianBlur(np.random.default_rng(2).integers(0, 256, (112, 112, 3), dtype=np.uint8), (0, 0), 2)
    prior = Telemetry({0: _rec(m, 256.0, 456.0)}).prior(0, m, (112, 112))
    assert not Registrar(m).register(rebuilt, prior).ok
    r = Registrar(m, RegisterOptions(trust_prior=True)).register(rebuilt, prior)
    assert r.ok and r.reason == "prior_only" and r.coarse == "prior" and r.bbox == (200, 400, 312, 512)


@pytest.fixture(scope="module")
def geotiff_lonlat(geotiff, tmp_path_factory):
    """The same map reprojected to EPSG:4326: its pixels are square in degrees, not on the ground (0.8 : 1 here)."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    p = tmp_path_factory.mktemp("map") / "lonlat.tif"
    with rasterio.open(geotiff) as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        with rasterio.open(p, "w", **{**src.profile, "crs": "EPSG:4326", "transform": t, "width": w, "height": h}
                           ) as dst:
            for b in (1, 2, 3):
                reproject(rasterio.band(src, b), rasterio.band(dst, b), resampling=Resampling.bilinear)
    return p


def test_a_lonlat_map_is_measured_on_the_ground(geotiff, geotiff_lonlat, tmp_path):
    utm, ll = ReferenceMap.open(geotiff), ReferenceMap.open(geotiff_lonlat)
    np.testing.assert_allclose(utm.ground, [[0.5, 0], [0, -0.5]])
    gx, gy = np.abs(np.diag(ll.ground))  # metres per pixel east and north
    assert gx / gy == pytest.approx(np.cos(np.radians(36.1)), abs=0.01)  # 4e6 m north in UTM 15N: about 36.1 N
    # one telemetry record: both maps place the frame's corners on the same ground, within a metre
    lat, lon = _latlon(utm, 300.0, 200.0)
    csv = tmp_path / "t.csv"
    csv.write_text(f"frame,lat,lon,heading,altitude\n0,{lat},{lon},30,60\n")
    tel = Telemetry.open(csv)
    corners = np.float32([[[0, 0], [200, 0], [200, 100], [0, 100]]])
    from edgecc.stream.refmap import to_wgs84

    on_ground = []
    for m in (utm, ll):
        px = cv2.perspectiveTransform(corners, tel.prior(0, m, (100, 200), fov_deg=80))[0].astype(np.float64)
        on_ground.append(to_wgs84(m.pixel_to_map(px), m.crs))
    metres = (on_ground[0] - on_ground[1]) * [111_000 * np.cos(np.radians(lat)), 111_000]
    assert np.abs(metres).max() < 1.0


def test_a_pose_square_on_the_ground_is_not_refused_on_a_lonlat_map(geotiff_lonlat):
    m = ReferenceMap.open(geotiff_lonlat)
    reg = Registrar(m, RegisterOptions())
    frame = np.zeros((100, 120, 3), np.uint8)
    h = np.eye(3)
    h[:2, :2] = np.linalg.solve(m.ground, np.diag([0.5, -0.5]))  # 0.5 m frame pixels, north up: sheared in px
    h[:2, 2] = [m.width / 2 - 60, m.height / 2 - 50]
    sv = np.linalg.svd(h[:2, :2], compute_uv=False)
    assert sv[0] / sv[1] > 1.2  # in the map's pixels it looks sheared...
    assert reg._check(frame, h, 0.9, "track", 0).ok  # ... but on the ground it is a camera looking down
