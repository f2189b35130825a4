"""The watch loop: live frames -> registration -> pixel pre-gate -> change gate -> caption -> debounced events.

Example:
    >>> cap = edgecc.load()
    >>> stats = watch(cap, "flight.avi", "reference.tif", "events.jsonl", WatchOptions(every=2, deadline_ms=500))
    >>> print(format_stats(stats))          # counters and per-stage latency percentiles

Scheduling: a reader thread pulls frames from the source and keeps only the latest one (latest-frame-wins; a frame
replaced before the model took it is counted in `dropped`), so the loop never falls behind a live source.
For files (not live) the reader instead waits until each frame is taken (`replay`; nothing dropped).
Per frame: a frame older than `deadline_ms` when its turn comes is skipped (`stale`); registration failures are
skipped with their reason. The frame is then cut into the map grid tiles it covers (side: the model's ground
resolution at the map's, `edgecc.sensors.tile_for_gsd`; stride half a tile); up to `tiles_per_frame` of them, the
least observed first, go through a cheap pixel pre-gate (no model call below it) and then the model's change gate in
one batch. The gate score of one real frame is noisy (blur, brightness drift, residual misregistration), and a
drone sees each tile in many frames, so the decision is per tile over the frames that saw it (`TileEvidence`): a
tile makes one event when the mean gate logit of at least `min_obs` observations reaches the threshold; a tile whose
changed box (the mask's cells) overlaps one that fired recently is the same change (`debounced`). Only then does the
decoder run (the caption of that tile); a decoder that says "no change" vetoes the event (`decoder_veto`). Every
processed, registered frame ends in one of: pregate_skip, gate_negative, evidence_pending, debounced, decoder_veto,
already_reported, event_frames. A frame that fails anywhere is logged and skipped (`read_errors`, `process_errors`).

Reference: a map of any size (`ReferenceMap`: GeoTIFF by windows, PNG decoded once), registered to across dates
(`Registrar`: track, telemetry prior or global search, then gradient ECC). With the split encoder a map tile's trunk
tokens are computed once (`CachedReferenceEngine`, an LRU) and a tile costs one trunk pass, the fused kernel and the
fusion graph. A frame that covers no tile well enough (`min_tile_cover`) is paired on its own box, uncached.

Never silent: every `report_every_s` while no event has been written, and at the end of a run that read frames but
registered none or wrote no event, one line on stderr (logger "edgecc.watch") gives the counts by reason.
All deadlines and latencies use time.monotonic (a wall-clock jump changes nothing but the events' `time` stamp).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..geo import counter_clockwise, to_map
from ..sensors import grid_gsd, tile_for_gsd
from .events import ChangeEvent, EventWriter, bbox_polygon, mask_bbox
from .evidence import CLIP, TileEvidence, WatchRule
from .refcache import CachedReferenceEngine
from .refmap import ReferenceMap, to_wgs84
from .register import RegisterOptions, Registrar, pregate_score
from .sources import IMAGE_SUFFIXES, Frame, FrameError, FrameSource, SourceError, open_source

log = logging.getLogger("edgecc.watch")
STAGES = ("read", "register", "pregate", "encode", "decode", "event")


@dataclass(frozen=True)
class WatchOptions:
    """Attributes:
    every: process every N-th source frame (others counted in `skipped_every`).
    deadline_ms: a frame older than this when the loop takes it is skipped (`stale`); events later than this after
        the frame arrived are counted in `deadline_miss`. None: no deadline.
    pregate_threshold: pixel pre-gate score (see `pregate_score`) below which the model is not called.
    gate_threshold: threshold on a tile's evidence (mean gate probability, through the logit, of its observations);
        None: the bundle's watch threshold (manifest "gate" "watch"), else its single-pair threshold.
    min_obs: observations a tile needs before it can fire; None: the bundle's watch rule, else 1.
    tiles_per_frame: map tiles scored per frame (least observed first), in one model batch; None: the bundle's
        watch rule, else 1.
    gsd: the map's metres per pixel; None: from a georeferenced map in a metric CRS, else the model's own.
    mask_threshold: mask cells at or above this make the event's bbox.
    debounce_frames / debounce_iou: a tile whose changed box overlaps (IoU) the changed box of a tile that fired
        within this many processed frames is the same change (counted, no line); a tile unseen for longer starts a
        new pass and may fire again.
    max_frames: stop after this many source frames (None: until the source ends or a signal).
    replay: True: never drop, the reader waits for the loop. False: latest-frame-wins. None (default): False for
        live sources (camera, stream, followed folder), True for files (a file is not live: nothing is gained by
        dropping its frames, and a short change could be lost).
    register: registration settings (method, min_overlap: the fraction of the frame inside the map, ...).
    reference_cache: cache the reference tiles' trunk tokens (split encoder); False re-encodes the reference.
    cache_tiles: LRU capacity in tiles (trunk tokens and map blocks).
    tile: side in map px of the model's map tiles (None: the model input size, or 80% of the first registered
        frame's footprint when that is smaller).
    min_tile_cover: the best tile must be at least this fraction covered by the frame, else the frame's own box.
    report_every_s: seconds between "nothing yet" lines on stderr (0: only at the end).
    telemetry: a sidecar CSV/SRT with per-frame lat/lon/heading/altitude (a prior for registration).
    camera_fov_deg: horizontal field of view, with the telemetry's altitude gives the frame's ground resolution.
    """

    every: int = 1
    deadline_ms: float | None = None
    pregate_threshold: float = 0.8
    gate_threshold: float | None = None
    min_obs: int | None = None
    tiles_per_frame: int | None = None
    gsd: float | None = None
    mask_threshold: float = 0.5
    debounce_frames: int = 30
    debounce_iou: float = 0.2
    max_frames: int | None = None
    replay: bool | None = None
    follow: bool = False
    register: RegisterOptions = RegisterOptions()
    reference_cache: bool = True
    cache_tiles: int = 64
    tile: int | None = None
    min_tile_cover: float = 0.5
    report_every_s: float = 10.0
    telemetry: str | None = None
    camera_fov_deg: float | None = None

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.deadline_ms is not None and not 0 < self.deadline_ms < math.inf:
            raise ValueError(f"deadline_ms must be positive and finite, got {self.deadline_ms}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.camera_fov_deg is not None and not 0 < self.camera_fov_deg < 180:
            raise ValueError(f"camera_fov_deg is a field of view in (0, 180) degrees, got {self.camera_fov_deg}")
        if any(v is not None and v < 1 for v in (self.tiles_per_frame, self.min_obs)):
            raise ValueError(f"tiles_per_frame and min_obs must be >= 1, got {self.tiles_per_frame}, {self.min_obs}")
        if self.gate_threshold is not None and not 0.0 <= self.gate_threshold <= 1.0:
            raise ValueError(f"the change threshold is a probability in [0, 1], got {self.gate_threshold}")
        if self.gsd is not None and not 0 < self.gsd < math.inf:
            raise ValueError(f"gsd is metres per pixel, > 0 and finite, got {self.gsd}")


class Histogram:
    """Latency histogram in log-spaced buckets (0.01 ms .. 100 s, 20 per decade): constant memory for any run."""

    EDGES = 10.0 ** np.linspace(-2, 5, 141)

    def __init__(self):
        self.counts = np.zeros(len(self.EDGES) + 1, np.int64)
        self.n, self.total, self.max = 0, 0.0, 0.0

    def add(self, ms: float) -> None:
        self.counts[int(np.searchsorted(self.EDGES, ms))] += 1
        self.n += 1
        self.total += ms
        self.max = max(self.max, ms)

    def percentile(self, q: float) -> float:
        """Upper edge of the bucket holding the q-th percentile (<= 12% above the true value), capped at max."""
        if not self.n:
            return math.nan
        k = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100 * self.n)))
        return float(min(self.EDGES[min(k, len(self.EDGES) - 1)], self.max))

    def summary(self) -> dict:
        """n, mean, p50, p95, p99, max in ms; None for a stage that never ran (the stats are JSON: no NaN)."""
        if not self.n:
            return {"n": 0, **dict.fromkeys(("mean", "p50", "p95", "p99", "max"))}
        return {"n": self.n, "mean": self.total / self.n, "p50": self.percentile(50), "p95": self.percentile(95),
                "p99": self.percentile(99), "max": self.max}


@dataclass
class WatchStats:
    counters: Counter = field(default_factory=Counter)
    latency: dict = field(default_factory=lambda: {s: Histogram() for s in (*STAGES, "total")})
    wall_s: float = 0.0
    source_error: str | None = None
    rule: dict | None = None  # the watch rule in effect (WatchRule as a dict)

    def as_dict(self) -> dict:
        return {"counters": dict(self.counters), "latency_ms": {k: h.summary() for k, h in self.latency.items()},
                "wall_s": self.wall_s, "input_fps": self.counters["frames_read"] / self.wall_s if self.wall_s else 0,
                "source_error": self.source_error, "rule": self.rule}


def format_stats(stats: WatchStats) -> str:
    d = stats.as_dict()
    lines = [f"watch: {d['wall_s']:.1f} s, input {d['input_fps']:.1f} fps"]
    if d["rule"]:
        lines.append("  rule: " + ", ".join(f"{k} {'whole pass' if v is None else format(v, 'g')}"
                                            for k, v in d["rule"].items()))
    lines += [f"  {k:<28}{v}" for k, v in sorted(d["counters"].items())]
    lines.append(f"  {'stage':<10}{'n':>7}{'mean':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  (ms)")
    for k, s in d["latency_ms"].items():
        if s["n"]:
            lines.append(f"  {k:<10}{s['n']:>7}" + "".join(f"{s[q]:>9.1f}" for q in ("mean", "p50", "p95", "p99",
                                                                                       "max")))
    if stats.source_error:
        lines.append(f"  source error: {stats.source_error}")
    return "\n".join(lines)


class _LatestSlot:
    """One-frame mailbox. put() replaces an unread frame (returns True: a drop) or, with block=True, waits for it."""

    def __init__(self):
        self._cv = threading.Condition()
        self._item: Frame | None = None
        self.closed = False

    def put(self, item: Frame, block: bool = False, stop: threading.Event | None = None) -> bool:
        with self._cv:
            while block and self._item is not None and not (stop and stop.is_set()):
                self._cv.wait(0.05)
            dropped = self._item is not None
            self._item = item
            self._cv.notify_all()
            return dropped

    def get(self, timeout: float) -> Frame | None:
        with self._cv:
            if self._item is None and not self.closed:
                self._cv.wait(timeout)
            item, self._item = self._item, None
            self._cv.notify_all()
            return item

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()


def load_reference(path: str | Path, cache_blocks: int = 64) -> ReferenceMap:
    """Reference image (GeoTIFF, PNG, JPEG; any size) -> a ReferenceMap read by windows."""
    return ReferenceMap.open(path, cache_blocks)


def _models(captioner, cache: bool, capacity: int):
    """-> (scorer, decoder, cache): the gate alone on a batch of tiles (decoder never runs), the caption of one fired
    tile (gate open), both on the engine behind the reference cache when the encoder is split.

    Anything that is not a dataclass Captioner (a test double with `caption_batch`) is used as it is for both."""
    if not dataclasses.is_dataclass(captioner):
        return captioner, captioner, None
    engine = None
    if cache and getattr(captioner.engine, "can_encode_tokens", False):
        engine = CachedReferenceEngine(captioner.engine, capacity)
        captioner = dataclasses.replace(captioner, engine=engine)
    gated = dataclasses.replace(captioner.options, gate=True)  # the scorer relies on the gate to skip the decoder
    return (dataclasses.replace(captioner, threshold=2.0, options=gated),
            dataclasses.replace(captioner, threshold=0.0, options=gated), engine)


def watch_rule(captioner, options: WatchOptions) -> WatchRule:
    """The options' threshold, min_obs and tiles_per_frame, else the bundle's watch rule (manifest "gate" "watch",
    chosen on validation flights), else the captioner's single-pair threshold and one observation."""
    rule, base = {}, getattr(captioner, "gate_threshold", 0.5)
    if dataclasses.is_dataclass(captioner):
        rule = captioner.bundle.manifest.get("gate", {}).get("watch", {})
        if captioner.threshold is not None:  # load(threshold=...) overrides the bundle
            rule = {k: v for k, v in rule.items() if k != "threshold"}
    threshold = options.gate_threshold if options.gate_threshold is not None else float(rule.get("threshold", base))
    min_obs = int(options.min_obs if options.min_obs is not None else rule.get("min_obs", 1))
    # a bundle without a fitted rule: one observation of the best covered tile a frame, the single-pair threshold
    tiles = int(options.tiles_per_frame if options.tiles_per_frame is not None else rule.get("tiles_per_frame", 1))
    # without a fitted rule: the latest observation decides, as for one pair
    window = rule.get("window", None) if rule else 1
    return WatchRule(threshold, min_obs, float(rule.get("clip", CLIP)), float(rule.get("cover_power", 0.0)), tiles,
                     None if window is None else max(int(window), min_obs))


class Monitor:
    """One watch session: a captioner, a reference map and options; `run(source, writer)` processes a stream."""

    def __init__(self, captioner, reference: ReferenceMap | np.ndarray, options: WatchOptions = WatchOptions(),
                 reference_transform: tuple | None = None, reference_crs: str | None = None):
        self.captioner = captioner
        self.options = options
        self.size = int(captioner.input_size)
        self.tile = int(options.tile or self.size)
        if isinstance(reference, np.ndarray):
            reference = ReferenceMap.from_array(reference, reference_transform, reference_crs)
        self.map = reference
        self.registrar = Registrar(reference, options.register)
        self.scorer, self.decoder, self.cache = _models(captioner, options.reference_cache, options.cache_tiles)
        # one-off crops (off the map grid) bypass the cache
        self._uncached = (self.scorer, self.decoder) if self.cache is None else tuple(
            replace(m, engine=self.cache.engine) for m in (self.scorer, self.decoder))
        self.rule = watch_rule(captioner, options)
        self.evidence = TileEvidence(self.rule, options.debounce_frames, options.debounce_iou)
        self.gsd = options.gsd or grid_gsd(reference.transform, reference.crs)
        self.ref_transform, self.ref_crs = reference.transform, reference.crs
        self.telemetry = None
        if options.telemetry:
            from .telemetry import Telemetry

            self.telemetry = Telemetry.open(options.telemetry)
            if reference.transform is None or reference.crs is None:
                log.warning("%s: the reference is not georeferenced: the telemetry %s cannot be used",
                            reference.name, options.telemetry)
                self.telemetry = None
        self.stats = WatchStats(rule=dataclasses.asdict(self.rule))
        self._last_shape: tuple | None = None
        self._grid: int | None = None  # map px per side of the model's map tiles
        self._next_report = time.monotonic() + options.report_every_s if options.report_every_s > 0 else math.inf
        if self.registrar.reference_texture < options.register.min_texture:
            log.warning("%s: the reference has almost no texture (%.2f grey levels/px: water, cloud?); frames will "
                        "hardly register to it", reference.name, self.registrar.reference_texture)

    # ------------------------------------------------------------------------------------------------ reader
    def _reader(self, source: FrameSource, slot: _LatestSlot, stop: threading.Event) -> None:
        c, o = self.stats.counters, self.options
        block = o.replay if o.replay is not None else not getattr(source, "live", True)
        try:
            while not stop.is_set():
                if o.max_frames is not None and c["frames_read"] + c["read_errors"] >= o.max_frames:
                    break
                t = time.monotonic()
                try:
                    frame = source.read()
                except FrameError as e:
                    c["read_errors"] += 1
                    log.warning("skipping frame: %s", e)
                    continue
                if frame is None:
                    break
                self.stats.latency["read"].add((time.monotonic() - t) * 1e3)
                c["frames_read"] += 1
                if frame.index % o.every:
                    c["skipped_every"] += 1
                    continue
                if slot.put(frame, block=block, stop=stop):
                    c["dropped"] += 1
        except SourceError as e:
            self.stats.source_error = str(e)
            log.error("source failed: %s", e)
        except Exception as e:  # noqa: BLE001 - the reader must always close the slot
            self.stats.source_error = f"{type(e).__name__}: {e}"
            log.exception("reader crashed")
        finally:
            c["reopens"] = getattr(source, "reopens", 0)
            slot.close()

    # ------------------------------------------------------------------------------------------------ one frame
    def _register(self, frame: Frame):
        c = self.stats.counters
        img = frame.image
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 16:
            c["frame_unusable"] += 1
            return None
        if self._last_shape is None and self.telemetry is None:
            fh, fw = img.shape[:2]  # without telemetry a frame is taken at the map's resolution
            if self.map.width * self.map.height < self.options.register.min_overlap * fh * fw:
                log.warning("the map (%dx%d) is smaller than %.0f%% of a frame (%dx%d): a frame at the map's "
                            "resolution cannot lie that much inside it (a map of the wider area, or --min-overlap)",
                            self.map.width, self.map.height, 100 * self.options.register.min_overlap, fw, fh)
        if self._last_shape is not None and img.shape != self._last_shape:
            c["frame_size_changed"] += 1
            if c["frame_size_changed"] == 1:  # said once; later ones are counted (frame_size_changed)
                log.warning("frame %d: size %dx%d differs from the previous frames' %dx%d (further changes are "
                            "counted, not logged)", frame.index, img.shape[1], img.shape[0], self._last_shape[1],
                            self._last_shape[0])
        self._last_shape = img.shape
        prior = heading = None
        if self.telemetry is not None:
            prior = self.telemetry.prior(frame.index, self.map, img.shape[:2], self.options.camera_fov_deg)
            rec = self.telemetry.get(frame.index)
            heading = rec.heading if rec is not None else None
            if rec is not None and prior is None:
                c["telemetry_unusable"] += 1
        reg = self.registrar.register(img, prior, heading)
        if not reg.ok:
            c[f"register_skip_{reg.reason}"] += 1
            return None
        c["registered"] += 1
        c[f"register_{reg.coarse}"] += 1
        if reg.reason == "prior_only":
            c["registered_on_telemetry_only"] += 1
        if reg.reason == "prior_disagrees":
            c["telemetry_disagrees"] += 1
            if c["telemetry_disagrees"] == 1:
                log.warning("frame %d: the telemetry puts it away from where the image registers; image pose kept "
                            "(further ones are counted as telemetry_disagrees, not logged)", frame.index)
        return reg

    def _tiles(self, reg, ev: TileEvidence) -> list[tuple[tuple[int, int, int, int], bool, float]]:
        """-> [(box, on_grid, fraction covered)] to score: up to `tiles_per_frame` map grid tiles the frame covers at
        least `min_tile_cover` of, least observed first, then best covered (one a frame: the best covered); else the
        frame's own box (a one-off crop: it bypasses the reference cache, where it would only evict grid tiles)."""
        if self._grid is None:  # fixed by the first frame: the model's ground cover, or less for small views
            short = min(reg.frame_shape) * float(np.sqrt(abs(np.linalg.det(reg.homography[:2, :2]))))
            side = self.options.tile or tile_for_gsd(self.size, self.gsd)
            self._grid = side if self.options.tile or short >= side else max(64, int(short * 0.8) // 16 * 16)
        cover = dict(self.registrar.tiles(reg, self._grid, self.options.min_tile_cover))
        if not cover:
            self.stats.counters["uncached_pairs"] += 1
            return [(reg.bbox, False, 1.0)]
        clock = self.stats.counters["frames_processed"]
        boxes = list(cover) if self.rule.tiles_per_frame == 1 else ev.order(list(cover), clock)  # one: the best
        return [(b, True, cover[b]) for b in boxes[: self.rule.tiles_per_frame]]

    def _key(self, box: tuple, on_grid: bool) -> tuple:
        """The evidence key of a scored box: a grid tile is its own; a frame's own box (off the grid, moving a little
        every frame) is snapped to the grid so that the frames seeing one place add up."""
        if on_grid:
            return box
        step = max(1, self._grid // 2)
        return tuple(int(round(v / step)) * step for v in box)

    def process(self, frame: Frame, source_name: str, writer: EventWriter | None) -> list[ChangeEvent]:
        """Run one frame through the pipeline; returns the events written (most often none, at most one a tile)."""
        c, o, lat = self.stats.counters, self.options, self.stats.latency
        ev = self.evidence  # one evidence for the whole frame (a caller may swap in a fresh one between frames)
        t0 = time.monotonic()
        if o.deadline_ms is not None and (t0 - frame.t_arrival) * 1e3 > o.deadline_ms:
            c["stale"] += 1
            return []
        c["frames_processed"] += 1
        reg = self._register(frame)
        t1 = time.monotonic()
        lat["register"].add((t1 - t0) * 1e3)
        if reg is None:
            return []
        tiles = []  # (box, on_grid, pre, post, cover): pre/post uint8 [S,S,3], the map and the registered frame in box
        for box, on_grid, cover in self._tiles(reg, ev):
            pre, post = self.registrar.pair(frame.image, reg, self.size, box)
            if pregate_score(pre, post) >= o.pregate_threshold:
                tiles.append((box, on_grid, pre, post, cover))
        t2 = time.monotonic()
        lat["pregate"].add((t2 - t1) * 1e3)
        if not tiles:
            c["pregate_skip"] += 1
            return []
        scorer = self.scorer if tiles[0][1] else self._uncached[0]
        gates = scorer.caption_batch(np.stack([t[2] for t in tiles]), np.stack([t[3] for t in tiles]))
        t3 = time.monotonic()
        enc_ms = gates[0].timings_ms.get("encode", (t3 - t2) * 1e3)
        lat["encode"].add(enc_ms)
        c["model_calls"] += 1
        c["tiles_scored"] += len(tiles)
        clock = c["frames_processed"]  # the evidence's clock: frames processed (source indices jump with --every)
        # each tile's changed box (the mask's cells): what debouncing compares with the changes that fired recently
        regions = [mask_bbox(g.mask, t[0], o.mask_threshold) if g.mask is not None else t[0]
                   for t, g in zip(tiles, gates)]
        keys = [self._key(t[0], t[1]) for t in tiles]
        verdicts = [ev.observe(k, g.change_score, clock, r, t[4])
                    for k, t, g, r in zip(keys, tiles, gates, regions)]
        c["tiles_debounced"] += verdicts.count("debounced")
        fired = [j for j, v in enumerate(verdicts) if v == "fire"]
        if not fired:
            c["evidence_pending" if "pending" in verdicts else "debounced" if "debounced" in verdicts
              else "already_reported" if "repeat" in verdicts else "gate_negative"] += 1
            return []
        events, write_s = [], 0.0
        for n, j in enumerate(fired):
            box, on_grid, pre, post, _ = tiles[j]
            t4 = time.monotonic()
            try:
                cap = (self.decoder if on_grid else self._uncached[1]).caption_batch(pre[None], post[None])[0]
                dec_ms = cap.timings_ms.get("decode", (time.monotonic() - t4) * 1e3)
                if not cap.changed:
                    c["tiles_decoder_veto"] += 1
                    ev.unfire(keys[j])
                    continue
                lat["decode"].add(dec_ms)
                t5 = time.monotonic()
                events.append(self._event(frame, reg, source_name, writer, box, regions[j], cap.text,
                                          ev.evidence(keys[j]), ev.count(keys[j]), (pre, post),
                                          {"queue": round((t0 - frame.t_arrival) * 1e3, 2),
                                           "register": round((t1 - t0) * 1e3, 2),
                                           "pregate": round((t2 - t1) * 1e3, 2), "encode": round(enc_ms, 2),
                                           "decode": round(dec_ms, 2)}))
                write_s += time.monotonic() - t5
            except Exception:
                for f in fired[n:]:
                    ev.unfire(keys[f])  # not reported (this tile and the frame's later fires): they may fire again
                raise
        c["event_frames" if events else "decoder_veto"] += 1
        t5 = time.monotonic()
        if events:
            lat["event"].add(write_s * 1e3)
            total = (t5 - frame.t_arrival) * 1e3
            lat["total"].add(total)
            if o.deadline_ms is not None and total > o.deadline_ms:
                c["deadline_miss"] += 1
        return events

    def _event(self, frame, reg, source_name, writer, box, bbox, text, score, observations, pair, latency
               ) -> ChangeEvent:
        polygon, crs = self._polygon(bbox, reg.homography, frame)
        wgs84 = None
        if polygon is not None and crs is not None:
            ll = to_wgs84(np.array(polygon, np.float64), crs)
            wgs84 = None if ll is None else np.round(ll, 7).tolist()
        ev = ChangeEvent(
            time=datetime.now(timezone.utc).isoformat(timespec="milliseconds"), frame=frame.index,
            source=source_name, frame_name=frame.name, caption=text, change_score=round(score, 4),
            bbox=bbox, polygon=polygon, crs=crs, polygon_wgs84=wgs84, tile=tuple(int(v) for v in box),
            observations=observations, latency_ms=latency)
        if writer is not None:
            total = (time.monotonic() - frame.t_arrival) * 1e3
            ev = writer.write(replace(ev, latency_ms={**latency, "total": round(total, 2)}), *pair)
        self.stats.counters["events"] += 1
        return ev

    def _polygon(self, bbox, homography, frame: Frame):
        if self.ref_transform is not None:
            return bbox_polygon(bbox, self.ref_transform), self.ref_crs
        if frame.transform is not None:  # reference pixels -> frame pixels (inverse registration) -> map
            import cv2

            x0, y0, x1, y1 = bbox
            ring = np.float32([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]])
            px = cv2.perspectiveTransform(ring, np.linalg.inv(homography))[0]
            pts = counter_clockwise([list(to_map(frame.transform, x, y)) for x, y in px])  # as every other ring
            return pts + pts[:1], frame.crs
        return None, None

    # ------------------------------------------------------------------------------------------------ never silent
    def summary_line(self) -> str | None:
        """One line with the counts by reason when frames were read but none registered or no event was written;
        None when there is nothing to say (events were written, or no frame was read yet)."""
        c = self.stats.counters
        if c["events"] or not (c["frames_read"] or c["read_errors"]):
            return None
        skips = {k: v for k, v in c.items() if v and (k.startswith("register_skip_") or k in (
            "read_errors", "stale", "dropped", "pregate_skip", "gate_negative", "evidence_pending", "debounced",
            "already_reported", "decoder_veto", "process_errors",
            "frame_unusable", "frame_size_changed", "telemetry_disagrees", "telemetry_unusable"))}
        ranked = sorted(skips.items(), key=lambda kv: -kv[1])
        why = ", ".join(f"{k.removeprefix('register_skip_')} {v}" for k, v in ranked)
        what = "none registered" if not c["registered"] else f"{c['registered']} registered, no event"
        hint = ""
        if not c["registered"] and ranked and ranked[0][0] in ("register_skip_low_correlation",
                                                                "register_skip_not_found"):
            hint = ("; the frames share too little with the map to align on (rebuilt since? another season?): "
                    + ("--trust-telemetry registers them on the telemetry" if self.telemetry is not None else
                       "a position prior registers them (--telemetry with --trust-telemetry)"))
        return f"watch: {c['frames_read']} frames read, {what} ({why or 'no reason counted'}){hint}"

    def _report(self) -> None:
        if time.monotonic() < self._next_report:
            return
        self._next_report = time.monotonic() + self.options.report_every_s
        line = self.summary_line()
        if line:
            log.warning("%s so far", line)

    # ------------------------------------------------------------------------------------------------ the loop
    def run(self, source: FrameSource, writer: EventWriter | None, stop: threading.Event | None = None
            ) -> WatchStats:
        """Process `source` until it ends, `max_frames`, or `stop` is set; returns the stats."""
        stop = stop or threading.Event()
        slot = _LatestSlot()
        t_start = time.monotonic()
        reader = threading.Thread(target=self._reader, args=(source, slot, stop), name="edgecc-watch-reader",
                                  daemon=True)
        reader.start()
        try:
            while not stop.is_set():
                self._report()
                frame = slot.get(timeout=0.1)
                if frame is None:
                    if slot.closed:
                        break
                    continue
                try:
                    self.process(frame, source.uri, writer)
                except Exception as e:  # noqa: BLE001 - one bad frame never stops the watch
                    self.stats.counters["process_errors"] += 1
                    log.warning("frame %d failed: %s: %s", frame.index, type(e).__name__, e)
        finally:
            stop.set()
            reader.join(timeout=2.0)
            self.stats.wall_s = time.monotonic() - t_start
            if self.cache is not None:
                self.stats.counters["reference_cache_hits"] = self.cache.cache.hits
                self.stats.counters["reference_cache_misses"] = self.cache.cache.misses
            line = self.summary_line()
            c = self.stats.counters
            if line:
                log.warning("%s", line)
            elif not (c["frames_read"] or c["read_errors"] or self.stats.source_error):
                log.warning("watch: no frames read from %s (an empty folder, no file of a known image type (%s), or a "
                            "source that gave nothing)", source.uri or "the source", ", ".join(IMAGE_SUFFIXES))
        return self.stats


def watch(captioner, source: str | FrameSource, reference: str | Path | np.ndarray | ReferenceMap,
          events: str | Path | None, options: WatchOptions = WatchOptions(), snapshots: str | Path | None = None,
          stop: threading.Event | None = None, handle_signals: bool = True) -> WatchStats:
    """Watch `source` for changes against `reference`, appending events to the JSONL file `events`.

    Args:
        captioner: an `edgecc.Captioner` (anything with input_size and caption_batch).
        source: URI for `open_source`, or an open FrameSource.
        reference: a map of any size: path (a GeoTIFF keeps its geotransform: events get map and WGS84 polygons),
            a ReferenceMap, or uint8 [H,W,3] RGB.
        handle_signals: in the main thread, SIGINT/SIGTERM stop the watch cleanly (handlers restored after): the
            frame in progress finishes, its event line is complete, the stats are returned.
    """
    stop = stop or threading.Event()
    previous = {}  # from the start: a signal while the map loads stops the run once it can, with its stats
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    ref = None
    try:
        ref = reference if isinstance(reference, ReferenceMap | np.ndarray) else load_reference(
            reference, options.cache_tiles)
        monitor = Monitor(captioner, ref, options)
        src = source if isinstance(source, FrameSource) else open_source(source, follow=options.follow, stop=stop)
        writer = None
        try:
            writer = EventWriter(events, snapshots) if events is not None else None
            return monitor.run(src, writer, stop)
        finally:
            if writer is not None:
                writer.close()
            src.close()
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
        if isinstance(ref, ReferenceMap) and ref is not reference:
            ref.close()
