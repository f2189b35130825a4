"""Runtime latency of a bundle on this machine: cold start (process start to caption printed) and warm p50/p90.

    python benchmarks/bench_runtime.py [--model DIR] [--pairs 50] [--out benchmarks/results/runtime-<machine>.json]

Warm timings rotate over rendered LEVIR-CC-synth-style pairs (so caches do not flatter them) and report encode,
decode and total per 256x256 pair, ONNX Runtime CPU, greedy decoding with the change gate on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cold_start(model: str | None, runs: int) -> list[float]:
    cmd = [sys.executable, "-m", "edgecc.cli", "caption", str(ROOT / "examples/data/pre.png"),
           str(ROOT / "examples/data/post.png")]
    if model:
        cmd += ["--model", model]
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        out.append(time.perf_counter() - t)
    return out


def warm(model: str | None, n: int, beam: int, precision: str = "fp32") -> dict:
    from edgecc.train.synth import merge_specs, parse_caption, render_pair

    import edgecc
    from edgecc.decoding import DecodingOptions

    caps = ["many houses are built along the road", "a road is built on the bareland", "some trees are removed",
            "two buildings appear at the top left", "there is no difference", "a parking lot is built"]
    pairs = []
    for i in range(n):
        c = caps[i % len(caps)]
        pre, post, _ = render_pair(f"bench_{i}", merge_specs([parse_caption(c.split())], int("no" not in c)))
        pairs.append((pre[None], post[None]))
    c = edgecc.load(model, precision=precision,
                    options=DecodingOptions(beam_size=beam, length_penalty=0.0) if beam else None)
    for p in pairs[:5]:
        c.caption_batch(*p)
    rows = []
    for p in pairs:
        cap = c.caption_batch(*p)[0]
        rows.append({**cap.timings_ms, "changed": cap.changed, "tokens": len(cap.tokens)})

    def pct(key, q, subset=rows):
        return round(float(np.percentile([r[key] for r in subset], q)), 2) if subset else None

    changed = [r for r in rows if r["changed"]]
    return {
        "pairs": n,
        "encode_ms_p50": pct("encode", 50), "decode_ms_p50_changed": pct("decode", 50, changed),
        "total_ms_p50": pct("total", 50), "total_ms_p90": pct("total", 90),
        "total_ms_p50_changed": pct("total", 50, changed),
        "ms_per_token_p50": round(statistics.median(r["decode"] / max(r["tokens"], 1) for r in changed), 3)
        if changed else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--beam", type=int, default=None, help="default: the bundle's recommendation")
    ap.add_argument("--precision", default="fp32", help="the bundle variant (fp32, int8, fp16)")
    ap.add_argument("--out")
    a = ap.parse_args()
    import onnxruntime

    cold = cold_start(a.model, a.cold_runs)
    res = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
                    "numpy": np.__version__},
        "date": time.strftime("%Y-%m-%d"),
        "model": a.model or "default",
        "cold_start_s": {"p50": round(statistics.median(cold), 3), "max": round(max(cold), 3), "runs": len(cold)},
        "precision": a.precision,
        "warm": warm(a.model, a.pairs, a.beam, a.precision),
    }
    print(json.dumps(res, indent=2))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
