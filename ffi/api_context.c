/* api_context.c - context handles: choosing a backend, its options, its lifetime. */
#include <stdlib.h>
#include <string.h>

#include "ffi_internal.h"

static const lh_backend_ops *backend_ops(lh_backend backend) {
    return backend == LH_BACKEND_CUDA ? &lh_cuda_backend_ops : &lh_cpu_backend_ops;
}

/* AUTO prefers the GPU; the probe's failure message is dropped because falling back to the CPU
 * is the documented behaviour, not an error. */
static lh_backend resolve_backend(lh_backend requested, int device) {
    if (requested != LH_BACKEND_AUTO) return requested;
    if (lh_cuda_backend_ops.probe(device) == LH_OK) return LH_BACKEND_CUDA;
    lh_clear_error();
    return LH_BACKEND_CPU;
}

LH_API lh_status lh_context_create(lh_backend backend, int device, lh_context **out_context) {
    lh_clear_error();
    if (!out_context)
        return lh_fail(LH_ERROR_NULL_POINTER, "lh_context_create: out_context is NULL");
    if (backend != LH_BACKEND_AUTO && backend != LH_BACKEND_CPU && backend != LH_BACKEND_CUDA)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "lh_context_create: backend %d is not one of AUTO (0), CPU (1), CUDA (2)",
                       (int)backend);
    if (device < 0)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "lh_context_create: device must be >= 0 (got %d)", device);

    lh_backend chosen = resolve_backend(backend, device);
    const lh_backend_ops *ops = backend_ops(chosen);
    lh_status st = ops->probe(device);
    if (st != LH_OK) return st;

    lh_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "lh_context_create: out of host memory");
    ctx->ops = ops;
    ctx->device = device;
    ctx->options.num_threads = 0;
    ctx->options.cache_enabled = 1;
    st = ops->context_create(device, &ctx->options, &ctx->state);
    if (st != LH_OK) {
        free(ctx);
        return st;
    }
    *out_context = ctx;
    return LH_OK;
}

LH_API lh_status lh_context_destroy(lh_context *context) {
    lh_clear_error();
    if (!context) return LH_OK;
    int64_t live = context->live_plans;
    if (live > 0)
        return lh_fail(LH_ERROR_BAD_STATE,
                       "lh_context_destroy: %lld plan(s) made from this context are still alive; "
                       "destroy them first",
                       (long long)live);
    context->ops->context_destroy(context->state);
    free(context);
    return LH_OK;
}

LH_API lh_status lh_context_get_backend(const lh_context *context, lh_backend *out_backend) {
    lh_clear_error();
    if (!context) return lh_fail(LH_ERROR_NULL_POINTER, "lh_context_get_backend: context is NULL");
    if (!out_backend)
        return lh_fail(LH_ERROR_NULL_POINTER, "lh_context_get_backend: out_backend is NULL");
    *out_backend = context->ops->kind;
    return LH_OK;
}

LH_API lh_status lh_context_set_i64(lh_context *context, lh_context_option option, int64_t value) {
    lh_clear_error();
    if (!context) return lh_fail(LH_ERROR_NULL_POINTER, "lh_context_set_i64: context is NULL");
    switch (option) {
    case LH_CONTEXT_NUM_THREADS:
        if (value < 0 || value > 4096)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "lh_context_set_i64: NUM_THREADS must be in 0..4096 (got %lld)",
                           (long long)value);
        context->options.num_threads = value;
        return LH_OK;
    case LH_CONTEXT_CACHE_ENABLED:
        if (value != 0 && value != 1)
            return lh_fail(LH_ERROR_INVALID_VALUE,
                           "lh_context_set_i64: CACHE_ENABLED must be 0 or 1 (got %lld)",
                           (long long)value);
        context->options.cache_enabled = (int)value;
        return LH_OK;
    case LH_CONTEXT_CACHE_DIR:
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "lh_context_set_i64: CACHE_DIR is a string option; use lh_context_set_str");
    }
    return lh_fail(LH_ERROR_INVALID_VALUE, "lh_context_set_i64: unknown option %d", (int)option);
}

LH_API lh_status lh_context_set_str(lh_context *context, lh_context_option option,
                                    const char *value) {
    lh_clear_error();
    if (!context) return lh_fail(LH_ERROR_NULL_POINTER, "lh_context_set_str: context is NULL");
    if (!value) return lh_fail(LH_ERROR_NULL_POINTER, "lh_context_set_str: value is NULL");
    if (option != LH_CONTEXT_CACHE_DIR)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "lh_context_set_str: option %d is not a string option (only CACHE_DIR is)",
                       (int)option);
    size_t len = strlen(value);
    if (len >= sizeof context->options.cache_dir)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "lh_context_set_str: CACHE_DIR is %zu bytes long; at most %zu are allowed",
                       len, sizeof context->options.cache_dir - 1);
    memcpy(context->options.cache_dir, value, len + 1);
    return LH_OK;
}
