"""Tests for edgecc.tiling with PixelDiffCaptioner, a deterministic MODEL DOUBLE (tests/conftest.py): the
changes are bright rectangles at known places (make_imagery.CHANGES), so the changed tiles are known exactly.
Real-model scene tests belong with the model runtime."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import make_imagery as mk
import numpy as np
import pytest
from conftest import PixelDiffCaptioner

from edgecc.imagery import ReadOptions, read_pair
from edgecc.tiling import HEATMAP_NODATA, TileOptions, caption_scene, tile_grid

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

OPTS = TileOptions(tile=64, overlap=16, batch=3, progress=False)
# 256 x 192 with tile 64, stride 48: cols 0 48 96 144 192, rows 0 48 96 128 -> 20 tiles.
# CHANGES (20,20,16,16) -> tile (0,0); (200,150,40,30) -> tiles at cols 144/192 x rows 96/128 (>1% of each tile)
EXPECTED_CHANGED = {(0, 0), (144, 96), (144, 128), (192, 96), (192, 128)}


def _changed(scene):
    return {(t.col, t.row) for t in scene.tiles if t.changed}


# ---------------------------------------------------------------------------------------------- grid


@pytest.mark.parametrize("w, h, tile, overlap", [(256, 192, 64, 16), (1000, 700, 256, 32), (256, 256, 256, 0),
                                                 (257, 300, 256, 32), (100, 40, 256, 32), (300, 100, 256, 32)])
def test_tile_grid_covers_image_without_padding(w, h, tile, overlap):
    grid = tile_grid(w, h, tile, overlap)
    cover = np.zeros((h, w), bool)
    for c, r, tw, th in grid:
        assert 0 <= c and 0 <= r and c + tw <= w and r + th <= h  # inside: edge tiles shifted inward
        assert tw == min(tile, w) and th == min(tile, h)
        cover[r : r + th, c : c + tw] = True
    assert cover.all()
    assert len(set(grid)) == len(grid)


def test_tile_grid_exact():
    grid = tile_grid(256, 192, 64, 16)
    assert sorted({c for c, *_ in grid}) == [0, 48, 96, 144, 192]
    assert sorted({r for _, r, *_ in grid}) == [0, 48, 96, 128]
    assert tile_grid(100, 40, 256, 32) == [(0, 0, 100, 40)]
    with pytest.raises(ValueError):
        tile_grid(100, 100, 64, 64)


# ---------------------------------------------------------------------------------------------- scenes


def test_known_changes_flagged_and_batched(fixtures_dir):
    cap = PixelDiffCaptioner(input_size=64)
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        scene = caption_scene(cap, pair, OPTS)
    assert len(scene.tiles) == 20 and _changed(scene) == EXPECTED_CHANGED
    assert cap.batch_sizes == [3] * 6 + [2]
    assert scene.changed and scene.caption == "some buildings are built"
    assert scene.summary == "5 of 20 tiles changed; main changes: some buildings are built (5)"
    assert scene.change_score == max(t.change_score for t in scene.tiles) == pytest.approx(1200 / 4096)
    assert (scene.crs, scene.transform) == (mk.CRS, mk.TRANSFORM)
    t = next(t for t in scene.tiles if (t.col, t.row) == (0, 0))
    assert t.polygon[0] == (500000.0, 4100000.0) and t.polygon[2] == (500064.0, 4100000.0 - 64)
    assert len(t.polygon) == 5 and t.polygon[0] == t.polygon[-1]
    assert set(scene.timings) >= {"read_s", "model_s", "write_s", "total_s", "tiles"}


def test_no_change_scene(fixtures_dir):
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_same.tif") as pair:
        scene = caption_scene(PixelDiffCaptioner(), pair, OPTS)
    assert not scene.changed and scene.caption == "there is no difference" and scene.change_score == 0.0
    assert scene.summary == "0 of 20 tiles changed"


def test_reprojected_post_gives_same_changes(fixtures_dir):
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post_4326.tif") as pair:
        scene = caption_scene(PixelDiffCaptioner(), pair, OPTS)
    assert _changed(scene) == EXPECTED_CHANGED


def test_tile_resized_to_model_input_and_small_image_padded(fixtures_dir):
    cap = PixelDiffCaptioner(input_size=64)
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        scene = caption_scene(cap, pair, TileOptions(tile=128, overlap=0, progress=False))
        assert _changed(scene) == {(0, 0), (128, 64)}  # tiles 128 px, read then resized to 64
        small = caption_scene(cap, pair, TileOptions(tile=512, overlap=32, progress=False))
    assert [(t.col, t.row, t.width, t.height) for t in small.tiles] == [(0, 0, mk.W, mk.H)]  # one padded tile
    assert small.changed


def test_nodata_tiles_skipped(fixtures_dir):
    with read_pair(fixtures_dir / "geo_nodata_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        scene = caption_scene(PixelDiffCaptioner(), pair, OPTS)
    assert {t.col for t in scene.tiles} == {48, 96, 144, 192}  # col 0 is all nodata; col 48 is 75% valid
    assert scene.timings["skipped"] == 4 and "(4 skipped as mostly nodata)" in scene.summary
    assert _changed(scene) == EXPECTED_CHANGED - {(0, 0)}


def test_geojson_in_image_crs(fixtures_dir, tmp_path):
    out = tmp_path / "changes.geojson"
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        scene = caption_scene(PixelDiffCaptioner(), pair, OPTS, geojson_path=out)
    fc = json.loads(out.read_text())
    assert fc["type"] == "FeatureCollection" and fc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32615"
    assert len(fc["features"]) == len(EXPECTED_CHANGED)
    left, bottom, right, top = 500000.0, 4100000.0 - mk.H, 500000.0 + mk.W, 4100000.0
    for f in fc["features"]:
        assert f["geometry"]["type"] == "Polygon"
        ring = np.array(f["geometry"]["coordinates"][0])
        assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
        assert (ring[:, 0] >= left).all() and (ring[:, 0] <= right).all()
        assert (ring[:, 1] >= bottom).all() and (ring[:, 1] <= top).all()
        assert set(f["properties"]) >= {"caption", "change_score", "col", "row"}
    assert {(f["properties"]["col"], f["properties"]["row"]) for f in fc["features"]} == _changed(scene)


def test_geojson_in_lonlat(fixtures_dir, tmp_path):
    from rasterio.warp import transform_bounds

    out = tmp_path / "changes.geojson"
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        caption_scene(PixelDiffCaptioner(), pair, OPTS, geojson_path=out, geojson_crs="EPSG:4326")
    fc = json.loads(out.read_text())
    assert "crs" not in fc  # RFC 7946: lon/lat WGS 84 is the default
    w, s, e, n = transform_bounds(mk.CRS, "EPSG:4326", 500000.0, 4100000.0 - mk.H, 500000.0 + mk.W, 4100000.0)
    for f in fc["features"]:
        ring = np.array(f["geometry"]["coordinates"][0])
        assert (ring[:, 0] >= w - 1e-9).all() and (ring[:, 0] <= e + 1e-9).all()
        assert (ring[:, 1] >= s - 1e-9).all() and (ring[:, 1] <= n + 1e-9).all()
    assert -93.01 < w < -92.99 and 37.0 < s < 37.1  # UTM 15N easting 500000 is on the -93 meridian


def test_heatmap_geotiff_has_crs_and_bounds(fixtures_dir, tmp_path):
    import rasterio

    out = tmp_path / "heat.tif"
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        caption_scene(PixelDiffCaptioner(), pair, OPTS, heatmap_path=out)
    with rasterio.open(out) as ds:
        assert ds.crs.to_string() == mk.CRS and ds.count == 1 and ds.dtypes[0] == "float32"
        assert tuple(ds.bounds) == pytest.approx((500000.0, 4100000.0 - mk.H, 500000.0 + mk.W, 4100000.0))
        assert ds.res == (8.0, 8.0) and ds.nodata == HEATMAP_NODATA  # reduced: one pixel per 8 x 8 scene pixels
        heat = ds.read(1)
    assert heat.shape == (mk.H // 8, mk.W // 8) and 0.0 <= heat.min() and heat.max() <= 1.0  # all covered
    c, r, w, h = (v // 8 for v in mk.CHANGES[1])
    assert heat[r + 1 : r + h - 1, c + 1 : c + w - 1].min() > 0.5
    assert heat[60 // 8 : 120 // 8, 40 // 8 : 120 // 8].max() == 0.0  # far from any change


def test_heatmap_marks_uncovered_pixels_as_nodata(fixtures_dir, tmp_path):
    import rasterio

    out = tmp_path / "heat.tif"
    with read_pair(fixtures_dir / "geo_nodata_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        caption_scene(PixelDiffCaptioner(), pair, OPTS, heatmap_path=out)
    with rasterio.open(out) as ds:
        assert ds.nodata == HEATMAP_NODATA
        heat = ds.read(1, masked=True)
    n = mk.NODATA_COLS // 8
    assert heat.mask[:, :n].all() and not heat.mask[:, n:].any()  # no data in pre: "unknown", not "no change"
    assert heat.data[:, :n].max() == HEATMAP_NODATA and heat[:, n:].min() >= 0.0


def test_heatmap_blends_overlapping_tiles_without_seams(tmp_path):
    """Each tile reports its own constant score (mean brightness of a left-to-right ramp): overwriting or taking
    the max over overlaps would step at every tile; blending by distance to the tile centre is smooth."""
    import cv2
    import rasterio
    from conftest import FakeCaption

    class TileMean:
        input_size = 64

        def caption_batch(self, pre, post):
            return [FakeCaption("x", False, float(p.mean()) / 255, None) for p in pre]

    ramp = np.repeat(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 64, 0), 3, 2)  # [64,256,3]
    for name in ("pre.png", "post.png"):
        cv2.imwrite(str(tmp_path / name), ramp)
    with read_pair(tmp_path / "pre.png", tmp_path / "post.png") as pair:
        caption_scene(TileMean(), pair, TileOptions(tile=64, overlap=32, progress=False),
                      heatmap_path=tmp_path / "h.tif")
    with rasterio.open(tmp_path / "h.tif") as ds:
        row = ds.read(1)[4]  # [32] heat pixels along the ramp
    steps = np.diff(row)[3:-3]  # the outer 32 px are seen by one tile only
    assert steps.min() > 0.01  # rises everywhere: no plateau of one tile
    assert np.abs(np.diff(row)).max() < 0.5 * (32 / 255)  # no seam: tiles are 32 px apart, their values 0.125


def test_heatmap_png_and_pixel_geojson_for_plain_images(fixtures_dir, tmp_path):
    import cv2

    with read_pair(fixtures_dir / "pre.png", fixtures_dir / "post.png") as pair:
        scene = caption_scene(PixelDiffCaptioner(), pair, OPTS, heatmap_path=tmp_path / "heat.png",
                              geojson_path=tmp_path / "c.geojson")
        with pytest.raises(ValueError, match="not georeferenced"):
            caption_scene(PixelDiffCaptioner(), pair, OPTS, geojson_path=tmp_path / "x.geojson",
                          geojson_crs="EPSG:4326")
    assert _changed(scene) == EXPECTED_CHANGED
    heat = cv2.imread(str(tmp_path / "heat.png"), cv2.IMREAD_UNCHANGED)
    assert heat.shape == (mk.H // 8, mk.W // 8) and heat.dtype == np.uint8 and heat.max() > 128
    fc = json.loads((tmp_path / "c.geojson").read_text())
    assert fc["crs"]["properties"]["name"] == "pixel"
    assert fc["features"][0]["geometry"]["coordinates"][0][0] == [0.0, 0.0]
    assert not (tmp_path / "x.geojson").exists()


def test_tiny_plain_pair_padded_and_tif_heatmap_without_crs(fixtures_dir, tmp_path):
    import rasterio

    with read_pair(fixtures_dir / "tiny_pre.png", fixtures_dir / "tiny_post.png") as pair:
        scene = caption_scene(PixelDiffCaptioner(input_size=64), pair, TileOptions(tile=256, progress=False),
                              heatmap_path=tmp_path / "h.tif")
    assert [(t.col, t.row, t.width, t.height) for t in scene.tiles] == [(0, 0, 30, 20)] and scene.changed
    with rasterio.open(tmp_path / "h.tif") as ds:
        assert ds.crs is None and ds.shape == (3, 4) and ds.res == (8.0, 8.0)  # pixel coordinates of the scene
        heat = ds.read(1)
    # mask cells are 16 input px = 64 tile px here, so the heat is coarse; it must still sit on the change (5,5,10,8)
    assert heat[:2, :2].mean() > heat[2:, 2:].mean() and heat.max() > 0.1


def test_bad_heatmap_suffix_fails_before_any_work(fixtures_dir, tmp_path):
    cap = PixelDiffCaptioner()
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        with pytest.raises(ValueError, match="heatmap must be"):
            caption_scene(cap, pair, OPTS, heatmap_path=tmp_path / "heat.jpg")
        with pytest.raises(ValueError, match="geojson_crs"):
            caption_scene(cap, pair, OPTS, geojson_path=tmp_path / "c.geojson", geojson_crs="EPSG:3857")
    assert cap.calls == 0 and not list(tmp_path.iterdir())


def test_unreadable_tile_mid_scene_is_imagery_error_and_no_outputs(fixtures_dir, tmp_path):
    from edgecc.errors import ImageryError

    with read_pair(fixtures_dir / "garbled.tif", fixtures_dir / "geo_post.tif") as pair:
        with pytest.raises(ImageryError, match="garbled.tif: not a readable image at window"):
            caption_scene(PixelDiffCaptioner(), pair, OPTS, geojson_path=tmp_path / "c.geojson",
                          heatmap_path=tmp_path / "h.tif")
    assert not list(tmp_path.iterdir())


def test_failure_mid_scene_leaves_no_outputs(fixtures_dir, tmp_path):
    old = tmp_path / "old.geojson"
    old.write_text("previous run")
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        with pytest.raises(RuntimeError, match="failed mid-scene"):
            caption_scene(PixelDiffCaptioner(fail_after=2), pair, OPTS, heatmap_path=tmp_path / "heat.tif",
                          geojson_path=tmp_path / "new.geojson")
        with pytest.raises(RuntimeError):
            caption_scene(PixelDiffCaptioner(fail_after=2), pair, OPTS, geojson_path=old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.geojson"]
    assert old.read_text() == "previous run"


def test_failure_while_writing_cleans_temp_file(fixtures_dir, tmp_path, monkeypatch):
    import edgecc.tiling as tiling

    def boom(*a, **k):
        raise OSError("disk full (test)")

    monkeypatch.setattr(tiling.json, "dumps", boom)
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        with pytest.raises(OSError, match="disk full"):
            caption_scene(PixelDiffCaptioner(), pair, OPTS, heatmap_path=tmp_path / "heat.tif",
                          geojson_path=tmp_path / "c.geojson")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heat.tif"]  # written before; geojson never appears


def test_progress_bar_path_runs(fixtures_dir):
    opts = TileOptions(tile=64, overlap=16, batch=8, progress=True)
    with read_pair(fixtures_dir / "pre.jpg", fixtures_dir / "post.jpg") as pair:
        scene = caption_scene(PixelDiffCaptioner(), pair, opts)
    assert _changed(scene) == EXPECTED_CHANGED


def test_options_validate():
    with pytest.raises(ValueError):
        TileOptions(tile=64, overlap=64)
    with pytest.raises(ValueError):
        TileOptions(batch=0)
    with pytest.raises(ValueError):
        TileOptions(min_valid=1.5)


def test_real_joplin_chip_scene(shared_data, tmp_path):
    base = shared_data / "real_pairs" / "joplin_geotiff" / "chips"
    out, heat = tmp_path / "c.geojson", tmp_path / "h.tif"
    with read_pair(base / "pre" / "0_pre.tif", base / "post" / "0_post.tif", ReadOptions()) as pair:
        scene = caption_scene(PixelDiffCaptioner(input_size=64), pair, TileOptions(progress=False),
                              geojson_path=out, heatmap_path=heat, geojson_crs="EPSG:4326")
    assert len(scene.tiles) == 25 and scene.changed  # tornado damage: most tiles differ
    for f in json.loads(out.read_text())["features"]:
        ring = np.array(f["geometry"]["coordinates"][0])
        assert (-94.52 < ring[:, 0]).all() and (ring[:, 0] < -94.48).all() and (37.05 < ring[:, 1]).all()


def test_png_pipeline_works_without_rasterio(fixtures_dir, tmp_path):
    """rasterio is the optional `edgecc[geo]` extra: PNG/JPEG in, PNG heatmap + pixel GeoJSON out, without it."""
    import subprocess
    import textwrap

    code = textwrap.dedent(f"""
        import sys
        sys.modules["rasterio"] = None  # any `import rasterio` now raises ImportError
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from conftest import PixelDiffCaptioner
        from edgecc.imagery import read_pair
        from edgecc.tiling import TileOptions, caption_scene
        d = {str(fixtures_dir)!r}
        with read_pair(d + "/pre.png", d + "/post.jpg") as pair:
            s = caption_scene(PixelDiffCaptioner(), pair, TileOptions(tile=64, overlap=16, progress=False),
                              heatmap_path={str(tmp_path / "h.png")!r}, geojson_path={str(tmp_path / "c.geojson")!r})
        print(sorted((t.col, t.row) for t in s.tiles if t.changed))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert eval(out.stdout.strip().splitlines()[-1]) == sorted(EXPECTED_CHANGED)
    assert (tmp_path / "h.png").exists() and (tmp_path / "c.geojson").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_outputs_follow_the_umask(fixtures_dir, tmp_path, umask):
    import os

    old = os.umask(umask)
    try:
        with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
            caption_scene(PixelDiffCaptioner(), pair, OPTS, heatmap_path=tmp_path / "h.tif",
                          geojson_path=tmp_path / "new" / "c.geojson")
        with read_pair(fixtures_dir / "pre.png", fixtures_dir / "post.png") as pair:
            caption_scene(PixelDiffCaptioner(), pair, OPTS, heatmap_path=tmp_path / "h.png")
    finally:
        os.umask(old)
    for name in ("h.tif", "new/c.geojson", "h.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name  # not mkstemp's private 0600


def test_output_under_a_file_fails_before_any_work(fixtures_dir, tmp_path):
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("x")
    cap = PixelDiffCaptioner()
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        with pytest.raises(NotADirectoryError, match=f"{blocker}/out.geojson: cannot write there, {blocker} is a file"):
            caption_scene(cap, pair, OPTS, geojson_path=blocker / "out.geojson")
    assert cap.calls == 0


def test_scene_caption_drops_tile_positions():
    from edgecc.tiling import strip_position

    assert strip_position("some trees in the upper left corner of the scene disappear") == "some trees disappear"
    assert strip_position("a road is built at the top and houses are built in the bottom right") == \
        "a road is built and houses are built"
    assert strip_position("buildings appear in the lower-right corner") == "buildings appear"
    assert strip_position("houses are built on the left side of the road") == \
        "houses are built on the left side of the road"  # relative to the road, not to the tile
    assert strip_position("there is no difference") == "there is no difference"


def test_scene_caption_of_many_tiles_has_no_tile_position(fixtures_dir):
    class Positional(PixelDiffCaptioner):
        def caption_batch(self, pre, post):
            corner = iter(["in the upper left corner of the scene", "at the top", "on the right side"] * 99)
            return [c if not c.changed else type(c)(f"some buildings are built {next(corner)}", True,
                                                    c.change_score, c.mask) for c in super().caption_batch(pre, post)]

    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        scene = caption_scene(Positional(), pair, OPTS)
        one = caption_scene(Positional(), pair, TileOptions(tile=512, progress=False))  # one tile: the scene itself
    assert scene.caption == "some buildings are built"
    assert scene.summary == "5 of 20 tiles changed; main changes: some buildings are built (5)"
    assert {t.caption for t in scene.tiles if t.changed} > {"some buildings are built at the top"}  # tiles keep theirs
    assert one.caption == "some buildings are built in the upper left corner of the scene"


@pytest.mark.parametrize("outs, match", [
    (lambda t, fx: {"heatmap_path": t / "o.tif", "geojson_path": t / "o.tif"}, "given as both --heatmap and --geojson"),
    (lambda t, fx: {"heatmap_path": fx / "geo_pre.tif"}, "would overwrite the input"),
    (lambda t, fx: {"geojson_path": t}, "--geojson is a folder"),
    (lambda t, fx: {"geojson_path": ""}, "--geojson: the output path is empty"),
])
def test_output_paths_that_cannot_be_right_fail_before_any_work(fixtures_dir, tmp_path, outs, match):
    from edgecc.errors import OutputError

    pre_bytes = (fixtures_dir / "geo_pre.tif").read_bytes()
    cap = PixelDiffCaptioner()
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        with pytest.raises(OutputError, match=match):
            caption_scene(cap, pair, OPTS, **outs(tmp_path, fixtures_dir))
    assert cap.calls == 0 and not list(tmp_path.iterdir())
    assert (fixtures_dir / "geo_pre.tif").read_bytes() == pre_bytes


def test_a_scene_with_no_valid_tile_is_an_error_not_no_change(fixtures_dir, tmp_path):
    from edgecc.errors import ImageryError

    nodata = mk._write_tif(tmp_path / "all_nodata.tif", np.zeros((3, 192, 256), np.uint8), nodata=0)
    cap = PixelDiffCaptioner()
    with read_pair(fixtures_dir / "geo_pre.tif", nodata) as pair:
        with pytest.raises(ImageryError, match=r"all_nodata.tif: no tile has valid data in both images \(20 of 20"):
            caption_scene(cap, pair, OPTS, geojson_path=tmp_path / "c.geojson")
    assert cap.calls == 0 and not (tmp_path / "c.geojson").exists()


def test_a_geotransform_without_crs_gives_pixel_coordinates(fixtures_dir, tmp_path):
    import rasterio

    paths = []
    for name in ("geo_pre.tif", "geo_post.tif"):
        with rasterio.open(fixtures_dir / name) as ds:
            paths.append(mk._write_tif(tmp_path / f"nocrs_{name}", ds.read(), crs=None))
    with read_pair(*paths) as pair:
        assert pair.transform is None  # a transform with no CRS places nothing on the earth
        caption_scene(PixelDiffCaptioner(), pair, OPTS, geojson_path=tmp_path / "c.geojson")
    fc = json.loads((tmp_path / "c.geojson").read_text())
    assert fc["crs"]["properties"]["name"] == "pixel"
    xs = [x for f in fc["features"] for x, _ in f["geometry"]["coordinates"][0]]
    assert xs and max(xs) <= 256  # pixel columns, not eastings labelled as pixels
