"""LEVIR-CC captions and images: the real dataset layout, and LEVIR-CC-synth (same ids, rendered pairs).

Example:
    >>> recs = load_captions("../shared/data/levircc/LevirCCcaptions.json")
    >>> ds = SynthDataset(split_records(recs, "test"))          # LEVIR-CC-synth test split
    >>> pre, post, mask = ds.images(ds.records[0])               # uint8 [256,256,3] x2, uint8 [256,256]
    >>> real = RealDataset("../shared/data/levircc", "train")   # the real layout; says how many pairs it found
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from edgecc.decoding import NO_CHANGE_TEMPLATES
from edgecc.vocab import Vocab

SPLITS = ("train", "val", "test")
DATASET_ID_SYNTH = "levircc-synth"


class DataError(ValueError):
    """Bad dataset input; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class PairRecord:
    """One LEVIR-CC pair: its id (file stem), split, change flag and reference captions (token lists)."""

    filename: str
    split: str
    changeflag: int
    captions: tuple[tuple[str, ...], ...]

    @property
    def pair_id(self) -> str:
        return Path(self.filename).stem


def load_captions(path: str | Path) -> list[PairRecord]:
    """Read a Karpathy-style `LevirCCcaptions.json`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: caption file not found")
    try:
        images = json.loads(path.read_text())["images"]
        recs = [
            PairRecord(
                im["filename"],
                im["split"],
                int(im.get("changeflag", 1)),
                tuple(tuple(s["tokens"]) for s in im["sentences"]),
            )
            for im in images
        ]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e.__class__.__name__}: {str(e)[:80]})") from None
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not a LEVIR-CC caption file (missing field {e})") from None
    if not recs:
        raise DataError(f"{path}: no pairs in caption file")
    return recs


def split_records(records: list[PairRecord], split: str) -> list[PairRecord]:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return [r for r in records if r.split == split]


def build_vocab(records: list[PairRecord], min_count: int = 5) -> Vocab:
    """Words seen at least `min_count` times in the training captions, plus the no-change template words."""
    counts = Counter(t for r in records if r.split == "train" for c in r.captions for t in c)
    words = {w for w, n in counts.items() if n >= min_count} | {t for c in NO_CHANGE_TEMPLATES for t in c}
    if not words:
        raise DataError("empty vocabulary: no training captions")
    return Vocab(tuple(sorted(words, key=lambda w: (-counts[w], w))))


class SynthDataset:
    """LEVIR-CC-synth: each record rendered by the data engine from its own 5 real captions."""

    name = DATASET_ID_SYNTH

    def __init__(self, records: list[PairRecord], size: int = 256):
        self.records = list(records)
        self.size = size

    def spec(self, rec: PairRecord):
        from .synth import merge_specs, parse_caption

        return merge_specs([parse_caption(list(c)) for c in rec.captions], rec.changeflag)

    def images(self, rec: PairRecord, variant: int = 0):
        """-> pre, post uint8 [S,S,3] RGB, mask uint8 [S,S] (class index, 0 = unchanged)."""
        from .synth import render_pair

        return render_pair(rec.pair_id, self.spec(rec), self.size, variant)


class RealDataset:
    """The real LEVIR-CC layout: `<root>/LevirCCcaptions.json` + `<root>/images/<split>/{A,B}/<filename>`."""

    name = "levircc"

    def __init__(self, root: str | Path, split: str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found")
        recs = split_records(load_captions(self.root / "LevirCCcaptions.json"), split)
        img_dir = self.root / "images" / split
        if not img_dir.is_dir():
            raise DataError(f"{img_dir}: image folder not found (expected images/{split}/A and images/{split}/B)")
        self.records = [r for r in recs if self._paths(r)[0].is_file() and self._paths(r)[1].is_file()]
        self.missing = len(recs) - len(self.records)
        if self.missing:
            warnings.warn(
                f"{img_dir}: found {len(self.records)} of {len(recs)} {split} pairs; {self.missing} are missing",
                stacklevel=2,
            )

    def _paths(self, rec: PairRecord):
        d = self.root / "images" / rec.split
        return d / "A" / rec.filename, d / "B" / rec.filename

    def images(self, rec: PairRecord, variant: int = 0):
        """-> pre, post uint8 [H,W,3] RGB, mask None (LEVIR-CC has no masks)."""
        out = []
        for p in self._paths(rec):
            im = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if im is None:
                raise DataError(f"{p}: not a readable image")
            out.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
        return out[0], out[1], None

    @cached_property
    def summary(self) -> str:
        return f"{self.root}: {len(self.records)} pairs found, {self.missing} missing"


def downsample_mask(mask: np.ndarray, grid: int) -> np.ndarray:
    """Class mask [S,S] -> changed fraction [grid,grid] float32 (area average of mask > 0)."""
    return cv2.resize((mask > 0).astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
