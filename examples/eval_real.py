"""`edgecc eval-real` and `edgecc fit-gate` through the API: the model on real pairs, leave-one-source-out.

    python examples/eval_real.py ../shared/data
"""

import sys

from edgecc.train.evaluate_real import RealEvalOptions, evaluate_real, format_real_report

opts = RealEvalOptions(data=sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
report = evaluate_real(None, opts, captions=False)  # None: the bundled default; captions=False: the gate only
print(format_real_report(report))
# refit the gate a bundle ships (writes gate.onnx and the manifest of a bundle you own):
#   from edgecc.export.gate import install_gate; from edgecc.train.evaluate_real import fit_shipped_gate
#   install_gate("my_bundle", *fit_shipped_gate("my_bundle", opts))
