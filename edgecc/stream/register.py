"""Register a live frame to the reference image: ORB/AKAZE features, ratio-test matching, RANSAC homography.

Example:
    >>> reg = Registrar(reference_rgb)                     # features of the reference computed once
    >>> r = reg.register(frame_rgb)                        # Registration(ok, reason, homography, inlier_ratio, ...)
    >>> if r.ok:
    ...     pre, post = reg.pair(r, size=224)              # uint8 [224,224,3] x2 on the reference grid

A frame that cannot be aligned well (too few features or matches, low RANSAC inlier ratio, small overlap with the
reference, a degenerate homography) comes back with ok=False and a short `reason`; the caller counts it and never
compares a misaligned pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

METHODS = ("orb", "akaze", "sift")
SKIP_REASONS = ("few_features", "few_matches", "low_inliers", "degenerate", "low_overlap")


@dataclass(frozen=True)
class RegisterOptions:
    """Attributes:
    method: "orb", "akaze" (OpenCV 4.x; in OpenCV 5 it moved to contrib) or "sift" (slower, float descriptors).
    model: "homography" (RANSAC homography, 8 dof) or "affine" (RANSAC affine, 6 dof). A nadir drone camera over
        flat ground moves almost affinely; the homography overfits clustered features (its perspective terms
        swing), so "affine" is the default and "homography" is there for oblique cameras.
    max_anisotropy: ratio of the singular values of the linear part above this -> skip ("degenerate").
    max_side: features are found on copies whose long side is at most this (speed); the homography is rescaled.
    min_side: ... and at least this (small frames are enlarged: ORB finds few features on a 176-px frame).
    n_features: ORB feature budget.
    ratio: Lowe ratio test threshold.
    min_matches: fewer good matches -> skip ("few_matches").
    min_inlier_ratio: RANSAC inliers / good matches below this -> skip ("low_inliers").
    min_overlap: fraction of the reference covered by the warped frame below this -> skip ("low_overlap").
    ransac_px: RANSAC reprojection threshold in reference pixels (at the feature scale).
    max_chain: when a frame does not register to the reference directly (a change covering most of the view leaves
        few features that match the reference), it is registered to the last registered frame and the transforms
        are chained, for at most this many frames in a row (drift bound); 0 turns chaining off.
    chain_inlier_ratio: frame-to-frame inlier ratio needed for a chained registration (stricter than direct).
    """

    method: str = "orb"
    model: str = "affine"
    max_anisotropy: float = 1.5
    max_side: int = 640
    min_side: int = 480
    n_features: int = 1500
    ratio: float = 0.8
    min_matches: int = 12
    min_inlier_ratio: float = 0.35
    min_overlap: float = 0.15
    ransac_px: float = 3.0
    max_chain: int = 15
    chain_inlier_ratio: float = 0.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.model not in ("homography", "affine"):
            raise ValueError(f"model must be 'homography' or 'affine', got {self.model!r}")


@dataclass(frozen=True)
class Registration:
    """Result of registering one frame.

    Attributes:
        homography: float64 [3,3] mapping frame pixels to reference pixels (None when not found).
        bbox: (x0, y0, x1, y1) in reference pixels, the axis-aligned box of the frame's footprint clipped to the
            reference (None when not found).
    """

    ok: bool
    reason: str = ""
    homography: np.ndarray | None = field(default=None, repr=False)
    matches: int = 0
    inliers: int = 0
    inlier_ratio: float = 0.0
    overlap: float = 0.0
    bbox: tuple[int, int, int, int] | None = None
    chained: int = 0  # 0: registered to the reference directly; k: through k frame-to-frame links


_CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))


def _grey_scaled(img: np.ndarray, max_side: int, min_side: int, scale: float | None = None
                 ) -> tuple[np.ndarray, float]:
    """-> (CLAHE grey at scale s, s). Frames use the reference's scale (same ground sampling assumed), capped."""
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    long = max(grey.shape[:2])
    s = min(max_side / long, max(1.0, min_side / long)) if scale is None else min(scale, max_side / long)
    if s != 1.0:
        grey = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return _CLAHE.apply(grey), s  # local contrast equalisation: features survive gain/haze changes between dates


class Registrar:
    """Holds the reference (pixels, features, photometric stats) and registers frames to it. Not thread-safe."""

    def __init__(self, reference: np.ndarray, options: RegisterOptions = RegisterOptions()):
        if reference.dtype != np.uint8 or reference.ndim != 3 or reference.shape[2] != 3:
            raise ValueError(f"reference must be uint8 [H,W,3] RGB, got {reference.dtype} {reference.shape}")
        self.reference = np.ascontiguousarray(reference)
        self.options = options
        if options.method == "orb":
            self._det = cv2.ORB_create(nfeatures=options.n_features)
        elif options.method == "sift":
            self._det = cv2.SIFT_create(nfeatures=options.n_features)
        elif hasattr(cv2, "AKAZE_create"):
            self._det = cv2.AKAZE_create()
        else:
            raise ValueError(f"AKAZE is not in this OpenCV build ({cv2.__version__}); use method='orb' or 'sift'")
        self._matcher = cv2.BFMatcher(cv2.NORM_L2 if options.method == "sift" else cv2.NORM_HAMMING)
        grey, self._ref_scale = _grey_scaled(self.reference, options.max_side, options.min_side)
        self._ref_kp, self._ref_desc = self._det.detectAndCompute(grey, None)
        self._ref_pts = np.float32([k.pt for k in self._ref_kp]) if self._ref_kp else np.zeros((0, 2), np.float32)
        self._last = None  # (desc, pts, scale, H frame->reference, chain length) of the last registered frame
        if self._ref_desc is None or len(self._ref_kp) < options.min_matches:
            raise ValueError(f"reference has too few features ({len(self._ref_kp)}) to register frames to")

    def _estimate(self, kp, desc, s: float, ref_desc, ref_pts, ref_scale: float, min_ratio: float):
        """Match frame features to a target; -> (3x3 frame px -> target px or None, matches, inliers, reason)."""
        o = self.options
        pairs = self._matcher.knnMatch(desc, ref_desc, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < o.ratio * p[1].distance]
        if len(good) < o.min_matches:
            return None, len(good), 0, "few_matches"
        src = np.float32([kp[m.queryIdx].pt for m in good])
        dst = ref_pts[[m.trainIdx for m in good]]
        if o.model == "homography":
            h_small, inl = cv2.findHomography(src, dst, cv2.RANSAC, o.ransac_px)
        else:
            a, inl = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=o.ransac_px)
            h_small = None if a is None else np.vstack([a, [0.0, 0.0, 1.0]])
        n_in = int(inl.sum()) if inl is not None else 0
        if h_small is None or n_in / len(good) < min_ratio:
            return None, len(good), n_in, "low_inliers"
        # back to full resolution: target_full = S_target^-1 . H_small . S_frame
        h = np.diag([1 / ref_scale, 1 / ref_scale, 1.0]) @ h_small @ np.diag([s, s, 1.0])
        return h / h[2, 2], len(good), n_in, ""

    def register(self, frame: np.ndarray) -> Registration:
        o = self.options
        grey, s = _grey_scaled(frame, o.max_side, o.min_side, self._ref_scale)
        kp, desc = self._det.detectAndCompute(grey, None)
        if desc is None or len(kp) < o.min_matches:
            return Registration(False, "few_features")
        h, n_good, n_in, reason = self._estimate(kp, desc, s, self._ref_desc, self._ref_pts, self._ref_scale,
                                                 o.min_inlier_ratio)
        chained = 0
        if h is None and self._last is not None and self._last[4] < o.max_chain:
            l_desc, l_pts, l_scale, l_h, l_chain = self._last
            h_rel, g2, i2, _ = self._estimate(kp, desc, s, l_desc, l_pts, l_scale, o.chain_inlier_ratio)
            if h_rel is not None:
                h, n_good, n_in, chained = l_h @ h_rel, g2, i2, l_chain + 1
        if h is None:
            return Registration(False, reason, matches=n_good, inliers=n_in, inlier_ratio=n_in / max(n_good, 1))
        r = self._check(frame, h, n_good, n_in, chained)
        if r.ok:
            pts = np.float32([k.pt for k in kp])
            self._last = (desc, pts, s, h, chained)
        return r

    def _check(self, frame: np.ndarray, h: np.ndarray, n_good: int, n_in: int, chained: int) -> Registration:
        o = self.options
        ratio = n_in / max(n_good, 1)
        fh, fw = frame.shape[:2]
        corners = cv2.perspectiveTransform(np.float32([[[0, 0], [fw, 0], [fw, fh], [0, fh]]]), h)[0]
        area = cv2.contourArea(corners)
        sv = np.linalg.svd(h[:2, :2], compute_uv=False) if np.isfinite(h).all() else np.array([1.0, 0.0])
        if sv[1] <= 1e-3 or sv[0] / sv[1] > o.max_anisotropy or sv[0] > 1e3 or area <= 0 or not cv2.isContourConvex(
                corners.astype(np.float32)):
            return Registration(False, "degenerate", matches=n_good, inliers=n_in, inlier_ratio=ratio)
        rh, rw = self.reference.shape[:2]
        inter, _ = cv2.intersectConvexConvex(corners, np.float32([[0, 0], [rw, 0], [rw, rh], [0, rh]]))
        overlap = float(inter) / (rw * rh)
        x0, y0 = np.clip(np.floor(corners.min(0)), 0, [rw, rh]).astype(int)
        x1, y1 = np.clip(np.ceil(corners.max(0)), 0, [rw, rh]).astype(int)
        if overlap < o.min_overlap or x1 - x0 < 8 or y1 - y0 < 8:
            return Registration(False, "low_overlap", h, n_good, n_in, ratio, overlap)
        return Registration(True, "", h, n_good, n_in, ratio, overlap, (int(x0), int(y0), int(x1), int(y1)), chained)

    def warp(self, frame: np.ndarray, reg: Registration) -> tuple[np.ndarray, np.ndarray]:
        """Frame -> (uint8 [h,w,3] frame pixels on the reference grid inside reg.bbox, bool [h,w] valid)."""
        x0, y0, x1, y1 = reg.bbox
        t = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ reg.homography
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpPerspective(frame, t, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        valid = cv2.warpPerspective(np.full(frame.shape[:2], 255, np.uint8), t, size, flags=cv2.INTER_NEAREST)
        return warped, cv2.erode(valid, np.ones((3, 3), np.uint8)) > 0

    def pair(self, frame: np.ndarray, reg: Registration, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The model's input pair: reference and registered frame cropped to the overlap box, resized to `size`.

        Pixels of the box the frame does not cover are filled from the reference (so they read as unchanged).

        Returns:
            pre, post: uint8 [size,size,3] RGB.
        """
        x0, y0, x1, y1 = reg.bbox
        ref = self.reference[y0:y1, x0:x1]
        warped, valid = self.warp(frame, reg)
        post = np.where(valid[:, :, None], warped, ref)
        pre_t = cv2.resize(ref, (size, size), interpolation=cv2.INTER_AREA)
        post_t = cv2.resize(post, (size, size), interpolation=cv2.INTER_AREA)
        return pre_t, post_t


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
