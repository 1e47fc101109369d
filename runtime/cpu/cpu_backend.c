/*
 * cpu_backend.c - the tables of the CPU reference backend (its ops for the ffi layer, its stages
 * for the pipeline), its context and plan state.
 *
 * The CPU backend runs everywhere (probe always succeeds), takes host pointers, and needs no
 * stream. A plan records the validated configuration, its thread count and the sizes the buffer
 * table needs from it; runtime/pipeline.c runs the stages, all computing lives in the stage files.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_attention.h"

typedef struct cpu_context {
    int64_t num_threads;   /* as set when the context was created (plans read the options) */
} cpu_context;

static lh_status cpu_probe(int device) {
    (void)device;
    return LH_OK;
}

static lh_status cpu_context_create(int device, const lh_context_options *options,
                                    void **out_state) {
    (void)device;
    cpu_context *ctx = malloc(sizeof *ctx);
    if (!ctx)
        return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "CPU context: out of host memory (%zu bytes)",
                       sizeof *ctx);
    ctx->num_threads = options ? options->num_threads : 0;
    *out_state = ctx;
    return LH_OK;
}

static void cpu_context_destroy(void *state) { free(state); }

static int thread_count(const lh_context_options *options) {
    int64_t n = options ? options->num_threads : 0;
    if (n <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n = online > 0 ? online : 1;
    }
    return n > 256 ? 256 : (int)n;
}

/* ---- the pipeline's view of the backend ------------------------------------------------------ */

static lh_status cpu_copy(void *plan, void *dst, const void *src, size_t bytes, void *stream) {
    (void)plan;
    (void)stream;
    memcpy(dst, src, bytes);
    return LH_OK;
}

static const lh_stage_ops lighthouse_stages = {
    .scores = lh_cpu_scores_stage,
    .select = lh_cpu_select_stage,
    .gather = lh_cpu_gather_stage,
    .scatter = lh_cpu_scatter_stage,
    .regather = lh_cpu_gather_stage,
    .gather_dout = lh_cpu_gather_dout_stage,
    .pool_grad = lh_cpu_pool_grad_stage,
};

static const lh_pipeline_ops pipeline_ops = {
    .lighthouse = &lighthouse_stages,
    .dilated_scores = lh_cpu_scores_dilated_stage,
    .dense = &lh_cpu_dense_stages,
    .attention_forward = lh_cpu_attention_forward,
    .attention_backward = lh_cpu_attention_backward,
    .dense_forward = lh_cpu_dense_forward,
    .dense_backward = lh_cpu_dense_backward,
    .copy = cpu_copy,
    .seal_saved = lh_cpu_saved_seal,
    .check_saved = lh_cpu_saved_check,
};

/* ---- plans ----------------------------------------------------------------------------------- */

static lh_status cpu_plan_create(void *context_state, const lh_context_options *options,
                                 const lh_config *cfg, void **out_plan_state,
                                 lh_plan_sizes *sizes) {
    (void)context_state;
    if (cfg->dtype != LH_DTYPE_FLOAT32)
        return lh_fail(LH_ERROR_UNSUPPORTED_DTYPE,
                       "the CPU backend computes in float32 only: LH_PARAM_DTYPE = %d (%s) is not "
                       "supported; use LH_DTYPE_FLOAT32, or the CUDA backend for float16/bfloat16",
                       (int)cfg->dtype,
                       cfg->dtype == LH_DTYPE_FLOAT16    ? "LH_DTYPE_FLOAT16"
                       : cfg->dtype == LH_DTYPE_BFLOAT16 ? "LH_DTYPE_BFLOAT16"
                                                         : "unknown");
    /* One allocation: the plan, and on a ring the plan of one chunk behind it. */
    lh_cpu_plan *plan = calloc(cfg->ring ? 2 : 1, sizeof *plan);
    if (!plan)
        return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "CPU plan: out of host memory (%zu bytes)",
                       sizeof *plan);
    plan->cfg = *cfg;
    if (!(plan->cfg.scale > 0.0))   /* the ffi layer sets the default; keep the SPEC's anyway */
        plan->cfg.scale = lh_default_softmax_scale(cfg->head_dim);
    plan->nthreads = thread_count(options);
    size_t a = lh_cpu_attention_scratch_bytes(cfg), s = lh_cpu_select_scratch_bytes(cfg);
    plan->scratch_bytes = lh_cpu_round64(a > s ? a : s);
    plan->chunk = plan;
    if (cfg->ring) {
        /* The derived sizes of a ring configuration already describe one chunk, so the chunk
         * plan shares the scratch size and thread count. */
        lh_cpu_plan *chunk = plan + 1;
        *chunk = *plan;
        lh_config_chunk(&plan->cfg, &chunk->cfg);
        chunk->chunk = chunk;
        plan->chunk = chunk;
    }

    const lh_config *c = &plan->cfg;
    size_t scratch = (size_t)plan->nthreads * plan->scratch_bytes;
    lh_backend_sizes own = {
        .align = 64,
        .stages_indices = true,
        .attention_fwd_bytes = (int64_t)lh_cpu_attention_fwd_bytes(plan),
        .attention_bwd_bytes = (int64_t)lh_cpu_attention_bwd_bytes(plan),
        .attention_step_bytes = (int64_t)lh_cpu_attention_step_bytes(plan),
        .dense_lse_bytes = (int64_t)lh_cpu_round64((size_t)(c->batch * c->heads * c->s_sel) * 4),
        .scratch_bytes = (int64_t)scratch,
        .scorer_bytes = c->scorer == LH_SCORER_DILATED
                            ? plan->nthreads * (int64_t)lh_cpu_dilated_thread_bytes(c)
                            : 0,
        .saved_tag_bytes = LH_CPU_SAVED_TAG_BYTES,
    };
    lh_pipeline_init(&plan->pipeline, &pipeline_ops, &plan->cfg, &own, sizes);
    *out_plan_state = plan;
    return LH_OK;
}

static void cpu_plan_destroy(void *plan_state) { free(plan_state); }

static lh_status cpu_check_buffer(void *plan_state, const void *ptr, size_t bytes,
                                  const char *name) {
    (void)plan_state;
    (void)ptr;
    (void)bytes;
    (void)name;
    return LH_OK;   /* any host pointer will do; sizes and alignment are the ffi layer's checks */
}

static lh_status cpu_check_stream(void *plan_state, void *stream) {
    (void)plan_state;
    if (stream != NULL)
        return lh_fail(LH_ERROR_BAD_POINTER,
                       "the CPU backend runs synchronously on the calling thread: stream must be "
                       "NULL (got %p)",
                       stream);
    return LH_OK;
}

const lh_backend_ops lh_cpu_backend_ops = {
    .kind = LH_BACKEND_CPU,
    .name = "cpu",
    .probe = cpu_probe,
    .context_create = cpu_context_create,
    .context_destroy = cpu_context_destroy,
    .plan_create = cpu_plan_create,
    .plan_destroy = cpu_plan_destroy,
    .check_buffer = cpu_check_buffer,
    .check_stream = cpu_check_stream,
    .forward = lh_pipeline_forward,
    .backward = lh_pipeline_backward,
    .forward_with_scores = lh_pipeline_forward_with_scores,
    .scores = lh_cpu_scores_entry,
    .select = lh_cpu_select_entry,
    .gather = lh_cpu_gather_entry,
    .scatter = lh_cpu_scatter_entry,
    .attention_forward = lh_cpu_attention_forward,
    .attention_backward = lh_cpu_attention_backward,
};
