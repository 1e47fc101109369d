/* cuda_kernels.c - loading a plan's kernels and launching them by descriptor (cuda_kernels.h). */
#include "cuda_kernels.h"

#include <stdio.h>
#include <string.h>

#include "cuda_cubin_store.h"

void cuda_kernels_chip(int sm, char *out, size_t cap) {
    if (sm == 100 || sm == 103) snprintf(out, cap, "sm_%da", sm);
    else snprintf(out, cap, "sm_%d", sm);
}

lh_status cuda_kernels_cache_configure(lhc_cache *cache, const lh_context_options *options) {
    if (!options) return LH_OK;
    lhc_cache_set_disk_enabled(cache, options->cache_enabled);
    return lhc_cache_set_dir(cache, options->cache_dir);
}

lh_status cuda_kernels_load(cuda_kernels *k, const lh_cu_api *cu, lhc_cache *cache,
                            const char *chip, const lhc_kernel_request *req, int count,
                            int threads) {
    k->cu = cu;
    for (int i = 0; i < count; i++)
        if (lhk_template_find(req[i].kernel) < 0)
            return lh_fail(LH_ERROR_INTERNAL, "no kernel descriptor names template '%s'",
                           req[i].kernel);
    /* The templates not loaded yet, in the templates' order whatever the order of the requests:
     * all compiled side by side first (the JIT's time), then loaded one by one. */
    lhc_kernel_request pending[LHK_TEMPLATE_COUNT];
    int template_of[LHK_TEMPLATE_COUNT], n = 0;
    for (int t = 0; t < LHK_TEMPLATE_COUNT; t++) {
        const lhc_kernel_request *r = NULL;
        for (int i = 0; i < count; i++)
            if (lhk_template_find(req[i].kernel) == t) r = &req[i];
        if (!r || k->module[t].module) continue;
        pending[n] = *r;
        template_of[n++] = t;
    }
    const lhc_kernel *compiled[LHK_TEMPLATE_COUNT];
    int failed = -1;
    int64_t t0 = lh_clock_us();
    lh_status st = lhc_compile_requests(cache, pending, n, chip, threads, compiled, &failed);
    int64_t t1 = lh_clock_us();
    k->compiled = n;
    k->compile_us = t1 - t0;
    k->load_us = 0;
    k->cubins_restored = k->cubins_stored = 0;
    if (st != LH_OK) return failed >= 0 ? lh_fail_context(st, pending[failed].kernel) : st;
    lhc_cache *cubins = cuda_cubin_store_wanted() ? cache : NULL;
    for (int i = 0; i < n; i++) {
        int t = template_of[i];
        cuda_cubin_outcome outcome;
        st = cuda_cubin_load(cu, cubins, compiled[i], chip, &k->module[t], &outcome);
        if (st != LH_OK) return lh_fail_context(st, pending[i].kernel);
        k->cubins_restored += outcome == CUDA_CUBIN_RESTORED;
        k->cubins_stored += outcome == CUDA_CUBIN_STORED;
        for (int id = 0; id < LHK_KERNEL_COUNT; id++) {
            if (lhk_kernels[id].template_id != (lhk_template)t) continue;
            st = lh_cu_module_function(cu, &k->module[t], lhk_kernels[id].entry, &k->fn[id]);
            if (st != LH_OK) return st;
            k->geometry[id] =
                (lhk_geometry){pending[i].block_threads, pending[i].tokens_per_block};
        }
    }
    k->load_us = lh_clock_us() - t1;
    return LH_OK;
}

void cuda_kernels_unload(cuda_kernels *k) {
    for (int t = 0; t < LHK_TEMPLATE_COUNT; t++) lh_cu_module_unload(k->cu, &k->module[t]);
    memset(k->fn, 0, sizeof k->fn);
}

lh_status cuda_kernels_launch(const cuda_kernels *k, lhk_kernel id, const void *args,
                              const lhk_shape *shape, CUstream stream) {
    const lhk_desc *d = &lhk_kernels[id];
    /* The struct is the argument list: 8 bytes per argument, in the signature's order. */
    void *params[LHK_MAX_ARGS];
    for (int i = 0; i < d->nargs; i++) params[i] = (void *)((const char *)args + 8 * i);
    unsigned int grid[3];
    d->grid(args, &k->geometry[id], shape, grid);
    lh_cu_launch l = {.grid = {grid[0], grid[1], grid[2]},
                      .block = {(unsigned int)k->geometry[id].block_threads, 1, 1}};
    return lh_cu_launch_kernel(k->cu, k->fn[id], d->entry, &l, stream, params);
}
