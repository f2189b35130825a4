"""Record the default bundle's captions (tokens and change scores) on seeded and rendered pairs, the runtime's
quality fixture: a speed change must leave every one of them identical (tests/test_engines.py).

    python tests/data/make_captions_fixture.py tests/data/captions_default.json

Pairs: `edgecc.bench.make_inputs(256, 12, seed 0)`, 18 LEVIR-CC-synth renders of six captions, and the bundled
example pair. Floating-point results depend on the CPU's kernels, so the file records the CPU's ISA; the test
compares on a CPU with the same ISA and skips elsewhere.
"""

from __future__ import annotations

import json
import sys

import numpy as np

CAPTIONS = ["many houses are built along the road", "a road is built on the bareland", "some trees are removed",
            "two buildings appear at the top left", "there is no difference", "a parking lot is built"]
CASES = [(prec, beam) for prec in ("int8", "fp32") for beam in (1, 2, 3)]


def pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from edgecc.train.synth import merge_specs, parse_caption, render_pair

    from edgecc.bench import make_inputs

    pre, post = make_inputs(256, 12, 0)
    rendered = [render_pair(f"bench_{i}", merge_specs([parse_caption(c.split())], int("no" not in c)))[:2]
                for i, c in enumerate(CAPTIONS * 3)]
    return {"seeded": (pre, post),
            "synth": (np.stack([r[0] for r in rendered]), np.stack([r[1] for r in rendered]))}


def record(cap, pre: np.ndarray, post: np.ndarray) -> list:
    """Each pair alone, then the first 7 as one batch: [text, tokens, change_score rounded to 1e-5]."""
    caps = [cap.caption_batch(pre[i:i + 1], post[i:i + 1])[0] for i in range(len(pre))]
    caps += cap.caption_batch(pre[:7], post[:7])
    return [[c.text, list(c.tokens), round(c.change_score, 5)] for c in caps]


def main(out: str) -> None:
    import edgecc
    from edgecc.cpu import cpu
    from edgecc.decoding import DecodingOptions

    data = pairs()
    res: dict = {"isa": list(cpu().isa), "cases": {}}
    for prec, beam in CASES:
        base = edgecc.load(precision=prec, encoder_threads=1, decoder_threads=1)
        cap = edgecc.load(precision=prec, encoder_threads=1, decoder_threads=1,
                          options=DecodingOptions(**{**base.bundle.manifest.get("decoding", {}), "beam_size": beam}))
        for name, (pre, post) in data.items():
            res["cases"][f"{name}/{prec}/beam{beam}"] = record(cap, pre, post)
    with open(out, "w") as f:
        json.dump(res, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
