"""`edgecc batch` and `edgecc search` through the API: caption an archive, rerun it (nothing is redone), search it.

    python examples/batch.py                          # a small archive: rendered pairs + the real NAIP series
    python examples/batch.py archive.csv results/     # your manifest; same as:
    edgecc batch archive.csv --out results/ && edgecc search results/ "new buildings near the road"

With no arguments it writes a manifest of 6 rendered pairs (examples/data is one of them, the rest seeded) and,
when ../shared/data is present, the 10-date NAIP series as one sequence.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import cv2

from edgecc.batch import BatchOptions, run_batch
from edgecc.bench import make_inputs
from edgecc.search import search, write_geojson

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT.parent / "shared" / "data" / "real_series" / "naip_nd"


def demo_manifest(d: Path) -> Path:
    """JSON Lines: pairs ({id, pre, post}) and, when the real data is here, a dated series ({id, images})."""
    pre, post = make_inputs(256, n=5, seed=0)
    data = ROOT / "examples" / "data"
    lines = [{"id": "example", "pre": str(data / "pre.png"), "post": str(data / "post.png")}]
    for i in range(5):
        cv2.imwrite(str(d / f"s{i}_pre.png"), pre[i][..., ::-1])
        cv2.imwrite(str(d / f"s{i}_post.png"), post[i][..., ::-1])
        lines.append({"id": f"seeded-{i}", "pre": f"s{i}_pre.png", "post": f"s{i}_post.png"})
    if SERIES.is_dir():  # dates come from the file names (YYYYMMDD)
        lines.append({"id": "naip-nd", "images": [str(p) for p in sorted(SERIES.glob("*.tif"))]})
    (d / "archive.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d / "archive.jsonl"


def main(manifest: str | None = None, out: str | None = None) -> None:
    work = Path(tempfile.mkdtemp(prefix="edgecc-batch-"))
    manifest = manifest or demo_manifest(work)
    out = Path(out or work / "results")
    opts = BatchOptions(geojson=True)  # a process pool, one worker per core; a GeoJSON per pair
    res = run_batch(manifest, out, opts)
    print(f"{res.ok} finished, {res.failed} failed, {res.changed} changed; {res.pairs} pairs, {res.elapsed_s:.1f} s")
    again = run_batch(manifest, out, opts)  # a rerun skips every finished item (same inputs, same settings)
    print(f"rerun: {again.skipped} skipped, {again.ran} run")
    for f in res.failures:
        print(f"failed: row {f['row']} {f['id']}: {f['error']}")
    seq = out / "items" / "naip-nd.json"
    if seq.exists():
        print("timeline:", json.loads(seq.read_text())["timeline"]["summary"])
    hits = search(out, "new buildings near the road", top=5)
    for h in hits:
        print(f"{h.score:.2f}  {h.tile['id']}  {h.tile['caption']}  (change {h.tile['score']:.2f})")
    print("matches:", write_geojson(hits, out / "matches.geojson"), "| all changed tiles:", res.gpkg)


if __name__ == "__main__":  # the guard the process pool needs (workers are spawned)
    main(*sys.argv[1:3])
