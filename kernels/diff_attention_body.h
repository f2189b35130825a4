/* The fused diff-attention body, compiled once per SIMD path: included by diff_attention.c only.
 *
 * The includer defines, then this file undefines:
 *   DA_W       floats per vector (1, 4, 8, 16)
 *   DA_VEC     1: GCC/Clang vector extensions of DA_W floats; 0: scalar (DA_W == 1)
 *   DA_RK      keys per register tile (QK)
 *   DA_RC      channels per register tile (PV)
 *   DA_NV      vectors of queries per register tile (DA_NV * DA_W divides DA_BQ)
 *   DA_SUFFIX  name suffix of this path's functions
 *   DA_ATTR    function attribute selecting the instruction set (may be empty)
 * and provides da_problem, DA_BQ, DA_BK (see diff_attention.c).
 *
 * One task = (batch item, head, block of DA_BQ queries). Everything is laid out query-minor, so every vector runs
 * over DA_W queries and the head width d (odd or not) is only a loop bound:
 *   QT  [d][BQ]   (b - a) / sqrt(d), formed once per task
 *   per block of DA_BK keys (rows of a and b read in place, never copied):
 *     ST  [BK][BQ] = K QT                                   scores, transposed
 *     m_new = max(m, max_j ST[j]) (the block max comes out of the QK tile); alpha = exp(m - m_new); PT = exp(ST - m_new); l = l alpha + sum_j PT[j]
 *     OT  [d][BQ]  = OT alpha + K^T PT                      weighted sum, transposed
 *   out = OT^T / l
 * Registers hold DA_RK keys (QK) or DA_RC channels (PV) x DA_NV query vectors of a tile.
 */

#define DA_CAT2(x, y) x##_##y
#define DA_CAT(x, y) DA_CAT2(x, y)
#define DA_FN(name) DA_CAT(name, DA_SUFFIX)

#if DA_VEC
typedef float DA_FN(vf) __attribute__((vector_size(DA_W * 4)));
typedef int32_t DA_FN(vi) __attribute__((vector_size(DA_W * 4)));
#define vf DA_FN(vf)
#define vi DA_FN(vi)

static inline DA_ATTR vf DA_FN(vld)(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline DA_ATTR void DA_FN(vst)(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline DA_ATTR vf DA_FN(vset1)(float x) {
    vf z = {0};
    return -z + x; /* -0.0 + x == x for every x, so this folds to one broadcast; {0} + x would cost an add */
}
static inline DA_ATTR vf DA_FN(vmax)(vf x, vf y) {
#if DA_X86 && DA_W == 16
    return (vf)_mm512_max_ps((__m512)x, (__m512)y); /* one instruction instead of compare + blend */
#elif DA_X86 && DA_W == 8
    return (vf)_mm256_max_ps((__m256)x, (__m256)y);
#elif DA_X86 && DA_W == 4
    return (vf)_mm_max_ps((__m128)x, (__m128)y);
#elif defined(__ARM_NEON) && DA_W == 4
    return (vf)vmaxq_f32((float32x4_t)x, (float32x4_t)y);
#else
    vi m = x > y;
    return (vf)(((vi)x & m) | ((vi)y & ~m));
#endif
}
static inline DA_ATTR float DA_FN(hsum)(vf v) {
    float s = 0.0f;
    for (int k = 0; k < DA_W; ++k) s += v[k];
    return s;
}
static inline DA_ATTR float DA_FN(hmax)(vf v) {
    float s = v[0];
    for (int k = 1; k < DA_W; ++k) s = v[k] > s ? v[k] : s;
    return s;
}
/* exp(x) for x <= 0 (softmax arguments): Cephes expf polynomial, ~1e-7 relative; 0 below -87.3 (and for -inf). */
static inline DA_ATTR vf DA_FN(vexp)(vf x) {
    const vf lo = DA_FN(vset1)(-87.33654f);
    const vf magic = DA_FN(vset1)(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer in the low bits */
    vi keep = x >= lo;
    vf xc = DA_FN(vmax)(x, lo);
    vf tm = xc * 1.44269504088896341f + magic;
    vf n = tm - magic;
    vf r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = DA_FN(vset1)(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    vf y = (p * r + 1.0f) * r + 1.0f; /* 1 + r + r^2 P(r) as two FMAs */
    vi e = ((vi)tm - 0x4B400000 + 127) << 23; /* 2^n as float bits */
    return (vf)((vi)(y * (vf)e) & keep);
}
#else /* scalar */
#define vf float
static inline float DA_FN(vld)(const float *p) { return *p; }
static inline void DA_FN(vst)(float *p, float v) { *p = v; }
static inline float DA_FN(vset1)(float x) { return x; }
static inline float DA_FN(vmax)(float x, float y) { return x > y ? x : y; }
static inline float DA_FN(hsum)(float v) { return v; }
static inline float DA_FN(hmax)(float v) { return v; }
static inline float DA_FN(vexp)(float x) { return x >= -87.33654f ? expf(x) : 0.0f; }
#endif

/* The key rows of one block: key t is a[token t] for t < nsel, else b[token t - nsel]; head h's d channels. */
static void DA_FN(key_rows)(const da_problem *p, int64_t bi, int64_t h, int64_t k0, int nk, const float **kp) {
    const int64_t nsel = p->nsel;
    const int64_t *idx = p->idx ? p->idx + bi * p->tokens : NULL; /* the selected tokens come first */
    for (int jj = 0; jj < nk; ++jj) {
        const int64_t t = k0 + jj;
        const int64_t tok = t < nsel ? (idx ? idx[t] : t) : (idx ? idx[t - nsel] : t - nsel);
        kp[jj] = (t < nsel ? p->a : p->b) + ((bi * p->tokens + tok) * p->channels + h * p->d);
    }
}

/* ST[j][q] = sum_c key_j[c] QT[c][q] for j < nk, q < nqr (a multiple of DA_NV * DA_W): scores of the block,
 * transposed so that vectors run over queries (no horizontal sums, no transposed copy of the keys); bm[q] = the
 * block's max score per query, kept in registers beside the tile (a separate pass would be one long dependency). */
static DA_ATTR void DA_FN(qk_tile)(const float *QT, const float *const *kp, float *ST, float *bm, int nk, int d,
                                    int nqr) {
    for (int q0 = 0; q0 < nqr; q0 += DA_NV * DA_W) {
        vf mx[DA_NV];
        for (int v = 0; v < DA_NV; ++v) mx[v] = DA_FN(vset1)(-INFINITY);
        int j0 = 0;
        for (; j0 + DA_RK <= nk; j0 += DA_RK) {
            vf acc[DA_RK][DA_NV];
            for (int r = 0; r < DA_RK; ++r)
                for (int v = 0; v < DA_NV; ++v) acc[r][v] = DA_FN(vset1)(0.0f);
            for (int c = 0; c < d; ++c) {
                vf qv[DA_NV];
                for (int v = 0; v < DA_NV; ++v) qv[v] = DA_FN(vld)(QT + (size_t)c * DA_BQ + q0 + v * DA_W);
                for (int r = 0; r < DA_RK; ++r) {
                    vf k = DA_FN(vset1)(kp[j0 + r][c]);
                    for (int v = 0; v < DA_NV; ++v) acc[r][v] += k * qv[v];
                }
            }
            for (int r = 0; r < DA_RK; ++r)
                for (int v = 0; v < DA_NV; ++v) {
                    DA_FN(vst)(ST + (size_t)(j0 + r) * DA_BQ + q0 + v * DA_W, acc[r][v]);
                    mx[v] = DA_FN(vmax)(mx[v], acc[r][v]);
                }
        }
        for (; j0 < nk; ++j0) { /* tail keys, one at a time */
            vf acc[DA_NV];
            for (int v = 0; v < DA_NV; ++v) acc[v] = DA_FN(vset1)(0.0f);
            for (int c = 0; c < d; ++c) {
                vf k = DA_FN(vset1)(kp[j0][c]);
                for (int v = 0; v < DA_NV; ++v) acc[v] += k * DA_FN(vld)(QT + (size_t)c * DA_BQ + q0 + v * DA_W);
            }
            for (int v = 0; v < DA_NV; ++v) {
                DA_FN(vst)(ST + (size_t)j0 * DA_BQ + q0 + v * DA_W, acc[v]);
                mx[v] = DA_FN(vmax)(mx[v], acc[v]);
            }
        }
        for (int v = 0; v < DA_NV; ++v) DA_FN(vst)(bm + q0 + v * DA_W, mx[v]);
    }
}

/* Online softmax over one key block, vectorised over queries: ST becomes PT; m, l, alpha per query. */
static DA_ATTR void DA_FN(softmax_tile)(float *ST, const float *bm, float *m, float *l, float *alpha, int nk,
                                         int nqr) {
    for (int q = 0; q < nqr; q += DA_W) {
        vf m_old = DA_FN(vld)(m + q), m_new = DA_FN(vmax)(m_old, DA_FN(vld)(bm + q));
        vf al = DA_FN(vexp)(m_old - m_new); /* 0 on the first block (m_old = -inf) */
        vf sum = DA_FN(vset1)(0.0f);
        for (int j = 0; j < nk; ++j) {
            float *s = ST + (size_t)j * DA_BQ + q;
            vf p = DA_FN(vexp)(DA_FN(vld)(s) - m_new);
            DA_FN(vst)(s, p);
            sum += p;
        }
        DA_FN(vst)(l + q, DA_FN(vld)(l + q) * al + sum);
        DA_FN(vst)(m + q, m_new);
        DA_FN(vst)(alpha + q, al);
    }
}

/* OT[c][q] = OT[c][q] alpha[q] + sum_{j < nk} key_j[c] PT[j][q] for c < d, q < nqr. */
static DA_ATTR void DA_FN(pv_tile)(const float *PT, const float *const *kp, float *OT, const float *alpha, int nk,
                                    int d, int nqr) {
    for (int q0 = 0; q0 < nqr; q0 += DA_NV * DA_W) {
        vf al[DA_NV];
        for (int v = 0; v < DA_NV; ++v) al[v] = DA_FN(vld)(alpha + q0 + v * DA_W);
        int c0 = 0;
        for (; c0 + DA_RC <= d; c0 += DA_RC) {
            vf acc[DA_RC][DA_NV];
            for (int r = 0; r < DA_RC; ++r)
                for (int v = 0; v < DA_NV; ++v)
                    acc[r][v] = DA_FN(vld)(OT + (size_t)(c0 + r) * DA_BQ + q0 + v * DA_W) * al[v];
            for (int j = 0; j < nk; ++j) {
                const float *k = kp[j] + c0;
                vf pv[DA_NV];
                for (int v = 0; v < DA_NV; ++v) pv[v] = DA_FN(vld)(PT + (size_t)j * DA_BQ + q0 + v * DA_W);
                for (int r = 0; r < DA_RC; ++r) {
                    vf kv = DA_FN(vset1)(k[r]);
                    for (int v = 0; v < DA_NV; ++v) acc[r][v] += kv * pv[v];
                }
            }
            for (int r = 0; r < DA_RC; ++r)
                for (int v = 0; v < DA_NV; ++v) DA_FN(vst)(OT + (size_t)(c0 + r) * DA_BQ + q0 + v * DA_W, acc[r][v]);
        }
        for (; c0 < d; ++c0) { /* tail channels, one at a time */
            vf acc[DA_NV];
            for (int v = 0; v < DA_NV; ++v) acc[v] = DA_FN(vld)(OT + (size_t)c0 * DA_BQ + q0 + v * DA_W) * al[v];
            for (int j = 0; j < nk; ++j) {
                vf kv = DA_FN(vset1)(kp[j][c0]);
                for (int v = 0; v < DA_NV; ++v) acc[v] += kv * DA_FN(vld)(PT + (size_t)j * DA_BQ + q0 + v * DA_W);
            }
            for (int v = 0; v < DA_NV; ++v) DA_FN(vst)(OT + (size_t)c0 * DA_BQ + q0 + v * DA_W, acc[v]);
        }
    }
}

/* One task: batch item, head, query block. ws: this thread's workspace (da_thread_bytes). */
static DA_ATTR void DA_FN(task)(const da_problem *p, int64_t task, float *ws) {
    const int64_t nqb = (p->tokens + DA_BQ - 1) / DA_BQ;
    const int64_t bi = task / (p->heads * nqb);
    const int64_t h = (task / nqb) % p->heads;
    const int64_t q0 = (task % nqb) * DA_BQ;
    const int nq = (int)(p->tokens - q0 < DA_BQ ? p->tokens - q0 : DA_BQ);
    const int nqr = (nq + DA_NV * DA_W - 1) / (DA_NV * DA_W) * (DA_NV * DA_W);
    const int d = (int)p->d;
    const int64_t C = p->channels;
    const float scale = (float)(1.0 / sqrt((double)d));
    float *QT = ws, *OT = QT + (size_t)d * DA_BQ, *ST = OT + (size_t)d * DA_BQ, *m = ST + DA_BK * DA_BQ;
    float *l = m + DA_BQ, *alpha = l + DA_BQ, *bm = alpha + DA_BQ;
    const float *kp[DA_BK];

    /* QT[c][i] = (b - a)[query q0 + i][h*d + c] * scale; queries nq..nqr-1 are zero (computed, never written). */
    for (int i = 0; i < nqr; ++i) {
        if (i < nq) {
            const float *ra = p->a + ((bi * p->tokens + q0 + i) * C + h * d);
            const float *rb = p->b + ((bi * p->tokens + q0 + i) * C + h * d);
            for (int c = 0; c < d; ++c) QT[(size_t)c * DA_BQ + i] = (rb[c] - ra[c]) * scale;
        } else {
            for (int c = 0; c < d; ++c) QT[(size_t)c * DA_BQ + i] = 0.0f;
        }
        for (int c = 0; c < d; ++c) OT[(size_t)c * DA_BQ + i] = 0.0f;
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }

    const int64_t nkeys = 2 * p->nsel;
    for (int64_t k0 = 0; k0 < nkeys; k0 += DA_BK) {
        const int nk = (int)(nkeys - k0 < DA_BK ? nkeys - k0 : DA_BK);
        DA_FN(key_rows)(p, bi, h, k0, nk, kp);
        DA_FN(qk_tile)(QT, kp, ST, bm, nk, d, nqr);
        DA_FN(softmax_tile)(ST, bm, m, l, alpha, nk, nqr);
        DA_FN(pv_tile)(ST, kp, OT, alpha, nk, d, nqr);
    }

    for (int i = 0; i < nq; ++i) {
        float *o = p->out + ((bi * p->tokens + q0 + i) * C + h * d);
        const float inv = 1.0f / l[i];
        for (int c = 0; c < d; ++c) o[c] = OT[(size_t)c * DA_BQ + i] * inv;
    }
}

#undef vf
#undef vi
#undef DA_FN
#undef DA_CAT
#undef DA_CAT2
#undef DA_W
#undef DA_VEC
#undef DA_RK
#undef DA_RC
#undef DA_NV
#undef DA_SUFFIX
#undef DA_ATTR
