"""edgecc.fusion: the native diff-attention kernel against its NumPy reference, the switch, errors, the fallback."""

from __future__ import annotations

import numpy as np
import pytest

from edgecc import fusion

SIMD_PATHS = ("scalar", "sse2", "neon", "avx2", "avx512")


def _pair(rng, shape, scale=1.0):
    a = (rng.standard_normal(shape) * scale).astype(np.float32)
    b = (rng.standard_normal(shape) * scale).astype(np.float32)
    return a, b


def _close(out, ref, rel=1e-5):
    err = float(np.abs(out - ref).max())
    assert err <= rel * max(1.0, float(np.abs(ref).max())), err


def _shapes():
    """(B, N, C, heads, topk): hand-picked edges, then seeded random ones (odd N and d, heads 1..8, every topk edge)."""
    fixed = [(1, 1, 8, 1, 0), (2, 3, 6, 3, 1), (3, 17, 20, 4, 5), (1, 65, 128, 4, 16), (2, 64, 128, 4, 0),
             (1, 65, 56, 8, 64), (1, 200, 24, 2, 70), (2, 130, 33, 3, 129)]
    rng = np.random.default_rng(6)
    out = []
    for _ in range(10):
        n = int(rng.choice([1, 3, 17, 65, 100]))
        heads = int(rng.integers(1, 9))
        d = int(rng.choice([1, 3, 5, 17, 32, 40]))
        k = int(rng.choice([0, 1, n - 1, n, n + 3, -2, max(1, n // 4)]))
        out.append((int(rng.integers(1, 4)), n, heads * d, heads, k))
    return fixed + out


@pytest.fixture
def native():
    mod = fusion._native_module()
    if mod is None:
        pytest.skip(f"edgecc._native is not built ({fusion._import_error()}); reinstall with a C compiler")
    return mod


@pytest.mark.parametrize("shape", _shapes(), ids=lambda s: "B{}-N{}-C{}-h{}-k{}".format(*s))
def test_native_matches_reference(native, monkeypatch, shape):
    n_batch, n, c, heads, topk = shape
    a, b = _pair(np.random.default_rng(sum(shape) + 7), (n_batch, n, c))
    ref = fusion.diff_attention_reference(a, b, heads, topk)
    for path in native.info()["simd_paths"]:  # every path this CPU runs, not only the best
        monkeypatch.setenv("EDGECC_SIMD", path)
        _close(fusion.diff_attention(a, b, heads, topk, fused=True), ref)


@pytest.mark.parametrize("path", SIMD_PATHS)
def test_peaked_softmax_and_long_sequences(native, monkeypatch, path):
    if path not in native.info()["simd_paths"]:
        pytest.skip(f"SIMD path {path} does not run on this CPU")
    monkeypatch.setenv("EDGECC_SIMD", path)
    a, b = _pair(np.random.default_rng(1), (1, 300, 64), scale=3.0)  # logits in the tens: exp far below 0 matters
    for topk in (0, 37):
        _close(fusion.diff_attention(a, b, 2, topk, fused=True), fusion.diff_attention_reference(a, b, 2, topk))


def _float64_truth(a, b, heads, topk):
    """The definition evaluated in float64 (same token selection)."""
    sel = fusion.topk_tokens(a, b, topk)
    a, b = a.astype(np.float64), b.astype(np.float64)
    d = a.shape[2] // heads
    out = np.empty_like(a)
    for bi in range(a.shape[0]):
        keys = np.concatenate([a[bi], b[bi]] if sel is None else [a[bi, sel[bi]], b[bi, sel[bi]]])
        for h in range(heads):
            ch = slice(h * d, (h + 1) * d)
            s = (b[bi, :, ch] - a[bi, :, ch]) @ keys[:, ch].T / np.sqrt(d)
            p = np.exp(s - s.max(axis=1, keepdims=True))
            out[bi, :, ch] = (p / p.sum(axis=1, keepdims=True)) @ keys[:, ch]
    return out


def test_as_accurate_as_the_float32_reference(native):
    """Very peaked softmax (logits in the hundreds): float32 conditioning, not the kernel, limits both paths."""
    a, b = _pair(np.random.default_rng(1), (1, 300, 64), scale=6.0)
    for topk in (0, 37):
        truth = _float64_truth(a, b, 2, topk)
        err_ref = np.abs(fusion.diff_attention_reference(a, b, 2, topk) - truth).max()
        err_fused = np.abs(fusion.diff_attention(a, b, 2, topk, fused=True) - truth).max()
        assert err_fused <= 2 * err_ref + 1e-6 * np.abs(truth).max(), (err_fused, err_ref)


def test_dense_edges_are_one_path(native):
    a, b = _pair(np.random.default_rng(2), (2, 17, 12))
    dense = fusion.diff_attention(a, b, 3, 0, fused=True)
    for topk in (17, 18, 100, -1):
        np.testing.assert_array_equal(fusion.diff_attention(a, b, 3, topk, fused=True), dense)
    assert fusion.topk_tokens(a, b, 17) is None and fusion.topk_tokens(a, b, -1) is None


def test_tied_magnitudes_keep_lower_indices(native):
    rng = np.random.default_rng(3)
    a = rng.integers(-8, 9, size=(2, 20, 16)).astype(np.float32) / 4  # exact in float32: b - a is exactly step
    step = rng.integers(-3, 4, size=16).astype(np.float32)
    b = a + step  # every token changes by the same vector: all magnitudes tie exactly
    b[1, [4, 9]] += 10.0  # batch item 1: two clear winners, the rest tied
    perm = b.copy()
    perm[0, 5] = a[0, 5] + step[::-1]  # a permuted, exactly-equal magnitude (integer steps)
    for x in (b, perm):
        sel = fusion.topk_tokens(a, x, 5)
        np.testing.assert_array_equal(sel[0], [0, 1, 2, 3, 4])
        np.testing.assert_array_equal(sel[1], [0, 1, 2, 4, 9])
        _close(fusion.diff_attention(a, x, 4, 5, fused=True), fusion.diff_attention_reference(a, x, 4, 5))


def test_unchanged_pair_is_the_mean_token(native):
    a = np.random.default_rng(4).standard_normal((2, 33, 24)).astype(np.float32)
    for topk, keys in ((0, 33), (5, 5)):  # q = 0: uniform weights over the keys; all magnitudes tie: tokens 0..k-1
        expect = np.broadcast_to(a[:, :keys].mean(axis=1, keepdims=True), a.shape)
        _close(fusion.diff_attention(a, a.copy(), 3, topk, fused=True), expect)
        _close(fusion.diff_attention_reference(a, a.copy(), 3, topk), expect)


def test_threads_do_not_change_the_result(native, monkeypatch):
    a, b = _pair(np.random.default_rng(5), (2, 130, 32))
    monkeypatch.setenv("EDGECC_THREADS", "1")
    one = fusion.diff_attention(a, b, 4, 40, fused=True)
    monkeypatch.setenv("EDGECC_THREADS", "3")
    np.testing.assert_array_equal(fusion.diff_attention(a, b, 4, 40, fused=True), one)
    monkeypatch.setenv("EDGECC_THREADS", "two")
    with pytest.raises(ValueError, match="EDGECC_THREADS"):
        fusion.diff_attention(a, b, 4, 40, fused=True)


def test_workspace_is_independent_of_tokens(native):
    per_thread = native.workspace_bytes(1, 64, 128, 4, 0, 1)
    assert per_thread < 64 * 1024
    assert native.threads(2, 1, 64, 128, 4, 0) == 1  # the model's own size: one thread, no team to wait for
    dense = [native.workspace_bytes(1, n, 128, 4, 0, 2) for n in (1024, 4096, 16384)]
    assert dense == [2 * per_thread] * 3, dense
    sparse = native.workspace_bytes(1, 16384, 128, 4, 4096, 2) - dense[2]
    assert sparse == 16 * 16384  # the top-k ranking: 16 bytes per token


# ---------------------------------------------------------------------------------------------- the switch


def test_switch_selects_the_reference(native, monkeypatch):
    a, b = _pair(np.random.default_rng(8), (1, 9, 8))

    def boom(*args):
        raise RuntimeError("native kernel called")

    monkeypatch.setattr(native, "diff_attention", boom)
    with pytest.raises(RuntimeError, match="native kernel called"):
        fusion.diff_attention(a, b, 2)
    monkeypatch.setenv("EDGECC_FUSED", "0")
    ref = fusion.diff_attention(a, b, 2)  # reference, no call into the native module
    np.testing.assert_array_equal(ref, fusion.diff_attention_reference(a, b, 2))
    with pytest.raises(RuntimeError, match="native kernel called"):
        fusion.diff_attention(a, b, 2, fused=True)  # the argument overrides the environment
    status = fusion.native_status()
    assert status["built"] and not status["in_use"] and "EDGECC_FUSED=0" in status["reason"]


def test_switch_selects_the_native_kernel(native, monkeypatch):
    a, b = _pair(np.random.default_rng(9), (1, 9, 8))

    def boom(*args, **kwargs):
        raise RuntimeError("reference called")

    monkeypatch.setattr(fusion, "diff_attention_reference", boom)
    fusion.diff_attention(a, b, 2)
    with pytest.raises(RuntimeError, match="reference called"):
        fusion.diff_attention(a, b, 2, fused=False)
    monkeypatch.setenv("EDGECC_FUSED", "0")
    with pytest.raises(RuntimeError, match="reference called"):
        fusion.diff_attention(a, b, 2)
    assert fusion.native_status()["in_use"] is False


def test_missing_native_warns_once_and_runs_the_reference(monkeypatch):
    monkeypatch.setattr(fusion, "_native_module", lambda: None)
    fusion._warn_missing.cache_clear()
    a, b = _pair(np.random.default_rng(10), (1, 5, 4))
    with pytest.warns(RuntimeWarning, match="not built"):
        out = fusion.diff_attention(a, b, 2, 2)
    np.testing.assert_array_equal(out, fusion.diff_attention_reference(a, b, 2, 2))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fusion.diff_attention(a, b, 2, 2)  # second call: silent
    status = fusion.native_status()
    assert status == {"built": False, "in_use": False, "reason": status["reason"]} and "not built" in status["reason"]
    fusion._warn_missing.cache_clear()


def test_native_status_when_built(native):
    status = fusion.native_status()
    assert status["built"] and status["in_use"] and status["simd"] in SIMD_PATHS and status["threads"] >= 1


def test_runtime_imports_no_torch(run_without_factory):
    r = run_without_factory("import numpy as np\nfrom edgecc.fusion import diff_attention\n"
                            "x = np.ones((1, 4, 8), np.float32)\nprint(diff_attention(x, 2 * x, 2, 1).shape)")
    assert r.returncode == 0, r.stderr
    assert "(1, 4, 8)" in r.stdout


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("case, match", [
    ("float64", "float32"), ("strided", "C-contiguous"), ("shapes", "shapes differ"), ("heads", "not divisible"),
    ("zero_heads", "heads must be"), ("ndim", r"\[B, N, C\]"), ("list", "numpy array"), ("topk", "topk must"),
    ("empty", "empty"),
])
def test_bad_input_is_a_clear_error(case, match, fused):
    a = np.zeros((1, 4, 6), np.float32)
    b, heads, topk = a.copy(), 2, 0
    if case == "float64":
        a = a.astype(np.float64)
    elif case == "strided":
        a = np.zeros((1, 4, 12), np.float32)[:, :, ::2]
    elif case == "shapes":
        b = np.zeros((1, 5, 6), np.float32)
    elif case == "heads":
        heads = 4
    elif case == "zero_heads":
        heads = 0
    elif case == "ndim":
        a, b = a[0], b[0]
    elif case == "list":
        a = a.tolist()
    elif case == "topk":
        topk = 1.5
    elif case == "empty":
        a, b = np.zeros((1, 0, 6), np.float32), np.zeros((1, 0, 6), np.float32)
    with pytest.raises(ValueError, match=match):
        fusion.diff_attention(a, b, heads, topk, fused=fused)


def test_native_layer_checks_buffers(native, monkeypatch):
    a = np.zeros((1, 4, 6), np.float32)
    with pytest.raises(ValueError, match="expected 24"):
        native.diff_attention(a, a, np.zeros(23, np.float32), 1, 4, 6, 2, 0, 0, 0)
    with pytest.raises(ValueError, match="float32"):
        native.diff_attention(a, a, np.zeros(24, np.int32), 1, 4, 6, 2, 0, 0, 0)
    with pytest.raises(ValueError, match="bad argument"):
        native.diff_attention(a, a, a, 1, 4, 6, 2, 0, 0, 0)  # out aliases a
    monkeypatch.setenv("EDGECC_SIMD", "avx1024")
    with pytest.raises(ValueError, match="EDGECC_SIMD"):
        fusion.diff_attention(a, a.copy(), 2, fused=True)
