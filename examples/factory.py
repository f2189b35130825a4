"""`edgecc train`, `edgecc export` and `edgecc eval` through the API (needs `pip install -e ".[train,eval]"`).

    python examples/factory.py --captions ../shared/data/levircc/LevirCCcaptions.json --steps 50 --limit 200
"""

import argparse

from edgecc.export.onnx import export_bundle
from edgecc.train.evaluate import EvalOptions, evaluate_bundle, format_report
from edgecc.train.train import TrainOptions, train

ap = argparse.ArgumentParser()
ap.add_argument("--captions", required=True)
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--limit", type=int, default=200, help="pairs per split (a smoke run); None for all")
ap.add_argument("--out", default="runs/example")
a = ap.parse_args()

ckpt = train(TrainOptions(captions=a.captions, out=a.out, steps=a.steps, limit=a.limit, batch=32))
manifest = export_bundle(ckpt, f"{a.out}/bundle")  # ONNX checker + parity + identical greedy tokens
print(manifest["validation"])
print(format_report(evaluate_bundle(f"{a.out}/bundle", a.captions, EvalOptions(limit=100, meteor=False))))
