"""Large-scene benchmark: caption a synthetic 10k x 10k GeoTIFF pair tile by tile; print wall time and peak RSS.

    python benchmarks/bench_large_scene.py                         # default bundle (edgecc.load()), 10000 px
    python benchmarks/bench_large_scene.py --size 3000 --captioner tests.conftest:PixelDiffCaptioner
    python benchmarks/bench_large_scene.py --bundle runs/bundle_int8 --backend ort-cpu --batch 16

The pair (EPSG:32615, 0.5 m, 3-band uint8, tiled 512, deflate) is generated strip by strip into --workdir (never a
full array in memory) and reused on later runs with the same size and seed; the post image has seeded bright
rectangles ("new buildings"). Outputs: GeoJSON of changed tiles and a reduced-resolution heatmap GeoTIFF.
Target with the real model on a 2-core CPU: <= 120 s and <= 1.5 GB peak RSS for 10,000 x 10,000 pixels.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's edgecc (and tests.conftest for --captioner) before any install
STRIP = 512  # rows per write; equals the GeoTIFF block height so every block is written once
CRS = "EPSG:32615"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB -> MiB


def _changes(size: int, seed: int, n: int) -> list[tuple[int, int, int, int]]:
    """n seeded rectangles (col, row, w, h), 40-200 px, inside the scene."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(n):
        w, h = (int(v) for v in rng.integers(40, 200, 2))
        out.append((int(rng.integers(0, size - w)), int(rng.integers(0, size - h)), w, h))
    return out


def _strip(size: int, row0: int, rows: int, low: np.ndarray, cell: int) -> np.ndarray:
    """Rows [row0, row0+rows) of a smooth scene: `low` [n,n,3] float32 interpolated every `cell` px.

    Returns uint8 [3,rows,size]."""
    import cv2

    y = (np.arange(row0, row0 + rows) + 0.5) / cell  # [rows] position in low-res cells
    y0 = np.clip(np.floor(y).astype(int), 0, low.shape[0] - 2)
    fy = (y - y0)[:, None, None].astype(np.float32)
    rowsmix = low[y0] * (1 - fy) + low[y0 + 1] * fy  # [rows, n, 3]
    img = cv2.resize(rowsmix, (size, rows), interpolation=cv2.INTER_LINEAR)  # x only: same mapping every strip
    yy, xx = np.mgrid[row0 : row0 + rows, 0:size]
    texture = ((xx // 8 * 7 + yy // 8 * 13) % 11).astype(np.float32)  # mild deterministic block texture
    img = 60 + 110 * img + texture[:, :, None]
    return np.ascontiguousarray(np.moveaxis(np.clip(img, 0, 255).astype(np.uint8), -1, 0))


def generate(workdir: Path, size: int, seed: int, n_changes: int) -> tuple[Path, Path, list]:
    """Write pre.tif / post.tif (size x size) strip by strip; reuse them when they exist with the same recipe."""
    import rasterio
    from affine import Affine

    workdir.mkdir(parents=True, exist_ok=True)
    pre_p, post_p, meta_p = workdir / "pre.tif", workdir / "post.tif", workdir / "recipe.json"
    changes = _changes(size, seed, n_changes)
    recipe = json.loads(json.dumps({"size": size, "seed": seed, "changes": changes, "version": 1}))
    if pre_p.exists() and post_p.exists() and meta_p.exists() and json.loads(meta_p.read_text()) == recipe:
        return pre_p, post_p, changes
    meta_p.unlink(missing_ok=True)
    rng = np.random.default_rng(seed)
    cell = 96
    low = rng.random((size // cell + 3, size // cell + 3, 3)).astype(np.float32)  # [n,n,3] in [0,1)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=CRS,
                   transform=Affine(0.5, 0, 400000.0, 0, -0.5, 4120000.0), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", interleave="pixel", BIGTIFF="IF_SAFER")
    from rasterio.windows import Window

    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), rasterio.open(pre_p, "w", **profile) as pre, \
            rasterio.open(post_p, "w", **profile) as post:  # GDAL_CACHEMAX in bytes: bounded write cache
        for row0 in range(0, size, STRIP):
            rows = min(STRIP, size - row0)
            img = _strip(size, row0, rows, low, cell)  # [3,rows,size] uint8, ~15 MB for 10k
            pre.write(img, window=Window(0, row0, size, rows))
            for c, r, w, h in changes:
                r0, r1 = max(r, row0), min(r + h, row0 + rows)
                if r1 > r0:
                    img[:, r0 - row0 : r1 - row0, c : c + w] = np.array([235, 225, 210], np.uint8)[:, None, None]
            post.write(img, window=Window(0, row0, size, rows))
    meta_p.write_text(json.dumps(recipe))
    print(f"generated {size} x {size} pair in {time.perf_counter() - t0:.1f} s "
          f"({(pre_p.stat().st_size + post_p.stat().st_size) / 2**20:.0f} MiB on disk)")
    return pre_p, post_p, changes


def load_captioner(spec: str | None, bundle: str | None, backend: str):
    """--captioner module:attr (class or factory called with no args, or an instance), else edgecc.load()."""
    if spec:
        mod, _, attr = spec.partition(":")
        obj = getattr(importlib.import_module(mod), attr)
        cap = obj() if isinstance(obj, type) or not hasattr(obj, "caption_batch") else obj
        return cap, spec + (" (MODEL DOUBLE: I/O + tiling timings only)" if "PixelDiff" in spec else "")
    try:
        import edgecc

        return edgecc.load(bundle, backend=backend), f"edgecc.load({bundle or 'default bundle'}, {backend})"
    except Exception as e:
        from tests.conftest import PixelDiffCaptioner

        bar = "!" * 100
        print(f"{bar}\n!! NO REAL MODEL: edgecc.load() failed ({type(e).__name__}: {e})\n"
              f"!! FALLING BACK TO PixelDiffCaptioner, A PIXEL-DIFFERENCE MODEL DOUBLE: the timings below measure\n"
              f"!! I/O + tiling only, NOT the model. Do not report them as model timings.\n{bar}")
        return PixelDiffCaptioner(input_size=256), "PixelDiffCaptioner (MODEL DOUBLE)"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--changes", type=int, default=40)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgecc_bench_large"))
    ap.add_argument("--captioner", help="module:attr of a captioner (class/factory/instance)")
    ap.add_argument("--bundle", help="bundle directory for edgecc.load (default: the packaged default)")
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--tile", type=int, default=0, help="tile size in pixels (default: the model input size)")
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    pre_p, post_p, changes = generate(args.workdir, args.size, args.seed, args.changes)
    rss_after_gen = _rss_mb()
    captioner, what = load_captioner(args.captioner, args.bundle, args.backend)

    from edgecc.imagery import read_pair
    from edgecc.tiling import TileOptions, caption_scene

    opts = TileOptions(tile=args.tile or int(captioner.input_size), overlap=args.overlap, batch=args.batch,
                       progress=not args.no_progress)
    geojson, heat = args.workdir / "changes.geojson", args.workdir / "heat.tif"
    t0 = time.perf_counter()
    with read_pair(pre_p, post_p) as pair:
        scene = caption_scene(captioner, pair, opts, heatmap_path=heat, geojson_path=geojson)
    wall = time.perf_counter() - t0
    n_changed = sum(t.changed for t in scene.tiles)
    result = {
        "captioner": what, "size": args.size, "tile": opts.tile, "overlap": opts.overlap, "batch": opts.batch,
        "tiles": len(scene.tiles), "changed_tiles": n_changed, "seeded_changes": len(changes),
        "wall_s": round(wall, 2), "tiles_per_s": round(len(scene.tiles) / wall, 1),
        "peak_rss_mb": round(_rss_mb(), 1), "peak_rss_mb_after_generation": round(rss_after_gen, 1),
        "timings": scene.timings, "geojson": str(geojson), "heatmap": str(heat),
    }
    print(scene.summary)
    print(f"wall {wall:.1f} s for {args.size} x {args.size} ({result['tiles']} tiles, {result['tiles_per_s']}/s), "
          f"peak RSS {result['peak_rss_mb']:.0f} MiB  [{what}]")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
