"""A simulated drone flight over a synthetic scene that changes at a known frame: video, PNG folder, reference.

    python tests/data/make_flight.py OUT_DIR [N_FRAMES] [CHANGE_AT]

    >>> flight = make_flight(tmp_path, n_frames=40, change_at=20)
    >>> flight.video, flight.frames_dir, flight.reference, flight.changed_frames   # changed_frames: [20, ..., 39]

The scene pair comes from `edgecc.train.synth.render_pair` (pre = scene before, post = scene after). A camera
window pans over the scene with small seeded translation/rotation jitter; frames before `change_at` are cut from the
pre scene, frames from `change_at` on from the post scene. The reference image is the whole pre scene. Seeded: the
same arguments give the same frames.

`real_flight(post, n)` flies over a real later-date scene instead (benchmarks/bench_flight.py): a lawn-mower path at
6 px/frame with +-10 deg rotation and +-10% scale drift, brightness drift, motion blur, corrupt frames and a source
drop, each frame with its true pose (frame px -> scene px).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CAPTION = "many houses are built on both sides of the road"


@dataclass(frozen=True)
class Flight:
    reference: Path  # PNG, the whole pre scene (uint8 RGB [scene,scene,3])
    video: Path | None  # MJPG .avi
    frames_dir: Path | None  # frame_00000.png ...
    n_frames: int
    change_at: int
    changed_frames: tuple[int, ...]  # frames that show the changed (post) scene
    change_mask: np.ndarray  # uint8 [scene,scene], >0 where the scene changed (reference pixel grid)


def render_scene(size: int = 256, seed: int = 0, caption: str = CAPTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pre, post, mask) of one synthetic scene: uint8 [size,size,3] x2, uint8 [size,size].

    render_pair's two dates also differ in illumination, haze and season; one flight lasts minutes, so the flight's
    after-scene is the before-scene with only the changed objects pasted in (mask dilated by 2 px for their edges).
    """
    from edgecc.train.synth import parse_caption, render_pair

    pre, post, mask = render_pair(f"flight_{seed:04d}", parse_caption(caption.split()), size=size)
    m = cv2.dilate((mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return pre, np.where(m[:, :, None], post, pre), mask


def camera_frames(pre: np.ndarray, post: np.ndarray, n_frames: int, change_at: int, window: int = 176,
                  out: int = 176, seed: int = 0, jitter_px: float = 3.0, jitter_deg: float = 2.0):
    """Yield (index, uint8 [out,out,3] RGB) frames of a window panning over the scene with seeded jitter."""
    rng = np.random.default_rng(seed)
    size = pre.shape[0]
    half = window / 2
    lo, hi = half + 14, size - half - 14  # keep the jittered, rotated window inside the scene
    for i in range(n_frames):
        t = 0.5 - 0.5 * np.cos(2 * np.pi * i / max(n_frames, 2) * 1.5)  # back-and-forth pan, 0..1
        cx = lo + (hi - lo) * t + rng.normal(0, jitter_px)
        cy = lo + (hi - lo) * (1 - t) * 0.6 + (hi - lo) * 0.2 + rng.normal(0, jitter_px)
        ang = rng.normal(0, jitter_deg)
        m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(ang), out / window)
        m[:, 2] += np.array([out / 2 - cx, out / 2 - cy])  # scene point (cx,cy) -> frame centre
        scene = pre if i < change_at else post
        yield i, cv2.warpAffine(scene, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def make_flight(out_dir: str | Path, n_frames: int = 40, change_at: int = 20, scene: int = 320, seed: int = 0,
                video: bool = True, pngs: bool = True, fps: float = 10.0) -> Flight:
    """Write reference.png, flight.avi (MJPG) and frames/frame_NNNNN.png under out_dir; return what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pre, post, mask = render_scene(scene, seed)
    ref = out / "reference.png"
    cv2.imwrite(str(ref), cv2.cvtColor(pre, cv2.COLOR_RGB2BGR))
    frames_dir = out / "frames" if pngs else None
    if frames_dir:
        frames_dir.mkdir(exist_ok=True)
    vpath = out / "flight.avi" if video else None
    writer = None
    for i, img in camera_frames(pre, post, n_frames, change_at, seed=seed):
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if vpath is not None:
            if writer is None:
                writer = cv2.VideoWriter(str(vpath), cv2.VideoWriter_fourcc(*"MJPG"), fps, bgr.shape[1::-1])
                if not writer.isOpened():
                    raise RuntimeError(f"{vpath}: OpenCV cannot write MJPG video here")
            writer.write(bgr)
        if frames_dir:
            cv2.imwrite(str(frames_dir / f"frame_{i:05d}.png"), bgr)
    if writer is not None:
        writer.release()
    return Flight(ref, vpath, frames_dir, n_frames, change_at, tuple(range(change_at, n_frames)), mask)


@dataclass(frozen=True)
class ViewPose:
    """One simulated frame's truth: frame px -> reference px, and what was done to it."""

    homography: np.ndarray  # float64 [3,3]
    blur: bool = False
    corrupt: bool = False
    dropped: bool = False  # lost in a source drop (never delivered)


def flight_poses(width: int, height: int, n_frames: int, frame: int = 256, seed: int = 0, max_rot: float = 10.0,
                 max_scale: float = 0.1, jitter_px: float = 2.0, passes: int = 3, step_px: float | None = 6.0
                 ) -> list[np.ndarray]:
    """A lawn-mower flight over a width x height scene: `passes` legs, seeded jitter, slowly drifting rotation
    (within +-max_rot deg) and scale (within 1 +- max_scale), `step_px` scene px per frame along the path (a drone
    at 30 fps; the flight stops short of the path's end, None: the whole path whatever n_frames).
    -> one 3x3 frame px -> scene px per frame."""
    rng = np.random.default_rng(seed)
    m = frame * 0.75
    x0, x1 = m, max(m, width - m)
    ys = np.linspace(m, max(m, height - m), passes)
    path = []  # a continuous lawn-mower: legs joined by their turns
    for k, y in enumerate(ys):
        path += [(x0, y), (x1, y)] if k % 2 == 0 else [(x1, y), (x0, y)]
    path = np.array(path)
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    at = np.concatenate([[0.0], np.cumsum(seg)])
    rot0, sc0 = rng.uniform(-0.5, 0.5) * max_rot, 1 + rng.uniform(-0.5, 0.5) * max_scale
    out = []
    for i in range(n_frames):
        d = min(at[-1], step_px * i) if step_px else at[-1] * i / max(n_frames - 1, 1)
        if step_px and step_px * (n_frames - 1) > at[-1]:  # longer than the path: fly it back and forth
            d = at[-1] - abs(at[-1] - (step_px * i) % (2 * at[-1]))
        cx = np.interp(d, at, path[:, 0]) + rng.normal(0, jitter_px)
        cy = np.interp(d, at, path[:, 1]) + rng.normal(0, jitter_px)
        ang = float(np.clip(rot0 + max_rot * 0.5 * np.sin(i / 23.0) + rng.normal(0, 0.3), -max_rot, max_rot))
        sc = float(np.clip(sc0 + max_scale * 0.5 * np.sin(i / 31.0 + 1), 1 - max_scale, 1 + max_scale))
        a = cv2.getRotationMatrix2D((float(cx), float(cy)), ang, sc)  # scene -> frame
        a[:, 2] += [frame / 2 - cx, frame / 2 - cy]
        out.append(np.linalg.inv(np.vstack([a, [0.0, 0.0, 1.0]])))
    return out


def render_view(scene: np.ndarray, pose: np.ndarray, frame: int, gain: float = 1.0, bias: float = 0.0,
                blur_px: int = 0) -> np.ndarray:
    """The frame a camera at `pose` (frame px -> scene px) sees: uint8 [frame,frame,3], gain/bias, motion blur."""
    img = cv2.warpPerspective(scene, pose, (frame, frame), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
    if gain != 1.0 or bias:
        img = np.clip(img.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    if blur_px > 1:
        k = np.zeros((blur_px, blur_px), np.float32)
        k[blur_px // 2] = 1.0 / blur_px  # horizontal motion blur
        img = cv2.filter2D(img, -1, k)
    return img


def real_flight(post: np.ndarray, n_frames: int, frame: int = 256, seed: int = 0, corrupt_every: int = 97,
                drop: tuple[int, int] | None = (0.6, 8), blur_every: int = 13, **pose_kw):
    """Yield (index, uint8 frame or None when corrupt, ViewPose) of a simulated flight over the later-date scene.

    Brightness drifts slowly (gain 0.8-1.2, bias +-15), every `blur_every`-th frame has 7-px motion blur, every
    `corrupt_every`-th frame is corrupt (None), and a source drop loses `drop[1]` frames at fraction `drop[0]` of
    the flight (the camera keeps moving: the next frame is far from the last one delivered).
    """
    h, w = post.shape[:2]
    poses = flight_poses(w, h, n_frames, frame, seed, **pose_kw)
    d0 = int(drop[0] * n_frames) if drop else -1
    lost = set(range(d0, d0 + drop[1])) if drop else set()
    for i, p in enumerate(poses):
        if i in lost:
            continue
        corrupt = corrupt_every > 0 and i % corrupt_every == corrupt_every - 1
        blur = blur_every > 0 and i % blur_every == blur_every - 1
        gain, bias = 1.0 + 0.2 * np.sin(i / 40.0 + seed), 15 * np.sin(i / 57.0)
        img = None if corrupt else render_view(post, p, frame, gain, bias, 7 if blur else 0)
        yield i, img, ViewPose(p, blur, corrupt)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="A rendered flight: reference.png, flight.avi, frames/ under OUT_DIR.")
    ap.add_argument("out_dir")
    ap.add_argument("n_frames", type=int, nargs="?", default=40)
    ap.add_argument("change_at", type=int, nargs="?", default=20)
    a = ap.parse_args()
    f = make_flight(a.out_dir, a.n_frames, a.change_at)
    print(f"{f.reference}  {f.video}  {f.frames_dir}  change from frame {f.change_at} of {f.n_frames}")
