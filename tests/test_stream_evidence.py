"""Watch's per-tile change evidence, its tile grid from the map's ground resolution, and its rule from the bundle.

    pytest tests/test_stream_evidence.py
"""

from __future__ import annotations

import dataclasses
import json
import math

import make_flight
import numpy as np
import pytest

from edgecc.sensors import tile_for_gsd
from edgecc.stream import Frame, Monitor, ReferenceMap, WatchOptions
from edgecc.stream.evidence import CLIP, TileEvidence, WatchRule, logit
from edgecc.stream.monitor import watch_rule
from edgecc.stream.register import Registrar, Registration

A, B, FAR = (0, 0, 64, 64), (32, 0, 96, 64), (500, 500, 564, 564)  # B overlaps A (IoU 1/3), FAR does not


def test_a_tile_fires_once_its_mean_logit_reaches_the_threshold_after_min_obs():
    ev = TileEvidence(WatchRule(threshold=0.8, min_obs=3))
    assert [ev.observe(A, 0.9, f) for f in (1, 2)] == ["pending", "pending"]
    assert ev.observe(A, 0.9, 3) == "fire" and ev.count(A) == 3
    assert ev.evidence(A) == pytest.approx(0.9)
    assert ev.observe(A, 0.95, 4) == "repeat"  # one event a pass


def test_one_confident_frame_does_not_outvote_the_others():
    ev = TileEvidence(WatchRule(threshold=0.8, min_obs=3))
    verdicts = [ev.observe(A, p, f) for f, p in enumerate((0.999, 0.3, 0.3))]
    assert verdicts == ["pending", "below", "below"]
    mean = (CLIP + 2 * logit(0.3)) / 3  # 0.999's logit (6.9) is capped; uncapped the mean would reach 0.85
    assert ev.evidence(A) == pytest.approx(1 / (1 + math.exp(-mean)))


def test_frames_that_saw_a_tile_in_part_weigh_less():
    ev = TileEvidence(WatchRule(threshold=0.8, min_obs=2, cover_power=4.0))
    assert ev.observe(A, 0.1, 1, cover=0.5) == "below"  # half in view: most of it filled from the map
    assert ev.observe(A, 0.95, 2, cover=1.0) == "fire"  # weights 1/16 and 1: the whole view decides
    flat = TileEvidence(WatchRule(threshold=0.8, min_obs=2))
    flat.observe(A, 0.1, 1, cover=0.5)
    assert flat.observe(A, 0.95, 2, cover=1.0) == "below"
    with pytest.raises(ValueError):
        WatchRule(cover_power=-1.0)


def test_neighbours_of_a_fired_tile_are_the_same_change_until_the_hold_passes():
    ev = TileEvidence(WatchRule(threshold=0.5, min_obs=1), hold=10)
    assert ev.observe(A, 0.9, 5) == "fire"
    assert ev.observe(B, 0.9, 5) == "debounced"  # same frame, overlapping tile
    assert ev.observe(FAR, 0.9, 6) == "fire"  # elsewhere: its own event
    ev2 = TileEvidence(WatchRule(threshold=0.5, min_obs=1), hold=10)
    ev2.observe(A, 0.9, 5)
    assert ev2.observe(B, 0.9, 30) == "fire"  # A fired 25 frames earlier: past the hold


def test_a_tile_unseen_longer_than_the_hold_starts_a_new_pass_and_memory_stays_bounded():
    ev = TileEvidence(WatchRule(threshold=0.5, min_obs=2), hold=10)
    ev.observe(A, 0.9, 0)
    assert ev.observe(A, 0.9, 1) == "fire"
    assert ev.observe(A, 0.9, 50) == "pending"  # a later flight over it: counted afresh
    assert ev.observe(A, 0.9, 51) == "fire"
    rng = np.random.default_rng(0)
    for f in range(2000):  # a long flight over new ground
        x, y = (int(v) for v in rng.integers(0, 10_000, 2))
        ev.observe((x, y, x + 64, y + 64), float(rng.random()), f)
    assert len(ev.tiles) <= 64 + 11  # only tiles seen within the hold (or the last batch before a sweep)


def test_least_observed_tiles_are_scored_first():
    ev = TileEvidence(WatchRule(threshold=0.5))
    ev.observe(A, 0.1, 0)
    ev.observe(A, 0.1, 1)
    ev.observe(B, 0.1, 1)
    assert ev.order([A, B, FAR]) == [FAR, B, A]


# ---------------------------------------------------------------------------------------------- in the monitor


class GateDouble:
    """MODEL DOUBLE (not a model): every tile scores `p`; counts the pairs scored."""

    input_size = 64
    gate_threshold = 0.5

    def __init__(self, p: float = 0.9):
        self.p, self.pairs = p, 0

    def caption_batch(self, pre, post):
        from edgecc.decoding import Caption

        self.pairs += len(pre)
        return [Caption("a double change", (), True, self.p, np.ones((8, 8), np.float32), {"encode": 1.0})
                for _ in range(len(pre))]


def _frames(scene: np.ndarray, n: int, side: int = 96):
    for i in range(n):  # a straight pass, 4 px a frame, the view cut from the map itself
        x = 40 + 4 * i
        yield Frame(i, np.ascontiguousarray(scene[60:60 + side, x:x + side]), 0.0, f"f{i}")


def test_the_grid_follows_the_maps_ground_resolution():
    scene = make_flight.render_scene(320, seed=1)[0]
    for gsd, expect in ((None, 64), (0.5, 64), (1.5, tile_for_gsd(64, 1.5))):
        mon = Monitor(GateDouble(), scene, WatchOptions(gsd=gsd, replay=True, pregate_threshold=0.0))
        for f in _frames(scene, 2):
            mon.process(f, "test", None)
        assert mon._grid == expect, gsd
    rm = ReferenceMap.from_array(scene, (1.5, 0.0, 300000.0, 0.0, -1.5, 4100000.0), "EPSG:32615")
    mon = Monitor(GateDouble(), rm, WatchOptions(replay=True, pregate_threshold=0.0))  # read from the geotransform
    assert mon.gsd == pytest.approx(1.5)


def test_an_event_needs_min_obs_frames_and_carries_them():
    scene = make_flight.render_scene(320, seed=1)[0]
    double = GateDouble(0.9)
    mon = Monitor(double, scene, WatchOptions(min_obs=3, tiles_per_frame=2, replay=True, pregate_threshold=0.0))
    events = [e for f in _frames(scene, 12) for e in mon.process(f, "test", None)]
    c = mon.stats.counters
    assert events and all(e.observations >= 3 for e in events)
    assert c["evidence_pending"] >= 1 and c["tiles_scored"] <= 2 * c["model_calls"]
    assert c["tiles_scored"] + c["events"] == double.pairs  # the gate on every tile, the decoder on fired ones
    assert c["events"] == len(events) and events[0].change_score == pytest.approx(0.9, abs=1e-3)
    quiet = Monitor(GateDouble(0.2), scene, WatchOptions(min_obs=1, replay=True, pregate_threshold=0.0))
    assert not [e for f in _frames(scene, 12) for e in quiet.process(f, "test", None)]
    assert quiet.stats.counters["gate_negative"] == quiet.stats.counters["model_calls"] > 0


def test_watch_rule_comes_from_options_then_the_bundle(tiny_bundle):
    import edgecc

    cap = edgecc.load(tiny_bundle)
    # no rule in the bundle: as one pair a frame
    assert watch_rule(cap, WatchOptions()) == WatchRule(cap.gate_threshold, 1, tiles_per_frame=1, window=1)
    m = json.loads(json.dumps(cap.bundle.manifest))
    m["gate"] = {**m.get("gate", {}), "watch": {"threshold": 0.85, "min_obs": 5, "clip": 2.0, "cover_power": 4.0,
                                                "tiles_per_frame": 8}}
    ruled = dataclasses.replace(cap, bundle=dataclasses.replace(cap.bundle, manifest=m))
    assert watch_rule(ruled, WatchOptions()) == WatchRule(0.85, 5, 2.0, 4.0)
    assert watch_rule(ruled, WatchOptions(gate_threshold=0.6, min_obs=2)) == WatchRule(0.6, 2, 2.0, 4.0)
    assert watch_rule(dataclasses.replace(ruled, threshold=0.7), WatchOptions()) == WatchRule(0.7, 5, 2.0, 4.0)
    with pytest.raises(ValueError, match="probability"):
        WatchOptions(gate_threshold=1.5)


def _coarse_pair(dx: int, dy: int) -> tuple[np.ndarray, np.ndarray]:
    """A 150-px view cut from a map at (50, 70), registered exactly; the model pair of the 85-px map box at (dx, dy)
    from the view's corner (85 map px -> the 256-px model input: a map coarser than the model's ground resolution)."""
    scene = make_flight.render_scene(320, seed=2)[0]
    x0, y0 = 50, 70
    frame = np.ascontiguousarray(scene[y0:y0 + 150, x0:x0 + 150])
    h = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
    reg = Registration(True, homography=h, bbox=(x0, y0, x0 + 150, y0 + 150), frame_shape=frame.shape[:2])
    return Registrar(scene).pair(frame, reg, 256, (x0 + dx, y0 + dy, x0 + dx + 85, y0 + dy + 85))


def test_pair_on_a_coarse_map_is_one_resampling_of_the_frame():
    """The frame is warped straight onto the model grid, so a view cut from the map itself pairs with the map's own
    upsampled tile."""
    pre, post = _coarse_pair(20, 20)
    assert pre.shape == post.shape == (256, 256, 3)
    diff = np.abs(pre.astype(int) - post.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4


def test_a_threshold_the_capped_evidence_cannot_reach_is_refused():
    with pytest.raises(ValueError, match="can never be reached"):
        WatchRule(threshold=0.9, clip=2.0)  # the evidence is at most sigmoid(2) = 0.881
    assert WatchRule(threshold=1.0, clip=2.0).threshold == 1.0  # 1 closes the gate on purpose


def test_a_vetoed_fire_is_taken_back():
    ev = TileEvidence(WatchRule(threshold=0.5, min_obs=1), hold=10)
    assert ev.observe(A, 0.9, 1) == "fire"
    ev.unfire(A)  # the decoder said "no change"
    assert ev.observe(B, 0.9, 1) == "fire"  # A no longer debounces its neighbour
    ev2 = TileEvidence(WatchRule(threshold=0.5, min_obs=1), hold=10)
    ev2.observe(A, 0.9, 1)
    ev2.unfire(A)
    assert ev2.observe(A, 0.9, 2) == "fire"  # and may fire again itself
    ev3 = TileEvidence(WatchRule(threshold=0.5, min_obs=1), hold=10)
    assert [ev3.observe(A, 0.9, 1), ev3.observe(B, 0.9, 1)] == ["fire", "debounced"]  # one frame, B after A
    ev3.unfire(A)  # A's caption vetoed after the frame's looks
    assert ev3.observe(B, 0.9, 2) == "fire"  # B was debounced against a fire taken back: re-armed


class VetoDouble(GateDouble):
    """MODEL DOUBLE (not a model): the gate says 0.9 everywhere, the decoder "no change" (the monitor reads only the
    scorer's change_score, and only the decoder's `changed`)."""

    def caption_batch(self, pre, post):
        return [dataclasses.replace(c, changed=False) for c in super().caption_batch(pre, post)]


def test_frames_off_the_grid_add_up_and_vetoes_report_nothing():
    scene = make_flight.render_scene(320, seed=1)[0]
    opts = WatchOptions(min_obs=3, min_tile_cover=1.01, replay=True, pregate_threshold=0.0)  # no grid tile qualifies
    mon = Monitor(GateDouble(0.9), scene, opts)
    events = [e for f in _frames(scene, 12) for e in mon.process(f, "test", None)]
    c = mon.stats.counters
    assert c["uncached_pairs"] == c["model_calls"] >= 10 and events and events[0].observations >= 3
    vetoed = Monitor(VetoDouble(0.9), scene, WatchOptions(min_obs=1, tiles_per_frame=1, replay=True,
                                                          pregate_threshold=0.0))
    assert not [e for f in _frames(scene, 6) for e in vetoed.process(f, "test", None)]
    assert vetoed.stats.counters["decoder_veto"] >= 1 and vetoed.stats.counters["already_reported"] == 0


def test_pair_on_a_coarse_map_has_no_seam_at_the_frames_edge():
    pre, post = _coarse_pair(100, 20)  # the frame covers 50 of the box's 85 columns
    diff = np.abs(pre.astype(int) - post.astype(int)).mean(axis=(0, 2))  # per model column
    assert diff.max() < 4.0, int(np.argmax(diff))


def test_a_change_that_appears_while_a_tile_is_watched_is_reported():
    ev = TileEvidence(WatchRule(threshold=0.5, min_obs=1), hold=30)
    old, new = (0, 0, 16, 16), (40, 40, 60, 60)  # changed boxes inside A
    assert ev.observe(A, 0.9, 1, old) == "fire"
    assert ev.observe(A, 0.1, 2, new) == "repeat"  # a quiet look changes nothing
    assert ev.observe(A, 0.9, 3, (1, 1, 17, 17)) == "repeat"  # the same change again
    assert ev.observe(A, 0.9, 4, new) == "fire"  # a new change in the watched tile
    assert ev.observe(A, 0.9, 5, (0, 0, 15, 15)) == "debounced"  # the first change, still within the hold


def test_a_fire_lives_while_its_change_is_seen_and_a_misfire_does_not_hide_a_later_change():
    ev = TileEvidence(WatchRule(threshold=0.5, min_obs=1), hold=10)
    assert ev.observe(A, 0.9, 1) == "fire"  # the gate misfires on an unchanged tile...
    assert [ev.observe(A, 0.2, f) for f in range(2, 12)] == ["repeat"] * 10  # ... which then looks unchanged
    assert ev.observe(A, 0.9, 12) == "fire"  # a change appears 11 frames on, in the same place: reported
    for f in range(13, 40):  # a hovering camera keeps seeing it: one event, and it keeps its neighbours quiet
        assert ev.observe(A, 0.9, f) == "repeat"
    assert ev.observe(B, 0.9, 40) == "debounced"  # 28 frames after A fired, but A's change was seen at 39


def test_a_short_window_lets_a_change_outvote_the_frames_before_it():
    whole = TileEvidence(WatchRule(threshold=0.8, min_obs=2))
    short = TileEvidence(WatchRule(threshold=0.8, min_obs=2, window=2))
    for f in range(10):  # a hovering camera: the tile unchanged for 10 frames...
        whole.observe(A, 0.1, f)
        short.observe(A, 0.1, f)
    assert [whole.observe(A, 0.95, f) for f in (10, 11)] == ["below", "below"]  # ... outvotes the change
    assert [short.observe(A, 0.95, f) for f in (10, 11)] == ["below", "fire"]  # the last two frames decide
    with pytest.raises(ValueError):
        WatchRule(min_obs=3, window=2)


class FailingDecoderDouble(GateDouble):
    """MODEL DOUBLE (not a model): the gate says 0.9 everywhere; the first caption (a batch of one) raises."""

    def caption_batch(self, pre, post):
        if len(pre) == 1 and not getattr(self, "failed", False):
            self.failed = True
            raise RuntimeError("model double: injected decoder failure")
        return super().caption_batch(pre, post)


def test_a_failure_while_reporting_takes_back_every_fire_of_the_frame():
    scene = make_flight.render_scene(320, seed=1)[0]
    mon = Monitor(FailingDecoderDouble(0.9), scene, WatchOptions(min_obs=1, tiles_per_frame=8, replay=True,
                                                                 pregate_threshold=0.0, debounce_iou=0.99))
    frames = list(_frames(scene, 6, side=200))
    with pytest.raises(RuntimeError):
        for f in frames:  # the first registered frame: every tile fires, the first caption fails
            mon.process(f, "test", None)
    assert len(mon.evidence.tiles) >= 2
    assert all(t.fired is None for t in mon.evidence.tiles.values())  # none is left fired without its event
    events = mon.process(frames[-1], "test", None)  # the next look reports them
    assert len(events) == min(len(mon.evidence.tiles), 8)  # up to tiles_per_frame a frame


def test_the_rule_fit_replays_the_monitors_evidence_and_a_second_opinion_veto():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from fit_watch_rule import simulate

    row = ("frame", "x0", "y0", "x1", "y1", "cover", "warp", "pregate", "mx0", "my0", "mx1", "my1", "verify")
    a, b = (0, 0, 64, 64), (300, 0, 364, 64)  # a: a real change (the probe agrees); b: a gate misfire (it does not)
    rows = [(i, *a, 1.0, 0.95, 1.0, *a, 0.9) for i in range(6)] + [(i, *b, 1.0, 0.95, 1.0, *b, 0.5)
                                                                    for i in range(6, 12)]
    frames = [(i, True, 0.5, False, i >= 6) for i in range(12)]  # frames 6-11 see no change
    fl = {"rows": rows, "frames": frames, "regions": [{"bbox": list(a), "area": 4096, "seen_by": [0]}]}
    off = simulate(fl, threshold=0.8, min_obs=3, tiles=8, row=row)
    on = simulate(fl, threshold=0.8, min_obs=3, tiles=8, verify=0.8, row=row)
    assert (off["found"], off["false_events"], off["events"]) == (1, 1, 2)
    assert (on["found"], on["false_events"], on["events"]) == (1, 0, 1)
    assert simulate(fl, threshold=0.8, min_obs=7, tiles=8, row=row)["events"] == 0  # 6 looks a tile: none fires
