/* cuda_scores.c - the scores stage on the GPU: lh_pyramid_scores (kernels_mlir/scores.mlir),
 * the norms of q and k max-pooled per level, and in the pipeline the coarsest level's pooled q
 * and k rows that the gather then copies instead of reading q and k again. */
#include "cuda_internal.h"

/* pq / pk: the coarsest level's pooled rows, written when given (else NULL, untouched) */
static lh_status launch_scores(const cuda_plan *p, const void *q, const void *k, float *sq,
                               float *sk, void *pq, void *pk, CUstream stream) {
    const lh_config *c = &p->chunk;
    lhk_pyramid_scores_args a = {
        .q = q, .k = k, .sq = sq, .sk = sk, .pq = pq, .pk = pk, .n = c->seq_len,
        .heads = c->heads, .kv_heads = c->kv_heads, .s_total = c->s_total,
        .write_pooled = pq != NULL, .q_sb = p->q_sb, .q_st = p->q_st, .q_sh = p->q_sh,
        .k_sb = p->kv_sb, .k_st = p->kv_st, .k_sh = p->kv_sh};
    return cuda_launch(p, LHK_PYRAMID_SCORES, &a, stream);
}

lh_status cuda_scores_stage(void *plan, const lh_chunk *ch, void *stream) {
    return launch_scores(plan, ch->q, ch->k, ch->scores_q, ch->scores_k, ch->pooled_q,
                         ch->pooled_k, stream);
}

lh_status cuda_scores_entry(void *plan, const void *q, const void *k, const void *v,
                            float *scores_q, float *scores_k, void *workspace, void *stream) {
    const cuda_plan *p = plan;
    lh_status st = cuda_enter(p);
    if (st != LH_OK) return st;
    /* The stage workspace has no room for pooled rows; lh_gather averages instead. */
    if (p->cfg.scorer == LH_SCORER_DILATED)
        st = cuda_scores_dilated(p, q, k, v, scores_q, scores_k,
                                 lh_buffer_at(&p->pipeline.buffers, LH_BUF_STAGE,
                                              LH_REGION_SCORER, workspace),
                                 stream);
    else
        st = launch_scores(plan, q, k, scores_q, scores_k, NULL, NULL, stream);
    cuda_leave(plan);
    return st;
}
