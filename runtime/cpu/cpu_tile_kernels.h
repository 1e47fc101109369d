/*
 * cpu_tile_kernels.h - the bodies of the dense block kernels (see cpu_tile.c). Included once per
 * instruction set: cpu_tile.c compiles them for any x86-64 (or other CPU), cpu_tile_avx2.c
 * for AVX2 + FMA. TILE_FN(name) gives each copy its own names; TILE_TABLE names the table of
 * function pointers the copy defines.
 */
#include <string.h>

#include "cpu_internal.h"

#define BLK LH_CPU_BLOCK
#define TR 4    /* rows of a register tile */
#define TC 16   /* columns of a register tile (two vectors of 8) */

/* GCC vector extensions: 8 floats, one AVX register (two SSE registers in the generic copy).
 * Loads and stores go through memcpy: rows are only 4-byte aligned. */
typedef float v8 __attribute__((vector_size(32)));

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, v8 v) { memcpy(p, &v, sizeof v); }

/* exp(x) to about 2 ulp for x in [-87, 88] (Cephes' expf polynomial after reduction by ln 2);
 * below -87 it returns about 1e-38 instead of a denormal or 0, which is immaterial next to the
 * row maximum's exp(0) = 1. Branch-free (rounding by adding and subtracting 1.5 * 2^23, the scale
 * 2^n built in the exponent bits) so that loops over it vectorise; the files that include this
 * are compiled with -fno-trapping-math, which lets GCC turn the clamps into vector min/max.
 * NaN in, NaN out, whatever the clamps make of it, and no undefined behaviour: n is taken from
 * the bits of the rounded sum (n + 127 is in 1..254 after the clamps) with unsigned arithmetic,
 * never by converting a float that may be NaN to an integer. Compiled without FP contraction
 * (GCC: the optimize attribute; clang: its fp pragma), for the reason given at exp below. */
#ifndef LH_TILE_NO_CONTRACT
#if defined(__clang__)
#define LH_TILE_NO_CONTRACT
#define LH_TILE_NO_CONTRACT_BODY _Pragma("clang fp contract(off)")
#else
#define LH_TILE_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#define LH_TILE_NO_CONTRACT_BODY
#endif
#endif
LH_TILE_NO_CONTRACT static inline float TILE_FN(fast_exp)(float x) {
    LH_TILE_NO_CONTRACT_BODY
    float in = x;
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * 1.44269504088896341f + 12582912.0f;
    float fn = t - 12582912.0f;
    float r = x - fn * 0.693359375f - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t tbits;
    memcpy(&tbits, &t, sizeof tbits);   /* 0x4B400000 + n: t = 1.5 * 2^23 + n */
    uint32_t bits = (tbits - 0x4B400000u + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return in != in ? in : p * scale;
}

static void TILE_FN(abt)(const float *a, int64_t lda, int64_t m, const float *bt, int64_t n,
                         int64_t D, float *c) {
    int64_t ncols = (n + TC - 1) / TC * TC;   /* bt holds BLK columns; pad to whole tiles */
    int64_t i = 0;
    for (; i + TR <= m; i += TR) {
        const float *a0 = a + i * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        for (int64_t j0 = 0; j0 < ncols; j0 += TC) {
            /* 4 rows x 16 columns of accumulators: 8 AVX registers. */
            v8 c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
            for (int64_t d = 0; d < D; d++) {
                const float *b = bt + d * BLK + j0;
                v8 b0 = load8(b), b1 = load8(b + 8);
                c00 += a0[d] * b0;
                c01 += a0[d] * b1;
                c10 += a1[d] * b0;
                c11 += a1[d] * b1;
                c20 += a2[d] * b0;
                c21 += a2[d] * b1;
                c30 += a3[d] * b0;
                c31 += a3[d] * b1;
            }
            float *o = c + i * BLK + j0;
            store8(o, c00);
            store8(o + 8, c01);
            store8(o + BLK, c10);
            store8(o + BLK + 8, c11);
            store8(o + 2 * BLK, c20);
            store8(o + 2 * BLK + 8, c21);
            store8(o + 3 * BLK, c30);
            store8(o + 3 * BLK + 8, c31);
        }
    }
    for (; i < m; i++) {
        const float *a0 = a + i * lda;
        for (int64_t j0 = 0; j0 < ncols; j0 += TC) {
            v8 c00 = {0}, c01 = {0};
            for (int64_t d = 0; d < D; d++) {
                const float *b = bt + d * BLK + j0;
                c00 += a0[d] * load8(b);
                c01 += a0[d] * load8(b + 8);
            }
            store8(c + i * BLK + j0, c00);
            store8(c + i * BLK + j0 + 8, c01);
        }
    }
}

/* acc rows [0, m) += p[i][0..n) times rows of b, for the columns [d0, d0 + TC) of a full tile. */
static inline void TILE_FN(acc_full)(const float *p, int64_t m, int64_t n, const float *b,
                                     int64_t ldb, int64_t d0, float *acc, int64_t D) {
    int64_t i = 0;
    for (; i + TR <= m; i += TR) {
        float *o = acc + i * D + d0;
        v8 c00 = load8(o), c01 = load8(o + 8), c10 = load8(o + D), c11 = load8(o + D + 8);
        v8 c20 = load8(o + 2 * D), c21 = load8(o + 2 * D + 8);
        v8 c30 = load8(o + 3 * D), c31 = load8(o + 3 * D + 8);
        const float *p0 = p + i * BLK, *p1 = p0 + BLK, *p2 = p1 + BLK, *p3 = p2 + BLK;
        for (int64_t j = 0; j < n; j++) {
            const float *br = b + j * ldb + d0;
            v8 b0 = load8(br), b1 = load8(br + 8);
            c00 += p0[j] * b0;
            c01 += p0[j] * b1;
            c10 += p1[j] * b0;
            c11 += p1[j] * b1;
            c20 += p2[j] * b0;
            c21 += p2[j] * b1;
            c30 += p3[j] * b0;
            c31 += p3[j] * b1;
        }
        store8(o, c00);
        store8(o + 8, c01);
        store8(o + D, c10);
        store8(o + D + 8, c11);
        store8(o + 2 * D, c20);
        store8(o + 2 * D + 8, c21);
        store8(o + 3 * D, c30);
        store8(o + 3 * D + 8, c31);
    }
    for (; i < m; i++) {
        float *o = acc + i * D + d0;
        v8 c00 = load8(o), c01 = load8(o + 8);
        for (int64_t j = 0; j < n; j++) {
            const float *br = b + j * ldb + d0;
            c00 += p[i * BLK + j] * load8(br);
            c01 += p[i * BLK + j] * load8(br + 8);
        }
        store8(o, c00);
        store8(o + 8, c01);
    }
}

static void TILE_FN(acc)(const float *p, int64_t m, int64_t n, const float *b, int64_t ldb,
                         int64_t D, float *acc) {
    int64_t d0 = 0;
    for (; d0 + TC <= D; d0 += TC)
        TILE_FN(acc_full)(p, m, n, b, ldb, d0, acc, D);
    if (d0 == D)
        return;
    /* Head dims that are not a multiple of 16: the last columns one by one. */
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            const float *br = b + j * ldb;
            float x = p[i * BLK + j];
            for (int64_t d = d0; d < D; d++)
                acc[i * D + d] += x * br[d];
        }
}

/* The product is rounded before the shift is subtracted (no FMA contraction here): the shift is
 * the row maximum of those same rounded products, so the maximum's own argument is exactly 0.
 * Contracted, it would be the rounding error of a product, which for large logits (a scale of
 * 1e9, or |q|, |k| near 1e5) is far above 88 and overflows the row's sum. */
LH_TILE_NO_CONTRACT static void TILE_FN(exp)(float *x, int64_t n, float scale, float shift) {
    LH_TILE_NO_CONTRACT_BODY
    for (int64_t j = 0; j < n; j++)
        x[j] = TILE_FN(fast_exp)(x[j] * scale - shift);
}

static void TILE_FN(transpose)(const float *x, int64_t stride, int64_t n, int64_t D,
                               float *xt) {
    for (int64_t j = 0; j < n; j++) {
        const float *row = x + j * stride;
        for (int64_t d = 0; d < D; d++)
            xt[d * BLK + j] = row[d];
    }
    /* Zero the padding columns up to the next whole register tile: their products are computed
     * and discarded, and must not be NaN or Inf from stale scratch. */
    int64_t pad = (n + TC - 1) / TC * TC;
    if (pad > n)
        for (int64_t d = 0; d < D; d++)
            memset(xt + d * BLK + n, 0, (size_t)(pad - n) * sizeof(float));
}

LH_TILE_NO_CONTRACT static void TILE_FN(exp_cols)(float *x, int64_t n, float scale,
                                                  const float *shift) {
    LH_TILE_NO_CONTRACT_BODY
    for (int64_t j = 0; j < n; j++)
        x[j] = TILE_FN(fast_exp)(x[j] * scale - shift[j]);
}

const lh_cpu_tiles TILE_TABLE = {
    .abt = TILE_FN(abt),
    .acc = TILE_FN(acc),
    .exp = TILE_FN(exp),
    .exp_cols = TILE_FN(exp_cols),
    .transpose = TILE_FN(transpose),
};
