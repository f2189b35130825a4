"""The one decoding loop: gate, greedy, beam; ONNX Runtime and PyTorch engines give the same tokens."""

import numpy as np
import pytest

import edgecc
from edgecc.decoding import NO_CHANGE_CAPTION, DecodingOptions, decode


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(1)
    pre = rng.integers(0, 255, (3, 256, 256, 3), dtype=np.uint8)
    post = pre.copy()
    post[1:, 64:192, 64:192] = rng.integers(0, 255, (2, 128, 128, 3), dtype=np.uint8)
    return pre, post


def test_gate_closed_skips_decoder(tiny_bundle, pairs):
    c = edgecc.load(tiny_bundle)
    caps = decode(c.engine, c.vocab, *pairs, DecodingOptions(), gate_threshold=1.01)
    assert all(x.text == NO_CHANGE_CAPTION and x.tokens == () and not x.changed for x in caps)


def test_gate_open_decodes_every_pair(tiny_bundle, pairs):
    c = edgecc.load(tiny_bundle)
    caps = decode(c.engine, c.vocab, *pairs, DecodingOptions(max_len=8), gate_threshold=0.0)
    assert all(x.changed and 0 < len(x.tokens) <= 8 for x in caps)
    assert all(x.mask.shape == (16, 16) and 0 <= x.mask.min() <= x.mask.max() <= 1 for x in caps)
    assert {"encode", "decode", "total"} <= set(caps[0].timings_ms)


def test_beam_one_equals_greedy_and_beam_is_at_least_as_likely(tiny_bundle, pairs):
    c = edgecc.load(tiny_bundle)
    g = decode(c.engine, c.vocab, *pairs, DecodingOptions(gate=False, max_len=8))
    b1 = decode(c.engine, c.vocab, *pairs, DecodingOptions(gate=False, max_len=8, beam_size=1))
    b3 = decode(c.engine, c.vocab, *pairs, DecodingOptions(gate=False, max_len=8, beam_size=3))
    assert [x.tokens for x in g] == [x.tokens for x in b1]
    assert len(b3) == 3 and all(len(x.tokens) <= 8 for x in b3)


def test_torch_engine_matches_ort_tokens(tiny_bundle, tiny_checkpoint, pairs):
    pytest.importorskip("torch", reason="the torch engine needs the factory extra")
    ort_c = edgecc.load(tiny_bundle)
    torch_c = edgecc.load(tiny_bundle, backend="torch-cpu", checkpoint=tiny_checkpoint)
    opts = DecodingOptions(gate=False, max_len=10)
    a = decode(ort_c.engine, ort_c.vocab, *pairs, opts)
    b = decode(torch_c.engine, torch_c.vocab, *pairs, opts)
    assert [x.tokens for x in a] == [x.tokens for x in b]
    np.testing.assert_allclose([x.change_score for x in a], [x.change_score for x in b], atol=1e-5)


@pytest.mark.parametrize("bad", [dict(beam_size=0), dict(beam_size=-1), dict(beam_size=2.5), dict(max_len=0),
                                 dict(max_len=None), dict(max_len=1.5), dict(length_penalty=float("nan"))])
def test_decoding_options_refuse_values_that_cannot_decode(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        DecodingOptions(**bad)


def test_caption_batch_refuses_other_dtypes_and_takes_an_empty_batch():
    import edgecc

    c = edgecc.load()
    rng = np.random.default_rng(0)
    pre = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    post = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    for a, b in ((pre / 255.0, post / 255.0), (pre.astype(np.uint16) << 4, post.astype(np.uint16) << 4)):
        with pytest.raises(ValueError, match="caption_batch takes uint8 RGB"):
            c.caption_batch(a, b)
    assert c.caption_batch(pre[:0], post[:0]) == []
    with pytest.raises(ValueError, match=r"got \(1, 256, 256, 3\) and \(1, 1, 256, 256, 3\)|got \(256, 256, 3\)"):
        c.caption_batch(pre[0], post[:1])
    one = c.caption_batch(list(pre[0]), list(post[0]))  # array-likes are taken as arrays
    assert one[0].text == c.caption_batch(pre[:1], post[:1])[0].text
    with pytest.raises(ValueError, match="threshold"):
        edgecc.load(threshold=True)
    assert edgecc.load(threshold=np.float32(0.4)).gate_threshold == pytest.approx(0.4)
    assert DecodingOptions(length_penalty=np.float32(1.0), beam_size=np.int64(2)).beam_size == 2
