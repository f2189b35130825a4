"""The engine seam, the backend registry and the stage timer.

An engine runs a bundle's graphs: `encode` (both dates -> decoder memory, gate, mask) once per pair, and `step`
(one token with the decoder state) per word. The decoding loop in `edgecc.decoding` sits above it, once, for every
backend. A backend joins the CLI, `bench` and the tests by one `register_backend` call; what it can run with which
precision is `edgecc.engines.capability`.

Engines expose their sessions by role (`engine.sessions`: {"trunk", "fusion", "encoder", "decoder", "gate"} where
present) and time their stages into `engine.timer` when one is attached (`timed(engine)`), so tools never reach
into an engine's attributes.

Example:
    >>> engine = create_engine("ort-cpu", Bundle.open())
    >>> enc = engine.encode(pre, post)                       # Encoded(...)
    >>> state = engine.initial_state(enc)
    >>> logits, state = engine.step(tokens, position, state)  # tokens int64 [B] -> logits float32 [B,V]
    >>> with timed(engine) as t:
    ...     engine.encode(pre, post)
    >>> t.ms()                                               # {"preprocess": 0.01, "encode": 2.3, "fusion": 0.4}
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Encoded:
    """Encoder outputs for a batch of B pairs."""

    gate_prob: np.ndarray  # float32 [B], probability that the pair changed
    mask: np.ndarray  # float32 [B,G,G], per-cell change probability
    memory: dict[str, np.ndarray]  # decoder inputs computed once per pair (e.g. cross_k, cross_v [L,B,h,N,dh])


STAGES = ("read", "preprocess", "encode", "fusion", "decode")  # where a caption's time goes, in order


class StageTimer:
    """Accumulates seconds per stage; an engine with one attached (`engine.timer`) adds its stages to it."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.counts: dict[str, int] = {}  # events without a time, e.g. "steps" (decoder session calls)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.calls[stage] = self.calls.get(stage, 0) + 1

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def ms(self) -> dict[str, float]:
        """Total milliseconds per stage, in STAGES order (other stages after)."""
        order = [s for s in STAGES if s in self.seconds] + [s for s in self.seconds if s not in STAGES]
        return {s: self.seconds[s] * 1e3 for s in order}

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.counts.clear()


@contextlib.contextmanager
def timed(engine, timer: StageTimer | None = None) -> Iterator[StageTimer]:
    """Attach a StageTimer to `engine` for the block (the timing hook); the previous one is put back after."""
    timer = timer or StageTimer()
    prev = getattr(engine, "timer", None)
    engine.timer = timer
    try:
        yield timer
    finally:
        engine.timer = prev


class Engine(Protocol):
    name: str
    timer: StageTimer | None  # stages are added here when set (see `timed`)

    @property
    def sessions(self) -> dict[str, Any]: ...  # role -> session (ORT InferenceSession or the like)

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
    kind: str = "ort"  # "ort": runs the bundle's ONNX variants; "torch": a PyTorch checkpoint cast per precision

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
            import os

            if not any(os.path.exists(d) for d in ("/dev/nvidiactl", "/dev/nvhost-ctrl", "/dev/dxg")):
                return "no CUDA GPU (no NVIDIA device node)"  # known without importing torch (seconds)
            import torch

            if not torch.cuda.is_available():
                return "no CUDA GPU"
        return None

    return check


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
register_backend(Backend("torch-cpu", _TORCH, "cpu", _torch("cpu"), {"device": "cpu"}, kind="torch"))
register_backend(Backend("torch-cuda", _TORCH, "cuda", _torch("cuda"), {"device": "cuda"}, kind="torch"))
# TensorRT runs through ort-tensorrt (ORT's TensorRT execution provider, engines cached by ONNX sha256); there is no
# native TensorRT engine module, so none is registered.
