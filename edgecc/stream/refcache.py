"""The reference cache of `edgecc watch`: a reference tile's trunk tokens are computed once and reused.

Example:
    >>> engine = CachedReferenceEngine(captioner.engine, capacity=64)
    >>> enc = engine.encode(pre, post)     # pre seen before: one trunk pass (post), fused kernel, fusion graph

With the split encoder (trunk per image, then the fused difference-attention kernel and the fusion graph) the
reference side of a pair does not depend on the frame. The cache key is a hash of the reference tile's pixels (a
tile read twice from the map hashes the same), so a hit can never return another tile's tokens. Engines without
the split form (`can_encode_tokens` false or absent) run `encode` unchanged: nothing is cached.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .refmap import LRU


class CachedReferenceEngine:
    """Wraps an engine; `encode(pre, post)` takes the trunk tokens of `pre` from an LRU. Other calls pass through."""

    def __init__(self, engine, capacity: int = 64):
        self.engine = engine
        self.cache = LRU(capacity)
        self.enabled = bool(getattr(engine, "can_encode_tokens", False))

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def encode(self, pre: np.ndarray, post: np.ndarray):
        if not self.enabled:
            return self.engine.encode(pre, post)
        ta = np.concatenate([self.cache.get(hashlib.blake2b(p.tobytes(), digest_size=16).digest(),
                                            lambda p=p: self.engine.trunk_images(p[None])) for p in pre])
        return self.engine.encode_tokens(ta, self.engine.trunk_images(post))
