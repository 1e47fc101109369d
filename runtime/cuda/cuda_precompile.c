/*
 * cuda_precompile.c - cuDNN's attention plans of a configuration built ahead of time, without
 * the GPU, for a GPU described in text (cudnn_device.h); and that text for a context's GPU.
 *
 * The shapes are the ones a CUDA plan of the configuration asks cuDNN for
 * (cuda_plan_sdpa_shapes), and the plans go into the store a CUDA plan reads
 * (cudnn_plan_store.h) under the described GPU's identity, so lh_plan_finalize on that GPU
 * restores them instead of building them: no heuristics, no run-time compilation.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_internal.h"
#include "cudnn_device.h"
#include "cuda_verbose.h"

lh_status lh_cuda_precompile_attention(const lh_config *cfg, const char *device_text,
                                       lhc_cache *cache, int64_t *out_built) {
    *out_built = 0;
    lh_device_text device;
    lh_status st = lh_device_text_parse(device_text, &device);
    if (st != LH_OK) return st;
    const lh_cudnn_api *dnn = NULL;
    st = lh_cudnn_load(&dnn);
    if (st != LH_OK) return st;
    cudnnBackendDescriptor_t props = NULL;
    st = lh_cudnn_device_open(dnn, &device, &props);
    if (st != LH_OK) return st;
    /* cuDNN compiles its attention engines to PTX and has the driver turn that into the GPU's
     * code, even without a GPU: the driver's library has to be here, the GPU need not be. */
    st = lh_cu_driver_present();
    if (st != LH_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", lh_error_message());
        dnn->BackendDestroyDescriptor(props);
        return lh_fail(st, "%s: cuDNN builds its attention engines with the CUDA driver's "
                       "compiler, so building them ahead of time needs the NVIDIA driver's "
                       "library on this machine (a GPU is not needed: a GPU machine with "
                       "CUDA_VISIBLE_DEVICES empty, or a container with the driver's user-space "
                       "libraries)", why);
    }
    lh_plan_store store = {.cache = cache, .sm = device.sm, .device = device.name};
    lh_sdpa_shape shapes[CUDA_MAX_SDPA_SHAPES];
    int count = cuda_plan_sdpa_shapes(cfg, shapes);
    for (int i = 0; i < count && st == LH_OK; i++) {
        int built = 0;
        int64_t t0 = lh_clock_us();
        st = cuda_sdpa_precompile(dnn, props, &store, &shapes[i], &built);
        if (st == LH_OK)
            lh_cuda_say("cuDNN SDPA (B %lld, H %lld, S %lld, D %lld) for %s: %d plan(s) built in "
                        "%.1f ms", (long long)shapes[i].b, (long long)shapes[i].h,
                        (long long)shapes[i].s, (long long)shapes[i].d, device.name, built,
                        (double)(lh_clock_us() - t0) / 1e3);
        *out_built += built;
    }
    dnn->BackendDestroyDescriptor(props);
    return st;
}

lh_status lh_cuda_device_chip(const char *device_text, char *chip, size_t cap) {
    lh_device_text device;
    lh_status st = lh_device_text_parse(device_text, &device);
    if (st == LH_OK) cuda_kernels_chip(device.sm, chip, cap);
    return st;
}

lh_status lh_cuda_describe_device(void *context_state, char **out_text) {
    cuda_context *cc = context_state;
    *out_text = NULL;
    const lh_cudnn_api *dnn = NULL;
    lh_status st = lh_cudnn_load(&dnn);
    if (st != LH_OK) return st;
    CUcontext ignored;
    st = lh_cu_check(cc->cu->CtxPushCurrent(cc->primary), "making the context current");
    if (st != LH_OK) return st;
    char *json = NULL;
    st = lh_cudnn_device_properties(dnn, cc->ordinal, &json);
    cc->cu->CtxPopCurrent(&ignored);
    if (st != LH_OK) return st;
    *out_text = lh_device_text_encode(cc->name, cc->sm, dnn->version, json);
    free(json);
    if (!*out_text)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "the GPU's description could not be written (out of memory, or cuDNN gave "
                       "empty device properties)");
    return LH_OK;
}
