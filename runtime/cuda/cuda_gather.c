/* cuda_gather.c - the gather stages on the GPU (kernels_mlir/gather.mlir): lh_gather (q_sel,
 * k_sel, v_sel; pooled entries averaged on the fly, the coarsest ones copied from the pooled
 * rows of the scores stage when it wrote them), the backward's regather (inverse map and rows
 * again, with RECOMPUTE_SUBSEQ), and lh_gather_dout (dout summed over each entry's window). */
#include "cuda_internal.h"

/* pq / pk: the scores stage's pooled rows, copied for coarsest-level entries when given (else
 * NULL: q and k are averaged for every entry) */
static lh_status launch_gather(const cuda_plan *p, const void *q, const void *k, const void *v,
                               const int32_t *indices, const void *pq, const void *pk, void *qs,
                               void *ks, void *vs, CUstream stream) {
    const lh_config *c = &p->chunk;
    lhk_gather_args a = {
        .q = q, .k = k, .v = v, .indices = indices, .q_sel = qs, .k_sel = ks, .v_sel = vs,
        .pq = pq, .pk = pk, .n = c->seq_len, .heads = c->heads, .kv_heads = c->kv_heads,
        .s_sel = c->s_sel, .use_pooled = pq != NULL, .q_sb = p->q_sb, .q_st = p->q_st,
        .q_sh = p->q_sh, .kv_sb = p->kv_sb, .kv_st = p->kv_st, .kv_sh = p->kv_sh};
    return cuda_launch(p, LHK_GATHER, &a, stream);
}

lh_status cuda_gather_stage(void *plan, const lh_chunk *ch, void *stream) {
    return launch_gather(plan, ch->q, ch->k, ch->v, ch->indices, ch->pooled_q, ch->pooled_k,
                         ch->q_sel, ch->k_sel, ch->v_sel, stream);
}

/* The forward's pooled rows were scratch, gone by now: the gather averages q and k itself. */
lh_status cuda_regather_stage(void *plan, const lh_chunk *ch, void *stream) {
    lh_status st = cuda_invert(plan, ch->indices, ch->inv, stream);
    if (st == LH_OK)
        st = launch_gather(plan, ch->q, ch->k, ch->v, ch->indices, NULL, NULL, ch->q_sel,
                           ch->k_sel, ch->v_sel, stream);
    return st;
}

lh_status cuda_gather_dout_stage(void *plan, const lh_chunk *ch, void *stream) {
    const cuda_plan *p = plan;
    const lh_config *c = &p->chunk;
    lhk_gather_dout_args a = {.dout = ch->dout, .indices = ch->indices, .d_sel = ch->do_sel,
                              .n = c->seq_len, .heads = c->heads, .s_sel = c->s_sel,
                              .d_sb = p->q_sb, .d_st = p->q_st, .d_sh = p->q_sh};
    return cuda_launch(p, LHK_GATHER_DOUT, &a, stream);
}

lh_status cuda_gather_entry(void *plan, const void *q, const void *k, const void *v,
                            const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                            void *workspace, void *stream) {
    (void)workspace;
    lh_status st = cuda_enter(plan);
    if (st != LH_OK) return st;
    st = launch_gather(plan, q, k, v, indices, NULL, NULL, q_sel, k_sel, v_sel, stream);
    cuda_leave(plan);
    return st;
}
