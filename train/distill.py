"""Distilling the teacher into an edge student on LEVIR-CC-synth.

One cache pass renders each training pair once and stores, per pair: the student trunk's frozen Lite0 features at
the student resolution (several truncation depths, so trunk variants train without re-rendering), the teacher's
change features, gate and mask logits, and decoder memory. Training then matches the student to the teacher:
change-block features and memory tokens (MSE through small adapters), token-level KL on the decoder distributions
(teacher forced on the same caption), gate and mask heads (soft teacher targets beside the hard labels).

Example:
    >>> opts = DistillOptions(captions="../shared/data/levircc/LevirCCcaptions.json", teacher="runs/t1/model.pt",
    ...                       decoder="mamba", out="runs/s-mamba", steps=2000)
    >>> ckpt = distill(opts)                         # runs/s-mamba/model.pt
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgecc._atomic import make_dir
from edgecc.vocab import PAD

from .checkpoint import load_checkpoint, save_checkpoint
from .data import DATASET_ID_SYNTH, SynthDataset, downsample_mask, load_captions
from .student import Student, StudentConfig
from .train import _lr, _tokens

TAPS = (8, 10, 11)  # Lite0 depths cached for the student trunk variants


@dataclass(frozen=True)
class DistillOptions:
    captions: str
    teacher: str = "runs/t1/model.pt"
    out: str = "runs/student"
    decoder: str = "mamba"
    trunk_blocks: int = 8
    input_pool: int = 2
    steps: int = 2000
    batch: int = 64
    lr: float = 1e-3
    variants: int = 3  # renders per changed training pair (as the teacher)
    cache_dir: str = "cache"
    seed: int = 0
    threads: int = 1  # measured: 1 thread beats 2 on a shared 2-core CPU (OpenMP spin under contention)
    limit: int | None = None  # first N pairs per split (smoke runs and tests)
    kd_weight: float = 1.0  # token-level KL
    feat_weight: float = 1.0  # change features + memory tokens
    temperature: float = 2.0
    log_every: int = 50
    config: tuple = ()  # extra StudentConfig fields as (name, value) pairs


class _Taps(nn.Module):
    """uint8 [B,S,S,3] -> Lite0 features after each depth in TAPS (the student trunk, frozen part)."""

    def __init__(self, pool: int):
        super().__init__()
        from .student import StudentTrunk

        self.t = StudentTrunk(StudentConfig(vocab_size=1, trunk_blocks=max(TAPS), input_pool=pool))
        self.t.lite.load_imagenet()

    def forward(self, img):
        return self.t.features(img, TAPS)


def _session(module: nn.Module, size: int, n_out: int, threads: int):
    import tempfile
    import warnings

    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "m.onnx"
    names = [f"o{i}" for i in range(n_out)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(2, size, size, 3, dtype=torch.uint8),), path,
                          input_names=["img"], output_names=names,
                          dynamic_axes={"img": {0: "B"}, **{n: {0: "B"} for n in names}}, dynamo=False,
                          opset_version=17)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def build_cache(teacher, dataset, records, variants_changed: int, pool: int, path: Path, threads: int = 2,
                chunk: int = 16) -> dict:
    """Render each pair once; store student taps and teacher outputs (fp16). Arrays keyed by name, [N,...]."""
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    jobs = [(i, v) for i, r in enumerate(records) for v in range(variants_changed if r.changeflag else 1)]
    S = teacher.cfg.image_size
    t_trunk = _session(teacher.trunk, S, 1, threads)
    taps = _session(_Taps(pool), S, len(TAPS), threads)
    out: dict[str, list] = {}
    t0 = time.time()
    for s in range(0, len(jobs), chunk):
        part = jobs[s : s + chunk]
        imgs = [dataset.images(records[i], v) for i, v in part]
        pre = np.stack([im[0] for im in imgs])
        post = np.stack([im[1] for im in imgs])
        both = np.concatenate([pre, post])
        tf = torch.from_numpy(t_trunk.run(None, {"img": both})[0])  # [2b,C,16,16]
        with torch.no_grad():
            fused = teacher.change(tf[: len(part)], tf[len(part):])
            tmem, tgate, tmask = fused
            x = _teacher_feat(teacher, tf[: len(part)], tf[len(part):])
        grid = None
        for depth, f in zip(TAPS, taps.run(None, {"img": both})):
            out.setdefault(f"a{depth}", []).append(f[: len(part)].astype(np.float16))
            out.setdefault(f"b{depth}", []).append(f[len(part):].astype(np.float16))
            grid = f.shape[-1]
        out.setdefault("t_mem", []).append(tmem.numpy().astype(np.float16))
        out.setdefault("t_gate", []).append(tgate.numpy().astype(np.float32))
        out.setdefault("t_mask", []).append(F.avg_pool2d(tmask.sigmoid().unsqueeze(1), tmask.shape[-1] // grid)
                                            .squeeze(1).numpy().astype(np.float16))
        out.setdefault("t_feat", []).append(F.adaptive_avg_pool2d(x, grid).numpy().astype(np.float16))
        out.setdefault("mask", []).append(np.stack([downsample_mask(im[2], grid) for im in imgs]).astype(np.float16))
        if s % (chunk * 64) == 0:
            print(f"  cache {path.name}: {s}/{len(jobs)} pairs, {time.time() - t0:.0f}s", flush=True)
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    arrays["idx"] = np.array([i for i, _ in jobs], dtype=np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return arrays


def _teacher_feat(teacher, fa, fb):
    """The teacher change block's features x [B,dc,G,G] (before its heads): the feature-matching target."""
    c = teacher.change
    norms = (fa.norm(dim=1, keepdim=True) * fb.norm(dim=1, keepdim=True)).clamp_min(1e-6)
    cos = (fa * fb).sum(1, keepdim=True) / norms
    pa, pb = c.proj(fa), c.proj(fb)
    return c.blocks(c.mix(torch.cat([pa, pb, pb - pa, cos], 1)))


class Distiller(nn.Module):
    """The student plus training-only adapters onto the teacher's feature spaces."""

    def __init__(self, student: Student, teacher_dc: int, teacher_d: int):
        super().__init__()
        self.student = student
        self.feat_adapter = nn.Conv2d(student.cfg.dc, teacher_dc, 1)
        self.mem_adapter = nn.Linear(student.cfg.d_model, teacher_d)


def _batch(cache, tokens, sel, rng, depth):
    f = {k: torch.from_numpy(cache[k][sel].astype(np.float32)) for k in (f"a{depth}", f"b{depth}", "t_mem",
                                                                           "t_feat", "t_mask", "mask")}
    f["flag"] = torch.from_numpy(cache["flag"][sel])
    f["t_gate"] = torch.from_numpy(cache["t_gate"][sel])
    tok = torch.from_numpy(tokens[cache["idx"][sel], rng.integers(0, tokens.shape[1], len(sel))])
    f["tok"] = tok[:, : int((tok != PAD).sum(1).max())]
    return f


def _losses(dist: Distiller, teacher, b: dict, opts: DistillOptions) -> dict:
    s = dist.student
    depth = s.cfg.trunk_blocks
    ta, tb = s.trunk.project(b[f"a{depth}"]), s.trunk.project(b[f"b{depth}"])
    out = s.fuse(ta, tb)
    tok, flag = b["tok"], b["flag"]
    logits = s.decoder(tok[:, :-1], s.decoder.memory(out.memory))  # [B,T-1,V]
    with torch.no_grad():
        ck, cv = teacher.decoder.cross_kv(b["t_mem"])
        t_logits = teacher.decoder(tok[:, :-1], ck, cv)
    tgt = tok[:, 1:]
    w = (0.2 + 0.8 * flag).unsqueeze(1) * (tgt != PAD)
    ce = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=PAD, reduction="none", label_smoothing=0.1)
    T = opts.temperature
    kl = F.kl_div(F.log_softmax(logits / T, -1), F.log_softmax(t_logits / T, -1), log_target=True,
                  reduction="none").sum(-1) * T * T  # [B,T-1]
    gate_soft = torch.sigmoid(b["t_gate"])
    feat = F.mse_loss(dist.feat_adapter(out.feat), b["t_feat"]) / b["t_feat"].var().clamp_min(1e-6)
    mem = F.mse_loss(dist.mem_adapter(out.tokens), b["t_mem"]) / b["t_mem"].var().clamp_min(1e-6)
    return {
        "caption": (ce * w).sum() / w.sum(),
        "kd": opts.kd_weight * (kl * w).sum() / w.sum(),
        "gate": 0.5 * F.binary_cross_entropy_with_logits(out.gate, flag)
        + 0.5 * F.binary_cross_entropy_with_logits(out.gate, gate_soft),
        "mask": F.binary_cross_entropy_with_logits(out.mask, b["mask"])
        + 0.5 * F.binary_cross_entropy_with_logits(out.mask, b["t_mask"]),
        "feat": opts.feat_weight * (feat + mem),
        "_gate_logit": out.gate.detach(),
    }


def distill(opts: DistillOptions) -> Path:
    make_dir(Path(opts.out))  # a bad --out fails now, not after the feature-cache pass (minutes to hours)
    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    rng = np.random.default_rng(opts.seed)
    teacher, vocab, tck = load_checkpoint(opts.teacher)
    teacher.eval().requires_grad_(False)
    records = load_captions(opts.captions)
    cfg = StudentConfig(vocab_size=len(vocab), decoder=opts.decoder, trunk_blocks=opts.trunk_blocks,
                        input_pool=opts.input_pool, max_len=teacher.cfg.max_len, **dict(opts.config))
    if cfg.trunk_blocks not in TAPS:
        raise ValueError(f"trunk_blocks {cfg.trunk_blocks} is not cached: choose one of {TAPS}")
    student = Student(cfg)
    student.trunk.lite.load_imagenet()
    student.trunk.lite.eval().requires_grad_(False)
    dist = Distiller(student, teacher.cfg.change_dim, teacher.cfg.d_model)

    synth_src = "".join(p.read_text() for p in sorted((Path(__file__).parent / "synth").glob("*.py")))
    key = hashlib.sha256(json.dumps([
        DATASET_ID_SYNTH, opts.captions, opts.limit, opts.variants, opts.input_pool, TAPS,
        hashlib.sha256(Path(opts.teacher).read_bytes()).hexdigest(), hashlib.sha256(synth_src.encode()).hexdigest(),
        hashlib.sha256(Path(opts.captions).read_bytes()).hexdigest(),  # an edited caption file renders again
    ]).encode()).hexdigest()[:12]
    caches, tokens = {}, {}
    for name, nvar in (("train", opts.variants), ("val", 1)):
        recs = [r for r in records if r.split == name]
        recs = recs[: opts.limit] if opts.limit else recs
        ds = SynthDataset(recs, teacher.cfg.image_size)
        caches[name] = build_cache(teacher, ds, recs, nvar, opts.input_pool,
                                   Path(opts.cache_dir) / f"distill-{name}-{key}.npz", opts.threads)
        tokens[name] = np.stack([_tokens(vocab, r.captions, cfg.max_len) for r in recs])
        caches[name]["flag"] = np.array([recs[i].changeflag for i in caches[name]["idx"]], dtype=np.float32)

    params = [p for p in dist.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.01, fused=True)
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(out_dir / "train_log.jsonl", "w")
    n = len(caches["train"]["idx"])
    t0 = time.time()
    for step in range(opts.steps):
        dist.train()
        student.trunk.lite.eval()
        for g in opt.param_groups:
            g["lr"] = _lr(step, opts.steps, opts.lr)
        b = _batch(caches["train"], tokens["train"], rng.integers(0, n, opts.batch), rng, cfg.trunk_blocks)
        losses = _losses(dist, teacher, b, opts)
        loss = sum(v for k, v in losses.items() if not k.startswith("_"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % opts.log_every == 0 or step == opts.steps - 1:
            row = {"step": step, "s": round(time.time() - t0, 1),
                   **{k: round(v.item(), 4) for k, v in losses.items() if not k.startswith("_")}}
            if step % (opts.log_every * 10) == 0 or step == opts.steps - 1:
                row.update(validate(dist, teacher, caches["val"], tokens["val"], opts))
            print(json.dumps(row), flush=True)
            log.write(json.dumps(row) + "\n")
            log.flush()
    meta = {**asdict(opts), "dataset": DATASET_ID_SYNTH, "seconds": round(time.time() - t0, 1),
            "teacher_sha256": hashlib.sha256(Path(opts.teacher).read_bytes()).hexdigest()}
    return save_checkpoint(student.eval(), vocab, out_dir / "model.pt", meta)


@torch.no_grad()
def validate(dist, teacher, cache, tokens, opts, batch: int = 256) -> dict:
    dist.eval()
    n = len(cache["idx"])
    rng = np.random.default_rng(0)
    ok, closs, k = 0, 0.0, 0
    for s in range(0, n, batch):
        sel = np.arange(s, min(n, s + batch))
        b = _batch(cache, tokens, sel, rng, dist.student.cfg.trunk_blocks)
        losses = _losses(dist, teacher, b, opts)
        ok += int(((losses["_gate_logit"] > 0).float() == b["flag"]).sum())
        closs += float(losses["caption"]) * len(sel)
        k += len(sel)
    return {"val_gate_acc": round(ok / k, 4), "val_caption_loss": round(closs / k, 4)}


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--captions", default="../shared/data/levircc/LevirCCcaptions.json")
    for f in ("teacher", "out", "decoder"):
        p.add_argument(f"--{f}", default=getattr(DistillOptions, f))
    for f in ("trunk_blocks", "steps", "batch", "limit", "variants"):
        p.add_argument(f"--{f.replace('_', '-')}", type=int, default=getattr(DistillOptions, f))
    p.add_argument("--lr", type=float, default=DistillOptions.lr)
    p.add_argument("--set", nargs="*", default=[], help="StudentConfig overrides, name=int")
    a = p.parse_args()
    conf = tuple((k, int(v)) for k, v in (s.split("=") for s in a.set))
    print(distill(DistillOptions(captions=a.captions, teacher=a.teacher, out=a.out, decoder=a.decoder,
                                 trunk_blocks=a.trunk_blocks, steps=a.steps, batch=a.batch, limit=a.limit,
                                 variants=a.variants, lr=a.lr, config=conf)))
