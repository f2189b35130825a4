/* The fused diff-attention body, compiled once per SIMD path: included by diff_attention.c only.
 *
 * The includer defines, then this file undefines:
 *   DA_W       floats per vector (1, 4, 8, 16)
 *   DA_VEC     1: GCC/Clang vector extensions of DA_W floats; 0: scalar (DA_W == 1)
 *   DA_RQ      query rows per register tile (4 or 8)
 *   DA_SUFFIX  name suffix of this path's functions
 *   DA_ATTR    function attribute selecting the instruction set (may be empty)
 * and provides da_problem, DA_BQ, DA_BK, DA_DPM (see diff_attention.c).
 *
 * One task = (batch item, head, block of DA_BQ queries). Per key block of DA_BK keys:
 *   pack   KT[d][BK] (keys, transposed) and V[BK][dp] (the same keys, zero-padded to dp)
 *   S      = Q KT                     [BQ, BK]   Q = (b - a) / sqrt(d), formed once per task
 *   online softmax per row: m_new = max(m, rowmax S); alpha = exp(m - m_new); P = exp(S - m_new); l = l alpha + sum P
 *   O      = O alpha + P V            [BQ, dp]
 * and at the end out = O / l. Registers hold DA_RQ rows x 2 vectors of the S and O tiles.
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
    vf v = {0};
    return v + x;
}
static inline DA_ATTR vf DA_FN(vmax)(vf x, vf y) {
    vi m = x > y;
    return (vf)(((vi)x & m) | ((vi)y & ~m));
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
    vf y = p * r * r + r + 1.0f;
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

/* S[i][0:BK] = Q[i][0:d] . KT[0:d][0:BK] for i < nqr (a multiple of DA_RQ). */
static DA_ATTR void DA_FN(qk_tile)(const float *Q, const float *KT, float *S, int nqr, int d, int dp) {
    for (int i0 = 0; i0 < nqr; i0 += DA_RQ) {
        for (int j0 = 0; j0 < DA_BK; j0 += 2 * DA_W) {
            vf acc[DA_RQ][2];
            for (int r = 0; r < DA_RQ; ++r) acc[r][0] = acc[r][1] = DA_FN(vset1)(0.0f);
            for (int c = 0; c < d; ++c) {
                const float *k = KT + (size_t)c * DA_BK + j0;
                vf k0 = DA_FN(vld)(k), k1 = DA_FN(vld)(k + DA_W);
                for (int r = 0; r < DA_RQ; ++r) {
                    vf q = DA_FN(vset1)(Q[(size_t)(i0 + r) * dp + c]);
                    acc[r][0] += q * k0;
                    acc[r][1] += q * k1;
                }
            }
            for (int r = 0; r < DA_RQ; ++r) {
                DA_FN(vst)(S + (size_t)(i0 + r) * DA_BK + j0, acc[r][0]);
                DA_FN(vst)(S + (size_t)(i0 + r) * DA_BK + j0 + DA_W, acc[r][1]);
            }
        }
    }
}

/* Online softmax over one key block: S becomes P (columns >= nk get weight 0); m, l, alpha per row. */
static DA_ATTR void DA_FN(softmax_tile)(float *S, float *m, float *l, float *alpha, int nqr, int nk) {
    for (int i = 0; i < nqr; ++i) {
        float *s = S + (size_t)i * DA_BK;
        for (int j = nk; j < DA_BK; ++j) s[j] = -INFINITY;
        vf vm = DA_FN(vld)(s);
        for (int j = DA_W; j < DA_BK; j += DA_W) vm = DA_FN(vmax)(vm, DA_FN(vld)(s + j));
        float mx = DA_FN(hmax)(vm);
        float m_new = mx > m[i] ? mx : m[i];
        float al = m[i] == -INFINITY ? 0.0f : expf(m[i] - m_new);
        vf mn = DA_FN(vset1)(m_new), sum = DA_FN(vset1)(0.0f);
        for (int j = 0; j < DA_BK; j += DA_W) {
            vf p = DA_FN(vexp)(DA_FN(vld)(s + j) - mn);
            DA_FN(vst)(s + j, p);
            sum += p;
        }
        l[i] = l[i] * al + DA_FN(hsum)(sum);
        m[i] = m_new;
        alpha[i] = al;
    }
}

/* O[i][0:dp] = O[i] * alpha[i] + sum_{j < nk} P[i][j] V[j][0:dp] for i < nqr; dp is a multiple of DA_W. */
static DA_ATTR void DA_FN(pv_tile)(const float *P, const float *V, float *O, const float *alpha, int nqr, int nk,
                                    int dp) {
    for (int i0 = 0; i0 < nqr; i0 += DA_RQ) {
        int c0 = 0;
        for (; c0 + 2 * DA_W <= dp; c0 += 2 * DA_W) {
            vf acc[DA_RQ][2];
            for (int r = 0; r < DA_RQ; ++r) {
                float *o = O + (size_t)(i0 + r) * dp + c0;
                acc[r][0] = DA_FN(vld)(o) * alpha[i0 + r];
                acc[r][1] = DA_FN(vld)(o + DA_W) * alpha[i0 + r];
            }
            for (int j = 0; j < nk; ++j) {
                const float *v = V + (size_t)j * dp + c0;
                vf v0 = DA_FN(vld)(v), v1 = DA_FN(vld)(v + DA_W);
                for (int r = 0; r < DA_RQ; ++r) {
                    vf p = DA_FN(vset1)(P[(size_t)(i0 + r) * DA_BK + j]);
                    acc[r][0] += p * v0;
                    acc[r][1] += p * v1;
                }
            }
            for (int r = 0; r < DA_RQ; ++r) {
                float *o = O + (size_t)(i0 + r) * dp + c0;
                DA_FN(vst)(o, acc[r][0]);
                DA_FN(vst)(o + DA_W, acc[r][1]);
            }
        }
        if (c0 < dp) { /* one vector left */
            vf acc[DA_RQ];
            for (int r = 0; r < DA_RQ; ++r) acc[r] = DA_FN(vld)(O + (size_t)(i0 + r) * dp + c0) * alpha[i0 + r];
            for (int j = 0; j < nk; ++j) {
                vf v0 = DA_FN(vld)(V + (size_t)j * dp + c0);
                for (int r = 0; r < DA_RQ; ++r) acc[r] += DA_FN(vset1)(P[(size_t)(i0 + r) * DA_BK + j]) * v0;
            }
            for (int r = 0; r < DA_RQ; ++r) DA_FN(vst)(O + (size_t)(i0 + r) * dp + c0, acc[r]);
        }
    }
}

/* One task: batch item, head, query block. ws: this thread's workspace (da_workspace_floats(d) floats). */
static DA_ATTR void DA_FN(task)(const da_problem *p, int64_t task, float *ws) {
    const int64_t nqb = (p->tokens + DA_BQ - 1) / DA_BQ;
    const int64_t bi = task / (p->heads * nqb);
    const int64_t h = (task / nqb) % p->heads;
    const int64_t q0 = (task % nqb) * DA_BQ;
    const int nq = (int)(p->tokens - q0 < DA_BQ ? p->tokens - q0 : DA_BQ);
    const int nqr = (nq + DA_RQ - 1) / DA_RQ * DA_RQ;
    const int d = (int)p->d;
    const int dp = (d + DA_W - 1) / DA_W * DA_W;
    const int64_t C = p->channels;
    const float scale = (float)(1.0 / sqrt((double)d));
    float *Q = ws, *O = Q + DA_BQ * DA_DPM(d), *S = O + DA_BQ * DA_DPM(d), *KT = S + DA_BQ * DA_BK;
    float *V = KT + DA_BK * DA_DPM(d), *m = V + DA_BK * DA_DPM(d), *l = m + DA_BQ, *alpha = l + DA_BQ;

    /* Q = (b - a) * scale for this block's queries; rows nq..nqr-1 and channels d..dp-1 are zero. */
    for (int i = 0; i < nqr; ++i) {
        float *q = Q + (size_t)i * dp;
        if (i < nq) {
            const float *ra = p->a + ((bi * p->tokens + q0 + i) * C + h * d);
            const float *rb = p->b + ((bi * p->tokens + q0 + i) * C + h * d);
            for (int c = 0; c < d; ++c) q[c] = (rb[c] - ra[c]) * scale;
        } else {
            for (int c = 0; c < d; ++c) q[c] = 0.0f;
        }
        for (int c = d; c < dp; ++c) q[c] = 0.0f;
        for (int c = 0; c < dp; ++c) O[(size_t)i * dp + c] = 0.0f;
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }

    const int64_t nsel = p->nsel, nkeys = 2 * nsel;
    const int64_t *idx = p->idx ? p->idx + bi * p->tokens : NULL; /* the selected tokens come first */
    for (int64_t k0 = 0; k0 < nkeys; k0 += DA_BK) {
        const int nk = (int)(nkeys - k0 < DA_BK ? nkeys - k0 : DA_BK);
        for (int jj = 0; jj < nk; ++jj) { /* key t: a[token t] for t < nsel, else b[token t - nsel] */
            const int64_t t = k0 + jj;
            const int64_t tok = t < nsel ? (idx ? idx[t] : t) : (idx ? idx[t - nsel] : t - nsel);
            const float *src = (t < nsel ? p->a : p->b) + ((bi * p->tokens + tok) * C + h * d);
            float *v = V + (size_t)jj * dp;
            for (int c = 0; c < d; ++c) {
                KT[(size_t)c * DA_BK + jj] = src[c];
                v[c] = src[c];
            }
            for (int c = d; c < dp; ++c) v[c] = 0.0f;
        }
        for (int c = 0; c < d; ++c)
            for (int jj = nk; jj < DA_BK; ++jj) KT[(size_t)c * DA_BK + jj] = 0.0f;
        DA_FN(qk_tile)(Q, KT, S, nqr, d, dp);
        DA_FN(softmax_tile)(S, m, l, alpha, nqr, nk);
        DA_FN(pv_tile)(S, V, O, alpha, nqr, nk, dp);
    }

    for (int i = 0; i < nq; ++i) {
        float *o = p->out + ((bi * p->tokens + q0 + i) * C + h * d);
        const float inv = 1.0f / l[i];
        for (int c = 0; c < d; ++c) o[c] = O[(size_t)i * dp + c] * inv;
    }
}

#undef vf
#undef vi
#undef DA_FN
#undef DA_CAT
#undef DA_CAT2
#undef DA_W
#undef DA_VEC
#undef DA_RQ
#undef DA_SUFFIX
#undef DA_ATTR
