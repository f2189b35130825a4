"""Per-machine tuning: threads, precision and date batching picked by measurement on the CPU that runs them.

Choices that are right on one CPU are wrong on another (the student's int8 trunk is faster on one thread on a 2-core
AVX-512 Xeon and on two on a 2-core AVX2 EPYC), so `tune` measures the candidates here once and caches the choice
in the user cache directory, keyed by the bundle's hash, the ONNX Runtime version and the CPU (model, ISA, cores).
`load()` applies a cached choice; without one it runs the safe default (the bundle manifest's "runtime").

Example:
    >>> from edgecc.tune import tune, current
    >>> choice = tune(Bundle.open())          # measures (a few seconds), writes the cache; `edgecc tune` does this
    >>> current(Bundle.open()).why            # the cached choice, or the default and why

    $ edgecc tune            # redo it;  `edgecc doctor` shows the choice and why;  EDGECC_TUNE=0 ignores the cache

The decision (`decide`) is a pure function of measured timings, so tests inject them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._atomic import write_json
from .cpu import cpu

TUNE_VERSION = 2  # bump when the search space or the decision rule changes: old caches are then ignored
MARGIN = 0.05  # a candidate replaces the default only when it is this much faster (timing noise is not a choice)
TOKENS_PER_CAPTION = 10  # decoder steps a typical changed caption costs (LEVIR-CC captions: ~9 words + <end>)


@dataclass(frozen=True)
class Choice:
    """What the runtime runs on this machine, and why."""

    precision: str
    encoder_threads: int
    decoder_threads: int
    batch_dates: bool = True  # both dates in one trunk call
    spin: bool = True  # ORT intra-op threads spin-wait (False: they sleep; helps when thread pools share cores)
    source: str = "default"  # "default" (no cache: the manifest's runtime) | "measured" (edgecc tune)
    why: str = ""
    measurements: list = field(default_factory=list, compare=False)  # [Measurement as dict]
    key: dict = field(default_factory=dict, compare=False)  # what the cache entry is keyed by

    def engine_options(self) -> dict:
        return {"encoder_threads": self.encoder_threads, "decoder_threads": self.decoder_threads,
                "batch_dates": self.batch_dates, "spin": self.spin}


@dataclass(frozen=True)
class Measurement:
    """Median milliseconds of one candidate: an encode per pair, and one decoder step at the beam width."""

    precision: str
    threads: int
    batch_dates: bool
    encode_ms: float
    step_ms: float


# ---------------------------------------------------------------------------------------------- key and cache


def cache_dir() -> Path:
    """$EDGECC_CACHE, else $XDG_CACHE_HOME/edgecc, else ~/.cache/edgecc."""
    if env := os.environ.get("EDGECC_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgecc"


def cache_key(bundle) -> dict:
    """Everything that changes which choice is fastest: the bundle, ONNX Runtime, the CPU."""
    import onnxruntime as ort

    c = cpu()
    return {"bundle": bundle.files_sha256[:16], "onnxruntime": ort.__version__, "cpu": c.model,
            "machine": c.machine, "isa": list(c.isa), "cores": c.cores, "tune_version": TUNE_VERSION}


def cache_path(bundle, key: dict | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key or cache_key(bundle), sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "tune" / f"{digest}.json"


def enabled() -> bool:
    """False when EDGECC_TUNE=0: load() then ignores the cache (the default choice runs)."""
    return os.environ.get("EDGECC_TUNE", "1").strip().lower() not in ("0", "off", "false", "no")


def default_choice(bundle) -> Choice:
    """The safe choice without measurement: the manifest's runtime threads and CPU precision, dates batched."""
    rt = bundle.manifest.get("runtime", {})
    enc = int(rt.get("encoder_threads") or cpu().cores)
    dec = int(rt.get("decoder_threads") or 1)
    return Choice(bundle.cpu_precision, enc, dec, True, True, "default",
                  f"no tuning cache for this bundle, onnxruntime and CPU: the bundle's defaults "
                  f"({enc} encoder / {dec} decoder threads, {bundle.cpu_precision}); run `edgecc tune`")


def cached(bundle) -> Choice | None:
    """The cached choice for this bundle, ONNX Runtime and CPU, or None (none, unreadable, or stale)."""
    key = cache_key(bundle)
    path = cache_path(bundle, key)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("key") != key or data["precision"] not in bundle.manifest["variants"]:
            return None
        c = Choice(**{k: data[k] for k in Choice.__dataclass_fields__ if k in data})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    threads_ok = all(type(n) is int and 1 <= n <= 1024 for n in (c.encoder_threads, c.decoder_threads))
    return c if threads_ok and isinstance(c.batch_dates, bool) and isinstance(c.spin, bool) else None  # else edited


def current(bundle) -> Choice:
    """What load() runs here: the cached choice, else the default."""
    return (cached(bundle) if enabled() else None) or default_choice(bundle)


def save(bundle, choice: Choice) -> Path:
    path = cache_path(bundle, choice.key or None)
    write_json(path, asdict(choice), indent=1)
    return path


# ---------------------------------------------------------------------------------------------- the decision


def equal_quality_precisions(bundle) -> tuple[str, ...]:
    """Variants a CPU may pick between: fp32, and quantized variants whose measured caption-metric drop against
    fp32 is within their own accuracy-control budget (manifest metrics drop <= max_drop). GPU-only ones (fp16,
    target CUDA / TensorRT) are left out."""
    out = []
    for name, v in bundle.manifest["variants"].items():
        if "CUDA" in str(v.get("target", "")) or name == "fp16":
            continue
        m = v.get("metrics") or {}
        if name == "fp32" or (m.get("drop") is not None and m["drop"] <= m.get("max_drop", 0.01)):
            out.append(name)
    default = bundle.cpu_precision
    return tuple(sorted(out, key=lambda p: p != default))  # the default first


def decide(measurements: list[Measurement], default: Choice, tokens: int = TOKENS_PER_CAPTION) -> Choice:
    """Pick the fastest candidate: per precision the encoder's threads and batching by encode time, the decoder's
    threads by step time; across precisions by encode + tokens x step. The default stays unless something is
    MARGIN faster, so noise does not flip the choice."""

    def cost(c: Choice, ms: dict) -> float:
        return ms[(c.precision, c.encoder_threads, c.batch_dates)][0] + tokens * ms[(c.precision, c.decoder_threads,
                                                                                       True)][1]

    ms = {(m.precision, m.threads, m.batch_dates): (m.encode_ms, m.step_ms) for m in measurements}
    best: Choice | None = None
    best_cost = float("inf")
    for p in dict.fromkeys(m.precision for m in measurements):
        mine = [m for m in measurements if m.precision == p]
        enc = min(mine, key=lambda m: m.encode_ms)
        dec = min((m for m in mine if m.batch_dates), key=lambda m: m.step_ms, default=None)
        if dec is None:
            continue
        c = Choice(p, enc.threads, dec.threads, enc.batch_dates, True, "measured")
        if cost(c, ms) < best_cost:
            best, best_cost = c, cost(c, ms)
    if best is None:
        return default
    base = replace_source(default, "measured")
    try:
        base_cost = cost(base, ms)
    except KeyError:  # the default was not among the candidates
        base_cost = float("inf")
    pick, pick_cost = (best, best_cost) if best_cost < base_cost * (1 - MARGIN) else (base, base_cost)
    enc_ms = ms[(pick.precision, pick.encoder_threads, pick.batch_dates)][0]
    step_ms = ms[(pick.precision, pick.decoder_threads, True)][1]
    why = (f"measured: {pick.precision}, encoder {pick.encoder_threads} thread(s) "
           f"({'dates batched' if pick.batch_dates else 'one trunk call per date'}) {enc_ms:.2f} ms, decoder "
           f"{pick.decoder_threads} thread(s) {step_ms:.3f} ms/step; ~{pick_cost:.1f} ms per changed pair at "
           f"{tokens} tokens")
    if pick == base and best_cost < base_cost:
        why += f" (the default; the best other, {_label(best)}, was within {MARGIN:.0%})"
    elif pick == base:
        why += " (the default was fastest)"
    else:
        why += f" (default {default.precision} {default.encoder_threads}/{default.decoder_threads} threads: " \
               f"~{base_cost:.1f} ms)"
    return Choice(pick.precision, pick.encoder_threads, pick.decoder_threads, pick.batch_dates, True, "measured",
                  why, [asdict(m) for m in measurements])


def replace_source(c: Choice, source: str) -> Choice:
    return Choice(c.precision, c.encoder_threads, c.decoder_threads, c.batch_dates, c.spin, source)


# ---------------------------------------------------------------------------------------------- measuring


def thread_candidates(cores: int | None = None) -> tuple[int, ...]:
    """1, 2, 4, ... up to the usable cores (and the core count itself)."""
    cores = cores or cpu().cores
    out = [1]
    while out[-1] * 2 <= cores:
        out.append(out[-1] * 2)
    return tuple(dict.fromkeys([*out, cores]))


def measure(bundle, precision: str, threads: int, reps: int = 30, beam: int | None = None) -> list[Measurement]:
    """Median encode (dates batched, and not) and decoder-step times of one (precision, threads) on seeded pairs."""
    from .bench import make_inputs
    from .engines.ort import OrtEngine

    beam = beam or int(bundle.manifest.get("decoding", {}).get("beam_size", 1))
    size = int(bundle.manifest["input"]["size"])
    pre, post = make_inputs(size, 4, seed=0)
    eng = OrtEngine(bundle, precision, "cpu", encoder_threads=threads, decoder_threads=threads)
    out = []
    for batched in (True, False):
        eng.batch_dates = batched
        ts = []
        for k in range(reps + 3):
            t = time.perf_counter()
            enc = eng.encode(pre[k % 4:k % 4 + 1], post[k % 4:k % 4 + 1])
            if k >= 3:
                ts.append(time.perf_counter() - t)
        out.append([batched, float(np.median(ts)) * 1e3])
    state = eng.select(eng.initial_state(enc), np.zeros(beam, np.int64))
    tok = np.full(beam, 1, np.int64)
    steps = []
    for k in range(3 * reps + 3):
        t = time.perf_counter()
        eng.step(tok, k % 8, state)
        if k >= 3:
            steps.append(time.perf_counter() - t)
    step_ms = float(np.median(steps)) * 1e3
    return [Measurement(precision, threads, b, e, step_ms) for b, e in out]


def measure_pipeline(bundle, choices: list[Choice], reps: int = 20) -> list[float]:
    """Median ms per caption of each choice, whole captions on seeded pairs (changed and unchanged, the bundle's
    decoding), the choices interleaved so load hits them alike. Catches what per-stage timing cannot: thread pools
    of several sessions competing for the same cores."""
    from .bench import make_inputs
    from .captioner import load

    size = int(bundle.manifest["input"]["size"])
    pre, post = make_inputs(size, 6, seed=1)
    caps = [load(bundle.root, precision=c.precision, **c.engine_options()) for c in choices]
    times: list[list[float]] = [[] for _ in choices]
    for k in range(reps + 2):
        i = k % len(pre)
        for cap, ts in zip(caps, times):
            t = time.perf_counter()
            cap.caption_batch(pre[i:i + 1], post[i:i + 1])
            if k >= 2:
                ts.append(time.perf_counter() - t)
    return [float(np.median(ts)) * 1e3 for ts in times]


def settle(choice: Choice, default: Choice, pipeline_ms: Callable[[list[Choice]], list[float]]) -> Choice:
    """End to end check: the stage-wise choice, its non-spinning form where it runs several threads, and the
    default, as whole captions; a candidate replaces the default only when it is MARGIN faster."""
    cands = [replace_source(default, "measured")]
    if choice.engine_options() != default.engine_options() or choice.precision != default.precision:
        cands.append(choice)
    if max(choice.encoder_threads, choice.decoder_threads) > 1:
        cands.append(Choice(**{**asdict(choice), "spin": False, "measurements": [], "key": {}}))
    if len(cands) == 1:  # the default on single threads: nothing to compare
        return choice
    ms = pipeline_ms(cands)
    best = min(range(len(cands)), key=ms.__getitem__)
    pick = cands[best] if ms[best] < ms[0] * (1 - MARGIN) else cands[0]
    if pick.engine_options() == choice.engine_options() and pick.precision == choice.precision:
        why = choice.why
    else:
        why = ("the default" if pick is cands[0] else "threads that sleep instead of spinning") + \
            f", by whole captions (stage-wise pick: {choice.why})"
    shown = ", ".join(f"{_label(c)} {m:.2f} ms" for c, m in zip(cands, ms))
    return Choice(**{**asdict(pick), "source": "measured", "why": f"{why}; whole captions: {shown}",
                     "measurements": choice.measurements})


def _label(c: Choice) -> str:
    return (f"{c.precision} {c.encoder_threads}/{c.decoder_threads} threads"
            f"{'' if c.batch_dates else ', dates apart'}{'' if c.spin else ', no spin'}")


def tune(bundle, reps: int = 30, save_cache: bool = True,
         measure_fn: Callable[..., list[Measurement]] | None = None, say: Callable[[str], None] = lambda s: None,
         pipeline_fn: Callable[[list[Choice]], list[float]] | None = None) -> Choice:
    """Measure every candidate here, decide, check end to end, and (by default) cache the choice. Returns it."""
    measure_fn = measure_fn or measure
    key = cache_key(bundle)
    ms: list[Measurement] = []
    for p in equal_quality_precisions(bundle):
        for t in thread_candidates():
            say(f"measuring {p} on {t} thread(s)")
            ms += measure_fn(bundle, p, t, reps)
    default = default_choice(bundle)
    choice = decide(ms, default)
    say("checking whole captions")
    choice = settle(choice, default, pipeline_fn or (lambda cs: measure_pipeline(bundle, cs, reps)))
    choice = Choice(**{**asdict(choice), "key": key})
    if save_cache:
        save(bundle, choice)
    return choice


__all__ = ["Choice", "Measurement", "cache_dir", "cache_key", "cache_path", "cached", "current", "decide",
           "default_choice", "enabled", "equal_quality_precisions", "measure", "measure_pipeline", "settle",
           "thread_candidates", "tune"]
