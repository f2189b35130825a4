"""PyTorch engine (factory): the runtime's engine seam over the PyTorch model, for parity tests and GPU work.

It needs the training checkpoint (`model.pt`) that the bundle was exported from: pass `checkpoint=`, or put it in
the bundle directory as `model.pt`. The runtime reaches it only through the backend registry (torch-cpu, torch-cuda).

Example:
    >>> engine = create_engine("torch-cpu", bundle, checkpoint="runs/teacher/model.pt")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecc.engines import Encoded


class TorchEngine:
    def __init__(self, bundle, precision: str = "fp32", device: str = "cpu", checkpoint: str | Path | None = None,
                 threads: int | None = None):
        import torch

        from .checkpoint import load_checkpoint

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
            gate, mask, mem = self.model.encode_pair(a, b)
        return Encoded(gate_prob=t.sigmoid(gate).float().cpu().numpy(), mask=t.sigmoid(mask).float().cpu().numpy(),
                       memory=mem)

    def initial_state(self, enc: Encoded) -> dict:
        ck = enc.memory["cross_k"]
        state = self.model.initial_state(ck.shape[1])
        return {**enc.memory, **{k: v.to(ck.device, ck.dtype) for k, v in state.items()}}

    def step(self, tokens: np.ndarray, position: int, state: dict):
        t = self.torch
        with t.inference_mode():
            tok = t.from_numpy(np.asarray(tokens, np.int64)).to(self.device)
            pos = t.tensor([position], device=self.device)
            mem = {k: state[k] for k in ("cross_k", "cross_v")}
            logits, new = self.model.step_dict(tok, pos, mem, {k: v for k, v in state.items() if k not in mem})
        return logits.float().cpu().numpy(), {**state, **new}

    def select(self, state: dict, index: np.ndarray) -> dict:
        idx = self.torch.from_numpy(np.asarray(index, np.int64)).to(self.device)
        return {k: v.index_select(1, idx) for k, v in state.items()}
