"""Register live frames to a reference map across dates: coarse localisation, then fine alignment.

Example:
    >>> reg = Registrar(ReferenceMap.open("area.tif"))    # or Registrar(reference_rgb)
    >>> r = reg.register(frame_rgb)                       # Registration(ok, reason, homography frame px -> map px, ...)
    >>> if r.ok:
    ...     pre, post = reg.pair(frame_rgb, r, size=256)   # uint8 [256,256,3] x2 on the map grid

Coarse (where in the map is this frame?), first that applies:
    1. track: the frame is matched to the last registered frame (ORB, same date: reliable) and the link is chained
       onto that frame's pose;
    2. prior: a pose from telemetry (`register(frame, prior=H)`), or the last pose when the track link failed;
    3. global search: normalised cross-correlation of gradient magnitude on the map's overview over a sweep of
       rotations (+-`search_rotation_deg`) and scales (+-`search_scale`).
Fine (method "ecc", the default): ECC (enhanced correlation coefficient, affine) on gradient-magnitude images,
coarse to fine, between the frame and the map window warped into the frame by the coarse pose. Gradients survive
season, sun and sensor change far better than descriptors: measured on the real pairs in ../shared/data (SZTAKI,
WHU-CD, LEVIR-CD, Joplin, NAIP; later-date views, +-10 deg, +-10%), ORB/SIFT/RootSIFT matched straight to the
earlier date register 7-9 of 104 views, the gradient search + ECC 35 of 104 from no prior and 40 of 104 from a
20-px prior; tracking supplies a prior of ~1 px, from which ECC removes the drift. Methods "orb", "sift",
"rootsift" do the fine step by descriptor matching inside the coarse window instead (same-date maps).
A frame is accepted when the fine step converges with correlation >= `min_correlation` (>= `min_correlation_global`
from a global search, where it must also beat every other place by `global_margin`, and the next frame, tracked
from it, must refine too: until then the frame is skipped as "unconfirmed"), or, tracked but not refined, for at
most `max_chain` frames in a row (the drift bound).
Skips come back with ok=False and a `reason` from SKIP_REASONS.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from .refmap import ReferenceMap

METHODS = ("ecc", "orb", "sift", "rootsift")
SKIP_REASONS = ("featureless", "not_found", "low_correlation", "unconfirmed", "degenerate", "low_overlap")


@dataclass(frozen=True)
class RegisterOptions:
    """Attributes:
    method: fine alignment, "ecc" (gradient ECC; across dates) or "orb" / "sift" / "rootsift" (descriptors).
    max_side: frames are aligned on a copy whose long side is at most this (speed); poses are rescaled.
    min_overlap: fraction of the frame inside the map below this -> skip ("low_overlap").
    min_correlation: ECC correlation needed from a track or telemetry prior ("low_correlation" below).
    min_correlation_global: ... needed from a global search and from the next frame that confirms it (a wrong lock
        is worse than a skip).
    max_correction: a refinement that moves the frame corners more than this fraction of the frame side away from a
        tracked prior is rejected (ECC ran off to a wrong optimum).
    max_chain: frames in a row accepted on the track link alone when the fine step fails; 0: never.
    search_rotation_deg / search_scale: the global search sweeps rotations in +-deg (2.5 deg steps) and scales in
        1 +- this; a telemetry heading centres the sweep.
    search_max_side: long side of the overview searched globally.
    global_candidates: the global search refines this many peaks at distinct places and keeps the best;
    global_margin: ... whose ECC correlation must beat any other converged place's by this much (else ambiguous).
    max_anisotropy: singular-value ratio of the linear part above this -> "degenerate". A camera looking down maps
        the ground by a near-similarity (a 24 deg tilt: 1.10); ECC fits an affine, and its wrong optima shear.
        Measured on the simulated real flights (2,455 accepted poses): every pose above 1.10 was 13-21 px off
        (SZTAKI, locked onto a wrong optimum and tracked from it), none within 4 px; at 1.08 WHU-CD's own
        date-to-date distortion starts to be rejected. With `trust_prior`, the telemetry pose stands in for a
        refused one. (Refusing a sheared refinement inside the search, so that the next coarse pose is tried,
        was measured and not kept: on the rendered flights it halved recall and doubled false events.)
    min_texture: mean gradient magnitude (grey levels / px) below this -> "featureless" (water, cloud, blur).
    prior_tolerance: a telemetry prior further than this fraction of the frame side from where the image
        registers -> counted as "prior_disagrees" (and the image pose is kept when it registers on its own).
    trust_prior: a frame with a telemetry prior that the image cannot refine is registered on the prior alone
        (ok, reason "prior_only"): an area rebuilt since the map shares nothing to align on, yet it is what must be
        seen; the pair is then only as aligned as the telemetry.
    """

    method: str = "ecc"
    max_side: int = 384
    min_overlap: float = 0.5
    min_correlation: float = 0.2
    min_correlation_global: float = 0.25
    max_correction: float = 0.12
    max_chain: int = 10
    search_rotation_deg: float = 10.0
    search_scale: float = 0.1
    search_max_side: int = 1024
    global_candidates: int = 3
    global_margin: float = 0.1
    max_anisotropy: float = 1.1
    min_texture: float = 2.0
    prior_tolerance: float = 0.5
    trust_prior: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"registration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0.0 <= self.min_overlap <= 1.0:
            raise ValueError(f"min_overlap is a fraction of the frame in [0, 1], got {self.min_overlap}")


@dataclass(frozen=True)
class Registration:
    """Result of registering one frame.

    Attributes:
        homography: float64 [3,3] frame pixels -> map pixels (None when not found).
        bbox: (x0, y0, x1, y1) map pixels, the frame footprint's box clipped to the map (None when not found).
        overlap: fraction of the frame inside the map.
        correlation: ECC correlation of the fine step (0 when it did not run or failed).
        coarse: where the pose came from: "track", "prior", "last", "global".
        chained: frames in a row accepted on the track link alone (0: refined against the map).
    """

    ok: bool
    reason: str = ""
    homography: np.ndarray | None = field(default=None, repr=False)
    overlap: float = 0.0
    bbox: tuple[int, int, int, int] | None = None
    correlation: float = 0.0
    coarse: str = ""
    chained: int = 0
    frame_shape: tuple[int, int] = (0, 0)


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
_ORB = cv2.ORB_create(nfeatures=1000)


def _grey(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    return _CLAHE.apply(g)


def _gradient(img: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Gradient magnitude of a blurred grey image, normalised to mean 1 (float32)."""
    x = cv2.GaussianBlur(img.astype(np.float32), (0, 0), sigma)
    m = cv2.magnitude(cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1))
    return m / (float(m.mean()) + 1e-6)


def _scale(s: float) -> np.ndarray:
    return np.diag([s, s, 1.0])


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _corners(w: int, h: int) -> np.ndarray:
    return np.float32([[[0, 0], [w, 0], [w, h], [0, h]]])


def texture(img: np.ndarray) -> float:
    """Mean gradient magnitude of an image in grey levels per pixel (before CLAHE): ~0.5 water/cloud, >4 land."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    g = cv2.GaussianBlur(g.astype(np.float32), (0, 0), 1.0)
    return float(cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)).mean() / 4)


class Registrar:
    """Holds the map and the track state; registers frames one after another. Not thread-safe."""

    def __init__(self, reference: ReferenceMap | np.ndarray, options: RegisterOptions = RegisterOptions()):
        self.map = reference if isinstance(reference, ReferenceMap) else ReferenceMap.from_array(reference)
        self.options = options
        self._last = None  # (kp, desc, s, H work->map, chain, frame shape)
        self._probation = False  # the last pose came from a global search and is not confirmed yet
        ov, self._ov_scale = self.map.overview(options.search_max_side)
        self._ov_grad = _gradient(_grey(ov), 1.0)
        self.reference_texture = texture(ov)
        if options.method != "ecc":
            self._det = cv2.ORB_create(3000) if options.method == "orb" else cv2.SIFT_create(4000)

    @property
    def reference(self) -> np.ndarray:
        """The whole map as an array (small maps, tests): prefer `map.read(box)`."""
        return self.map.read((0, 0, self.map.width, self.map.height))

    def reset(self) -> None:
        """Forget the track (the next frame is localised from a prior or a global search)."""
        self._last, self._probation = None, False

    # ------------------------------------------------------------------------------------------------ coarse
    def _track(self, kp, desc) -> np.ndarray | None:
        """Frame (work px) -> map px through the last registered frame, or None."""
        if self._last is None or desc is None or self._last[1] is None:
            return None
        l_kp, l_desc, _, l_h, _, _ = self._last
        pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(desc, l_desc, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
        if len(good) < 15:
            return None
        src = np.float32([kp[m.queryIdx].pt for m in good])
        dst = np.float32([l_kp[m.trainIdx].pt for m in good])
        a, inl = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=2.0)
        if a is None or inl.sum() < 12 or inl.sum() < 0.4 * len(good):
            return None
        return l_h @ np.vstack([a, [0.0, 0.0, 1.0]])

    def _global(self, grey: np.ndarray, heading_deg: float | None = None) -> list[np.ndarray]:
        """Frame (work px) -> map px candidates, best first: NCC of gradients on the overview over rotations x
        scales, the best peaks at distinct places."""
        o = self.options
        # search where the frame is ~128 px: coarser is noise, finer is slow (45 correlations over the map)
        s = min(self._ov_scale, 128 / min(grey.shape[:2]))
        ov = self._ov_grad if s == self._ov_scale else self._ov_at(s)
        small = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else grey
        fh, fw = small.shape[:2]
        if min(fh, fw) < 16:
            return []  # the frame is a few overview pixels: a global search would be noise (give a prior)
        centre = np.deg2rad(heading_deg or 0.0)
        angles = np.rad2deg(centre) + np.arange(-o.search_rotation_deg, o.search_rotation_deg + 1e-6, 2.5)
        scales = 1.0 + np.arange(-o.search_scale, o.search_scale + 1e-6, max(o.search_scale / 2, 1e-3))
        peaks = []  # (score, angle, scale, loc, template shape): the best of each rotation x scale hypothesis
        side = min(fh, fw)
        th_max = np.deg2rad(min(45.0, o.search_rotation_deg))
        margin = min(0.35, 0.5 * (1 - 1 / (np.cos(th_max) + np.sin(th_max)) / (1 + o.search_scale)) + 0.02)
        for a in angles:
            for sc in scales:
                m = cv2.getRotationMatrix2D((fw / 2, fh / 2), -float(a), 1 / float(sc))
                t = cv2.warpAffine(small, m, (fw, fh))
                c = int(side * margin)  # the inscribed square: no black corners
                t = _gradient(t[(fh - side) // 2 + c:(fh + side) // 2 - c, (fw - side) // 2 + c:(fw + side) // 2 - c],
                              1.0)
                if t.shape[0] < 8 or t.shape[0] >= ov.shape[0] or t.shape[1] >= ov.shape[1]:
                    continue
                _, mx, _, loc = cv2.minMaxLoc(cv2.matchTemplate(ov, t, cv2.TM_CCOEFF_NORMED))
                peaks.append((mx, a, sc, loc, t.shape))
        out: list = []  # the best peaks at distinct places (more than half a template apart)
        for _, a, sc, loc, (th, tw) in sorted(peaks, key=lambda p: -p[0]):
            if len(out) == o.global_candidates:
                break
            if any(abs(loc[0] - q[0]) < tw / 2 and abs(loc[1] - q[1]) < th / 2 for _, q in out):
                continue
            cx, cy = (loc[0] + tw / 2) / s, (loc[1] + th / 2) / s  # the frame centre in map px
            w, h = grey.shape[1], grey.shape[0]
            m = cv2.getRotationMatrix2D((w / 2, h / 2), -float(a), 1 / float(sc))
            m[:, 2] += [cx - w / 2, cy - h / 2]
            out.append((np.vstack([m, [0.0, 0.0, 1.0]]), loc))
        return [h for h, _ in out]

    def _ov_at(self, s: float) -> np.ndarray:
        """The overview's gradients at scale s (map px -> s px), s below the overview's own; cached per scale."""
        key = round(s, 4)
        if getattr(self, "_ov_cache", (None,))[0] != key:
            ov, s0 = self.map.overview(self.options.search_max_side)
            small = cv2.resize(ov, None, fx=s / s0, fy=s / s0, interpolation=cv2.INTER_AREA)
            self._ov_cache = (key, _gradient(_grey(small), 1.0))
        return self._ov_cache[1]

    # ------------------------------------------------------------------------------------------------ fine
    def _window(self, h: np.ndarray, w: int, hgt: int, margin: float) -> tuple[np.ndarray, tuple] | None:
        c = cv2.perspectiveTransform(_corners(w, hgt), h)[0]
        pad = margin * max(w, hgt) * max(1.0, float(np.sqrt(abs(np.linalg.det(h[:2, :2])))))
        x0, y0 = np.floor(c.min(0) - pad).astype(int)
        x1, y1 = np.ceil(c.max(0) + pad).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.map.width), min(y1, self.map.height)
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        return _grey(self.map.read((x0, y0, x1, y1))), (x0, y0, x1, y1)

    def _ecc(self, grey: np.ndarray, h: np.ndarray, levels: tuple[float, ...], motion: int = cv2.MOTION_AFFINE
             ) -> tuple[np.ndarray | None, float]:
        """Refine frame (work px) -> map px by ECC on gradients; -> (H or None, correlation)."""
        fh, fw = grey.shape[:2]
        win = self._window(h, fw, fh, 0.1)
        if win is None:
            return None, 0.0
        ref, (x0, y0, _, _) = win
        hw = _shift(-x0, -y0) @ h  # frame -> window px
        cc = 0.0
        for s in [v for v in levels if v == levels[-1] or min(fh, fw) * v >= 48]:  # no level under 48 px
            size = (max(8, round(fw * s)), max(8, round(fh * s)))
            rw = cv2.warpPerspective(ref, hw @ _scale(1 / s), size, flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR)
            fs = cv2.resize(grey, size, interpolation=cv2.INTER_AREA) if s != 1 else grey
            w = np.eye(2, 3, dtype=np.float32)
            try:
                cc, w = cv2.findTransformECC(_gradient(rw), _gradient(fs), w, motion,
                                             (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4), None, 1)
            except cv2.error:
                return None, 0.0
            # template rw(x) = ref(hw S^-1 x), input fs(x) = frame(S^-1 x); fs(W x) ~ rw(x)
            # => frame point S^-1 W x <-> window point hw S^-1 x  => frame p -> hw S^-1 W^-1 S p
            hw = hw @ _scale(1 / s) @ np.linalg.inv(np.vstack([w, [0, 0, 1]]).astype(np.float64)) @ _scale(s)
        return _shift(x0, y0) @ hw, float(cc)

    def _features(self, grey: np.ndarray, h: np.ndarray | None) -> tuple[np.ndarray | None, float]:
        """Refine by descriptor matching in the coarse window (or the overview when no prior)."""
        fh, fw = grey.shape[:2]
        if h is None:
            ref, (x0, y0), s = _grey(self.map.overview(self.options.search_max_side)[0]), (0, 0), self._ov_scale
        else:
            win = self._window(h, fw, fh, 0.5)
            if win is None:
                return None, 0.0
            ref, (x0, y0, _, _) = win
            s = 1.0
        kp, desc = self._det.detectAndCompute(grey, None)
        rkp, rdesc = self._det.detectAndCompute(ref, None)
        if desc is None or rdesc is None or len(kp) < 8 or len(rkp) < 8:
            return None, 0.0
        if self.options.method == "rootsift":
            desc, rdesc = (np.sqrt(d / (d.sum(1, keepdims=True) + 1e-7)).astype(np.float32) for d in (desc, rdesc))
        norm = cv2.NORM_HAMMING if self.options.method == "orb" else cv2.NORM_L2
        pairs = cv2.BFMatcher(norm).knnMatch(desc, rdesc, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
        if len(good) < 10:
            return None, 0.0
        src = np.float32([kp[m.queryIdx].pt for m in good])
        dst = np.float32([rkp[m.trainIdx].pt for m in good])
        a, inl = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
        if a is None or inl.sum() < 10:
            return None, 0.0
        return _shift(x0, y0) @ _scale(1 / s) @ np.vstack([a, [0.0, 0.0, 1.0]]), float(inl.sum() / len(good))

    # ------------------------------------------------------------------------------------------------ register
    def register(self, frame: np.ndarray, prior: np.ndarray | None = None, heading_deg: float | None = None
                 ) -> Registration:
        """Register one frame (uint8 [H,W,3] RGB).

        Args:
            prior: float [3,3] frame px -> map px from telemetry (see `edgecc.stream.telemetry`), or None.
            heading_deg: the camera heading from telemetry (centres the global search's rotation sweep).
        """
        o = self.options
        fh, fw = frame.shape[:2]
        s = min(1.0, o.max_side / max(fh, fw))
        small = cv2.resize(frame, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else frame
        if texture(small) < o.min_texture:
            return Registration(False, "featureless")
        grey = _grey(small)
        kp, desc = _ORB.detectAndCompute(grey, None)
        same_size = self._last is not None and self._last[5] == frame.shape[:2]
        to_work = _scale(s)  # frame px -> work px
        h_track = self._track(kp, desc)  # matched points: holds across a change of frame size (a crop, a zoom)
        candidates = []  # (source, H work->map)
        if h_track is not None:
            candidates.append(("track", h_track))
        if prior is not None:
            candidates.append(("prior", prior @ np.linalg.inv(to_work)))
        if same_size and h_track is None:  # the last pose fits only a frame of the last one's size
            candidates.append(("last", self._last[3]))
        best: tuple | None = None
        found: list = []  # converged global candidates (correlation, H)
        # a frame accepted on its track link alone does not pay for a global search it would discard
        accepted = lambda: best is not None  # noqa: E731, B023 - read late: after the local candidates ran
        for source, h0 in self._candidates(candidates, grey, heading_deg, accepted):
            if o.method == "ecc":
                levels = (0.5, 1.0) if source == "track" else (0.25, 0.5, 1.0)
                h, cc = self._ecc(grey, h0, levels)
            else:
                h, cc = self._features(grey, h0 if source != "global" else None)
            need = o.min_correlation_global if source == "global" or self._probation else o.min_correlation
            if h is not None and source in ("track", "last") and self._moved(h0, h, grey.shape) > o.max_correction:
                h = None
            if h is not None and cc >= need and source == "global":
                found.append((cc, h))
                continue
            if h is not None and cc >= need:
                best = (source, h, cc, 0)
                break
            if best is None and source == "track" and self._last[4] < o.max_chain:
                best = ("track", h0, 0.0, self._last[4] + 1)  # accepted on the link alone (bounded drift)
        if best is None and found:  # global: the best converged place, unless another one is about as good
            found.sort(key=lambda f: -f[0])
            rivals = [cc for cc, h in found[1:] if self._moved(found[0][1], h, grey.shape) > 0.1]
            if rivals and rivals[0] > found[0][0] - o.global_margin:
                return Registration(False, "not_found")
            best = ("global", found[0][1], found[0][0], 0)
        if best is None and prior is not None and o.trust_prior:  # the image cannot align (all of it changed?)
            best = ("prior", prior @ np.linalg.inv(to_work), 0.0, 0)
            reason_prior = "prior_only"
        elif best is None:
            return Registration(False, "low_correlation" if self._tried else "not_found")
        else:
            reason_prior = ""
        source, h, cc, chained = best
        r = self._check(frame, h @ to_work, cc, source, chained)
        if not r.ok and r.reason == "degenerate" and prior is not None and o.trust_prior and reason_prior == "":
            source, h, cc, chained = "prior", prior @ np.linalg.inv(to_work), 0.0, 0  # the image's pose is implausible
            reason_prior = "prior_only"
            r = self._check(frame, h @ to_work, cc, source, chained)
        if not r.ok:
            return r
        if prior is not None and source != "prior":
            if self._moved(prior @ np.linalg.inv(to_work), h, grey.shape) > o.prior_tolerance:
                reason_prior = "prior_disagrees"
        # a global lock is on probation: the next frame, tracked from it, must refine against the map too
        on_probation = self._probation
        self._probation = source == "global" or (on_probation and (chained > 0 or source not in ("track", "last")))
        if on_probation and chained > 0:
            self._last, self._probation = None, False  # the lock did not hold: search again
            return replace(r, ok=False, reason="unconfirmed")
        self._last = (kp, desc, s, h, chained, frame.shape[:2])
        if self._probation:
            return replace(r, ok=False, reason="unconfirmed")
        if reason_prior:  # registered on the image, but the telemetry said elsewhere: flag it
            r = replace(r, reason=reason_prior)
        return r

    def _candidates(self, candidates: list, grey: np.ndarray, heading_deg: float | None, accepted=lambda: False):
        """The coarse poses to try in order; a global search last, only when the others fail (it is slower)."""
        self._tried = False
        for c in candidates:
            self._tried = True
            yield c
        if accepted():
            return
        for g in self._global(grey, heading_deg):
            self._tried = True
            yield "global", g

    @staticmethod
    def _moved(h_a: np.ndarray, h_b: np.ndarray, shape) -> float:
        """Mean corner displacement between two poses, as a fraction of the frame's long side (in map px)."""
        c = _corners(shape[1], shape[0])
        d = np.linalg.norm(cv2.perspectiveTransform(c, h_a)[0] - cv2.perspectiveTransform(c, h_b)[0], axis=1)
        side = max(shape[:2]) * float(np.sqrt(abs(np.linalg.det(h_b[:2, :2]))) or 1.0)
        return float(d.mean() / side)

    def _check(self, frame: np.ndarray, h: np.ndarray, cc: float, source: str, chained: int) -> Registration:
        o = self.options
        fh, fw = frame.shape[:2]
        if not np.isfinite(h).all():
            return Registration(False, "degenerate")
        corners = cv2.perspectiveTransform(_corners(fw, fh), h)[0]
        area = cv2.contourArea(corners)
        sv = np.linalg.svd(h[:2, :2], compute_uv=False)
        ratio = sv[0] / max(sv[1], 1e-12)
        if ratio > o.max_anisotropy and self.map.ground is not None:  # a map whose pixels are not square on the
            g = np.linalg.svd(self.map.ground @ h[:2, :2], compute_uv=False)  # ground (lon/lat): judged in metres
            ratio = min(ratio, g[0] / max(g[1], 1e-12))
        if sv[1] <= 1e-3 or ratio > o.max_anisotropy or sv[0] > 1e3 or area <= 0 or not cv2.isContourConvex(
                corners.astype(np.float32)):
            return Registration(False, "degenerate")
        w, hh = self.map.width, self.map.height
        inter, _ = cv2.intersectConvexConvex(corners, np.float32([[0, 0], [w, 0], [w, hh], [0, hh]]))
        overlap = float(inter) / float(area)  # the fraction of the frame inside the map
        x0, y0 = np.clip(np.floor(corners.min(0)), 0, [w, hh]).astype(int)
        x1, y1 = np.clip(np.ceil(corners.max(0)), 0, [w, hh]).astype(int)
        if overlap < o.min_overlap or x1 - x0 < 8 or y1 - y0 < 8:
            return Registration(False, "low_overlap", h, overlap)
        return Registration(True, "", h, overlap, (int(x0), int(y0), int(x1), int(y1)), cc, source, chained,
                            (fh, fw))

    # ------------------------------------------------------------------------------------------------ pairs
    def warp(self, frame: np.ndarray, reg: Registration, box: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frame -> (uint8 [h,w,3] frame pixels on the map grid inside `box` (default reg.bbox), bool valid)."""
        x0, y0, x1, y1 = box or reg.bbox
        t = _shift(-x0, -y0) @ reg.homography
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpPerspective(frame, t, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        valid = cv2.warpPerspective(np.full(frame.shape[:2], 255, np.uint8), t, size, flags=cv2.INTER_NEAREST)
        return warped, cv2.erode(valid, np.ones((3, 3), np.uint8)) > 0

    def tiles(self, reg: Registration, side: int, min_cover: float = 0.0) -> list[tuple[tuple, float]]:
        """The map grid tiles (side px, stride side/2, inside the map) the frame covers at least `min_cover` of:
        [(box, fraction covered)], best covered first."""
        x0, y0, x1, y1 = reg.bbox
        step = max(1, side // 2)
        poly = self._footprint(reg)
        out = []
        for ty in range(max(0, (y0 // step - 1) * step), y1, step):
            for tx in range(max(0, (x0 // step - 1) * step), x1, step):
                if tx + side > self.map.width or ty + side > self.map.height:
                    continue
                sq = np.float32([[tx, ty], [tx + side, ty], [tx + side, ty + side], [tx, ty + side]])
                c = float(cv2.intersectConvexConvex(poly, sq)[0]) / side**2
                if c > 0 and c >= min_cover:
                    out.append(((tx, ty, tx + side, ty + side), c))
        return sorted(out, key=lambda bc: -bc[1])

    @staticmethod
    def _footprint(reg: Registration) -> np.ndarray:
        fh, fw = reg.frame_shape
        return cv2.perspectiveTransform(_corners(fw, fh), reg.homography)[0]

    def pair(self, frame: np.ndarray, reg: Registration, size: int, box: tuple | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """The model's input pair: the map and the registered frame in `box` (default reg.bbox), resized to `size`.

        Pixels of the box the frame does not cover are filled from the map (so they read as unchanged).
        """
        box = box or reg.bbox
        ref = self.map.read(box)
        if max(ref.shape[:2]) >= size:  # shrink: warp at map resolution, then area-average (no aliasing)
            warped, valid = self.warp(frame, reg, box)
            post = np.where(valid[:, :, None], warped, ref)
            return (cv2.resize(ref, (size, size), interpolation=cv2.INTER_AREA),
                    cv2.resize(post, (size, size), interpolation=cv2.INTER_AREA))
        # enlarge (a map coarser than the model's ground resolution): warp the frame straight onto the model grid,
        # one resampling of the frame instead of two
        x0, y0, x1, y1 = box
        # map px -> model px with cv2.resize's pixel-centre convention: u = s * (x - x0 + 0.5) - 0.5
        t = _shift(-0.5, -0.5) @ np.diag([size / (x1 - x0), size / (y1 - y0), 1.0]) @ _shift(0.5 - x0, 0.5 - y0)
        t = t @ reg.homography
        # replicated borders: a black border would blend into the edge band, wider than the erosion after enlarging
        warped = cv2.warpPerspective(frame, t, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.warpPerspective(np.full(frame.shape[:2], 255, np.uint8), t, (size, size), flags=cv2.INTER_NEAREST)
        pre_t = cv2.resize(ref, (size, size), interpolation=cv2.INTER_LINEAR)
        valid = cv2.erode(valid, np.ones((3, 3), np.uint8)) > 0
        return pre_t, np.where(valid[:, :, None], warped, pre_t)


def pregate_score(pre: np.ndarray, post: np.ndarray, grid: int = 8) -> float:
    """Cheap pixel-level change score of a registered pair, after photometric normalisation.

    Both images go to grey, are normalised to zero mean and unit std (removes gain/offset between dates), blurred
    (removes residual misregistration and compression noise); the score is the largest mean |difference| over a
    `grid` x `grid` block partition, so a small local change is not averaged away by a large unchanged frame.

    Args:
        pre, post: uint8 [S,S,3] RGB.

    Returns:
        float >= 0 in std units; ~0.1-0.2 for an unchanged registered pair, larger where something changed.
    """
    def norm(img):
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
        g = cv2.GaussianBlur(g, (5, 5), 1.5)
        return (g - g.mean()) / (g.std() + 1e-3)

    d = np.abs(norm(pre) - norm(post))  # [S,S]
    s = d.shape[0] // grid * grid
    blocks = d[:s, :s].reshape(grid, s // grid, grid, s // grid).mean(axis=(1, 3))  # [grid,grid]
    return float(blocks.max())
