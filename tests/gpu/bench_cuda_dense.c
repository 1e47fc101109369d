/*
 * bench_cuda_dense.c - times dense causal attention (cuDNN) forward and forward+backward through
 * the public ABI, for comparison with PERF.md (H=8, D=128, bfloat16, BNHD, batch 1).
 * Not a test: it prints timings only. Usage: bench_cuda_dense [N ...] (default 32768 131072).
 */
#include <stdio.h>
#include <stdlib.h>

#include "gpu_common.h"

static gpu_env env;

static float elapsed(CUevent a, CUevent b) {
    float ms = 0;
    env.cu->EventElapsedTime(&ms, a, b);
    return ms;
}

static void bench(lh_context *ctx, int64_t n) {
    const int64_t h = 8, d = 128;
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_MODE, LH_MODE_DENSE));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_SEQ_LEN, n));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEADS, h));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEAD_DIM, d));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16));
    double t0 = now_seconds();
    LH_MUST(lh_plan_finalize(p));
    double finalize_s = now_seconds() - t0;
    int64_t saved_b, wf_b, wb_b;
    LH_MUST(lh_plan_get_i64(p, LH_QUERY_SAVED_BYTES, &saved_b));
    LH_MUST(lh_plan_get_i64(p, LH_QUERY_FWD_WORKSPACE_BYTES, &wf_b));
    LH_MUST(lh_plan_get_i64(p, LH_QUERY_BWD_WORKSPACE_BYTES, &wb_b));
    size_t bytes = (size_t)(n * h * d * 2);
    void *q = gpu_alloc(&env, bytes), *k = gpu_alloc(&env, bytes), *v = gpu_alloc(&env, bytes);
    void *out = gpu_alloc(&env, bytes), *dout = gpu_alloc(&env, bytes);
    void *dq = gpu_alloc(&env, bytes), *dk = gpu_alloc(&env, bytes), *dv = gpu_alloc(&env, bytes);
    void *saved = gpu_alloc(&env, (size_t)saved_b);
    void *wf = wf_b ? gpu_alloc(&env, (size_t)wf_b) : NULL;
    void *wb = wb_b ? gpu_alloc(&env, (size_t)wb_b) : NULL;
    uint16_t *bits = malloc(bytes);
    float *vals = malloc(bytes * 2);
    uint64_t state = 42;
    void *ins[] = {q, k, v, dout};
    for (int i = 0; i < 4; i++) {
        random_inputs(&state, LH_DTYPE_BFLOAT16, bytes / 2, bits, vals);
        gpu_upload(&env, ins[i], bits, bytes);
    }
    CUstream s;
    env.cu->StreamCreate(&s, CU_STREAM_NON_BLOCKING);
    CUevent e0, e1, e2;
    env.cu->EventCreate(&e0, 0);
    env.cu->EventCreate(&e1, 0);
    env.cu->EventCreate(&e2, 0);
    for (int i = 0; i < 2; i++) { /* warm-up */
        LH_MUST(lh_forward(p, q, k, v, out, saved, wf, s));
        LH_MUST(lh_backward(p, q, k, v, out, dout, saved, dq, dk, dv, wb, s));
    }
    env.cu->StreamSynchronize(s);
    const int iters = n >= 100000 ? 5 : 10;
    double fwd = 0, bwd = 0;
    for (int i = 0; i < iters; i++) {
        env.cu->EventRecord(e0, s);
        LH_MUST(lh_forward(p, q, k, v, out, saved, wf, s));
        env.cu->EventRecord(e1, s);
        LH_MUST(lh_backward(p, q, k, v, out, dout, saved, dq, dk, dv, wb, s));
        env.cu->EventRecord(e2, s);
        env.cu->EventSynchronize(e2);
        fwd += elapsed(e0, e1);
        bwd += elapsed(e1, e2);
    }
    fwd /= iters;
    bwd /= iters;
    /* causal: half of the 4*N^2*D*H multiply-adds of the forward; backward counts 2.5x */
    double flops_fwd = 2.0 * n * (double)n * d * h;
    printf("RESULT N=%lld H=%lld D=%lld bf16: forward %.2f ms (%.0f TFLOP/s), backward %.2f ms, "
           "fwd+bwd %.2f ms (%.0f TFLOP/s); finalize %.2f s; workspace fwd %lld B bwd %lld B\n",
           (long long)n, (long long)h, (long long)d, fwd, flops_fwd / (fwd * 1e9), bwd, fwd + bwd,
           3.5 * flops_fwd / ((fwd + bwd) * 1e9), finalize_s, (long long)wf_b, (long long)wb_b);
    fflush(stdout);
    env.cu->EventDestroy(e0);
    env.cu->EventDestroy(e1);
    env.cu->EventDestroy(e2);
    env.cu->StreamDestroy(s);
    void *bufs[] = {q, k, v, out, dout, dq, dk, dv, saved, wf, wb};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu_free(&env, bufs[i]);
    free(bits);
    free(vals);
    lh_plan_destroy(p);
}

int main(int argc, char **argv) {
    int rc = gpu_env_init(&env, "bench_cuda_dense");
    if (rc) return rc;
    lh_context *ctx;
    lh_status st = lh_context_create(LH_BACKEND_CUDA, 0, &ctx);
    if (st == LH_ERROR_BACKEND_UNAVAILABLE) {
        printf("SKIP: bench_cuda_dense: %s\n", lh_last_error());
        return GPU_SKIP;
    }
    LH_MUST(st);
    if (argc > 1)
        for (int i = 1; i < argc; i++) bench(ctx, atoll(argv[i]));
    else {
        bench(ctx, 32768);
        bench(ctx, 131072);
    }
    lh_context_destroy(ctx);
    return 0;
}
