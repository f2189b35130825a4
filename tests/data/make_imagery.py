"""Seeded imagery fixtures for tests/test_imagery.py and tests/test_tiling.py.

    python tests/data/make_imagery.py /tmp/fixtures      # writes every fixture file there
    from make_imagery import make_all; paths = make_all(tmp_dir)   # {name: Path}

A smooth synthetic scene (values 60-180, so 0 is free for nodata) of W x H = 256 x 192 pixels on a 1 m UTM grid
(EPSG:32615); the post image adds bright (250) rectangles at `CHANGES` (col, row, w, h), the known changes the
tiling tests look for. Variants cover dtypes, band counts, nodata, a second CRS, a far-away footprint, PNG/JPEG,
mismatched sizes, and bad files (corrupt, truncated, empty, text, a header claiming enormous dimensions).
"""

from __future__ import annotations

import struct
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np

SEED = 1234
W, H = 256, 192
CHANGES = ((20, 20, 16, 16), (200, 150, 40, 30))  # (col, row, w, h) bright rectangles added in post
CRS = "EPSG:32615"
TRANSFORM = (1.0, 0.0, 500000.0, 0.0, -1.0, 4100000.0)  # GDAL order: a, b, c, d, e, f
NODATA_COLS = 64  # geo_nodata_pre.tif: columns [0, 64) are nodata (0)


def scene(seed: int = SEED, width: int = W, height: int = H) -> np.ndarray:
    """Smooth RGB texture, uint8 [H,W,3], values in [60, 180]."""
    rng = np.random.default_rng(seed)
    low = rng.random((height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)  # [h/16, w/16, 3]
    img = cv2.resize(low, (width + 32, height + 32), interpolation=cv2.INTER_CUBIC)[16 : 16 + height, 16 : 16 + width]
    return (60 + 120 * np.clip(img, 0, 1)).astype(np.uint8)


def with_changes(img: np.ndarray, changes=CHANGES, value: int = 250) -> np.ndarray:
    out = img.copy()
    for c, r, w, h in changes:
        out[r : r + h, c : c + w] = value
    return out


def _write_tif(path: Path, data: np.ndarray, crs=CRS, transform=TRANSFORM, nodata=None, **profile) -> Path:
    """data [C,H,W] -> GeoTIFF (tiled 64 x 64 unless told otherwise)."""
    import rasterio
    from affine import Affine

    prof = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype,
                crs=crs, transform=Affine(*transform) if transform else None, nodata=nodata, tiled=True,
                blockxsize=64, blockysize=64)
    prof.update(profile)
    if transform is None:
        prof.pop("transform")
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data)
    return path


def _chw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(img, -1, 0))


def _reproject_4326(src_img: np.ndarray, path: Path) -> Path:
    """Write src_img ([H,W,3] on the UTM grid) reprojected to EPSG:4326 (bilinear), nodata 0 outside."""
    from affine import Affine
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    left, top = TRANSFORM[2], TRANSFORM[5]
    right, bottom = left + W * TRANSFORM[0], top + H * TRANSFORM[4]
    dst_t, dw, dh = calculate_default_transform(CRS, "EPSG:4326", W, H, left, bottom, right, top)
    dst = np.zeros((3, dh, dw), np.uint8)
    reproject(_chw(src_img), dst, src_transform=Affine(*TRANSFORM), src_crs=CRS, dst_transform=dst_t,
              dst_crs="EPSG:4326", resampling=Resampling.bilinear, src_nodata=0, dst_nodata=0)
    return _write_tif(path, dst, crs="EPSG:4326", transform=tuple(dst_t)[:6], nodata=0)


def _huge_tiff(path: Path, width: int = 50000, height: int = 50000) -> Path:
    """A 1-band uint8 TIFF header claiming width x height pixels in one strip that is not there."""
    entries = [  # (tag, type, count, value); type 3 = SHORT, 4 = LONG
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, width * height),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        val = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + val
    ifd += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 64)
    return path


def make_all(out_dir: str | Path, seed: int = SEED) -> dict[str, Path]:
    """Write every fixture into out_dir; returns {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pre = scene(seed)  # [H,W,3] uint8
    post = with_changes(pre)
    p: dict[str, Path] = {}

    p["geo_pre"] = _write_tif(out / "geo_pre.tif", _chw(pre))
    p["geo_post"] = _write_tif(out / "geo_post.tif", _chw(post))
    p["geo_same"] = _write_tif(out / "geo_same.tif", _chw(pre))  # post without changes
    p["geo_post_4326"] = _reproject_4326(post, out / "geo_post_4326.tif")
    far = (TRANSFORM[0], 0.0, TRANSFORM[2] + 100_000.0, 0.0, TRANSFORM[4], TRANSFORM[5])
    p["geo_far_post"] = _write_tif(out / "geo_far_post.tif", _chw(post), transform=far)
    nodata_pre = pre.copy()
    nodata_pre[:, :NODATA_COLS] = 0
    p["geo_nodata_pre"] = _write_tif(out / "geo_nodata_pre.tif", _chw(nodata_pre), nodata=0)
    # uint16 4-band (R, G, B, NIR) at 12-bit-ish scale; float32 reflectance with a NaN block; 1 band grey
    nir = (pre.mean(axis=2, keepdims=True)).astype(np.uint16)
    u16 = np.concatenate([pre.astype(np.uint16) * 16 + 100, nir * 10], axis=2)
    p["geo_u16_4b"] = _write_tif(out / "geo_u16_4b.tif", _chw(u16))
    f32 = pre.astype(np.float32) / 255.0
    f32[:32, :32] = np.nan
    p["geo_f32"] = _write_tif(out / "geo_f32.tif", _chw(f32), nodata=float("nan"))
    p["geo_1band"] = _write_tif(out / "geo_1band.tif", pre[None, :, :, 1].copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning: that is the point of this file
        p["nocrs"] = _write_tif(out / "nocrs.tif", _chw(post), crs=None, transform=None)
    p["geo_rgba"] = _write_tif(out / "geo_rgba.tif", _chw(np.dstack([pre, np.full((H, W), 255, np.uint8)])),
                               photometric="RGB", alpha="YES")

    # PNG / JPEG (OpenCV writes BGR)
    for name, img in (("pre", pre), ("post", post)):
        p[f"{name}_png"] = out / f"{name}.png"
        cv2.imwrite(str(p[f"{name}_png"]), img[:, :, ::-1])
        p[f"{name}_jpg"] = out / f"{name}.jpg"
        cv2.imwrite(str(p[f"{name}_jpg"]), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    p["post_small_png"] = out / "post_small.png"
    cv2.imwrite(str(p["post_small_png"]), cv2.resize(post, (W // 2, H // 2), interpolation=cv2.INTER_AREA)[:, :, ::-1])
    p["u16_png"] = out / "u16.png"
    cv2.imwrite(str(p["u16_png"]), (pre.astype(np.uint16) * 200)[:, :, ::-1])
    p["gray_png"] = out / "gray.png"
    cv2.imwrite(str(p["gray_png"]), pre[:, :, 1])
    rgba = np.dstack([pre[:, :, ::-1], np.full((H, W), 255, np.uint8)])
    rgba[:H // 2, :W // 2, 3] = 0  # top-left quarter transparent -> invalid
    p["rgba_png"] = out / "rgba.png"
    cv2.imwrite(str(p["rgba_png"]), rgba)
    tiny = scene(seed, 30, 20)  # smaller than any tile: padded by caption_scene
    p["tiny_pre_png"], p["tiny_post_png"] = out / "tiny_pre.png", out / "tiny_post.png"
    cv2.imwrite(str(p["tiny_pre_png"]), tiny[:, :, ::-1])
    cv2.imwrite(str(p["tiny_post_png"]), with_changes(tiny, ((5, 5, 10, 8),))[:, :, ::-1])

    # bad inputs
    rng = np.random.default_rng(seed)
    p["corrupt_tif"] = out / "corrupt.tif"
    p["corrupt_tif"].write_bytes(b"II*\x00" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    full = _write_tif(out / "_full_uncompressed.tif", _chw(pre), tiled=False, compress=None)
    p["truncated_tif"] = out / "truncated.tif"
    p["truncated_tif"].write_bytes(full.read_bytes()[: full.stat().st_size * 6 // 10])
    full.unlink()
    gz = _write_tif(out / "garbled.tif", _chw(pre), compress="deflate")  # header fine, compressed blocks garbage
    data = bytearray(gz.read_bytes())
    data[len(data) // 3 : 2 * len(data) // 3] = rng.integers(0, 256, 2 * len(data) // 3 - len(data) // 3,
                                                              dtype=np.uint8).tobytes()
    gz.write_bytes(bytes(data))
    p["garbled_tif"] = gz
    p["empty_tif"] = out / "empty.tif"
    p["empty_tif"].write_bytes(b"")
    p["text_tif"] = out / "text.tif"
    p["text_tif"].write_text("this is not an image, just a note someone saved with the wrong name\n")
    p["huge_tif"] = _huge_tiff(out / "huge.tif")
    p["corrupt_png"] = out / "corrupt.png"
    p["corrupt_png"].write_bytes(p["pre_png"].read_bytes()[:40] + rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    p["truncated_png"] = out / "truncated.png"
    p["truncated_png"].write_bytes(p["pre_png"].read_bytes()[:300])
    return p


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_imagery.py OUT_DIR")
    for name, path in make_all(sys.argv[1]).items():
        print(f"{name:16s} {path}")
