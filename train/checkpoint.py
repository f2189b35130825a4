"""Checkpoints and the model protocol: one table of architectures, one save, one load, one reference greedy.

Every factory model (the teacher `ChangeCaptioner`, the `Student`) implements `CaptionModel`, so export, the torch
engine and validation handle both without asking which one they hold.

    >>> model, vocab, ck = load_checkpoint("runs/student/model.pt")     # arch read from the file
    >>> tokens = greedy(model, pre, post)                                # uint8 [B,S,S,3] x2 -> ids [B,T]
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol

import torch

from edgecc._atomic import atomic_path
from edgecc.vocab import END, START, Vocab

from .model import ChangeCaptioner, ModelConfig
from .student import Student, StudentConfig

# arch id (stored in every checkpoint and manifest) -> (config class, model class)
ARCHS: dict[str, tuple[type, type]] = {
    ChangeCaptioner.ARCH: (ModelConfig, ChangeCaptioner),
    Student.ARCH: (StudentConfig, Student),
}


class CaptionModel(Protocol):
    """The seam export, the torch engine and validation use. Memory and state travel as named dicts."""

    ARCH: ClassVar[str]
    SPLIT: ClassVar[bool]  # exports the split encoder (trunk.onnx, the fused kernel, fusion.onnx) besides encoder.onnx
    cfg: ModelConfig | StudentConfig

    def encode_pair(self, pre, post) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """uint8 [B,S,S,3] x2 -> gate logit [B], mask logit [B,G,G], memory {"cross_k", "cross_v"}."""

    def initial_state(self, batch: int) -> dict: ...

    def state_axes(self) -> dict:
        """State name -> {axis: name} of its dynamic axes ("B", and "T" for a growing cache)."""

    def step_dict(self, token, position, mem: dict, state: dict) -> tuple[torch.Tensor, dict]: ...

    def decoder_manifest(self) -> dict:
        """The manifest's "decoder" entry: kind, layers, heads, head_dim, state shapes, state bytes."""


class CheckpointError(ValueError):
    """A checkpoint that is not a known architecture or does not fit it; one line naming the file."""


def save_checkpoint(model: CaptionModel, vocab: Vocab, path: str | Path, train_meta: dict | None = None) -> Path:
    """Write a self-describing checkpoint (architecture id, config, vocabulary, weights) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"arch": model.ARCH, "config": model.cfg.to_dict(), "vocab": list(vocab.itos),
                    "state_dict": model.state_dict(), "train": train_meta or {}}, tmp)
    return path


def load_checkpoint(path: str | Path) -> tuple[CaptionModel, Vocab, dict]:
    """-> (model in eval mode, vocab, checkpoint dict). Refuses an unknown architecture with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e.__class__.__name__})") from None
    arch = ck.get("arch") if isinstance(ck, dict) else type(ck).__name__
    if not isinstance(arch, str) or arch not in ARCHS:
        raise CheckpointError(f"{path}: checkpoint architecture {str(arch)[:40]!r} is not one of {sorted(ARCHS)}")
    config_cls, model_cls = ARCHS[arch]
    try:
        model = model_cls(config_cls(**ck["config"]))
        model.load_state_dict(ck["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # missing entries, unknown config keys, shapes
        raise CheckpointError(f"{path}: does not fit {arch}: {str(e).splitlines()[0] if str(e) else e!r}") from None
    specials = 4  # <pad> <start> <end> <unk> lead every stored vocabulary
    return model.eval(), Vocab(tuple(ck["vocab"][specials:])), ck


@torch.no_grad()
def greedy(model: CaptionModel, pre, post, max_len: int | None = None) -> torch.Tensor:
    """Reference greedy decoding (no gate) over the protocol: uint8 [B,S,S,3] x2 -> token ids [B,T] after <start>;
    finished rows repeat <end>. Export checks the ONNX decode loop against this, token by token."""
    _, _, mem = model.encode_pair(pre, post)
    B = pre.shape[0]
    state = model.initial_state(B)
    tok = torch.full((B,), START, dtype=torch.long)
    out, done = [], torch.zeros(B, dtype=torch.bool)
    for t in range(max_len or model.cfg.max_len - 1):
        logits, state = model.step_dict(tok, torch.tensor([t]), mem, state)
        tok = torch.where(done, torch.full_like(tok, END), logits.argmax(-1))
        out.append(tok)
        done |= tok == END
        if bool(done.all()):
            break
    return torch.stack(out, 1)
