"""Inference engines behind one seam (encode, step, select), looked up by backend name.

Example:
    >>> from edgecc.engines import create_engine, capabilities
    >>> engine = create_engine("ort-cpu", bundle)        # Bundle from edgecc.bundle
    >>> enc = engine.encode(pre, post)                    # uint8 [B,S,S,3] x2
    >>> engine.sessions                                   # {"trunk": ..., "fusion": ..., "gate": ..., "decoder": ...}
    >>> [c for c in capabilities(bundle) if c.available]  # what runs here, backend x precision
"""

from .base import (
    BACKENDS,
    STAGES,
    Backend,
    Encoded,
    Engine,
    StageTimer,
    backend_status,
    create_engine,
    register_backend,
    timed,
)
from .capability import PRECISIONS, Capability, Precision, capabilities, register_precision

__all__ = ["BACKENDS", "PRECISIONS", "STAGES", "Backend", "Capability", "Encoded", "Engine", "Precision",
           "StageTimer", "backend_status", "capabilities", "create_engine", "register_backend", "register_precision",
           "timed"]
