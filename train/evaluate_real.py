"""Judge a bundle on real imagery, leave-one-source-out, and fit the gate it ships.

For each held-out source (LEVIR-CD, WHU-CD, SZTAKI) the gate is fitted on every other source (real labelled tiles,
their same-image copies, LEVIR-CC-synth pairs), its temperature and threshold are chosen on validation scenes of
those sources, and only then is it scored on the held-out source: recall and false alarms at that threshold, AUROC,
expected calibration error, the false-alarm rate at 90% recall (threshold-free, for comparison), invariance to
same-image copies, mask F1/IoU at full resolution, and how often the caption names a building on changed tiles.

Example:
    >>> rep = evaluate_real("edgecc/models/default", RealEvalOptions(data="../shared/data"))
    >>> rep["sources"]["levircd"]["auroc"], rep["mean"]["false_alarm_rate"]
    >>> head, info = fit_shipped_gate("edgecc/models/default", RealEvalOptions(data="../shared/data"))
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from .real import EVAL_SOURCES, RealCorpus, image_files, perturb, scene_split
from .real_gate import GateSet, describe, features, fit_gate, predict, threshold_at_recall

BUILDING_WORDS = frozenset({"building", "buildings", "house", "houses", "villa", "villas", "residential", "storage",
                            "warehouse", "warehouses", "structures", "structure", "construction", "constructed"})
INVARIANCE_KINDS = ("identity", "gamma", "brightness", "colour", "haze", "jpeg", "shift1", "shift2", "blur")


@dataclass(frozen=True)
class RealEvalOptions:
    data: str  # the shared data folder (real_pairs/, levircc/)
    precision: str | None = None  # None: the bundle's CPU recommendation
    recall: float = 0.9  # the recall the alternative threshold is chosen for, on validation scenes
    max_gsd_m: float = 2.0  # the gate's domain: very-high-resolution imagery (OSCD's 10 m Sentinel-2 is left out)
    # the default threshold is chosen for `recall` on this source's scenes, out of fold: LEVIR-CD is the imagery
    # LEVIR-CC (the captions the decoder learnt) was cut from, the product's home ground
    operating_source: str = "levircd"
    perturb_per_tile: int = 3  # same-image copies per tile date
    synth_pairs: int = 600  # LEVIR-CC-synth train pairs beside the real tiles (0: none)
    val_fraction: float = 0.25  # validation scenes per source
    # sample weights beside a real tile's 1.0, chosen leave-one-source-out (mean false alarms at threshold 0.5: copies
    # and synth at 0.5 each 0.73, at 0.1 each 0.55): rendered and copied pairs are far apart, real ones are not
    copy_weight: float = 0.1
    synth_weight: float = 0.1
    seed: int = 0


@dataclass
class _Pool:
    """Features of every pair, with where it came from."""

    set: GateSet
    source: np.ndarray  # [N] str
    scene: np.ndarray  # [N] str
    kind: np.ndarray  # [N] "real" | a perturbation | "synth"
    tiles: list  # RealTile for kind == "real" rows, else None
    tokens: tuple[int, int] = (0, 0)  # the gate's input tokens per date: (N, dc)


def _trunk(bundle, precision: str):
    """-> tokens(a, b): uint8 [S,S,3] x2 -> the gate's input tokens [1,N,dc] x2, from the trunk graph, or from the
    encoder's "ta"/"tb" outputs where the bundle has no trunk graph (the teacher; see export.gate.expose_tokens)."""
    import onnxruntime as ort

    from edgecc.engines.ort import _tokens

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    files = bundle.variant(precision)
    sess = ort.InferenceSession(str(bundle.path(files.get("trunk") or files["encoder"])), so,
                                providers=["CPUExecutionProvider"])
    if "trunk" in files:
        return lambda a, b: np.split(sess.run(None, {"img": np.ascontiguousarray(np.stack([a, b]))})[0], 2)
    if "ta" not in {o.name for o in sess.get_outputs()}:
        raise ValueError(f"{bundle.root}: no trunk graph, and the encoder exposes no tokens (ta, tb)")
    return lambda a, b: [_tokens(x) for x in sess.run(["ta", "tb"], {"pre": a[None], "post": b[None]})]


def _cells(mask: np.ndarray, grid: int) -> np.ndarray:
    return (cv2.resize(mask.astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA) > 0.25).astype(np.float32)


def collect(bundle, opts: RealEvalOptions) -> _Pool:
    """Trunk tokens -> gate features for real tiles, same-image copies and LEVIR-CC-synth pairs."""
    precision = opts.precision or bundle.cpu_precision
    tok = _trunk(bundle, precision)
    grid = int(bundle.manifest.get("mask_grid", 8))
    corpus = RealCorpus.scan(opts.data)
    rows: list[tuple] = []  # (stats, d, label, weight, cells, source, scene, kind, tile)
    shape = None
    rng = np.random.default_rng(opts.seed)
    for t in corpus.tiles():
        pre, post, mask = t.load()
        ta, tb = tok(pre, post)
        shape = ta.shape[1:]
        s, d = features(ta, tb)  # d: the native tile's distance map (the mask is fitted on it)
        views = t.views()
        if len(views) > 1:  # coarse imagery: the runtime cuts it finer; the tile's statistics are its views' max
            s = np.max([features(*tok(a, b))[0][0] for a, b in views], axis=0)[None]
        rows.append((s[0], d[0], t.label, 1.0, _cells(mask, grid), t.source, t.scene.scene, "real", t))
        for img in (pre, post):
            for kind in rng.choice(INVARIANCE_KINDS + ("shift3", "rotate"), opts.perturb_per_tile, replace=False):
                a, b = (cv2.resize(x, (256, 256), interpolation=cv2.INTER_AREA) for x in perturb(img, str(kind), rng))
                s, d = features(*tok(a, b))
                rows.append((s[0], d[0], 0, opts.copy_weight, np.zeros(grid * grid, np.float32), t.source,
                             t.scene.scene, str(kind), None))
    if opts.synth_pairs:
        from .data import SynthDataset, load_captions, split_records

        recs = split_records(load_captions(Path(opts.data) / "levircc" / "LevirCCcaptions.json"), "train")
        recs = [recs[i] for i in rng.choice(len(recs), min(opts.synth_pairs, len(recs)), replace=False)]
        ds = SynthDataset(recs)
        for r in recs:
            pre, post, mask = ds.images(r)
            s, d = features(*tok(pre, post))
            rows.append((s[0], d[0], int(r.changeflag), opts.synth_weight, _cells(mask > 0, grid), "synth", r.pair_id,
                         "synth",
                         None))
    cols = list(zip(*rows))
    gs = GateSet(np.stack(cols[0]).astype(np.float32), np.stack(cols[1]).astype(np.float32),
                 np.array(cols[2], np.int64), np.array(cols[3], np.float32),
                 np.stack([c.reshape(-1) for c in cols[4]]).astype(np.float32))
    return _Pool(gs, np.array(cols[5]), np.array(cols[6]), np.array(cols[7]), list(cols[8]), tuple(map(int, shape)))


def _split(pool: _Pool, sources: set[str], opts: RealEvalOptions, exclude: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) among rows of `sources`: validation = real tiles of held-out scenes and their same-image
    copies; synth rows train."""
    real = [i for i in range(len(pool.kind)) if pool.kind[i] == "real" and pool.source[i] in sources
            and (exclude is None or not exclude[i])]
    _, val_tiles = scene_split([pool.tiles[i] for i in real], opts.val_fraction, opts.seed)
    val_scenes = {(t.source, t.scene.scene) for t in val_tiles}
    val = np.array([i for i in range(len(pool.kind)) if pool.source[i] in sources and pool.kind[i] != "synth"
                    and (pool.source[i], pool.scene[i]) in val_scenes], np.int64)
    train = np.array([i for i in range(len(pool.kind)) if (pool.source[i] in sources or pool.source[i] == "synth")
                      and (pool.source[i], pool.scene[i]) not in val_scenes], np.int64)
    if exclude is not None:
        train, val = train[~exclude[train]], val[~exclude[val]]
    return train, val


def fit_on(pool: _Pool, sources: set[str], opts: RealEvalOptions, exclude: np.ndarray | None = None):
    """Fit on `sources` (+ synth; rows where `exclude` is True left out); temperature on their validation scenes.
    -> (head, threshold at `opts.recall` on the validation scenes' real tiles)."""
    train, val = _split(pool, sources, opts, exclude)
    head = fit_gate(pool.set.subset(train), pool.set.subset(val))
    real_val = val[pool.kind[val] == "real"]
    p, _ = predict(head, pool.set.subset(real_val))
    return head, threshold_at_recall(p, pool.set.label[real_val], opts.recall)


def operating_threshold(pool: _Pool, sources: set[str], opts: RealEvalOptions) -> tuple[float, dict] | None:
    """The threshold for `opts.recall` on the operating source (LEVIR-CD, the imagery LEVIR-CC was cut from), from
    out-of-fold scores: each of its scenes scored by a gate fitted without that scene. None if it is not in
    `sources`."""
    src = opts.operating_source
    if src not in sources:
        return None
    scores, labels = [], []
    for scene in sorted(set(pool.scene[(pool.source == src) & (pool.kind == "real")])):
        held = (pool.source == src) & (pool.scene == scene)
        head, _ = fit_on(pool, sources, opts, exclude=held)
        rows = np.flatnonzero(held & (pool.kind == "real"))
        scores.append(predict(head, pool.set.subset(rows))[0])
        labels.append(pool.set.label[rows])
    p, y = np.concatenate(scores), np.concatenate(labels)
    thr = math.floor(threshold_at_recall(p, y, opts.recall) * 1000) / 1000  # rounded down: recall kept
    return thr, {"source": src, "tiles": int(len(y)), "recall": round(float((p[y == 1] >= thr).mean()), 4),
                 "false_alarm_rate": round(float((p[y == 0] >= thr).mean()), 4), "auroc": round(auroc(p, y), 4)}


def domain_sources(pool: _Pool, opts: RealEvalOptions) -> set[str]:
    """Real sources inside the gate's domain (ground resolution <= opts.max_gsd_m)."""
    return {t.source for t in pool.tiles if t is not None and t.scene.gsd_m <= opts.max_gsd_m}


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    gt = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return float(gt / (len(pos) * len(neg)))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error, equal-width bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).mean() for b in range(bins)
                     if (idx == b).any()))


def _mask_scores(pool: _Pool, rows: np.ndarray, mask_p: np.ndarray) -> dict:
    """Full-resolution mask F1 / IoU over the tiles `rows` (pixels pooled), mask upsampled bilinearly, cut at 0.5."""
    tp = fp = fn = 0
    g = int(round(np.sqrt(mask_p.shape[1])))
    for i, mp in zip(rows, mask_p):
        _, _, truth = pool.tiles[i].load()
        pred = cv2.resize(mp.reshape(g, g).astype(np.float32), truth.shape[::-1], interpolation=cv2.INTER_LINEAR) > 0.5
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
    return {"mask_f1": round(2 * tp / max(1, 2 * tp + fp + fn), 4), "mask_iou": round(tp / max(1, tp + fp + fn), 4)}


def _names_building(captioner, pool: _Pool, rows: np.ndarray) -> dict:
    """Caption changed tiles (decoder forced on) and count those whose caption names a building."""
    cap = replace(captioner, options=replace(captioner.options, gate=False))
    hits, examples = 0, []
    for i in rows:
        pre, post, _ = pool.tiles[i].load()
        text = cap.caption_batch(pre[None], post[None])[0].text
        hits += bool(BUILDING_WORDS & set(text.split()))
        if len(examples) < 3:
            examples.append({"tile": pool.tiles[i].key, "caption": text})
    return {"names_building": round(hits / max(1, len(rows)), 4), "captioned": len(rows), "examples": examples}


def evaluate_real(bundle_root=None, opts: RealEvalOptions | None = None, captions: bool = True) -> dict:
    """Leave-one-source-out report over EVAL_SOURCES, plus the shipped gate's invariance on every real image."""
    import edgecc
    from edgecc.bundle import Bundle

    if opts is None:
        raise ValueError("evaluate_real needs RealEvalOptions(data=...): the folder with real_pairs/")
    bundle = Bundle.open(bundle_root)
    precision = opts.precision or bundle.cpu_precision
    t0 = time.time()
    pool = collect(bundle, replace(opts, precision=precision))
    captioner = edgecc.load(bundle.root, precision=precision) if captions else None
    per = {}
    for test in EVAL_SOURCES:
        others = domain_sources(pool, opts) - {test}
        head, thr_val = fit_on(pool, others, opts)
        op = operating_threshold(pool, others, opts)  # the shipped rule, where its source is not the test source
        thr, rule = (op[0], f"{opts.recall:.0%} recall on {opts.operating_source} out of fold") if op else \
            (round(thr_val, 3), f"{opts.recall:.0%} recall on validation scenes")
        rows = np.flatnonzero((pool.source == test) & (pool.kind == "real"))
        copies = np.flatnonzero((pool.source == test) & np.isin(pool.kind, INVARIANCE_KINDS))
        sub = pool.set.subset(rows)
        p, mask_p = predict(head, sub)
        pc, _ = predict(head, pool.set.subset(copies))
        y = sub.label
        r = {"tiles": int(len(rows)), "changed": int(y.sum()), "unchanged": int((1 - y).sum()),
             "threshold": thr, "threshold_rule": rule, "recall": round(float((p[y == 1] >= thr).mean()), 4),
             "false_alarm_rate": round(float((p[y == 0] >= thr).mean()), 4), "auroc": round(auroc(p, y), 4),
             "ece": round(ece(p, y), 4),
             "false_alarm_at_90_recall": round(float((p[y == 0] >= threshold_at_recall(p, y, 0.9)).mean()), 4),
             "copies_unchanged": round(float((pc < thr).mean()), 4), "copies": int(len(copies)),
             "at_0.5": {"recall": round(float((p[y == 1] >= 0.5).mean()), 4),
                        "false_alarm_rate": round(float((p[y == 0] >= 0.5).mean()), 4)},
             "identity_score": round(head.identity_score(), 6), "trained_on": sorted(others) + ["synth"],
             **_mask_scores(pool, rows, mask_p)}
        if captioner is not None:
            r.update(_names_building(captioner, pool, rows[y == 1]))
        per[test] = r
    mean = {k: round(float(np.mean([per[s][k] for s in EVAL_SOURCES])), 4)
            for k in ("recall", "false_alarm_rate", "auroc", "ece", "false_alarm_at_90_recall", "copies_unchanged",
                      "mask_f1", "mask_iou", "names_building") if all(k in per[s] for s in EVAL_SOURCES)}
    rep = {"dataset": "real pairs (../shared/data/real_pairs), leave-one-source-out", "model": bundle.name,
           "precision": precision, "date": time.strftime("%Y-%m-%d"), "options": asdict(opts),
           "label_rule": "256 tiles; changed > 2% of pixels marked, unchanged < 0.2%, ignored in between",
           "sources": per, "mean": mean}
    if captioner is not None:
        rep["shipped"] = invariance(captioner, opts)
    rep["seconds"] = round(time.time() - t0, 1)
    return rep


def invariance(captioner, opts: RealEvalOptions) -> dict:
    """The shipped gate on every real image: (x, x) through `caption` (tiled, scene score = max tile score), and
    same-image copies of every labelled tile date (photometric, shifts of 1-2 px, blur) through `caption_batch`."""
    from edgecc.tiling import TileOptions

    ident_scores, bad = [], []
    from edgecc.errors import ImageryError

    for f in image_files(opts.data):
        try:
            scene = captioner.caption(f, f, tile_options=TileOptions(tile=captioner.input_size, progress=False))
        except ImageryError as e:  # an image mostly nodata: nothing to compare, so no identity score from it
            warnings.warn(str(e), stacklevel=2)
            continue
        ident_scores.append(scene.change_score)
        if scene.changed or scene.change_score >= 0.1:
            bad.append(str(f))
    rng = np.random.default_rng(opts.seed + 1)
    kinds = [k for k in INVARIANCE_KINDS if k != "identity"]
    flips, n = {k: 0 for k in kinds}, {k: 0 for k in kinds}
    sym_agree = sym_n = 0
    for t in RealCorpus.scan(opts.data).tiles():
        pre, post, _ = t.load()
        a = [], []
        for img in (pre, post):
            for k in kinds:
                x, y = (cv2.resize(v, (256, 256), interpolation=cv2.INTER_AREA) for v in perturb(img, k, rng))
                a[0].append(x)
                a[1].append(y)
        caps = captioner.caption_batch(np.stack(a[0]), np.stack(a[1]))
        for c, k in zip(caps, kinds * 2):
            flips[k] += c.changed
            n[k] += 1
        fwd, bwd = captioner.caption_batch(np.stack([pre, post]), np.stack([post, pre]))
        sym_agree += (fwd.change_score >= captioner.gate_threshold) == (bwd.change_score >= captioner.gate_threshold)
        sym_n += 1
    total = sum(n.values())
    return {"threshold": captioner.gate_threshold, "identity_images": len(ident_scores),
            "identity_unchanged": round(1 - len(bad) / max(1, len(ident_scores)), 4),
            "identity_max_score": round(float(max(ident_scores, default=0.0)), 6), "identity_failures": bad[:10],
            "copies_unchanged": round(1 - sum(flips.values()) / max(1, total), 4), "copies": total,
            "copies_unchanged_by_kind": {k: round(1 - flips[k] / max(1, n[k]), 4) for k in kinds},
            "swap_agreement": round(sym_agree / max(1, sym_n), 4)}


def fit_shipped_gate(bundle_root, opts: RealEvalOptions):
    """The gate a bundle ships: fitted on every labelled source, temperature and threshold on validation scenes."""
    from edgecc.bundle import Bundle

    bundle = Bundle.open(bundle_root)
    pool = collect(bundle, replace(opts, precision=opts.precision or bundle.cpu_precision))
    sources = domain_sources(pool, opts)
    head, thr_val = fit_on(pool, sources, opts)
    thr, oof = operating_threshold(pool, sources, opts)
    corpus = RealCorpus.scan(opts.data)
    info = {**describe(head), "threshold": thr, "input_tokens": pool.tokens[0], "input_dim": pool.tokens[1],
            f"threshold_at_val_recall_{opts.recall:g}": round(thr_val, 4),
            "method": "logistic on token-distance statistics (non-negative weights), temperature on validation scenes",
            "trained_on": {"real": sorted(sources), "synth": opts.synth_pairs,
                           "tiles": {s: int(((pool.source == s) & (pool.kind == "real")).sum()) for s in sources}},
            "threshold_rule": f"{opts.recall:.0%} recall on {opts.operating_source} (the imagery LEVIR-CC was cut "
                              "from), from out-of-fold scores (each scene scored by a gate fitted without it); "
                              "the score is calibrated by a temperature fitted on validation scenes of every source",
            "operating_point": oof,
            "domain": f"ground resolution <= {opts.max_gsd_m:g} m/px",
            "research_only_imagery": "LEVIR-CD, WHU-CD, DSIFN, SZTAKI, OSCD, xBD (academic / non-commercial use)",
            "corpus_card": corpus.card()}
    return head, info


def format_real_report(rep: dict) -> str:
    """A table per held-out source, then the shipped gate's invariance."""
    cols = ("tiles", "recall", "false_alarm_rate", "auroc", "ece", "false_alarm_at_90_recall", "copies_unchanged",
            "mask_f1", "mask_iou", "names_building")
    head = "held-out " + " ".join(f"{c:>10.10}" for c in cols)
    lines = [f"{rep['dataset']} - {rep['model']} ({rep['precision']})", head]
    for src, r in {**rep["sources"], "mean": rep["mean"]}.items():
        lines.append(f"{src:8.8} " + " ".join(f"{r[c]:>10}" if c in r else f"{'':>10}" for c in cols))
    sh = rep.get("shipped")
    if sh:
        lines.append(f"shipped gate (threshold {sh['threshold']}): (x, x) unchanged on {sh['identity_unchanged']:.1%} "
                     f"of {sh['identity_images']} real images (max score {sh['identity_max_score']}); "
                     f"same-image copies unchanged {sh['copies_unchanged']:.1%} of {sh['copies']}; "
                     f"(a, b) and (b, a) agree {sh['swap_agreement']:.1%}")
    return "\n".join(lines)
