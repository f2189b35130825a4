"""ONNX Runtime engine: CPU, CUDA and TensorRT execution providers over the same two graphs.

Thread counts were chosen by measurement on a 2-core CPU (default bundle, p50 encode/decode ms: enc 2 + dec 1 threads
13.2/14.0; 1+1 22.4/15.3; 1+2 23.2/13.5; 2+2 28.0/22.0): the encoder uses every core, the decoder step (small
matrices, latency-bound) is fastest on one thread. Both can be overridden.

Example:
    >>> engine = OrtEngine(Bundle.open(), "fp32")            # or create_engine("ort-cpu", bundle)
    >>> enc = engine.encode(pre, post)                         # uint8 [B,S,S,3] x2
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import Encoded

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def trt_cache_dir(bundle, onnx_name: str, precision: str) -> Path:
    """TensorRT engine cache keyed by everything that changes the engine: ONNX sha256, TensorRT version, precision."""
    try:
        import tensorrt

        trt_version = tensorrt.__version__
    except ImportError:
        trt_version = "ort-bundled"
    sha = bundle.manifest["files"][onnx_name]["sha256"][:16]
    base = Path(os.environ.get("EDGECC_CACHE", Path.home() / ".cache" / "edgecc"))
    return base / "trt" / f"{sha}-trt{trt_version}-{precision}"


class OrtEngine:
    def __init__(self, bundle, precision: str = "fp32", device: str = "cpu", encoder_threads: int | None = None,
                 decoder_threads: int = 1):
        import onnxruntime as ort

        self.name = f"ort-{device}"
        self.bundle = bundle
        files = bundle.variant(precision)
        dec_cfg = bundle.manifest["decoder"]
        self.layers, self.heads, self.head_dim = dec_cfg["layers"], dec_cfg["heads"], dec_cfg["head_dim"]
        self.memory_names = tuple(dec_cfg["memory"])

        def session(name: str, threads: int):
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            providers = list(_PROVIDERS[device])
            if device == "tensorrt":
                cache = trt_cache_dir(bundle, name, precision)
                cache.mkdir(parents=True, exist_ok=True)
                providers[0] = ("TensorrtExecutionProvider", {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache),
                    "trt_fp16_enable": precision == "fp16",
                    "trt_int8_enable": precision == "int8",
                })
            return ort.InferenceSession(str(bundle.path(name)), so, providers=providers)

        self.encoder = session(files["encoder"], encoder_threads or os.cpu_count() or 1)
        self.decoder = session(files["decoder"], decoder_threads)

    def encode(self, pre: np.ndarray, post: np.ndarray) -> Encoded:
        """pre, post uint8 [B,S,S,3] RGB -> Encoded."""
        gate, mask, *mem = self.encoder.run(None, {"pre": pre, "post": post})
        return Encoded(gate_prob=gate, mask=mask, memory=dict(zip(self.memory_names, mem)))

    def initial_state(self, enc: Encoded) -> dict[str, np.ndarray]:
        b = len(enc.gate_prob)
        empty = np.zeros((self.layers, b, self.heads, 0, self.head_dim), np.float32)  # [L,B,h,T=0,dh]
        return {**enc.memory, "self_k": empty, "self_v": empty}

    def step(self, tokens: np.ndarray, position: int, state: dict) -> tuple[np.ndarray, dict]:
        feeds = {**state, "token": tokens.astype(np.int64), "position": np.array([position], np.int64)}
        logits, sk, sv = self.decoder.run(None, feeds)
        return logits, {**state, "self_k": sk, "self_v": sv}

    def select(self, state: dict, index: np.ndarray) -> dict:
        """Reorder/subset the batch axis (axis 1 of every [L,B,...] state tensor): beams, finished rows."""
        return {k: np.ascontiguousarray(v[:, index]) for k, v in state.items()}
