"""The real-pair corpus: label rule, whole-scene splits, same-image copies; the shared real data where present."""

from pathlib import Path

import numpy as np
import pytest
from edgecc.train.real import (
    EVAL_SOURCES,
    PERTURBATIONS,
    LabelRule,
    RealCorpus,
    RealScene,
    RealTile,
    image_files,
    perturb,
    scene_split,
)


def test_label_rule_thresholds():
    r = LabelRule()
    assert r.label(0.03) == 1 and r.label(0.001) == 0 and r.label(0.01) is None
    assert r.label(0.02) is None and r.label(0.002) is None  # the boundaries are ambiguous, not guessed


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_perturbations_keep_shape_and_dtype(kind):
    img = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    a, b = perturb(img, kind, np.random.default_rng(1))
    assert a.shape == b.shape == (48, 64, 3) and a.dtype == b.dtype == np.uint8


def test_identity_and_shift_are_what_they_say():
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    a, b = perturb(img, "identity", np.random.default_rng(0))
    assert np.array_equal(a, b)
    a, b = perturb(img, "shift2", np.random.default_rng(0))
    shifts = [(dy, dx) for dy in (-2, 2) for dx in (-2, 0, 2) if np.array_equal(b, img[8 + dy:56 + dy, 8 + dx:56 + dx])]
    assert len(shifts) == 1 and not np.array_equal(a, b)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(img, "sepia", np.random.default_rng(0))


def test_scene_split_never_shares_a_scene():
    tiles = [RealTile(RealScene(src, f"s{i}", Path("a"), Path("b"), None, 0.5), r, 0, 0.0, 0)
             for src in ("x", "y") for i in range(8) for r in (0, 256)]
    train, val = scene_split(tiles, 0.25, seed=3)
    key = lambda t: (t.source, t.scene.scene)  # noqa: E731
    assert {key(t) for t in train}.isdisjoint({key(t) for t in val})
    assert len(train) + len(val) == len(tiles)
    assert {t.source for t in val} == {"x", "y"} and len(val) == 2 * 2 * 2  # 2 of 8 scenes per source, 2 tiles each


@pytest.mark.requires_shared
def test_corpus_on_the_shared_real_pairs(shared_data):
    c = RealCorpus.scan(shared_data)
    assert set(EVAL_SOURCES) <= set(c.sources)
    lev = c.all_tiles(("levircd",))
    assert [sum(t.label == k for t in lev) for k in (1, 0, None)] == [36, 61, 15]  # the counts SOURCE.md states
    pre, post, mask = c.tiles(("whucd",))[0].load()
    assert pre.shape == post.shape == (256, 256, 3) and mask.shape == (256, 256) and mask.dtype == bool
    card = c.card()
    assert "| levircd | 7 | 0.5 | 36 | 61 | 15 |" in card and "whole scene" in card
    assert len(image_files(shared_data)) > 100


def test_scan_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="real_pairs"):
        RealCorpus.scan(tmp_path)
