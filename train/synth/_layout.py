"""Scene layout: a ChangeSpec + a seeded Generator -> the objects of the before and after scenes.

Example:
    >>> import numpy as np
    >>> from edgecc.train.synth import parse_caption
    >>> from edgecc.train.synth._layout import layout
    >>> lay = layout(parse_caption("many houses are built along the road".split()), np.random.default_rng(0), 256)
    >>> sorted({o.kind for o in lay.after}) >= ["house", "road"]
    True

Geometry is in pixels of the output (size x size); object sizes assume ~0.5 m/px at size 256 and scale with size.
Objects shared by both scenes keep their `oid`; the mask is where the per-pixel oid differs between the scenes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .parser import LAND_COVERS, ChangeItem, ChangeSpec

_ROOFS = np.array([(150, 78, 62), (120, 110, 104), (176, 170, 160), (96, 88, 84), (168, 120, 90),
                   (110, 124, 140), (196, 186, 170), (138, 96, 74), (84, 92, 100), (200, 200, 196)], np.int32)
_FLAT_ROOFS = np.array([(210, 210, 206), (186, 188, 190), (150, 160, 170), (200, 196, 186), (120, 140, 160),
                        (226, 226, 222)], np.int32)
_CARS = np.array([(230, 230, 230), (30, 30, 34), (160, 30, 30), (140, 144, 150), (40, 60, 120), (220, 220, 210)],
                 np.int32)
_N = {"one": (1, 1), "two": (2, 2), "few": (3, 4), "several": (3, 6), "many": (9, 18), "row": (5, 9)}


@dataclass
class Obj:
    """One drawable object. kind picks the painter; cls is its CLASSES name; geom holds pixel geometry."""

    kind: str  # patch | road | house | building | trees | parking | playground | pool
    cls: str
    geom: dict
    oid: int = 0


@dataclass
class Layout:
    """Both scenes: the background texture and crop offset, and the ordered object lists."""

    bg: str
    bg_off: tuple[int, int]
    before: list[Obj] = field(default_factory=list)
    after: list[Obj] = field(default_factory=list)


def _rect(cx: float, cy: float, w: float, h: float, ang: float) -> np.ndarray:
    """Corners of a w x h rectangle rotated by ang (radians) about (cx, cy): float32 [4, 2]."""
    c, s = np.cos(ang), np.sin(ang)
    dx = np.array([-w, w, w, -w], np.float32) / 2
    dy = np.array([-h, -h, h, h], np.float32) / 2
    return np.stack([cx + dx * c - dy * s, cy + dx * s + dy * c], 1).astype(np.float32)


def _blob(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, k: int = 18) -> np.ndarray:
    """Irregular closed outline (star-shaped): float32 [k, 2]."""
    a = np.linspace(0, 2 * np.pi, k, endpoint=False) + rng.uniform(0, 2 * np.pi)
    r = 1 + 0.22 * rng.standard_normal(k)
    r = np.clip((r + np.roll(r, 1) + np.roll(r, -1)) / 3, 0.55, 1.4)
    return np.stack([cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)], 1).astype(np.float32)


def _region(position: str | None, s: int) -> tuple[float, float, float, float]:
    """Pixel box (x0, y0, x1, y1) where a caption position puts things."""
    h = 0.5 * s
    lo, hi = 0.0, float(s)
    x0, y0, x1, y1 = lo, lo, hi, hi
    if position is None:
        return x0, y0, x1, y1
    if position == "center":
        return 0.22 * s, 0.22 * s, 0.78 * s, 0.78 * s
    if "top" in position:
        y1 = h
    if "bottom" in position:
        y0 = h
    if "left" in position:
        x1 = h
    if "right" in position:
        x0 = h
    return x0, y0, x1, y1


class _Builder:
    """Places objects; keeps an occupancy map so that nothing overlaps. All randomness comes from self.rng."""

    def __init__(self, rng: np.random.Generator, s: int):
        self.rng, self.s, self.f = rng, s, s / 256.0
        self.occ = np.zeros((s, s), np.uint8)  # [s, s] 1 where something solid already stands
        self.next_id = 1
        self.roads_before: list[Obj] = []
        self.roads_after: list[Obj] = []

    def obj(self, kind: str, cls: str, **geom) -> Obj:
        o = Obj(kind, cls, geom, self.next_id)
        self.next_id += 1
        return o

    def free(self, pts: np.ndarray, pad: int = 2) -> bool:
        """True if polygon pts (float [k, 2]) grown by pad pixels lies inside the image on free ground."""
        x0, y0 = np.floor(pts.min(0)).astype(int) - pad
        x1, y1 = np.ceil(pts.max(0)).astype(int) + pad + 1
        if x0 < 0 or y0 < 0 or x1 > self.s or y1 > self.s:
            return False
        roi = self.occ[y0:y1, x0:x1]
        if not roi.any():
            return True
        tmp = np.zeros_like(roi)
        q = np.round(pts - [x0, y0]).astype(np.int32)
        cv2.fillPoly(tmp, [q], 1)
        if pad:
            cv2.polylines(tmp, [q], True, 1, 2 * pad)
        return not (tmp & roi).any()

    def take(self, pts: np.ndarray, pad: int = 1) -> None:
        cv2.fillPoly(self.occ, [np.round(pts).astype(np.int32)], 1)
        if pad:
            cv2.polylines(self.occ, [np.round(pts).astype(np.int32)], True, 1, 2 * pad)

    # --- roads -------------------------------------------------------------------------------------------------------
    def road(self, box, surface: str = "asphalt", width: float | None = None, from_road: Obj | None = None) -> Obj:
        r, s, f = self.rng, self.s, self.f
        x0, y0, x1, y1 = box
        w = width if width is not None else r.uniform(12, 20) * f
        t = np.linspace(0, 1, 48, dtype=np.float32)[:, None]
        cul = None
        if from_road is not None:
            # A branch: leaves the existing road at a right angle, runs into the box, may end in a cul-de-sac.
            pts0 = from_road.geom["pts"]
            inside = [(i, p) for i, p in enumerate(pts0) if x0 <= p[0] <= x1 and y0 <= p[1] <= y1]
            i, p = inside[r.integers(len(inside))] if inside else (len(pts0) // 2, pts0[len(pts0) // 2])
            i = int(np.clip(i, 1, len(pts0) - 2))
            tan = pts0[i + 1] - pts0[i - 1]
            nrm = np.array([-tan[1], tan[0]]) / (np.linalg.norm(tan) + 1e-6)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            if np.dot(nrm, [cx - p[0], cy - p[1]]) < 0:
                nrm = -nrm
            length = r.uniform(0.35, 0.8) * s
            end = p + nrm * length
            bend = np.array([-nrm[1], nrm[0]]) * r.uniform(-0.15, 0.15) * s
            mid = (p + end) / 2 + bend
            pts = (1 - t) ** 2 * p + 2 * t * (1 - t) * mid + t**2 * end
            if 0 < end[0] < s and 0 < end[1] < s and r.random() < 0.7:
                cul = (float(end[0]), float(end[1]), float(w * r.uniform(0.9, 1.3)))
        else:
            horiz = r.random() < 0.5 if (x1 - x0) > 0.9 * s and (y1 - y0) > 0.9 * s else (x1 - x0) >= (y1 - y0)
            a = r.uniform(y0 + 0.3 * (y1 - y0), y1 - 0.3 * (y1 - y0)) if horiz else \
                r.uniform(x0 + 0.3 * (x1 - x0), x1 - 0.3 * (x1 - x0))
            b = a + r.uniform(-0.15, 0.15) * s * (r.random() < 0.6)
            bend = r.uniform(-0.18, 0.18) * s * (r.random() < 0.5)
            p0, p2 = np.array([-0.1 * s, a]), np.array([1.1 * s, b])
            p1 = (p0 + p2) / 2 + np.array([0, bend])
            pts = (1 - t) ** 2 * p0 + 2 * t * (1 - t) * p1 + t**2 * p2
            if not horiz:
                pts = pts[:, ::-1]
        o = self.obj("road", "road", pts=pts.astype(np.float32), width=float(w), surface=surface, cul=cul)
        self._take_road(o)
        return o

    def parallel(self, road: Obj) -> Obj:
        """A street parallel to `road`, one block (two house rows) away, on the side with more room."""
        pts = road.geom["pts"]
        tan = pts[-1] - pts[0]
        nrm = np.array([-tan[1], tan[0]], np.float32) / (np.linalg.norm(tan) + 1e-6)
        if np.dot(nrm, np.float32([self.s / 2, self.s / 2]) - pts.mean(0)) < 0:
            nrm = -nrm
        off = road.geom["width"] + self.rng.uniform(70, 84) * self.f
        o = self.obj("road", "road", pts=(pts + nrm * off).astype(np.float32), width=road.geom["width"],
                     surface=road.geom["surface"], cul=None)
        self._take_road(o)
        return o

    def _take_road(self, o: Obj, margin: float = 4) -> None:
        g = o.geom
        cv2.polylines(self.occ, [np.round(g["pts"]).astype(np.int32)], False, 1, int(g["width"] + 2 * margin * self.f))
        if g["cul"]:
            cx, cy, rr = g["cul"]
            cv2.circle(self.occ, (int(cx), int(cy)), int(rr + margin * self.f), 1, -1)

    # --- houses ------------------------------------------------------------------------------------------------------
    def _house(self, cx, cy, ang, w, d, drive=None) -> Obj:
        r = self.rng
        roof = tuple(int(v) for v in _ROOFS[r.integers(len(_ROOFS))] + r.integers(-12, 13, 3))
        pool = None
        if r.random() < 0.12:
            pool = _rect(cx - np.sin(ang) * (d / 2 + 7 * self.f) * -1, cy + np.cos(ang) * (d / 2 + 7 * self.f),
                         10 * self.f, 6 * self.f, ang)
        return self.obj("house", "house", poly=_rect(cx, cy, w, d, ang), ang=float(ang), w=float(w), d=float(d),
                        roof=roof, drive=drive, pool=pool, hip=bool(r.random() < 0.5))

    def houses_along(self, road: Obj, box, n: int, sides: tuple[int, ...], row: bool) -> list[Obj]:
        r, f = self.rng, self.f
        pts = road.geom["pts"]
        seg = np.diff(pts, axis=0)
        cum = np.concatenate([[0], np.cumsum(np.linalg.norm(seg, axis=1))])
        w, d = r.uniform(20, 28) * f, r.uniform(22, 30) * f  # along-road width, depth (pixels)
        gap = r.uniform(5, 11) * f
        setback = r.uniform(6, 12) * f
        out: list[Obj] = []
        start = r.uniform(0, w + gap)
        for side in sides:
            cand = []
            for sl in np.arange(start, cum[-1], w + gap):
                i = int(np.clip(np.searchsorted(cum, sl) - 1, 0, len(seg) - 1))
                tt = (sl - cum[i]) / max(cum[i + 1] - cum[i], 1e-6)
                p = pts[i] + tt * seg[i]
                tan = seg[i] / (np.linalg.norm(seg[i]) + 1e-6)
                nrm = np.array([-tan[1], tan[0]]) * side
                off = road.geom["width"] / 2 + setback + d / 2
                c = p + nrm * off
                if not (box[0] <= c[0] <= box[2] and box[1] <= c[1] <= box[3]):
                    continue
                ang = float(np.arctan2(tan[1], tan[0]))
                poly = _rect(c[0], c[1], w, d, ang)
                if not self.free(poly):
                    continue
                e0 = p + nrm * (road.geom["width"] / 2 - 1)
                e1 = p + nrm * (road.geom["width"] / 2 + setback + 1) + tan * (w / 4) * r.choice([-1, 1])
                cand.append((c, ang, e0 + tan * (e1 - p) @ tan, e1))
            if not cand:
                continue
            k = min(n - len(out), len(cand))
            if k <= 0:
                break
            i0 = r.integers(0, len(cand) - k + 1)  # a contiguous run: neighbours along the road
            for c, ang, e0, e1 in cand[i0:i0 + k]:
                drive = _rect(*(e0 + e1) / 2, 6 * f, np.linalg.norm(e1 - e0), ang + np.pi / 2)
                h = self._house(c[0], c[1], ang + r.normal(0, 0.02), w * r.uniform(0.88, 1.0), d * r.uniform(0.9, 1.05),
                                drive)
                if self.free(h.geom["poly"], pad=1):
                    self.take(h.geom["poly"], pad=2)
                    out.append(h)
        return out

    def houses_grid(self, box, n: int, row: bool) -> list[Obj]:
        r, f = self.rng, self.f
        w, d = r.uniform(18, 28) * f, r.uniform(20, 30) * f
        ang = r.uniform(-np.pi, np.pi) if r.random() < 0.3 else r.choice([0.0, np.pi / 2]) + r.normal(0, 0.08)
        gx, gy = w + r.uniform(6, 12) * f, d + r.uniform(8, 20) * f
        x0, y0, x1, y1 = box
        cx = r.uniform(x0 + 0.3 * (x1 - x0), x1 - 0.3 * (x1 - x0))
        cy = r.uniform(y0 + 0.3 * (y1 - y0), y1 - 0.3 * (y1 - y0))
        cols = n if row else int(np.ceil(np.sqrt(n * 1.5)))
        out: list[Obj] = []
        c, s_ = np.cos(ang), np.sin(ang)
        order = [(i, j) for j in range(-(n // max(cols, 1)) - 1, n // max(cols, 1) + 2) for i in range(-cols, cols + 1)]
        order.sort(key=lambda ij: abs(ij[0]) * gx + abs(ij[1]) * gy * (3 if row else 1))
        for i, j in order:
            if len(out) >= n:
                break
            px, py = cx + i * gx * c - j * gy * s_, cy + i * gx * s_ + j * gy * c
            if not (x0 <= px <= x1 and y0 <= py <= y1):
                continue
            h = self._house(px + r.normal(0, f), py + r.normal(0, f), ang, w, d)
            if self.free(h.geom["poly"]):
                self.take(h.geom["poly"], pad=2)
                out.append(h)
        return out

    # --- other objects -------------------------------------------------------------------------------------------
    def buildings(self, box, n: int, near: Obj | None) -> list[Obj]:
        r, f = self.rng, self.f
        out: list[Obj] = []
        ang0 = r.choice([0.0, np.pi / 2]) + r.normal(0, 0.05)
        big = n <= 2
        for _ in range(n * 12):
            if len(out) >= n:
                break
            w = r.uniform(40, 90 if big else 60) * f
            h = r.uniform(28, 60 if big else 44) * f
            cx, cy = r.uniform(box[0] + w / 2, max(box[0] + w / 2 + 1, box[2] - w / 2)), \
                r.uniform(box[1] + h / 2, max(box[1] + h / 2 + 1, box[3] - h / 2))
            poly = _rect(cx, cy, w, h, ang0)
            if not self.free(poly, pad=3):
                continue
            roof = tuple(int(v) for v in _FLAT_ROOFS[r.integers(len(_FLAT_ROOFS))] + r.integers(-8, 9, 3))
            units = [(_rect(cx + r.uniform(-w / 3, w / 3), cy + r.uniform(-h / 3, h / 3), r.uniform(3, 7) * f,
                            r.uniform(3, 7) * f, ang0)) for _ in range(r.integers(0, 5))]
            o = self.obj("building", "building", poly=poly, roof=roof, units=units)
            self.take(poly, pad=3)
            out.append(o)
        return out

    def parking(self, box, n: int) -> list[Obj]:
        r, f = self.rng, self.f
        out: list[Obj] = []
        for _ in range(n * 10):
            if len(out) >= n:
                break
            w, h = r.uniform(44, 90) * f, r.uniform(30, 56) * f
            ang = r.choice([0.0, np.pi / 2]) + r.normal(0, 0.04)
            cx = r.uniform(box[0] + w / 2, max(box[0] + w / 2 + 1, box[2] - w / 2))
            cy = r.uniform(box[1] + h / 2, max(box[1] + h / 2 + 1, box[3] - h / 2))
            poly = _rect(cx, cy, w, h, ang)
            if not self.free(poly, pad=2):
                continue
            cars, lines = [], []
            rows = max(1, int(h // (18 * f)))
            for ri in range(rows):
                yy = -h / 2 + (ri + 0.5) * h / rows
                for xx in np.arange(-w / 2 + 4 * f, w / 2 - 4 * f, 5 * f):
                    c = (cx + xx * np.cos(ang) - yy * np.sin(ang), cy + xx * np.sin(ang) + yy * np.cos(ang))
                    lines.append(_rect(c[0], c[1], 0.8 * f + 0.2, 9 * f, ang))
                    if r.random() < 0.55:
                        col = tuple(int(v) for v in _CARS[r.integers(len(_CARS))])
                        cars.append((_rect(c[0] + 2.5 * f * np.cos(ang), c[1] + 2.5 * f * np.sin(ang), 3.2 * f,
                                           7 * f, ang), col))
            o = self.obj("parking", "parking_lot", poly=poly, cars=cars, lines=lines)
            self.take(poly, pad=2)
            out.append(o)
        return out

    def trees(self, box, count: str, dense: bool = False) -> list[Obj]:
        """Tree clusters (circles) or, for many/dense, canopy patches. Trees do not block the occupancy map."""
        r, f = self.rng, self.f
        x0, y0, x1, y1 = box
        out: list[Obj] = []
        if count == "many" or dense:
            for _ in range(int(r.integers(1, 3))):
                rx, ry = r.uniform(0.3, 0.5) * (x1 - x0), r.uniform(0.3, 0.5) * (y1 - y0)
                cx, cy = r.uniform(x0 + rx * 0.6, x1 - rx * 0.6), r.uniform(y0 + ry * 0.6, y1 - ry * 0.6)
                poly = _blob(r, cx, cy, rx, ry, 22)
                edge = poly[:, None, :] + r.normal(0, 3 * f, (len(poly), 3, 2))
                circles = np.concatenate([edge.reshape(-1, 2), r.uniform(5, 9, (len(poly) * 3, 1)) * f], 1)
                out.append(self.obj("trees", "tree", poly=poly, circles=circles.astype(np.float32)))
            return out
        n_clusters, per = {"one": (1, 1), "two": (2, 1), "few": (3, 1)}.get(count, (int(r.integers(2, 5)), 5))
        for _ in range(n_clusters):
            for _try in range(10):
                cx, cy = r.uniform(x0 + 10 * f, x1 - 10 * f), r.uniform(y0 + 10 * f, y1 - 10 * f)
                if not self.occ[int(np.clip(cy, 0, self.s - 1)), int(np.clip(cx, 0, self.s - 1))]:
                    break
            k = 1 if per == 1 else int(r.integers(3, 9))
            spread = 4 * f if k == 1 else r.uniform(8, 18) * f
            xy = np.array([cx, cy]) + r.normal(0, spread, (k, 2)) * (k > 1)
            rad = r.uniform(5, 10, (k, 1)) * f if k > 1 else np.array([[r.uniform(7, 11) * f]])
            circles = np.concatenate([xy, rad], 1).astype(np.float32)
            out.append(self.obj("trees", "tree", poly=None, circles=circles))
        return out

    def patch(self, kind_cls: str, box, big: bool = True) -> Obj:
        r = self.rng
        x0, y0, x1, y1 = box
        rx, ry = (r.uniform(0.3, 0.48) if big else r.uniform(0.12, 0.25)) * np.array([x1 - x0, y1 - y0])
        cx, cy = r.uniform(x0 + rx * 0.7, x1 - rx * 0.7), r.uniform(y0 + ry * 0.7, y1 - ry * 0.7)
        tex = {"grass": "grass", "farmland": "farmland", "bareland": "scar", "water": "water"}[kind_cls]
        return self.obj("patch", kind_cls, poly=_blob(r, cx, cy, rx, ry), tex=tex)

    def pond(self, box) -> Obj:
        o = self.patch("water", box, big=False)
        self.take(o.geom["poly"])
        return o

    def playground(self, box) -> Obj:
        r, f = self.rng, self.f
        for _ in range(12):
            a, b = r.uniform(34, 50) * f, r.uniform(20, 30) * f
            cx = r.uniform(box[0] + a, max(box[0] + a + 1, box[2] - a))
            cy = r.uniform(box[1] + a, max(box[1] + a + 1, box[3] - a))
            ang = float(r.choice([0.0, 90.0]) + r.normal(0, 4))
            poly = cv2.ellipse2Poly((int(cx), int(cy)), (int(a), int(b)), int(ang), 0, 360, 15).astype(np.float32)
            if self.free(poly):
                self.take(poly)
                return self.obj("playground", "playground", c=(float(cx), float(cy)), ax=(float(a), float(b)),
                                ang=ang, poly=poly)
        return self.obj("playground", "playground", c=(box[0] + 40 * f, box[1] + 40 * f), ax=(34 * f, 20 * f),
                        ang=0.0, poly=_rect(box[0] + 40 * f, box[1] + 40 * f, 68 * f, 40 * f, 0))

    def pools(self, box, n: int) -> list[Obj]:
        r, f = self.rng, self.f
        out = []
        for _ in range(n * 10):
            if len(out) >= n:
                break
            p = _rect(r.uniform(box[0] + 8, box[2] - 8), r.uniform(box[1] + 8, box[3] - 8), r.uniform(8, 14) * f,
                      r.uniform(5, 8) * f, r.uniform(0, np.pi))
            if self.free(p):
                self.take(p)
                out.append(self.obj("pool", "pool", poly=p))
        return out


def _n(rng: np.random.Generator, count: str) -> int:
    lo, hi = _N.get(count, (3, 6))
    return int(rng.integers(lo, hi + 1))


def _make(b: _Builder, obj: str, item: ChangeItem, box, roads: list[Obj], count: str | None = None) -> list[Obj]:
    """The objects that realize `<count> <obj>` in `box` (anywhere if the box is full), near `roads` if asked."""
    out = _make_in(b, obj, item, box, roads, count)
    if not out and tuple(box) != (0, 0, b.s, b.s):
        out = _make_in(b, obj, item, (0, 0, b.s, b.s), roads, count)
    return out


def _make_in(b: _Builder, obj: str, item: ChangeItem, box, roads: list[Obj], count: str | None) -> list[Obj]:
    r = b.rng
    count = count or item.count
    n = _n(r, count)
    if obj == "house":
        rel = item.relation
        near = [rd for rd in roads if rd.geom["width"] > 0]
        out: list[Obj] = []
        if near and (rel in {"along_road", "both_sides", "near", "beside", None} or r.random() < 0.7):
            sides = (1, -1) if rel == "both_sides" or (count in {"many", "row"} and r.random() < 0.5) else \
                (int(r.choice([1, -1])),)
            if rel == "both_sides":
                n = max(n, 4)
            for rd in r.permutation(len(near)):
                out += b.houses_along(near[rd], box, n - len(out), sides, count == "row")
                if len(out) < n and len(sides) == 1 and count not in {"one", "two", "row"}:
                    out += b.houses_along(near[rd], box, n - len(out), (-sides[0],), count == "row")
                if len(out) >= n:
                    break
        if len(out) < min(n, 2) or not out:
            out += b.houses_grid(box, n - len(out), count == "row")
        return out
    if obj == "building":
        return b.buildings(box, max(1, n // 2) if count == "many" else n, roads[0] if roads else None) + \
            (b.parking(box, 1) if r.random() < 0.35 else [])
    if obj == "parking_lot":
        return b.parking(box, min(n, 3))
    if obj == "tree":
        # Removed/replaced "trees", "woods", "vegetation" are mostly stands of forest: make them salient.
        return b.trees(box, count, dense=item.action in {"remove", "replace"} and count in {"several", "many", "row"})
    if obj in {"grass", "farmland", "bareland"}:
        return [b.patch(obj, box, big=True)]
    if obj == "water":
        return [b.pond(box)]
    if obj == "pool":
        return b.pools(box, min(n, 4))
    if obj == "playground":
        return [b.playground(box)]
    if obj == "road":
        o = []
        for _ in range(1 if count in {"one"} else (2 if count in {"two", "few"} else int(r.integers(1, 4)))):
            base = (roads + o)[r.integers(len(roads + o))] if (roads or o) and r.random() < 0.7 else None
            o.append(b.road(box, from_road=base))
        return o
    return []


_BACKGROUNDS = {"bareland": "bareland", "grass": "grass", "tree": "grass", "farmland": "farmland", "water": "bareland"}


def layout(spec: ChangeSpec, rng: np.random.Generator, s: int) -> Layout:
    """Build the before/after object lists that realize `spec` (see module docstring)."""
    b = _Builder(rng, s)
    ctx = [c for c in spec.context if c in _BACKGROUNDS]
    if ctx:
        bg = _BACKGROUNDS[ctx[0]]
        if bg == "bareland" and rng.random() < 0.3:
            bg = "desert"
    else:
        bg = str(rng.choice(["bareland", "desert", "grass", "farmland"], p=[0.45, 0.1, 0.35, 0.1]))
    lay = Layout(bg, (int(rng.integers(0, 512 - s + 1)), int(rng.integers(0, 512 - s + 1))))
    items = list(spec.items)
    if spec.changed and not items:
        items = [ChangeItem("house", "several", "add")]
    objs = {it.obj for it in items} | {it.replaced_by for it in items if it.replaced_by}
    wants_road = any(it.relation in {"along_road", "both_sides", "near"} for it in items) or "house" in objs
    road_changes = [it for it in items if it.obj == "road" and it.action in {"widen", "pave", "remove", "replace"}]
    only_new_roads = any(it.obj == "road" and it.action == "add" for it in items)
    base_roads: list[Obj] = []
    p_road = 0.9 if wants_road else 0.55
    if only_new_roads and not wants_road:
        p_road = 0.35
    if not spec.changed or road_changes or rng.random() < p_road:
        # The base road runs through the place where houses are said to be built along it.
        anchor = next((it for it in items if it.relation in {"along_road", "both_sides", "near"} and it.position), None)
        anchor = anchor or next((it for it in road_changes if it.position), None)
        base_roads.append(b.road(_region(anchor.position, s) if anchor else (0, 0, s, s), surface="asphalt"))
        many_houses = any(it.obj == "house" and it.action == "add" and it.count in {"many", "row"} for it in items)
        if many_houses and rng.random() < 0.8:
            base_roads.append(b.parallel(base_roads[0]))  # a second street: room for a neighbourhood
        elif rng.random() < 0.25:
            base_roads.append(b.road((0, 0, s, s), from_road=base_roads[0]))
    before: list[Obj] = list(base_roads)
    after: list[Obj] = list(base_roads)
    after_roads = list(base_roads)
    # 1) Roads changing in place: widen / pave / remove.
    for it in road_changes:
        standing = [r for r in after_roads if any(r is q for q in base_roads)]  # identity: geoms hold arrays
        if not standing:  # e.g. "a road is removed" and "the road is widened" in one consensus
            break
        rd = standing[0]
        if it.action == "widen":
            wide = Obj("road", "road", dict(rd.geom, width=rd.geom["width"] * rng.uniform(1.6, 2.1), parent=rd.oid),
                       b.next_id)
            b.next_id += 1
            b._take_road(wide)
            after[after.index(rd)] = wide
            after_roads[after_roads.index(rd)] = wide
        elif it.action == "pave":
            before[before.index(rd)] = Obj("road", "road", dict(rd.geom, surface="dirt"), b.next_id)
            b.next_id += 1
        else:
            after.remove(rd)
            after_roads.remove(rd)
            if it.replaced_by:
                after += _make(b, it.replaced_by, it, (0, 0, s, s), [])
    # 2) New roads first: houses "along the newly built road" need them.
    for it in items:
        if it.obj == "road" and it.action == "add":
            new = _make(b, "road", it, _region(it.position, s), after_roads)
            after += new
            after_roads += new
    # 3) Removals / replacements: the old object stands in the before scene only.
    for it in items:
        if it.obj == "road" or it.action not in {"remove", "replace"}:
            continue
        if it.obj == "bareland" and not it.replaced_by:
            continue  # "the bareland disappears": realized by whatever is added
        box = _region(it.position, s)
        old = _make(b, it.obj, it, box, base_roads)
        before += old
        if it.replaced_by and it.replaced_by not in objs - {it.replaced_by} | {it.obj}:
            after += _make(b, it.replaced_by, it, box, after_roads)
        elif it.obj in {"tree", "house", "building"} and rng.random() < 0.5:
            scar = b.patch("bareland", box, big=True)  # a graded scar where the old object stood
            scar.cls = it.obj
            after.append(scar)
    # 4) Additions.
    removed_region = next((_region(it.position, s) for it in items if it.action in {"remove", "replace"}), None)
    for it in items:
        if it.obj == "road" or it.action != "add":
            continue
        if it.obj == "bareland":
            continue  # "a clearing appears": realized by the removal items (or by nothing)
        box = _region(it.position, s)
        if it.position is None and removed_region is not None:
            box = removed_region  # "trees removed and houses built": same place
        after += _make(b, it.obj, it, box, after_roads)
    if spec.changed and len(after) == len(before) and all(a is c for a, c in zip(after, before, strict=True)):
        after += _make(b, "house", ChangeItem("house", "several"), (0, 0, s, s), after_roads)
    # 5) Unchanged context: existing houses, tree clusters, the occasional pond: in both scenes, same ids.
    shared: list[Obj] = []
    if base_roads and rng.random() < 0.45:
        shared += b.houses_along(base_roads[0], (0, 0, s, s), int(rng.integers(2, 8)), (int(rng.choice([1, -1])),),
                                 True)
    if rng.random() < 0.08:
        shared.append(b.pond((0, 0, s, s)))  # before the trees: trees avoid occupied ground
    woods = "tree" in spec.context
    n_clusters = int(rng.integers(4, 9)) if woods else int(rng.integers(0, 5))
    for _ in range(n_clusters):
        shared += b.trees((0, 0, s, s), "several" if not woods else str(rng.choice(["several", "many"])))
    # Trees standing where something new is built are cleared in the after scene (a real change: tree pixels).
    new_fp = np.zeros((s, s), np.uint8)
    new_ids = {o.oid for o in after} - {o.oid for o in before}
    for o in after:
        if o.oid in new_ids and o.kind not in {"trees", "patch"}:
            poly = o.geom.get("poly")
            if poly is not None:
                cv2.fillPoly(new_fp, [np.round(poly).astype(np.int32)], 1)
            elif o.kind == "road":
                cv2.polylines(new_fp, [np.round(o.geom["pts"]).astype(np.int32)], False, 1, int(o.geom["width"]))
    for o in shared:
        before.insert(0, o) if o.kind == "trees" else before.append(o)
        c = o.geom["circles"] if o.kind == "trees" else None
        if c is not None:
            xi = np.clip(c[:, 0].astype(int), 0, s - 1)
            yi = np.clip(c[:, 1].astype(int), 0, s - 1)
            if new_fp[yi, xi].any():
                continue
        after.insert(0, o) if o.kind == "trees" else after.append(o)
    lay.before, lay.after = before, after
    return lay


__all__ = ["LAND_COVERS", "Layout", "Obj", "layout"]
