"""Registration and the pixel pre-gate on a real simulated flight; event geometry helpers.

    pytest tests/test_stream_register.py
"""

from __future__ import annotations

import cv2
import make_flight
import numpy as np
import pytest

from edgecc.stream.events import bbox_polygon, iou, mask_bbox, write_png_atomic
from edgecc.stream.register import RegisterOptions, Registrar, pregate_score


@pytest.fixture(scope="module")
def scene():
    pre, post, mask = make_flight.render_scene(320, seed=0)
    return pre, post, mask


@pytest.fixture(scope="module")
def registrar(scene):
    return Registrar(scene[0])


def _view(img, angle=3.0, scale=1.1, centre=(150.0, 170.0), out=176):
    """Frame = window of `img` with a known similarity transform; returns (frame, 3x3 frame->scene)."""
    m = cv2.getRotationMatrix2D(centre, angle, scale)
    m[:, 2] += np.array([out / 2 - centre[0], out / 2 - centre[1]])
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
    return cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_LINEAR), inv


def _err(h, truth, pts=((10, 10), (160, 20), (90, 150))):
    p = np.float32([pts])
    return float(np.abs(cv2.perspectiveTransform(p, h) - cv2.perspectiveTransform(p, truth)).max())


@pytest.mark.parametrize("method", ["ecc", "orb", "sift", "rootsift"])
def test_recovers_known_transform_from_no_prior(scene, method):
    frame, truth = _view(scene[0])
    reg = Registrar(scene[0], RegisterOptions(method=method))
    r = reg.register(frame)
    assert not r.ok and r.reason == "unconfirmed" and r.coarse == "global", r  # a global lock waits for one more
    r = reg.register(frame)
    assert r.ok and r.coarse == "track", r
    assert _err(r.homography, truth) < 1.5
    assert r.overlap == pytest.approx(1.0)  # overlap: the fraction of the frame inside the map


def test_tracks_a_flight_and_overlap_is_of_the_frame(scene):
    big = np.vstack([np.hstack([make_flight.render_scene(320, seed=2 * r + c)[0] for c in (0, 1)]) for r in (0, 1)])
    reg = Registrar(big)
    for k in range(6):
        frame, truth = _view(big, centre=(150.0 + 20 * k, 170.0 + 12 * k))  # over the tile seams too
        r = reg.register(frame)
        assert _err(r.homography, truth) < 1.5 and r.overlap == pytest.approx(1.0), (k, r)
        assert (r.ok, r.coarse) == ((False, "global") if k == 0 else (True, "track")), r


def test_unchanged_frames_pregate_low_changed_high(scene, registrar):
    pre, post, _ = scene
    for img, lo in ((pre, True), (post, False)):
        frame, _ = _view(img, centre=(170.0, 150.0))  # the changed houses are in this window
        r = registrar.register(frame)
        r = r if r.ok else registrar.register(frame)  # a first (global) lock is confirmed by the next frame
        assert r.ok
        a, b = registrar.pair(frame, r, 64)
        assert a.shape == b.shape == (64, 64, 3) and a.dtype == np.uint8
        s = pregate_score(a, b)
        assert (s < 0.5) if lo else (s > 1.0), s


def test_pregate_ignores_gain_and_offset(scene):
    a = cv2.resize(scene[0], (64, 64))
    b = np.clip(a.astype(np.float32) * 0.8 + 20, 0, 255).astype(np.uint8)
    assert pregate_score(a, b) < 0.1


@pytest.mark.parametrize("frame_kind, reasons", [
    ("blank", {"featureless"}),
    ("noise", {"not_found", "low_correlation", "degenerate", "low_overlap"}),
    ("other_scene", {"not_found", "low_correlation", "degenerate", "low_overlap"}),
])
def test_unregistrable_frames_are_skipped_with_reason(registrar, frame_kind, reasons):
    rng = np.random.default_rng(1)
    frame = {
        "blank": lambda: np.full((176, 176, 3), 90, np.uint8),
        "noise": lambda: rng.integers(0, 256, (176, 176, 3), dtype=np.uint8),
        "other_scene": lambda: _view(make_flight.render_scene(320, seed=7)[0])[0],
    }[frame_kind]()
    registrar.reset()
    r = registrar.register(frame)
    assert not r.ok and r.reason in reasons, r


def test_low_overlap_is_skipped(scene):
    frame, _ = _view(scene[0], centre=(230.0, 170.0), angle=0.0, scale=1.0)  # x 142..318 over a map 280 wide
    r = Registrar(np.ascontiguousarray(scene[0][:, :280]), RegisterOptions(min_overlap=0.9)).register(frame)
    assert not r.ok and r.reason == "low_overlap" and r.overlap == pytest.approx(138 / 176, abs=0.02), r


def test_featureless_reference_is_said_and_skipped(scene):
    reg = Registrar(np.full((400, 400, 3), 40, np.uint8))
    assert reg.reference_texture < RegisterOptions().min_texture
    r = reg.register(_view(scene[0])[0])
    assert not r.ok and r.reason in ("not_found", "low_correlation")


def test_mask_bbox_maps_cells_to_reference_pixels():
    m = np.zeros((8, 8), np.float32)
    m[2:4, 5] = 0.9
    assert mask_bbox(m, (100, 50, 180, 130)) == (150, 70, 160, 90)  # 10 px cells
    assert mask_bbox(np.full((8, 8), 0.1, np.float32), (0, 0, 80, 80)) == (0, 0, 80, 80)  # weak mask: its peak


def test_polygon_and_iou():
    ring = bbox_polygon((0, 0, 10, 20), (0.5, 0, 500000, 0, -0.5, 4e6))
    assert ring[0] == [500000, 4e6] and ring[2] == [500005, 4e6 - 10] and ring[-1] == ring[0]
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert iou((0, 0, 1, 1), (5, 5, 6, 6)) == 0


def test_png_written_atomically(tmp_path):
    write_png_atomic(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary left behind
    assert cv2.imread(str(tmp_path / "a.png")).shape == (4, 4, 3)


def test_chains_through_last_frame_when_reference_stops_matching(scene):
    """A change covering the whole view: the frame no longer matches the map but matches the last frame."""
    from edgecc.stream.refmap import ReferenceMap

    reg = Registrar(scene[0], RegisterOptions(max_chain=2))
    a, _ = _view(scene[0], centre=(150.0, 170.0))
    assert reg.register(a).reason == "unconfirmed" and reg.register(a).ok
    noise = np.random.default_rng(0).integers(0, 256, scene[0].shape, dtype=np.uint8)
    reg.map = ReferenceMap.from_array(cv2.GaussianBlur(noise, (0, 0), 3))  # the map no longer matches anything
    for k in (1, 2):
        b, truth = _view(scene[0], centre=(150.0 + 4 * k, 170.0 - 3 * k))
        r = reg.register(b)
        assert r.ok and r.chained == k and r.coarse == "track", r
        assert _err(r.homography, truth) < 2
    assert not reg.register(b).ok  # chain length bound (drift) reached


def test_simulated_flight_is_continuous_and_seeded():
    poses = make_flight.flight_poses(952, 640, 120, 256, seed=3)
    centres = np.array([(h @ [128, 128, 1])[:2] for h in poses])
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 25 and 4 < np.median(steps) < 9  # 6 px a frame along the path, plus 2-px jitter
    assert np.allclose(poses[5], make_flight.flight_poses(952, 640, 120, 256, seed=3)[5])
    frames = list(make_flight.real_flight(np.zeros((640, 952, 3), np.uint8), 100, 256, seed=0))
    assert sum(img is None for _, img, _ in frames) == 1 and len(frames) == 92  # one corrupt, an 8-frame drop


def test_poses_a_camera_looking_down_cannot_take_are_refused(scene):
    reg = Registrar(scene[0])
    frame, _ = _view(scene[0])
    reg.register(frame)
    assert reg.register(frame).ok  # locked and confirmed
    sheared = cv2.warpAffine(frame, np.float32([[1, 0.35, 0], [0, 1, 0]]), frame.shape[1::-1])
    r = reg.register(sheared)  # an affine fit can shear (ECC's wrong optima do); a nadir camera's view does not
    assert not r.ok and r.reason == "degenerate", r
    r = reg.register(_view(scene[0], scale=1.12)[0])  # a plausible step: tracked as before
    assert r.ok and r.coarse == "track", r



def test_a_sheared_fit_falls_back_to_the_telemetry_pose_when_trusted(scene):
    frame, truth = _view(scene[0])
    sheared = cv2.warpAffine(frame, np.float32([[1, 0.35, 0], [0, 1, 0]]), frame.shape[1::-1])
    # the telemetry gives the camera's pose, a similarity (`truth`); the image fits only a sheared one
    r = Registrar(scene[0], RegisterOptions(trust_prior=True)).register(sheared, truth)
    assert r.ok and r.reason == "prior_only" and r.coarse == "prior", r
    r = Registrar(scene[0]).register(sheared, truth)  # not trusted: the sheared fit is refused, and said
    assert not r.ok and r.reason in ("degenerate", "low_correlation"), r
