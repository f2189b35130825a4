"""Change events: the JSONL log (one line per event, flushed per event) and optional atomic snapshot PNGs.

Example:
    >>> with EventWriter("events.jsonl", snapshots="snaps/") as w:
    ...     w.write(event, pre=pre_tile, post=post_tile)   # appends one JSON line; writes snaps/000042.png atomically

Each line: {"time": ISO-8601 UTC, "frame": index, "source", "frame_name", "caption", "change_score",
"bbox": [x0, y0, x1, y1] in reference pixels, "polygon": [[x, y], ...] in map coordinates or null, "crs",
"polygon_wgs84": [[lon, lat], ...] or null,
"latency_ms": {"read", "register", "pregate", "encode", "decode", "total"}, "snapshot": path or null}.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import finite, make_dir, write_bytes
from ..geo import pixel_ring


@dataclass(frozen=True)
class ChangeEvent:
    time: str
    frame: int
    source: str
    frame_name: str
    caption: str
    change_score: float  # the tile's evidence: mean gate probability (through the logit) of its observations
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 in reference pixels: the changed cells of the model's mask
    polygon: list | None = None  # [[x, y], ...] map coordinates (closed ring) when georeferenced
    crs: str | None = None
    polygon_wgs84: list | None = None  # the same ring as [[lon, lat], ...] (EPSG:4326) when the CRS is known
    latency_ms: dict = field(default_factory=dict)
    snapshot: str | None = None
    tile: tuple[int, int, int, int] | None = None  # the reference box the caption describes (the model's input)
    observations: int | None = None  # frames whose gate scores made the evidence


def mask_bbox(mask: np.ndarray, crop: tuple[int, int, int, int], threshold: float = 0.5) -> tuple[int, int, int, int]:
    """Changed cells of a model mask -> their bounding box in reference pixels.

    Args:
        mask: float32 [G,G] per-cell change probability over the model input.
        crop: (x0, y0, x1, y1), the reference box the model input was cut from.
        threshold: cells >= threshold are changed; when none is, cells >= half the mask maximum are used.
    """
    m = np.asarray(mask, np.float32)
    on = m >= threshold
    if not on.any():
        on = m >= 0.5 * float(m.max()) if m.max() > 0 else np.ones_like(on)
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    g_h, g_w = m.shape
    x0, y0, x1, y1 = crop
    sx, sy = (x1 - x0) / g_w, (y1 - y0) / g_h
    return (int(x0 + cols[0] * sx), int(y0 + rows[0] * sy), int(np.ceil(x0 + (cols[-1] + 1) * sx)),
            int(np.ceil(y0 + (rows[-1] + 1) * sy)))


def bbox_polygon(bbox: tuple[int, int, int, int], transform) -> list[list[float]]:
    """Pixel bbox -> closed ring of map coordinates through a GDAL-order affine (a, b, c, d, e, f)."""
    return [list(p) for p in pixel_ring(transform, bbox)]


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def write_png_atomic(path: str | Path, rgb: np.ndarray) -> None:
    """uint8 [H,W,3] RGB -> PNG at `path`, written to a temporary file in the same folder and renamed."""
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes(path, buf.tobytes())


def _drop_torn_tail(path: Path) -> None:
    """An event log whose last line is incomplete (a run killed mid-write, a full disk) is cut back to its last whole
    line, with a warning, so that the next event starts a line of its own."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return  # a pipe or device (/dev/stdout): nothing to repair
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(max(0, size - 65536))
            tail = f.read()
            if tail.endswith(b"\n"):
                return
            cut = tail.rfind(b"\n")
            try:
                json.loads(tail[cut + 1:])
                f.write(b"\n")  # a whole event that only lacks its newline: kept
                return
            except ValueError:
                pass
            if cut < 0 and size > len(tail):  # one line longer than 64 KiB: not an event this writes; end it
                f.write(b"\n")
                return
            keep = size - len(tail) + cut + 1  # cut -1 (one torn line, the whole file): 0
            f.truncate(keep)
    except OSError:  # missing, or unreadable: the append below says so
        return
    if keep < size:
        warnings.warn(f"{path}: its last line was incomplete (a run stopped mid-write?); removed its {size - keep} "
                      "bytes", stacklevel=3)


class EventWriter:
    """Appends events to a JSONL file, one flushed line each; optional snapshots (pre | post side by side)."""

    def __init__(self, path: str | Path, snapshots: str | Path | None = None, fsync: bool = False):
        self.path = Path(path)
        make_dir(self.path.parent, self.path)
        self.snapshots = Path(snapshots) if snapshots else None
        if self.snapshots:
            make_dir(self.snapshots)
        self.fsync = fsync
        self.count = 0
        _drop_torn_tail(self.path)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the whole stream

    def write(self, event: ChangeEvent, pre: np.ndarray | None = None, post: np.ndarray | None = None) -> ChangeEvent:
        if self.snapshots is not None and pre is not None and post is not None:
            x0, y0 = (event.tile or event.bbox)[:2]
            snap = self.snapshots / f"{event.frame:06d}_{x0}_{y0}.png"  # two tiles of one frame: two files
            n = 1
            while snap.exists():  # never over an earlier run's snapshot, which its event line still names
                snap, n = self.snapshots / f"{event.frame:06d}_{x0}_{y0}_{n}.png", n + 1
            write_png_atomic(snap, np.hstack([pre, np.zeros((pre.shape[0], 4, 3), np.uint8), post]))
            event = ChangeEvent(**{**asdict(event), "snapshot": str(snap)})
        self._f.write(json.dumps(finite(asdict(event)), separators=(",", ":"), allow_nan=False) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())
        self.count += 1
        return event

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
