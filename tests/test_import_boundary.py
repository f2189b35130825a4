"""The runtime stands alone: every `edgecc` module imports, captions and benchmarks with torch, onnx and the
factory (edgecc.train, edgecc.export, edgecc.calibration) unimportable."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"


def test_runtime_imports_and_runs_without_the_factory(run_without_factory):
    out = run_without_factory(f"""
import importlib, pkgutil
import edgecc

FACTORY = ('edgecc.train', 'edgecc.export', 'edgecc.calibration')

def factory(name):
    return any(name == f or name.startswith(f + '.') for f in FACTORY)

def onerror(name):
    if not factory(name):
        raise

names = [m.name for m in pkgutil.walk_packages(edgecc.__path__, 'edgecc.', onerror) if not factory(m.name)]
for name in names:
    importlib.import_module(name)
assert {{'edgecc.cli', 'edgecc.bench', 'edgecc.engines.ort', 'edgecc.stream.sources'}} <= set(names), names

cap = edgecc.load().caption({str(EXAMPLES / "pre.png")!r}, {str(EXAMPLES / "post.png")!r})
assert cap.caption, cap

from edgecc.bench import BenchOptions, run
rep = run(BenchOptions(backends=('ort-cpu',), precisions=('fp32',), batches=(1,), isolate=False, warmup=1,
                       min_reps=2, budget_s=0.0, n_inputs=3), progress=lambda msg: None)
assert rep['rows'][0]['status'] == 'ok', rep['rows'][0]
print(len(names), 'ok')
""", packages=True)
    assert out.stdout.strip().endswith(" ok"), out.stderr[-3000:]
