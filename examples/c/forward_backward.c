/*
 * forward_backward.c - one Lighthouse attention forward and backward through liblighthouse's C
 * ABI, with every status checked. LH_BACKEND_AUTO gives the CUDA backend where a GPU is usable:
 * then the tensors are bf16 in device memory. Elsewhere it gives the CPU reference backend, which
 * runs fp32 on host memory. The dtype follows the backend the context got.
 *
 * Build it against an installed liblighthouse:
 *   cc forward_backward.c $(pkg-config --cflags --libs lighthouse) -ldl -lm -o forward_backward
 *   cmake -S examples/c -B build-example -DCMAKE_PREFIX_PATH=<prefix>   (find_package)
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lighthouse.h>

/* ---- memory: host memory for the CPU backend, device memory for CUDA --------------------------
 * A training framework passes its own device pointers and stream. This standalone program gets
 * device memory from the CUDA driver, loaded at run time so that it builds and runs where there
 * is no GPU stack at all. */

typedef unsigned long long cu_ptr; /* CUdeviceptr */
static struct {
    int (*alloc)(cu_ptr *, size_t);
    int (*free)(cu_ptr);
    int (*upload)(cu_ptr, const void *, size_t);
    int (*download)(void *, cu_ptr, size_t);
} cu;

/* Makes device 0's primary context (the one the library uses) current; 0 on success. */
static int cuda_init(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return -1;
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(lib, "cuInit");
    int (*device_get)(int *, int) = (int (*)(int *, int))dlsym(lib, "cuDeviceGet");
    int (*retain)(void **, int) = (int (*)(void **, int))dlsym(lib, "cuDevicePrimaryCtxRetain");
    int (*set_current)(void *) = (int (*)(void *))dlsym(lib, "cuCtxSetCurrent");
    cu.alloc = (int (*)(cu_ptr *, size_t))dlsym(lib, "cuMemAlloc_v2");
    cu.free = (int (*)(cu_ptr))dlsym(lib, "cuMemFree_v2");
    cu.upload = (int (*)(cu_ptr, const void *, size_t))dlsym(lib, "cuMemcpyHtoD_v2");
    cu.download = (int (*)(void *, cu_ptr, size_t))dlsym(lib, "cuMemcpyDtoH_v2");
    int device = 0;
    void *context = NULL;
    if (!init || !device_get || !retain || !set_current || !cu.alloc || !cu.free || !cu.upload ||
        !cu.download)
        return -1;
    return init(0) || device_get(&device, 0) || retain(&context, device) || set_current(context);
}

static void *buffer_alloc(lh_backend backend, int64_t bytes) {
    size_t n = bytes > 0 ? (size_t)bytes : 1;
    if (backend == LH_BACKEND_CPU) return aligned_alloc(64, (n + 63) / 64 * 64);
    cu_ptr p = 0;
    return cu.alloc(&p, n) ? NULL : (void *)(uintptr_t)p;
}

static void buffer_free(lh_backend backend, void *p) {
    if (!p) return;
    if (backend == LH_BACKEND_CPU) free(p);
    else cu.free((cu_ptr)(uintptr_t)p);
}

/* Host fp32 values to the backend's side in its dtype: fp32 for the CPU backend, bf16 (rounded
 * to nearest even) on the GPU. */
static int upload(lh_backend backend, void *dst, const float *src, size_t n) {
    if (backend == LH_BACKEND_CPU) return memcpy(dst, src, n * 4), 0;
    uint16_t *bf16 = malloc(n * 2);
    if (!bf16) return -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        bf16[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    int rc = cu.upload((cu_ptr)(uintptr_t)dst, bf16, n * 2);
    free(bf16);
    return rc;
}

/* The backend's values back as fp32. */
static int download(lh_backend backend, float *dst, const void *src, size_t n) {
    if (backend == LH_BACKEND_CPU) return memcpy(dst, src, n * 4), 0;
    uint16_t *bf16 = malloc(n * 2);
    if (!bf16) return -1;
    int rc = cu.download(bf16, (cu_ptr)(uintptr_t)src, n * 2);
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint32_t u = (uint32_t)bf16[i] << 16;
        memcpy(&dst[i], &u, 4);
    }
    free(bf16);
    return rc;
}

/* ---- the example ------------------------------------------------------------------------- */

/* Every call's status is checked; on failure lh_last_error() says what was wrong. */
#define TRY(call)                                                                                  \
    do {                                                                                           \
        lh_status st_ = (call);                                                                    \
        if (st_ != LH_OK) {                                                                        \
            fprintf(stderr, "%s failed: %s: %s\n", #call, lh_status_string(st_), lh_last_error()); \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* Plain C failures (memory, the CUDA driver) in the same style. */
#define REQUIRE(ok, what)                                  \
    do {                                                   \
        if (!(ok)) {                                       \
            fprintf(stderr, "%s failed\n", what);          \
            goto done;                                     \
        }                                                  \
    } while (0)

enum { B = 1, N = 8192, H = 4, D = 64 };
enum { Q, K, V, OUT, DOUT, DQ, DK, DV, TENSORS };

int main(void) {
    int rc = 1;
    lh_context *ctx = NULL;
    lh_plan *plan = NULL;
    lh_backend backend = LH_BACKEND_CPU;
    lh_dtype dtype = LH_DTYPE_FLOAT32;
    void *t[TENSORS] = {0};
    void *saved = NULL, *fwd_ws = NULL, *bwd_ws = NULL;
    const size_t n = (size_t)B * N * H * D;
    float *host = malloc(n * sizeof(float));
    REQUIRE(host, "allocating host memory");
    REQUIRE(lh_version_number() == LH_VERSION_NUMBER, "matching lighthouse.h and liblighthouse");

    TRY(lh_context_create(LH_BACKEND_AUTO, /*device*/ 0, &ctx));
    TRY(lh_context_get_backend(ctx, &backend));
    if (backend == LH_BACKEND_CUDA) REQUIRE(cuda_init() == 0, "loading the CUDA driver");
    /* The CPU reference backend runs fp32; the GPU kernels run bf16 (or fp16). */
    dtype = backend == LH_BACKEND_CUDA ? LH_DTYPE_BFLOAT16 : LH_DTYPE_FLOAT32;

    TRY(lh_plan_create(ctx, &plan));
    TRY(lh_plan_set_i64(plan, LH_PARAM_BATCH, B));
    TRY(lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, N));
    TRY(lh_plan_set_i64(plan, LH_PARAM_HEADS, H));
    TRY(lh_plan_set_i64(plan, LH_PARAM_HEAD_DIM, D));
    TRY(lh_plan_set_i64(plan, LH_PARAM_DTYPE, dtype));
    TRY(lh_plan_set_i64(plan, LH_PARAM_TOPK, 512)); /* LEVELS = 3, POOLING = 4 by default */
    TRY(lh_plan_finalize(plan)); /* every configuration error is reported here */

    int64_t saved_bytes, fwd_bytes, bwd_bytes;
    TRY(lh_plan_get_i64(plan, LH_QUERY_SAVED_BYTES, &saved_bytes));
    TRY(lh_plan_get_i64(plan, LH_QUERY_FWD_WORKSPACE_BYTES, &fwd_bytes));
    TRY(lh_plan_get_i64(plan, LH_QUERY_BWD_WORKSPACE_BYTES, &bwd_bytes));
    const int64_t bytes = (int64_t)n * (dtype == LH_DTYPE_FLOAT32 ? 4 : 2);
    for (int i = 0; i < TENSORS; i++) {
        t[i] = buffer_alloc(backend, bytes);
        REQUIRE(t[i], "allocating a tensor");
    }
    saved = buffer_alloc(backend, saved_bytes);
    fwd_ws = buffer_alloc(backend, fwd_bytes);
    bwd_ws = buffer_alloc(backend, bwd_bytes);
    REQUIRE(saved && fwd_ws && bwd_ws, "allocating saved and the workspaces");

    /* q, k, v and dout: uniform in [-1, 1) from a fixed seed */
    const int inputs[] = {Q, K, V, DOUT};
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (int j = 0; j < 4; j++) {
        for (size_t i = 0; i < n; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            host[i] = (float)((double)(state >> 40) * 0x1p-23 - 1.0);
        }
        REQUIRE(upload(backend, t[inputs[j]], host, n) == 0, "copying an input");
    }

    /* stream NULL: the CPU backend requires it; on CUDA it is the legacy default stream */
    TRY(lh_forward(plan, t[Q], t[K], t[V], t[OUT], saved, fwd_ws, NULL));
    TRY(lh_backward(plan, t[Q], t[K], t[V], t[OUT], t[DOUT], saved, t[DQ], t[DK], t[DV], bwd_ws,
                    NULL));

    printf("liblighthouse %s, %s backend, %s, B=%d N=%d H=%d D=%d\n", lh_version_string(),
           backend == LH_BACKEND_CUDA ? "CUDA" : "CPU", dtype == LH_DTYPE_FLOAT32 ? "fp32" : "bf16",
           B, N, H, D);
    const int outputs[] = {OUT, DQ, DK, DV};
    const char *names[] = {"out", "dq", "dk", "dv"};
    for (int j = 0; j < 4; j++) {
        REQUIRE(download(backend, host, t[outputs[j]], n) == 0, "copying a result back");
        double sum = 0.0;
        for (size_t i = 0; i < n; i++) sum += (double)host[i] * host[i];
        REQUIRE(isfinite(sum) && sum > 0.0, "checking that the result is finite and not zero");
        printf("  |%s| = %.4g\n", names[j], sqrt(sum));
    }
    printf("forward and backward: ok\n");
    rc = 0;

done: /* everything is released on every path */
    for (int i = 0; i < TENSORS; i++) buffer_free(backend, t[i]);
    buffer_free(backend, saved);
    buffer_free(backend, fwd_ws);
    buffer_free(backend, bwd_ws);
    lh_plan_destroy(plan);
    lh_context_destroy(ctx);
    free(host);
    return rc;
}
