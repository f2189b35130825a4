"""The real-pair corpus: labelled real before/after pairs cut into model-size tiles, split by whole scene.

Every labelled real pair in `../shared/data/real_pairs` is cut into 256x256 tiles. A tile is *changed* when more than
2% of its pixels are marked in the change mask, *unchanged* below 0.2%, and ignored in between (`LabelRule`). Tiles
keep their source and their scene, so a split never puts two tiles of one scene on both sides. Beside them:
same-image pairs that are unchanged by construction (x with itself, photometric copies, 1-3 px shifts, small
rotations, blur) and the unlabelled LEVIR-CD tiles.

Example:
    >>> corpus = RealCorpus.scan("../shared/data")               # every labelled source found there
    >>> print(corpus.card())                                      # counts per source and the label rule
    >>> tiles = corpus.tiles(sources=("levircd",))                # [RealTile], label 1 / 0 (ambiguous dropped)
    >>> pre, post, mask = tiles[0].load()                         # uint8 [256,256,3] x2, bool [256,256]
    >>> a, b = perturb(pre, "gamma", np.random.default_rng(0))    # an unchanged-by-construction pair
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

# the three sources judged leave-one-source-out (building masks at three resolutions); the rest only train
EVAL_SOURCES = ("levircd", "whucd", "sztaki")
PERTURBATIONS = ("identity", "gamma", "brightness", "colour", "haze", "jpeg", "shift1", "shift2", "shift3",
                 "rotate", "blur")


@dataclass(frozen=True)
class LabelRule:
    changed: float = 0.02  # a tile is changed when more than this fraction of its pixels is marked
    unchanged: float = 0.002  # and unchanged below this; in between it is ignored
    tile: int = 256
    nodata: float = 0.01  # tiles with more pure-black (nodata) pixels in either date than this are ignored

    def label(self, frac: float) -> int | None:
        return 1 if frac > self.changed else 0 if frac < self.unchanged else None


@dataclass(frozen=True)
class RealScene:
    """One labelled real pair: whole scene files (a split unit)."""

    source: str
    scene: str  # unique within the source; tiles of one scene never cross a split
    pre: Path
    post: Path
    mask: Path | None
    gsd_m: float  # ground sample distance, metres per pixel


@dataclass(frozen=True)
class RealTile:
    scene: RealScene
    row: int
    col: int
    changed_fraction: float
    label: int | None  # 1 changed, 0 unchanged, None ambiguous

    @property
    def source(self) -> str:
        return self.scene.source

    @property
    def key(self) -> str:
        return f"{self.scene.source}/{self.scene.scene}/{self.row}_{self.col}"

    def load(self, size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> pre, post uint8 [size,size,3] RGB, mask bool [size,size]."""
        pre, post, mask = _load_scene(self.scene)
        r, c = self.row, self.col
        return pre[r:r + size, c:c + size], post[r:r + size, c:c + size], mask[r:r + size, c:c + size]

    def views(self, size: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
        """The tile as the runtime sees it at its ground resolution: one pair, or, for imagery coarser than the
        model's (edgecc.sensors.tile_for_gsd), sub-tiles cut and upsampled to size x size."""
        from edgecc.sensors import tile_for_gsd

        pre, post, _ = self.load(size)
        n = tile_for_gsd(size, self.scene.gsd_m)
        if n == size:
            return [(pre, post)]
        up = lambda x: cv2.resize(x, (size, size), interpolation=cv2.INTER_CUBIC)  # noqa: E731
        return [(up(pre[r:r + n, c:c + n]), up(post[r:r + n, c:c + n]))
                for r in range(0, size - n + 1, n) for c in range(0, size - n + 1, n)]


def _rgb(p: Path) -> np.ndarray:
    im = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if im is None:
        raise ValueError(f"{p}: not a readable image")
    return cv2.cvtColor(im, cv2.COLOR_BGR2RGB)


@lru_cache(maxsize=8)
def _load_scene(scene: RealScene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pre, post = _rgb(scene.pre), _rgb(scene.post)
    if post.shape != pre.shape:  # SZTAKI ships a few pairs a pixel or two apart: crop to the common area
        h, w = min(pre.shape[0], post.shape[0]), min(pre.shape[1], post.shape[1])
        pre, post = pre[:h, :w], post[:h, :w]
    mask = np.zeros(pre.shape[:2], bool)
    if scene.mask is not None:
        m = cv2.imread(str(scene.mask), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise ValueError(f"{scene.mask}: not a readable mask")
        if m.shape != pre.shape[:2]:
            m = cv2.resize(m, pre.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        mask = m > 0
    return pre, post, mask


def _scenes(data: Path) -> list[RealScene]:
    """Every labelled real pair under data/real_pairs, with its source, scene id and ground resolution."""
    rp = data / "real_pairs"
    out: list[RealScene] = []

    def add(source, scene, pre, post, mask, gsd):
        if pre.is_file() and post.is_file() and (mask is None or mask.is_file()):
            out.append(RealScene(source, scene, pre, post, mask, gsd))

    for a in sorted((rp / "levircd_tiles" / "A").glob("*.png")):
        add("levircd", a.stem, a, a.parents[1] / "B" / a.name, a.parents[1] / "label" / a.name, 0.5)
    for a in sorted((rp / "whucd" / "prev").glob("*.png")):
        add("whucd", a.stem, a, a.parents[1] / "curr" / a.name, a.parents[1] / "label" / a.name, 0.3)
    for site in sorted(p for p in (rp / "sztaki").glob("*") if p.is_dir()):
        add("sztaki", site.name, site / "im1.png", site / "im2.png", site / "gt.png", 1.5)
    # DSIFN: the 512 originals; the 256 crops in dsifn/ are cut from them, so they are not a second scene
    for a in sorted((rp / "dsifn_512" / "A").glob("*")):
        lab = next(iter(sorted((rp / "dsifn_512" / "label").glob(a.stem + ".*"))), None)
        add("dsifn", a.stem, a, rp / "dsifn_512" / "B" / a.name, lab, 2.0)
    for city in sorted(p for p in (rp / "oscd").glob("*") if (p / "cm.png").is_file()):
        add("oscd", city.name, city / "img1.png", city / "img2.png", city / "cm.png", 10.0)
    for m in sorted((rp / "xbd" / "mask").glob("*_mask.png")):
        stem = m.name.removesuffix("_mask.png")
        add("xbd", stem, rp / "xbd" / "pre" / f"{stem}_pre_disaster.png",
            rp / "xbd" / "post" / f"{stem}_post_disaster.png", m, 0.5)
    return out


def unlabelled_scenes(data: str | Path) -> list[RealScene]:
    """The LEVIR-CD tiles without masks (for pseudo-labels or self-training); mask None."""
    rp = Path(data) / "real_pairs" / "levircd_unlabelled"
    return [RealScene("levircd-unlabelled", a.stem, a, rp / "B" / a.name, None, 0.5)
            for a in sorted((rp / "A").glob("*.png")) if (rp / "B" / a.name).is_file()]


def image_files(data: str | Path) -> list[Path]:
    """Every real RGB image in data (both dates of every pair, the NAIP series, Joplin chips): the identity set."""
    data = Path(data)
    seen = []
    for s in _scenes(data) + unlabelled_scenes(data):
        seen += [s.pre, s.post]
    rp = data / "real_pairs"
    seen += sorted((rp / "dsifn" / "A").glob("*.png")) + sorted((rp / "dsifn" / "B").glob("*.png"))
    seen += sorted(p for city in (rp / "oscd").glob("*") if not (city / "cm.png").is_file()
                   for p in (city / "img1.png", city / "img2.png") if p.is_file())
    seen += sorted((rp / "xbd" / "pre").glob("*.png")) + sorted((rp / "xbd" / "post").glob("*.png"))
    seen += sorted((rp / "joplin_geotiff" / "chips").glob("*/*.tif"))
    seen += sorted((data / "real_series" / "naip_nd").glob("*.tif"))
    return list(dict.fromkeys(seen))


@dataclass(frozen=True)
class RealCorpus:
    scenes: tuple[RealScene, ...]
    rule: LabelRule = LabelRule()

    @classmethod
    def scan(cls, data: str | Path, rule: LabelRule = LabelRule()) -> RealCorpus:
        data = Path(data)
        if not (data / "real_pairs").is_dir():
            raise FileNotFoundError(f"{data / 'real_pairs'}: no real pairs here (../shared/data next to the project)")
        return cls(tuple(_scenes(data)), rule)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.source for s in self.scenes))

    def all_tiles(self, sources: tuple[str, ...] | None = None) -> list[RealTile]:
        """Every tile of every scene (ambiguous ones included, label None), on a non-overlapping grid."""
        t = self.rule.tile
        out = []
        for s in self.scenes:
            if sources and s.source not in sources:
                continue
            pre, post, mask = _load_scene(s)
            nodata = (pre == 0).all(-1) | (post == 0).all(-1)  # pure black in either date: outside a footprint
            h, w = mask.shape
            for r in range(0, h - t + 1, t):
                for c in range(0, w - t + 1, t):
                    frac = float(mask[r:r + t, c:c + t].mean())
                    label = self.rule.label(frac) if nodata[r:r + t, c:c + t].mean() <= self.rule.nodata else None
                    out.append(RealTile(s, r, c, frac, label))
        return out

    def tiles(self, sources: tuple[str, ...] | None = None) -> list[RealTile]:
        """Labelled tiles only (changed or unchanged)."""
        return [t for t in self.all_tiles(sources) if t.label is not None]

    def card(self) -> str:
        """The data card: scenes and tiles per source, by label, and the rule."""
        rows = ["| source | scenes | m/px | changed | unchanged | ambiguous |", "|---|---|---|---|---|---|"]
        tiles = self.all_tiles()
        for src in self.sources:
            n = Counter(t.label for t in tiles if t.source == src)
            gsd = next(s.gsd_m for s in self.scenes if s.source == src)
            scenes = sum(s.source == src for s in self.scenes)
            rows.append(f"| {src} | {scenes} | {gsd:g} | {n[1]} | {n[0]} | {n[None]} |")
        r = self.rule
        rows.append(f"\nLabel rule: {r.tile}x{r.tile} tiles on a non-overlapping grid; changed when more than "
                    f"{r.changed:.1%} of the pixels are marked, unchanged below {r.unchanged:.1%}, ignored in between "
                    f"or when more than {r.nodata:.0%} of a date is nodata (pure black). "
                    "Splits are by whole scene. Same-image pairs (" + ", ".join(PERTURBATIONS) +
                    ") are unchanged by construction.")
        return "\n".join(rows)


def scene_split(tiles: list[RealTile], val_fraction: float = 0.25, seed: int = 0) -> tuple[list, list]:
    """Split tiles into (train, val) by whole scene, per source (each source keeps at least one training scene)."""
    train, val = [], []
    for src in dict.fromkeys(t.source for t in tiles):
        scenes = sorted({t.scene.scene for t in tiles if t.source == src},
                        key=lambda s: zlib.crc32(f"{seed}:{src}:{s}".encode()))
        n_val = min(len(scenes) - 1, round(len(scenes) * val_fraction))
        held = set(scenes[:n_val])
        for t in tiles:
            if t.source == src:
                (val if t.scene.scene in held else train).append(t)
    return train, val


def perturb(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [H,W,3] -> (a, b): the same ground, unchanged by construction. Shifts and rotations crop a margin so that
    both sides stay inside the image (output H-2m x W-2m, m = 8)."""
    m = 8
    h, w = img.shape[:2]
    a = img[m:h - m, m:w - m]
    x = img.astype(np.float32) / 255.0
    if kind == "identity":
        b = img
    elif kind == "gamma":
        b = x ** rng.uniform(0.6, 1.6)
    elif kind == "brightness":
        b = x * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    elif kind == "colour":  # colour temperature: opposite gains on red and blue
        t = rng.uniform(-0.15, 0.15)
        b = x * np.array([1 + t, 1.0, 1 - t], np.float32)
    elif kind == "haze":
        k = rng.uniform(0.1, 0.35)
        b = x * (1 - k) + k * np.array([0.85, 0.87, 0.9], np.float32)
    elif kind == "jpeg":
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 60))])
        b = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    elif kind.startswith("shift"):
        d = int(kind[-1])
        dy, dx = rng.choice([-d, d]), rng.choice([-d, 0, d])
        b = img[m + dy:h - m + dy, m + dx:w - m + dx]
        return a, np.ascontiguousarray(b)
    elif kind == "rotate":
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-2, 2)), 1.0)
        b = cv2.warpAffine(img, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    elif kind == "blur":
        b = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.6, 1.5)))
    else:
        raise ValueError(f"unknown perturbation {kind!r}: choose one of {', '.join(PERTURBATIONS)}")
    if b.dtype != np.uint8:
        b = (np.clip(b, 0, 1) * 255 + 0.5).astype(np.uint8)
    return a, np.ascontiguousarray(b[m:h - m, m:w - m])


def unchanged_pairs(tiles: list[RealTile], per_tile: int = 2, seed: int = 0, size: int = 256):
    """Yield (key, kind, a, b) same-image pairs from the tiles' dates: unchanged by construction, resized to `size`."""
    rng = np.random.default_rng(seed)
    for t in tiles:
        pre, post, _ = t.load()
        for img, date in ((pre, "pre"), (post, "post")):
            for kind in rng.choice(PERTURBATIONS, per_tile, replace=False):
                a, b = perturb(img, str(kind), rng)
                a = cv2.resize(a, (size, size), interpolation=cv2.INTER_AREA)
                b = cv2.resize(b, (size, size), interpolation=cv2.INTER_AREA)
                yield f"{t.key}/{date}", str(kind), a, b
