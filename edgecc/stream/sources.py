"""Frame sources for `edgecc watch`: one URI -> a stream of uint8 RGB frames, reopened with backoff when it drops.

Example:
    >>> src = open_source("flight.avi")              # or "frames/" (--follow), "0" (camera), "rtsp://...", "*.tif"
    >>> with src:
    ...     frame = src.read()                       # Frame(index, image uint8 [H,W,3] RGB, t_arrival) or None at end

URIs: a video file (anything OpenCV reads), a folder of images (PNG/JPEG/TIFF, name order; `follow=True` waits for
new files), a glob pattern (a GeoTIFF sequence: the frames keep their geotransform), a camera index ("0"), or an
rtsp:// / http(s):// stream. Live sources (camera, network) that fail to deliver a frame are reopened with
exponential backoff, each reopen counted; a file source ends at end of file. An unreadable frame raises
`FrameError` and the source moves on to the next one.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EdgeccError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_LIVE_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class FrameError(EdgeccError):
    """One frame could not be read (corrupt file, decode failure); the source itself is still usable."""


class SourceError(EdgeccError):
    """The source cannot be opened, or a live source stayed down past its reopen budget."""


@dataclass(frozen=True)
class Frame:
    """One frame as it arrived.

    Attributes:
        index: position in the source (0-based, counts frames that failed to read too).
        image: uint8 [H,W,3] RGB.
        t_arrival: time.monotonic() when the frame was read.
        name: file name or URI + index, for the event log.
        transform / crs: GDAL-order geotransform and CRS when the frame is georeferenced, else None.
    """

    index: int
    image: np.ndarray = field(repr=False)
    t_arrival: float
    name: str = ""
    transform: tuple[float, ...] | None = None
    crs: str | None = None


class FrameSource:
    """Base class: `read()` -> Frame, None at the end, or raises FrameError for one bad frame."""

    uri: str = ""
    reopens: int = 0
    live: bool = True  # frames keep coming whether or not they are read (camera, stream, followed folder)

    def read(self) -> Frame | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while (f := self.read()) is not None:
            yield f


def _bgr_to_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
        return np.ascontiguousarray(img)
    return np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) -> RGB


class CaptureSource(FrameSource):
    """cv2.VideoCapture over a file, a camera index or a network stream.

    Args:
        uri: path, camera index as int, or URL.
        live: reopen on failure (cameras, streams); False: a failed read is the end (files).
        max_reopens: give up (SourceError) after this many consecutive failed reopens.
        backoff_s: first wait before a reopen; doubles up to `backoff_max_s`.
        opener: builds the capture (default cv2.VideoCapture); tests pass one that drops mid-stream.
        stop: event that interrupts the backoff sleep.
    """

    def __init__(self, uri: str | int, live: bool = False, max_reopens: int = 10, backoff_s: float = 0.2,
                 backoff_max_s: float = 5.0, opener: Callable | None = None, stop: threading.Event | None = None):
        import cv2

        self.uri = str(uri)
        self._target = uri
        self.live = live
        self.max_reopens, self.backoff_s, self.backoff_max_s = max_reopens, backoff_s, backoff_max_s
        self._opener = opener or cv2.VideoCapture
        self._stop = stop or threading.Event()
        self.reopens = 0
        self._index = 0
        self._cap = self._opener(self._target)
        if not self._cap.isOpened():
            if not live:
                raise SourceError(f"{self.uri}: cannot open as video (not a video file, or codec missing)")
            self._reopen()

    def _reopen(self) -> None:
        wait = self.backoff_s
        for _ in range(self.max_reopens):
            if self._stop.wait(wait):
                raise SourceError(f"{self.uri}: stopped while reopening")
            self._cap.release()
            self._cap = self._opener(self._target)
            self.reopens += 1
            if self._cap.isOpened():
                return
            wait = min(wait * 2, self.backoff_max_s)
        raise SourceError(f"{self.uri}: source down, {self.max_reopens} reopens failed")

    def read(self) -> Frame | None:
        for _ in range(self.max_reopens + 1):
            ok, img = self._cap.read()
            if ok and img is not None:
                i, self._index = self._index, self._index + 1
                return Frame(i, _bgr_to_rgb(img), time.monotonic(), f"{self.uri}#{i}")
            if not self.live:
                return None
            self._reopen()  # live source dropped: wait, reopen, read again
        raise SourceError(f"{self.uri}: no frame after {self.max_reopens} reopens")

    def close(self) -> None:
        self._cap.release()


class FileSequenceSource(FrameSource):
    """Image files in name order: a folder (optionally followed for new files) or a glob pattern.

    Files whose name starts with "." or ends in .tmp / .part are ignored (writers should write those, then rename).
    In follow mode a file is read only once its size and modification time have stayed the same over one poll, and a
    file that does not decode is tried again once it changes (a writer that paused mid-file).
    """

    def __init__(self, folder: str | Path | None = None, pattern: str | None = None, follow: bool = False,
                 poll_s: float = 0.1, stop: threading.Event | None = None):
        if folder is None and pattern is None:
            raise ValueError("give a folder or a glob pattern")
        self.uri = str(folder if folder is not None else pattern)
        self._folder = Path(folder) if folder is not None else None
        self._pattern = pattern
        self.follow, self.poll_s = follow, poll_s
        self.live = follow
        self._stop = stop or threading.Event()
        self._seen: set[str] = set()
        self._pending: list[Path] = []
        self._sizes: dict[str, tuple[int, int] | None] = {}  # name -> (size, mtime) at the last poll
        self._failed: dict[str, tuple[int, int] | None] = {}  # name -> (size, mtime) when it did not decode
        self._index = 0
        if self._folder is not None and not self._folder.is_dir():
            raise SourceError(f"{self._folder}: not a folder")

    def _scan(self) -> list[Path]:
        if self._folder is not None:
            names = [p for p in self._folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            names = [Path(p) for p in glob.glob(self._pattern)]
        return sorted(p for p in names if not p.name.startswith(".") and p.name not in self._seen
                      and (p.name not in self._failed or _stamp(p) != self._failed[p.name]))

    def _next_path(self) -> Path | None:
        while True:
            if self._pending:
                return self._pending.pop(0)
            new = self._scan()
            if self.follow:  # only files whose size is stable since the last poll
                stable = []
                for p in new:
                    stamp = _stamp(p)
                    if stamp is not None and self._sizes.get(p.name) == stamp and stamp[0] > 0:
                        stable.append(p)
                    self._sizes[p.name] = stamp
                new = stable
            if new:
                self._pending = new
                continue
            if not self.follow or self._stop.wait(self.poll_s):
                return None

    def read(self) -> Frame | None:
        p = self._next_path()
        if p is None:
            return None
        self._seen.add(p.name)
        self._sizes.pop(p.name, None)
        i, self._index = self._index, self._index + 1
        try:
            img, transform, crs = _read_file(p)
        except Exception as e:  # noqa: BLE001 - any decode failure is one bad frame, not a dead source
            if self.follow:  # tried again if it changes: its writer may have paused mid-file
                self._seen.discard(p.name)
                self._failed[p.name] = _stamp(p)
            raise FrameError(f"{p}: frame {i} unreadable ({e})") from None
        self._failed.pop(p.name, None)
        return Frame(i, img, time.monotonic(), p.name, transform, crs)


def _stamp(p: Path) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, or None when it cannot be seen."""
    try:
        st = p.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _read_file(p: Path) -> tuple[np.ndarray, tuple | None, str | None]:
    """One image file -> (uint8 [H,W,3] RGB, geotransform or None, crs or None)."""
    if p.suffix.lower() in (".tif", ".tiff"):
        from ..imagery import open_raster, read_image

        raster = open_raster(p)
        return read_image(p), (raster.transform if raster.georeferenced else None), raster.crs
    import cv2

    from ..imagery import check_decodable, check_png

    check_decodable(p)  # the header may claim gigabytes (a 400-byte PNG can): refused before decoding
    data = np.fromfile(p, np.uint8)
    check_png(p, data)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise FrameError("not a decodable image")
    return _bgr_to_rgb(img), None, None


def open_source(uri: str | int, follow: bool = False, stop: threading.Event | None = None, **capture_options
                ) -> FrameSource:
    """URI -> FrameSource (see the module docstring for the kinds). `capture_options` go to CaptureSource."""
    s = str(uri)
    if isinstance(uri, int) or s.isdigit():
        return CaptureSource(int(s), live=True, stop=stop, **capture_options)
    if s.lower().startswith(_LIVE_PREFIXES):
        return CaptureSource(s, live=True, stop=stop, **capture_options)
    if any(c in s for c in "*?["):
        return FileSequenceSource(pattern=s, follow=follow, stop=stop)
    p = Path(s)
    if p.is_dir():
        return FileSequenceSource(folder=p, follow=follow, stop=stop)
    if not p.exists():
        raise SourceError(f"{s}: no such file, folder, camera or stream")
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return FileSequenceSource(pattern=glob.escape(os.fspath(p)), stop=stop)  # one image = a one-frame sequence
    return CaptureSource(s, live=False, stop=stop, **capture_options)
