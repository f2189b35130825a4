"""Inference engines behind one seam (encode, step, select), looked up by backend name.

Example:
    >>> from edgecc.engines import create_engine, BACKENDS
    >>> engine = create_engine("ort-cpu", bundle)        # Bundle from edgecc.bundle
    >>> enc = engine.encode(pre, post)                    # uint8 [B,S,S,3] x2
"""

from .base import BACKENDS, Backend, Encoded, Engine, backend_status, create_engine, register_backend

__all__ = ["BACKENDS", "Backend", "Encoded", "Engine", "backend_status", "create_engine", "register_backend"]
