#include "pagoda_kernels.h"
#include <math.h>
#include <string.h>

// Float operations must happen exactly as written (no contraction of a·b + c): every path must agree bitwise.
#pragma clang fp contract(off)

#if defined(__x86_64__)
#include <immintrin.h>
#define PQ_X86 1
#endif

// ---------------------------------------------------------------------------------------------------------
// Activation quantization: x ≈ dx·q, q = rint(x·127/amax) ∈ [-127, 127].

void pagoda_quantize_q8(const float *x, int64_t tokens, int64_t cols, int8_t *q, float *dx, int32_t *sx, float *dxs) {
    const int64_t nb = cols / 32;
    for (int64_t t = 0; t < tokens; t++) {
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = x + t * cols + b * 32;
            int8_t *qb = q + t * cols + b * 32;
            float amax = 0.0f;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
            const float d = amax / 127.0f;
            const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            int32_t s = 0;
            for (int j = 0; j < 32; j++) {
                float v = nearbyintf(xb[j] * id);
                v = fminf(127.0f, fmaxf(-127.0f, v));
                qb[j] = (int8_t)v;
                s += (int32_t)qb[j];
            }
            dx[t * nb + b] = d;
            sx[t * nb + b] = s;
            dxs[t * nb + b] = d * (float)s;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scalar reference path.

static void qgemm_scalar(const pagoda_qmat *m, const int8_t *q, const float *dx, const int32_t *sx, const float *dxs,
                         int64_t tokens, float *y, int64_t ldy, int64_t g0, int64_t g1, const float *bias) {
    const int64_t nb = m->blocks, cols = m->cols;
    const int64_t wofs = m->has_min ? 128 : 64;
    for (int64_t g = g0; g < g1; g++) {
        const uint8_t *gbase = m->data + g * nb * m->block_bytes;
        for (int64_t t = 0; t < tokens; t++) {
            float acc[PAGODA_Q_ROWS];
            for (int i = 0; i < PAGODA_Q_ROWS; i++) acc[i] = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = gbase + b * m->block_bytes;
                const float *wd = (const float *)blk;
                const float *wm = (const float *)(blk + 64);
                const uint8_t *w = blk + wofs;
                const int8_t *xb = q + t * cols + b * 32;
                const float xd = dx[t * nb + b];
                for (int i = 0; i < PAGODA_Q_ROWS; i++) {
                    int32_t isum = 0;
                    for (int k = 0; k < 8; k++) {
                        for (int j = 0; j < 4; j++) {
                            int u;
                            if (m->nibble) u = k < 4 ? (w[k * 64 + i * 4 + j] & 15) : (w[(k - 4) * 64 + i * 4 + j] >> 4);
                            else u = w[k * 64 + i * 4 + j];
                            isum += u * (int32_t)xb[4 * k + j];
                        }
                    }
                    isum -= m->offset * sx[t * nb + b];
                    const float dd = wd[i] * xd;
                    acc[i] = fmaf((float)isum, dd, acc[i]);
                    if (m->has_min) acc[i] = fmaf(wm[i], dxs[t * nb + b], acc[i]);
                }
            }
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
// activations per lane. Tiles of up to 4 tokens share each block's weights in registers.

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,fma")))
#define INL __attribute__((always_inline)) static inline

T512 INL __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

T512 INL void tile512(const pagoda_qmat *m, const uint8_t *gbase, const int8_t *q, const float *dx, const int32_t *sx,
                      const float *dxs, int64_t t0, const int NT, const int NIB, const int MIN, float *y, int64_t ldy,
                      int64_t g, const float *bias) {
    const int64_t nb = m->blocks, cols = m->cols, bb = m->block_bytes;
    const int64_t wofs = MIN ? 128 : 64;
    const __m512i low = _mm512_set1_epi8(15);
    const int32_t off = m->offset;
    __m512 acc[4];
    for (int n = 0; n < NT; n++) acc[n] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = gbase + b * bb;
        const __m512 wd = _mm512_loadu_ps((const float *)blk);
        __m512 wm = _mm512_setzero_ps();
        if (MIN) wm = _mm512_loadu_ps((const float *)(blk + 64));
        const uint8_t *wp = blk + wofs;
        __m512i w[8];
        if (NIB) {
            for (int k = 0; k < 4; k++) {
                const __m512i p = _mm512_loadu_si512((const void *)(wp + 64 * k));
                w[k] = _mm512_and_si512(p, low);
                w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(p, 4), low);
            }
        } else {
            for (int k = 0; k < 8; k++) w[k] = _mm512_loadu_si512((const void *)(wp + 64 * k));
        }
        for (int n = 0; n < NT; n++) {
            const int64_t t = t0 + n;
            const int8_t *xb = q + t * cols + b * 32;
            __m512i i0 = _mm512_setzero_si512(), i1 = _mm512_setzero_si512();
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
    const int64_t r0 = g * PAGODA_Q_ROWS;
    const int64_t nr = m->rows - r0 < PAGODA_Q_ROWS ? m->rows - r0 : PAGODA_Q_ROWS;
    const __mmask16 mask = (__mmask16)((1u << nr) - 1u);
    __m512 bv = _mm512_setzero_ps();
    if (bias) bv = _mm512_maskz_loadu_ps(mask, bias + r0);
    for (int n = 0; n < NT; n++) {
        __m512 v = acc[n];
        if (bias) v = _mm512_add_ps(v, bv);
        _mm512_mask_storeu_ps(y + (t0 + n) * ldy + r0, mask, v);
    }
}

#define DEF512(NAME, NIB, MIN) \
    T512 __attribute__((noinline)) static void NAME(const pagoda_qmat *m, const int8_t *q, const float *dx, \
        const int32_t *sx, const float *dxs, int64_t tokens, float *y, int64_t ldy, int64_t g0, int64_t g1, \
        const float *bias) { \
        for (int64_t g = g0; g < g1; g++) { \
            const uint8_t *gbase = m->data + g * m->blocks * m->block_bytes; \
            int64_t t = 0; \
            for (; t + 4 <= tokens; t += 4) tile512(m, gbase, q, dx, sx, dxs, t, 4, NIB, MIN, y, ldy, g, bias); \
            for (; t < tokens; t++) tile512(m, gbase, q, dx, sx, dxs, t, 1, NIB, MIN, y, ldy, g, bias); \
        } \
    }
DEF512(qgemm512_b, 0, 0)
DEF512(qgemm512_bm, 0, 1)
DEF512(qgemm512_n, 1, 0)
DEF512(qgemm512_nm, 1, 1)

// ---------------------------------------------------------------------------------------------------------
// AVX2 (no VNNI): vpmaddubsw + vpmaddwd per 8-row half. Codes above 31 (Q8_0's offset 128) would saturate
// vpmaddubsw, so those use the sign trick on the signed code (u ^ 0x80) and skip the offset correction.

#define T256 __attribute__((target("avx2,fma")))

T256 INL __m256i dot8x4(__m256i w, __m256i x, __m256i ones, int wide) {
    __m256i p;
    if (wide) {
        const __m256i ws = _mm256_xor_si256(w, _mm256_set1_epi8((char)0x80));
        p = _mm256_maddubs_epi16(_mm256_sign_epi8(ws, ws), _mm256_sign_epi8(x, ws));
    } else {
        p = _mm256_maddubs_epi16(w, x);
    }
    return _mm256_madd_epi16(p, ones);
}

T256 INL void tile256(const pagoda_qmat *m, const uint8_t *gbase, const int8_t *q, const float *dx, const int32_t *sx,
                      const float *dxs, int64_t t, const int NIB, const int MIN, const int WIDE, float *y, int64_t ldy,
                      int64_t g, const float *bias) {
    const int64_t nb = m->blocks, cols = m->cols, bb = m->block_bytes;
    const int64_t wofs = MIN ? 128 : 64;
    const __m256i low = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    const int32_t off = WIDE ? 0 : m->offset;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk = gbase + b * bb;
        const uint8_t *wp = blk + wofs;
        const int8_t *xb = q + t * cols + b * 32;
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (int k = 0; k < 8; k++) {
            __m256i wlo, whi;
            if (NIB) {
                const int kk = k & 3;
                wlo = _mm256_loadu_si256((const __m256i *)(wp + 64 * kk));
                whi = _mm256_loadu_si256((const __m256i *)(wp + 64 * kk + 32));
                if (k >= 4) { wlo = _mm256_srli_epi16(wlo, 4); whi = _mm256_srli_epi16(whi, 4); }
                wlo = _mm256_and_si256(wlo, low);
                whi = _mm256_and_si256(whi, low);
            } else {
                wlo = _mm256_loadu_si256((const __m256i *)(wp + 64 * k));
                whi = _mm256_loadu_si256((const __m256i *)(wp + 64 * k + 32));
            }
            int32_t xv;
            memcpy(&xv, xb + 4 * k, 4);
            const __m256i xbc = _mm256_set1_epi32(xv);
            s0 = _mm256_add_epi32(s0, dot8x4(wlo, xbc, ones, WIDE));
            s1 = _mm256_add_epi32(s1, dot8x4(whi, xbc, ones, WIDE));
        }
        if (off) {
            const __m256i o = _mm256_set1_epi32(off * sx[t * nb + b]);
            s0 = _mm256_sub_epi32(s0, o);
            s1 = _mm256_sub_epi32(s1, o);
        }
        const __m256 xd = _mm256_set1_ps(dx[t * nb + b]);
        const __m256 dd0 = _mm256_mul_ps(_mm256_loadu_ps((const float *)blk), xd);
        const __m256 dd1 = _mm256_mul_ps(_mm256_loadu_ps((const float *)blk + 8), xd);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s0), dd0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s1), dd1, acc1);
        if (MIN) {
            const __m256 xs = _mm256_set1_ps(dxs[t * nb + b]);
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(blk + 64)), xs, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(blk + 64) + 8), xs, acc1);
        }
    }
    float out[16];
    _mm256_storeu_ps(out, acc0);
    _mm256_storeu_ps(out + 8, acc1);
    for (int i = 0; i < PAGODA_Q_ROWS; i++) {
        const int64_t r = g * PAGODA_Q_ROWS + i;
        if (r < m->rows) y[t * ldy + r] = bias ? out[i] + bias[r] : out[i];
    }
}

#define DEF256(NAME, NIB, MIN, WIDE) \
    T256 __attribute__((noinline)) static void NAME(const pagoda_qmat *m, const int8_t *q, const float *dx, \
        const int32_t *sx, const float *dxs, int64_t tokens, float *y, int64_t ldy, int64_t g0, int64_t g1, \
        const float *bias) { \
        for (int64_t g = g0; g < g1; g++) { \
            const uint8_t *gbase = m->data + g * m->blocks * m->block_bytes; \
            for (int64_t t = 0; t < tokens; t++) tile256(m, gbase, q, dx, sx, dxs, t, NIB, MIN, WIDE, y, ldy, g, bias); \
        } \
    }
DEF256(qgemm256_b, 0, 0, 0)
DEF256(qgemm256_bw, 0, 0, 1)
DEF256(qgemm256_bm, 0, 1, 0)
DEF256(qgemm256_n, 1, 0, 0)
DEF256(qgemm256_nm, 1, 1, 0)
#endif

// ---------------------------------------------------------------------------------------------------------
// Dispatch.

static int detected_isa(void) {
#ifdef PQ_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni")) return 2;
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

void pagoda_qgemm(const pagoda_qmat *m, const int8_t *q, const float *dx, const int32_t *sx, const float *dxs,
                  int64_t tokens, float *y, int64_t ldy, int64_t g0, int64_t g1, const float *bias) {
    const int isa = pagoda_q_isa();
#ifdef PQ_X86
    if (isa == 2) {
        if (m->nibble) (m->has_min ? qgemm512_nm : qgemm512_n)(m, q, dx, sx, dxs, tokens, y, ldy, g0, g1, bias);
        else (m->has_min ? qgemm512_bm : qgemm512_b)(m, q, dx, sx, dxs, tokens, y, ldy, g0, g1, bias);
        return;
    }
    if (isa == 1) {
        if (m->nibble) (m->has_min ? qgemm256_nm : qgemm256_n)(m, q, dx, sx, dxs, tokens, y, ldy, g0, g1, bias);
        else if (m->has_min) qgemm256_bm(m, q, dx, sx, dxs, tokens, y, ldy, g0, g1, bias);
        else if (m->offset == 128) qgemm256_bw(m, q, dx, sx, dxs, tokens, y, ldy, g0, g1, bias);
        else qgemm256_b(m, q, dx, sx, dxs, tokens, y, ldy, g0, g1, bias);
        return;
    }
#endif
    (void)isa;
    qgemm_scalar(m, q, dx, sx, dxs, tokens, y, ldy, g0, g1, bias);
}
