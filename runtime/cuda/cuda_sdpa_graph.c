/* cuda_sdpa_graph.c - the operation graphs of causal SDPA in the composite forms cuDNN's
 * flash-attention engines recognise (cuda_sdpa_graph.h). */
#include "cuda_sdpa_graph.h"

static cudnnDataType_t io_type(lh_dtype t) {
    return t == LH_DTYPE_FLOAT16 ? CUDNN_DATA_HALF : CUDNN_DATA_BFLOAT16;
}

/* ---- small helpers that keep the graph code close to the math ----------------------------- */

typedef struct dims4 { int64_t d[4], s[4]; } dims4;

static dims4 dense4(int64_t a, int64_t b, int64_t c, int64_t e) {
    dims4 r = {{a, b, c, e}, {b * c * e, c * e, e, 1}};
    return r;
}

static lh_gb_desc virt(int64_t *next_uid, lh_gb *gb, cudnnDataType_t type, dims4 x) {
    return lh_gb_tensor(gb, (*next_uid)++, type, 4, x.d, x.s, true);
}

static lh_gb_desc real(lh_gb *gb, int64_t uid, cudnnDataType_t type, dims4 x) {
    return lh_gb_tensor(gb, uid, type, 4, x.d, x.s, false);
}

static lh_gb_desc pw(int64_t *next_uid, lh_gb *gb, cudnnPointwiseMode_t mode, lh_gb_desc x,
                     lh_gb_desc b, dims4 out) {
    lh_gb_desc y = virt(next_uid, gb, CUDNN_DATA_FLOAT, out);
    lh_gb_pointwise(gb, mode, CUDNN_DATA_FLOAT, x, b, NULL, y, -1);
    return y;
}

/* The causal mask: keep (row >= col), else -inf. Built from two index generators the way the
 * flash-attention engines expect it. */
static lh_gb_desc causal_mask(int64_t *next_uid, lh_gb *gb, lh_gb_desc scores, dims4 sd) {
    lh_gb_desc row = virt(next_uid, gb, CUDNN_DATA_INT32, sd);
    lh_gb_pointwise(gb, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, scores, NULL, NULL, row, 2);
    lh_gb_desc col = virt(next_uid, gb, CUDNN_DATA_INT32, sd);
    lh_gb_pointwise(gb, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, scores, NULL, NULL, col, 3);
    lh_gb_desc keep = virt(next_uid, gb, CUDNN_DATA_BOOLEAN, sd);
    lh_gb_pointwise(gb, CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, NULL, keep, -1);
    lh_gb_desc neg_inf = lh_gb_scalar(gb, UID_NEG_INF, CUDNN_DATA_FLOAT);
    lh_gb_desc masked = virt(next_uid, gb, CUDNN_DATA_FLOAT, sd);
    lh_gb_pointwise(gb, CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, scores, neg_inf, keep,
                    masked, -1);
    return masked;
}

/* A kv head's gradient out = a b: with grouped heads, per query head (virtual, dims `full`)
 * and then summed over each kv head's group. */
static void kv_gradient(int64_t *next_uid, lh_gb *gb, cudnnDataType_t io, bool gqa, lh_gb_desc a,
                        lh_gb_desc b, dims4 full, lh_gb_desc out) {
    if (!gqa) {
        lh_gb_matmul(gb, a, b, out);
        return;
    }
    lh_gb_desc per_head = virt(next_uid, gb, io, full);
    lh_gb_matmul(gb, a, b, per_head);
    lh_gb_reduction(gb, CUDNN_REDUCE_TENSOR_ADD, per_head, out);
}

/* K^T (or V^T) as a view: dims [B, Hkv, D, S], the strides of S and D swapped. */
static dims4 transposed_kv(const lh_sdpa_shape *sh) {
    dims4 r = {{sh->b, sh->hkv, sh->d, sh->s},
               {sh->kv_strides[0], sh->kv_strides[1], sh->kv_strides[3], sh->kv_strides[2]}};
    return r;
}

static dims4 with_strides(int64_t a, int64_t b, int64_t c, int64_t e, const int64_t st[4]) {
    dims4 r = {{a, b, c, e}, {st[0], st[1], st[2], st[3]}};
    return r;
}

/* ---- forward -------------------------------------------------------------------------------- */

void cuda_sdpa_graph_forward(const lh_sdpa_shape *sh, lh_gb *gb, int64_t *next_uid) {
    int64_t b = sh->b, h = sh->h, s = sh->s, d = sh->d;
    cudnnDataType_t io = io_type(sh->dtype);
    dims4 qd = with_strides(b, h, s, d, sh->q_strides);
    dims4 vd = with_strides(b, sh->hkv, s, d, sh->kv_strides);
    dims4 sd = dense4(b, h, s, s);     /* scores: virtual, never in memory */
    dims4 rd = dense4(b, h, s, 1);     /* per-row values */

    lh_gb_desc q = real(gb, UID_Q, io, qd);
    lh_gb_desc kt = real(gb, UID_K, io, transposed_kv(sh));
    lh_gb_desc v = real(gb, UID_V, io, vd);
    lh_gb_desc o = real(gb, UID_O, io, qd);
    lh_gb_desc stats = real(gb, UID_STATS, CUDNN_DATA_FLOAT, rd);

    lh_gb_desc scores = virt(next_uid, gb, CUDNN_DATA_FLOAT, sd);
    lh_gb_matmul(gb, q, kt, scores);
    lh_gb_desc scaled = pw(next_uid, gb, CUDNN_POINTWISE_MUL, scores,
                           lh_gb_scalar(gb, UID_SCALE_S, CUDNN_DATA_FLOAT), sd);
    lh_gb_desc masked = sh->full ? scaled : causal_mask(next_uid, gb, scaled, sd);
    /* softmax with statistics: m = max, e = exp(x - m), z = sum e, lse = m + log z, P = e / z */
    lh_gb_desc m = virt(next_uid, gb, CUDNN_DATA_FLOAT, rd);
    lh_gb_reduction(gb, CUDNN_REDUCE_TENSOR_MAX, masked, m);
    lh_gb_desc centered = pw(next_uid, gb, CUDNN_POINTWISE_SUB, masked, m, sd);
    lh_gb_desc e = pw(next_uid, gb, CUDNN_POINTWISE_EXP, centered, NULL, sd);
    lh_gb_desc z = virt(next_uid, gb, CUDNN_DATA_FLOAT, rd);
    lh_gb_reduction(gb, CUDNN_REDUCE_TENSOR_ADD, e, z);
    lh_gb_desc log_z = pw(next_uid, gb, CUDNN_POINTWISE_LOG, z, NULL, rd);
    lh_gb_pointwise(gb, CUDNN_POINTWISE_ADD, CUDNN_DATA_FLOAT, m, log_z, NULL, stats, -1);
    lh_gb_desc probs = virt(next_uid, gb, io, sd); /* P in the I/O dtype feeds the second matmul */
    lh_gb_pointwise(gb, CUDNN_POINTWISE_DIV, CUDNN_DATA_FLOAT, e, z, NULL, probs, -1);
    lh_gb_matmul(gb, probs, v, o);
}

/* ---- backward ------------------------------------------------------------------------------- */

void cuda_sdpa_graph_backward(const lh_sdpa_shape *sh, lh_gb *gb, lh_sdpa_bwd_kind kind,
                              int64_t *next_uid) {
    bool gqa = sh->h != sh->hkv;
    int64_t b = sh->b, h = sh->h, hkv = sh->hkv, s = sh->s, d = sh->d;
    cudnnDataType_t io = io_type(sh->dtype);
    dims4 qd = with_strides(b, h, s, d, sh->q_strides);
    dims4 kd = with_strides(b, hkv, s, d, sh->kv_strides);
    dims4 sd = dense4(b, h, s, s);
    dims4 st = {{b, h, s, s}, {h * s * s, s * s, 1, s}}; /* a score matrix transposed */
    dims4 rd = dense4(b, h, s, 1);

    lh_gb_desc q = real(gb, UID_Q, io, qd);
    lh_gb_desc kt = real(gb, UID_K, io, transposed_kv(sh));
    lh_gb_desc vt = real(gb, UID_V, io, transposed_kv(sh));
    lh_gb_desc o = real(gb, UID_O, io, qd);
    lh_gb_desc dout = real(gb, UID_DO, io, qd);
    lh_gb_desc stats = real(gb, UID_STATS, CUDNN_DATA_FLOAT, rd);
    lh_gb_desc dq = real(gb, UID_DQ, io, qd);
    lh_gb_desc dk = real(gb, UID_DK, io, kd);
    lh_gb_desc dv = real(gb, UID_DV, io, kd);
    lh_gb_desc softmax_sum = real(gb, UID_SOFTMAX_SUM, CUDNN_DATA_FLOAT, rd);

    /* softmax_sum = rowsum(dO * O) * 1 (the engines look for the multiply by one, the slot
     * where dropout's scale would go) */
    lh_gb_desc d_o = pw(next_uid, gb, CUDNN_POINTWISE_MUL, dout, o, dense4(b, h, s, d));
    lh_gb_desc rowsum = virt(next_uid, gb, CUDNN_DATA_FLOAT, rd);
    lh_gb_reduction(gb, CUDNN_REDUCE_TENSOR_ADD, d_o, rowsum);
    lh_gb_pointwise(gb, CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, rowsum,
                    lh_gb_scalar(gb, UID_ONE, CUDNN_DATA_FLOAT), NULL, softmax_sum, -1);

    /* P = exp(scale * Q K^T - lse), causally masked */
    lh_gb_desc scores = virt(next_uid, gb, CUDNN_DATA_FLOAT, sd);
    lh_gb_matmul(gb, q, kt, scores);
    lh_gb_desc scaled = pw(next_uid, gb, CUDNN_POINTWISE_MUL, scores,
                           lh_gb_scalar(gb, UID_SCALE_S, CUDNN_DATA_FLOAT), sd);
    lh_gb_desc centered = pw(next_uid, gb, CUDNN_POINTWISE_SUB, scaled, stats, sd);
    lh_gb_desc masked = sh->full ? centered : causal_mask(next_uid, gb, centered, sd);
    lh_gb_desc probs = pw(next_uid, gb, CUDNN_POINTWISE_EXP, masked, NULL, sd);

    /* dV = P^T dO (per query head, then summed over each kv head's group). The per-query-head
     * gradients of grouped-query attention stay virtual, as cudnn-frontend builds them: bound to
     * caller buffers instead, the dQ-accumulator engine made illegal accesses (H100, cuDNN 9.19)
     * even with fp32-sized buffers. */
    lh_gb_desc probs_t = virt(next_uid, gb, io, st);
    lh_gb_reshape(gb, probs, probs_t);
    dims4 full = dense4(b, h, s, d);
    kv_gradient(next_uid, gb, io, gqa, probs_t, dout, full, dv);

    /* dS = scale * P * (dO V^T - softmax_sum) */
    lh_gb_desc dp = virt(next_uid, gb, CUDNN_DATA_FLOAT, sd);
    lh_gb_matmul(gb, dout, vt, dp);
    lh_gb_desc dp_centered = pw(next_uid, gb, CUDNN_POINTWISE_SUB, dp, softmax_sum, sd);
    lh_gb_desc ds_unscaled = pw(next_uid, gb, CUDNN_POINTWISE_MUL, dp_centered, probs, sd);
    lh_gb_desc ds = pw(next_uid, gb, CUDNN_POINTWISE_MUL, ds_unscaled,
                       lh_gb_scalar(gb, UID_SCALE_DS, CUDNN_DATA_FLOAT), sd);

    /* dK = dS^T Q */
    lh_gb_desc ds_t = virt(next_uid, gb, io, st);
    lh_gb_reshape(gb, ds, ds_t);
    kv_gradient(next_uid, gb, io, gqa, ds_t, q, full, dk);

    /* dQ = dS K, with K recovered from the K^T view */
    lh_gb_desc k_view = virt(next_uid, gb, io, kd);
    lh_gb_reshape(gb, kt, k_view);
    if (kind == LH_SDPA_BWD_ACCUM) {
        lh_gb_desc accum = real(gb, UID_DQ_ACCUM, CUDNN_DATA_FLOAT, dense4(b, h, s, d));
        lh_gb_matmul(gb, ds, k_view, accum);
        lh_gb_pointwise(gb, CUDNN_POINTWISE_IDENTITY, CUDNN_DATA_FLOAT, accum, NULL, NULL, dq, -1);
    } else {
        lh_gb_matmul(gb, ds, k_view, dq);
    }
}
