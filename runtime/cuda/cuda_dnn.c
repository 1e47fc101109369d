/*
 * cuda_dnn.c - the cuDNN state a context's plans share: one cuDNN handle, created by the first
 * plan that needs it, and the SDPA plans (operation graphs, heuristics, finalized execution
 * plans) already built in the context, under the key of their shape (cuda_sdpa_key). Building
 * those is most of what a plan costs once its kernels come from the disk cache; a second plan
 * of the same attention shape (the same model's next layer, a plan re-created after a shape
 * change back, the floor of a benchmark) takes them from here.
 *
 * A new process finds them in neither place: cuda_sdpa_plan_create then restores the finalized
 * execution plans from the disk store beside the kernels (cudnn_plan_store.h) where an earlier
 * process wrote them.
 *
 * A cached SDPA plan holds only host descriptors (its workspace is the caller's), so keeping it
 * after its last plan is gone costs no device memory. cuDNN's handle may not be used by two
 * threads at once; plans that share it take `exec` from binding it to their stream until their
 * graph is enqueued (cuda_sdpa.c), so plans of one context still run from any thread.
 */
#include <stdio.h>
#include <string.h>

#include "cuda_internal.h"
#include "cuda_verbose.h"
#include "cudnn_prefetch.h"

static void destroy_sdpa(void *plan) { cuda_sdpa_plan_destroy(plan); }

void cuda_dnn_init(cuda_dnn_shared *s) {
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->exec, NULL);
    s->handle = NULL;
    lh_plan_cache_init(&s->sdpa, destroy_sdpa);
}

void cuda_dnn_destroy(cuda_context *cc) {
    cuda_dnn_shared *s = &cc->dnn;
    if (s->sdpa.count > 0 || s->handle) {
        CUcontext ignored;
        bool pushed = cc->cu->CtxPushCurrent(cc->primary) == CUDA_SUCCESS;
        lh_plan_cache_clear(&s->sdpa);
        if (s->handle) s->api->Destroy(s->handle);
        if (pushed) cc->cu->CtxPopCurrent(&ignored);
    }
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->exec);
}

lh_status cuda_dnn_handle(cuda_context *cc, const lh_cudnn_api *dnn, cudnnHandle_t *out,
                          cuda_setup *setup) {
    cuda_dnn_shared *s = &cc->dnn;
    lh_status st = LH_OK;
    pthread_mutex_lock(&s->lock);
    if (!s->handle) {
        int64_t t0 = lh_clock_us();
        st = lh_cudnn_check(dnn->Create(&s->handle), "cudnnCreate");
        if (st != LH_OK) s->handle = NULL;
        else s->api = dnn;
        setup->us[CUDA_SETUP_CUDNN_HANDLE] += lh_clock_us() - t0;
    }
    *out = s->handle;
    pthread_mutex_unlock(&s->lock);
    return st;
}

lh_status cuda_dnn_sdpa_get(cuda_context *cc, const lh_cudnn_api *dnn, const lh_sdpa_shape *shape,
                            lh_sdpa_plan **out, cuda_setup *setup) {
    cudnnHandle_t handle;
    lh_status st = cuda_dnn_handle(cc, dnn, &handle, setup);
    if (st != LH_OK) return st;
    cuda_dnn_shared *s = &cc->dnn;
    lh_plan_key key;
    cuda_sdpa_key(shape, &key);
    /* Built under the lock: threads making plans of one shape at once (the ranks of an
     * in-process ring) build it once, and the others take it. Building uses the handle, and so
     * does destroying the plan it may evict: both also hold `exec`, so no other plan of the
     * context runs on the handle meanwhile. */
    pthread_mutex_lock(&s->lock);
    lh_sdpa_plan *plan = lh_plan_cache_acquire(&s->sdpa, &key);
    if (plan) {
        setup->reused++;
    } else {
        pthread_mutex_lock(&s->exec);
        /* beside the context's kernels on disk, under the same switch */
        lh_plan_store store = {.cache = cc->kernel_cache, .sm = cc->sm, .device = cc->name};
        st = cuda_sdpa_plan_create(dnn, handle, &s->exec, &store, shape, &plan);
        if (st == LH_OK) {
            int64_t graph, heuristics, plans;
            cuda_sdpa_setup_us(plan, &graph, &heuristics, &plans);
            setup->us[CUDA_SETUP_CUDNN_GRAPH] += graph;
            setup->us[CUDA_SETUP_CUDNN_HEURISTICS] += heuristics;
            setup->us[CUDA_SETUP_CUDNN_PLAN] += plans;
            /* a cache full of held plans keeps nothing: this plan then owns its SDPA plan */
            lh_plan_cache_insert(&s->sdpa, &key, plan);
        }
        pthread_mutex_unlock(&s->exec);
    }
    pthread_mutex_unlock(&s->lock);
    if (st == LH_OK) *out = plan;
    return st;
}

void cuda_dnn_sdpa_put(cuda_context *cc, lh_sdpa_plan *plan) {
    if (!plan) return;
    cuda_dnn_shared *s = &cc->dnn;
    pthread_mutex_lock(&s->lock);
    bool cached = lh_plan_cache_release(&s->sdpa, plan);
    if (!cached) {
        pthread_mutex_lock(&s->exec);
        cuda_sdpa_plan_destroy(plan);
        pthread_mutex_unlock(&s->exec);
    }
    pthread_mutex_unlock(&s->lock);
}

/* ---- cuDNN's side of a plan, beside the kernels' compilation ---------------------------------- */

static void *open_run(void *arg) {
    cuda_dnn_open *o = arg;
    int64_t t0 = o->began_us = lh_clock_us();
    o->st = lh_cudnn_load(&o->dnn); /* the first call of the process opens cuDNN's libraries */
    o->setup.us[CUDA_SETUP_CUDNN_HANDLE] += lh_clock_us() - t0;
    if (o->st == LH_OK) {
        CUcontext ignored;
        o->st = lh_cu_check(o->cc->cu->CtxPushCurrent(o->cc->primary),
                            "making the device's context current");
        if (o->st == LH_OK) {
            cudnnHandle_t handle;
            o->st = cuda_dnn_handle(o->cc, o->dnn, &handle, &o->setup);
            o->opened_us = lh_clock_us();
            lh_cuda_say("cuDNN open with the context's handle in %.1f ms",
                        (double)(o->opened_us - t0) / 1e3);
            if (o->st == LH_OK && o->build) {
                o->build_st = o->build(o->arg, o->dnn);
                o->built_us = lh_clock_us();
                if (o->build_st != LH_OK)
                    snprintf(o->build_message, sizeof o->build_message, "%s", lh_error_message());
            }
            o->cc->cu->CtxPopCurrent(&ignored);
        }
    }
    if (o->st != LH_OK) snprintf(o->message, sizeof o->message, "%s", lh_error_message());
    return NULL;
}

void cuda_dnn_open_begin(cuda_context *cc, cuda_dnn_build_fn build, void *arg, cuda_dnn_open *o) {
    /* from here cuDNN reads its libraries itself, and should have the disk to itself */
    lh_cudnn_prefetch_yield();
    memset(o, 0, sizeof *o);
    o->cc = cc;
    o->build = build;
    o->arg = arg;
    o->threaded = pthread_create(&o->thread, NULL, open_run, o) == 0;
    if (!o->threaded) open_run(o);
}

lh_status cuda_dnn_open_end(cuda_dnn_open *o, const lh_cudnn_api **dnn, cuda_setup *setup) {
    if (o->threaded) pthread_join(o->thread, NULL);
    o->threaded = false;
    setup->us[CUDA_SETUP_CUDNN_HANDLE] += o->setup.us[CUDA_SETUP_CUDNN_HANDLE];
    if (o->st != LH_OK) return lh_fail(o->st, "%s", o->message);
    *dnn = o->dnn;
    return LH_OK;
}

lh_status cuda_dnn_open_built(const cuda_dnn_open *o) {
    if (o->st != LH_OK || o->build_st == LH_OK) return LH_OK;
    return lh_fail(o->build_st, "%s", o->build_message);
}
