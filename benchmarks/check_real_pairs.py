"""How the model does on REAL imagery (no captions there, so: the change gate against real change masks).

    python benchmarks/check_real_pairs.py [--model DIR] [--out benchmarks/results/real-pairs-<date>.json]

Reads ../shared/data (absent in a user's clone: the script says so and exits). For every real pair with a change
mask, cut 256x256 tiles, and compare the gate's call with the mask: a tile is "changed" when at least 2% of its
pixels are marked. Also prints the captions of the one real LEVIR-CC pair at hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _rgb(p: Path) -> np.ndarray:
    im = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if im is None:
        raise SystemExit(f"{p}: not readable")
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


def _mask(p: Path) -> np.ndarray:
    m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
    return m > 0


def tiles(pre, post, mask, size=256):
    h, w = pre.shape[:2]
    for r in range(0, h - size + 1, size):
        for c in range(0, w - size + 1, size):
            yield pre[r:r + size, c:c + size], post[r:r + size, c:c + size], float(mask[r:r + size, c:c + size].mean())


def pairs():
    rp = DATA / "real_pairs"
    for a in sorted((rp / "dsifn" / "A").glob("*")):
        yield "dsifn", a.name, a, rp / "dsifn" / "B" / a.name, rp / "dsifn" / "label" / a.name
    for a in sorted((rp / "levircd_tiles" / "A").glob("*.png")):
        yield "levircd", a.name, a, rp / "levircd_tiles" / "B" / a.name, rp / "levircd_tiles" / "label" / a.name
    for d in sorted((rp / "whucd").glob("prev/*")):
        yield "whucd", d.name, d, rp / "whucd" / "curr" / d.name, rp / "whucd" / "label" / d.name
    for site in sorted(p for p in (rp / "sztaki").glob("*") if p.is_dir()):
        yield "sztaki", site.name, site / "im1.png", site / "im2.png", site / "gt.png"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--out")
    ap.add_argument("--threshold", type=float, default=0.02, help="changed-pixel fraction that makes a tile changed")
    a = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found: this check needs the project's shared real data")
    import edgecc

    cap = edgecc.load(a.model)
    rows = []
    for src, name, pa, pb, pm in pairs():
        if not (pa.is_file() and pb.is_file() and pm.is_file()):
            continue
        pre, post, mask = _rgb(pa), _rgb(pb), _mask(pm)
        if pre.shape != post.shape or mask.shape != pre.shape[:2]:
            continue
        for i, (x, y, frac) in enumerate(tiles(pre, post, mask)):
            c = cap.caption_batch(x[None], y[None])[0]
            rows.append({"source": src, "pair": name, "tile": i, "changed_fraction": round(frac, 4),
                         "truth": frac >= a.threshold, "gate": c.changed, "score": round(c.change_score, 4),
                         "caption": c.text})
    by_src = {}
    for s in sorted({r["source"] for r in rows}):
        rs = [r for r in rows if r["source"] == s]
        pos = [r for r in rs if r["truth"]]
        neg = [r for r in rs if not r["truth"]]
        by_src[s] = {"tiles": len(rs), "changed_tiles": len(pos),
                     "recall": round(np.mean([r["gate"] for r in pos]), 3) if pos else None,
                     "false_positive_rate": round(np.mean([r["gate"] for r in neg]), 3) if neg else None,
                     "accuracy": round(np.mean([r["gate"] == r["truth"] for r in rs]), 3)}
    levir = DATA / "levircc" / "images" / "train"
    a_img, b_img = (_rgb(levir / d / "train_000016.png")[None] for d in ("A", "B"))
    lv = cap.caption_batch(a_img, b_img)[0]
    res = {"date": time.strftime("%Y-%m-%d"), "model": cap.bundle.name, "tile_threshold": a.threshold,
           "by_source": by_src,
           "levircc_train_000016": {"caption": lv.text, "score": round(lv.change_score, 4),
                                    "reference": "a row of houses is built by the road"},
           "examples": [r for r in rows if r["truth"]][:12]}
    print(json.dumps(res, indent=2))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({**res, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
