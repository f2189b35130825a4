"""Sidecar telemetry for `edgecc watch`: a CSV or DJI-style SRT beside the video gives each frame a pose prior.

Example:
    >>> tel = Telemetry.open("flight.csv")                # frame,lat,lon[,heading][,altitude]
    >>> rec = tel.get(42)                                 # Record(lat, lon, heading, altitude) or None
    >>> h = tel.prior(42, ref_map, frame_shape=(720, 1280), fov_deg=84)   # 3x3 frame px -> map px, or None

CSV: a header row with `frame` (or `index`), `lat`/`latitude`, `lon`/`longitude`, optional `heading`/`yaw` (degrees
clockwise from north: the direction of the frame's top edge) and `altitude`/`alt`/`rel_alt` (metres above ground).
SRT: one subtitle block per frame (block number = frame + 1) whose text holds `latitude: 52.1` / `longitude: 5.3`
(or `GPS(lon, lat, alt)`), and optionally `rel_alt:` / `altitude:` and `heading:` / `yaw:`.
The prior needs a georeferenced map. The frame's scale comes from the altitude and the camera's horizontal field
of view (`fov_deg`); without them the frame is assumed to have the map's ground resolution.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgeccError

_ALIASES = {"frame": ("frame", "index", "frame_index"), "lat": ("lat", "latitude"), "lon": ("lon", "lng", "longitude"),
            "heading": ("heading", "yaw", "gimbal_yaw"), "altitude": ("altitude", "alt", "rel_alt", "height")}


class TelemetryError(EdgeccError):
    """The telemetry file cannot be read (one line naming it)."""


@dataclass(frozen=True)
class Record:
    lat: float
    lon: float
    heading: float | None = None
    altitude: float | None = None


class TelemetryWarning(UserWarning):
    """Telemetry was usable in part (rows skipped, a column missing)."""


def _clean(rec: Record) -> Record | None:
    """A record with a position on the earth, or None; a non-finite heading or a non-positive or non-finite altitude
    is dropped (no prior from it) rather than turned into a wrong pose."""
    if not (math.isfinite(rec.lat) and math.isfinite(rec.lon) and abs(rec.lat) <= 90 and abs(rec.lon) <= 180):
        return None
    heading = rec.heading if rec.heading is not None and math.isfinite(rec.heading) else None
    altitude = rec.altitude if rec.altitude is not None and 0 < rec.altitude < math.inf else None
    return Record(rec.lat, rec.lon, heading, altitude)


def _num(pattern: str, text: str) -> float | None:
    m = re.search(pattern + r"\s*[:=]?\s*\[?\s*(-?\d+(?:\.\d+)?)", text, re.IGNORECASE)
    return float(m.group(1)) if m else None


class Telemetry:
    """frame index -> Record."""

    def __init__(self, records: dict[int, Record], path: str = ""):
        self.records, self.path = records, path

    @classmethod
    def open(cls, path: str | Path) -> Telemetry:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8-sig", errors="replace")  # -sig: a spreadsheet's byte-order mark
        except OSError as e:
            raise TelemetryError(f"{p}: cannot read telemetry ({e.strerror or e})") from None
        recs = cls._srt(text) if p.suffix.lower() == ".srt" else cls._csv(text, p)
        if not recs:
            raise TelemetryError(f"{p}: no telemetry records (need frame, lat, lon)")
        return cls(recs, str(p))

    @staticmethod
    def _csv(text: str, p: Path) -> dict[int, Record]:
        rows = list(csv.DictReader(text.splitlines()))
        if not rows:
            return {}
        cols = {k.strip().lower(): k for k in rows[0]}
        pick = {f: next((cols[a] for a in al if a in cols), None) for f, al in _ALIASES.items()}
        if pick["lat"] is None or pick["lon"] is None:
            raise TelemetryError(f"{p}: telemetry CSV needs lat and lon columns, has {', '.join(cols)}")
        if pick["frame"] is None:
            warnings.warn(f"{p}: no frame column; row i is taken as frame i (0-based)", TelemetryWarning, stacklevel=3)
        out, bad = {}, 0
        for i, r in enumerate(rows):
            try:
                k = int(float(r[pick["frame"]])) if pick["frame"] else i
                opt = {f: float(r[pick[f]]) for f in ("heading", "altitude") if pick[f] and r[pick[f]]}
                rec = _clean(Record(float(r[pick["lat"]]), float(r[pick["lon"]]), **opt))
            except (TypeError, ValueError, OverflowError):
                rec = None
            if rec is None:
                bad += 1  # a frame without a record gets no prior
            else:
                out[k] = rec
        if bad and out:
            warnings.warn(f"{p}: {bad} of {len(rows)} rows skipped (a missing or non-numeric value, or a position "
                          "off the earth)", TelemetryWarning, stacklevel=3)
        return out

    @staticmethod
    def _srt(text: str) -> dict[int, Record]:
        out = {}
        for block in re.split(r"\n\s*\n", text.replace("\r", "")):
            lines = block.strip().splitlines()
            if len(lines) < 2 or not lines[0].strip().isdigit():
                continue
            body = " ".join(lines[1:])
            lat, lon = _num("latitude", body), _num("longt?itude", body)  # some firmware writes "longtitude"
            alt = _num("rel_alt", body) or _num("altitude", body)
            if lat is None or lon is None:
                m = re.search(r"GPS\s*\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*(?:,\s*(-?[\d.]+))?", body)
                if not m:
                    continue
                lon, lat = float(m.group(1)), float(m.group(2))
                alt = alt if alt is not None else (float(m.group(3)) if m.group(3) else None)
            head = _num("heading", body)
            rec = _clean(Record(lat, lon, head if head is not None else _num("yaw", body), alt))
            if rec is not None:
                out[int(lines[0]) - 1] = rec
        return out

    def get(self, frame: int) -> Record | None:
        return self.records.get(frame)

    def prior(self, frame: int, ref_map, frame_shape: tuple[int, int], fov_deg: float | None = None
              ) -> np.ndarray | None:
        """3x3 frame px -> map px from the record of `frame`, or None (no record, map not georeferenced, outside)."""
        rec = self.get(frame)
        if rec is None or ref_map.transform is None or ref_map.crs is None:
            return None
        from .refmap import from_wgs84

        xy = from_wgs84(rec.lon, rec.lat, ref_map.crs)
        if xy is None:
            return None
        cx, cy = ref_map.map_to_pixel(np.array([xy]))[0]
        fh, fw = frame_shape
        ground = ref_map.ground  # map px -> ground metres (east, north): lon/lat or non-square pixels included
        if ground is None:
            return None
        g = math.sqrt(abs(np.linalg.det(ground)))  # without altitude: the frame at the map's ground resolution
        if fov_deg and rec.altitude:
            g = 2 * rec.altitude * math.tan(math.radians(fov_deg) / 2) / fw  # ground metres per frame pixel
        th = math.radians(rec.heading or 0.0)  # frame up = heading (clockwise from north)
        # frame px step (right, down) -> metres (east, north): right is heading + 90 deg, down is heading + 180
        to_ground = g * np.array([[math.cos(th), -math.sin(th)], [-math.sin(th), -math.cos(th)]])
        lin = np.linalg.solve(ground, to_ground)  # frame px -> map px
        h = np.eye(3)
        h[:2, :2] = lin
        h[:2, 2] = [cx, cy] - lin @ [fw / 2, fh / 2]
        return h
