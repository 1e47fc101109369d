/* cuda_cp.c - forward and backward of chunked plans (see cuda_cp.h). */
#include "cuda_cp.h"

#include <stdlib.h>

#include "cuda_layout.h"

static char *at(void *base, int64_t off) { return (char *)base + off; }
static const char *cat(const void *base, int64_t off) { return (const char *)base + off; }
/* A region in `saved` when the plan keeps the sub-sequence (offset sv), else in the workspace at
 * w. The backward only reads what it finds in `saved`. */
static char *kept(const cuda_cp *cp, const void *saved, int64_t sv, void *ws, int64_t w) {
    return cp->keep ? (char *)cat(saved, sv) : at(ws, w);
}

static void layout(cuda_cp *cp, int64_t attn_bytes) {
    const lh_config *c = &cp->chunk;
    bool lighthouse = cp->lh != NULL;
    int64_t rows = c->batch * c->heads * c->s_chunk;
    cp->es = (int64_t)lh_dtype_size(c->dtype);
    cp->cb = rows * c->head_dim * cp->es;
    cp->lb = rows * 4;
    cp->ib = rows * 4;
    cp->invb = c->batch * c->heads * c->s_total * 4;
    int64_t C = cp->C, T = cp->cfg.tensor_seq_len;
    (void)T;
    cp->q_tok = (c->layout == LH_LAYOUT_BNHD ? c->heads * c->head_dim : c->head_dim) * cp->es;
    cp->kv_tok = (c->layout == LH_LAYOUT_BNHD ? c->kv_heads * c->head_dim : c->head_dim) * cp->es;

    /* As without chunks (cuda_lighthouse.c): the forward gathers straight into `saved`, so the
     * backward gathers nothing again. */
    bool keep = cp->keep = lighthouse && !cp->cfg.recompute_subseq;
    int64_t end = 0;
    cp->sv_idx = lighthouse ? lh_region(&end, C * cp->ib) : 0;
    cp->sv_o = lh_region(&end, C * cp->cb);
    cp->sv_lse = lh_region(&end, C * cp->lb);
    cp->sv_q = keep ? lh_region(&end, C * cp->cb) : -1;
    cp->sv_k = keep ? lh_region(&end, C * cp->cb) : -1;
    cp->sv_v = keep ? lh_region(&end, C * cp->cb) : -1;
    cp->sv_inv = keep ? lh_region(&end, C * cp->invb) : -1;
    cp->saved_bytes = end;

    end = 0;
    if (lighthouse) {
        /* Scores and the pooled coarsest-level rows serve one chunk at a time: its scores,
         * selection and gather run on the stream before the next chunk's scores overwrite
         * them, so the chunks share one region each (unlike inv, which scatter needs later). */
        cp->f_sq = lh_region(&end, c->batch * c->heads * c->s_total * 4);
        cp->f_sk = lh_region(&end, c->batch * c->kv_heads * c->s_total * 4);
        cp->f_pq = lh_region(&end, cp->lh->pooled_q_bytes);
        cp->f_pk = lh_region(&end, cp->lh->pooled_k_bytes);
    }
    cp->f_inv = lighthouse && !keep ? lh_region(&end, C * cp->invb) : -1;
    cp->f_q = keep ? -1 : lh_region(&end, C * cp->cb);
    cp->f_k = keep ? -1 : lh_region(&end, C * cp->cb);
    cp->f_v = keep ? -1 : lh_region(&end, C * cp->cb);
    cp->f_attn = lh_region(&end, attn_bytes);
    cp->fwd_bytes = end;

    end = 0;
    cp->b_inv = lighthouse && !keep ? lh_region(&end, C * cp->invb) : -1;
    cp->b_q = keep ? -1 : lh_region(&end, C * cp->cb);
    cp->b_k = keep ? -1 : lh_region(&end, C * cp->cb);
    cp->b_v = keep ? -1 : lh_region(&end, C * cp->cb);
    cp->b_do = lh_region(&end, C * cp->cb);
    cp->b_dq = lh_region(&end, C * cp->cb);
    cp->b_dk = lh_region(&end, C * cp->cb);
    cp->b_dv = lh_region(&end, C * cp->cb);
    cp->b_attn = lh_region(&end, attn_bytes);
    cp->bwd_bytes = end;
}

lh_status cuda_cp_create(const cuda_lighthouse_env *env, const lh_config *cfg, cuda_lighthouse *lh,
                         cuda_ring *attn, cuda_cp **out, lh_plan_sizes *sizes) {
    cuda_cp *cp = calloc(1, sizeof *cp);
    if (!cp) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating a chunked CUDA plan failed");
    cp->cu = env->cu;
    cp->cfg = *cfg;
    lh_config_chunk(cfg, &cp->chunk);
    cp->C = cfg->chunks;
    cp->attn = attn;
    lh_status st = LH_OK;
    if (cfg->mode == LH_MODE_LIGHTHOUSE) {
        if (lh && !cfg->ring) {
            cp->lh = lh;
        } else {
            lh_plan_sizes ignored;
            cuda_lighthouse_env chunk_env = *env;
            chunk_env.no_sdpa = true; /* the ring is the attention step */
            st = cuda_lighthouse_plan_create(&chunk_env, &cp->chunk, &cp->lh, &ignored);
            cp->owns_lh = st == LH_OK;
        }
    }
    if (st != LH_OK) {
        free(cp);
        return st;
    }
    layout(cp, attn->workspace_bytes);
    sizes->saved_bytes = cp->saved_bytes;
    sizes->fwd_workspace_bytes = cp->fwd_bytes;
    sizes->bwd_workspace_bytes = cp->bwd_bytes;
    *out = cp;
    return LH_OK;
}

void cuda_cp_destroy(cuda_cp *cp) {
    if (!cp) return;
    if (cp->owns_lh) cuda_lighthouse_plan_destroy(cp->lh);
    free(cp);
}

/* ---- dense chunks: packing between the shard and chunk-major sub-sequences ------------------ */

static void shard_strides(const cuda_cp *cp, int64_t heads, int64_t s[3]) {
    const lh_config *c = &cp->cfg;
    int64_t T = c->tensor_seq_len, d = c->head_dim;
    if (c->layout == LH_LAYOUT_BNHD) s[0] = T * heads * d, s[1] = heads * d, s[2] = d;
    else s[0] = heads * T * d, s[1] = d, s[2] = T * d;
}

static void sel_strides(const cuda_cp *cp, int64_t s[3]) {
    const lh_config *c = &cp->chunk;
    s[0] = c->heads * c->s_chunk * c->head_dim, s[1] = c->head_dim, s[2] = c->s_chunk * c->head_dim;
}

/* shard chunk j (q-like when kv = false) -> sub-sequence chunk j, kv heads repeated per query head */
static lh_status pack_in(cuda_cp *cp, const void *src, void *dst, int j, bool kv, CUstream s) {
    const lh_config *c = &cp->cfg;
    int64_t ss[3], ds[3];
    shard_strides(cp, kv ? c->kv_heads : c->heads, ss);
    sel_strides(cp, ds);
    int64_t tok = kv ? cp->kv_tok : cp->q_tok;
    return cuda_ring_pack(cp->attn, cat(src, j * cp->chunk.chunk_len * tok), at(dst, j * cp->cb),
                          cp->chunk.chunk_len, c->heads, kv ? c->heads / c->kv_heads : 1, 1, ss,
                          ds, s);
}

/* sub-sequence chunk j -> shard chunk j; kv = true sums each kv head's group of query heads */
static lh_status pack_out(cuda_cp *cp, const void *src, void *dst, int j, bool kv, CUstream s) {
    const lh_config *c = &cp->cfg;
    int64_t ss[3], ds[3];
    sel_strides(cp, ss);
    shard_strides(cp, kv ? c->kv_heads : c->heads, ds);
    int64_t tok = kv ? cp->kv_tok : cp->q_tok;
    return cuda_ring_pack(cp->attn, cat(src, j * cp->cb), at(dst, j * cp->chunk.chunk_len * tok),
                          cp->chunk.chunk_len, kv ? c->kv_heads : c->heads, 1,
                          kv ? c->heads / c->kv_heads : 1, ss, ds, s);
}

/* ---- the attention step: the caller's hook or the built-in one ------------------------------- */

static lh_status attention_forward(cuda_cp *cp, const void *qs, const void *ks, const void *vs,
                                   void *o_sel, float *lse, void *ws, CUstream s) {
    const lh_config *c = &cp->cfg;
    if (c->forward_hook) {
        lh_status st = c->forward_hook(c->hook_user_data, c->handle, qs, ks, vs, o_sel, lse, s);
        if (st != LH_OK)
            return lh_fail(st, "the attention forward hook returned %s%s%s", lh_status_string(st),
                           *lh_error_message() ? ": " : "", lh_error_message());
        return LH_OK;
    }
    return cuda_ring_forward(cp->attn, qs, ks, vs, o_sel, lse, ws, s);
}

static lh_status attention_backward(cuda_cp *cp, const void *qs, const void *ks, const void *vs,
                                    const void *o_sel, const float *lse, const void *d_sel,
                                    void *dqs, void *dks, void *dvs, void *ws, CUstream s) {
    const lh_config *c = &cp->cfg;
    if (c->backward_hook) {
        lh_status st = c->backward_hook(c->hook_user_data, c->handle, qs, ks, vs, o_sel, lse, d_sel,
                                        dqs, dks, dvs, s);
        if (st != LH_OK)
            return lh_fail(st, "the attention backward hook returned %s%s%s", lh_status_string(st),
                           *lh_error_message() ? ": " : "", lh_error_message());
        return LH_OK;
    }
    return cuda_ring_backward(cp->attn, qs, ks, vs, o_sel, lse, d_sel, dqs, dks, dvs, ws, s);
}

/* ---- forward and backward -------------------------------------------------------------------- */

lh_status cuda_cp_forward(cuda_cp *cp, const void *q, const void *k, const void *v, void *out,
                          void *saved, void *ws, CUstream s) {
    char *qs = kept(cp, saved, cp->sv_q, ws, cp->f_q), *ks = kept(cp, saved, cp->sv_k, ws, cp->f_k);
    char *vs = kept(cp, saved, cp->sv_v, ws, cp->f_v), *inv = kept(cp, saved, cp->sv_inv, ws, cp->f_inv);
    char *o_sel = at(saved, cp->sv_o);
    float *lse = (float *)at(saved, cp->sv_lse);
    int64_t L = cp->chunk.chunk_len;
    lh_status st = LH_OK;
    for (int j = 0; j < cp->C && st == LH_OK; j++) {
        if (cp->lh)
            st = cuda_lighthouse_chunk_select_gather(
                cp->lh, cat(q, j * L * cp->q_tok), cat(k, j * L * cp->kv_tok),
                cat(v, j * L * cp->kv_tok), (int32_t *)at(saved, cp->sv_idx + j * cp->ib),
                inv + j * cp->invb, (float *)at(ws, cp->f_sq), (float *)at(ws, cp->f_sk),
                at(ws, cp->f_pq), at(ws, cp->f_pk), qs + j * cp->cb, ks + j * cp->cb,
                vs + j * cp->cb, s);
        else {
            st = pack_in(cp, q, qs, j, false, s);
            if (st == LH_OK) st = pack_in(cp, k, ks, j, true, s);
            if (st == LH_OK) st = pack_in(cp, v, vs, j, true, s);
        }
    }
    if (st == LH_OK) st = attention_forward(cp, qs, ks, vs, o_sel, lse, at(ws, cp->f_attn), s);
    for (int j = 0; j < cp->C && st == LH_OK; j++) {
        if (cp->lh)
            st = cuda_lighthouse_chunk_scatter(cp->lh, o_sel + j * cp->cb, inv + j * cp->invb,
                                               at(out, j * L * cp->q_tok), s);
        else
            st = pack_out(cp, o_sel, out, j, false, s);
    }
    /* A rank that fails must not leave its peers waiting at the ring's next rendezvous. */
    if (st != LH_OK) cuda_ring_abort(cp->attn);
    return st;
}

lh_status cuda_cp_backward(cuda_cp *cp, const void *q, const void *k, const void *v,
                           const void *dout, const void *saved, void *dq, void *dk, void *dv,
                           void *ws, CUstream s) {
    /* kept by the forward in `saved`, or rebuilt here in the workspace */
    char *qs = kept(cp, saved, cp->sv_q, ws, cp->b_q), *ks = kept(cp, saved, cp->sv_k, ws, cp->b_k);
    char *vs = kept(cp, saved, cp->sv_v, ws, cp->b_v), *inv = kept(cp, saved, cp->sv_inv, ws, cp->b_inv);
    char *d_sel = at(ws, cp->b_do);
    char *dqs = at(ws, cp->b_dq), *dks = at(ws, cp->b_dk), *dvs = at(ws, cp->b_dv);
    const char *o_sel = cat(saved, cp->sv_o);
    const float *lse = (const float *)cat(saved, cp->sv_lse);
    int64_t L = cp->chunk.chunk_len;
    lh_status st = LH_OK;
    for (int j = 0; j < cp->C && st == LH_OK; j++) {
        const int32_t *indices = (const int32_t *)cat(saved, cp->sv_idx + j * cp->ib);
        if (cp->lh && cp->keep)
            st = cuda_lighthouse_chunk_gather_dout(cp->lh, cat(dout, j * L * cp->q_tok), indices,
                                                   d_sel + j * cp->cb, s);
        else if (cp->lh)
            st = cuda_lighthouse_chunk_regather(
                cp->lh, cat(q, j * L * cp->q_tok), cat(k, j * L * cp->kv_tok),
                cat(v, j * L * cp->kv_tok), cat(dout, j * L * cp->q_tok), indices,
                inv + j * cp->invb, qs + j * cp->cb, ks + j * cp->cb, vs + j * cp->cb,
                d_sel + j * cp->cb, s);
        else {
            st = pack_in(cp, q, qs, j, false, s);
            if (st == LH_OK) st = pack_in(cp, k, ks, j, true, s);
            if (st == LH_OK) st = pack_in(cp, v, vs, j, true, s);
            if (st == LH_OK) st = pack_in(cp, dout, d_sel, j, false, s);
        }
    }
    if (st == LH_OK)
        st = attention_backward(cp, qs, ks, vs, o_sel, lse, d_sel, dqs, dks, dvs,
                                at(ws, cp->b_attn), s);
    for (int j = 0; j < cp->C && st == LH_OK; j++) {
        if (cp->lh)
            st = cuda_lighthouse_chunk_pool_grad(
                cp->lh, dqs + j * cp->cb, dks + j * cp->cb, dvs + j * cp->cb,
                inv + j * cp->invb, at(dq, j * L * cp->q_tok),
                at(dk, j * L * cp->kv_tok), at(dv, j * L * cp->kv_tok), s);
        else {
            st = pack_out(cp, dqs, dq, j, false, s);
            if (st == LH_OK) st = pack_out(cp, dks, dk, j, true, s);
            if (st == LH_OK) st = pack_out(cp, dvs, dv, j, true, s);
        }
    }
    if (st != LH_OK) cuda_ring_abort(cp->attn);
    return st;
}
