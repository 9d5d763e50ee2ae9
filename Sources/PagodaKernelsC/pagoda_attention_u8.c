#include "pagoda_kernels.h"
#include <string.h>

// Attention over the u8 KV cache (see pagoda_kernels.h for the layout). Written with clang's portable vector
// types: each lane is the same IEEE operation (exact conversions, fused multiply-adds, plain products) on every
// instruction set, so results never depend on the machine's vector width.
#pragma clang fp contract(off)

typedef float v16f __attribute__((ext_vector_type(16)));
typedef uint8_t v16b __attribute__((ext_vector_type(16)));
typedef _Float16 v16h __attribute__((ext_vector_type(16)));

#define FMA(a, b, c) __builtin_elementwise_fma((a), (b), (c))

static inline v16f codes16(const uint8_t *p) {
    v16b u;
    memcpy(&u, p, 16);
    return __builtin_convertvector(u, v16f);
}

static inline v16f halves16(const uint8_t *p) {
    v16h h;
    memcpy(&h, p, 32);
    return __builtin_convertvector(h, v16f);
}

static inline float half1(const uint8_t *p) {
    _Float16 h;
    memcpy(&h, p, 2);
    return (float)h;
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

void pagoda_attn_scores_u8(const float *q, const float *qsum, int64_t rows, const uint8_t *run, int64_t bs, int64_t n,
                           int64_t hd, float *scores, int64_t ld) {
    const int64_t groups = hd / 16;
    const uint8_t *scale = run + hd * bs, *minimum = scale + 2 * groups * bs;
    for (int64_t j0 = 0; j0 < n; j0 += 16) {
        const uint8_t *k = run + j0;
        int64_t r = 0;
        // Six rows at a time (prompt tiles), then three (a group of query heads sharing the KV head): each key
        // vector is converted once for all of them. Every row's chains are the same in each loop.
        for (; r + 6 <= rows; r += 6) {
            v16f s[6] = {0, 0, 0, 0, 0, 0};
            for (int64_t g = 0; g < groups; g++) {
                v16f a[6] = {0, 0, 0, 0, 0, 0}, b[6] = {0, 0, 0, 0, 0, 0};
                for (int64_t d = g * 16; d < g * 16 + 16; d += 2) {
                    const v16f ke = codes16(k + d * bs), ko = codes16(k + (d + 1) * bs);
                    for (int i = 0; i < 6; i++) {
                        a[i] = FMA((v16f)q[(r + i) * hd + d], ke, a[i]);
                        b[i] = FMA((v16f)q[(r + i) * hd + d + 1], ko, b[i]);
                    }
                }
                const v16f sc = halves16(scale + 2 * (g * bs + j0)), mn = halves16(minimum + 2 * (g * bs + j0));
                for (int i = 0; i < 6; i++) {
                    s[i] = FMA(a[i] + b[i], sc, s[i]);
                    s[i] = FMA((v16f)qsum[(r + i) * groups + g], mn, s[i]);
                }
            }
            for (int i = 0; i < 6; i++) store16(scores + (r + i) * ld + j0, s[i]);
        }
        for (; r + 3 <= rows; r += 3) {
            const float *q0 = q + r * hd, *q1 = q0 + hd, *q2 = q1 + hd;
            v16f s0 = 0, s1 = 0, s2 = 0;
            for (int64_t g = 0; g < groups; g++) {
                v16f a0 = 0, b0 = 0, a1 = 0, b1 = 0, a2 = 0, b2 = 0;
                for (int64_t d = g * 16; d < g * 16 + 16; d += 2) {
                    const v16f ke = codes16(k + d * bs), ko = codes16(k + (d + 1) * bs);
                    a0 = FMA((v16f)q0[d], ke, a0); b0 = FMA((v16f)q0[d + 1], ko, b0);
                    a1 = FMA((v16f)q1[d], ke, a1); b1 = FMA((v16f)q1[d + 1], ko, b1);
                    a2 = FMA((v16f)q2[d], ke, a2); b2 = FMA((v16f)q2[d + 1], ko, b2);
                }
                const v16f sc = halves16(scale + 2 * (g * bs + j0)), mn = halves16(minimum + 2 * (g * bs + j0));
                s0 = FMA(a0 + b0, sc, s0); s0 = FMA((v16f)qsum[r * groups + g], mn, s0);
                s1 = FMA(a1 + b1, sc, s1); s1 = FMA((v16f)qsum[(r + 1) * groups + g], mn, s1);
                s2 = FMA(a2 + b2, sc, s2); s2 = FMA((v16f)qsum[(r + 2) * groups + g], mn, s2);
            }
            store16(scores + r * ld + j0, s0);
            store16(scores + (r + 1) * ld + j0, s1);
            store16(scores + (r + 2) * ld + j0, s2);
        }
        for (; r < rows; r++) {
            const float *q0 = q + r * hd;
            v16f s0 = 0;
            for (int64_t g = 0; g < groups; g++) {
                v16f a0 = 0, b0 = 0;
                for (int64_t d = g * 16; d < g * 16 + 16; d += 2) {
                    a0 = FMA((v16f)q0[d], codes16(k + d * bs), a0);
                    b0 = FMA((v16f)q0[d + 1], codes16(k + (d + 1) * bs), b0);
                }
                const v16f sc = halves16(scale + 2 * (g * bs + j0)), mn = halves16(minimum + 2 * (g * bs + j0));
                s0 = FMA(a0 + b0, sc, s0); s0 = FMA((v16f)qsum[r * groups + g], mn, s0);
            }
            store16(scores + r * ld + j0, s0);
        }
    }
}

/// Keys per window of the value pass: each row's probabilities times the keys' scales are formed for a window,
/// then the window's codes are weighted by them.
#define VALUE_WINDOW 256

/// R rows (1 to PAGODA_ATTN_VALUE_ROWS) of acc over 16·C columns from column c0, the keys [j0, j0 + n) (n ≤
/// VALUE_WINDOW): for each key in order, w[r][key] (the row's probability times the key's scale) weights its codes,
/// one fused multiply-add per element; each value row is converted once for all R rows.
static inline __attribute__((always_inline)) void values_window(v16f a[PAGODA_ATTN_VALUE_ROWS][4], const int R,
                                                                const float *w, int64_t j0, int64_t n, int64_t start,
                                                                const int32_t *table, const uint8_t *head0, int64_t bs,
                                                                int64_t stride, int64_t hd, int64_t c0, const int C) {
    int64_t j = 0;
    while (j < n) {
        const int64_t pos = start + j0 + j, slot = pos % bs;
        const int64_t m = bs - slot < n - j ? bs - slot : n - j;
        const uint8_t *codes = head0 + (int64_t)table[pos / bs] * stride + slot * hd + c0;
        for (int64_t e = j + m; j < e; j++) {
            v16f v[4];
            for (int c = 0; c < C; c++) v[c] = codes16(codes + 16 * c);
            for (int r = 0; r < R; r++) {
                const v16f wr = (v16f)w[r * VALUE_WINDOW + j];
                for (int c = 0; c < C; c++) a[r][c] = FMA(wr, v[c], a[r][c]);
            }
            codes += hd;
        }
    }
}

static inline __attribute__((always_inline)) void values_rows(float *acc, const int R, const float *probs, int64_t ldp,
                                                              int64_t keys, int64_t start, const int32_t *table,
                                                              const uint8_t *head0, int64_t bs, int64_t stride,
                                                              int64_t hd) {
    v16f a[PAGODA_ATTN_VALUE_ROWS][4], z[PAGODA_ATTN_VALUE_ROWS];
    float w[PAGODA_ATTN_VALUE_ROWS * VALUE_WINDOW];
    for (int r = 0; r < R; r++) z[r] = 0;
    const int64_t chunks = (hd + 63) / 64;
    // Columns beyond the first 64 (heads wider than 64) run as further passes over the same keys; their sums are
    // kept in acc between windows (an exact fp32 round trip).
    for (int64_t w0 = 0; w0 < keys; w0 += VALUE_WINDOW) {
        const int64_t n = keys - w0 < VALUE_WINDOW ? keys - w0 : VALUE_WINDOW;
        // w = probability × scale, 16 keys at a time (a chunk of 16 keys lies in one block: partitions and
        // blocks start at multiples of 16); the probability × minimum goes into the row's lane sums z.
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
                store16(w + r * VALUE_WINDOW + j, p * sc);
                z[r] = FMA(p, mn, z[r]);
            }
        }
        for (int64_t ch = 0; ch < chunks; ch++) {
            const int64_t c0 = 64 * ch;
            const int C = hd - c0 >= 64 ? 4 : (int)((hd - c0) / 16);
            for (int r = 0; r < R; r++)
                for (int c = 0; c < C; c++) {
                    if (w0 == 0) a[r][c] = 0;
                    else memcpy(&a[r][c], acc + r * hd + c0 + 16 * c, 64);
                }
            if (C == 4) values_window(a, R, w, w0, n, start, table, head0, bs, stride, hd, c0, 4);
            else if (C == 3) values_window(a, R, w, w0, n, start, table, head0, bs, stride, hd, c0, 3);
            else if (C == 2) values_window(a, R, w, w0, n, start, table, head0, bs, stride, hd, c0, 2);
            else values_window(a, R, w, w0, n, start, table, head0, bs, stride, hd, c0, 1);
            const int last = w0 + VALUE_WINDOW >= keys;
            for (int r = 0; r < R; r++) {
                // The minima's sum by halves (a fixed order), added once at the end.
                const v16f zr = last ? (v16f)sum16(z[r]) : (v16f)0;
                for (int c = 0; c < C; c++) store16(acc + r * hd + c0 + 16 * c, last ? a[r][c] + zr : a[r][c]);
            }
        }
    }
}

void pagoda_attn_values_u8(float *acc, int64_t rows, const float *probs, int64_t ldp, int64_t keys, int64_t start,
                           const int32_t *table, const uint8_t *head0, int64_t bs, int64_t stride, int64_t hd) {
    switch (rows) {
        case 1: values_rows(acc, 1, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
        case 2: values_rows(acc, 2, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
        case 3: values_rows(acc, 3, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
        case 4: values_rows(acc, 4, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
        case 5: values_rows(acc, 5, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
        default: values_rows(acc, 6, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
    }
}

/// x[0 ..< 16·W] (W vectors) as codes (code i at codes + i·stride) with the fp16 scale (max − min)/255 and
/// minimum, each code the nearest of 0…255 to (x − min)/scale.
static inline __attribute__((always_inline)) void quantize_u8(const float *x, int64_t W, uint8_t *codes,
                                                              int64_t stride, uint8_t *scale, uint8_t *minimum) {
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
        if (stride == 1) {
            memcpy(codes + 16 * w, &c, 16);
        } else {
            for (int i = 0; i < 16; i++) codes[(16 * w + i) * stride] = c[i];
        }
    }
}

void pagoda_kv_store_u8(uint8_t *keys, uint8_t *values, int64_t slot, int64_t bs, int64_t hd, int64_t kv_heads,
                        const float *k, const float *v) {
    const int64_t groups = hd / 16;
    const int64_t key_run = bs * hd + 4 * groups * bs, value_run = bs * hd + 4 * bs;
    for (int64_t h = 0; h < kv_heads; h++) {
        uint8_t *kr = keys + h * key_run, *vr = values + h * value_run;
        for (int64_t g = 0; g < groups; g++)
            quantize_u8(k + h * hd + 16 * g, 1, kr + 16 * g * bs + slot, bs, kr + bs * hd + 2 * (g * bs + slot),
                        kr + bs * hd + 2 * groups * bs + 2 * (g * bs + slot));
        quantize_u8(v + h * hd, groups, vr + slot * hd, 1, vr + bs * hd + 2 * slot, vr + bs * hd + 2 * bs + 2 * slot);
    }
}
