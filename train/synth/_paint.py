"""Painting: a list of layout objects + one date's look -> an RGB image and a per-pixel object-id map.

Example:
    >>> import numpy as np
    >>> from edgecc.train.synth._paint import DateLook, paint
    >>> img, ids = paint("bareland", (0, 0), [], DateLook.neutral(), 256)  # uint8 [256,256,3], uint8 [256,256]

Everything here is OpenCV fill/line calls on uint8 arrays plus cached texture crops: no per-pixel Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._layout import Obj
from ._textures import texture

_Z = {"patch": 0, "road": 1, "parking": 2, "playground": 2, "pool": 2, "trees": 3, "house": 4, "building": 4}
_VEG = ("grass", "forest", "forest_lit", "farmland")


@dataclass(frozen=True)
class DateLook:
    """Per-acquisition nuisances (none of them is a change).

    Attributes:
        veg: RGB multipliers for vegetation (season), e.g. (1.1, 1.0, 0.8) = autumn.
        sun: unit vector (dx, dy) of the shadow direction; shadow_len: pixels of shadow per unit object height.
        gain, gamma, cast (RGB multipliers), haze (0..1), noise (sigma, 0..255 scale), jpeg (quality).
        shift: (dx, dy) pixels of misregistration applied to this date.
    """

    veg: tuple[float, float, float]
    sun: tuple[float, float]
    shadow_len: float
    gain: float
    gamma: float
    cast: tuple[float, float, float]
    haze: float
    noise: float
    jpeg: int
    shift: tuple[int, int]

    @staticmethod
    def neutral() -> DateLook:
        return DateLook((1.0, 1.0, 1.0), (0.7, 0.7), 1.0, 1.0, 1.0, (1.0, 1.0, 1.0), 0.0, 0.0, 100, (0, 0))

    @staticmethod
    def sample(rng: np.random.Generator, sun_angle: float) -> DateLook:
        season = rng.uniform(-1, 1)  # -1 spring-green .. +1 dry autumn
        veg = (1.0 + 0.14 * season, 1.0 + 0.04 * season * -1, 1.0 - 0.18 * max(season, 0))
        a = sun_angle + rng.normal(0, 0.35)
        return DateLook(
            veg=tuple(float(v) for v in veg),
            sun=(float(np.cos(a)), float(np.sin(a))),
            shadow_len=float(rng.uniform(0.5, 1.4)),
            gain=float(rng.uniform(0.86, 1.12)),
            gamma=float(rng.uniform(0.86, 1.16)),
            cast=tuple(float(v) for v in rng.uniform(0.93, 1.07, 3)),
            haze=float(rng.uniform(0, 0.16) if rng.random() < 0.6 else 0.0),
            noise=float(rng.uniform(1.0, 4.0)),
            jpeg=int(rng.integers(55, 96)),
            shift=(int(rng.integers(-3, 4)), int(rng.integers(-3, 4))),
        )


def _crop(name: str, off: tuple[int, int], s: int, veg: tuple[float, float, float] | None = None) -> np.ndarray:
    """Texture crop uint8 [s, s, 3]; vegetation textures get the date's season multiplier."""
    t = texture(name)[off[1]:off[1] + s, off[0]:off[0] + s]
    if veg is not None and name in _VEG:
        return cv2.multiply(t, (*veg, 0.0), dtype=cv2.CV_8U)
    return t


def _i32(pts: np.ndarray) -> np.ndarray:
    return np.round(pts).astype(np.int32)


def paint(bg: str, off: tuple[int, int], objs: list[Obj], look: DateLook, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene. Returns img uint8 [s, s, 3] RGB (before nuisances) and ids uint8 [s, s] (object oid, 0 = bg).

    Drawn in z-order phases (ground covers, roads, flat objects, trees, buildings); each phase's shadows are
    gathered in one mask and applied once, and textures are pasted with one masked copy per phase.
    """
    f = s / 256.0
    img = np.array(_crop(bg, off, s, look.veg))  # [s, s, 3] writable copy
    ids = np.zeros((s, s), np.uint8)  # [s, s] top object id per pixel
    mask = np.zeros((s, s), np.uint8)  # [s, s] reusable fill mask
    shadow = np.zeros((s, s), np.uint8)  # [s, s] shadow mask of the current phase
    sx, sy = look.sun[0] * look.shadow_len, look.sun[1] * look.shadow_len
    by_kind: dict[int, list[Obj]] = {}
    for o in objs:
        by_kind.setdefault(_Z[o.kind], []).append(o)

    def paste(name: str) -> None:
        cv2.copyTo(_crop(name, off, s, look.veg), mask, img)
        mask[:] = 0

    # 0) ground covers: one paste per texture
    pats = by_kind.get(0, [])
    for name in sorted({o.geom["tex"] for o in pats}):
        for o in pats:
            if o.geom["tex"] == name:
                cv2.fillPoly(mask, [_i32(o.geom["poly"])], 1)
                cv2.fillPoly(ids, [_i32(o.geom["poly"])], int(o.oid) & 255)
        paste(name)
    # 1) roads: verges first, then one paste per surface
    roads = by_kind.get(1, [])
    for o in roads:
        g = o.geom
        if g["surface"] == "asphalt":
            w = max(2, int(round(g["width"])))
            cv2.polylines(img, [_i32(g["pts"])], False, (196, 192, 184), w + int(4 * f), cv2.LINE_AA)
            if g.get("cul"):
                cx, cy, r = g["cul"]
                cv2.circle(img, (int(cx), int(cy)), int(r + 2 * f), (196, 192, 184), -1, cv2.LINE_AA)
    for surf, name in (("asphalt", "asphalt"), ("dirt", "dirt")):
        any_ = False
        for o in roads:
            g = o.geom
            if g["surface"] != surf:
                continue
            any_ = True
            w = max(2, int(round(g["width"])))
            pts = _i32(g["pts"])
            cv2.polylines(mask, [pts], False, 1, w, cv2.LINE_8)
            cv2.polylines(ids, [pts], False, int(o.oid) & 255, w + int(2 * f), cv2.LINE_8)
            if g.get("cul"):
                cx, cy, r = g["cul"]
                cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
                cv2.circle(ids, (int(cx), int(cy)), int(r + f), int(o.oid) & 255, -1)
        if any_:
            paste(name)
    for o in roads:
        if o.geom["surface"] == "asphalt" and o.geom["width"] > 22 * f:
            cv2.polylines(img, [_i32(o.geom["pts"])], False, (214, 210, 190), 1, cv2.LINE_AA)  # centre line
    # 2) flat objects: parking lots, playgrounds, pools
    for o in by_kind.get(2, []):
        g, oid = o.geom, int(o.oid) & 255
        if o.kind == "parking":
            p = _i32(g["poly"])
            cv2.fillPoly(img, [p], (128, 128, 128), cv2.LINE_AA)
            cv2.polylines(img, [p], True, (180, 178, 172), max(1, int(2 * f)), cv2.LINE_AA)
            cv2.fillPoly(img, [_i32(q) for q in g["lines"]], (216, 216, 210), cv2.LINE_8)
            if g["cars"]:
                cv2.fillPoly(shadow, [_i32(q + np.float32([sx * 1.5, sy * 1.5])) for q, _ in g["cars"]], 1)
                _shade(img, shadow)
                for q, col in g["cars"]:
                    cv2.fillPoly(img, [_i32(q)], col, cv2.LINE_AA)
            cv2.fillPoly(ids, [p], oid)
        elif o.kind == "playground":
            (cx, cy), (a, b), ang = g["c"], g["ax"], g["ang"]
            c, ax, m = (int(cx), int(cy)), (int(a), int(b)), int(3 * f)
            cv2.ellipse(img, c, (ax[0] + m, ax[1] + m), ang, 0, 360, (92, 130, 80), -1, cv2.LINE_AA)
            cv2.ellipse(img, c, ax, ang, 0, 360, (172, 86, 72), -1, cv2.LINE_AA)
            cv2.ellipse(img, c, (ax[0] - int(8 * f), ax[1] - int(8 * f)), ang, 0, 360, (86, 146, 78), -1, cv2.LINE_AA)
            cv2.ellipse(img, c, ax, ang, 0, 360, (230, 226, 220), 1, cv2.LINE_AA)
            cv2.ellipse(img, c, (int(ax[1] * 0.35), int(ax[1] * 0.35)), ang, 0, 360, (230, 230, 230), 1, cv2.LINE_AA)
            cv2.ellipse(ids, c, (ax[0] + m, ax[1] + m), ang, 0, 360, oid, -1)
        elif o.kind == "pool":
            p = _i32(g["poly"])
            cv2.fillPoly(img, [p], (70, 176, 206), cv2.LINE_AA)
            cv2.polylines(img, [p], True, (226, 228, 226), 1, cv2.LINE_AA)
            cv2.fillPoly(ids, [p], oid)
    # 3) trees: all shadows, all canopies (forest texture), all sunlit crowns
    trees = by_kind.get(3, [])
    if trees:
        for o in trees:
            g = o.geom
            if g["poly"] is not None:
                cv2.fillPoly(shadow, [_i32(g["poly"] + np.float32([sx * 5 * f, sy * 5 * f]))], 1)
            for x, y, r in g["circles"]:
                cv2.circle(shadow, (int(x + sx * r * 0.9), int(y + sy * r * 0.9)), int(r), 1, -1)
        _shade(img, shadow)
        for o in trees:
            g, oid = o.geom, int(o.oid) & 255
            if g["poly"] is not None:
                cv2.fillPoly(mask, [_i32(g["poly"])], 1)
                cv2.fillPoly(ids, [_i32(g["poly"])], oid)
            for x, y, r in g["circles"]:
                cv2.circle(mask, (int(x), int(y)), int(r), 1, -1)
                cv2.circle(ids, (int(x), int(y)), int(r), oid, -1)
        paste("forest")
        for o in trees:
            for x, y, r in o.geom["circles"]:
                cv2.circle(mask, (int(x - sx * r * 0.3), int(y - sy * r * 0.3)), int(r * 0.6), 1, -1)
        paste("forest_lit")
    # 4) houses and buildings: shadows (extruded footprints), then driveways, pools, roofs
    tall = by_kind.get(4, [])
    if tall:
        for o in tall:
            h = (6.0 if o.kind == "house" else 12.0) * f
            poly = o.geom["poly"]
            hull = cv2.convexHull(_i32(np.concatenate([poly, poly + np.float32([sx * h, sy * h])])))
            cv2.fillPoly(shadow, [hull], 1)
        _shade(img, shadow)
        for o in tall:
            g, oid = o.geom, int(o.oid) & 255
            poly = g["poly"]
            if o.kind == "house":
                if g["drive"] is not None:
                    cv2.fillPoly(img, [_i32(g["drive"])], (186, 184, 178), cv2.LINE_AA)
                if g["pool"] is not None:
                    cv2.fillPoly(img, [_i32(g["pool"])], (70, 176, 206), cv2.LINE_AA)
                _roof(img, poly, g, look)
            else:
                roof = g["roof"]
                cv2.fillPoly(img, [_i32(poly)], roof, cv2.LINE_AA)
                edge = tuple(int(v * 0.8) for v in roof)
                cv2.polylines(img, [_i32(poly)], True, edge, max(1, int(2 * f)), cv2.LINE_AA)
                for u in g["units"]:
                    cv2.fillPoly(img, [_i32(u + np.float32([sx, sy]))], tuple(int(v * 0.65) for v in roof))
                    cv2.fillPoly(img, [_i32(u)], tuple(min(255, int(v * 1.08)) for v in roof))
            cv2.fillPoly(ids, [_i32(poly)], oid)
    return img, ids


def _shade(img: np.ndarray, shadow: np.ndarray) -> None:
    """Darken img (uint8 [s,s,3], in place) to ~0.6x where shadow ([s,s] 0/1) is set; clears shadow."""
    if not shadow.any():
        return
    ys, xs = np.nonzero(shadow.any(1))[0], np.nonzero(shadow.any(0))[0]
    roi = np.s_[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
    sub = img[roi]
    cv2.copyTo(cv2.convertScaleAbs(sub, alpha=0.6), shadow[roi], sub)
    shadow[:] = 0


def _roof(img: np.ndarray, poly: np.ndarray, g: dict, look: DateLook) -> None:
    """Gable or hip roof: two faces lit differently by the sun, a ridge line. poly: float32 [4, 2]."""
    roof = np.array(g["roof"], np.float32)
    c = poly.mean(0)
    # Ridge along the long axis; p0->p1 is made the long edge.
    p = poly if np.linalg.norm(poly[1] - poly[0]) >= np.linalg.norm(poly[3] - poly[0]) else np.roll(poly, -1, 0)
    a, b = (p[0] + p[3]) / 2, (p[1] + p[2]) / 2  # ridge end points (mid of the short sides)
    if g["hip"]:
        a, b = a + (b - a) * 0.2, b - (b - a) * 0.2
        faces = [np.stack([p[0], p[1], b, a]), np.stack([a, b, p[2], p[3]]), np.stack([p[0], a, p[3]]),
                 np.stack([p[1], p[2], b])]
    else:
        faces = [np.stack([p[0], p[1], b, a]), np.stack([a, b, p[2], p[3]])]
    sun = np.array(look.sun, np.float32)
    for fc in faces:
        side = float(np.dot(fc.mean(0) - c, -sun))  # facing the sun -> brighter
        k = 1.12 if side > 0 else 0.82
        cv2.fillPoly(img, [_i32(fc)], tuple(float(min(255, v * k)) for v in roof), cv2.LINE_AA)
    cv2.line(img, tuple(int(v) for v in np.round(a)), tuple(int(v) for v in np.round(b)),
             tuple(float(min(255, v * 1.25)) for v in roof), 1, cv2.LINE_AA)
    cv2.polylines(img, [_i32(poly)], True, tuple(float(v * 0.7) for v in roof), 1, cv2.LINE_AA)


def finish(img: np.ndarray, look: DateLook, noise_off: tuple[int, int]) -> np.ndarray:
    """Apply the date's radiometry: gain/gamma/cast/haze (one LUT), shift, sensor noise, JPEG. uint8 [s,s,3]."""
    s = img.shape[0]
    x = np.arange(256, dtype=np.float32) / 255.0
    lut = np.empty((256, 1, 3), np.uint8)
    for ch in range(3):
        v = np.clip(x * look.gain * look.cast[ch], 0, 1) ** look.gamma
        v = v * (1 - look.haze) + look.haze * (0.80 + 0.02 * ch)
        lut[:, 0, ch] = np.clip(np.round(v * 255), 0, 255).astype(np.uint8)
    out = cv2.LUT(img, lut)
    dx, dy = look.shift
    if dx or dy:
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        out = cv2.warpAffine(out, m, (s, s), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    nx, ny = noise_off
    nz = texture(f"noise{min(4, max(1, round(look.noise)))}")[ny:ny + s, nx:nx + s]  # int16 [s, s, 3]
    out = cv2.add(out, nz, dtype=cv2.CV_8U)  # uint8 + int16 noise, saturated
    # JPEG round trip (channel order is irrelevant for the artefacts we want; no flips, no copies).
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, look.jpeg])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)
