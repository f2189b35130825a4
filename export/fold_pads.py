"""Fold explicit zero `Pad` nodes into the `Conv` they feed (factory side; the runtime loads the result).

The trunk's TF-style "same" padding exports as Pad -> Conv (fp32) or DequantizeLinear -> Pad -> QuantizeLinear ->
DequantizeLinear -> Conv (QDQ int8). ONNX Runtime runs each Pad as its own kernel, a copy of the whole activation
(about 0.4 ms of a 3-4 ms trunk on a 2-core CPU), and in the QDQ graph the Pad also keeps a Q/DQ pair unfused. A
Conv's own `pads` does the same arithmetic: zeros (fp32) or the input zero point (QLinearConv) at the borders.

    python -m edgecc.export.fold_pads edgecc/models/default      # every variant's trunk.onnx, rewrites + manifest

Only a Pad in constant mode with value 0, padding only the two spatial axes of an NCHW tensor, whose output feeds
only Conv nodes (directly, or through one QuantizeLinear -> DequantizeLinear), is folded. The caller checks parity
(`fold_file` compares outputs on seeded inputs and refuses a graph whose outputs change).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def _pad_values(model, names: list[str], feeds: dict) -> dict[str, np.ndarray]:
    """Evaluate tensors (the Pad's pads, computed by a constant chain in a torch export) by one ORT run."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    m.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names if n not in known])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    return {n: outs[n] for n in names}


def fold_pads(model, feeds: dict) -> tuple[object, int]:
    """-> (model with foldable Pads folded into their Convs, how many were folded). `feeds` runs the graph once."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pads_nodes = [n for n in g.node if n.op_type == "Pad"]
    unknown = [n.input[1] for n in pads_nodes if n.input[1] not in inits]
    values = {**inits, **(_pad_values(model, unknown, feeds) if unknown else {})}
    removed, folded = set(), 0
    for pad in pads_nodes:
        mode = next((helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), b"constant")
        if mode not in (b"constant", "constant"):
            continue
        if len(pad.input) > 2 and pad.input[2] and float(np.asarray(values.get(pad.input[2], 1)).ravel()[0]) != 0:
            continue
        if len(pad.input) > 3 and pad.input[3]:  # axes: keep it simple
            continue
        p = np.asarray(values[pad.input[1]]).astype(np.int64).ravel()
        if p.size != 8 or p[[0, 1, 4, 5]].any() or (p < 0).any():
            continue
        top, left, bottom, right = int(p[2]), int(p[3]), int(p[6]), int(p[7])
        users = consumers.get(pad.output[0], [])
        convs = []
        for u in users:  # Pad -> Conv, or Pad -> Q -> DQ -> Conv (QDQ)
            if u.op_type == "Conv":
                convs.append(u)
            elif u.op_type == "QuantizeLinear":
                dq = consumers.get(u.output[0], [])
                if not dq or any(d.op_type != "DequantizeLinear" for d in dq):
                    convs = None
                    break
                for d in dq:
                    nxt = consumers.get(d.output[0], [])
                    if not nxt or any(c.op_type != "Conv" for c in nxt):
                        convs = None
                        break
                    convs += nxt
                if convs is None:
                    break
            else:
                convs = None
                break
        if not convs:
            continue
        ok = True
        for c in convs:
            attrs = {a.name: helper.get_attribute_value(a) for a in c.attribute}
            if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                ok = False
        if not ok:
            continue
        for c in convs:
            old = next((a for a in c.attribute if a.name == "pads"), None)
            base = list(helper.get_attribute_value(old)) if old is not None else [0, 0, 0, 0]
            new = [base[0] + top, base[1] + left, base[2] + bottom, base[3] + right]
            if old is not None:
                c.attribute.remove(old)
            c.attribute.append(helper.make_attribute("pads", new))
        for u in users:  # bypass the Pad
            for k, name in enumerate(u.input):
                if name == pad.output[0]:
                    u.input[k] = pad.input[0]
        removed.add(id(pad))
        folded += 1
    keep = [n for n in g.node if id(n) not in removed]
    del g.node[:]
    g.node.extend(keep)
    # drop what only the folded Pads used (their pads chains): an unused-node sweep
    needed = {o.name for o in g.output}
    live = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(i for i in n.input if i)
    live.reverse()
    del g.node[:]
    g.node.extend(live)
    used = {i for n in g.node for i in n.input}
    unused = [t for t in g.initializer if t.name not in used]
    for t in unused:
        g.initializer.remove(t)
    onnx.checker.check_model(model)
    return model, folded


def fold_file(src: Path, dst: Path, size: int = 256, seed: int = 0, atol: float = 0.0) -> int:
    """Fold `src` into `dst` (may be the same path); refuse when any output differs by more than `atol` on seeded
    uint8 images. Returns the number of Pads folded."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(src))
    inp = model.graph.input[0]
    rng = np.random.default_rng(seed)
    feeds = {inp.name: rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)}
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feeds)
    model, n = fold_pads(model, feeds)
    if n == 0:
        return 0
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
    if worst > atol:
        raise ValueError(f"{src}: folding {n} Pad(s) changes the outputs (max |diff| {worst:g} > {atol:g})")
    from edgecc._atomic import atomic_path

    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return n


def fold_bundle(root: str | Path, names: list[str] | None = None, log=print) -> dict:
    """Fold the Pads of `names` (default: every variant's trunk graph) in place, record the pass in the manifest's
    "graph_passes" (sha256s rewritten by the bundle writer) and verify the bundle. -> graph_passes."""
    from edgecc.bundle import Bundle, write_manifest

    root = Path(root)
    m = Bundle.open(root, verify=False).manifest
    names = names or [v["trunk"] for v in m["variants"].values() if "trunk" in v]
    passes = dict(m.get("graph_passes", {}))
    for name in names:
        n = fold_file(root / name, root / name)
        log(f"{root / name}: folded {n} Pad(s) into Conv")
        if n:
            passes[name] = sorted({*passes.get(name, []), "fold_pads (export/fold_pads.py; outputs bit-identical)"})
    write_manifest(root, {**m, "files": list(m["files"]), "graph_passes": passes})
    Bundle.open(root)  # verifies every sha256
    return passes


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m edgecc.export.fold_pads BUNDLE_DIR [GRAPH.onnx ...]", file=sys.stderr)
        return 2
    fold_bundle(argv[0], argv[1:] or None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
