/*
 * cuda_lighthouse_run.c - running a Lighthouse plan on the GPU: kernel launches in the order of
 * cuda_lighthouse.h, all on the caller's stream, all scratch from the caller's workspace.
 */
#include <string.h>

#include "cuda_lighthouse.h"

static void *at(void *base, int64_t offset) { return (char *)base + offset; }
static const void *cat(const void *base, int64_t offset) { return (const char *)base + offset; }
/* A region the plan keeps in `saved` (offset sv >= 0), or else has in the workspace at w. */
static void *saved_or_ws(void *saved, int64_t sv, void *ws, int64_t w) {
    return sv >= 0 ? at(saved, sv) : at(ws, w);
}

static lh_status launch(const cuda_lighthouse *lh, lhk_kernel kernel, const void *args,
                        CUstream s) {
    const lh_config *c = &lh->cfg;
    lhk_shape shape = {.batch = c->batch, .tiles = c->tiles};
    return cuda_kernels_launch(&lh->kernels, kernel, args, &shape, s);
}

/* ---- one launcher per kernel (arguments exactly as the .mlir headers list them) ----------- */

/* pq / pk: the coarsest level's pooled rows, written when write_pooled (else NULL, untouched) */
static lh_status run_scores(const cuda_lighthouse *lh, const void *q, const void *k, void *sq,
                            void *sk, void *pq, void *pk, int64_t write_pooled, CUstream s) {
    const lh_config *c = &lh->cfg;
    lhk_pyramid_scores_args a = {
        .q = q, .k = k, .sq = sq, .sk = sk, .pq = pq, .pk = pk, .n = c->seq_len,
        .heads = c->heads, .kv_heads = c->kv_heads, .s_total = c->s_total,
        .write_pooled = write_pooled, .q_sb = lh->q_sb, .q_st = lh->q_st, .q_sh = lh->q_sh,
        .k_sb = lh->kv_sb, .k_st = lh->kv_st, .k_sh = lh->kv_sh};
    return launch(lh, LHK_PYRAMID_SCORES, &a, s);
}

static lh_status clear_inv(const cuda_lighthouse *lh, void *inv, CUstream s) {
    const lh_config *c = &lh->cfg;
    size_t words = (size_t)(c->batch * c->heads * c->s_total);
    return lh_cu_check(lh->cu->MemsetD32Async((CUdeviceptr)(uintptr_t)inv, 0xFFFFFFFFu, words, s),
                       "clearing the inverse index map (cuMemsetD32Async)");
}

static lh_status run_select(const cuda_lighthouse *lh, const void *sq, const void *sk,
                            void *indices, void *inv, CUstream s) {
    const lh_config *c = &lh->cfg;
    lhk_select_order_args a = {.sq = sq, .sk = sk, .indices = indices, .inv = inv,
                               .n = c->seq_len, .heads = c->heads, .kv_heads = c->kv_heads,
                               .s_total = c->s_total, .s_sel = c->s_sel, .tile_len = c->tile_len};
    return launch(lh, LHK_SELECT_ORDER, &a, s);
}

static lh_status run_invert(const cuda_lighthouse *lh, const void *indices, void *inv,
                            CUstream s) {
    const lh_config *c = &lh->cfg;
    lh_status st = clear_inv(lh, inv, s);
    if (st != LH_OK) return st;
    lhk_invert_indices_args a = {.indices = indices, .inv = inv, .heads = c->heads,
                                 .s_total = c->s_total, .s_sel = c->s_sel};
    return launch(lh, LHK_INVERT_INDICES, &a, s);
}

/* pq / pk: run_scores' pooled rows, copied for coarsest-level entries when use_pooled (else
 * NULL, untouched: q and k are averaged for every entry) */
static lh_status run_gather(const cuda_lighthouse *lh, const void *q, const void *k,
                            const void *v, const void *indices, const void *pq, const void *pk,
                            int64_t use_pooled, void *qs, void *ks, void *vs, CUstream s) {
    const lh_config *c = &lh->cfg;
    lhk_gather_args a = {
        .q = q, .k = k, .v = v, .indices = indices, .q_sel = qs, .k_sel = ks, .v_sel = vs,
        .pq = pq, .pk = pk, .n = c->seq_len, .heads = c->heads, .kv_heads = c->kv_heads,
        .s_sel = c->s_sel, .use_pooled = use_pooled, .q_sb = lh->q_sb, .q_st = lh->q_st,
        .q_sh = lh->q_sh, .kv_sb = lh->kv_sb, .kv_st = lh->kv_st, .kv_sh = lh->kv_sh};
    return launch(lh, LHK_GATHER, &a, s);
}

static lh_status run_gather_dout(const cuda_lighthouse *lh, const void *dout, const void *indices,
                                 void *d_sel, CUstream s) {
    const lh_config *c = &lh->cfg;
    lhk_gather_dout_args a = {.dout = dout, .indices = indices, .d_sel = d_sel, .n = c->seq_len,
                              .heads = c->heads, .s_sel = c->s_sel, .d_sb = lh->q_sb,
                              .d_st = lh->q_st, .d_sh = lh->q_sh};
    return launch(lh, LHK_GATHER_DOUT, &a, s);
}

static lh_status run_scatter(const cuda_lighthouse *lh, const void *o_sel, const void *inv,
                             void *out, CUstream s) {
    const lh_config *c = &lh->cfg;
    int64_t d = c->head_dim;
    lhk_scatter_args a = {.o_sel = o_sel, .inv = inv, .out = out, .n = c->seq_len,
                          .heads = c->heads, .s_total = c->s_total,
                          .o_sb = c->heads * c->s_sel * d, .o_sh = c->s_sel * d, .o_ss = d,
                          .out_sb = lh->q_sb, .out_st = lh->q_st, .out_sh = lh->q_sh};
    return launch(lh, LHK_SCATTER, &a, s);
}

static lh_status run_pool_grad(const cuda_lighthouse *lh, const void *gq, const void *gk,
                               const void *gv, const void *inv, void *dq, void *dk, void *dv,
                               CUstream s) {
    const lh_config *c = &lh->cfg;
    lhk_pool_grad_args a = {
        .g_q = gq, .g_k = gk, .g_v = gv, .inv = inv, .dq = dq, .dk = dk, .dv = dv,
        .n = c->seq_len, .heads = c->heads, .kv_heads = c->kv_heads, .s_total = c->s_total,
        .s_sel = c->s_sel, .q_sb = lh->q_sb, .q_st = lh->q_st, .q_sh = lh->q_sh,
        .kv_sb = lh->kv_sb, .kv_st = lh->kv_st, .kv_sh = lh->kv_sh};
    return launch(lh, LHK_POOL_GRAD, &a, s);
}

/* ---- forward and backward ------------------------------------------------------------------- */

lh_status cuda_lighthouse_forward(cuda_lighthouse *lh, const void *q, const void *k, const void *v,
                                  void *out, void *saved, void *workspace, CUstream stream) {
    void *indices = at(saved, lh->sv_idx), *o_sel = at(saved, lh->sv_o);
    float *lse = at(saved, lh->sv_lse);
    void *sq = at(workspace, lh->fw_sq), *sk = at(workspace, lh->fw_sk);
    /* by default the sub-sequence and inverse map go straight into `saved` */
    void *inv = saved_or_ws(saved, lh->sv_inv, workspace, lh->fw_inv);
    void *qs = saved_or_ws(saved, lh->sv_qs, workspace, lh->fw_qs);
    void *ks = saved_or_ws(saved, lh->sv_ks, workspace, lh->fw_ks);
    void *vs = saved_or_ws(saved, lh->sv_vs, workspace, lh->fw_vs);
    void *pq = at(workspace, lh->fw_pq), *pk = at(workspace, lh->fw_pk);
    cuda_stage_timer *t = lh->timer; /* NULL unless STAGE_TIMING: then every mark is a no-op */
    lh_status st = cuda_stage_timer_open(t, LH_STAGE_SCORES, LH_STAGE_SCATTER, stream);
    if (st == LH_OK) st = cuda_stage_begin(t, LH_STAGE_SCORES, stream);
    if (st == LH_OK) st = run_scores(lh, q, k, sq, sk, pq, pk, 1, stream);
    if (st == LH_OK) st = cuda_stage_end(t, LH_STAGE_SCORES, stream);
    if (st == LH_OK) st = cuda_stage_begin(t, LH_STAGE_SELECT, stream);
    if (st == LH_OK) st = clear_inv(lh, inv, stream);
    if (st == LH_OK) st = run_select(lh, sq, sk, indices, inv, stream);
    if (st == LH_OK) st = cuda_stage_end(t, LH_STAGE_SELECT, stream);
    if (st == LH_OK) st = cuda_stage_begin(t, LH_STAGE_GATHER, stream);
    if (st == LH_OK) st = run_gather(lh, q, k, v, indices, pq, pk, 1, qs, ks, vs, stream);
    if (st == LH_OK) st = cuda_stage_end(t, LH_STAGE_GATHER, stream);
    if (st == LH_OK) st = cuda_stage_begin(t, LH_STAGE_ATTENTION_FORWARD, stream);
    if (st == LH_OK)
        st = cuda_sdpa_forward(lh->sdpa, qs, ks, vs, o_sel, lse, at(workspace, lh->fw_sdpa), stream);
    if (st == LH_OK) st = cuda_stage_end(t, LH_STAGE_ATTENTION_FORWARD, stream);
    if (st == LH_OK) st = cuda_stage_begin(t, LH_STAGE_SCATTER, stream);
    if (st == LH_OK) st = run_scatter(lh, o_sel, inv, out, stream);
    if (st == LH_OK) st = cuda_stage_end(t, LH_STAGE_SCATTER, stream);
    return st;
}

lh_status cuda_lighthouse_backward(cuda_lighthouse *lh, const void *q, const void *k,
                                   const void *v, const void *dout, const void *saved, void *dq,
                                   void *dk, void *dv, void *workspace, CUstream stream) {
    const void *indices = cat(saved, lh->sv_idx), *o_sel = cat(saved, lh->sv_o);
    const float *lse = cat(saved, lh->sv_lse);
    void *d_sel = at(workspace, lh->bw_do);
    void *dqs = at(workspace, lh->bw_dqs), *dks = at(workspace, lh->bw_dks), *dvs = at(workspace, lh->bw_dvs);
    cuda_stage_timer *t = lh->timer;
    lh_status st = cuda_stage_timer_open(t, LH_STAGE_REGATHER, LH_STAGE_POOL_GRAD, stream);
    if (st != LH_OK) return st;
    const void *inv, *qs, *ks, *vs;
    if (lh->sv_qs >= 0) { /* kept by the forward */
        inv = cat(saved, lh->sv_inv);
        qs = cat(saved, lh->sv_qs), ks = cat(saved, lh->sv_ks), vs = cat(saved, lh->sv_vs);
    } else {              /* rebuilt: the inverse map from the indices, the rows from q, k, v
                           (the gather averages q and k itself: the forward's pooled rows were
                           scratch, gone by now) */
        void *winv = at(workspace, lh->bw_inv), *wqs = at(workspace, lh->bw_qs),
             *wks = at(workspace, lh->bw_ks), *wvs = at(workspace, lh->bw_vs);
        st = cuda_stage_begin(t, LH_STAGE_REGATHER, stream);
        if (st == LH_OK) st = run_invert(lh, indices, winv, stream);
        if (st == LH_OK) st = run_gather(lh, q, k, v, indices, NULL, NULL, 0, wqs, wks, wvs, stream);
        if (st == LH_OK) st = cuda_stage_end(t, LH_STAGE_REGATHER, stream);
        inv = winv, qs = wqs, ks = wks, vs = wvs;
    }
    if (st == LH_OK) st = cuda_stage_begin(t, LH_STAGE_GATHER_DOUT, stream);
    if (st == LH_OK) st = run_gather_dout(lh, dout, indices, d_sel, stream);
    if (st == LH_OK) st = cuda_stage_end(t, LH_STAGE_GATHER_DOUT, stream);
    if (st == LH_OK) st = cuda_stage_begin(t, LH_STAGE_ATTENTION_BACKWARD, stream);
    if (st == LH_OK)
        st = cuda_sdpa_backward(lh->sdpa, qs, ks, vs, o_sel, d_sel, lse, dqs, dks, dvs,
                                at(workspace, lh->bw_sdpa), stream);
    if (st == LH_OK) st = cuda_stage_end(t, LH_STAGE_ATTENTION_BACKWARD, stream);
    if (st == LH_OK) st = cuda_stage_begin(t, LH_STAGE_POOL_GRAD, stream);
    if (st == LH_OK) st = run_pool_grad(lh, dqs, dks, dvs, inv, dq, dk, dv, stream);
    if (st == LH_OK) st = cuda_stage_end(t, LH_STAGE_POOL_GRAD, stream);
    return st;
}

/* ---- stage entry points ----------------------------------------------------------------------- */

lh_status cuda_lighthouse_scores(cuda_lighthouse *lh, const void *q, const void *k,
                                 float *scores_q, float *scores_k, CUstream stream) {
    /* The stage workspace has no room for pooled rows; cuda_lighthouse_gather averages instead. */
    return run_scores(lh, q, k, scores_q, scores_k, NULL, NULL, 0, stream);
}

lh_status cuda_lighthouse_select(cuda_lighthouse *lh, const float *scores_q, const float *scores_k,
                                 int32_t *indices, void *workspace, CUstream stream) {
    /* select_order also writes the inverse map; here it is scratch in the stage workspace. */
    return run_select(lh, scores_q, scores_k, indices, workspace, stream);
}

lh_status cuda_lighthouse_gather(cuda_lighthouse *lh, const void *q, const void *k, const void *v,
                                 const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                                 CUstream stream) {
    return run_gather(lh, q, k, v, indices, NULL, NULL, 0, q_sel, k_sel, v_sel, stream);
}

lh_status cuda_lighthouse_scatter(cuda_lighthouse *lh, const int32_t *indices, const void *o_sel,
                                  void *out, void *workspace, CUstream stream) {
    lh_status st = run_invert(lh, indices, workspace, stream);
    return st == LH_OK ? run_scatter(lh, o_sel, workspace, out, stream) : st;
}

/* ---- the stages one chunk of a chunked (ring or hooked) plan runs ----------------------------- */

lh_status cuda_lighthouse_chunk_select_gather(cuda_lighthouse *lh, const void *q, const void *k,
                                              const void *v, int32_t *indices, void *inv,
                                              float *sq, float *sk, void *pq, void *pk, void *qs,
                                              void *ks, void *vs, CUstream stream) {
    lh_status st = run_scores(lh, q, k, sq, sk, pq, pk, 1, stream);
    if (st == LH_OK) st = clear_inv(lh, inv, stream);
    if (st == LH_OK) st = run_select(lh, sq, sk, indices, inv, stream);
    if (st == LH_OK) st = run_gather(lh, q, k, v, indices, pq, pk, 1, qs, ks, vs, stream);
    return st;
}

lh_status cuda_lighthouse_chunk_scatter(cuda_lighthouse *lh, const void *o_sel, const void *inv,
                                        void *out, CUstream stream) {
    return run_scatter(lh, o_sel, inv, out, stream);
}

lh_status cuda_lighthouse_chunk_regather(cuda_lighthouse *lh, const void *q, const void *k,
                                         const void *v, const void *dout, const int32_t *indices,
                                         void *inv, void *qs, void *ks, void *vs, void *d_sel,
                                         CUstream stream) {
    lh_status st = run_invert(lh, indices, inv, stream);
    if (st == LH_OK) st = run_gather(lh, q, k, v, indices, NULL, NULL, 0, qs, ks, vs, stream);
    if (st == LH_OK) st = run_gather_dout(lh, dout, indices, d_sel, stream);
    return st;
}

lh_status cuda_lighthouse_chunk_gather_dout(cuda_lighthouse *lh, const void *dout,
                                            const int32_t *indices, void *d_sel, CUstream stream) {
    return run_gather_dout(lh, dout, indices, d_sel, stream);
}

lh_status cuda_lighthouse_chunk_pool_grad(cuda_lighthouse *lh, const void *dqs, const void *dks,
                                          const void *dvs, const void *inv, void *dq, void *dk,
                                          void *dv, CUstream stream) {
    return run_pool_grad(lh, dqs, dks, dvs, inv, dq, dk, dv, stream);
}
