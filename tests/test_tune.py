"""edgecc.tune: the decision from injected timings, the cache (key, round trip, staleness), load() applying it."""

from __future__ import annotations

import json

import pytest

import edgecc
from edgecc import tune
from edgecc.bundle import Bundle
from edgecc.tune import Choice, Measurement, decide


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGECC_TUNE", raising=False)


@pytest.fixture(scope="module")
def bundle():
    return Bundle.open()


def _grid(enc: dict, step: dict, apart: float = 1.0) -> list[Measurement]:
    """enc/step: {(precision, threads): ms}; dates apart cost `apart` x the batched encode."""
    return [Measurement(p, t, b, enc[(p, t)] * (1 if b else apart), step[(p, t)]) for (p, t) in enc
            for b in (True, False)]


DEFAULT = Choice("int8", 1, 1, True)


def test_a_two_thread_trunk_wins_where_it_is_faster():
    """The EPYC case: the int8 trunk 3.85 ms on 1 thread vs 2.32 on 2; the decoder step likes 1 thread."""
    ms = _grid({("int8", 1): 3.85, ("int8", 2): 2.32, ("fp32", 1): 4.2, ("fp32", 2): 2.9},
               {("int8", 1): 0.30, ("int8", 2): 0.40, ("fp32", 1): 0.64, ("fp32", 2): 0.33})
    c = decide(ms, DEFAULT)
    assert (c.precision, c.encoder_threads, c.decoder_threads, c.batch_dates) == ("int8", 2, 1, True)
    assert c.source == "measured" and "int8" in c.why and "default int8 1/1" in c.why
    assert len(c.measurements) == len(ms)


def test_the_xeon_case_keeps_the_default():
    ms = _grid({("int8", 1): 2.1, ("int8", 2): 3.7, ("fp32", 1): 2.8, ("fp32", 2): 4.0},
               {("int8", 1): 0.28, ("int8", 2): 0.35, ("fp32", 1): 0.41, ("fp32", 2): 0.5})
    c = decide(ms, DEFAULT)
    assert (c.precision, c.encoder_threads, c.decoder_threads) == ("int8", 1, 1) and "default was fastest" in c.why


def test_noise_below_the_margin_does_not_flip_the_choice():
    ms = _grid({("int8", 1): 3.0, ("int8", 2): 2.95}, {("int8", 1): 0.30, ("int8", 2): 0.30})
    c = decide(ms, DEFAULT)
    assert (c.encoder_threads, c.decoder_threads) == (1, 1) and "within 5%" in c.why


def test_precision_and_date_batching_are_chosen_by_total_cost():
    # fp32 encodes faster but its decoder steps cost more: at 10 tokens int8 wins; dates apart are faster here
    ms = _grid({("int8", 1): 5.0, ("fp32", 1): 4.3}, {("int8", 1): 0.30, ("fp32", 1): 0.42}, apart=0.8)
    c = decide(ms, DEFAULT)
    assert (c.precision, c.batch_dates) == ("int8", False)
    c = decide(ms, DEFAULT, tokens=1)  # a decoder-light workload tips it to fp32
    assert c.precision == "fp32"


def test_thread_candidates():
    assert tune.thread_candidates(1) == (1,)
    assert tune.thread_candidates(2) == (1, 2)
    assert tune.thread_candidates(6) == (1, 2, 4, 6)


def test_equal_quality_precisions(bundle):
    assert tune.equal_quality_precisions(bundle) == ("int8", "fp32")  # fp16 targets CUDA; int8 within max_drop


def test_no_cache_is_the_safe_default(bundle):
    c = tune.current(bundle)
    rt = bundle.manifest["runtime"]
    assert c.source == "default" and c.precision == bundle.cpu_precision
    assert (c.encoder_threads, c.decoder_threads) == (rt["encoder_threads"], rt["decoder_threads"])
    assert "edgecc tune" in c.why


def test_tune_caches_and_load_applies_it(bundle, tmp_path, monkeypatch):
    def fake_measure(b, precision, threads, reps):
        enc = {1: 3.85, 2: 2.32}[threads] * (1.0 if precision == "int8" else 1.3)
        return [Measurement(precision, threads, batched, enc, {1: 0.3, 2: 0.4}[threads])
                for batched in (True, False)]

    monkeypatch.setattr(tune, "thread_candidates", lambda cores=None: (1, 2))
    seen = []

    def fake_pipeline(choices):  # whole captions: the default, the stage-wise pick, its non-spinning form
        seen.append([(c.encoder_threads, c.decoder_threads, c.spin) for c in choices])
        return [8.0, 6.0, 6.5]

    c = tune.tune(bundle, measure_fn=fake_measure, pipeline_fn=fake_pipeline)
    assert seen == [[(1, 1, True), (2, 1, True), (2, 1, False)]]
    assert (c.precision, c.encoder_threads, c.decoder_threads, c.spin) == ("int8", 2, 1, True)
    assert "whole captions: int8 1/1 threads 8.00 ms, int8 2/1 threads 6.00 ms" in c.why
    path = tune.cache_path(bundle)
    assert path.is_file() and path.is_relative_to(tmp_path)
    assert json.loads(path.read_text())["key"]["bundle"] == bundle.files_sha256[:16]
    assert tune.cached(bundle) == c
    cap = edgecc.load()
    assert cap.tuning["source"] == "measured" and cap.precision == "int8"
    assert cap.engine.threads == {"encoder": 2, "decoder": 1} and cap.engine.spin
    assert cap.engine.sessions["trunk"].get_session_options().intra_op_num_threads == 2
    # explicit options win; another precision keeps the manifest's threads
    assert edgecc.load(encoder_threads=1).engine.threads["encoder"] == 1
    assert edgecc.load(precision="fp32").engine.threads == {"encoder": 1, "decoder": 1}
    monkeypatch.setenv("EDGECC_TUNE", "0")  # the switch: the cache is ignored
    assert tune.current(bundle).source == "default" and edgecc.load().engine.threads["encoder"] == 1


def test_a_stale_or_broken_cache_is_ignored(bundle):
    path = tune.cache_path(bundle)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert tune.cached(bundle) is None
    good = {**Choice("int8", 2, 1).__dict__, "key": {**tune.cache_key(bundle), "onnxruntime": "0.0"}}
    path.write_text(json.dumps(good))
    assert tune.cached(bundle) is None  # keyed for another ONNX Runtime
    assert tune.current(bundle).source == "default"
    key = tune.cache_key(bundle)
    for edited in ([], None, {**Choice("int8", 2, 1).__dict__, "key": key, "encoder_threads": "x"},
                   {**Choice("int8", 2, 1).__dict__, "key": key, "decoder_threads": 1.5},
                   {**Choice("int8", 2, 1).__dict__, "key": key, "encoder_threads": 0}):
        path.write_text(json.dumps(edited))
        assert tune.cached(bundle) is None, edited  # a hand-edited file: ignored, the default runs
        assert edgecc.load().tuning["source"] == "default"


def test_measure_runs_on_the_real_bundle(bundle):
    ms = tune.measure(bundle, "int8", 1, reps=2)
    assert {m.batch_dates for m in ms} == {True, False}
    assert all(m.encode_ms > 0 and m.step_ms > 0 and m.precision == "int8" for m in ms)


def test_cli_tune_and_doctor(monkeypatch):
    from typer.testing import CliRunner

    from edgecc.cli import app

    monkeypatch.setattr(tune, "thread_candidates", lambda cores=None: (1,))
    res = CliRunner().invoke(app, ["tune", "--reps", "2"])
    assert res.exit_code == 0, res.output
    assert "measured:" in res.stdout
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    tuning = [x for x in res.stdout.splitlines() if x.startswith(("tuning", "default model"))]
    # why: the stage-wise pick ("measured: ..."), or the default kept by whole captions when a noisy stage-wise
    # measurement picked another precision ("the default, by whole captions (stage-wise pick: measured: ...")
    assert any(x.startswith("tuning        measured:") for x in tuning), tuning
    assert "why: measured:" in res.stdout or "why: the default, by whole captions" in res.stdout, res.stdout
    assert "backend" in res.stdout and "ort-cpu" in res.stdout


def test_whole_captions_settle_the_choice():
    """Thread pools of several sessions can fight over few cores: the end-to-end check catches it."""
    stage = Choice("int8", 2, 2, True, True, "measured", "stage-wise")
    default = Choice("int8", 1, 1)
    c = tune.settle(stage, default, lambda cs: [8.0, 9.5, 6.0])  # spinning pools collide; sleeping ones win
    assert (c.encoder_threads, c.decoder_threads, c.spin) == (2, 2, False) and "sleep instead of spinning" in c.why
    c = tune.settle(stage, default, lambda cs: [8.0, 7.9, 7.8])  # nothing 5% faster than the default
    assert (c.encoder_threads, c.decoder_threads, c.spin) == (1, 1, True) and c.why.startswith("the default")
    same = Choice("int8", 1, 1, True, True, "measured", "stage-wise")
    assert tune.settle(same, default, lambda cs: pytest.fail("nothing to compare")) == same


def test_measure_pipeline_runs_whole_captions(bundle):
    ms = tune.measure_pipeline(bundle, [Choice("int8", 1, 1), Choice("int8", 1, 1, True, False)], reps=2)
    assert len(ms) == 2 and all(m > 0 for m in ms)
