"""Decoders side by side: transformer (KV cache) vs Mamba (selective SSM) vs sparse attention, on this CPU.

    python benchmarks/bench_decoders.py runs/b-transformer runs/b-mamba runs/b-sparse [--out JSON]

Per bundle: per-token latency of the ONNX Runtime decoder step (1 thread, batch 1 = greedy and batch 3 = a beam of
3, p50 over steps 0..23 with the state carried, so the KV cache really grows), state bytes per sequence (recurrent
state at 39 tokens, and the fixed cross-attention memory), and the LEVIR-CC-synth test metrics stored in the
manifest by `edgecc eval --update-manifest`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np

from edgecc.bundle import Bundle
from edgecc.engines.ort import OrtEngine


def token_latency(bundle: Bundle, batch: int, steps: int = 24, reps: int = 30) -> dict:
    eng = OrtEngine(bundle, decoder_threads=1)
    rng = np.random.default_rng(0)
    pre = rng.integers(0, 255, (batch, 256, 256, 3), dtype=np.uint8)
    enc = eng.encode(pre, pre[::-1].copy())
    per_step = [[] for _ in range(steps)]
    for _ in range(reps):
        state = eng.initial_state(enc)
        tok = np.full(batch, 1, np.int64)
        for t in range(steps):
            t0 = time.perf_counter()
            logits, state = eng.step(tok, t, state)
            per_step[t].append((time.perf_counter() - t0) * 1e3)
            tok = logits.argmax(-1)
    med = [float(np.median(x)) for x in per_step]
    return {"p50_ms": round(float(np.median(med)), 4), "first_ms": round(med[0], 4), "last_ms": round(med[-1], 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="+")
    p.add_argument("--out", default=f"benchmarks/results/decoders-xeon-2core-{datetime.date.today()}.json")
    a = p.parse_args()
    rows = []
    for path in a.bundles:
        b = Bundle.open(path)
        m = b.manifest
        met = m.get("metrics") or {}
        rows.append({
            "bundle": path, "decoder": m["decoder"]["kind"], "params": m.get("params"),
            "decoder_bytes": m["files"]["decoder.onnx"]["bytes"], "gflops_per_pair": m.get("gflops_per_pair"),
            "state_bytes_per_sequence": m["decoder"].get("state_bytes_per_sequence"),
            "token_ms_batch1": token_latency(b, 1), "token_ms_batch3": token_latency(b, 3),
            "levircc_synth_test": {"CIDEr-D": (met.get("metrics") or {}).get("CIDEr-D"),
                                   "CIDEr-D-changed": ((met.get("changed") or {}).get("metrics") or {}).get("CIDEr-D"),
                                   "BLEU-4": (met.get("metrics") or {}).get("BLEU-4"),
                                   "gate_accuracy": met.get("gate_accuracy")},
        })
    hdr = ("decoder", "CIDEr-D chg", "CIDEr-D", "gate acc", "token ms b1", "token ms b3", "state B @39", "memory B")
    print("LEVIR-CC-synth test split; per-token latency: ONNX Runtime CPU, 1 thread")
    print(" | ".join(hdr))
    for r in rows:
        q, s = r["levircc_synth_test"], r["state_bytes_per_sequence"]
        print(" | ".join(str(x) for x in (r["decoder"], q["CIDEr-D-changed"], q["CIDEr-D"], q["gate_accuracy"],
                                           r["token_ms_batch1"]["p50_ms"], r["token_ms_batch3"]["p50_ms"],
                                           s["state"], s["memory"])))
    Path(a.out).write_text(json.dumps({"date": str(datetime.date.today()), "rows": rows}, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
