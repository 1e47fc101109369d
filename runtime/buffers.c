/*
 * buffers.c - the one table of the buffers a plan asks its caller for (docs/memory.md): for each
 * buffer, its regions in order, each with its size as a function of the configuration and the
 * condition under which the plan has it. Offsets and totals follow from the table alone, on every
 * backend; a backend states only the sizes it alone knows (lh_backend_sizes).
 *
 * Words used below: a plan is *chunked* when its attention runs as a step of its own (a ring, or
 * attention hooks); *plain dense* is dense mode without chunks (attention on the caller's
 * tensors, nothing to gather); *kept* means saved holds the gathered sub-sequence.
 */
#include "pipeline.h"

typedef enum size_rule {
    SUBSEQ,          /* DTYPE [C,B,H,S_c,D] */
    ROWS,            /* int32 or fp32 [C,B,H,S_c] */
    INVERSE,         /* C inverse maps */
    SCORES_Q,        /* fp32 [B,H,S_total_c] */
    SCORES_K,        /* fp32 [B,Hkv,S_total_c] */
    POOLED_Q,        /* the backend's */
    POOLED_K,
    SCORER_WS,       /* the backend's, for the plan's scorer */
    ATTENTION_FWD,   /* the attention's workspaces: of a plan without chunks, or of the step */
    ATTENTION_BWD,
    ATTENTION_STEP,
    DENSE_LSE,       /* plain dense: the statistics of its attention, as the backend has them */
    SCRATCH,         /* the backend's stage scratch */
    SAVED_TAG,       /* the backend's tag of saved */
} size_rule;

typedef enum condition {
    ALWAYS,
    LIGHTHOUSE,
    SCORED,          /* Lighthouse with a scorer of its own (not SCORER = EXTERNAL) */
    SUBSEQUENCE,     /* not plain dense: the pipeline has sub-sequence buffers */
    PLAIN_DENSE,
    KEPT,            /* Lighthouse, saved keeps q/k/v_sel and the inverse map */
    NOT_KEPT,        /* sub-sequence buffers that saved does not keep */
    LIGHTHOUSE_NOT_KEPT,
    STAGED,          /* chunked Lighthouse forward of a backend that stages its indices */
    FORWARD_SUBSEQ,  /* the forward's q/k/v_sel: not kept, or kept but staged (chunked) */
    FORWARD_INVERSE, /* the forward's inverse map: likewise */
    STAGE_CALLS,     /* Lighthouse without a ring: the stage entry points exist */
} condition;

static const struct row {
    lh_buffer buffer;
    lh_region region;
    size_rule size;
    condition when;
} table[] = {
    /* saved: what backward needs from forward (the indices lead: tests read them there) */
    {LH_BUF_SAVED, LH_REGION_INDICES, ROWS, LIGHTHOUSE},
    {LH_BUF_SAVED, LH_REGION_O_SEL, SUBSEQ, SUBSEQUENCE},
    {LH_BUF_SAVED, LH_REGION_LSE, ROWS, SUBSEQUENCE},
    {LH_BUF_SAVED, LH_REGION_LSE, DENSE_LSE, PLAIN_DENSE},
    {LH_BUF_SAVED, LH_REGION_Q_SEL, SUBSEQ, KEPT},
    {LH_BUF_SAVED, LH_REGION_K_SEL, SUBSEQ, KEPT},
    {LH_BUF_SAVED, LH_REGION_V_SEL, SUBSEQ, KEPT},
    {LH_BUF_SAVED, LH_REGION_INV, INVERSE, KEPT},
    {LH_BUF_SAVED, LH_REGION_TAG, SAVED_TAG, ALWAYS},
    /* forward workspace (scores and pooled rows serve one chunk at a time) */
    {LH_BUF_FORWARD, LH_REGION_SCORES_Q, SCORES_Q, SCORED},
    {LH_BUF_FORWARD, LH_REGION_SCORES_K, SCORES_K, SCORED},
    {LH_BUF_FORWARD, LH_REGION_SCORER, SCORER_WS, SCORED},
    {LH_BUF_FORWARD, LH_REGION_INDICES, ROWS, STAGED},
    {LH_BUF_FORWARD, LH_REGION_INV, INVERSE, FORWARD_INVERSE},
    {LH_BUF_FORWARD, LH_REGION_POOLED_Q, POOLED_Q, LIGHTHOUSE},
    {LH_BUF_FORWARD, LH_REGION_POOLED_K, POOLED_K, LIGHTHOUSE},
    {LH_BUF_FORWARD, LH_REGION_Q_SEL, SUBSEQ, FORWARD_SUBSEQ},
    {LH_BUF_FORWARD, LH_REGION_K_SEL, SUBSEQ, FORWARD_SUBSEQ},
    {LH_BUF_FORWARD, LH_REGION_V_SEL, SUBSEQ, FORWARD_SUBSEQ},
    {LH_BUF_FORWARD, LH_REGION_ATTENTION, ATTENTION_FWD, ALWAYS},
    /* backward workspace */
    {LH_BUF_BACKWARD, LH_REGION_INV, INVERSE, LIGHTHOUSE_NOT_KEPT},
    {LH_BUF_BACKWARD, LH_REGION_Q_SEL, SUBSEQ, NOT_KEPT},
    {LH_BUF_BACKWARD, LH_REGION_K_SEL, SUBSEQ, NOT_KEPT},
    {LH_BUF_BACKWARD, LH_REGION_V_SEL, SUBSEQ, NOT_KEPT},
    {LH_BUF_BACKWARD, LH_REGION_DO_SEL, SUBSEQ, SUBSEQUENCE},
    {LH_BUF_BACKWARD, LH_REGION_DQ_SEL, SUBSEQ, SUBSEQUENCE},
    {LH_BUF_BACKWARD, LH_REGION_DK_SEL, SUBSEQ, SUBSEQUENCE},
    {LH_BUF_BACKWARD, LH_REGION_DV_SEL, SUBSEQ, SUBSEQUENCE},
    {LH_BUF_BACKWARD, LH_REGION_ATTENTION, ATTENTION_BWD, ALWAYS},
    /* the stage entry points (one chunk: the plan has no ring) */
    {LH_BUF_STAGE, LH_REGION_INV, INVERSE, STAGE_CALLS},
    {LH_BUF_STAGE, LH_REGION_SCRATCH, SCRATCH, STAGE_CALLS},
    {LH_BUF_STAGE, LH_REGION_SCORER, SCORER_WS, STAGE_CALLS},
    /* the attention step alone */
    {LH_BUF_ATTENTION, LH_REGION_ATTENTION, ATTENTION_STEP, ALWAYS},
};

static bool holds(condition when, const lh_config *c, const lh_backend_sizes *s, bool keep) {
    bool lighthouse = c->mode == LH_MODE_LIGHTHOUSE;
    bool chunked = c->ring || c->forward_hook;
    bool plain_dense = !lighthouse && !chunked;
    /* A chunked forward whose attention step can fail after the stages ran (a ring, a hook)
     * writes what saved keeps into the workspace first; the pipeline copies it over once the
     * step has succeeded, so a failing step leaves saved as it was. */
    bool staged = lighthouse && chunked && s->stages_indices;
    switch (when) {
    case ALWAYS: return true;
    case LIGHTHOUSE: return lighthouse;
    case SCORED: return lighthouse && c->scorer != LH_SCORER_EXTERNAL;
    case SUBSEQUENCE: return !plain_dense;
    case PLAIN_DENSE: return plain_dense;
    case KEPT: return keep;
    case NOT_KEPT: return !plain_dense && !keep;
    case LIGHTHOUSE_NOT_KEPT: return lighthouse && !keep;
    case STAGED: return staged;
    case FORWARD_SUBSEQ: return !plain_dense && (!keep || staged);
    case FORWARD_INVERSE: return lighthouse && (!keep || staged);
    case STAGE_CALLS: return lighthouse && !c->ring;
    }
    return false;
}

static int64_t size_of(size_rule rule, const lh_config *c, const lh_backend_sizes *s) {
    bool chunked = c->ring || c->forward_hook;
    int64_t rows = c->chunks * c->batch * c->heads * c->s_chunk;
    switch (rule) {
    case SUBSEQ: return rows * c->head_dim * (int64_t)lh_dtype_size(c->dtype);
    case ROWS: return rows * 4;
    case INVERSE: return c->chunks * s->inv_bytes;
    case SCORES_Q: return c->batch * c->heads * c->s_total * 4;
    case SCORES_K: return c->batch * c->kv_heads * c->s_total * 4;
    case POOLED_Q: return s->pooled_q_bytes;
    case POOLED_K: return s->pooled_k_bytes;
    case SCORER_WS: return s->scorer_bytes;
    /* A chunked plan's step also serves lh_attention_*: one workspace for both directions. */
    case ATTENTION_FWD: return chunked ? s->attention_step_bytes : s->attention_fwd_bytes;
    case ATTENTION_BWD: return chunked ? s->attention_step_bytes : s->attention_bwd_bytes;
    case ATTENTION_STEP: return s->attention_step_bytes;
    case DENSE_LSE: return s->dense_lse_bytes;
    case SCRATCH: return s->scratch_bytes;
    case SAVED_TAG: return s->saved_tag_bytes;
    }
    return 0;
}

void lh_buffer_map_build(const lh_config *cfg, const lh_backend_sizes *sizes, lh_buffer_map *out,
                    bool *keep) {
    *keep = cfg->mode == LH_MODE_LIGHTHOUSE && sizes->keeps_subsequence && !cfg->recompute_subseq;
    for (int b = 0; b < LH_BUF_COUNT; b++) {
        out->bytes[b] = 0;
        for (int r = 0; r < LH_REGION_COUNT; r++) out->offset[b][r] = -1, out->size[b][r] = 0;
    }
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const struct row *row = &table[i];
        int64_t bytes = size_of(row->size, cfg, sizes);
        if (bytes <= 0 || !holds(row->when, cfg, sizes, *keep)) continue;
        /* Every region starts aligned, and the buffer ends aligned, except the statistics of a
         * plain dense attention: they are the whole of saved, exactly as its attention has them. */
        int64_t align = row->size == DENSE_LSE ? 1 : sizes->align;
        out->offset[row->buffer][row->region] =
            lh_region_append(&out->bytes[row->buffer], bytes, align);
        out->size[row->buffer][row->region] = bytes;
    }
}
