/*
 * cuda_driver.h - the CUDA driver API, loaded at run time with dlopen("libcuda.so.1").
 *
 * liblighthouse must load (and run its CPU backend) on machines without an NVIDIA driver, so
 * nothing links against libcuda. cuda.h supplies the types only; every function is resolved here
 * by its versioned symbol name (cuMemAlloc_v2, ...) and called through this table. The field names
 * drop the "cu" prefix because cuda.h #defines many cu* names to versioned ones.
 *
 * This is the one loader of the driver: the tools (tools/common/host_device.c) and the test
 * programs link it too (the static library lh_cuda_host), so the symbol list exists once.
 */
#ifndef LH_CUDA_DRIVER_H
#define LH_CUDA_DRIVER_H

#include <cuda.h>

#include "runtime.h"

typedef struct lh_cu_api {
    CUresult (*Init)(unsigned int flags);
    CUresult (*DriverGetVersion)(int *version);
    CUresult (*GetErrorName)(CUresult error, const char **str);
    CUresult (*GetErrorString)(CUresult error, const char **str);
    CUresult (*DeviceGetCount)(int *count);
    CUresult (*DeviceGet)(CUdevice *device, int ordinal);
    CUresult (*DeviceGetName)(char *name, int len, CUdevice dev);
    CUresult (*DeviceGetAttribute)(int *pi, CUdevice_attribute attrib, CUdevice dev);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *pctx, CUdevice dev);
    CUresult (*DevicePrimaryCtxRelease)(CUdevice dev);
    CUresult (*CtxPushCurrent)(CUcontext ctx);
    CUresult (*CtxPopCurrent)(CUcontext *pctx);
    CUresult (*CtxGetCurrent)(CUcontext *pctx);
    CUresult (*CtxSynchronize)(void);
    /* Old-style creation (flags, device): kept by the driver for binary compatibility. Tests use
     * it to make a second, foreign context. */
    CUresult (*CtxCreate)(CUcontext *pctx, unsigned int flags, CUdevice dev);
    CUresult (*CtxDestroy)(CUcontext ctx);
    CUresult (*PointerGetAttributes)(unsigned int n, CUpointer_attribute *attrs, void **data,
                                     CUdeviceptr ptr);
    CUresult (*StreamGetCtx)(CUstream stream, CUcontext *pctx);
    CUresult (*StreamCreate)(CUstream *stream, unsigned int flags);
    CUresult (*StreamDestroy)(CUstream stream);
    CUresult (*StreamSynchronize)(CUstream stream);
    CUresult (*StreamIsCapturing)(CUstream stream, CUstreamCaptureStatus *status);
    CUresult (*StreamBeginCapture)(CUstream stream, CUstreamCaptureMode mode);
    CUresult (*StreamEndCapture)(CUstream stream, CUgraph *graph);
    CUresult (*GraphInstantiate)(CUgraphExec *exec, CUgraph graph, unsigned long long flags);
    CUresult (*GraphLaunch)(CUgraphExec exec, CUstream stream);
    CUresult (*GraphExecDestroy)(CUgraphExec exec);
    CUresult (*GraphDestroy)(CUgraph graph);
    CUresult (*MemAlloc)(CUdeviceptr *dptr, size_t bytes);
    CUresult (*MemFree)(CUdeviceptr dptr);
    CUresult (*MemGetInfo)(size_t *free_bytes, size_t *total_bytes);
    CUresult (*MemcpyHtoD)(CUdeviceptr dst, const void *src, size_t bytes);
    CUresult (*MemcpyDtoH)(void *dst, CUdeviceptr src, size_t bytes);
    CUresult (*MemsetD8Async)(CUdeviceptr dst, unsigned char value, size_t n, CUstream stream);
    CUresult (*MemsetD32Async)(CUdeviceptr dst, unsigned int value, size_t n, CUstream stream);
    CUresult (*MemAllocHost)(void **pp, size_t bytes);
    CUresult (*MemFreeHost)(void *p);
    CUresult (*ModuleLoadDataEx)(CUmodule *module, const void *image, unsigned int num_options,
                                 CUjit_option *options, void **option_values);
    CUresult (*ModuleUnload)(CUmodule module);
    CUresult (*ModuleGetFunction)(CUfunction *fn, CUmodule module, const char *name);
    CUresult (*LaunchKernel)(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                             unsigned int bx, unsigned int by, unsigned int bz,
                             unsigned int shared_bytes, CUstream stream, void **params,
                             void **extra);
    CUresult (*EventCreate)(CUevent *event, unsigned int flags);
    CUresult (*EventDestroy)(CUevent event);
    CUresult (*EventRecord)(CUevent event, CUstream stream);
    CUresult (*EventSynchronize)(CUevent event);
    CUresult (*EventElapsedTime)(float *ms, CUevent start, CUevent end);
    /* Context parallelism: ordering between the compute and communication streams, and the
     * in-process ring's device-to-device copies (unified addressing: any two devices). */
    CUresult (*StreamWaitEvent)(CUstream stream, CUevent event, unsigned int flags);
    CUresult (*MemcpyAsync)(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream stream);
    /* The tools and test programs: a current context for the calling thread, synchronous
     * fills and copies, copies on the legacy stream. */
    CUresult (*CtxSetCurrent)(CUcontext ctx);
    CUresult (*MemsetD8)(CUdeviceptr dst, unsigned char value, size_t n);
    CUresult (*MemcpyDtoD)(CUdeviceptr dst, CUdeviceptr src, size_t bytes);
    CUresult (*MemcpyDtoDAsync)(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream stream);
    /* The driver's linker, which hands back the machine code it makes from PTX (kept in the
     * kernel cache: cuda_cubin_store.h). Optional: NULL where the driver lacks one of them. */
    CUresult (*LinkCreate)(unsigned int num_options, CUjit_option *options, void **option_values,
                           CUlinkState *state);
    CUresult (*LinkAddData)(CUlinkState state, CUjitInputType type, void *data, size_t size,
                            const char *name, unsigned int num_options, CUjit_option *options,
                            void **option_values);
    CUresult (*LinkComplete)(CUlinkState state, void **cubin, size_t *size);
    CUresult (*LinkDestroy)(CUlinkState state);
} lh_cu_api;

/* Loads libcuda.so.1 and calls cuInit(0) once per process. On failure returns
 * LH_ERROR_BACKEND_UNAVAILABLE with a sentence that says what was missing. */
lh_status lh_cu_load(const lh_cu_api **out_api);
/* Whether the NVIDIA driver's libcuda.so.1 is installed and answers (no GPU needed, cuInit not
 * called): LH_OK, or LH_ERROR_BACKEND_UNAVAILABLE with a sentence. Loads nothing for good. */
lh_status lh_cu_driver_present(void);

/* Turns a failed driver call into an lh_status with a message naming `what` and the driver's
 * error (CUDA_ERROR_OUT_OF_MEMORY -> LH_ERROR_OUT_OF_DEVICE_MEMORY, otherwise LH_ERROR_DEVICE). */
lh_status lh_cu_fail(CUresult result, const char *what);

/* `what` must succeed: returns LH_OK for CUDA_SUCCESS, else lh_cu_fail(result, what). */
static inline lh_status lh_cu_check(CUresult result, const char *what) {
    return result == CUDA_SUCCESS ? LH_OK : lh_cu_fail(result, what);
}

/* Microseconds on the monotonic clock, to time the steps of building a plan (here, with the
 * other host code the library shares with its tools and tests). */
int64_t lh_clock_us(void);

#endif /* LH_CUDA_DRIVER_H */
