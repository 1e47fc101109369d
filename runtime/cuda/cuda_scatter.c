/* cuda_scatter.c - the scatter stage on the GPU: lh_scatter (kernels_mlir/scatter.mlir), O_sel
 * back to full length through the inverse map, each token the sum of the entries whose shifted
 * window covers it (docs/spec.md section 5). */
#include "cuda_internal.h"

static lh_status launch_scatter(const cuda_plan *p, const void *o_sel, const void *inv,
                                void *out, CUstream stream) {
    const lh_config *c = &p->chunk;
    int64_t d = c->head_dim;
    lhk_scatter_args a = {.o_sel = o_sel, .inv = inv, .out = out, .n = c->seq_len,
                          .heads = c->heads, .s_total = c->s_total,
                          .o_sb = c->heads * c->s_sel * d, .o_sh = c->s_sel * d, .o_ss = d,
                          .out_sb = p->q_sb, .out_st = p->q_st, .out_sh = p->q_sh};
    return cuda_launch(p, LHK_SCATTER, &a, stream);
}

lh_status cuda_scatter_stage(void *plan, const lh_chunk *ch, void *stream) {
    return launch_scatter(plan, ch->o_sel, ch->inv, ch->out, stream);
}

lh_status cuda_scatter_entry(void *plan, const int32_t *indices, const void *o_sel, void *out,
                             void *workspace, void *stream) {
    const cuda_plan *p = plan;
    lh_status st = cuda_enter(p);
    if (st != LH_OK) return st;
    void *inv = lh_buffer_at(&p->pipeline.buffers, LH_BUF_STAGE, LH_REGION_INV, workspace);
    st = cuda_invert(p, indices, inv, stream);
    if (st == LH_OK) st = launch_scatter(p, o_sel, inv, out, stream);
    cuda_leave(p);
    return st;
}
