"""Benchmark `edgecc watch` on simulated drone flights: throughput, event latency, drops, recall, false events, RSS.

    python benchmarks/bench_watch.py --model BUNDLE [--frames 400] [--fps 30] [--segment 40]
    python benchmarks/bench_watch.py --model BUNDLE --soak            # 10,000 frames with injected faults

A flight is a sequence of segments (`tests/data/make_flight.py`): each segment shows one scene, unchanged for its
first half and changed for its second half, against that scene's reference. Frames are fed at `--fps` through the
real latest-frame-wins reader (a live camera); the segment's reference is swapped in when it starts.

Reported: sustained input fps and processed fps, event latency p95 (frame arrival -> event line written), dropped
frames, recall (changed segments with at least one event on a changed frame), false events per 1,000 unchanged
frames, per-stage latency. --soak adds faults (corrupt frames, a source drop with reopen, model-call failures every
200 model calls) and reports RSS growth from frame 1,000 to frame 10,000.

Note: with a random-init bundle (e.g. the tiny test bundle) recall/false events measure the pipeline, not the model;
use `--gate-threshold 0` to force the gate open, or pass the trained default bundle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))
import make_flight  # noqa: E402

import edgecc  # noqa: E402
from edgecc.stream import EventWriter, Frame, FrameError, FrameSource, Monitor, WatchOptions, format_stats  # noqa: E402


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class FlightSource(FrameSource):
    """Segments of simulated flights replayed at `fps`, with optional injected faults (soak)."""

    def __init__(self, segments, n_frames: int, fps: float, faults: bool, on_segment, rss: dict):
        self.uri = "sim://flight"
        self.segments, self.n, self.period, self.faults = segments, n_frames, 1.0 / fps, faults
        self.on_segment, self.rss = on_segment, rss
        self.i, self.reopens, self._next_t = 0, 0, time.monotonic()
        self.seg_len = len(segments[0]["frames"])

    def read(self):
        if self.i >= self.n:
            return None
        self._next_t += self.period
        time.sleep(max(0.0, self._next_t - time.monotonic()))
        i, self.i = self.i, self.i + 1
        if i in (1000, self.n - 1):
            self.rss[i] = _rss_mb()
        seg_i, k = divmod(i, self.seg_len)
        seg = self.segments[seg_i % len(self.segments)]
        if k == 0:
            self.on_segment(seg)
        if self.faults and i % 997 == 500:
            raise FrameError(f"frame {i}: injected corrupt frame")
        if self.faults and i % 2503 == 1200:  # a source drop: the reopen costs a backoff
            time.sleep(0.2)
            self.reopens += 1
        return Frame(i, seg["frames"][k], time.monotonic(), f"seg{seg_i}#{k}")


class FailingEngine:
    """Wraps an engine: every `n`-th encode raises (injected model fault); otherwise the real engine runs."""

    def __init__(self, engine, n: int):
        self.e, self.n, self.calls = engine, n, 0

    def __getattr__(self, name):
        return getattr(self.e, name)

    def encode(self, pre, post):
        self.calls += 1
        if self.calls % self.n == 0:
            raise RuntimeError("injected model failure")
        return self.e.encode(pre, post)


def build_segments(n_scenes: int, seg_len: int, tmp: Path) -> list[dict]:
    segs = []
    for s in range(n_scenes):
        f = make_flight.make_flight(tmp / f"s{s}", n_frames=seg_len, change_at=seg_len // 2, seed=s, video=False)
        frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(f.frames_dir.iterdir())]
        ref = cv2.cvtColor(cv2.imread(str(f.reference)), cv2.COLOR_BGR2RGB)
        segs.append({"frames": frames, "reference": ref, "change_at": f.change_at})
    return segs


def run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_watch_"))
    n = 10_000 if args.soak else args.frames
    segs = build_segments(args.scenes, args.segment, tmp)
    cap = edgecc.load(args.model)
    if args.soak:
        cap = dataclasses.replace(cap, engine=FailingEngine(cap.engine, 200))  # Captioner is frozen
    opts = WatchOptions(gate_threshold=args.gate_threshold, every=args.every, deadline_ms=args.deadline_ms,
                        debounce_frames=args.segment)
    mon = Monitor(cap, segs[0]["reference"], opts)
    from edgecc.stream.evidence import TileEvidence
    from edgecc.stream.register import Registrar

    registrars = {id(s): Registrar(s["reference"], opts.register) for s in segs}  # reference features once each

    def on_segment(seg):  # the drone flies to the next area: its reference (and debounce memory) swap in
        mon.registrar = registrars[id(seg)]
        mon.evidence = TileEvidence(mon.rule, opts.debounce_frames, opts.debounce_iou)  # a new object: atomic

    rss: dict[int, float] = {}
    src = FlightSource(segs, n, args.fps, args.soak, on_segment, rss)
    ev_path = tmp / "events.jsonl"
    with EventWriter(ev_path) as w:
        stop = threading.Event()
        st = mon.run(src, w, stop)
    events = [json.loads(x) for x in ev_path.read_text().splitlines()]
    seg_len, half = args.segment, args.segment // 2
    n_segs = -(-n // seg_len)
    changed_segs = {e["frame"] // seg_len for e in events if e["frame"] % seg_len >= half}
    false = [e for e in events if e["frame"] % seg_len < half]
    unchanged_frames = sum(min(half, max(0, n - s * seg_len)) for s in range(n_segs))
    with_change = sum(1 for s in range(n_segs) if n - s * seg_len > half)
    d = st.as_dict()
    out = {
        "frames": n, "fps_target": args.fps, "input_fps": round(d["input_fps"], 1),
        "processed_fps": round(st.counters["frames_processed"] / st.wall_s, 1),
        "event_latency_p95_ms": round(st.latency["total"].percentile(95), 1), "events": len(events),
        "dropped": st.counters["dropped"], "recall": round(len(changed_segs) / max(with_change, 1), 3),
        "false_events_per_1000_unchanged": round(1000 * len(false) / max(unchanged_frames, 1), 2),
        "counters": dict(st.counters), "latency_ms": d["latency_ms"],
    }
    if args.soak:
        out["rss_mb_frame_1000"], out["rss_mb_frame_end"] = rss.get(1000), rss.get(n - 1)
        if 1000 in rss and n - 1 in rss:
            out["rss_growth_mb"] = round(rss[n - 1] - rss[1000], 1)
        out["source_reopens_injected"] = src.reopens
    print(format_stats(st), file=sys.stderr)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="bundle directory (default: the bundled model)")
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--fps", type=float, default=30.0, help="input frame rate of the simulated camera")
    p.add_argument("--segment", type=int, default=40, help="frames per scene segment (change at half)")
    p.add_argument("--scenes", type=int, default=3)
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--deadline-ms", type=float, default=None)
    p.add_argument("--gate-threshold", type=float, default=None,
                   help="override the watch rule's evidence threshold (0: always open)")
    p.add_argument("--soak", action="store_true", help="10,000 frames with injected faults; reports RSS growth")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    out = run(args)
    print(json.dumps({k: v for k, v in out.items() if k not in ("latency_ms",)}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
