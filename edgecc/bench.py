"""Latency across backends x precisions x batch sizes, in one table, beside each variant's stored quality.

The matrix comes from the registries: every backend in `edgecc.engines.BACKENDS` x every precision in `PRECISIONS`
x the batch sizes asked. A row that cannot run here stays in the table with its reason. Each runnable
(backend, precision) runs in a fresh subprocess (`python -m edgecc.bench --row SPEC`), so cold start and peak RSS
are its own: cold start = bundle open + engine creation + first caption. Latency rotates over seeded synthetic
pairs (changed and unchanged, gate on, the bundle's decoding). Quality is not measured here: it is the LEVIR-CC-synth
test metrics the bundle manifest stores per variant (`edgecc eval --update-manifest` writes them).

Example:
    >>> from edgecc.bench import BenchOptions, run, save_outputs
    >>> report = run(BenchOptions(quick=True, backends=("ort-cpu",)))
    >>> save_outputs(report, json_path="bench.json", markdown_path="bench.md")
    >>> [(r["backend"], r["precision"], r["batch"], r["status"], r["latency_ms"]["total_p50"]) for r in report["rows"]]

    $ edgecc bench --quick --backends ort-cpu,torch-cpu --checkpoint runs/teacher/model.pt --json bench.json
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from .bundle import Bundle
from .engines import BACKENDS, Backend, StageTimer, timed
from .engines.capability import PRECISIONS, Precision, checkpoint_path, register_precision
from .engines.capability import reason as capability_reason

DATASET = "levircc-synth"  # of the manifest's quality metrics


# ---------------------------------------------------------------------------------------------- options and plan


@dataclass(frozen=True)
class BenchOptions:
    model: str | None = None  # bundle directory; None: the bundled default model
    checkpoint: str | None = None  # PyTorch checkpoint for torch-* rows (else <bundle>/model.pt)
    backends: tuple[str, ...] | None = None  # None: every registered backend
    precisions: tuple[str, ...] | None = None  # None: every registered precision
    batches: tuple[int, ...] = (1, 8)
    quick: bool = False  # fewer reps: a smoke run
    n_inputs: int = 12  # synthetic pairs the timing rotates over (2 of every 6 unchanged)
    warmup: int | None = None  # calls before timing; None: 2 quick / 5
    min_reps: int | None = None  # None: 8 quick / 30
    max_reps: int = 1000
    budget_s: float | None = None  # time budget per batch size once min_reps are done; None: 2 quick / 15
    isolate: bool = True  # one subprocess per (backend, precision); False: in this process (RSS then shared)
    row_timeout_s: float = 1800.0

    @property
    def timing(self) -> dict:
        q = self.quick
        return {"warmup": self.warmup if self.warmup is not None else (2 if q else 5),
                "min_reps": self.min_reps if self.min_reps is not None else (8 if q else 30),
                "max_reps": self.max_reps, "budget_s": self.budget_s if self.budget_s is not None else (2 if q else 15)}


def _is_torch(backend: Backend) -> bool:
    return backend.kind == "torch"


def _checkpoint(bundle: Bundle, opts: BenchOptions) -> Path | None:
    return checkpoint_path(bundle, opts.checkpoint)


def row_reason(backend: Backend, precision: Precision, bundle: Bundle, opts: BenchOptions) -> str | None:
    """None when (backend, precision) can run here with this bundle, else why not (the capability table's)."""
    return capability_reason(backend, precision, bundle, opts.checkpoint)


def size_bytes(backend: Backend, precision: str, bundle: Bundle, opts: BenchOptions) -> int | None:
    """Bytes a deployment loads: the variant's ONNX files (external data included), or the checkpoint for torch."""
    if _is_torch(backend):
        ck = _checkpoint(bundle, opts)
        return ck.stat().st_size if ck else None
    variant = bundle.manifest.get("variants", {}).get(precision)
    if not variant:
        return None
    files = bundle.manifest["files"]
    # the graphs the engine opens (engines/ort.py): split = trunk + kernel + fusion; standard = the encoder, and the
    # trunk beside it where the gate needs tokens the encoder does not give (the student)
    split_ok = "trunk" in variant and "fusion" in variant
    split = backend.options.get("fusion", "split" if split_ok and backend.device == "cpu" else "standard") == "split"
    roles = ({"trunk", "fusion"} if split else {"encoder", "trunk"}) | {"decoder", "gate"}
    names = {variant[r] for r in roles if isinstance(variant.get(r), str) and variant[r] in files}
    names |= {n for n in files for v in names if n != v and n.startswith(v)}  # encoder.onnx.data and the like
    loop = (bundle.manifest.get("decode_loop") or {}).get("graphs", {}).get(precision)
    if loop and loop.get("file") in files:  # the in-graph search the engine also loads
        names.add(loop["file"])
    return sum(int(files[n]["bytes"]) for n in names)


def _empty_row(backend: str, precision: str, batch: int) -> dict:
    return {"backend": backend, "precision": precision, "batch": batch, "status": "skipped", "reason": None,
            "size_bytes": None, "stages_ms": None,
            "latency_ms": {k: None for k in ("encode_p50", "token_mean", "total_p50", "total_p90", "total_p99")},
            "throughput_pairs_s": None, "cold_start_s": None, "peak_rss_mb": None,
            "quality": {k: None for k in ("CIDEr-D", "CIDEr-D-changed", "BLEU-4", "gate_accuracy", "cider_drift")}}


def plan(opts: BenchOptions, bundle: Bundle | None = None) -> list[dict]:
    """Every asked backend x precision x batch as a row; rows that cannot run carry status 'skipped' and a reason.

    Quality is the variant's LEVIR-CC-synth test metrics from the manifest; cider_drift is its CIDEr-D minus fp32's.
    """
    bundle = bundle or Bundle.open(opts.model)
    stored = {v["precision"]: v["metrics"] for v in bundle.variants_info() if v["metrics"]}
    ref = (stored.get("fp32") or {}).get("CIDEr-D")
    names = opts.backends or tuple(BACKENDS)
    precs = opts.precisions or tuple(PRECISIONS)
    for n, reg in ((names, BACKENDS), (precs, PRECISIONS)):
        unknown = [x for x in n if x not in reg]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}: choose from {', '.join(reg)}")
    rows = []
    for name in names:
        for p in precs:
            reason = row_reason(BACKENDS[name], PRECISIONS[p], bundle, opts)
            q = None if _is_torch(BACKENDS[name]) else stored.get(p)
            for b in sorted(set(opts.batches)):
                row = _empty_row(name, p, b)
                row.update(status="pending" if reason is None else "skipped", reason=reason,
                           size_bytes=size_bytes(BACKENDS[name], p, bundle, opts))
                if q and q.get("CIDEr-D") is not None:
                    row["quality"].update(q, cider_drift=None if ref is None else round(q["CIDEr-D"] - ref, 4))
                elif _is_torch(BACKENDS[name]):
                    row["quality_reason"] = "a checkpoint's quality is not in the manifest (edgecc eval --checkpoint)"
                else:
                    row["quality_reason"] = f"no {p} test metrics in the manifest (edgecc eval --update-manifest)"
                rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- machine, inputs

def machine_info() -> dict:
    from edgecc.cpu import cpu

    c = cpu()
    import onnxruntime as ort

    versions = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__}
    for pkg in ("torch", "tensorrt"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            versions[pkg] = None
    gpu = None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        gpu = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": c.model.strip(), "cpu_flags": list(c.isa), "cores": c.cores,
            "logical_cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(), "gpu": gpu,
            "providers": ort.get_available_providers(), "versions": versions,
            "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}}


def make_inputs(size: int, n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """-> pre, post uint8 [n,size,size,3]: seeded scenes (bare ground, a road); every third post is its pre
    (unchanged), the others gain 10-19 houses (roof and shadow), which the shipped gates call changed."""
    rng = np.random.default_rng(seed)
    pre, post = [], []
    for i in range(n):
        ground = cv2.resize(rng.uniform(70, 150, (8, 8, 3)).astype(np.float32) * [1.05, 0.95, 0.8], (size, size),
                            interpolation=cv2.INTER_CUBIC)
        a = np.clip(ground + rng.normal(0, 8, ground.shape), 0, 255).astype(np.uint8)
        y = int(rng.integers(size // 4, 3 * size // 4))
        cv2.line(a, (0, y), (size - 1, y + int(rng.integers(-size // 4, size // 4))), (110, 110, 105), size // 20 + 1)
        b = a.copy()
        for _ in range(0 if i % 3 == 2 else int(rng.integers(10, 20))):
            x, y = rng.integers(0, size - size // 8, 2).tolist()
            w, h = rng.integers(size // 14, size // 8, 2).tolist()
            cv2.rectangle(b, (x + 3, y + 3), (x + w + 3, y + h + 3), (40, 40, 45), -1)
            roof = rng.integers(150, 250, 3).tolist()
            cv2.rectangle(b, (x, y), (x + w, y + h), roof, -1)
            cv2.line(b, (x, y + h // 2), (x + w, y + h // 2), [0.8 * c for c in roof], 1)
        pre.append(a)
        post.append(b)
    return np.stack(pre), np.stack(post)


# ---------------------------------------------------------------------------------------------- one configuration


def _pct(xs, q) -> float | None:
    return round(float(np.percentile(xs, q)), 3) if len(xs) else None


def _threads(engine) -> dict:
    """intra-op threads per session role, from the engine's named sessions (torch: its thread count)."""
    out = {}
    for role, sess in getattr(engine, "sessions", {}).items():
        if hasattr(sess, "get_session_options"):
            out[f"ort_{role}_intra_op"] = sess.get_session_options().intra_op_num_threads
    if getattr(engine, "torch", None) is not None:
        out["torch_threads"] = engine.torch.get_num_threads()
    return out


def time_read(paths: tuple[str, str], reps: int = 5) -> float | None:
    """Median ms to read one 256x256 pair from files (imagery.read_pair and its first tile), the "read" stage."""
    from .imagery import ReadOptions, read_pair

    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        with read_pair(*paths, ReadOptions()) as pair:
            pair.read_window(0, 0, min(pair.width, 256), min(pair.height, 256))
        ts.append(time.perf_counter() - t)
    return round(float(np.median(ts)) * 1e3, 3)


def time_batch(cap, timer: StageTimer, pre, post, batch: int, timing: dict) -> dict:
    """Warm up, then time calls at `batch` until min_reps are done and medians are stable or the budget is spent."""
    n = len(pre)

    def call(k):
        idx = [(k * batch + i) % n for i in range(batch)]  # rotate so no two consecutive calls see the same pairs
        t = time.perf_counter()
        caps = cap.caption_batch(pre[idx], post[idx])
        return (time.perf_counter() - t) * 1e3, caps[0].timings_ms["encode"], sum(c.changed for c in caps)

    for k in range(timing["warmup"]):
        call(k)
    timer.reset()
    totals, encodes, changed, stable, last_med = [], [], 0, False, None
    t0 = time.perf_counter()
    k = timing["warmup"]
    while len(totals) < timing["max_reps"]:
        total, enc, ch = call(k)
        k += 1
        totals.append(total)
        encodes.append(enc)
        changed += ch
        if len(totals) >= timing["min_reps"] and len(totals) % timing["min_reps"] == 0:
            med = float(np.median(totals))
            stable = last_med is not None and abs(med - last_med) <= 0.02 * last_med
            last_med = med
            if stable or time.perf_counter() - t0 > timing["budget_s"]:
                break
    arr = np.asarray(totals)
    p50 = float(np.median(arr))
    mad = float(np.median(np.abs(arr - p50)))
    n_steps = timer.counts.get("steps")  # decoder steps, counted by an engine with the timing hook
    stages = {k: round(v / len(totals), 3) for k, v in timer.ms().items()}  # mean ms per call
    token = stages["decode"] / (n_steps / len(totals)) if n_steps and "decode" in stages else None
    # token_mean: decode-stage time per decoder step (session call and search work), the cost per decoded token
    return {"latency_ms": {"encode_p50": _pct(encodes, 50), "token_mean": None if token is None else round(token, 3),
                           "total_p50": _pct(totals, 50), "total_p90": _pct(totals, 90), "total_p99": _pct(totals, 99)},
            "stages_ms": stages,
            "throughput_pairs_s": round(batch * 1e3 / float(np.mean(totals)), 2),
            "timing": {"reps": len(totals), "stable": stable, "outliers": int(np.sum(arr > p50 + 5 * mad)),
                       "seconds": round(time.perf_counter() - t0, 2), "decoder_steps": n_steps,
                       "changed_fraction": round(changed / (len(totals) * batch), 3)}}


def run_config(spec: dict) -> dict:
    """Run one (backend, precision) for every batch size: the body of one `--row` subprocess."""
    from .captioner import load

    t0 = time.perf_counter()
    engine_opts = {"checkpoint": spec["checkpoint"]} if spec.get("checkpoint") else {}
    cap = load(spec["model"], backend=spec["backend"], precision=spec["precision"], **engine_opts)
    with np.load(spec["inputs"]) as z:
        pre, post = z["pre"], z["post"]
    cap.caption_batch(pre[:1], post[:1])
    out = {"cold_start_s": round(time.perf_counter() - t0, 3), "threads": _threads(cap.engine),
           "tuning": cap.tuning, "batches": {}}
    with timed(cap.engine) as timer:  # the engine's timing hook: per-stage times
        for b in spec["batches"]:
            try:
                out["batches"][str(b)] = {"status": "ok", **time_batch(cap, timer, pre, post, b, spec["timing"])}
            except Exception as e:  # noqa: BLE001 - one batch size failing (memory) must not lose the others
                out["batches"][str(b)] = {"status": "failed", "reason": f"{e.__class__.__name__}: {e}"[:300]}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    return out


def _run_isolated(spec: dict, workdir: Path, timeout: float) -> dict:
    spec_path = workdir / f"{spec['backend']}-{spec['precision']}.json"
    spec = {**spec, "out": str(spec_path.with_suffix(".out.json"))}
    spec_path.write_text(json.dumps(spec))
    try:
        proc = subprocess.run([sys.executable, "-m", "edgecc.bench", "--row", str(spec_path)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:.0f} s") from None
    out = Path(spec["out"])
    if proc.returncode != 0 or not out.is_file():
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(tail[-1] if tail else f"row subprocess exited with {proc.returncode}")
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------- the whole matrix


def _tuning(bundle: Bundle) -> dict:
    """This machine's tuned choice for the bundle (what ort-cpu rows without an explicit option run)."""
    from .tune import current

    c = current(bundle)
    return {"source": c.source, "precision": c.precision, **c.engine_options(), "why": c.why}


def run(opts: BenchOptions = BenchOptions(), progress=None) -> dict:
    """Run the matrix -> {machine, date, bundle, dataset, options, tuning, rows: [{backend, precision, batch, status,
    reason, size_bytes, latency_ms{encode_p50, token_mean, total_p50, total_p90, total_p99}, stages_ms{read,
    preprocess, encode, fusion, decode}, throughput_pairs_s, cold_start_s,
    peak_rss_mb, quality{CIDEr-D, CIDEr-D-changed, BLEU-4, gate_accuracy, cider_drift}, ...}]}."""
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    bundle = Bundle.open(opts.model)
    rows = plan(opts, bundle)
    report = {"machine": machine_info(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec="seconds"), "bundle": {"name": bundle.name, "root": str(bundle.root),
              "files_sha256": bundle.files_sha256, "variants": list(bundle.manifest.get("variants", {})),
              "params": bundle.manifest.get("params"), "input_size": bundle.manifest["input"]["size"],
              "decoding": bundle.manifest.get("decoding", {"beam_size": 1})},
              "dataset": DATASET, "options": {**asdict(opts), "timing": opts.timing},
              "tuning": _tuning(bundle), "rows": rows}
    configs = list(dict.fromkeys((r["backend"], r["precision"]) for r in rows if r["status"] == "pending"))
    with tempfile.TemporaryDirectory(prefix="edgecc-bench-") as tmp:
        read_ms = None
        if configs:
            pre, post = make_inputs(int(bundle.manifest["input"]["size"]), opts.n_inputs)
            np.savez(Path(tmp) / "inputs.npz", pre=pre, post=post)
            files = (str(Path(tmp) / "pre.png"), str(Path(tmp) / "post.png"))
            for f, img in zip(files, (pre[0], post[0])):
                cv2.imwrite(f, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            read_ms = time_read(files)
        for backend, precision in configs:
            mine = [r for r in rows if (r["backend"], r["precision"]) == (backend, precision)]
            spec = {"model": str(bundle.root), "backend": backend, "precision": precision,
                    "batches": [r["batch"] for r in mine], "timing": opts.timing,
                    "inputs": str(Path(tmp) / "inputs.npz"),
                    "checkpoint": str(_checkpoint(bundle, opts)) if _is_torch(BACKENDS[backend]) else None}
            say(f"bench {backend} {precision} batches {spec['batches']} ...")
            t = time.perf_counter()
            try:
                res = _run_isolated(spec, Path(tmp), opts.row_timeout_s) if opts.isolate else run_config(spec)
            except Exception as e:  # noqa: BLE001 - a failed row is a row, not a crash
                for r in mine:
                    r.update(status="failed", reason=str(e)[:300])
                say(f"  failed: {e}")
                continue
            say(f"  done in {time.perf_counter() - t:.1f} s")
            ok = [r for r in mine if res["batches"][str(r["batch"])]["status"] == "ok"]
            best = max(ok, key=lambda r: res["batches"][str(r["batch"])]["throughput_pairs_s"], default=None)
            for r in mine:
                br = res["batches"][str(r["batch"])]
                r.update(status=br["status"], reason=br.get("reason"), cold_start_s=res["cold_start_s"],
                         peak_rss_mb=res["peak_rss_mb"], threads=res["threads"], tuning=res.get("tuning"),
                         isolated=opts.isolate)
                if br["status"] == "ok":
                    stages = dict(br["stages_ms"])
                    if read_ms is not None:
                        stages = {"read": round(read_ms * r["batch"], 3), **stages}
                    r.update(latency_ms=br["latency_ms"], throughput_pairs_s=br["throughput_pairs_s"], stages_ms=stages,
                             timing=br["timing"], best_batch=best["batch"],
                             best_throughput_pairs_s=res["batches"][str(best["batch"])]["throughput_pairs_s"])
    return report


def save_outputs(report: dict, json_path=None, markdown_path=None, plot_path=None) -> None:
    """Write the report as JSON, a markdown table, and/or a latency-vs-CIDEr-D PNG (needs the 'plot' extra)."""
    from . import _bench_report
    from ._atomic import write_json, write_text

    if json_path:
        write_json(json_path, report)
    if markdown_path:
        write_text(markdown_path, _bench_report.to_markdown(report))
    if plot_path:
        _bench_report.save_plot(report, plot_path)


def print_table(report: dict, console=None) -> None:
    from . import _bench_report

    _bench_report.print_table(report, console)


def _row_main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--row":
        print("usage: python -m edgecc.bench --row SPEC.json   (internal; use `edgecc bench`)", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    Path(spec["out"]).write_text(json.dumps(run_config(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(_row_main(sys.argv[1:]))


__all__ = ["BenchOptions", "PRECISIONS", "Precision", "machine_info", "make_inputs", "plan", "print_table",
           "register_precision", "row_reason", "run", "save_outputs", "time_read"]
