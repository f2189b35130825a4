"""The in-graph search (export/beam_loop.py via export/decode_loop.py; manifest "decode_loop"): one session call a
caption, the same tokens as the Python search, used only where that holds (one pair, the decoder it was built
from)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import edgecc
from edgecc.bench import make_inputs
from edgecc.bundle import Bundle
from edgecc.decoding import DecodingOptions, beam_search, greedy
from edgecc.engines import create_engine, timed


@pytest.fixture(scope="module")
def engine():
    return create_engine("ort-cpu", Bundle.open(), "int8", encoder_threads=1, decoder_threads=1, search_loop=True)


def _state(engine, pre, post):
    return engine.initial_state(engine.encode(pre, post))


@pytest.mark.parametrize("beam,lp", [(1, 0.0), (2, 0.0), (3, 0.0), (2, 1.0)])
def test_loop_gives_the_python_searchs_tokens(engine, beam, lp):
    pre, post = make_inputs(256, 6, seed=5)
    opts = DecodingOptions(beam_size=beam, length_penalty=lp, max_len=30)
    for i in range(len(pre)):
        enc = engine.encode(pre[i:i + 1], post[i:i + 1])
        state = engine.initial_state(enc)
        want = greedy(engine, state, 1, 30) if beam == 1 else beam_search(engine, state, 1, opts, frozenset(enc.memory))
        assert engine.search_loop(state, opts) == want
    assert "decode_loop" in engine.sessions  # built on first use


def test_loop_declines_what_it_cannot_match(engine):
    pre, post = make_inputs(256, 2, seed=5)
    opts = DecodingOptions(beam_size=2)
    assert engine.search_loop(_state(engine, pre, post), opts) is None  # two pairs: the Python search
    fp32 = create_engine("ort-cpu", Bundle.open(), "fp32", search_loop=True)
    assert fp32.search_loop(_state(fp32, pre[:1], post[:1]), opts) is None  # no loop shipped for this variant


def test_a_stale_loop_is_not_used(tmp_path):
    import json
    import shutil

    root = shutil.copytree(Bundle.open().root, tmp_path / "b")
    m = json.loads((root / "manifest.json").read_text())
    m["decode_loop"]["graphs"]["int8"]["decoder_sha256"] = "0" * 64  # as after re-quantizing the decoder
    (root / "manifest.json").write_text(json.dumps(m))
    eng = create_engine("ort-cpu", Bundle.open(root), "int8", search_loop=True)
    pre, post = make_inputs(256, 1, seed=5)
    assert eng.search_loop(_state(eng, pre, post), DecodingOptions()) is None


def test_decode_runs_the_loop_for_one_greedy_pair():
    calls = {"decoder": 0, "decode_loop": 0}

    class Count:
        def __init__(self, role, sess):
            self.role, self.sess = role, sess

        def run(self, *a, **k):
            calls[self.role] += 1
            return self.sess.run(*a, **k)

        def __getattr__(self, name):
            return getattr(self.sess, name)

    def hook(role, sess):
        return Count(role, sess) if role in calls else sess

    cap = edgecc.load(precision="int8", encoder_threads=1, decoder_threads=1, session_hook=hook,
                      options=DecodingOptions(beam_size=2, gate=False))
    pre, post = make_inputs(256, 3, seed=5)
    first = cap.caption_batch(pre[:1], post[:1])[0]  # "auto": the first caption runs the Python search
    assert calls["decode_loop"] == 0 and calls["decoder"] > 1 and "decode_loop" not in cap.engine.sessions
    calls["decoder"] = 0
    with timed(cap.engine) as t:
        c = cap.caption_batch(pre[:1], post[:1])[0]
    assert c.tokens == first.tokens
    assert calls == {"decoder": 0, "decode_loop": 1}  # from the second: one session call for the caption
    assert t.counts["steps"] >= len(c.tokens) + 1  # the steps run inside the loop (words and <end>, at least)
    cap.caption_batch(pre[:2], post[:2])  # two rows: the Python loop, one call a step
    assert calls["decode_loop"] == 1 and calls["decoder"] > 1


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="building the loop needs onnx (factory)")
def test_build_refuses_a_position_decoder(tiny_bundle):
    from edgecc.export.beam_loop import build_beam

    from edgecc.vocab import END

    b = Bundle.open(tiny_bundle)
    dec = b.path(b.variant("fp32")["decoder"])
    names = {i.name for i in __import__("onnx").load(str(dec)).graph.input}
    if "position" not in names:
        pytest.skip("the tiny bundle's decoder carries no position input")
    with pytest.raises(ValueError, match="position"):
        build_beam(dec, END)


def test_loop_tokens_stop_at_end(engine):
    from edgecc.vocab import END

    pre, post = make_inputs(256, 1, seed=5)
    toks = engine.search_loop(_state(engine, pre, post), DecodingOptions(beam_size=1))[0]
    assert toks[-1] == END and END not in toks[:-1]
    short = engine.search_loop(_state(engine, pre, post), DecodingOptions(beam_size=1, max_len=2))[0]
    assert short == toks[:2] and len(np.asarray(short)) == 2
