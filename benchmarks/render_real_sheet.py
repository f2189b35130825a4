"""A contact sheet of the bundled model on REAL image pairs, for a human to look at (not a score).

    python benchmarks/render_real_sheet.py [--data ../shared/data] [--model MODEL] [--out docs/real_pairs.png]

Reads the labelled real pairs in ../shared/data (absent in a user's clone: the script says so and exits with 2).
One row per pair: for each of LEVIR-CD, WHU-CD, SZTAKI and xBD the two changed tiles with the largest changed
fraction and the first unchanged tile (skipping tiles with no-data borders); then two identity pairs (an image against
itself) and one photometric copy (a gamma change of one image), which are unchanged by construction. Each row shows
before | after | the true change mask | the after image under the model's 8x8 change mask (red, opacity proportional
to probability), and beside it the truth, the calibrated change_score, the call at the bundle's threshold (green
right, red wrong) and the caption.
"""

from __future__ import annotations

import argparse
import io
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = ("levircd", "whucd", "sztaki", "xbd")
SIZE = 256
IMG_IN = 2.0  # inches per image cell; at DPI this is the shown size in pixels
DPI = 80
TEXT_IN = 4.8  # inches of the text column
ROW_GAP_IN = 0.12
HEAD_IN = 0.95  # title and column headers
ALPHA = 0.8  # overlay opacity at probability 1
GREEN, RED = "#1a7f37", "#cf222e"
WRAP = 56  # characters per caption line
MAX_BYTES = 2_500_000


@dataclass
class Row:
    """One pair to show, and its truth."""

    source: str
    key: str
    pre: np.ndarray
    post: np.ndarray
    mask: np.ndarray | None  # bool [256,256]; None for pairs unchanged by construction
    label: int  # 1 changed, 0 unchanged
    frac: float  # changed fraction of the true mask
    note: str = ""


def has_nodata(tile, limit: float = 0.01) -> bool:
    """True when more than `limit` of either image is pure black (a scene edge without data, e.g. xBD)."""
    pre, post, _ = tile.load()
    return any(float((x.max(-1) == 0).mean()) > limit for x in (pre, post))


def first_clean(tiles, n: int) -> list:
    out = []
    for t in tiles:
        if len(out) == n:
            break
        if not has_nodata(t):
            out.append(t)
    return out


def pick_tiles(corpus, source: str) -> list:
    """The 2 changed tiles with the largest changed fraction, then the first unchanged tile (deterministic; tiles
    with no-data borders are skipped)."""
    tiles = corpus.tiles(sources=(source,))
    changed = sorted((t for t in tiles if t.label == 1), key=lambda t: (-t.changed_fraction, t.key))
    return first_clean(changed, 2) + first_clean([t for t in tiles if t.label == 0], 1)


def tile_row(tile) -> Row:
    pre, post, mask = tile.load()
    return Row(tile.source, tile.key, pre, post, mask, int(tile.label), float(tile.changed_fraction))


def same_image_rows(levir_tile, sztaki_tile, copy_tile) -> list[Row]:
    """Two identity pairs (before images) and one gamma copy (of an after image): unchanged by construction."""
    from edgecc.train.real import perturb

    rows = []
    for t in (levir_tile, sztaki_tile):
        img = t.load()[0]
        rows.append(Row(t.source, f"{t.key} (before vs itself)", img, img, None, 0, 0.0, "identity"))
    a, b = perturb(copy_tile.load()[1], "gamma", np.random.default_rng(0))
    a, b = (cv2.resize(x, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for x in (a, b))
    rows.append(Row(copy_tile.source, f"{copy_tile.key} (after vs its gamma copy)", a, b, None, 0, 0.0,
                    "photometric copy"))
    return rows


def build_rows(data: Path) -> list[Row]:
    from edgecc.train.real import RealCorpus

    corpus = RealCorpus.scan(data)
    picked = {s: pick_tiles(corpus, s) for s in SOURCES}
    rows = [tile_row(t) for s in SOURCES for t in picked[s]]
    return rows + same_image_rows(picked["levircd"][0], picked["sztaki"][0], picked["levircd"][0])


def overlay(post: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """The after image under the model's mask, upsampled bilinearly, as red with opacity ALPHA * probability."""
    p = cv2.resize(prob.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    a = (ALPHA * np.clip(p, 0.0, 1.0))[..., None]
    red = np.array([255.0, 0.0, 0.0], np.float32)
    return (post.astype(np.float32) * (1 - a) + red * a).astype(np.uint8)


def truth_text(r: Row) -> str:
    if r.mask is None:
        return f"truth: unchanged ({r.note}, by construction)"
    return f"truth: {'changed' if r.label else 'unchanged'} ({r.frac:.1%} of pixels marked)"


def row_text(r: Row, c, thr: float) -> tuple[list[str], bool]:
    """The text lines beside a row (the first is the key), and whether the model's call is right."""
    call = int(c.changed)
    right = call == r.label
    lines = [f"{'RIGHT' if right else 'WRONG'}: change_score {c.change_score:.3f} -> "
             f"{'changed' if call else 'unchanged'} at {thr:.3f}"]
    if (c.change_score >= thr) != bool(call):
        lines.append("(gate over threshold, but the caption says no change)")
    lines.append(f"model mask: max {c.mask.max():.2f}, mean {c.mask.mean():.2f}")
    lines += textwrap.wrap(f'caption: "{c.text}"', WRAP)
    return [r.key, truth_text(r)] + lines, right


def add_image(fig, img, x_in: float, y_in: float, h_in: float, w_in: float, **kw):
    ax = fig.add_axes((x_in / w_in, y_in / h_in, IMG_IN / w_in, IMG_IN / h_in))
    ax.imshow(img, interpolation="antialiased", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def draw_row(fig, r: Row, c, thr: float, y_in: float, size_in: tuple[float, float]) -> bool:
    w_in, h_in = size_in
    x = 0.1
    add_image(fig, r.pre, x, y_in, h_in, w_in)
    add_image(fig, r.post, x + IMG_IN, y_in, h_in, w_in)
    if r.mask is None:
        ax = add_image(fig, np.zeros((SIZE, SIZE)), x + 2 * IMG_IN, y_in, h_in, w_in, cmap="gray", vmin=0, vmax=1)
        ax.text(0.5, 0.5, "no mask", color="white", ha="center", va="center", fontsize=11, transform=ax.transAxes)
    else:
        add_image(fig, r.mask, x + 2 * IMG_IN, y_in, h_in, w_in, cmap="gray", vmin=0, vmax=1)
    add_image(fig, overlay(r.post, c.mask), x + 3 * IMG_IN, y_in, h_in, w_in)
    lines, right = row_text(r, c, thr)
    tx, ty = (x + 4 * IMG_IN + 0.15) / w_in, (y_in + IMG_IN - 0.05) / h_in
    fig.text(tx, ty, lines[0], fontsize=9.5, weight="bold", va="top")
    fig.text(tx, ty - 0.22 / h_in, "\n".join(lines[1:2]), fontsize=9.5, va="top")
    fig.text(tx, ty - 0.44 / h_in, "\n".join(lines[2:]), fontsize=9.5, va="top", linespacing=1.35,
             color=GREEN if right else RED, weight="bold" if not right else "normal")
    return right


def summary(rows: list[Row], rights: list[bool]) -> str:
    groups = dict.fromkeys([r.source if r.mask is not None else "same-image" for r in rows])
    parts = []
    for g in groups:
        ok = [k for r, k in zip(rows, rights) if (r.source if r.mask is not None else "same-image") == g]
        parts.append(f"{g} {sum(ok)}/{len(ok)}")
    return f"right {sum(rights)}/{len(rights)}: " + ", ".join(parts)


def save_png(fig, out: Path) -> None:
    """RGB PNG, optimized; quantized to a 256-colour palette only if it would still exceed MAX_BYTES."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, facecolor="white", format="png")
    plt.close(fig)
    im = Image.open(buf).convert("RGB")
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out, "PNG", optimize=True)
    if out.stat().st_size > MAX_BYTES:
        im.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)


def render(rows: list[Row], caps: list, cap, out: Path) -> str:
    thr = cap.gate_threshold
    w_in = 0.1 + 4 * IMG_IN + TEXT_IN
    h_in = HEAD_IN + len(rows) * (IMG_IN + ROW_GAP_IN) + 0.1
    fig = plt.figure(figsize=(w_in, h_in), dpi=DPI, facecolor="white")
    rights = []
    for i, (r, c) in enumerate(zip(rows, caps)):
        y = h_in - HEAD_IN - (i + 1) * (IMG_IN + ROW_GAP_IN) + ROW_GAP_IN
        rights.append(draw_row(fig, r, c, thr, y, (w_in, h_in)))
    title = (f"edgecc model {cap.bundle.name} ({cap.precision}), gate threshold {thr:.3f}: "
             "real imagery (not LEVIR-CC-synth)")
    fig.text(0.1 / w_in, 1 - 0.12 / h_in, title, fontsize=13, weight="bold", va="top")
    fig.text(0.1 / w_in, 1 - 0.45 / h_in, summary(rows, rights) + "   (green = right call, red = wrong)",
             fontsize=10.5, va="top")
    for j, head in enumerate(("before", "after", "true mask", f"model mask (red, opacity {ALPHA:g} x p)")):
        fig.text((0.1 + (j + 0.5) * IMG_IN) / w_in, 1 - (HEAD_IN - 0.05) / h_in, head, fontsize=9.5,
                 ha="center", va="bottom")
    save_png(fig, out)
    return summary(rows, rights)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (holds real_pairs/)")
    ap.add_argument("--model", help="bundle directory or bundled model name (default: the bundled default)")
    ap.add_argument("--out", type=Path, default=Path("docs/real_pairs.png"))
    a = ap.parse_args()
    if not (a.data / "real_pairs").is_dir():
        print(f"{a.data}: no real_pairs/ here; this sheet needs the project's shared real data", file=sys.stderr)
        sys.exit(2)
    import edgecc

    t0 = time.perf_counter()
    cap = edgecc.load(a.model)
    rows = build_rows(a.data)
    caps = [cap.caption_batch(r.pre[None], r.post[None])[0] for r in rows]
    result = render(rows, caps, cap, a.out)
    size = a.out.stat().st_size / 1e6
    print(f"{a.out}: {len(rows)} rows, {result}; {size:.2f} MB, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
