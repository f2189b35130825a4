"""Caption a large scene tile by tile: windowed reads, batched model calls, GeoJSON + heatmap out.

    from edgecc.imagery import read_pair
    from edgecc.tiling import TileOptions, caption_scene
    with read_pair("pre.tif", "post.tif") as pair:
        scene = caption_scene(captioner, pair, TileOptions(overlap=32), heatmap_path="heat.tif",
                              geojson_path="changes.geojson", geojson_crs="EPSG:4326")
    print(scene.summary)   # "5 of 1521 tiles changed; main changes: many houses are built (3), ..."

`captioner` is anything with `input_size: int` and `caption_batch(pre, post) -> list[Caption]` where pre/post are
uint8 [B,S,S,3] RGB and each Caption has `text`, `changed`, `change_score` and `mask` (float32 [h,w] change
probability at low resolution, or None). Tiles are read window by window from both rasters, a batch at a time
(the next batch is read on a helper thread while the model runs); memory is bounded by the batch and the
reduced-resolution heatmap (one heatmap pixel per 8 scene pixels, long side <= 2560: a 10k x 10k scene gives
1250 x 1250 float32, twice: 12.5 MB).

Outputs are written to a temporary file in the target directory and renamed into place (`edgecc._atomic`), so a
failure leaves either the old file or nothing, never a partial one.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecc._atomic import check_outputs, write_bytes, write_text
from edgecc.decoding import NO_CHANGE_CAPTION
from edgecc.errors import ImageryError, warn_imagery
from edgecc.geo import pixel_ring
from edgecc.imagery import Pair

__all__ = ["TileOptions", "TileResult", "SceneResult", "tile_grid", "caption_scene"]

_HEATMAP_STEP = 8  # scene pixels per heatmap pixel (more when the long side would exceed _HEATMAP_SIDE)
_HEATMAP_SIDE = 2560  # the heatmap's long side is at most this (integer downscale of the pre grid)
HEATMAP_NODATA = -1.0  # heatmap pixels no valid tile covered (outside the overlap, nodata, skipped tiles)
_HEATMAP_SUFFIXES = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class TileOptions:
    """How to cut a scene into model inputs.

    Attributes:
        tile: tile side in scene pixels; tiles are resized to `captioner.input_size` when it differs.
        overlap: pixels shared by neighbouring tiles.
        batch: tiles per `caption_batch` call.
        progress: show a rich progress bar on stderr, when it is a terminal and there are more than 16 tiles.
        min_valid: skip tiles whose valid (non-nodata, covered by both images) fraction is below this.
    """

    tile: int = 256
    overlap: int = 32
    batch: int = 8
    progress: bool = True
    min_valid: float = 0.5

    def __post_init__(self):
        if self.tile < 1 or not 0 <= self.overlap < self.tile:
            raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={self.tile} overlap={self.overlap}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if not 0.0 <= self.min_valid <= 1.0:
            raise ValueError(f"min_valid must be in [0, 1], got {self.min_valid}")


@dataclass(frozen=True)
class TileResult:
    """One captioned tile. col,row,width,height: its pixel window on the pre grid; polygon: its outline (closed
    ring of (x, y)) in the pre image's CRS, or in pixel coordinates when the pair is not georeferenced."""

    col: int
    row: int
    width: int
    height: int
    caption: str
    changed: bool
    change_score: float
    polygon: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class SceneResult:
    """A captioned scene. tiles: every captioned tile (tiles skipped as mostly nodata are not listed);
    change_score: the max over tiles; timings: seconds per stage plus tile counts."""

    width: int
    height: int
    crs: str | None
    transform: tuple[float, ...] | None
    tiles: tuple[TileResult, ...]
    summary: str
    caption: str
    changed: bool
    change_score: float
    timings: dict = field(default_factory=dict)


def tile_grid(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Windows (col, row, w, h) covering a width x height image, row-major.

    Stride is tile - overlap; the last tile of a row/column is shifted inward to end at the border (no padding).
    A side shorter than `tile` gets one window of that side's length (caption_scene pads it to `tile`).
    """
    if width < 1 or height < 1:
        raise ValueError(f"image must be at least 1 x 1, got {width} x {height}")
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile} overlap={overlap}")

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        s = list(range(0, n - tile + 1, tile - overlap))
        if s[-1] + tile < n:
            s.append(n - tile)
        return s

    tw, th = min(tile, width), min(tile, height)
    return [(c, r, tw, th) for r in starts(height) for c in starts(width)]


def caption_scene(
    captioner,
    pair: Pair,
    opts: TileOptions = TileOptions(),
    heatmap_path: str | os.PathLike | None = None,
    geojson_path: str | os.PathLike | None = None,
    geojson_crs: str = "image",
) -> SceneResult:
    """Caption every tile of a pair and summarize the scene.

    The scene caption is the caption most changed tiles share (ties: the one with the highest change_score), or,
    when no tile changed, the most common caption. Tile captions are compared and reported without their
    position words ("in the upper left corner of the scene" is where in the tile, not where in the scene) once the
    scene has more than one tile; each tile keeps its own caption in `tiles` and the GeoJSON.

    Args:
        captioner: object with `input_size` and `caption_batch(pre, post)` (see the module docstring).
        pair: from `edgecc.imagery.read_pair`; tiles are windows of its (pre) grid.
        heatmap_path: ".tif"/".tiff": float32 GeoTIFF of change probability with the pre image's CRS and a
            scaled transform (needs rasterio), nodata `HEATMAP_NODATA` where no valid tile looked; ".png": uint8
            0-255 (0 there too). One pixel per 8 scene pixels (or more, long side <= 2560); overlapping tiles are
            blended, each weighted by closeness to its own centre, so tile seams do not show.
        geojson_path: FeatureCollection of the changed tiles (properties: caption, change_score, col, row).
        geojson_crs: "image" (the pre image's CRS, named in a "crs" member; pixel coordinates when the pair is
            not georeferenced) or "EPSG:4326" (RFC 7946 lon/lat, needs a georeferenced pair).
    """
    t_start = time.perf_counter()
    if geojson_crs not in ("image", "EPSG:4326"):
        raise ValueError(f"geojson_crs must be 'image' or 'EPSG:4326', got {geojson_crs!r}")
    if geojson_path is not None and geojson_crs == "EPSG:4326" and not (pair.crs and pair.transform):
        raise ValueError(f"{pair.pre.path}: not georeferenced, so GeoJSON cannot be written in EPSG:4326")
    if heatmap_path is not None and Path(heatmap_path).suffix.lower() not in _HEATMAP_SUFFIXES:
        suffix = Path(heatmap_path).suffix
        raise ValueError(f"{heatmap_path}: heatmap must be .tif/.tiff (GeoTIFF) or .png, not {suffix!r}")
    # a bad output path fails before the work, not after
    check_outputs({"--heatmap": heatmap_path, "--geojson": geojson_path}, (pair.pre.path, pair.post.path))
    size = int(captioner.input_size)
    windows = tile_grid(pair.width, pair.height, opts.tile, opts.overlap)
    scale = max(_HEATMAP_STEP, math.ceil(max(pair.width, pair.height) / _HEATMAP_SIDE))
    heat = None
    if heatmap_path is not None:  # weighted sum and weights of tile masks, each [ceil(H/s), ceil(W/s)] float32
        heat = np.zeros((2, math.ceil(pair.height / scale), math.ceil(pair.width / scale)), np.float32)

    batches = [windows[i : i + opts.batch] for i in range(0, len(windows), opts.batch)]
    results: list[TileResult] = []
    t_read = t_model = 0.0
    stage_ms = {"encode_ms": 0.0, "decode_ms": 0.0}  # summed over batches, from the captions' own timings
    skipped = 0

    def load(batch):
        t0 = time.perf_counter()
        out = [_read_tile(pair, w, opts.tile, size) for w in batch]
        return out, time.perf_counter() - t0

    progress = _progress() if opts.progress and len(windows) > 16 else None
    task = progress.add_task("captioning tiles", total=len(windows)) if progress else None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgecc-read")  # reads batch i+1 during model(i)
    try:
        if progress:
            progress.start()
        pending = pool.submit(load, batches[0])
        for bi, batch in enumerate(batches):
            tiles, dt = pending.result()
            t_read += dt
            if bi + 1 < len(batches):
                pending = pool.submit(load, batches[bi + 1])
            keep = [i for i, t in enumerate(tiles) if t[2] >= opts.min_valid]
            skipped += len(tiles) - len(keep)
            if keep:
                pre = np.stack([tiles[i][0] for i in keep])  # [B,S,S,3] uint8
                post = np.stack([tiles[i][1] for i in keep])
                t0 = time.perf_counter()
                caps = captioner.caption_batch(pre, post)
                t_model += time.perf_counter() - t0
                if caps and getattr(caps[0], "timings_ms", None):  # one timing dict per batch
                    stage_ms["encode_ms"] += caps[0].timings_ms.get("encode", 0.0)
                    stage_ms["decode_ms"] += caps[0].timings_ms.get("decode", 0.0)
                if len(caps) != len(keep):
                    raise RuntimeError(f"captioner returned {len(caps)} captions for {len(keep)} tiles")
                for i, cap in zip(keep, caps, strict=True):
                    win, valid = batch[i], tiles[i][3]
                    results.append(_tile_result(pair, win, cap))
                    if heat is not None:
                        _accumulate(heat, scale, win, cap, valid, opts.tile)
            if progress:
                progress.advance(task, len(batch))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if progress:
            progress.stop()

    if not results:  # nothing was compared: no verdict, and no outputs that would read "no change"
        raise ImageryError(f"{pair.post.path}: no tile has valid data in both images ({skipped} of {len(windows)} "
                           f"tiles are mostly nodata; {opts.min_valid:.0%} valid needed): nothing was compared")
    caption, summary = _summarize(results, len(windows), skipped)
    changed = [t for t in results if t.changed]
    t0 = time.perf_counter()
    if heatmap_path is not None:
        weighted, weight = heat
        heat = np.full_like(weight, HEATMAP_NODATA)
        np.divide(weighted, weight, out=heat, where=weight > 0)
        _write_heatmap(Path(heatmap_path), heat, pair, scale)
    if geojson_path is not None:
        _write_geojson(Path(geojson_path), changed, pair, geojson_crs)
    t_write = time.perf_counter() - t0
    timings = {
        "read_s": round(t_read, 3), "model_s": round(t_model, 3), "write_s": round(t_write, 3),
        "total_s": round(time.perf_counter() - t_start, 3), "tiles": len(windows), "captioned": len(results),
        "skipped": skipped, **{k: round(v, 2) for k, v in stage_ms.items()},
    }
    return SceneResult(
        width=pair.width, height=pair.height, crs=pair.crs, transform=pair.transform, tiles=tuple(results),
        summary=summary, caption=caption, changed=bool(changed),
        change_score=max((t.change_score for t in results), default=0.0), timings=timings,
    )


# ---------------------------------------------------------------------------------------------- per tile


def _read_tile(pair: Pair, win, tile: int, size: int):
    """-> pre uint8 [S,S,3], post uint8 [S,S,3], valid fraction, valid bool [h,w] (window size)."""
    import cv2

    col, row, w, h = win
    pre, post, valid = pair.read_window(col, row, w, h)
    frac = float(valid.mean())
    post[~valid] = pre[~valid]  # no data in either image -> no change there
    if w < tile or h < tile:  # image smaller than a tile: reflect-pad to tile x tile
        pad = ((0, tile - h), (0, tile - w), (0, 0))
        mode = "reflect" if min(w, h) > 1 else "edge"
        pre, post = np.pad(pre, pad, mode=mode), np.pad(post, pad, mode=mode)
    if tile != size:
        interp = cv2.INTER_AREA if tile > size else cv2.INTER_LINEAR
        pre = cv2.resize(pre, (size, size), interpolation=interp)
        post = cv2.resize(post, (size, size), interpolation=interp)
    return pre, post, frac, valid


def _tile_result(pair: Pair, win, cap) -> TileResult:
    col, row, w, h = win
    ring = pixel_ring(pair.transform, (col, row, col + w, row + h))  # map coordinates, or pixels without a transform
    return TileResult(col=col, row=row, width=w, height=h, caption=str(cap.text), changed=bool(cap.changed),
                      change_score=float(cap.change_score), polygon=tuple(ring))


def _accumulate(heat: np.ndarray, scale: int, win, cap, valid: np.ndarray, tile: int) -> None:
    """Add the tile's change mask, weighted by closeness to the tile centre and by valid pixels, into heat
    [2,Hs,Ws] (weighted sum, weights), area-averaged over each heatmap pixel's `scale` x `scale` scene pixels."""
    import cv2

    col, row, w, h = win
    if cap.mask is None:
        value = np.full((h, w), float(cap.change_score), np.float32)
    else:  # [mh,mw] over the (padded) tile x tile input -> the window at scene resolution
        m = np.asarray(cap.mask, np.float32)
        value = cv2.resize(m, (tile, tile) if w < tile or h < tile else (w, h), interpolation=cv2.INTER_LINEAR)
        value = np.clip(value[:h, :w], 0.0, 1.0)
    weight = valid * np.outer(_ramp(h), _ramp(w))  # [h,w] float: 0 on invalid pixels
    r0, c0 = row // scale, col // scale
    r1, c1 = math.ceil((row + h) / scale), math.ceil((col + w) / scale)
    grid = np.zeros((2, (r1 - r0) * scale, (c1 - c0) * scale), np.float32)  # the window on whole heatmap pixels
    dy, dx = row - r0 * scale, col - c0 * scale
    grid[0, dy : dy + h, dx : dx + w] = weight * value
    grid[1, dy : dy + h, dx : dx + w] = weight
    heat[:, r0:r1, c0:c1] += grid.reshape(2, r1 - r0, scale, c1 - c0, scale).sum(axis=(2, 4))


def _ramp(n: int) -> np.ndarray:
    """[n] weights: 1 at the centre falling linearly towards the ends (never 0, so a lone tile still counts)."""
    x = (np.arange(n, dtype=np.float32) + 0.5) / n
    return 1.0 - np.abs(2.0 * x - 1.0) + 1e-3


# Where a phrase says something is in the tile ("in the upper left corner of the scene", "at the top"), unless
# it goes on to say of what ("on the left side of the road"): tile-relative, so wrong for a whole scene.
_POS = (r"(?:top|bottom|upper|lower|left|right|middle|center|centre|central|north|south|east|west"
        r"|(?:upper|lower|top|bottom)-(?:left|right))")
_PART = r"(?:corner|corners|side|sides|part|parts|edge|edges|end|half|area|areas)"
_POSITION = re.compile(
    rf"\s*\b(?:at|in|on|to|near)\s+the\s+{_POS}(?:\s+{_POS})?(?:\s+{_PART})?"
    rf"(?:\s+of\s+the\s+(?:scene|image|picture|map|area))?(?!\s+(?:of|{_PART}|{_POS})\b)(?![\w-])")


def strip_position(caption: str) -> str:
    """A tile caption without its tile-relative position phrases: 'a road is built at the top' -> 'a road is built'."""
    out = " ".join(_POSITION.sub("", caption).split())
    return out or caption


def _summarize(results: list[TileResult], n_tiles: int, skipped: int) -> tuple[str, str]:
    """-> (scene caption, summary line); see caption_scene for how the caption is picked."""
    text = {t: t.caption if n_tiles == 1 else strip_position(t.caption) for t in results}
    changed = [t for t in results if t.changed]
    counts = Counter(text[t] for t in changed)
    best = {}
    for t in changed:
        best[text[t]] = max(best.get(text[t], 0.0), t.change_score)
    ranked = sorted(counts, key=lambda c: (-counts[c], -best[c], c))
    summary = f"{len(changed)} of {n_tiles} tiles changed"
    if skipped:
        summary += f" ({skipped} skipped as mostly nodata)"
    if ranked:
        summary += "; main changes: " + ", ".join(f"{c} ({counts[c]})" for c in ranked[:3])
        caption = ranked[0]
    else:
        quiet = Counter(text[t] for t in results)
        caption = quiet.most_common(1)[0][0] if quiet else NO_CHANGE_CAPTION
    return caption, summary


def _progress():
    """A progress bar on stderr, shown only when stderr is a terminal (stdout stays the caption alone)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


# ---------------------------------------------------------------------------------------------- outputs


def _write_heatmap(path: Path, heat: np.ndarray, pair: Pair, scale: int) -> None:
    """heat [Hs,Ws] float32 in [0,1] or HEATMAP_NODATA -> GeoTIFF (float32, nodata declared, pre CRS, transform
    scaled by `scale`) or PNG (uint8, nodata as 0)."""
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        from affine import Affine

        profile = dict(driver="GTiff", width=heat.shape[1], height=heat.shape[0], count=1, dtype="float32",
                       nodata=HEATMAP_NODATA, compress="deflate", tiled=True, blockxsize=256, blockysize=256)
        if heat.shape[0] < 256 or heat.shape[1] < 256:
            profile.update(tiled=False)
            profile.pop("blockxsize")
            profile.pop("blockysize")
        if pair.crs is not None:
            profile["crs"] = pair.crs
        # not georeferenced: scene pixel coordinates, like the GeoJSON's, so the heatmap still lies on the image
        profile["transform"] = Affine(*(pair.transform or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))) @ Affine.scale(scale)
        from rasterio.io import MemoryFile

        with MemoryFile() as mem:  # encoded in memory: GDAL writing to a file can pass over a short write
            with mem.open(**profile) as ds:
                ds.write(heat, 1)
                ds.update_tags(description="edgecc change probability (tiles blended by distance to their centre)",
                               scale=str(scale))
            data = mem.read()
        write_bytes(path, data)
    elif suffix == ".png":
        import cv2

        img = np.rint(np.clip(heat, 0, 1) * 255).astype(np.uint8)
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise ValueError(f"{path}: could not encode the heatmap as PNG ({img.shape})")
        write_bytes(path, buf.tobytes())
    else:
        raise ValueError(f"{path}: heatmap must be .tif/.tiff (GeoTIFF) or .png, not {path.suffix!r}")


def _write_geojson(path: Path, tiles: list[TileResult], pair: Pair, crs: str) -> None:
    features = []
    to4326 = crs == "EPSG:4326"
    if to4326:
        from rasterio.warp import transform_geom
    for t in tiles:
        geom = {"type": "Polygon", "coordinates": [[list(p) for p in t.polygon]]}
        if to4326:
            geom = transform_geom(pair.crs, "EPSG:4326", geom)
        features.append({"type": "Feature", "geometry": geom, "properties": {
            "caption": t.caption, "change_score": round(t.change_score, 6), "col": t.col, "row": t.row,
            "width": t.width, "height": t.height}})
    fc: dict = {"type": "FeatureCollection"}
    if not to4326:
        if pair.crs is None:
            fc["crs"] = {"type": "name", "properties": {"name": "pixel"}}  # not georeferenced: pixel col, row
            warn_imagery(f"{path}: the pair is not georeferenced, so its polygons are pixel (col, row) coordinates; "
                         "GIS tools read any GeoJSON as lon/lat (the JSON output carries the same boxes)")
        else:
            fc["crs"] = {"type": "name", "properties": {"name": _crs_urn(pair.crs)}}
    fc["features"] = features
    write_text(path, json.dumps(fc))


def _crs_urn(crs: str) -> str:
    """'EPSG:32615' -> 'urn:ogc:def:crs:EPSG::32615' (the GeoJSON 2008 "crs" member); other CRSs as given."""
    if crs.upper().startswith("EPSG:"):
        return f"urn:ogc:def:crs:EPSG::{crs.split(':', 1)[1]}"
    return crs
