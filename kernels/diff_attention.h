/* edgecc fused difference attention: the one public header of the native core (C99).
 *
 * The op (defined once; the model in train/ calls the same op through edgecc.train.ops.diff_attention):
 *
 *   diff_attention(a, b, heads, topk) -> out        a, b, out: float32 [B, N, C], C % heads == 0, d = C / heads
 *   per batch item and head h (channels h*d .. h*d+d-1):
 *     queries  q_i = b_i - a_i                      (the temporal difference, formed inside the op)
 *     keys = values = the 2N tokens {a_0..a_{N-1}, b_0..b_{N-1}}   (parameter-free; projections live outside)
 *     top-k:   if 0 < topk < N only tokens j whose ||b_j - a_j||_2 (over all C channels) ranks among the topk
 *              largest contribute (their a_j and b_j: 2*topk keys); ties: larger first, then lower index.
 *              topk <= 0 or topk >= N means dense. Ranking here: the float32 difference squared and summed in
 *              double (NaN last); rankings that differ only by rounding (near-ties) may differ between
 *              implementations (NumPy, torch: float32 sums), exact ties never do.
 *     out_i = sum_j softmax_j(q_i . k_j / sqrt(d)) v_j
 *
 * One pass per block of 64 queries forms the difference, computes a 64 x 64 score tile against a block of keys
 * (read in place from a and b), keeps a streaming (online) softmax and accumulates the weighted sum: the N x 2N
 * score matrix never exists. Memory: a fixed per-thread workspace of (128 d + 4352) floats (independent of N) plus,
 * for top-k, 16 bytes per token for the ranking.
 *
 * Usage:
 *
 *     #include "diff_attention.h"
 *     // a, b, out: float32 [batch][tokens][channels], row-major, out must not overlap a or b
 *     edgecc_status s = edgecc_diff_attention_f32(a, b, out, 1, 64, 128, 4, 16, 0);   // topk 16, all cores
 *     if (s != EDGECC_OK) fprintf(stderr, "diff_attention: %s\n", edgecc_status_string(s));
 *
 * Thread safety: every function is reentrant. There is no global or static mutable state; the caller owns all
 * input and output buffers, and a call allocates (and frees) its own workspace. Several threads may call at once
 * (each call runs its own OpenMP team when built with OpenMP; without OpenMP a call runs on the calling thread).
 *
 * SIMD: the kernel body is compiled once per instruction set (x86-64: AVX-512F, AVX2+FMA, SSE2 baseline; other
 * targets: 128-bit generic vectors, e.g. NEON on a Jetson; compilers without GCC vector extensions: scalar) and
 * the best one the CPU supports is chosen at call time, so the build never needs -march=native (nor GCC
 * target_clones: each path needs its own vector width, which one source with clones cannot give).
 * -DEDGECC_SCALAR_ONLY builds the plain C99 path alone. Accuracy: about 1e-7 relative to a float32 reference (the
 * exp is a Cephes-style polynomial; scores more than 87 below the running max get weight exactly 0).
 *
 * GPU: kernels/diff_attention_cuda.cu implements the same op for CUDA (fp32, fp16) for the PyTorch side.
 * TensorRT: there is no plugin. The TensorRT path is the standard-op ONNX export of the torch reference
 * (Sub, MatMul, Softmax, TopK, GatherElements); TensorRT fuses that attention pattern itself.
 */
#ifndef EDGECC_DIFF_ATTENTION_H
#define EDGECC_DIFF_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGECC_DIFF_ATTENTION_VERSION 1

/* Status codes: functions never abort or print; they return one of these. */
typedef enum {
    EDGECC_OK = 0,
    EDGECC_ERR_BAD_ARGUMENT = 1,  /* NULL pointer, non-positive size, channels % heads != 0, overlap, size overflow */
    EDGECC_ERR_OUT_OF_MEMORY = 2, /* the workspace could not be allocated; out is incomplete */
    EDGECC_ERR_UNSUPPORTED = 3    /* the requested SIMD level is not supported by this CPU or build */
} edgecc_status;

/* Code paths (the `simd` argument of edgecc_diff_attention_f32_simd). */
typedef enum {
    EDGECC_SIMD_AUTO = 0,    /* the best path this CPU supports */
    EDGECC_SIMD_SCALAR = 1,  /* plain C, one float at a time */
    EDGECC_SIMD_VEC128 = 2,  /* 128-bit vectors: SSE2 on x86-64, NEON on aarch64, generic elsewhere */
    EDGECC_SIMD_AVX2 = 3,    /* 256-bit AVX2 + FMA (x86-64) */
    EDGECC_SIMD_AVX512 = 4   /* 512-bit AVX-512F (x86-64) */
} edgecc_simd;

/* out[B,N,C] = diff_attention(a, b, heads, topk). nthreads <= 0: all cores (OpenMP default, which honours
 * OMP_NUM_THREADS); ignored when built without OpenMP. */
edgecc_status edgecc_diff_attention_f32(const float *a, const float *b, float *out, int64_t batch, int64_t tokens,
                                        int64_t channels, int64_t heads, int64_t topk, int nthreads);

/* The same with an explicit code path (tests run every path the CPU has; benchmarks measure what each buys). */
edgecc_status edgecc_diff_attention_f32_simd(const float *a, const float *b, float *out, int64_t batch,
                                             int64_t tokens, int64_t channels, int64_t heads, int64_t topk,
                                             int nthreads, edgecc_simd simd);

/* Bytes a call with these arguments allocates on the heap (workspaces of all threads + the top-k ranking).
 * 0 for invalid arguments. Exact: the call allocates these bytes and nothing else. */
size_t edgecc_diff_attention_workspace_bytes(int64_t batch, int64_t tokens, int64_t channels, int64_t heads,
                                             int64_t topk, int nthreads);

/* Threads a call with these arguments uses: nthreads (<= 0: all cores), capped by the work (about 8 MFLOP per
 * thread at least, so the model's own 64-token calls run on one thread) and by the number of query blocks. */
int edgecc_diff_attention_threads(int nthreads, int64_t batch, int64_t tokens, int64_t channels, int64_t heads,
                                  int64_t topk);

/* The path EDGECC_SIMD_AUTO picks on this CPU, and whether a given path can run here. */
edgecc_simd edgecc_diff_attention_best_simd(void);
int edgecc_diff_attention_simd_supported(edgecc_simd simd);
const char *edgecc_simd_name(edgecc_simd simd);

/* 1 when built with OpenMP. */
int edgecc_diff_attention_openmp(void);

const char *edgecc_status_string(edgecc_status status);

#ifdef __cplusplus
}
#endif

#endif /* EDGECC_DIFF_ATTENTION_H */
