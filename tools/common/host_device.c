/* host_device.c - see host_device.h. The driver entry points are the handful the tools need. */
#include "host_device.h"

#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*cu_init_fn)(unsigned);
typedef int (*cu_device_get_fn)(int *, int);
typedef int (*cu_primary_retain_fn)(void **, int);
typedef int (*cu_ctx_set_fn)(void *);
typedef int (*cu_mem_alloc_fn)(uint64_t *, size_t);
typedef int (*cu_mem_free_fn)(uint64_t);
typedef int (*cu_copy_htod_fn)(uint64_t, const void *, size_t);
typedef int (*cu_copy_dtoh_fn)(void *, uint64_t, size_t);
typedef int (*cu_memset_fn)(uint64_t, unsigned char, size_t);
typedef int (*cu_sync_fn)(void);
typedef int (*cu_event_create_fn)(void **, unsigned);
typedef int (*cu_event_destroy_fn)(void *);
typedef int (*cu_event_record_fn)(void *, void *);
typedef int (*cu_event_sync_fn)(void *);
typedef int (*cu_event_elapsed_fn)(float *, void *, void *);
typedef int (*cu_copy_dtod_fn)(uint64_t, uint64_t, size_t, void *);
typedef int (*cu_device_name_fn)(char *, int, int);

static struct {
    cu_mem_alloc_fn alloc;
    cu_mem_free_fn free;
    cu_copy_htod_fn htod;
    cu_copy_dtoh_fn dtoh;
    cu_memset_fn memset8;
    cu_sync_fn sync;
    cu_event_create_fn event_create;
    cu_event_destroy_fn event_destroy;
    cu_event_record_fn event_record;
    cu_event_sync_fn event_sync;
    cu_event_elapsed_fn event_elapsed;
    cu_copy_dtod_fn dtod;
    char name[256];
} cu;

int hd_gpu_init(int device) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return -1;
    cu_init_fn init = (cu_init_fn)dlsym(lib, "cuInit");
    cu_device_get_fn dev_get = (cu_device_get_fn)dlsym(lib, "cuDeviceGet");
    cu_primary_retain_fn retain = (cu_primary_retain_fn)dlsym(lib, "cuDevicePrimaryCtxRetain");
    cu_ctx_set_fn set = (cu_ctx_set_fn)dlsym(lib, "cuCtxSetCurrent");
    cu.alloc = (cu_mem_alloc_fn)dlsym(lib, "cuMemAlloc_v2");
    cu.free = (cu_mem_free_fn)dlsym(lib, "cuMemFree_v2");
    cu.htod = (cu_copy_htod_fn)dlsym(lib, "cuMemcpyHtoD_v2");
    cu.dtoh = (cu_copy_dtoh_fn)dlsym(lib, "cuMemcpyDtoH_v2");
    cu.memset8 = (cu_memset_fn)dlsym(lib, "cuMemsetD8_v2");
    cu.sync = (cu_sync_fn)dlsym(lib, "cuCtxSynchronize");
    cu.event_create = (cu_event_create_fn)dlsym(lib, "cuEventCreate");
    cu.event_destroy = (cu_event_destroy_fn)dlsym(lib, "cuEventDestroy_v2");
    cu.event_record = (cu_event_record_fn)dlsym(lib, "cuEventRecord");
    cu.event_sync = (cu_event_sync_fn)dlsym(lib, "cuEventSynchronize");
    cu.event_elapsed = (cu_event_elapsed_fn)dlsym(lib, "cuEventElapsedTime");
    cu.dtod = (cu_copy_dtod_fn)dlsym(lib, "cuMemcpyDtoDAsync_v2");
    cu_device_name_fn dev_name = (cu_device_name_fn)dlsym(lib, "cuDeviceGetName");
    if (!init || !dev_get || !retain || !set || !cu.alloc || !cu.free || !cu.htod || !cu.dtoh ||
        !cu.memset8 || !cu.sync || !cu.event_create || !cu.event_destroy || !cu.event_record ||
        !cu.event_sync || !cu.event_elapsed || !cu.dtod || !dev_name)
        return -1;
    int dev = 0;
    void *ctx = NULL;
    if (init(0) || dev_get(&dev, device) || retain(&ctx, dev) || set(ctx)) return -1;
    if (dev_name(cu.name, (int)sizeof cu.name, dev)) cu.name[0] = '\0';
    return 0;
}

void *hd_alloc(lh_backend backend, size_t bytes) {
    if (backend != LH_BACKEND_CUDA) return aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    uint64_t p = 0;
    return cu.alloc(&p, bytes ? bytes : 1) ? NULL : (void *)(uintptr_t)p;
}

void hd_free(lh_backend backend, void *ptr) {
    if (!ptr) return;
    if (backend != LH_BACKEND_CUDA) free(ptr);
    else cu.free((uint64_t)(uintptr_t)ptr);
}

int hd_upload(lh_backend backend, void *dst, const void *src, size_t bytes) {
    if (backend != LH_BACKEND_CUDA) { memcpy(dst, src, bytes); return 0; }
    return cu.htod((uint64_t)(uintptr_t)dst, src, bytes);
}

int hd_download(lh_backend backend, void *dst, const void *src, size_t bytes) {
    if (backend != LH_BACKEND_CUDA) { memcpy(dst, src, bytes); return 0; }
    return cu.dtoh(dst, (uint64_t)(uintptr_t)src, bytes);
}

int hd_memset(lh_backend backend, void *dst, int byte, size_t bytes) {
    if (backend != LH_BACKEND_CUDA) { memset(dst, byte, bytes); return 0; }
    return cu.memset8((uint64_t)(uintptr_t)dst, (unsigned char)byte, bytes);
}

int hd_synchronize(lh_backend backend) { return backend == LH_BACKEND_CUDA ? cu.sync() : 0; }

struct hd_event { void *handle; };

hd_event *hd_event_create(void) {
    hd_event *e = calloc(1, sizeof *e);
    if (e && cu.event_create(&e->handle, 0)) { free(e); return NULL; }
    return e;
}

void hd_event_destroy(hd_event *event) {
    if (!event) return;
    cu.event_destroy(event->handle);
    free(event);
}

int hd_event_record(hd_event *event) { return cu.event_record(event->handle, NULL); }

float hd_event_elapsed_ms(hd_event *start, hd_event *end) {
    float ms = -1.0f;
    if (cu.event_sync(end->handle) || cu.event_elapsed(&ms, start->handle, end->handle)) return -1.0f;
    return ms;
}

int hd_copy_d2d(void *dst, const void *src, size_t bytes) {
    return cu.dtod((uint64_t)(uintptr_t)dst, (uint64_t)(uintptr_t)src, bytes, NULL);
}

const char *hd_gpu_name(void) { return cu.name; }

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
