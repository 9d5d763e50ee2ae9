// The value pass of the u8 attention (pagoda_attention_u8.c), written once and included there once per instruction
// set: the includer defines VALUES_ATTR (the target attribute), VALUES_STEP (the 16-key integer step) and
// VALUES_NAME(x) (the instantiation's names). A function built for AVX-512 can only inline helpers built for it too,
// so each instruction set gets its own copy of the loops around its step.

/// R rows of acc, columns [c0, c0 + 16·C), over the window's keys [w0, w0 + n): per 16-key step, the exact integer
/// sums times the row's step of that 16-key step, fused-multiply-added in key order into fp32 sums (which start
/// from acc, or from 0 for the first window).
VALUES_ATTR static inline __attribute__((always_inline)) void
VALUES_NAME(values_pass)(float *acc, const int R, const int C, const int16_t *w, const float *steps, int64_t w0,
                         int64_t n, int64_t start, const int32_t *table, const uint8_t *head0, int64_t bs,
                         int64_t stride, int64_t hd, int64_t c0) {
    v16f F[PAGODA_ATTN_VALUE_ROWS][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            if (w0 == 0) F[r][c] = 0;
            else memcpy(&F[r][c], acc + r * hd + c0 + 16 * c, 64);
        }
    for (int64_t j = 0; j < n; j += 16) {
        const int64_t pos = start + w0 + j, slot = pos % bs;
        const uint8_t *codes = head0 + (int64_t)table[pos / bs] * stride + (slot >> 1) * 2 * hd + 2 * c0;
        v16i I[PAGODA_ATTN_VALUE_ROWS][4];
        VALUES_STEP(I, R, C, w + j, codes, hd);
        for (int r = 0; r < R; r++) {
            const v16f s = (v16f)steps[r * (VALUE_WINDOW / 16) + j / 16];
            for (int c = 0; c < C; c++) F[r][c] = FMA(__builtin_convertvector(I[r][c], v16f), s, F[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) store16(acc + r * hd + c0 + 16 * c, F[r][c]);
}

VALUES_ATTR static inline __attribute__((always_inline)) void
VALUES_NAME(values_rows)(float *acc, const int R, const float *probs, int64_t ldp, int64_t keys, int64_t start,
                         const int32_t *table, const uint8_t *head0, int64_t bs, int64_t stride, int64_t hd) {
    v16f z[PAGODA_ATTN_VALUE_ROWS];
    _Alignas(64) int16_t w[PAGODA_ATTN_VALUE_ROWS * VALUE_WINDOW];
    float steps[PAGODA_ATTN_VALUE_ROWS * (VALUE_WINDOW / 16)];
    for (int r = 0; r < R; r++) z[r] = 0;
    for (int64_t w0 = 0; w0 < keys; w0 += VALUE_WINDOW) {
        const int64_t n = keys - w0 < VALUE_WINDOW ? keys - w0 : VALUE_WINDOW;
        // Weights: probability × scale, 16 keys at a time (16 keys lie in one block: partitions and blocks start at
        // multiples of 16), as int16 steps of a power of two set by the row's largest weight among those 16 keys;
        // the probability × minimum goes into the row's lane sums z.
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
                z[r] = FMA(p, mn, z[r]);
                // Weights are ≥ 0. The step is the power of two that puts the largest of the 16 weights in
                // [16384, 32768) (its exponent, read from the bits: no division). Sixteen keys whose largest weight
                // is below 2^-100 add nothing (their share is below any fp32 output's resolution).
                const uint32_t bits = max_bits(x);
                const uint32_t e = bits >> 23;  // biased exponent: the largest in [2^(e - 127), 2^(e - 126))
                const int none = e < 27;        // below 2^-100
                const uint32_t stepBits = none ? 0u : (e - 14u) << 23, invBits = none ? 0u : (268u - e) << 23;
                float step, inv;
                memcpy(&step, &stepBits, 4);
                memcpy(&inv, &invBits, 4);
                steps[r * (VALUE_WINDOW / 16) + j / 16] = step;
                const v16f q = __builtin_elementwise_min(__builtin_elementwise_roundeven(x * (v16f)inv), (v16f)32767.0f);
                const v16i qi = __builtin_convertvector(q, v16i);
                for (int i = 0; i < 16; i++) w[r * VALUE_WINDOW + j + i] = (int16_t)qi[i];
            }
        }
        // Columns in passes of VALUE_COLUMNS(R) vectors (a last pass of fewer for heads not a multiple of them).
        const int CW = VALUE_COLUMNS(R);
        for (int64_t c0 = 0; c0 < hd; c0 += 16 * CW) {
            const int C = hd - c0 >= 16 * CW ? CW : (int)((hd - c0) / 16);
            if (C == 4) VALUES_NAME(values_pass)(acc, R, 4, w, steps, w0, n, start, table, head0, bs, stride, hd, c0);
            else if (C == 3) VALUES_NAME(values_pass)(acc, R, 3, w, steps, w0, n, start, table, head0, bs, stride, hd, c0);
            else if (C == 2) VALUES_NAME(values_pass)(acc, R, 2, w, steps, w0, n, start, table, head0, bs, stride, hd, c0);
            else VALUES_NAME(values_pass)(acc, R, 1, w, steps, w0, n, start, table, head0, bs, stride, hd, c0);
        }
    }
    // The minima's sums by halves (a fixed order), added once at the end.
    for (int r = 0; r < R; r++) {
        const v16f zr = (v16f)sum16(z[r]);
        for (int64_t c = 0; c < hd; c += 16) {
            v16f a;
            memcpy(&a, acc + r * hd + c, 64);
            store16(acc + r * hd + c, a + zr);
        }
    }
}

/// The pass for 1 to PAGODA_ATTN_VALUE_ROWS rows (see pagoda_attn_values_u8).
VALUES_ATTR __attribute__((noinline)) static void VALUES_NAME(values_any)(float *acc, int64_t rows, const float *probs,
                                                                           int64_t ldp, int64_t keys, int64_t start,
                                                                           const int32_t *table, const uint8_t *head0,
                                                                           int64_t bs, int64_t stride, int64_t hd) {
    switch (rows) {
        case 1: VALUES_NAME(values_rows)(acc, 1, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
        case 2: VALUES_NAME(values_rows)(acc, 2, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
        case 3: VALUES_NAME(values_rows)(acc, 3, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
        case 4: VALUES_NAME(values_rows)(acc, 4, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
        case 5: VALUES_NAME(values_rows)(acc, 5, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
        default: VALUES_NAME(values_rows)(acc, 6, probs, ldp, keys, start, table, head0, bs, stride, hd); break;
    }
}

#undef VALUES_ATTR
#undef VALUES_STEP
#undef VALUES_NAME
