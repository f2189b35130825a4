/* edgecc fused difference attention, CPU (C99 + optional OpenMP). API and usage: diff_attention.h.
 *
 * Layout of the work: tasks = batch x heads x ceil(N / 64) query blocks, spread over threads (OpenMP dynamic
 * schedule); each thread owns one fixed workspace (independent of N); the body (diff_attention_body.h) is compiled
 * once per SIMD path and the path is picked per call. Top-k: per batch item, squared magnitudes in double, then an
 * nth_element-style selection under the order (magnitude desc, index asc), then the k winners sorted by index.
 */

#include "diff_attention.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if (defined(__GNUC__) || defined(__clang__)) && !defined(EDGECC_SCALAR_ONLY) /* -DEDGECC_SCALAR_ONLY: plain C99 */
#define DA_HAS_VEC 1
#else
#define DA_HAS_VEC 0
#endif
#if DA_HAS_VEC && defined(__x86_64__)
#define DA_X86 1
#include <immintrin.h> /* max instructions; each used only inside a function compiled for its instruction set */
#else
#define DA_X86 0
#endif
#if DA_HAS_VEC && defined(__ARM_NEON)
#include <arm_neon.h>
#endif

#ifndef DA_BQ
#define DA_BQ 64 /* queries per task */
#endif
#ifndef DA_BK
#define DA_BK 64 /* keys per block */
#endif
#define DA_ALIGN 64
#define DA_MIN_FLOPS_PER_THREAD 8e6 /* ~80 us of one AVX-512 core */

typedef struct {
    const float *a, *b; /* [B, N, C] */
    float *out;         /* [B, N, C] */
    int64_t batch, tokens, channels, heads, d;
    int64_t nsel;       /* tokens that contribute keys: N (dense) or topk */
    const int64_t *idx; /* [B, N]: per batch item the nsel selected tokens first (NULL: dense) */
} da_problem;

/* ------------------------------------------------------------------------------------------- the SIMD paths */

#define DA_W 1
#define DA_VEC 0
#define DA_RK 4
#define DA_RC 4
#define DA_NV 4
#define DA_SUFFIX scalar
#define DA_ATTR
#include "diff_attention_body.h"

#if DA_HAS_VEC
#define DA_W 4
#define DA_VEC 1
#define DA_RK 2
#define DA_RC 2
#define DA_NV 4
#define DA_SUFFIX vec128
#define DA_ATTR
#include "diff_attention_body.h"
#endif

#if DA_X86
#define DA_W 8
#define DA_VEC 1
#define DA_RK 4
#define DA_RC 4
#define DA_NV 2
#define DA_SUFFIX avx2
#define DA_ATTR __attribute__((target("avx2,fma")))
#include "diff_attention_body.h"

#define DA_W 16
#define DA_VEC 1
#define DA_RK 4
#define DA_RC 4
#define DA_NV 4
#define DA_SUFFIX avx512
#define DA_ATTR __attribute__((target("avx512f,avx2,fma")))
#include "diff_attention_body.h"
#endif

typedef void (*da_task_fn)(const da_problem *, int64_t, float *);

int edgecc_diff_attention_simd_supported(edgecc_simd simd) {
    switch (simd) {
    case EDGECC_SIMD_AUTO:
    case EDGECC_SIMD_SCALAR:
        return 1;
    case EDGECC_SIMD_VEC128:
        return DA_HAS_VEC;
#if DA_X86
    case EDGECC_SIMD_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case EDGECC_SIMD_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    default:
        return 0;
    }
}

edgecc_simd edgecc_diff_attention_best_simd(void) {
    if (edgecc_diff_attention_simd_supported(EDGECC_SIMD_AVX512)) return EDGECC_SIMD_AVX512;
    if (edgecc_diff_attention_simd_supported(EDGECC_SIMD_AVX2)) return EDGECC_SIMD_AVX2;
    if (edgecc_diff_attention_simd_supported(EDGECC_SIMD_VEC128)) return EDGECC_SIMD_VEC128;
    return EDGECC_SIMD_SCALAR;
}

static da_task_fn da_pick(edgecc_simd simd) {
    switch (simd) {
#if DA_X86
    case EDGECC_SIMD_AVX512:
        return task_avx512;
    case EDGECC_SIMD_AVX2:
        return task_avx2;
#endif
#if DA_HAS_VEC
    case EDGECC_SIMD_VEC128:
        return task_vec128;
#endif
    default:
        return task_scalar;
    }
}

const char *edgecc_simd_name(edgecc_simd simd) {
    switch (simd) {
    case EDGECC_SIMD_AUTO:
        return "auto";
    case EDGECC_SIMD_SCALAR:
        return "scalar";
    case EDGECC_SIMD_VEC128:
#if DA_X86
        return "sse2";
#elif defined(__aarch64__) || defined(__ARM_NEON)
        return "neon";
#else
        return "vec128";
#endif
    case EDGECC_SIMD_AVX2:
        return "avx2";
    case EDGECC_SIMD_AVX512:
        return "avx512";
    default:
        return "unknown";
    }
}

int edgecc_diff_attention_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

const char *edgecc_status_string(edgecc_status status) {
    switch (status) {
    case EDGECC_OK:
        return "ok";
    case EDGECC_ERR_BAD_ARGUMENT:
        return "bad argument";
    case EDGECC_ERR_OUT_OF_MEMORY:
        return "out of memory";
    case EDGECC_ERR_UNSUPPORTED:
        return "SIMD path not supported on this CPU or build";
    default:
        return "unknown status";
    }
}

/* ------------------------------------------------------------------------------------------- sizes, threads */

static int64_t da_ntasks(int64_t batch, int64_t tokens, int64_t heads) {
    return batch * heads * ((tokens + DA_BQ - 1) / DA_BQ);
}

int edgecc_diff_attention_threads(int nthreads, int64_t batch, int64_t tokens, int64_t channels, int64_t heads,
                                  int64_t topk) {
#ifdef _OPENMP
    int nt = nthreads > 0 ? nthreads : omp_get_max_threads();
#else
    int nt = 1;
    (void)nthreads;
#endif
    /* At least DA_MIN_FLOPS_PER_THREAD each: below that a team costs more than it saves (and on a busy machine a
     * preempted team member stalls the whole call). */
    const double nsel = (topk > 0 && topk < tokens) ? (double)topk : (double)tokens;
    const double flops = 8.0 * (double)batch * (double)tokens * nsel * (double)channels; /* QK + PV, 2 flops/FMA */
    const double by_work = flops / DA_MIN_FLOPS_PER_THREAD;
    if (by_work < nt) nt = (int)by_work;
    const int64_t tasks = da_ntasks(batch, tokens, heads);
    if (tasks < nt) nt = (int)tasks;
    return nt < 1 ? 1 : nt;
}

/* Per thread: QT [d][BQ], OT [d][BQ], ST [BK][BQ], m, l, alpha, block max [BQ]. */
static size_t da_thread_bytes(int64_t d) {
    size_t floats = 2 * DA_BQ * (size_t)d + DA_BQ * DA_BK + 4 * DA_BQ;
    return floats * sizeof(float) + DA_ALIGN;
}

static int da_valid(int64_t batch, int64_t tokens, int64_t channels, int64_t heads) {
    if (batch < 1 || tokens < 1 || channels < 1 || heads < 1 || channels % heads != 0) return 0;
    if (tokens > INT64_MAX / 2 / channels || batch > INT64_MAX / 2 / (tokens * channels)) return 0;
    if ((uint64_t)(batch * tokens * channels) > SIZE_MAX / sizeof(float) / 2) return 0;
    return 1;
}

static int da_is_topk(int64_t tokens, int64_t topk) { return topk > 0 && topk < tokens; }

size_t edgecc_diff_attention_workspace_bytes(int64_t batch, int64_t tokens, int64_t channels, int64_t heads,
                                             int64_t topk, int nthreads) {
    if (!da_valid(batch, tokens, channels, heads)) return 0;
    int nt = edgecc_diff_attention_threads(nthreads, batch, tokens, channels, heads, topk);
    size_t bytes = (size_t)nt * da_thread_bytes(channels / heads);
    if (da_is_topk(tokens, topk)) bytes += (size_t)(batch * tokens) * (sizeof(double) + sizeof(int64_t));
    return bytes;
}

/* ------------------------------------------------------------------------------------------------- top-k */

/* i ranks before j: larger squared magnitude first, then lower index; NaN ranks last. */
static int da_before(const double *m2, int64_t i, int64_t j) { return m2[i] > m2[j] || (m2[i] == m2[j] && i < j); }

/* Rearranges idx[0..n) so that idx[0..k) are the k first under da_before (nth_element: quickselect, median of 3). */
static void da_select(const double *m2, int64_t *idx, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (hi > lo) {
        int64_t mid = lo + (hi - lo) / 2, t;
        /* median of three to idx[mid]; then move it to hi as the pivot */
        if (da_before(m2, idx[mid], idx[lo])) { t = idx[mid]; idx[mid] = idx[lo]; idx[lo] = t; }
        if (da_before(m2, idx[hi], idx[lo])) { t = idx[hi]; idx[hi] = idx[lo]; idx[lo] = t; }
        if (da_before(m2, idx[hi], idx[mid])) { t = idx[hi]; idx[hi] = idx[mid]; idx[mid] = t; }
        t = idx[mid]; idx[mid] = idx[hi]; idx[hi] = t;
        const int64_t pivot = idx[hi];
        int64_t store = lo;
        for (int64_t i = lo; i < hi; ++i) {
            if (da_before(m2, idx[i], pivot)) { t = idx[i]; idx[i] = idx[store]; idx[store] = t; ++store; }
        }
        t = idx[store]; idx[store] = idx[hi]; idx[hi] = t; /* pivot at its final rank `store` */
        if (store == k - 1 || store == k) return;
        if (store > k) hi = store - 1; else lo = store + 1;
    }
}

static int da_cmp_i64(const void *x, const void *y) {
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* Per batch item: idx[bi*N .. bi*N + k) = the top-k tokens, ascending. m2: [B, N] scratch. */
static void da_topk(const da_problem *p, int64_t bi, int64_t k, double *m2, int64_t *idx) {
    const int64_t N = p->tokens, C = p->channels;
    double *mb = m2 + bi * N;
    int64_t *ib = idx + bi * N;
    for (int64_t j = 0; j < N; ++j) {
        const float *ra = p->a + (bi * N + j) * C, *rb = p->b + (bi * N + j) * C;
        double acc[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}; /* 8 independent sums: no serial add chain */
        int64_t c = 0;
        for (; c + 8 <= C; c += 8)
            for (int k = 0; k < 8; ++k) {
                double e = (double)(rb[c + k] - ra[c + k]);
                acc[k] += e * e;
            }
        for (; c < C; ++c) {
            double e = (double)(rb[c] - ra[c]);
            acc[0] += e * e;
        }
        double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        mb[j] = s != s ? -1.0 : s; /* NaN ranks last, like NumPy's stable argsort of -m */
        ib[j] = j;
    }
    da_select(mb, ib, N, k);
    qsort(ib, (size_t)k, sizeof(int64_t), da_cmp_i64);
}

/* -------------------------------------------------------------------------------------------------- entry */

static int da_overlap(const float *x, const float *y, size_t n) {
    uintptr_t a = (uintptr_t)x, b = (uintptr_t)y, len = (uintptr_t)(n * sizeof(float));
    return a < b + len && b < a + len;
}

edgecc_status edgecc_diff_attention_f32_simd(const float *a, const float *b, float *out, int64_t batch,
                                             int64_t tokens, int64_t channels, int64_t heads, int64_t topk,
                                             int nthreads, edgecc_simd simd) {
    if (!a || !b || !out || !da_valid(batch, tokens, channels, heads)) return EDGECC_ERR_BAD_ARGUMENT;
    const size_t total = (size_t)(batch * tokens * channels);
    if (da_overlap(out, a, total) || da_overlap(out, b, total)) return EDGECC_ERR_BAD_ARGUMENT;
    if (simd == EDGECC_SIMD_AUTO) simd = edgecc_diff_attention_best_simd();
    if (!edgecc_diff_attention_simd_supported(simd)) return EDGECC_ERR_UNSUPPORTED;
    const da_task_fn task_fn = da_pick(simd);

    da_problem p = {a, b, out, batch, tokens, channels, heads, channels / heads, tokens, NULL};
    const int64_t ntasks = da_ntasks(batch, tokens, heads);
    const int nt = edgecc_diff_attention_threads(nthreads, batch, tokens, channels, heads, topk);
    (void)nt; /* unused without OpenMP */
    const size_t thread_bytes = da_thread_bytes(p.d);
    void *rank = NULL;
    int failed = 0;

    if (da_is_topk(tokens, topk)) {
        rank = malloc((size_t)(batch * tokens) * (sizeof(double) + sizeof(int64_t)));
        if (!rank) return EDGECC_ERR_OUT_OF_MEMORY;
        double *m2 = (double *)rank;
        int64_t *idx = (int64_t *)(m2 + batch * tokens);
        p.nsel = topk;
        p.idx = idx;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static) if (batch > 1)
#endif
        for (int64_t bi = 0; bi < batch; ++bi) da_topk(&p, bi, topk, m2, idx);
    }

#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        void *raw = malloc(thread_bytes);
        float *ws = raw ? (float *)(((uintptr_t)raw + DA_ALIGN - 1) / DA_ALIGN * DA_ALIGN) : NULL;
        if (!raw) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
            failed = 1;
        }
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t t = 0; t < ntasks; ++t) {
            if (ws) task_fn(&p, t, ws);
        }
        free(raw);
    }
    free(rank);
    return failed ? EDGECC_ERR_OUT_OF_MEMORY : EDGECC_OK;
}

edgecc_status edgecc_diff_attention_f32(const float *a, const float *b, float *out, int64_t batch, int64_t tokens,
                                        int64_t channels, int64_t heads, int64_t topk, int nthreads) {
    return edgecc_diff_attention_f32_simd(a, b, out, batch, tokens, channels, heads, topk, nthreads,
                                          EDGECC_SIMD_AUTO);
}
