"""The engine seam and the backend registry.

An engine runs a bundle's two graphs: `encode` (both dates -> decoder memory, gate, mask) once per pair, and
`step` (one token with the decoder state) per word. The decoding loop in `edgecc.decoding` sits above it, once,
for every backend. A backend joins the CLI, `bench` and the tests by one `register_backend` call.

Example:
    >>> engine = create_engine("ort-cpu", Bundle.open())
    >>> enc = engine.encode(pre, post)                       # Encoded(...)
    >>> state = engine.initial_state(enc)
    >>> logits, state = engine.step(tokens, position, state)  # tokens int64 [B] -> logits float32 [B,V]
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Encoded:
    """Encoder outputs for a batch of B pairs."""

    gate_prob: np.ndarray  # float32 [B], probability that the pair changed
    mask: np.ndarray  # float32 [B,G,G], per-cell change probability
    memory: dict[str, np.ndarray]  # decoder inputs computed once per pair (e.g. cross_k, cross_v [L,B,h,N,dh])


class Engine(Protocol):
    name: str

    def encode(self, pre: np.ndarray, post: np.ndarray) -> Encoded: ...

    def initial_state(self, enc: Encoded) -> dict[str, np.ndarray]: ...

    def step(self, tokens: np.ndarray, position: int, state: dict) -> tuple[np.ndarray, dict]: ...

    def select(self, state: dict, index: np.ndarray) -> dict: ...


@dataclass(frozen=True)
class Backend:
    """A registered backend: how to build it and how to tell whether it can run here."""

    name: str
    factory: str  # "module:callable" taking (bundle, precision, options) -> Engine
    device: str  # "cpu" | "cuda"
    available: Callable[[], str | None]  # None when usable, else the reason it is not
    options: dict = field(default_factory=dict)  # fixed keyword arguments for the factory

    def create(self, bundle, precision: str = "fp32", **options) -> Engine:
        reason = self.available()
        if reason:
            raise RuntimeError(f"backend {self.name} is not available here: {reason}")
        mod, fn = self.factory.split(":")
        return getattr(importlib.import_module(mod), fn)(bundle, precision, **{**self.options, **options})


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    BACKENDS[backend.name] = backend
    return backend


def backend_status() -> dict[str, str | None]:
    """name -> None (usable) or the reason it cannot run here."""
    return {name: b.available() for name, b in BACKENDS.items()}


def create_engine(name: str, bundle, precision: str = "fp32", **options: Any) -> Engine:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name].create(bundle, precision, **options)


def _ort_provider(provider: str) -> Callable[[], str | None]:
    def check():
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        if provider not in ort.get_available_providers():
            return f"{provider} is not in this onnxruntime build (install onnxruntime-gpu)"
        return None

    return check


def _torch(device: str) -> Callable[[], str | None]:
    def check():
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            return "torch is not installed (pip install 'edgecc[train]')"
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "no CUDA GPU"
        return None

    return check


def _tensorrt() -> str | None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt python package not installed"
    if importlib.util.find_spec("edgecc.engines.trt") is None:
        return "native TensorRT engine not implemented yet (use ort-tensorrt)"
    return None


_ORT = "edgecc.engines.ort:OrtEngine"
_TORCH = "edgecc.train.torch_engine:TorchEngine"  # factory code: needs edgecc[train]
register_backend(Backend("ort-cpu", _ORT, "cpu", _ort_provider("CPUExecutionProvider"), {"device": "cpu"}))
register_backend(Backend("ort-cuda", _ORT, "cuda", _ort_provider("CUDAExecutionProvider"), {"device": "cuda"}))
register_backend(
    Backend("ort-tensorrt", _ORT, "cuda", _ort_provider("TensorrtExecutionProvider"), {"device": "tensorrt"})
)
# the student's encoder on CPU three ways: split with the fused kernel (ort-cpu), split with the NumPy reference of
# the same op at the same call site (ort-cpu-unfused), one standard-op graph (ort-cpu-standard)
register_backend(Backend("ort-cpu-unfused", _ORT, "cpu", _ort_provider("CPUExecutionProvider"),
                         {"device": "cpu", "fusion": "split", "fused": False}))
register_backend(Backend("ort-cpu-standard", _ORT, "cpu", _ort_provider("CPUExecutionProvider"),
                         {"device": "cpu", "fusion": "standard"}))
register_backend(Backend("torch-cpu", _TORCH, "cpu", _torch("cpu"), {"device": "cpu"}))
register_backend(Backend("torch-cuda", _TORCH, "cuda", _torch("cuda"), {"device": "cuda"}))
register_backend(Backend("tensorrt", "edgecc.engines.trt:TrtEngine", "cuda", _tensorrt))
