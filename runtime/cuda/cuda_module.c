/* cuda_module.c - PTX -> CUmodule through the driver's JIT, and kernel launches. */
#include "cuda_module.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define JIT_LOG_BYTES 8192

lh_status lh_cu_module_load(const lh_cu_api *cu, const char *ptx, lh_cu_module *out) {
    /* Logs live on the stack: loading is rare (plan creation), and this keeps it reentrant. */
    char error_log[JIT_LOG_BYTES];
    char info_log[JIT_LOG_BYTES];
    error_log[0] = info_log[0] = '\0';
    CUjit_option options[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                              CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES};
    void *values[] = {error_log, (void *)(uintptr_t)JIT_LOG_BYTES, info_log,
                      (void *)(uintptr_t)JIT_LOG_BYTES};
    CUmodule module = NULL;
    CUresult r = cu->ModuleLoadDataEx(&module, ptx, 4, options, values);
    if (r != CUDA_SUCCESS) {
        error_log[JIT_LOG_BYTES - 1] = '\0';
        const char *name = NULL;
        cu->GetErrorName(r, &name);
        lh_status st = r == CUDA_ERROR_OUT_OF_MEMORY ? LH_ERROR_OUT_OF_DEVICE_MEMORY
                                                     : LH_ERROR_COMPILE;
        return lh_fail(st, "cuModuleLoadDataEx rejected the PTX: %s (%d); JIT log: %s",
                       name ? name : "CUDA error", (int)r,
                       error_log[0] ? error_log : "(empty)");
    }
    out->module = module;
    return LH_OK;
}

lh_status lh_cu_module_function(const lh_cu_api *cu, const lh_cu_module *m, const char *name,
                                CUfunction *out) {
    CUresult r = cu->ModuleGetFunction(out, m->module, name);
    if (r == CUDA_ERROR_NOT_FOUND)
        return lh_fail(LH_ERROR_INTERNAL, "the loaded PTX module has no kernel named '%s'", name);
    return lh_cu_check(r, "cuModuleGetFunction");
}

void lh_cu_module_unload(const lh_cu_api *cu, lh_cu_module *m) {
    if (m->module) cu->ModuleUnload(m->module);
    m->module = NULL;
}

lh_status lh_cu_launch_kernel(const lh_cu_api *cu, CUfunction fn, const char *name,
                              const lh_cu_launch *l, CUstream stream, void **params) {
    CUresult r = cu->LaunchKernel(fn, l->grid[0], l->grid[1], l->grid[2], l->block[0],
                                  l->block[1], l->block[2], l->shared_bytes, stream, params, NULL);
    if (r == CUDA_SUCCESS) return LH_OK;
    char what[256];
    snprintf(what, sizeof what, "launching kernel '%s' (grid %u,%u,%u block %u,%u,%u)", name,
             l->grid[0], l->grid[1], l->grid[2], l->block[0], l->block[1], l->block[2]);
    return lh_cu_fail(r, what);
}
