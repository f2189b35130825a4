"""Change evidence per map tile, gathered over the frames that see it: one event per changed tile and pass.

Example:
    >>> ev = TileEvidence(WatchRule(threshold=0.9, min_obs=3))
    >>> ev.observe((0, 0, 256, 256), 0.95, frame=10)      # -> "pending" (1 of 3 observations)
    >>> ev.order([(0, 0, 256, 256), (128, 0, 384, 256)])  # least observed first: which tiles to score next

A single frame's gate score on real imagery is noisy (motion blur, brightness drift, residual misregistration, a
tile only partly in view); a drone sees each map tile in many frames. A tile's evidence is the mean gate logit of
its observations in the current pass, or of the last `window` of them (so that a change appearing while the tile is
watched is not outvoted by the frames before it), each capped at +-`clip` so that one extreme frame cannot outvote
the others, and weighted by how much of the tile the frame covered (`cover_power`).
The tile fires once, when it has at least `min_obs` observations and the mean reaches logit(threshold). A fire lives
while confident looks at its change go on (a frame scoring at or above the threshold); after `hold` frames without
one, the change it fired on is no longer seen (it was noise, or it went), and the tile may fire again: a hovering
camera whose gate misfired before a change appeared still reports the change. A tile whose changed region (the mask's
box; the tile by default) overlaps (IoU >= `iou`) the region of a live fire (one confirmed within `hold` frames) is the
same change: it is marked fired without an event ("debounced"). Measured on the flights, the mask's box reports the
houses of a new street in neighbouring tiles where the tiles' own overlap would merge them
(recall 0.36 -> 0.41 at the same false events). A tile unseen for more than `hold` frames starts a new pass (a later
flight over it may report it again). Memory is bounded: only tiles seen within `hold` frames are kept.

The rule (`WatchRule`) is chosen on validation flights, judged on a held-out dataset (`benchmarks/fit_watch_rule.py`),
and shipped in the bundle's manifest ("gate" "watch").
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from .events import iou

EPS = 1e-4
CLIP = 3.0  # |logit| cap of one observation (p 0.047-0.953): one blurred or misregistered frame cannot outvote the rest


def logit(p: float) -> float:
    p = min(max(float(p), EPS), 1 - EPS)
    return math.log(p / (1 - p))


@dataclass(frozen=True)
class WatchRule:
    """When a tile's frames add up to a change.

    Attributes:
        threshold: the weighted mean gate probability (through the logit) a tile's observations must reach.
        min_obs: observations a tile needs before it can fire.
        clip: |logit| cap of one observation.
        cover_power: an observation weighs (fraction of the tile the frame covered) ** cover_power: a tile seen only
            in part is filled from the map there and reads less changed than it is (0: all frames weigh the same).
        tiles_per_frame: map tiles scored a frame, least observed first (the rule was chosen at this budget).
        window: the evidence is the mean of the last `window` observations (>= min_obs); None: of the whole pass.
            A short window lets a change that appears while a tile is watched (a hovering camera) fire soon; the
            whole pass averages more noise away on a flight.
    """

    threshold: float = 0.5
    min_obs: int = 1
    clip: float = CLIP
    cover_power: float = 0.0
    tiles_per_frame: int = 8
    window: int | None = None

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"the change threshold is a probability in [0, 1], got {self.threshold}")
        if (self.min_obs < 1 or self.tiles_per_frame < 1 or self.clip <= 0 or not 0 <= self.cover_power <= 16
                or (self.window is not None and self.window < self.min_obs)):
            raise ValueError(f"min_obs >= 1, clip > 0 and 0 <= cover_power <= 16, got {self}")
        ceiling = 1 / (1 + math.exp(-self.clip))  # the evidence cannot exceed sigmoid(clip); 1.0 closes the gate
        if ceiling < self.threshold < 1.0:
            raise ValueError(f"a change threshold of {self.threshold:g} can never be reached: each frame's evidence is "
                             f"capped at {ceiling:.3f} (clip {self.clip:g}); use at most {ceiling:.3f}, or 1 to "
                             "report nothing")


@dataclass
class _Tile:
    n: int = 0  # observations this pass
    recent: deque = field(default_factory=deque)  # (weight, capped gate logit) of the last `window` observations
    last: int = 0  # frame index of the last observation
    fired: int | None = None  # frame it fired (or was debounced) at, this pass
    alive: int = 0  # frame of the last confident look at the change it fired on (the fire lives `hold` frames on)
    region: tuple | None = None  # the changed box it fired on (map px)
    prev: list = field(default_factory=list)  # [(alive frame, region)] of its earlier fires this pass
    debounced: bool = False  # its fire was another tile's change (no event of its own)


class TileEvidence:
    """Per-tile gate evidence; `observe` says "fire", "debounced", "repeat", "pending" or "below" for one score.

    fire: the tile's evidence reached the threshold (an event); debounced: it did, where the region of a live fire
    (one confirmed by a confident look within `hold` frames) overlaps; repeat: the tile's own fire is live and this
    look is quiet or at the same change (a confident look at a region that does not overlap it, or any look once the
    fire has gone `hold` frames unconfirmed, starts its evidence afresh: a change can appear while watched); pending:
    this score is at or above the threshold but the tile has fewer than `min_obs` observations; below: otherwise."""

    def __init__(self, rule: WatchRule, hold: int = 30, iou: float = 0.2):
        self.rule, self.hold, self.iou = rule, hold, iou
        self._th = logit(rule.threshold) if rule.threshold > 0 else -math.inf
        self.tiles: dict[tuple, _Tile] = {}

    def count(self, box: tuple, frame: int | None = None) -> int:
        """Observations of `box` this pass (0 if its pass ended before `frame`)."""
        t = self.tiles.get(box)
        return 0 if t is None or (frame is not None and frame - t.last > self.hold) else t.n

    def order(self, boxes: list[tuple], frame: int | None = None) -> list[tuple]:
        """Boxes sorted least observed first (stable: ties keep the caller's order, e.g. best covered first)."""
        return sorted(boxes, key=lambda b: self.count(b, frame))

    def unfire(self, box: tuple) -> None:
        """Take back a fire (the decoder said "no change", or the event could not be written): the tile may fire
        again this pass and does not debounce its neighbours; tiles debounced in the frame it fired (possibly against
        it) are re-armed too (one against a fire that stands is debounced again on its next look)."""
        t = self.tiles.get(box)
        if t is not None:
            for o in self.tiles.values():
                if o is not t and o.debounced and o.fired is not None and o.fired == t.fired:
                    o.fired = o.region = None
                    o.debounced = False
            t.fired = t.region = None

    def evidence(self, box: tuple) -> float | None:
        """Weighted mean gate probability of the box's (last `window`) observations through the logit; None: unseen."""
        t = self.tiles.get(box)
        return None if t is None or not t.recent else 1 / (1 + math.exp(-self._mean(t)))

    @staticmethod
    def _mean(t: _Tile) -> float:
        return sum(w * z for w, z in t.recent) / sum(w for w, _ in t.recent)

    def observe(self, box: tuple, score: float, frame: int, region: tuple | None = None, cover: float = 1.0) -> str:
        """One gate score of tile `box` at `frame`; `region`: the changed box inside it (map px; default the tile),
        which debouncing compares with the regions that fired recently; `cover`: the fraction of the tile in view."""
        r = self.rule
        self._expire(frame)
        t = self.tiles.get(box)
        if t is None or frame - t.last > self.hold:  # first sight, or a new pass over it
            t = self.tiles[box] = _Tile()
        w = max(cover, 0.05) ** r.cover_power  # >= 1e-21: a weight never underflows to 0
        t.n, t.last = t.n + 1, frame
        t.recent.append((w, min(max(logit(score), -r.clip), r.clip)))
        if r.window is not None and len(t.recent) > r.window:
            t.recent.popleft()
        if t.fired is not None:
            gone = frame - t.alive > self.hold  # no confident look at its change for `hold` frames: re-armed
            if not gone and (score < r.threshold or region is None or self.same(t.region, tuple(region))):
                if score >= r.threshold:
                    t.alive = frame
                return "repeat"
            # the change it fired on is gone, or a confident look at another change in it: a new candidate (a change
            # can appear while the tile is watched); a live old fire still debounces it
            t.prev = [(f, g) for f, g in t.prev if frame - f <= self.hold] + [(t.alive, t.region)]
            t.n, t.fired, t.region = 1, None, None
            t.recent = deque([t.recent[-1]])
        if t.n < r.min_obs:
            return "pending" if score >= r.threshold else "below"
        if self._mean(t) < self._th:
            return "below"
        t.fired, t.alive, t.region = frame, frame, tuple(region or box)
        fires = [(o.alive, o.region) for b, o in self.tiles.items() if b != box and o.fired is not None]
        t.debounced = any(frame - f <= self.hold and self.same(g, t.region) for f, g in fires + t.prev)
        return "debounced" if t.debounced else "fire"

    def same(self, a: tuple, b: tuple) -> bool:
        """Two changed regions are the same change when they overlap by IoU >= `iou`."""
        return iou(a, b) >= self.iou

    def _expire(self, frame: int) -> None:
        """Forget tiles unseen for more than `hold` frames (their pass is over)."""
        if len(self.tiles) > 64:
            self.tiles = {b: t for b, t in self.tiles.items() if frame - t.last <= self.hold}
