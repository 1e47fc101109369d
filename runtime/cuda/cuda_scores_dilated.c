/*
 * cuda_scores_dilated.c - the scores stage of the dilated scorer on the GPU (docs/spec.md
 * section 10): the library's own cuDNN attention on the strided view of the caller's tensors,
 * then the norm scorer's kernel (lh_pyramid_scores) on its output.
 *
 * The d strided sequences t = j, j+d, j+2d, ... of every head are one attention call with d
 * times the heads and 1/d of the tokens, as strides over the caller's memory (no copy):
 *   [B, N, H, D] (BNHD) is [B, N/d, d*H, D]: head j*H + h at offset j*H*D + h*D, row s at
 *                s*d*H*D (logical [B, d*H, N/d, D] strides: T*H*D, D, d*H*D, 1);
 *   [B, H, N, D] (BHND) is [B*H, d, N/d, D]: residue j at offset j*D, row s at s*d*D (strides
 *                T*D, D, d*D, 1; b*H + h is the batch, T*D apart),
 * with T the tokens of the tensor the chunk lives in. The output o goes to the workspace in the
 * same strides, so it has q's layout, and its norms are exactly the norm scorer's kernel on o
 * in place of q: first o_qk (queries q, keys k) into scores_q, then o_kq (queries k, keys q),
 * in the same memory, into scores_k. Only those norms leave the stage: the one output buffer
 * and the softmax statistics cuDNN writes beside it are scratch, so the scorer's workspace is
 * one [B, N_c, H, D] output (plus its lse and cuDNN's part) whatever d is.
 */
#include "algorithm.h"
#include "cuda_internal.h"

/* Elements from the first to one past the last element of the output in q's layout. */
static int64_t output_elems(const cuda_plan *p) {
    const lh_config *c = &p->chunk;
    return (c->batch - 1) * p->q_sb + (c->heads - 1) * p->q_sh + (c->seq_len - 1) * p->q_st +
           c->head_dim;
}

void cuda_scorer_sdpa_shape(const lh_config *c, lh_sdpa_shape *shape) {
    int64_t d = c->dilation, T = c->tensor_seq_len, H = c->heads, D = c->head_dim;
    *shape = (lh_sdpa_shape){.s = c->seq_len / d, .d = D, .dtype = c->dtype,
                             .scale = lh_default_softmax_scale(D), .forward_only = true};
    if (c->layout == LH_LAYOUT_BNHD) {
        shape->b = c->batch, shape->h = shape->hkv = d * H;
        int64_t st[4] = {T * H * D, D, d * H * D, 1};
        for (int i = 0; i < 4; i++) shape->q_strides[i] = shape->kv_strides[i] = st[i];
    } else {
        shape->b = c->batch * H, shape->h = shape->hkv = d;
        int64_t st[4] = {T * D, D, d * D, 1};
        for (int i = 0; i < 4; i++) shape->q_strides[i] = shape->kv_strides[i] = st[i];
    }
}

lh_status cuda_scorer_create(cuda_plan *p) {
    lh_sdpa_shape shape;
    cuda_scorer_sdpa_shape(&p->chunk, &shape);
    lh_status st = cuda_dnn_sdpa_get(p->cc, p->dnn, &shape, &p->scorer, &p->setup);
    if (st != LH_OK) return lh_fail_context(st, "the dilated scorer's attention");
    int64_t end = 0, align = 256;
    lh_region_append(&end, output_elems(p) * (int64_t)lh_dtype_size(p->chunk.dtype), align);
    p->scorer_stats_off = lh_region_append(&end, cuda_sdpa_stats_bytes(p->scorer), align);
    p->scorer_sdpa_off = lh_region_append(&end, cuda_sdpa_fwd_workspace_bytes(p->scorer), align);
    p->scorer_bytes = end;
    return LH_OK;
}

/* Norms of o's rows, max-pooled per level, into the scores of `heads` q heads (sq) or `kv_heads`
 * k heads (sk): the norm scorer's kernel with only one side's heads in its grid. */
static lh_status launch_norms(const cuda_plan *p, const void *o, float *sq, float *sk,
                              int64_t heads, int64_t kv_heads, CUstream stream) {
    const lh_config *c = &p->chunk;
    lhk_pyramid_scores_args a = {
        .q = o, .k = o, .sq = sq, .sk = sk, .pq = NULL, .pk = NULL, .n = c->seq_len,
        .heads = heads, .kv_heads = kv_heads, .s_total = c->s_total, .write_pooled = 0,
        .q_sb = p->q_sb, .q_st = p->q_st, .q_sh = p->q_sh,
        .k_sb = p->q_sb, .k_st = p->q_st, .k_sh = p->q_sh};
    return cuda_launch(p, LHK_PYRAMID_SCORES, &a, stream);
}

lh_status cuda_scores_dilated(const cuda_plan *p, const void *q, const void *k, const void *v,
                              float *sq, float *sk, void *workspace, CUstream stream) {
    char *ws = workspace;
    float *stats = (float *)(ws + p->scorer_stats_off);
    void *sdpa_ws = ws + p->scorer_sdpa_off;
    int64_t H = p->chunk.heads;
    lh_status st = cuda_sdpa_forward(p->scorer, q, k, v, ws, stats, sdpa_ws, stream);
    if (st == LH_OK) st = launch_norms(p, ws, sq, sk, H, 0, stream);
    if (st == LH_OK) st = cuda_sdpa_forward(p->scorer, k, q, v, ws, stats, sdpa_ws, stream);
    if (st == LH_OK) st = launch_norms(p, ws, sq, sk, 0, H, stream);
    return st;
}

lh_status cuda_scores_dilated_stage(void *plan, const lh_chunk *ch, void *stream) {
    return cuda_scores_dilated(plan, ch->q, ch->k, ch->v, ch->scores_q, ch->scores_k, ch->scorer,
                               stream);
}
