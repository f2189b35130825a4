"""Seed corpus for fuzzing the imagery readers: tiny PNG, JPEG and (Geo)TIFF files that reach every reader path.

    python tests/data/make_fuzz_seeds.py tests/data/fuzz_seeds     # (re)writes the committed corpus
    from make_fuzz_seeds import seeds; corpus = seeds()             # {name: bytes}, same bytes, in memory

Every file is a few hundred bytes (sizes 1 x 1 to 17 x 13), seeded: PNG grey / grey+alpha / RGB / RGBA / palette /
16-bit / interlaced; JPEG grey / colour / progressive; TIFF uint8 to float64, 1 to 6 bands, alpha, nodata (0, NaN,
inf, max), NaN and inf pixels, striped / tiled, deflate / packbits, BigTIFF, georeferenced and not.
"""

from __future__ import annotations

import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np

SEED = 1515


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, depth: int, color: int, rng: np.random.Generator, interlace: int = 0) -> bytes:
    """A valid PNG built by hand (any depth / colour type, filter 0 rows; Adam7 flag set but rows left plain only
    when `interlace` is 0)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    row_bytes = (width * channels * depth + 7) // 8
    raw = b"".join(b"\x00" + rng.integers(0, 256, row_bytes, dtype=np.uint8).tobytes() for _ in range(height))
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0,
                                                                interlace))
    if color == 3:
        out += _png_chunk(b"PLTE", rng.integers(0, 256, 3 * 16, dtype=np.uint8).tobytes())
    return out + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")


def _cv2_bytes(ext: str, img: np.ndarray, params=()) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok, ext
    return buf.tobytes()


def _tif_bytes(data: np.ndarray, **profile) -> bytes:
    """data [C,H,W] -> GeoTIFF bytes via rasterio's in-memory files."""
    from affine import Affine
    from rasterio.io import MemoryFile

    prof = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype)
    geo = profile.pop("geo", True)
    if geo:
        prof.update(crs="EPSG:32615", transform=Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 4100000.0))
    colorinterp = profile.pop("colorinterp", None)
    prof.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning for the plain ones
        with MemoryFile() as mem:
            with mem.open(**prof) as ds:
                ds.write(data)
                if colorinterp:
                    ds.colorinterp = colorinterp
            return mem.read()


def seeds(seed: int = SEED) -> dict[str, bytes]:
    """{file name: bytes}, deterministic for a seed."""
    from rasterio.enums import ColorInterp as CI

    rng = np.random.default_rng(seed)
    out: dict[str, bytes] = {}
    for depth, color in ((8, 0), (8, 2), (8, 3), (8, 4), (8, 6), (16, 0), (16, 2), (16, 6), (1, 0), (4, 3)):
        w, h = int(rng.integers(1, 18)), int(rng.integers(1, 14))
        out[f"png_d{depth}_c{color}.png"] = png_bytes(w, h, depth, color, rng)
    out["png_1x1.png"] = png_bytes(1, 1, 8, 2, rng)
    img = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    out["cv2_rgb.png"] = _cv2_bytes(".png", img)
    out["cv2_rgb.jpg"] = _cv2_bytes(".jpg", img, (1, 90))  # IMWRITE_JPEG_QUALITY
    out["cv2_grey.jpg"] = _cv2_bytes(".jpg", img[:, :, 0])
    out["cv2_progressive.jpg"] = _cv2_bytes(".jpg", img, (2, 1))  # IMWRITE_JPEG_PROGRESSIVE
    out["cv2_1x1.jpg"] = _cv2_bytes(".jpg", img[:1, :1])
    for dtype in ("uint8", "int16", "uint16", "float32", "float64"):
        for count in (1, 2, 3, 4, 6):
            if dtype not in ("uint8", "float32") and count in (2, 6):
                continue
            w, h = int(rng.integers(1, 18)), int(rng.integers(1, 14))
            if np.dtype(dtype).kind == "f":
                data = (rng.standard_normal((count, h, w)) * 100).astype(dtype)
                data.flat[rng.integers(0, data.size, max(1, data.size // 8))] = np.nan
                data.flat[rng.integers(0, data.size, max(1, data.size // 16))] = np.inf
                data.flat[rng.integers(0, data.size, max(1, data.size // 16))] = -np.inf
            else:
                info = np.iinfo(dtype)
                data = rng.integers(info.min, int(info.max) + 1, (count, h, w), dtype=dtype)
            out[f"tif_{dtype}_b{count}.tif"] = _tif_bytes(data)
    f32 = (rng.standard_normal((3, 9, 11)) * 50).astype("float32")
    for name, nd in (("nan", float("nan")), ("inf", float("inf")), ("zero", 0.0), ("max", 3.4e38)):
        d = f32.copy()
        d[:, :3] = nd
        out[f"tif_float32_nodata_{name}.tif"] = _tif_bytes(d, nodata=nd)
    all_nan = np.full((1, 5, 7), np.nan, "float32")
    out["tif_float32_all_nan.tif"] = _tif_bytes(all_nan)
    u8 = rng.integers(0, 256, (4, 12, 16), dtype=np.uint8)
    out["tif_uint8_rgba.tif"] = _tif_bytes(u8, colorinterp=[CI.red, CI.green, CI.blue, CI.alpha])
    out["tif_uint8_nodata0.tif"] = _tif_bytes(u8[:3], nodata=0)
    out["tif_uint8_tiled.tif"] = _tif_bytes(u8[:3], tiled=True, blockxsize=16, blockysize=16, compress="deflate")
    out["tif_uint8_packbits.tif"] = _tif_bytes(u8[:3], compress="packbits")
    out["tif_uint8_lzw_pixel.tif"] = _tif_bytes(u8[:3], compress="lzw", interleave="pixel")
    out["tif_uint8_bigtiff.tif"] = _tif_bytes(u8[:3], BIGTIFF="YES")
    out["tif_uint8_plain.tif"] = _tif_bytes(u8[:3], geo=False)
    return out


def write(out_dir: str | Path, seed: int = SEED) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in seeds(seed).items():
        (out / name).write_bytes(data)
        paths.append(out / name)
    return paths


if __name__ == "__main__":
    written = write(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "fuzz_seeds")
    print(f"{len(written)} seeds, {sum(p.stat().st_size for p in written)} bytes")
