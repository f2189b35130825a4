"""Caption an archive: a manifest of pairs and dated series in, a result folder out; resumable, on one machine or Ray.

Example:
    >>> from edgecc.batch import BatchOptions, run_batch
    >>> res = run_batch("archive.csv", "results/", BatchOptions(workers=2, geojson=True))
    >>> res.failed, res.ran, res.skipped                    # a rerun skips what is finished
    >>> run_batch("archive.csv", "results/", BatchOptions(engine="ray"))           # local Ray; ray_address joins one

    $ edgecc batch archive.csv --out results/ [--ray [ADDRESS]] [--limit N] [--dry-run] [--geojson] [--heatmap]

The result folder:
    items/<id>.json     one per item: every pair's caption, score, tiles (with outlines) as `edgecc caption --json`
                        gives them, plus inputs, dates, and for a sequence a timeline; failed items carry the error
    geojson/, heatmaps/ per pair, when asked
    changes.gpkg        every changed tile of every finished item (id, dates, caption, score, geometry); layer
                        `changes` in the items' common CRS (EPSG:4326 when they differ), `changes_pixel` for pairs
                        without georeferencing (pixel coordinates)
    summary.json        the run: counts, failures with their errors, engine, timings

An item is finished when items/<id>.json holds status "ok" and the key of its inputs: the sha256 of every input
file's content, the dates, and the run settings that change results (bundle hash, precision, decoding, threshold,
tiling, outputs). A rerun skips finished items; failed ones and ones whose inputs or settings changed run again.
Every file is written to a temporary name and renamed, so a killed run loses only the items in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._atomic import TEMP_NAME, make_dir, write_json
from ._batch_manifest import Item, ManifestError, is_uri, read_manifest
from .errors import EdgeccError

__all__ = ["BatchOptions", "BatchResult", "ManifestError", "run_batch", "caption_item", "read_manifest",
           "load_results", "item_name"]

ITEM_FORMAT = 1  # bump when the item JSON changes meaning: every item reruns
_STATE = ".edgecc-batch"  # hash cache and lock, inside the result folder


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch.

    Attributes:
        model, precision, beam, threshold: as for `edgecc.load` / `edgecc caption` (None: the bundle's choice).
        engine: "local" (a process pool; one worker runs in this process), "ray".
        ray_address: None or "local" (a local Ray cluster), "auto", "ray://head:10001".
        workers: parallel workers (local default: the cores, at most the items; Ray: the cluster's CPUs / threads).
        threads: ONNX Runtime intra-op threads per worker (default: cores // workers, at most the bundle's
            recommendation; workers x threads <= cores).
        limit: only the first N items of the manifest.
        dry_run: check the manifest, hash the inputs and say what would run; write nothing.
        geojson, heatmap, geojson_crs: per-pair outputs (as `edgecc caption --geojson/--heatmap`).
        overlap, tile_batch, gsd: tiling of large scenes (as `edgecc caption`).
        bands, resize: how every item's images are read (as `edgecc caption --bands / --resize`).
        progress: a progress bar with ETA on stderr (when it is a terminal).
    """

    model: str | None = None
    precision: str | None = None
    beam: int | None = None
    threshold: float | None = None
    engine: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    threads: int | None = None
    limit: int | None = None
    dry_run: bool = False
    geojson: bool = False
    heatmap: bool = False
    geojson_crs: str = "image"
    overlap: int = 32
    tile_batch: int = 8
    gsd: float | None = None
    bands: tuple[int, ...] | None = None
    resize: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        for name in ("workers", "threads", "limit"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")


@dataclass
class BatchResult:
    """What a run did. items: in the manifest (after --limit); skipped: already finished; ran: captioned now;
    failed: items whose latest record is a failure (this run or before); pairs: image pairs captioned now."""

    out: str
    items: int
    skipped: int
    ran: int
    ok: int
    failed: int
    changed: int
    pairs: int
    elapsed_s: float
    engine: str
    workers: int
    threads: int
    dry_run: bool = False
    failures: list = field(default_factory=list)  # [{"id", "row", "error"}]
    gpkg: str | None = None

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "pairs_per_s": round(self.pairs_per_s, 3)}


def item_name(item_id: str) -> str:
    """A file-name-safe stem for an id ('a/b c' -> 'a_b_c-<hash>'; plain ids stay as they are)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", item_id)[:80].lstrip(".") or "item"
    return safe if safe == item_id else f"{safe}-{hashlib.sha256(item_id.encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------------------------------------- the run


def run_batch(manifest: str | os.PathLike, out: str | os.PathLike, options: BatchOptions = BatchOptions()
              ) -> BatchResult:
    """Caption every unfinished item of `manifest` into `out` (see the module docstring).

    Raises:
        ManifestError: the manifest cannot be run (every bad row in `.problems`); nothing was written.
    """
    from ._batch_engines import ENGINES
    from .cpu import cpu

    t0 = time.perf_counter()
    items = read_manifest(manifest)
    if options.limit:
        items = items[: options.limit]
    out = Path(out)
    settings, cfg = _settings(options)
    with _lock(out, options.dry_run):
        if not options.dry_run:
            _drop_stale_temps(out)  # a killed run's half-written files: only this run writes here now
        hashes = _hash_inputs(items, out, write=not options.dry_run)
        keys = {it.id: _item_key(it, hashes, settings) for it in items}
        todo = [it for it in items if not _finished(out, it, keys[it.id])]
        engine = "ray" if options.engine == "ray" else "local"
        n_cores = cpu().cores
        if engine == "ray":
            workers, threads = options.workers or 0, options.threads or 1
        else:
            workers = options.workers or max(1, min(n_cores, len(todo)))
            rec = settings["encoder_threads"]
            threads = options.threads or max(1, min(n_cores // workers, rec or n_cores))
        res = BatchResult(out=str(out), items=len(items), skipped=len(items) - len(todo), ran=0, ok=0, failed=0,
                          changed=0, pairs=0, elapsed_s=0.0, engine=engine, workers=workers, threads=threads,
                          dry_run=options.dry_run)
        if options.dry_run:
            res.pairs = sum(len(it.pairs) for it in todo)
            res.elapsed_s = time.perf_counter() - t0
            return res
        jobs = [_job(it, keys[it.id], out, options) for it in todo]
        bar = _Progress(len(jobs), sum(len(it.pairs) for it in todo), options.progress)
        t_run = time.perf_counter()

        arrivals: list[tuple[float, int]] = []  # (seconds since the run started, pairs so far): start-up vs steady

        def on_result(job: dict, rec: dict) -> None:
            write_json(out / "items" / f"{job['name']}.json", rec, indent=1)
            res.ran += 1
            res.pairs += len(rec.get("steps", []))
            arrivals.append((time.perf_counter() - t_run, res.pairs))
            bar.advance(rec)

        run = ENGINES["ray" if engine == "ray" else ("inline" if workers == 1 else "local")]
        if jobs:
            with bar:
                run(jobs, cfg, workers or None, threads, on_result, address=options.ray_address)
        run_s = time.perf_counter() - t_run
        records = [_read_item(out, it) for it in items]
        for it, rec in zip(items, records):
            if rec is None or rec.get("key") != keys[it.id]:
                continue
            if rec["status"] == "ok":
                res.ok += 1
                res.changed += bool(rec.get("changed"))
            else:
                res.failed += 1
                res.failures.append({"id": it.id, "row": it.row, "error": rec.get("error")})
        from ._batch_outputs import write_changes

        ids = {it.id for it in items}  # a --limit rerun keeps the other finished items in the merged file
        kept = [r for r in load_results(out) if r.get("id") not in ids]
        res.gpkg = str(write_changes(out / "changes.gpkg",
                                     [r for r in records if r and r["status"] == "ok"] + kept))
        res.elapsed_s = round(time.perf_counter() - t0, 3)
        summary = {**res.as_dict(), "manifest": str(Path(manifest).resolve()), "run_s": round(run_s, 3),
                   "pairs_per_s_run": round(res.pairs / run_s, 3) if run_s > 0 else 0.0, **_steady(arrivals),
                   "settings": settings,
                   "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(out / "summary.json", summary, indent=1)
        return res


def _steady(arrivals: list[tuple[float, int]]) -> dict:
    """Start-up (to the first finished item) and the rate after it, from (seconds, pairs so far) per item."""
    if not arrivals:
        return {"first_result_s": None, "steady_pairs_per_s": None}
    (t0, p0), (t1, p1) = arrivals[0], arrivals[-1]
    return {"first_result_s": round(t0, 3), "steady_pairs_per_s": round((p1 - p0) / (t1 - t0), 3) if t1 > t0 else None}


def _settings(o: BatchOptions) -> tuple[dict, dict]:
    """-> (every setting that changes results, for item keys; what a worker needs to load the model).

    The model is loaded here once, as a worker will load it: a bad bundle or precision is one error before any
    work, and the key holds what runs (the precision and decoding `edgecc.load` resolves), not what was asked."""
    from ._batch_engines import load_captioner
    from .bundle import resolve

    cfg = {"model": str(resolve(o.model)), "precision": o.precision, "beam": o.beam, "threshold": o.threshold,
           "overlap": o.overlap, "tile_batch": o.tile_batch, "gsd": o.gsd, "geojson_crs": o.geojson_crs,
           "bands": o.bands, "resize": o.resize}
    cap = load_captioner(cfg, 1)
    cfg["precision"] = cap.precision  # every worker runs the variant resolved here
    b = cap.bundle
    settings = {
        "format": ITEM_FORMAT, "bundle_sha256": b.files_sha256, "model": b.name, "precision": cap.precision,
        "decoding": asdict(getattr(cap, "decoding", cap.options)), "threshold": cap.gate_threshold,
        "overlap": o.overlap, "tile_batch": o.tile_batch, "gsd": o.gsd, "geojson": o.geojson,
        "geojson_crs": o.geojson_crs, "bands": o.bands, "resize": o.resize,
        "heatmap": o.heatmap, "encoder_threads": b.manifest.get("runtime", {}).get("encoder_threads"),
    }
    return settings, cfg


def _job(it: Item, key: str, out: Path, o: BatchOptions) -> dict:
    name = item_name(it.id)
    n = len(it.pairs)
    stems = [name if n == 1 else f"{name}~{i + 1}" for i in range(n)]  # "~" is never in a name: no id collides
    return {"id": it.id, "row": it.row, "kind": it.kind, "key": key, "name": name,
            "images": [(im.path, im.date) for im in it.images],
            "geojson": [str(out / "geojson" / f"{s}.geojson") for s in stems] if o.geojson else None,
            "heatmap": [str(out / "heatmaps" / f"{s}.tif") for s in stems] if o.heatmap else None}


# ---------------------------------------------------------------------------------------------- one item


def caption_item(captioner, job: dict, cfg: dict) -> dict:
    """Caption one item (every consecutive pair) with a loaded captioner -> its record. Never raises for bad
    input: the record says `"status": "failed"` with the error."""
    from .imagery import ReadOptions
    from .tiling import TileOptions

    t0 = time.perf_counter()
    rec = _record_head(job)
    rec.update(model=captioner.bundle.name, precision=captioner.precision)
    images = job["images"]
    steps = []
    try:
        for i, ((pre, pre_date), (post, post_date)) in enumerate(zip(images[:-1], images[1:])):
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                scene = captioner.caption(
                    pre, post, ReadOptions(bands=cfg.get("bands"), resize=bool(cfg.get("resize"))),
                    TileOptions(tile=captioner.input_size, overlap=cfg["overlap"], batch=cfg["tile_batch"],
                                progress=False),
                    geojson=job["geojson"][i] if job["geojson"] else None,
                    heatmap=job["heatmap"][i] if job["heatmap"] else None,
                    geojson_crs=cfg["geojson_crs"], gsd=cfg["gsd"])
            said = list(dict.fromkeys(str(w.message).strip().splitlines()[0] for w in seen))
            steps.append(_step(scene, pre, post, pre_date, post_date, said, job, i))
    except Exception as e:  # noqa: BLE001 - failure isolation: the item is recorded failed, the run goes on
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return failed_record(job, msg if isinstance(e, EdgeccError) else f"{type(e).__name__}: {msg}",
                             elapsed=time.perf_counter() - t0, step=len(steps) + 1)
    rec["steps"] = steps
    rec["changed"] = any(s["changed"] for s in steps)
    rec["change_score"] = max(s["change_score"] for s in steps)
    if job["kind"] == "sequence":
        rec["timeline"] = timeline(steps)
        rec["caption"] = rec["timeline"]["summary"]
    else:
        rec["caption"] = steps[0]["caption"]
    rec["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return rec


def _record_head(job: dict) -> dict:
    return {"format": ITEM_FORMAT, "id": job["id"], "row": job["row"], "kind": job["kind"], "key": job["key"],
            "status": "ok", "error": None, "images": [{"path": p, "date": d} for p, d in job["images"]]}


def failed_record(job: dict, error: str, elapsed: float | None = None, step: int | None = None) -> dict:
    rec = _record_head(job)
    rec.update(status="failed", error=error, failed_step=step, elapsed_s=round(elapsed or 0.0, 3))
    return rec


def _step(scene, pre, post, pre_date, post_date, said: list, job: dict, i: int) -> dict:
    """One pair's record: the fields of `edgecc caption --json`, tiles with their outlines, inputs and outputs."""
    t = scene.timings
    return {
        "pre": pre, "post": post, "pre_date": pre_date, "post_date": post_date,
        "caption": scene.caption, "changed": scene.changed, "change_score": round(scene.change_score, 4),
        "timings_ms": {"encode": round(t.get("encode_ms", 0.0), 2), "decode": round(t.get("decode_ms", 0.0), 2),
                       "total": round(t.get("total_s", 0.0) * 1e3, 2)},
        "tiles": [{"col": x.col, "row": x.row, "width": x.width, "height": x.height, "caption": x.caption,
                   "changed": x.changed, "change_score": round(x.change_score, 4),
                   "polygon": [[round(a, 6), round(b, 6)] for a, b in x.polygon]} for x in scene.tiles],
        "summary": scene.summary, "crs": scene.crs, "georeferenced": scene.transform is not None,
        "warnings": said,
        "geojson": os.path.relpath(job["geojson"][i], Path(job["geojson"][i]).parents[1]) if job["geojson"] else None,
        "heatmap": os.path.relpath(job["heatmap"][i], Path(job["heatmap"][i]).parents[1]) if job["heatmap"] else None,
    }


def timeline(steps: list[dict]) -> dict:
    """A dated series in a few words: which intervals changed, and what the model saw there."""

    def when(s, k):
        return s[k] or f"image {steps.index(s) + (1 if k == 'pre_date' else 2)}"

    intervals = [{"from": when(s, "pre_date"), "to": when(s, "post_date"), "changed": s["changed"],
                  "change_score": s["change_score"], "caption": s["caption"]} for s in steps]
    changed = [v for v in intervals if v["changed"]]
    span = f"{intervals[0]['from']} to {intervals[-1]['to']}"
    if not changed:
        summary = f"no change in {len(intervals)} interval{'s' * (len(intervals) > 1)} ({span})"
    else:
        summary = (f"changed in {len(changed)} of {len(intervals)} intervals ({span}): "
                   + "; ".join(f"{v['from']} to {v['to']}: {v['caption']} ({v['change_score']:.2f})"
                               for v in changed))
    return {"intervals": intervals, "changed": len(changed), "summary": summary}


# ---------------------------------------------------------------------------------------------- state


def _item_key(it: Item, hashes: dict, settings: dict) -> str:
    blob = {"id": it.id, "kind": it.kind, "settings": {k: v for k, v in settings.items() if k != "encoder_threads"},
            "inputs": [(hashes[im.path], im.date) for im in it.images]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _hash_inputs(items: list[Item], out: Path, write: bool) -> dict:
    """path -> sha256 of its content (URIs: of the URI), cached by (size, mtime) in out/.edgecc-batch/."""
    from .bundle import sha256_file

    cache_path = out / _STATE / "hashes.json"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    hashes, fresh = {}, False
    for path in dict.fromkeys(im.path for it in items for im in it.images):
        if is_uri(path):
            hashes[path] = "uri:" + hashlib.sha256(path.encode()).hexdigest()
            continue
        st = os.stat(path)
        hit = cache.get(path)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]  # ctime: a content change whose mtime was put back
        if hit and hit[:3] == stamp:
            hashes[path] = hit[3]
        else:
            hashes[path] = sha256_file(path)
            cache[path] = [*stamp, hashes[path]]
            fresh = True
    if fresh and write:
        write_json(cache_path, cache, indent=1)
    return hashes


def _read_item(out: Path, it: Item) -> dict | None:
    try:
        return json.loads((out / "items" / f"{item_name(it.id)}.json").read_text())
    except (OSError, ValueError):
        return None


def _finished(out: Path, it: Item, key: str) -> bool:
    """Its record holds status ok under this key, and the per-pair outputs it names are still there."""
    rec = _read_item(out, it)
    if not (rec and rec.get("key") == key and rec.get("status") == "ok"):
        return False
    made = [s.get(k) for s in rec.get("steps") or () for k in ("geojson", "heatmap")]
    return all((out / p).is_file() for p in made if p)


def load_results(out: str | os.PathLike) -> list[dict]:
    """Every finished item record (status ok) in a result folder, by id."""
    recs = []
    for p in sorted((Path(out) / "items").glob("*.json")):
        if p.name.startswith("."):  # a temporary file, not a record
            continue
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("status") == "ok":
            recs.append(rec)
    return recs


def _drop_stale_temps(out: Path) -> None:
    """Remove the temporary files (`.<name>.<hex>.tmp<suffix>`, edgecc._atomic) a killed run left in the folder."""
    for folder in (out, out / "items", out / "geojson", out / "heatmaps"):
        for p in folder.glob(".*.tmp*") if folder.is_dir() else ():
            if TEMP_NAME.fullmatch(p.name):
                p.unlink(missing_ok=True)


@contextlib.contextmanager
def _lock(out: Path, dry_run: bool):
    """One run at a time writes a result folder (an advisory lock; POSIX)."""
    if dry_run:
        yield
        return
    make_dir(out / _STATE, out)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out / _STATE / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgeccError(f"{out}: another edgecc batch run is writing this folder") from None
        yield


class _Progress:
    """A rich progress bar on stderr: items done of total, failures, pairs/s, ETA (when stderr is a terminal)."""

    def __init__(self, total: int, pairs: int, enabled: bool):
        self.bar = None
        if enabled and total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            console = Console(stderr=True)
            self.bar = Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(), TextColumn("ETA"),
                                TimeRemainingColumn(), console=console, transient=False,
                                disable=not console.is_terminal)
            self.task = self.bar.add_task("batch", total=total, failed=0)
        self.failed = 0

    def advance(self, rec: dict) -> None:
        self.failed += rec.get("status") != "ok"
        if self.bar:
            self.bar.update(self.task, advance=1, failed=self.failed)

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()
