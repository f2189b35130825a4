"""Runtime latency of a bundle on this machine, with the CPU it belongs to: cold start, warm p50 per pair, the
per-stage split, the trunk's effective GFLOP/s, and the cost per decoded token.

    python benchmarks/bench_runtime.py                    # the default: tuned choice (or the safe default), beam 2
    python benchmarks/bench_runtime.py --quick            # a smoke run (seconds)
    python benchmarks/bench_runtime.py --configs default,int8-greedy,fp32-beam2 --out benchmarks/results/x.json

Every figure carries the CPU model, ISA flags, core count, load average and ONNX Runtime version; timings taken
while other work runs are inflated (loadavg_at_start says how busy the machine was). Warm timings rotate over
LEVIR-CC-synth renders (changed and unchanged) so caches do not flatter them; the change gate is on.

Before/after: the script runs against any edgecc tree on PYTHONPATH; where the engine has no timing hook (older
trees) the stage split is left out and the per-token cost comes from the caption timings alone, e.g.
    git worktree add /tmp/edgecc-before <commit> && cp edgecc/_native*.so /tmp/edgecc-before/edgecc/
    PYTHONPATH=/tmp/edgecc-before python benchmarks/bench_runtime.py --label before
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {  # name -> (precision or None for the runtime's choice, beam or None for the bundle's)
    "default": (None, None),
    "int8-greedy": ("int8", 1),
    "fp32-beam2": ("fp32", 2),
    "fp32-greedy": ("fp32", 1),
}
CAPTIONS = ["many houses are built along the road", "a road is built on the bareland", "some trees are removed",
            "two buildings appear at the top left", "there is no difference", "a parking lot is built"]


def machine() -> dict:
    import onnxruntime

    try:
        from edgecc.cpu import cpu

        c = cpu()
        model, isa, cores = c.model, list(c.isa), c.cores
    except ImportError:  # an older tree
        model, isa, cores = platform.processor() or platform.machine(), [], os.cpu_count()
    return {"cpu": model, "isa": isa, "cores": cores, "machine": platform.machine(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def cold_start(model: str | None, runs: int) -> list[float]:
    """Process start to caption printed, `edgecc caption` on the bundled example pair (seconds)."""
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


def render_pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from edgecc.train.synth import merge_specs, parse_caption, render_pair

    pairs = []
    for i in range(n):
        c = CAPTIONS[i % len(CAPTIONS)]
        pre, post, _ = render_pair(f"bench_{i}", merge_specs([parse_caption(c.split())], int("no" not in c)))
        pairs.append((pre[None], post[None]))
    return pairs


def graph_gflop(path: Path, feeds: dict) -> float | None:
    """GFLOP of one call of an ONNX graph on `feeds`: 2 x the multiply-adds of its Conv, MatMul and Gemm nodes, with
    shapes taken from one ONNX Runtime run (use the fp32 graph: the int8 one does the same multiply-adds)."""
    try:
        import onnx
    except ImportError:
        return None
    import onnxruntime as ort

    m = onnx.load(str(path))
    inits = {t.name: list(t.dims) for t in m.graph.initializer}
    nodes = [n for n in m.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    want = list(dict.fromkeys(x for n in nodes for x in (n.input[0], n.output[0]) if x not in inits))
    known = {o.name for o in m.graph.output}
    m.graph.output.extend([onnx.ValueInfoProto(name=x) for x in want if x not in known])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    shape = {**{k: list(v.shape) for k, v in outs.items()}, **inits, **{k: list(v.shape) for k, v in feeds.items()}}
    macs = 0
    for n in nodes:
        out = shape[n.output[0]]
        if n.op_type == "Conv":
            macs += int(np.prod(out)) * int(np.prod(shape[n.input[1]][1:]))
        else:  # MatMul / Gemm: each output element sums over A's last axis (Gemm may transpose A)
            a = shape[n.input[0]]
            trans_a = any(x.name == "transA" and x.i for x in n.attribute)
            macs += int(np.prod(out)) * (a[-2] if trans_a else a[-1])
    return 2 * macs / 1e9


def warm(model: str | None, pairs: list, precision: str | None, beam: int | None) -> dict:
    import edgecc
    from edgecc.decoding import DecodingOptions

    base = edgecc.load(model, precision=precision)
    opts = DecodingOptions(**{**base.bundle.manifest.get("decoding", {}), "beam_size": beam}) if beam else None
    cap = edgecc.load(model, precision=precision, options=opts)
    try:
        from edgecc.engines import timed
    except ImportError:  # a tree without the timing hook
        timed = None
    for p in pairs[:5]:
        cap.caption_batch(*p)
    rows, stages = [], []
    for p in pairs:
        if timed is not None:
            with timed(cap.engine) as t:
                c = cap.caption_batch(*p)[0]
            stages.append({**t.ms(), "steps": t.counts.get("steps", 0)})
        else:
            c = cap.caption_batch(*p)[0]
        rows.append({**c.timings_ms, "changed": c.changed, "tokens": len(c.tokens) + 1})  # + <end>

    def pct(key, q, subset=rows):
        return round(float(np.percentile([r[key] for r in subset], q)), 3) if subset else None

    changed = [i for i, r in enumerate(rows) if r["changed"]]
    ch_rows = [rows[i] for i in changed]
    out = {
        "precision": cap.precision, "beam_size": cap.options.beam_size, "pairs": len(rows),
        "changed_pairs": len(changed), "tuning": getattr(cap, "tuning", None),
        "total_ms_p50": pct("total", 50), "total_ms_p90": pct("total", 90),
        "total_ms_p50_changed": pct("total", 50, ch_rows),
        "total_ms_p50_unchanged": pct("total", 50, [r for r in rows if not r["changed"]]),
        "encode_ms_p50": pct("encode", 50), "decode_ms_p50_changed": pct("decode", 50, ch_rows),
        # decode time of a changed caption / its tokens (words + <end>): the cost per decoded token, search included
        "ms_per_token_p50": round(statistics.median(r["decode"] / r["tokens"] for r in ch_rows), 4)
        if ch_rows else None,
    }
    if stages:
        keys = [k for k in stages[0] if k != "steps"]
        out["stages_ms_mean"] = {k: round(float(np.mean([s.get(k, 0.0) for s in stages])), 3) for k in keys}
        steps = [stages[i]["steps"] for i in changed]
        out["decoder_steps_per_changed_caption"] = round(float(np.mean(steps)), 2) if steps else None
        out["ms_per_decoder_step_p50"] = round(statistics.median(
            stages[i]["decode"] / stages[i]["steps"] for i in changed if stages[i]["steps"]), 4) if steps else None
    eng = cap.engine
    sess = getattr(eng, "sessions", None) or {"trunk": getattr(eng, "trunk", None)}
    trunk = sess.get("trunk")
    if trunk is not None:  # the trunk alone, both dates in one call, as the engine runs it
        img = np.concatenate([pairs[0][0], pairs[0][1]])
        for _ in range(5):
            trunk.run(None, {"img": img})
        ts = []
        for _ in range(40):
            t = time.perf_counter()
            trunk.run(None, {"img": img})
            ts.append(time.perf_counter() - t)
        ms = float(np.median(ts)) * 1e3
        gf = graph_gflop(cap.bundle.path(cap.bundle.variant("fp32")["trunk"]), {"img": img})  # fp32 arithmetic
        out["trunk"] = {"ms_per_call_2_dates": round(ms, 3), "gflop_per_call": gf and round(gf, 4),
                        "effective_gflop_s": gf and round(gf / ms * 1e3, 1),
                        "threads": trunk.get_session_options().intra_op_num_threads}
    out["decoder_step"] = decoder_step(cap, pairs[0], out.get("ms_per_decoder_step_p50"))
    return out


def decoder_step(cap, pair, ms_per_call: float | None) -> dict:
    """The decoder step's arithmetic at the beam width against its measured cost: the decode floor."""
    eng = cap.engine
    k = cap.options.beam_size
    enc = eng.encode(*pair)
    state = eng.select(eng.initial_state(enc), np.zeros(k, np.int64))
    names = {i.name for i in eng.sessions["decoder"].get_inputs()} if hasattr(eng, "sessions") else set(state)
    feeds = {n: v for n, v in state.items() if n in names}
    feeds["token"] = np.ones(k, np.int64)
    if "position" in names:
        feeds["position"] = np.array([0], np.int64)
    gf = graph_gflop(cap.bundle.path(cap.bundle.variant("fp32")["decoder"]), feeds)
    out = {"batch": k, "mflop_per_call": gf and round(gf * 1e3, 3)}
    if gf and ms_per_call:
        out["effective_gflop_s"] = round(gf / ms_per_call * 1e3, 2)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--pairs", type=int, default=60)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--configs", default="default,int8-greedy,fp32-beam2",
                    help=f"comma-separated, from {', '.join(CONFIGS)}")
    ap.add_argument("--quick", action="store_true", help="12 pairs, 2 cold runs, the default config only")
    ap.add_argument("--label", default="", help="a name for this tree (e.g. before/after), kept in the JSON")
    ap.add_argument("--out", help="default: benchmarks/results/runtime-<cpu>-<date>[-label].json")
    a = ap.parse_args()
    if a.quick:
        a.pairs, a.cold_runs, a.configs = 12, 2, "default"
    import edgecc

    m = machine()
    pairs = render_pairs(a.pairs)
    res = {"machine": m, "date": time.strftime("%Y-%m-%d"), "label": a.label,
           "edgecc": str(Path(edgecc.__file__).parent), "model": a.model or "default"}
    cold = cold_start(a.model, a.cold_runs)
    res["cold_start_s"] = {"p50": round(statistics.median(cold), 3), "max": round(max(cold), 3), "runs": len(cold)}
    res["configs"] = {}
    for name in a.configs.split(","):
        prec, beam = CONFIGS[name]
        res["configs"][name] = warm(a.model, pairs, prec, beam)
        print(f"{name}: p50 {res['configs'][name]['total_ms_p50']} ms", file=sys.stderr)
    print(json.dumps(res, indent=2))
    slug = re.sub(r"[^a-z0-9]+", "-", m["cpu"].lower()).strip("-")[:40]
    out = Path(a.out or ROOT / "benchmarks" / "results" /
               f"runtime-{slug}-{m['cores']}core-{res['date']}{'-' + a.label if a.label else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
