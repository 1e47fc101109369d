/* gpu_common.c - helpers of the GPU test programs (see gpu_common.h). */
#include "gpu_common.h"
#include "host_device.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const gpu_env *current_env;
static int passed, failed;

static void die_cu(CUresult r, const char *what) {
    lh_cu_fail(r, what);
    fprintf(stderr, "FATAL: %s\n", lh_error_message());
    exit(1);
}

#define CU_MUST(call, what)                                                                   \
    do {                                                                                      \
        CUresult must_r_ = (call);                                                            \
        if (must_r_ != CUDA_SUCCESS) die_cu(must_r_, what);                                   \
    } while (0)

int gpu_env_init(gpu_env *env, const char *program) { return gpu_env_init_on(env, program, 0); }

int gpu_env_init_on(gpu_env *env, const char *program, int ordinal) {
    memset(env, 0, sizeof *env);
    if (lh_cu_load(&env->cu) != LH_OK) {
        printf("SKIP: %s: no usable CUDA driver: %s\n", program, lh_error_message());
        return GPU_SKIP;
    }
    if (env->cu->DeviceGetCount(&env->device_count) != CUDA_SUCCESS || env->device_count == 0) {
        printf("SKIP: %s: the CUDA driver reports no device\n", program);
        return GPU_SKIP;
    }
    if (ordinal >= env->device_count) {
        printf("SKIP: %s: no device %d (%d here)\n", program, ordinal, env->device_count);
        return GPU_SKIP;
    }
    CU_MUST(env->cu->DeviceGet(&env->device, ordinal), "cuDeviceGet");
    CU_MUST(env->cu->DevicePrimaryCtxRetain(&env->ctx, env->device), "cuDevicePrimaryCtxRetain");
    CU_MUST(env->cu->CtxPushCurrent(env->ctx), "cuCtxPushCurrent");
    char name[128] = "";
    env->cu->DeviceGetName(name, sizeof name, env->device);
    printf("INFO: %s: device %d is %s (%d device%s)\n", program, ordinal, name, env->device_count,
           env->device_count == 1 ? "" : "s");
    current_env = env;
    return 0;
}

void *gpu_alloc(const gpu_env *env, size_t bytes) {
    CUdeviceptr p = 0;
    CU_MUST(env->cu->MemAlloc(&p, bytes ? bytes : 1), "cuMemAlloc");
    return (void *)(uintptr_t)p;
}

void gpu_free(const gpu_env *env, void *p) {
    if (p) env->cu->MemFree((CUdeviceptr)(uintptr_t)p);
}

void gpu_upload(const gpu_env *env, void *dst, const void *src, size_t bytes) {
    CU_MUST(env->cu->MemcpyHtoD((CUdeviceptr)(uintptr_t)dst, src, bytes), "cuMemcpyHtoD");
}

void gpu_download(const gpu_env *env, void *dst, const void *src, size_t bytes) {
    CU_MUST(env->cu->MemcpyDtoH(dst, (CUdeviceptr)(uintptr_t)src, bytes), "cuMemcpyDtoH");
}

float *gpu_download_f32(const gpu_env *env, const void *src, size_t n, lh_dtype dtype) {
    uint16_t *bits = malloc(n * 2);
    float *x = malloc(n * 4);
    if (!bits || !x) {
        fprintf(stderr, "gpu_download_f32: out of host memory for %zu elements\n", n);
        exit(1);
    }
    gpu_download(env, bits, src, n * 2);
    for (size_t i = 0; i < n; i++) x[i] = half_bits_to_f32(bits[i], dtype);
    free(bits);
    return x;
}

void gpu_poison(const gpu_env *env, void *p, size_t bytes) {
    CU_MUST(env->cu->MemsetD8Async((CUdeviceptr)(uintptr_t)p, 0xFF, bytes, NULL), "cuMemsetD8");
    CU_MUST(env->cu->CtxSynchronize(), "cuCtxSynchronize");
}

void gpu_sync(const gpu_env *env) { CU_MUST(env->cu->CtxSynchronize(), "cuCtxSynchronize"); }

/* One element through the tools' conversions (tools/common/host_device.c): the demo, the
 * benchmark and the tests round exactly alike. */
uint16_t f32_to_half_bits(float f, lh_dtype dtype) {
    uint16_t bits;
    hd_encode(dtype, &f, &bits, 1);
    return bits;
}

float half_bits_to_f32(uint16_t h, lh_dtype dtype) {
    float f;
    hd_decode(dtype, &h, &f, 1);
    return f;
}

static double uniform(uint64_t *s) {
    /* xorshift64*: fast, and good enough for test inputs */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return ((*s * 0x2545F4914F6CDD1DULL) >> 11) * (1.0 / 9007199254740992.0);
}

void cheap_inputs(uint64_t *state, lh_dtype dtype, size_t n, uint16_t *bits) {
    for (size_t i = 0; i < n; i++)
        bits[i] = f32_to_half_bits((float)((uniform(state) + uniform(state) - 1.0) * 1.7), dtype);
}

void random_inputs(uint64_t *state, lh_dtype dtype, size_t n, uint16_t *bits, float *values) {
    for (size_t i = 0; i < n; i++) {
        /* Box-Muller */
        double u1 = uniform(state), u2 = uniform(state);
        if (u1 < 1e-300) u1 = 1e-300;
        float x = (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
        bits[i] = f32_to_half_bits(x, dtype);
        values[i] = half_bits_to_f32(bits[i], dtype);
    }
}

double rel_error(const float *a, const float *r, size_t n) {
    double max_diff = 0, max_ref = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isinf(a[i])) return NAN;
        double diff = fabs((double)a[i] - (double)r[i]);
        if (diff > max_diff) max_diff = diff;
        if (fabs((double)r[i]) > max_ref) max_ref = fabs((double)r[i]);
    }
    return max_ref > 0 ? max_diff / max_ref : max_diff;
}

void check(bool ok, const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s %s ", ok ? "PASS" : "FAIL", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (ok) passed++;
    else failed++;
}

int finish(const char *program) {
    printf("SUMMARY %s: %d passed, %d failed\n", program, passed, failed);
    return failed ? 1 : 0;
}

void gpu_die_lh(const char *call, lh_status st, const char *file, int line) {
    fprintf(stderr, "FATAL %s:%d: %s returned %s: %s\n", file, line, call, lh_status_string(st),
            lh_last_error());
    printf("FAIL %s returned %s: %s\n", call, lh_status_string(st), lh_last_error());
    exit(1);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int64_t plan_query(const lh_plan *p, lh_query q) {
    int64_t v = 0;
    LH_MUST(lh_plan_get_i64(p, q, &v));
    return v;
}
