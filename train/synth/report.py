"""Parser coverage report, render speed and a contact sheet of LEVIR-CC-synth pairs.

Example:
    python -m edgecc.train.synth.report --captions ../shared/data/levircc/LevirCCcaptions.json --out docs/

Writes `parser_coverage.md` (coverage overall and on changed captions, field statistics, the most common
unparsed captions, render speed) and `contact_sheet.png` (before | after | mask, one real caption under each).
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from .parser import CLASSES, ChangeSpec, merge_specs, parse_caption
from .render import render_pair

DEFAULT_CAPTIONS = Path(__file__).resolve().parents[2].parent / "shared/data/levircc/LevirCCcaptions.json"
# Mask colours per class index (RGB); 0 = black.
PALETTE = np.array([(0, 0, 0), (230, 60, 60), (250, 160, 40), (200, 200, 200), (40, 200, 60), (150, 230, 110),
                    (120, 120, 255), (255, 80, 200), (40, 120, 255), (60, 230, 230), (200, 170, 120),
                    (200, 230, 60)], np.uint8)


def load_pairs(path: str | Path) -> list[dict]:
    """The `images` list of a Karpathy-style LEVIR-CC caption file."""
    return json.loads(Path(path).read_text())["images"]


def pair_spec(pair: dict) -> ChangeSpec:
    """Consensus spec of one pair's captions (uses the dataset's changeflag)."""
    return merge_specs([parse_caption(s["tokens"]) for s in pair["sentences"]], int(pair["changeflag"]))


def coverage(pairs: list[dict]) -> dict:
    """Parser statistics over all captions of `pairs`."""
    n = n_ok = n_ch = n_ch_ok = n_nc = n_nc_ok = 0
    unparsed: Counter[str] = Counter()
    fields = Counter()
    objs: Counter[str] = Counter()
    merged_empty = 0
    for p in pairs:
        flag = int(p["changeflag"])
        for s in p["sentences"]:
            sp = parse_caption(s["tokens"])
            n += 1
            n_ok += not sp.empty
            if flag:
                n_ch += 1
                ok = sp.changed and not sp.empty
                n_ch_ok += ok
                if not ok:
                    unparsed[" ".join(s["tokens"])] += 1
                for it in sp.items:
                    fields["items"] += 1
                    fields["position"] += it.position is not None
                    fields["relation"] += it.relation is not None
                    fields["replaced_by"] += it.replaced_by is not None
                    objs[f"{it.obj}:{it.action}"] += 1
            else:
                n_nc += 1
                n_nc_ok += not sp.changed
        if flag and pair_spec(p).empty:
            merged_empty += 1
    return dict(n=n, ok=n_ok, n_changed=n_ch, ok_changed=n_ch_ok, n_nochange=n_nc, ok_nochange=n_nc_ok,
                unparsed=unparsed, fields=fields, objs=objs, merged_empty=merged_empty,
                n_pairs_changed=sum(int(p["changeflag"]) for p in pairs))


def speed(pairs: list[dict], n: int = 500, size: int = 256) -> float:
    """Rendered pairs per second on this process (one core), over the first n pairs (specs parsed beforehand)."""
    specs = [(p["filename"], pair_spec(p)) for p in pairs[:n]]
    for fid, sp in specs[:20]:  # warm the texture caches
        render_pair(fid, sp, size)
    t0 = time.perf_counter()
    for fid, sp in specs:
        render_pair(fid, sp, size)
    return len(specs) / (time.perf_counter() - t0)


def _text_block(lines: list[str], width: int, scale: float = 0.42) -> np.ndarray:
    """White text on dark grey, uint8 [h, width, 3]."""
    lh = int(22 * scale / 0.42)
    img = np.full((lh * len(lines) + 8, width, 3), 30, np.uint8)
    for i, t in enumerate(lines):
        cv2.putText(img, t, (6, lh * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def contact_sheet(pairs: list[dict], out: Path, n: int = 8, cols: int = 2) -> Path:
    """Grid of n pairs (before | after | mask) with a real caption and the parsed spec under each."""
    chosen: list[dict] = []
    seen: set[str] = set()
    changed = [p for p in pairs if int(p["changeflag"])]
    rng = np.random.default_rng(0)
    for i in rng.permutation(len(changed)):  # diverse: one pair per leading (object, action)
        sp = pair_spec(changed[i])
        if sp.empty:
            continue
        key = f"{sp.items[0].obj}:{sp.items[0].action}"
        if key not in seen:
            seen.add(key)
            chosen.append(changed[i])
        if len(chosen) >= n - 1:
            break
    chosen.append(next(p for p in pairs if not int(p["changeflag"])))
    cells = []
    for p in chosen:
        sp = pair_spec(p)
        pre, post, mask = render_pair(p["filename"], sp)
        gap = np.full((256, 4, 3), 255, np.uint8)
        row = np.concatenate([pre, gap, post, gap, PALETTE[mask]], 1)
        cap = p["sentences"][0]["raw"].strip()
        items = "; ".join(f"{i.count} {i.obj} {i.action}" + (f" @{i.position}" if i.position else "") +
                          (f" ({i.relation})" if i.relation else "") for i in sp.items) or "no change"
        lines = [f"{p['filename']}  (before | after | mask)"] + textwrap.wrap(f'"{cap}"', 88)[:2] + \
            textwrap.wrap("spec: " + items, 88)[:2]
        lines += [""] * (5 - len(lines))
        cells.append(np.concatenate([row, _text_block(lines, row.shape[1])], 0))
    while len(cells) % cols:
        cells.append(np.zeros_like(cells[0]))
    pad = np.full((cells[0].shape[0], 12, 3), 255, np.uint8)
    rows = [np.concatenate(sum(([c, pad] for c in cells[r:r + cols]), [])[:-1], 1) for r in range(0, len(cells), cols)]
    legend = "mask colours: " + "  ".join(CLASSES[1:])
    sheet = np.concatenate([_legend(rows[0].shape[1])] + sum(([r, np.full((12, r.shape[1], 3), 255, np.uint8)]
                                                              for r in rows), []), 0)
    del legend
    path = out / "contact_sheet.png"
    cv2.imwrite(str(path), sheet[..., ::-1])
    return path


def _legend(width: int) -> np.ndarray:
    img = np.full((30, width, 3), 30, np.uint8)
    x = 8
    cv2.putText(img, "LEVIR-CC-synth (rendered, not real imagery). mask:", (x, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 1, cv2.LINE_AA)
    x += 420
    for i, c in enumerate(CLASSES[1:], 1):
        cv2.rectangle(img, (x, 8), (x + 14, 22), tuple(int(v) for v in PALETTE[i]), -1)
        cv2.putText(img, c, (x + 18, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        x += 26 + 9 * len(c)
    return img


def write_report(cov: dict, pps: float | None, out: Path, captions: Path) -> Path:
    pct = lambda a, b: f"{100.0 * a / max(b, 1):.2f}%"  # noqa: E731
    f = cov["fields"]
    lines = [
        "# LEVIR-CC caption parser coverage",
        "",
        "Generated by `python -m edgecc.train.synth.report` over "
        f"`{captions.name}` ({cov['n']} captions). A caption counts as parsed when `parse_caption` returns a "
        "non-empty spec (a recognized no-change template counts as parsed).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| all captions parsed (non-empty spec) | {cov['ok']} / {cov['n']} = {pct(cov['ok'], cov['n'])} |",
        f"| captions of changed pairs parsed as a change with >= 1 item | {cov['ok_changed']} / {cov['n_changed']} "
        f"= {pct(cov['ok_changed'], cov['n_changed'])} |",
        f"| captions of unchanged pairs recognized as no-change | {cov['ok_nochange']} / {cov['n_nochange']} = "
        f"{pct(cov['ok_nochange'], cov['n_nochange'])} |",
        f"| changed pairs whose 5-caption consensus is empty | {cov['merged_empty']} / {cov['n_pairs_changed']} |",
        f"| items with a position | {pct(f['position'], f['items'])} |",
        f"| items with a relation | {pct(f['relation'], f['items'])} |",
        f"| items with replaced_by | {pct(f['replaced_by'], f['items'])} |",
    ]
    if pps is not None:
        lines.append(f"| render speed, 256x256, one process | {pps:.0f} pairs/s |")
    lines += ["", "## Most common (object:action) items in changed captions", "", "| item | captions |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in cov["objs"].most_common(25)]
    lines += ["", "## Most common captions of changed pairs not parsed as a change", "", "| count | caption |",
              "|---|---|"]
    lines += [f"| {v} | {k} |" for k, v in cov["unparsed"].most_common(30)]
    path = out / "parser_coverage.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", type=Path, default=DEFAULT_CAPTIONS, help="LevirCCcaptions.json")
    ap.add_argument("--out", type=Path, default=Path("docs"), help="output folder")
    ap.add_argument("--speed-n", type=int, default=500, help="pairs timed for the speed figure (0: skip)")
    args = ap.parse_args(argv)
    pairs = load_pairs(args.captions)
    args.out.mkdir(parents=True, exist_ok=True)
    cov = coverage(pairs)
    pps = speed(pairs, args.speed_n) if args.speed_n else None
    md = write_report(cov, pps, args.out, args.captions)
    png = contact_sheet(pairs, args.out)
    print(f"coverage {cov['ok'] / cov['n']:.4f} (changed {cov['ok_changed'] / cov['n_changed']:.4f}); "
          f"{pps or 0:.0f} pairs/s; wrote {md} and {png}")


if __name__ == "__main__":
    main()
