"""Which quantized nodes hurt most: the relative noise each node adds, between a QDQ graph and its float source.

For every float tensor t both graphs compute, r(t) = ||t_q - t_f||^2 / ||t_f||^2 over the feeds (t_q from the QDQ
graph, t_f from the float graph). A quantized node's sensitivity is the noise it adds: r(its output) minus the worst
r of its inputs. One run of each graph with every float tensor exposed; no re-quantization per node.

Example:
    >>> ranked = rank_nodes("encoder.pre.onnx", "encoder.int8.onnx", feeds)     # [(node name, noise added), ...]
"""

from __future__ import annotations

import numpy as np

from .ranges import exposed_session


def quantized_nodes(qdq_model) -> list:
    """Nodes of a QDQ graph that read a DequantizeLinear output (compute in int8 once ORT fuses them)."""
    made_by = {o: n.op_type for n in qdq_model.graph.node for o in n.output}
    return [n for n in qdq_model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(made_by.get(i) == "DequantizeLinear" for i in n.input)]


def rank_nodes(float_path, qdq_path, feeds: list[dict]) -> list[tuple[str, float]]:
    """Every quantized node of `qdq_path`, most sensitive first: [(node name, relative noise added)].

    Data movement (Reshape, Concat, Pad, ...) is ranked too: lossless under MinMax, it clips under Percentile or
    Entropy ranges. Keeping every node in float gives back the float graph, so accuracy control always converges.

    Args:
        float_path: the float graph that was quantized (node and tensor names match the QDQ graph's).
        qdq_path: its QDQ-quantized version.
        feeds: real input feeds ({input name: array}); a handful is enough.
    """
    import onnx

    fm = onnx.shape_inference.infer_shapes(onnx.load(str(float_path)))
    qm = onnx.load(str(qdq_path))
    floats = {v.name for v in (*fm.graph.value_info, *fm.graph.output)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    in_q = {o for n in qm.graph.node for o in n.output}
    names = sorted(floats & in_q)
    fs, qs = exposed_session(fm, names), exposed_session(qm, names)
    f_out, q_out = [o.name for o in fs.get_outputs()], [o.name for o in qs.get_outputs()]
    num = dict.fromkeys(names, 0.0)
    den = dict.fromkeys(names, 0.0)
    for feed in feeds:
        x = dict(zip(f_out, fs.run(None, feed)))
        y = dict(zip(q_out, qs.run(None, feed)))
        for n in names:
            ref = x[n].astype(np.float64)
            num[n] += float(((ref - y[n]) ** 2).sum())
            den[n] += float((ref * ref).sum())
    r = {n: num[n] / den[n] for n in names if den[n] > 0}
    by_name = {n.name: n for n in fm.graph.node}
    out = []
    for qn in quantized_nodes(qm):
        fn = by_name.get(qn.name)
        if fn is None:
            continue
        outs = [r[o] for o in fn.output if o in r]  # no float output measured (e.g. Shape): nothing added, last
        added = max(outs) - max((r[i] for i in fn.input if i in r), default=0.0) if outs else -np.inf
        out.append((qn.name, added))
    return sorted(out, key=lambda t: -t[1])
