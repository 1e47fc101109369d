/* host_device.c - see host_device.h. The CUDA driver comes from the library's own loader
 * (runtime/cuda/cuda_driver.c, linked in as lh_cuda_host): one symbol list for everything. */
#include "host_device.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_driver.h"

static const lh_cu_api *cu;
static char gpu_name[256];

int hd_gpu_init(int device) {
    if (lh_cu_load(&cu) != LH_OK) return -1;
    CUdevice dev = 0;
    CUcontext ctx = NULL;
    if (cu->DeviceGet(&dev, device) || cu->DevicePrimaryCtxRetain(&ctx, dev) ||
        cu->CtxSetCurrent(ctx))
        return -1;
    if (cu->DeviceGetName(gpu_name, (int)sizeof gpu_name, dev)) gpu_name[0] = '\0';
    return 0;
}

void *hd_alloc(lh_backend backend, size_t bytes) {
    if (backend != LH_BACKEND_CUDA) return aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    CUdeviceptr p = 0;
    return cu->MemAlloc(&p, bytes ? bytes : 1) ? NULL : (void *)(uintptr_t)p;
}

void hd_free(lh_backend backend, void *ptr) {
    if (!ptr) return;
    if (backend != LH_BACKEND_CUDA) free(ptr);
    else cu->MemFree((CUdeviceptr)(uintptr_t)ptr);
}

int hd_upload(lh_backend backend, void *dst, const void *src, size_t bytes) {
    if (backend != LH_BACKEND_CUDA) { memcpy(dst, src, bytes); return 0; }
    return cu->MemcpyHtoD((CUdeviceptr)(uintptr_t)dst, src, bytes);
}

int hd_download(lh_backend backend, void *dst, const void *src, size_t bytes) {
    if (backend != LH_BACKEND_CUDA) { memcpy(dst, src, bytes); return 0; }
    return cu->MemcpyDtoH(dst, (CUdeviceptr)(uintptr_t)src, bytes);
}

int hd_memset(lh_backend backend, void *dst, int byte, size_t bytes) {
    if (backend != LH_BACKEND_CUDA) { memset(dst, byte, bytes); return 0; }
    return cu->MemsetD8((CUdeviceptr)(uintptr_t)dst, (unsigned char)byte, bytes);
}

int hd_synchronize(lh_backend backend) { return backend == LH_BACKEND_CUDA ? cu->CtxSynchronize() : 0; }

struct hd_event { CUevent handle; };

hd_event *hd_event_create(void) {
    hd_event *e = calloc(1, sizeof *e);
    if (e && cu->EventCreate(&e->handle, 0)) { free(e); return NULL; }
    return e;
}

void hd_event_destroy(hd_event *event) {
    if (!event) return;
    cu->EventDestroy(event->handle);
    free(event);
}

int hd_event_record(hd_event *event) { return cu->EventRecord(event->handle, NULL); }

float hd_event_elapsed_ms(hd_event *start, hd_event *end) {
    float ms = -1.0f;
    if (cu->EventSynchronize(end->handle) || cu->EventElapsedTime(&ms, start->handle, end->handle))
        return -1.0f;
    return ms;
}

int hd_copy_d2d(void *dst, const void *src, size_t bytes) {
    return cu->MemcpyDtoDAsync((CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src, bytes, NULL);
}

const char *hd_gpu_name(void) { return gpu_name; }

static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t f32_to_f16(float f) {
    _Float16 h = (_Float16)f;
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}

static float f16_to_f32(uint16_t u) {
    _Float16 h;
    memcpy(&h, &u, 2);
    return (float)h;
}

void hd_encode(lh_dtype dtype, const float *src, void *dst, size_t n) {
    uint16_t *d16 = dst;
    if (dtype == LH_DTYPE_FLOAT32) memcpy(dst, src, n * 4);
    else if (dtype == LH_DTYPE_BFLOAT16) for (size_t i = 0; i < n; i++) d16[i] = f32_to_bf16(src[i]);
    else for (size_t i = 0; i < n; i++) d16[i] = f32_to_f16(src[i]);
}

void hd_decode(lh_dtype dtype, const void *src, float *dst, size_t n) {
    const uint16_t *s16 = src;
    if (dtype == LH_DTYPE_FLOAT32) memcpy(dst, src, n * 4);
    else if (dtype == LH_DTYPE_BFLOAT16) for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(s16[i]);
    else for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(s16[i]);
}

void hd_round_to(lh_dtype dtype, float *x, size_t n) {
    if (dtype == LH_DTYPE_BFLOAT16) for (size_t i = 0; i < n; i++) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
    else if (dtype == LH_DTYPE_FLOAT16) for (size_t i = 0; i < n; i++) x[i] = f16_to_f32(f32_to_f16(x[i]));
}

double hd_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
