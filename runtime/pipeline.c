/*
 * pipeline.c - lh_forward and lh_backward of every plan on every backend: the stage order, the
 * loop over the local chunks, the attention step and stage timing (docs/architecture.md).
 *
 *   forward:  per chunk scores, select, gather; the attention step over all chunks at once;
 *             per chunk scatter.
 *   backward: per chunk regather (unless saved keeps the sub-sequence), gather_dout; the
 *             attention step backward; per chunk pool_grad.
 *
 * A plan without a ring has one chunk; a ring plan two (chunk r, then chunk 2W-1-r of the
 * shard). Dense chunks run the backend's dense stage table (packing their tokens); a dense plan
 * without ring or hooks has no chunks: its attention runs on the caller's tensors. A failure
 * aborts a local ring, so that no peer waits for this rank at the next rendezvous.
 */
#include <stdio.h>

#include "pipeline.h"

void lh_pipeline_init(lh_pipeline *p, const lh_pipeline_ops *ops, const lh_config *cfg,
                      const lh_backend_sizes *sizes, lh_plan_sizes *out) {
    p->ops = ops;
    p->cfg = cfg;
    p->inv_bytes = sizes->inv_bytes;
    /* The scorer is the scores stage: the backend's norm scorer, its dilated one, or none (the
     * caller's scores, lh_forward_with_scores). */
    if (ops->lighthouse) p->lighthouse = *ops->lighthouse;
    if (cfg->scorer == LH_SCORER_DILATED) p->lighthouse.scores = ops->dilated_scores;
    if (cfg->scorer == LH_SCORER_EXTERNAL) p->lighthouse.scores = NULL;
    lh_buffer_map_build(cfg, sizes, &p->buffers, &p->keep);
    out->saved_bytes = p->buffers.bytes[LH_BUF_SAVED];
    out->fwd_workspace_bytes = p->buffers.bytes[LH_BUF_FORWARD];
    out->bwd_workspace_bytes = p->buffers.bytes[LH_BUF_BACKWARD];
    out->stage_workspace_bytes = p->buffers.bytes[LH_BUF_STAGE];
    out->attention_workspace_bytes = p->buffers.bytes[LH_BUF_ATTENTION];
}

static bool plain_dense(const lh_config *c) {
    return c->mode == LH_MODE_DENSE && !c->ring && !c->forward_hook;
}

/* ---- stage timing ---------------------------------------------------------------------------- */

static lh_status timing_open(lh_pipeline *p, lh_stage first, lh_stage last, void *stream) {
    if (!p->cfg->stage_timing || !p->ops->timing_open) return LH_OK;
    return p->ops->timing_open(p, first, last, stream);
}

static lh_status timing_mark(lh_pipeline *p, lh_stage stage, bool end, void *stream) {
    if (!p->cfg->stage_timing || !p->ops->timing_mark) return LH_OK;
    return p->ops->timing_mark(p, stage, end, stream);
}

/* Runs one stage of one chunk between its timing marks (a mode without the stage skips it). */
static lh_status run_stage(lh_pipeline *p, lh_stage stage, lh_stage_fn *fn, const lh_chunk *chunk,
                           void *stream) {
    if (!fn) return LH_OK;
    lh_status st = timing_mark(p, stage, false, stream);
    if (st == LH_OK) st = fn(p, chunk, stream);
    if (st == LH_OK) st = timing_mark(p, stage, true, stream);
    return st;
}

/* ---- the ring -------------------------------------------------------------------------------- */

/* Before a call of a ring plan enqueues or writes anything: the backend's checks, and at the
 * plan's first call the comparison of the ranks' configurations. On a local ring the plan meets
 * its peers once in a round of its own: a plan with hooks may never meet the library's
 * rendezvous otherwise (its hooks run a ring of their own), and every plan of the ring does the
 * same, so that hooks and built-in rings keep the same rounds. An NCCL ring compares in its
 * backend's check. */
static lh_status ring_ready(lh_pipeline *p, void *stream) {
    const lh_config *c = p->cfg;
    if (!c->ring) return LH_OK;
    bool first = !p->ring_confirmed;
    lh_status st = p->ops->ring_check ? p->ops->ring_check(p, first, stream) : LH_OK;
    if (st == LH_OK && first && c->ring->kind == LH_RING_LOCAL)
        st = lh_ring_local_confirm(c->ring, (int)c->cp_rank);
    if (st == LH_OK) p->ring_confirmed = true;
    return st;
}

/* ---- the chunks ------------------------------------------------------------------------------ */

static void *region(const lh_pipeline *p, lh_buffer b, lh_region r, const void *base) {
    return lh_buffer_at(&p->buffers, b, r, base);
}

/* The region in saved if the plan keeps it there, else in the call's workspace. */
static void *kept_or(const lh_pipeline *p, lh_region r, const void *saved, lh_buffer ws_buffer,
                     const void *ws) {
    void *kept = region(p, LH_BUF_SAVED, r, saved);
    return kept ? kept : region(p, ws_buffer, r, ws);
}

/* The forward's region: in the workspace where the forward stages it (or saved does not keep
 * it), else in saved. */
static void *staged_or_saved(const lh_pipeline *p, lh_region r, void *saved, void *ws) {
    void *staged = region(p, LH_BUF_FORWARD, r, ws);
    return staged ? staged : region(p, LH_BUF_SAVED, r, saved);
}

/* After a successful attention step: what the forward staged in the workspace and saved keeps
 * reaches saved now, so a step that fails (a ring, a hook) leaves saved as it was. */
static lh_status commit_staged(lh_pipeline *p, lh_chunk *all, void *saved, void *ws,
                               void *stream) {
    static const lh_region kept[] = {LH_REGION_INDICES, LH_REGION_Q_SEL, LH_REGION_K_SEL,
                                     LH_REGION_V_SEL, LH_REGION_INV};
    void **views[] = {(void **)&all->indices, &all->q_sel, &all->k_sel, &all->v_sel, &all->inv};
    lh_status st = LH_OK;
    for (size_t i = 0; i < sizeof kept / sizeof kept[0] && st == LH_OK; i++) {
        void *from = region(p, LH_BUF_FORWARD, kept[i], ws);
        void *to = region(p, LH_BUF_SAVED, kept[i], saved);
        if (!from || !to) continue;
        st = p->ops->copy(p, to, from, (size_t)p->buffers.size[LH_BUF_SAVED][kept[i]], stream);
        *views[i] = to;
    }
    return st;
}

static const void *shift(const void *base, int64_t bytes) {
    return base ? (const char *)base + bytes : NULL;
}

/* Chunk j's view: its tokens of the caller's tensors and its slices of the sub-sequence. */
static lh_chunk chunk_of(const lh_pipeline *p, const lh_chunk *base, int64_t j) {
    const lh_config *c = p->cfg;
    int64_t es = (int64_t)lh_dtype_size(c->dtype);
    int64_t q_tok = lh_tensor_offset(c, c->heads, 0, j * c->chunk_len, 0, 0) * es;
    int64_t kv_tok = lh_tensor_offset(c, c->kv_heads, 0, j * c->chunk_len, 0, 0) * es;
    int64_t rows = c->batch * c->heads * c->s_chunk, sel = j * rows * c->head_dim * es;
    lh_chunk ch = *base;
    ch.index = j;
    ch.q = shift(base->q, q_tok), ch.out = (void *)shift(base->out, q_tok);
    ch.dout = shift(base->dout, q_tok), ch.dq = (void *)shift(base->dq, q_tok);
    ch.k = shift(base->k, kv_tok), ch.v = shift(base->v, kv_tok);
    ch.dk = (void *)shift(base->dk, kv_tok), ch.dv = (void *)shift(base->dv, kv_tok);
    ch.indices = base->indices ? base->indices + j * rows : NULL;
    ch.inv = (void *)shift(base->inv, j * p->inv_bytes);
    void **subseq[] = {&ch.q_sel, &ch.k_sel, &ch.v_sel, &ch.o_sel,
                       &ch.do_sel, &ch.dq_sel, &ch.dk_sel, &ch.dv_sel};
    for (size_t i = 0; i < sizeof subseq / sizeof subseq[0]; i++)
        *subseq[i] = (void *)shift(*subseq[i], sel);
    return ch;
}

/* ---- the attention step: the caller's hook, else the backend's own --------------------------- */

static lh_status hook_failed(lh_status st, const char *which) {
    char what[96];
    snprintf(what, sizeof what, "the attention %s hook returned %s", which, lh_status_string(st));
    return *lh_error_message() ? lh_fail_context(st, what) : lh_fail(st, "%s", what);
}

static lh_status attention_forward(lh_pipeline *p, const lh_chunk *all, float *lse, void *ws,
                                   void *stream) {
    const lh_config *c = p->cfg;
    if (!c->forward_hook)
        return p->ops->attention_forward(p, all->q_sel, all->k_sel, all->v_sel, all->o_sel, lse,
                                         ws, stream);
    lh_status st = c->forward_hook(c->hook_user_data, c->handle, all->q_sel, all->k_sel,
                                   all->v_sel, all->o_sel, lse, stream);
    return st == LH_OK ? st : hook_failed(st, "forward");
}

static lh_status attention_backward(lh_pipeline *p, const lh_chunk *all, const float *lse,
                                    void *ws, void *stream) {
    const lh_config *c = p->cfg;
    if (!c->backward_hook)
        return p->ops->attention_backward(p, all->q_sel, all->k_sel, all->v_sel, all->o_sel, lse,
                                          all->do_sel, all->dq_sel, all->dk_sel, all->dv_sel, ws,
                                          stream);
    lh_status st = c->backward_hook(c->hook_user_data, c->handle, all->q_sel, all->k_sel,
                                    all->v_sel, all->o_sel, lse, all->do_sel, all->dq_sel,
                                    all->dk_sel, all->dv_sel, stream);
    return st == LH_OK ? st : hook_failed(st, "backward");
}

/* ---- forward --------------------------------------------------------------------------------- */

/* The caller's scores [C, B, H(kv), S_total] (SCORER = EXTERNAL), or NULL. */
typedef struct given_scores {
    const float *q, *k;
} given_scores;

static lh_status chunks_forward(lh_pipeline *p, const lh_stage_ops *stages, lh_chunk *all,
                                const given_scores *given, void *saved, void *ws_base, float *lse,
                                void *ws, void *stream) {
    const lh_config *c = p->cfg;
    lh_status st = LH_OK;
    for (int64_t j = 0; j < c->chunks && st == LH_OK; j++) {
        lh_chunk ch = chunk_of(p, all, j);
        if (given->q) {
            ch.scores_q = (float *)given->q + j * c->batch * c->heads * c->s_total;
            ch.scores_k = (float *)given->k + j * c->batch * c->kv_heads * c->s_total;
        }
        st = run_stage(p, LH_STAGE_SCORES, stages->scores, &ch, stream);
        if (st == LH_OK) st = run_stage(p, LH_STAGE_SELECT, stages->select, &ch, stream);
        if (st == LH_OK) st = run_stage(p, LH_STAGE_GATHER, stages->gather, &ch, stream);
    }
    if (st == LH_OK) st = timing_mark(p, LH_STAGE_ATTENTION_FORWARD, false, stream);
    if (st == LH_OK) st = attention_forward(p, all, lse, ws, stream);
    if (st == LH_OK) st = timing_mark(p, LH_STAGE_ATTENTION_FORWARD, true, stream);
    if (st == LH_OK) st = commit_staged(p, all, saved, ws_base, stream);
    for (int64_t j = 0; j < c->chunks && st == LH_OK; j++) {
        lh_chunk ch = chunk_of(p, all, j);
        st = run_stage(p, LH_STAGE_SCATTER, stages->scatter, &ch, stream);
    }
    return st;
}

static lh_status forward(void *plan, const void *q, const void *k, const void *v,
                         const given_scores *given, void *out, void *saved, void *workspace,
                         void *stream) {
    lh_pipeline *p = plan;
    const lh_config *c = p->cfg;
    lh_status st = p->ops->enter ? p->ops->enter(plan) : LH_OK;
    if (st != LH_OK) return st;
    void *attention_ws = region(p, LH_BUF_FORWARD, LH_REGION_ATTENTION, workspace);
    float *lse = region(p, LH_BUF_SAVED, LH_REGION_LSE, saved);
    st = ring_ready(p, stream);
    if (st == LH_OK) st = timing_open(p, LH_STAGE_SCORES, LH_STAGE_SCATTER, stream);
    if (st == LH_OK && plain_dense(c)) {
        st = timing_mark(p, LH_STAGE_ATTENTION_FORWARD, false, stream);
        if (st == LH_OK) st = p->ops->dense_forward(p, q, k, v, out, lse, attention_ws, stream);
        if (st == LH_OK) st = timing_mark(p, LH_STAGE_ATTENTION_FORWARD, true, stream);
    } else if (st == LH_OK) {
        lh_chunk all = {
            .q = q, .k = k, .v = v, .out = out,
            .indices = staged_or_saved(p, LH_REGION_INDICES, saved, workspace),
            .inv = staged_or_saved(p, LH_REGION_INV, saved, workspace),
            .scores_q = region(p, LH_BUF_FORWARD, LH_REGION_SCORES_Q, workspace),
            .scores_k = region(p, LH_BUF_FORWARD, LH_REGION_SCORES_K, workspace),
            .pooled_q = region(p, LH_BUF_FORWARD, LH_REGION_POOLED_Q, workspace),
            .pooled_k = region(p, LH_BUF_FORWARD, LH_REGION_POOLED_K, workspace),
            .scorer = region(p, LH_BUF_FORWARD, LH_REGION_SCORER, workspace),
            .q_sel = staged_or_saved(p, LH_REGION_Q_SEL, saved, workspace),
            .k_sel = staged_or_saved(p, LH_REGION_K_SEL, saved, workspace),
            .v_sel = staged_or_saved(p, LH_REGION_V_SEL, saved, workspace),
            .o_sel = region(p, LH_BUF_SAVED, LH_REGION_O_SEL, saved),
            .scratch = attention_ws, /* the stages run before the attention needs it */
        };
        const lh_stage_ops *stages = c->mode == LH_MODE_LIGHTHOUSE ? &p->lighthouse : p->ops->dense;
        st = chunks_forward(p, stages, &all, given, saved, workspace, lse, attention_ws, stream);
    }
    if (st == LH_OK && p->ops->seal_saved) p->ops->seal_saved(p, saved);
    if (st != LH_OK && c->ring && c->ring->kind == LH_RING_LOCAL) lh_ring_local_abort(c->ring);
    if (p->ops->leave) p->ops->leave(plan);
    return st;
}

lh_status lh_pipeline_forward(void *plan, const void *q, const void *k, const void *v, void *out,
                              void *saved, void *workspace, void *stream) {
    const given_scores none = {NULL, NULL};
    return forward(plan, q, k, v, &none, out, saved, workspace, stream);
}

lh_status lh_pipeline_forward_with_scores(void *plan, const void *q, const void *k,
                                          const void *v, const float *scores_q,
                                          const float *scores_k, void *out, void *saved,
                                          void *workspace, void *stream) {
    const given_scores given = {scores_q, scores_k};
    return forward(plan, q, k, v, &given, out, saved, workspace, stream);
}

/* ---- backward -------------------------------------------------------------------------------- */

static lh_status chunks_backward(lh_pipeline *p, const lh_stage_ops *stages, const lh_chunk *all,
                                 const float *lse, void *ws, void *stream) {
    const lh_config *c = p->cfg;
    lh_status st = LH_OK;
    for (int64_t j = 0; j < c->chunks && st == LH_OK; j++) {
        lh_chunk ch = chunk_of(p, all, j);
        if (!p->keep) st = run_stage(p, LH_STAGE_REGATHER, stages->regather, &ch, stream);
        if (st == LH_OK) st = run_stage(p, LH_STAGE_GATHER_DOUT, stages->gather_dout, &ch, stream);
    }
    if (st == LH_OK) st = timing_mark(p, LH_STAGE_ATTENTION_BACKWARD, false, stream);
    if (st == LH_OK) st = attention_backward(p, all, lse, ws, stream);
    if (st == LH_OK) st = timing_mark(p, LH_STAGE_ATTENTION_BACKWARD, true, stream);
    for (int64_t j = 0; j < c->chunks && st == LH_OK; j++) {
        lh_chunk ch = chunk_of(p, all, j);
        st = run_stage(p, LH_STAGE_POOL_GRAD, stages->pool_grad, &ch, stream);
    }
    return st;
}

lh_status lh_pipeline_backward(void *plan, const void *q, const void *k, const void *v,
                               const void *out, const void *dout, const void *saved, void *dq,
                               void *dk, void *dv, void *workspace, void *stream) {
    lh_pipeline *p = plan;
    const lh_config *c = p->cfg;
    lh_status st = p->ops->enter ? p->ops->enter(plan) : LH_OK;
    if (st != LH_OK) return st;
    void *attention_ws = region(p, LH_BUF_BACKWARD, LH_REGION_ATTENTION, workspace);
    const float *lse = region(p, LH_BUF_SAVED, LH_REGION_LSE, saved);
    st = ring_ready(p, stream);
    /* Before anything reads saved (and before the ring's exchanges: a refused rank aborts the
     * ring). */
    if (st == LH_OK && p->ops->check_saved) st = p->ops->check_saved(p, saved);
    if (st == LH_OK) st = timing_open(p, LH_STAGE_REGATHER, LH_STAGE_POOL_GRAD, stream);
    if (st == LH_OK && plain_dense(c)) {
        st = timing_mark(p, LH_STAGE_ATTENTION_BACKWARD, false, stream);
        if (st == LH_OK)
            st = p->ops->dense_backward(p, q, k, v, out, dout, lse, dq, dk, dv, attention_ws,
                                        stream);
        if (st == LH_OK) st = timing_mark(p, LH_STAGE_ATTENTION_BACKWARD, true, stream);
    } else if (st == LH_OK) {
        lh_chunk all = {
            .q = q, .k = k, .v = v, .dout = dout, .dq = dq, .dk = dk, .dv = dv,
            .indices = region(p, LH_BUF_SAVED, LH_REGION_INDICES, saved),
            .inv = kept_or(p, LH_REGION_INV, saved, LH_BUF_BACKWARD, workspace),
            .q_sel = kept_or(p, LH_REGION_Q_SEL, saved, LH_BUF_BACKWARD, workspace),
            .k_sel = kept_or(p, LH_REGION_K_SEL, saved, LH_BUF_BACKWARD, workspace),
            .v_sel = kept_or(p, LH_REGION_V_SEL, saved, LH_BUF_BACKWARD, workspace),
            .o_sel = region(p, LH_BUF_SAVED, LH_REGION_O_SEL, saved),
            .do_sel = region(p, LH_BUF_BACKWARD, LH_REGION_DO_SEL, workspace),
            .dq_sel = region(p, LH_BUF_BACKWARD, LH_REGION_DQ_SEL, workspace),
            .dk_sel = region(p, LH_BUF_BACKWARD, LH_REGION_DK_SEL, workspace),
            .dv_sel = region(p, LH_BUF_BACKWARD, LH_REGION_DV_SEL, workspace),
            .scratch = attention_ws,
        };
        const lh_stage_ops *stages = c->mode == LH_MODE_LIGHTHOUSE ? &p->lighthouse : p->ops->dense;
        st = chunks_backward(p, stages, &all, lse, attention_ws, stream);
    }
    if (st != LH_OK && c->ring && c->ring->kind == LH_RING_LOCAL) lh_ring_local_abort(c->ring);
    if (p->ops->leave) p->ops->leave(plan);
    return st;
}
