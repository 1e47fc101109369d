/*
 * test_cuda_errors.c - the CUDA backend refuses bad arguments cleanly: host pointers, misaligned
 * or too-small buffers, memory of another device, a stream of another context, a missing
 * device, unsupported modes and dtypes, tensors past 2^31 elements. After each refusal the
 * output buffer is unchanged and a valid call still works.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_common.h"

static gpu_env env;

static lh_status dense_plan(lh_context *ctx, lh_dtype dtype, lh_mode mode, int64_t n, int64_t h,
                            lh_plan **out) {
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_MODE, mode));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_SEQ_LEN, n));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEADS, h));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEAD_DIM, 128));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_DTYPE, dtype));
    if (mode == LH_MODE_LIGHTHOUSE) {
        LH_MUST(lh_plan_set_i64(p, LH_PARAM_TOPK, 128));
        LH_MUST(lh_plan_set_i64(p, LH_PARAM_LEVELS, 2));
        LH_MUST(lh_plan_set_i64(p, LH_PARAM_POOLING, 2));
    }
    lh_status st = lh_plan_finalize(p);
    if (st != LH_OK) {
        /* keep the message: lh_plan_destroy clears it */
        printf("INFO finalize -> %s: %s\n", lh_status_string(st), lh_last_error());
        lh_plan_destroy(p);
        return st;
    }
    *out = p;
    return LH_OK;
}

static void expect(lh_status got, lh_status want, const char *name) {
    check(got == want, name, "-> %s (want %s): %s", lh_status_string(got), lh_status_string(want),
          lh_last_error());
}

int main(void) {
    const char *prog = "test_cuda_errors";
    int rc = gpu_env_init(&env, prog);
    if (rc) return rc;
    lh_context *ctx;
    lh_status st = lh_context_create(LH_BACKEND_CUDA, 0, &ctx);
    if (st == LH_ERROR_BACKEND_UNAVAILABLE) {
        printf("SKIP: %s: %s\n", prog, lh_last_error());
        return GPU_SKIP;
    }
    LH_MUST(st);

    lh_context *missing = NULL;
    expect(lh_context_create(LH_BACKEND_CUDA, 4096, &missing), LH_ERROR_BACKEND_UNAVAILABLE,
           "no_such_device");

    lh_plan *p = NULL;
    /* Lighthouse's GPU kernels move rows as 16-byte vectors in power-of-two lane groups: a head
     * dim of 96 is refused at finalize, with the rule in the message. */
    LH_MUST(lh_plan_create(ctx, &p));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_SEQ_LEN, 1024));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEADS, 2));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEAD_DIM, 96));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_TOPK, 128));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_LEVELS, 2));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_POOLING, 2));
    expect(lh_plan_finalize(p), LH_ERROR_UNSUPPORTED, "lighthouse_head_dim_96");
    check(strstr(lh_last_error(), "96") != NULL, "lighthouse_head_dim_96_message", "%s", lh_last_error());
    lh_plan_destroy(p);
    p = NULL;
    expect(dense_plan(ctx, LH_DTYPE_FLOAT32, LH_MODE_DENSE, 128, 2, &p),
           LH_ERROR_UNSUPPORTED_DTYPE, "float32_on_gpu");
    /* 2^21 tokens x 16 heads x 128 = 2^32 elements */
    expect(dense_plan(ctx, LH_DTYPE_BFLOAT16, LH_MODE_DENSE, (int64_t)1 << 21, 16, &p),
           LH_ERROR_UNSUPPORTED, "over_2^31_elements");

    const int64_t n = 128, h = 2;
    LH_MUST(dense_plan(ctx, LH_DTYPE_BFLOAT16, LH_MODE_DENSE, n, h, &p));
    size_t bytes = (size_t)(n * h * 128 * 2);
    int64_t saved_b, wf_b;
    LH_MUST(lh_plan_get_i64(p, LH_QUERY_SAVED_BYTES, &saved_b));
    LH_MUST(lh_plan_get_i64(p, LH_QUERY_FWD_WORKSPACE_BYTES, &wf_b));
    void *q = gpu_alloc(&env, bytes), *k = gpu_alloc(&env, bytes), *v = gpu_alloc(&env, bytes);
    void *out = gpu_alloc(&env, bytes), *saved = gpu_alloc(&env, (size_t)saved_b);
    void *wf = wf_b ? gpu_alloc(&env, (size_t)wf_b) : NULL;
    void *small = gpu_alloc(&env, 64);
    uint16_t *pattern = malloc(bytes), *after = malloc(bytes);
    for (size_t i = 0; i < bytes / 2; i++) pattern[i] = (uint16_t)(i * 7 + 1);
    void *hostq = malloc(bytes);
    memset(hostq, 0, bytes);
    gpu_upload(&env, q, pattern, bytes);
    gpu_upload(&env, k, pattern, bytes);
    gpu_upload(&env, v, pattern, bytes);

#define UNTOUCHED(name)                                                                        \
    do {                                                                                       \
        gpu_download(&env, after, out, bytes);                                                 \
        check(memcmp(after, pattern, bytes) == 0, name "_out_untouched", "%s", "output bytes unchanged");                  \
    } while (0)

    gpu_upload(&env, out, pattern, bytes);
    expect(lh_forward(p, hostq, k, v, out, saved, wf, NULL), LH_ERROR_BAD_POINTER, "host_pointer_q");
    UNTOUCHED("host_pointer_q");
    expect(lh_forward(p, q, k, v, (char *)out + 2, saved, wf, NULL), LH_ERROR_BAD_POINTER,
           "misaligned_out");
    expect(lh_forward(p, q, k, small, out, saved, wf, NULL), LH_ERROR_BAD_POINTER,
           "too_small_v");
    UNTOUCHED("too_small_v");

    void *pinned = NULL;
    if (env.cu->MemAllocHost(&pinned, bytes) == CUDA_SUCCESS) {
        expect(lh_forward(p, q, pinned, v, out, saved, wf, NULL), LH_ERROR_BAD_POINTER,
               "pinned_host_k");
        env.cu->MemFreeHost(pinned);
    }

    /* a stream of another context on the same device */
    CUcontext other = NULL;
    CUstream foreign = NULL;
    if (env.cu->CtxCreate(&other, 0, env.device) == CUDA_SUCCESS) {
        if (env.cu->StreamCreate(&foreign, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS) {
            CUcontext popped;
            env.cu->CtxPopCurrent(&popped); /* back to the primary context */
            expect(lh_forward(p, q, k, v, out, saved, wf, foreign), LH_ERROR_BAD_POINTER,
                   "foreign_stream");
            UNTOUCHED("foreign_stream");
            env.cu->CtxPushCurrent(other);
            env.cu->StreamDestroy(foreign);
        }
        env.cu->CtxDestroy(other); /* current here, so this also pops it */
        CUcontext cur = NULL;
        env.cu->CtxGetCurrent(&cur);
        if (cur != env.ctx) env.cu->CtxPushCurrent(env.ctx);
    } else {
        check(false, "foreign_stream", "could not create a second context");
    }

    /* memory of another device */
    if (env.device_count > 1) {
        CUdevice d1;
        CUcontext c1;
        env.cu->DeviceGet(&d1, 1);
        env.cu->DevicePrimaryCtxRetain(&c1, d1);
        env.cu->CtxPushCurrent(c1);
        CUdeviceptr other_mem = 0;
        env.cu->MemAlloc(&other_mem, bytes);
        CUcontext popped;
        env.cu->CtxPopCurrent(&popped);
        expect(lh_forward(p, q, k, (void *)(uintptr_t)other_mem, out, saved, wf, NULL),
               LH_ERROR_BAD_POINTER, "other_device_v");
        env.cu->MemFree(other_mem);
        env.cu->DevicePrimaryCtxRelease(d1);
    } else {
        printf("INFO other_device_v: skipped, this machine has one GPU\n");
    }

    /* after all that, a valid call works, on the legacy default stream (NULL) */
    expect(lh_forward(p, q, k, v, out, saved, wf, NULL), LH_OK, "valid_call_after_errors");
    gpu_sync(&env);
    CUcontext cur = NULL;
    env.cu->CtxGetCurrent(&cur);
    check(cur == env.ctx, "caller_context_kept", "the caller's current context is unchanged");

    lh_plan_destroy(p);
    void *bufs[] = {q, k, v, out, saved, wf, small};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu_free(&env, bufs[i]);
    free(pattern);
    free(after);
    free(hostq);
    lh_context_destroy(ctx);
    return finish(prog);
}
