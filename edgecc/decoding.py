"""The one decoding loop, above every engine: change gate, then greedy or beam search over `Engine.step`.

Example:
    >>> opts = DecodingOptions(beam_size=3)
    >>> captions = decode(engine, vocab, pre, post, opts, gate_threshold=0.5)   # pre, post uint8 [B,S,S,3]
    >>> captions[0].text, captions[0].changed, captions[0].change_score
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np

from .vocab import END, START, Vocab

NO_CHANGE_CAPTION = "there is no difference"
# LEVIR-CC's five no-change templates: a decoder that says one of them vetoes an open gate
NO_CHANGE_TEMPLATES = (
    ("there", "is", "no", "difference"),
    ("the", "two", "scenes", "seem", "identical"),
    ("the", "scene", "is", "the", "same", "as", "before"),
    ("no", "change", "has", "occurred"),
    ("almost", "nothing", "has", "changed"),
)
_NO_CHANGE_TEXTS = frozenset(" ".join(t) for t in NO_CHANGE_TEMPLATES)


@dataclass(frozen=True)
class DecodingOptions:
    beam_size: int = 1  # 1 = greedy
    max_len: int = 30  # words after <start>
    length_penalty: float = 1.0  # beam score = logprob / len**length_penalty
    gate: bool = True  # False: run the decoder on every pair, whatever the gate says

    def __post_init__(self):
        for name in ("beam_size", "max_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.length_penalty, numbers.Real) or not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty must be a finite number, got {self.length_penalty!r}")


@dataclass(frozen=True)
class Caption:
    text: str
    tokens: tuple[int, ...]
    changed: bool
    change_score: float  # gate probability that the pair changed
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)  # float32 [G,G] change probability
    timings_ms: dict = field(default_factory=dict, compare=False)  # encode / decode / total for the batch


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def greedy(engine, state: dict, n: int, max_len: int) -> list[list[int]]:
    """Batched greedy search; rows that reached <end> are dropped from the batch."""
    out: list[list[int]] = [[] for _ in range(n)]
    alive = np.arange(n)
    tok = np.full(n, START, np.int64)
    for t in range(max_len):
        logits, state = engine.step(tok, t, state)
        tok = logits.argmax(-1).astype(np.int64)
        for row, k in zip(alive.tolist(), tok.tolist()):
            out[row].append(k)
        keep = tok != END
        if not keep.all():
            alive, tok = alive[keep], tok[keep]
            if len(alive) == 0:
                break
            state = engine.select(state, np.flatnonzero(keep))
    return out


def beam_search(engine, state: dict, n: int, opts: DecodingOptions, shared: frozenset = frozenset()) -> list[list[int]]:
    """Beam search for n pairs at once: the batch axis holds n*K hypotheses, all K beams of a pair in one call.

    `shared` names state tensors that are equal for every beam of a pair (the encoder memory): they are repeated
    once and never reordered, since a beam's parent is always a beam of the same pair.
    """
    k = opts.beam_size
    state = engine.select(state, np.repeat(np.arange(n), k))  # [n*K] rows
    fixed = {name: v for name, v in state.items() if name in shared}
    seqs = np.zeros((n, k, 0), np.int64)
    scores = np.full((n, k), -np.inf)
    scores[:, 0] = 0.0  # all beams start identical: keep one
    tok = np.full(n * k, START, np.int64)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    for t in range(opts.max_len):
        logits, state = engine.step(tok, t, state)
        logp = _log_softmax(logits.astype(np.float64)).reshape(n, k, -1)  # [n,K,V]
        cand = (scores[:, :, None] + logp).reshape(n, -1)  # [n,K*V]
        top = np.argsort(-cand, axis=1)[:, : 2 * k]  # room for beams that end
        V = logp.shape[-1]
        new_seqs = np.zeros((n, k, t + 1), np.int64)
        new_scores = np.full((n, k), -np.inf)
        src = np.zeros((n, k), np.int64)
        for i in range(n):
            j = 0
            for c in top[i]:
                b, w = divmod(int(c), V)
                seq = [*seqs[i, b].tolist(), w]
                if w == END or t == opts.max_len - 1:
                    finished[i].append((cand[i, c] / len(seq) ** opts.length_penalty, seq))
                elif j < k:
                    new_seqs[i, j], new_scores[i, j], src[i, j] = seq, cand[i, c], b
                    j += 1
                if j == k:
                    break
        # a pair is done when its best finished hypothesis beats every live beam's best possible score
        done = all(
            len(f) >= k and max(s for s, _ in f) >= new_scores[i].max() / (t + 1) ** opts.length_penalty
            for i, f in enumerate(finished)
        )
        if done:
            break
        seqs, scores = new_seqs, new_scores
        moving = {name: v for name, v in state.items() if name not in fixed}
        state = {**fixed, **engine.select(moving, (np.arange(n)[:, None] * k + src).reshape(-1))}
        tok = seqs[:, :, -1].reshape(-1)
    return [max(f)[1] if f else seqs[i, 0].tolist() for i, f in enumerate(finished)]


def decode(
    engine, vocab: Vocab, pre: np.ndarray, post: np.ndarray, opts: DecodingOptions = DecodingOptions(),
    gate_threshold: float = 0.5,
) -> list[Caption]:
    """Caption B pairs: uint8 [B,S,S,3] x2 -> B Captions. Pairs the gate calls unchanged skip the decoder."""
    t0 = time.perf_counter()
    enc = engine.encode(pre, post)
    t1 = time.perf_counter()
    gate = enc.gate_prob.astype(np.float64)
    changed = gate >= gate_threshold
    todo = np.flatnonzero(changed) if opts.gate else np.arange(len(gate))
    tokens: dict[int, list[int]] = {}
    if len(todo):
        state = engine.initial_state(enc)
        if len(todo) < len(gate):
            state = engine.select(state, todo)
        seqs = None
        if len(todo) == 1 and hasattr(engine, "search_loop"):
            seqs = engine.search_loop(state, opts)  # the whole search in one session call, where the engine can
        if seqs is None:
            seqs = (
                greedy(engine, state, len(todo), opts.max_len)
                if opts.beam_size == 1
                else beam_search(engine, state, len(todo), opts, frozenset(enc.memory))
            )
        tokens = dict(zip(todo.tolist(), seqs))
    t2 = time.perf_counter()
    if (timer := getattr(engine, "timer", None)) is not None:
        timer.add("decode", t2 - t1)
    timings = {"encode": (t1 - t0) * 1e3, "decode": (t2 - t1) * 1e3, "total": (t2 - t0) * 1e3}
    out = []
    for i in range(len(gate)):
        toks = tuple(t for t in tokens.get(i, []) if t != END)
        text = (vocab.decode(toks) if i in tokens else NO_CHANGE_CAPTION) or NO_CHANGE_CAPTION
        said_changed = bool(changed[i]) and text not in _NO_CHANGE_TEXTS  # the two heads must agree on "changed"
        out.append(Caption(text, toks, said_changed, float(gate[i]), enc.mask[i], timings))
    return out
