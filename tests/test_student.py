"""The edge student: each decoder's parallel (training) form equals its one-token recurrent form, the state stays
fixed-size where it should, the sparse decoder reads only the top-k memory tokens, and a tiny student exports to a
validated bundle whose split and standard encoders agree."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the student is factory code: needs the train extra (torch)")

from edgecc.train.student import DECODERS, Student, StudentConfig, state_bytes_per_sequence  # noqa: E402

TINY = dict(vocab_size=23, d_model=32, dec_heads=2, dec_ff=64, dc=16, attn_heads=2, trunk_blocks=6, max_len=16,
            window=4, cross_topk=5, d_state=4, head_dim=8, dropout=0.0)


def _model(decoder, **kw):
    torch.manual_seed(0)
    return Student(StudentConfig(decoder=decoder, **{**TINY, **kw})).eval()


def _pair(seed=0, n=2, size=256):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 255, (n, size, size, 3), dtype=torch.uint8, generator=g),
            torch.randint(0, 255, (n, size, size, 3), dtype=torch.uint8, generator=g))


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_parallel_form_equals_recurrent_steps(decoder):
    m = _model(decoder)
    pre, post = _pair()
    T = 12  # longer than the sparse window (4): the shift register must drop the oldest token
    tok = torch.randint(4, 23, (2, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, _, mem = m.encode_pair(pre, post)
        par = m.decoder(tok, mem)
        state, steps = m.initial_state(2), []
        for t in range(T):
            logits, state = m.step_dict(tok[:, t], torch.tensor([t]), mem, state)
            steps.append(logits)
    np.testing.assert_allclose(torch.stack(steps, 1).numpy(), par.numpy(), atol=1e-5)


@pytest.mark.parametrize("decoder", ["mamba", "sparse"])
def test_fixed_state_does_not_grow(decoder):
    m = _model(decoder)
    _, _, mem = m.encode_pair(*_pair())
    state = m.initial_state(2)
    shapes = {k: v.shape for k, v in state.items()}
    with torch.no_grad():
        for t in range(10):
            _, state = m.step_dict(torch.tensor([5, 6]), torch.tensor([t]), mem, state)
    assert {k: v.shape for k, v in state.items()} == shapes
    b = state_bytes_per_sequence(m.cfg, m.decoder)
    assert b["state"] == 4 * sum(v[:, 0].numel() for v in state.values())


def test_transformer_state_grows_and_costs_more_than_fixed_states():
    cfgs = {d: _model(d).cfg for d in DECODERS}
    sizes = {d: state_bytes_per_sequence(c, DECODERS[d](c))["state"] for d, c in cfgs.items()}
    assert sizes["transformer"] > sizes["sparse"]
    short = state_bytes_per_sequence(cfgs["transformer"], DECODERS["transformer"](cfgs["transformer"]), 4)["state"]
    assert short < sizes["transformer"]  # the KV cache grows with the sentence


def test_sparse_memory_is_the_most_changed_tokens():
    m = _model("sparse")
    ta = torch.zeros(1, m.cfg.grid**2, m.cfg.dc)
    tb = ta.clone()
    changed = [3, 7, 11, 40, 60]
    tb[0, changed] = torch.arange(1, 6, dtype=torch.float32).view(-1, 1)  # distinct magnitudes
    out = m.fuse(ta, tb)
    assert out.memory.shape == (1, m.cfg.cross_topk, m.cfg.d_model)
    picked = {int(i) for i in np.where((out.tokens[0].unsqueeze(0) == out.memory[0].unsqueeze(1)).all(-1))[1]}
    assert picked == set(changed)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_tiny_student_exports_a_validated_bundle(tmp_path, decoder):
    pytest.importorskip("onnx", reason="export needs onnx")
    from edgecc.export.onnx import export_bundle
    from edgecc.train.checkpoint import save_checkpoint

    from edgecc import load
    from edgecc.vocab import Vocab

    m = _model(decoder)
    vocab = Vocab(tuple(f"w{i}" for i in range(19)))
    ck = save_checkpoint(m, vocab, tmp_path / "model.pt", {"dataset": "none (random init, tests only)"})
    man = export_bundle(ck, tmp_path / "bundle")
    v = man["validation"]
    assert v["greedy_tokens_identical"] == 6 and v["encoder_forms"] == ["standard", "split"]
    assert max(v["max_abs_diff"].values()) < 1e-3
    assert man["decoder"]["kind"] == decoder and man["gflops_per_pair"] > 0
    split = load(tmp_path / "bundle")
    standard = load(tmp_path / "bundle", fusion="standard")
    assert split.engine.fusion == "split"
    pre, post = (x.numpy() for x in _pair(3))
    a, b = split.caption_batch(pre, post), standard.caption_batch(pre, post)
    assert [c.tokens for c in a] == [c.tokens for c in b]
