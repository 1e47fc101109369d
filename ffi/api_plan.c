/* api_plan.c - plan handles: parameters, the validation of docs/spec.md's rules, finalize. */
#include <math.h>
#include <stdlib.h>

#include "algorithm.h"
#include "ffi_internal.h"

static bool is_pow2(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

LH_API lh_status lh_plan_create(lh_context *context, lh_plan **out_plan) {
    lh_clear_error();
    if (!context) return lh_fail(LH_ERROR_NULL_POINTER, "lh_plan_create: context is NULL");
    if (!out_plan) return lh_fail(LH_ERROR_NULL_POINTER, "lh_plan_create: out_plan is NULL");
    lh_plan *plan = calloc(1, sizeof *plan);
    if (!plan) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "lh_plan_create: out of host memory");
    plan->context = context;
    plan->cfg.batch = 1;
    plan->cfg.dtype = LH_DTYPE_FLOAT32;
    plan->cfg.layout = LH_LAYOUT_BNHD;
    plan->cfg.mode = LH_MODE_LIGHTHOUSE;
    plan->cfg.levels = 3;
    plan->cfg.pooling = 4;
    plan->cfg.topk = 2048;
    plan->cfg.scorer = LH_SCORER_NORM;
    plan->cfg.dilation = LH_DEFAULT_DILATION;
    plan->cfg.cp_world = 1;
    context->live_plans++;
    *out_plan = plan;
    return LH_OK;
}

LH_API lh_status lh_plan_destroy(lh_plan *plan) {
    lh_clear_error();
    if (!plan) return LH_OK;
    if (plan->state) plan->context->ops->plan_destroy(plan->state);
    lh_ring_unbind(plan);
    plan->context->live_plans--;
    free(plan);
    return LH_OK;
}

/* Rules on one value alone; the rules that relate parameters wait for finalize. */
static lh_status check_value(lh_param param, int64_t v) {
    const char *name = lh_param_name(param);
    switch (param) {
    case LH_PARAM_BATCH: case LH_PARAM_SEQ_LEN: case LH_PARAM_HEADS:
    case LH_PARAM_KV_HEADS: case LH_PARAM_HEAD_DIM:
        if (v <= 0 || v > (INT64_C(1) << 40))
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "%s must be a positive size no larger than 2^40 (got %lld)", name,
                           (long long)v);
        return LH_OK;
    case LH_PARAM_DTYPE:
        if (v < LH_DTYPE_FLOAT32 || v > LH_DTYPE_BFLOAT16)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "DTYPE must be FLOAT32 (0), FLOAT16 (1) or BFLOAT16 (2) (got %lld)",
                           (long long)v);
        return LH_OK;
    case LH_PARAM_LAYOUT:
        if (v != LH_LAYOUT_BNHD && v != LH_LAYOUT_BHND)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "LAYOUT must be BNHD (0) or BHND (1) (got %lld)", (long long)v);
        return LH_OK;
    case LH_PARAM_MODE:
        if (v != LH_MODE_LIGHTHOUSE && v != LH_MODE_DENSE)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "MODE must be LIGHTHOUSE (0) or DENSE (1) (got %lld)", (long long)v);
        return LH_OK;
    case LH_PARAM_LEVELS:
        if (v < LH_MIN_LEVELS || v > LH_MAX_LEVELS)
            return lh_fail(LH_ERROR_LEVELS, "LEVELS must be in %d..%d (got %lld)", LH_MIN_LEVELS,
                           LH_MAX_LEVELS, (long long)v);
        return LH_OK;
    case LH_PARAM_POOLING:
        if (v < LH_MIN_POOLING || v > LH_MAX_POOLING || !is_pow2(v))
            return lh_fail(LH_ERROR_POOLING, "POOLING must be a power of two in %d..%d (got %lld)",
                           LH_MIN_POOLING, LH_MAX_POOLING, (long long)v);
        return LH_OK;
    case LH_PARAM_TOPK:
        if (v <= 0 || v % LH_TILE_REFINED != 0)
            return lh_fail(LH_ERROR_TOPK, "TOPK must be a positive multiple of %d (got %lld)",
                           LH_TILE_REFINED, (long long)v);
        return LH_OK;
    case LH_PARAM_SOFTMAX_SCALE:
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "SOFTMAX_SCALE is a floating-point parameter; use lh_plan_set_f64");
    case LH_PARAM_RECOMPUTE_SUBSEQ:
        if (v != 0 && v != 1)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "RECOMPUTE_SUBSEQ must be 0 (keep the gathered sub-sequence) or 1 "
                           "(gather again in backward) (got %lld)", (long long)v);
        return LH_OK;
    case LH_PARAM_STAGE_TIMING:
        if (v != 0 && v != 1)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "STAGE_TIMING must be 0 (off) or 1 (CUDA events around each stage) "
                           "(got %lld)", (long long)v);
        return LH_OK;
    case LH_PARAM_SCORER:
        if (v != LH_SCORER_NORM && v != LH_SCORER_DILATED && v != LH_SCORER_EXTERNAL)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "SCORER must be NORM (0), DILATED (1) or EXTERNAL (2) (got %lld)",
                           (long long)v);
        return LH_OK;
    case LH_PARAM_DILATION:
        if (v < 1 || v > (INT64_C(1) << 40))
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "DILATION (the dilated scorer's stride d) must be at least 1 and no "
                           "larger than 2^40 (got %lld)", (long long)v);
        return LH_OK;
    }
    return lh_fail(LH_ERROR_INVALID_VALUE, "unknown parameter %d", (int)param);
}

static lh_status check_settable(lh_plan *plan, const char *fn) {
    if (!plan) return lh_fail(LH_ERROR_NULL_POINTER, "%s: plan is NULL", fn);
    if (plan->finalized)
        return lh_fail(LH_ERROR_BAD_STATE,
                       "%s: the plan is finalized; parameters can no longer change "
                       "(create a new plan)", fn);
    return LH_OK;
}

LH_API lh_status lh_plan_set_i64(lh_plan *plan, lh_param param, int64_t value) {
    lh_clear_error();
    lh_status st = check_settable(plan, "lh_plan_set_i64");   /* its messages name the function */
    if (st != LH_OK) return st;
    st = check_value(param, value);
    if (st != LH_OK) return lh_fail_context(st, "lh_plan_set_i64");
    lh_config *c = &plan->cfg;
    switch (param) {
    case LH_PARAM_BATCH: c->batch = value; break;
    case LH_PARAM_SEQ_LEN: c->seq_len = value; break;
    case LH_PARAM_HEADS: c->heads = value; break;
    case LH_PARAM_KV_HEADS: c->kv_heads = value; break;
    case LH_PARAM_HEAD_DIM: c->head_dim = value; break;
    case LH_PARAM_DTYPE: c->dtype = (lh_dtype)value; break;
    case LH_PARAM_LAYOUT: c->layout = (lh_layout)value; break;
    case LH_PARAM_LEVELS: c->levels = value; break;
    case LH_PARAM_POOLING: c->pooling = value; break;
    case LH_PARAM_TOPK: c->topk = value; break;
    case LH_PARAM_MODE: c->mode = (lh_mode)value; break;
    case LH_PARAM_SOFTMAX_SCALE: break; /* rejected by check_value */
    case LH_PARAM_RECOMPUTE_SUBSEQ: c->recompute_subseq = value != 0; break;
    case LH_PARAM_STAGE_TIMING: c->stage_timing = value != 0; break;
    case LH_PARAM_SCORER: c->scorer = (lh_scorer)value; break;
    case LH_PARAM_DILATION: c->dilation = value; break;
    }
    plan->set_mask |= 1u << param;
    return LH_OK;
}

LH_API lh_status lh_plan_set_f64(lh_plan *plan, lh_param param, double value) {
    lh_clear_error();
    lh_status st = check_settable(plan, "lh_plan_set_f64");
    if (st != LH_OK) return st;
    if (param != LH_PARAM_SOFTMAX_SCALE)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "lh_plan_set_f64: only SOFTMAX_SCALE is a floating-point parameter "
                       "(got parameter %d, %s)", (int)param, lh_param_name(param));
    if (!(value > 0.0) || !isfinite(value))
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "lh_plan_set_f64: SOFTMAX_SCALE must be finite and > 0 (got %g)", value);
    plan->cfg.scale = value;
    plan->scale_set = true;
    plan->set_mask |= 1u << param;
    return LH_OK;
}

int64_t lh_plan_kv_heads(const lh_plan *plan) {
    return (plan->set_mask & (1u << LH_PARAM_KV_HEADS)) ? plan->cfg.kv_heads : plan->cfg.heads;
}

LH_API lh_status lh_plan_get_param_i64(const lh_plan *plan, lh_param param, int64_t *out_value) {
    lh_clear_error();
    if (!plan) return lh_fail(LH_ERROR_NULL_POINTER, "lh_plan_get_param_i64: plan is NULL");
    if (!out_value)
        return lh_fail(LH_ERROR_NULL_POINTER, "lh_plan_get_param_i64: out_value is NULL");
    const lh_config *c = &plan->cfg;
    switch (param) {
    case LH_PARAM_BATCH: *out_value = c->batch; return LH_OK;
    case LH_PARAM_SEQ_LEN: *out_value = c->seq_len; return LH_OK;
    case LH_PARAM_HEADS: *out_value = c->heads; return LH_OK;
    case LH_PARAM_KV_HEADS: *out_value = lh_plan_kv_heads(plan); return LH_OK;
    case LH_PARAM_HEAD_DIM: *out_value = c->head_dim; return LH_OK;
    case LH_PARAM_DTYPE: *out_value = c->dtype; return LH_OK;
    case LH_PARAM_LAYOUT: *out_value = c->layout; return LH_OK;
    case LH_PARAM_LEVELS: *out_value = c->levels; return LH_OK;
    case LH_PARAM_POOLING: *out_value = c->pooling; return LH_OK;
    case LH_PARAM_TOPK: *out_value = c->topk; return LH_OK;
    case LH_PARAM_MODE: *out_value = c->mode; return LH_OK;
    case LH_PARAM_SOFTMAX_SCALE: break;
    case LH_PARAM_RECOMPUTE_SUBSEQ: *out_value = c->recompute_subseq; return LH_OK;
    case LH_PARAM_STAGE_TIMING: *out_value = c->stage_timing; return LH_OK;
    case LH_PARAM_SCORER: *out_value = c->scorer; return LH_OK;
    case LH_PARAM_DILATION: *out_value = c->dilation; return LH_OK;
    }
    return lh_fail(LH_ERROR_INVALID_VALUE,
                   "lh_plan_get_param_i64: parameter %d is not an integer parameter", (int)param);
}

LH_API lh_status lh_plan_get_param_f64(const lh_plan *plan, lh_param param, double *out_value) {
    lh_clear_error();
    if (!plan) return lh_fail(LH_ERROR_NULL_POINTER, "lh_plan_get_param_f64: plan is NULL");
    if (!out_value)
        return lh_fail(LH_ERROR_NULL_POINTER, "lh_plan_get_param_f64: out_value is NULL");
    if (param != LH_PARAM_SOFTMAX_SCALE)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "lh_plan_get_param_f64: only SOFTMAX_SCALE is a floating-point parameter");
    if (plan->scale_set) *out_value = plan->cfg.scale;
    else *out_value = plan->cfg.head_dim > 0 ? lh_default_softmax_scale(plan->cfg.head_dim) : 0.0;
    return LH_OK;
}

/* docs/spec.md section 10: the scorer's rules. Each broken rule has a sentence of its own. */
static lh_status validate_scorer(const lh_plan *plan) {
    const lh_config *c = &plan->cfg;
    bool dilation_set = plan->set_mask & (1u << LH_PARAM_DILATION);
    if (c->mode == LH_MODE_DENSE && c->scorer != LH_SCORER_NORM)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "SCORER = %s chooses how Lighthouse ranks the pyramid; a DENSE plan has no "
                       "pyramid and takes only SCORER = NORM (the default)",
                       c->scorer == LH_SCORER_DILATED ? "DILATED" : "EXTERNAL");
    if (dilation_set && c->scorer != LH_SCORER_DILATED)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "DILATION = %lld is set, but it belongs to SCORER = DILATED and this plan's "
                       "scorer is %s; set SCORER = DILATED (1) or leave DILATION unset",
                       (long long)c->dilation, c->scorer == LH_SCORER_NORM ? "NORM" : "EXTERNAL");
    if (c->scorer != LH_SCORER_DILATED) return LH_OK;
    if (c->heads != c->kv_heads)
        return lh_fail(LH_ERROR_HEADS_MISMATCH,
                       "SCORER = DILATED runs attention with queries and keys swapped, so it needs "
                       "HEADS == KV_HEADS (got HEADS = %lld, KV_HEADS = %lld)",
                       (long long)c->heads, (long long)c->kv_heads);
    int64_t parts = c->ring ? 2 * c->cp_world : 1, len = c->seq_len / parts;
    if (len % c->dilation != 0)
        return lh_fail(LH_ERROR_SEQ_DIVISIBILITY,
                       "SCORER = DILATED splits %s = %lld into DILATION = %lld strided sequences, "
                       "so it must be a multiple of DILATION",
                       c->ring ? "each chunk of SEQ_LEN/(2*WORLD)" : "SEQ_LEN", (long long)len,
                       (long long)c->dilation);
    return LH_OK;
}

/* docs/spec.md "Inputs and parameters" and section 2: the rules that relate parameters. */
static lh_status validate(lh_plan *plan) {
    static const lh_param required[] = {LH_PARAM_SEQ_LEN, LH_PARAM_HEADS, LH_PARAM_HEAD_DIM};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!(plan->set_mask & (1u << required[i])))
            return lh_fail(LH_ERROR_INVALID_VALUE, "%s must be set before finalize",
                           lh_param_name(required[i]));
    lh_config *c = &plan->cfg;
    c->kv_heads = lh_plan_kv_heads(plan);
    if (c->heads % c->kv_heads != 0)
        return lh_fail(LH_ERROR_HEADS_MISMATCH,
                       "HEADS must be a multiple of KV_HEADS (got HEADS = %lld, KV_HEADS = %lld)",
                       (long long)c->heads, (long long)c->kv_heads);
    /* Element counts of every tensor must fit an int64 with room to spare. */
    double elems = (double)c->batch * (double)c->seq_len * (double)c->heads * (double)c->head_dim;
    if (elems > 9.0e15)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "BATCH * SEQ_LEN * HEADS * HEAD_DIM = %.3g elements is too large", elems);
    if (!plan->scale_set) c->scale = lh_default_softmax_scale(c->head_dim);
    lh_status st;

    /* On a ring every rule below applies to one chunk: N/(2W) tokens with TOPK/(2W). */
    int64_t parts = c->ring ? 2 * c->cp_world : 1;
    if (c->ring && c->seq_len % parts != 0)
        return lh_fail(LH_ERROR_SEQ_DIVISIBILITY,
                       "on a ring of WORLD = %lld ranks SEQ_LEN must be a multiple of 2 * WORLD = "
                       "%lld (got SEQ_LEN = %lld)",
                       (long long)c->cp_world, (long long)parts, (long long)c->seq_len);
    st = validate_scorer(plan);
    if (st != LH_OK || c->mode == LH_MODE_DENSE) return st;
    if (c->ring && c->topk % (LH_TILE_REFINED * parts) != 0)
        return lh_fail(LH_ERROR_TOPK,
                       "on a ring of WORLD = %lld ranks TOPK must be a multiple of %d * 2 * WORLD "
                       "= %lld, so every chunk selects a multiple of %d (got TOPK = %lld)",
                       (long long)c->cp_world, LH_TILE_REFINED, (long long)(LH_TILE_REFINED * parts),
                       LH_TILE_REFINED, (long long)c->topk);
    int64_t seq = c->seq_len / parts, topk = c->topk / parts;

    int64_t width = 1;
    for (int64_t l = 1; l < c->levels; l++) {
        if (width > c->seq_len)
            break;
        width *= c->pooling;
    }
    int64_t tiles = topk / LH_TILE_REFINED;
    const char *what = c->ring ? "the chunk length SEQ_LEN/(2*WORLD)" : "SEQ_LEN";
    const char *tk = c->ring ? "TOPK/(2*WORLD)" : "TOPK";
    if (width > seq || seq % width != 0 || (seq / width) % tiles != 0)
        return lh_fail(LH_ERROR_SEQ_DIVISIBILITY,
                       "%s must be a multiple of POOLING^(LEVELS-1) * %s/%d = %lld^%lld * "
                       "%lld (got %s = %lld)",
                       what, tk, LH_TILE_REFINED, (long long)c->pooling, (long long)(c->levels - 1), (long long)tiles,
                       c->ring ? "SEQ_LEN/(2*WORLD)" : "SEQ_LEN", (long long)seq);
    int64_t per_tile = seq / width / tiles;
    if (per_tile < LH_TILE_REFINED)
        return lh_fail(LH_ERROR_TILE_TOO_SMALL,
                       "each of the %s/%d = %lld tiles of the coarsest level must hold at least "
                       "%d entries, but %s / POOLING^(LEVELS-1) / (%s/%d) = %lld / %lld / "
                       "%lld = %lld",
                       tk, LH_TILE_REFINED, (long long)tiles, LH_TILE_REFINED,
                       c->ring ? "SEQ_LEN/(2*WORLD)" : "SEQ_LEN", tk, LH_TILE_REFINED, (long long)seq, (long long)width, (long long)tiles, (long long)per_tile);
    return LH_OK;
}

/* Pyramid positions are int32 in every backend (indices, lh_select, the GPU's inverse map), so
 * S_total must stay below 2^31; on a ring that is the pyramid of one chunk. */
static lh_status check_index_limits(const lh_config *c) {
    const int64_t limit = INT64_C(1) << 31;
    if (c->mode != LH_MODE_LIGHTHOUSE || c->s_total < limit) return LH_OK;
    if (c->ring)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "the pyramid of one ring chunk (SEQ_LEN/(2*WORLD) = %lld tokens, LEVELS = "
                       "%lld, POOLING = %lld) has S_total = %lld positions; positions are int32, "
                       "so S_total must be below 2^31 = %lld (use more ranks)",
                       (long long)c->chunk_len, (long long)c->levels, (long long)c->pooling,
                       (long long)c->s_total, (long long)limit);
    return lh_fail(LH_ERROR_UNSUPPORTED,
                   "the pyramid of SEQ_LEN = %lld tokens (LEVELS = %lld, POOLING = %lld) has "
                   "S_total = %lld positions; positions are int32, so S_total must be below 2^31 "
                   "= %lld (a ring splits the sequence: each chunk has a pyramid of its own)",
                   (long long)c->seq_len, (long long)c->levels, (long long)c->pooling,
                   (long long)c->s_total, (long long)limit);
}

/* The plan's parameters checked and its derived fields filled in: what finalize hands the
 * backend, less the plan's own handle and fingerprint. */
static lh_status derive(lh_plan *plan) {
    lh_status st = validate(plan);
    if (st != LH_OK) return st;
    plan->cfg.tensor_seq_len = 0; /* derived: the local shard */
    lh_config_derive(&plan->cfg);
    return check_index_limits(&plan->cfg);
}

lh_status lh_plan_derived_config(const lh_plan *plan, lh_config *out) {
    if (plan->finalized) {
        *out = plan->cfg;
        return LH_OK;
    }
    lh_plan copy = *plan; /* validate fills in defaults; the caller's plan stays as it is */
    lh_status st = derive(&copy);
    if (st != LH_OK) return st;
    *out = copy.cfg;
    return LH_OK;
}

LH_API lh_status lh_plan_finalize(lh_plan *plan) {
    lh_clear_error();
    if (!plan) return lh_fail(LH_ERROR_NULL_POINTER, "lh_plan_finalize: plan is NULL");
    if (plan->finalized)
        return lh_fail(LH_ERROR_BAD_STATE, "lh_plan_finalize: the plan is already finalized");
    lh_status st = derive(plan);
    if (st != LH_OK) return lh_fail_context(st, "lh_plan_finalize");
    plan->cfg.handle = plan;
    lh_config_id id;
    lh_config_id_of(&plan->cfg, &id);
    plan->cfg.fingerprint = lh_config_id_hash(&id);
    double ring_timeout_s = 0.0;
    if (plan->cfg.ring && plan->cfg.ring->kind == LH_RING_LOCAL) {
        st = lh_ring_timeout_from_env(&ring_timeout_s);
        if (st != LH_OK) return lh_fail_context(st, "lh_plan_finalize");
    }
    lh_context *ctx = plan->context;
    if (plan->cfg.ring && !ctx->ops->attention_forward)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "lh_plan_finalize: the %s backend cannot run a plan bound to a ring",
                       ctx->ops->name);
    if (plan->cfg.stage_timing && !ctx->ops->stage_ms)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "lh_plan_finalize: STAGE_TIMING = 1 times GPU stages with CUDA events; the "
                       "%s backend has no stage timing", ctx->ops->name);
    lh_plan_sizes sizes = {0};
    void *state = NULL;
    st = ctx->ops->plan_create(ctx->state, &ctx->options, &plan->cfg, &state, &sizes);
    if (st != LH_OK) return lh_fail_context(st, "lh_plan_finalize");
    plan->state = state;
    plan->sizes = sizes;
    plan->finalized = true;
    if (plan->cfg.ring && plan->cfg.ring->kind == LH_RING_LOCAL)
        lh_ring_local_join(plan->cfg.ring, (int)plan->cfg.cp_rank, &id, ring_timeout_s);
    return LH_OK;
}

lh_status lh_check_plan_ready(const lh_plan *plan, const char *fn) {
    if (!plan) return lh_fail(LH_ERROR_NULL_POINTER, "%s: plan is NULL", fn);
    if (!plan->finalized)
        return lh_fail(LH_ERROR_BAD_STATE,
                       "%s: the plan is not finalized; call lh_plan_finalize first", fn);
    return LH_OK;
}

LH_API lh_status lh_plan_get_i64(const lh_plan *plan, lh_query query, int64_t *out_value) {
    lh_clear_error();
    lh_status st = lh_check_plan_ready(plan, "lh_plan_get_i64");
    if (st != LH_OK) return st;
    if (!out_value) return lh_fail(LH_ERROR_NULL_POINTER, "lh_plan_get_i64: out_value is NULL");
    switch (query) {
    case LH_QUERY_SUBSEQ_LEN: *out_value = plan->cfg.s_sel; return LH_OK;
    case LH_QUERY_PYRAMID_LEN: *out_value = plan->cfg.s_total; return LH_OK;
    case LH_QUERY_SAVED_BYTES: *out_value = plan->sizes.saved_bytes; return LH_OK;
    case LH_QUERY_FWD_WORKSPACE_BYTES: *out_value = plan->sizes.fwd_workspace_bytes; return LH_OK;
    case LH_QUERY_BWD_WORKSPACE_BYTES: *out_value = plan->sizes.bwd_workspace_bytes; return LH_OK;
    case LH_QUERY_STAGE_WORKSPACE_BYTES:
        *out_value = plan->sizes.stage_workspace_bytes;
        return LH_OK;
    case LH_QUERY_BACKEND: *out_value = plan->context->ops->kind; return LH_OK;
    case LH_QUERY_LOCAL_SEQ_LEN: *out_value = plan->cfg.tensor_seq_len; return LH_OK;
    case LH_QUERY_CHUNKS: *out_value = plan->cfg.chunks; return LH_OK;
    case LH_QUERY_ATTENTION_WORKSPACE_BYTES:
        *out_value = plan->sizes.attention_workspace_bytes;
        return LH_OK;
    case LH_QUERY_WORLD: *out_value = plan->cfg.cp_world; return LH_OK;
    case LH_QUERY_RANK: *out_value = plan->cfg.cp_rank; return LH_OK;
    case LH_QUERY_SETUP_KERNELS_US:
    case LH_QUERY_SETUP_CUDNN_HANDLE_US:
    case LH_QUERY_SETUP_CUDNN_GRAPH_US:
    case LH_QUERY_SETUP_CUDNN_HEURISTICS_US:
    case LH_QUERY_SETUP_CUDNN_PLAN_US:
        *out_value = plan->sizes.setup_us[query - LH_QUERY_SETUP_KERNELS_US];
        return LH_OK;
    case LH_QUERY_SETUP_CUDNN_REUSED: *out_value = plan->sizes.setup_reused; return LH_OK;
    }
    return lh_fail(LH_ERROR_INVALID_VALUE, "lh_plan_get_i64: unknown query %d", (int)query);
}

static const char *const stage_names[LH_STAGE_COUNT] = {
    "SCORES", "SELECT", "GATHER", "ATTENTION_FORWARD", "SCATTER", "REGATHER", "GATHER_DOUT",
    "ATTENTION_BACKWARD", "POOL_GRAD"};

LH_API lh_status lh_plan_get_stage_ms(const lh_plan *plan, lh_stage stage, double *out_ms) {
    lh_clear_error();
    const char *fn = "lh_plan_get_stage_ms";
    lh_status st = lh_check_plan_ready(plan, fn);
    if (st != LH_OK) return st;
    if (!out_ms) return lh_fail(LH_ERROR_NULL_POINTER, "%s: out_ms is NULL", fn);
    if ((int)stage < 0 || stage >= LH_STAGE_COUNT)
        return lh_fail(LH_ERROR_INVALID_VALUE, "%s: unknown stage %d (0..%d)", fn, (int)stage,
                       LH_STAGE_COUNT - 1);
    if (!plan->cfg.stage_timing)
        return lh_fail(LH_ERROR_BAD_STATE,
                       "%s: the plan does not time its stages; set STAGE_TIMING = 1 before "
                       "lh_plan_finalize", fn);
    st = plan->context->ops->stage_ms(plan->state, stage, stage_names[stage], out_ms);
    return st == LH_OK ? st : lh_fail_context(st, fn);
}
