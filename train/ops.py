"""diff_attention for the model (PyTorch): one call site, the fused kernel or the standard-op reference.

Example:
    >>> import torch
    >>> from edgecc.train.ops import diff_attention
    >>> a, b = torch.randn(2, 64, 128), torch.randn(2, 64, 128)   # projected tokens of date A and date B
    >>> out = diff_attention(a, b, heads=4, topk=16)             # [2, 64, 128]; differentiable

The op (kernels/diff_attention.h): per batch item and head, queries q_i = b_i - a_i, keys = values = the 2N tokens
of a and b (no parameters: projections live in the model); with 0 < topk < N only the topk tokens of largest
||b_j - a_j|| give keys (ties: lower index first). out_i = softmax(q_i k^T / sqrt(d)) v.

`diff_attention` runs the custom op `torch.ops.edgecc.diff_attention` (the native CPU kernel of edgecc._native, or
the CUDA kernel of kernels/diff_attention_cuda.cu, JIT-built from a source checkout) when EDGECC_FUSED != "0", the
kernel for the tensor's device is available (CPU: float32; CUDA: float32 / float16) and nothing is tracing or
exporting; otherwise `diff_attention_reference`: standard ops only (Sub, MatMul, Softmax, TopK, GatherElements in
ONNX opset 17), which is the graph exported for ONNX Runtime and TensorRT (TensorRT fuses the attention itself).
Gradients of the custom op recompute through the reference.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor

from edgecc import fusion

__all__ = ["diff_attention", "diff_attention_reference", "topk_tokens", "fused_available"]

_CUDA_SOURCE = Path(__file__).resolve().parents[1] / "kernels" / "diff_attention_cuda.cu"  # a source checkout


# ---------------------------------------------------------------------------------------------- reference


def diff_attention_reference(a: Tensor, b: Tensor, heads: int, topk: int = 0) -> Tensor:
    """The definition in standard ops (exportable to ONNX opset 17, differentiable).

    Args:
        a: [B, N, C] token features of date A.
        b: [B, N, C] token features of date B.
        heads: attention heads; C % heads == 0.
        topk: 0 < topk < N keeps the keys of the topk tokens of largest difference; otherwise dense.

    Returns:
        [B, N, C], dtype of a.
    """
    n_batch, n_tokens, channels = a.shape
    d = channels // heads
    q = b - a  # [B, N, C] the temporal difference
    if 0 < topk < n_tokens:
        gather = topk_tokens(a, b, topk).unsqueeze(-1).expand(-1, -1, channels)  # [B, K, C]
        a, b = torch.gather(a, 1, gather), torch.gather(b, 1, gather)  # [B, K, C]
    keys = torch.cat([a, b], dim=1)  # [B, 2K, C]; keys = values
    qh = q.reshape(n_batch, n_tokens, heads, d).transpose(1, 2)  # [B, H, N, d]
    kh = keys.reshape(n_batch, keys.shape[1], heads, d).transpose(1, 2)  # [B, H, 2K, d]
    attn = torch.softmax(qh @ kh.transpose(-1, -2) * d**-0.5, dim=-1)  # [B, H, N, 2K]
    return (attn @ kh).transpose(1, 2).reshape(n_batch, n_tokens, channels)


def topk_tokens(a: Tensor, b: Tensor, topk: int) -> Tensor:
    """int64 [B, topk]: the tokens of largest ||b - a||^2 (float32 sums), ties to the lower index.

    Eager: a stable sort. Tracing / ONNX export: TopK, whose ONNX definition breaks ties to the lower index too.
    """
    diff = (b - a).float()  # float32 even for fp16 inputs (TensorRT has no float64)
    m2 = (diff * diff).sum(-1)  # [B, N]
    if _tracing():
        return torch.topk(m2, topk, dim=1).indices
    return torch.sort(m2, dim=1, descending=True, stable=True).indices[:, :topk]


# ---------------------------------------------------------------------------------------------- dispatch


def diff_attention(a: Tensor, b: Tensor, heads: int, topk: int = 0) -> Tensor:
    """The model's one call site: the fused custom op when usable here, else the reference (see module doc)."""
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(f"diff_attention: a and b must both be [B, N, C], got {tuple(a.shape)} and {tuple(b.shape)}")
    if heads < 1 or a.shape[2] % heads:
        raise ValueError(f"diff_attention: channels {a.shape[2]} not divisible by heads {heads}")
    if fused_available(a, b):
        return torch.ops.edgecc.diff_attention(a, b, int(heads), int(topk))
    return diff_attention_reference(a, b, heads, topk)


def fused_available(a: Tensor, b: Tensor) -> bool:
    """Whether `diff_attention(a, b, ...)` takes the custom op right now (switch, device, dtype, tracing)."""
    if os.environ.get("EDGECC_FUSED", "1") == "0" or _tracing() or a.dtype != b.dtype or a.device != b.device:
        return False
    if a.device.type == "cpu":
        if a.dtype != torch.float32:
            return False
        if fusion._native_module() is None:
            fusion._warn_missing()
            return False
        return True
    if a.device.type == "cuda":
        return a.dtype in (torch.float32, torch.float16) and _cuda_extension() is not None
    return False


def _tracing() -> bool:
    return (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or bool(getattr(torch.compiler, "is_exporting", lambda: False)()))


# ---------------------------------------------------------------------------------------------- the custom op


@torch.library.custom_op("edgecc::diff_attention", mutates_args=(), device_types="cpu")
def _diff_attention_op(a: Tensor, b: Tensor, heads: int, topk: int) -> Tensor:
    """CPU: the native kernel on NumPy views of contiguous float32 tensors (other dtypes: the reference)."""
    if a.dtype != torch.float32 or fusion._native_module() is None:
        return diff_attention_reference(a, b, heads, topk)
    a_np, b_np = a.detach().contiguous().numpy(), b.detach().contiguous().numpy()
    return torch.from_numpy(fusion.diff_attention(a_np, b_np, heads, topk, fused=True))


@_diff_attention_op.register_kernel("cuda")
def _diff_attention_cuda(a: Tensor, b: Tensor, heads: int, topk: int) -> Tensor:
    ext = _cuda_extension()
    if ext is None or a.dtype not in (torch.float32, torch.float16) or a.shape[2] // heads > 256:
        return diff_attention_reference(a, b, heads, topk)
    n_tokens = a.shape[1]
    idx = (topk_tokens(a, b, topk) if 0 < topk < n_tokens
           else torch.empty(0, 0, dtype=torch.int64, device=a.device))
    return ext.diff_attention(a, b, heads, idx)


@_diff_attention_op.register_fake
def _diff_attention_fake(a: Tensor, b: Tensor, heads: int, topk: int) -> Tensor:
    torch._check(a.shape == b.shape)
    return torch.empty_like(a, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:
    a, b, heads, topk = inputs
    ctx.save_for_backward(a, b)
    ctx.heads, ctx.topk = heads, topk


def _backward(ctx, grad: Tensor):
    a, b = ctx.saved_tensors
    with torch.enable_grad():
        a_, b_ = a.detach().requires_grad_(True), b.detach().requires_grad_(True)
        out = diff_attention_reference(a_, b_, ctx.heads, ctx.topk)
        grad_a, grad_b = torch.autograd.grad(out, (a_, b_), grad)
    return grad_a, grad_b, None, None


_diff_attention_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------- CUDA build


@functools.cache
def _cuda_extension():
    """The JIT-built CUDA kernel, or None (no GPU, no source checkout, or the build failed: warns once)."""
    if not torch.cuda.is_available():
        return None
    if not _CUDA_SOURCE.is_file():
        warnings.warn(f"edgecc: {_CUDA_SOURCE} not found (installed from a wheel); CUDA diff_attention uses the "
                      "torch reference", RuntimeWarning, stacklevel=2)
        return None
    try:
        from torch.utils.cpp_extension import load

        return load(name="edgecc_diff_attention_cuda", sources=[str(_CUDA_SOURCE)], extra_cuda_cflags=["-O3"])
    except Exception as e:  # noqa: BLE001 - no nvcc, a compile error: the reference still runs
        warnings.warn(f"edgecc: building the CUDA diff_attention kernel failed ({e}); using the torch reference",
                      RuntimeWarning, stacklevel=2)
        return None
