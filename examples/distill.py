"""`edgecc distill` through the API: distil the teacher into a Mamba student, export it (validated), score it.

    python examples/distill.py runs/teacher/model.pt runs/student   # needs edgecc[train,eval] and ../shared/data;
                                                                    # ~25 min on a 2-core CPU (cache pass + 2,000 steps)
"""

import sys
from pathlib import Path

from edgecc.export.onnx import export_bundle
from edgecc.train.distill import DistillOptions, distill
from edgecc.train.evaluate import EvalOptions, evaluate_bundle, format_report

CAPTIONS = str(Path(__file__).resolve().parents[2] / "shared/data/levircc/LevirCCcaptions.json")
if len(sys.argv) != 3:
    sys.exit(__doc__)
teacher, out = sys.argv[1], sys.argv[2]
ckpt = distill(DistillOptions(captions=CAPTIONS, teacher=teacher, out=out, decoder="mamba", steps=2000))
manifest = export_bundle(ckpt, f"{out}/bundle")  # raises if ONNX and PyTorch disagree
print(manifest["gflops_per_pair"], "GFLOPs/pair;", manifest["decoder"]["state_bytes_per_sequence"])
print(format_report(evaluate_bundle(f"{out}/bundle", CAPTIONS, EvalOptions(split="test", limit=200))))
