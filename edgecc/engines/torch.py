"""PyTorch engine (factory side): the same seam over the PyTorch model, for parity tests and GPU work.

It needs the training checkpoint (`model.pt`) that the bundle was exported from: pass `checkpoint=`, or put it in
the bundle directory as `model.pt`. torch is imported here only, never by the runtime.

Example:
    >>> engine = create_engine("torch-cpu", bundle, checkpoint="runs/teacher/model.pt")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Encoded


class TorchEngine:
    def __init__(self, bundle, precision: str = "fp32", device: str = "cpu", checkpoint: str | Path | None = None,
                 threads: int | None = None):
        import torch

        from edgecc.train.train import load_checkpoint

        if precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"torch engine runs fp32/fp16/bf16, not {precision}")
        ckpt = Path(checkpoint) if checkpoint else bundle.path("model.pt")
        if not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt}: the torch engine needs the bundle's training checkpoint")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.name = f"torch-{device}"
        self.device = torch.device(device)
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        model, _, _ = load_checkpoint(ckpt)
        self.model = model.to(self.device, self.dtype).eval()

    def encode(self, pre: np.ndarray, post: np.ndarray) -> Encoded:
        t = self.torch
        with t.inference_mode():
            a, b = (t.from_numpy(x).to(self.device) for x in (pre, post))
            memory, gate, mask = self.model.fuse(*self.model.trunk_pair(a, b))
            ck, cv = self.model.decoder.cross_kv(memory)
        return Encoded(gate_prob=t.sigmoid(gate).float().cpu().numpy(), mask=t.sigmoid(mask).float().cpu().numpy(),
                       memory={"cross_k": ck, "cross_v": cv})

    def initial_state(self, enc: Encoded) -> dict:
        ck = enc.memory["cross_k"]
        empty = ck.new_zeros(*ck.shape[:3], 0, ck.shape[-1])  # [L,B,h,0,dh]
        return {**enc.memory, "self_k": empty, "self_v": empty}

    def step(self, tokens: np.ndarray, position: int, state: dict):
        t = self.torch
        with t.inference_mode():
            tok = t.from_numpy(np.asarray(tokens, np.int64)).to(self.device)
            pos = t.tensor([position], device=self.device)
            logits, sk, sv = self.model.decoder.step(tok, pos, state["cross_k"], state["cross_v"], state["self_k"],
                                                     state["self_v"])
        return logits.float().cpu().numpy(), {**state, "self_k": sk, "self_v": sv}

    def select(self, state: dict, index: np.ndarray) -> dict:
        idx = self.torch.from_numpy(np.asarray(index, np.int64)).to(self.device)
        return {k: v.index_select(1, idx) for k, v in state.items()}
