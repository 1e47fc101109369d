/*
 * api_precompile.c - lh_plan_precompile: the GPU kernels of a plan's configuration compiled into
 * the disk kernel cache ahead of time, on any machine (no GPU needed), so that a training job's
 * lh_plan_finalize on a GPU loads them instead of compiling.
 *
 * The kernels and their constants come from the compiler's registry (lhc_plan_kernels and
 * lhc_ring_kernel), the same calls the CUDA backend makes at finalize, so both hit the same
 * cache entries.
 */

#include "compiler.h"
#include "ffi_internal.h"

static const char *const fn = "lh_plan_precompile";

/* The kernel requests of a plan's configuration: the Lighthouse stages (LIGHTHOUSE mode) and the
 * attention step's kernel, which plans on a ring or with attention hooks load. */
static lh_status plan_requests(const lh_plan *plan, lhc_kernel_request req[LHC_MAX_PLAN_KERNELS + 1],
                               int *count) {
    const lh_config *c = &plan->cfg;
    static const lh_param required[] = {LH_PARAM_HEADS, LH_PARAM_HEAD_DIM};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!(plan->set_mask & (1u << required[i])))
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "%s must be set before %s (the kernels depend on HEAD_DIM and on "
                           "HEADS / KV_HEADS)", lh_param_name(required[i]), fn);
    int64_t kv_heads = lh_plan_kv_heads(plan);
    if (c->heads % kv_heads != 0)
        return lh_fail(LH_ERROR_HEADS_MISMATCH,
                       "HEADS must be a multiple of KV_HEADS (got HEADS = %lld, KV_HEADS = %lld)",
                       (long long)c->heads, (long long)kv_heads);
    if (c->dtype != LH_DTYPE_BFLOAT16 && c->dtype != LH_DTYPE_FLOAT16)
        return lh_fail(LH_ERROR_UNSUPPORTED_DTYPE,
                       "the GPU kernels run DTYPE BFLOAT16 or FLOAT16 (the plan has FLOAT32, the "
                       "CPU backend's dtype); set LH_PARAM_DTYPE");
    if (c->head_dim > 256)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "GPU kernels need HEAD_DIM in {8, 16, 32, 64, 128, 256} (got %lld)",
                       (long long)c->head_dim);
    const char *dtype = c->dtype == LH_DTYPE_FLOAT16 ? "f16" : "bf16";
    *count = 0;
    lh_status st = LH_OK;
    if (c->mode == LH_MODE_LIGHTHOUSE) {
        lhc_plan_params params = {.pooling = (int)c->pooling, .levels = (int)c->levels,
                                  .head_dim = (int)c->head_dim, .dtype = dtype,
                                  .group = (int)(c->heads / kv_heads)};
        st = lhc_plan_kernels(&params, req, count);
    }
    if (st == LH_OK) st = lhc_ring_kernel(dtype, (int)c->head_dim, &req[*count]);
    if (st == LH_OK) (*count)++;
    return st;
}

/* A cache on the context's directory, with its disk part required: it is the point of the call. */
static lh_status open_cache(const lh_context *ctx, lhc_cache **out) {
    if (!ctx->options.cache_enabled)
        return lh_fail(LH_ERROR_BAD_STATE,
                       "the context's disk kernel cache is disabled (LH_CONTEXT_CACHE_ENABLED = "
                       "0): there is nowhere to keep the compiled kernels");
    lh_status st = lhc_cache_create(out);
    if (st == LH_OK) st = lhc_cache_set_dir(*out, ctx->options.cache_dir);
    if (st == LH_OK && lhc_cache_dir(*out)[0] == '\0')
        st = lh_fail(LH_ERROR_IO,
                     "no kernel cache directory: HOME, XDG_CACHE_HOME and LIGHTHOUSE_CACHE_DIR "
                     "are unset; set LH_CONTEXT_CACHE_DIR or LIGHTHOUSE_CACHE_DIR");
    if (st != LH_OK) {
        lhc_cache_destroy(*out);
        *out = NULL;
    }
    return st;
}

LH_API lh_status lh_plan_precompile(const lh_plan *plan, const char *chip, int64_t *out_compiled) {
    lh_clear_error();
    if (!plan) return lh_fail(LH_ERROR_NULL_POINTER, "%s: plan is NULL", fn);
    if (!chip) return lh_fail(LH_ERROR_NULL_POINTER, "%s: chip is NULL", fn);
    if (!lhc_available())
        return lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                       "%s: liblighthouse was built without its kernel compiler "
                       "(LH_WITH_COMPILER=OFF)", fn);
    lhc_kernel_request req[LHC_MAX_PLAN_KERNELS + 1];
    int count = 0;
    lh_status st = plan_requests(plan, req, &count);
    lhc_cache *cache = NULL;
    if (st == LH_OK) st = open_cache(plan->context, &cache);
    if (st != LH_OK) return lh_fail_context(st, fn);

    /* Side by side on the context's CPU worker threads (LH_CONTEXT_NUM_THREADS). */
    int64_t threads = plan->context->options.num_threads;
    if (threads > LHC_MAX_COMPILE_THREADS) threads = LHC_MAX_COMPILE_THREADS;
    const lhc_kernel *kernels[LHC_MAX_PLAN_KERNELS + 1];
    lhc_cache_stats start, after;
    lhc_cache_get_stats(cache, &start);
    st = lhc_compile_requests(cache, req, count, chip, (int)threads, kernels, NULL);
    lhc_cache_get_stats(cache, &after);
    if (st != LH_OK) {
        lh_fail_context(st, fn); /* the compiler's message names the kernel or the chip */
    } else if (after.disk_errors > start.disk_errors) {
        /* lhc_compile keeps a kernel it cannot store in memory; here storing it is the point. */
        st = lh_fail(LH_ERROR_IO, "%s: could not write %lld of the plan's %d kernels to the kernel "
                     "cache in %s", fn, (long long)(after.disk_errors - start.disk_errors), count,
                     lhc_cache_dir(cache));
    }
    lhc_cache_destroy(cache);
    if (st == LH_OK && out_compiled) *out_compiled = after.compiles - start.compiles;
    return st;
}
