/*
 * api_precompile.c - lh_plan_precompile: the GPU kernels of a plan's configuration compiled into
 * the disk kernel cache ahead of time, on any machine (no GPU needed), so that a training job's
 * lh_plan_finalize on a GPU loads them instead of compiling.
 *
 * The kernels and their constants come from the compiler's registry (lhc_plan_kernels and
 * lhc_ring_kernel), the same calls the CUDA backend makes at finalize, so both hit the same
 * cache entries.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The plan's kernels for `chip` compiled into `cache`; *out_compiled counts those compiled now.
 * Messages are prefixed with `who`. */
static lh_status compile_kernels(const lh_plan *plan, const char *chip, lhc_cache *cache,
                                 const char *who, int64_t *out_compiled) {
    lhc_kernel_request req[LHC_MAX_PLAN_KERNELS + 1];
    int count = 0;
    lh_status st = plan_requests(plan, req, &count);
    if (st != LH_OK) return lh_fail_context(st, who);

    /* Side by side on the context's CPU worker threads (LH_CONTEXT_NUM_THREADS). */
    int64_t threads = plan->context->options.num_threads;
    if (threads > LHC_MAX_COMPILE_THREADS) threads = LHC_MAX_COMPILE_THREADS;
    const lhc_kernel *kernels[LHC_MAX_PLAN_KERNELS + 1];
    lhc_cache_stats start, after;
    lhc_cache_get_stats(cache, &start);
    st = lhc_compile_requests(cache, req, count, chip, (int)threads, kernels, NULL);
    lhc_cache_get_stats(cache, &after);
    if (st != LH_OK) {
        lh_fail_context(st, who); /* the compiler's message names the kernel or the chip */
    } else if (after.disk_errors > start.disk_errors) {
        /* lhc_compile keeps a kernel it cannot store in memory; here storing it is the point. */
        st = lh_fail(LH_ERROR_IO, "%s: could not write %lld of the plan's %d kernels to the kernel "
                     "cache in %s", who, (long long)(after.disk_errors - start.disk_errors), count,
                     lhc_cache_dir(cache));
    }
    if (st == LH_OK && out_compiled) *out_compiled = after.compiles - start.compiles;
    return st;
}

static lh_status need_compiler(const char *who) {
    if (lhc_available()) return LH_OK;
    return lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                   "%s: liblighthouse was built without its kernel compiler "
                   "(LH_WITH_COMPILER=OFF)", who);
}

LH_API lh_status lh_plan_precompile(const lh_plan *plan, const char *chip, int64_t *out_compiled) {
    lh_clear_error();
    if (!plan) return lh_fail(LH_ERROR_NULL_POINTER, "%s: plan is NULL", fn);
    if (!chip) return lh_fail(LH_ERROR_NULL_POINTER, "%s: chip is NULL", fn);
    lh_status st = need_compiler(fn);
    if (st != LH_OK) return st;
    lhc_cache *cache = NULL;
    st = open_cache(plan->context, &cache);
    if (st != LH_OK) return lh_fail_context(st, fn);
    st = compile_kernels(plan, chip, cache, fn, out_compiled);
    lhc_cache_destroy(cache);
    return st;
}

/* ---- for a described GPU: the kernels and cuDNN's attention plans -------------------------- */

/* A description is a few kilobytes; anything past this is not one. */
#define DEVICE_TEXT_MAX (1 << 20)

/* The whole file at `path` as text (malloc'd), or LH_ERROR_IO with a sentence. */
static lh_status read_text(const char *path, const char *who, char **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return lh_fail(LH_ERROR_IO, "%s: cannot open the device description %s: %s", who, path,
                           strerror(errno));
    char *text = malloc(DEVICE_TEXT_MAX + 1);
    size_t n = text ? fread(text, 1, DEVICE_TEXT_MAX + 1, f) : 0;
    bool failed = ferror(f) != 0;
    fclose(f);
    if (!text) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", who);
    if (failed || n > DEVICE_TEXT_MAX || memchr(text, '\0', n)) {
        free(text);
        return lh_fail(failed ? LH_ERROR_IO : LH_ERROR_INVALID_VALUE,
                       "%s: %s is not a device description (%s)", who, path,
                       failed ? "reading it failed" : "binary, or larger than 1 MiB");
    }
    text[n] = '\0';
    *out = text;
    return LH_OK;
}

LH_API lh_status lh_plan_precompile_device(const lh_plan *plan, const char *device_path,
                                           int64_t *out_kernels, int64_t *out_cudnn_plans) {
    static const char *const dfn = "lh_plan_precompile_device";
    lh_clear_error();
    if (!plan) return lh_fail(LH_ERROR_NULL_POINTER, "%s: plan is NULL", dfn);
    if (!device_path) return lh_fail(LH_ERROR_NULL_POINTER, "%s: device_path is NULL", dfn);
    lh_status st = need_compiler(dfn);
    if (st != LH_OK) return st;
    lh_config cfg;
    st = lh_plan_derived_config(plan, &cfg);
    if (st != LH_OK) return lh_fail_context(st, dfn);
    char *text = NULL, chip[16], what[512];
    st = read_text(device_path, dfn, &text);
    if (st != LH_OK) return st;
    snprintf(what, sizeof what, "%s: %s", dfn, device_path);
    st = lh_cuda_device_chip(text, chip, sizeof chip);
    if (st != LH_OK) lh_fail_context(st, what);
    lhc_cache *cache = NULL;
    if (st == LH_OK && (st = open_cache(plan->context, &cache)) != LH_OK) lh_fail_context(st, dfn);
    int64_t kernels = 0, plans = 0;
    if (st == LH_OK) {
        /* cuDNN's side first: a description this cuDNN cannot use fails before anything is
         * built */
        snprintf(what, sizeof what, "%s: cuDNN's attention plans for %s", dfn, device_path);
        st = lh_cuda_precompile_attention(&cfg, text, cache, &plans);
        if (st != LH_OK) lh_fail_context(st, what);
        else st = compile_kernels(plan, chip, cache, dfn, &kernels);
    }
    lhc_cache_destroy(cache);
    free(text);
    if (st == LH_OK && out_kernels) *out_kernels = kernels;
    if (st == LH_OK && out_cudnn_plans) *out_cudnn_plans = plans;
    return st;
}

LH_API lh_status lh_context_save_device(const lh_context *context, const char *path) {
    static const char *const sfn = "lh_context_save_device";
    lh_clear_error();
    if (!context) return lh_fail(LH_ERROR_NULL_POINTER, "%s: context is NULL", sfn);
    if (!path) return lh_fail(LH_ERROR_NULL_POINTER, "%s: path is NULL", sfn);
    if (context->ops->kind != LH_BACKEND_CUDA)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "%s: a %s context has no GPU to describe (create the context with "
                       "LH_BACKEND_CUDA on the GPU the training job will run on)",
                       sfn, context->ops->name);
    char *text = NULL;
    lh_status st = lh_cuda_describe_device(context->state, &text);
    if (st != LH_OK) return lh_fail_context(st, sfn);
    FILE *f = fopen(path, "wb");
    size_t n = strlen(text);
    bool ok = f && fwrite(text, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = false;
    int err = errno;
    free(text);
    if (!ok) {
        if (f) remove(path); /* never a partial description */
        return lh_fail(LH_ERROR_IO, "%s: cannot write %s: %s", sfn, path, strerror(err));
    }
    return LH_OK;
}
