"""`edgecc bench` through the API: latency and LEVIR-CC-synth quality for the ONNX Runtime CPU rows.

    python examples/bench.py                                   # the bundled model, quick
    python examples/bench.py --model runs/teacher/bundle --checkpoint runs/teacher/model.pt --json bench.json
"""

import argparse

from edgecc.bench import BenchOptions, print_table, run, save_outputs

ap = argparse.ArgumentParser()
ap.add_argument("--model")
ap.add_argument("--checkpoint")
ap.add_argument("--json")
a = ap.parse_args()

opts = BenchOptions(model=a.model, checkpoint=a.checkpoint, quick=True, backends=("ort-cpu", "torch-cpu"),
                    precisions=("fp32", "int8"), batches=(1, 8))
report = run(opts)  # one subprocess per runnable (backend, precision); rows that cannot run carry their reason
print_table(report)
save_outputs(report, json_path=a.json)
ok = [r for r in report["rows"] if r["status"] == "ok" and r["batch"] == 1]
for r in ok:
    print(f"{r['backend']} {r['precision']}: {r['latency_ms']['total_p50']} ms/pair, CIDEr-D {r['quality']['CIDEr-D']}")
