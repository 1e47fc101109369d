/*
 * cpu_flash_bwd.c - causal attention backward on one head (docs/spec.md section 6).
 *
 * The probabilities are recomputed from the saved log-sum-exp (P_ij = exp(s_ij - lse_i)), never
 * stored. The work is split in two passes so that every output row has exactly one writer and the
 * passes parallelise without atomics:
 *   rows:    dQ_i = scale * sum_j dS_ij K_j            (one task per block of query rows)
 *   columns: dV_j = sum_i P_ij dO_i, dK_j = scale * sum_i dS_ij Q_i   (one task per key block)
 * with dS_ij = P_ij (dO_i . V_j - dvec_i), dvec_i = dO_i . O_i. Recomputing P twice costs one
 * extra score pass, cheaper than any synchronisation at these sizes. The column pass works on
 * transposed tiles (keys as rows) so that both passes use the same two dense kernels.
 */
#include <string.h>

#include "cpu_attention.h"

void lh_cpu_attention_bwd_rows(const lh_cpu_head *hd, int64_t D, float scale, int64_t r0,
                               int64_t r1, const float *o, int64_t o_stride, const float *dout,
                               int64_t dout_stride, const float *lse, float *dvec, float *dq,
                               int64_t dq_stride, int accumulate, float *scratch) {
    const int64_t B = LH_CPU_BLOCK;
    const lh_cpu_tiles *tiles = lh_cpu_tiles_get();
    int64_t rows = r1 - r0;
    float *kt = scratch, *vt = kt + D * B;   /* D x B each */
    float *st = vt + D * B, *dpt = st + B * B;   /* B x B each: P, then dP -> dS */
    float *acc = dpt + B * B;                /* B x D */
    for (int64_t i = r0; i < r1; i++) {
        const float *orow = o + i * o_stride, *drow = dout + i * dout_stride;
        double dot = 0.0;
        for (int64_t d = 0; d < D; d++)
            dot += (double)orow[d] * (double)drow[d];
        dvec[i] = (float)dot;
    }
    memset(acc, 0, (size_t)(rows * D) * sizeof(float));
    int64_t kend = hd->full ? hd->len : r1;   /* causal: keys up to the last row */
    for (int64_t c0 = 0; c0 < kend; c0 += B) {
        int64_t n = kend - c0 < B ? kend - c0 : B;
        int64_t first = hd->full || r0 > c0 ? r0 : c0, ri0 = first - r0, m_rows = r1 - first;
        tiles->transpose(hd->k + c0 * hd->kv_stride, hd->kv_stride, n, D, kt);
        tiles->transpose(hd->v + c0 * hd->kv_stride, hd->kv_stride, n, D, vt);
        tiles->abt(hd->q + first * hd->q_stride, hd->q_stride, m_rows, kt, n, D, st + ri0 * B);
        tiles->abt(dout + first * dout_stride, dout_stride, m_rows, vt, n, D, dpt + ri0 * B);
        for (int64_t ri = ri0; ri < rows; ri++) {
            int64_t i = r0 + ri, nv = !hd->full && i - c0 + 1 < n ? i - c0 + 1 : n;
            float *p = st + ri * B, *ds = dpt + ri * B;
            tiles->exp(p, nv, scale, lse[i]);
            float dv_i = dvec[i];
            for (int64_t j = 0; j < nv; j++)
                ds[j] = p[j] * (ds[j] - dv_i);
            for (int64_t j = nv; j < n; j++)
                ds[j] = 0.0f;
        }
        tiles->acc(dpt + ri0 * B, m_rows, n, hd->k + c0 * hd->kv_stride, hd->kv_stride, D,
                        acc + ri0 * D);
    }
    for (int64_t i = 0; i < rows; i++) {
        float *row = dq + (r0 + i) * dq_stride;
        if (accumulate)
            for (int64_t d = 0; d < D; d++)
                row[d] += acc[i * D + d] * scale;
        else
            for (int64_t d = 0; d < D; d++)
                row[d] = acc[i * D + d] * scale;
    }
}

/* The key-side tiles of one block of query rows [r0, r0 + m) of one query head: P^T into pt and
 * dS^T into dst (keys as rows), then dv += P^T dO and dk += dS^T Q. */
static void cols_block(const float *k, const float *v, int64_t kv_stride, int64_t c0, int64_t n,
                       int64_t D, float scale, const lh_cpu_qgrad *qg, int64_t r0, int64_t m,
                       int full, float *qt, float *dot, float *pt, float *dst, float *dk_acc,
                       float *dv_acc, const lh_cpu_tiles *tiles) {
    const int64_t B = LH_CPU_BLOCK;
    tiles->transpose(qg->q + r0 * qg->q_stride, qg->q_stride, m, D, qt);
    tiles->transpose(qg->dout + r0 * qg->dout_stride, qg->dout_stride, m, D, dot);
    tiles->abt(k + c0 * kv_stride, kv_stride, n, qt, m, D, pt);
    tiles->abt(v + c0 * kv_stride, kv_stride, n, dot, m, D, dst);
    const float *lse = qg->lse + r0, *dvec = qg->dvec + r0;
    for (int64_t j = 0; j < n; j++) {
        float *p = pt + j * B, *ds = dst + j * B;
        tiles->exp_cols(p, m, scale, lse);
        for (int64_t i = 0; i < m; i++)
            ds[i] = p[i] * (ds[i] - dvec[i]);
        /* Causal: query r0 + i sees key c0 + j only when r0 + i >= c0 + j. */
        for (int64_t i = 0; !full && i < m && r0 + i < c0 + j; i++)
            p[i] = ds[i] = 0.0f;
    }
    tiles->acc(pt, n, m, qg->dout + r0 * qg->dout_stride, qg->dout_stride, D, dv_acc);
    tiles->acc(dst, n, m, qg->q + r0 * qg->q_stride, qg->q_stride, D, dk_acc);
}

void lh_cpu_attention_bwd_cols(const float *k, const float *v, int64_t kv_stride, int64_t len,
                               int full, int64_t D, float scale, const lh_cpu_qgrad *qs, int64_t nq,
                               int64_t c0, int64_t c1, float *dk, float *dv, int64_t dkv_stride,
                               int accumulate, float *scratch) {
    const int64_t B = LH_CPU_BLOCK;
    const lh_cpu_tiles *tiles = lh_cpu_tiles_get();
    int64_t n = c1 - c0;
    float *qt = scratch, *dot = qt + D * B;          /* D x B each */
    float *pt = dot + D * B, *dst = pt + B * B;      /* B x B each */
    float *dk_acc = dst + B * B, *dv_acc = dk_acc + B * D;
    memset(dk_acc, 0, (size_t)(2 * B * D) * sizeof(float));
    for (int64_t g = 0; g < nq; g++)
        /* Causal: queries before c0 see none of these keys. */
        for (int64_t r0 = full ? 0 : c0; r0 < len; r0 += B) {
            int64_t m = len - r0 < B ? len - r0 : B;
            cols_block(k, v, kv_stride, c0, n, D, scale, &qs[g], r0, m, full, qt, dot, pt, dst,
                       dk_acc, dv_acc, tiles);
        }
    for (int64_t j = 0; j < n; j++) {
        float *dkr = dk + (c0 + j) * dkv_stride, *dvr = dv + (c0 + j) * dkv_stride;
        if (accumulate) {
            for (int64_t d = 0; d < D; d++) {
                dkr[d] += dk_acc[j * D + d] * scale;
                dvr[d] += dv_acc[j * D + d];
            }
        } else {
            for (int64_t d = 0; d < D; d++) {
                dkr[d] = dk_acc[j * D + d] * scale;
                dvr[d] = dv_acc[j * D + d];
            }
        }
    }
}
