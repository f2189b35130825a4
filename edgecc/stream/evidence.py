"""Change evidence per map tile, gathered over the frames that see it: one event per changed tile and pass.

Example:
    >>> ev = TileEvidence(threshold=0.9, min_obs=3)
    >>> ev.observe((0, 0, 256, 256), 0.95, frame=10)      # -> "pending" (1 of 3 observations)
    >>> ev.order([(0, 0, 256, 256), (128, 0, 384, 256)])  # least observed first: which tiles to score next

A single frame's gate score on real imagery is noisy (motion blur, brightness drift, residual misregistration, a
tile only partly in view); a drone sees each map tile in many frames. A tile's evidence is the mean gate logit of
its observations in the current pass, each capped at +-`clip` so that one extreme frame cannot outvote the others.
The tile fires once, when it has at least `min_obs` observations and the mean reaches logit(threshold). A tile whose
changed region (the mask's box; the tile by default) overlaps (IoU >= `iou`) the region of a tile that fired within
`hold` frames is the same change: it is marked fired without an event ("debounced"). Measured on the flights, the
mask's box reports the houses of a new street in neighbouring tiles where the tiles' own overlap would merge them
(recall 0.36 -> 0.41 at the same false events). A tile unseen for more than `hold` frames starts a new pass (a later
flight over it may report it again). Memory is bounded: only tiles seen within `hold` frames are kept.

The rule's threshold and min_obs are chosen on validation flights, judged on a held-out dataset
(`benchmarks/fit_watch_rule.py`), and shipped in the bundle's manifest ("gate" "watch").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .events import iou

EPS = 1e-4
CLIP = 3.0  # |logit| cap of one observation (p 0.047-0.953): one blurred or misregistered frame cannot outvote the rest


def logit(p: float) -> float:
    p = min(max(float(p), EPS), 1 - EPS)
    return math.log(p / (1 - p))


@dataclass
class _Tile:
    n: int = 0
    total: float = 0.0  # sum of gate logits
    last: int = 0  # frame index of the last observation
    fired: int | None = None  # frame it fired (or was debounced) at, this pass
    region: tuple | None = None  # the changed box it fired on (map px)


class TileEvidence:
    """Per-tile gate evidence; `observe` says "fire", "debounced", "repeat", "pending" or "below" for one score.

    fire: the tile's evidence reached the threshold (an event); debounced: it did, next to a tile that fired within
    `hold` frames; repeat: the tile already fired this pass; pending: this score is at or above the threshold but the
    tile has fewer than `min_obs` observations; below: otherwise."""

    def __init__(self, threshold: float, min_obs: int = 1, hold: int = 30, iou: float = 0.2, clip: float = CLIP):
        if min_obs < 1:
            raise ValueError(f"min_obs must be >= 1, got {min_obs}")
        self.threshold, self.min_obs, self.hold, self.iou, self.clip = threshold, min_obs, hold, iou, clip
        self._th = logit(threshold) if threshold > 0 else -math.inf
        self.tiles: dict[tuple, _Tile] = {}

    def count(self, box: tuple) -> int:
        t = self.tiles.get(box)
        return t.n if t is not None else 0

    def order(self, boxes: list[tuple]) -> list[tuple]:
        """Boxes sorted least observed first (stable: ties keep the caller's order, e.g. best covered first)."""
        return sorted(boxes, key=self.count)

    def evidence(self, box: tuple) -> float | None:
        """Mean gate probability of the box's observations this pass (through the mean logit), None if unseen."""
        t = self.tiles.get(box)
        return None if t is None or not t.n else 1 / (1 + math.exp(-t.total / t.n))

    def observe(self, box: tuple, score: float, frame: int, region: tuple | None = None) -> str:
        """One gate score of tile `box` at `frame`; `region`: the changed box inside it (map px; default the tile),
        which debouncing compares with the regions that fired recently."""
        self._expire(frame)
        t = self.tiles.get(box)
        if t is None or frame - t.last > self.hold:  # first sight, or a new pass over it
            t = self.tiles[box] = _Tile()
        t.n, t.total, t.last = t.n + 1, t.total + min(max(logit(score), -self.clip), self.clip), frame
        if t.fired is not None:
            return "repeat"
        if t.n < self.min_obs:
            return "pending" if score >= self.threshold else "below"
        if t.total / t.n < self._th:
            return "below"
        t.fired, t.region = frame, tuple(region or box)
        if any(o.fired is not None and frame - o.fired <= self.hold and self.same(o.region, t.region)
               for b, o in self.tiles.items() if b != box):
            return "debounced"
        return "fire"

    def same(self, a: tuple, b: tuple) -> bool:
        """Two changed regions are the same change when they overlap by IoU >= `iou`."""
        return iou(a, b) >= self.iou

    def _expire(self, frame: int) -> None:
        """Forget tiles unseen for more than `hold` frames (their pass is over)."""
        if len(self.tiles) > 64:
            self.tiles = {b: t for b, t in self.tiles.items() if frame - t.last <= self.hold}
