"""The gate taught by real imagery: by construction (x, x) is its floor, (a, b) = (b, a), more difference never
lowers the score; fitting on seeded data, calibration, ONNX export with validation; the shipped bundle's gate."""

from pathlib import Path

import numpy as np
import pytest
import torch
from edgecc.export.gate import export_gate, validate_gate
from edgecc.train.real_gate import GateHead, GateSet, features, fit_gate, predict, threshold_at_recall

import edgecc


def _pairs(n, seed, noise):  # tokens [n,64,32] x2; `noise` [n] per-pair amount of change
    g = torch.Generator().manual_seed(seed)
    ta = torch.randn(n, 64, 32, generator=g)
    tb = ta.clone()
    for i, s in enumerate(noise):
        cells = torch.randperm(64, generator=g)[:8]
        tb[i, cells] += s * torch.randn(8, 32, generator=g)
    return ta.numpy(), tb.numpy()


def _gateset(n=200, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    ta, tb = _pairs(n, seed, np.where(label == 1, rng.uniform(1.0, 3.0, n), rng.uniform(0.0, 0.4, n)))
    stats, d = features(ta, tb)
    cells = (d > 0.3).astype(np.float32)
    return GateSet(stats, d, label, np.ones(n, np.float32), cells)


@pytest.fixture(scope="module")
def head():
    return fit_gate(_gateset(seed=0), _gateset(n=80, seed=1))


def test_fitted_gate_separates_and_is_calibrated(head):
    test = _gateset(n=200, seed=2)
    p, m = predict(head, test)
    assert ((p >= 0.5) == (test.label == 1)).mean() > 0.95
    assert m.shape == (200, 64) and 0 <= m.min() <= m.max() <= 1
    assert head.identity_score() < 0.1


def test_identity_symmetry_and_monotonicity(head):
    ta, tb = (torch.from_numpy(x) for x in _pairs(1, 5, [1.5]))
    with torch.no_grad():
        same, _ = head(ta, ta)
        ab, _ = head(ta, tb)
        ba, _ = head(tb, ta)
        scores = [float(head(ta, ta + s * (tb - ta))[0]) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert float(same) == pytest.approx(head.identity_score(), abs=1e-6)
    assert float(ab) == pytest.approx(float(ba), abs=1e-6)
    assert scores == sorted(scores) and scores[-1] > scores[0]


def test_threshold_at_recall():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    y = np.ones(10, int)
    assert threshold_at_recall(s, y, 0.9) == 0.2 and (s >= 0.2).mean() == 0.9


def test_export_validates_and_matches(head, tmp_path):
    import onnxruntime as ort

    info = export_gate(head, tmp_path / "gate.onnx", tokens=64, dim=32)
    assert info["max_abs_diff"] < 1e-4 and info["identity_score"] < 0.1 and info["swap_max_diff"] < 1e-5
    ta, tb = _pairs(3, 9, [0.0, 1.0, 2.0])
    got = ort.InferenceSession(str(tmp_path / "gate.onnx")).run(None, {"ta": ta, "tb": tb})
    with torch.no_grad():
        want = head(torch.from_numpy(ta), torch.from_numpy(tb))
    assert np.allclose(got[0], want[0].numpy(), atol=1e-5) and got[1].shape == (3, 8, 8)


def test_export_refuses_a_gate_that_calls_identity_changed(tmp_path):
    bad = GateHead().eval()
    with torch.no_grad():
        bad.bias.fill_(3.0)
    with pytest.raises(ValueError, match="identical pair"):
        export_gate(bad, tmp_path / "gate.onnx", tokens=64, dim=32)
    assert (tmp_path / "gate.onnx").is_file()  # written, then refused: install_gate only moves a validated file
    with pytest.raises(ValueError, match="identical pair"):
        validate_gate(bad, tmp_path / "gate.onnx", 64, 32)


# ------------------------------------------------------------------------------------- the shipped default bundle
@pytest.fixture(scope="module")
def default():
    return edgecc.load()


@pytest.mark.parametrize("precision", ["fp32", "int8", "fp16"])
def test_shipped_gate_identity_and_swap(precision):
    cap = edgecc.load(precision=precision)
    assert cap.bundle.variant(precision)["gate"] == "gate.onnx"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (2, 256, 256, 3), dtype=np.uint8)
    same = cap.caption_batch(x, x)
    assert all(not c.changed and c.change_score < 0.1 for c in same)
    y = x[::-1].copy()
    fwd, bwd = cap.caption_batch(x, y), cap.caption_batch(y, x)
    assert [c.change_score for c in fwd] == pytest.approx([c.change_score for c in bwd], abs=1e-5)


def test_example_pair_is_changed_and_threshold_overrides(default):
    import cv2

    data = Path(__file__).resolve().parents[1] / "examples" / "data"
    pre, post = (cv2.imread(str(data / f"{n}.png"))[:, :, ::-1].copy() for n in ("pre", "post"))
    c = default.caption_batch(pre[None], post[None])[0]
    assert c.changed and c.change_score > default.gate_threshold
    strict = edgecc.load(threshold=1.0)
    assert not strict.caption_batch(pre[None], post[None])[0].changed
    with pytest.raises(ValueError, match="probability"):
        edgecc.load(threshold=1.5)


def test_gate_installs_into_a_bundle_without_a_trunk_graph(tiny_bundle, tmp_path):
    """The tiny teacher: its encoder gains ta/tb outputs, the gate is installed and hashed, and the engine feeds the
    gate from the encoder's own tokens (no extra trunk pass); identity stays at the gate's floor."""
    import math
    import shutil

    from edgecc.export.gate import install_gate, prepare_tokens
    from edgecc.train.evaluate_real import _trunk
    from edgecc.train.real_gate import describe

    from edgecc.bundle import Bundle

    b = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, b)
    prepare_tokens(b)
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(2))
    ta, tb = _trunk(Bundle.open(b), "fp32")(x, y)  # [1,N,C] each
    head = GateHead(grid=int(math.isqrt(ta.shape[1]))).eval()
    info = {**describe(head), "threshold": 0.5, "input_tokens": int(ta.shape[1]), "input_dim": int(ta.shape[2])}
    m = install_gate(b, head, info)
    assert m["variants"]["fp32"]["gate"] == "gate.onnx" and m["files"]["gate.onnx"]["sha256"]
    cap = edgecc.load(b)  # verifies every hash, the rewritten encoder's included
    assert cap.engine.encoder_outputs[-2:] == ["ta", "tb"]
    same = cap.caption_batch(x[None], x[None])[0]
    assert not same.changed and same.change_score == pytest.approx(head.identity_score(), abs=1e-5)
    got = cap.caption_batch(x[None], y[None])[0].change_score
    with torch.no_grad():
        want = float(head(torch.from_numpy(ta), torch.from_numpy(tb))[0])
    assert got == pytest.approx(want, abs=1e-5)
