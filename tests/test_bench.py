"""edgecc.bench: the registry-driven matrix, skip reasons, the report schema on a tiny real run, stored quality.

No timing assertions: benchmarks live in the benchmark. Fixtures `tiny_bundle` / `tiny_checkpoint` come from
tests/conftest.py (tests/data/make_tiny_bundle.py).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edgecc import bench
from edgecc.bench import PRECISIONS, BenchOptions, Precision, plan, run, save_outputs
from edgecc.bundle import Bundle, write_manifest
from edgecc.engines import BACKENDS

NO_CHECKPOINT = "no PyTorch checkpoint in the bundle (edgecc bench --checkpoint, edgecc.load(checkpoint=...))"

FAST = dict(warmup=1, min_reps=2, budget_s=0.0, n_inputs=4)  # smallest honest timing loop
LATENCY_KEYS = {"encode_p50", "token_mean", "total_p50", "total_p90", "total_p99"}
QUALITY_KEYS = {"CIDEr-D", "CIDEr-D-changed", "BLEU-4", "gate_accuracy", "cider_drift"}
ROW_KEYS = {"backend", "precision", "batch", "status", "reason", "size_bytes", "latency_ms", "throughput_pairs_s",
            "cold_start_s", "peak_rss_mb", "quality"}
HAS_TORCH = importlib.util.find_spec("torch") is not None


def _rows(rows, backend, precision):
    return [r for r in rows if (r["backend"], r["precision"]) == (backend, precision)]


def test_matrix_is_every_backend_x_precision_x_batch(tiny_bundle):
    rows = plan(BenchOptions(model=str(tiny_bundle), batches=(1, 8)))
    got = {(r["backend"], r["precision"], r["batch"]) for r in rows}
    assert got == {(b, p, n) for b in BACKENDS for p in PRECISIONS for n in (1, 8)}
    assert "tensorrt" not in BACKENDS  # no native TensorRT engine module exists: TensorRT is ort-tensorrt
    for r in rows:
        assert set(r) >= ROW_KEYS
        assert r["status"] in ("pending", "skipped")
        assert (r["status"] == "skipped") == bool(r["reason"])


def test_skip_reasons(tiny_bundle, tiny_checkpoint):
    rows = plan(BenchOptions(model=str(tiny_bundle), batches=(1,)))  # the tiny bundle dir holds no model.pt
    assert _rows(rows, "ort-cpu", "fp32")[0]["status"] == "pending"
    assert _rows(rows, "ort-cpu", "int8")[0]["reason"] == "no int8 variant in the bundle"
    assert _rows(rows, "ort-cpu", "fp32")[0]["size_bytes"] == sum(
        m["bytes"] for n, m in Bundle.open(tiny_bundle).manifest["files"].items() if n.endswith(".onnx"))
    if "TensorrtExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        assert "TensorrtExecutionProvider" in _rows(rows, "ort-tensorrt", "fp32")[0]["reason"]
    if not HAS_TORCH:
        return
    assert _rows(rows, "torch-cpu", "fp32")[0]["reason"] == NO_CHECKPOINT
    rows = plan(BenchOptions(model=str(tiny_bundle), checkpoint=str(tiny_checkpoint), batches=(1,)))
    assert _rows(rows, "torch-cpu", "fp32")[0]["status"] == "pending"
    assert _rows(rows, "torch-cpu", "fp32")[0]["size_bytes"] == Path(tiny_checkpoint).stat().st_size
    assert _rows(rows, "torch-cpu", "fp16")[0]["reason"] == "fp16 on CPU not supported by this engine"
    assert "int8" in _rows(rows, "torch-cpu", "int8")[0]["reason"]


def test_a_new_precision_joins_by_one_registry_entry(tiny_bundle, monkeypatch):
    monkeypatch.setitem(PRECISIONS, "bf16", Precision("bf16", torch_dtype="bfloat16"))
    rows = plan(BenchOptions(model=str(tiny_bundle), backends=("ort-cpu",), batches=(1,)))
    assert _rows(rows, "ort-cpu", "bf16")[0]["reason"] == "no bf16 variant in the bundle"


def test_unknown_names_are_clear_errors(tiny_bundle):
    with pytest.raises(ValueError, match="unknown ort-npu"):
        plan(BenchOptions(model=str(tiny_bundle), backends=("ort-npu",)))


def test_stages_come_from_the_engine_timing_hook(tiny_bundle):
    """Per-stage times and the decoder-step count come from the engine's hook; the captioner is not touched."""
    import edgecc
    from edgecc.engines import timed

    cap = edgecc.load(tiny_bundle, threshold=0.0)  # the gate opens on every pair: the decoder runs
    pre, post = bench.make_inputs(cap.input_size, 4)
    timing = {"warmup": 1, "min_reps": 2, "max_reps": 4, "budget_s": 0}
    engine = cap.engine
    with timed(cap.engine) as timer:
        out = bench.time_batch(cap, timer, pre, post, 2, timing)
    assert cap.engine is engine and engine.timer is None  # the hook is detached after
    assert set(out["latency_ms"]) == LATENCY_KEYS
    reps = out["timing"]["reps"]
    assert {"encode", "decode"} <= set(out["stages_ms"])  # a one-graph encoder; the split form: tests/test_engines.py
    assert timer.calls["encode"] == reps and timer.calls["decode"] == reps  # one encode and one decode per call
    steps = out["timing"]["decoder_steps"]
    assert steps and steps >= reps
    assert out["latency_ms"]["token_mean"] == pytest.approx(out["stages_ms"]["decode"] * reps / steps, rel=1e-2)
    assert sum(out["stages_ms"].values()) <= out["latency_ms"]["total_p90"] * 1.5


def test_report_schema_on_a_tiny_run(tiny_bundle, tiny_checkpoint, tmp_path):
    backends = ("ort-cpu", "ort-cuda") + (("torch-cpu",) if HAS_TORCH else ())
    opts = BenchOptions(model=str(tiny_bundle), checkpoint=str(tiny_checkpoint), backends=backends,
                        precisions=("fp32", "int8"), batches=(1, 2), **FAST)
    report = run(opts, progress=lambda msg: None)
    save_outputs(report, json_path=tmp_path / "b.json", markdown_path=tmp_path / "b.md")
    rep = json.loads((tmp_path / "b.json").read_text())
    assert {"machine", "date", "bundle", "dataset", "rows"} <= set(rep)
    assert rep["dataset"] == "levircc-synth"
    assert {"cpu", "cpu_flags", "cores", "versions", "gpu"} <= set(rep["machine"])
    assert len(rep["rows"]) == len(backends) * 2 * 2
    for r in rep["rows"]:
        assert set(r) >= ROW_KEYS and set(r["latency_ms"]) == LATENCY_KEYS and set(r["quality"]) >= QUALITY_KEYS
        assert r["status"] in ("ok", "skipped", "failed")
        assert r["quality"]["CIDEr-D"] is None and r["quality_reason"]
        if r["status"] != "ok":
            assert r["reason"]
    ok = [r for r in rep["rows"] if r["status"] == "ok"]
    assert {(r["backend"], r["precision"]) for r in ok} >= {(b, "fp32") for b in backends if b != "ort-cuda"}
    assert [r["reason"] for r in _rows(rep["rows"], "ort-cpu", "int8")] == ["no int8 variant in the bundle"] * 2
    for r in ok:
        lat = r["latency_ms"]
        assert lat["total_p50"] > 0 and lat["encode_p50"] > 0 and lat["total_p99"] >= lat["total_p50"]
        assert r["throughput_pairs_s"] > 0 and r["cold_start_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["best_batch"] in (1, 2) and r["timing"]["reps"] >= 2
        assert r["stages_ms"]["read"] > 0 and "decode" in r["stages_ms"]
        if r["backend"] == "ort-cpu":  # an engine with the timing hook inside encode
            assert r["stages_ms"]["encode"] > 0 and r["threads"]["ort_decoder_intra_op"] >= 1
    assert {"source", "precision", "encoder_threads", "decoder_threads", "batch_dates", "why"} <= set(rep["tuning"])
    md = (tmp_path / "b.md").read_text()
    assert "quality: n/a" in md and "| n/a |" in md  # the tiny bundle's manifest stores no metrics
    assert md.count("\n| ort-cpu |") == 4


def test_plot(tiny_bundle, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs the 'plot' extra")
    report = run(BenchOptions(model=str(tiny_bundle), backends=("ort-cpu",), precisions=("fp32",), batches=(1,),
                              isolate=False, **FAST), progress=lambda msg: None)
    save_outputs(report, plot_path=tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def _metrics(cider):
    return {"dataset": "levircc-synth", "split": "test", "n": 8, "metrics": {"CIDEr-D": cider, "BLEU-4": 0.5},
            "changed": {"metrics": {"CIDEr-D": cider / 2}}, "gate_accuracy": 0.9}


def test_quality_and_drift_come_from_the_manifest(tiny_bundle, tiny_checkpoint, tmp_path):
    """No live scoring: each variant's stored test metrics, drift against fp32's; n/a where none is stored."""
    import shutil

    root = shutil.copytree(tiny_bundle, tmp_path / "b")
    m = Bundle.open(root).manifest
    variants = {**m["variants"], "int8": {**m["variants"]["fp32"], "test_metrics": _metrics(1.2)},
                "fp16": dict(m["variants"]["fp32"])}  # stand-ins on the fp32 graphs; fp16 has no metrics
    write_manifest(root, {**m, "files": list(m["files"]), "variants": variants, "metrics": _metrics(1.25)})
    rows = plan(BenchOptions(model=str(root), checkpoint=str(tiny_checkpoint), batches=(1,)))
    fp32, int8, fp16 = (_rows(rows, "ort-cpu", p)[0] for p in ("fp32", "int8", "fp16"))
    assert fp32["quality"]["CIDEr-D"] == 1.25 and fp32["quality"]["cider_drift"] == 0.0
    assert int8["quality"]["CIDEr-D"] == 1.2 and int8["quality"]["cider_drift"] == -0.05
    assert int8["quality"]["CIDEr-D-changed"] == 0.6 and int8["quality"]["n"] == 8
    assert fp16["quality"]["CIDEr-D"] is None and "no fp16 test metrics in the manifest" in fp16["quality_reason"]
    torch_row = _rows(rows, "torch-cpu", "fp32")[0]
    assert torch_row["quality"]["CIDEr-D"] is None and "checkpoint" in torch_row["quality_reason"]
    from edgecc._bench_report import to_markdown

    md = to_markdown({"machine": {"cpu": "x", "cores": 1, "versions": {"onnxruntime": "1"}, "loadavg_at_start": []},
                      "bundle": {"name": "b", "files_sha256": "0" * 64}, "date": "d", "rows": rows})
    assert "LEVIR-CC-synth test n=8 from the bundle manifest" in md
    assert "| 1.200 | 0.600 | 0.500 | 0.900 | -0.0500 |" in md and "| n/a | n/a | n/a | n/a | n/a |" in md


def test_inputs_rotate_changed_and_unchanged_pairs():
    pre, post = bench.make_inputs(64, 6)
    assert pre.shape == post.shape == (6, 64, 64, 3) and pre.dtype == np.uint8
    assert [bool((a != b).any()) for a, b in zip(pre, post)] == [True, True, False] * 2
    assert (bench.make_inputs(64, 6)[1] == post).all()  # seeded


def test_cli_bench(tiny_bundle, tmp_path):
    from typer.testing import CliRunner

    from edgecc.cli import app

    out = tmp_path / "cli.json"
    res = CliRunner().invoke(app, ["bench", "--model", str(tiny_bundle), "--backends", "ort-cpu", "--precisions",
                                   "fp32,int8", "--batches", "1", "--quick", "--json", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["precision"], r["status"]) for r in rows] == [("fp32", "ok"), ("int8", "skipped")]
    table = [x for x in res.stdout.splitlines() if x.startswith("│")]
    assert len(table) == 1 and "fp32" in table[0]  # only the row that ran is a table row
    assert res.stdout.rstrip().endswith("skipped (cannot run here):\n  ort-cpu int8: no int8 variant in the bundle")
    assert "reason" not in res.stdout and "CIDEr" not in res.stdout.split("┘")[0]  # no empty columns
    from edgecc.cpu import cpu

    flat = " ".join(res.stdout.split())
    assert cpu().model.split()[0] in flat and "tuned (" in flat  # the CPU and the tuned choice are in the caption
    assert f"ISA: {' '.join(cpu().isa) or '-'}" in flat


@pytest.mark.parametrize("args, says", [(["--batches", ""], "--batches '' names nothing"),
                                        (["--batches", "0,1"], "--batches are sizes >= 1"),
                                        (["--batches", "x"], "--batches takes batch sizes"),
                                        (["--backends", ","], "--backends ',' names nothing")])
def test_cli_bench_refuses_lists_that_cannot_be_meant(tiny_bundle, args, says):
    from typer.testing import CliRunner

    from edgecc.cli import app

    res = CliRunner().invoke(app, ["bench", "--model", str(tiny_bundle), "--quick", *args])
    assert res.exit_code == 2 and says in res.stderr, res.output


def test_cli_bench_outputs_go_into_new_folders_and_repeats_run_once(tiny_bundle, tmp_path):
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from edgecc.cli import app

    plot, out = tmp_path / "new" / "dir" / "p.png", tmp_path / "r.json"
    res = CliRunner().invoke(app, ["bench", "--model", str(tiny_bundle), "--backends", "ort-cuda,ort-cuda",
                                   "--precisions", "fp32", "--batches", "1", "--quick", "--plot", str(plot),
                                   "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(json.loads(out.read_text())["rows"]) == 1


def test_skipped_rows_are_grouped_by_reason():
    from edgecc._bench_report import skipped_list

    rows = [{"backend": b, "precision": p, "batch": n, "status": "skipped" if b != "ort-cpu" else "ok", "reason": r}
            for b, r in (("ort-cpu", None), ("ort-cuda", "no CUDA"), ("tensorrt", "no CUDA"), ("torch-cpu", "no ckpt"))
            for p in ("fp32", "fp16") for n in (1, 8)]
    assert skipped_list(rows) == ("skipped (cannot run here):\n  ort-cuda fp32/fp16, tensorrt fp32/fp16: no CUDA\n"
                                  "  torch-cpu fp32/fp16: no ckpt")
    assert skipped_list(rows[:4]) == ""
