"""The watch loop: live frames -> registration -> pixel pre-gate -> change gate -> caption -> debounced events.

Example:
    >>> cap = edgecc.load()
    >>> stats = watch(cap, "flight.avi", "reference.tif", "events.jsonl", WatchOptions(every=2, deadline_ms=500))
    >>> print(format_stats(stats))          # counters and per-stage latency percentiles

Scheduling: a reader thread pulls frames from the source and keeps only the latest one (latest-frame-wins; a frame
replaced before the model took it is counted in `dropped`), so the loop never falls behind a live source.
For files (not live) the reader instead waits until each frame is taken (`replay`; nothing dropped).
Per frame: a frame older than `deadline_ms` when its turn comes is skipped (`stale`); registration failures are
skipped with their reason; the reference crop and the registered frame go through a cheap pixel pre-gate
(`pregate_skip`: no model call), then the model's change gate, and the decoder only on change. An event whose
changed region overlaps a recent event's region (IoU >= `debounce_iou`, within `debounce_frames`) is not repeated
(`debounced`). A frame that fails anywhere is logged and skipped (`read_errors`, `process_errors`).

Reference caching: the bundle's encoder takes (pre, post) together, so the encoder cannot run on the reference once.
What is cached: the reference pixels, its features and its grid; per frame only a crop + resize of it is made, and
the pixel pre-gate keeps unchanged frames off the encoder. A split encoder graph (trunk per image) would allow true
reference-feature caching.
"""

from __future__ import annotations

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

from .events import ChangeEvent, EventWriter, bbox_polygon, iou, mask_bbox
from .register import RegisterOptions, Registrar, pregate_score
from .sources import Frame, FrameError, FrameSource, SourceError, open_source

log = logging.getLogger("edgecc.watch")
STAGES = ("read", "register", "pregate", "encode", "decode", "event")


@dataclass(frozen=True)
class WatchOptions:
    """Attributes:
    every: process every N-th source frame (others counted in `skipped_every`).
    deadline_ms: a frame older than this when the loop takes it is skipped (`stale`); events later than this after
        the frame arrived are counted in `deadline_miss`. None: no deadline.
    pregate_threshold: pixel pre-gate score (see `pregate_score`) below which the model is not called.
    gate_threshold: model change-gate threshold; None uses the bundle's.
    mask_threshold: mask cells at or above this make the event's bbox.
    debounce_frames / debounce_iou: an event overlapping an event region seen within this many frames is repeated
        only as a counter, not as a line.
    max_frames: stop after this many source frames (None: until the source ends or a signal).
    replay: True: never drop, the reader waits for the loop. False: latest-frame-wins. None (default): False for
        live sources (camera, stream, followed folder), True for files (a file is not live: nothing is gained by
        dropping its frames, and a short change could be lost).
    register: feature matching settings.
    """

    every: int = 1
    deadline_ms: float | None = None
    pregate_threshold: float = 0.8
    gate_threshold: float | None = None
    mask_threshold: float = 0.5
    debounce_frames: int = 30
    debounce_iou: float = 0.2
    max_frames: int | None = None
    replay: bool | None = None
    follow: bool = False
    register: RegisterOptions = RegisterOptions()

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.deadline_ms is not None and self.deadline_ms <= 0:
            raise ValueError(f"deadline_ms must be positive, got {self.deadline_ms}")


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

    def as_dict(self) -> dict:
        return {"counters": dict(self.counters), "latency_ms": {k: h.summary() for k, h in self.latency.items()},
                "wall_s": self.wall_s, "input_fps": self.counters["frames_read"] / self.wall_s if self.wall_s else 0,
                "source_error": self.source_error}


def format_stats(stats: WatchStats) -> str:
    d = stats.as_dict()
    lines = [f"watch: {d['wall_s']:.1f} s, input {d['input_fps']:.1f} fps"]
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


@dataclass
class _Region:
    bbox: tuple[int, int, int, int]
    last_frame: int


def load_reference(path: str | Path) -> tuple[np.ndarray, tuple | None, str | None]:
    """Reference image -> (uint8 [H,W,3] RGB, geotransform or None, CRS or None)."""
    from ..imagery import open_raster, read_image

    raster = open_raster(path)
    return read_image(path), (raster.transform if raster.georeferenced else None), raster.crs


class Monitor:
    """One watch session: a captioner, a reference and options; `run(source, writer)` processes a stream."""

    def __init__(self, captioner, reference: np.ndarray, options: WatchOptions = WatchOptions(),
                 reference_transform: tuple | None = None, reference_crs: str | None = None):
        self.captioner = captioner
        self.options = options
        self.size = int(captioner.input_size)
        self.registrar = Registrar(reference, options.register)  # reference features computed once
        self.ref_transform, self.ref_crs = reference_transform, reference_crs
        self.stats = WatchStats()
        self._regions: list[_Region] = []

    # ------------------------------------------------------------------------------------------------ reader
    def _reader(self, source: FrameSource, slot: _LatestSlot, stop: threading.Event) -> None:
        c, o = self.stats.counters, self.options
        block = o.replay if o.replay is not None else not getattr(source, "live", True)
        try:
            while not stop.is_set():
                if o.max_frames is not None and c["frames_read"] + c["read_errors"] >= o.max_frames:
                    break
                t = time.perf_counter()
                try:
                    frame = source.read()
                except FrameError as e:
                    c["read_errors"] += 1
                    log.warning("skipping frame: %s", e)
                    continue
                if frame is None:
                    break
                self.stats.latency["read"].add((time.perf_counter() - t) * 1e3)
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

    # ------------------------------------------------------------------------------------------------ model
    def _caption(self, pre: np.ndarray, post: np.ndarray):
        cap, thr = self.captioner, self.options.gate_threshold
        if thr is None:
            return cap.caption_batch(pre[None], post[None])[0]
        from ..decoding import decode

        dec = replace(cap.options, max_len=min(cap.options.max_len, cap.bundle.manifest["decoder"]["max_len"]))
        return decode(cap.engine, cap.vocab, pre[None], post[None], dec, thr)[0]

    # ------------------------------------------------------------------------------------------------ one frame
    def process(self, frame: Frame, source_name: str, writer: EventWriter | None) -> ChangeEvent | None:
        """Run one frame through the pipeline; returns the event written, or None."""
        c, o, lat = self.stats.counters, self.options, self.stats.latency
        t0 = time.perf_counter()
        if o.deadline_ms is not None and (t0 - frame.t_arrival) * 1e3 > o.deadline_ms:
            c["stale"] += 1
            return None
        c["frames_processed"] += 1
        reg = self.registrar.register(frame.image)
        t1 = time.perf_counter()
        lat["register"].add((t1 - t0) * 1e3)
        if not reg.ok:
            c[f"register_skip_{reg.reason}"] += 1
            return None
        pre, post = self.registrar.pair(frame.image, reg, self.size)  # uint8 [S,S,3] x2 on the reference grid
        score = pregate_score(pre, post)
        t2 = time.perf_counter()
        lat["pregate"].add((t2 - t1) * 1e3)
        if score < o.pregate_threshold:
            c["pregate_skip"] += 1
            return None
        cap = self._caption(pre, post)
        t3 = time.perf_counter()
        enc_ms = cap.timings_ms.get("encode", (t3 - t2) * 1e3)
        dec_ms = cap.timings_ms.get("decode", 0.0)
        lat["encode"].add(enc_ms)
        c["model_calls"] += 1
        if not cap.changed:
            c["gate_negative"] += 1
            return None
        lat["decode"].add(dec_ms)
        bbox = mask_bbox(cap.mask, reg.bbox, o.mask_threshold) if cap.mask is not None else reg.bbox
        # debounce: the same region seen recently is not a new event; seeing it again keeps it alive
        self._regions = [r for r in self._regions if frame.index - r.last_frame <= o.debounce_frames]
        for r in self._regions:
            if iou(r.bbox, bbox) >= o.debounce_iou:
                r.last_frame = frame.index
                c["debounced"] += 1
                return None
        self._regions.append(_Region(bbox, frame.index))
        polygon, crs = self._polygon(bbox, reg.homography, frame)
        ev = ChangeEvent(
            time=datetime.now(timezone.utc).isoformat(timespec="milliseconds"), frame=frame.index,
            source=source_name, frame_name=frame.name, caption=cap.text, change_score=round(cap.change_score, 4),
            bbox=bbox, polygon=polygon, crs=crs,
            latency_ms={"queue": round((t0 - frame.t_arrival) * 1e3, 2), "register": round((t1 - t0) * 1e3, 2),
                        "pregate": round((t2 - t1) * 1e3, 2), "encode": round(enc_ms, 2), "decode": round(dec_ms, 2)})
        if writer is not None:
            total = (time.perf_counter() - frame.t_arrival) * 1e3
            ev = writer.write(replace(ev, latency_ms={**ev.latency_ms, "total": round(total, 2)}), pre, post)
        t4 = time.perf_counter()
        lat["event"].add((t4 - t3) * 1e3)
        total = (t4 - frame.t_arrival) * 1e3
        lat["total"].add(total)
        if o.deadline_ms is not None and total > o.deadline_ms:
            c["deadline_miss"] += 1
        c["events"] += 1
        return ev

    def _polygon(self, bbox, homography, frame: Frame):
        if self.ref_transform is not None:
            return bbox_polygon(bbox, self.ref_transform), self.ref_crs
        if frame.transform is not None:  # reference pixels -> frame pixels (inverse registration) -> map
            import cv2

            x0, y0, x1, y1 = bbox
            ring = np.float32([[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]])
            px = cv2.perspectiveTransform(ring, np.linalg.inv(homography))[0]
            a, b, c, d, e, f = frame.transform
            return [[float(a * x + b * y + c), float(d * x + e * y + f)] for x, y in px], frame.crs
        return None, None

    # ------------------------------------------------------------------------------------------------ the loop
    def run(self, source: FrameSource, writer: EventWriter | None, stop: threading.Event | None = None
            ) -> WatchStats:
        """Process `source` until it ends, `max_frames`, or `stop` is set; returns the stats."""
        stop = stop or threading.Event()
        slot = _LatestSlot()
        t_start = time.perf_counter()
        reader = threading.Thread(target=self._reader, args=(source, slot, stop), name="edgecc-watch-reader",
                                  daemon=True)
        reader.start()
        try:
            while not stop.is_set():
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
            self.stats.wall_s = time.perf_counter() - t_start
        return self.stats


def watch(captioner, source: str | FrameSource, reference: str | Path | np.ndarray, events: str | Path | None,
          options: WatchOptions = WatchOptions(), snapshots: str | Path | None = None,
          stop: threading.Event | None = None, handle_signals: bool = True) -> WatchStats:
    """Watch `source` for changes against `reference`, appending events to the JSONL file `events`.

    Args:
        captioner: an `edgecc.Captioner` (anything with input_size and caption_batch).
        source: URI for `open_source`, or an open FrameSource.
        reference: image path (GeoTIFF keeps its geotransform: events get map polygons) or uint8 [H,W,3] RGB.
        handle_signals: in the main thread, SIGINT/SIGTERM stop the watch cleanly (handlers restored after).
    """
    stop = stop or threading.Event()
    if isinstance(reference, np.ndarray):
        ref, transform, crs = reference, None, None
    else:
        ref, transform, crs = load_reference(reference)
    monitor = Monitor(captioner, ref, options, transform, crs)
    src = source if isinstance(source, FrameSource) else open_source(source, follow=options.follow, stop=stop)
    previous = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    writer = EventWriter(events, snapshots) if events is not None else None
    try:
        return monitor.run(src, writer, stop)
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
        if writer is not None:
            writer.close()
        src.close()
