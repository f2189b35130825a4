"""ONNX Runtime engine: CPU, CUDA and TensorRT execution providers over the same graphs.

Thread counts differ by CPU (the student's int8 trunk is faster on one thread on one 2-core Xeon and on two on a
2-core EPYC), so they come from, in order: the caller, this machine's tuning cache (`edgecc.tune`), the bundle's
manifest "runtime", and every core for the encoder / one thread for the decoder step.

Sessions are held by role (`engine.sessions`): "trunk", "fusion", "encoder", "decoder", "gate". `session_hook`
(role, session) -> session lets a tool stand something in for a session (calibration records feeds that way).

Example:
    >>> engine = OrtEngine(Bundle.open(), "fp32")            # or create_engine("ort-cpu", bundle)
    >>> enc = engine.encode(pre, post)                         # uint8 [B,S,S,3] x2
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np

from ..cpu import cpu
from .base import Encoded, StageTimer

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
    from ..tune import cache_dir

    return cache_dir() / "trt" / f"{sha}-trt{trt_version}-{precision}"


def _tokens(x: np.ndarray) -> np.ndarray:
    """A feature map [B,C,H,W] -> tokens [B,H*W,C]; anything else as it is."""
    return np.ascontiguousarray(x.reshape(*x.shape[:2], -1).transpose(0, 2, 1)) if x.ndim == 4 else x


class OrtEngine:
    def __init__(self, bundle, precision: str = "fp32", device: str = "cpu", encoder_threads: int | None = None,
                 decoder_threads: int | None = None, fusion: str | None = None, fused: bool | None = None,
                 batch_dates: bool = True, spin: bool = True, search_loop: bool | str = "auto", session_hook=None):
        """Args:
            encoder_threads, decoder_threads: intra-op threads (None: the manifest's runtime, else all / 1).
            fusion: "split" (trunk + fused kernel + fusion graph) or "standard" (one encoder graph).
            fused: the difference-attention kernel: None = EDGECC_FUSED decides, False = NumPy reference.
            batch_dates: both dates in one trunk call [2B,...] (True) or one call per date.
            spin: ORT's intra-op threads spin-wait for work (its default; the lowest latency on an idle CPU); False
                lets them sleep, which helps where several sessions' thread pools share few cores.
            search_loop: the bundle's in-graph search (manifest "decode_loop") for one pair: True from the first
                caption, "auto" from the second (one-shot runs then do not pay for building its session), False never.
            session_hook: (role, session) -> session-like object with `.run`, applied to every session built.
        """
        import onnxruntime as ort

        self.name = f"ort-{device}"
        self.bundle = bundle
        self.precision = precision
        self.timer: StageTimer | None = None
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
        self.fused = fused
        self.batch_dates = batch_dates
        if self.fusion == "split" and not split_ok:
            raise ValueError(f"{bundle.root}: this bundle has no split encoder (trunk + fusion graphs)")
        runtime = bundle.manifest.get("runtime", {})
        enc_threads = encoder_threads or runtime.get("encoder_threads") or cpu().cores  # usable, not installed
        dec_threads = decoder_threads or runtime.get("decoder_threads") or 1
        self.threads = {"encoder": int(enc_threads), "decoder": int(dec_threads)}
        self.spin = spin

        def session(role: str, threads: int, name: str | None = None):
            name = name or files[role]
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            if not spin:
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
            sess = ort.InferenceSession(str(bundle.path(name)), so, providers=providers)
            return session_hook(role, sess) if session_hook else sess

        s: dict = {}
        if self.fusion == "split":
            s["trunk"] = session("trunk", enc_threads)
            s["fusion"] = session("fusion", enc_threads)
            self.fusion_op = bundle.manifest["fusion"]
        else:
            s["encoder"] = session("encoder", enc_threads)
        # the change gate taught by real imagery (gate.onnx: both dates' trunk tokens -> gate_prob, mask) replaces the
        # fusion graph's gate where the bundle has it; the standard form then also runs the trunk for the tokens
        if "gate" in files:
            s["gate"] = session("gate", 1)
        # where the gate's tokens come from in the standard form: the encoder's own "ta"/"tb" outputs (the teacher),
        # else a trunk session beside it (the student, one extra trunk pass)
        self.encoder_outputs = ["gate_prob", "mask", *self.memory_names]
        if "gate" in s and self.fusion != "split":
            if {"ta", "tb"} <= {o.name for o in s["encoder"].get_outputs()}:
                self.encoder_outputs += ["ta", "tb"]
            else:
                s["trunk"] = session("trunk", enc_threads)
        s["decoder"] = session("decoder", dec_threads)
        self._sessions = s
        # a whole caption's search in one session call (manifest "decode_loop"), built on first use; only while the
        # variant's decoder is the one the loop was built from
        loop = (bundle.manifest.get("decode_loop") or {}).get("graphs", {}).get(precision) or {}
        fresh = loop.get("decoder_sha256") == bundle.manifest["files"].get(files["decoder"], {}).get("sha256")
        self._loop_name = loop.get("file") if device == "cpu" and fresh and loop.get("file") else None
        self._new_loop_session = lambda: session("decode_loop", dec_threads, self._loop_name)
        self._loop_mode = search_loop
        self._loop_lock = threading.Lock()
        if not search_loop:
            self._loop_name = None
        self.decoder_inputs = {i.name for i in s["decoder"].get_inputs()}  # a Mamba decoder takes no position
        # per token: which state tensors the decoder reads, and which it returns (in output order after logits)
        self._step_inputs = tuple(n for n in (*self.memory_names, *self.state_shapes) if n in self.decoder_inputs)
        self._takes_position = "position" in self.decoder_inputs
        self._state_names = tuple(self.state_shapes)

    # ------------------------------------------------------------------------------------------ roles

    @property
    def sessions(self) -> dict:
        """role -> session: "trunk", "fusion", "encoder", "decoder", "gate" (those this form runs)."""
        return dict(self._sessions)

    # the pre-role attribute names, kept working
    trunk = property(lambda self: self._sessions.get("trunk"))
    fuse = property(lambda self: self._sessions.get("fusion"))
    encoder = property(lambda self: self._sessions.get("encoder"))
    decoder = property(lambda self: self._sessions["decoder"])
    gate = property(lambda self: self._sessions.get("gate"))

    def _stage(self, name: str):
        return self.timer.stage(name) if self.timer is not None else contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------ the seam

    def trunk_tokens(self, pre: np.ndarray, post: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B,S,S,3] x2 -> trunk tokens float32 [B,N,dc] x2 (one call for both dates when batch_dates)."""
        trunk = self._sessions["trunk"]
        if self.batch_dates:
            with self._stage("preprocess"):
                img = np.concatenate([pre, post])  # [2B,S,S,3]; normalisation is in the graph
            with self._stage("encode"):
                t = trunk.run(None, {"img": img})[0]  # [2B,N,dc]
            return t[: len(pre)], t[len(pre):]
        with self._stage("encode"):
            return trunk.run(None, {"img": pre})[0], trunk.run(None, {"img": post})[0]

    def encode(self, pre: np.ndarray, post: np.ndarray) -> Encoded:
        """pre, post uint8 [B,S,S,3] RGB -> Encoded."""
        gate = self._sessions.get("gate")
        if self.fusion == "split":
            return self.encode_tokens(*self.trunk_tokens(pre, post))
        else:
            with self._stage("encode"):
                g, mask, *mem = self._sessions["encoder"].run(self.encoder_outputs, {"pre": pre, "post": post})
            if gate is not None and "ta" in self.encoder_outputs:
                *mem, ta, tb = mem
                ta, tb = _tokens(ta), _tokens(tb)
            elif gate is not None:
                ta, tb = self.trunk_tokens(pre, post)
        if gate is not None:
            with self._stage("fusion"):
                g, mask = gate.run(None, {"ta": ta, "tb": tb})  # [B], [B,G,G]
        return Encoded(gate_prob=g, mask=mask, memory=dict(zip(self.memory_names, mem)))

    # ------------------------------------------------------------------------------------------ reference caching
    # `edgecc watch` encodes each reference tile once: trunk_images(tile) is cached, then per frame one trunk pass
    # for the frame and encode_tokens(cached, frame tokens) (split form only; `can_encode_tokens` says so)

    @property
    def can_encode_tokens(self) -> bool:
        return self.fusion == "split"

    def trunk_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B,S,S,3] of one date -> trunk tokens float32 [B,N,dc]."""
        with self._stage("encode"):
            return self._sessions["trunk"].run(None, {"img": images})[0]

    def encode_tokens(self, ta: np.ndarray, tb: np.ndarray) -> Encoded:
        """Trunk tokens of both dates [B,N,dc] x2 -> Encoded: the fused kernel, the fusion graph, the gate."""
        if self.fusion != "split":
            raise ValueError("encode_tokens needs the split encoder (trunk + fusion graphs)")
        from edgecc.fusion import diff_attention

        with self._stage("fusion"):
            att = diff_attention(ta, tb, self.fusion_op["heads"], self.fusion_op["topk"], fused=self.fused)
            g, mask, *mem = self._sessions["fusion"].run(None, {"ta": ta, "tb": tb, "att": att})
            gate = self._sessions.get("gate")
            if gate is not None:
                g, mask = gate.run(None, {"ta": ta, "tb": tb})  # [B], [B,G,G]
        return Encoded(gate_prob=g, mask=mask, memory=dict(zip(self.memory_names, mem)))

    def initial_state(self, enc: Encoded) -> dict[str, np.ndarray]:
        b = len(enc.gate_prob)
        zeros = {n: np.zeros([b if d == "B" else d for d in shape], np.float32) for n, shape in
                 self.state_shapes.items()}
        return {**enc.memory, **zeros}

    def step(self, tokens: np.ndarray, position: int, state: dict) -> tuple[np.ndarray, dict]:
        feeds = {n: state[n] for n in self._step_inputs}
        feeds["token"] = tokens if tokens.dtype == np.int64 else tokens.astype(np.int64)
        if self._takes_position:
            feeds["position"] = np.array([position], np.int64)
        logits, *new = self._sessions["decoder"].run(None, feeds)
        if self.timer is not None:
            self.timer.count("steps")
        out = dict(state)
        out.update(zip(self._state_names, new))
        return logits, out

    def search_loop(self, state: dict, opts) -> list[list[int]] | None:
        """Greedy or beam search (`opts`: DecodingOptions) for a batch of one pair in one session call: an ONNX
        Loop over the decoder step that gives `edgecc.decoding`'s tokens (up to and with <end>). None where the
        bundle has no loop for this variant or the batch holds more pairs (the Python search then runs)."""
        if self._loop_name is None or next(iter(state.values())).shape[1] != 1:
            return None
        from edgecc.vocab import START

        if "decode_loop" not in self._sessions:
            with self._loop_lock:  # a Captioner may be shared by threads: one session, built once
                if "decode_loop" not in self._sessions:
                    if self._loop_mode == "auto":  # the first caption runs the Python search; the loop from the 2nd
                        self._loop_mode = True
                        return None
                    self._sessions["decode_loop"] = self._new_loop_session()
        k = opts.beam_size
        if k > 1:
            state = self.select(state, np.zeros(k, np.int64))  # K identical beams, as beam_search starts
        feeds = {n: state[n] for n in self._step_inputs}
        feeds["token"] = np.full(k, START, np.int64)
        feeds["max_len"] = np.array(opts.max_len, np.int64)
        feeds["length_penalty"] = np.array(opts.length_penalty, np.float64)
        best, n_tokens, steps = self._sessions["decode_loop"].run(None, feeds)
        if self.timer is not None:
            self.timer.count("steps", int(steps))  # decoder steps run inside the loop
        return [best[: int(n_tokens)].tolist()]

    def select(self, state: dict, index: np.ndarray) -> dict:
        """Reorder/subset the batch axis (axis 1 of every [L,B,...] state tensor): beams, finished rows."""
        return {k: np.ascontiguousarray(v[:, index]) for k, v in state.items()}
