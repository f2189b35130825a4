"""The merged outputs of a batch result folder: every changed tile of every finished item, as rows with outlines.

    tiles = changed_tiles(load_results("results/"))        # [{"id", "step", dates, "caption", "score", ...}]
    write_changes("results/changes.gpkg", records)         # GeoPackage, layers `changes` and `changes_pixel`
    crs, rows = in_one_crs(tiles)                          # outlines in the common CRS (EPSG:4326 if they differ)
"""

from __future__ import annotations

from pathlib import Path

from ._gpkg import PIXEL_CRS, Layer, write_gpkg

FIELDS = (("id", "TEXT"), ("step", "INTEGER"), ("pre_date", "TEXT"), ("post_date", "TEXT"), ("caption", "TEXT"),
          ("score", "REAL"), ("pre", "TEXT"), ("post", "TEXT"), ("col", "INTEGER"), ("row", "INTEGER"),
          ("width", "INTEGER"), ("height", "INTEGER"))


def changed_tiles(records: list[dict]) -> list[dict]:
    """The changed tiles of finished item records; polygons in each pair's CRS (None: pixel coordinates)."""
    out = []
    for rec in records:
        for k, s in enumerate(rec.get("steps", []), 1):
            crs = s.get("crs") if s.get("georeferenced", s.get("crs") is not None) else None
            for t in s["tiles"]:
                if t["changed"]:
                    out.append({"id": rec["id"], "step": k, "pre_date": s.get("pre_date"),
                                "post_date": s.get("post_date"), "caption": t["caption"], "score": t["change_score"],
                                "pre": s["pre"], "post": s["post"], "col": t["col"], "row": t["row"],
                                "width": t["width"], "height": t["height"], "crs": crs, "polygon": t["polygon"]})
    return out


def in_one_crs(tiles: list[dict]) -> tuple[str, list[dict]]:
    """Georeferenced tiles with their polygons in one CRS: the one they share, else EPSG:4326 (reprojected)."""
    geo = [t for t in tiles if t["crs"]]
    crss = {t["crs"] for t in geo}
    crs = crss.pop() if len(crss) == 1 else "EPSG:4326"
    if any(t["crs"] != crs for t in geo):
        geo = [t if t["crs"] == crs else {**t, "crs": crs, "polygon": _reproject_ring(t["polygon"], t["crs"], crs)}
               for t in geo]
    return crs, geo


def _reproject_ring(ring: list, src: str, dst: str) -> list:
    """One closed ring from `src` to `dst`, still one ring: a tile across the antimeridian keeps continuous
    longitudes (179.99, 180.01) instead of being cut into a MultiPolygon or spanning the globe."""
    from rasterio.warp import transform  # the corners themselves (transform_geom cuts at the antimeridian)

    xs, ys = transform(src, dst, [p[0] for p in ring], [p[1] for p in ring])
    if dst.upper() in ("EPSG:4326", "OGC:CRS84"):
        xs = [x + 360.0 * round((xs[0] - x) / 360.0) for x in xs]  # unwrapped next to the first corner
    return [[float(x), float(y)] for x, y in zip(xs, ys, strict=True)]


def write_changes(path: str | Path, records: list[dict]) -> Path:
    """One GeoPackage of every changed tile: layer `changes` (georeferenced pairs) and, when there are any,
    `changes_pixel` (pairs without georeferencing, in pixel coordinates)."""
    tiles = changed_tiles(records)
    crs, geo = in_one_crs(tiles)
    fields = tuple(FIELDS)
    layers = [Layer("changes", crs, fields, [(t["polygon"], t) for t in geo])]
    pixel = [t for t in tiles if not t["crs"]]
    if pixel:
        layers.append(Layer("changes_pixel", PIXEL_CRS, fields, [(t["polygon"], t) for t in pixel]))
    return write_gpkg(path, layers)
