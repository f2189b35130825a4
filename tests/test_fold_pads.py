"""export/fold_pads.py: zero Pads folded into Convs, outputs bit-identical; the shipped trunks carry no Pad."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the factory's graph passes need onnx (edgecc[train])")
ort = pytest.importorskip("onnxruntime")
from edgecc.export.fold_pads import fold_file, fold_pads  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgecc.bundle import Bundle  # noqa: E402


def _graph(tmp_path, pads=(0, 0, 0, 1, 0, 0, 1, 0), value=0.0):
    """img uint8 [B,16,16,3] -> float, NCHW -> Pad -> Conv 3x3 stride 2 -> out."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    p = numpy_helper.from_array(np.array(pads, np.int64), "pads")
    v = numpy_helper.from_array(np.array(value, np.float32), "v")
    nodes = [helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["f"], ["x"], perm=[0, 3, 1, 2]),
             helper.make_node("Pad", ["x", "pads", "v"], ["xp"], mode="constant"),
             helper.make_node("Conv", ["xp", "w"], ["out"], strides=[2, 2])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("img", TensorProto.UINT8, ["B", 16, 16, 3])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 4, "H", "W"])], [w, p, v])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "g.onnx"
    onnx.save(m, str(path))
    return path


def test_fold_keeps_outputs_identical(tmp_path):
    src = _graph(tmp_path)
    dst = tmp_path / "folded.onnx"
    assert fold_file(src, dst, size=16) == 1
    m = onnx.load(str(dst))
    assert [n.op_type for n in m.graph.node] == ["Cast", "Transpose", "Conv"]
    conv = m.graph.node[-1]
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [0, 1, 1, 0]
    x = {"img": np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)}
    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, x)[0]
    b = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert np.array_equal(a, b)


def test_non_zero_or_channel_pads_are_left_alone(tmp_path):
    feeds = {"img": np.zeros((1, 16, 16, 3), np.uint8)}
    for kw in ({"value": 1.0}, {"pads": (0, 1, 0, 0, 0, 0, 0, 0)}):
        m = onnx.load(str(_graph(tmp_path, **kw)))
        _, n = fold_pads(m, feeds)
        assert n == 0 and "Pad" in [x.op_type for x in m.graph.node]


def test_shipped_trunks_are_folded():
    b = Bundle.open()
    for prec in ("fp32", "int8", "fp16"):
        name = b.variant(prec)["trunk"]
        ops = {n.op_type for n in onnx.load(str(b.path(name))).graph.node}
        assert "Pad" not in ops and "Conv" in ops, name
        assert "fold_pads" in b.manifest["graph_passes"][name][0]
