"""`edgecc tune` and the tuning part of `edgecc doctor` through the API: measure this CPU, cache the choice,
and see what `edgecc.load()` runs and why.

    python examples/tune.py [BUNDLE_DIR]
"""

import sys

import edgecc
from edgecc.bundle import Bundle
from edgecc.engines.capability import capabilities, format_table
from edgecc.tune import cache_path, current, tune

bundle = Bundle.open(sys.argv[1] if len(sys.argv) > 1 else None)
print(format_table(capabilities(bundle)))  # backend x precision: what runs here, and why not
print("before:", current(bundle).why)
choice = tune(bundle, reps=20, say=print)  # a few seconds; cached per bundle, ONNX Runtime version and CPU
print("picked:", choice.precision, choice.engine_options(), "\n  why:", choice.why, "\n  cache:", cache_path(bundle))
cap = edgecc.load(bundle.root)  # applies the cached choice
print(cap.tuning["source"], cap.engine.threads)
