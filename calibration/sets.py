"""Calibration sets: committed lists of real before/after pairs, decoded into uint8 arrays, refusing random data.

A set file names one pair per line ('#' starts a comment); paths are relative to the data root (../shared/data):

    synth val_000123 0                                         LEVIR-CC-synth pair id, render variant
    real real_pairs/dsifn/A/0_2.png real_pairs/dsifn/B/0_2.png 0 0 256    pre, post, crop col row size

Example:
    >>> cs = CalibrationSet.load("calibration/sets/default.txt")       # parsed, sha256 of the file
    >>> data = load_pairs(cs, size=256)                                 # uint8 [n,256,256,3] x2, checked
    >>> data.pre.shape, data.n_synth, data.n_real, data.sha256
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecc.errors import EdgeccError

SETS_DIR = Path(__file__).resolve().parent / "sets"
DEFAULT_SET = SETS_DIR / "default.txt"
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the checkout
CAPTIONS = Path("levircc") / "LevirCCcaptions.json"
MIN_NEIGHBOUR_CORR = 0.3  # real and rendered imagery measured 0.69-0.98; i.i.d. noise of any histogram ~0.0
MIN_STD = 2.0  # grey levels; below this an image is constant


class CalibrationError(EdgeccError):
    """Calibration input cannot be used (empty, malformed, missing, constant or random); one line saying why."""


@dataclass(frozen=True)
class SynthEntry:
    pair_id: str  # LEVIR-CC file stem, e.g. val_000123
    variant: int  # render variant of SynthDataset.images


@dataclass(frozen=True)
class RealEntry:
    pre: str  # path relative to the data root
    post: str
    col: int  # square crop [row:row+size, col:col+size] of the pre grid, resized to the model input
    row: int
    size: int


@dataclass(frozen=True)
class CalibrationSet:
    name: str
    sha256: str  # of the list file's bytes
    entries: tuple[SynthEntry | RealEntry, ...]

    @classmethod
    def load(cls, path: str | Path | None = None) -> CalibrationSet:
        path = Path(path) if path is not None else DEFAULT_SET
        if not path.is_file():
            raise CalibrationError(f"{path}: calibration set not found")
        raw = path.read_bytes()
        return cls(str(path), hashlib.sha256(raw).hexdigest(), parse_set(raw.decode("utf-8", "replace"), str(path)))

    @property
    def label(self) -> str:
        """The set's name as stored in a manifest: relative to calibration/sets/ when it lives there."""
        p = Path(self.name).resolve()
        return f"calibration/sets/{p.name}" if p.parent == SETS_DIR else self.name


def parse_set(text: str, name: str = "<set>") -> tuple[SynthEntry | RealEntry, ...]:
    """Parse a set file's text; a malformed line is a CalibrationError naming the file and line."""
    out: list[SynthEntry | RealEntry] = []
    for i, line in enumerate(text.splitlines(), 1):
        f = line.split("#", 1)[0].split()
        if not f:
            continue
        where = f"{name}:{i}"
        try:
            if f[0] == "synth" and len(f) == 3:
                out.append(SynthEntry(f[1], int(f[2])))
                if out[-1].variant < 0:
                    raise ValueError
            elif f[0] == "real" and len(f) == 6:
                col, row, size = (int(x) for x in f[3:])
                if col < 0 or row < 0 or size < 16:
                    raise ValueError
                out.append(RealEntry(f[1], f[2], col, row, size))
            else:
                raise ValueError
        except ValueError:
            raise CalibrationError(
                f"{where}: expected 'synth PAIR_ID VARIANT' or 'real PRE POST COL ROW SIZE' (non-negative integers, "
                f"SIZE >= 16), got {line.strip()!r}"
            ) from None
    return tuple(out)


@dataclass(frozen=True)
class CalibrationData:
    pre: np.ndarray  # uint8 [n,S,S,3]
    post: np.ndarray  # uint8 [n,S,S,3]
    names: tuple[str, ...]
    n_synth: int
    n_real: int
    sha256: str  # of the decoded arrays (pre then post bytes)


def load_pairs(cal_set: CalibrationSet, size: int = 256, data_root: str | Path | None = None) -> CalibrationData:
    """Decode every entry to uint8 [S,S,3] pairs and refuse empty, missing, constant or random data."""
    import cv2

    if not cal_set.entries:
        raise CalibrationError(f"{cal_set.name}: calibration set is empty (refusing to calibrate on no data)")
    root = Path(data_root) if data_root is not None else DEFAULT_DATA_ROOT
    pres, posts, names = [], [], []
    synth = [e for e in cal_set.entries if isinstance(e, SynthEntry)]
    if synth:
        from edgecc.train.data import SynthDataset, load_captions

        cap_path = root / CAPTIONS
        if not cap_path.is_file():
            raise CalibrationError(f"{cap_path}: LEVIR-CC captions not found (synth entries need the data root)")
        by_id = {r.pair_id: r for r in load_captions(cap_path)}
        ds = SynthDataset([], size)
    for e in cal_set.entries:
        if isinstance(e, SynthEntry):
            if e.pair_id not in by_id:
                raise CalibrationError(f"{cal_set.name}: pair {e.pair_id} is not in {cap_path}")
            pre, post, _ = ds.images(by_id[e.pair_id], e.variant)
            name = f"synth:{e.pair_id}:{e.variant}"
        else:
            pre, post = _read_crop(root, e)
            name = f"real:{e.pre}@{e.col},{e.row},{e.size}"
        if pre.shape[:2] != (size, size):
            pre, post = (cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA) for x in (pre, post))
        for img, which in ((pre, "pre"), (post, "post")):
            check_image(img, f"{name} ({which})")
        pres.append(pre)
        posts.append(post)
        names.append(name)
    pre, post = np.stack(pres), np.stack(posts)  # uint8 [n,S,S,3] x2
    h = hashlib.sha256(pre.tobytes())
    h.update(post.tobytes())
    return CalibrationData(pre, post, tuple(names), len(synth), len(names) - len(synth), h.hexdigest())


def _read_crop(root: Path, e: RealEntry) -> tuple[np.ndarray, np.ndarray]:
    from edgecc.imagery import read_pair

    for p in (root / e.pre, root / e.post):
        if not p.is_file():
            raise CalibrationError(f"{p}: calibration pair file not found (is the data root {root} present?)")
    with read_pair(root / e.pre, root / e.post) as pair:
        if e.col + e.size > pair.width or e.row + e.size > pair.height:
            raise CalibrationError(
                f"{root / e.pre}: crop {e.col},{e.row} size {e.size} exceeds the image ({pair.width} x {pair.height})"
            )
        pre, post, _ = pair.read_window(e.col, e.row, e.size, e.size)
    return pre, post


def neighbour_correlation(img: np.ndarray) -> float:
    """Mean correlation of horizontally and vertically adjacent grey pixels: ~0 for i.i.d. noise, > 0.6 for imagery."""
    g = img.astype(np.float64).mean(-1) if img.ndim == 3 else img.astype(np.float64)  # [H,W]

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12))

    return 0.5 * (corr(g[:, 1:], g[:, :-1]) + corr(g[1:], g[:-1]))


def check_image(img: np.ndarray, name: str) -> None:
    """Refuse constant images and images without spatial structure (random data), with a one-line reason."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise CalibrationError(f"{name}: calibration images are uint8 [H,W,3], got {img.dtype} {img.shape}")
    std = float(img.std())
    if std < MIN_STD:
        raise CalibrationError(f"{name}: constant image (std {std:.2f} grey levels); refusing to calibrate on it")
    c = neighbour_correlation(img)
    if c < MIN_NEIGHBOUR_CORR:
        raise CalibrationError(
            f"{name}: looks like random noise (neighbour-pixel correlation {c:.2f}, imagery has > "
            f"{MIN_NEIGHBOUR_CORR}); refusing to calibrate on it"
        )


def check_arrays(pre: np.ndarray, post: np.ndarray) -> None:
    """Checks for in-memory calibration pairs (uint8 [n,S,S,3] x2): non-empty, same shape, no constant or noise."""
    if pre.size == 0 or len(pre) == 0:
        raise CalibrationError("calibration data is empty (refusing to calibrate on no data)")
    if pre.shape != post.shape:
        raise CalibrationError(f"calibration pre and post differ in shape: {pre.shape} vs {post.shape}")
    for i in range(len(pre)):
        check_image(pre[i], f"calibration pair {i} (pre)")
        check_image(post[i], f"calibration pair {i} (post)")


def make_default_set(data_root: str | Path | None = None, n_synth: int = 200, seed: int = 0,
                     exclude_first_changed: int = 400) -> str:
    """The text of calibration/sets/default.txt (committed; regenerate with this function).

    Synth: `n_synth` LEVIR-CC-synth val pairs, half changed, half unchanged, seeded, skipping the first
    `exclude_first_changed` changed val pairs (the accuracy-control subset is drawn from those). Real: every
    DSIFN pair, the 16 LEVIR-CD tile crops (same 0.5 m/px as LEVIR-CC), 4 crops of each WHU-CD pair (0.3 m/px,
    432-px crops ~ 0.5 m/px at 256) and one centre crop per SZTAKI site.
    """
    from edgecc.train.data import load_captions, split_records

    from edgecc.imagery import open_raster

    root = Path(data_root) if data_root is not None else DEFAULT_DATA_ROOT
    val = split_records(load_captions(root / CAPTIONS), "val")
    changed = [r for r in val if r.changeflag][exclude_first_changed:]
    unchanged = [r for r in val if not r.changeflag]
    rng = np.random.default_rng(seed)
    pick = [changed[i] for i in sorted(rng.choice(len(changed), n_synth // 2, replace=False))]
    pick += [unchanged[i] for i in sorted(rng.choice(len(unchanged), n_synth - n_synth // 2, replace=False))]
    lines = [
        f"# edgecc calibration set (generated by edgecc.calibration.sets.make_default_set, seed {seed})",
        "#   synth PAIR_ID VARIANT              LEVIR-CC-synth pair rendered from its real captions",
        "#   real PRE POST COL ROW SIZE         square crop of a real pair, resized to the model input;",
        "#                                      paths relative to the data root (../shared/data)",
        f"# {len(pick)} synth val pairs ({n_synth // 2} changed, not among the first {exclude_first_changed} changed "
        "val pairs: the accuracy-control subset)",
    ]
    lines += [f"synth {r.pair_id} {int(rng.integers(0, 2))}" for r in pick]
    rp = "real_pairs"
    for a in sorted((root / rp / "dsifn" / "A").glob("*.png")):
        lines.append(f"real {rp}/dsifn/A/{a.name} {rp}/dsifn/B/{a.name} 0 0 256")
    for a in sorted((root / rp / "levircd_tiles" / "A").glob("*.png")):
        lines += [f"real {rp}/levircd_tiles/A/{a.name} {rp}/levircd_tiles/B/{a.name} {c} {r} 256"
                  for r in range(0, 1024, 256) for c in range(0, 1024, 256)]
    for a in sorted((root / rp / "whucd" / "prev").glob("*.png")):
        lines += [f"real {rp}/whucd/prev/{a.name} {rp}/whucd/curr/{a.name} {c} {r} 432"
                  for r in (40, 552) for c in (40, 552)]
    for d in sorted((root / rp / "sztaki").iterdir()):
        if (d / "im1.png").is_file():
            ras = open_raster(d / "im1.png")
            lines.append(f"real {rp}/sztaki/{d.name}/im1.png {rp}/sztaki/{d.name}/im2.png "
                         f"{(ras.width - 256) // 2} {(ras.height - 256) // 2} 256")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DEFAULT_SET.parent.mkdir(exist_ok=True)
    DEFAULT_SET.write_text(make_default_set())
    print(DEFAULT_SET)
