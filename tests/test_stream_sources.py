"""Frame sources: real MJPG video, PNG folders (corrupt files, --follow), GeoTIFF globs, drop + reopen.

    pytest tests/test_stream_sources.py
"""

from __future__ import annotations

import threading
import time

import cv2
import make_flight
import numpy as np
import pytest

from edgecc.stream.sources import CaptureSource, FileSequenceSource, FrameError, SourceError, open_source


@pytest.fixture(scope="module")
def flight(tmp_path_factory):
    return make_flight.make_flight(tmp_path_factory.mktemp("flight"), n_frames=12, change_at=6)


def test_video_file_reads_every_frame_as_rgb(flight):
    with open_source(str(flight.video)) as src:
        assert isinstance(src, CaptureSource) and not src.live
        frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (176, 176, 3)
    png = cv2.cvtColor(cv2.imread(str(flight.frames_dir / "frame_00000.png")), cv2.COLOR_BGR2RGB)
    assert np.abs(frames[0].image.astype(int) - png).mean() < 6  # RGB order kept; MJPG is lossy


def test_folder_skips_corrupt_frame_and_goes_on(flight, tmp_path):
    for p in sorted(flight.frames_dir.iterdir())[:4]:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "frame_00001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    src = open_source(str(tmp_path))
    assert isinstance(src, FileSequenceSource)
    got, errors = [], 0
    while True:
        try:
            f = src.read()
        except FrameError as e:
            errors += 1
            assert "frame_00001.png" in str(e)
            continue
        if f is None:
            break
        got.append(f.name)
    assert errors == 1 and got == ["frame_00000.png", "frame_00002.png", "frame_00003.png"]


def test_follow_picks_up_new_files_until_stopped(flight, tmp_path):
    stop = threading.Event()
    src = open_source(str(tmp_path), follow=True, stop=stop)
    src.poll_s = 0.02
    names = sorted(flight.frames_dir.iterdir())[:3]

    def writer():
        for p in names:
            time.sleep(0.05)
            tmp = tmp_path / (p.name + ".part")  # written, then renamed: never read half-written
            tmp.write_bytes(p.read_bytes())
            tmp.rename(tmp_path / p.name)
        time.sleep(0.3)
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    got = [f.name for f in src]
    t.join()
    assert got == [p.name for p in names]


def test_follow_retries_a_file_whose_writer_paused_mid_file(flight, tmp_path):
    """Written in place (no rename), half of it, a pause longer than a poll, then the rest: read once complete."""
    stop = threading.Event()
    src = FileSequenceSource(tmp_path, follow=True, poll_s=0.02, stop=stop)
    data = sorted(flight.frames_dir.iterdir())[0].read_bytes()
    target = tmp_path / "frame_0.png"

    def writer():
        with open(target, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(0.3)  # several polls: the half file looks stable and is read (and fails)
            f.write(data[len(data) // 2:])
        time.sleep(0.3)
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    got, bad = [], 0
    while True:
        try:
            f = src.read()
        except FrameError:
            bad += 1
            continue
        if f is None:
            break
        got.append(f.name)
    t.join()
    assert bad == 1 and got == ["frame_0.png"]


class _DroppingCapture:
    """A real cv2.VideoCapture that stops delivering after `fail_after` frames (a stream that drops)."""

    def __init__(self, path, fail_after):
        self.cap, self.left = cv2.VideoCapture(str(path)), fail_after

    def isOpened(self):
        return self.cap.isOpened()

    def read(self):
        if self.left == 0:
            return False, None
        self.left -= 1
        return self.cap.read()

    def release(self):
        self.cap.release()


def test_live_source_reopens_with_backoff_and_counts(flight):
    opened = []

    def opener(target):
        opened.append(target)
        return _DroppingCapture(target, {1: 5, 2: 3}.get(len(opened), 0))  # drops after 5, 3 more, then dead

    src = CaptureSource(str(flight.video), live=True, opener=opener, backoff_s=0.001, max_reopens=1)
    frames = []
    with pytest.raises(SourceError, match="no frame after"):
        while True:
            frames.append(src.read())
    assert len(frames) == 8 and src.reopens >= 2
    assert [f.index for f in frames] == list(range(8))  # indices keep counting across reopens


def test_live_source_that_never_comes_back_fails_clearly(flight):
    class Dead:
        def isOpened(self):
            return False

        def release(self):
            pass

    t = time.perf_counter()
    with pytest.raises(SourceError, match="reopens failed"):
        CaptureSource("rtsp://camera/stream", live=True, opener=lambda _: Dead(), backoff_s=0.001, max_reopens=3)
    assert time.perf_counter() - t < 1.0


def test_missing_source_and_bad_video(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "nope.avi"))
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match="cannot open"):
        open_source(str(bad))


def test_geotiff_glob_keeps_geotransform(tmp_path, flight):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    img = cv2.cvtColor(cv2.imread(str(flight.frames_dir / "frame_00000.png")), cv2.COLOR_BGR2RGB)
    for i in range(2):
        with rasterio.open(tmp_path / f"f{i}.tif", "w", driver="GTiff", width=img.shape[1], height=img.shape[0],
                           count=3, dtype="uint8", crs="EPSG:32615", transform=from_origin(500000 + i, 4e6, 0.5, 0.5)
                           ) as ds:
            ds.write(img.transpose(2, 0, 1))
    frames = list(open_source(str(tmp_path / "*.tif")))
    assert len(frames) == 2 and frames[1].transform[2] == 500001 and frames[1].crs == "EPSG:32615"
    assert np.array_equal(frames[0].image, img)
