/*
 * cuda_plan.c - creating a plan on the GPU: the kernels of its stages (compiled through
 * compiler.h, loaded and launched through cuda_kernels.h), its attention (the attention step,
 * and cuDNN on the caller's tensors for dense plans without ring or hooks), its stage timer, and
 * the sizes it adds to the buffer table (runtime/buffers.c). runtime/pipeline.c runs it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algorithm.h"
#include "cuda_internal.h"
#include "cuda_verbose.h"

_Static_assert(CUDA_SETUP_PHASES == LH_QUERY_SETUP_CUDNN_PLAN_US - LH_QUERY_SETUP_KERNELS_US + 1,
               "one setup phase per LH_QUERY_SETUP_*_US query, in their order");

static bool chunked(const lh_config *c) { return c->ring || c->forward_hook; }

static bool plain_dense(const lh_config *c) { return c->mode == LH_MODE_DENSE && !chunked(c); }

/* Strides follow the tensors the pointers point into: a chunk of a ring shard lives in a tensor
 * of tensor_seq_len tokens (equal to seq_len without a ring). */
static void set_strides(cuda_plan *p) {
    const lh_config *c = &p->chunk;
    int64_t n = c->tensor_seq_len ? c->tensor_seq_len : c->seq_len, d = c->head_dim, h = c->heads,
            hk = c->kv_heads;
    if (c->layout == LH_LAYOUT_BNHD) {
        p->q_sb = n * h * d, p->q_st = h * d, p->q_sh = d;
        p->kv_sb = n * hk * d, p->kv_st = hk * d, p->kv_sh = d;
    } else {
        p->q_sb = h * n * d, p->q_st = d, p->q_sh = n * d;
        p->kv_sb = hk * n * d, p->kv_st = d, p->kv_sh = n * d;
    }
}

/* The templates a plan needs: its stages' (Lighthouse), and ring.mlir for the step of a chunked
 * plan (the ring's merges and sums, the packing of dense chunks); compiled on the context's CPU
 * worker threads (LH_CONTEXT_NUM_THREADS; 0, the default: every online core). */
static lh_status load_kernels(cuda_plan *p, const lh_context_options *options) {
    const lh_config *c = &p->chunk;
    const char *dtype = c->dtype == LH_DTYPE_FLOAT16 ? "f16" : "bf16";
    lhc_kernel_request req[LHC_MAX_PLAN_KERNELS + 1];
    int count = 0;
    lh_status st = LH_OK;
    if (c->mode == LH_MODE_LIGHTHOUSE) {
        lhc_plan_params params = {.pooling = (int)c->pooling, .levels = (int)c->levels,
                                  .head_dim = (int)c->head_dim, .dtype = dtype,
                                  .group = (int)(c->heads / c->kv_heads)};
        st = lhc_plan_kernels(&params, req, &count);
    }
    if (st == LH_OK && chunked(&p->cfg))
        st = lhc_ring_kernel(dtype, (int)c->head_dim, &req[count++]);
    if (st != LH_OK || count == 0) return st;
    /* The context's cache: a second plan of the context takes its kernels from memory */
    lhc_cache *cache = p->cc->kernel_cache;
    char chip[16];
    cuda_kernels_chip(p->cc->sm, chip, sizeof chip);
    int64_t threads = options ? options->num_threads : 0;
    if (threads > LHC_MAX_COMPILE_THREADS) threads = LHC_MAX_COMPILE_THREADS;
    return cuda_kernels_load(&p->kernels, p->cc->cu, cache, chip, req, count, (int)threads);
}

/* Dense attention on the caller's tensors: their own layout, Hkv heads; tensors of 2^31 elements
 * or more in pieces of whole sequences or head groups (cuda_sdpa_split), one cuDNN call each
 * (cuda_attention.c). Where no piece fits, the whole shape is asked for, and refused with
 * cuDNN's limit in the sentence. */
void cuda_dense_sdpa_shape(const lh_config *c, lh_sdpa_shape *shape, int64_t *nb, int64_t *nh) {
    bool bnhd = c->layout == LH_LAYOUT_BNHD;
    if (!cuda_sdpa_split(bnhd, c->batch, c->heads, c->kv_heads, c->seq_len, c->head_dim, nb, nh))
        *nb = c->batch, *nh = c->heads;
    *shape = (lh_sdpa_shape){.b = *nb, .h = *nh, .hkv = *nh / (c->heads / c->kv_heads),
                             .s = c->seq_len, .d = c->head_dim, .dtype = c->dtype,
                             .scale = c->scale};
    lh_sdpa_layout_strides(bnhd, c->heads, c->seq_len, c->head_dim, shape->q_strides);
    lh_sdpa_layout_strides(bnhd, c->kv_heads, c->seq_len, c->head_dim, shape->kv_strides);
}

static lh_status build_dense(cuda_plan *p) {
    lh_sdpa_shape shape;
    cuda_dense_sdpa_shape(&p->cfg, &shape, &p->dense_nb, &p->dense_nh);
    return cuda_dnn_sdpa_get(p->cc, p->dnn, &shape, &p->dense, &p->setup);
}

/* Grid dimensions y and z are at most 65535 on every CUDA device. The library's kernels (all of
 * Lighthouse mode, and the ring kernels of ring and hook plans) put the batch in z and heads in
 * y, up to H + 2 Hkv of them (pool_grad: dq, dk and dv rows). Plain dense plans run cuDNN alone. */
static lh_status check_grid_limits(const lh_config *cfg) {
    const int64_t max_yz = 65535;
    if (plain_dense(cfg)) return LH_OK;
    if (cfg->batch > max_yz)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "the CUDA backend launches its kernels with the batch in grid z, at most "
                       "65535: BATCH = %lld is too large", (long long)cfg->batch);
    if (cfg->heads + 2 * cfg->kv_heads > max_yz)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "the CUDA backend launches its kernels with heads in grid y, at most 65535: "
                       "HEADS + 2 * KV_HEADS = %lld + 2 * %lld is too large",
                       (long long)cfg->heads, (long long)cfg->kv_heads);
    return LH_OK;
}

void cuda_plan_destroy(void *plan_state) {
    cuda_plan *p = plan_state;
    if (!p) return;
    bool pushed = cuda_enter(p) == LH_OK;
    cuda_stage_timer_destroy(p->timer);
    cuda_attention_destroy(p->attn);
    cuda_kernels_unload(&p->kernels);
    cuda_dnn_sdpa_put(p->cc, p->dense);
    cuda_dnn_sdpa_put(p->cc, p->scorer);
    if (pushed) cuda_leave(p);
    free(p);
}

/* What the plan adds to the buffer table (runtime/buffers.c). */
static lh_backend_sizes own_sizes(const cuda_plan *p) {
    const lh_config *c = &p->chunk;
    int64_t es = (int64_t)lh_dtype_size(c->dtype);
    /* stages_indices: a ring or a hook can fail after the stages have run; saved is written
     * only once the attention step has succeeded. */
    lh_backend_sizes s = {.align = 256, .keeps_subsequence = true, .stages_indices = true};
    if (c->mode == LH_MODE_LIGHTHOUSE) {
        int64_t coarse = c->level_len[c->levels - 1]; /* the coarsest level's entries per head */
        s.inv_bytes = c->batch * c->heads * c->s_total * 4;
        /* Only the norm scorer's kernel writes the pooled rows (others: the gather averages). */
        if (c->scorer == LH_SCORER_NORM) {
            s.pooled_q_bytes = c->batch * c->heads * coarse * c->head_dim * es;
            s.pooled_k_bytes = c->batch * c->kv_heads * coarse * c->head_dim * es;
        }
        s.scorer_bytes = p->scorer_bytes;
    }
    const lh_sdpa_plan *plain = p->dense ? p->dense : p->attn ? p->attn->causal : NULL;
    if (plain) {
        s.attention_fwd_bytes = cuda_sdpa_fwd_workspace_bytes(plain);
        s.attention_bwd_bytes = cuda_sdpa_bwd_workspace_bytes(plain);
    }
    if (p->attn) s.attention_step_bytes = p->attn->workspace_bytes;
    if (p->dense) s.dense_lse_bytes = c->batch * c->heads * c->seq_len * 4; /* every piece's */
    return s;
}

/* The configuration a plan works from: the caller's, with the softmax scale's default. */
static void plan_config(const lh_config *cfg, lh_config *out, lh_config *chunk) {
    *out = *cfg;
    if (!(out->scale > 0.0)) out->scale = lh_default_softmax_scale(cfg->head_dim);
    lh_config_chunk(out, chunk);
}

int cuda_plan_sdpa_shapes(const lh_config *cfg, lh_sdpa_shape out[CUDA_MAX_SDPA_SHAPES]) {
    lh_config c, chunk;
    plan_config(cfg, &c, &chunk);
    int n = 0;
    int64_t nb, nh;
    if (plain_dense(&c)) cuda_dense_sdpa_shape(&c, &out[n++], &nb, &nh);
    if (c.mode == LH_MODE_LIGHTHOUSE && c.scorer == LH_SCORER_DILATED)
        cuda_scorer_sdpa_shape(&chunk, &out[n++]);
    cuda_step_sdpa_shape(&c, false, &out[n++]);
    if (c.ring) cuda_step_sdpa_shape(&c, true, &out[n++]);
    return n;
}

/* cuDNN's side of the plan, on cuda_dnn_open's thread while the kernels compile: the SDPA plans
 * of dense attention on the caller's tensors, of the dilated scorer and of the attention step
 * (which only keeps a pointer to the kernels). */
static lh_status build_dnn_side(void *arg, const lh_cudnn_api *dnn) {
    cuda_plan *p = arg;
    const lh_config *cfg = &p->cfg;
    p->dnn = dnn;
    lh_status st = LH_OK;
    if (plain_dense(cfg)) st = build_dense(p);
    if (st == LH_OK && cfg->mode == LH_MODE_LIGHTHOUSE && cfg->scorer == LH_SCORER_DILATED)
        st = cuda_scorer_create(p);
    if (st == LH_OK) {
        st = cuda_attention_create(p->cc, dnn, cfg, &p->kernels, &p->setup, &p->attn);
        /* Dense attention on the caller's tensors does not need the step: if its graph cannot be
         * built, only lh_attention_forward / _backward are refused. */
        if (st != LH_OK && plain_dense(cfg)) {
            snprintf(p->attn_error, sizeof p->attn_error, "%s", lh_error_message());
            lh_clear_error();
            st = LH_OK;
        }
    }
    return st;
}

/* With LIGHTHOUSE_CUDA_VERBOSE: when each side of the plan's creation reached each step, in ms
 * from the start of cuda_plan_create, so that a start-up's time can be placed (the two sides
 * overlap; what the call spends outside both shows as the gaps). */
static void say_timeline(const cuda_plan *p, const cuda_dnn_open *o, int64_t started_us,
                         int64_t kernels_done_us, int64_t joined_us) {
#define AT(us) ((us) ? (double)((us) - started_us) / 1e3 : -1.0)
    lh_cuda_say("plan start-up, ms from its start: our kernels: %d compiled or cached in %.1f, "
                "loaded in %.1f, done at %.1f; cuDNN's side: began at %.1f, open with a handle at %.1f, its "
                "attention plans built at %.1f; joined at %.1f; ready at %.1f",
                p->kernels.compiled, (double)p->kernels.compile_us / 1e3,
                (double)p->kernels.load_us / 1e3, AT(kernels_done_us), AT(o->began_us),
                AT(o->opened_us), AT(o->built_us), AT(joined_us), AT(lh_clock_us()));
#undef AT
}

lh_status cuda_plan_create(cuda_context *cc, const lh_pipeline_ops *ops,
                           const lh_context_options *options, const lh_config *cfg,
                           void **out_plan_state, lh_plan_sizes *sizes) {
    if (cfg->dtype != LH_DTYPE_FLOAT16 && cfg->dtype != LH_DTYPE_BFLOAT16)
        return lh_fail(LH_ERROR_UNSUPPORTED_DTYPE,
                       "the CUDA backend runs float16 and bfloat16 (DTYPE = FLOAT32 is the CPU "
                       "reference backend's dtype)");
    if (cfg->stage_timing && chunked(cfg))
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "STAGE_TIMING = 1 times the stages of one GPU's pipeline; a plan with a "
                       "ring or attention hooks runs its stages per chunk and is not timed");
    int64_t started_us = lh_clock_us();
    lh_status st = check_grid_limits(cfg);
    if (st != LH_OK) return st;
    lh_config chunk;
    lh_config_chunk(cfg, &chunk);
    /* Positions, slots and inv entries are int32 on the GPU. */
    int64_t rows = chunk.batch * chunk.heads * chunk.s_sel;
    if (chunk.mode == LH_MODE_LIGHTHOUSE &&
        (chunk.s_total >= ((int64_t)1 << 31) || rows >= ((int64_t)1 << 31)))
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "Lighthouse on the CUDA backend keeps positions in int32: S_total = %lld and "
                       "B * H * S_sel = %lld must stay below 2^31",
                       (long long)chunk.s_total, (long long)rows);
    cuda_plan *p = calloc(1, sizeof *p);
    if (!p) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating a CUDA plan failed");
    p->cc = cc;
    plan_config(cfg, &p->cfg, &p->chunk);
    set_strides(p);
    /* The context's disk cache as its options say now: the kernels' and, for every plan (dense
     * ones load no kernels), the cuDNN plan store's (cudnn_plan_store.h), before either side
     * reads it. */
    st = cuda_kernels_cache_configure(cc->kernel_cache, options);
    if (st != LH_OK) {
        free(p);
        return st;
    }
    cuda_dnn_open dnn_side; /* cuDNN's side on a thread while the kernels compile */
    cuda_dnn_open_begin(cc, build_dnn_side, p, &dnn_side);
    lh_status entered = cuda_enter(p);
    st = entered;
    int64_t kernels_us = 0;
    if (st == LH_OK) {
        int64_t t0 = lh_clock_us();
        st = load_kernels(p, options);
        kernels_us = lh_clock_us() - t0;
        if (p->kernels.compiled)
            lh_cuda_say("our kernels: %d compiled (or read from the kernel cache) in %.1f ms, "
                        "loaded in %.1f ms (%d from cubins of the kernel cache, %d cubins "
                        "written there)",
                        p->kernels.compiled, (double)p->kernels.compile_us / 1e3,
                        (double)p->kernels.load_us / 1e3, p->kernels.cubins_restored,
                        p->kernels.cubins_stored);
    }
    /* Failures in the order they would meet one after the other: cuDNN missing, then the
     * kernels, then what cuDNN could not build. */
    int64_t kernels_done_us = lh_clock_us();
    lh_status dnn_st = cuda_dnn_open_end(&dnn_side, &p->dnn, &p->setup);
    int64_t joined_us = lh_clock_us();
    p->setup.us[CUDA_SETUP_KERNELS] = kernels_us;
    if (dnn_st != LH_OK) st = dnn_st;
    if (st == LH_OK) st = cuda_dnn_open_built(&dnn_side);
    if (entered != LH_OK) {
        cuda_plan_destroy(p); /* what the cuDNN side built */
        return st;
    }
    if (st == LH_OK && cfg->stage_timing) st = cuda_stage_timer_create(cc->cu, &p->timer);
    cuda_leave(p);
    if (st != LH_OK) {
        cuda_plan_destroy(p);
        return st;
    }
    lh_backend_sizes own = own_sizes(p);
    lh_pipeline_init(&p->pipeline, ops, &p->cfg, &own, sizes);
    for (int i = 0; i < CUDA_SETUP_PHASES; i++) sizes->setup_us[i] = p->setup.us[i];
    sizes->setup_reused = p->setup.reused;
    if (lh_cuda_verbose()) {
        say_timeline(p, &dnn_side, started_us, kernels_done_us, joined_us);
        lh_cuda_say("%s on %s (sm_%d): %s",
                    plain_dense(cfg) ? (cfg->layout == LH_LAYOUT_BNHD ? "BNHD" : "BHND")
                    : cfg->ring      ? "ring attention"
                                     : "Lighthouse",
                    cc->name, cc->sm,
                    plain_dense(cfg) ? cuda_sdpa_describe(p->dense)
                    : p->attn        ? cuda_sdpa_describe(p->attn->causal)
                                     : "");
    }
    *out_plan_state = p;
    return LH_OK;
}
