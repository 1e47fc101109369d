/* cuda_driver.c - loads the CUDA driver API with dlopen and resolves its entry points once. */
#include "cuda_driver.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static lh_cu_api api;
static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static lh_status load_status = LH_ERROR_BACKEND_UNAVAILABLE;
static char load_message[1024];

/* One entry of the symbol table: the exported (versioned) name and where its pointer goes. */
typedef struct symbol {
    const char *name;
    void **slot;
} symbol;

#define SYM(field, exported) {exported, (void **)&api.field}

lh_status lh_cu_driver_present(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        return lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                       "the CUDA driver library libcuda.so.1 could not be loaded (%s)",
                       why ? why : "unknown reason");
    }
    /* The toolkit's stub (lib64/stubs) loads too, and fails every call: ask it its version,
     * which the real library answers without cuInit and so without a GPU. */
    CUresult (*version)(int *) = (CUresult(*)(int *))dlsym(lib, "cuDriverGetVersion");
    int v = 0;
    CUresult r = version ? version(&v) : CUDA_ERROR_NOT_FOUND;
    dlclose(lib);
    if (r != CUDA_SUCCESS)
        return lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                       "the libcuda.so.1 found is not a working CUDA driver (cuDriverGetVersion: "
                       "error %d; the CUDA toolkit's stub library answers so)", (int)r);
    return LH_OK;
}

static void load(void) {
    /* RTLD_LOCAL: the driver's symbols must not leak into the process's global namespace. */
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        snprintf(load_message, sizeof load_message,
                 "the CUDA driver library libcuda.so.1 could not be loaded (%s); the CUDA backend "
                 "needs an NVIDIA driver (it is searched on LD_LIBRARY_PATH and the system "
                 "library path)",
                 why ? why : "unknown reason");
        return;
    }
    const symbol table[] = {
        SYM(Init, "cuInit"),
        SYM(DriverGetVersion, "cuDriverGetVersion"),
        SYM(GetErrorName, "cuGetErrorName"),
        SYM(GetErrorString, "cuGetErrorString"),
        SYM(DeviceGetCount, "cuDeviceGetCount"),
        SYM(DeviceGet, "cuDeviceGet"),
        SYM(DeviceGetName, "cuDeviceGetName"),
        SYM(DeviceGetAttribute, "cuDeviceGetAttribute"),
        SYM(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
        SYM(DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
        SYM(CtxPushCurrent, "cuCtxPushCurrent_v2"),
        SYM(CtxPopCurrent, "cuCtxPopCurrent_v2"),
        SYM(CtxGetCurrent, "cuCtxGetCurrent"),
        SYM(CtxSynchronize, "cuCtxSynchronize"),
        SYM(CtxCreate, "cuCtxCreate_v2"),
        SYM(CtxDestroy, "cuCtxDestroy_v2"),
        SYM(PointerGetAttributes, "cuPointerGetAttributes"),
        SYM(StreamGetCtx, "cuStreamGetCtx"),
        SYM(StreamCreate, "cuStreamCreate"),
        SYM(StreamDestroy, "cuStreamDestroy_v2"),
        SYM(StreamSynchronize, "cuStreamSynchronize"),
        SYM(StreamIsCapturing, "cuStreamIsCapturing"),
        SYM(StreamBeginCapture, "cuStreamBeginCapture_v2"),
        SYM(StreamEndCapture, "cuStreamEndCapture"),
        SYM(GraphInstantiate, "cuGraphInstantiateWithFlags"),
        SYM(GraphLaunch, "cuGraphLaunch"),
        SYM(GraphExecDestroy, "cuGraphExecDestroy"),
        SYM(GraphDestroy, "cuGraphDestroy"),
        SYM(MemAlloc, "cuMemAlloc_v2"),
        SYM(MemFree, "cuMemFree_v2"),
        SYM(MemGetInfo, "cuMemGetInfo_v2"),
        SYM(MemcpyHtoD, "cuMemcpyHtoD_v2"),
        SYM(MemcpyDtoH, "cuMemcpyDtoH_v2"),
        SYM(MemsetD8Async, "cuMemsetD8Async"),
        SYM(MemsetD32Async, "cuMemsetD32Async"),
        SYM(MemAllocHost, "cuMemAllocHost_v2"),
        SYM(MemFreeHost, "cuMemFreeHost"),
        SYM(ModuleLoadDataEx, "cuModuleLoadDataEx"),
        SYM(ModuleUnload, "cuModuleUnload"),
        SYM(ModuleGetFunction, "cuModuleGetFunction"),
        SYM(LaunchKernel, "cuLaunchKernel"),
        SYM(EventCreate, "cuEventCreate"),
        SYM(EventDestroy, "cuEventDestroy_v2"),
        SYM(EventRecord, "cuEventRecord"),
        SYM(EventSynchronize, "cuEventSynchronize"),
        SYM(EventElapsedTime, "cuEventElapsedTime_v2"),
        SYM(StreamWaitEvent, "cuStreamWaitEvent"),
        SYM(MemcpyAsync, "cuMemcpyAsync"),
        SYM(CtxSetCurrent, "cuCtxSetCurrent"),
        SYM(MemsetD8, "cuMemsetD8_v2"),
        SYM(MemcpyDtoD, "cuMemcpyDtoD_v2"),
        SYM(MemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2"),
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        *table[i].slot = dlsym(lib, table[i].name);
        if (!*table[i].slot) {
            /* cuEventElapsedTime_v2 is new in CUDA 12.8; older drivers only have the original. */
            if (strcmp(table[i].name, "cuEventElapsedTime_v2") == 0)
                *table[i].slot = dlsym(lib, "cuEventElapsedTime");
        }
        if (!*table[i].slot) {
            snprintf(load_message, sizeof load_message,
                     "the CUDA driver libcuda.so.1 has no symbol %s: the driver is too old for "
                     "liblighthouse (CUDA 12.0 or newer is needed)",
                     table[i].name);
            dlclose(lib);
            return;
        }
    }
    /* The linker is optional: without it, kernels load from PTX as before. All four or none. */
    const symbol linker[] = {
        SYM(LinkCreate, "cuLinkCreate_v2"),
        SYM(LinkAddData, "cuLinkAddData_v2"),
        SYM(LinkComplete, "cuLinkComplete"),
        SYM(LinkDestroy, "cuLinkDestroy"),
    };
    int linker_found = 1;
    for (size_t i = 0; i < sizeof linker / sizeof linker[0]; i++)
        linker_found &= (*linker[i].slot = dlsym(lib, linker[i].name)) != NULL;
    if (!linker_found)
        for (size_t i = 0; i < sizeof linker / sizeof linker[0]; i++) *linker[i].slot = NULL;
    CUresult r = api.Init(0);
    if (r != CUDA_SUCCESS) {
        const char *name = NULL;
        api.GetErrorName(r, &name);
        snprintf(load_message, sizeof load_message,
                 "cuInit failed with %s (%d): the NVIDIA driver is installed but no usable GPU "
                 "was found",
                 name ? name : "an unknown error", (int)r);
        return; /* keep the library loaded: the process may still hold pointers into it */
    }
    load_status = LH_OK;
}

lh_status lh_cu_load(const lh_cu_api **out_api) {
    pthread_once(&load_once, load);
    if (load_status != LH_OK) return lh_fail(load_status, "%s", load_message);
    *out_api = &api;
    return LH_OK;
}

lh_status lh_cu_fail(CUresult result, const char *what) {
    const char *name = NULL, *text = NULL;
    if (api.GetErrorName) api.GetErrorName(result, &name);
    if (api.GetErrorString) api.GetErrorString(result, &text);
    lh_status st = result == CUDA_ERROR_OUT_OF_MEMORY ? LH_ERROR_OUT_OF_DEVICE_MEMORY
                                                      : LH_ERROR_DEVICE;
    return lh_fail(st, "%s failed: %s (%d): %s", what, name ? name : "CUDA error", (int)result,
                   text ? text : "no description");
}

int64_t lh_clock_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}
