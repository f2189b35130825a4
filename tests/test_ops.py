"""edgecc.train.ops: the torch reference, the custom op (native CPU kernel / CUDA), gradients, the ONNX export."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="edgecc.train.ops needs the factory extra (pip install 'edgecc[train]')")

from edgecc.train import ops  # noqa: E402

from edgecc import fusion  # noqa: E402

SHAPES = [(1, 1, 8, 1, 0), (2, 3, 6, 3, 1), (3, 17, 20, 4, 5), (1, 65, 128, 4, 16), (2, 64, 128, 4, 0),
          (1, 65, 56, 8, 64), (2, 17, 15, 5, 17), (1, 9, 12, 2, -1)]
IDS = ["B{}-N{}-C{}-h{}-k{}".format(*s) for s in SHAPES]


def _pair(shape, seed, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device) for _ in range(2))


def _close(out, ref, rel=1e-5):
    err = (out - ref).abs().max().item()
    assert err <= rel * max(1.0, ref.abs().max().item()), err


@pytest.fixture
def native():
    if fusion._native_module() is None:
        pytest.skip(f"edgecc._native is not built ({fusion._import_error()}); reinstall with a C compiler")


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_torch_reference_matches_numpy_reference(shape):
    n_batch, n, c, heads, topk = shape
    a, b = _pair((n_batch, n, c), seed=n + c)
    ref = fusion.diff_attention_reference(a.numpy(), b.numpy(), heads, topk)
    _close(ops.diff_attention_reference(a, b, heads, topk), torch.from_numpy(ref))


def test_topk_ties_go_to_the_lower_index():
    a = torch.zeros(2, 12, 4)
    b = torch.ones(2, 12, 4)
    b[1, [3, 8]] = 5.0
    assert ops.topk_tokens(a, b, 3).tolist() == [[0, 1, 2], [3, 8, 0]]


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_custom_op_matches_torch_reference(native, shape):
    n_batch, n, c, heads, topk = shape
    a, b = _pair((n_batch, n, c), seed=n * c + 1)
    _close(torch.ops.edgecc.diff_attention(a, b, heads, topk), ops.diff_attention_reference(a, b, heads, topk))
    _close(ops.diff_attention(a, b, heads, topk), ops.diff_attention_reference(a, b, heads, topk))


@pytest.mark.parametrize("topk", [0, 3])
def test_reference_gradcheck_float64(topk):
    a, b = _pair((2, 7, 6), seed=3, dtype=torch.float64)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: ops.diff_attention_reference(x, y, 2, topk), (a, b))


@pytest.mark.parametrize("topk", [0, 5])
def test_custom_op_gradient_equals_reference_gradient(native, topk):
    a, b = _pair((2, 20, 16), seed=4)
    grad = torch.randn(2, 20, 16, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad(ops.diff_attention(a.requires_grad_(True), b.requires_grad_(True), 4, topk), (a, b), grad)
    want = torch.autograd.grad(ops.diff_attention_reference(a, b, 4, topk), (a, b), grad)
    for g, w in zip(got, want):
        _close(g, w)


def test_custom_op_registration(native):
    a, b = _pair((1, 8, 16), seed=6)
    torch.library.opcheck(torch.ops.edgecc.diff_attention.default, (a, b, 2, 3))


def test_switch_and_tracing_select_the_reference(native, monkeypatch):
    a, b = _pair((1, 9, 8), seed=7)

    def boom(*args):
        raise RuntimeError("native kernel called")

    monkeypatch.setattr(fusion._native_module(), "diff_attention", boom)
    assert ops.fused_available(a, b)
    with pytest.raises(RuntimeError, match="native kernel called"):
        ops.diff_attention(a, b, 2)
    assert not ops.fused_available(a.double(), b.double())  # the native kernel is float32 only
    monkeypatch.setenv("EDGECC_FUSED", "0")
    _close(ops.diff_attention(a, b, 2), ops.diff_attention_reference(a, b, 2))
    monkeypatch.delenv("EDGECC_FUSED")
    traced = torch.jit.trace(lambda x, y: ops.diff_attention(x, y, 2, 3), (a, b), check_trace=False)  # the reference
    assert not any(n.kind().startswith("edgecc::") for n in traced.graph.nodes())  # no custom op (paths may say edgecc)
    _close(traced(a, b), ops.diff_attention_reference(a, b, 2, 3))


def test_bad_shapes_are_a_clear_error():
    a = torch.zeros(1, 4, 6)
    with pytest.raises(ValueError, match="not divisible"):
        ops.diff_attention(a, a, 4)
    with pytest.raises(ValueError, match=r"\[B, N, C\]"):
        ops.diff_attention(a, torch.zeros(1, 5, 6), 2)


class _Tiny(torch.nn.Module):
    """A projection on each side, then diff_attention: what the model does, small."""

    def __init__(self, topk: int):
        super().__init__()
        self.proj = torch.nn.Linear(16, 16)
        self.topk = topk

    def forward(self, a, b):
        return ops.diff_attention(self.proj(a), self.proj(b), 4, self.topk)


@pytest.mark.parametrize("topk", [0, 6])
def test_onnx_export_is_standard_ops_and_ort_matches(topk):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the factory extra")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = _Tiny(topk).eval()
    a, b = _pair((2, 24, 16), seed=8)
    f = io.BytesIO()
    torch.onnx.export(model, (a, b), f, opset_version=17, dynamo=False, input_names=["a", "b"],
                      output_names=["out"])
    graph = onnx.load_from_string(f.getvalue())
    onnx.checker.check_model(graph)
    kinds = {(n.domain or "ai.onnx", n.op_type) for n in graph.graph.node}
    assert {d for d, _ in kinds} == {"ai.onnx"}, kinds  # standard ops only: no custom domain
    assert {"MatMul", "Softmax", "Sub"} <= {k for _, k in kinds}
    assert ("TopK" in {k for _, k in kinds}) == (topk > 0)
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"a": a.numpy(), "b": b.numpy()})[0]
    with torch.no_grad():
        _close(torch.from_numpy(got), model(a, b))


# ---------------------------------------------------------------------------------------------- CUDA


_NO_CUDA = "needs a CUDA GPU (the CUDA kernel is unverified until this runs)"


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=_NO_CUDA)
@pytest.mark.parametrize("dtype, rel", [(torch.float32, 1e-5), (torch.float16, 2e-3)], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES + [(2, 1024, 128, 4, 256), (1, 300, 512, 2, 0)],
                         ids=IDS + ["B2-N1024-k256", "B1-N300-d256"])
def test_cuda_kernel_matches_reference(shape, dtype, rel):
    if ops._cuda_extension() is None:
        pytest.fail("CUDA is available but the kernel did not build (see the warning)")
    n_batch, n, c, heads, topk = shape
    a, b = _pair((n_batch, n, c), seed=9, dtype=dtype, device="cuda")
    assert ops.fused_available(a, b)
    out = ops.diff_attention(a, b, heads, topk)
    ref = ops.diff_attention_reference(a.float(), b.float(), heads, topk)
    assert out.dtype == dtype
    _close(out.float(), ref, rel)


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason=_NO_CUDA)
def test_cuda_gradient_equals_reference_gradient():
    a, b = _pair((2, 40, 32), seed=10, device="cuda")
    grad = torch.randn_like(a)
    got = torch.autograd.grad(ops.diff_attention(a.requires_grad_(True), b.requires_grad_(True), 4, 9), (a, b), grad)
    want = torch.autograd.grad(ops.diff_attention_reference(a, b, 4, 9), (a, b), grad)
    for g, w in zip(got, want):
        _close(g, w)
    np.testing.assert_equal(got[0].device.type, "cuda")
