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


def _tokens(x: np.ndarray) -> np.ndarray:
    """A feature map [B,C,H,W] -> tokens [B,H*W,C]; anything else as it is."""
    return np.ascontiguousarray(x.reshape(*x.shape[:2], -1).transpose(0, 2, 1)) if x.ndim == 4 else x


class OrtEngine:
    def __init__(self, bundle, precision: str = "fp32", device: str = "cpu", encoder_threads: int | None = None,
                 decoder_threads: int = 1, fusion: str | None = None, fused: bool | None = None):
        import onnxruntime as ort

        self.name = f"ort-{device}"
        self.bundle = bundle
        files = bundle.variant(precision)
        dec_cfg = bundle.manifest["decoder"]
        self.layers, self.heads, self.head_dim = dec_cfg["layers"], dec_cfg["heads"], dec_cfg["head_dim"]
        self.memory_names = tuple(dec_cfg["memory"])
        # per-sequence decoder state, [L,"B",...] with 0 on an axis that grows a token a step (a KV cache)
        self.state_shapes = dec_cfg.get("state") or {n: [self.layers, "B", self.heads, 0, self.head_dim]
                                                     for n in ("self_k", "self_v")}
        # the encoder's form: "split" (trunk session, fused difference-attention kernel, fusion session) where the
        # bundle has it and on CPU; "standard" (one standard-op graph) elsewhere
        split_ok = "trunk" in files and "fusion" in files
        self.fusion = fusion or ("split" if split_ok and device == "cpu" else "standard")
        self.fused = fused  # the difference-attention kernel: None = EDGECC_FUSED decides, False = NumPy reference
        if self.fusion == "split" and not split_ok:
            raise ValueError(f"{bundle.root}: this bundle has no split encoder (trunk + fusion graphs)")

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

        # the bundle may recommend a count measured for its size: the student's small trunk runs faster on one
        # thread than on two here (encode p50 4.2 vs 7.4 ms), the teacher's on every core
        threads = encoder_threads or bundle.manifest.get("runtime", {}).get("encoder_threads") or os.cpu_count() or 1
        if self.fusion == "split":
            self.trunk = session(files["trunk"], threads)
            self.fuse = session(files["fusion"], threads)
            self.fusion_op = bundle.manifest["fusion"]
        else:
            self.encoder = session(files["encoder"], threads)
        # the change gate taught by real imagery (gate.onnx: both dates' trunk tokens -> gate_prob, mask) replaces the
        # fusion graph's gate where the bundle has it; the standard form then also runs the trunk for the tokens
        self.gate = session(files["gate"], 1) if "gate" in files else None
        # where the gate's tokens come from in the standard form: the encoder's own "ta"/"tb" outputs (the teacher),
        # else a trunk session beside it (the student, one extra trunk pass)
        self.encoder_outputs = ["gate_prob", "mask", *self.memory_names]
        if self.gate is not None and self.fusion != "split":
            if {"ta", "tb"} <= {o.name for o in self.encoder.get_outputs()}:
                self.encoder_outputs += ["ta", "tb"]
            else:
                self.trunk = session(files["trunk"], threads)
        self.decoder = session(files["decoder"], decoder_threads)
        self.decoder_inputs = {i.name for i in self.decoder.get_inputs()}  # a Mamba decoder takes no position

    def encode(self, pre: np.ndarray, post: np.ndarray) -> Encoded:
        """pre, post uint8 [B,S,S,3] RGB -> Encoded."""
        if self.fusion == "split":
            from edgecc.fusion import diff_attention

            t = self.trunk.run(None, {"img": np.concatenate([pre, post])})[0]  # [2B,N,dc]
            ta, tb = t[: len(pre)], t[len(pre):]
            att = diff_attention(ta, tb, self.fusion_op["heads"], self.fusion_op["topk"], fused=self.fused)
            gate, mask, *mem = self.fuse.run(None, {"ta": ta, "tb": tb, "att": att})
        else:
            gate, mask, *mem = self.encoder.run(self.encoder_outputs, {"pre": pre, "post": post})
            if self.gate is not None and "ta" in self.encoder_outputs:
                *mem, ta, tb = mem
                ta, tb = _tokens(ta), _tokens(tb)
            elif self.gate is not None:
                t = self.trunk.run(None, {"img": np.concatenate([pre, post])})[0]
                ta, tb = t[: len(pre)], t[len(pre):]
        if self.gate is not None:
            gate, mask = self.gate.run(None, {"ta": ta, "tb": tb})  # [B], [B,G,G]
        return Encoded(gate_prob=gate, mask=mask, memory=dict(zip(self.memory_names, mem)))

    def initial_state(self, enc: Encoded) -> dict[str, np.ndarray]:
        b = len(enc.gate_prob)
        zeros = {n: np.zeros([b if d == "B" else d for d in shape], np.float32) for n, shape in
                 self.state_shapes.items()}
        return {**enc.memory, **zeros}

    def step(self, tokens: np.ndarray, position: int, state: dict) -> tuple[np.ndarray, dict]:
        feeds = {**state, "token": tokens.astype(np.int64), "position": np.array([position], np.int64)}
        feeds = {k: v for k, v in feeds.items() if k in self.decoder_inputs}
        logits, *new = self.decoder.run(None, feeds)
        return logits, {**state, **dict(zip(self.state_shapes, new))}

    def select(self, state: dict, index: np.ndarray) -> dict:
        """Reorder/subset the batch axis (axis 1 of every [L,B,...] state tensor): beams, finished rows."""
        return {k: np.ascontiguousarray(v[:, index]) for k, v in state.items()}
