#include "pagoda_kernels.h"
#include <string.h>

// Attention over the u8 KV cache (see pagoda_kernels.h for the layout). Key codes are multiplied by int16 queries
// and value codes by int16 weights in exact integer sums (AVX-512 VNNI vpdpwssd or AVX2 vpmaddwd where present,
// plain C otherwise: the same integers either way); everything in floating point is written with clang's portable
// vector types, the same IEEE operations on every instruction set, so results never depend on the machine.
#pragma clang fp contract(off)

#if defined(__x86_64__)
#include <immintrin.h>
#define PA_X86 1
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define T256 __attribute__((target("avx2,fma,f16c")))
#endif

typedef float v16f __attribute__((ext_vector_type(16)));
typedef int32_t v16i __attribute__((ext_vector_type(16)));
typedef uint8_t v16b __attribute__((ext_vector_type(16)));
typedef int16_t v16s __attribute__((ext_vector_type(16)));
typedef uint32_t v16u __attribute__((ext_vector_type(16)));
typedef _Float16 v16h __attribute__((ext_vector_type(16)));

#define FMA(a, b, c) __builtin_elementwise_fma((a), (b), (c))

int pagoda_q_isa(void);

// The helpers that take or give 16-lane vectors are macros: they also run inside the AVX-512 functions, and a call
// passing such a vector between code built with and without AVX-512 would change the calling convention (clang
// refuses it on a host without AVX-512).

/// 16 fp16 values at p as floats.
#define halves16(p) ({ v16h h_; memcpy(&h_, (p), 32); __builtin_convertvector(h_, v16f); })

/// Stores 16 floats at p.
#define store16(p, v) do { const v16f v_ = (v); memcpy((p), &v_, 64); } while (0)

/// The 16 lanes' sum by halves (a fixed order).
#define sum16(v) ({                                                     \
    const v16f a_ = (v);                                                \
    float h8_[8], h4_[4], h2_[2];                                       \
    for (int i_ = 0; i_ < 8; i_++) h8_[i_] = a_[i_] + a_[i_ + 8];       \
    for (int i_ = 0; i_ < 4; i_++) h4_[i_] = h8_[i_] + h8_[i_ + 4];     \
    for (int i_ = 0; i_ < 2; i_++) h2_[i_] = h4_[i_] + h4_[i_ + 2];     \
    h2_[0] + h2_[1];                                                    \
})

/// The bits of the largest of 16 non-negative (or sign-cleared) finite floats: their order is the bits' order as
/// integers, a tree of integer maxima (a float reduction would be a chain of NaN-aware scalar steps).
#define max_bits(v) ({ const v16f f_ = (v); v16u u_; memcpy(&u_, &f_, 64); __builtin_reduce_max(u_ & 0x7fffffffu); })

// ---------------------------------------------------------------------------------------------------------
// Queries.

void pagoda_attn_query_i16(const float *q, int64_t hd, int16_t *q16, float *qscale, float *qsum) {
    for (int64_t g = 0; g < hd / 16; g++) {
        v16f x;
        memcpy(&x, q + 16 * g, 64);
        const uint32_t bits = max_bits(x);
        float amax;
        memcpy(&amax, &bits, 4);
        const float step = amax / 32767.0f, inv = amax > 0.0f ? 32767.0f / amax : 0.0f;
        v16f v = __builtin_elementwise_roundeven(x * (v16f)inv);
        v = __builtin_elementwise_min(__builtin_elementwise_max(v, (v16f)-32767.0f), (v16f)32767.0f);
        const v16s c = __builtin_convertvector(v, v16s);
        memcpy(q16 + 16 * g, &c, 32);
        qscale[g] = step;
        qsum[g] = sum16(x);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Scores. Key codes of a block and head: [hd/2][bs][2] (dimensions 2p and 2p + 1 of a slot side by side).

/// The group's score epilogue, shared by every path: s = fma((float)isum·qscale, scale, s), then fma(qsum, min, s).
#define score_group(s, isum, qs, qsum, sc, mn) \
    FMA((v16f)(qsum), (mn), FMA(__builtin_convertvector((isum), v16f) * (v16f)(qs), (sc), (s)))

#ifdef PA_X86
/// R rows' integer sums over G groups from g0 for the 16 slots at k: one vpdpwssd per row, group and pair of
/// dimensions, the groups' chains interleaved (R·G independent sums hide the instruction's latency).
T512 static inline __attribute__((always_inline)) void scores_i16_512(const int16_t *q16, int64_t hd, const int R,
                                                                     const int G, const uint8_t *k, int64_t bs,
                                                                     int64_t g0, __m512i acc[6][4]) {
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) acc[r][g] = _mm512_setzero_si512();
    for (int64_t p = 0; p < 8; p++) {
        for (int g = 0; g < G; g++) {
            const int64_t pair = 8 * (g0 + g) + p;
            const __m512i c = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(k + pair * 2 * bs)));
            for (int r = 0; r < R; r++) {
                int32_t qp;
                memcpy(&qp, q16 + r * hd + 2 * pair, 4);
                acc[r][g] = _mm512_dpwssd_epi32(acc[r][g], c, _mm512_set1_epi32(qp));
            }
        }
    }
}

/// R rows of scores for the 16 keys at j0 (groups in passes of G, epilogues in group order).
T512 static inline __attribute__((always_inline)) void scores_rows_512(const int16_t *q16, const float *qscale,
                                                                      const float *qsum, const int R, const int G,
                                                                      const uint8_t *run, int64_t bs, int64_t j0,
                                                                      int64_t hd, float *scores, int64_t ld) {
    const int64_t groups = hd / 16;
    const uint8_t *scale = run + hd * bs, *minimum = scale + 2 * groups * bs, *k = run + 2 * j0;
    v16f s[6];
    for (int i = 0; i < R; i++) s[i] = 0;
    for (int64_t g0 = 0; g0 < groups; g0 += G) {
        __m512i acc[6][4];
        const int n = groups - g0 < G ? (int)(groups - g0) : G;
        if (n == G) scores_i16_512(q16, hd, R, G, k, bs, g0, acc);
        else if (n == 3) scores_i16_512(q16, hd, R, 3, k, bs, g0, acc);
        else if (n == 2) scores_i16_512(q16, hd, R, 2, k, bs, g0, acc);
        else scores_i16_512(q16, hd, R, 1, k, bs, g0, acc);
        for (int g = 0; g < n; g++) {
            const int64_t gg = g0 + g;
            const v16f sc = halves16(scale + 2 * (gg * bs + j0)), mn = halves16(minimum + 2 * (gg * bs + j0));
            for (int i = 0; i < R; i++) {
                v16i isum;
                memcpy(&isum, &acc[i][g], 64);
                s[i] = score_group(s[i], isum, qscale[i * groups + gg], qsum[i * groups + gg], sc, mn);
            }
        }
    }
    for (int i = 0; i < R; i++) store16(scores + i * ld + j0, s[i]);
}

/// R rows of scores for the keys [0, n) of one block's run (16 at a time), one function per R (a small preamble).
/// (Heads of 64 dimensions, the common case, are compiled with the head size known: the group loop unrolls.)
#define SCORES_BLOCK(R, G)                                                                                         \
    T512 __attribute__((noinline)) static void scores_block_##R(const int16_t *q, const float *qs, const float *qm,  \
                                                                const uint8_t *run, int64_t bs, int64_t n,           \
                                                                int64_t hd, float *out, int64_t ld) {                \
        if (hd == 64) {                                                                                              \
            for (int64_t j0 = 0; j0 < n; j0 += 16) scores_rows_512(q, qs, qm, R, G, run, bs, j0, 64, out, ld);      \
        } else {                                                                                                     \
            for (int64_t j0 = 0; j0 < n; j0 += 16) scores_rows_512(q, qs, qm, R, G, run, bs, j0, hd, out, ld);      \
        }                                                                                                            \
    }
SCORES_BLOCK(1, 4)
SCORES_BLOCK(2, 4)
SCORES_BLOCK(3, 4)
SCORES_BLOCK(4, 2)
SCORES_BLOCK(5, 2)
SCORES_BLOCK(6, 2)
#undef SCORES_BLOCK
#endif

#ifdef PA_X86
/// R rows of scores for the keys [0, n) of one block's run without VNNI: the same integer sums from vpmaddwd (a pair
/// of dimensions of 8 slots per instruction, exact), the codes of each group loaded once for the R rows.
T256 static inline __attribute__((always_inline)) void scores_rows_256(const int16_t *q16, const float *qscale,
                                                                      const float *qsum, const int R,
                                                                      const uint8_t *run, int64_t bs, int64_t n,
                                                                      int64_t hd, float *scores, int64_t ld) {
    const int64_t groups = hd / 16;
    const uint8_t *scale = run + hd * bs, *minimum = scale + 2 * groups * bs;
    for (int64_t j0 = 0; j0 < n; j0 += 16) {
        v16f s[4];
        for (int i = 0; i < R; i++) s[i] = 0;
        for (int64_t g = 0; g < groups; g++) {
            __m256i a[4][2];
            for (int i = 0; i < R; i++) a[i][0] = a[i][1] = _mm256_setzero_si256();
            for (int64_t p = 0; p < 8; p++) {
                const int64_t pair = 8 * g + p;
                const uint8_t *k = run + pair * 2 * bs + 2 * j0;
                const __m256i c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)k));
                const __m256i c1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(k + 16)));
                for (int i = 0; i < R; i++) {
                    int32_t qp;
                    memcpy(&qp, q16 + i * hd + 2 * pair, 4);
                    const __m256i qv = _mm256_set1_epi32(qp);
                    a[i][0] = _mm256_add_epi32(a[i][0], _mm256_madd_epi16(c0, qv));
                    a[i][1] = _mm256_add_epi32(a[i][1], _mm256_madd_epi16(c1, qv));
                }
            }
            const v16f sc = halves16(scale + 2 * (g * bs + j0)), mn = halves16(minimum + 2 * (g * bs + j0));
            for (int i = 0; i < R; i++) {
                v16i isum;
                memcpy(&isum, &a[i][0], 32);
                memcpy((char *)&isum + 32, &a[i][1], 32);
                s[i] = score_group(s[i], isum, qscale[i * groups + g], qsum[i * groups + g], sc, mn);
            }
        }
        for (int i = 0; i < R; i++) store16(scores + i * ld + j0, s[i]);
    }
}

T256 __attribute__((noinline)) static void scores_block_256(const int16_t *q16, const float *qscale, const float *qsum,
                                                            int64_t rows, const uint8_t *run, int64_t bs, int64_t n,
                                                            int64_t hd, float *scores, int64_t ld) {
    const int64_t groups = hd / 16;
    for (int64_t r = 0; r < rows; r += 3) {
        const int16_t *q = q16 + r * hd;
        const float *qs = qscale + r * groups, *qm = qsum + r * groups;
        float *o = scores + r * ld;
        switch (rows - r < 3 ? rows - r : 3) {
            case 1: scores_rows_256(q, qs, qm, 1, run, bs, n, hd, o, ld); break;
            case 2: scores_rows_256(q, qs, qm, 2, run, bs, n, hd, o, ld); break;
            default: scores_rows_256(q, qs, qm, 3, run, bs, n, hd, o, ld); break;
        }
    }
}
#endif

/// The same scores from plain C integer sums.
static void scores_block_c(const int16_t *q16, const float *qscale, const float *qsum, int64_t rows, const uint8_t *run,
                           int64_t bs, int64_t n, int64_t hd, float *scores, int64_t ld) {
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

void pagoda_attn_scores_u8(const int16_t *q16, const float *qscale, const float *qsum, int64_t rows,
                           const int32_t *table, const uint8_t *keys, int64_t key_stride, int64_t key_run,
                           const uint8_t *values, int64_t value_stride, int64_t value_run, int64_t start, int64_t end,
                           int64_t bs, int64_t hd, float *scores, int64_t ld) {
    const int64_t groups = hd / 16;
    const int isa = pagoda_q_isa();
    for (int64_t pos = start; pos < end; pos += bs) {
        // Spread the requests over the loop (a burst of them stalls the core): the key run two blocks ahead, and
        // this block's value run for the value pass after the scores.
        if (pos + 2 * bs < end) pagoda_prefetch(keys + (int64_t)table[pos / bs + 2] * key_stride, key_run);
        pagoda_prefetch(values + (int64_t)table[pos / bs] * value_stride, value_run);
        const uint8_t *run = keys + (int64_t)table[pos / bs] * key_stride;
        const int64_t n = end - pos < bs ? end - pos : bs;
        float *out = scores + (pos - start);
        if (isa == 1) {
#ifdef PA_X86
            scores_block_256(q16, qscale, qsum, rows, run, bs, n, hd, out, ld);
#endif
            continue;
        }
        if (isa == 0) {
            scores_block_c(q16, qscale, qsum, rows, run, bs, n, hd, out, ld);
            continue;
        }
#ifdef PA_X86
        for (int64_t r = 0; r < rows; r += 6) {
            const int16_t *q = q16 + r * hd;
            const float *qs = qscale + r * groups, *qm = qsum + r * groups;
            float *o = out + r * ld;
            switch (rows - r < 6 ? rows - r : 6) {
                case 1: scores_block_1(q, qs, qm, run, bs, n, hd, o, ld); break;
                case 2: scores_block_2(q, qs, qm, run, bs, n, hd, o, ld); break;
                case 3: scores_block_3(q, qs, qm, run, bs, n, hd, o, ld); break;
                case 4: scores_block_4(q, qs, qm, run, bs, n, hd, o, ld); break;
                case 5: scores_block_5(q, qs, qm, run, bs, n, hd, o, ld); break;
                default: scores_block_6(q, qs, qm, run, bs, n, hd, o, ld); break;
            }
        }
#endif
    }
}

// ---------------------------------------------------------------------------------------------------------
// Values. Value codes of a block and head: [bs/2][hd][2] (slots 2k and 2k + 1 of a dimension side by side), then
// scale[bs] and min[bs].

/// Keys per window of the value pass: each row's weights (probability × the key's scale) for a window are formed
/// and quantized first, then the window's codes are weighted by them.
#define VALUE_WINDOW 256

/// Columns a pass over a window's codes accumulates for R rows: every row's integer and fp32 sums of those columns
/// stay in registers (R·C·2 + C vectors).
#define VALUE_COLUMNS(R) ((R) <= 3 ? 4 : 2)

#ifdef PA_X86
/// One 16-key step (8 slot pairs from `codes`, columns 16c ..< 16c + 16 of the pass) for R rows: the exact
/// integer Σ w16·code, one vpdpwssd per row, pair and column vector.
T512 static inline __attribute__((always_inline)) void values_step_512(v16i out[PAGODA_ATTN_VALUE_ROWS][4], const int R,
                                                                      const int C, const int16_t *w,
                                                                      const uint8_t *codes, int64_t hd) {
    __m512i I[PAGODA_ATTN_VALUE_ROWS][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) I[r][c] = _mm512_setzero_si512();
    for (int p = 0; p < 8; p++) {
        __m512i v[4];
        for (int c = 0; c < C; c++) v[c] = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(codes + 32 * c)));
        for (int r = 0; r < R; r++) {
            int32_t pair;
            memcpy(&pair, w + r * VALUE_WINDOW + 2 * p, 4);
            const __m512i wp = _mm512_set1_epi32(pair);
            for (int c = 0; c < C; c++) I[r][c] = _mm512_dpwssd_epi32(I[r][c], v[c], wp);
        }
        codes += 2 * hd;
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) memcpy(&out[r][c], &I[r][c], 64);
}
#endif

#ifdef PA_X86
/// The same step without VNNI: vpmaddwd on a pair of slots of 8 columns per instruction (exact), then added.
T256 static inline __attribute__((always_inline)) void values_step_256(v16i out[PAGODA_ATTN_VALUE_ROWS][4], const int R,
                                                                      const int C, const int16_t *w,
                                                                      const uint8_t *codes, int64_t hd) {
    __m256i I[PAGODA_ATTN_VALUE_ROWS][4][2];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) I[r][c][0] = I[r][c][1] = _mm256_setzero_si256();
    for (int p = 0; p < 8; p++) {
        __m256i v[4][2];
        for (int c = 0; c < C; c++) {
            v[c][0] = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(codes + 32 * c)));
            v[c][1] = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(codes + 32 * c + 16)));
        }
        for (int r = 0; r < R; r++) {
            int32_t pair;
            memcpy(&pair, w + r * VALUE_WINDOW + 2 * p, 4);
            const __m256i wp = _mm256_set1_epi32(pair);
            for (int c = 0; c < C; c++) {
                I[r][c][0] = _mm256_add_epi32(I[r][c][0], _mm256_madd_epi16(v[c][0], wp));
                I[r][c][1] = _mm256_add_epi32(I[r][c][1], _mm256_madd_epi16(v[c][1], wp));
            }
        }
        codes += 2 * hd;
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) memcpy(&out[r][c], I[r][c], 64);
}
#endif

/// The same integers without VNNI.
static inline __attribute__((always_inline)) void values_step_c(v16i I[PAGODA_ATTN_VALUE_ROWS][4], const int R,
                                                                const int C, const int16_t *w, const uint8_t *codes,
                                                                int64_t hd) {
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) I[r][c] = 0;
    for (int j = 0; j < 16; j++) {
        const uint8_t *slot = codes + (j >> 1) * 2 * hd + (j & 1);
        for (int r = 0; r < R; r++) {
            const int32_t wr = w[r * VALUE_WINDOW + j];
            for (int c = 0; c < C; c++)
                for (int i = 0; i < 16; i++) I[r][c][i] += wr * (int32_t)slot[2 * (16 * c + i)];
        }
    }
}

#define VALUES_ATTR
#define VALUES_STEP values_step_c
#define VALUES_NAME(x) x##_c
#include "pagoda_attention_values.h"
#ifdef PA_X86
#define VALUES_ATTR T512
#define VALUES_STEP values_step_512
#define VALUES_NAME(x) x##_512
#include "pagoda_attention_values.h"
#define VALUES_ATTR T256
#define VALUES_STEP values_step_256
#define VALUES_NAME(x) x##_256
#include "pagoda_attention_values.h"
#endif

void pagoda_attn_values_u8(float *acc, int64_t rows, const float *probs, int64_t ldp, int64_t keys, int64_t start,
                           const int32_t *table, const uint8_t *head0, int64_t bs, int64_t stride, int64_t hd) {
#ifdef PA_X86
    const int isa = pagoda_q_isa();
    if (isa >= 2) {
        values_any_512(acc, rows, probs, ldp, keys, start, table, head0, bs, stride, hd);
        return;
    }
    if (isa == 1) {
        values_any_256(acc, rows, probs, ldp, keys, start, table, head0, bs, stride, hd);
        return;
    }
#endif
    values_any_c(acc, rows, probs, ldp, keys, start, table, head0, bs, stride, hd);
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
