"""One `Captioner` shared by threads gives what serial use gives; a process forked after load captions too.

ONNX Runtime documents `InferenceSession.run` as safe to call from several threads at once; what these tests pin
down is our own state around it: the engine keeps per-call decoder state in locals, the fused kernel is reentrant
(kernels/diff_attention.h) and runs on one thread in a fork child (libgomp's pool does not survive fork), and the
tiling path opens its own file handles per call.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from concurrent.futures import ThreadPoolExecutor

import make_imagery as mk
import numpy as np
import pytest

import edgecc


def _pairs(size: int, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """n seeded pairs uint8 [n,S,S,3] x2: even ones textured with a bright block added (changed), odd ones a smooth
    scene left as it is (unchanged)."""
    rng = np.random.default_rng(15)
    pre = np.stack([rng.integers(0, 255, (size, size, 3), dtype=np.uint8) if i % 2 == 0 else
                    mk.scene(seed=100 + i, width=size, height=size) for i in range(n)])
    post = pre.copy()
    for i in range(0, n, 2):
        post[i, 40 + 4 * i : 120 + 4 * i, 40:130] = 250
    return pre, post


def _key(caps) -> list[tuple]:
    return [(c.text, tuple(int(t) for t in c.tokens), float(c.change_score), bool(c.changed)) for c in caps]


@pytest.fixture(scope="module", params=[1, 2], ids=["ort-1-thread", "ort-2-threads"])
def captioner(request):
    return edgecc.load(encoder_threads=request.param, decoder_threads=request.param)


def test_threads_give_the_serial_results(captioner):
    pre, post = _pairs(captioner.input_size)
    serial = [_key(captioner.caption_batch(pre[i : i + 1], post[i : i + 1]))[0] for i in range(len(pre))]
    batch = _key(captioner.caption_batch(pre, post))
    assert [s[0] for s in batch] == [s[0] for s in serial]  # same text batched or not
    jobs = [i % len(pre) for i in range(4 * len(pre))]  # every pair 4 times, interleaved over 4 threads

    def one(i):
        return _key(captioner.caption_batch(pre[i : i + 1], post[i : i + 1]))[0]

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(one, jobs))
    assert got == [serial[i] for i in jobs]
    assert any(s[3] for s in serial) and not all(s[3] for s in serial)  # both outcomes were exercised


def test_threads_captioning_files_match_serial(fixtures_dir):
    cap = edgecc.load()
    pre, post = fixtures_dir / "geo_pre.tif", fixtures_dir / "geo_post.tif"

    def one(_):
        scene = cap.caption(pre, post)
        return scene.caption, scene.summary, [(t.col, t.row, t.caption, t.change_score) for t in scene.tiles]

    serial = one(None)
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(one, range(6)))
    assert got == [serial] * 6


def _child(cap, pre, post, q) -> None:
    q.put(_key(cap.caption_batch(pre, post)))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method: Linux")
def test_fork_after_load_captions_like_the_parent():
    from edgecc.fusion import diff_attention

    cap = edgecc.load(encoder_threads=2, decoder_threads=2)
    pre, post = _pairs(cap.input_size, 2)
    a = np.random.default_rng(0).standard_normal((2, 1024, 128), dtype=np.float32)
    diff_attention(a, a[::-1].copy(), 4, 64)  # the parent's OpenMP team now exists (the case that used to hang)
    want = _key(cap.caption_batch(pre, post))
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(cap, pre, post, q))
    p.start()
    p.join(120)
    if p.is_alive():
        p.kill()
        pytest.fail("a process forked after load hung in caption_batch")
    assert p.exitcode == 0
    assert q.get(timeout=10) == want
