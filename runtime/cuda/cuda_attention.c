/*
 * cuda_attention.c - the attention the pipeline runs on the GPU: the attention step on
 * chunk-major sub-sequences (causal cuDNN SDPA without a ring, cuda_ring.c on one), both for
 * lh_forward / lh_backward and for lh_attention_forward / _backward; and dense attention on the
 * caller's tensors (cuDNN SDPA with the tensors' own strides).
 */
#include <stdlib.h>

#include "cuda_internal.h"

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ---- the step's plan ------------------------------------------------------------------------- */

void cuda_step_sdpa_shape(const lh_config *c, bool full, lh_sdpa_shape *shape) {
    int64_t s = c->s_chunk;
    *shape = (lh_sdpa_shape){.b = c->batch, .h = c->heads, .hkv = c->heads, .s = s,
                             .d = c->head_dim, .dtype = c->dtype, .scale = c->scale,
                             .full = full};
    lh_sdpa_layout_strides(false, c->heads, s, c->head_dim, shape->q_strides);
    lh_sdpa_layout_strides(false, c->heads, s, c->head_dim, shape->kv_strides);
}

static lh_status build_sdpa(cuda_context *cc, const lh_config *c, const lh_cudnn_api *dnn,
                            bool full, cuda_setup *setup, lh_sdpa_plan **out) {
    lh_sdpa_shape shape;
    cuda_step_sdpa_shape(c, full, &shape);
    lh_status st = cuda_dnn_sdpa_get(cc, dnn, &shape, out, setup);
    return st == LH_OK ? st
                       : lh_fail_context(st, full ? "building the ring's full-block SDPA plan"
                                                  : "building the causal SDPA plan of a chunk");
}

/* The workspace: without a ring, the causal SDPA's; on a ring, cuda_ring.c's regions. */
static void layout(cuda_attention *a, const lh_config *c) {
    int64_t rows = c->batch * c->heads * c->s_chunk, end = 0;
    a->cb = rows * c->head_dim * (int64_t)lh_dtype_size(c->dtype);
    a->cb32 = rows * c->head_dim * 4;
    a->lb = rows * 4;
    if (!a->has_ring) {
        a->workspace_bytes = max64(cuda_sdpa_fwd_workspace_bytes(a->causal),
                                   cuda_sdpa_bwd_workspace_bytes(a->causal));
        return;
    }
    int64_t fws = max64(cuda_sdpa_fwd_workspace_bytes(a->causal),
                        cuda_sdpa_fwd_workspace_bytes(a->full));
    int64_t bws = max64(cuda_sdpa_bwd_workspace_bytes(a->causal),
                        cuda_sdpa_bwd_workspace_bytes(a->full));
    const int64_t al = 256; /* like cudaMalloc'd memory, as the buffers of runtime/buffers.c */
    /* forward: two K/V blocks (K of both chunks, then V of both), one block's partial result, the
     * fp32 accumulators of both chunks and two lse buffers per chunk (the merge alternates) */
    a->f_kv[0] = lh_region_append(&end, 4 * a->cb, al);
    a->f_kv[1] = lh_region_append(&end, 4 * a->cb, al);
    a->f_opart = lh_region_append(&end, a->cb, al);
    a->f_lpart = lh_region_append(&end, a->lb, al);
    a->f_acc = lh_region_append(&end, 2 * a->cb32, al);
    a->f_lse = lh_region_append(&end, 4 * a->lb, al);
    a->f_sdpa = lh_region_append(&end, fws, al);
    a->fwd_bytes = end;
    /* backward: K/V blocks, dK/dV accumulators of a travelling block (dK of both chunks, then dV),
     * dQ accumulators, the partial dq, dk, dv of one block */
    end = 0;
    a->b_kv[0] = lh_region_append(&end, 4 * a->cb, al);
    a->b_kv[1] = lh_region_append(&end, 4 * a->cb, al);
    a->b_dkv[0] = lh_region_append(&end, 4 * a->cb32, al);
    a->b_dkv[1] = lh_region_append(&end, 4 * a->cb32, al);
    a->b_dq = lh_region_append(&end, 2 * a->cb32, al);
    a->b_part = lh_region_append(&end, 3 * a->cb, al);
    a->b_sdpa = lh_region_append(&end, bws, al);
    a->bwd_bytes = end;
    a->workspace_bytes = max64(a->fwd_bytes, a->bwd_bytes);
}

lh_status cuda_attention_create(cuda_context *cc, const lh_cudnn_api *dnn, const lh_config *cfg,
                                const cuda_kernels *kernels, cuda_setup *setup,
                                cuda_attention **out) {
    cuda_attention *a = calloc(1, sizeof *a);
    if (!a) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating the attention step failed");
    const lh_cu_api *cu = cc->cu;
    a->cu = cu;
    a->cc = cc;
    a->kernels = kernels;
    a->has_ring = cfg->ring != NULL;
    a->world = a->has_ring ? (int)cfg->cp_world : 1;
    a->rank = a->has_ring ? (int)cfg->cp_rank : 0;
    lh_status st = build_sdpa(cc, cfg, dnn, false, setup, &a->causal);
    if (st == LH_OK && a->has_ring) st = build_sdpa(cc, cfg, dnn, true, setup, &a->full);
    if (st == LH_OK && a->has_ring) {
        st = lh_cu_check(cu->StreamCreate(&a->comm, CU_STREAM_NON_BLOCKING),
                         "creating the ring's communication stream");
        CUevent *evs[] = {&a->ev_start, &a->ev_kv, &a->ev_acc, &a->ev_compute, &a->ev_end};
        for (int i = 0; i < 5 && st == LH_OK; i++)
            st = lh_cu_check(cu->EventCreate(evs[i], CU_EVENT_DISABLE_TIMING),
                             "creating the ring's events");
        if (st == LH_OK) st = cuda_transport_init(&a->transport, cu, cfg->ring, a->rank);
    }
    if (st != LH_OK) {
        cuda_attention_destroy(a);
        return st;
    }
    layout(a, cfg);
    *out = a;
    return LH_OK;
}

void cuda_attention_destroy(cuda_attention *a) {
    if (!a) return;
    cuda_transport_destroy(&a->transport);
    CUevent evs[] = {a->ev_start, a->ev_kv, a->ev_acc, a->ev_compute, a->ev_end};
    for (int i = 0; i < 5; i++)
        if (evs[i]) a->cu->EventDestroy(evs[i]);
    if (a->comm) a->cu->StreamDestroy(a->comm);
    cuda_dnn_sdpa_put(a->cc, a->causal);
    cuda_dnn_sdpa_put(a->cc, a->full);
    free(a);
}

/* ---- the step -------------------------------------------------------------------------------- */

lh_status cuda_attention_forward(void *plan, const void *q_sel, const void *k_sel,
                                 const void *v_sel, void *o_sel, float *lse, void *workspace,
                                 void *stream) {
    cuda_attention *a = ((cuda_plan *)plan)->attn;
    if (!a->has_ring)
        return cuda_sdpa_forward(a->causal, q_sel, k_sel, v_sel, o_sel, lse, workspace, stream);
    return cuda_ring_forward(a, q_sel, k_sel, v_sel, o_sel, lse, workspace, stream);
}

lh_status cuda_attention_backward(void *plan, const void *q_sel, const void *k_sel,
                                  const void *v_sel, const void *o_sel, const float *lse,
                                  const void *do_sel, void *dq_sel, void *dk_sel, void *dv_sel,
                                  void *workspace, void *stream) {
    cuda_attention *a = ((cuda_plan *)plan)->attn;
    if (!a->has_ring)
        return cuda_sdpa_backward(a->causal, q_sel, k_sel, v_sel, o_sel, do_sel, lse, dq_sel,
                                  dk_sel, dv_sel, workspace, stream);
    return cuda_ring_backward(a, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel, dv_sel,
                              workspace, stream);
}

static lh_status step_available(const cuda_plan *p) {
    if (p->attn) return LH_OK;
    return lh_fail(LH_ERROR_UNSUPPORTED, "this plan has no separate attention step: %s",
                   p->attn_error);
}

lh_status cuda_attention_forward_entry(void *plan, const void *q_sel, const void *k_sel,
                                       const void *v_sel, void *o_sel, float *lse,
                                       void *workspace, void *stream) {
    lh_status st = step_available(plan);
    if (st == LH_OK) st = cuda_enter(plan);
    if (st != LH_OK) return st;
    st = cuda_attention_forward(plan, q_sel, k_sel, v_sel, o_sel, lse, workspace, stream);
    cuda_leave(plan);
    return st;
}

lh_status cuda_attention_backward_entry(void *plan, const void *q_sel, const void *k_sel,
                                        const void *v_sel, const void *o_sel, const float *lse,
                                        const void *do_sel, void *dq_sel, void *dk_sel,
                                        void *dv_sel, void *workspace, void *stream) {
    lh_status st = step_available(plan);
    if (st == LH_OK) st = cuda_enter(plan);
    if (st != LH_OK) return st;
    st = cuda_attention_backward(plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel,
                                 dv_sel, workspace, stream);
    cuda_leave(plan);
    return st;
}

/* ---- dense attention on the caller's tensors ------------------------------------------------- */

/* Where piece (bg, hg) of a dense plan starts: sequences bg * nb .., query heads hg * nh .. (their
 * key/value heads with them), as byte offsets into q-like and k-like tensors and a row offset
 * into the [B, H, N] log-sum-exp. */
typedef struct dense_piece { int64_t q, kv, lse; } dense_piece;

static dense_piece piece_at(const cuda_plan *p, int64_t bg, int64_t hg) {
    const lh_config *c = &p->cfg;
    int64_t es = (int64_t)lh_dtype_size(c->dtype), group = c->heads / c->kv_heads;
    int64_t b0 = bg * p->dense_nb, h0 = hg * p->dense_nh;
    dense_piece d = {.q = (b0 * p->q_sb + h0 * p->q_sh) * es,
                     .kv = (b0 * p->kv_sb + h0 / group * p->kv_sh) * es,
                     .lse = (b0 * c->heads + h0) * c->seq_len};
    return d;
}

static int64_t pieces(const cuda_plan *p, int64_t *nbg) {
    *nbg = p->cfg.batch / p->dense_nb;
    return *nbg * (p->cfg.heads / p->dense_nh);
}

#define AT(ptr, off) ((char *)(ptr) + (off))

lh_status cuda_dense_forward(void *plan, const void *q, const void *k, const void *v, void *out,
                             float *lse, void *workspace, void *stream) {
    cuda_plan *p = plan;
    int64_t nbg, n = pieces(p, &nbg);
    lh_status st = LH_OK;
    for (int64_t i = 0; i < n && st == LH_OK; i++) {
        dense_piece d = piece_at(p, i % nbg, i / nbg);
        st = cuda_sdpa_forward(p->dense, AT(q, d.q), AT(k, d.kv), AT(v, d.kv), AT(out, d.q),
                               lse + d.lse, workspace, stream);
    }
    return st;
}

lh_status cuda_dense_backward(void *plan, const void *q, const void *k, const void *v,
                              const void *out, const void *dout, const float *lse, void *dq,
                              void *dk, void *dv, void *workspace, void *stream) {
    cuda_plan *p = plan;
    int64_t nbg, n = pieces(p, &nbg);
    lh_status st = LH_OK;
    for (int64_t i = 0; i < n && st == LH_OK; i++) {
        dense_piece d = piece_at(p, i % nbg, i / nbg);
        st = cuda_sdpa_backward(p->dense, AT(q, d.q), AT(k, d.kv), AT(v, d.kv), AT(out, d.q),
                                AT(dout, d.q), lse + d.lse, AT(dq, d.q), AT(dk, d.kv),
                                AT(dv, d.kv), workspace, stream);
    }
    return st;
}
