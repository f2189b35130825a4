"""Fuzz the imagery readers: every input either reads or fails with one edgecc error line; never a crash, a hang,
or more than 1.5 GB.

    nice -n 19 python benchmarks/fuzz_readers.py --execs 1000000            # every target, 1M inputs each
    python benchmarks/fuzz_readers.py --targets png --seconds 30 --out /tmp/f  # a short pass
    python benchmarks/fuzz_readers.py --replay png:123456                    # re-run one input (its index)

Targets: `sniff` (header sniffing and metadata of any bytes under any suffix), `png`, `jpeg` (decoded whole through
OpenCV), `tiff` (GeoTIFF through rasterio: windows, stretch, nodata, NaN/inf, alpha, and every 4th input read as
post of a pair, warped onto a fixed grid). Inputs come from a seeded mutation loop over the seed corpus
(tests/data/make_fuzz_seeds.py): byte flips, interesting integers (0, 1, 2^15, 2^31 - 1, 2^32 - 1) in both byte
orders, truncation, insertion, splicing, and format-aware mutations (PNG IHDR fields with chunk CRCs fixed up so
libpng sees the change, TIFF IFD tag values: sizes, bands, bit depth, sample format, block sizes, nodata text).
Input i of a target is a pure function of (--seed, target, i), so any finding replays by its index.

Each target runs in a worker subprocess, niced, with OPENBLAS/OMP single-threaded, an address-space limit
(RLIMIT_AS: the worker's baseline plus 2 GiB, a backstop) and a watchdog: no progress for --timeout seconds is a
hang (the worker is killed and restarted after that input). After every input the worker checks its peak RSS
(ru_maxrss): above 1.5 GB is a finding. A finding is any exception other than `EdgeccError`, an error message of
more than one line or not naming the file, a stray warning other than `ImageryWarning`, a hang, a signal, or memory.
Findings are written (with the input) under --out; the summary JSON goes to benchmarks/results/fuzz-<date>.json.

Why not atheris: it installs on Python 3.11 here, but coverage guidance would see only our Python (libpng, libjpeg,
libtiff and GDAL are not instrumented), libFuzzer stops at the first crash, and the RSS and hang limits must be per
input with the worker restarted after a memory finding; a seeded mutation loop plus format-aware mutators reaches
the decoders as well and replays by index.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS_DIR = ROOT / "tests" / "data" / "fuzz_seeds"
TARGETS = ("tiff", "sniff", "png", "jpeg")  # slowest first, for --jobs
RSS_LIMIT = int(1.5 * 2**30)  # bytes: peak resident memory allowed for one input
_SUFFIX = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif"}
_SNIFF_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".dat", "")
_INTERESTING = (0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 64, 127, 128, 255, 256, 1024, 4096, 32767, 32768, 65535,
                65536, 2**24, 2**31 - 1, 2**31, 2**32 - 1)
_TIFF_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 338, 339, 42113, 33550,
              33922, 34735)  # sizes, bits, compression, photometric, strips, spp, rows, planar, tiles, extra,
#                              sample format, GDAL nodata, pixel scale, tiepoint, GeoKeys


# ---------------------------------------------------------------------------------------------- inputs


def load_seeds() -> dict[str, list[bytes]]:
    """Seed corpus by target; the committed files, or the same bytes generated when the folder is absent."""
    if SEEDS_DIR.is_dir() and any(SEEDS_DIR.iterdir()):
        files = {p.name: p.read_bytes() for p in sorted(SEEDS_DIR.iterdir()) if p.is_file()}
    else:
        sys.path.insert(0, str(ROOT / "tests" / "data"))
        from make_fuzz_seeds import seeds

        files = seeds()
    by = {"png": [b for n, b in files.items() if n.endswith(".png")],
          "jpeg": [b for n, b in files.items() if n.endswith(".jpg")],
          "tiff": [b for n, b in files.items() if n.endswith(".tif")]}
    by["sniff"] = [b for v in by.values() for b in v]
    return by


def _fix_png_crcs(data: bytearray) -> None:
    pos = 8
    while pos + 12 <= len(data):
        n = struct.unpack(">I", data[pos : pos + 4])[0]
        end = pos + 12 + n
        if end > len(data):
            return
        data[end - 4 : end] = struct.pack(">I", zlib.crc32(data[pos + 4 : end - 4]))
        pos = end


def _mutate_png_ihdr(data: bytearray, rng: random.Random) -> None:
    if len(data) < 33:
        return
    field = rng.choice(("w", "h", "depth", "color", "interlace", "filter"))
    if field in ("w", "h"):
        v = rng.choice((0, 1, 2, 3, 255, 4096, 20000, 30000, 46341, 65535, 2**24, 2**31 - 1, 2**32 - 1))
        data[16 + (0 if field == "w" else 4) : 20 + (0 if field == "w" else 4)] = struct.pack(">I", v)
    else:
        off = {"depth": 24, "color": 25, "filter": 27, "interlace": 28}[field]
        data[off] = rng.choice((0, 1, 2, 3, 4, 6, 7, 8, 16, 255))


def _tiff_entries(data: bytes) -> list[tuple[int, int, int, int]]:
    """Classic TIFF first IFD -> [(entry offset, tag, type, count)]; [] for BigTIFF or junk."""
    if len(data) < 8 or data[:4] not in (b"II*\x00", b"MM\x00*"):
        return []
    e = "<" if data[:2] == b"II" else ">"
    off = struct.unpack(e + "I", data[4:8])[0]
    if off + 2 > len(data):
        return []
    n = struct.unpack(e + "H", data[off : off + 2])[0]
    out = []
    for i in range(min(n, 64)):
        p = off + 2 + 12 * i
        if p + 12 > len(data):
            break
        tag, typ, cnt = struct.unpack(e + "HHI", data[p : p + 8])
        out.append((p, tag, typ, cnt))
    return out


def _mutate_tiff_tag(data: bytearray, rng: random.Random) -> None:
    entries = _tiff_entries(bytes(data))
    if not entries:
        return
    e = "<" if data[:2] == b"II" else ">"
    wanted = [x for x in entries if x[1] in _TIFF_TAGS] or entries
    p, tag, typ, cnt = rng.choice(wanted)
    r = rng.random()
    if tag == 42113 and r < 0.5:  # GDAL_NODATA: ASCII, inline when <= 4 bytes
        text = rng.choice((b"nan\x00", b"inf\x00", b"-inf", b"0\x00", b"1e99", b"abc\x00", b"-1\x00", b"\x00"))
        data[p + 2 : p + 12] = struct.pack(e + "HI", 2, len(text)) + text
    elif r < 0.75:  # the value (inline SHORT/LONG)
        v = rng.choice(_INTERESTING)
        if typ == 3 and v < 65536:
            data[p + 8 : p + 12] = struct.pack(e + "HH", v, 0)
        else:
            data[p + 2 : p + 12] = struct.pack(e + "HII", 4, 1 if r < 0.6 else cnt, v)
    elif r < 0.9:  # the count
        data[p + 4 : p + 8] = struct.pack(e + "I", rng.choice(_INTERESTING))
    else:  # the type
        data[p + 2 : p + 4] = struct.pack(e + "H", rng.choice((0, 1, 2, 3, 4, 5, 7, 11, 12, 13, 16, 17, 99)))


def _mutate_bytes(data: bytearray, rng: random.Random, pool: list[bytes]) -> bytearray:
    op = rng.randrange(9)
    n = len(data)
    if n == 0:
        return bytearray(rng.randbytes(rng.randrange(1, 64)))
    i = rng.randrange(n)
    if op == 0:
        data[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        data[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    elif op == 2:
        v, fmt = rng.choice(_INTERESTING), rng.choice(("<H", ">H", "<I", ">I"))
        b = struct.pack(fmt, v & (0xFFFF if "H" in fmt else 0xFFFFFFFF))
        data[i : i + len(b)] = b
    elif op == 3:
        return data[: rng.randrange(n)]  # truncation
    elif op == 4:
        data[i:i] = rng.randbytes(rng.randrange(1, 32))
    elif op == 5:
        del data[i : i + rng.randrange(1, 32)]
    elif op == 6:
        other = rng.choice(pool)
        j = rng.randrange(len(other))
        data[i:] = other[j : j + rng.randrange(1, 256)] + data[i:]
    elif op == 7:
        j = rng.randrange(n)
        data[i:i] = data[j : j + rng.randrange(1, 64)]
    else:
        data[i : i + 8] = rng.randbytes(8)
    return data


def make_input(target: str, seed: int, index: int, pool: dict[str, list[bytes]]) -> tuple[bytes, str]:
    """Input `index` of `target`: (bytes, suffix); a pure function of its arguments."""
    rng = random.Random(f"{seed}:{target}:{index}")
    seeds = pool[target]
    if target == "sniff" and rng.random() < 0.1:
        data = bytearray(rng.randbytes(rng.randrange(0, 64)))
    else:
        data = bytearray(rng.choice(seeds))
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        r = rng.random()
        if target == "png" and r < 0.3:
            _mutate_png_ihdr(data, rng)
        elif target == "tiff" and r < 0.4:
            _mutate_tiff_tag(data, rng)
        else:
            data = _mutate_bytes(data, rng, seeds)
    if target == "png" and rng.random() < 0.6:
        _fix_png_crcs(data)  # let libpng see the mutation instead of our CRC check
    suffix = rng.choice(_SNIFF_SUFFIXES) if target == "sniff" else _SUFFIX[target]
    return bytes(data), suffix


# ---------------------------------------------------------------------------------------------- one input


def _check_error(e: BaseException, paths: tuple[Path, ...]) -> str | None:
    """None if `e` is an acceptable failure (an EdgeccError of one line naming one of the files), else why not."""
    from edgecc.errors import EdgeccError

    msg = str(e)
    if not isinstance(e, EdgeccError):
        return f"{type(e).__name__}: {msg.splitlines()[0][:300] if msg else ''}"
    if "\n" in msg or "\r" in msg:
        return f"multi-line {type(e).__name__}: {msg[:300]!r}"
    if not any(str(p) in msg for p in paths):
        return f"{type(e).__name__} does not name the file: {msg[:300]}"
    if any(w in msg.lower() for w in ("out of memory", "insufficient memory", "cannot allocate", "bad_alloc")):
        return f"memory: {msg[:300]}"
    return None


def run_one(target: str, path: Path, ref: Path | None, index: int) -> str | None:
    """Run `target` on the file at `path`; None when it behaved, else a one-line description of the finding."""
    from edgecc.imagery import ReadOptions, open_raster, read_image, read_pair

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if target == "sniff":
                open_raster(path)
            elif target in ("png", "jpeg"):
                read_image(path)
            else:
                read_image(path, ReadOptions(), window=(0, 0, 48, 48))  # parts outside the image read as nodata
                if ref is not None and index % 4 == 0:
                    with read_pair(ref, path) as pair:
                        pair.read_window(0, 0, 16, 16)
        except Exception as e:  # noqa: BLE001 - the point: anything but an EdgeccError is a finding
            why = _check_error(e, (path,) if ref is None else (path, ref))
            if why:
                return why
    from edgecc.errors import ImageryWarning

    stray = [w for w in caught if not issubclass(w.category, ImageryWarning)]
    if stray:
        w = stray[0]
        where = f"{Path(w.filename).name}:{w.lineno}"
        return f"stray {w.category.__name__}: {str(w.message).splitlines()[0][:200]} ({where})"
    return None


def outcomes(target: str, seed: int, n: int) -> dict:
    """How the first `n` inputs of a target end, in this process: {"reads": k, "<error kind>": k, ...}: a check
    that the mutations reach the decoders rather than stopping at the first header check."""
    import collections
    import logging
    import re

    from edgecc.imagery import ReadOptions, open_raster, read_image

    logging.disable(logging.CRITICAL)
    pool, counts = load_seeds(), collections.Counter()
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            data, suffix = make_input(target, seed, i, pool)
            path = Path(d) / f"input{suffix}"
            path.write_bytes(data)
            try:
                open_raster(path) if target == "sniff" else read_image(
                    path, ReadOptions(), window=None if target in ("png", "jpeg") else (0, 0, 48, 48))
                counts["reads"] += 1
            except Exception as e:  # noqa: BLE001 - classified, not judged (the fuzz run judges)
                msg = str(e).replace(str(path), "").lstrip(": ")
                msg = re.sub(r"\d+", "N", re.sub(r"\(.*?:", "(", msg))
                counts[msg.split(";")[0][:60]] += 1
    return dict(counts.most_common(12)) | {"inputs": n}


# ---------------------------------------------------------------------------------------------- worker


def worker(target: str, seed: int, start: int, end: int, out: Path, progress: str, work: Path,
           stall_at: int = -1) -> None:
    """Run inputs [start, end), each written to a file in `work` (the driver's, on tmpfs; it removes it); progress
    (the index being run) goes to an 8-byte shared file; findings to out/findings.jsonl. Exits 3 after a memory
    finding (so ru_maxrss starts afresh)."""
    import logging

    logging.disable(logging.CRITICAL)  # GDAL's CPLE_* warnings go through logging: not our concern here
    pool = load_seeds()
    ref = out / "ref.tif"
    if target == "tiff" and not ref.exists():
        ref.write_bytes((SEEDS_DIR / "tif_uint8_b3.tif").read_bytes())  # georeferenced, EPSG:32615
    fd = os.open(progress, os.O_RDWR)
    mm = mmap.mmap(fd, 16)
    with open(out / "findings.jsonl", "a", encoding="utf-8") as findings:
        for i in range(start, end):
            data, suffix = make_input(target, seed, i, pool)
            path = work / f"input{suffix}"
            path.write_bytes(data)
            mm[0:8] = struct.pack("<q", i)
            if i == stall_at:  # tests of the watchdog: this input "hangs"
                time.sleep(3600)
            why = run_one(target, path, ref if target == "tiff" else None, i)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            if rss > RSS_LIMIT and why is None:
                why = f"memory: peak RSS {rss / 2**30:.2f} GB"
            if why:
                _record(out, findings, target, seed, i, why, data, suffix)
                if rss > RSS_LIMIT:  # ru_maxrss is a high-water mark: start a fresh worker
                    mm[8:16] = struct.pack("<q", i + 1)
                    sys.exit(3)
        mm[8:16] = struct.pack("<q", end)
        mm.flush()


def _record(out: Path, findings, target: str, seed: int, i: int, why: str, data: bytes, suffix: str) -> None:
    (out / "inputs").mkdir(exist_ok=True)
    name = f"{target}-{seed}-{i}{suffix}"
    (out / "inputs" / name).write_bytes(data)
    findings.write(json.dumps({"target": target, "seed": seed, "index": i, "finding": why, "input": name}) + "\n")
    findings.flush()


# ---------------------------------------------------------------------------------------------- driver


def _limit(as_bytes: int):
    def pre():
        os.nice(19)
        resource.setrlimit(resource.RLIMIT_AS, (as_bytes, as_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return pre


def fuzz_target(target: str, seed: int, execs: int, seconds: float | None, timeout: float, out: Path,
                deadline: float | None = None, log=print, first: int = 0, stall_at: int = -1) -> dict:
    """Run inputs [first, execs) (or until `seconds` / the `deadline` epoch time) of one target in restartable
    workers."""
    out.mkdir(parents=True, exist_ok=True)
    prog = out / f"progress-{target}-{first}"
    prog.write_bytes(b"\x00" * 16)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "GDAL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    stop_at = min(x for x in (deadline, time.time() + seconds if seconds else None, float("inf")) if x is not None)
    as_limit = _baseline_vsz() + 2 * 2**30
    t0, stats = time.time(), {"hangs": 0, "worker_deaths": 0, "restarts": 0}
    work = Path(tempfile.mkdtemp(prefix=f"edgecc-fuzz-{target}-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                                 else None))  # inputs live on tmpfs; removed below even when a worker is killed
    try:
        start = _drive(target, seed, first, execs, timeout, out, prog, work, env, as_limit, stop_at, log, stats,
                       stall_at)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    elapsed = time.time() - t0
    findings = [json.loads(x) for x in (out / "findings.jsonl").read_text().splitlines()] \
        if (out / "findings.jsonl").exists() else []
    findings = [f for f in findings if f["target"] == target and first <= f["index"] < execs]
    return {"target": target, "seed": seed, "first": first, "executions": int(start - first),
            "seconds": round(elapsed, 1), "executions_per_s": round((start - first) / max(elapsed, 1e-9), 1),
            "findings": len(findings),
            **stats,
            "finding_kinds": sorted({f["finding"].split(":")[0] for f in findings})}


def _drive(target: str, seed: int, start: int, execs: int, timeout: float, out: Path, prog: Path, work: Path, env: dict,
           as_limit: int, stop_at: float, log, stats: dict, stall_at: int = -1) -> int:
    """Run restartable workers over [start, execs) until done or `stop_at`; returns where it stopped and counts
    hangs, worker deaths and restarts into `stats`."""
    while start < execs and time.time() < stop_at:
        cmd = [sys.executable, __file__, "--worker", target, "--seed", str(seed), "--start", str(start), "--end",
               str(execs), "--out", str(out), "--progress", str(prog), "--work", str(work), "--stall-at", str(stall_at)]
        errf = open(out / f"stderr-{target}.txt", "w+b")  # noqa: SIM115 - libjpeg/libpng warnings land here
        proc = subprocess.Popen(cmd, env=env, preexec_fn=_limit(as_limit), stdout=subprocess.DEVNULL, stderr=errf)
        last, seen, why = -1, time.time(), None
        while proc.poll() is None:
            time.sleep(0.2)
            cur = struct.unpack("<q", prog.read_bytes()[:8])[0]
            if cur != last:
                last, seen = cur, time.time()
            elif time.time() - seen > timeout:
                why = "hang"
            if time.time() > stop_at:
                why = "stop"
            if why:
                proc.kill()
                proc.wait()
        rc = proc.returncode
        errf.seek(max(0, errf.seek(0, 2) - 2000))
        err = errf.read().decode(errors="replace").strip().splitlines()
        errf.close()
        cur, done = struct.unpack("<qq", prog.read_bytes()[:16])
        if why == "stop":
            start = cur  # the input being run did not finish
            break
        if rc == 0:
            start = done
            break
        stats["restarts"] += 1
        if why == "hang":
            stats["hangs"] += 1
            _record_external(out, target, seed, cur, f"hang: no progress for {timeout:g} s")
            start = cur + 1
        elif rc == 3:  # a memory finding, recorded by the worker
            start = done
        else:
            stats["worker_deaths"] += 1
            _record_external(out, target, seed, cur, f"worker died (exit {rc}): {err[-1][:300] if err else ''}")
            start = cur + 1
        log(f"  {target}: restart at {start} ({why or f'exit {rc}'})")
    return start


def _record_external(out: Path, target: str, seed: int, i: int, why: str) -> None:
    pool = load_seeds()
    data, suffix = make_input(target, seed, i, pool)
    with open(out / "findings.jsonl", "a", encoding="utf-8") as f:
        _record(out, f, target, seed, i, why, data, suffix)


def _baseline_vsz() -> int:
    """Virtual size of a worker after its imports (the address-space limit is this plus 2 GiB)."""
    code = ("import resource, edgecc.imagery, cv2, rasterio, rasterio.vrt, numpy;"
            "print(open('/proc/self/status').read().split('VmSize:')[1].split()[0])")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    kb = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout.strip())
    return kb * 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--execs", type=int, default=1_000_000, help="inputs per target")
    ap.add_argument("--seconds", type=float, default=None, help="stop each target after this long")
    ap.add_argument("--until", default=None, help="stop everything at this UTC time (HH:MM), partial counts kept")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds without progress that count as a hang")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once (one worker process each)")
    ap.add_argument("--tiff-shards", type=int, default=1, help="cut the (slow) tiff target into this many ranges")
    ap.add_argument("--out", type=Path, default=None, help="findings folder (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None, help="summary JSON (default benchmarks/results/fuzz-DATE.json)")
    ap.add_argument("--replay", default=None, help="TARGET:INDEX: run that one input here and print the outcome")
    ap.add_argument("--outcomes", type=int, default=0, help="also classify how the first N inputs of each target end")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--end", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--progress", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--stall-at", type=int, default=-1, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, a.seed, a.start, a.end, a.out, a.progress, a.work, a.stall_at)
        return 0
    if a.replay:
        target, index = a.replay.split(":")
        data, suffix = make_input(target, a.seed, int(index), load_seeds())
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / f"input{suffix}"
            p.write_bytes(data)
            print(run_one(target, p, None, int(index)) or "ok")
        return 0
    out = a.out or Path(tempfile.mkdtemp(prefix="edgecc-fuzz-"))
    deadline = None
    if a.until:
        now = datetime.now(timezone.utc)
        hh, mm = map(int, a.until.split(":"))
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()

    def one(job: tuple[str, int, int]) -> dict:
        target, first, last = job
        print(f"fuzzing {target}: inputs {first}..{last - 1} ...", flush=True)
        row = fuzz_target(target, a.seed, last, a.seconds, a.timeout, out, deadline, first=first)
        print(json.dumps(row), flush=True)
        return row

    from concurrent.futures import ThreadPoolExecutor

    jobs = []  # (target, first, last): the slow tiff target may be cut into index ranges run side by side
    for target in a.targets.split(","):
        n = a.tiff_shards if target == "tiff" else 1
        jobs += [(target, a.execs * k // n, a.execs * (k + 1) // n) for k in range(n)]
    with ThreadPoolExecutor(a.jobs) as pool:  # each job is its own worker process; threads only wait on them
        shards = list(pool.map(one, jobs))
    rows = []
    for target in a.targets.split(","):
        part = [r for r in shards if r["target"] == target]
        execs, secs = sum(r["executions"] for r in part), max(r["seconds"] for r in part)
        rows.append({"target": target, "seed": a.seed, "executions": execs, "seconds": secs,
                     "executions_per_s": round(execs / max(secs, 1e-9), 1), "shards": len(part),
                     **{k: sum(r[k] for r in part) for k in ("findings", "hangs", "worker_deaths", "restarts")},
                     "finding_kinds": sorted({k for r in part for k in r["finding_kinds"]})})
    if a.outcomes:
        for row in rows:
            row["outcomes_of_first_inputs"] = outcomes(row["target"], a.seed, a.outcomes)
    summary = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": a.seed,
               "execs_requested": a.execs, "rss_limit_bytes": RSS_LIMIT, "timeout_s": a.timeout,
               "findings_dir": str(out), "targets": rows,
               "note": "niced (nice 19) workers; executions/s depend on the machine and on what else runs"}
    path = a.json or ROOT / "benchmarks" / "results" / f"fuzz-{datetime.now(timezone.utc):%Y-%m-%d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {path}; findings: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
