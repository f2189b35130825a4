"""Atomic outputs: write a temporary file next to the target, fsync it, then rename it into place.

    write_text("out/changes.geojson", text)           # the one way: bytes made in memory, then written here
    write_bytes("out/heat.tif", data)
    with atomic_path("out/x.bin") as tmp:             # for a writer that needs a path (tmp: out/.x.bin.<hex>.tmp.bin)
        tmp.write_bytes(data)                         # success: renamed over the target; error: removed

A failure (disk full, permission denied, a quota, a signal) leaves the old file or nothing, never a partial one, and
raises `OutputError` (an `OSError`) naming the target. Outputs are encoded in memory first and written by Python,
whose writes raise on every error: GDAL and OpenCV writing straight to a file can report success over a short
write (tests/test_outputs_failure.py). The file gets the usual mode (0666 less the umask, e.g. 0644), not mkstemp's
private 0600.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp.*")  # the temporary files atomic_path makes (a killed run's leftovers)


def make_dir(folder: str | os.PathLike, target: str | os.PathLike | None = None) -> None:
    """Create `folder` and its parents; when a file is in the way, a one-line error naming `target` (or `folder`)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (*reversed(folder.parents), folder) if p.exists() and not p.is_dir()), folder)
        raise NotADirectoryError(f"{target or folder}: cannot write there, {blocker} is a file, not a folder") from None
    except OSError as e:  # permission denied, read-only file system
        raise OutputError(f"{target or folder}: cannot create folder {folder} ({e.strerror or e})") from e


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a new, empty temporary file path next to `path` (same suffix); fsync and rename it to `path` on success.

    Raises:
        OutputError: the temporary file could not be created, written or renamed (the target is untouched).
    """
    path = Path(path)
    if not str(path):
        raise OutputError("output path is empty")
    try:
        mode = os.stat(path).st_mode  # follows links: /dev/stdout -> the pipe or file behind it
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        yield from _through(path)  # a pipe or device (/dev/stdout, a FIFO): written through, not renamed over
        return
    if path.is_symlink():  # a link to a file: its target is replaced, the link kept
        path = Path(os.path.realpath(path))
    make_dir(path.parent, path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")  # matches TEMP_NAME
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as for open()
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise OutputError(f"{path}: cannot write ({e.strerror or e}); nothing was written") from e
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it (power loss: old file or new, not empty)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        for side in tmp.parent.iterdir():  # GDAL side files (.aux.xml, .ovr)
            if side.name.startswith(tmp.name + "."):
                side.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(f"{path}: cannot write ({e.strerror or e}); the old file, if any, is kept") from e
        raise


def _through(path: Path):
    """A temporary file whose content is copied into the pipe or device `path` once complete."""
    fd, name = tempfile.mkstemp(suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except OSError as e:
        if isinstance(e, OutputError):
            raise
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
    finally:
        tmp.unlink(missing_ok=True)


def check_outputs(outputs: dict[str, str | os.PathLike | None], inputs=()) -> None:
    """Refuse, before any work, output paths that cannot be right: empty, a folder, the same file as an input or as
    another output, or inside a folder that cannot be made. `outputs` maps an option name to its path (None: unused).

    Raises:
        OutputError: one line naming the option and the path.
    """
    seen: dict[str, str] = {}
    ins = {os.path.realpath(p): p for p in inputs if p is not None}
    for name, out in outputs.items():
        if out is None:
            continue
        if not str(out).strip():
            raise OutputError(f"{name}: the output path is empty")
        p = Path(out)
        if p.is_dir():
            raise OutputError(f"{p}: {name} is a folder; give a file name")
        real = os.path.realpath(p)
        if real in ins:
            raise OutputError(f"{p}: {name} would overwrite the input {ins[real]}")
        if real in seen:
            raise OutputError(f"{p}: given as both {seen[real]} and {name}")
        seen[real] = name
        make_dir(p.parent, p)


def finite(v):
    """A JSON-able value with NaN and infinities (a model output gone wrong) as None: valid JSON for any reader."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [finite(x) for x in v]
    return v


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see the module docstring)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()  # a short write or ENOSPC raises here, inside atomic_path: the temp file is removed


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically (see the module docstring)."""
    write_bytes(path, text.encode(encoding))


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """Write `obj` as JSON (a trailing newline when indented) to `path` atomically."""
    write_text(path, json.dumps(obj, indent=indent) + ("\n" if indent is not None else ""))
