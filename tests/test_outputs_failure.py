"""Outputs under failure: a full disk, a file-size limit or a permission error in the middle of a write leaves the
old file or nothing, never a partial one, and raises one `OutputError` line naming the target.

The real failure comes from RLIMIT_FSIZE in a child process (writes past the limit fail with EFBIG, SIGXFSZ
ignored): GDAL and OpenCV writing straight to a file reported success over such short writes (a truncated heatmap
was renamed into place) until outputs were encoded in memory and written by `edgecc._atomic`. ENOSPC and EACCES are
monkeypatched in-process.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgecc import _atomic
from edgecc.errors import EdgeccError, OutputError

TESTS = Path(__file__).resolve().parent

_CHILD = """
import resource, signal, sys
from pathlib import Path
sys.path[:0] = [{tests!r}, {data!r}]
from conftest import PixelDiffCaptioner
from edgecc.imagery import read_pair
from edgecc.tiling import TileOptions, caption_scene
kind, out, fx, limit = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
with read_pair(fx / "geo_pre.tif", fx / "geo_post.tif") as pair:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        if kind == "manifest":
            from edgecc.bundle import write_manifest
            write_manifest(out, {{"files": [], "padding": "x" * 5000}})
        elif kind == "json":
            from edgecc._atomic import write_json  # what the CLI's --out/--json reports write through
            write_json(out / "report.json", {{"rows": list(range(2000))}})
        else:
            target = {{"geojson": {{"geojson_path": out / "changes.geojson"}},
                      "tif": {{"heatmap_path": out / "heat.tif"}}, "png": {{"heatmap_path": out / "heat.png"}}}}[kind]
            caption_scene(PixelDiffCaptioner(), pair, TileOptions(tile=64, overlap=0), **target)
    except Exception as e:
        print(type(e).__name__, "|", e)
        sys.exit(3)
print("written")
"""

_TARGETS = {"geojson": "changes.geojson", "tif": "heat.tif", "png": "heat.png", "manifest": "manifest.json",
            "json": "report.json"}


def _run_limited(kind: str, out: Path, fixtures: Path, limit: int) -> subprocess.CompletedProcess:
    code = _CHILD.format(tests=str(TESTS), data=str(TESTS / "data"))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), kind, str(out), str(fixtures), str(limit)],
                          capture_output=True, text=True, timeout=300)


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".tmp" in p.name)


@pytest.mark.parametrize("kind", list(_TARGETS))
def test_file_size_limit_mid_write_leaves_no_partial_output(fixtures_dir, tmp_path, kind):
    if kind == "tif":
        pytest.importorskip("rasterio", reason="GeoTIFF heatmap needs rasterio (edgecc[geo])")
    out = tmp_path / "out"
    out.mkdir()
    ok = _run_limited(kind, out, fixtures_dir, 1 << 30)  # no real limit: the output is written
    assert ok.returncode == 0, ok.stderr[-2000:]
    good = (out / _TARGETS[kind]).read_bytes()
    half = len(good) // 2
    assert half > 64
    (out / _TARGETS[kind]).write_bytes(b"old content")
    bad = _run_limited(kind, out, fixtures_dir, half)  # a write past half the output fails (EFBIG)
    assert bad.returncode == 3, (bad.stdout, bad.stderr[-2000:])
    name, msg = bad.stdout.strip().split(" | ", 1)
    assert name == "OutputError" and _TARGETS[kind] in msg and "\n" not in msg
    assert (out / _TARGETS[kind]).read_bytes() == b"old content"  # the old file is kept whole
    assert _leftovers(out) == []  # and no temp file is left behind
    (out / _TARGETS[kind]).unlink()
    assert _run_limited(kind, out, fixtures_dir, half).returncode == 3
    assert not (out / _TARGETS[kind]).exists()  # no old file: nothing at all


class _HalfThenENOSPC:
    """A file whose write() writes half of what it is given, then fails as a full disk does."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_disk_full_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "changes.geojson"
    target.write_text("old")
    monkeypatch.setattr(_atomic, "open", lambda p, mode: _HalfThenENOSPC(open(p, mode)), raising=False)
    with pytest.raises(OutputError, match=r"changes\.geojson: cannot write \(No space left on device\)") as info:
        _atomic.write_text(target, json.dumps({"features": list(range(1000))}))
    assert isinstance(info.value, OSError) and isinstance(info.value, EdgeccError)
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_disk_full_at_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "heat.png"
    target.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_atomic.os, "fsync", full)
    with pytest.raises(OutputError, match="No space left on device"):
        _atomic.write_bytes(target, b"\x89PNG" + b"\0" * 4096)
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_permission_denied_is_one_output_error(tmp_path, monkeypatch):
    real_open = os.open

    def denied(path, flags, mode=0o777, **kw):
        if ".tmp" in str(path) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(_atomic.os, "open", denied)
    with pytest.raises(OutputError, match=r"out\.json: cannot write \(Permission denied\); nothing was written"):
        _atomic.write_text(tmp_path / "out.json", "{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders (permissions are not checked)")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "heat.png").write_bytes(b"old")
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            _atomic.write_bytes(ro / "heat.png", b"new")
        with pytest.raises(OutputError, match="cannot create folder"):
            _atomic.write_bytes(ro / "sub" / "x.json", b"{}")
        assert (ro / "heat.png").read_bytes() == b"old"
    finally:
        ro.chmod(0o755)


def test_outputs_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        _atomic.write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_a_symlinked_output_replaces_its_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.geojson"
    target.write_text("old")
    link = tmp_path / "link.geojson"
    link.symlink_to(target)
    _atomic.write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_named_pipe_output_is_written_through(tmp_path):
    import threading

    fifo = tmp_path / "out.geojson"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    _atomic.write_text(fifo, '{"type": "FeatureCollection"}')
    reader.join(timeout=10)
    assert got == ['{"type": "FeatureCollection"}'] and fifo.is_fifo()


def test_dev_stdout_behind_a_pipe_is_written_through(tmp_path):
    code = "from edgecc._atomic import write_text; write_text('/dev/stdout', 'through\\n')"
    r = subprocess.run(f"{sys.executable} -c \"{code}\" | cat", shell=True, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "through\n", r.stderr
