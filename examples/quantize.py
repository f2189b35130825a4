"""`edgecc quantize` through the API: int8 + fp16 variants of a COPY of a bundle, then each variant evaluated.

    python examples/quantize.py edgecc/models/default /tmp/bundle_q      # needs edgecc[train,eval] and ../shared/data
"""

import shutil
import sys
from pathlib import Path

from edgecc.calibration.quantize import QuantizeOptions, quantize_bundle
from edgecc.train.evaluate import EvalOptions, evaluate_bundle, format_report

CAPTIONS = str(Path(__file__).resolve().parents[2] / "shared/data/levircc/LevirCCcaptions.json")
if len(sys.argv) != 3:
    sys.exit(__doc__)
src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst)  # the shipped bundle is never modified in place
manifest = quantize_bundle(dst, QuantizeOptions(method="minmax", max_drop=0.01), log=print)
for prec in ("int8", "fp16"):
    v = manifest["variants"][prec]
    print(prec, v["size_bytes"], "bytes; LEVIR-CC-synth val control:", v["metrics"], "float:", v.get("float_nodes"))
    rep = evaluate_bundle(dst, CAPTIONS,
                          EvalOptions(split="test", limit=100, meteor=False, precision=prec))
    print(format_report(rep))
