"""A contact sheet of `edgecc watch` on simulated REAL flights, for a human to look at (not a score).

    python benchmarks/render_flight_sheet.py [--out docs/flight_events.png] [--scenes tiszadob_4 test_10 ...]

Runs the bench_flight.py flights of the chosen scenes (same seeds) with the bundled model and draws, per flight:
the map (earlier date) with the frames' footprints, and the later date with the changed regions the flight passed
over (yellow: found, orange: missed), the other changed regions (grey), and each event's tile (green: it touches a
changed region, red: it does not) numbered; beside them each event's frame, evidence, frames behind it and caption.
Needs ../shared/data (exits with 2 without it).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_flight as bf  # noqa: E402

import edgecc  # noqa: E402
from edgecc.stream import RegisterOptions, WatchOptions  # noqa: E402

H = 420  # panel height, px
TEXT_W = 620
GREEN, RED, YELLOW, ORANGE, GREY, BLUE = (40, 170, 60), (210, 40, 40), (250, 220, 0), (255, 140, 0), (150, 150, 150), (
    70, 130, 230)


def _touch(box, region, slack: int = 8) -> bool:
    x0, y0, x1, y1 = box
    a, b, c, d = region
    return x0 - slack <= c and a <= x1 + slack and y0 - slack <= d and b <= y1 + slack


def panel(fl: dict, res: dict, views: list) -> np.ndarray:
    pre, post = bf._rgb(str(fl["pre"])), bf._rgb(str(fl["post"]))
    h, w = pre.shape[:2]
    s = H / h
    a = cv2.resize(pre, (round(w * s), H), interpolation=cv2.INTER_AREA)
    b = cv2.resize(post, (round(w * s), H), interpolation=cv2.INTER_AREA)
    for _, _, vp in views[::6]:  # frame footprints on the map
        c = cv2.perspectiveTransform(np.float32([[[0, 0], [fl["frame"], 0], [fl["frame"], fl["frame"]],
                                                  [0, fl["frame"]]]]), vp.homography)[0] * s
        cv2.polylines(a, [np.round(c).astype(np.int32)], True, BLUE, 1, cv2.LINE_AA)
    events = res["event_log"]
    if fl["mask"] not in (None, "none"):
        mask = cv2.imread(str(fl["mask"]), cv2.IMREAD_GRAYSCALE)[:h, :w] > 0
        n, lab, st, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
        seen = set()
        for _, img, vp in views:
            if img is None:
                continue
            inside = np.bincount(lab[bf._footprint_mask((h, w), vp.homography, fl["frame"])], minlength=n)
            seen |= {k for k in range(1, n) if st[k, 4] >= 400 and inside[k] >= 0.9 * st[k, 4]}
        for k in range(1, n):
            if st[k, 4] < 400:
                continue
            reg = (st[k, 0], st[k, 1], st[k, 0] + st[k, 2], st[k, 1] + st[k, 3])
            found = any(_touch(e["bbox"], reg) for e in events)
            colour = (YELLOW if found else ORANGE) if k in seen else GREY
            cs, _ = cv2.findContours((lab == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(b, [np.round(c * s).astype(np.int32) for c in cs], -1, colour, 2, cv2.LINE_AA)
        regions = [(st[k, 0], st[k, 1], st[k, 0] + st[k, 2], st[k, 1] + st[k, 3]) for k in range(1, n)
                   if st[k, 4] >= 400]
    else:
        regions = None
    lines = [f"{fl['ds']} {res['scene']}: {res['registered']}/{res['frames']} frames registered, "
             f"{len(events)} events, regions found {res.get('regions_found', '-')}/{res.get('regions_covered', '-')}"]
    for j, e in enumerate(events, 1):
        ok = None if regions is None else any(_touch(e["tile"], r) for r in regions)
        colour = GREY if ok is None else GREEN if ok else RED
        x0, y0, x1, y1 = (round(v * s) for v in e["tile"])
        cv2.rectangle(b, (x0, y0), (x1, y1), colour, 2)
        cv2.putText(b, str(j), (x0 + 3, y0 + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 2, cv2.LINE_AA)
        lines += textwrap.wrap(f"{j}. frame {e['frame']}, evidence {e['change_score']:.2f} over {e['observations']} "
                               f"frames: {e['caption']}", 78)
    text = np.full((H, TEXT_W, 3), 255, np.uint8)
    for k, line in enumerate(lines[:24]):
        cv2.putText(text, line, (8, 18 + 17 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    gap = np.full((H, 6, 3), 255, np.uint8)
    return np.hstack([a, gap, b, gap, text])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "flight_events.png")
    p.add_argument("--scenes", nargs="+", default=["tiszadob_2", "tiszadob_4", "test_10", "test_12", "szada_5"])
    a = p.parse_args(argv)
    if not bf.DATA.is_dir():
        print(f"render_flight_sheet: no real data at {bf.DATA}", file=sys.stderr)
        return 2
    cap = edgecc.load()
    opts = WatchOptions(replay=True, report_every_s=0, register=RegisterOptions())
    rows = []
    for k, fl in enumerate(bf.flights(False)):
        if not any(name in str(fl["pre"]) for name in a.scenes):
            continue
        views = list(bf.make_flight.real_flight(bf._rgb(str(fl["post"])), 150, fl["frame"], seed=k))
        res = bf.run_flight(cap, fl, 150, k, opts)
        rows.append(panel(fl, res, views))
    width = max(r.shape[1] for r in rows)
    rows = [np.hstack([r, np.full((H, width - r.shape[1], 3), 255, np.uint8)]) for r in rows]
    head = np.full((40, width, 3), 255, np.uint8)
    cv2.putText(head, "edgecc watch on simulated real flights (default bundle). Left: map + footprints. Right: later "
                "date; regions yellow found / orange missed / grey not passed; tiles green on a change, red false",
                (8, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    sheet = np.vstack([head] + [np.vstack([r, np.full((8, width, 3), 255, np.uint8)]) for r in rows])
    from edgecc._atomic import write_bytes

    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    write_bytes(a.out, png.tobytes())
    print(f"wrote {a.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
