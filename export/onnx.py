"""Export a trained checkpoint to an edgecc bundle (encoder.onnx + decoder.onnx + vocab.json + manifest.json).

Export validates by default: the ONNX checker, the max abs difference of every output against PyTorch, and
identical greedy tokens (ONNX Runtime decode loop vs the PyTorch reference) on rendered pairs.

Example:
    >>> manifest = export_bundle("runs/teacher/model.pt", "bundles/teacher")   # raises if validation fails
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from edgecc.train.checkpoint import greedy, load_checkpoint
from edgecc.train.model import IMAGENET_MEAN, IMAGENET_STD
from torch import nn

from edgecc.bundle import Bundle, write_manifest
from edgecc.decoding import NO_CHANGE_CAPTION
from edgecc.vocab import END

CHECK_CAPTIONS = (
    "many houses are built along the road",
    "a road is built on the bareland",
    "some trees are removed",
    "two buildings appear at the top left",
    "there is no difference",
    "a large building with a parking lot is constructed at the bottom",
)


@dataclass(frozen=True)
class ExportOptions:
    opset: int = 17
    validate: bool = True
    check_pairs: int = 6
    atol: float = 1e-3  # max abs difference allowed between ONNX Runtime and PyTorch outputs
    name: str | None = None
    gate_threshold: float = 0.5
    # recommended decoding, stored in the manifest: chosen on LEVIR-CC-synth val (500 pairs), changed-subset CIDEr-D
    # greedy 0.577, beam 3 0.596, beam 3 with no length normalisation 0.629, beam 5 0.602, beam 8 0.573
    beam_size: int = 3
    length_penalty: float = 0.0


class _Encoder(nn.Module):
    """uint8 pre, post [B,S,S,3] -> gate_prob [B], mask [B,G,G], cross_k, cross_v [L,B,h,N,dh] (standard ops only)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, pre, post):
        gate, mask, mem = self.m.encode_pair(pre, post)
        return torch.sigmoid(gate), torch.sigmoid(mask), mem["cross_k"], mem["cross_v"]


class _Trunk(nn.Module):
    """Student, split form: uint8 img [B,S,S,3] -> tokens [B,N,dc] (one date; run on pre and post stacked)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, img):
        return self.m.trunk(img)


class _Fusion(nn.Module):
    """Student, split form: tokens ta, tb and their difference attention att [B,N,dc] (computed between the
    sessions by the fused kernel) -> gate_prob, mask, cross_k, cross_v."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, ta, tb, att):
        out = self.m.fuse(ta, tb, att)
        mem = self.m.decoder.memory(out.memory)
        return torch.sigmoid(out.gate), torch.sigmoid(out.mask), mem["cross_k"], mem["cross_v"]


class _Step(nn.Module):
    """token [B], position [1], cross_k/v [L,B,h,N,dh], *state [L,B,...] -> logits [B,V], *state_out."""

    def __init__(self, m, state_names):
        super().__init__()
        self.m, self.names = m, tuple(state_names)

    def forward(self, token, position, cross_k, cross_v, *state):
        logits, new = self.m.step_dict(token, position, {"cross_k": cross_k, "cross_v": cross_v},
                                       dict(zip(self.names, state)))
        return (logits, *(new[n] for n in self.names))


def check_pairs(n: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Rendered pairs for export checks: uint8 [n,S,S,3] x2."""
    from edgecc.train.synth import merge_specs, parse_caption, render_pair

    pres, posts = [], []
    for i in range(n):
        cap = CHECK_CAPTIONS[i % len(CHECK_CAPTIONS)]
        spec = merge_specs([parse_caption(cap.split())], int(cap != NO_CHANGE_CAPTION))
        pre, post, _ = render_pair(f"export_check_{i}", spec, size)
        pres.append(pre)
        posts.append(post)
    return np.stack(pres), np.stack(posts)


def _git_revision() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _export(module, args, path, opts, inputs, outputs, axes):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, path, opset_version=opts.opset, dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes)


def count_gflops(model, size: int, tokens: int = 12) -> float:
    """Forward GFLOPs per pair (multiply-add = 2 FLOPs): the encoder once plus `tokens` greedy decoder steps
    (12 ~ the mean LEVIR-CC caption, 7.9 words + END, rounded up)."""
    from torch.utils.flop_counter import FlopCounterMode

    pre = torch.zeros(1, size, size, 3, dtype=torch.uint8)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        _, _, mem = model.encode_pair(pre, pre)
        state = model.initial_state(1)
        for t in range(tokens):
            _, state = model.step_dict(torch.tensor([4]), torch.tensor([t]), mem, state)
    return round(fc.get_total_flops() / 1e9, 4)


def _check_out(checkpoint: Path, out: Path) -> None:
    """Before any work: `out` is replaced whole, so it must be a new path or an earlier bundle, never a folder of
    other files, the current folder, a folder holding the checkpoint, or a file."""
    from edgecc.bundle import MANIFEST

    real = out.resolve()
    if out.is_file():
        raise ValueError(f"{out}: is a file; export writes a bundle folder")
    if real == Path.cwd().resolve() or real in checkpoint.resolve().parents:
        raise ValueError(f"{out}: export replaces this folder whole, and it holds the current folder or the "
                         f"checkpoint {checkpoint}; give a new folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ValueError(f"{out}: a folder that is not an edgecc bundle (no {MANIFEST}); export replaces its folder "
                         "whole, so give a new or empty folder, or an earlier bundle")


def export_bundle(checkpoint: str | Path, out: str | Path, opts: ExportOptions = ExportOptions()) -> dict:
    """Write a validated bundle directory at `out` (replaced atomically); returns the manifest.

    Every model gives encoder.onnx + decoder.onnx. A model with a split encoder (model.SPLIT: the student) gives,
    besides, trunk.onnx, then the difference attention run by the runtime's fused kernel, then fusion.onnx;
    encoder.onnx stays the portable standard-op graph (CUDA, TensorRT).
    """
    out = Path(out)
    _check_out(Path(checkpoint), out)  # before loading anything
    model, vocab, ck = load_checkpoint(checkpoint)
    cfg = model.cfg
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        S = cfg.image_size
        pre = torch.zeros(2, S, S, 3, dtype=torch.uint8)
        mem_axes = {"cross_k": {1: "B"}, "cross_v": {1: "B"}}
        heads = ["gate_prob", "mask", "cross_k", "cross_v"]
        head_axes = {"gate_prob": {0: "B"}, "mask": {0: "B"}, **mem_axes}
        _export(_Encoder(model), (pre, pre), tmp / "encoder.onnx", opts, ["pre", "post"], heads,
                {"pre": {0: "B"}, "post": {0: "B"}, **head_axes})
        files = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
        if model.SPLIT:
            n_tok = cfg.grid**2
            tok = torch.randn(2, n_tok, cfg.dc)
            _export(_Trunk(model), (pre,), tmp / "trunk.onnx", opts, ["img"], ["tokens"],
                    {"img": {0: "B"}, "tokens": {0: "B"}})
            _export(_Fusion(model), (tok, tok, tok), tmp / "fusion.onnx", opts, ["ta", "tb", "att"], heads,
                    {"ta": {0: "B"}, "tb": {0: "B"}, "att": {0: "B"}, **head_axes})
            files.update(trunk="trunk.onnx", fusion="fusion.onnx")
        with torch.no_grad():
            _, _, mem = model.encode_pair(pre, pre)
            state = model.initial_state(2)
            _, state = model.step_dict(torch.zeros(2, dtype=torch.long), torch.tensor([0]), mem, state)
        names = list(state)
        axes = model.state_axes()
        _export(_Step(model, names), (torch.zeros(2, dtype=torch.long), torch.tensor([1]), mem["cross_k"],
                                      mem["cross_v"], *state.values()), tmp / "decoder.onnx", opts,
                ["token", "position", "cross_k", "cross_v", *names], ["logits", *(f"{n}_out" for n in names)],
                {"token": {0: "B"}, "logits": {0: "B"}, **mem_axes, **axes,
                 **{f"{n}_out": {k: v + "1" if v == "T" else v for k, v in axes[n].items()} for n in names}})
        vocab.save(tmp / "vocab.json")
        train_meta = ck.get("train", {})
        params = sum(p.numel() for p in model.parameters())
        gflops = count_gflops(model, S)
        manifest = write_manifest(tmp, {
            "name": opts.name or out.name,
            "arch": ck["arch"],
            "files": [*files.values(), "vocab.json"],
            "variants": {"fp32": {**files, "method": "none"}},
            "precision": "fp32",
            "opset": opts.opset,
            "vocab_sha256": vocab.sha256(),
            "vocab_size": len(vocab),
            "input": {"size": S, "bands": ["red", "green", "blue"], "dtype": "uint8", "layout": "NHWC",
                      "normalization": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "in_graph": True}},
            "mask_grid": cfg.grid,
            "decoder": {**model.decoder_manifest(), "max_len": cfg.max_len - 1, "memory": ["cross_k", "cross_v"]},
            **({"fusion": model.fusion_manifest()} if model.SPLIT else {}),
            "gate": {"threshold": opts.gate_threshold},
            "decoding": {"beam_size": opts.beam_size, "length_penalty": opts.length_penalty},
            "no_change_caption": NO_CHANGE_CAPTION,
            "model": cfg.to_dict(),
            "params": params,
            "gflops_per_pair": gflops,
            "training": {"dataset": train_meta.get("dataset"), "steps": train_meta.get("steps"),
                         "seconds": train_meta.get("seconds"),
                         "init": "EfficientNet-Lite0 ImageNet (frozen trunk)",
                         **{k: train_meta[k] for k in ("teacher_sha256",) if k in train_meta}},
            "source_revision": _git_revision(),
            "metrics": {},
        })
        if model.SPLIT:  # the trunk's "same" padding as Conv pads, not Pad copies; refused if outputs change
            from .fold_pads import fold_bundle

            fold_bundle(tmp, log=lambda _: None)
            manifest = Bundle.open(tmp).manifest
        if opts.validate:
            manifest["validation"] = validate_bundle(model, tmp, opts)
            write_manifest(tmp, manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def validate_bundle(model, root: Path, opts: ExportOptions) -> dict:
    """ONNX checker + output parity (both encoder forms for a student) + identical greedy tokens; raises ValueError
    on any failure."""
    import onnx

    from edgecc.decoding import DecodingOptions, decode
    from edgecc.engines.ort import OrtEngine

    bundle = Bundle.open(root)
    for name in bundle.variant("fp32").values():
        if name.endswith(".onnx"):
            onnx.checker.check_model(str(root / name), full_check=True)
    pre, post = check_pairs(opts.check_pairs, model.cfg.image_size)
    with torch.no_grad():
        ref = _Encoder(model).eval()(torch.from_numpy(pre), torch.from_numpy(post))
    diffs = {}
    names = ("gate", "mask", "cross_k", "cross_v")
    forms = ("standard", "split") if "fusion" in bundle.manifest else ("standard",)
    for form in forms:
        engine = OrtEngine(bundle, fusion=form)
        enc = engine.encode(pre, post)
        got = (enc.gate_prob, enc.mask, enc.memory["cross_k"], enc.memory["cross_v"])
        for n, r, g in zip(names, ref, got):
            diffs[f"{n}/{form}" if form == "split" else n] = float(np.abs(r.numpy() - g).max())
    engine = OrtEngine(bundle)
    # decoder parity: two steps from the initial state
    with torch.no_grad():
        mem = {"cross_k": ref[2], "cross_v": ref[3]}
        tok = torch.full((len(pre),), 1, dtype=torch.long)
        lg, st = model.step_dict(tok, torch.tensor([0]), mem, model.initial_state(len(pre)))
        lg2, _ = model.step_dict(lg.argmax(-1), torch.tensor([1]), mem, st)
    enc = engine.encode(pre, post)
    state = engine.initial_state(enc)
    l1, state = engine.step(tok.numpy(), 0, state)
    l2, _ = engine.step(lg.argmax(-1).numpy(), 1, state)
    diffs["logits"] = float(max(np.abs(l1 - lg.numpy()).max(), np.abs(l2 - lg2.numpy()).max()))
    bad = {k: v for k, v in diffs.items() if v > opts.atol}
    if bad:
        raise ValueError(f"{root}: ONNX outputs differ from PyTorch beyond {opts.atol}: {bad}")
    vocab = bundle.vocab()
    caps = decode(engine, vocab, pre, post, DecodingOptions(gate=False, max_len=model.cfg.max_len - 1))
    ref_tokens = greedy(model, torch.from_numpy(pre), torch.from_numpy(post)).tolist()
    for i, (c, r) in enumerate(zip(caps, ref_tokens)):
        r = tuple(r[: r.index(END)]) if END in r else tuple(r)
        if c.tokens != r:
            raise ValueError(f"{root}: greedy tokens differ on check pair {i}: onnx {c.tokens} vs torch {r}")
    return {"max_abs_diff": diffs, "greedy_tokens_identical": len(caps), "checker": "onnx.checker full_check",
            "encoder_forms": list(forms)}
