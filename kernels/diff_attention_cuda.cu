// edgecc fused difference attention, CUDA (fp32 and fp16 in, fp32 accumulation). UNVERIFIED: written against the
// documented CUDA / ATen APIs on a machine without a GPU; the parity tests (tests/test_ops.py, requires_cuda) have
// not run yet. The op is defined in kernels/diff_attention.h.
//
// Built just in time by edgecc.train.ops (torch.utils.cpp_extension.load) when torch.cuda.is_available():
//
//     ext = load(name="edgecc_diff_attention_cuda", sources=["kernels/diff_attention_cuda.cu"])
//     out = ext.diff_attention(a, b, heads, idx)   // a, b: CUDA [B, N, C] fp32/fp16; idx: int64 [B, K] or empty
//
// Top-k selection happens in torch (edgecc.train.ops.topk_tokens); this kernel takes the selected token indices.
// Layout: grid (ceil(N / 64), heads, B), one thread per query; a tile of 32 keys is staged in shared memory and
// each thread keeps its query, output accumulator and running max / sum in registers (streaming softmax), so no
// score matrix is stored. Head widths up to 256 (templated on the padded width).
// TensorRT: no plugin; the TensorRT path is the standard-op ONNX export of the torch reference.

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <cmath>

namespace {

constexpr int kQueries = 64; // threads (queries) per block
constexpr int kKeys = 32;    // keys per shared-memory tile

template <typename T, int D>
__global__ void diff_attention_kernel(const T *__restrict__ a, const T *__restrict__ b, T *__restrict__ out,
                                      const int64_t *__restrict__ idx, int64_t n_tokens, int64_t channels, int d,
                                      int64_t nsel, float scale) {
    __shared__ float keys[kKeys][D];
    const int64_t bi = blockIdx.z, h = blockIdx.y;
    const int64_t i = (int64_t)blockIdx.x * kQueries + threadIdx.x;
    const bool active = i < n_tokens;
    const T *ab = a + bi * n_tokens * channels + h * d;
    const T *bb = b + bi * n_tokens * channels + h * d;
    const int64_t *ib = idx ? idx + bi * nsel : nullptr;

    float q[D], o[D];
#pragma unroll
    for (int c = 0; c < D; ++c) {
        q[c] = (active && c < d) ? (static_cast<float>(bb[i * channels + c]) - static_cast<float>(ab[i * channels + c])) * scale
                                 : 0.0f;
        o[c] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;

    const int64_t nkeys = 2 * nsel;
    for (int64_t k0 = 0; k0 < nkeys; k0 += kKeys) {
        const int nk = nkeys - k0 < kKeys ? (int)(nkeys - k0) : kKeys;
        for (int e = threadIdx.x; e < nk * d; e += blockDim.x) { // stage keys k0 .. k0+nk-1
            const int jj = e / d, c = e % d;
            const int64_t t = k0 + jj;
            const int64_t tok = t < nsel ? (ib ? ib[t] : t) : (ib ? ib[t - nsel] : t - nsel);
            keys[jj][c] = static_cast<float>((t < nsel ? ab : bb)[tok * channels + c]);
        }
        __syncthreads();
        if (active) {
            float s[kKeys];
            float mx = m;
#pragma unroll
            for (int jj = 0; jj < kKeys; ++jj) {
                float acc = 0.0f;
#pragma unroll
                for (int c = 0; c < D; ++c) acc += (c < d) ? q[c] * keys[jj][c] : 0.0f;
                s[jj] = acc;
                if (jj < nk) mx = fmaxf(mx, acc);
            }
            const float alpha = m == -INFINITY ? 0.0f : expf(m - mx);
            l *= alpha;
#pragma unroll
            for (int c = 0; c < D; ++c) o[c] *= alpha;
#pragma unroll
            for (int jj = 0; jj < kKeys; ++jj) {
                if (jj < nk) {
                    const float p = expf(s[jj] - mx);
                    l += p;
#pragma unroll
                    for (int c = 0; c < D; ++c) o[c] += (c < d) ? p * keys[jj][c] : 0.0f;
                }
            }
            m = mx;
        }
        __syncthreads();
    }
    if (active) {
        T *ob = out + (bi * n_tokens + i) * channels + h * d;
        const float inv = 1.0f / l;
#pragma unroll
        for (int c = 0; c < D; ++c)
            if (c < d) ob[c] = static_cast<T>(o[c] * inv);
    }
}

template <typename T, int D>
void launch(const torch::Tensor &a, const torch::Tensor &b, torch::Tensor &out, const int64_t *idx, int64_t heads,
            int64_t nsel) {
    const int64_t B = a.size(0), N = a.size(1), C = a.size(2);
    const int d = (int)(C / heads);
    const dim3 grid((unsigned)((N + kQueries - 1) / kQueries), (unsigned)heads, (unsigned)B);
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    diff_attention_kernel<T, D><<<grid, kQueries, 0, stream>>>(a.data_ptr<T>(), b.data_ptr<T>(), out.data_ptr<T>(),
                                                               idx, N, C, d, nsel, 1.0f / std::sqrt((float)d));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void launch_width(const torch::Tensor &a, const torch::Tensor &b, torch::Tensor &out, const int64_t *idx,
                  int64_t heads, int64_t nsel) {
    const int64_t d = a.size(2) / heads;
    if (d <= 32) launch<T, 32>(a, b, out, idx, heads, nsel);
    else if (d <= 64) launch<T, 64>(a, b, out, idx, heads, nsel);
    else if (d <= 128) launch<T, 128>(a, b, out, idx, heads, nsel);
    else launch<T, 256>(a, b, out, idx, heads, nsel);
}

} // namespace

torch::Tensor diff_attention_cuda(torch::Tensor a, torch::Tensor b, int64_t heads, torch::Tensor idx) {
    TORCH_CHECK(a.is_cuda() && b.is_cuda(), "diff_attention_cuda: a and b must be CUDA tensors");
    TORCH_CHECK(a.dim() == 3 && a.sizes() == b.sizes(), "diff_attention_cuda: a, b must both be [B, N, C]");
    TORCH_CHECK(a.scalar_type() == b.scalar_type(), "diff_attention_cuda: a and b dtypes differ");
    TORCH_CHECK(heads >= 1 && a.size(2) % heads == 0, "diff_attention_cuda: channels % heads != 0");
    TORCH_CHECK(a.size(2) / heads <= 256, "diff_attention_cuda: head width > 256 is not supported");
    const c10::cuda::CUDAGuard guard(a.device());
    a = a.contiguous();
    b = b.contiguous();
    auto out = torch::empty_like(a);
    const int64_t *ip = nullptr;
    int64_t nsel = a.size(1);
    if (idx.numel() > 0) {
        TORCH_CHECK(idx.is_cuda() && idx.scalar_type() == torch::kInt64 && idx.dim() == 2 && idx.size(0) == a.size(0),
                    "diff_attention_cuda: idx must be CUDA int64 [B, K]");
        idx = idx.contiguous();
        ip = idx.data_ptr<int64_t>();
        nsel = idx.size(1);
    }
    if (a.scalar_type() == torch::kFloat32) launch_width<float>(a, b, out, ip, heads, nsel);
    else if (a.scalar_type() == torch::kFloat16) launch_width<at::Half>(a, b, out, ip, heads, nsel);
    else TORCH_CHECK(false, "diff_attention_cuda: dtype must be float32 or float16");
    return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("diff_attention", &diff_attention_cuda, "diff_attention(a, b, heads, idx) -> out (CUDA, fp32/fp16)");
}
