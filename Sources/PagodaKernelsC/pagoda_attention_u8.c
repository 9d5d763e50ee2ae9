#include "pagoda_kernels.h"
#include <math.h>
#include <string.h>

// Attention over the u8 KV cache (see pagoda_kernels.h for the layout). Key codes are multiplied by int16 queries
// and value codes by int16 weights in exact integer sums (AVX-512 VNNI vpdpwssd where present, plain C otherwise:
// the same integers either way); everything in floating point is written with clang's portable vector types, the
// same IEEE operations on every instruction set, so results never depend on the machine.
#pragma clang fp contract(off)

#if defined(__x86_64__)
#include <immintrin.h>
#define PA_X86 1
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#endif

typedef float v16f __attribute__((ext_vector_type(16)));
typedef int32_t v16i __attribute__((ext_vector_type(16)));
typedef uint8_t v16b __attribute__((ext_vector_type(16)));
typedef _Float16 v16h __attribute__((ext_vector_type(16)));

#define FMA(a, b, c) __builtin_elementwise_fma((a), (b), (c))

int pagoda_q_isa(void);

static inline v16f halves16(const uint8_t *p) {
    v16h h;
    memcpy(&h, p, 32);
    return __builtin_convertvector(h, v16f);
}

static inline void store16(float *p, v16f v) { memcpy(p, &v, 64); }

/// The 16 lanes' sum by halves (a fixed order).
static inline float sum16(v16f v) {
    const v16f a = v;
    float h8[8], h4[4], h2[2];
    for (int i = 0; i < 8; i++) h8[i] = a[i] + a[i + 8];
    for (int i = 0; i < 4; i++) h4[i] = h8[i] + h8[i + 4];
    for (int i = 0; i < 2; i++) h2[i] = h4[i] + h4[i + 2];
    return h2[0] + h2[1];
}

// ---------------------------------------------------------------------------------------------------------
// Queries.

void pagoda_attn_query_i16(const float *q, int64_t hd, int16_t *q16, float *qscale, float *qsum) {
    for (int64_t g = 0; g < hd / 16; g++) {
        const float *x = q + 16 * g;
        float amax = 0.0f, sum = 0.0f;
        for (int i = 0; i < 16; i++) {
            amax = fmaxf(amax, fabsf(x[i]));
            sum += x[i];
        }
        const float s = amax / 32767.0f, inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        for (int i = 0; i < 16; i++) {
            const float v = nearbyintf(x[i] * inv);
            q16[16 * g + i] = (int16_t)fminf(32767.0f, fmaxf(-32767.0f, v));
        }
        qscale[g] = s;
        qsum[g] = sum;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scores. Key codes of a block and head: [hd/2][bs][2] (dimensions 2p and 2p + 1 of a slot side by side).

/// The group's score epilogue, shared by every path: s = fma((float)isum·qscale, scale, s), then fma(qsum, min, s).
static inline v16f score_group(v16f s, v16i isum, float qs, float qsum, v16f sc, v16f mn) {
    s = FMA(__builtin_convertvector(isum, v16f) * (v16f)qs, sc, s);
    return FMA((v16f)qsum, mn, s);
}

#ifdef PA_X86
/// R rows' integer sums over group g for the 16 slots from j0: one vpdpwssd per row and pair of dimensions.
T512 static inline __attribute__((always_inline)) void scores_i16_512(const int16_t *q16, int64_t hd, const int R,
                                                                     const uint8_t *k, int64_t bs, int64_t g,
                                                                     v16i out[6]) {
    __m512i acc[6];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_si512();
    for (int64_t p = 8 * g; p < 8 * g + 8; p++) {
        const __m512i c = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(k + p * 2 * bs)));
        for (int r = 0; r < R; r++) {
            int32_t pair;
            memcpy(&pair, q16 + r * hd + 2 * p, 4);
            acc[r] = _mm512_dpwssd_epi32(acc[r], c, _mm512_set1_epi32(pair));
        }
    }
    for (int r = 0; r < R; r++) memcpy(&out[r], &acc[r], 64);
}

T512 __attribute__((noinline)) static void scores_512(const int16_t *q16, const float *qscale, const float *qsum,
                                                     int64_t rows, const uint8_t *run, int64_t bs, int64_t n, int64_t hd,
                                                     float *scores, int64_t ld) {
    const int64_t groups = hd / 16;
    const uint8_t *scale = run + hd * bs, *minimum = scale + 2 * groups * bs;
    for (int64_t j0 = 0; j0 < n; j0 += 16) {
        const uint8_t *k = run + 2 * j0;
        for (int64_t r = 0; r < rows; r += 6) {
            const int R = rows - r < 6 ? (int)(rows - r) : 6;
            v16f s[6] = {0, 0, 0, 0, 0, 0};
            for (int64_t g = 0; g < groups; g++) {
                v16i isum[6];
#define SCASE(N) case N: scores_i16_512(q16 + r * hd, hd, N, k, bs, g, isum); break;
                switch (R) { SCASE(1) SCASE(2) SCASE(3) SCASE(4) SCASE(5) default: SCASE(6) }
#undef SCASE
                const v16f sc = halves16(scale + 2 * (g * bs + j0)), mn = halves16(minimum + 2 * (g * bs + j0));
                for (int i = 0; i < R; i++)
                    s[i] = score_group(s[i], isum[i], qscale[(r + i) * groups + g], qsum[(r + i) * groups + g], sc, mn);
            }
            for (int i = 0; i < R; i++) store16(scores + (r + i) * ld + j0, s[i]);
        }
    }
}
#endif

void pagoda_attn_scores_u8(const int16_t *q16, const float *qscale, const float *qsum, int64_t rows, const uint8_t *run,
                           int64_t bs, int64_t n, int64_t hd, float *scores, int64_t ld) {
#ifdef PA_X86
    if (pagoda_q_isa() == 2) {
        scores_512(q16, qscale, qsum, rows, run, bs, n, hd, scores, ld);
        return;
    }
#endif
    const int64_t groups = hd / 16;
    const uint8_t *scale = run + hd * bs, *minimum = scale + 2 * groups * bs;
    for (int64_t j0 = 0; j0 < n; j0 += 16) {
        for (int64_t r = 0; r < rows; r++) {
            v16f s = 0;
            for (int64_t g = 0; g < groups; g++) {
                v16i isum = 0;
                for (int64_t d = 16 * g; d < 16 * g + 16; d++) {
                    const uint8_t *c = run + (d >> 1) * 2 * bs + 2 * j0 + (d & 1);
                    for (int i = 0; i < 16; i++) isum[i] += (int32_t)q16[r * hd + d] * (int32_t)c[2 * i];
                }
                const v16f sc = halves16(scale + 2 * (g * bs + j0)), mn = halves16(minimum + 2 * (g * bs + j0));
                s = score_group(s, isum, qscale[r * groups + g], qsum[r * groups + g], sc, mn);
            }
            store16(scores + r * ld + j0, s);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Values. Value codes of a block and head: [bs/2][hd][2] (slots 2k and 2k + 1 of a dimension side by side), then
// scale[bs] and min[bs].

/// Keys per window of the value pass: each row's weights (probability × the key's scale) are quantized to int16
/// per window, so a window's integer sums stay below 2^31 (256 · 32767 · 255).
#define VALUE_WINDOW 256

#ifdef PA_X86
/// acc[r][c] += Σ over the window's slot pairs of the pair's codes (columns 16c ..< 16c + 16 from c0) times the
/// rows' int16 weights, exactly.
T512 static inline __attribute__((always_inline)) void values_i16_512(v16i acc[PAGODA_ATTN_VALUE_ROWS][4], const int R,
                                                                     const int16_t *w, int64_t j0, int64_t n,
                                                                     int64_t start, const int32_t *table,
                                                                     const uint8_t *head0, int64_t bs, int64_t stride,
                                                                     int64_t hd, int64_t c0, const int C) {
    __m512i a[PAGODA_ATTN_VALUE_ROWS][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) memcpy(&a[r][c], &acc[r][c], 64);
    for (int64_t j = 0; j < n;) {
        const int64_t pos = start + j0 + j, slot = pos % bs;
        const int64_t m = bs - slot < n - j ? bs - slot : n - j;
        const uint8_t *codes = head0 + (int64_t)table[pos / bs] * stride + (slot >> 1) * 2 * hd + 2 * c0;
        for (int64_t e = j + m; j < e; j += 2) {
            __m512i v[4];
            for (int c = 0; c < C; c++) v[c] = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(codes + 32 * c)));
            for (int r = 0; r < R; r++) {
                int32_t pair;
                memcpy(&pair, w + r * VALUE_WINDOW + j, 4);
                const __m512i wp = _mm512_set1_epi32(pair);
                for (int c = 0; c < C; c++) a[r][c] = _mm512_dpwssd_epi32(a[r][c], v[c], wp);
            }
            codes += 2 * hd;
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) memcpy(&acc[r][c], &a[r][c], 64);
}
#endif

/// The same integers without VNNI.
static void values_i16_c(v16i acc[PAGODA_ATTN_VALUE_ROWS][4], const int R, const int16_t *w, int64_t j0, int64_t n,
                         int64_t start, const int32_t *table, const uint8_t *head0, int64_t bs, int64_t stride,
                         int64_t hd, int64_t c0, const int C) {
    for (int64_t j = 0; j < n; j++) {
        const int64_t pos = start + j0 + j, slot = pos % bs;
        const uint8_t *codes = head0 + (int64_t)table[pos / bs] * stride + (slot >> 1) * 2 * hd + 2 * c0 + (slot & 1);
        for (int r = 0; r < R; r++) {
            const int32_t wr = w[r * VALUE_WINDOW + j];
            for (int c = 0; c < C; c++)
                for (int i = 0; i < 16; i++) acc[r][c][i] += wr * (int32_t)codes[2 * (16 * c + i)];
        }
    }
}

static inline __attribute__((always_inline)) void values_rows(float *acc, const int R, const float *probs, int64_t ldp,
                                                              int64_t keys, int64_t start, const int32_t *table,
                                                              const uint8_t *head0, int64_t bs, int64_t stride,
                                                              int64_t hd, const int vnni) {
    v16f z[PAGODA_ATTN_VALUE_ROWS];
    float ws[PAGODA_ATTN_VALUE_ROWS];
    _Alignas(64) int16_t w[PAGODA_ATTN_VALUE_ROWS * VALUE_WINDOW];
    for (int r = 0; r < R; r++) z[r] = 0;
    const int64_t chunks = (hd + 63) / 64;
    for (int64_t w0 = 0; w0 < keys; w0 += VALUE_WINDOW) {
        const int64_t n = keys - w0 < VALUE_WINDOW ? keys - w0 : VALUE_WINDOW;
        const int64_t padded = (n + 15) / 16 * 16;
        // Weights: probability × scale, 16 keys at a time (16 keys lie in one block: partitions and blocks start at
        // multiples of 16), then per row as int16 steps of its window's largest weight; the probability × minimum
        // goes into the row's lane sums z.
        float wf[PAGODA_ATTN_VALUE_ROWS * VALUE_WINDOW];
        v16f wmax[PAGODA_ATTN_VALUE_ROWS];
        for (int r = 0; r < R; r++) wmax[r] = 0;
        for (int64_t j = 0; j < n; j += 16) {
            const int64_t pos = start + w0 + j, slot = pos % bs;
            const uint8_t *base = head0 + (int64_t)table[pos / bs] * stride;
            const int64_t live = n - j < 16 ? n - j : 16;
            v16f sc = halves16(base + bs * hd + 2 * slot), mn = halves16(base + bs * hd + 2 * bs + 2 * slot);
            if (live < 16) {
                for (int64_t i = live; i < 16; i++) sc[i] = mn[i] = 0;  // slots not yet written
            }
            for (int r = 0; r < R; r++) {
                v16f p;
                memcpy(&p, probs + r * ldp + w0 + j, 64);
                if (live < 16) {
                    for (int64_t i = live; i < 16; i++) p[i] = 0;
                }
                const v16f x = p * sc;
                store16(wf + r * VALUE_WINDOW + j, x);
                wmax[r] = __builtin_elementwise_max(wmax[r], x);
                z[r] = FMA(p, mn, z[r]);
            }
        }
        for (int r = 0; r < R; r++) {
            // Weights are ≥ 0. A window whose largest weight is below 2^-100 adds nothing (its share is below any
            // fp32 output's resolution), which also keeps 32767/max finite.
            const float mx = __builtin_reduce_max(wmax[r]);
            const int none = !(mx >= 0x1p-100f);
            ws[r] = none ? 0.0f : mx / 32767.0f;
            const v16f inv = (v16f)(none ? 0.0f : 32767.0f / mx);
            for (int64_t j = 0; j < padded; j += 16) {
                v16f x;
                memcpy(&x, wf + r * VALUE_WINDOW + j, 64);
                x = __builtin_elementwise_min(__builtin_elementwise_roundeven(x * inv), (v16f)32767.0f);
                const v16i xi = __builtin_convertvector(x, v16i);
                for (int i = 0; i < 16; i++) w[r * VALUE_WINDOW + j + i] = (int16_t)xi[i];
            }
        }
        for (int64_t ch = 0; ch < chunks; ch++) {
            const int64_t c0 = 64 * ch;
            const int C = hd - c0 >= 64 ? 4 : (int)((hd - c0) / 16);
            v16i ia[PAGODA_ATTN_VALUE_ROWS][4];
            for (int r = 0; r < R; r++)
                for (int c = 0; c < C; c++) ia[r][c] = 0;
#ifdef PA_X86
            if (vnni) {
                if (C == 4) values_i16_512(ia, R, w, w0, n, start, table, head0, bs, stride, hd, c0, 4);
                else if (C == 3) values_i16_512(ia, R, w, w0, n, start, table, head0, bs, stride, hd, c0, 3);
                else if (C == 2) values_i16_512(ia, R, w, w0, n, start, table, head0, bs, stride, hd, c0, 2);
                else values_i16_512(ia, R, w, w0, n, start, table, head0, bs, stride, hd, c0, 1);
            } else
#endif
            {
                (void)vnni;
                values_i16_c(ia, R, w, w0, n, start, table, head0, bs, stride, hd, c0, C);
            }
            const int last = w0 + VALUE_WINDOW >= keys;
            for (int r = 0; r < R; r++) {
                // The minima's sum by halves (a fixed order), added once at the end.
                const v16f zr = last ? (v16f)sum16(z[r]) : (v16f)0;
                for (int c = 0; c < C; c++) {
                    v16f a = 0;
                    if (w0 > 0) memcpy(&a, acc + r * hd + c0 + 16 * c, 64);
                    a = FMA(__builtin_convertvector(ia[r][c], v16f), (v16f)ws[r], a);
                    store16(acc + r * hd + c0 + 16 * c, last ? a + zr : a);
                }
            }
        }
    }
}

void pagoda_attn_values_u8(float *acc, int64_t rows, const float *probs, int64_t ldp, int64_t keys, int64_t start,
                           const int32_t *table, const uint8_t *head0, int64_t bs, int64_t stride, int64_t hd) {
    const int vnni = pagoda_q_isa() == 2;
    switch (rows) {
        case 1: values_rows(acc, 1, probs, ldp, keys, start, table, head0, bs, stride, hd, vnni); break;
        case 2: values_rows(acc, 2, probs, ldp, keys, start, table, head0, bs, stride, hd, vnni); break;
        case 3: values_rows(acc, 3, probs, ldp, keys, start, table, head0, bs, stride, hd, vnni); break;
        case 4: values_rows(acc, 4, probs, ldp, keys, start, table, head0, bs, stride, hd, vnni); break;
        case 5: values_rows(acc, 5, probs, ldp, keys, start, table, head0, bs, stride, hd, vnni); break;
        default: values_rows(acc, 6, probs, ldp, keys, start, table, head0, bs, stride, hd, vnni); break;
    }
}

// ---------------------------------------------------------------------------------------------------------
// Store.

/// x[0 ..< 16·W] (W vectors) as codes, code i at codes[(i >> 1)·pair + (i & 1)·step], with the fp16 scale
/// (max − min)/255 and minimum, each code the nearest of 0…255 to (x − min)/scale.
static inline __attribute__((always_inline)) void quantize_u8(const float *x, int64_t W, uint8_t *codes,
                                                              int64_t pair, int64_t step, uint8_t *scale,
                                                              uint8_t *minimum) {
    v16f lo, hi;
    memcpy(&lo, x, 64);
    hi = lo;
    for (int64_t w = 1; w < W; w++) {
        v16f v;
        memcpy(&v, x + 16 * w, 64);
        lo = __builtin_elementwise_min(lo, v);
        hi = __builtin_elementwise_max(hi, v);
    }
    const float l = __builtin_reduce_min(lo), h = __builtin_reduce_max(hi);
    const _Float16 sh = (_Float16)((h - l) / 255.0f), zh = (_Float16)l;
    memcpy(scale, &sh, 2);
    memcpy(minimum, &zh, 2);
    const float s = (float)sh, z = (float)zh;
    const float inv = s > 0 && s <= 65504.0f ? 1.0f / s : 0.0f;
    for (int64_t w = 0; w < W; w++) {
        v16f v;
        memcpy(&v, x + 16 * w, 64);
        v16f u = __builtin_elementwise_roundeven((v - (v16f)z) * (v16f)inv);
        u = __builtin_elementwise_min(__builtin_elementwise_max(u, (v16f)0.0f), (v16f)255.0f);
        const v16b c = __builtin_convertvector(u, v16b);
        for (int i = 0; i < 16; i++) {
            const int64_t e = 16 * w + i;
            codes[(e >> 1) * pair + (e & 1) * step] = c[i];
        }
    }
}

void pagoda_kv_store_u8(uint8_t *keys, uint8_t *values, int64_t slot, int64_t bs, int64_t hd, int64_t kv_heads,
                        const float *k, const float *v) {
    const int64_t groups = hd / 16;
    const int64_t key_run = bs * hd + 4 * groups * bs, value_run = bs * hd + 4 * bs;
    for (int64_t h = 0; h < kv_heads; h++) {
        uint8_t *kr = keys + h * key_run, *vr = values + h * value_run;
        // Keys: dimension d of the slot at (d >> 1)·2bs + 2·slot + (d & 1).
        for (int64_t g = 0; g < groups; g++)
            quantize_u8(k + h * hd + 16 * g, 1, kr + 8 * g * 2 * bs + 2 * slot, 2 * bs, 1,
                        kr + bs * hd + 2 * (g * bs + slot), kr + bs * hd + 2 * groups * bs + 2 * (g * bs + slot));
        // Values: dimension d of the slot at (slot >> 1)·2hd + 2d + (slot & 1).
        quantize_u8(v + h * hd, groups, vr + (slot >> 1) * 2 * hd + (slot & 1), 4, 2, vr + bs * hd + 2 * slot,
                    vr + bs * hd + 2 * bs + 2 * slot);
    }
}
