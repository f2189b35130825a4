"""Tests for edgecc.imagery on seeded fixtures (tests/data/make_imagery.py) and, when present, real pairs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import make_imagery as mk
import numpy as np
import pytest

from edgecc.errors import EdgeccError, ImageryError, ImageryWarning
from edgecc.imagery import ReadOptions, open_raster, read_image, read_pair

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _scene():
    return mk.scene(mk.SEED)  # uint8 [H,W,3]


# ---------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("name, problem", [
    ("corrupt_tif", "not a readable image"),
    ("truncated_tif", "truncated TIFF"),
    ("empty_tif", "empty file"),
    ("text_tif", "not a TIFF file (looks like text"),
    ("huge_tif", "--max-pixels"),
    ("corrupt_png", "not a readable image"),
    ("truncated_png", "not a readable image"),
])
def test_bad_file_is_one_line_error_naming_the_file(fixtures_dir, name, problem):
    path = fixtures_dir / f"{name.rsplit('_', 1)[0]}.{name.rsplit('_', 1)[1]}"
    with pytest.raises(ImageryError) as info:
        read_image(path)
    msg = str(info.value)
    assert str(path) in msg and problem in msg and "\n" not in msg
    assert isinstance(info.value, EdgeccError)


def test_png_crc_error_and_truncation_refused_before_decoding(fixtures_dir, tmp_path):
    data = bytearray((fixtures_dir / "pre.png").read_bytes())
    data[100] ^= 0xFF  # inside IDAT: libpng would print "libpng error: IDAT: CRC error" itself
    (tmp_path / "crc.png").write_bytes(bytes(data))
    with pytest.raises(ImageryError, match="crc.png: not a readable image .corrupt PNG: CRC error in the IDAT chunk"):
        read_image(tmp_path / "crc.png")
    with pytest.raises(ImageryError, match="truncated PNG: the IDAT chunk at byte 33 runs to byte"):
        read_image(fixtures_dir / "truncated.png")


def test_corrupt_pixel_data_found_at_read_time(fixtures_dir):
    path = fixtures_dir / "garbled.tif"
    assert open_raster(path).width == mk.W  # the header is fine
    with pytest.raises(ImageryError, match="garbled.tif: not a readable image at window .*TIFFReadEncodedTile"):
        read_image(path)


def test_missing_and_directory_paths(fixtures_dir):
    with pytest.raises(ImageryError, match="no such file"):
        open_raster(fixtures_dir / "nope.tif")
    with pytest.raises(ImageryError, match="is a directory"):
        open_raster(fixtures_dir)
    with pytest.raises(ImageryError, match="nope.png"):
        read_pair(fixtures_dir / "pre.png", fixtures_dir / "nope.png")


def test_huge_header_refused_before_reading(fixtures_dir):
    with pytest.raises(ImageryError, match="50000 x 50000"):
        open_raster(fixtures_dir / "huge.tif")
    # with a high enough limit the header passes, and the missing strip is found instead
    with pytest.raises(ImageryError, match="huge.tif"):
        read_image(fixtures_dir / "huge.tif", ReadOptions(max_pixels=2**40), window=(0, 0, 8, 8))


def test_read_options_validate():
    with pytest.raises(ValueError):
        ReadOptions(bands=(1, 2))
    with pytest.raises(ValueError):
        ReadOptions(bands=(0, 1, 2))
    with pytest.raises(ValueError):
        ReadOptions(stretch=(98, 2))


# ---------------------------------------------------------------------------------------------- single images


def test_open_raster_metadata(fixtures_dir):
    r = open_raster(fixtures_dir / "geo_pre.tif")
    assert (r.width, r.height, r.count, r.dtype) == (mk.W, mk.H, 3, "uint8")
    assert r.crs == mk.CRS and r.transform == mk.TRANSFORM and r.nodata is None and r.georeferenced
    assert r.bounds == (500000.0, 4100000.0 - mk.H, 500000.0 + mk.W, 4100000.0)
    png = open_raster(fixtures_dir / "pre.png")
    assert (png.width, png.height, png.count, png.crs, png.reader) == (mk.W, mk.H, 3, None, "cv2")
    jpg = open_raster(fixtures_dir / "pre.jpg")
    assert (jpg.width, jpg.height, jpg.count) == (mk.W, mk.H, 3)
    assert open_raster(fixtures_dir / "u16.png").dtype == "uint16"
    assert not open_raster(fixtures_dir / "nocrs.tif").georeferenced


def test_uint8_geotiff_png_jpeg_agree_rgb(fixtures_dir):
    want = _scene()
    assert np.array_equal(read_image(fixtures_dir / "geo_pre.tif"), want)
    assert np.array_equal(read_image(fixtures_dir / "pre.png"), want)  # BGR -> RGB
    jpg = read_image(fixtures_dir / "pre.jpg").astype(int)
    assert np.abs(jpg - want).mean() < 2.0


def test_window_read(fixtures_dir):
    want = _scene()[10:50, 30:100]
    for name in ("geo_pre.tif", "pre.png"):
        got = read_image(fixtures_dir / name, window=(30, 10, 70, 40))
        assert got.shape == (40, 70, 3) and np.array_equal(got, want)


def test_band_selection_and_errors(fixtures_dir):
    want = _scene()
    got = read_image(fixtures_dir / "geo_pre.tif", ReadOptions(bands=(3, 2, 1)))
    assert np.array_equal(got, want[:, :, ::-1])
    got = read_image(fixtures_dir / "pre.png", ReadOptions(bands=(2,)))
    assert np.array_equal(got, np.repeat(want[:, :, 1:2], 3, axis=2))
    with pytest.raises(ImageryError, match="band 5 requested but the file has 3"):
        read_image(fixtures_dir / "geo_pre.tif", ReadOptions(bands=(5, 2, 1)))


def test_uint16_four_bands_stretch_is_per_raster(fixtures_dir):
    path = fixtures_dir / "geo_u16_4b.tif"
    with pytest.warns(ImageryWarning, match="4 bands; using bands 1, 2, 3"):
        full = read_image(path)
    assert full.dtype == np.uint8 and full.shape == (mk.H, mk.W, 3)
    lo, hi = np.percentile(full, [1, 99])
    assert lo < 20 and hi > 235  # stretched to the full range
    # a window reads the same values as the full image: the stretch is computed once per raster, not per tile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageryWarning)
        win = read_image(path, window=(100, 60, 64, 64))
        nir = read_image(path, ReadOptions(bands=(4,)))
    assert np.array_equal(win, full[60:124, 100:164])
    assert np.array_equal(nir[..., 0], nir[..., 2])
    # the order of values follows the data
    src = _scene()[..., 0].astype(int)
    assert np.corrcoef(src.ravel(), full[..., 0].ravel().astype(int))[0, 1] > 0.99


def test_uint16_png_is_stretched(fixtures_dir):
    got = read_image(fixtures_dir / "u16.png")
    assert got.dtype == np.uint8 and got.max() > 240 and got.min() < 15
    assert np.corrcoef(_scene()[..., 2].ravel(), got[..., 2].ravel())[0, 1] > 0.99  # channel order kept


def test_float_with_nan_nodata(fixtures_dir):
    with read_pair(fixtures_dir / "geo_f32.tif", fixtures_dir / "geo_pre.tif") as pair:
        pre, post, valid = pair.read_window(0, 0, 64, 64)
    assert not valid[:32, :32].any() and valid[32:, 32:].all()
    assert (pre[:32, :32] == 0).all() and pre[32:, 32:].max() > 200


def test_single_band_replicated_with_one_warning(fixtures_dir):
    for name in ("geo_1band.tif", "gray.png"):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            got = read_image(fixtures_dir / name)
        assert [str(w.message) for w in rec if w.category is ImageryWarning] == [
            f"{fixtures_dir / name}: single band; replicated to RGB"]
        assert np.array_equal(got[..., 0], _scene()[..., 1]) and np.array_equal(got[..., 0], got[..., 2])


def test_alpha_is_a_mask_not_a_band(fixtures_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageryWarning)  # 4 channels with alpha: no "4 bands" warning
        assert open_raster(fixtures_dir / "geo_rgba.tif").count == 3
        assert np.array_equal(read_image(fixtures_dir / "geo_rgba.tif"), _scene())
        with read_pair(fixtures_dir / "rgba.png", fixtures_dir / "pre.png") as pair:
            _, _, valid = pair.read_window(0, 0, mk.W, mk.H)
    assert not valid[: mk.H // 2, : mk.W // 2].any() and valid[mk.H // 2 :].all()


# ---------------------------------------------------------------------------------------------- pairs


def test_same_grid_pair(fixtures_dir):
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        assert pair.georeferenced and not pair.resampled
        assert (pair.width, pair.height, pair.crs, pair.transform) == (mk.W, mk.H, mk.CRS, mk.TRANSFORM)
        pre, post, valid = pair.read_window(0, 0, mk.W, mk.H)
    assert valid.all() and np.array_equal(pre, _scene())
    assert np.array_equal(post, mk.with_changes(_scene()))


def test_window_outside_grid_is_invalid(fixtures_dir):
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        pre, post, valid = pair.read_window(mk.W - 10, -5, 20, 20)
    assert pre.shape == (20, 20, 3) and valid[5:, :10].all() and not valid[:5].any() and not valid[:, 10:].any()
    assert np.array_equal(pre[5:, :10], _scene()[:15, mk.W - 10 :])


def test_pair_in_two_crs_is_warped_onto_pre_grid(fixtures_dir):
    with read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post_4326.tif") as pair:
        assert pair.georeferenced and pair.resampled and pair.crs == mk.CRS
        pre, post, valid = pair.read_window(0, 0, mk.W, mk.H)
    assert post.shape == (mk.H, mk.W, 3) and valid.mean() > 0.95
    want = mk.with_changes(_scene()).astype(int)
    err = np.abs(post.astype(int) - want)[valid]
    assert err.mean() < 4.0  # two bilinear resamplings of a smooth scene
    c, r, w, h = mk.CHANGES[1]
    assert post[r + 3 : r + h - 3, c + 3 : c + w - 3].min() > 240  # the change is where it should be


def test_non_overlapping_footprints(fixtures_dir):
    with pytest.raises(ImageryError, match="footprints do not overlap") as info:
        read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_far_post.tif")
    assert "geo_pre.tif" in str(info.value) and "geo_far_post.tif" in str(info.value)


def test_non_georeferenced_size_mismatch(fixtures_dir):
    with pytest.raises(ImageryError, match="--resize") as info:
        read_pair(fixtures_dir / "pre.png", fixtures_dir / "post_small.png")
    assert "post_small.png" in str(info.value) and "pre.png" in str(info.value)
    assert "use --resize" in str(info.value)  # the CLI flag first: the CLI shows this message as is
    with pytest.warns(ImageryWarning, match="resized from 128 x 96 to 256 x 192"):
        pair = read_pair(fixtures_dir / "pre.png", fixtures_dir / "post_small.png", ReadOptions(resize=True))
    with pair:
        pre, post, valid = pair.read_window(0, 0, mk.W, mk.H)
    assert pair.resampled and post.shape == pre.shape and valid.all()
    assert np.abs(post.astype(int) - mk.with_changes(_scene())).mean() < 8


def test_resize_works_for_geotiff_post_too(fixtures_dir):
    # nocrs.tif is 256 x 192 without georeferencing; pair it with the half-size PNG the other way round
    with pytest.warns(ImageryWarning, match="resized"):
        with read_pair(fixtures_dir / "post_small.png", fixtures_dir / "nocrs.tif", ReadOptions(resize=True)) as p:
            _, post, _ = p.read_window(0, 0, mk.W // 2, mk.H // 2)
    assert post.shape == (mk.H // 2, mk.W // 2, 3)


def test_mixed_georeferencing_pairs_by_pixel_with_warning(fixtures_dir):
    with pytest.warns(ImageryWarning, match="not georeferenced while"):
        pair = read_pair(fixtures_dir / "geo_pre.tif", fixtures_dir / "nocrs.tif")
    with pair:
        assert not pair.georeferenced and pair.crs == mk.CRS  # outputs stay in the pre image's CRS
        _, post, valid = pair.read_window(0, 0, mk.W, mk.H)
    assert valid.all() and np.array_equal(post, mk.with_changes(_scene()))


def test_png_and_jpeg_pairs(fixtures_dir):
    for ext in ("png", "jpg"):
        with read_pair(fixtures_dir / f"pre.{ext}", fixtures_dir / f"post.{ext}") as pair:
            assert not pair.georeferenced and pair.crs is None
            pre, post, valid = pair.read_window(0, 0, mk.W, mk.H)
        assert valid.all()
        diff = np.abs(pre.astype(int) - post.astype(int)).max(axis=2) > 40
        c, r, w, h = mk.CHANGES[0]
        assert diff[r + 2 : r + h - 2, c + 2 : c + w - 2].all() and diff.sum() < 1.2 * sum(
            cw * ch for _, _, cw, ch in mk.CHANGES)


def test_nodata_marks_invalid(fixtures_dir):
    with read_pair(fixtures_dir / "geo_nodata_pre.tif", fixtures_dir / "geo_post.tif") as pair:
        _, _, valid = pair.read_window(0, 0, mk.W, mk.H)
    assert not valid[:, : mk.NODATA_COLS].any() and valid[:, mk.NODATA_COLS :].all()


# ---------------------------------------------------------------------------------------------- real data


def test_real_joplin_tiles_different_crs(shared_data):
    base = shared_data / "real_pairs" / "joplin_geotiff" / "tiles"
    pre_path, post_path = base / "pre" / "tile_337-9136.tif", base / "post" / "tile_31500-5137.tif"
    assert open_raster(pre_path).crs == "EPSG:26915" and open_raster(post_path).crs == "EPSG:4326"
    with read_pair(pre_path, post_path) as pair:
        assert pair.resampled and pair.crs == "EPSG:26915"
        pre, post, valid = pair.read_window(0, 0, pair.width, pair.height)
    assert pre.shape == post.shape == (1024, 1024, 3) and 0.4 < valid.mean() < 0.7  # ~half covered by post
    assert post[valid].std() > 10 and (post[~valid] == 0).all()
    with pytest.raises(ImageryError, match="footprints do not overlap"):
        read_pair(pre_path, base / "post" / "tile_33548-6161.tif")


def test_real_joplin_chips_same_crs_subpixel_shift(shared_data):
    base = shared_data / "real_pairs" / "joplin_geotiff" / "chips"
    with read_pair(base / "pre" / "0_pre.tif", base / "post" / "0_post.tif") as pair:
        assert pair.crs == "EPSG:32615" and pair.resampled  # origins differ by ~0.5 m
        pre, post, valid = pair.read_window(256, 256, 256, 256)
    assert valid.mean() > 0.99 and pre.std() > 10 and post.std() > 10


@pytest.mark.parametrize("rel", [
    ("levircd_tiles/A/test_12.png", "levircd_tiles/B/test_12.png"),
    ("oscd/abudhabi/img1.png", "oscd/abudhabi/img2.png"),
    ("sztaki/szada_1/im1.png", "sztaki/szada_1/im2.png"),
    ("lapalma_sar/pre_optical.png", "lapalma_sar/post_sar.png"),
])
def test_real_png_pairs(shared_data, rel):
    root = shared_data / "real_pairs"
    with read_pair(root / rel[0], root / rel[1]) as pair:
        pre, post, valid = pair.read_window(0, 0, min(256, pair.width), min(256, pair.height))
    assert pre.dtype == post.dtype == np.uint8 and pre.shape == post.shape and valid.all()


def test_gdal_uri_reads_like_the_local_file(tmp_path):
    """A GDAL virtual path (here /vsizip/, like /vsicurl/ or s3://) goes to GDAL as it is, "//" and all."""
    import zipfile

    pytest.importorskip("rasterio", reason="URIs are read by GDAL: needs the geo extra")
    from typer.testing import CliRunner

    from edgecc import cli
    from edgecc.imagery import is_uri

    src = Path(__file__).resolve().parents[1] / "examples" / "data"
    with zipfile.ZipFile(tmp_path / "pair.zip", "w") as z:
        for name in ("pre.tif", "post.tif"):
            z.write(src / name, name)
    uri = f"/vsizip/{tmp_path}/pair.zip"
    assert is_uri(uri) and is_uri("s3://bucket/a.tif") and is_uri("https://h/a.tif") and not is_uri(src / "pre.tif")
    local = read_image(src / "pre.tif")
    assert np.array_equal(read_image(f"{uri}/pre.tif"), local)
    with pytest.raises(ImageryError, match=r"nope\.tif: not a readable image"):
        open_raster(f"{uri}/nope.tif")
    runner = CliRunner()
    a = runner.invoke(cli.app, ["caption", f"/vsizip//{str(tmp_path).lstrip('/')}/pair.zip/pre.tif",
                                f"{uri}/post.tif", "--json"])
    b = runner.invoke(cli.app, ["caption", str(src / "pre.tif"), str(src / "post.tif"), "--json"])
    assert a.exit_code == 0, a.output
    strip = lambda out: {k: v for k, v in json.loads(out).items() if k != "timings_ms"}  # noqa: E731
    assert strip(a.stdout) == strip(b.stdout)


def test_a_paletted_geotiff_is_refused_not_read_as_indices(tmp_path):
    import rasterio

    path = mk._write_tif(tmp_path / "pal.tif", np.arange(64 * 64, dtype=np.uint8).reshape(1, 64, 64) % 4,
                         photometric="palette")
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255)})
    with pytest.raises(ImageryError, match="pal.tif: a paletted image"):
        read_image(path)
    grey = mk._write_tif(tmp_path / "grey.tif", np.arange(64 * 64, dtype=np.uint8).reshape(1, 64, 64),
                         photometric="palette")
    with rasterio.open(grey, "r+") as ds:  # a grey ramp as a colour table: entry i is grey level i
        ds.write_colormap(1, {i: (i, i, i, 255) for i in range(256)})
    assert read_image(grey)[..., 0].max() == 255
