"""Caption vocabulary: words <-> token ids, shared by the factory and the runtime.

Example:
    >>> v = Vocab(("there", "is", "no", "difference"))
    >>> v.decode(v.encode(["there", "is", "no", "difference"]))
    'there is no difference'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")
PAD, START, END, UNK = range(4)


@dataclass(frozen=True)
class Vocab:
    """An ordered word list; ids 0-3 are the special tokens, words follow in the order given."""

    words: tuple[str, ...]

    def __post_init__(self):
        if not self.words:
            raise ValueError("empty vocabulary: no words to caption with")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.itos)})

    @property
    def itos(self) -> tuple[str, ...]:
        return SPECIALS + tuple(self.words)

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.words)

    def encode(self, tokens: list[str], max_len: int | None = None) -> list[int]:
        """Words -> ids framed by <start> ... <end> (unknown words map to <unk>)."""
        ids = [self._index.get(t, UNK) for t in tokens]
        if max_len is not None:
            ids = ids[: max_len - 2]
        return [START, *ids, END]

    def decode(self, ids) -> str:
        """Ids -> sentence; stops at <end>, drops the other specials."""
        out = []
        for i in ids:
            i = int(i)
            if i == END:
                break
            if i >= len(SPECIALS):
                out.append(self.itos[i])
        return " ".join(out)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(list(self.itos)).encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"itos": list(self.itos)}, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        itos = json.loads(Path(path).read_text())["itos"]
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"{path}: vocabulary does not start with the special tokens {SPECIALS}")
        return cls(tuple(itos[len(SPECIALS):]))
