"""Which quantized nodes hurt most: each node's local output error, the node run on quantized vs float inputs.

Every quantized node of a QDQ graph gets a float twin that reads the same tensors before their
QuantizeLinear/DequantizeLinear pairs (and the float weights): r = ||y - y_float||^2 / ||y_float||^2 over the feeds,
where y is the node's output in the QDQ graph. It is the error the node adds itself (rounding, clipping, weight
quantization, seen through its own function, so a Relu ignores noise on what it zeroes), not the error that
reached it from upstream. One run of the QDQ graph with all twins, no re-quantization per node.

Example:
    >>> ranked = rank_nodes("encoder.int8.onnx", "encoder.float.onnx", feeds)   # [(node, local error), ...]
"""

from __future__ import annotations

import numpy as np

from .ranges import exposed_session

_TWIN = "__float_twin"


def quantized_nodes(qdq_model) -> list:
    """Nodes of a QDQ graph that read a DequantizeLinear output (compute in int8 once ORT fuses them)."""
    made_by = {o: n.op_type for n in qdq_model.graph.node for o in n.output}
    return [n for n in qdq_model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(made_by.get(i) == "DequantizeLinear" for i in n.input)]


def float_input(name: str, made_by: dict, float_inits: dict):
    """-> (float tensor behind a DequantizeLinear output, float initializer to add or None); (None, None) if none.

    The float tensor is the QuantizeLinear's input for an activation; for a quantized initializer (weight
    `<w>_DequantizeLinear_Output`, bias `<b>` itself) it is a copy of the float initializer (the bias copy renamed).
    """
    import onnx

    dq = made_by.get(name)
    if dq is None or dq.op_type != "DequantizeLinear":
        return name, None
    q = made_by.get(dq.input[0])
    if q is not None and q.op_type == "QuantizeLinear":
        return q.input[0], None
    orig = name.removesuffix("_DequantizeLinear_Output")
    if q is not None or orig not in float_inits:
        return None, None
    init = float_inits[orig]
    if orig == name:  # ORT's bias DequantizeLinear outputs the bias's own name
        init = onnx.TensorProto()
        init.CopyFrom(float_inits[orig])
        init.name = orig + "__float"
    return init.name, init


def rank_nodes(qdq_path, float_path, feeds: list[dict], skip=()) -> list[tuple[str, float]]:
    """Quantized nodes of `qdq_path` (not in `skip`), largest local output error first: [(node name, error)].

    Args:
        float_path: the float graph that was quantized (for the float weights).
        feeds: real input feeds; a handful is enough.
    """
    import onnx

    qm = onnx.load(str(qdq_path))
    float_inits = {t.name: t for t in onnx.load(str(float_path)).graph.initializer}
    have = {t.name for t in qm.graph.initializer}
    made_by = {o: n for n in qm.graph.node for o in n.output}
    twins = {}  # node name -> [(output, twin output)]
    for n in quantized_nodes(qm):
        found = [float_input(i, made_by, float_inits) if i else (i, None) for i in n.input]
        ins = [f for f, _ in found]
        if n.name in skip or None in ins or any(a.type == onnx.AttributeProto.GRAPH for a in n.attribute):
            continue
        for _, init in found:
            if init is not None and init.name not in have:
                qm.graph.initializer.append(init)
                have.add(init.name)
        twin = onnx.NodeProto()
        twin.CopyFrom(n)
        twin.name = n.name + _TWIN
        del twin.input[:]
        twin.input.extend(ins)
        del twin.output[:]
        twin.output.extend(o + _TWIN if o else o for o in n.output)
        qm.graph.node.append(twin)  # reads only tensors made earlier; nothing reads it: order stays topological
        twins[n.name] = [(o, o + _TWIN) for o in n.output if o]
    floats = onnx.shape_inference.infer_shapes(qm)
    is_float = {v.name for v in (*floats.graph.value_info, *floats.graph.output)
                if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    pairs = {k: [(a, b) for a, b in v if a in is_float and b in is_float] for k, v in twins.items()}
    sess = exposed_session(qm, sorted({t for v in pairs.values() for p in v for t in p}))
    names = [o.name for o in sess.get_outputs()]
    num = dict.fromkeys(pairs, 0.0)
    den = dict.fromkeys(pairs, 0.0)
    for feed in feeds:
        out = dict(zip(names, sess.run(None, feed)))
        for node, ps in pairs.items():
            for a, b in ps:
                ref = out[b].astype(np.float64)
                num[node] += float(((out[a] - ref) ** 2).sum())
                den[node] += float((ref * ref).sum())
    ranked = [(n, num[n] / den[n] if den[n] > 0 else 0.0) for n in pairs]
    return sorted(ranked, key=lambda t: -t[1])
