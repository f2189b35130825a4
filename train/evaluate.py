"""Evaluation on LEVIR-CC-synth (or the real LEVIR-CC layout): caption metrics, gate accuracy, mask IoU, baselines.

Torch-free: it runs any engine (ONNX Runtime included), the renderer and pycocoevalcap, so a shipped bundle is
evaluated exactly as users run it. Metrics are on pycocoevalcap's own scale (CIDEr-D 1.342, not 134.2).

Example:
    >>> report = evaluate_bundle("edgecc/models/default", "../shared/data/levircc/LevirCCcaptions.json", "test")
    >>> report["changed"]["metrics"]["CIDEr-D"], report["gate_accuracy"]
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from .data import DATASET_ID_SYNTH, NO_CHANGE_TEMPLATES, RealDataset, SynthDataset, load_captions, split_records

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")


@dataclass(frozen=True)
class EvalOptions:
    split: str = "test"
    limit: int | None = None  # first N pairs of the split (quick runs)
    batch: int = 8
    beam_size: int | None = None  # None: the bundle's recommendation
    meteor: bool = True  # METEOR needs Java
    data_root: str | None = None  # a real LEVIR-CC root; None -> LEVIR-CC-synth
    precision: str = "fp32"  # the bundle variant evaluate_bundle loads (fp32, fp16, int8)


def caption_metrics(preds: dict, refs: dict, meteor: bool = True) -> dict:
    """preds {id: "a sentence"}, refs {id: ["ref 1", ...]} (already tokenized, space-joined) -> metric dict."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if not preds:
        return {}
    res = {k: [preds[k]] for k in preds}
    gts = {k: list(refs[k]) for k in preds}
    out = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    if meteor:
        from pycocoevalcap.meteor.meteor import Meteor

        out["METEOR"] = float(Meteor().compute_score(gts, res)[0])  # its Java process ends with the object
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])  # pycocoevalcap's Cider is CIDEr-D (clipped, penalised)
    return {k: round(v, 4) for k, v in out.items()}


def _subset_report(preds, refs, flags, meteor) -> dict:
    changed = [k for k in preds if flags[k]]
    unchanged = [k for k in preds if not flags[k]]
    return {
        "metrics": caption_metrics(preds, refs, meteor),
        "changed": {"n": len(changed), "metrics": caption_metrics({k: preds[k] for k in changed}, refs, meteor)},
        # CIDEr on the unchanged subset alone is degenerate (identical references): BLEU only
        "unchanged": {
            "n": len(unchanged),
            "metrics": {k: v for k, v in caption_metrics({k: preds[k] for k in unchanged}, refs, False).items()
                        if k.startswith("BLEU")},
        },
    }


def baselines(train_records, records, refs, flags, meteor: bool = True) -> dict:
    """Language-prior baselines on the same references: the most frequent caption; the same given the true flag."""
    counts = Counter(" ".join(c) for r in train_records for c in r.captions)
    changed_counts = Counter(" ".join(c) for r in train_records if r.changeflag for c in r.captions)
    top = counts.most_common(1)[0][0]
    top_changed = changed_counts.most_common(1)[0][0] if changed_counts else top
    no_change = " ".join(NO_CHANGE_TEMPLATES[0])
    out = {}
    for name, pred in (
        ("most_frequent_caption", {k: top for k in refs}),
        ("oracle_changeflag_most_frequent", {k: top_changed if flags[k] else no_change for k in refs}),
    ):
        rep = _subset_report(pred, refs, flags, meteor)
        out[name] = {"metrics": rep["metrics"], "changed": {"metrics": rep["changed"]["metrics"]}}
    return out


def evaluate(captioner, captions_path: str, opts: EvalOptions = EvalOptions()) -> dict:
    """Caption every pair of a split with `captioner` (an edgecc Captioner) and score it."""
    all_records = load_captions(captions_path)
    if opts.data_root:
        ds = RealDataset(opts.data_root, opts.split)
        records = ds.records
        dataset_id = "levircc"
    else:
        records = split_records(all_records, opts.split)
        ds = SynthDataset(records, captioner.input_size)
        dataset_id = DATASET_ID_SYNTH
    records = records[: opts.limit] if opts.limit else records
    if not records:
        raise ValueError(f"no pairs to evaluate in split {opts.split!r}")
    preds, refs, flags = {}, {}, {}
    gate_ok, inter, union = 0, 0.0, 0.0
    t0 = time.time()
    for s in range(0, len(records), opts.batch):
        chunk = records[s : s + opts.batch]
        imgs = [ds.images(r) for r in chunk]
        caps = captioner.caption_batch(np.stack([i[0] for i in imgs]), np.stack([i[1] for i in imgs]))
        for r, (_, _, true_mask), c in zip(chunk, imgs, caps):
            preds[r.pair_id] = c.text
            refs[r.pair_id] = [" ".join(t) for t in r.captions]
            flags[r.pair_id] = bool(r.changeflag)
            gate_ok += int(c.changed == bool(r.changeflag))
            if true_mask is not None and c.mask is not None and r.changeflag:
                size = true_mask.shape[::-1]
                pred = cv2.resize(c.mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5
                truth = true_mask > 0
                inter += float((pred & truth).sum())
                union += float((pred | truth).sum())
    seconds = time.time() - t0
    rep = _subset_report(preds, refs, flags, opts.meteor)
    train_records = [r for r in all_records if r.split == "train"]
    return {
        "dataset": dataset_id,
        "split": opts.split,
        "n": len(records),
        **rep,
        "gate_accuracy": round(gate_ok / len(records), 4),
        "mask_iou": round(inter / union, 4) if union else None,
        "baselines": baselines(train_records, records, refs, flags, opts.meteor),
        "model": captioner.bundle.name,
        "beam_size": captioner.options.beam_size,
        "seconds": round(seconds, 1),
        "examples": [{"id": k, "pred": preds[k], "refs": refs[k][:2]} for k in list(preds)[:8]],
    }


def evaluate_bundle(bundle, captions_path: str, opts: EvalOptions = EvalOptions(), backend: str = "ort-cpu",
                    **engine_options) -> dict:
    import edgecc
    from edgecc.decoding import DecodingOptions

    options = DecodingOptions(beam_size=opts.beam_size) if opts.beam_size else None
    captioner = edgecc.load(bundle, backend=backend, precision=opts.precision, options=options, **engine_options)
    return {**evaluate(captioner, captions_path, opts), "precision": opts.precision}


def store_metrics(bundle, rep: dict, precision: str) -> dict:
    """Keep an evaluate_bundle() report in the bundle's manifest: the base precision's under "metrics", another
    variant's under its own entry's "test_metrics" (what `edgecc info` and `edgecc bench` show). -> the manifest."""
    from edgecc.bundle import Bundle, write_manifest

    b = Bundle.open(bundle)
    keep = {k: rep[k] for k in ("dataset", "split", "n", "metrics", "changed", "gate_accuracy", "mask_iou")}
    if precision == b.manifest.get("precision", "fp32"):
        update = {"metrics": {**keep, "beam_size": rep["beam_size"], "baselines": rep["baselines"]}}
    else:
        variant = {**b.variant(precision), "test_metrics": {**keep, "beam_size": rep["beam_size"]}}
        update = {"variants": {**b.manifest["variants"], precision: variant}}
    return write_manifest(b.root, {**b.manifest, "files": list(b.manifest["files"]), **update})


def format_report(rep: dict) -> str:
    """A plain-text table of a report, labelled with its dataset (LEVIR-CC-synth scores say so)."""
    label = "LEVIR-CC-synth" if rep["dataset"] == DATASET_ID_SYNTH else "LEVIR-CC"
    prec = f" ({rep['precision']})" if "precision" in rep else ""
    lines = [f"{label} {rep['split']} split, n={rep['n']} (changed {rep['changed']['n']}), model {rep['model']}{prec}"]
    head = f"{'':38s}" + "".join(f"{m:>9s}" for m in METRIC_NAMES)
    lines.append(head)

    def row(name, metrics):
        return f"{name:38s}" + "".join(f"{metrics.get(m, float('nan')):9.4f}" for m in METRIC_NAMES)

    lines.append(row("model (all)", rep["metrics"]))
    lines.append(row("model (changed)", rep["changed"]["metrics"]))
    for name, b in rep["baselines"].items():
        lines.append(row(f"{name} (all)", b["metrics"]))
        lines.append(row(f"{name} (changed)", b["changed"]["metrics"]))
    lines.append(f"gate accuracy {rep['gate_accuracy']:.4f}   mask IoU {rep['mask_iou']}   ({rep['seconds']} s)")
    return "\n".join(lines)
