"""A simulated drone flight over a synthetic scene that changes at a known frame: video, PNG folder, reference.

    python tests/data/make_flight.py OUT_DIR [N_FRAMES] [CHANGE_AT]

    >>> flight = make_flight(tmp_path, n_frames=40, change_at=20)
    >>> flight.video, flight.frames_dir, flight.reference, flight.changed_frames   # changed_frames: [20, ..., 39]

The scene pair comes from `edgecc.train.synth.render_pair` (pre = scene before, post = scene after). A camera
window pans over the scene with small seeded translation/rotation jitter; frames before `change_at` are cut from the
pre scene, frames from `change_at` on from the post scene. The reference image is the whole pre scene. Seeded: the
same arguments give the same frames.
"""

from __future__ import annotations

import sys
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


if __name__ == "__main__":
    args = sys.argv[1:]
    f = make_flight(args[0], *(int(a) for a in args[1:3]))
    print(f"{f.reference}  {f.video}  {f.frames_dir}  change from frame {f.change_at} of {f.n_frames}")
