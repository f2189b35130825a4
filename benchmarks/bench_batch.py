"""Benchmark `edgecc batch` on a 200-pair archive: throughput per engine, a killed run resumed, identity.

    python benchmarks/bench_batch.py                       # 200 pairs: single process, local pool, local Ray (2)
    python benchmarks/bench_batch.py --quick               # 40 pairs, a smoke run (checks the script, not figures)
    python benchmarks/bench_batch.py --no-ray --workers 4  # a bigger machine, no Ray installed

The archive: half rendered pairs (`edgecc.bench.make_inputs`, seeded: houses along a road, every third pair
unchanged) and half real 256 x 256 crops of real pairs in ../shared/data/real_pairs (DSIFN, DSIFN-512 quarters,
LEVIR-CD tiles cut in 16); all rendered when ../shared/data is absent (said in the JSON). Every pair is one model
input (256 x 256 PNGs), so pairs/s is tiles/s.

Measured, each engine into a fresh result folder with the default bundle and its default decoding:
- throughput: pairs/s while items run (`run_s`: worker start-up included, manifest checks and hashing not) and
  end to end (`wall_s`), for one process, the local pool (`--workers`, default the cores, 1 thread each) and local
  Ray with 2 actors; scaling efficiency = pool pairs/s / (single pairs/s x workers).
- resume: `edgecc batch` (a subprocess, the pool) is SIGKILLed once half the items are written; a rerun must run
  exactly the rest and end with every item finished.
- identity: every engine's captions and scores equal, and equal to per-pair `edgecc caption --json` (all pairs;
  `--identity N` checks the first N).
- cost on paper: core-hours and cost of 1,000 km^2 at 0.5 m from the measured single-process time per tile.

Writes benchmarks/results/batch-<cpu>-<date>.json (or --out).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

from edgecc.batch import BatchOptions, item_name, run_batch
from edgecc.bench import make_inputs

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "real_pairs"
_KEYS = ("caption", "changed", "change_score")
USD_PER_CORE_HOUR = 0.04  # assumption for the paper estimate: on-demand compute-optimised x86, per vCPU-hour (one
#                           single-threaded worker per vCPU); spot capacity costs about a third of it


def make_archive(d: Path, n: int) -> tuple[Path, dict]:
    """n pairs: rendered + real 256 px crops (half each when the real data is here) -> (manifest, composition)."""
    d.mkdir(parents=True, exist_ok=True)
    real = _real_crops(n // 2) if SHARED.is_dir() else []
    pre, post = make_inputs(256, n=n - len(real), seed=14)
    pairs = [(f"r{i:03d}", pre[i][..., ::-1], post[i][..., ::-1]) for i in range(len(pre))]  # RGB -> BGR files
    pairs += real
    rows = ["id,pre,post"]
    for iid, a, b in pairs:
        cv2.imwrite(str(d / f"{iid}_a.png"), a)
        cv2.imwrite(str(d / f"{iid}_b.png"), b)
        rows.append(f"{iid},{iid}_a.png,{iid}_b.png")
    (d / "archive.csv").write_text("\n".join(rows) + "\n")
    return d / "archive.csv", {"rendered": len(pre), "real": len(real)}


def _real_crops(n: int) -> list:
    out = []
    sources = [("dsifn", "A", "B"), ("dsifn_512", "A", "B"), ("levircd_tiles", "A", "B")]
    for name, a_dir, b_dir in sources:
        for a_path in sorted((SHARED / name / a_dir).glob("*.png")):
            a, b = cv2.imread(str(a_path)), cv2.imread(str(SHARED / name / b_dir / a_path.name))
            if a is None or b is None or a.shape != b.shape:
                continue
            for r in range(0, a.shape[0] - 255, 256):
                for c in range(0, a.shape[1] - 255, 256):
                    out.append((f"{name}-{a_path.stem}-{r}-{c}", a[r:r + 256, c:c + 256], b[r:r + 256, c:c + 256]))
    step = max(1, len(out) // n) if out else 1
    return out[::step][:n]  # spread over sources


def _results(out: Path, ids: list[str]) -> dict:
    recs = {i: json.loads((out / "items" / f"{item_name(i)}.json").read_text()) for i in ids}
    return {i: tuple(r["steps"][0][k] for k in _KEYS) if r["status"] == "ok" else r["error"] for i, r in recs.items()}


def run_engine(manifest: Path, out: Path, opts: BatchOptions) -> dict:
    t0 = time.perf_counter()
    res = run_batch(manifest, out, opts)
    wall = time.perf_counter() - t0
    s = json.loads((out / "summary.json").read_text())
    return {"engine": res.engine, "workers": res.workers, "threads": res.threads, "pairs": res.pairs, "ok": res.ok,
            "failed": res.failed, "run_s": s["run_s"], "wall_s": round(wall, 3),
            "first_result_s": s["first_result_s"], "steady_pairs_per_s": s["steady_pairs_per_s"],
            "pairs_per_s": round(res.pairs / s["run_s"], 2), "pairs_per_s_wall": round(res.pairs / wall, 2)}


def resume_check(manifest: Path, out: Path, n: int, workers: int) -> dict:
    cmd = [sys.executable, "-m", "edgecc.cli", "batch", str(manifest), "--out", str(out), "--workers", str(workers),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    items = out / "items"
    while proc.poll() is None and (len(list(items.glob("*.json"))) if items.is_dir() else 0) < n // 2:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(items.glob("*.json")))
    temps = len(list(items.glob(".*.tmp.*")))
    res = run_batch(manifest, out, BatchOptions(workers=workers, progress=False))
    return {"killed_after_items": done, "temp_files_left": temps, "rerun_ran": res.ran, "rerun_skipped": res.skipped,
            "finished": res.ok, "ok": res.skipped == done and res.ran == n - done and res.ok == n}


def caption_json(manifest: Path, ids: list[str]) -> dict:
    """Per-pair `edgecc caption --json`, through the CLI in this process (one load per pair, as a user would)."""
    from typer.testing import CliRunner

    from edgecc.cli import app

    runner, out = CliRunner(), {}
    for i in ids:
        r = runner.invoke(app, ["caption", str(manifest.parent / f"{i}_a.png"), str(manifest.parent / f"{i}_b.png"),
                                "--json"])
        j = json.loads(r.stdout)
        out[i] = tuple(j[k] for k in _KEYS)
    return out


def paper_cost(pairs_per_s_one_core: float, km2: float = 1000.0, gsd: float = 0.5, tile: int = 256,
               overlap: int = 32) -> dict:
    """Tiles, core-hours and cost of captioning `km2` at `gsd` m (one date pair) at the measured rate per core."""
    stride_m = (tile - overlap) * gsd
    tiles = km2 * 1e6 / stride_m**2
    core_h = tiles / pairs_per_s_one_core / 3600
    return {"km2": km2, "gsd_m": gsd, "tile_px": tile, "overlap_px": overlap, "tiles": round(tiles),
            "s_per_tile_one_core": round(1 / pairs_per_s_one_core, 5), "core_hours": round(core_h, 2),
            "usd_per_core_hour_assumed": USD_PER_CORE_HOUR, "usd": round(core_h * USD_PER_CORE_HOUR, 2),
            "wall_minutes_on_100_cores": round(core_h * 60 / 100, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--quick", action="store_true", help="40 pairs, 10 checked against edgecc caption")
    ap.add_argument("--workers", type=int, default=None, help="local pool workers (default: the cores)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--identity", type=int, default=None, help="check the first N pairs against edgecc caption")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    n = 40 if a.quick else a.pairs
    from edgecc.cpu import cpu

    workers = a.workers or cpu().cores
    work = a.workdir or Path(tempfile.mkdtemp(prefix="edgecc-bench-batch-"))
    manifest, composition = make_archive(work / "archive", n)
    ids = [line.split(",")[0] for line in manifest.read_text().splitlines()[1:]]
    report = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "cores": cpu().cores, "load_avg_start": os.getloadavg(), "pairs": n, "archive": composition,
              "engines": {}}

    def step(name, opts):
        r = run_engine(manifest, work / name, opts)
        report["engines"][name] = r
        print(f"{name:8s} {r['workers']} x {r['threads']} threads: {r['pairs_per_s']:.1f} pairs/s "
              f"({r['pairs']} pairs in {r['run_s']:.1f} s; {r['pairs_per_s_wall']:.1f}/s end to end; start-up "
              f"{r['first_result_s']:.1f} s, then {r['steady_pairs_per_s'] or 0:.1f}/s)", file=sys.stderr)

    step("single", BatchOptions(workers=1, threads=1, progress=False))
    step("pool", BatchOptions(workers=workers, threads=1, progress=False))
    ray_ok = False
    if not a.no_ray:
        try:
            import ray  # noqa: F401

            step("ray", BatchOptions(engine="ray", workers=2, threads=1, progress=False))
            ray_ok = True
        except ImportError:
            report["engines"]["ray"] = {"skipped": "ray not installed (pip install 'edgecc[cluster]')"}
    single = report["engines"]["single"]["pairs_per_s"]
    steady = report["engines"]["single"]["steady_pairs_per_s"]
    eng = report["engines"]
    report["scaling_efficiency"] = {  # pairs/s over (single x workers): whole run, and after start-up
        "pool": round(eng["pool"]["pairs_per_s"] / (single * workers), 3),
        "pool_steady": round(eng["pool"]["steady_pairs_per_s"] / (steady * workers), 3),
        **({"ray": round(eng["ray"]["pairs_per_s"] / (single * 2), 3),
            "ray_steady": round(eng["ray"]["steady_pairs_per_s"] / (steady * 2), 3)} if ray_ok else {})}

    ran = [name for name, r in report["engines"].items() if "skipped" not in r]
    results = {name: _results(work / name, ids) for name in ran}
    first = results["single"]
    k = a.identity if a.identity is not None else (10 if a.quick else n)
    ref = caption_json(manifest, ids[:k])
    report["identity"] = {
        "engines_equal": all(r == first for r in results.values()),
        "checked_against_caption_json": k,
        "equal_to_caption_json": all(first[i] == ref[i] for i in ids[:k]),
        "mismatches": [i for i in ids[:k] if first[i] != ref[i]][:10],
        "changed": sum(1 for v in first.values() if isinstance(v, tuple) and v[1]),
    }
    report["resume"] = resume_check(manifest, work / "resume", n, workers)
    report["paper_1000km2_0.5m"] = paper_cost(steady)  # one worker's rate once started, per core
    report["load_avg_end"] = os.getloadavg()
    report["note"] = ("timings depend on the machine's load; load_avg_start/end show the contention during the "
                      "run")
    out = a.out or ROOT / "benchmarks" / "results" / (
        f"batch{'-quick' if a.quick else ''}-{cpu().cores}core-{report['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("scaling_efficiency", "identity", "resume", "paper_1000km2_0.5m")},
                     indent=1))
    print(f"wrote {out}", file=sys.stderr)
    ok = report["identity"]["engines_equal"] and report["identity"]["equal_to_caption_json"] and report["resume"]["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
