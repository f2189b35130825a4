"""A tiny, seeded, randomly initialised teacher exported as a real bundle: the whole pipeline in seconds on CPU.

    python tests/data/make_tiny_bundle.py OUT_DIR      # writes OUT_DIR/model.pt and OUT_DIR/bundle/
"""

from __future__ import annotations

import sys
from pathlib import Path

TINY = dict(trunk_blocks=6, d_model=32, change_dim=16, change_blocks=1, dec_layers=1, dec_heads=2, dec_ff=64,
            max_len=16)
WORDS = ("there", "is", "no", "difference", "many", "houses", "are", "built", "along", "the", "road", "a", "trees",
         "removed", "some", "buildings", "appear", "on", "bareland")


def make_tiny_bundle(out: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """-> (checkpoint path, bundle directory). Needs the factory extra (torch)."""
    import torch
    from edgecc.export.onnx import export_bundle
    from edgecc.train.checkpoint import save_checkpoint
    from edgecc.train.model import ChangeCaptioner, ModelConfig

    from edgecc.vocab import Vocab

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab = Vocab(WORDS)
    model = ChangeCaptioner(ModelConfig(vocab_size=len(vocab), **TINY)).eval()
    ckpt = save_checkpoint(model, vocab, out / "model.pt", {"dataset": "none (random init, tests only)"})
    export_bundle(ckpt, out / "bundle")
    return ckpt, out / "bundle"


if __name__ == "__main__":
    print(make_tiny_bundle(sys.argv[1]))
