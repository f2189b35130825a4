"""Flight simulator over real image pairs: `edgecc watch` registration, recall, false events, latency, memory.

    python benchmarks/bench_flight.py                      # the full run (about 8 minutes on a quiet 2-core CPU)
    python benchmarks/bench_flight.py --quick              # one flight per dataset, short (about 1 minute)
    python benchmarks/bench_flight.py --gps                # every frame also has a GPS/compass prior

Each flight (`tests/data/make_flight.py: real_flight`): the reference is the whole earlier-date scene (GeoTIFFs keep
their georeference), the frames are views of the later-date scene along a lawn-mower path with jitter, rotation
within +-10 deg, scale within +-10%, brightness drift, motion blur every 13th frame, a corrupt frame every 97th and
a source drop of 8 frames. Scenes from ../shared/data: SZTAKI AirChange, WHU-CD, the LEVIR-CD tiles, the Joplin
GeoTIFF chips, and NAIP dates (no man-made change: every event there is false).

Reported per dataset and overall, into benchmarks/results/flight.json:
  registered: later-date frames registered / frames delivered (corrupt frames excluded);
  reg_error_px median/p90: mean distance of the frame's corners and centre, registered vs true pose, map px;
  reg_error_dates_aligned_px_median: the same error against the true pose corrected by how the dataset's two dates
      line up at that place (ECC of the later date's own pixels onto the map; every 5th registered frame): the true
      poses assume the dates are co-registered, which they are only to a few pixels;
  recall: changed regions (ground-truth components >= 400 px) that one delivered frame sees 90% of, and that an event
      box touches (8 px slack) / those seen (SZTAKI, WHU-CD, LEVIR-CD: the datasets with masks);
  false events per 1,000 frames over unchanged areas (true footprint < 0.2% changed; NAIP: every frame);
  latency at 30 fps (live, latest frame wins, gate open with one observation: every frame's tiles through the model
      and every tile not next to another an event, decoded: the worst case),
      p95 event latency with the reference cache and without (re-encoding the reference), and the speedup;
  peak RSS of a separate process watching a 20k x 20k GeoTIFF map (tiled, with overviews; telemetry prior).
"""

from __future__ import annotations

import argparse
import glob
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests" / "data"))
import make_flight  # noqa: E402

import edgecc  # noqa: E402
from edgecc.stream import EventWriter, Frame, FrameError, FrameSource, Monitor, ReferenceMap, WatchOptions  # noqa: E402


def _rgb(p: str) -> np.ndarray:
    if p.endswith(".tif"):
        import rasterio

        with rasterio.open(p) as d:
            return np.ascontiguousarray(d.read([1, 2, 3]).transpose(1, 2, 0))
    return cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)


# m/px of the PNG scenes (docs/real_data_card.md), given to watch as --gsd; GeoTIFFs carry their own
GSD = {"sztaki": 1.5, "whucd": 0.3, "levircd": 0.5}


def flights(quick: bool) -> list[dict]:
    """(dataset, reference path, later-date path, mask path or None, frame side) for every scene found."""
    out = []
    rp = DATA / "real_pairs"
    sz = sorted(d.name for d in (rp / "sztaki").glob("*_*") if d.is_dir())
    out += [dict(ds="sztaki", pre=rp / "sztaki" / s / "im1.png", post=rp / "sztaki" / s / "im2.png",
                 mask=rp / "sztaki" / s / "gt.png", frame=256) for s in sz[:: (6 if quick else 2)]]
    wh = sorted(p.name for p in (rp / "whucd" / "prev").glob("*.png"))
    out += [dict(ds="whucd", pre=rp / "whucd" / "prev" / s, post=rp / "whucd" / "curr" / s,
                 mask=rp / "whucd" / "label" / s, frame=320) for s in wh[: 1 if quick else None]]
    lv = sorted(p.name for p in (rp / "levircd_tiles" / "A").glob("*.png"))
    out += [dict(ds="levircd", pre=rp / "levircd_tiles" / "A" / s, post=rp / "levircd_tiles" / "B" / s,
                 mask=rp / "levircd_tiles" / "label" / s, frame=320) for s in lv[: 1 if quick else None]]
    # Joplin chips 1 and 3 are left out: their "post" holds the pre image's own pixels at an offset (NCC 1.0 at
    # (-102, 63) and (-196, 52) px), not a second date
    jp = [rp / "joplin_geotiff" / "chips" / "pre" / f"{k}_pre.tif" for k in ((0,) if quick else (0, 2))]
    out += [dict(ds="joplin", pre=p, post=Path(str(p).replace("pre", "post")), mask=None, frame=320) for p in jp]
    nd = sorted(glob.glob(str(DATA / "real_series" / "naip_nd" / "*.tif")))
    if len(nd) >= 6:
        pairs = [(0, 5)] if quick else [(0, 5), (3, 9)]
        out += [dict(ds="naip", pre=Path(nd[a]), post=Path(nd[b]), mask="none", frame=256) for a, b in pairs]
    return [f for f in out if Path(f["pre"]).is_file() and Path(f["post"]).is_file()]


class SimSource(FrameSource):
    """A simulated flight; `fps` > 0 paces it (a live camera), 0 replays as fast as it is read."""

    def __init__(self, views, fps: float = 0.0):
        self.uri, self.views, self.period = "sim://flight", views, 1.0 / fps if fps else 0.0
        self.live, self.k, self.t_next = bool(fps), 0, time.monotonic()

    def read(self):
        if self.k >= len(self.views):
            return None
        if self.period:
            self.t_next += self.period
            time.sleep(max(0.0, self.t_next - time.monotonic()))
        i, img, _ = self.views[self.k]
        self.k += 1
        if img is None:
            raise FrameError(f"frame {i}: corrupt (simulated)")
        return Frame(i, img, time.monotonic(), f"sim#{i}")


def _err(h, truth, f: int) -> float:
    c = np.float32([[[0, 0], [f, 0], [f, f], [0, f], [f / 2, f / 2]]])
    d = cv2.perspectiveTransform(c, h)[0] - cv2.perspectiveTransform(c, truth)[0]
    return float(np.linalg.norm(d, axis=1).mean())


def _dates_aligned(ref, post: np.ndarray, h: np.ndarray, f: int) -> np.ndarray | None:
    """The true pose h corrected by how the dataset's two dates line up at that place: ECC (affine, on gradient
    magnitude) of the later date's own pixels under the footprint onto the map, from identity. None if it fails."""
    from edgecc.stream.register import _gradient, _grey

    c = cv2.perspectiveTransform(np.float32([[[0, 0], [f, 0], [f, f], [0, f]]]), h)[0]
    x0, y0 = np.maximum(np.floor(c.min(0)).astype(int) - 8, 0)
    x1, y1 = np.minimum(np.ceil(c.max(0)).astype(int) + 8, [ref.width, ref.height])
    if x1 - x0 < 32 or y1 - y0 < 32:
        return None
    a = _gradient(_grey(ref.read((x0, y0, x1, y1))), 2.0)
    b = _gradient(_grey(np.ascontiguousarray(post[y0:y1, x0:x1])), 2.0)
    w = np.eye(2, 3, dtype=np.float32)
    try:
        _, w = cv2.findTransformECC(a, b, w, cv2.MOTION_AFFINE,
                                    (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5), None, 1)
    except cv2.error:
        return None
    # w maps map-window px -> later-date-window px; the frame (later-date px) goes to the map through its inverse
    m = np.vstack([w, [0, 0, 1]]).astype(np.float64)
    shift = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
    return shift @ np.linalg.inv(m) @ np.linalg.inv(shift) @ h


def _footprint_mask(shape, h, f: int) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    c = cv2.perspectiveTransform(np.float32([[[0, 0], [f, 0], [f, f], [0, f]]]), h)[0]
    cv2.fillConvexPoly(m, np.round(c).astype(np.int32), 1)
    return m.astype(bool)


class GpsPrior:
    """Simulated GPS + compass telemetry for a flight: each frame's true pose moved by seeded noise (position sigma
    `px` map px, heading sigma `deg`), given to the monitor where a telemetry file's prior would be."""

    def __init__(self, views, seed: int, px: float = 15.0, deg: float = 3.0):
        rng = np.random.default_rng(1000 + seed)
        self.h = {}
        for i, _, vp in views:
            c = vp.homography @ np.array([128.0, 128.0, 1.0])  # a point near the frame centre, in map px
            r = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), float(rng.normal(0, deg)), 1.0)
            r[:, 2] += rng.normal(0, px, 2)
            self.h[i] = np.vstack([r, [0.0, 0.0, 1.0]]) @ vp.homography

    def prior(self, index, ref_map, frame_shape, fov_deg=None):
        return self.h.get(index)

    def get(self, index):
        return None


def run_flight(cap, fl: dict, n: int, seed: int, opts: WatchOptions, gps: bool = False) -> dict:
    ref = ReferenceMap.open(fl["pre"])
    post = _rgb(str(fl["post"]))
    f = fl["frame"]
    views = list(make_flight.real_flight(post, n, f, seed=seed))
    regs: dict[int, object] = {}
    mon = Monitor(cap, ref, replace(opts, gsd=GSD.get(fl["ds"])))
    if gps:
        mon.telemetry = GpsPrior(views, seed)
    inner = mon._register

    def record(frame):  # keep each frame's registration to score it against the true pose
        r = inner(frame)
        if r is not None:
            regs[frame.index] = r
        return r

    mon._register = record
    tmp = Path(tempfile.mkdtemp(prefix="bench_flight_"))
    with EventWriter(tmp / "e.jsonl") as w:
        st = mon.run(SimSource(views), w)
    events = [json.loads(x) for x in (tmp / "e.jsonl").read_text().splitlines()]
    shutil.rmtree(tmp, ignore_errors=True)
    delivered = [(i, vp) for i, img, vp in views if img is not None]
    errs = [_err(regs[i].homography, vp.homography, f) for i, vp in delivered if i in regs]
    aligned = [(i, _dates_aligned(ref, post, vp.homography, f)) for i, vp in delivered[::5] if i in regs]
    errs_dates = [_err(regs[i].homography, h, f) for i, h in aligned if h is not None]
    out = {"dataset": fl["ds"], "scene": Path(fl["pre"]).parent.name + "/" + Path(fl["pre"]).name,
           "frames": len(delivered), "registered": len(errs), "errors_px": errs, "errors_dates_px": errs_dates,
           "events": len(events),
           "counters": dict(st.counters),
           "event_log": [{k: e.get(k) for k in ("frame", "tile", "bbox", "caption", "change_score", "observations")}
                         for e in events]}
    if fl["mask"] is None:
        return out
    shape = (ref.height, ref.width)
    mask = np.zeros(shape, bool) if fl["mask"] == "none" else cv2.imread(str(fl["mask"]), cv2.IMREAD_GRAYSCALE) > 0
    mask = mask[: shape[0], : shape[1]]
    n_comp, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    big = [k for k in range(1, n_comp) if stats[k, 4] >= 400]
    comps = {k: tuple(stats[k, :4]) for k in big}
    covered, unchanged_frames = set(), set()
    for i, vp in delivered:
        fp = _footprint_mask(shape, vp.homography, f)
        if mask[fp].mean() < 0.002 if fp.any() else True:
            unchanged_frames.add(i)
        inside = np.bincount(lab[fp], minlength=n_comp)  # pixels of each region inside this frame's view
        covered |= {k for k in big if inside[k] >= 0.9 * stats[k, 4]}  # a region 90% in one view is "passed over"
    def touched(box_key: str) -> set:
        hit = set()
        for e in events:
            if e.get(box_key) is None:
                continue
            x0, y0, x1, y1 = e[box_key]
            hit |= {k for k, (x, y, w, h) in comps.items()
                    if x0 - 8 <= x + w and x <= x1 + 8 and y0 - 8 <= y + h and y <= y1 + 8}
        return hit

    found = touched("bbox")  # the event's mask box touches the region
    in_tile = touched("tile")  # the region lies in a tile an event captions (the mask may have missed it)
    out.update(regions_covered=len(covered), regions_found=len(found & covered),
               regions_in_event_tiles=len(in_tile & covered),
               unchanged_frames=len(unchanged_frames),
               false_events=sum(1 for e in events if e["frame"] in unchanged_frames))
    ref.close()
    return out


def latency(cap, fl: dict, n: int, cache: bool) -> dict:
    """Live at 30 fps, gate and pre-gate open, one observation a tile: every frame's tiles make events; latency."""
    opts = WatchOptions(gate_threshold=0.0, min_obs=1, pregate_threshold=0.0, debounce_frames=0, replay=False,
                        reference_cache=cache, gsd=GSD.get(fl["ds"]))
    ref = ReferenceMap.open(fl["pre"])
    views = [v for v in make_flight.real_flight(_rgb(str(fl["post"])), n, fl["frame"], seed=3, corrupt_every=0,
                                                drop=None)]
    mon = Monitor(cap, ref, opts)
    st = mon.run(SimSource(views, fps=30.0), None)
    d = st.as_dict()
    ref.close()
    return {"cache": cache, "frames": n, "processed": st.counters["frames_processed"], "events": st.counters["events"],
            "dropped": st.counters["dropped"], "event_latency_p50_ms": d["latency_ms"]["total"]["p50"],
            "event_latency_p95_ms": d["latency_ms"]["total"]["p95"], "encode_p50_ms": d["latency_ms"]["encode"]["p50"],
            "register_p50_ms": d["latency_ms"]["register"]["p50"],
            "cache_hits": st.counters.get("reference_cache_hits"),
            "cache_misses": st.counters.get("reference_cache_misses")}


# ---------------------------------------------------------------------------------------------- 20k x 20k map (RSS)


def make_big_map(path: Path, side: int) -> None:
    """A side x side tiled GeoTIFF (deflate, overviews) mosaicked from the real 1024-px tiles, flipped and rotated."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.transform import from_origin

    tiles = [_rgb(str(p)) for p in sorted((DATA / "real_pairs" / "levircd_tiles" / "A").glob("*.png"))]
    tiles += [_rgb(str(p)) for p in sorted((DATA / "real_pairs" / "whucd" / "prev").glob("*.png"))]
    with rasterio.Env(GDAL_CACHEMAX=256), rasterio.open(
            path, "w", driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32615",
            transform=from_origin(360000, 4110000, 0.5, 0.5), tiled=True, blockxsize=512, blockysize=512,
            compress="deflate") as ds:
        k = 0
        for y in range(0, side, 1024):
            for x in range(0, side, 1024):
                t = np.rot90(tiles[k % len(tiles)], k // len(tiles) % 4)
                k += 1
                h, w = min(1024, side - y), min(1024, side - x)
                ds.write(np.ascontiguousarray(t[:h, :w].transpose(2, 0, 1)),
                         window=rasterio.windows.Window(x, y, w, h))
        ds.build_overviews([2, 4, 8, 16, 32], Resampling.average)


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: per address space, so not inherited from a parent through fork + exec)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(map_path: str, n: int, model: str | None) -> dict:
    """(In a fresh process) watch n frames over the big map with a telemetry prior; peak RSS."""
    import rasterio

    from edgecc.stream.refmap import to_wgs84

    cap = edgecc.load(model)
    ref = ReferenceMap.open(map_path)
    rss0 = _peak_rss_mb()
    f = 256
    tel = Path(tempfile.mkdtemp()) / "tel.csv"
    views, rows = [], ["frame,lat,lon,heading"]
    with rasterio.open(map_path) as ds:  # frames: same-area views cut along a path across the map
        for i in range(n):
            cx, cy = 1500 + i * 8 * 5, 1800 + i * 6 * 5  # every 5th frame of a 30 fps flight, inside any map >= 4k
            win = np.ascontiguousarray(ds.read([1, 2, 3], window=rasterio.windows.Window(cx - f // 2, cy - f // 2, f,
                                                                                          f)).transpose(1, 2, 0))
            views.append((i, win, None))
            lon, lat = to_wgs84(ref.pixel_to_map(np.array([[cx + 10.0, cy - 8.0]])), ref.crs)[0]  # ~13 px off
            rows.append(f"{i},{lat},{lon},0")
    tel.write_text("\n".join(rows))
    mon = Monitor(cap, ref, WatchOptions(telemetry=str(tel), pregate_threshold=0.0, gate_threshold=0.0))  # + model
    st = mon.run(SimSource(views), None)
    shutil.rmtree(tel.parent, ignore_errors=True)
    return {"map_px": [ref.width, ref.height], "frames": n, "registered": st.counters["registered"],
            "peak_rss_mb_after_load": round(rss0, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "counters": dict(st.counters)}


def summarise(results: list[dict]) -> dict:
    by: dict[str, dict] = {}
    for name in sorted({r["dataset"] for r in results}) + ["all"]:
        rs = [r for r in results if name in ("all", r["dataset"])]
        errs = [e for r in rs for e in r["errors_px"]]
        ed = [e for r in rs for e in r["errors_dates_px"]]
        fr, rg = sum(r["frames"] for r in rs), sum(r["registered"] for r in rs)
        cov = sum(r.get("regions_covered", 0) for r in rs)
        unch = sum(r.get("unchanged_frames", 0) for r in rs)
        by[name] = {"flights": len(rs), "frames": fr, "registered_pct": round(100 * rg / max(fr, 1), 1),
                    "reg_error_px_median": round(float(np.median(errs)), 2) if errs else None,
                    "reg_error_px_p90": round(float(np.percentile(errs, 90)), 2) if errs else None,
                    "reg_error_dates_aligned_px_median": round(float(np.median(ed)), 2) if ed else None,
                    "regions_covered": cov, "recall": round(sum(r.get("regions_found", 0) for r in rs) / cov, 3)
                    if cov else None,
                    "recall_by_event_tile": round(sum(r.get("regions_in_event_tiles", 0) for r in rs) / cov, 3)
                    if cov else None, "unchanged_frames": unch,
                    "false_events_per_1000_unchanged": round(1000 * sum(r.get("false_events", 0) for r in rs) / unch, 2)
                    if unch else None}
    return by


def latency_and_memory(cap, a) -> tuple:
    """The 30-fps latency with and without the reference cache, and the big-map RSS run in a fresh process."""
    lat_fl = next(f for f in flights(True) if f["ds"] == "levircd")
    lat_n = 90 if a.quick else 300
    lat = [latency(cap, lat_fl, lat_n, True), latency(cap, lat_fl, lat_n, False)]
    speed = {k: round(lat[1][k] / lat[0][k], 2) if lat[0][k] and lat[1][k] else None
             for k in ("event_latency_p95_ms", "encode_p50_ms")}
    side = a.map_side or (4096 if a.quick else 20000)
    big = Path(tempfile.mkdtemp(prefix="bench_flight_map_")) / "map.tif"
    t = time.monotonic()
    make_big_map(big, side)
    build_s = time.monotonic() - t
    child = subprocess.run([sys.executable, __file__, "--rss-child", str(big), "30"] + (
        ["--model", a.model] if a.model else []), capture_output=True, text=True, timeout=900)
    rss = json.loads(child.stdout.strip().splitlines()[-1]) if child.returncode == 0 else {"error": child.stderr[-500:]}
    rss["map_build_s"] = round(build_s, 1)
    shutil.rmtree(big.parent, ignore_errors=True)
    return lat, speed, rss


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="bundle directory (default: the bundled model)")
    p.add_argument("--quick", action="store_true", help="one flight per dataset, 60 frames; small map")
    p.add_argument("--frames", type=int, default=None, help="frames per flight (default 150; quick 60)")
    p.add_argument("--registration", default="ecc", help="fine alignment method (ecc, orb, sift, rootsift)")
    p.add_argument("--map-side", type=int, default=None, help="big-map side, RSS run (default 20000; quick 4096)")
    p.add_argument("--gps", action="store_true",
                   help="every frame has a GPS/compass prior (15 px, 3 deg), trusted when the image cannot align")
    p.add_argument("--json", type=Path, default=None, help="default benchmarks/results/flight[_gps].json")
    p.add_argument("--rss-child", nargs=2, metavar=("MAP", "N"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rss_child:
        print(json.dumps(rss_child(a.rss_child[0], int(a.rss_child[1]), a.model)))
        return
    if not DATA.is_dir():
        sys.exit(f"bench_flight: no real data at {DATA}")
    from edgecc.stream import RegisterOptions

    n = a.frames or (60 if a.quick else 150)
    a.json = a.json or ROOT / "benchmarks" / "results" / ("flight_gps.json" if a.gps else "flight.json")
    cap = edgecc.load(a.model)
    opts = WatchOptions(replay=True, report_every_s=0, register=RegisterOptions(method=a.registration,
                                                                               trust_prior=a.gps))
    results, t0 = [], time.monotonic()
    for k, fl in enumerate(flights(a.quick)):
        r = run_flight(cap, fl, n, k, opts, a.gps)
        results.append(r)
        e = np.median(r["errors_px"]) if r["errors_px"] else float("nan")
        print(f"{r['dataset']:<8} {r['scene']:<28} registered {r['registered']}/{r['frames']}  median err {e:.2f} px"
              f"  events {r['events']}  regions {r.get('regions_found', '-')}/{r.get('regions_covered', '-')}"
              f"  false {r.get('false_events', '-')}/{r.get('unchanged_frames', '-')} frames", file=sys.stderr)
    summary = summarise(results)
    lat, speed, rss = (None, None, None) if a.gps else latency_and_memory(cap, a)
    report = {"bench": "flight", "quick": a.quick, "prior": "gps" if a.gps else "none", "frames_per_flight": n,
              "registration": a.registration, "model": str(a.model or "default"), "precision": cap.precision,
              "summary": summary, "latency_30fps": lat, "speedup_cache": speed, "big_map": rss,
              "wall_s": round(time.monotonic() - t0, 1), "flights": [
                  {k: v for k, v in r.items() if k not in ("errors_px", "errors_dates_px")} for r in results]}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=1, allow_nan=False))
    print(json.dumps({"summary": summary, "latency_30fps": lat, "speedup_cache": speed, "big_map": rss}, indent=1))


if __name__ == "__main__":
    main()
