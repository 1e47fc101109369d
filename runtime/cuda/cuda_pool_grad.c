/* cuda_pool_grad.c - the pool_grad stage on the GPU: lh_pool_grad (kernels_mlir/pool_grad.mlir),
 * dq, dk and dv of every token from the gradients of the entries that cover it, the pool
 * backward folded in (docs/spec.md section 6). */
#include "cuda_internal.h"

lh_status cuda_pool_grad_stage(void *plan, const lh_chunk *ch, void *stream) {
    const cuda_plan *p = plan;
    const lh_config *c = &p->chunk;
    lhk_pool_grad_args a = {
        .g_q = ch->dq_sel, .g_k = ch->dk_sel, .g_v = ch->dv_sel, .inv = ch->inv, .dq = ch->dq,
        .dk = ch->dk, .dv = ch->dv, .n = c->seq_len, .heads = c->heads, .kv_heads = c->kv_heads,
        .s_total = c->s_total, .s_sel = c->s_sel, .q_sb = p->q_sb, .q_st = p->q_st,
        .q_sh = p->q_sh, .kv_sb = p->kv_sb, .kv_st = p->kv_st, .kv_sh = p->kv_sh};
    return cuda_launch(p, LHK_POOL_GRAD, &a, stream);
}
