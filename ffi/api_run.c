/* api_run.c - forward, backward and the stage entry points: check every argument, then run.
 * Nothing reaches a backend until every pointer has passed, so an error never leaves a caller's
 * output half written. */
#include "ffi_internal.h"

typedef struct buffer_arg {
    const void *ptr;
    size_t bytes;
    size_t align;
    const char *name;
    bool optional; /* NULL allowed (then not checked) */
} buffer_arg;

static lh_status check_buffers(const lh_plan *plan, const char *fn, const buffer_arg *args,
                               size_t count, void *stream) {
    for (size_t i = 0; i < count; i++) {
        const buffer_arg *a = &args[i];
        if (!a->ptr) {
            if (a->optional || a->bytes == 0) continue;
            return lh_fail(LH_ERROR_NULL_POINTER, "%s: %s is NULL (%zu bytes are needed)", fn,
                           a->name, a->bytes);
        }
        if ((uintptr_t)a->ptr % a->align != 0)
            return lh_fail(LH_ERROR_BAD_POINTER,
                           "%s: %s = %p is not aligned to %zu bytes", fn, a->name, a->ptr,
                           a->align);
        lh_status st = plan->context->ops->check_buffer(plan->state, a->ptr, a->bytes, a->name);
        if (st != LH_OK) return lh_fail_context(st, fn);
    }
    lh_status st = plan->context->ops->check_stream(plan->state, stream);
    return st == LH_OK ? st : lh_fail_context(st, fn);
}

static size_t tensor_bytes(const lh_config *c, int64_t heads, int64_t seq) {
    return (size_t)(c->batch * heads * seq * c->head_dim) * lh_dtype_size(c->dtype);
}

static lh_status check_lighthouse(const lh_plan *plan, const char *fn) {
    if (plan->cfg.mode != LH_MODE_LIGHTHOUSE)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "%s: stage entry points need MODE = LIGHTHOUSE (this plan is DENSE)", fn);
    if (plan->cfg.ring)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "%s: stage entry points take plans without a ring (this plan is rank %lld "
                       "of %lld); lh_attention_forward/backward take both",
                       fn, (long long)plan->cfg.cp_rank, (long long)plan->cfg.cp_world);
    return LH_OK;
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *scorer_name(lh_scorer s) {
    return s == LH_SCORER_NORM ? "NORM" : s == LH_SCORER_DILATED ? "DILATED" : "EXTERNAL";
}

/* lh_forward runs the plan's scorer; lh_forward_with_scores takes the caller's scores instead. */
static lh_status check_scores_source(const lh_plan *plan, const char *fn, bool given) {
    bool external = plan->cfg.scorer == LH_SCORER_EXTERNAL;
    if (given && plan->cfg.mode != LH_MODE_LIGHTHOUSE)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "%s: a DENSE plan ranks nothing and takes no scores; call lh_forward", fn);
    if (given && !external)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "%s: this plan computes its own scores (SCORER = %s); the caller's scores "
                       "need a plan with SCORER = EXTERNAL (2), or call lh_forward",
                       fn, scorer_name(plan->cfg.scorer));
    if (!given && external)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "%s: this plan takes its scores from the caller (SCORER = EXTERNAL); call "
                       "lh_forward_with_scores with scores_q and scores_k", fn);
    return LH_OK;
}

/* The arguments of a forward: q, k, v, out, saved, workspace (with or without scores). */
static lh_status forward_args(const lh_plan *plan, const char *fn, const void *q, const void *k,
                              const void *v, const float *scores_q, const float *scores_k,
                              void *out, void *saved, void *workspace, void *stream) {
    const lh_config *c = &plan->cfg;
    size_t es = lh_dtype_size(c->dtype);
    bool given = plan->cfg.scorer == LH_SCORER_EXTERNAL;
    size_t scores = (size_t)(c->chunks * c->batch * c->s_total) * 4;
    const buffer_arg args[] = {
        {q, tensor_bytes(c, c->heads, c->tensor_seq_len), es, "q", false},
        {k, tensor_bytes(c, c->kv_heads, c->tensor_seq_len), es, "k", false},
        {v, tensor_bytes(c, c->kv_heads, c->tensor_seq_len), es, "v", false},
        {scores_q, given ? scores * (size_t)c->heads : 0, 4, "scores_q", !given},
        {scores_k, given ? scores * (size_t)c->kv_heads : 0, 4, "scores_k", !given},
        {out, tensor_bytes(c, c->heads, c->tensor_seq_len), es, "out", false},
        {saved, (size_t)plan->sizes.saved_bytes, 16, "saved", false},
        {workspace, (size_t)plan->sizes.fwd_workspace_bytes, 16, "workspace", false},
    };
    return check_buffers(plan, fn, args, COUNT(args), stream);
}

/* The result of a call that may have run attention hooks: on LH_OK the error channel is "" even
 * if a library call inside a hook failed (the hook decided that it did not matter); otherwise the
 * message is prefixed with the entry point. */
static lh_status finish(lh_status st, const char *fn) {
    if (st == LH_OK) {
        lh_clear_error();
        return st;
    }
    return lh_fail_context(st, fn);
}

LH_API lh_status lh_forward(lh_plan *plan, const void *q, const void *k, const void *v, void *out,
                            void *saved, void *workspace, void *stream) {
    lh_clear_error();
    const char *fn = "lh_forward";
    lh_status st = lh_check_plan_ready(plan, fn);
    if (st == LH_OK) st = check_scores_source(plan, fn, false);
    if (st == LH_OK)
        st = forward_args(plan, fn, q, k, v, NULL, NULL, out, saved, workspace, stream);
    if (st != LH_OK) return st;
    st = plan->context->ops->forward(plan->state, q, k, v, out, saved, workspace, stream);
    return finish(st, fn);
}

LH_API lh_status lh_forward_with_scores(lh_plan *plan, const void *q, const void *k,
                                        const void *v, const float *scores_q,
                                        const float *scores_k, void *out, void *saved,
                                        void *workspace, void *stream) {
    lh_clear_error();
    const char *fn = "lh_forward_with_scores";
    lh_status st = lh_check_plan_ready(plan, fn);
    if (st == LH_OK) st = check_scores_source(plan, fn, true);
    if (st == LH_OK)
        st = forward_args(plan, fn, q, k, v, scores_q, scores_k, out, saved, workspace, stream);
    if (st != LH_OK) return st;
    st = plan->context->ops->forward_with_scores(plan->state, q, k, v, scores_q, scores_k, out,
                                                 saved, workspace, stream);
    return finish(st, fn);
}

LH_API lh_status lh_backward(lh_plan *plan, const void *q, const void *k, const void *v,
                             const void *out, const void *dout, const void *saved, void *dq,
                             void *dk, void *dv, void *workspace, void *stream) {
    lh_clear_error();
    const char *fn = "lh_backward";
    lh_status st = lh_check_plan_ready(plan, fn);
    if (st != LH_OK) return st;
    const lh_config *c = &plan->cfg;
    size_t es = lh_dtype_size(c->dtype);
    size_t qb = tensor_bytes(c, c->heads, c->tensor_seq_len);
    size_t kb = tensor_bytes(c, c->kv_heads, c->tensor_seq_len);
    const buffer_arg args[] = {
        {q, qb, es, "q", false},
        {k, kb, es, "k", false},
        {v, kb, es, "v", false},
        {out, qb, es, "out", c->mode == LH_MODE_LIGHTHOUSE},
        {dout, qb, es, "dout", false},
        {saved, (size_t)plan->sizes.saved_bytes, 16, "saved", false},
        {dq, qb, es, "dq", false},
        {dk, kb, es, "dk", false},
        {dv, kb, es, "dv", false},
        {workspace, (size_t)plan->sizes.bwd_workspace_bytes, 16, "workspace", false},
    };
    st = check_buffers(plan, fn, args, COUNT(args), stream);
    if (st != LH_OK) return st;
    st = plan->context->ops->backward(plan->state, q, k, v, out, dout, saved, dq, dk, dv,
                                      workspace, stream);
    return finish(st, fn);
}

/* lh_scores (v_used false: norm plans only) and lh_scores_qkv (any plan with a scorer). */
static lh_status scores_call(lh_plan *plan, const char *fn, bool v_used, const void *q,
                             const void *k, const void *v, float *scores_q, float *scores_k,
                             void *workspace, void *stream) {
    lh_status st = lh_check_plan_ready(plan, fn);
    if (st == LH_OK) st = check_lighthouse(plan, fn);
    if (st != LH_OK) return st;
    const lh_config *c = &plan->cfg;
    if (c->scorer == LH_SCORER_EXTERNAL)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "%s: this plan has no scorer (SCORER = EXTERNAL: its scores are the "
                       "caller's)", fn);
    if (!v_used && c->scorer != LH_SCORER_NORM)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "%s: SCORER = %s reads v as well, which lh_scores does not take; call "
                       "lh_scores_qkv", fn, scorer_name(c->scorer));
    size_t es = lh_dtype_size(c->dtype);
    bool reads_v = c->scorer == LH_SCORER_DILATED;
    const buffer_arg args[] = {
        {q, tensor_bytes(c, c->heads, c->seq_len), es, "q", false},
        {k, tensor_bytes(c, c->kv_heads, c->seq_len), es, "k", false},
        {v, reads_v ? tensor_bytes(c, c->kv_heads, c->seq_len) : 0, es, "v", !reads_v},
        {scores_q, (size_t)(c->batch * c->heads * c->s_total) * 4, 4, "scores_q", false},
        {scores_k, (size_t)(c->batch * c->kv_heads * c->s_total) * 4, 4, "scores_k", false},
        {workspace, (size_t)plan->sizes.stage_workspace_bytes, 16, "workspace", false},
    };
    st = check_buffers(plan, fn, args, COUNT(args), stream);
    if (st != LH_OK) return st;
    st = plan->context->ops->scores(plan->state, q, k, reads_v ? v : NULL, scores_q, scores_k,
                                    workspace, stream);
    return st == LH_OK ? st : lh_fail_context(st, fn);
}

LH_API lh_status lh_scores(lh_plan *plan, const void *q, const void *k, float *scores_q,
                           float *scores_k, void *workspace, void *stream) {
    lh_clear_error();
    return scores_call(plan, "lh_scores", false, q, k, NULL, scores_q, scores_k, workspace,
                       stream);
}

LH_API lh_status lh_scores_qkv(lh_plan *plan, const void *q, const void *k, const void *v,
                               float *scores_q, float *scores_k, void *workspace, void *stream) {
    lh_clear_error();
    return scores_call(plan, "lh_scores_qkv", true, q, k, v, scores_q, scores_k, workspace,
                       stream);
}

LH_API lh_status lh_select(lh_plan *plan, const float *scores_q, const float *scores_k,
                           int32_t *indices, void *workspace, void *stream) {
    lh_clear_error();
    const char *fn = "lh_select";
    lh_status st = lh_check_plan_ready(plan, fn);
    if (st == LH_OK) st = check_lighthouse(plan, fn);
    if (st != LH_OK) return st;
    const lh_config *c = &plan->cfg;
    const buffer_arg args[] = {
        {scores_q, (size_t)(c->batch * c->heads * c->s_total) * 4, 4, "scores_q", false},
        {scores_k, (size_t)(c->batch * c->kv_heads * c->s_total) * 4, 4, "scores_k", false},
        {indices, (size_t)(c->batch * c->heads * c->s_sel) * 4, 4, "indices", false},
        {workspace, (size_t)plan->sizes.stage_workspace_bytes, 16, "workspace", false},
    };
    st = check_buffers(plan, fn, args, COUNT(args), stream);
    if (st != LH_OK) return st;
    st = plan->context->ops->select(plan->state, scores_q, scores_k, indices, workspace, stream);
    return st == LH_OK ? st : lh_fail_context(st, fn);
}

LH_API lh_status lh_gather(lh_plan *plan, const void *q, const void *k, const void *v,
                           const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                           void *workspace, void *stream) {
    lh_clear_error();
    const char *fn = "lh_gather";
    lh_status st = lh_check_plan_ready(plan, fn);
    if (st == LH_OK) st = check_lighthouse(plan, fn);
    if (st != LH_OK) return st;
    const lh_config *c = &plan->cfg;
    size_t es = lh_dtype_size(c->dtype);
    size_t sel = tensor_bytes(c, c->heads, c->s_sel);
    const buffer_arg args[] = {
        {q, tensor_bytes(c, c->heads, c->seq_len), es, "q", false},
        {k, tensor_bytes(c, c->kv_heads, c->seq_len), es, "k", false},
        {v, tensor_bytes(c, c->kv_heads, c->seq_len), es, "v", false},
        {indices, (size_t)(c->batch * c->heads * c->s_sel) * 4, 4, "indices", false},
        {q_sel, sel, es, "q_sel", false},
        {k_sel, sel, es, "k_sel", false},
        {v_sel, sel, es, "v_sel", false},
        {workspace, (size_t)plan->sizes.stage_workspace_bytes, 16, "workspace", false},
    };
    st = check_buffers(plan, fn, args, COUNT(args), stream);
    if (st != LH_OK) return st;
    st = plan->context->ops->gather(plan->state, q, k, v, indices, q_sel, k_sel, v_sel, workspace,
                                    stream);
    return st == LH_OK ? st : lh_fail_context(st, fn);
}

LH_API lh_status lh_scatter(lh_plan *plan, const int32_t *indices, const void *o_sel, void *out,
                            void *workspace, void *stream) {
    lh_clear_error();
    const char *fn = "lh_scatter";
    lh_status st = lh_check_plan_ready(plan, fn);
    if (st == LH_OK) st = check_lighthouse(plan, fn);
    if (st != LH_OK) return st;
    const lh_config *c = &plan->cfg;
    size_t es = lh_dtype_size(c->dtype);
    const buffer_arg args[] = {
        {indices, (size_t)(c->batch * c->heads * c->s_sel) * 4, 4, "indices", false},
        {o_sel, tensor_bytes(c, c->heads, c->s_sel), es, "o_sel", false},
        {out, tensor_bytes(c, c->heads, c->seq_len), es, "out", false},
        {workspace, (size_t)plan->sizes.stage_workspace_bytes, 16, "workspace", false},
    };
    st = check_buffers(plan, fn, args, COUNT(args), stream);
    if (st != LH_OK) return st;
    st = plan->context->ops->scatter(plan->state, indices, o_sel, out, workspace, stream);
    return st == LH_OK ? st : lh_fail_context(st, fn);
}

/* The attention step alone: chunk-major [C, B, H, S_c, D] sub-sequences (C * S_c = s_sel). */
static lh_status attention_args(const lh_plan *plan, const char *fn) {
    lh_status st = lh_check_plan_ready(plan, fn);
    if (st != LH_OK) return st;
    if (!plan->context->ops->attention_forward)
        return lh_fail(LH_ERROR_UNSUPPORTED, "%s: the %s backend has no separate attention step", fn,
                       plan->context->ops->name);
    return LH_OK;
}

LH_API lh_status lh_attention_forward(lh_plan *plan, const void *q_sel, const void *k_sel,
                                      const void *v_sel, void *o_sel, float *lse, void *workspace,
                                      void *stream) {
    lh_clear_error();
    const char *fn = "lh_attention_forward";
    lh_status st = attention_args(plan, fn);
    if (st != LH_OK) return st;
    const lh_config *c = &plan->cfg;
    size_t es = lh_dtype_size(c->dtype), sel = tensor_bytes(c, c->heads, c->s_sel);
    const buffer_arg args[] = {
        {q_sel, sel, es, "q_sel", false},
        {k_sel, sel, es, "k_sel", false},
        {v_sel, sel, es, "v_sel", false},
        {o_sel, sel, es, "o_sel", false},
        {lse, (size_t)(c->batch * c->heads * c->s_sel) * 4, 4, "lse", false},
        {workspace, (size_t)plan->sizes.attention_workspace_bytes, 16, "workspace", false},
    };
    st = check_buffers(plan, fn, args, COUNT(args), stream);
    if (st != LH_OK) return st;
    st = plan->context->ops->attention_forward(plan->state, q_sel, k_sel, v_sel, o_sel, lse,
                                               workspace, stream);
    return st == LH_OK ? st : lh_fail_context(st, fn);
}

LH_API lh_status lh_attention_backward(lh_plan *plan, const void *q_sel, const void *k_sel,
                                       const void *v_sel, const void *o_sel, const float *lse,
                                       const void *do_sel, void *dq_sel, void *dk_sel,
                                       void *dv_sel, void *workspace, void *stream) {
    lh_clear_error();
    const char *fn = "lh_attention_backward";
    lh_status st = attention_args(plan, fn);
    if (st != LH_OK) return st;
    const lh_config *c = &plan->cfg;
    size_t es = lh_dtype_size(c->dtype), sel = tensor_bytes(c, c->heads, c->s_sel);
    const buffer_arg args[] = {
        {q_sel, sel, es, "q_sel", false},
        {k_sel, sel, es, "k_sel", false},
        {v_sel, sel, es, "v_sel", false},
        {o_sel, sel, es, "o_sel", false},
        {lse, (size_t)(c->batch * c->heads * c->s_sel) * 4, 4, "lse", false},
        {do_sel, sel, es, "do_sel", false},
        {dq_sel, sel, es, "dq_sel", false},
        {dk_sel, sel, es, "dk_sel", false},
        {dv_sel, sel, es, "dv_sel", false},
        {workspace, (size_t)plan->sizes.attention_workspace_bytes, 16, "workspace", false},
    };
    st = check_buffers(plan, fn, args, COUNT(args), stream);
    if (st != LH_OK) return st;
    st = plan->context->ops->attention_backward(plan->state, q_sel, k_sel, v_sel, o_sel, lse,
                                                do_sel, dq_sel, dk_sel, dv_sel, workspace, stream);
    return st == LH_OK ? st : lh_fail_context(st, fn);
}
