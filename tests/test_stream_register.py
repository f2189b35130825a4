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


@pytest.mark.parametrize("model", ["affine", "homography"])
@pytest.mark.parametrize("method", ["orb", "sift"] + (["akaze"] if hasattr(cv2, "AKAZE_create") else []))
def test_recovers_known_transform(scene, model, method):
    frame, truth = _view(scene[0])
    r = Registrar(scene[0], RegisterOptions(method=method, model=model)).register(frame)
    assert r.ok, r
    pts = np.float32([[[10, 10], [160, 20], [90, 150]]])
    err = np.abs(cv2.perspectiveTransform(pts, r.homography) - cv2.perspectiveTransform(pts, truth)).max()
    assert err < 1.5, err
    assert r.inlier_ratio > 0.5 and 0.2 < r.overlap < 0.4


def test_unchanged_frames_pregate_low_changed_high(scene, registrar):
    pre, post, _ = scene
    for img, lo in ((pre, True), (post, False)):
        frame, _ = _view(img, centre=(170.0, 150.0))  # the changed houses are in this window
        r = registrar.register(frame)
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
    ("blank", {"few_features"}),
    ("noise", {"few_matches", "low_inliers", "degenerate"}),
    ("other_scene", {"few_matches", "low_inliers", "degenerate"}),
])
def test_unregistrable_frames_are_skipped_with_reason(registrar, frame_kind, reasons):
    rng = np.random.default_rng(1)
    frame = {
        "blank": lambda: np.full((176, 176, 3), 90, np.uint8),
        "noise": lambda: rng.integers(0, 256, (176, 176, 3), dtype=np.uint8),
        "other_scene": lambda: _view(make_flight.render_scene(320, seed=7)[0])[0],
    }[frame_kind]()
    r = registrar.register(frame)
    assert not r.ok and r.reason in reasons, r


def test_low_overlap_is_skipped(scene):
    frame, _ = _view(scene[0])
    r = Registrar(scene[0], RegisterOptions(min_overlap=0.9)).register(frame)
    assert not r.ok and r.reason == "low_overlap"


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
    """A change covering most of the view: the frame no longer matches the reference but matches the last frame."""
    reg = Registrar(scene[0], RegisterOptions(max_chain=2))
    a, _ = _view(scene[0], centre=(150.0, 170.0))
    assert reg.register(a).chained == 0
    reg._ref_desc = np.random.default_rng(0).integers(0, 256, reg._ref_desc.shape, dtype=np.uint8)  # reference lost
    for k in (1, 2):
        b, truth = _view(scene[0], centre=(150.0 + 4 * k, 170.0 - 3 * k))
        r = reg.register(b)
        assert r.ok and r.chained == k, r
        pts = np.float32([[[10, 10], [160, 20], [90, 150]]])
        assert np.abs(cv2.perspectiveTransform(pts, r.homography) - cv2.perspectiveTransform(pts, truth)).max() < 2
    assert not reg.register(b).ok  # chain length bound (drift) reached
