/*
 * cuda_kernels.h - the JIT-compiled kernels of a plan, loaded into the current context and
 * launched by descriptor (compiler/kernels.h): a launch names the kernel and hands its typed
 * argument struct; the launcher takes the argument list, grid and block from the descriptor.
 * Used by the runtime and by tests/compiler/test_compiler_gpu.c alike.
 */
#ifndef LH_CUDA_KERNELS_H
#define LH_CUDA_KERNELS_H

#include "compiler.h"
#include "cuda_module.h"
#include "kernels.h"

typedef struct cuda_kernels {
    const lh_cu_api *cu;
    lh_cu_module module[LHK_TEMPLATE_COUNT]; /* the templates loaded so far */
    CUfunction fn[LHK_KERNEL_COUNT];         /* NULL: its template is not loaded */
    lhk_geometry geometry[LHK_KERNEL_COUNT];
    /* Where the last cuda_kernels_load spent its time: the JIT (or the kernel cache) for
     * `compiled` templates, then the driver loading them; of those, how many came from a cubin
     * of the kernel cache, and how many cubins it wrote there (cuda_cubin_store.h). */
    int compiled;
    int64_t compile_us, load_us;
    int cubins_restored, cubins_stored;
} cuda_kernels;

/* The PTX target of a device of compute capability `sm` (10 * major + minor): sm_90 for Hopper,
 * the architecture-specific sm_100a / sm_103a for Blackwell datacenter parts (the kernels use
 * nothing specific, but that is what ptxas and the driver expect for them), else sm_NN. */
void cuda_kernels_chip(int sm, char *out, size_t cap);

/* Points a kernel cache at the context's options as they are now (directory, disk on or off;
 * NULL: leaves the cache as it is). Kernels it holds in memory stay: they do not depend on the
 * directory. */
lh_status cuda_kernels_cache_configure(lhc_cache *cache, const lh_context_options *options);

/* Compiles (through `cache`, on up to `threads` threads: lhc_compile_requests) the templates of
 * `count` requests for `chip`, loads each into the current context (from its cubin in `cache`
 * where LIGHTHOUSE_KERNEL_CUBIN_STORE=1: cuda_cubin_store.h) and looks up its kernels.
 * Templates already loaded stay as they are. On failure the message names the template. */
lh_status cuda_kernels_load(cuda_kernels *k, const lh_cu_api *cu, lhc_cache *cache,
                            const char *chip, const lhc_kernel_request *req, int count,
                            int threads);
/* Unloads every module (in the context that loaded them, which must be current). */
void cuda_kernels_unload(cuda_kernels *k);

/* Enqueues kernel `id` on `stream` with `args` (its lhk_<kernel>_args) and the grid its
 * descriptor derives from the arguments and `shape`. */
lh_status cuda_kernels_launch(const cuda_kernels *k, lhk_kernel id, const void *args,
                              const lhk_shape *shape, CUstream stream);

#endif /* LH_CUDA_KERNELS_H */
