/*
 * cpu_backend.c - the ops table of the CPU reference backend, its context and plan state.
 *
 * The CPU backend runs everywhere (probe always succeeds), takes host pointers, and needs no
 * stream. A plan records the validated configuration, its thread count and the layout of the
 * buffers it asks the caller for; all computing lives in the other cpu_*.c files.
 */
#include <stdlib.h>
#include <unistd.h>

#include "cpu_ring.h"

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
    size_t rows = (size_t)(c->batch * c->heads * c->s_sel);
    if (c->mode == LH_MODE_DENSE) {
        plan->saved_idx_off = plan->saved_o_off = plan->saved_lse_off = 0;
        sizes->saved_bytes = (int64_t)lh_cpu_round64(rows * sizeof(float));
    } else {
        plan->saved_idx_off = 0;
        plan->saved_o_off = lh_cpu_round64(rows * sizeof(int32_t));
        plan->saved_lse_off = plan->saved_o_off + lh_cpu_round64(rows * (size_t)c->head_dim * sizeof(float));
        sizes->saved_bytes = (int64_t)(plan->saved_lse_off + lh_cpu_round64(rows * sizeof(float)));
    }
    sizes->fwd_workspace_bytes = (int64_t)lh_cpu_forward_workspace_bytes(plan);
    sizes->bwd_workspace_bytes = (int64_t)lh_cpu_backward_workspace_bytes(plan);
    sizes->attention_workspace_bytes = (int64_t)lh_cpu_attention_workspace_bytes(plan);
    sizes->stage_workspace_bytes =
        c->mode == LH_MODE_DENSE ? 0 : (int64_t)((size_t)plan->nthreads * plan->scratch_bytes);
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
    .forward = lh_cpu_forward,
    .backward = lh_cpu_backward,
    .scores = lh_cpu_stage_scores,
    .select = lh_cpu_stage_select,
    .gather = lh_cpu_stage_gather,
    .scatter = lh_cpu_stage_scatter,
    .attention_forward = lh_cpu_attention_forward,
    .attention_backward = lh_cpu_attention_backward,
};
