/*
 * cudnn_api.h - the part of cuDNN 9 that liblighthouse uses (handle + backend graph API), loaded
 * at run time with dlopen so the library needs no cuDNN to load. cudnn_graph.h supplies the types.
 */
#ifndef LH_CUDNN_API_H
#define LH_CUDNN_API_H

#include <cudnn_graph.h>

#include "cuda_driver.h" /* lh_clock_us */
#include "runtime.h"

/* The oldest cuDNN the SDPA graphs were written for (9.0.0, as cudnnGetVersion reports it). */
#define LH_CUDNN_MIN_VERSION 90000

typedef struct lh_cudnn_api {
    size_t (*GetVersion)(void);
    const char *(*GetErrorString)(cudnnStatus_t status);
    void (*GetLastErrorString)(char *message, size_t max_size);
    cudnnStatus_t (*Create)(cudnnHandle_t *handle);
    cudnnStatus_t (*Destroy)(cudnnHandle_t handle);
    cudnnStatus_t (*SetStream)(cudnnHandle_t handle, cudaStream_t stream);
    cudnnStatus_t (*BackendCreateDescriptor)(cudnnBackendDescriptorType_t type,
                                             cudnnBackendDescriptor_t *desc);
    cudnnStatus_t (*BackendDestroyDescriptor)(cudnnBackendDescriptor_t desc);
    cudnnStatus_t (*BackendFinalize)(cudnnBackendDescriptor_t desc);
    cudnnStatus_t (*BackendSetAttribute)(cudnnBackendDescriptor_t desc,
                                         cudnnBackendAttributeName_t name,
                                         cudnnBackendAttributeType_t type, int64_t count,
                                         const void *elements);
    cudnnStatus_t (*BackendGetAttribute)(cudnnBackendDescriptor_t const desc,
                                         cudnnBackendAttributeName_t name,
                                         cudnnBackendAttributeType_t type, int64_t requested,
                                         int64_t *count, void *elements);
    cudnnStatus_t (*BackendExecute)(cudnnHandle_t handle, cudnnBackendDescriptor_t plan,
                                    cudnnBackendDescriptor_t variant_pack);
    size_t version; /* cudnnGetVersion(), e.g. 91900 */
    /* the CUDA runtime this cuDNN was built for, e.g. 13000; 0 where cuDNN does not say */
    size_t cudart_version;
} lh_cudnn_api;

/* Loads cuDNN once per process (libcudnn.so.9, else libcudnn_graph.so.9) and checks its version.
 * Missing or older than 9.0 -> LH_ERROR_BACKEND_UNAVAILABLE naming what was looked for, where. */
lh_status lh_cudnn_load(const lh_cudnn_api **out_api);
/* The same, silent: false (and no error set) where cuDNN cannot be used. */
bool lh_cudnn_try_load(const lh_cudnn_api **out_api);

/* Turns a failed cuDNN call into LH_ERROR_CUDNN (or LH_ERROR_OUT_OF_DEVICE_MEMORY for
 * CUDNN_STATUS_ALLOC_FAILED) with cuDNN's own last error text appended. */
lh_status lh_cudnn_fail(cudnnStatus_t status, const char *what);

static inline lh_status lh_cudnn_check(cudnnStatus_t status, const char *what) {
    return status == CUDNN_STATUS_SUCCESS ? LH_OK : lh_cudnn_fail(status, what);
}

#endif /* LH_CUDNN_API_H */
