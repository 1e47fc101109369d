/* cuda_select.c - the select stage on the GPU: lh_select_order (kernels_mlir/select.mlir), the
 * A/B cascade and depth-first order of each tile, which also fills the inverse map (pyramid
 * position -> slot) that scatter and pool_grad read; and lh_invert_indices, which rebuilds that
 * map from an index list (the backward's regather, lh_scatter). */
#include "cuda_internal.h"

/* inv := -1: select_order and invert_indices write only the selected positions. */
static lh_status clear_inv(const cuda_plan *p, void *inv, CUstream stream) {
    const lh_config *c = &p->chunk;
    size_t words = (size_t)(c->batch * c->heads * c->s_total);
    return lh_cu_check(p->cc->cu->MemsetD32Async((CUdeviceptr)(uintptr_t)inv, 0xFFFFFFFFu, words,
                                                 stream),
                       "clearing the inverse index map (cuMemsetD32Async)");
}

static lh_status launch_select(const cuda_plan *p, const float *sq, const float *sk,
                               int32_t *indices, void *inv, CUstream stream) {
    const lh_config *c = &p->chunk;
    lhk_select_order_args a = {.sq = sq, .sk = sk, .indices = indices, .inv = inv,
                               .n = c->seq_len, .heads = c->heads, .kv_heads = c->kv_heads,
                               .s_total = c->s_total, .s_sel = c->s_sel, .tile_len = c->tile_len};
    return cuda_launch(p, LHK_SELECT_ORDER, &a, stream);
}

lh_status cuda_invert(const cuda_plan *p, const int32_t *indices, void *inv, CUstream stream) {
    const lh_config *c = &p->chunk;
    lh_status st = clear_inv(p, inv, stream);
    if (st != LH_OK) return st;
    lhk_invert_indices_args a = {.indices = indices, .inv = inv, .heads = c->heads,
                                 .s_total = c->s_total, .s_sel = c->s_sel};
    return cuda_launch(p, LHK_INVERT_INDICES, &a, stream);
}

lh_status cuda_select_stage(void *plan, const lh_chunk *ch, void *stream) {
    lh_status st = clear_inv(plan, ch->inv, stream);
    if (st == LH_OK)
        st = launch_select(plan, ch->scores_q, ch->scores_k, ch->indices, ch->inv, stream);
    return st;
}

lh_status cuda_select_entry(void *plan, const float *scores_q, const float *scores_k,
                            int32_t *indices, void *workspace, void *stream) {
    const cuda_plan *p = plan;
    lh_status st = cuda_enter(p);
    if (st != LH_OK) return st;
    /* The inverse map is scratch here: nothing reads it, so it needs no clearing. */
    void *inv = lh_buffer_at(&p->pipeline.buffers, LH_BUF_STAGE, LH_REGION_INV, workspace);
    st = launch_select(p, scores_q, scores_k, indices, inv, stream);
    cuda_leave(p);
    return st;
}
