"""Training the teacher on LEVIR-CC-synth (or the real LEVIR-CC layout) with a frozen ImageNet Lite0 trunk.

The trunk is frozen (it keeps what ImageNet taught it about real imagery), so its features are computed once per
rendered pair and cached on disk; the change block, heads and decoder then train on the cache at CPU speed.

Example:
    >>> opts = TrainOptions(captions="../shared/data/levircc/LevirCCcaptions.json", out="runs/teacher", steps=3000)
    >>> ckpt_path = train(opts)                      # runs/teacher/model.pt
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgecc._atomic import make_dir
from edgecc.vocab import PAD, Vocab

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import DATASET_ID_SYNTH, RealDataset, SynthDataset, build_vocab, downsample_mask, load_captions
from .model import ChangeCaptioner, ModelConfig


@dataclass(frozen=True)
class TrainOptions:
    captions: str
    out: str = "runs/teacher"
    data_root: str | None = None  # a real LEVIR-CC root; None -> LEVIR-CC-synth
    steps: int = 3000
    batch: int = 64
    lr: float = 5e-4
    variants: int = 2  # renders per changed training pair (nuisance/layout differ)
    cache_dir: str = "cache"
    seed: int = 0
    threads: int = 2
    max_len: int = 40
    limit: int | None = None  # use only the first N pairs per split (smoke runs and tests)
    init: str | None = None  # continue from this checkpoint's weights (same architecture and vocabulary)
    log_every: int = 50


def _tokens(vocab: Vocab, captions, max_len: int) -> np.ndarray:
    """-> int64 [5, max_len] framed ids padded with PAD."""
    out = np.full((len(captions), max_len), PAD, dtype=np.int64)
    for i, c in enumerate(captions):
        ids = vocab.encode(list(c), max_len)
        out[i, : len(ids)] = ids
    return out


def _trunk_session(model: ChangeCaptioner, threads: int):
    """The frozen trunk as an ONNX Runtime session: the runtime's own kernels, and flat memory over 10k+ pairs
    (the eager PyTorch loop grew by ~1 MB a pair on this CPU)."""
    import tempfile
    import warnings

    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "trunk.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.trunk.eval(), (torch.zeros(2, *[model.cfg.image_size] * 2, 3, dtype=torch.uint8),),
                          path, input_names=["img"], output_names=["f"], dynamic_axes={"img": {0: "B"}, "f": {0: "B"}},
                          dynamo=False, opset_version=17)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def build_cache(model: ChangeCaptioner, dataset, records, variants_changed: int, path: Path, threads: int = 2) -> dict:
    """Render (or read) each pair, run the frozen trunk, store fp16 features.

    Returns arrays: fa, fb [N,C,G,G] fp16; mask [N,G,G] fp16 (changed fraction, NaN if the data has no mask);
    idx [N] record index.
    """
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    jobs = [(i, v) for i, r in enumerate(records) for v in range(variants_changed if r.changeflag else 1)]
    grid, C = model.cfg.grid, model.cfg.trunk_channels
    fa = np.zeros((len(jobs), C, grid, grid), np.float16)
    fb = np.zeros_like(fa)
    masks = np.zeros((len(jobs), grid, grid), np.float16)
    session = _trunk_session(model, threads)
    t0 = time.time()
    for j, (i, v) in enumerate(jobs):
        pre, post, mask = dataset.images(records[i], v)
        f = session.run(None, {"img": np.stack([pre, post])})[0]  # [2,C,G,G]
        fa[j], fb[j] = f[0], f[1]
        masks[j] = downsample_mask(mask, grid) if mask is not None else np.nan
        if j % 1000 == 0:
            print(f"  cache {path.name}: {j}/{len(jobs)} pairs, {time.time() - t0:.0f}s", flush=True)
    out = {"fa": fa, "fb": fb, "mask": masks, "idx": np.array([i for i, _ in jobs], dtype=np.int64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def _lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(opts: TrainOptions) -> Path:
    make_dir(Path(opts.out))  # a bad --out fails now, not after the feature-cache pass (minutes to hours)
    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    rng = np.random.default_rng(opts.seed)
    records = load_captions(opts.captions)
    vocab = build_vocab(records)
    cfg = ModelConfig(vocab_size=len(vocab), max_len=opts.max_len)
    model = ChangeCaptioner(cfg)
    model.trunk.load_imagenet()
    if opts.init:
        start, start_vocab, _ = load_checkpoint(opts.init)
        if start_vocab != vocab or start.cfg != cfg:
            raise CheckpointError(f"{opts.init}: another vocabulary or configuration; cannot continue from it")
        model.load_state_dict(start.state_dict())
    model.trunk.eval().requires_grad_(False)

    def split(name):
        if opts.data_root:
            ds = RealDataset(opts.data_root, name)
            recs = ds.records
        else:
            recs = [r for r in records if r.split == name]
            ds = SynthDataset(recs, cfg.image_size)
        return ds, recs[: opts.limit] if opts.limit else recs

    data_id = DATASET_ID_SYNTH if not opts.data_root else "levircc"
    synth_src = "".join(p.read_text() for p in sorted((Path(__file__).parent / "synth").glob("*.py")))
    key = hashlib.sha256(  # everything that changes the cached features, the renderer's source included
        json.dumps([data_id, opts.captions, opts.limit, opts.variants, cfg.trunk_blocks, cfg.image_size,
                    hashlib.sha256(synth_src.encode()).hexdigest(), opts.data_root,
                    hashlib.sha256(Path(opts.captions).read_bytes()).hexdigest()]).encode()  # an edited file too
    ).hexdigest()[:12]
    caches, tokens = {}, {}
    for name, nvar in (("train", opts.variants), ("val", 1)):
        ds, recs = split(name)
        caches[name] = build_cache(
            model, ds, recs, nvar, Path(opts.cache_dir) / f"{data_id}-{name}-{key}.npz", opts.threads
        )
        tokens[name] = np.stack([_tokens(vocab, r.captions, cfg.max_len) for r in recs])  # [R,5,T]
        caches[name]["flag"] = np.array([recs[i].changeflag for i in caches[name]["idx"]], dtype=np.float32)

    params = [p for n, p in model.named_parameters() if not n.startswith("trunk.")]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.01)
    tr = caches["train"]
    n = len(tr["idx"])
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "train_log.jsonl", "w")
    model.change.train()
    model.decoder.train()
    t0 = time.time()
    for step in range(opts.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, opts.steps, opts.lr)
        sel = rng.integers(0, n, opts.batch)
        losses, _ = _losses(model, tr, tokens["train"], sel, rng)
        loss = losses["caption"] + losses["gate"] + losses["mask"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % opts.log_every == 0 or step == opts.steps - 1:
            row = {"step": step, "s": round(time.time() - t0, 1), **{k: round(v.item(), 4) for k, v in losses.items()}}
            if step % (opts.log_every * 10) == 0 or step == opts.steps - 1:
                row.update(validate(model, caches["val"], tokens["val"]))
                model.change.train()
                model.decoder.train()
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
    meta = {**asdict(opts), "dataset": data_id, "seconds": round(time.time() - t0, 1)}
    return save_checkpoint(model.eval(), vocab, out_dir / "model.pt", meta)


def _losses(model, cache, tokens, sel, rng) -> tuple[dict, torch.Tensor]:
    fa = torch.from_numpy(cache["fa"][sel].astype(np.float32))
    fb = torch.from_numpy(cache["fb"][sel].astype(np.float32))
    flag = torch.from_numpy(cache["flag"][sel])
    rec = cache["idx"][sel]
    tok = torch.from_numpy(tokens[rec, rng.integers(0, tokens.shape[1], len(sel))])  # [B,T]
    tok = tok[:, : int((tok != PAD).sum(1).max())]
    memory, gate, mask_logit = model.fuse(fa, fb)
    ck, cv = model.decoder.cross_kv(memory)
    logits = model.decoder(tok[:, :-1], ck, cv)  # [B,T-1,V]
    ce = F.cross_entropy(
        logits.transpose(1, 2), tok[:, 1:], ignore_index=PAD, reduction="none", label_smoothing=0.1
    )  # [B,T-1]
    w = (0.2 + 0.8 * flag).unsqueeze(1) * (tok[:, 1:] != PAD)  # unchanged pairs weigh less: the gate answers them
    mask_t = torch.from_numpy(cache["mask"][sel].astype(np.float32))
    has_mask = ~torch.isnan(mask_t)
    mask_loss = (
        F.binary_cross_entropy_with_logits(mask_logit[has_mask], mask_t[has_mask])
        if bool(has_mask.any())
        else mask_logit.sum() * 0
    )
    losses = {
        "caption": (ce * w).sum() / w.sum(),
        "gate": F.binary_cross_entropy_with_logits(gate, flag),
        "mask": mask_loss,
    }
    return losses, gate  # gate logits [B] for validation


@torch.no_grad()
def validate(model, cache, tokens, batch: int = 256) -> dict:
    model.eval()
    n = len(cache["idx"])
    correct, closs, k = 0, 0.0, 0
    rng = np.random.default_rng(0)
    for s in range(0, n, batch):
        sel = np.arange(s, min(n, s + batch))
        losses, gate = _losses(model, cache, tokens, sel, rng)
        correct += int(((gate > 0).float() == torch.from_numpy(cache["flag"][sel])).sum())
        closs += float(losses["caption"]) * len(sel)
        k += len(sel)
    return {"val_gate_acc": round(correct / max(k, 1), 4), "val_caption_loss": round(closs / max(k, 1), 4)}
