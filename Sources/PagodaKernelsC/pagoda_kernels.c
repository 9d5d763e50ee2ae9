#include "pagoda_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

// Float operations must happen exactly as written (no contraction of a·b + c): every path must agree bitwise.
#pragma clang fp contract(off)

#if defined(__x86_64__)
#include <immintrin.h>
#include <cpuid.h>
#define PQ_X86 1
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

// ---------------------------------------------------------------------------------------------------------
// Activation quantization: x ≈ dx·q, q = rint(x·127/amax) ∈ [-127, 127], after each row's PAGODA_Q_OUTLIERS
// largest magnitudes are taken out (kept exact, counted as 0 in their blocks).

#define NOUT PAGODA_Q_OUTLIERS

static int detected_isa(void);
int pagoda_q_isa(void);

/// Whether magnitude a at column ia ranks before magnitude b at column ib: larger first, then the lower column.
static inline int outranks(float a, int64_t ia, float b, int64_t ib) { return a > b || (a == b && ia < ib); }

/// Inserts (v, i) into the ranked list (vs, is) of at most NOUT entries holding *n.
static inline void rank_insert(float v, int64_t i, float *vs, int64_t *is, int *n) {
    if (*n == NOUT && !outranks(v, i, vs[NOUT - 1], is[NOUT - 1])) return;
    int k = *n < NOUT ? (*n)++ : NOUT - 1;
    while (k > 0 && outranks(v, i, vs[k - 1], is[k - 1])) {
        vs[k] = vs[k - 1];
        is[k] = is[k - 1];
        k--;
    }
    vs[k] = v;
    is[k] = i;
}

/// The row's outliers (see pagoda_quantize_q8) from its blocks' magnitude maxima `bmax`: each of them lies in one
/// of the NOUT blocks that rank first by their maxima (ties to the lower block), so only those are searched.
static void select_outliers(const float *x, int64_t nb, const float *bmax, int32_t *oi, float *ov) {
    float bv[NOUT], ev[NOUT];
    int64_t bi[NOUT], ei[NOUT];
    int nbk = 0, ne = 0;
    for (int64_t b = 0; b < nb; b++) rank_insert(bmax[b], b, bv, bi, &nbk);
    for (int c = 0; c < nbk; c++)
        for (int64_t j = bi[c] * 32; j < bi[c] * 32 + 32; j++) rank_insert(fabsf(x[j]), j, ev, ei, &ne);
    for (int k = 0; k < NOUT; k++) {
        oi[k] = (int32_t)ei[k];
        ov[k] = x[ei[k]];
    }
}

/// The outliers of block b as a bit per column.
static inline uint32_t outlier_mask(const int32_t *oi, int64_t b) {
    uint32_t om = 0;
    for (int k = 0; k < NOUT; k++)
        if (oi[k] >> 5 == b) om |= 1u << (oi[k] & 31);
    return om;
}

#ifdef PQ_X86
/// `select_outliers` with vectors: the candidate blocks ranked the same way, then NOUT times the remaining
/// element that ranks first (a block's largest remaining magnitude at its lowest column), which is the same list.
__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline void
select_outliers512(const float *x, int64_t nb, const float *bmax, int32_t *oi, float *ov) {
    float bv[NOUT];
    int64_t bi[NOUT];
    int nbk = 0;
    for (int64_t b = 0; b < nb; b++) rank_insert(bmax[b], b, bv, bi, &nbk);
    __m512 lo[NOUT], hi[NOUT];
    uint32_t taken[NOUT];
    for (int c = 0; c < nbk; c++) {
        lo[c] = _mm512_abs_ps(_mm512_loadu_ps(x + bi[c] * 32));
        hi[c] = _mm512_abs_ps(_mm512_loadu_ps(x + bi[c] * 32 + 16));
        taken[c] = 0;
    }
    for (int k = 0; k < NOUT; k++) {
        float best = 0.0f;
        int64_t col = -1;
        int from = 0;
        for (int c = 0; c < nbk; c++) {
            const __m512 a = _mm512_maskz_mov_ps((__mmask16)~taken[c], lo[c]);
            const __m512 h = _mm512_maskz_mov_ps((__mmask16)~(taken[c] >> 16), hi[c]);
            const float m = _mm512_reduce_max_ps(_mm512_max_ps(a, h));
            const __m512 mv = _mm512_set1_ps(m);
            const uint32_t eq = ((uint32_t)_mm512_cmpeq_ps_mask(a, mv) | (uint32_t)_mm512_cmpeq_ps_mask(h, mv) << 16) & ~taken[c];
            if (!eq) continue;  // only with NaN
            const int64_t j = bi[c] * 32 + __builtin_ctz(eq);
            if (col < 0 || outranks(m, j, best, col)) {
                best = m;
                col = j;
                from = c;
            }
        }
        if (col < 0) col = bi[0] * 32;  // only with NaN
        taken[from] |= 1u << (col & 31);
        oi[k] = (int32_t)col;
        ov[k] = x[col];
    }
}

#define T512Q __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/// Lane i: max over v[i]'s lanes, for 16 vectors at once (the lanes are halved four times between pairs of
/// vectors instead of reducing each vector on its own). Max is exact, so the order changes no result.
T512Q static inline __m512 max16(const __m512 v[16]) {
    __m512 w[8], z[4], y[2];
    for (int i = 0; i < 8; i++)  // lanes 0-7: v[2i]'s 8 partial maxima, 8-15: v[2i+1]'s
        w[i] = _mm512_max_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44), _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++)  // 128-bit chunk j: v[4i + j]'s 4 partials
        z[i] = _mm512_max_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88), _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++)  // chunk j: 2 partials of v[8i + j], then 2 of v[8i + 4 + j]
        y[i] = _mm512_max_ps(_mm512_shuffle_ps(z[2 * i], z[2 * i + 1], 0x44), _mm512_shuffle_ps(z[2 * i], z[2 * i + 1], 0xEE));
    // chunk j: v[j], v[4 + j], v[8 + j], v[12 + j]
    const __m512 r = _mm512_max_ps(_mm512_shuffle_ps(y[0], y[1], 0x88), _mm512_shuffle_ps(y[0], y[1], 0xDD));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}

/// For 4 vectors of 4-lane partial sums (chunk j of z[p] = sums of 4 × 4 values): lane 4j + p holds chunk j of z[p]'s
/// total (exact integer sums).
T512Q static inline __m512i sum4x4(const __m512i z[4]) {
    const __m512 a = _mm512_castsi512_ps(z[0]), b = _mm512_castsi512_ps(z[1]);
    const __m512 c = _mm512_castsi512_ps(z[2]), e = _mm512_castsi512_ps(z[3]);
    // chunk j: 2 partials of z[0]'s, then 2 of z[1]'s (and z[2], z[3])
    const __m512i y0 = _mm512_add_epi32(_mm512_castps_si512(_mm512_shuffle_ps(a, b, 0x44)), _mm512_castps_si512(_mm512_shuffle_ps(a, b, 0xEE)));
    const __m512i y1 = _mm512_add_epi32(_mm512_castps_si512(_mm512_shuffle_ps(c, e, 0x44)), _mm512_castps_si512(_mm512_shuffle_ps(c, e, 0xEE)));
    const __m512 f = _mm512_castsi512_ps(y0), g = _mm512_castsi512_ps(y1);
    return _mm512_add_epi32(_mm512_castps_si512(_mm512_shuffle_ps(f, g, 0x88)), _mm512_castps_si512(_mm512_shuffle_ps(f, g, 0xDD)));
}

/// The same arithmetic as the scalar loop below: 32 values of a block in two vectors, 16 blocks' maxima, scales
/// and sums at once (max, rounding and integer sums are exact, so every result is the scalar path's).
T512Q __attribute__((noinline))
static void quantize_q8_512(const float *x, int64_t tokens, int64_t cols, int8_t *q, float *dx, int32_t *sx, float *dxs,
                            int32_t *sxh, int32_t *oi, float *ov) {
    const int64_t nb = cols / 32;
    const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i ones = _mm512_set1_epi8(1);
    // sum4x4 of pairs 0-3 then 4-7 of a group: lane 4j + p is chunk j of pair p (j = 0: first half of block 2p,
    // 1: its second half, 2, 3: block 2p + 1's). Block b's halves, for b in 0 ..< 16:
    const __m512i first = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 16, 24, 17, 25, 18, 26, 19, 27);
    const __m512i second = _mm512_setr_epi32(4, 12, 5, 13, 6, 14, 7, 15, 20, 28, 21, 29, 22, 30, 23, 31);
    _Alignas(64) float bmax[PAGODA_Q_MAX_COLS / 32];
    for (int64_t t = 0; t < tokens; t++) {
        const float *xr = x + t * cols;
        for (int64_t b0 = 0; b0 < nb; b0 += 16) {
            const int n = nb - b0 < 16 ? (int)(nb - b0) : 16;
            __m512 m[16];
            for (int i = 0; i < 16; i++) {
                const float *xb = xr + (b0 + i) * 32;
                m[i] = i < n ? _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xb)), _mm512_abs_ps(_mm512_loadu_ps(xb + 16)))
                             : _mm512_setzero_ps();
            }
            _mm512_store_ps(bmax + b0, max16(m));
        }
        int32_t *oir = oi + t * NOUT;
        select_outliers512(xr, nb, bmax, oir, ov + t * NOUT);
        int8_t *qr = q + t * cols;
        for (int64_t b0 = 0; b0 < nb; b0 += 16) {
            const int n = nb - b0 < 16 ? (int)(nb - b0) : 16;
            const __mmask16 live = (__mmask16)((1u << n) - 1u);
            // The group's maxima, those of blocks holding an outlier taken without it.
            __m512 amax = _mm512_load_ps(bmax + b0);
            for (int k = 0; k < NOUT; k++) {
                const int64_t b = oir[k] >> 5;
                if (b < b0 || b >= b0 + n) continue;
                int seen = 0;  // a block holding several outliers is recomputed once
                for (int e = 0; e < k; e++) seen |= oir[e] >> 5 == b;
                if (seen) continue;
                const uint32_t om = outlier_mask(oir, b);
                const __m512 a = _mm512_maskz_loadu_ps((__mmask16)~om, xr + b * 32);
                const __m512 c = _mm512_maskz_loadu_ps((__mmask16)~(om >> 16), xr + b * 32 + 16);
                const float bm = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(c)));
                amax = _mm512_mask_mov_ps(amax, (__mmask16)(1u << (b - b0)), _mm512_set1_ps(bm));
            }
            const __m512 d = _mm512_div_ps(amax, lim);
            const __m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ), lim, amax);
            __m512i z[8];
            for (int p = 0; p < 8; p++) {
                __m512i codes[4];
                for (int h = 0; h < 2; h++) {
                    const int i = 2 * p + h;
                    if (i >= n) {
                        codes[2 * h] = codes[2 * h + 1] = _mm512_setzero_si512();
                        continue;
                    }
                    const float *xb = xr + (b0 + i) * 32;
                    const uint32_t om = outlier_mask(oir, b0 + i);
                    const __m512 iv = _mm512_permutexvar_ps(_mm512_set1_epi32(i), id);
                    const __m512 a = _mm512_mul_ps(_mm512_maskz_loadu_ps((__mmask16)~om, xb), iv);
                    const __m512 c = _mm512_mul_ps(_mm512_maskz_loadu_ps((__mmask16)~(om >> 16), xb + 16), iv);
                    // Clamping before rounding to the nearest (ties to even) equals clamping after: the bounds are
                    // integers.
                    codes[2 * h] = _mm512_cvt_roundps_epi32(_mm512_min_ps(lim, _mm512_max_ps(nlim, a)),
                                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                    codes[2 * h + 1] = _mm512_cvt_roundps_epi32(_mm512_min_ps(lim, _mm512_max_ps(nlim, c)),
                                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                }
                if (2 * p >= n) {
                    z[p] = _mm512_setzero_si512();
                    continue;
                }
                // Two blocks' codes: saturating packs (exact: every code is within ±127) interleave the 128-bit
                // lanes, one permutation puts the 64 bytes in order. Their sums per 4 bytes come from vpdpbusd.
                const __m512i bytes = _mm512_permutexvar_epi32(order, _mm512_packs_epi16(_mm512_packs_epi32(codes[0], codes[1]),
                                                                                        _mm512_packs_epi32(codes[2], codes[3])));
                int8_t *qb = qr + (b0 + 2 * p) * 32;
                if (2 * p + 1 < n) _mm512_storeu_si512((void *)qb, bytes);
                else _mm256_storeu_si256((__m256i *)qb, _mm512_castsi512_si256(bytes));
                z[p] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, bytes);
            }
            const __m512i r0 = sum4x4(z), r1 = sum4x4(z + 4);
            const __m512i h1 = _mm512_permutex2var_epi32(r0, first, r1), h2 = _mm512_permutex2var_epi32(r0, second, r1);
            const __m512i s = _mm512_add_epi32(h1, h2);
            _mm512_mask_storeu_ps(dx + t * nb + b0, live, d);
            _mm512_mask_storeu_epi32(sx + t * nb + b0, live, s);
            _mm512_mask_storeu_epi32(sxh + t * nb + b0, live, h1);
            _mm512_mask_storeu_ps(dxs + t * nb + b0, live, _mm512_mul_ps(d, _mm512_cvtepi32_ps(s)));
        }
    }
}
#endif

#ifdef PQ_X86
#define T256Q __attribute__((target("avx2,fma,f16c")))

/// The largest of 8 lanes (max is exact: any order gives the same value).
T256Q static inline float hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/// The largest magnitude of a block's 32 values in four vectors.
T256Q static inline float absmax256(const __m256 v[4]) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 m01 = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
    const __m256 m23 = _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3]));
    return hmax256(_mm256_max_ps(m01, m23));
}

/// The sum of 8 int32 lanes (exact).
T256Q static inline int32_t hsum256(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/// The scalar loop below with AVX2: a block's 32 values in four vectors (max, rounding and integer sums are exact,
/// so every result is the scalar path's).
T256Q __attribute__((noinline))
static void quantize_q8_256(const float *x, int64_t tokens, int64_t cols, int8_t *q, float *dx, int32_t *sx, float *dxs,
                            int32_t *sxh, int32_t *oi, float *ov) {
    const int64_t nb = cols / 32;
    const __m256 lim = _mm256_set1_ps(127.0f), nlim = _mm256_set1_ps(-127.0f);
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    _Alignas(32) float bmax[PAGODA_Q_MAX_COLS / 32];
    for (int64_t t = 0; t < tokens; t++) {
        const float *xr = x + t * cols;
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = xr + b * 32;
            const __m256 v[4] = {_mm256_loadu_ps(xb), _mm256_loadu_ps(xb + 8), _mm256_loadu_ps(xb + 16),
                                 _mm256_loadu_ps(xb + 24)};
            bmax[b] = absmax256(v);
        }
        int32_t *oir = oi + t * NOUT;
        select_outliers(xr, nb, bmax, oir, ov + t * NOUT);
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = xr + b * 32;
            const uint32_t om = outlier_mask(oir, b);
            __m256 v[4];
            for (int k = 0; k < 4; k++) {
                v[k] = _mm256_loadu_ps(xb + 8 * k);
                if (om) {  // outliers count as 0
                    const __m256i taken = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)(om >> (8 * k))), bit), bit);
                    v[k] = _mm256_andnot_ps(_mm256_castsi256_ps(taken), v[k]);
                }
            }
            const float amax = om ? absmax256(v) : bmax[b];
            const float d = amax / 127.0f;
            const __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
            __m256i c[4];
            for (int k = 0; k < 4; k++)
                c[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_min_ps(lim, _mm256_max_ps(nlim, _mm256_mul_ps(v[k], id))),
                                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            // Saturating packs (exact: every code is within ±127) interleave the 128-bit lanes; one permutation
            // puts the 32 bytes in order.
            const __m256i bytes = _mm256_permutevar8x32_epi32(
                _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3])), order);
            _mm256_storeu_si256((__m256i *)(q + t * cols + b * 32), bytes);
            const int32_t sh = hsum256(_mm256_add_epi32(c[0], c[1]));
            const int32_t s = sh + hsum256(_mm256_add_epi32(c[2], c[3]));
            dx[t * nb + b] = d;
            sx[t * nb + b] = s;
            sxh[t * nb + b] = sh;
            dxs[t * nb + b] = d * (float)s;
        }
    }
}
#endif

void pagoda_quantize_q8(const float *x, int64_t tokens, int64_t cols, int8_t *q, float *dx, int32_t *sx, float *dxs,
                        int32_t *sxh, int32_t *oi, float *ov) {
#ifdef PQ_X86
    if (pagoda_q_isa() >= 2) {
        quantize_q8_512(x, tokens, cols, q, dx, sx, dxs, sxh, oi, ov);
        return;
    }
    if (pagoda_q_isa() == 1) {
        quantize_q8_256(x, tokens, cols, q, dx, sx, dxs, sxh, oi, ov);
        return;
    }
#endif
    const int64_t nb = cols / 32;
    float bmax[PAGODA_Q_MAX_COLS / 32];
    for (int64_t t = 0; t < tokens; t++) {
        const float *xr = x + t * cols;
        for (int64_t b = 0; b < nb; b++) {
            float amax = 0.0f;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xr[b * 32 + j]));
            bmax[b] = amax;
        }
        int32_t *oir = oi + t * NOUT;
        select_outliers(xr, nb, bmax, oir, ov + t * NOUT);
        for (int64_t b = 0; b < nb; b++) {
            float xb[32];
            memcpy(xb, xr + b * 32, sizeof xb);
            const uint32_t om = outlier_mask(oir, b);
            for (int j = 0; j < 32; j++)
                if (om >> j & 1) xb[j] = 0.0f;
            int8_t *qb = q + t * cols + b * 32;
            float amax = 0.0f;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
            const float d = amax / 127.0f;
            const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            int32_t s = 0, sh = 0;
            for (int j = 0; j < 32; j++) {
                float v = nearbyintf(xb[j] * id);
                v = fminf(127.0f, fmaxf(-127.0f, v));
                qb[j] = (int8_t)v;
                s += (int32_t)qb[j];
                if (j == 15) sh = s;
            }
            dx[t * nb + b] = d;
            sx[t * nb + b] = s;
            sxh[t * nb + b] = sh;
            dxs[t * nb + b] = d * (float)s;
        }
    }
}

/// Numbers the distinct outlier columns of `tokens` tokens (at most PAGODA_Q_TOKEN_CHUNK): uniq[slot[i]] is
/// oi[i]; returns their count.
static int outlier_slots(const int32_t *oi, int64_t tokens, int16_t *slot, int32_t *uniq) {
    enum { H = 1024 };  // open addressing, at most 256 keys
    _Static_assert(PAGODA_Q_TOKEN_CHUNK * NOUT <= H / 2 && PAGODA_Q_TOKEN_CHUNK * NOUT <= 32767, "outlier slots");
    int32_t key[H];
    int16_t val[H];
    for (int i = 0; i < H; i++) key[i] = -1;
    int nu = 0;
    for (int64_t i = 0; i < tokens * NOUT; i++) {
        const int32_t c = oi[i];
        uint32_t h = ((uint32_t)c * 2654435761u) >> 22;
        while (key[h] != -1 && key[h] != c) h = (h + 1) & (H - 1);
        if (key[h] == -1) {
            key[h] = c;
            val[h] = (int16_t)nu;
            uniq[nu++] = c;
        }
        slot[i] = val[h];
    }
    return nu;
}

void pagoda_outlier_slots(const int32_t *oi, int64_t tokens, int16_t *slot, int32_t *uniq, int32_t *nuniq) {
    for (int64_t t = 0, c = 0; t < tokens; t += PAGODA_Q_TOKEN_CHUNK, c++) {
        const int64_t n = tokens - t < PAGODA_Q_TOKEN_CHUNK ? tokens - t : PAGODA_Q_TOKEN_CHUNK;
        nuniq[c] = outlier_slots(oi + t * NOUT, n, slot + t * NOUT, uniq + c * PAGODA_Q_TOKEN_CHUNK * NOUT);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Block layout helpers.

/// Exact fp16 → fp32 (every fp16 value, subnormals included, is a float).
static inline float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | (man << 13);
    else if (exp != 0) bits = sign | ((exp + 112) << 23) | (man << 13);
    else if (man == 0) bits = sign;
    else {
        int e = -1;
        uint32_t m = man;
        do { e++; m <<= 1; } while ((m & 0x400) == 0);
        bits = sign | ((uint32_t)(112 - e) << 23) | ((m & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/// Byte size of one d (or m) vector of a block, and the offset of the weight codes.
static inline int64_t scales_bytes(const pagoda_qmat *m) { return m->half_scales ? 32 : 64; }
static inline int64_t codes_offset(const pagoda_qmat *m) { return scales_bytes(m) * (m->has_min || m->split ? 2 : 1); }

static inline float scale_at(const uint8_t *p, int half, int i) {
    if (half) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return half_to_float(h);
    }
    float f;
    memcpy(&f, p + 4 * i, 4);
    return f;
}

/// The unsigned code of element 4k + j of row i in a block whose codes start at w (see the header's layout).
static inline int32_t qcode(const pagoda_qmat *m, const uint8_t *w, int i, int k, int j) {
    int32_t u;
    if (m->nibble) {
        const uint8_t v = w[(k & 3) * 64 + i * 4 + j];
        u = k < 4 ? v & 15 : v >> 4;
    } else {
        u = w[k * 64 + i * 4 + j];
    }
    for (int p = 0; p < m->high_bits; p++) {
        const int bit = i * 4 + j;
        u |= ((w[256 + 64 * p + 8 * k + bit / 8] >> (bit % 8)) & 1) << (4 + p);
    }
    return u;
}

/// The weight of row i of a group (at gbase) in column c, as the outlier correction computes it (see the header):
/// (float)(u − offset)·d, plus m when the type has a min.
static inline float qweight(const pagoda_qmat *m, const uint8_t *gbase, int i, int64_t c) {
    const int e = (int)(c % 32);
    const uint8_t *blk = gbase + (c / 32) * m->block_bytes;
    const int32_t u = qcode(m, blk + codes_offset(m), i, e / 4, e % 4);
    const float d = scale_at(m->split && e >= 16 ? blk + scales_bytes(m) : blk, m->half_scales, i);
    float wv = (float)(u - m->offset) * d;
    if (m->has_min) wv = wv + scale_at(blk + scales_bytes(m), m->half_scales, i);
    return wv;
}

/// acc[i] (rows of group at gbase) += the token's exact outliers times their weights, in order.
static inline void outlier_correction(const pagoda_qmat *m, const uint8_t *gbase, const int32_t *oi, const float *ov,
                                      float *acc) {
    for (int k = 0; k < NOUT; k++)
        for (int i = 0; i < PAGODA_Q_ROWS; i++) acc[i] = fmaf(ov[k], qweight(m, gbase, i, oi[k]), acc[i]);
}

// ---------------------------------------------------------------------------------------------------------
// Scalar reference path.

static void qgemm_scalar(const pagoda_qmat *m, const int8_t *q, const float *dx, const int32_t *sx, const float *dxs,
                         const int32_t *sxh, const int32_t *oi, const float *ov, int64_t tokens, float *y, int64_t ldy,
                         int64_t g0, int64_t g1, const float *bias) {
    const int64_t nb = m->blocks, cols = m->cols;
    const int64_t wofs = codes_offset(m), sbytes = scales_bytes(m);
    const int half = m->half_scales;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *gbase = m->data + g * nb * m->block_bytes;
        for (int64_t t = 0; t < tokens; t++) {
            float acc[PAGODA_Q_ROWS];
            for (int i = 0; i < PAGODA_Q_ROWS; i++) acc[i] = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = gbase + b * m->block_bytes;
                const uint8_t *w = blk + wofs;
                const int8_t *xb = q + t * cols + b * 32;
                const float xd = dx[t * nb + b];
                for (int i = 0; i < PAGODA_Q_ROWS; i++) {
                    int32_t isum = 0, half1 = 0;
                    for (int k = 0; k < 8; k++) {
                        for (int j = 0; j < 4; j++) isum += qcode(m, w, i, k, j) * (int32_t)xb[4 * k + j];
                        if (k == 3) half1 = isum;
                    }
                    if (m->split) {
                        const int32_t i1 = half1 - m->offset * sxh[t * nb + b];
                        const int32_t i2 = (isum - half1) - m->offset * (sx[t * nb + b] - sxh[t * nb + b]);
                        acc[i] = fmaf((float)i1, scale_at(blk, half, i) * xd, acc[i]);
                        acc[i] = fmaf((float)i2, scale_at(blk + sbytes, half, i) * xd, acc[i]);
                        continue;
                    }
                    isum -= m->offset * sx[t * nb + b];
                    const float dd = scale_at(blk, half, i) * xd;
                    acc[i] = fmaf((float)isum, dd, acc[i]);
                    if (m->has_min) acc[i] = fmaf(scale_at(blk + sbytes, half, i), dxs[t * nb + b], acc[i]);
                }
            }
            outlier_correction(m, gbase, oi + t * NOUT, ov + t * NOUT, acc);
            for (int i = 0; i < PAGODA_Q_ROWS; i++) {
                const int64_t r = g * PAGODA_Q_ROWS + i;
                if (r < m->rows) y[t * ldy + r] = bias ? acc[i] + bias[r] : acc[i];
            }
        }
    }
}

#ifdef PQ_X86
// ---------------------------------------------------------------------------------------------------------
// AVX-512 VNNI: one zmm lane per row; vpdpbusd multiplies 4 unsigned weight codes by 4 broadcast int8
// activations per lane. Tiles of up to 8 tokens share each block's weights in registers.

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,bmi2")))
#define INL __attribute__((always_inline)) static inline

T512 INL __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/// 16 scales (fp16 or fp32) as floats.
T512 INL __m512 scales512(const uint8_t *p, const int HALF) {
    return HALF ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)) : _mm512_loadu_ps((const float *)p);
}

/// The 8 steps of one block of nibble codes (and bit planes) as bytes.
T512 INL void unpack512(const uint8_t *wp, const int HB, __m512i w[8]) {
    const __m512i low = _mm512_set1_epi8(15);
    for (int k = 0; k < 4; k++) {
        const __m512i p = _mm512_loadu_si512((const void *)(wp + 64 * k));
        w[k] = _mm512_and_si512(p, low);
        w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(p, 4), low);
    }
    // Bit planes: one 64-bit mask per step and plane, a byte lane per code.
    for (int pl = 0; pl < HB; pl++) {
        const __m512i add = _mm512_set1_epi8((char)(16 << pl));
        for (int k = 0; k < 8; k++) {
            uint64_t bits;
            memcpy(&bits, wp + 256 + 64 * pl + 8 * k, 8);
            w[k] = _mm512_mask_add_epi8(w[k], (__mmask64)bits, w[k], add);
        }
    }
}

/// The weights of a group's 16 rows in column c, as `qweight` computes each.
T512 INL __m512 qcolumn512(const uint8_t *gbase, int64_t bb, int64_t c, int32_t off, const int NIB, const int MIN,
                           const int HALF, const int SPLIT, const int HB) {
    const int64_t sbytes = HALF ? 32 : 64, wofs = MIN || SPLIT ? 2 * sbytes : sbytes;
    const int e = (int)(c % 32), k = e / 4, j = e % 4;
    const uint8_t *blk = gbase + (c / 32) * bb;
    const uint8_t *wp = blk + wofs;
    __m512i u;
    if (NIB) {
        const __m512i v = _mm512_loadu_si512((const void *)(wp + 64 * (k & 3)));
        u = _mm512_and_si512(_mm512_srl_epi32(v, _mm_cvtsi32_si128(8 * j + (k >= 4 ? 4 : 0))), _mm512_set1_epi32(15));
        for (int p = 0; p < HB; p++) {
            uint64_t bits;
            memcpy(&bits, wp + 256 + 64 * p + 8 * k, 8);
            // Bit 4i + j of the word is row i's.
            const __mmask16 hm = (__mmask16)_pext_u64(bits >> j, 0x1111111111111111ULL);
            u = _mm512_mask_add_epi32(u, hm, u, _mm512_set1_epi32(16 << p));
        }
    } else {
        const __m512i v = _mm512_loadu_si512((const void *)(wp + 64 * k));
        u = _mm512_and_si512(_mm512_srl_epi32(v, _mm_cvtsi32_si128(8 * j)), _mm512_set1_epi32(255));
    }
    const __m512 d = scales512(SPLIT && e >= 16 ? blk + sbytes : blk, HALF);
    __m512 w = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(u, _mm512_set1_epi32(off))), d);
    if (MIN) w = _mm512_add_ps(w, scales512(blk + sbytes, HALF));
    return w;
}

/// The lanes of group g's rows that exist (the last group may have fewer than 16).
T512 INL __mmask16 group_mask(const pagoda_qmat *m, int64_t g) {
    const int64_t r0 = g * PAGODA_Q_ROWS;
    const int64_t nr = m->rows - r0 < PAGODA_Q_ROWS ? m->rows - r0 : PAGODA_Q_ROWS;
    return (__mmask16)((1u << nr) - 1u);
}

T512 INL void finish512(const pagoda_qmat *m, const uint8_t *gbase, const int16_t *slot, const float *wcol,
                        const int32_t *oi, const float *ov, int64_t t0, const int NT, const int NIB, const int MIN,
                        const int HALF, const int SPLIT, const int HB, float *y, int64_t ldy, int64_t g,
                        const float *bias, int64_t b1, __m512 *acc);

T512 INL void tile512(const pagoda_qmat *m, const uint8_t *gbase, const uint8_t *pf, const uint8_t *pre, const int8_t *q, const float *dx, const int32_t *sx,
                      const float *dxs, const int32_t *sxh, const int16_t *slot, const float *wcol,
                      const int32_t *oi, const float *ov, int64_t t0, const int NT, const int NIB, const int MIN,
                      const int HALF, const int SPLIT, const int HB, float *y, int64_t ldy, int64_t g, const float *bias,
                      int64_t b0, int64_t b1) {
    const int64_t nb = m->blocks, cols = m->cols, bb = m->block_bytes;
    const int64_t sbytes = HALF ? 32 : 64, wofs = MIN || SPLIT ? 2 * sbytes : sbytes;
    const int32_t off = m->offset;
    const int64_t r0 = g * PAGODA_Q_ROWS;
    const __mmask16 mask = group_mask(m, g);
    // Blocks [b0, b1) of the row: a later range continues the sums an earlier one stored in y (an exact fp32
    // round trip, so splitting the columns changes no result).
    __m512 acc[8];
    for (int n = 0; n < NT; n++) acc[n] = b0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, y + (t0 + n) * ldy + r0);
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *blk = gbase + b * bb;
        // The next group's block starts loading while this one is computed (weights stream from DRAM).
        if (pf) pagoda_prefetch(pf + b * bb, bb);
        const __m512 wd = scales512(blk, HALF);
        __m512 wm = _mm512_setzero_ps();
        if (MIN || SPLIT) wm = scales512(blk + sbytes, HALF);  // the min, or the second half's scale
        const uint8_t *wp = blk + wofs;
        __m512i w[8];
        if (NIB && pre) {
            for (int k = 0; k < 8; k++) w[k] = _mm512_load_si512((const void *)(pre + (b - b0) * 512 + 64 * k));
        } else if (NIB) {
            unpack512(wp, HB, w);
        } else {
            for (int k = 0; k < 8; k++) w[k] = _mm512_loadu_si512((const void *)(wp + 64 * k));
        }
        for (int n = 0; n < NT; n++) {
            const int64_t t = t0 + n;
            const int8_t *xb = q + t * cols + b * 32;
            __m512i i0 = _mm512_setzero_si512(), i1 = _mm512_setzero_si512();
            if (SPLIT) {
                // Each half of the block on its own: i0 = columns 0-15, i1 = columns 16-31.
                for (int k = 0; k < 4; k++) i0 = _mm512_dpbusd_epi32(i0, w[k], bcast4(xb + 4 * k));
                for (int k = 4; k < 8; k++) i1 = _mm512_dpbusd_epi32(i1, w[k], bcast4(xb + 4 * k));
                const int32_t h1 = sxh[t * nb + b], h2 = sx[t * nb + b] - h1;
                const __m512i is1 = _mm512_sub_epi32(i0, _mm512_set1_epi32(off * h1));
                const __m512i is2 = _mm512_sub_epi32(i1, _mm512_set1_epi32(off * h2));
                const __m512 xd = _mm512_set1_ps(dx[t * nb + b]);
                acc[n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is1), _mm512_mul_ps(wd, xd), acc[n]);
                acc[n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is2), _mm512_mul_ps(wm, xd), acc[n]);
                continue;
            }
            i0 = _mm512_dpbusd_epi32(i0, w[0], bcast4(xb + 0));
            i1 = _mm512_dpbusd_epi32(i1, w[1], bcast4(xb + 4));
            i0 = _mm512_dpbusd_epi32(i0, w[2], bcast4(xb + 8));
            i1 = _mm512_dpbusd_epi32(i1, w[3], bcast4(xb + 12));
            i0 = _mm512_dpbusd_epi32(i0, w[4], bcast4(xb + 16));
            i1 = _mm512_dpbusd_epi32(i1, w[5], bcast4(xb + 20));
            i0 = _mm512_dpbusd_epi32(i0, w[6], bcast4(xb + 24));
            i1 = _mm512_dpbusd_epi32(i1, w[7], bcast4(xb + 28));
            __m512i is = _mm512_add_epi32(i0, i1);
            if (off) is = _mm512_sub_epi32(is, _mm512_set1_epi32(off * sx[t * nb + b]));
            const __m512 dd = _mm512_mul_ps(wd, _mm512_set1_ps(dx[t * nb + b]));
            acc[n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), dd, acc[n]);
            if (MIN) acc[n] = _mm512_fmadd_ps(wm, _mm512_set1_ps(dxs[t * nb + b]), acc[n]);
        }
    }
    finish512(m, gbase, slot, wcol, oi, ov, t0, NT, NIB, MIN, HALF, SPLIT, HB, y, ldy, g, bias, b1, acc);
}

/// The end of a tile's column range: after the last block, each token's exact outliers, then the bias; then the
/// sums of tokens t0 ..< t0 + NT go to y (a partial range's too, for the next range to continue).
T512 INL void finish512(const pagoda_qmat *m, const uint8_t *gbase, const int16_t *slot, const float *wcol,
                        const int32_t *oi, const float *ov, int64_t t0, const int NT, const int NIB, const int MIN,
                        const int HALF, const int SPLIT, const int HB, float *y, int64_t ldy, int64_t g,
                        const float *bias, int64_t b1, __m512 *acc) {
    const int64_t r0 = g * PAGODA_Q_ROWS;
    const __mmask16 mask = group_mask(m, g);
    const int last = b1 == m->blocks;
    if (last) {
        for (int n = 0; n < NT; n++) {
            const int16_t *st = slot + (t0 + n) * NOUT;
            const int32_t *oit = oi + (t0 + n) * NOUT;
            const float *ovt = ov + (t0 + n) * NOUT;
            for (int k = 0; k < NOUT; k++) {
                // Decode dequantizes its columns here, from the blocks it has just streamed.
                const __m512 w = wcol ? _mm512_load_ps(wcol + 16 * st[k])
                                      : qcolumn512(gbase, m->block_bytes, oit[k], m->offset, NIB, MIN, HALF, SPLIT, HB);
                acc[n] = _mm512_fmadd_ps(_mm512_set1_ps(ovt[k]), w, acc[n]);
            }
        }
    }
    __m512 bv = _mm512_setzero_ps();
    if (bias && last) bv = _mm512_maskz_loadu_ps(mask, bias + r0);
    for (int n = 0; n < NT; n++) {
        __m512 v = acc[n];
        if (bias && last) v = _mm512_add_ps(v, bv);
        _mm512_mask_storeu_ps(y + (t0 + n) * ldy + r0, mask, v);
    }
}

/// The codes of blocks [b0, b1) of the group at gbase as bytes in buf (512 per block, 8 steps × 16 rows × 4):
/// nibbles (and bit planes) unpacked, or 8-bit codes copied; with SGN, u − offset as signed bytes. With next, the
/// next group's same blocks are requested meanwhile (weights stream from DRAM).
T512 INL void stage512(const pagoda_qmat *m, const uint8_t *gbase, int next, int64_t b0, int64_t b1, const int NIB,
                       const int HB, const int SGN, uint8_t *buf) {
    const __m512i o8 = _mm512_set1_epi8((char)m->offset);
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *wp = gbase + b * m->block_bytes + codes_offset(m);
        if (next) pagoda_prefetch(gbase + (m->blocks + b) * m->block_bytes, m->block_bytes);
        __m512i w[8];
        if (NIB) unpack512(wp, HB, w);
        else for (int k = 0; k < 8; k++) w[k] = _mm512_loadu_si512((const void *)(wp + 64 * k));
        for (int k = 0; k < 8; k++) {
            if (SGN) w[k] = _mm512_sub_epi8(w[k], o8);
            _mm512_store_si512((void *)(buf + (b - b0) * 512 + 64 * k), w[k]);
        }
    }
}

/// Tokens t0 ..< tokens of a group's block range in tiles of 8, then 4, then 1 (the first tile, when it starts at token
/// 0, requests the next group's blocks at pf).
T512 INL void tiles512(const pagoda_qmat *m, const uint8_t *gbase, const uint8_t *pf, const uint8_t *pre, const int8_t *q,
                       const float *dx, const int32_t *sx, const float *dxs, const int32_t *sxh, const int16_t *slot,
                       const float *wcol, const int32_t *oi, const float *ov, int64_t t0, int64_t tokens, const int NIB,
                       const int MIN, const int HALF, const int SPLIT, const int HB, float *y, int64_t ldy, int64_t g,
                       const float *bias, int64_t b0, int64_t b1) {
    int64_t t = t0;
    for (; t + 8 <= tokens; t += 8) tile512(m, gbase, t == 0 ? pf : 0, pre, q, dx, sx, dxs, sxh, slot, wcol, oi, ov, t, 8, NIB, MIN, HALF, SPLIT, HB, y, ldy, g, bias, b0, b1);
    for (; t + 4 <= tokens; t += 4) tile512(m, gbase, t == 0 ? pf : 0, pre, q, dx, sx, dxs, sxh, slot, wcol, oi, ov, t, 4, NIB, MIN, HALF, SPLIT, HB, y, ldy, g, bias, b0, b1);
    for (; t < tokens; t++) tile512(m, gbase, 0, pre, q, dx, sx, dxs, sxh, slot, wcol, oi, ov, t, 1, NIB, MIN, HALF, SPLIT, HB, y, ldy, g, bias, b0, b1);
}

/// Blocks per column range for a batch: what keeps one 16-row group's weights of the range in L1 (about 12 KiB)
/// while every token tile passes over them. One token (decode) streams the whole row at once.
static inline int64_t qcolumn_blocks(const pagoda_qmat *m, int64_t tokens) {
    if (tokens <= 4) return m->blocks;
    const int64_t k = 12288 / m->block_bytes;
    return k > 0 ? k : 1;
}

#define PRE_BLOCKS 24
#define DEF512(NAME, NIB, MIN, HALF, SPLIT, HB) \
    T512 __attribute__((noinline)) static void NAME(const pagoda_qmat *m, const int8_t *q, const float *dx, \
        const int32_t *sx, const float *dxs, const int32_t *sxh, const int32_t *oi, const float *ov, \
        const int16_t *slot, const int32_t *uniq, int nuniq, int64_t tokens, float *y, int64_t ldy, int64_t g0, \
        int64_t g1, const float *bias) { \
        /* With bit planes, a batch unpacks each block once into bytes (at most PRE_BLOCKS of them, 12 KiB, */ \
        /* in L1) and every token tile reads those; one token (decode) unpacks as it streams. Plain nibbles */ \
        /* are cheaper to unpack in every tile than to store and reload (measured 7-10% at 16 tokens). */ \
        const int pre = NIB && HB && tokens > 4; \
        _Alignas(64) uint8_t wbuf[PRE_BLOCKS * 512]; \
        /* Each group's weights in the tokens' distinct outlier columns (see tile512). Decode (up to 4 */ \
        /* tokens) dequantizes its few columns after streaming each group instead: before, they would be */ \
        /* DRAM misses. */ \
        _Alignas(64) float wcol[PAGODA_Q_TOKEN_CHUNK * NOUT * 16]; \
        const int nu = tokens > 4 ? nuniq : 0; \
        float *wc = tokens > 4 ? wcol : 0; \
        const int64_t kc = pre ? PRE_BLOCKS : qcolumn_blocks(m, tokens); \
        for (int64_t g = g0; g < g1; g++) { \
            const uint8_t *gbase = m->data + g * m->blocks * m->block_bytes; \
            const uint8_t *pf = tokens > 4 && g + 1 < g1 ? gbase + m->blocks * m->block_bytes : 0; \
            for (int u = 0; u < nu; u++) \
                _mm512_store_ps(wcol + 16 * u, qcolumn512(gbase, m->block_bytes, uniq[u], m->offset, NIB, MIN, HALF, SPLIT, HB)); \
            for (int64_t b0 = 0; b0 < m->blocks; b0 += kc) { \
                const int64_t b1 = b0 + kc < m->blocks ? b0 + kc : m->blocks; \
                if (pre) stage512(m, gbase, 0, b0, b1, NIB, HB, 0, wbuf); \
                tiles512(m, gbase, pf, pre ? wbuf : 0, q, dx, sx, dxs, sxh, slot, wc, oi, ov, 0, tokens, NIB, MIN, HALF, SPLIT, HB, y, ldy, g, bias, b0, b1); \
            } \
        } \
    }
/// Whether matrix m has the repacked layout (NIB, MIN, HALF, SPLIT, HB) of a PQ_LAYOUTS entry.
#define PQ_LAYOUT_IS(m, NIB, MIN, HALF, SPLIT, HB) \
    (!!(m)->nibble == (NIB) && !!(m)->has_min == (MIN) && !!(m)->half_scales == (HALF) && !!(m)->split == (SPLIT) && \
     (m)->high_bits == (HB))
/// Every repacked layout, as (name suffix, NIB, MIN, HALF, SPLIT, HB): each kernel family is instantiated from it.
#define PQ_LAYOUTS(X) \
    X(_b, 0, 0, 1, 0, 0)        /* Q8_0 */ \
    X(_n, 1, 0, 1, 0, 0)        /* Q4_0 */ \
    X(_nm, 1, 1, 1, 0, 0)       /* Q4_1 */ \
    X(_nm_f32, 1, 1, 0, 0, 0)   /* Q4_K */ \
    X(_n5, 1, 0, 1, 0, 1)       /* Q5_0 */ \
    X(_nm5, 1, 1, 1, 0, 1)      /* Q5_1 */ \
    X(_nm5_f32, 1, 1, 0, 0, 1)  /* Q5_K */ \
    X(_ns6_f32, 1, 0, 0, 1, 2)  /* Q6_K */
#define INST512(S, NIB, MIN, HALF, SPLIT, HB) DEF512(qgemm512##S, NIB, MIN, HALF, SPLIT, HB)
PQ_LAYOUTS(INST512)

// ---------------------------------------------------------------------------------------------------------
// AMX-INT8 (Sapphire Rapids and later): for batches, the integer sums of 16 tokens × 16 rows × one block come
// from one tile multiply (`tdpbsud`: signed activations × unsigned codes, exact int32), whose weight operand is the
// block's codes as stored (8 steps × 16 rows × 4 bytes) or unpacked; the float work per block and token is then
// the AVX-512 path's, in the same order, so every result is bitwise what the VNNI tiles give.

#define TAMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma,bmi2,amx-tile,amx-int8")))

/// Tile shapes: 0 and 3 the sums (16 tokens × 16 rows of int32), 1 and 4 the activations (16 tokens × 32 bytes),
/// 2 and 5 the codes (8 steps × 64 bytes); two sets, so that a block's multiply overlaps the previous one's floats.
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/// The tile shapes this thread has loaded: 0 none, 1 the int8 kernel's, 2 the bf16 kernel's.
static __thread int amx_configured;

TAMX static void amx_configure(void) {
    amx_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int s = 0; s < 2; s++) {
        c.rows[3 * s] = 16; c.colsb[3 * s] = 64;
        c.rows[3 * s + 1] = 16; c.colsb[3 * s + 1] = 32;
        c.rows[3 * s + 2] = 8; c.colsb[3 * s + 2] = 64;
    }
    _tile_loadconfig(&c);
    amx_configured = 1;
}

/// Block b's multiply goes to tile set (b − b0) mod 2 (sums 0 or 3, activations 1 or 4, codes 2 or 5). It is
/// issued two blocks before its floats and stored one block before them: the tile unit works ahead, and no store
/// waits on a multiply still in flight.
#define AMX_DP(S, A, ACOLS, B) do { \
        _tile_zero(3 * (S)); \
        _tile_loadd(3 * (S) + 1, (A), (ACOLS)); \
        _tile_loadd(3 * (S) + 2, (B), 64); \
        if (SGN) _tile_dpbssd(3 * (S), 3 * (S) + 1, 3 * (S) + 2); \
        else _tile_dpbsud(3 * (S), 3 * (S) + 1, 3 * (S) + 2); \
    } while (0)

TAMX INL void amxtile(const pagoda_qmat *m, const uint8_t *gbase, const uint8_t *pre, const int8_t *q, const float *dx,
                      const float *dxs, const int16_t *slot, const float *wcol, const int32_t *oi,
                      const float *ov, int64_t t0, const int NIB, const int MIN, const int HALF, const int HB,
                      const int SGN, float *y, int64_t ldy, int64_t g, const float *bias, int64_t b0, int64_t b1) {
    const int64_t nb = m->blocks, cols = m->cols, bb = m->block_bytes;
    const int64_t sbytes = HALF ? 32 : 64, wofs = MIN ? 2 * sbytes : sbytes;
    const int64_t r0 = g * PAGODA_Q_ROWS;
    const __mmask16 mask = group_mask(m, g);
    _Alignas(64) int32_t sums[2][16 * 16];
    // The 16 tokens' sums stay in registers across the blocks (named, so that none is kept in memory).
#define AMX_ACC(n) __m512 a##n = b0 == 0 ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, y + (t0 + n) * ldy + r0);
    AMX_ACC(0) AMX_ACC(1) AMX_ACC(2) AMX_ACC(3) AMX_ACC(4) AMX_ACC(5) AMX_ACC(6) AMX_ACC(7)
    AMX_ACC(8) AMX_ACC(9) AMX_ACC(10) AMX_ACC(11) AMX_ACC(12) AMX_ACC(13) AMX_ACC(14) AMX_ACC(15)
#undef AMX_ACC
    const int8_t *xa = q + t0 * cols;
#define AMX_CODES(B) (NIB || SGN ? pre + ((B) - b0) * 512 : gbase + (B) * bb + wofs)
#define AMX_MUL(B) do { \
        if (((B) - b0) & 1) AMX_DP(1, xa + (B) * 32, cols, AMX_CODES(B)); \
        else AMX_DP(0, xa + (B) * 32, cols, AMX_CODES(B)); \
    } while (0)
#define AMX_STORE(B) do { \
        if (((B) - b0) & 1) _tile_stored(3, sums[1], 64); \
        else _tile_stored(0, sums[0], 64); \
    } while (0)
    AMX_MUL(b0);
    if (b0 + 1 < b1) AMX_MUL(b0 + 1);
    AMX_STORE(b0);
    for (int64_t b = b0; b < b1; b++) {
        if (b + 2 < b1) AMX_MUL(b + 2);   // into block b's tile set, stored in the previous step
        if (b + 1 < b1) AMX_STORE(b + 1);  // into the sums block b − 1 used
        const int s = (int)((b - b0) & 1);
        const uint8_t *blk = gbase + b * bb;
        const __m512 wd = scales512(blk, HALF);
        const __m512 wm = MIN ? scales512(blk + sbytes, HALF) : _mm512_setzero_ps();
        const int32_t *cs = sums[s];
        // No offset correction: the types with an offset multiply the staged u − offset (SGN), and the types with
        // a minimum have none. Token t0 + n's block scale is at dxp[n·nb] (walked, not multiplied).
        const float *dxp = dx + t0 * nb + b, *dsp = dxs + t0 * nb + b;
#define AMX_EPI(n) { \
            __m512i is = _mm512_load_si512((const void *)(cs + 16 * n)); \
            const __m512 dd = _mm512_mul_ps(wd, _mm512_set1_ps(*dxp)); \
            a##n = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), dd, a##n); \
            if (MIN) a##n = _mm512_fmadd_ps(wm, _mm512_set1_ps(*dsp), a##n); \
            dxp += nb; dsp += nb; }
        AMX_EPI(0) AMX_EPI(1) AMX_EPI(2) AMX_EPI(3) AMX_EPI(4) AMX_EPI(5) AMX_EPI(6) AMX_EPI(7)
        AMX_EPI(8) AMX_EPI(9) AMX_EPI(10) AMX_EPI(11) AMX_EPI(12) AMX_EPI(13) AMX_EPI(14) AMX_EPI(15)
#undef AMX_EPI
    }
#undef AMX_MUL
#undef AMX_STORE
#undef AMX_CODES
    __m512 acc[16] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15};
    finish512(m, gbase, slot, wcol, oi, ov, t0, 16, NIB, MIN, HALF, 0, HB, y, ldy, g, bias, b1, acc);
}

/// Batches of 16 tokens or more: the AMX tiles for every 16 tokens, the VNNI tiles for the rest (same results).
#define DEFAMX(NAME, NIB, MIN, HALF, HB, SGN) \
    TAMX __attribute__((noinline)) static void NAME(const pagoda_qmat *m, const int8_t *q, const float *dx, \
        const int32_t *sx, const float *dxs, const int32_t *sxh, const int32_t *oi, const float *ov, \
        const int16_t *slot, const int32_t *uniq, int nuniq, int64_t tokens, float *y, int64_t ldy, int64_t g0, \
        int64_t g1, const float *bias) { \
        if (amx_configured != 1) amx_configure(); \
        _Alignas(64) uint8_t wbuf[PRE_BLOCKS * 512]; \
        _Alignas(64) float wcol[PAGODA_Q_TOKEN_CHUNK * NOUT * 16]; \
        const int64_t kc = NIB || SGN ? PRE_BLOCKS : qcolumn_blocks(m, tokens); \
        for (int64_t g = g0; g < g1; g++) { \
            const uint8_t *gbase = m->data + g * m->blocks * m->block_bytes; \
            for (int u = 0; u < nuniq; u++) \
                _mm512_store_ps(wcol + 16 * u, qcolumn512(gbase, m->block_bytes, uniq[u], m->offset, NIB, MIN, HALF, 0, HB)); \
            for (int64_t b0 = 0; b0 < m->blocks; b0 += kc) { \
                const int64_t b1 = b0 + kc < m->blocks ? b0 + kc : m->blocks; \
                /* The tile operand: nibbles unpacked to bytes; with an offset, the signed u − offset, so that */ \
                /* tdpbssd gives Σ u·q − offset·Σq with no correction per token. */ \
                if (NIB || SGN) stage512(m, gbase, g + 1 < g1, b0, b1, NIB, HB, SGN, wbuf); \
                int64_t t = 0; \
                for (; t + 16 <= tokens; t += 16) amxtile(m, gbase, wbuf, q, dx, dxs, slot, wcol, oi, ov, t, NIB, MIN, HALF, HB, SGN, y, ldy, g, bias, b0, b1); \
                /* The rest with the VNNI tiles, which read the unsigned codes (unpacked, or as stored). */ \
                tiles512(m, gbase, 0, NIB && !SGN ? wbuf : 0, q, dx, sx, dxs, sxh, slot, wcol, oi, ov, t, tokens, NIB, MIN, HALF, 0, HB, y, ldy, g, bias, b0, b1); \
            } \
        } \
    }
DEFAMX(qgemmamx_b, 0, 0, 1, 0, 1)        // Q8_0
DEFAMX(qgemmamx_n, 1, 0, 1, 0, 1)        // Q4_0
DEFAMX(qgemmamx_nm, 1, 1, 1, 0, 0)       // Q4_1
DEFAMX(qgemmamx_nm_f32, 1, 1, 0, 0, 0)   // Q4_K
DEFAMX(qgemmamx_n5, 1, 0, 1, 1, 1)       // Q5_0
DEFAMX(qgemmamx_nm5, 1, 1, 1, 1, 0)      // Q5_1
DEFAMX(qgemmamx_nm5_f32, 1, 1, 0, 1, 0)  // Q5_K

// ---------------------------------------------------------------------------------------------------------
// AMX-BF16 ("wide") tiles for prompt tokens: each 16-row group's weights are dequantized once per call to bf16
// with the block scales folded in (w = (u − offset)·d + m, one fp32 rounding, then one bf16 rounding), activations
// are bf16, and `tdpbf16ps` keeps every 16 × 16 sum in a tile across all the blocks of the row. No float work per
// block: the int8 kernels' per-block scale products are what bound them. An output's value depends only on its own
// token's activations and its row's weights (the blocks in order), never on the other tokens of the call.

#define TWIDE __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,fma,f16c,bmi2,amx-tile,amx-bf16")))

TWIDE static void amx_configure_wide(void) {
    amx_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) { c.rows[i] = 16; c.colsb[i] = 64; }
    _tile_loadconfig(&c);
    amx_configured = 2;
}

/// Blocks [0, nb) of the group at gbase as bf16 B tiles, 1 KiB per block: tile row kk, dword lane i holds row i's
/// weights 2kk and 2kk + 1.
TWIDE INL void stage_wide(const pagoda_qmat *m, const uint8_t *gbase, const int NIB, const int MIN, const int HALF,
                          const int SPLIT, const int HB, uint16_t *dst) {
    const int64_t sbytes = HALF ? 32 : 64, wofs = MIN || SPLIT ? 2 * sbytes : sbytes;
    const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                           23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i ff = _mm512_set1_epi32(0xFF), off = _mm512_set1_epi32(m->offset);
    for (int64_t b = 0; b < m->blocks; b++, dst += 512) {
        const uint8_t *blk = gbase + b * m->block_bytes;
        const __m512 d0 = scales512(blk, HALF);
        const __m512 d1 = SPLIT ? scales512(blk + sbytes, HALF) : d0;
        const __m512 mn = MIN ? scales512(blk + sbytes, HALF) : _mm512_setzero_ps();
        __m512i w[8];
        if (NIB) unpack512(blk + wofs, HB, w);
        else for (int k = 0; k < 8; k++) w[k] = _mm512_loadu_si512((const void *)(blk + wofs + 64 * k));
        for (int k = 0; k < 8; k++) {
            const __m512 d = k < 4 ? d0 : d1;
            __m512 f[4];
            for (int j = 0; j < 4; j++) {
                __m512i c = j == 3 ? _mm512_srli_epi32(w[k], 24) : _mm512_and_si512(_mm512_srli_epi32(w[k], 8 * j), ff);
                c = _mm512_sub_epi32(c, off);
                f[j] = MIN ? _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), d, mn) : _mm512_mul_ps(_mm512_cvtepi32_ps(c), d);
            }
            _mm512_store_si512((void *)(dst + 64 * k), _mm512_permutexvar_epi16(pairs, (__m512i)_mm512_cvtne2ps_pbh(f[1], f[0])));
            _mm512_store_si512((void *)(dst + 64 * k + 32), _mm512_permutexvar_epi16(pairs, (__m512i)_mm512_cvtne2ps_pbh(f[3], f[2])));
        }
    }
}

/// One pass of the wide tiles over all nb blocks: token tile x0 (and x1 when TT is 2) times the staged groups w0 (and
/// w1 when GG is 2), into tiles 0 (x0·w0), 1 (x0·w1), 2 (x1·w0) and 3 (x1·w1), zeroed first. Every tile sums its
/// blocks in order, whatever the shape.
TWIDE static inline __attribute__((always_inline)) void wide_pass(const uint16_t *x0, const uint16_t *x1,
                                                                  const uint16_t *w0, const uint16_t *w1, int64_t nb,
                                                                  int64_t cols, const int TT, const int GG) {
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int64_t b = 0; b < nb; b++) {
        _tile_loadd(4, x0 + 32 * b, cols * 2);
        _tile_loadd(6, w0 + 512 * b, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (GG == 2) { _tile_loadd(7, w1 + 512 * b, 64); _tile_dpbf16ps(1, 4, 7); }
        if (TT == 2) {
            _tile_loadd(5, x1 + 32 * b, cols * 2);
            _tile_dpbf16ps(2, 5, 6);
            if (GG == 2) _tile_dpbf16ps(3, 5, 7);
        }
    }
}

/// Writes tile `c` (tokens t.., rows of group g) to y: straight when whole, else through a buffer, the missing
/// tokens and rows dropped; then adds the bias. With `add`, y += the tile (plus bias) instead, through the buffer:
/// y + (sum + bias), the same two roundings as a product into scratch then added.
#define WIDE_STORE(c, T, G) do { \
        const int64_t nt_ = tokens - (T) < 16 ? tokens - (T) : 16; \
        const int64_t r0_ = (G) * 16, nr_ = m->rows - r0_ < 16 ? m->rows - r0_ : 16; \
        float *yo_ = y + (T) * ldy + r0_; \
        if (add) { \
            _tile_stored(c, part, 64); \
            const __mmask16 k_ = (__mmask16)((1u << nr_) - 1); \
            const __m512 b_ = bias ? _mm512_maskz_loadu_ps(k_, bias + r0_) : _mm512_setzero_ps(); \
            for (int64_t i_ = 0; i_ < nt_; i_++) { \
                __m512 v_ = _mm512_load_ps(part + 16 * i_); \
                if (bias) v_ = _mm512_add_ps(v_, b_); \
                _mm512_mask_storeu_ps(yo_ + i_ * ldy, k_, _mm512_add_ps(_mm512_maskz_loadu_ps(k_, yo_ + i_ * ldy), v_)); \
            } \
        } else { \
            if (nt_ == 16 && nr_ == 16) _tile_stored(c, yo_, ldy * 4); \
            else { \
                _tile_stored(c, part, 64); \
                for (int64_t i_ = 0; i_ < nt_; i_++) memcpy(yo_ + i_ * ldy, part + 16 * i_, 4 * nr_); \
            } \
            if (bias) for (int64_t i_ = 0; i_ < nt_; i_++) \
                for (int64_t r_ = 0; r_ < nr_; r_++) yo_[i_ * ldy + r_] += bias[r0_ + r_]; \
        } \
    } while (0)

static __thread uint16_t *wide_stage;
static __thread int64_t wide_stage_cap;

/// Groups of [g0, g1) staged at once, `gbytes` bf16 tile bytes each: about 256 KiB (at least one group). Grows this
/// thread's staging buffer to hold them.
static int64_t wide_stage_groups(int64_t gbytes, int64_t g0, int64_t g1) {
    int64_t gp = 262144 / gbytes;
    if (gp < 1) gp = 1;
    if (gp > g1 - g0) gp = g1 - g0;
    if (wide_stage_cap < gp * gbytes) {
        free(wide_stage);
        wide_stage = aligned_alloc(64, (size_t)(gp * gbytes));
        wide_stage_cap = gp * gbytes;
    }
    return gp;
}

/// Tokens per pass over a range of staged groups: their bf16 activations (at most 256 × 4096 columns × 2 bytes)
/// stay in L2 while the groups' tiles pass over them.
#define WIDE_TOKENS 256

#define DEFWIDE(NAME, NIB, MIN, HALF, SPLIT, HB) \
    TWIDE __attribute__((noinline)) static void NAME(const pagoda_qmat *m, const uint16_t *xb, int64_t tokens, \
                                                     float *y, int64_t ldy, int64_t g0, int64_t g1, const float *bias, \
                                                     int add) { \
        if (amx_configured != 2) amx_configure_wide(); \
        const int64_t nb = m->blocks, cols = m->cols, gp = wide_stage_groups(nb * 1024, g0, g1); \
        _Alignas(64) float part[256]; \
        for (int64_t gs = g0; gs < g1; gs += gp) { \
            const int64_t ge = gs + gp < g1 ? gs + gp : g1; \
            for (int64_t g = gs; g < ge; g++) \
                stage_wide(m, m->data + g * nb * m->block_bytes, NIB, MIN, HALF, SPLIT, HB, wide_stage + (g - gs) * nb * 512); \
            for (int64_t tb = 0; tb < tokens; tb += WIDE_TOKENS) { \
                const int64_t te = tb + WIDE_TOKENS < tokens ? tb + WIDE_TOKENS : tokens; \
                for (int64_t g = gs; g < ge; g += 2) { \
                    const int two = g + 1 < ge; \
                    const uint16_t *w0 = wide_stage + (g - gs) * nb * 512, *w1 = w0 + nb * 512; \
                    int64_t t = tb; \
                    for (; t + 16 < te; t += 32) { \
                        const uint16_t *x0 = xb + t * cols, *x1 = x0 + 16 * cols; \
                        if (two) wide_pass(x0, x1, w0, w1, nb, cols, 2, 2); \
                        else wide_pass(x0, x1, w0, w1, nb, cols, 2, 1); \
                        WIDE_STORE(0, t, g); WIDE_STORE(2, t + 16, g); \
                        if (two) { WIDE_STORE(1, t, g + 1); WIDE_STORE(3, t + 16, g + 1); } \
                    } \
                    if (t < te) { \
                        const uint16_t *x0 = xb + t * cols; \
                        if (two) wide_pass(x0, x0, w0, w1, nb, cols, 1, 2); \
                        else wide_pass(x0, x0, w0, w1, nb, cols, 1, 1); \
                        WIDE_STORE(0, t, g); \
                        if (two) WIDE_STORE(1, t, g + 1); \
                    } \
                } \
            } \
        } \
    }
#define INSTWIDE(S, NIB, MIN, HALF, SPLIT, HB) DEFWIDE(qgemmwide##S, NIB, MIN, HALF, SPLIT, HB)
PQ_LAYOUTS(INSTWIDE)

/// stage_wide for any layout (the SwiGLU kernel's two matrices may differ): the specialized copy is picked per group.
#define INSTSTAGE(S, NIB, MIN, HALF, SPLIT, HB) \
    TWIDE __attribute__((noinline)) static void stagewide##S(const pagoda_qmat *m, const uint8_t *gbase, uint16_t *dst) { \
        stage_wide(m, gbase, NIB, MIN, HALF, SPLIT, HB, dst); \
    }
PQ_LAYOUTS(INSTSTAGE)
TWIDE static void stage_wide_any(const pagoda_qmat *m, int64_t g, uint16_t *dst) {
    const uint8_t *gbase = m->data + g * m->blocks * m->block_bytes;
#define MATCHSTAGE(S, NIB, MIN, HALF, SPLIT, HB) \
    if (PQ_LAYOUT_IS(m, NIB, MIN, HALF, SPLIT, HB)) { stagewide##S(m, gbase, dst); return; }
    PQ_LAYOUTS(MATCHSTAGE)
#undef MATCHSTAGE
}

/// silu(g)·u of 16 lanes: g / (1 + e^−g) · u, with the exponential of the Swift `expSIMD` (same constants, same
/// fused and unfused steps), so the result is bitwise Swift's `siluMul`.
TWIDE INL __m512 silu_mul512(__m512 g, __m512 u) {
    const __m512 x0 = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(g), _mm512_set1_epi32((int)0x80000000)));
    __m512 x = _mm512_mask_mov_ps(x0, _mm512_cmp_ps_mask(x0, _mm512_set1_ps(88.0f), _CMP_GT_OQ), _mm512_set1_ps(88.0f));
    const __mmask16 ok = _mm512_cmp_ps_mask(x0, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
    x = _mm512_mask_mov_ps(_mm512_set1_ps(-87.0f), ok, x);
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504f), magic);
    const __m512 n = _mm512_sub_ps(t, magic);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    const __m512i ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(magic));
    const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(127)), 23));
    const __m512 ex = _mm512_maskz_mov_ps(ok, _mm512_mul_ps(e, scale));
    return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), ex)), u);
}

/// The wide product's SwiGLU: each group's gate and up tiles are staged side by side, so the 2 × 2 tiles hold gate
/// and up of the same 16 rows for 32 tokens; silu(gate)·up is formed from them in L1 and only it is written.
TWIDE __attribute__((noinline)) static void qgemm_wide_glu_amx(const pagoda_qmat *mg, const pagoda_qmat *mu,
                                                              const uint16_t *xb, int64_t tokens, float *out,
                                                              int64_t ldo, int64_t g0, int64_t g1) {
    if (amx_configured != 2) amx_configure_wide();
    const int64_t nb = mg->blocks, cols = mg->cols, gp = wide_stage_groups(nb * 2048, g0, g1);
    _Alignas(64) float part[4][256];
    for (int64_t gs = g0; gs < g1; gs += gp) {
        const int64_t ge = gs + gp < g1 ? gs + gp : g1;
        for (int64_t g = gs; g < ge; g++) {
            stage_wide_any(mg, g, wide_stage + (g - gs) * nb * 1024);
            stage_wide_any(mu, g, wide_stage + (g - gs) * nb * 1024 + nb * 512);
        }
        for (int64_t tb = 0; tb < tokens; tb += WIDE_TOKENS) {
            const int64_t te = tb + WIDE_TOKENS < tokens ? tb + WIDE_TOKENS : tokens;
            for (int64_t g = gs; g < ge; g++) {
                const uint16_t *w0 = wide_stage + (g - gs) * nb * 1024, *w1 = w0 + nb * 512;
                const int64_t r0 = g * 16, nr = mg->rows - r0 < 16 ? mg->rows - r0 : 16;
                const __mmask16 rmask = (__mmask16)((1u << nr) - 1);
                for (int64_t t = tb; t < te; t += 32) {
                    const uint16_t *x0 = xb + t * cols, *x1 = x0 + 16 * cols;
                    const int two = t + 16 < te;
                    if (two) {
                        wide_pass(x0, x1, w0, w1, nb, cols, 2, 2);
                        _tile_stored(2, part[2], 64);
                        _tile_stored(3, part[3], 64);
                    } else {
                        wide_pass(x0, x0, w0, w1, nb, cols, 1, 2);
                    }
                    _tile_stored(0, part[0], 64);
                    _tile_stored(1, part[1], 64);
                    const int64_t nt = te - t < 32 ? te - t : 32;
                    for (int64_t i = 0; i < nt; i++) {
                        const float *pg = part[i < 16 ? 0 : 2] + 16 * (i & 15), *pu = part[i < 16 ? 1 : 3] + 16 * (i & 15);
                        _mm512_mask_storeu_ps(out + (t + i) * ldo + r0, rmask,
                                              silu_mul512(_mm512_load_ps(pg), _mm512_load_ps(pu)));
                    }
                }
            }
        }
    }
}

TWIDE __attribute__((noinline)) static void to_bf16_512(const float *x, int64_t n, uint16_t *o) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm512_storeu_si512((void *)(o + i), (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
    if (i < n) {
        const int64_t r = n - i;
        const __mmask16 lo = (__mmask16)(r >= 16 ? 0xffff : (1u << r) - 1), hi = (__mmask16)(r > 16 ? (1u << (r - 16)) - 1 : 0);
        const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, x + i + 16), _mm512_maskz_loadu_ps(lo, x + i));
        _mm512_mask_storeu_epi16(o + i, (__mmask32)((r >= 32 ? 0xffffffffu : (1u << r) - 1)), v);
    }
}

// ---------------------------------------------------------------------------------------------------------
// AVX2 (no VNNI): one ymm lane per row of an 8-row half group. vpmaddubsw multiplies pairs of unsigned codes by
// broadcast int8 activations into int16, vpmaddwd widens to int32. Nibble codes (at most 15, 31 or 63 with bit
// planes) let several steps sum in int16 first, exactly: |2·63·128|·2, |2·31·128|·4 and |2·15·128|·8 all stay below
// 32768. Q8_0's codes (offset 128) would saturate vpmaddubsw, so those use the sign trick on the signed code
// (u ^ 0x80), widened every step, and skip the offset correction. Tiles of up to 4 tokens share each block's
// unpacked weights; the float work per block and token is the scalar path's, in its order.

#define T256 __attribute__((target("avx2,fma,f16c")))

/// 8 scales (fp16 or fp32) as floats.
T256 INL __m256 scales256(const uint8_t *p, const int HALF) {
    return HALF ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)) : _mm256_loadu_ps((const float *)p);
}

/// 32 bits as 32 bytes: 0xFF where the bit is set, byte b for bit b.
T256 INL __m256i bits_to_bytes256(uint32_t v) {
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i x = _mm256_shuffle_epi8(_mm256_set1_epi32((int)v), pick);
    return _mm256_cmpeq_epi8(_mm256_and_si256(x, sel), sel);
}

/// Lanes 0 ..< n set (a maskload / maskstore mask for a half group's rows that exist).
T256 INL __m256i lanes256(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// The codes of step k (columns 4k ..< 4k + 4) of the 8 rows of half h, as bytes (4 per row).
T256 INL __m256i codes256(const uint8_t *wp, int k, int h, const int NIB, const int HB) {
    if (!NIB) return _mm256_loadu_si256((const __m256i *)(wp + 64 * k + 32 * h));
    __m256i w = _mm256_loadu_si256((const __m256i *)(wp + 64 * (k & 3) + 32 * h));
    if (k >= 4) w = _mm256_srli_epi16(w, 4);
    w = _mm256_and_si256(w, _mm256_set1_epi8(15));
    for (int pl = 0; pl < HB; pl++) {
        uint32_t bits;
        memcpy(&bits, wp + 256 + 64 * pl + 8 * k + 4 * h, 4);
        w = _mm256_or_si256(w, _mm256_and_si256(bits_to_bytes256(bits), _mm256_set1_epi8((char)(16 << pl))));
    }
    return w;
}

/// The weights of half h of a group's rows in column c, as `qweight` computes each.
T256 INL __m256 qcolumn256(const uint8_t *gbase, int64_t bb, int64_t c, int32_t off, int h, const int NIB,
                           const int MIN, const int HALF, const int SPLIT, const int HB) {
    const int64_t sbytes = HALF ? 32 : 64, wofs = MIN || SPLIT ? 2 * sbytes : sbytes, half8 = HALF ? 16 : 32;
    const int e = (int)(c % 32), k = e / 4, j = e % 4;
    const uint8_t *blk = gbase + (c / 32) * bb;
    const uint8_t *wp = blk + wofs;
    __m256i u;
    if (NIB) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(wp + 64 * (k & 3) + 32 * h));
        u = _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(8 * j + (k >= 4 ? 4 : 0))), _mm256_set1_epi32(15));
        for (int p = 0; p < HB; p++) {
            uint32_t bits;
            memcpy(&bits, wp + 256 + 64 * p + 8 * k + 4 * h, 4);
            // Bit 4i + j of the half's word is row i's.
            const __m256i sh = _mm256_add_epi32(_mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), _mm256_set1_epi32(j));
            const __m256i bit = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)bits), sh), _mm256_set1_epi32(1));
            u = _mm256_add_epi32(u, _mm256_slli_epi32(bit, 4 + p));
        }
    } else {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(wp + 64 * k + 32 * h));
        u = _mm256_and_si256(_mm256_srl_epi32(v, _mm_cvtsi32_si128(8 * j)), _mm256_set1_epi32(255));
    }
    const __m256 d = scales256((SPLIT && e >= 16 ? blk + sbytes : blk) + h * half8, HALF);
    __m256 w = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(u, _mm256_set1_epi32(off))), d);
    if (MIN) w = _mm256_add_ps(w, scales256(blk + sbytes + h * half8, HALF));
    return w;
}

/// Tokens t0 ..< t0 + NT, half h of group g, blocks [b0, b1): a later range continues the sums an earlier one stored
/// in y (an exact fp32 round trip). After the last block, each token's outliers (weights from wcol, laid out per
/// distinct column, or dequantized here), then the bias.
T256 INL void tile256(const pagoda_qmat *m, const uint8_t *gbase, int h, const int8_t *q, const float *dx,
                      const int32_t *sx, const float *dxs, const int32_t *sxh, const int16_t *slot, const float *wcol,
                      const int32_t *oi, const float *ov, int64_t t0, const int NT, const int NIB, const int MIN,
                      const int WIDE, const int HALF, const int SPLIT, const int HB, float *y, int64_t ldy, int64_t g,
                      const float *bias, int64_t b0, int64_t b1) {
    const int64_t nb = m->blocks, cols = m->cols, bb = m->block_bytes;
    const int64_t sbytes = HALF ? 32 : 64, wofs = MIN || SPLIT ? 2 * sbytes : sbytes, half8 = HALF ? 16 : 32;
    // The offset correction, for the layouts that have one (types with a min have offset 0, see the dispatch).
    const int OFF = !WIDE && !MIN;
    const int32_t off = OFF ? m->offset : 0;
    // Steps an int16 sum takes before it is widened (per half of the block when SPLIT).
    const int S = WIDE ? 1 : HB == 0 ? 8 : HB == 1 ? 4 : 2;
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t r0 = g * PAGODA_Q_ROWS + 8 * h;
    const int nr = m->rows - r0 < 8 ? (int)(m->rows - r0) : 8;
    const __m256i rmask = lanes256(nr);
    __m256 acc[4];
    for (int n = 0; n < NT; n++)
        acc[n] = b0 == 0 ? _mm256_setzero_ps() : _mm256_maskload_ps(y + (t0 + n) * ldy + r0, rmask);
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *blk = gbase + b * bb;
        const uint8_t *wp = blk + wofs;
        const int8_t *xb = q + t0 * cols + b * 32;
        __m256i s32[4], h32[4], s16[4];
        for (int k = 0; k < 8; k++) {
            const __m256i w = codes256(wp, k, h, NIB, HB);
            __m256i ws = w, wa = w;
            if (WIDE) {
                ws = _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80));
                wa = _mm256_sign_epi8(ws, ws);
            }
            for (int n = 0; n < NT; n++) {
                int32_t xv;
                memcpy(&xv, xb + n * cols + 4 * k, 4);
                __m256i x = _mm256_set1_epi32(xv);
                if (WIDE) x = _mm256_sign_epi8(x, ws);
                const __m256i p = _mm256_maddubs_epi16(wa, x);
                const int first = k % S == 0, last = k % S == S - 1;
                s16[n] = first ? p : _mm256_add_epi16(s16[n], p);
                if (last) {
                    const __m256i wide = _mm256_madd_epi16(s16[n], ones);
                    s32[n] = k == S - 1 || (SPLIT && k == 4 + S - 1) ? wide : _mm256_add_epi32(s32[n], wide);
                }
                if (SPLIT && k == 3) h32[n] = s32[n];  // the first half's sum
            }
        }
        const __m256 wd = scales256(blk + h * half8, HALF);
        const __m256 wm = MIN || SPLIT ? scales256(blk + sbytes + h * half8, HALF) : _mm256_setzero_ps();
        for (int n = 0; n < NT; n++) {
            const int64_t t = t0 + n;
            const __m256 xd = _mm256_set1_ps(dx[t * nb + b]);
            if (SPLIT) {
                // Each half with its own scale (the second half's in the min slot), as the scalar path does.
                const int32_t a1 = sxh[t * nb + b], a2 = sx[t * nb + b] - a1;
                const __m256i i1 = _mm256_sub_epi32(h32[n], _mm256_set1_epi32(off * a1));
                const __m256i i2 = _mm256_sub_epi32(s32[n], _mm256_set1_epi32(off * a2));
                acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(wd, xd), acc[n]);
                acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i2), _mm256_mul_ps(wm, xd), acc[n]);
                continue;
            }
            __m256i is = s32[n];
            if (OFF) is = _mm256_sub_epi32(is, _mm256_set1_epi32(off * sx[t * nb + b]));
            acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(wd, xd), acc[n]);
            if (MIN) acc[n] = _mm256_fmadd_ps(wm, _mm256_set1_ps(dxs[t * nb + b]), acc[n]);
        }
    }
    const int last = b1 == nb;
    const __m256 bv = bias && last ? _mm256_maskload_ps(bias + r0, rmask) : _mm256_setzero_ps();
    for (int n = 0; n < NT; n++) {
        const int64_t t = t0 + n;
        __m256 v = acc[n];
        if (last) {
            for (int k = 0; k < NOUT; k++) {
                const __m256 w = wcol ? _mm256_load_ps(wcol + 8 * slot[t * NOUT + k])
                                      : qcolumn256(gbase, bb, oi[t * NOUT + k], m->offset, h, NIB, MIN, HALF, SPLIT, HB);
                v = _mm256_fmadd_ps(_mm256_set1_ps(ov[t * NOUT + k]), w, v);
            }
            if (bias) v = _mm256_add_ps(v, bv);
        }
        _mm256_maskstore_ps(y + t * ldy + r0, rmask, v);
    }
}

#define DEF256(NAME, NIB, MIN, WIDE, HALF, SPLIT, HB)                                                               \
    T256 __attribute__((noinline)) static void NAME(const pagoda_qmat *m, const int8_t *q, const float *dx,         \
        const int32_t *sx, const float *dxs, const int32_t *sxh, const int32_t *oi, const float *ov,                 \
        const int16_t *slot, const int32_t *uniq, int nuniq, int64_t tokens, float *y, int64_t ldy, int64_t g0,      \
        int64_t g1, const float *bias) {                                                                             \
        /* A batch dequantizes each group's weights in the chunk's distinct outlier columns once (see tile256). */   \
        _Alignas(32) float wcol[2][PAGODA_Q_TOKEN_CHUNK * NOUT * 8];                                                 \
        const int nu = tokens > 4 ? nuniq : 0;                                                                       \
        const int64_t kc = qcolumn_blocks(m, tokens);  /* both halves pass over the range in L1 */                 \
        for (int64_t g = g0; g < g1; g++) {                                                                          \
            const uint8_t *gbase = m->data + g * m->blocks * m->block_bytes;                                         \
            const int halves = m->rows - g * PAGODA_Q_ROWS > 8 ? 2 : 1;                                              \
            for (int h = 0; h < halves; h++)                                                                         \
                for (int u = 0; u < nu; u++)                                                                         \
                    _mm256_store_ps(wcol[h] + 8 * u, qcolumn256(gbase, m->block_bytes, uniq[u], m->offset, h, NIB,   \
                                                                MIN, HALF, SPLIT, HB));                              \
            for (int64_t b0 = 0; b0 < m->blocks; b0 += kc) {                                                         \
                const int64_t b1 = b0 + kc < m->blocks ? b0 + kc : m->blocks;                                        \
                for (int h = 0; h < halves; h++) {                                                                   \
                    const float *wc = nu ? wcol[h] : 0;                                                              \
                    int64_t t = 0;                                                                                   \
                    for (; t + 4 <= tokens; t += 4)                                                                  \
                        tile256(m, gbase, h, q, dx, sx, dxs, sxh, slot, wc, oi, ov, t, 4, NIB, MIN, WIDE, HALF,      \
                                SPLIT, HB, y, ldy, g, bias, b0, b1);                                                 \
                    for (; t < tokens; t++)                                                                          \
                        tile256(m, gbase, h, q, dx, sx, dxs, sxh, slot, wc, oi, ov, t, 1, NIB, MIN, WIDE, HALF,      \
                                SPLIT, HB, y, ldy, g, bias, b0, b1);                                                 \
                }                                                                                                    \
            }                                                                                                        \
        }                                                                                                            \
    }
/// WIDE: the 8-bit codes (Q8_0, offset 128), which take the sign trick.
#define INST256(S, NIB, MIN, HALF, SPLIT, HB) DEF256(qgemm256##S, NIB, MIN, !(NIB), HALF, SPLIT, HB)
PQ_LAYOUTS(INST256)
#endif

// ---------------------------------------------------------------------------------------------------------
// Dispatch.

#ifdef PQ_X86
/// Whether the CPU has AMX-INT8 tiles (CPUID leaf 7: AMX-TILE and AMX-INT8) and Linux lets this process use their
/// state (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA, once, for every thread of the process).
static int amx_available(void) {
#if defined(__linux__)
    const char *off = getenv("PAGODA_NO_AMX");  // measuring against the VNNI tiles
    if (off && *off && strcmp(off, "0") != 0) return 0;
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((d >> 24) & 1) || !((d >> 25) & 1)) return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}
#endif

static int detected_isa(void) {
#ifdef PQ_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) return amx_available() ? 3 : 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

static int q_isa = -1;      // detected, cached
static int q_forced = -1;

int pagoda_q_isa(void) {
    if (q_isa < 0) q_isa = detected_isa();
    if (q_forced >= 0) return q_forced < q_isa ? q_forced : q_isa;
    return q_isa;
}

void pagoda_q_force_isa(int isa) { q_forced = isa; }

static void qgemm_chunk(const pagoda_qmat *m, const int8_t *q, const float *dx, const int32_t *sx, const float *dxs,
                        const int32_t *sxh, const int32_t *oi, const float *ov, const int16_t *slot,
                        const int32_t *uniq, int nuniq, int64_t tokens, float *y, int64_t ldy, int64_t g0, int64_t g1,
                        const float *bias);

void pagoda_qgemm(const pagoda_qmat *m, const int8_t *q, const float *dx, const int32_t *sx, const float *dxs,
                  const int32_t *sxh, const int32_t *oi, const float *ov, const int16_t *slot, const int32_t *uniq,
                  const int32_t *nuniq, int64_t tokens, float *y, int64_t ldy, int64_t g0, int64_t g1,
                  const float *bias) {
    const int64_t nb = m->blocks;
    for (int64_t t = 0, c = 0; t < tokens; t += PAGODA_Q_TOKEN_CHUNK, c++) {
        const int64_t n = tokens - t < PAGODA_Q_TOKEN_CHUNK ? tokens - t : PAGODA_Q_TOKEN_CHUNK;
        qgemm_chunk(m, q + t * m->cols, dx + t * nb, sx + t * nb, dxs + t * nb, sxh + t * nb, oi + t * NOUT,
                    ov + t * NOUT, slot + t * NOUT, uniq + c * PAGODA_Q_TOKEN_CHUNK * NOUT, nuniq[c], n,
                    y + t * ldy, ldy, g0, g1, bias);
    }
}

static void qgemm_chunk(const pagoda_qmat *m, const int8_t *q, const float *dx, const int32_t *sx, const float *dxs,
                        const int32_t *sxh, const int32_t *oi, const float *ov, const int16_t *slot,
                        const int32_t *uniq, int nuniq, int64_t tokens, float *y, int64_t ldy, int64_t g0, int64_t g1,
                        const float *bias) {
    const int isa = pagoda_q_isa();
#ifdef PQ_X86
    // Every layout QuantizedMatrix makes has a vector kernel; anything else takes the scalar path.
    typedef void (*qkernel)(const pagoda_qmat *, const int8_t *, const float *, const int32_t *, const float *,
                            const int32_t *, const int32_t *, const float *, const int16_t *, const int32_t *, int,
                            int64_t, float *, int64_t, int64_t, int64_t, const float *);
    qkernel kamx = 0, k512 = 0, k256 = 0;
    const int nib = m->nibble, mn = m->has_min, hs = m->half_scales, sp = m->split, hb = m->high_bits;
    if (!nib && !mn && hs && !sp && !hb && m->offset == 128) { kamx = qgemmamx_b; k512 = qgemm512_b; k256 = qgemm256_b; }
    else if (nib && !sp && hb == 0 && !mn && hs) { kamx = qgemmamx_n; k512 = qgemm512_n; k256 = qgemm256_n; }
    else if (nib && !sp && hb == 0 && mn && hs) { kamx = qgemmamx_nm; k512 = qgemm512_nm; k256 = qgemm256_nm; }
    else if (nib && !sp && hb == 0 && mn && !hs) { kamx = qgemmamx_nm_f32; k512 = qgemm512_nm_f32; k256 = qgemm256_nm_f32; }
    else if (nib && !sp && hb == 1 && !mn && hs) { kamx = qgemmamx_n5; k512 = qgemm512_n5; k256 = qgemm256_n5; }
    else if (nib && !sp && hb == 1 && mn && hs) { kamx = qgemmamx_nm5; k512 = qgemm512_nm5; k256 = qgemm256_nm5; }
    else if (nib && !sp && hb == 1 && mn && !hs) { kamx = qgemmamx_nm5_f32; k512 = qgemm512_nm5_f32; k256 = qgemm256_nm5_f32; }
    else if (nib && sp && hb == 2 && !mn && !hs) { k512 = qgemm512_ns6_f32; k256 = qgemm256_ns6_f32; }
    if (isa == 3 && kamx && tokens >= 16) {
        kamx(m, q, dx, sx, dxs, sxh, oi, ov, slot, uniq, nuniq, tokens, y, ldy, g0, g1, bias);
        return;
    }
    if (isa >= 2 && k512) { k512(m, q, dx, sx, dxs, sxh, oi, ov, slot, uniq, nuniq, tokens, y, ldy, g0, g1, bias); return; }
    if (isa == 1 && k256 && !(mn && m->offset)) { k256(m, q, dx, sx, dxs, sxh, oi, ov, slot, uniq, nuniq, tokens, y, ldy, g0, g1, bias); return; }
#endif
    (void)isa;
    qgemm_scalar(m, q, dx, sx, dxs, sxh, oi, ov, tokens, y, ldy, g0, g1, bias);
}

// ---------------------------------------------------------------------------------------------------------
// Wide (bf16) products for prompt tokens: dispatch and the portable reference.

static inline float bf16_to_float(uint16_t h);

/// fp32 → bf16, rounding to nearest even (as vcvtne2ps2bf16 does; NaN stays NaN).
static inline uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

static int wide_isa = -1;

int pagoda_qgemm_wide_available(void) {
    if (pagoda_q_isa() != 3) return 0;
#ifdef PQ_X86
    if (wide_isa < 0) {
        wide_isa = 0;
        const char *off = getenv("PAGODA_NO_WIDE");  // measuring against the int8 tiles
        unsigned a, b, c, d;
        if (!(off && *off && strcmp(off, "0") != 0) && __get_cpuid_max(0, 0) >= 7) {
            __cpuid_count(7, 0, a, b, c, d);
            const int amx_bf16 = (d >> 22) & 1;
            __cpuid_count(7, 1, a, b, c, d);
            const int avx512_bf16 = (a >> 5) & 1;
            wide_isa = amx_bf16 && avx512_bf16;
        }
    }
    return wide_isa;
#else
    return 0;
#endif
}

void pagoda_to_bf16(const float *x, int64_t n, uint16_t *out) {
#ifdef PQ_X86
    if (pagoda_qgemm_wide_available()) { to_bf16_512(x, n, out); return; }
#endif
    for (int64_t i = 0; i < n; i++) out[i] = float_to_bf16(x[i]);
}

/// The wide product without tiles: the same bf16 weights and activations, each output summed in fp32 in column
/// order (the tiles' pairwise sums round differently: equal within fp32 accumulation error, not bitwise).
static void qgemm_wide_scalar(const pagoda_qmat *m, const uint16_t *xb, int64_t tokens, float *y, int64_t ldy,
                              int64_t g0, int64_t g1, const float *bias, int add) {
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *gbase = m->data + g * m->blocks * m->block_bytes;
        for (int i = 0; i < PAGODA_Q_ROWS; i++) {
            const int64_t r = g * PAGODA_Q_ROWS + i;
            if (r >= m->rows) break;
            for (int64_t t = 0; t < tokens; t++) {
                float acc = 0.0f;
                for (int64_t c = 0; c < m->cols; c++) {
                    const int e = (int)(c % 32);
                    const uint8_t *blk = gbase + (c / 32) * m->block_bytes;
                    const int32_t u = qcode(m, blk + codes_offset(m), i, e / 4, e % 4);
                    const float d = scale_at(m->split && e >= 16 ? blk + scales_bytes(m) : blk, m->half_scales, i);
                    const float w = m->has_min ? fmaf((float)(u - m->offset), d, scale_at(blk + scales_bytes(m), m->half_scales, i))
                                               : (float)(u - m->offset) * d;
                    acc = fmaf(bf16_to_float(float_to_bf16(w)), bf16_to_float(xb[t * m->cols + c]), acc);
                }
                const float v = bias ? acc + bias[r] : acc;
                y[t * ldy + r] = add ? y[t * ldy + r] + v : v;
            }
        }
    }
}

void pagoda_qgemm_wide(const pagoda_qmat *m, const uint16_t *xb, int64_t tokens, float *y, int64_t ldy, int64_t g0,
                       int64_t g1, const float *bias, int add) {
    if (tokens <= 0 || g0 >= g1) return;
#ifdef PQ_X86
    if (pagoda_qgemm_wide_available()) {
        typedef void (*wkernel)(const pagoda_qmat *, const uint16_t *, int64_t, float *, int64_t, int64_t, int64_t,
                                const float *, int);
        wkernel k = 0;
        // The kernel of the matrix's layout (every one QuantizedMatrix makes has one).
#define MATCHWIDE(S, NIB, MIN, HALF, SPLIT, HB) \
        if (!k && PQ_LAYOUT_IS(m, NIB, MIN, HALF, SPLIT, HB)) k = qgemmwide##S;
        PQ_LAYOUTS(MATCHWIDE)
#undef MATCHWIDE
        if (k) { k(m, xb, tokens, y, ldy, g0, g1, bias, add); return; }
    }
#endif
    qgemm_wide_scalar(m, xb, tokens, y, ldy, g0, g1, bias, add);
}

/// silu(g)·u of one value, the scalar twin of silu_mul512 (Swift's `expScalar`).
static float silu_mul1(float g, float u) {
    const float x0 = -g;
    float x = x0 > 88.0f ? 88.0f : x0;
    const int ok = x0 >= -87.0f;
    if (!ok) x = -87.0f;
    const float magic = 12582912.0f;
    const float t = fmaf(x, 1.44269504f, magic);
    const float n = t - magic;
    float r = fmaf(n, -0.693359375f, x);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = fmaf(p, r, 1.3981999507e-3f);
    p = fmaf(p, r, 8.3334519073e-3f);
    p = fmaf(p, r, 4.1665795894e-2f);
    p = fmaf(p, r, 1.6666665459e-1f);
    p = fmaf(p, r, 5.0000001201e-1f);
    const float e = fmaf(p, r * r, r) + 1.0f;
    int32_t tb, mb;
    memcpy(&tb, &t, 4);
    memcpy(&mb, &magic, 4);
    const uint32_t sb = (uint32_t)((tb - mb) + 127) << 23;
    float scale;
    memcpy(&scale, &sb, 4);
    const float ex = ok ? e * scale : 0.0f;
    return g / (1.0f + ex) * u;
}

void pagoda_qgemm_wide_glu(const pagoda_qmat *gate, const pagoda_qmat *up, const uint16_t *xb, int64_t tokens,
                           float *out, int64_t ldo, int64_t g0, int64_t g1) {
    if (tokens <= 0 || g0 >= g1) return;
#ifdef PQ_X86
    if (pagoda_qgemm_wide_available()) { qgemm_wide_glu_amx(gate, up, xb, tokens, out, ldo, g0, g1); return; }
#endif
    // Portable: both products (rows up to the range's end, the row index as the kernels take it), then the same
    // silu·up per value.
    const int64_t r1 = g1 * PAGODA_Q_ROWS < gate->rows ? g1 * PAGODA_Q_ROWS : gate->rows;
    float *gy = malloc(sizeof(float) * (size_t)(tokens * r1 * 2)), *uy = gy + tokens * r1;
    qgemm_wide_scalar(gate, xb, tokens, gy, r1, g0, g1, 0, 0);
    qgemm_wide_scalar(up, xb, tokens, uy, r1, g0, g1, 0, 0);
    for (int64_t t = 0; t < tokens; t++)
        for (int64_t r = g0 * PAGODA_Q_ROWS; r < r1; r++) out[t * ldo + r] = silu_mul1(gy[t * r1 + r], uy[t * r1 + r]);
    free(gy);
}

// ---------------------------------------------------------------------------------------------------------
// Compute peak probes.

#ifdef PQ_X86
T512 __attribute__((noinline)) static int64_t dot_loop512(int64_t iters, int32_t seed) {
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8((char)(seed | 1));
    __m512i c[12];
    for (int i = 0; i < 12; i++) c[i] = _mm512_set1_epi32(i);
    for (int64_t n = 0; n < iters; n++) {
        for (int i = 0; i < 12; i++) c[i] = _mm512_dpbusd_epi32(c[i], a, b);
        __asm__ volatile("" : "+v"(c[0]), "+v"(c[1]), "+v"(c[2]), "+v"(c[3]), "+v"(c[4]), "+v"(c[5]));
    }
    __m512i s = c[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_epi32(s, c[i]);
    return _mm512_reduce_add_epi32(s);
}

T256 __attribute__((noinline)) static int64_t dot_loop256(int64_t iters, int32_t seed) {
    const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8((char)(seed | 1)), ones = _mm256_set1_epi16(1);
    __m256i c[12];
    for (int i = 0; i < 12; i++) c[i] = _mm256_set1_epi32(i);
    for (int64_t n = 0; n < iters; n++) {
        for (int i = 0; i < 12; i++) c[i] = _mm256_add_epi32(c[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
        __asm__ volatile("" : "+x"(c[0]), "+x"(c[1]), "+x"(c[2]), "+x"(c[3]), "+x"(c[4]), "+x"(c[5]));
    }
    __m256i s = c[0];
    for (int i = 1; i < 12; i++) s = _mm256_add_epi32(s, c[i]);
    int32_t out[8];
    _mm256_storeu_si256((__m256i *)out, s);
    return (int64_t)out[0] + out[7];
}
#endif

int64_t pagoda_int8_dot_loop(int64_t iters, int32_t seed) {
#ifdef PQ_X86
    const int isa = pagoda_q_isa();
    if (isa >= 2) return dot_loop512(iters, seed);
    if (isa == 1) return dot_loop256(iters, seed);
#endif
    int32_t c[12] = {0};
    volatile int8_t b = (int8_t)(seed | 1);
    for (int64_t n = 0; n < iters; n++)
        for (int i = 0; i < 12; i++)
            for (int j = 0; j < 4; j++) c[i] += 3 * b;
    int64_t s = 0;
    for (int i = 0; i < 12; i++) s += c[i];
    return s;
}

int64_t pagoda_int8_dot_loop_ops(void) {
    const int isa = pagoda_q_isa();
    return isa >= 2 ? 12 * 64 * 2 : isa == 1 ? 12 * 32 * 2 : 12 * 4 * 2;
}

#ifdef PQ_X86
/// AMX-BF16 peak probe: four independent 16 × 16 × 32 tile products per iteration (the wide kernel's 2 × 2 shape).
TWIDE __attribute__((noinline)) static double bf16_tile_loop(int64_t iters) {
    amx_configure_wide();
    _Alignas(64) static const uint16_t zeros[512];
    _Alignas(64) float out[256];
    _tile_loadd(4, zeros, 64); _tile_loadd(5, zeros, 64); _tile_loadd(6, zeros, 64); _tile_loadd(7, zeros, 64);
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int64_t n = 0; n < iters; n++) {
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, 64);
    return out[0];
}
#endif

double pagoda_bf16_tile_loop(int64_t iters) {
#ifdef PQ_X86
    if (pagoda_qgemm_wide_available()) return bf16_tile_loop(iters);
#endif
    (void)iters;
    return 0;
}

int64_t pagoda_bf16_tile_loop_ops(void) { return pagoda_qgemm_wide_available() ? 4 * 16 * 16 * 32 * 2 : 0; }

// ---------------------------------------------------------------------------------------------------------
// Half-precision (and fp32) weights × fp32 activations. Layout (see pagoda_kernels.h): groups of 8 rows; for each group
// and each chunk of 16 columns, the 8 rows' 16 values back to back (256 bytes), zero-padded past the last
// column and the last row, so a tile reads one contiguous stream.

static inline float bf16_to_float(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

#define HG 8    // rows per group
#define HK 16   // columns per chunk

// Weight kinds of the 8-row interleaved matrices: the fp32 ones (FloatMatrix) share the layout and arithmetic.
#define W_F16 0
#define W_BF16 1
#define W_F32 2

/// Bytes per weight of a kind.
static inline int64_t wbytes(int wk) { return wk == W_F32 ? 4 : 2; }

/// The chunk of row r, chunk c (its 16 values, as raw weights of the matrix's kind).
static inline const uint8_t *wchunk(const void *w, int wk, int64_t chunks, int64_t r, int64_t c) {
    return (const uint8_t *)w + (((r / HG) * chunks + c) * HG + r % HG) * HK * wbytes(wk);
}

/// Weight j of a chunk as fp32.
static inline float wvalue(const uint8_t *wc, int wk, int64_t j) {
    if (wk == W_F32) {
        float f;
        memcpy(&f, wc + 4 * j, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, wc + 2 * j, 2);
    return wk == W_BF16 ? bf16_to_float(h) : half_to_float(h);
}

static void wgemm_scalar(const void *w, int wk, int64_t cols, const float *x, int64_t tokens, float *y, int64_t ldy,
                         int64_t r0, int64_t r1, const float *bias) {
    const int64_t chunks = (cols + HK - 1) / HK;
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t t = 0; t < tokens; t++) {
            const float *xt = x + t * cols;
            float acc = 0.0f;
            for (int64_t c = 0; c < chunks; c++) {
                const uint8_t *wc = wchunk(w, wk, chunks, r, c);
                for (int j = 0; j < HK && c * HK + j < cols; j++) acc = fmaf(xt[c * HK + j], wvalue(wc, wk, j), acc);
            }
            y[t * ldy + r] = bias ? acc + bias[r] : acc;
        }
    }
}

#ifdef PQ_X86
#define T512H __attribute__((target("avx512f,avx512bw,avx512vl,fma,f16c")))

/// 16 weights of a kind as floats.
T512H INL __m512 wload512(const uint8_t *p, int wk) {
    if (wk == W_F32) return _mm512_loadu_ps((const float *)p);
    const __m256i h = _mm256_loadu_si256((const __m256i *)p);
    if (wk == W_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/// NT tokens × NR rows (r .. r+NR-1, inside one group) starting at token t0: one 16-lane accumulator per pair.
T512H INL void wtile512(const void *w, int wk, int64_t cols, const float *x, int64_t t0, int64_t r, const int NT,
                        const int NR, float *y, int64_t ldy, const float *bias) {
    const int64_t chunks = (cols + HK - 1) / HK, step = HG * HK * wbytes(wk), row = HK * wbytes(wk);
    __m512 acc[4][8];
    for (int n = 0; n < NT; n++)
        for (int i = 0; i < NR; i++) acc[n][i] = _mm512_setzero_ps();
    const uint8_t *wp = wchunk(w, wk, chunks, r, 0);
    for (int64_t c = 0; c < chunks; c++, wp += step) {
        const int64_t k = c * HK;
        const __mmask16 m = cols - k >= HK ? (__mmask16)0xffff : (__mmask16)((1u << (cols - k)) - 1u);
        __m512 wv[8];
        for (int i = 0; i < NR; i++) wv[i] = wload512(wp + i * row, wk);
        for (int n = 0; n < NT; n++) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + (t0 + n) * cols + k);
            for (int i = 0; i < NR; i++) acc[n][i] = _mm512_fmadd_ps(xv, wv[i], acc[n][i]);
        }
    }
    for (int n = 0; n < NT; n++)
        for (int i = 0; i < NR; i++) {
            const float v = _mm512_reduce_add_ps(acc[n][i]);
            y[(t0 + n) * ldy + r + i] = bias ? v + bias[r + i] : v;
        }
}

/// The same products as wtile512 for NT tokens × NR rows, with the rows' weights already fp32 in `panel` (row i's
/// chunk c at panel + c·stride + 16i): a batch converts 16-bit weights once for all its token tiles.
T512H INL void ptile512(const float *panel, int64_t stride, int64_t cols, const float *x, int64_t t0, int64_t r,
                        const int NT, const int NR, float *y, int64_t ldy, const float *bias) {
    const int64_t chunks = (cols + HK - 1) / HK;
    __m512 acc[6][4];
    for (int n = 0; n < NT; n++)
        for (int i = 0; i < NR; i++) acc[n][i] = _mm512_setzero_ps();
    const float *wp = panel;
    for (int64_t c = 0; c < chunks; c++, wp += stride) {
        const int64_t k = c * HK;
        const __mmask16 m = cols - k >= HK ? (__mmask16)0xffff : (__mmask16)((1u << (cols - k)) - 1u);
        __m512 wv[4];
        for (int i = 0; i < NR; i++) wv[i] = _mm512_loadu_ps(wp + 16 * i);
        for (int n = 0; n < NT; n++) {
            const __m512 xv = _mm512_maskz_loadu_ps(m, x + (t0 + n) * cols + k);
            for (int i = 0; i < NR; i++) acc[n][i] = _mm512_fmadd_ps(xv, wv[i], acc[n][i]);
        }
    }
    for (int n = 0; n < NT; n++)
        for (int i = 0; i < NR; i++) {
            const float v = _mm512_reduce_add_ps(acc[n][i]);
            y[(t0 + n) * ldy + r + i] = bias ? v + bias[r + i] : v;
        }
}

static __thread float *wpanel;
static __thread int64_t wpanel_cap;

T512H __attribute__((noinline)) static void wgemm512(const void *w, int wk, int64_t cols, const float *x, int64_t tokens,
                                                      float *y, int64_t ldy, int64_t r0, int64_t r1, const float *bias) {
    int64_t r = r0;
    const int64_t chunks = (cols + HK - 1) / HK;
    if (tokens < 4) {
        // Decode: a whole group at a time streams the weights.
        for (; r + 8 <= r1 && r % 8 == 0; r += 8)
            for (int64_t t = 0; t < tokens; t++) wtile512(w, wk, cols, x, t, r, 1, 8, y, ldy, bias);
    } else {
        // Batches: 4 rows at a time, their weights as fp32 (fp32 matrices in place, 16-bit ones converted once into
        // a panel for all the token tiles), in tiles of 6 tokens (24 accumulators), then 4, then 1.
        if (wk != W_F32 && wpanel_cap < chunks * 64) {
            free(wpanel);
            wpanel = aligned_alloc(64, (size_t)(chunks * 64 * 4));
            wpanel_cap = chunks * 64;
        }
        for (; r + 4 <= r1 && r % 4 == 0; r += 4) {
            const float *panel;
            int64_t stride;
            if (wk == W_F32) {
                panel = (const float *)wchunk(w, wk, chunks, r, 0);
                stride = HG * HK;
            } else {
                for (int64_t c = 0; c < chunks; c++)
                    for (int i = 0; i < 4; i++)
                        _mm512_store_ps(wpanel + (4 * c + i) * HK, wload512(wchunk(w, wk, chunks, r + i, c), wk));
                panel = wpanel;
                stride = 4 * HK;
            }
            int64_t t = 0;
            for (; t + 6 <= tokens; t += 6) ptile512(panel, stride, cols, x, t, r, 6, 4, y, ldy, bias);
            for (; t + 4 <= tokens; t += 4) ptile512(panel, stride, cols, x, t, r, 4, 4, y, ldy, bias);
            for (; t < tokens; t++) ptile512(panel, stride, cols, x, t, r, 1, 4, y, ldy, bias);
        }
    }
    for (; r < r1; r++)
        for (int64_t t = 0; t < tokens; t++) wtile512(w, wk, cols, x, t, r, 1, 1, y, ldy, bias);
}

/// 8 weights of a kind as floats.
T256 INL __m256 wload256(const uint8_t *p, int wk) {
    if (wk == W_F32) return _mm256_loadu_ps((const float *)p);
    const __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (wk == W_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

T256 __attribute__((noinline)) static void wgemm256(const void *w, int wk, int64_t cols, const float *x, int64_t tokens,
                                                     float *y, int64_t ldy, int64_t r0, int64_t r1, const float *bias) {
    const int64_t chunks = (cols + HK - 1) / HK, full = cols / HK, half = 8 * wbytes(wk);
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t t = 0; t < tokens; t++) {
            const float *xt = x + t * cols;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            for (int64_t c = 0; c < full; c++) {
                const uint8_t *wc = wchunk(w, wk, chunks, r, c);
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(xt + c * HK), wload256(wc, wk), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(xt + c * HK + 8), wload256(wc + half, wk), a1);
            }
            float l[16];
            _mm256_storeu_ps(l, a0);
            _mm256_storeu_ps(l + 8, a1);
            float v = (((l[0] + l[8]) + (l[4] + l[12])) + ((l[2] + l[10]) + (l[6] + l[14])))
                    + (((l[1] + l[9]) + (l[5] + l[13])) + ((l[3] + l[11]) + (l[7] + l[15])));
            if (full < chunks) {
                const uint8_t *wc = wchunk(w, wk, chunks, r, full);
                for (int64_t k = full * HK; k < cols; k++) v = fmaf(xt[k], wvalue(wc, wk, k - full * HK), v);
            }
            y[t * ldy + r] = bias ? v + bias[r] : v;
        }
    }
}
#endif

/// Every kind's product, in token chunks of PAGODA_H_TOKEN_CHUNK.
static void wgemm(const void *w, int wk, int64_t cols, const float *x, int64_t tokens, float *y, int64_t ldy,
                  int64_t r0, int64_t r1, const float *bias) {
    for (int64_t t = 0; t < tokens; t += PAGODA_H_TOKEN_CHUNK) {
        const int64_t n = tokens - t < PAGODA_H_TOKEN_CHUNK ? tokens - t : PAGODA_H_TOKEN_CHUNK;
        const float *xc = x + t * cols;
        float *yc = y + t * ldy;
#ifdef PQ_X86
        const int isa = pagoda_q_isa();
        if (isa >= 2) { wgemm512(w, wk, cols, xc, n, yc, ldy, r0, r1, bias); continue; }
        if (isa == 1) { wgemm256(w, wk, cols, xc, n, yc, ldy, r0, r1, bias); continue; }
#endif
        wgemm_scalar(w, wk, cols, xc, n, yc, ldy, r0, r1, bias);
    }
}

void pagoda_hgemm(const uint16_t *w, int32_t is_bf16, int64_t rows, int64_t cols, const float *x, int64_t tokens,
                  float *y, int64_t ldy, int64_t r0, int64_t r1, const float *bias) {
    (void)rows;
    wgemm(w, is_bf16 ? W_BF16 : W_F16, cols, x, tokens, y, ldy, r0, r1, bias);
}

void pagoda_sgemm(const float *w, int64_t cols, const float *x, int64_t tokens, float *y, int64_t ldy, int64_t r0,
                  int64_t r1, const float *bias) {
    wgemm(w, W_F32, cols, x, tokens, y, ldy, r0, r1, bias);
}
