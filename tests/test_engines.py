"""edgecc.engines: sessions by role, the timing hook, the capability table, and caption identity on the default
bundle (tests/data/captions_default.json, recorded before the speed work by tests/data/make_captions_fixture.py).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import edgecc
from edgecc.bench import make_inputs
from edgecc.bundle import Bundle
from edgecc.engines import BACKENDS, PRECISIONS, STAGES, capabilities, create_engine, timed
from edgecc.engines.capability import check, format_table, reason

NO_CHECKPOINT = "no PyTorch checkpoint in the bundle (edgecc bench --checkpoint, edgecc.load(checkpoint=...))"

FIXTURE = Path(__file__).parent / "data" / "captions_default.json"


@pytest.fixture(scope="module")
def default_bundle():
    return Bundle.open()


@pytest.fixture(scope="module")
def pairs():
    return make_inputs(256, 4, 0)


def test_sessions_by_role(default_bundle):
    split = create_engine("ort-cpu", default_bundle, "int8")
    assert set(split.sessions) == {"trunk", "fusion", "gate", "decoder"}
    standard = create_engine("ort-cpu-standard", default_bundle, "fp32")
    assert set(standard.sessions) == {"encoder", "trunk", "gate", "decoder"}  # the gate's tokens need the trunk
    # the pre-role attribute names still work
    assert split.trunk is split.sessions["trunk"] and split.fuse is split.sessions["fusion"]
    assert standard.encoder is standard.sessions["encoder"] and split.encoder is None
    split.sessions.clear()  # a copy: the engine's own table is not exposed for mutation
    assert "decoder" in split.sessions


def test_session_hook_stands_in_for_sessions(default_bundle, pairs):
    seen = []

    class Spy:
        def __init__(self, role, sess):
            self.role, self.sess = role, sess

        def run(self, *a, **k):
            seen.append(self.role)
            return self.sess.run(*a, **k)

        def __getattr__(self, name):
            return getattr(self.sess, name)

    eng = create_engine("ort-cpu", default_bundle, "fp32", session_hook=Spy)
    eng.encode(pairs[0][:1], pairs[1][:1])
    assert seen == ["trunk", "fusion", "gate"]


def test_timing_hook_splits_the_stages(default_bundle, pairs):
    cap = edgecc.load(precision="int8", encoder_threads=1, decoder_threads=1)
    pre, post = pairs
    with timed(cap.engine) as t:
        caps = cap.caption_batch(pre[:1], post[:1])
    assert cap.engine.timer is None
    ms = t.ms()
    assert list(ms) == [s for s in STAGES if s in ms] and {"preprocess", "encode", "fusion", "decode"} <= set(ms)
    assert t.calls["encode"] == 1 and t.calls["fusion"] >= 1  # fused kernel, fusion graph, gate
    if caps[0].changed:
        assert t.counts["steps"] >= 1
    assert sum(ms.values()) <= caps[0].timings_ms["total"] * 1.2 + 0.5


def test_both_dates_in_one_trunk_call_or_apart_give_the_same_tokens(default_bundle, pairs):
    pre, post = pairs
    a = create_engine("ort-cpu", default_bundle, "fp32", batch_dates=True)
    b = create_engine("ort-cpu", default_bundle, "fp32", batch_dates=False)
    ta, tb = a.trunk_tokens(pre[:2], post[:2])
    ua, ub = b.trunk_tokens(pre[:2], post[:2])
    np.testing.assert_allclose(ta, ua, atol=1e-5)
    np.testing.assert_allclose(tb, ub, atol=1e-5)


def test_captioner_is_frozen_with_a_typed_engine():
    cap = edgecc.load(encoder_threads=1, decoder_threads=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cap.engine = None
    other = dataclasses.replace(cap, threshold=0.9)
    assert other.engine is cap.engine and other.gate_threshold == 0.9 and other.vocab is not None
    assert cap.decoding.max_len <= cap.bundle.manifest["decoder"]["max_len"]


# ---------------------------------------------------------------------------------------------- capability table


def test_capability_table_covers_every_backend_x_precision(default_bundle):
    rows = capabilities(default_bundle)
    assert {(r.backend, r.precision) for r in rows} == {(b, p) for b in BACKENDS for p in PRECISIONS}
    by = {(r.backend, r.precision): r for r in rows}
    assert by[("ort-cpu", "int8")].available and by[("ort-cpu", "fp32")].available
    assert "tensorrt" not in BACKENDS  # TensorRT is ort-tensorrt; no backend for a module that does not exist
    for r in rows:
        assert r.available == (r.reason is None) and r.reason == reason(r.backend, r.precision, default_bundle)
    table = format_table(rows)
    assert table.splitlines()[0].split()[:4] == ["backend", "fp32", "fp16", "int8"]
    assert len(table.splitlines()) == 1 + len(BACKENDS)


def test_capability_reasons(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    assert reason("ort-cpu", "int8", b) == "no int8 variant in the bundle"
    assert reason("ort-cpu", "fp32", b) is None
    if importlib.util.find_spec("torch") is not None:
        assert reason("torch-cpu", "int8", b) == "int8 is not supported by the torch engine"
        assert reason("torch-cpu", "fp32", b) == NO_CHECKPOINT
    with pytest.raises(ValueError, match="cannot run int8 here: no int8 variant"):
        check("ort-cpu", "int8", b)
    with pytest.raises(ValueError, match="unknown backend"):
        check("ort-npu", "fp32", b)
    with pytest.raises(ValueError, match="unknown bf16"):
        capabilities(b, precisions=("bf16",))


# ---------------------------------------------------------------------------------------------- quality unchanged


def _fixture():
    from edgecc.cpu import cpu

    data = json.loads(FIXTURE.read_text())
    if list(cpu().isa) != data["isa"]:
        pytest.skip(f"captions recorded on a CPU with {' '.join(data['isa'])}; floating point differs by ISA "
                    "(regenerate with tests/data/make_captions_fixture.py)")
    return data["cases"]


def _maker():
    spec = importlib.util.spec_from_file_location("make_captions_fixture", FIXTURE.with_name(
        "make_captions_fixture.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fixture_pairs():
    return _maker().pairs()


@pytest.mark.parametrize("prec,beam", [("int8", 2), ("fp32", 2), ("int8", 1), ("fp32", 3)])
def test_captions_identical_to_the_recorded_ones(prec, beam, fixture_pairs):
    """Speed work must not change a single token: the default bundle against captions recorded before it, on the
    seeded bench pairs and LEVIR-CC-synth renders, each alone and 7 as one batch."""
    from edgecc.decoding import DecodingOptions

    cases = _fixture()
    base = edgecc.load(precision=prec)
    cap = edgecc.load(precision=prec, options=DecodingOptions(**{**base.bundle.manifest["decoding"],
                                                                 "beam_size": beam}))
    for name, (pre, post) in fixture_pairs.items():
        got = _maker().record(cap, pre, post)
        want = cases[f"{name}/{prec}/beam{beam}"]
        assert [g[:2] for g in got] == [w[:2] for w in want], name
        np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], atol=2e-5)


def test_example_pair_caption_unchanged():
    scene = edgecc.load().caption(Path(__file__).parents[1] / "examples/data/pre.tif",
                                  Path(__file__).parents[1] / "examples/data/post.tif")
    assert scene.caption == "many houses are built along the road"
    assert round(scene.change_score, 4) == 0.9635
