"""Streaming change monitoring (`edgecc watch`): frame sources, registration, the watch loop, the event log.

Example:
    >>> from edgecc.stream import WatchOptions, watch, format_stats
    >>> stats = watch(edgecc.load(), "flight.avi", "map.tif", "events.jsonl", WatchOptions(every=2))
    >>> print(format_stats(stats))
"""

from .events import ChangeEvent, EventWriter
from .monitor import Histogram, Monitor, WatchOptions, WatchStats, format_stats, load_reference, watch
from .refcache import CachedReferenceEngine
from .refmap import LRU, ReferenceMap
from .register import RegisterOptions, Registrar, Registration, pregate_score
from .sources import CaptureSource, FileSequenceSource, Frame, FrameError, FrameSource, SourceError, open_source
from .telemetry import Telemetry, TelemetryError

__all__ = ["LRU", "CachedReferenceEngine", "CaptureSource", "ChangeEvent", "EventWriter", "FileSequenceSource", "Frame",
           "FrameError", "FrameSource", "Histogram", "Monitor", "ReferenceMap", "Registrar", "RegisterOptions",
           "Registration", "SourceError", "Telemetry", "TelemetryError", "WatchOptions", "WatchStats", "format_stats",
           "load_reference", "open_source", "pregate_score", "watch"]
