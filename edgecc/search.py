"""Find changed tiles in a batch result folder by what their captions say (BM25; no network, no model).

Example:
    >>> from edgecc.search import search, write_geojson
    >>> hits = search("results/", "new buildings near the road", top=20)
    >>> [(h.score, h.tile["id"], h.tile["caption"]) for h in hits]
    >>> write_geojson(hits, "matches.geojson")                      # the matches' outlines, one CRS

    $ edgecc search results/ "new buildings near the road" [--top 20] [--geojson matches.geojson] [--json]

Ranking: Okapi BM25 (k1 = 1.2, b = 0.75) over the captions of every changed tile of every finished item, the
tile's change score breaking ties (many tiles share a caption). Captions come from a closed vocabulary of ~500
words, so a plain BM25 over normalised words does the job: words are lower-cased, a plural "s" is dropped, stop
words go, and a few words map to the one captions use most for the same thing ("new" -> "built", "buildings" ->
"house", "demolished" -> "removed"). It is a dozen lines here rather than a dependency (rank_bm25 would add
nothing but a name).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ._atomic import write_json
from ._batch_outputs import changed_tiles, in_one_crs
from .errors import EdgeccError

__all__ = ["Hit", "search", "rank", "write_geojson", "tokens"]

_STOP = frozenset("a an the of and or in on at to by near along with is are was were be been has have some many "
                  "there this that these those it its as from into".split())
# query words -> the words LEVIR-CC-style captions use for the same thing
_SAME = {"new": "built", "build": "built", "construct": "built", "constructed": "built", "construction": "built",
         "appear": "built", "appeared": "built", "added": "built", "demolish": "removed", "demolished": "removed",
         "destroyed": "removed", "disappeared": "removed", "gone": "removed", "building": "house", "home": "house",
         "street": "road", "tree": "tree", "forest": "tree", "grass": "vegetation", "green": "vegetation"}


@dataclass(frozen=True)
class Hit:
    score: float  # BM25 of the query against the tile's caption
    tile: dict  # id, step, pre_date, post_date, caption, score (change), pre, post, col, row, width, height, crs,
    #             polygon (closed ring in `crs`; pixel coordinates when crs is None)


def tokens(text: str) -> list[str]:
    """Normalised words, the same for queries and captions: 'New buildings' -> ['built', 'house']."""
    out = []
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        if w in _STOP:  # before the plural rule: "this" is not the plural of "thi"
            continue
        if len(w) > 3 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        w = _SAME.get(w, w)
        if w not in _STOP:
            out.append(w)
    return out


def rank(query: str, captions: list[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    """Okapi BM25 score of `query` against each caption (idf with the +1 that keeps it positive)."""
    docs = [tokens(c) for c in captions]
    n = len(docs)
    if not n:
        return []
    avg = sum(map(len, docs)) / n or 1.0
    df = Counter(w for d in docs for w in set(d))
    q = tokens(query)
    scores = []
    for d in docs:
        tf = Counter(d)
        s = 0.0
        for w in q:
            if tf[w]:
                idf = math.log(1.0 + (n - df[w] + 0.5) / (df[w] + 0.5))
                s += idf * tf[w] * (k1 + 1) / (tf[w] + k1 * (1 - b + b * len(d) / avg))
        scores.append(s)
    return scores


def search(out: str | os.PathLike, query: str, top: int | None = 20) -> list[Hit]:
    """The changed tiles of a result folder whose captions match `query`, best first (BM25 > 0)."""
    from .batch import load_results

    if not (Path(out) / "items").is_dir():
        raise EdgeccError(f"{out}: not an edgecc batch result folder (no items/)")
    if not tokens(query):
        raise EdgeccError(f"query {query!r} has no words to search for")
    tiles = changed_tiles(load_results(out))
    scored = [(s, t) for s, t in zip(rank(query, [t["caption"] for t in tiles]), tiles) if s > 0]
    scored.sort(key=lambda st: (-st[0], -st[1]["score"], st[1]["id"], st[1]["step"], st[1]["row"], st[1]["col"]))
    return [Hit(round(s, 4), t) for s, t in scored[:top]]


def write_geojson(hits: list[Hit], path: str | os.PathLike) -> Path:
    """The hits as a GeoJSON FeatureCollection: georeferenced tiles in their common CRS (named in a "crs" member),
    or in RFC 7946 lon/lat when they differ, or pixel coordinates when no hit is georeferenced (pixel hits are left out
    of a file that has georeferenced ones: they have no place on the map)."""
    tiles = [{**h.tile, "match": h.score} for h in hits]
    crs, geo = in_one_crs(tiles)
    if not geo and tiles:
        crs, geo = "pixel", tiles
        warnings.warn(f"{path}: no hit is georeferenced, so the polygons are pixel (col, row) coordinates; GIS tools "
                      "read any GeoJSON as lon/lat", stacklevel=2)
    fc: dict = {"type": "FeatureCollection"}
    if crs != "EPSG:4326":  # RFC 7946 GeoJSON is lon/lat; another CRS is named as GeoJSON 2008 did
        fc["crs"] = {"type": "name", "properties": {"name": _urn(crs)}}
    fc["features"] = [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [t["polygon"]]},
         "properties": {k: t[k] for k in ("id", "step", "pre_date", "post_date", "caption", "score", "match", "col",
                                          "row", "width", "height")}} for t in geo]
    path = Path(path)
    write_json(path, fc, indent=None)
    return path


def _urn(crs: str) -> str:
    return f"urn:ogc:def:crs:EPSG::{crs.split(':', 1)[1]}" if crs.upper().startswith("EPSG:") else crs
