/*
 * cpu_flash.c - causal attention forward on one head (docs/spec.md sections 4 and 7).
 *
 * Flash-attention style: a block of query rows walks the key blocks up to the diagonal with an
 * online softmax (running max m, running sum l, unnormalised output acc), so the S x S score
 * matrix never exists and memory stays O(block * (block + D)). Each step is two small dense
 * products (cpu_tile.c): scores = Q K^T on the block, then acc += P V.
 */
#include <math.h>
#include <string.h>

#include "cpu_attention.h"

size_t lh_cpu_attention_scratch_bytes(const lh_config *cfg) {
    size_t B = LH_CPU_BLOCK, D = (size_t)cfg->head_dim;
    /* The largest user is the key-side backward: two transposed blocks (2 D B), two score
     * tiles (2 B B), two accumulators (2 B D); plus room for per-row vectors. */
    return lh_cpu_round64((4 * B * D + 2 * B * B + 4 * B) * sizeof(float));
}

void lh_cpu_attention_rows(const lh_cpu_head *hd, int64_t D, float scale, int64_t r0, int64_t r1,
                           float *o, int64_t o_stride, float *lse, float *scratch) {
    const int64_t B = LH_CPU_BLOCK;
    const lh_cpu_tiles *tiles = lh_cpu_tiles_get();
    int64_t rows = r1 - r0;
    float *kt = scratch;            /* D x B: the key block, transposed */
    float *st = kt + D * B;         /* B x B: scores, then probabilities */
    float *acc = st + B * B;        /* B x D */
    float *m = acc + B * D;         /* B: running max of the scaled scores */
    float *l = m + B;               /* B: running sum of exp(score - m) */
    for (int64_t i = 0; i < rows; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    memset(acc, 0, (size_t)(rows * D) * sizeof(float));

    /* Causal: keys up to the last row; full: every key. */
    int64_t kend = hd->full ? hd->len : r1;
    for (int64_t c0 = 0; c0 < kend; c0 += B) {
        int64_t n = kend - c0 < B ? kend - c0 : B;
        /* Causal: rows before c0 see none of these keys. */
        int64_t first = hd->full || r0 > c0 ? r0 : c0;
        int64_t ri0 = first - r0, m_rows = r1 - first;
        tiles->transpose(hd->k + c0 * hd->kv_stride, hd->kv_stride, n, D, kt);
        tiles->abt(hd->q + first * hd->q_stride, hd->q_stride, m_rows, kt, n, D,
                        st + ri0 * B);
        for (int64_t ri = ri0; ri < rows; ri++) {
            /* Causal: keys c0..i (at least one). */
            int64_t nv = !hd->full && r0 + ri - c0 + 1 < n ? r0 + ri - c0 + 1 : n;
            float *row = st + ri * B;
            float mx = -INFINITY;
            int nan = 0;
            for (int64_t j = 0; j < nv; j++) {
                mx = row[j] > mx ? row[j] : mx;
                nan |= row[j] != row[j];
            }
            /* Non-finite input gives a NaN row, never a finite wrong one: a NaN score makes the
             * row's maximum NaN, and NaN stays in m, l and acc through every later block; +inf
             * makes its own NaN (exp(inf - inf)). Keys that all score -inf here have weight 0. */
            if (nan)
                mx = NAN;
            mx *= scale;
            float mnew = mx > m[ri] || mx != mx ? mx : m[ri];
            if (mnew == -INFINITY) {   /* every score so far -inf: nothing to add */
                memset(row, 0, (size_t)n * sizeof(float));
                continue;
            }
            tiles->exp(row, nv, scale, mnew);
            for (int64_t j = nv; j < n; j++)
                row[j] = 0.0f;
            float sum = 0.0f;
            for (int64_t j = 0; j < nv; j++)
                sum += row[j];
            float corr = m[ri] == -INFINITY ? 0.0f : expf(m[ri] - mnew);
            if (corr != 1.0f) {
                float *a = acc + ri * D;
                for (int64_t d = 0; d < D; d++)
                    a[d] *= corr;
            }
            l[ri] = l[ri] * corr + sum;
            m[ri] = mnew;
        }
        tiles->acc(st + ri0 * B, m_rows, n, hd->v + c0 * hd->kv_stride, hd->kv_stride, D,
                        acc + ri0 * D);
    }
    for (int64_t i = 0; i < rows; i++) {
        float *orow = o + (r0 + i) * o_stride;
        /* Every row sees at least one key, so l = 0 means every score was -inf: the softmax
         * is 0/0, NaN like a NaN score (which l and acc already carry). */
        float inv = l[i] == 0.0f ? NAN : 1.0f / l[i];
        for (int64_t d = 0; d < D; d++)
            orow[d] = acc[i * D + d] * inv;
        lse[r0 + i] = l[i] == 0.0f ? NAN : m[i] + logf(l[i]);
    }
}
