"""Fused difference attention on the runtime side (NumPy only): the native kernel, its reference beside it.

Example:
    >>> import numpy as np
    >>> from edgecc.fusion import diff_attention, native_status
    >>> rng = np.random.default_rng(0)
    >>> a, b = (rng.standard_normal((1, 64, 128), dtype=np.float32) for _ in range(2))
    >>> out = diff_attention(a, b, heads=4, topk=16)      # [1, 64, 128] float32
    >>> native_status()["in_use"]                          # False: reference path (and why: ["reason"])

The op (the model calls the same one through edgecc.train.ops.diff_attention): per batch item and head, queries are
the differences b_i - a_i, keys = values = the 2N tokens of a and b; with 0 < topk < N only the topk tokens of
largest ||b_j - a_j|| (over all channels; ties: lower index first) give keys. See kernels/diff_attention.h.

Switches, read at every call (no cached state besides the one import of the native module):
    EDGECC_FUSED=0      the reference path everywhere; `fused=True/False` in a call overrides it.
    EDGECC_THREADS=n    threads of the native kernel (default: all cores; OMP_NUM_THREADS also applies).
    EDGECC_SIMD=name    force a native SIMD path: scalar, sse2 (or neon), avx2, avx512 (tests and benchmarks).
A missing native module (no compiler at install time) warns once per process and runs the reference.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np

__all__ = ["diff_attention", "diff_attention_reference", "native_status", "topk_tokens"]
# libgomp's thread pool does not survive fork(): a forked child that starts an OpenMP team of more than one thread
# after the parent used one hangs. A process other than the one that imported this module runs the kernel on one
# thread (tests/test_concurrency.py forks after load).
_IMPORT_PID = os.getpid()


# ---------------------------------------------------------------------------------------------- reference


def diff_attention_reference(a: np.ndarray, b: np.ndarray, heads: int, topk: int = 0) -> np.ndarray:
    """The definition in NumPy: materialises one [N, 2K] score matrix at a time (one batch item and head).

    Args:
        a: float32 [B, N, C] token features of date A (C-contiguous).
        b: float32 [B, N, C] token features of date B.
        heads: attention heads; C % heads == 0, head width d = C // heads.
        topk: 0 < topk < N keeps the keys of the topk tokens of largest difference; otherwise dense.

    Returns:
        float32 [B, N, C].
    """
    n_batch, _, channels = _check(a, b, heads, topk)
    d = channels // heads
    sel = topk_tokens(a, b, topk)  # [B, K] or None
    out = np.empty_like(a)
    for bi in range(n_batch):
        q = b[bi] - a[bi]  # [N, C]
        keys = np.concatenate([a[bi], b[bi]]) if sel is None else np.concatenate([a[bi, sel[bi]], b[bi, sel[bi]]])
        for h in range(heads):
            ch = slice(h * d, (h + 1) * d)
            out[bi, :, ch] = _reference_head(q[:, ch], np.ascontiguousarray(keys[:, ch]))
    return out


def _reference_head(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """softmax(q k^T / sqrt(d)) k for q [N, d], k [2K, d]; its score matrix is freed on return (one alive at a time)."""
    s = q @ k.T  # [N, 2K] the score matrix
    s *= np.float32(1.0 / np.sqrt(k.shape[1]))
    s -= s.max(axis=1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=1, keepdims=True)
    return s @ k  # [N, d]


def topk_tokens(a: np.ndarray, b: np.ndarray, topk: int) -> np.ndarray | None:
    """Tokens whose keys a sparse call uses: int64 [B, topk], ascending per row; None when the call is dense.

    Ranking: ||b_j - a_j||^2 over all channels (the float32 difference, squared and summed in float64, as the native
    kernel does), larger first, ties to the lower index (a stable sort); NaN ranks last.
    """
    n_tokens = a.shape[1]
    if topk <= 0 or topk >= n_tokens:
        return None
    diff = (b - a).astype(np.float64)  # [B, N, C]
    m2 = np.einsum("bnc,bnc->bn", diff, diff)  # [B, N]
    m2[np.isnan(m2)] = -1.0
    order = np.argsort(-m2, axis=1, kind="stable")[:, :topk]
    return np.sort(order, axis=1)


# ---------------------------------------------------------------------------------------------- dispatch


def diff_attention(a: np.ndarray, b: np.ndarray, heads: int, topk: int = 0, fused: bool | None = None) -> np.ndarray:
    """diff_attention(a, b, heads, topk): the native kernel when built and enabled, else the reference.

    Args:
        a: float32 [B, N, C] (C-contiguous).
        b: float32 [B, N, C].
        heads: attention heads (C % heads == 0).
        topk: 0 < topk < N: sparse (the topk tokens of largest difference give keys); otherwise dense.
        fused: True / False override EDGECC_FUSED for this call; None follows it.

    Returns:
        float32 [B, N, C]; the two paths agree to ~1e-6 relative.
    """
    use = os.environ.get("EDGECC_FUSED", "1") != "0" if fused is None else bool(fused)
    if use:
        native = _native_module()
        if native is not None:
            n_batch, n_tokens, channels = _check(a, b, heads, topk)
            out = np.empty_like(a)
            threads = _env_threads() if os.getpid() == _IMPORT_PID else 1  # a fork child: one thread, see above
            native.diff_attention(a, b, out, n_batch, n_tokens, channels, int(heads), int(topk), threads,
                                  _env_simd(native))
            return out
        _warn_missing()
    return diff_attention_reference(a, b, heads, topk)


def native_status() -> dict:
    """What `edgecc doctor` prints: built, in_use, reason, and (when built) simd, simd_paths, openmp, threads."""
    native = _native_module()
    if native is None:
        return {"built": False, "in_use": False, "reason": f"edgecc._native not built ({_import_error()}); "
                "reinstall with a C compiler present (pip install .)"}
    info = native.info()
    status = {"built": True, "simd": info["simd"], "simd_paths": sorted(info["simd_paths"]), "openmp": info["openmp"]}
    try:
        status["threads"] = native.threads(_env_threads(), 1, 1 << 40, 1, 1, 0)  # on large calls
        status["simd"] = _simd_name(native, _env_simd(native))
    except ValueError as e:
        return {**status, "in_use": False, "reason": str(e)}
    if os.environ.get("EDGECC_FUSED", "1") == "0":
        return {**status, "in_use": False, "reason": "disabled by EDGECC_FUSED=0 (reference path)"}
    threads = f"{status['threads']} threads, OpenMP" if info["openmp"] else "1 thread: built without OpenMP"
    return {**status, "in_use": True, "reason": f"native kernel ({status['simd']}, {threads})"}


# ---------------------------------------------------------------------------------------------- helpers


def _check(a, b, heads, topk) -> tuple[int, int, int]:
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, np.ndarray):
            raise ValueError(f"diff_attention: {name} must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise ValueError(f"diff_attention: {name} must be float32, got {x.dtype}")
        if x.ndim != 3:
            raise ValueError(f"diff_attention: {name} must be [B, N, C], got shape {x.shape}")
        if not x.flags.c_contiguous:
            raise ValueError(f"diff_attention: {name} must be C-contiguous (np.ascontiguousarray)")
    if a.shape != b.shape:
        raise ValueError(f"diff_attention: a and b shapes differ: {a.shape} vs {b.shape}")
    if min(a.shape) < 1:
        raise ValueError(f"diff_attention: empty input, shape {a.shape}")
    if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1:
        raise ValueError(f"diff_attention: heads must be an integer >= 1, got {heads!r}")
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)):
        raise ValueError(f"diff_attention: topk must be an integer, got {topk!r}")
    if a.shape[2] % heads:
        raise ValueError(f"diff_attention: channels {a.shape[2]} not divisible by heads {heads}")
    return a.shape


@functools.cache
def _native_module():
    """edgecc._native, or None when it was not built (imported once per process)."""
    try:
        from edgecc import _native
    except ImportError:
        return None
    return _native


def _import_error() -> str:
    try:
        from edgecc import _native  # noqa: F401
    except ImportError as e:
        return str(e)
    return "import failed earlier in this process"


@functools.cache
def _warn_missing() -> None:
    warnings.warn(f"edgecc: the native diff-attention kernel is not built ({_import_error()}); using the NumPy "
                  "reference (same results, slower). Reinstall with a C compiler to build it.", RuntimeWarning,
                  stacklevel=4)


def _env_threads() -> int:
    raw = os.environ.get("EDGECC_THREADS", "").strip()
    if not raw:
        return 0
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"EDGECC_THREADS must be an integer (0 = all cores), got {raw!r}") from None
    if n < 0:
        raise ValueError(f"EDGECC_THREADS must be >= 0 (0 = all cores), got {n}")
    return n


def _env_simd(native) -> int:
    raw = os.environ.get("EDGECC_SIMD", "").strip().lower()
    if raw in ("", "auto"):
        return 0
    paths = native.info()["simd_paths"]  # name -> code, only the paths this CPU runs
    if raw not in paths:
        raise ValueError(f"EDGECC_SIMD={raw!r} is not available here; choose one of auto, {', '.join(sorted(paths))}")
    return paths[raw]


def _simd_name(native, code: int) -> str:
    if code == 0:
        return native.info()["simd"]
    return {v: k for k, v in native.info()["simd_paths"].items()}[code]
