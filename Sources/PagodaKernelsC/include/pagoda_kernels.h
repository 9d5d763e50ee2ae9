#ifndef PAGODA_KERNELS_H
#define PAGODA_KERNELS_H
// Small C helpers for the kernels: only what Swift cannot express (CPU hints, intrinsics that do not import).

/// A spin-wait hint for busy loops.
static inline void pagoda_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");

#endif
}

#include <stdint.h>

/// Asks for the cache lines of [p, p + bytes) to be loaded toward the core without waiting for them (many
/// misses in flight at once instead of one stream stalling at every 4 KiB page). Locality 2 (prefetcht1, into
/// L2): measured faster here than prefetcht0 or prefetchnta for the KV cache.
static inline void pagoda_prefetch(const void *p, int64_t bytes) {
    const char *c = (const char *)p;
    for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i, 0, 2);
}

// ---- Quantized weights × int8 activations (see QuantizedMatrix.swift) ----
//
// Weights are repacked in groups of PAGODA_Q_ROWS rows. Each (group, block of 32 columns) holds:
//   d[16]                            per-row scale
//   m[16]                            per-row min term (only when has_min)
//   (d and m are fp16 when half_scales, else fp32: legacy GGUF types store fp16 scales, so keeping them
//   fp16 is exact and saves decode bandwidth; Q4_K's products of scales need fp32)
//   weights: 8 steps × 16 rows × 4 bytes (unsigned codes u, element 4k+j of row i at k*64 + i*4 + j),
//            or, when nibble, 4 × 64 bytes holding steps k (low nibble) and k+4 (high nibble) of the codes'
//            low 4 bits, followed by high_bits planes of 64 bytes (5- and 6-bit codes): bit 4+p of the code of
//            element 4k+j of row i is bit (i*4 + j) of the 8-byte word at 256 + 64p + 8k.
// A weight is w = d·(u − offset) + m. Activations are int8 blocks of 32: x ≈ dx·q, with sx = Σq,
// sxh = Σq over the block's first 16 values and dxs = dx·(float)sx. For one output element, for every block b
// in order:
//   isum = Σ u·q − offset·sx            (exact int32)
//   acc  = fma((float)isum, d·dx, acc)
//   acc  = fma(m, dxs, acc)              (only when has_min)
// When split (Q6_K: a scale per 16 columns), the m slot holds the scale of the block's second half d2 (fp32),
// d that of the first half, and for every block b in order:
//   isum1 = Σ_{first 16} u·q − offset·sxh, isum2 = Σ_{last 16} u·q − offset·(sx − sxh)   (exact int32)
//   acc   = fma((float)isum1, d·dx, acc)
//   acc   = fma((float)isum2, d2·dx, acc)
// then, for each of the token's PAGODA_Q_OUTLIERS exact values (column c, value v, in order):
//   w    = (float)(u_c − offset)·d_c (+ m_c)  (d_c: the second half's scale for columns 16-31 when split)
//   acc  = fma(v, w, acc)
// and y = acc (+ bias). Every code path (scalar, AVX2, AVX-512 VNNI) and every tile shape performs
// exactly these float operations, so results are bitwise identical and batch invariant.

#define PAGODA_Q_ROWS 16
/// Values of each activation row kept exact instead of in its int8 blocks: the row's largest magnitudes (ties to
/// the lower column). An outlier left in its block would set the block's scale and leave its other 31 values a
/// few levels of resolution; taken out, it is multiplied in fp32 (see above) and counts as 0 in its block.
#define PAGODA_Q_OUTLIERS 2
/// The widest activation row (the quantizer keeps a maximum per block of a row on the stack).
#define PAGODA_Q_MAX_COLS 131072
/// Tokens per pass over the row groups: a long prompt's int8 activations (8192 × 1536 bytes) would otherwise be
/// read from DRAM once per 16-row group; 128 tokens' stay in L2. Per-element arithmetic is unchanged.
#define PAGODA_Q_TOKEN_CHUNK 128

typedef struct {
    const uint8_t *data;
    int64_t rows, cols, groups, blocks;  // blocks = cols / 32 per row
    int64_t block_bytes;                  // bytes per (group, block)
    int32_t nibble, has_min, offset, half_scales;
    int32_t split;                        // a scale per 16 columns (Q6_K), see above
    int32_t high_bits;                    // bit planes above the nibbles (Q5_x: 1, Q6_K: 2)
} pagoda_qmat;

/// Quantizes `tokens` rows of `cols` floats (cols % 32 == 0) into int8 blocks, each row's PAGODA_Q_OUTLIERS
/// largest magnitudes taken out first: their columns and values go to oi and ov (PAGODA_Q_OUTLIERS per row, by
/// decreasing magnitude, ties to the lower column) and count as 0 in their blocks.
void pagoda_quantize_q8(const float *x, int64_t tokens, int64_t cols, int8_t *q, float *dx, int32_t *sx, float *dxs,
                        int32_t *sxh, int32_t *oi, float *ov);

/// Numbers the distinct outlier columns of each chunk of PAGODA_Q_TOKEN_CHUNK tokens, once per quantized input so
/// that every GEMM on it dequantizes each of them once per row group: for token t's outlier k (index
/// i = t·PAGODA_Q_OUTLIERS + k, chunk c = t / PAGODA_Q_TOKEN_CHUNK), uniq[c·PAGODA_Q_TOKEN_CHUNK·PAGODA_Q_OUTLIERS
/// + slot[i]] = oi[i]; nuniq[c] counts chunk c's distinct columns.
void pagoda_outlier_slots(const int32_t *oi, int64_t tokens, int16_t *slot, int32_t *uniq, int32_t *nuniq);

/// y[t*ldy + r] for rows of groups [g0, g1) and all tokens (slot, uniq, nuniq from pagoda_outlier_slots).
void pagoda_qgemm(const pagoda_qmat *m, const int8_t *q, const float *dx, const int32_t *sx, const float *dxs,
                  const int32_t *sxh, const int32_t *oi, const float *ov, const int16_t *slot, const int32_t *uniq,
                  const int32_t *nuniq, int64_t tokens, float *y, int64_t ldy, int64_t g0, int64_t g1,
                  const float *bias);

/// Whether the wide product below runs on AMX-BF16 tiles here (the AMX path in use, and PAGODA_NO_WIDE unset).
int pagoda_qgemm_wide_available(void);

/// out[i] = x[i] rounded to bf16 (nearest even).
void pagoda_to_bf16(const float *x, int64_t n, uint16_t *out);

/// The wide product, for prompt tokens: y[t*ldy + r] for rows of groups [g0, g1) and tokens [0, tokens), from bf16
/// activations xb[t*cols + c] (rows up to tokens rounded up to 16 must be readable). Each weight is dequantized as
/// (u − offset)·d (+ m) in fp32 and rounded to bf16; the products are summed in fp32 over the blocks in order (AMX
/// tiles where available, else a scalar loop). A token's outputs do not depend on the other tokens of the call.
/// With `add` nonzero, y[t*ldy + r] += the output instead (y + (sum + bias), as a product then an add would round).
void pagoda_qgemm_wide(const pagoda_qmat *m, const uint16_t *xb, int64_t tokens, float *y, int64_t ldy, int64_t g0,
                       int64_t g1, const float *bias, int add);

/// SwiGLU with the wide product: out[t*ldo + r] = silu(g)·u for rows of groups [g0, g1), where g and u are what
/// pagoda_qgemm_wide gives for `gate` and `up` (same rows and columns, no bias) and silu(g)·u = g / (1 + e^−g) · u with
/// the engine's exponential (bitwise Swift's `siluMul`). Only the product is written.
void pagoda_qgemm_wide_glu(const pagoda_qmat *gate, const pagoda_qmat *up, const uint16_t *xb, int64_t tokens,
                           float *out, int64_t ldo, int64_t g0, int64_t g1);

/// The code path in use: 0 scalar, 1 AVX2, 2 AVX-512 VNNI, 3 the same with AMX-INT8 tiles for batches of 16 tokens or
/// more (same results; other kernels treat 3 as 2).
int pagoda_q_isa(void);

// ---- Half-precision weights (F16 / BF16) × fp32 activations ----
//
// w holds fp16 (is_bf16 = 0) or bf16 (is_bf16 = 1) values repacked in groups of 8 rows: for each group and each
// chunk of 16 columns, the 8 rows' 16 values back to back, zero-padded past the last column and row. For each
// output y[t·ldy + r]: 16 lanes accumulate fma(x[k], w[k]) over the chunks in order (the last one masked), then
// the lanes are summed in a fixed tree order, then the bias is added. Every tile shape performs these operations,
// so results do not depend on the batch (batch invariance). The AVX2 path uses 2 × 8 lanes; the scalar path 1.

/// Tokens per pass over a caller's rows (64 × 1536 fp32 activations: 384 KiB, kept in L2 instead of being read
/// from DRAM once per row tile). Per-element arithmetic is unchanged.
#define PAGODA_H_TOKEN_CHUNK 64

/// y[t*ldy + r] for rows [r0, r1) and all tokens.
void pagoda_hgemm(const uint16_t *w, int32_t is_bf16, int64_t rows, int64_t cols, const float *x, int64_t tokens,
                  float *y, int64_t ldy, int64_t r0, int64_t r1, const float *bias);

/// The same for fp32 weights in the same layout (groups of 8 rows, chunks of 16 columns, zero padded) and with the
/// same arithmetic: y[t*ldy + r] for rows [r0, r1) and all tokens.
void pagoda_sgemm(const float *w, int64_t cols, const float *x, int64_t tokens, float *y, int64_t ldy, int64_t r0,
                  int64_t r1, const float *bias);

/// A register-only loop of the code path's int8 dot-product instruction (12 independent chains), for
/// measuring the compute peak; returns a value that depends on every chain.
int64_t pagoda_int8_dot_loop(int64_t iters, int32_t seed);
/// Integer operations (2 per multiply-add) one iteration of `pagoda_int8_dot_loop` performs.
int64_t pagoda_int8_dot_loop_ops(void);
/// Runs `iters` iterations of AMX-BF16 tile products (0 where the wide product is unavailable).
double pagoda_bf16_tile_loop(int64_t iters);
/// Floating-point operations (2 per multiply-add) one iteration of `pagoda_bf16_tile_loop` performs (0 where unavailable).
int64_t pagoda_bf16_tile_loop_ops(void);
/// Forces a code path (tests); values above what the CPU supports are clamped. -1 restores detection.
void pagoda_q_force_isa(int isa);

// ---- Attention over the u8 KV cache (see LayerKV in PagedAttention.swift) ----
//
// Per block and KV head, keys: codes[headDim/2][bs][2] (u8; dimensions 2p and 2p + 1 of a slot side by side), then
// scale[headDim/16][bs] and min[headDim/16][bs] (fp16); values: codes[bs/2][headDim][2] (slots 2k and 2k + 1 of a
// dimension side by side), then scale[bs] and min[bs] (fp16). An element is min + scale·code. headDim and bs are
// multiples of 16.

/// Stores one token's keys and values ([kvHeads × hd] each) at `slot` of the block whose first head's runs start at
/// `keys` and `values`: per group of 16 key dimensions and per value row, scale = fp16((max − min)/255),
/// min = fp16(min), codes the nearest of 0…255 to (x − min)/scale (all 0 when the scale is 0).
void pagoda_kv_store_u8(uint8_t *keys, uint8_t *values, int64_t slot, int64_t bs, int64_t hd, int64_t kv_heads,
                        const float *k, const float *v);

/// One query row (hd values) for the u8 scores: per group of 16 dimensions, q16 = the nearest integers to
/// q·32767/max|q| (0 when max|q| is 0), qscale = max|q|/32767, and qsum = Σ q (16 lanes summed by halves).
void pagoda_attn_query_i16(const float *q, int64_t hd, int16_t *q16, float *qscale, float *qsum);

/// scores[r·ld + (pos − start)] for the keys [start, end) (start a multiple of bs) of one KV head: key runs at
/// keys + table[pos / bs]·key_stride (key_run bytes each), rows 0 ..< rows of q16 ([rows × hd]), qscale and qsum
/// ([rows × hd/16], see pagoda_attn_query_i16): per group of 16 dimensions, the exact integer Σ q16·code, as fp32,
/// times qscale, fused-multiply-added with the key's scale, then qsum·min fused-multiply-added. Lanes past end in
/// the last 16 are garbage. Prefetches the key runs ahead and each block's value run (at values +
/// table[·]·value_stride, value_run bytes) for the value pass.
void pagoda_attn_scores_u8(const int16_t *q16, const float *qscale, const float *qsum, int64_t rows,
                           const int32_t *table, const uint8_t *keys, int64_t key_stride, int64_t key_run,
                           const uint8_t *values, int64_t value_stride, int64_t value_run, int64_t start, int64_t end,
                           int64_t bs, int64_t hd, float *scores, int64_t ld);

/// Query rows one call of pagoda_attn_values_u8 accumulates at once (each value row is converted once for all).
#define PAGODA_ATTN_VALUE_ROWS 6

/// acc[r][·] = Σ_j probs[r·ldp + j]·value_j for `keys` keys from sequence position `start` (a multiple of 16), rows
/// 0 ..< rows (1 to PAGODA_ATTN_VALUE_ROWS); value runs of the head at head0 + table[block]·stride. A row with fewer
/// keys has zero probabilities past them. Per row and 16 keys: w_j = p_j·scale_j, as int16 steps of the power of two
/// that puts the 16 keys' largest w in [16384, 32768) steps (no step when it is below 2^-100); per element, the 16 keys' exact integer Σ w16_j·code_j, as fp32, times
/// the step, fused-multiply-added into the element in key order; at the end, Σ_j p_j·min_j (16 lanes, key j in lane
/// j mod 16, summed by halves) is added. Nothing depends on `rows` or on keys past the row's.
void pagoda_attn_values_u8(float *acc, int64_t rows, const float *probs, int64_t ldp, int64_t keys, int64_t start,
                           const int32_t *table, const uint8_t *head0, int64_t bs, int64_t stride, int64_t hd);

#endif
