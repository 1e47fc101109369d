/*
 * cuda_module.h - loads PTX into the current CUDA context and launches its kernels.
 *
 * The compiler (compiler/) turns MLIR into PTX text; this file hands that text to the driver's JIT
 * (cuModuleLoadDataEx) and keeps the JIT's log so a failure says why. Callers push the plan's
 * context before calling any of these.
 */
#ifndef LH_CUDA_MODULE_H
#define LH_CUDA_MODULE_H

#include "cuda_driver.h"

typedef struct lh_cu_module {
    CUmodule module;
} lh_cu_module;

/* JIT-compiles NUL-terminated `ptx` into the current context. On failure the message carries the
 * driver's error log; the status is LH_ERROR_COMPILE for PTX the JIT rejects. */
lh_status lh_cu_module_load(const lh_cu_api *cu, const char *ptx, lh_cu_module *out);

/* Looks up kernel `name` (its .entry name in the PTX). */
lh_status lh_cu_module_function(const lh_cu_api *cu, const lh_cu_module *m, const char *name,
                                CUfunction *out);

void lh_cu_module_unload(const lh_cu_api *cu, lh_cu_module *m);

typedef struct lh_cu_launch {
    unsigned int grid[3];
    unsigned int block[3];
    unsigned int shared_bytes;
} lh_cu_launch;

/* Enqueues `fn` on `stream` with `params` (an array of pointers to each argument's value);
 * asynchronous, so it may be captured into a CUDA graph. `name` is used in the error message. */
lh_status lh_cu_launch_kernel(const lh_cu_api *cu, CUfunction fn, const char *name,
                              const lh_cu_launch *launch, CUstream stream, void **params);

#endif /* LH_CUDA_MODULE_H */
