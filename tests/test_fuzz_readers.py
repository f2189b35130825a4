"""The imagery readers under hostile input: a short fuzz pass (about 30 s), the inputs fuzzing found (each a
regression test), structured float rasters (NaN, inf, nodata), and the limits that keep a small file from claiming
gigabytes.

The long run (1M inputs per target) is benchmarks/fuzz_readers.py; README "Reliability" lists what it found.
"""

from __future__ import annotations

import json
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgecc.errors import EdgeccError, ImageryError, ImageryWarning
from edgecc.imagery import ReadOptions, open_raster, read_image, read_pair

ROOT = Path(__file__).resolve().parents[1]
REGRESSIONS = Path(__file__).parent / "data" / "fuzz_regressions"


def _fuzz_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import fuzz_readers
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return fuzz_readers


def _read_strict(path: Path, **kw) -> np.ndarray:
    """read_image with every warning but ImageryWarning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ImageryWarning)
        return read_image(path, **kw)


def _one_line_error(path: Path, match: str, **kw) -> str:
    with pytest.raises(EdgeccError, match=match) as info:
        _read_strict(path, **kw)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg and "\r" not in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------- short pass


@pytest.mark.parametrize("target", ["sniff", "png", "jpeg", "tiff"])
def test_short_fuzz_pass(tmp_path, target):
    """About 7 s per target in the harness's limited worker (RSS, hang watchdog); inputs from a range the committed
    benchmark run does not start with, so CI adds coverage."""
    fr = _fuzz_module()
    row = fr.fuzz_target(target, seed=2026, execs=10**9, seconds=8.0, timeout=60.0, out=tmp_path, log=lambda m: None)
    findings = (tmp_path / "findings.jsonl").read_text() if (tmp_path / "findings.jsonl").exists() else ""
    assert row["executions"] > 20, row
    assert row["findings"] == 0 and row["hangs"] == 0 and row["worker_deaths"] == 0, findings[:3000]


def test_watchdog_kills_a_worker_without_progress(tmp_path):
    """An input that never returns is a hang: recorded with its input, the worker killed and restarted after it."""
    fr = _fuzz_module()
    row = fr.fuzz_target("png", seed=1, execs=400, seconds=60.0, timeout=1.0, out=tmp_path, log=lambda m: None,
                         stall_at=200)
    assert row["executions"] == 400 and row["hangs"] == 1 and row["restarts"] == 1 and row["findings"] == 1
    found = json.loads((tmp_path / "findings.jsonl").read_text())
    assert found["index"] == 200 and found["finding"] == "hang: no progress for 1 s"
    assert (tmp_path / "inputs" / found["input"]).read_bytes() == fr.make_input("png", 1, 200, fr.load_seeds())[0]


def test_inputs_replay_by_index():
    fr = _fuzz_module()
    pool = fr.load_seeds()
    assert fr.make_input("tiff", 15, 123, pool) == fr.make_input("tiff", 15, 123, pool)
    assert fr.make_input("tiff", 15, 123, pool) != fr.make_input("tiff", 15, 124, pool)


# ---------------------------------------------------------------------------------------------- found by fuzzing

# file in tests/data/fuzz_regressions -> what it does now (a message fragment, or None: it reads)
FOUND = {
    # multi-line error: a mutated PNG chunk type holding \r / \n was printed as is in our one-line error
    "png-15-7.png": r"truncated PNG: the 0x8e0d8462 chunk",
    # libtiff tried to allocate what a tag's count claims (GBs): "Out of memory reading of BitsPerSample/Compression"
    "tiff-15-1224.tif": r"corrupt TIFF: tag 258 claims 134217730 bytes",
    "tiff-15-695.tif": r"corrupt TIFF: tag 339 claims",
    "sniff-15-911.tiff": r"corrupt TIFF: tag 259 claims",
    "tiff-15-36.tif": r"corrupt TIFF: tag 34737 claims",
    # struct.error in the new TIFF directory walk: a 7-byte file that starts like a TIFF
    "sniff-15-11041": r"corrupt TIFF: header cut short",
    # TypeError from np.percentile: complex samples (SampleFormat 6)
    "tiff-15-6750.tif": r"complex samples",
    # RuntimeWarnings (overflow in cast/subtract/multiply, divide by zero) from extreme float samples in the stretch
    "tiff-15-105.tif": None,
    "tiff-15-248.tif": None,
    "tiff-15-546.tif": None,
    "tiff-15-6220.tif": None,
}


@pytest.mark.parametrize("name", sorted(FOUND))
def test_fuzz_finding_stays_fixed(name):
    path = REGRESSIONS / name
    if FOUND[name] is None:
        rgb = _read_strict(path, window=(0, 0, 48, 48))
        assert rgb.dtype == np.uint8 and rgb.shape == (48, 48, 3)
    else:
        _one_line_error(path, FOUND[name], window=(0, 0, 48, 48))


def test_every_regression_file_is_listed():
    assert {p.name for p in REGRESSIONS.iterdir()} == set(FOUND)


# ---------------------------------------------------------------------------------------------- claimed sizes


def _png(width: int, height: int, depth: int = 8, color: int = 2, rows: bytes = b"") -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_png_claiming_gigabytes_is_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png(30000, 30000, rows=b"\0" * 90001 * 4))  # 2.7 GB decoded, a few hundred bytes on disk
    with pytest.raises(ImageryError, match=r"30000 x 30000 pixels take up to 3433 MB decoded, more than the 512 MB "
                       r"limit for PNG/JPEG.*--max-decode-mb\)$"):
        read_pair(p, p)  # tiling reads PNG/JPEG decoded whole
    _one_line_error(p, "reading 30000 x 30000 pixels at once takes about 6866 MB, more than the 512 MB limit")


def test_sparse_tiff_claiming_gigabytes_reads_by_window_not_whole(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    p = tmp_path / "sparse.tif"  # 20000 x 20000 x 3 float32 (4.5 GB) in under 1 MB: every tile but one is sparse
    with rasterio.open(p, "w", driver="GTiff", width=20000, height=20000, count=3, dtype="float32", tiled=True,
                       SPARSE_OK=True, nodata=0.0) as ds:
        ds.write(np.ones((3, 1, 1), np.float32), window=rasterio.windows.Window(0, 0, 1, 1))
    assert p.stat().st_size < 2_000_000  # tile tables only
    _one_line_error(p, r"reading 20000 x 20000 pixels at once takes about \d+ MB")  # a watch frame, say
    assert _read_strict(p, window=(0, 0, 64, 64)).shape == (64, 64, 3)


def test_jpeg_with_a_zero_length_segment_is_an_error_not_a_loop(tmp_path):
    p = tmp_path / "z.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0\x00\x00" + b"\xff\xe1\x00\x00" * 1000)
    _one_line_error(p, "corrupt JPEG")


def test_xml_raster_descriptions_are_not_read(tmp_path):
    pytest.importorskip("rasterio")
    p = tmp_path / "scene.vrt"
    p.write_text('<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand dataType="Byte" band="1">'
                 '<SimpleSource><SourceFilename>/etc/passwd</SourceFilename></SimpleSource></VRTRasterBand>'
                 "</VRTDataset>")
    _one_line_error(p, "XML raster description")


def test_tiff_blocks_too_large_to_read_by_window(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    p = tmp_path / "strip.tif"
    with rasterio.open(p, "w", driver="GTiff", width=700, height=700, count=3, dtype="uint8", tiled=False,
                       blockysize=700, compress="deflate") as ds:
        ds.write(np.zeros((3, 700, 700), np.uint8))
    _one_line_error(p, r"blocks of 700 x 700 pixels \(1 MB each\) are too large", opts=ReadOptions(max_decode_mb=1),
                    window=(0, 0, 8, 8))
    assert _read_strict(p, window=(0, 0, 8, 8)).shape == (8, 8, 3)  # the default limit reads it


# ---------------------------------------------------------------------------------------------- float rasters

hypothesis = pytest.importorskip("hypothesis", reason="structured generators need hypothesis (the dev extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e38, -1e38, 3.4028235e38, 1e-45, 1.0]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["float32", "float64"]), bands=st.sampled_from([1, 2, 3, 4, 5]), data=st.data(),
       nodata=st.sampled_from([None, np.nan, np.inf, 0.0, -9999.0, 1e38]))
def test_float_rasters_nan_inf_and_nodata(tmp_path_factory, dtype, bands, data, nodata):
    rasterio = pytest.importorskip("rasterio")
    h, w = data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
    elements = st.one_of(st.sampled_from(_SPECIAL), st.floats(-1e6, 1e6, width=32 if dtype == "float32" else 64))
    arr = data.draw(hnp.arrays(dtype, (bands, h, w), elements=elements))
    p = tmp_path_factory.mktemp("f") / "x.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(p, "w", driver="GTiff", width=w, height=h, count=bands, dtype=dtype, nodata=nodata) as ds:
            ds.write(arr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ImageryWarning)
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with read_pair(p, p) as pair:
            pre, post, valid = pair.read_window(0, 0, w, h)
    used = arr[:3] if bands >= 3 else arr[:1]  # the bands read as RGB (grey replicated)
    want = np.all(np.isfinite(used), axis=0)
    if nodata is not None and not np.isnan(nodata):
        want &= ~np.all(used == np.asarray(nodata, dtype), axis=0)
    assert np.array_equal(valid, want)
    assert pre.dtype == np.uint8 and np.array_equal(pre, post) and not pre[~valid].any()


@settings(max_examples=60, deadline=None, derandomize=True)
@given(head=st.binary(min_size=1, max_size=64), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".dat", ""]))
def test_header_sniffing_any_bytes(tmp_path_factory, head, suffix):
    p = tmp_path_factory.mktemp("s") / f"x{suffix}"
    p.write_bytes(head)
    try:
        open_raster(p)
    except ImageryError as e:
        assert str(p) in str(e) and "\n" not in str(e)


def test_watch_frame_claiming_gigabytes_is_one_bad_frame(tmp_path):
    import cv2

    from edgecc.stream.sources import FrameError, open_source

    (tmp_path / "f000.png").write_bytes(_png(30000, 30000, rows=b"\0" * 90001 * 4))
    cv2.imwrite(str(tmp_path / "f001.png"), np.full((8, 8, 3), 7, np.uint8))
    src = open_source(str(tmp_path))
    with pytest.raises(FrameError, match=r"f000\.png: frame 0 unreadable .*more than the 512 MB limit"):
        src.read()
    assert src.read().image.shape == (8, 8, 3)


def test_jpeg_fill_bytes_before_a_marker_are_valid(tmp_path):
    """T.81 B.1.1.2 allows 0xFF fill bytes before any marker: the header walk reads through them."""
    import cv2

    from edgecc.imagery import open_raster, read_image

    rgb = np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", rgb)[1].tobytes()
    seg = 2 + int.from_bytes(data[4:6], "big")  # after SOI, the APP0 segment: then pad its successor's marker
    p = tmp_path / "fill.jpg"
    p.write_bytes(data[: 2 + seg] + b"\xff\xff\xff" + data[2 + seg:])
    r = open_raster(p)
    assert (r.width, r.height) == (40, 24) and read_image(p).shape == (24, 40, 3)
