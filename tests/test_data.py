"""LEVIR-CC loaders: the real layout (finds what exists, says what is missing) and clear errors."""

import json
from pathlib import Path

import pytest
from edgecc.train.data import (
    DataError,
    RealDataset,
    build_vocab,
    downsample_mask,
    load_captions,
    split_records,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "levircc"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} absent (a user's clone has no ../shared)")


def _write(tmp_path, images):
    p = tmp_path / "LevirCCcaptions.json"
    p.write_text(json.dumps({"images": images}))
    return p


def test_bad_caption_files(tmp_path):
    with pytest.raises(DataError, match="caption file not found"):
        load_captions(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        load_captions(bad)
    with pytest.raises(DataError, match="not a LEVIR-CC caption file"):
        load_captions(_write(tmp_path, [{"filename": "x.png"}]))
    with pytest.raises(DataError, match="no pairs"):
        load_captions(_write(tmp_path, []))


def test_unknown_split_and_empty_vocab(tmp_path):
    recs = load_captions(_write(tmp_path, [
        {"filename": "val_1.png", "split": "val", "changeflag": 1, "sentences": [{"tokens": ["a", "road"]}]}]))
    with pytest.raises(DataError, match="unknown split 'tset'"):
        split_records(recs, "tset")
    v = build_vocab(recs)  # no training captions: only the no-change template words
    assert "difference" in v.words and "road" not in v.words


def test_missing_image_folder(tmp_path):
    _write(tmp_path, [{"filename": "train_1.png", "split": "train", "changeflag": 0, "sentences": []}])
    with pytest.raises(DataError, match="image folder not found"):
        RealDataset(tmp_path, "train")


@needs_shared
def test_real_layout_finds_the_one_pair():
    with pytest.warns(UserWarning, match=r"found 1 of 6815 train pairs; 6814 are missing"):
        ds = RealDataset(SHARED, "train")
    assert [r.pair_id for r in ds.records] == ["train_000016"]
    pre, post, mask = ds.images(ds.records[0])
    assert pre.shape == post.shape == (256, 256, 3) and mask is None


@needs_shared
def test_official_split_and_vocab():
    recs = load_captions(SHARED / "LevirCCcaptions.json")
    assert [len(split_records(recs, s)) for s in ("train", "val", "test")] == [6815, 1333, 1929]
    v = build_vocab(recs)
    assert 400 < len(v) < 520


def test_downsample_mask():
    import numpy as np

    m = np.zeros((256, 256), np.uint8)
    m[:128, :128] = 3
    d = downsample_mask(m, 16)
    assert d.shape == (16, 16) and d[:8, :8].min() == 1 and d[8:].max() == 0
