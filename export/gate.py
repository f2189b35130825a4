"""Put a gate taught by real imagery into a bundle: gate.onnx (trunk tokens of both dates -> gate_prob, mask).

The graph is shared by every precision variant (it is 20 parameters; its input is each variant's own trunk tokens).
Export validates by default: the ONNX checker, parity with PyTorch on random tokens, (x, x) below 0.1, and the
same score for (a, b) and (b, a). The manifest gains the file's sha256, `variants.*.gate`, and a `gate` section
saying how it was fitted, on what, and its threshold.

Example:
    >>> head, info = fit_shipped_gate("edgecc/models/default", RealEvalOptions(data="../shared/data"))
    >>> install_gate("edgecc/models/default", head, info)
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from edgecc.bundle import Bundle, write_manifest

GATE_FILE = "gate.onnx"
# where an architecture without a trunk graph keeps its per-date token maps inside encoder.onnx ([B,C,H,W] each):
# the teacher's change-block projections (the student's trunk.onnx gives its tokens directly)
TOKEN_TENSORS = {"edgecc-teacher-v1": ("/change/proj/proj.2/Relu_output_0", "/change/proj/proj.2_1/Relu_output_0")}


def export_gate(head, path: str | Path, tokens: int, dim: int, opset: int = 17, validate: bool = True) -> dict:
    """Write the head as ONNX (inputs ta, tb float32 [B,N,dc]; outputs gate_prob [B], mask [B,G,G])."""
    head = head.eval()
    ta = torch.randn(2, tokens, dim)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(head, (ta, ta.flip(0)), str(path), opset_version=opset, dynamo=False,
                          input_names=["ta", "tb"], output_names=["gate_prob", "mask"],
                          dynamic_axes={"ta": {0: "B"}, "tb": {0: "B"}, "gate_prob": {0: "B"}, "mask": {0: "B"}})
    return validate_gate(head, path, tokens, dim) if validate else {}


def validate_gate(head, path, tokens: int, dim: int) -> dict:
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    ta, tb = torch.randn(8, tokens, dim, generator=g), torch.randn(8, tokens, dim, generator=g)
    tb[:4] = ta[:4] + 0.3 * tb[:4]  # some close pairs, some far
    with torch.no_grad():
        want = [x.numpy() for x in head(ta, tb)]
    got = sess.run(None, {"ta": ta.numpy(), "tb": tb.numpy()})
    diff = max(float(np.abs(w - o).max()) for w, o in zip(want, got))
    ident = float(sess.run(None, {"ta": ta.numpy(), "tb": ta.numpy()})[0].max())
    swapped = sess.run(None, {"ta": tb.numpy(), "tb": ta.numpy()})[0]
    asym = float(np.abs(swapped - got[0]).max())
    if diff > 1e-4:
        raise ValueError(f"{path}: gate parity with PyTorch failed (max abs diff {diff:.2e})")
    if ident >= 0.1:
        raise ValueError(f"{path}: the gate scores an identical pair {ident:.3f} (must be < 0.1)")
    if asym > 1e-5:
        raise ValueError(f"{path}: the gate is not symmetric in the dates (max diff {asym:.2e})")
    return {"checker": True, "max_abs_diff": diff, "identity_score": ident, "swap_max_diff": asym}


def install_gate(bundle_root: str | Path, head, info: dict) -> dict:
    """Export the head into the bundle, point every variant at it, and rewrite the manifest (hashes included)."""
    bundle = Bundle.open(bundle_root)
    m = json.loads(json.dumps(bundle.manifest))
    tokens, dim = info["input_tokens"], info["input_dim"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / GATE_FILE
        validation = export_gate(head, tmp_path, tokens, dim)
        tmp_path.replace(bundle.root / GATE_FILE)
    m["files"][GATE_FILE] = {}
    for v in m["variants"].values():
        v["gate"] = GATE_FILE
    m["input"]["gsd_m"] = info.get("input_gsd_m", 0.5)  # the ground resolution the model was made for (LEVIR-CC)
    old = m.get("gate", {})
    m["gate"] = {**info, "file": GATE_FILE, "input": "trunk tokens of both dates [B,N,dc]", "validation": validation,
                 "replaces": {"fusion_gate_threshold": old.get("fusion_gate_threshold", old.get("threshold", 0.5))}}
    return write_manifest(bundle.root, m)


def prepare_tokens(bundle_root: str | Path) -> None:
    """Make sure the bundle can feed a gate: a trunk graph, or encoder outputs "ta"/"tb" (added for known archs)."""
    bundle = Bundle.open(bundle_root)
    if "trunk" in bundle.variant("fp32"):
        return
    names = TOKEN_TENSORS.get(bundle.manifest.get("arch"))
    if names is None:
        raise ValueError(f"{bundle.root}: no trunk graph, and no known token tensors for arch "
                         f"{bundle.manifest.get('arch')!r} (see export.gate.TOKEN_TENSORS)")
    expose_tokens(bundle.root, *names)


def expose_tokens(bundle_root: str | Path, pre: str, post: str, precision: str = "fp32") -> dict:
    """Add the encoder's per-date feature maps `pre`, `post` (tensor names, [B,C,H,W]) as outputs "ta", "tb", so a
    bundle without a trunk graph (the teacher) can feed a gate; rewrites the graph and the manifest's hashes."""
    import onnx

    bundle = Bundle.open(bundle_root)
    path = bundle.path(bundle.variant(precision)["encoder"])
    model = onnx.load(str(path))
    if "ta" in {o.name for o in model.graph.output}:
        return bundle.manifest
    for src, dst in ((pre, "ta"), (post, "tb")):
        model.graph.node.append(onnx.helper.make_node("Identity", [src], [dst], name=f"expose_{dst}"))
        model.graph.output.append(onnx.helper.make_tensor_value_info(dst, onnx.TensorProto.FLOAT, ["B", "C", "H", "W"]))
    onnx.checker.check_model(model)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    m = json.loads(json.dumps(bundle.manifest))
    m["files"] = list(m["files"])
    return write_manifest(bundle.root, m)
