"""Fused diff-attention vs its reference: latency and peak memory per call across token counts.

    python benchmarks/bench_kernels.py                      # N = 64 .. 16384, C 128, 4 heads, dense and topk N/4
    python benchmarks/bench_kernels.py --tokens 64,1024 --threads 1 --out /tmp/k.json

Rows: impl fused (edgecc._native) | reference (NumPy), device cpu, fp32, one batch item; each thread setting runs in
its own process (EDGECC_THREADS and OPENBLAS_NUM_THREADS fixed before NumPy loads, so both sides get the same
cores). With a GPU and torch, cuda rows (fp32, fp16) time the CUDA kernel against the torch reference.

ms_p50 / ms_min: median / fastest wall time of repeated calls (at least 3, about 1 s per size), fused and reference
calls interleaved so that load from other processes falls on both alike (table: speedup of p50, and of min).
cpu_ms_p50: median process CPU time per call (all threads together): with one thread, the cost of the work itself,
which a busy machine disturbs far less than wall time (table: speedup by CPU time).
peak_bytes: the extra heap bytes one call allocates: tracemalloc's peak during the call (NumPy reports its
allocations to tracemalloc: the output, and for the reference its score matrix and temporaries) plus, for fused, the
kernel's own malloc'd workspace, which it reports exactly (edgecc._native.workspace_bytes; tracemalloc cannot see C
mallocs). BLAS-internal buffers are not counted.
The reference is skipped where one score matrix (N x 2K float32) would exceed --max-score-bytes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENS = (64, 128, 256, 1024, 2048, 4096, 8192, 16384)


def _time_pair(fns: dict, budget_s: float = 1.0, min_reps: int = 3, max_reps: int = 50) -> dict[str, dict]:
    """Per callable: wall and process-CPU seconds per call, calls interleaved (A, B, A, B, ...) so that load from
    other processes on a shared machine falls on both alike. One warm-up call each unless a call is slow."""
    for fn in fns.values():
        t = time.perf_counter()
        fn()
        if time.perf_counter() - t > budget_s / 2:
            min_reps = 2
    out: dict[str, dict] = {name: {"wall": [], "cpu": []} for name in fns}
    while min(len(v["wall"]) for v in out.values()) < min_reps or (
            sum(sum(v["wall"]) for v in out.values()) < budget_s and min(len(v["wall"]) for v in out.values())
            < max_reps):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            out[name]["cpu"].append(time.process_time() - c)
            out[name]["wall"].append(time.perf_counter() - t)
    return out


def _peak(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def worker(tokens: list[int], channels: int, heads: int, max_score_bytes: int) -> list[dict]:
    """Rows for this process's thread setting (set in the environment by the parent)."""
    import numpy as np

    from edgecc import fusion

    native = fusion._native_module()
    status = fusion.native_status()
    threads = int(os.environ.get("EDGECC_THREADS", "0"))
    rows = []
    for n in tokens:
        rng = np.random.default_rng(n)
        a, b = (rng.standard_normal((1, n, channels), dtype=np.float32) for _ in range(2))
        for topk in (0, n // 4):
            base = {"device": "cpu", "dtype": "fp32", "tokens": n, "topk": topk, "channels": channels, "heads": heads,
                    "batch": 1, "threads": threads or os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
            fns = {}
            if native is None:
                rows.append({**base, "impl": "fused", "skipped": f"native kernel not built ({fusion._import_error()})"})
            else:
                fns["fused"] = functools.partial(fusion.diff_attention, a, b, heads, topk, fused=True)
            score_bytes = n * 2 * (topk or n) * 4
            if score_bytes > max_score_bytes:
                rows.append({**base, "impl": "reference", "skipped": f"score matrix {score_bytes / 2**30:.1f} GiB per "
                             f"head > --max-score-bytes {max_score_bytes / 2**30:.1f} GiB"})
            else:
                fns["reference"] = functools.partial(fusion.diff_attention_reference, a, b, heads, topk)
            for impl, ts in _time_pair(fns).items():
                row = {**base, "impl": impl, "ms_p50": 1e3 * statistics.median(ts["wall"]),
                       "ms_min": 1e3 * min(ts["wall"]), "cpu_ms_p50": 1e3 * statistics.median(ts["cpu"]),
                       "reps": len(ts["wall"]), "peak_bytes": _peak(fns[impl])}
                if impl == "fused":
                    work = native.workspace_bytes(1, n, channels, heads, topk, threads)
                    row.update(peak_bytes=row["peak_bytes"] + work, workspace_bytes=work, simd=status["simd"],
                               threads_used=native.threads(threads, 1, n, channels, heads, topk))
                rows.append(row)
            print(f"  threads {threads or 'all'} N {n} topk {topk} done", file=sys.stderr, flush=True)
    return rows


def cuda_rows(tokens: list[int], channels: int, heads: int) -> list[dict]:
    """CUDA kernel vs torch reference, fp32 and fp16 (only with torch and a GPU; unverified here)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    from edgecc.train import ops

    rows = []
    for n in tokens:
        for dtype, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
            a, b = (torch.randn(1, n, channels, device="cuda", dtype=dtype) for _ in range(2))
            for topk in (0, n // 4):
                for impl, fn in (("fused", functools.partial(torch.ops.edgecc.diff_attention, a, b, heads, topk)),
                                 ("reference", functools.partial(ops.diff_attention_reference, a, b, heads, topk))):
                    try:
                        fn()
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                        base_mem = torch.cuda.memory_allocated()
                        ts = []
                        for _ in range(10):
                            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                            start.record()
                            fn()
                            end.record()
                            torch.cuda.synchronize()
                            ts.append(start.elapsed_time(end))
                        rows.append({"impl": impl, "device": "cuda", "dtype": name, "tokens": n, "topk": topk,
                                     "ms_p50": statistics.median(ts),
                                     "peak_bytes": torch.cuda.max_memory_allocated() - base_mem})
                    except torch.OutOfMemoryError as e:
                        rows.append({"impl": impl, "device": "cuda", "dtype": name, "tokens": n, "topk": topk,
                                     "skipped": f"out of memory: {str(e).splitlines()[0]}"})
    return rows


def machine_name() -> str:
    from edgecc.cpu import cpu

    c = cpu()
    kind = "xeon" if "Xeon" in c.model else (c.machine or "cpu").lower()
    return f"{kind}-{c.cores}core"


def table(rows: list[dict]) -> str:
    out = [f"{'threads':>7} {'tokens':>6} {'topk':>5} {'fused ms':>10} {'ref ms':>10} {'speedup':>8} {'(min)':>7} "
           f"{'(cpu)':>7} {'fused peak':>11} {'ref peak':>11}"]
    key = lambda r: (r.get("threads", 0), r["tokens"], r["topk"])  # noqa: E731
    by = {}
    for r in rows:
        if r["device"] == "cpu":
            by.setdefault(key(r), {})[r["impl"]] = r
    for (threads, n, k), pair in sorted(by.items()):
        f, ref = pair.get("fused", {}), pair.get("reference", {})

        def ms(r):
            return f"{r['ms_p50']:.3f}" if "ms_p50" in r else "skipped"

        def mb(r):
            return f"{r['peak_bytes'] / 2**20:.2f} MiB" if "peak_bytes" in r else "-"

        both = "ms_p50" in f and "ms_p50" in ref
        speed = f"{ref['ms_p50'] / f['ms_p50']:.2f}x" if both else "-"
        speed_min = f"{ref['ms_min'] / f['ms_min']:.2f}x" if both else "-"
        speed_cpu = f"{ref['cpu_ms_p50'] / f['cpu_ms_p50']:.2f}x" if both else "-"
        out.append(f"{threads:>7} {n:>6} {k:>5} {ms(f):>10} {ms(ref):>10} {speed:>8} {speed_min:>7} {speed_cpu:>7} "
                   f"{mb(f):>11} {mb(ref):>11}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--threads", default="1,0", help="thread settings, one process each (0 = all cores)")
    ap.add_argument("--max-score-bytes", type=int, default=2**30)
    ap.add_argument("--out", help="default benchmarks/results/kernels-<machine>-<date>.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    tokens = [int(t) for t in args.tokens.split(",")]
    if args.worker:
        print(json.dumps(worker(tokens, args.channels, args.heads, args.max_score_bytes)))
        return

    rows: list[dict] = []
    for threads in (int(t) for t in args.threads.split(",")):
        env = {**os.environ, "EDGECC_THREADS": str(threads)}
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(var, None)
            if threads:
                env[var] = str(threads)
        cmd = [sys.executable, __file__, "--worker", "--tokens", args.tokens, "--channels", str(args.channels),
               "--heads", str(args.heads), "--max-score-bytes", str(args.max_score_bytes)]
        done = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True)
        rows += json.loads(done.stdout)
    rows += cuda_rows(tokens, args.channels, args.heads)
    print(table(rows))
    out = Path(args.out) if args.out else (
        ROOT / "benchmarks" / "results" / f"kernels-{machine_name()}-{time.strftime('%Y-%m-%d')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
