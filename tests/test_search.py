"""edgecc.search: BM25 over the changed tiles' captions of a batch result folder; printing and GeoJSON export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecc.cli import app
from edgecc.errors import EdgeccError
from edgecc.search import rank, search, tokens, write_geojson

runner = CliRunner()

_CAPTIONS = {  # tile captions of a small result folder, (item, caption, change score)
    "a": [("many houses are built along the road", 0.91), ("a road is built", 0.85)],
    "b": [("some buildings are constructed near the road", 0.80), ("the vegetation has been restored", 0.97)],
    "c": [("a large house appears in the bareland", 0.75), ("there is no difference", 0.10)],
}


def _folder(root: Path, crs: dict | None = None) -> Path:
    """A batch result folder written by hand: one item per key, one 100 m tile per caption (col 0, 1, ...)."""
    (root / "items").mkdir(parents=True)
    for iid, caps in _CAPTIONS.items():
        c = (crs or {}).get(iid)
        tiles = []
        for k, (text, score) in enumerate(caps):
            x0, y0 = (500000.0 + 100 * k, 4100000.0) if c else (256.0 * k, 0.0)
            dy = -100.0 if c else 256.0
            ring = [[x0, y0], [x0 + abs(dy), y0], [x0 + abs(dy), y0 + dy], [x0, y0 + dy], [x0, y0]]
            tiles.append({"col": 256 * k, "row": 0, "width": 256, "height": 256, "caption": text,
                          "changed": score >= 0.5, "change_score": score, "polygon": ring})
        step = {"pre": f"{iid}0.tif", "post": f"{iid}1.tif", "pre_date": "2020-01-01", "post_date": "2021-01-01",
                "caption": caps[0][0], "changed": True, "change_score": max(s for _, s in caps), "tiles": tiles,
                "summary": "", "crs": c, "georeferenced": c is not None}
        rec = {"id": iid, "kind": "pair", "status": "ok", "steps": [step]}
        (root / "items" / f"{iid}.json").write_text(json.dumps(rec))
    (root / "items" / "x.json").write_text(json.dumps({"id": "x", "status": "failed", "error": "corrupt"}))
    return root


def test_tokens_normalise_queries_and_captions_alike():
    assert tokens("New buildings near the road") == ["built", "house", "road"]
    assert tokens("many houses are built along the road") == ["house", "built", "road"]
    assert tokens("The trees were demolished") == ["tree", "removed"]


def test_bm25_prefers_rare_matching_words():
    caps = ["a road is built", "many houses are built along the road", "the vegetation has been restored"]
    s = rank("houses near the road", caps)
    assert s[1] > s[0] > 0 and s[2] == 0
    s = rank("vegetation", caps)  # one document holds the word: only it scores
    assert s[2] > 0 and s[0] == s[1] == 0
    assert rank("road", []) == []


def test_search_ranks_changed_tiles(tmp_path):
    out = _folder(tmp_path / "r")
    hits = search(out, "new buildings near the road")
    assert [h.tile["caption"] for h in hits[:2]] == ["many houses are built along the road",
                                                     "some buildings are constructed near the road"]
    assert all(h.tile["caption"] != "there is no difference" for h in hits)  # unchanged tiles are not indexed
    assert [h.tile["caption"] for h in search(out, "vegetation")] == ["the vegetation has been restored"]
    assert len(search(out, "road", top=1)) == 1 and search(out, "airport") == []


def test_search_errors_are_one_line(tmp_path):
    with pytest.raises(EdgeccError, match="not an edgecc batch result folder"):
        search(tmp_path, "road")
    with pytest.raises(EdgeccError, match="no words"):
        search(_folder(tmp_path / "r"), "the of")


def test_geojson_export_in_one_crs(tmp_path):
    out = _folder(tmp_path / "r", crs={"a": "EPSG:32615", "b": "EPSG:32615", "c": "EPSG:32615"})
    path = write_geojson(search(out, "road"), tmp_path / "m.geojson")
    fc = json.loads(path.read_text())
    assert fc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32615"
    assert [f["properties"]["id"] for f in fc["features"]] == ["a", "a", "b"]
    assert fc["features"][0]["properties"]["caption"] == "a road is built"  # the shortest caption with the word
    assert fc["features"][0]["geometry"]["coordinates"][0][0] == [500100.0, 4100000.0]
    pytest.importorskip("rasterio", reason="reprojection needs edgecc[geo]")
    out2 = _folder(tmp_path / "r2", crs={"a": "EPSG:32615", "b": "EPSG:32616", "c": "EPSG:32615"})
    fc = json.loads(write_geojson(search(out2, "road"), tmp_path / "m2.geojson").read_text())
    lon, lat = fc["features"][0]["geometry"]["coordinates"][0][0]
    assert "crs" not in fc and -100 < lon < -90 and 30 < lat < 40  # RFC 7946: lon/lat, no crs member


def test_cli_search_prints_and_exports(tmp_path):
    out = _folder(tmp_path / "r")
    r = runner.invoke(app, ["search", str(out), "houses near the road", "--geojson", str(tmp_path / "h.geojson")])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert "many houses are built along the road" in lines[0] and "2020-01-01..2021-01-01" in lines[0]
    fc = json.loads((tmp_path / "h.geojson").read_text())
    assert fc["crs"]["properties"]["name"] == "pixel" and len(fc["features"]) == len(lines)
    r = runner.invoke(app, ["search", str(out), "vegetation", "--json"])
    assert json.loads(r.stdout)["id"] == "b"
    r = runner.invoke(app, ["search", str(tmp_path), "road"])
    assert r.exit_code == 2 and "not an edgecc batch result folder" in r.stderr


def test_stop_words_are_dropped_before_the_plural_rule():
    from edgecc.search import tokens

    assert tokens("this is") == [] and tokens("Houses were built") == tokens("house built")
