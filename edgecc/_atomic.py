"""Atomic outputs: write a temporary file next to the target, then rename it into place.

    with atomic_path("out/changes.geojson") as tmp:   # tmp: out/.changes.geojson.<random>.tmp.geojson
        tmp.write_text(text)                          # success: renamed over the target; error: removed

A failure leaves the old file or nothing, never a partial one. The file gets the usual mode (0666 less the umask,
e.g. 0644), not mkstemp's private 0600.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path


def make_dir(folder: str | os.PathLike, target: str | os.PathLike | None = None) -> None:
    """Create `folder` and its parents; when a file is in the way, a one-line error naming `target` (or `folder`)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (*reversed(folder.parents), folder) if p.exists() and not p.is_dir()), folder)
        raise NotADirectoryError(f"{target or folder}: cannot write there, {blocker} is a file, not a folder") from None


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a new, empty temporary file path next to `path` (same suffix); rename it to `path` on success."""
    path = Path(path)
    make_dir(path.parent, path)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as for open()
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for side in tmp.parent.iterdir():  # GDAL side files (.aux.xml, .ovr)
            if side.name.startswith(tmp.name + "."):
                side.unlink(missing_ok=True)
        raise
