"""edgecc.batch: manifests, identity with `edgecc caption --json`, resume, failure isolation, GeoPackage, Ray."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from edgecc.batch import BatchOptions, ManifestError, item_name, load_results, read_manifest, run_batch
from edgecc.bench import make_inputs
from edgecc.cli import app

runner = CliRunner()
_STEP_KEYS = ("caption", "changed", "change_score", "summary", "crs")  # what `edgecc caption --json` says of a pair


def _pairs(d: Path, n: int, seed: int = 7) -> Path:
    """n seeded rendered pairs as PNGs (every third unchanged) and a CSV manifest with relative paths."""
    d.mkdir(parents=True, exist_ok=True)
    pre, post = make_inputs(256, n=n, seed=seed)
    rows = ["id,pre,post"]
    for i in range(n):
        cv2.imwrite(str(d / f"p{i}_a.png"), pre[i][..., ::-1])
        cv2.imwrite(str(d / f"p{i}_b.png"), post[i][..., ::-1])
        rows.append(f"p{i},p{i}_a.png,p{i}_b.png")
    (d / "archive.csv").write_text("\n".join(rows) + "\n")
    return d / "archive.csv"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return _pairs(tmp_path_factory.mktemp("archive"), 4)


def _item(out: Path, iid: str) -> dict:
    return json.loads((out / "items" / f"{item_name(iid)}.json").read_text())


# ---------------------------------------------------------------------------------------------- manifests


def test_manifest_forms(tmp_path, fixtures_dir):
    pre, post = fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif"
    (tmp_path / "pairs.csv").write_text(f"id,pre,post,pre_date,post_date\na,{pre},{post},2020-01-01,\n")
    (tmp_path / "seq.csv").write_text(f"id,date,image\ns,2021-05-01,{post}\ns,2020-05-01,{pre}\ns,2022-05-01,{post}\n")
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"id": "j", "pre": str(pre), "post": str(post)}) + "\n\n"
        + json.dumps({"id": "k", "images": [{"date": "2019", "path": str(post)}, str(pre)]}) + "\n")
    a = read_manifest(tmp_path / "pairs.csv")[0]
    assert (a.kind, a.row, [im.date for im in a.images]) == ("pair", 2, ["2020-01-01", None])
    s = read_manifest(tmp_path / "seq.csv")[0]  # sorted by date, one caption per consecutive pair
    assert s.kind == "sequence" and [im.date for im in s.images] == ["2020-05-01", "2021-05-01", "2022-05-01"]
    assert len(s.pairs) == 2 and s.images[0].path == str(pre)
    j, k = read_manifest(tmp_path / "m.jsonl")
    assert (j.kind, j.row, k.kind, k.row, len(k.images)) == ("pair", 1, "sequence", 3, 2)


def test_dates_are_read_as_dates_and_sorted_in_time(tmp_path, fixtures_dir):
    pre, post = fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif"
    (tmp_path / "seq.csv").write_text(f"id,date,image\nmix,2015-9-26,{post}\nmix,2015-10-01,{pre}\n"
                                      f"mix,20140720,{post}\n")
    assert [im.date for im in read_manifest(tmp_path / "seq.csv")[0].images] == ["2014-07-20", "2015-09-26",
                                                                                 "2015-10-01"]
    (tmp_path / "day.jsonl").write_text(json.dumps({"id": "d", "images": [
        {"date": "2021-06-01T16:00:00Z", "path": str(pre)}, {"date": "2021-06-01T08:00:00Z", "path": str(post)}]}))
    assert [im.date for im in read_manifest(tmp_path / "day.jsonl")[0].images] == ["2021-06-01T08:00:00Z",
                                                                                   "2021-06-01T16:00:00Z"]
    (tmp_path / "bad.csv").write_text(f"id,date,image\nb,2020-13-99,{post}\nb,2021-01-01,{pre}\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(tmp_path / "bad.csv")
    assert e.value.problems == [f"{tmp_path / 'bad.csv'}:2: 'b': {post}: date '2020-13-99' is not a date "
                                "(YYYY-MM-DD or YYYYMMDD)"]


def test_a_line_separator_inside_a_record_is_not_a_new_row(tmp_path, fixtures_dir):
    pre, post = fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif"
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a\u2028b", "pre": str(pre), "post": str(post)},
                                                 ensure_ascii=False) + "\r\n", encoding="utf-8")
    (tmp_path / "m.csv").write_text(f'id,pre,post\n"x\u0085y",{pre},{post}\n', encoding="utf-8")
    assert [it.id for it in read_manifest(tmp_path / "m.jsonl")] == ["a\u2028b"]
    assert [it.id for it in read_manifest(tmp_path / "m.csv")] == ["x\u0085y"]


def test_dates_from_file_names(shared_data, tmp_path):
    series = sorted((shared_data / "real_series/naip_nd").glob("*.tif"))
    m = _write(tmp_path / "m.jsonl", [{"id": "nd", "images": [str(p) for p in reversed(series[:3])]}])
    assert [im.date for im in read_manifest(m)[0].images] == ["2009-08-18", "2010-06-29", "2012-07-31"]


def _write(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@pytest.mark.parametrize("text,expect", [
    ("id,pre\na,x.png\n", "m.csv:1: missing column post"),
    ("id,pre,post\na,p0_a.png,p0_b.png\na,p1_a.png,p1_b.png\n", "m.csv:3: duplicate id 'a' (first on row 2)"),
    ("id,pre,post\na,p0_a.png,p0_b.png\nb,p1_a.png,gone.png\n", "m.csv:3: 'b': gone.png: no such file"),
    ("id,date,image\ns,2020-01-01,p0_a.png\nt,2020-01-01,p1_a.png\nt,2021-01-01,p1_b.png\n",
     "m.csv:2: sequence 's' has 1 image; a sequence needs at least 2"),
    ("id,pre,post\na,,p0_b.png\n", "m.csv:2: missing value for column pre"),
])
def test_bad_manifest_names_the_row(archive, text, expect):
    m = archive.parent / "m.csv"
    m.write_text(text)
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    assert expect in e.value.problems[0] and str(m) in e.value.problems[0]


def test_bad_jsonl_rows(archive):
    m = _write(archive.parent / "m.jsonl", [{"id": "a", "pre": "p0_a.png"}, {"id": "s", "images": ["p0_a.png"]}])
    with m.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(m)
    assert [p.split(": ", 1)[0][-9:] for p in e.value.problems] == ["m.jsonl:1", "m.jsonl:2", "m.jsonl:3"]
    assert "missing column post" in e.value.problems[0] and "has 1 image" in e.value.problems[1]


def test_bad_manifest_loses_nothing_finished(archive, tmp_path):
    out = tmp_path / "out"
    assert runner.invoke(app, ["batch", str(archive), "--out", str(out), "--workers", "1"]).exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "items").iterdir()}
    bad = archive.parent / "bad.csv"
    bad.write_text(archive.read_text() + "p0,p0_a.png,p0_b.png\n")
    r = runner.invoke(app, ["batch", str(bad), "--out", str(out)])
    assert r.exit_code == 2 and f"{bad}:6: duplicate id 'p0'" in r.stderr
    assert {p.name: p.read_bytes() for p in (out / "items").iterdir()} == before


def test_item_names_are_safe_and_distinct():
    assert item_name("p0") == "p0"
    names = {item_name(i) for i in ("a/b", "a_b", "a b", "../x")}
    assert len(names) == 4 and all("/" not in n and not n.startswith(".") for n in names)


# ---------------------------------------------------------------------------------------------- results


def test_identity_with_caption_json(archive, tmp_path):
    """Each pair's record equals `edgecc caption --json` (timings aside), inline and on the process pool."""
    one, pool = tmp_path / "one", tmp_path / "pool"
    assert run_batch(archive, one, BatchOptions(workers=1, progress=False)).ok == 4
    assert run_batch(archive, pool, BatchOptions(workers=2, progress=False)).ok == 4
    for i in range(4):
        a, b = _item(one, f"p{i}"), _item(pool, f"p{i}")
        r = runner.invoke(app, ["caption", str(archive.parent / f"p{i}_a.png"), str(archive.parent / f"p{i}_b.png"),
                                "--json"])
        ref = json.loads(r.stdout)
        step = a["steps"][0]
        assert {k: step[k] for k in _STEP_KEYS} == {k: ref[k] for k in _STEP_KEYS}
        assert [{k: v for k, v in t.items() if k != "polygon"} for t in step["tiles"]] == ref["tiles"]
        assert (a["model"], a["precision"]) == (ref["model"], ref["precision"])
        assert {k: b["steps"][0][k] for k in _STEP_KEYS} == {k: step[k] for k in _STEP_KEYS}
    assert sum(_item(one, f"p{i}")["changed"] for i in range(4)) >= 2  # make_inputs: 2 of 3 pairs gain houses


def test_resume_skips_finished_and_reruns_changed_inputs(tmp_path):
    m = _pairs(tmp_path / "a", 5, seed=3)
    out = tmp_path / "out"
    r1 = run_batch(m, out, BatchOptions(workers=1, limit=2, progress=False))
    assert (r1.ran, r1.skipped, r1.items) == (2, 0, 2)
    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "items").iterdir()}
    r2 = run_batch(m, out, BatchOptions(workers=1, progress=False))
    assert (r2.ran, r2.skipped, r2.ok) == (3, 2, 5)
    assert all((out / "items" / n).stat().st_mtime_ns == t for n, t in stamp.items())  # not rewritten
    cv2.imwrite(str(m.parent / "p1_b.png"), cv2.imread(str(m.parent / "p0_b.png")))  # new content, same path
    r3 = run_batch(m, out, BatchOptions(workers=1, progress=False))
    assert (r3.ran, r3.skipped) == (1, 4)
    r4 = run_batch(m, out, BatchOptions(workers=1, threshold=0.5, progress=False))  # results change: all rerun
    assert r4.ran == 5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 5 and summary["settings"]["threshold"] == 0.5


def test_partial_files_never_look_finished(archive, tmp_path):
    out = tmp_path / "out"
    run_batch(archive, out, BatchOptions(workers=1, progress=False))
    (out / "items" / "p1.json").unlink()
    (out / "items" / ".p1.json.0123abcd.tmp.json").write_text('{"id": "p1", "sta')  # a write cut short
    (out / "items" / "p2.json").write_text((out / "items" / "p2.json").read_text()[:50])  # torn by hand
    (out / "items" / ".p3.json.89abcdef.tmp.json").write_text(json.dumps(_item(out, "p3")))  # complete, not renamed
    r = run_batch(archive, out, BatchOptions(workers=1, progress=False))
    assert (r.ran, r.skipped, r.ok) == (2, 2, 4)
    assert not list((out / "items").glob(".*"))  # a killed run's temporary files are removed by the next run
    assert sorted(rec["id"] for rec in load_results(out)) == ["p0", "p1", "p2", "p3"]  # and never read as records


def test_failure_isolation_and_exit_code(archive, tmp_path, fixtures_dir):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes((archive.parent / "p0_a.png").read_bytes()[:300])
    m = tmp_path / "m.csv"
    a, b = archive.parent / "p0_a.png", archive.parent / "p0_b.png"
    m.write_text(f"id,pre,post\nok,{a},{b}\nbad,{bad},{b}\n"
                 f"far,{fixtures_dir / 'geo_pre.tif'},{fixtures_dir / 'geo_far_post.tif'}\n")
    out = tmp_path / "out"
    r = runner.invoke(app, ["batch", str(m), "--out", str(out), "--workers", "2"])
    assert r.exit_code == 1, r.output
    assert f"{m}:3: bad: {bad}: not a readable image" in r.stderr and f"{m}:4: far:" in r.stderr
    assert _item(out, "ok")["status"] == "ok" and _item(out, "bad")["status"] == "failed"
    assert "overlap" in _item(out, "far")["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ok"], summary["failed"]) == (1, 2) and {f["id"] for f in summary["failures"]} == {"bad", "far"}
    r2 = run_batch(m, out, BatchOptions(workers=1, progress=False))  # failures are retried, the finished skipped
    assert (r2.ran, r2.skipped, r2.failed) == (2, 1, 2)


def test_dry_run_writes_nothing(archive, tmp_path):
    r = runner.invoke(app, ["batch", str(archive), "--out", str(tmp_path / "out"), "--dry-run", "--limit", "3"])
    assert r.exit_code == 0 and "3 items: 0 finished, 3 to run (3 pairs)" in r.stdout
    assert not (tmp_path / "out").exists()


def test_geopackage_and_outputs(tmp_path, fixtures_dir):
    """Georeferenced pairs: changed tiles in one GeoPackage layer in the pairs' CRS; per-pair GeoJSON/heatmap."""
    pytest.importorskip("rasterio", reason="georeferenced outputs need edgecc[geo] (rasterio)")
    m = _write(tmp_path / "m.jsonl", [
        {"id": "g", "pre": str(fixtures_dir / "geo_pre.tif"), "post": str(fixtures_dir / "geo_post.tif"),
         "pre_date": "2020-01-01", "post_date": "2021-01-01"},
        {"id": "s", "images": [str(fixtures_dir / "geo_pre.tif"), str(fixtures_dir / "geo_same.tif"),
                               str(fixtures_dir / "geo_post.tif")]}])
    out = tmp_path / "out"
    res = run_batch(m, out, BatchOptions(workers=1, geojson=True, heatmap=True, threshold=0.05, progress=False))
    assert res.ok == 2 and res.pairs == 3
    g = _item(out, "g")
    assert (out / g["steps"][0]["geojson"]).is_file() and (out / g["steps"][0]["heatmap"]).is_file()
    seq = _item(out, "s")
    assert len(seq["steps"]) == 2 and seq["timeline"]["intervals"][0]["from"] == "image 1"
    assert (out / "geojson" / "s~2.geojson").is_file()
    changed = sum(t["changed"] for r in (g, seq) for s in r["steps"] for t in s["tiles"])
    con = sqlite3.connect(out / "changes.gpkg")
    rows = con.execute("SELECT id, step, pre_date, post_date, caption, score FROM changes").fetchall()
    assert len(rows) == changed > 0 and con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
    assert con.execute("SELECT srs_id FROM gpkg_geometry_columns WHERE table_name='changes'").fetchone()[0] == 32615
    con.close()
    gpd = pytest.importorskip("geopandas", reason="reading the GeoPackage back needs geopandas (edgecc[dev])")
    df = gpd.read_file(out / "changes.gpkg", layer="changes")
    assert len(df) == changed and df.crs.to_epsg() == 32615 and df.geometry.is_valid.all()
    assert set(df.columns) >= {"id", "pre_date", "post_date", "caption", "score", "geometry"}
    gx = df[df["id"] == "g"]
    assert (gx["pre_date"] == "2020-01-01").all() and gx.total_bounds[0] >= 500000  # on the fixture's UTM grid
    again = run_batch(m, out, BatchOptions(workers=1, geojson=True, heatmap=True, threshold=0.05, limit=1,
                                           progress=False))  # a --limit rerun keeps the other item's tiles
    assert again.skipped == 1 and len(gpd.read_file(out / "changes.gpkg", layer="changes")) == changed
    (out / "geojson" / "s~2.geojson").unlink()  # an output deleted by hand: its item runs again and remakes it
    res = run_batch(m, out, BatchOptions(workers=1, geojson=True, heatmap=True, threshold=0.05, progress=False))
    assert (res.ran, res.skipped) == (1, 1) and (out / "geojson" / "s~2.geojson").is_file()


def test_real_series_timeline(shared_data, tmp_path):
    series = sorted((shared_data / "real_series/naip_nd").glob("*.tif"))[:3]
    m = _write(tmp_path / "m.jsonl", [{"id": "naip", "images": [str(p) for p in series]}])
    res = run_batch(m, tmp_path / "out", BatchOptions(workers=1, progress=False))
    rec = _item(tmp_path / "out", "naip")
    assert res.ok == 1 and [(v["from"], v["to"]) for v in rec["timeline"]["intervals"]] == [
        ("2009-08-18", "2010-06-29"), ("2010-06-29", "2012-07-31")]
    assert rec["caption"] == rec["timeline"]["summary"] and rec["steps"][0]["crs"] == "EPSG:26914"


# ---------------------------------------------------------------------------------------------- a killed run


def test_killed_run_resumes_with_the_rest(tmp_path):
    """SIGKILL mid-run: what was written stays finished; a rerun runs only the rest."""
    m = _pairs(tmp_path / "a", 16, seed=5)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgecc.cli", "batch", str(m), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "items").glob("p*.json"))) < 4 and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "items").glob("p*.json")))
    if done == 16:
        pytest.skip("the run finished before it could be killed (a very fast machine)")
    res = run_batch(m, out, BatchOptions(workers=1, progress=False))
    assert (res.skipped, res.ran, res.ok) == (done, 16 - done, 16)


# ---------------------------------------------------------------------------------------------- Ray


def test_ray_local_matches_inline(archive, tmp_path):
    pytest.importorskip("ray", reason="Ray is an extra: pip install 'edgecc[cluster]'")
    inline, on_ray = tmp_path / "inline", tmp_path / "ray"
    run_batch(archive, inline, BatchOptions(workers=1, limit=3, progress=False))
    res = run_batch(archive, on_ray, BatchOptions(engine="ray", workers=2, limit=3, progress=False))
    assert (res.engine, res.workers, res.ok) == ("ray", 2, 3)
    for i in range(3):
        a, b = _item(inline, f"p{i}")["steps"][0], _item(on_ray, f"p{i}")["steps"][0]
        assert {k: a[k] for k in _STEP_KEYS} == {k: b[k] for k in _STEP_KEYS}
    assert run_batch(archive, on_ray, BatchOptions(engine="ray", limit=3, dry_run=True)).skipped == 3


def test_cli_batch_takes_the_reading_options_its_errors_name(archive, tmp_path):
    d = tmp_path / "sizes"
    d.mkdir()
    img = cv2.imread(str(archive.parent / "p0_b.png"))
    cv2.imwrite(str(d / "a.png"), cv2.imread(str(archive.parent / "p0_a.png")))
    cv2.imwrite(str(d / "b.png"), cv2.resize(img, (320, 320)))
    (d / "m.csv").write_text("id,pre,post\nx,a.png,b.png\n")
    r = CliRunner().invoke(app, ["batch", str(d / "m.csv"), "--out", str(tmp_path / "o1"), "--workers", "1"])
    assert r.exit_code == 1 and "use --resize" in _item(tmp_path / "o1", "x")["error"]
    r = CliRunner().invoke(app, ["batch", str(d / "m.csv"), "--out", str(tmp_path / "o2"), "--workers", "1",
                                 "--resize", "--gsd", "0.5", "--overlap", "16"])
    assert r.exit_code == 0, r.output
    assert _item(tmp_path / "o2", "x")["status"] == "ok"


def test_items_in_other_crss_across_the_antimeridian_make_one_ring_each(tmp_path):
    pytest.importorskip("rasterio")
    from pyproj import Transformer

    from edgecc._batch_outputs import in_one_crs, write_changes

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32660", always_xy=True).transform(180.0, 50.0)
    def rec(iid, crs, x0, y0):
        ring = [[x0, y0], [x0, y0 - 100], [x0 + 100, y0 - 100], [x0 + 100, y0], [x0, y0]]
        tile = {"changed": True, "caption": "c", "change_score": 0.9, "col": 0, "row": 0, "width": 256,
                "height": 256, "polygon": ring}
        return {"id": iid, "steps": [{"crs": crs, "georeferenced": True, "pre": "a", "post": "b", "tiles": [tile]}]}

    records = [rec("am", "EPSG:32660", x - 50, y + 50), rec("joplin", "EPSG:32615", 366676.0, 4104257.0)]
    crs, geo = in_one_crs([t for r in records for t in _tiles(r)])
    am = next(t for t in geo if t["id"] == "am")["polygon"]
    assert crs == "EPSG:4326" and len(am) == 5 and all(isinstance(v, float) for p in am for v in p)
    lons = [p[0] for p in am]
    assert 179.99 < min(lons) < 180.0 < max(lons) < 180.01  # one ring, continuous across 180, not the whole globe
    gpd = pytest.importorskip("geopandas")
    df = gpd.read_file(write_changes(tmp_path / "changes.gpkg", records), layer="changes")
    assert len(df) == 2 and df.geometry.is_valid.all() and df.crs.to_epsg() == 4326


def _tiles(record):
    from edgecc._batch_outputs import changed_tiles

    return changed_tiles([record])
