"""Leave-one-source-out evaluation: the metrics, and that validation never takes a scene of the tested source."""

import numpy as np
import pytest
from edgecc.train.evaluate_real import RealEvalOptions, _Pool, _split, auroc, ece, fit_on, operating_threshold
from edgecc.train.real import RealScene, RealTile
from edgecc.train.real_gate import GateSet


def test_auroc_and_ece_on_known_cases():
    y = np.array([0, 0, 1, 1])
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), y) == 0.5
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([0, 0])))
    assert ece(np.array([0.0, 0.0, 1.0, 1.0]), y) == 0.0
    assert ece(np.array([1.0, 1.0, 0.0, 0.0]), y) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def pool():
    """Three sources of four scenes, four tiles each, plus a copy per tile and some synth rows (seeded)."""
    rng = np.random.default_rng(0)
    rows = []  # (stats, d, label, weight, source, scene, kind, tile)
    for src, shift in (("a", 0.0), ("b", 0.2), ("levircd", 0.1)):
        for sc in range(4):
            scene = RealScene(src, f"s{sc}", None, None, None, 0.5)
            for k in range(4):
                label = int(k % 2)
                d = np.clip(rng.normal(0.2 + shift + 0.6 * label, 0.1, 64), 0, 2).astype(np.float32)
                rows.append((d, label, 1.0, src, scene.scene, "real", RealTile(scene, 256 * k, 0, 0.5 * label, label)))
                rows.append((d * 0.1, 0, 0.1, src, scene.scene, "gamma", None))
    for i in range(20):
        label = i % 2
        rows.append((np.full(64, 0.1 + label, np.float32), label, 0.1, "synth", f"p{i}", "synth", None))
    d = np.stack([r[0] for r in rows])
    srt = np.sort(d, 1)
    stats = np.stack([d.mean(1), srt[:, -7], srt[:, -1], srt[:, -4:].mean(1)], 1).astype(np.float32)
    gs = GateSet(stats, d, np.array([r[1] for r in rows]), np.array([r[2] for r in rows], np.float32),
                 np.full_like(d, np.nan))
    return _Pool(gs, np.array([r[3] for r in rows]), np.array([r[4] for r in rows]), np.array([r[5] for r in rows]),
                 [r[6] for r in rows])


def test_split_keeps_scenes_and_sources_apart(pool):
    opts = RealEvalOptions(data="unused")
    train, val = _split(pool, {"a", "b"}, opts)
    key = lambda i: (pool.source[i], pool.scene[i])  # noqa: E731
    assert {key(i) for i in train if pool.kind[i] != "synth"}.isdisjoint({key(i) for i in val})
    assert "levircd" not in set(pool.source[train]) | set(pool.source[val])  # the held-out source is nowhere
    assert set(pool.kind[val]) == {"real", "gamma"} and "synth" in set(pool.kind[train])


def test_operating_threshold_is_out_of_fold(pool):
    opts = RealEvalOptions(data="unused", recall=0.9)
    assert operating_threshold(pool, {"a", "b"}, opts) is None  # its source is not among the training sources
    thr, info = operating_threshold(pool, {"a", "b", "levircd"}, opts)
    assert info["tiles"] == 16 and info["recall"] >= 0.9 and 0 < thr <= 1 and info["false_alarm_rate"] <= 0.5
    head, _ = fit_on(pool, {"a", "b", "levircd"}, opts)
    assert head.identity_score() < 0.1
