"""INT8 (static, QDQ) and FP16 variants of a bundle: calibrated on a committed set, held to a caption-metric budget.

Every graph role of the fp32 variant (encoder, decoder; trunk, fusion, ... for other architectures) is calibrated
on the inputs it really gets: the fp32 bundle runs its own decode loop over the calibration pairs while each ORT
session records its feeds. INT8 accuracy control: the changed-subset CIDEr-D of the int8 variant on a fixed
LEVIR-CC-synth val subset may drop at most `max_drop` below fp32's; if it drops more, the nodes with the largest
local quantization error (calibration.sensitivity) stay in float, 1, 2, 4, ... of them, until it does not.

Example:
    >>> m = quantize_bundle("/tmp/teacher_q", QuantizeOptions(method="minmax", max_drop=0.01))
    >>> m["variants"]["int8"]["metrics"]["drop"], m["variants"]["int8"]["float_nodes"]
    >>> edgecc.load("/tmp/teacher_q", precision="int8").caption("pre.png", "post.png")
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgecc.bundle import Bundle, write_manifest

from .ranges import METHODS
from .sets import CAPTIONS, DEFAULT_DATA_ROOT, CalibrationError, CalibrationSet, check_arrays, load_pairs

PRECISIONS = ("int8", "fp16")
CONTROL = "LEVIR-CC-synth val, changed pairs, first N in file order, render variant 0"
# engine options under which the fp32 runs record feeds: the ORT engine's default form (split trunk / fused kernel /
# fusion on CPU where the bundle has it), then its one-graph encoder, so every graph role sees its real inputs
_ENGINE_FORMS = ({}, {"fusion": "standard"})
_RANK_FEEDS = 4  # feeds per role for the sensitivity ranking
_PARITY_FEEDS = 4  # feeds per role for the output parity recorded in the manifest


@dataclass(frozen=True)
class QuantizeOptions:
    """How to build the variants.

    Attributes:
        method: int8 activation-range calibration: minmax (default), percentile or entropy.
        max_drop: changed-subset CIDEr-D (pycocoevalcap scale, ~0.6 for the teacher) int8 may lose vs fp32.
        control_pairs: size of the accuracy-control subset (see CONTROL); 0 turns accuracy control off.
        per_channel: per-output-channel weight scales (Conv, MatMul, Gemm).
        precisions: variants to build, from PRECISIONS.
        calibration_set: a set file (see calibration.sets); None: calibration/sets/default.txt.
        data_root: where set paths and LEVIR-CC captions are; None: ../shared/data beside the checkout.
        max_feeds: recorded feeds kept per graph role (seeded reservoir sample over the whole fp32 run).
        max_evals: accuracy-control evaluations at most (all quantized, then 1, 2, 4, ... nodes kept in float).
        batch: pairs per evaluation batch.
        record_batch: pairs per batch of the recording fp32 run (so per encoder calibration feed).
        seed: reservoir sampling seed.
        dynamic_roles: graph roles quantized dynamically (int8 weights, activation ranges computed per call) instead
            of static QDQ. The decoder step by default: its activations vary from token to token, and on the edge
            student (Mamba decoder) static QDQ kept 66% of 300 changed LEVIR-CC-synth val captions identical to
            fp32, dynamic 88% (on the test split: changed CIDEr-D drop 0.028 static, 0.002 dynamic).
    """

    method: str = "minmax"
    max_drop: float = 0.01
    control_pairs: int = 200
    per_channel: bool = True
    precisions: tuple[str, ...] = PRECISIONS
    calibration_set: str | None = None
    data_root: str | None = None
    max_feeds: int = 128
    max_evals: int = 8
    batch: int = 8
    record_batch: int = 2
    seed: int = 0
    dynamic_roles: tuple[str, ...] = ("decoder",)


def graph_roles(variant: dict) -> dict[str, str]:
    """{role: file} for every value of a variant that names an ONNX graph."""
    return {k: v for k, v in variant.items() if isinstance(v, str) and v.endswith(".onnx")}


# ---------------------------------------------------------------------------------------------- feeds


class _Recorder:
    """Stands in for an ORT InferenceSession: runs it and keeps a seeded reservoir sample of its feeds."""

    def __init__(self, session, keep: int, rng: np.random.Generator):
        self._session, self._keep, self._rng = session, keep, rng
        self.feeds: list[dict[str, np.ndarray]] = []
        self.calls = 0

    def run(self, output_names, input_feed, *args, **kwargs):
        self.calls += 1
        slot = len(self.feeds) if len(self.feeds) < self._keep else int(self._rng.integers(0, self.calls))
        if slot < self._keep:
            feed = {k: np.array(v, copy=True) for k, v in input_feed.items()}
            self.feeds[slot:slot + 1] = [feed]
        return self._session.run(output_names, input_feed, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


def record_feeds(bundle: Bundle, pre: np.ndarray, post: np.ndarray, max_feeds: int = 128, batch: int = 2,
                 seed: int = 0) -> dict[str, list[dict[str, np.ndarray]]]:
    """Run the fp32 variant's decode loop over pairs (uint8 [n,S,S,3] x2); -> {role: sampled feeds of that graph}.

    The engine builds its sessions through `session_hook(role, session)`, which stands a feed recorder in for the
    session of each graph role (the engine's `sessions` are named by the same roles as the variant's files). Roles
    the default engine form does not run (a one-graph encoder beside a split one) are recorded by a second,
    encode-only run in the next form of `_ENGINE_FORMS`. The gate is ignored while recording
    (`DecodingOptions(gate=False)`) so the decoder also sees the pairs a closed gate would skip.
    """
    from edgecc.captioner import Captioner
    from edgecc.decoding import DecodingOptions
    from edgecc.engines import create_engine

    roles = graph_roles(bundle.variant("fp32"))
    rng = np.random.default_rng(seed)
    recorders: dict[str, _Recorder] = {}

    def wrap(role, sess):  # the engine names each session by its graph role (engine.sessions)
        if role not in roles or role in recorders:
            return sess
        recorders[role] = _Recorder(sess, max_feeds, rng)
        return recorders[role]

    options = replace(DecodingOptions(**bundle.manifest.get("decoding", {})), gate=False)
    for n, form in enumerate(_ENGINE_FORMS):
        if n and not set(roles) - set(recorders):
            break
        try:
            engine = create_engine("ort-cpu", bundle, "fp32", session_hook=wrap, **form)
        except (TypeError, ValueError):  # an engine without this form, or a bundle without it
            continue
        cap = Captioner(bundle, engine, options)
        for s in range(0, len(pre), batch):  # the first form runs the whole loop, later ones only encode
            if n == 0:
                cap.caption_batch(pre[s:s + batch], post[s:s + batch])
            else:
                engine.encode(pre[s:s + batch], post[s:s + batch])
    if missing := sorted(r for r in roles if r not in recorders or not recorders[r].feeds):
        raise CalibrationError(f"{bundle.root}: the fp32 ort-cpu runs never called graph role(s) "
                               f"{', '.join(missing)} (cannot record their calibration inputs)")
    return {role: rec.feeds for role, rec in recorders.items()}


# ---------------------------------------------------------------------------------------------- graphs


def prepare_graph(src: Path, dst: Path) -> bool:
    """ORT's quantization pre-processing (shape inference, constant folding) -> True; False: copied as is."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst))
        return True
    except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs; quantize the original then
        shutil.copyfile(src, dst)
        return False


def quantize_graph(src: Path, dst: Path, feeds: list[dict] | None, method: str = "minmax", per_channel: bool = True,
                   exclude: tuple[str, ...] = (), cache: Path | None = None) -> None:
    """Static QDQ int8 (uint8 activations, int8 weights) of one graph.

    Args:
        feeds: calibration feeds; None when `cache` already holds the ranges (re-quantizing with other exclusions).
        cache: ORT calibration cache (JSON ranges), written from `feeds` and read by `quantize_static`.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .ranges import save_ranges, tensor_ranges

    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")
    cache = Path(cache) if cache is not None else dst.with_suffix(".ranges.json")
    if feeds is not None:
        if not feeds:
            raise CalibrationError(f"{src}: no calibration feeds (refusing to calibrate on no data)")
        save_ranges(tensor_ranges(src, feeds, method), method, cache)
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[method]
    quantize_static(
        str(src), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=per_channel,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
        calibrate_method=calib, calibration_cache_path=cache,
        # Relu / Clip stay explicit (ORT's runtime fuses them into the QuantizeLinear after them anyway): without
        # this the quantizer drops them and lets Q's range clip, so a node kept in float could not read its true
        # float input, and a Q pair's "noise" would include the activation function
        extra_options={"QDQKeepRemovableActivations": True},
    )
    if exclude:
        _float_inputs(dst, set(exclude), src)


def _float_inputs(path: Path, nodes: set[str], src: Path) -> None:
    """Excluded nodes read the float tensors behind their inputs' Q/DQ pairs (ORT leaves a producer's QDQ there,
    and a weight shared with a quantized node stays quantized for both).

    Without this an excluded node computes in float on quantized inputs, keeping most of the noise it was
    excluded for. Q/DQ pairs and initializers nobody reads any more are removed.
    """
    import onnx

    from .sensitivity import float_input

    m = onnx.load(str(path))
    float_inits = {t.name: t for t in onnx.load(str(src)).graph.initializer}
    have = {t.name for t in m.graph.initializer}
    made_by = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.name in nodes:
            for i, name in enumerate(n.input):
                f, init = float_input(name, made_by, float_inits) if name else (name, None)
                if f is not None and f != name:
                    if init is not None and init.name not in have:
                        m.graph.initializer.append(init)
                        have.add(init.name)
                    n.input[i] = f
    while True:
        used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
        dead = [n for n in m.graph.node
                if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not set(n.output) & used]
        if not dead:
            break
        for n in dead:
            m.graph.node.remove(n)
    used = {i for n in m.graph.node for i in n.input}
    keep = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    onnx.save(m, str(path))


def fp16_graph(src: Path, dst: Path) -> None:
    """FP16 weights and compute, float32 inputs and outputs (keep_io_types): the runtime feeds the same dtypes."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


def output_parity(ref_path: Path, path: Path, feeds: list[dict]) -> dict[str, float]:
    """{output: relative RMS error sqrt(sum (y - y_ref)^2 / sum y_ref^2)} of a graph vs its fp32 source."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    a = ort.InferenceSession(str(ref_path), so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in a.get_outputs()]
    num, den = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    for f in feeds:
        for n, x, y in zip(names, a.run(None, f), b.run(None, f)):
            if np.issubdtype(x.dtype, np.floating):
                num[n] += float(((x.astype(np.float64) - y) ** 2).sum())
                den[n] += float((x.astype(np.float64) ** 2).sum())
    return {n: round(float(np.sqrt(num[n] / den[n])), 5) for n in names if den[n] > 0}


# ---------------------------------------------------------------------------------------------- accuracy control


@dataclass(frozen=True)
class _Control:
    pre: np.ndarray  # uint8 [n,S,S,3]
    post: np.ndarray
    refs: dict  # {pair id: ["ref sentence", ...]}


def control_subset(data_root: Path, n: int, size: int) -> _Control:
    """The accuracy-control pairs: see CONTROL."""
    from edgecc.train.data import SynthDataset, load_captions, split_records

    path = data_root / CAPTIONS
    if not path.is_file():
        raise CalibrationError(f"{path}: LEVIR-CC captions not found (accuracy control needs them; "
                               "control_pairs=0 turns it off)")
    recs = [r for r in split_records(load_captions(path), "val") if r.changeflag][:n]
    ds = SynthDataset(recs, size)
    imgs = [ds.images(r, 0) for r in recs]
    return _Control(np.stack([i[0] for i in imgs]), np.stack([i[1] for i in imgs]),
                    {r.pair_id: [" ".join(c) for c in r.captions] for r in recs})


def control_metrics(bundle: Bundle, precision: str, control: _Control, batch: int = 8) -> dict:
    """Changed-subset CIDEr-D (and BLEU-4, gate recall) of one variant on the control pairs, bundle's decoding."""
    from edgecc.train.evaluate import caption_metrics

    from edgecc.captioner import Captioner
    from edgecc.decoding import DecodingOptions
    from edgecc.engines import create_engine

    cap = Captioner(bundle, create_engine("ort-cpu", bundle, precision),
                    DecodingOptions(**bundle.manifest.get("decoding", {})))
    caps = []
    for s in range(0, len(control.pre), batch):
        caps += cap.caption_batch(control.pre[s:s + batch], control.post[s:s + batch])
    preds = {k: c.text for k, c in zip(control.refs, caps)}
    m = caption_metrics(preds, control.refs, meteor=False)
    return {"CIDEr-D": m["CIDEr-D"], "BLEU-4": m["BLEU-4"],
            "gate_recall": round(float(np.mean([c.changed for c in caps])), 4)}


# ---------------------------------------------------------------------------------------------- the bundle


def quantize_bundle(bundle_dir: str | Path, options: QuantizeOptions = QuantizeOptions(),
                    log: Callable[[str], None] | None = None, calibration=None) -> dict:
    """Add `options.precisions` variants to a bundle (in place, atomically) and return the new manifest.

    Args:
        bundle_dir: a bundle with an fp32 variant; each of its `.onnx` roles is converted.
        log: progress lines (e.g. `print`); None is quiet.
        calibration: (pre, post) uint8 [n,S,S,3] arrays instead of `options.calibration_set` (tests, notebooks);
            they pass the same checks and their hash is recorded with set "<arrays>".

    Raises:
        CalibrationError: empty, missing, constant or random calibration data; int8 accuracy control cannot
            meet `max_drop` within `max_evals` evaluations (nothing is written then).
    """
    say = log or (lambda _msg: None)
    bad = set(options.precisions) - set(PRECISIONS)
    if bad or options.method not in METHODS:
        raise ValueError(f"precisions from {PRECISIONS} and method from {METHODS}, got {options.precisions}, "
                         f"{options.method!r}")
    bundle = Bundle.open(bundle_dir)
    root = bundle.root
    roles = graph_roles(bundle.variant("fp32"))
    size = int(bundle.manifest["input"]["size"])
    data_root = Path(options.data_root) if options.data_root else DEFAULT_DATA_ROOT

    if calibration is None:
        cal_set = CalibrationSet.load(options.calibration_set)
        data = load_pairs(cal_set, size, data_root)
        pre, post, cal_names = data.pre, data.post, data.names
        cal_meta = {"set": cal_set.label, "sha256": cal_set.sha256, "data_sha256": data.sha256,
                    "n_pairs": len(pre), "n_synth": data.n_synth, "n_real": data.n_real}
    else:
        import hashlib

        pre, post = (np.ascontiguousarray(x, np.uint8) for x in calibration)
        cal_names = ()
        check_arrays(pre, post)
        h = hashlib.sha256(pre.tobytes())
        h.update(post.tobytes())
        cal_meta = {"set": "<arrays>", "sha256": None, "data_sha256": h.hexdigest(), "n_pairs": len(pre),
                    "n_synth": None, "n_real": None}
    say(f"calibration: {cal_meta['n_pairs']} pairs from {cal_meta['set']}; recording fp32 feeds of "
        f"{', '.join(roles)}")
    feeds = record_feeds(bundle, pre, post, options.max_feeds, options.record_batch, options.seed)
    cal_meta["feeds"] = {r: len(f) for r, f in feeds.items()}

    control = None
    if options.control_pairs > 0:
        control = control_subset(data_root, options.control_pairs, size)
        fp32_metrics = control_metrics(bundle, "fp32", control, options.batch)
        # control pairs that are also calibration pairs (the default set has none: it skips the first 400 changed)
        overlap = len(set(control.refs) & {n.split(":")[1] for n in cal_names if n.startswith("synth:")})
        say(f"fp32 on the control subset ({len(control.pre)} LEVIR-CC-synth val changed pairs): "
            f"CIDEr-D {fp32_metrics['CIDEr-D']:.4f}")

    with tempfile.TemporaryDirectory(dir=root, prefix=".quantize-") as tmp:
        tmp = Path(tmp)
        shutil.copyfile(root / "vocab.json", tmp / "vocab.json")
        prepared, preprocessed = {}, {}
        for role, name in roles.items():
            prepared[role] = tmp / f"{role}.prepared.onnx"
            preprocessed[role] = prepare_graph(root / name, prepared[role])
        new_variants: dict[str, dict] = {}

        def scratch(prec: str, files: dict[str, str]) -> Bundle:
            """A bundle object over tmp/ with just this variant (for evaluation before anything is written)."""
            listed = {name: {} for name in [*files.values(), "vocab.json"]}  # scratch graphs: unverified, ours
            return Bundle(tmp, {**bundle.manifest, "variants": {prec: files}, "files": listed})

        def parity(files: dict[str, str]) -> dict:
            return {r: output_parity(root / roles[r], tmp / files[r], feeds[r][:_PARITY_FEEDS]) for r in roles}

        def metrics(prec: str, files: dict[str, str]) -> dict | None:
            if control is None:
                return None
            m = control_metrics(scratch(prec, files), prec, control, options.batch)
            drop = round(fp32_metrics["CIDEr-D"] - m["CIDEr-D"], 4)
            return {"dataset": "levircc-synth", "control": CONTROL, "n": len(control.pre),
                    "beam_size": bundle.manifest.get("decoding", {}).get("beam_size"), **m,
                    "fp32_CIDEr-D": fp32_metrics["CIDEr-D"], "drop": drop, "calibration_overlap": overlap}

        if "int8" in options.precisions:
            new_variants["int8"] = quantize_int8(roles, prepared, feeds, options, tmp, metrics, say)
            new_variants["int8"]["calibration"] = cal_meta
            new_variants["int8"]["parity_rel_rms"] = parity(graph_roles(new_variants["int8"]))
        if "fp16" in options.precisions:
            files = {r: f"fp16/{r}.onnx" for r in roles}
            (tmp / "fp16").mkdir()
            for r in roles:
                fp16_graph(prepared[r], tmp / files[r])
            m = metrics("fp16", files)
            say(f"fp16: control CIDEr-D {m['CIDEr-D']:.4f} (drop {m['drop']:+.4f}, CPU provider)" if m else
                "fp16: converted")
            new_variants["fp16"] = {**files, "method": "fp16-keep-io-types", "target": "CUDA / TensorRT",
                                    "metrics": m, "parity_rel_rms": parity(files)}
        for v in new_variants.values():
            v["preprocessed"] = {r: preprocessed[r] for r in roles}
            v["size_bytes"] = sum((tmp / f).stat().st_size for f in graph_roles(v).values())
        return _commit(bundle, tmp, new_variants)


def quantize_int8(roles: dict[str, str], prepared: dict[str, Path], feeds: dict[str, list[dict]],
                  options: QuantizeOptions, tmp: Path, metrics: Callable[[str, dict], dict | None],
                  say: Callable[[str], None] = lambda _m: None) -> dict:
    """Quantize every role; while the control drop exceeds max_drop keep more nodes in float.

    Each step re-ranks the nodes still quantized by their local output error (calibration.sensitivity) in the
    current graphs and keeps the worst in float, doubling how many are kept (1, 2, 4, ...). Re-ranking matters:
    once a node is in float, the next one along a chain that shares its clipped range shows its own error.

    Args:
        roles: {role: fp32 file name}; prepared: {role: float graph to quantize}; feeds: {role: calibration feeds}.
        tmp: work directory; the result's graphs are left at tmp/int8/<role>.onnx.
        metrics: (precision, {role: file relative to tmp}) -> {"CIDEr-D", "drop", ...} or None (no control).

    Returns:
        The variant entry: {role: "int8/<role>.onnx", "method", "float_nodes", "metrics", "accuracy_control", ...}.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .sensitivity import rank_nodes

    cache = {r: tmp / f"{r}.ranges.json" for r in roles}
    kept: dict[str, list[str]] = {r: [] for r in roles}
    dynamic = [r for r in roles if r in options.dynamic_roles]
    static = [r for r in roles if r not in dynamic]

    def build(step: int) -> dict[str, str]:
        files = {r: f"int8-{step}/{r}.onnx" for r in roles}
        (tmp / f"int8-{step}").mkdir(exist_ok=True)
        for r in dynamic:
            if step == 0:
                quantize_dynamic(prepared[r], tmp / files[r], per_channel=options.per_channel,
                                 weight_type=QuantType.QInt8)
            else:
                shutil.copyfile(tmp / f"int8-0/{r}.onnx", tmp / files[r])
        for r in static:
            first = not cache[r].is_file()
            quantize_graph(prepared[r], tmp / files[r], feeds[r] if first else None, options.method,
                           options.per_channel, tuple(kept[r]), cache[r])
        return files

    files = build(0)
    m = metrics("int8", files)
    history = [{"float_nodes": 0, "CIDEr-D": m["CIDEr-D"], "drop": m["drop"]}] if m else []
    if m is not None:
        say(f"int8 ({options.method}), all nodes quantized: control CIDEr-D {m['CIDEr-D']:.4f}, drop {m['drop']:+.4f}")
    while m is not None and m["drop"] > options.max_drop and len(history) < options.max_evals:
        ranked = sorted(((r, n, s) for r in static
                         for n, s in rank_nodes(tmp / files[r], prepared[r], feeds[r][:_RANK_FEEDS], kept[r])),
                        key=lambda t: -t[2])
        n_kept = sum(map(len, kept.values()))
        new = ranked[: max(1, n_kept)]
        if not new:
            break
        for r, n, _ in new:
            kept[r].append(n)
        files = build(len(history))
        m = metrics("int8", files)
        history.append({"float_nodes": n_kept + len(new), "added": [f"{r}:{n} {s:.3g}" for r, n, s in new],
                        "CIDEr-D": m["CIDEr-D"], "drop": m["drop"]})
        say(f"  {n_kept + len(new)} node(s) in float (+ {', '.join(history[-1]['added'][:4])}"
            f"{', ...' if len(new) > 4 else ''}): control CIDEr-D {m['CIDEr-D']:.4f}, drop {m['drop']:+.4f}")
    if m is not None and m["drop"] > options.max_drop:
        raise CalibrationError(
            f"int8 accuracy control failed: control CIDEr-D drop {m['drop']:.4f} > max_drop {options.max_drop} with "
            f"{history[-1]['float_nodes']} nodes in float after {len(history)} evaluations (raise max_drop or "
            "max_evals, or try another method)")
    final = {r: f"int8/{r}.onnx" for r in roles}
    (tmp / "int8").mkdir()
    for r in roles:
        os.replace(tmp / files[r], tmp / final[r])
    weights = f"int8 symmetric, {'per channel' if options.per_channel else 'per tensor'}"
    return {**final, "method": f"static-qdq-{options.method}" + (f"+dynamic-{'-'.join(dynamic)}" if dynamic else ""),
            "format": "QDQ" + (f" ({', '.join(static)}); dynamic ({', '.join(dynamic)})" if dynamic else ""),
            "quantization": {"activations": "uint8 asymmetric, per tensor" + (
                f" (static: {', '.join(static)}; computed per call: {', '.join(dynamic)})" if dynamic else ""),
                "weights": weights},
            "dynamic_roles": dynamic,
            "float_nodes": kept, "metrics": m and {**m, "max_drop": options.max_drop},
            "accuracy_control": {"ranking": "local output error per node, re-ranked each step (sensitivity.py)",
                                 "evaluations": history} if history else "off"}


def _commit(bundle: Bundle, tmp: Path, new_variants: dict[str, dict]) -> dict:
    """Move the new graphs into the bundle (atomic renames), then rewrite the manifest with every file's sha256."""
    root = bundle.root
    old = bundle.manifest["variants"]
    replaced = {f for p in new_variants if p in old for f in graph_roles(old[p]).values()}
    keep_files = [f for f in bundle.manifest["files"] if f not in replaced]
    for v in new_variants.values():
        for f in graph_roles(v).values():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / f, root / f)
    files = keep_files + [f for v in new_variants.values() for f in graph_roles(v).values() if f not in keep_files]
    write_manifest(root, {**bundle.manifest, "variants": {**old, **new_variants}, "files": files})
    # the export's graph passes for the new graphs: Pads folded into Convs, the one-call decode loop for the variant
    # CPUs run (each checked for identical outputs / tokens; a decoder the loop cannot carry is left without one)
    from edgecc.export.decode_loop import add_to_bundle
    from edgecc.export.fold_pads import fold_bundle

    trunks = [v["trunk"] for v in new_variants.values() if "trunk" in v]
    if trunks:
        fold_bundle(root, trunks, log=lambda _: None)
    if Bundle.open(root).cpu_precision in new_variants:
        add_to_bundle(root)
    return Bundle.open(root).manifest
