"""`edgecc info` and `edgecc doctor` through the API: a bundle's manifest, and which backends run here.

    python examples/info.py [BUNDLE_DIR]
"""

import sys

from edgecc.bundle import Bundle
from edgecc.engines.capability import capabilities, format_table

bundle = Bundle.open(sys.argv[1] if len(sys.argv) > 1 else None)  # verifies every file's sha256
m = bundle.manifest
print(bundle.name, m["arch"], f"{m['params'] / 1e6:.2f}M params", "variants:", ", ".join(m["variants"]))
print("LEVIR-CC-synth metrics:", m.get("metrics", {}).get("changed", {}).get("metrics"))
print(format_table(capabilities(bundle)))  # backend x precision: runs here, or why not (the table doctor prints)
