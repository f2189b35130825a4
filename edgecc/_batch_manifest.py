"""Batch manifests: CSV or JSON Lines, one item a line, checked whole before any work starts.

    items = read_manifest("archive.csv")         # -> [Item]; a bad row raises ManifestError naming the row

Forms (paths relative to the manifest's folder; URIs such as /vsicurl/... or s3://... are passed as they are):

    CSV, pairs:      id,pre,post[,pre_date,post_date]
    CSV, sequences:  id,date,image                    (one row per dated image; the rows of one id are its series)
    JSON Lines:      {"id": "a", "pre": "a0.tif", "post": "a1.tif"}           (optional "pre_date", "post_date")
                     {"id": "b", "images": [{"date": "2009-08-18", "path": "b0.tif"}, ...]}   ("path" strings too)

A sequence is ordered by date (images without a date keep the manifest order; a date is read from a YYYYMMDD
in the file name when none is given). Every problem is one line `MANIFEST:ROW: problem`; `ManifestError.problems`
lists all of them (the message is the first).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import EdgeccError
from .imagery import is_uri

__all__ = ["Image", "Item", "ManifestError", "read_manifest"]

_DATE_IN_NAME = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{2})(\d{2})(?!\d)")  # 20090818 in m_..._20090818.tif


_ROW = re.compile(r":(\d+):")


class ManifestError(EdgeccError):
    """A manifest that cannot be run: every bad row is one line in `problems`; nothing was started."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        super().__init__(self.problems[0] + more)


@dataclass(frozen=True)
class Image:
    path: str  # local path (absolute) or a URI GDAL reads
    date: str | None = None


@dataclass(frozen=True)
class Item:
    """One unit of work: a pair (2 images) or a dated sequence (>= 2 images, a caption per consecutive pair).
    row: the manifest line it came from (1-based; a CSV sequence: its first row)."""

    id: str
    kind: str  # "pair" | "sequence"
    images: tuple[Image, ...]
    row: int

    @property
    def pairs(self) -> list[tuple[Image, Image]]:
        return list(zip(self.images[:-1], self.images[1:]))


def read_manifest(path: str | os.PathLike, check_paths: bool = True) -> list[Item]:
    """Parse and check a manifest; raise ManifestError listing every bad row (missing column or value, duplicate
    id, unreadable local path, a sequence of one image, bad JSON)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError([f"{path}: no such manifest file"])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError([f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})"]) from None
    problems: list[str] = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        raw = _read_jsonl(path, text, problems)
    else:
        raw = _read_csv(path, text, problems)
    if not raw and not problems:
        raise ManifestError([f"{path}: no items (an empty manifest)"])
    base = path.parent
    items, seen = [], {}
    for row, iid, kind, images in raw:
        where = f"{path}:{row}"
        if iid in seen:
            problems.append(f"{where}: duplicate id {iid!r} (first on row {seen[iid]})")
            continue
        seen[iid] = row
        if len(images) < 2:
            problems.append(f"{where}: sequence {iid!r} has {len(images)} image; a sequence needs at least 2")
            continue
        resolved = []
        for img_path, date in images:
            p = img_path if is_uri(img_path) else str((base / img_path).resolve())
            if check_paths and not is_uri(img_path):
                why = _unreadable(Path(p))
                if why:
                    problems.append(f"{where}: {iid!r}: {img_path}: {why}")
            when = date or _date_from_name(img_path)
            if when and _iso_date(when) is None:
                problems.append(f"{where}: {iid!r}: {img_path}: date {when!r} is not a date (YYYY-MM-DD or YYYYMMDD)")
            resolved.append(Image(p, _iso_date(when) if when else None))
        if kind == "sequence" and all(im.date for im in resolved):
            resolved.sort(key=lambda im: im.date)  # stable: equal dates keep the manifest order
        items.append(Item(iid, kind, tuple(resolved), row))
    if problems:  # in row order, every bad row once per problem
        raise ManifestError(sorted(problems, key=lambda p: int(m.group(1)) if (m := _ROW.match(p[len(str(path)):]))
                                   else 0))
    return items


def _unreadable(p: Path) -> str | None:
    if not p.exists():
        return "no such file"
    if p.is_dir():
        return "is a directory, not an image file"
    if not os.access(p, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def _date_from_name(path: str) -> str | None:
    m = _DATE_IN_NAME.search(Path(path).name)
    when = f"{m.group(1)}-{m.group(2)}-{m.group(3)}" if m else None
    return when if when and _iso_date(when) else None  # 20201399 in a name is not a date


def _iso_date(text: str) -> str | None:
    """'2015-9-26', '2015/09/26', '20150926' -> '2015-09-26' ('2021-06-01T08:00:00Z' keeps its time); '2019' and
    '2019-5' -> '2019', '2019-05' (these sort in time); None if not a date."""
    part = re.fullmatch(r"\s*(\d{4})(?:[-/.](\d{1,2}))?\s*", text)
    if part:
        year, month = part.groups()
        if month is None:
            return year
        return f"{year}-{int(month):02d}" if 1 <= int(month) <= 12 else None
    m = re.fullmatch(r"\s*(\d{4})[-/.]?(\d{1,2})[-/.]?(\d{1,2})([T ].*)?\s*", text)
    if not m or (len(m.group(2)) + len(m.group(3)) < 4 and not re.search(r"\d{4}[-/.]", text)):
        return None  # 2015926: which digits are the month?
    try:
        day = datetime.date(*map(int, m.groups()[:3])).isoformat()
    except ValueError:
        return None
    return day + ("T" + m.group(4)[1:].strip() if m.group(4) else "")  # a time of day is kept: same-day images order


def _clean(v) -> str:
    return "" if v is None else str(v).strip()


def _read_csv(path: Path, text: str, problems: list[str]) -> list:
    reader = csv.reader(io.StringIO(text, newline=""))  # records end at \n or \r\n only (not U+2028), quotes kept
    lines = [(reader.line_num, r) for r in reader]
    lines = [(n, r) for n, r in lines if any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    if not lines:
        return []
    head_row, header = lines[0]
    cols = [c.strip().lower() for c in header]
    pair_form, seq_form = {"id", "pre", "post"} <= set(cols), {"id", "date", "image"} <= set(cols)
    if not (pair_form or seq_form):
        need = {"id", "pre", "post"} if {"pre", "post"} & set(cols) or "image" not in cols else {"id", "date", "image"}
        missing = ", ".join(sorted(need - set(cols)))
        problems.append(f"{path}:{head_row}: missing column {missing} (header {','.join(cols)}; a manifest is "
                        "id,pre,post for pairs or id,date,image for sequences)")
        return []
    out, series = [], {}
    for row, values in lines[1:]:
        rec = {c: _clean(values[i]) if i < len(values) else "" for i, c in enumerate(cols)}
        if len(values) > len(cols) and any(v.strip() for v in values[len(cols):]):
            problems.append(f"{path}:{row}: {len(values)} values for {len(cols)} columns")
            continue
        need = ("id", "pre", "post") if pair_form else ("id", "image")
        empty = [c for c in need if not rec.get(c)]
        if empty:
            problems.append(f"{path}:{row}: missing value for column {', '.join(empty)}")
            continue
        if pair_form:
            images = [(rec["pre"], rec.get("pre_date")), (rec["post"], rec.get("post_date"))]
            out.append((row, rec["id"], "pair", images))
        elif rec["id"] in series:
            series[rec["id"]][3].append((rec["image"], rec.get("date")))
        else:
            series[rec["id"]] = (row, rec["id"], "sequence", [(rec["image"], rec.get("date"))])
    return out + list(series.values())


def _read_jsonl(path: Path, text: str, problems: list[str]) -> list:
    out = []
    for row, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside a JSON string
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{row}: not valid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(rec, dict):
            problems.append(f"{path}:{row}: a line must be a JSON object, got {type(rec).__name__}")
            continue
        iid = _clean(rec.get("id"))
        if not iid:
            problems.append(f"{path}:{row}: missing column id")
            continue
        if "images" in rec:
            imgs = rec["images"]
            if not isinstance(imgs, list):
                problems.append(f"{path}:{row}: 'images' must be a list of paths or {{date, path}} objects")
                continue
            parsed = []
            for im in imgs:
                p, d = (im, None) if isinstance(im, str) else (_clean(im.get("path")), _clean(im.get("date")) or None) \
                    if isinstance(im, dict) else ("", None)
                if not p:
                    problems.append(f"{path}:{row}: {iid!r}: an image without a path ({json.dumps(im)[:60]})")
                    break
                parsed.append((p, d))
            else:
                out.append((row, iid, "sequence", parsed))
            continue
        missing = [c for c in ("pre", "post") if not _clean(rec.get(c))]
        if missing:
            problems.append(f"{path}:{row}: missing column {', '.join(missing)} (a line is {{id, pre, post}} or "
                            "{id, images})")
            continue
        out.append((row, iid, "pair", [(_clean(rec["pre"]), _clean(rec.get("pre_date")) or None),
                                       (_clean(rec["post"]), _clean(rec.get("post_date")) or None)]))
    return out
