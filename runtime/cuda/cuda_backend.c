/*
 * cuda_backend.c - the CUDA backend behind lh_backend_ops: device probing, the primary context,
 * pointer and stream checks, and dense causal attention through cuDNN (cuda_sdpa.c).
 *
 * Every entry point makes the device's primary context current for its own duration only
 * (push/pop), so the caller's current context is left as it was. Forward and backward enqueue
 * work on the caller's stream and return without waiting for it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_cp.h"
#include "cuda_driver.h"
#include "cuda_lighthouse.h"
#include "cuda_ring.h"
#include "cuda_transport.h"
#include "cuda_sdpa.h"
#include "cuda_stage_timer.h"
#include "cudnn_api.h"
#include "runtime.h"

typedef struct cuda_context {
    const lh_cu_api *cu;
    int ordinal;
    CUdevice device;
    CUcontext primary;
    int sm; /* compute capability as 10 * major + minor */
    char name[128];
} cuda_context;

typedef struct cuda_plan {
    cuda_context *cc;
    lh_config cfg;
    const lh_cudnn_api *dnn;
    cudnnHandle_t handle;
    lh_sdpa_plan *sdpa;
    cuda_lighthouse *lh; /* MODE = LIGHTHOUSE without a ring (then sdpa is NULL) */
    cuda_ring *attn;     /* the attention step alone (lh_attention_forward/backward) */
    cuda_cp *cp;         /* a ring or attention hooks: the chunked forward and backward */
    cuda_stage_timer *timer; /* LH_PARAM_STAGE_TIMING, else NULL (lent to lh) */
    char attn_error[512]; /* why attn could not be built (plans without ring or hooks only) */
} cuda_plan;

/* ---- context push/pop around every call ----------------------------------------------------- */

static lh_status push(const cuda_context *cc) {
    return lh_cu_check(cc->cu->CtxPushCurrent(cc->primary), "making the device's context current");
}

static void pop(const cuda_context *cc) {
    CUcontext ignored;
    cc->cu->CtxPopCurrent(&ignored);
}

/* ---- probe and context ---------------------------------------------------------------------- */

static lh_status find_device(int ordinal, const lh_cu_api **out_cu, CUdevice *out_dev, int *out_sm) {
    const lh_cu_api *cu;
    lh_status st = lh_cu_load(&cu);
    if (st != LH_OK) return st;
    int count = 0;
    CUresult r = cu->DeviceGetCount(&count);
    if (r != CUDA_SUCCESS || count == 0)
        return lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                       "the NVIDIA driver is loaded but reports no CUDA device");
    if (ordinal < 0 || ordinal >= count)
        return lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                       "CUDA device %d does not exist: this machine has %d device%s (0..%d)",
                       ordinal, count, count == 1 ? "" : "s", count - 1);
    CUdevice dev;
    st = lh_cu_check(cu->DeviceGet(&dev, ordinal), "cuDeviceGet");
    if (st != LH_OK) return lh_fail(LH_ERROR_BACKEND_UNAVAILABLE, "%s", lh_error_message());
    int major = 0, minor = 0;
    cu->DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
    cu->DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
    /* cuDNN's fused flash-attention engines start at Ampere. */
    if (major < 8)
        return lh_fail(LH_ERROR_BACKEND_UNAVAILABLE,
                       "CUDA device %d has compute capability %d.%d; liblighthouse needs 8.0 or "
                       "newer (Ampere, Hopper, Blackwell)",
                       ordinal, major, minor);
    *out_cu = cu;
    *out_dev = dev;
    *out_sm = major * 10 + minor;
    return LH_OK;
}

static lh_status cuda_probe(int device) {
    const lh_cu_api *cu;
    CUdevice dev;
    int sm;
    return find_device(device, &cu, &dev, &sm);
}

static lh_status cuda_context_create(int device, const lh_context_options *options,
                                     void **out_state) {
    cuda_context *cc = calloc(1, sizeof *cc);
    if (!cc) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating a CUDA context failed");
    lh_status st = find_device(device, &cc->cu, &cc->device, &cc->sm);
    if (st == LH_OK)
        st = lh_cu_check(cc->cu->DevicePrimaryCtxRetain(&cc->primary, cc->device),
                         "retaining the device's primary context (cuDevicePrimaryCtxRetain)");
    if (st != LH_OK) {
        free(cc);
        return st;
    }
    cc->ordinal = device;
    cc->cu->DeviceGetName(cc->name, (int)sizeof cc->name, cc->device);
    *out_state = cc;
    return LH_OK;
}

static void cuda_context_destroy(void *state) {
    cuda_context *cc = state;
    if (!cc) return;
    cc->cu->DevicePrimaryCtxRelease(cc->device);
    free(cc);
}

/* ---- plans ---------------------------------------------------------------------------------- */

static void destroy_plan(cuda_plan *p) {
    if (!p) return;
    if (p->sdpa || p->lh || p->handle || p->attn || p->cp || p->timer) {
        bool pushed = push(p->cc) == LH_OK;
        cuda_stage_timer_destroy(p->timer);
        cuda_cp_destroy(p->cp);
        cuda_ring_destroy(p->attn);
        cuda_lighthouse_plan_destroy(p->lh);
        cuda_sdpa_plan_destroy(p->sdpa);
        if (p->handle) p->dnn->Destroy(p->handle);
        if (pushed) pop(p->cc);
    }
    free(p);
}

/* Grid dimensions y and z are at most 65535 on every CUDA device. The library's kernels (all of
 * Lighthouse mode, and the ring kernels of ring and hook plans) put the batch in z and heads in
 * y, up to H + 2 Hkv of them (pool_grad: dq, dk and dv rows). Plain dense plans run cuDNN alone. */
static lh_status check_grid_limits(const lh_config *cfg) {
    const int64_t max_yz = 65535;
    if (cfg->mode == LH_MODE_DENSE && !cfg->ring && !cfg->forward_hook) return LH_OK;
    if (cfg->batch > max_yz)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "the CUDA backend launches its kernels with the batch in grid z, at most "
                       "65535: BATCH = %lld is too large", (long long)cfg->batch);
    if (cfg->heads + 2 * cfg->kv_heads > max_yz)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "the CUDA backend launches its kernels with heads in grid y, at most 65535: "
                       "HEADS + 2 * KV_HEADS = %lld + 2 * %lld is too large",
                       (long long)cfg->heads, (long long)cfg->kv_heads);
    return LH_OK;
}

static lh_status cuda_plan_create(void *context_state, const lh_context_options *options,
                                  const lh_config *cfg, void **out_plan_state,
                                  lh_plan_sizes *sizes) {
    cuda_context *cc = context_state;
    if (cfg->dtype != LH_DTYPE_FLOAT16 && cfg->dtype != LH_DTYPE_BFLOAT16)
        return lh_fail(LH_ERROR_UNSUPPORTED_DTYPE,
                       "the CUDA backend runs float16 and bfloat16 (DTYPE = FLOAT32 is the CPU "
                       "reference backend's dtype)");
    if (cfg->stage_timing && (cfg->ring || cfg->forward_hook))
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "STAGE_TIMING = 1 times the stages of one GPU's pipeline; a plan with a "
                       "ring or attention hooks runs its stages per chunk and is not timed");
    lh_status st = check_grid_limits(cfg);
    if (st != LH_OK) return st;
    const lh_cudnn_api *dnn;
    st = lh_cudnn_load(&dnn);
    if (st != LH_OK) return st;
    cuda_plan *p = calloc(1, sizeof *p);
    if (!p) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "allocating a CUDA plan failed");
    p->cc = cc;
    p->cfg = *cfg;
    p->dnn = dnn;
    st = push(cc);
    if (st != LH_OK) {
        free(p);
        return st;
    }
    st = lh_cudnn_check(dnn->Create(&p->handle), "cudnnCreate");
    cuda_lighthouse_env env = {.cu = cc->cu, .sm = cc->sm, .dnn = dnn, .handle = p->handle,
                               .options = options, .cache = NULL};
    bool chunked = cfg->ring || cfg->forward_hook;
    if (st == LH_OK && cfg->ring) {
        /* A ring plan's whole-sequence stages never run: its chunks do (cuda_cp.c). */
    } else if (st == LH_OK && cfg->mode == LH_MODE_LIGHTHOUSE) {
        st = cuda_lighthouse_plan_create(&env, cfg, &p->lh, sizes);
    } else if (st == LH_OK) {
        lh_sdpa_shape shape = {.b = cfg->batch, .h = cfg->heads, .hkv = cfg->kv_heads,
                               .s = cfg->seq_len, .d = cfg->head_dim, .dtype = cfg->dtype,
                               .scale = cfg->scale};
        bool bnhd = cfg->layout == LH_LAYOUT_BNHD;
        lh_sdpa_layout_strides(bnhd, cfg->heads, cfg->seq_len, cfg->head_dim, shape.q_strides);
        lh_sdpa_layout_strides(bnhd, cfg->kv_heads, cfg->seq_len, cfg->head_dim,
                               shape.kv_strides);
        st = cuda_sdpa_plan_create(dnn, p->handle, &shape, &p->sdpa);
        if (st == LH_OK) {
            sizes->saved_bytes = cuda_sdpa_stats_bytes(p->sdpa);
            sizes->fwd_workspace_bytes = cuda_sdpa_fwd_workspace_bytes(p->sdpa);
            sizes->bwd_workspace_bytes = cuda_sdpa_bwd_workspace_bytes(p->sdpa);
            sizes->stage_workspace_bytes = 0;
        }
    }
    if (st == LH_OK) {
        st = cuda_ring_create(cc->cu, cc->sm, dnn, p->handle, options, cfg, chunked,
                              p->lh ? p->lh->sdpa : NULL, &p->attn);
        /* Without a ring or hooks the plan's own forward and backward do not need the attention
         * step: if its graph cannot be built, only lh_attention_forward/backward are refused. */
        if (st != LH_OK && !chunked) {
            snprintf(p->attn_error, sizeof p->attn_error, "%s", lh_error_message());
            lh_clear_error();
            st = LH_OK;
        }
    }
    if (st == LH_OK && p->attn) sizes->attention_workspace_bytes = p->attn->workspace_bytes;
    if (st == LH_OK && chunked) st = cuda_cp_create(&env, cfg, p->lh, p->attn, &p->cp, sizes);
    if (st == LH_OK && cfg->stage_timing) {
        st = cuda_stage_timer_create(cc->cu, &p->timer);
        if (st == LH_OK && p->lh) p->lh->timer = p->timer;
    }
    pop(cc);
    if (st != LH_OK) {
        destroy_plan(p);
        return st;
    }
    if (p->cp || p->lh) {
        if (getenv("LIGHTHOUSE_CUDA_VERBOSE"))
            fprintf(stderr, "liblighthouse: %s on %s (sm_%d): %s\n",
                    cfg->ring ? "ring attention" : "Lighthouse", cc->name, cc->sm,
                    p->attn ? cuda_sdpa_describe(p->attn->causal) : "");
        *out_plan_state = p;
        return LH_OK;
    }
    if (getenv("LIGHTHOUSE_CUDA_VERBOSE"))
        fprintf(stderr, "liblighthouse: %s on %s (sm_%d): %s\n",
                cfg->layout == LH_LAYOUT_BNHD ? "BNHD" : "BHND", cc->name, cc->sm,
                cuda_sdpa_describe(p->sdpa));
    *out_plan_state = p;
    return LH_OK;
}

static void cuda_plan_destroy(void *plan_state) { destroy_plan(plan_state); }

/* ---- argument checks that only the driver can answer ---------------------------------------- */

static lh_status cuda_check_buffer(void *plan_state, const void *ptr, size_t bytes,
                                   const char *name) {
    cuda_plan *p = plan_state;
    const lh_cu_api *cu = p->cc->cu;
    if ((uintptr_t)ptr % 16 != 0)
        return lh_fail(LH_ERROR_BAD_POINTER,
                       "%s = %p is not aligned to 16 bytes (the CUDA backend's kernels load 16 "
                       "bytes at a time)",
                       name, ptr);
    unsigned int memory_type = 0;
    int ordinal = -1;
    CUdeviceptr start = 0;
    size_t size = 0;
    CUpointer_attribute attrs[] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                                   CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                   CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
                                   CU_POINTER_ATTRIBUTE_RANGE_SIZE};
    void *values[] = {&memory_type, &ordinal, &start, &size};
    /* Unlike cuPointerGetAttribute, this does not fail on pointers unknown to CUDA: it leaves
     * the memory type 0, which is how a plain host pointer shows up. */
    CUresult r = cu->PointerGetAttributes(4, attrs, values, (CUdeviceptr)(uintptr_t)ptr);
    if (r != CUDA_SUCCESS) {
        lh_cu_fail(r, "cuPointerGetAttributes");
        return lh_fail(LH_ERROR_BAD_POINTER, "%s = %p could not be inspected: %s", name, ptr,
                       lh_error_message());
    }
    if (memory_type == 0)
        return lh_fail(LH_ERROR_BAD_POINTER,
                       "%s = %p is not CUDA device memory (a host pointer?); the CUDA backend "
                       "needs device pointers of device %d",
                       name, ptr, p->cc->ordinal);
    if (memory_type == CU_MEMORYTYPE_HOST)
        return lh_fail(LH_ERROR_BAD_POINTER,
                       "%s = %p is page-locked host memory; the CUDA backend needs device "
                       "memory of device %d",
                       name, ptr, p->cc->ordinal);
    if (memory_type == CU_MEMORYTYPE_DEVICE && ordinal != p->cc->ordinal)
        return lh_fail(LH_ERROR_BAD_POINTER,
                       "%s = %p is memory of CUDA device %d, but the plan runs on device %d", name,
                       ptr, ordinal, p->cc->ordinal);
    if (size && (uintptr_t)ptr + bytes > (uintptr_t)start + size)
        return lh_fail(LH_ERROR_BAD_POINTER,
                       "%s = %p needs %zu bytes but its allocation (at 0x%llx, %zu bytes) ends "
                       "%zu bytes after it",
                       name, ptr, bytes, (unsigned long long)start, size,
                       (size_t)((uintptr_t)start + size - (uintptr_t)ptr));
    return LH_OK;
}

static lh_status cuda_check_stream(void *plan_state, void *stream) {
    cuda_plan *p = plan_state;
    CUstream s = stream;
    /* The legacy and per-thread default streams are valid in every context. */
    if (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) return LH_OK;
    lh_status st = push(p->cc);
    if (st != LH_OK) return st;
    CUcontext owner = NULL;
    CUresult r = p->cc->cu->StreamGetCtx(s, &owner);
    pop(p->cc);
    if (r != CUDA_SUCCESS) {
        const char *rname = NULL;
        p->cc->cu->GetErrorName(r, &rname);
        return lh_fail(LH_ERROR_BAD_POINTER, "stream %p is not a valid CUDA stream (%s)", stream,
                       rname ? rname : "cuStreamGetCtx failed");
    }
    if (owner != p->cc->primary)
        return lh_fail(LH_ERROR_BAD_POINTER,
                       "stream %p belongs to another CUDA context than the primary context of "
                       "device %d that the plan runs on",
                       stream, p->cc->ordinal);
    return LH_OK;
}

/* ---- forward and backward ------------------------------------------------------------------- */

/* Dense mode: one attention stage each way (timed when the plan has a timer). */
static lh_status dense_forward(cuda_plan *p, const void *q, const void *k, const void *v,
                               void *out, void *saved, void *workspace, CUstream stream) {
    lh_status st = cuda_stage_timer_open(p->timer, LH_STAGE_SCORES, LH_STAGE_SCATTER, stream);
    if (st == LH_OK) st = cuda_stage_begin(p->timer, LH_STAGE_ATTENTION_FORWARD, stream);
    if (st == LH_OK) st = cuda_sdpa_forward(p->sdpa, q, k, v, out, saved, workspace, stream);
    if (st == LH_OK) st = cuda_stage_end(p->timer, LH_STAGE_ATTENTION_FORWARD, stream);
    return st;
}

static lh_status dense_backward(cuda_plan *p, const void *q, const void *k, const void *v,
                                const void *out, const void *dout, const void *saved, void *dq,
                                void *dk, void *dv, void *workspace, CUstream stream) {
    lh_status st = cuda_stage_timer_open(p->timer, LH_STAGE_REGATHER, LH_STAGE_POOL_GRAD, stream);
    if (st == LH_OK) st = cuda_stage_begin(p->timer, LH_STAGE_ATTENTION_BACKWARD, stream);
    if (st == LH_OK)
        st = cuda_sdpa_backward(p->sdpa, q, k, v, out, dout, saved, dq, dk, dv, workspace, stream);
    if (st == LH_OK) st = cuda_stage_end(p->timer, LH_STAGE_ATTENTION_BACKWARD, stream);
    return st;
}

static lh_status cuda_forward(void *plan_state, const void *q, const void *k, const void *v,
                              void *out, void *saved, void *workspace, void *stream) {
    cuda_plan *p = plan_state;
    lh_status st = push(p->cc);
    if (st != LH_OK) return st;
    if (p->cp) st = cuda_cp_forward(p->cp, q, k, v, out, saved, workspace, stream);
    else if (p->lh) st = cuda_lighthouse_forward(p->lh, q, k, v, out, saved, workspace, stream);
    else st = dense_forward(p, q, k, v, out, saved, workspace, stream);
    pop(p->cc);
    return st;
}

static lh_status cuda_backward(void *plan_state, const void *q, const void *k, const void *v,
                               const void *out, const void *dout, const void *saved, void *dq,
                               void *dk, void *dv, void *workspace, void *stream) {
    cuda_plan *p = plan_state;
    lh_status st = push(p->cc);
    if (st != LH_OK) return st;
    if (p->cp)
        st = cuda_cp_backward(p->cp, q, k, v, dout, saved, dq, dk, dv, workspace, stream);
    else if (p->lh)
        st = cuda_lighthouse_backward(p->lh, q, k, v, dout, saved, dq, dk, dv, workspace, stream);
    else
        st = dense_backward(p, q, k, v, out, dout, saved, dq, dk, dv, workspace, stream);
    pop(p->cc);
    return st;
}

static lh_status cuda_stage_ms(void *plan_state, lh_stage stage, const char *name,
                               double *out_ms) {
    cuda_plan *p = plan_state;
    lh_status st = push(p->cc);
    if (st != LH_OK) return st;
    st = cuda_stage_timer_ms(p->timer, stage, name, out_ms);
    pop(p->cc);
    return st;
}

/* ---- Lighthouse stage entry points (the ffi layer admits them for MODE = LIGHTHOUSE only) -- */

static lh_status cuda_scores(void *plan_state, const void *q, const void *k, float *scores_q,
                             float *scores_k, void *workspace, void *stream) {
    (void)workspace;
    cuda_plan *p = plan_state;
    lh_status st = push(p->cc);
    if (st != LH_OK) return st;
    st = cuda_lighthouse_scores(p->lh, q, k, scores_q, scores_k, stream);
    pop(p->cc);
    return st;
}

static lh_status cuda_select(void *plan_state, const float *scores_q, const float *scores_k,
                             int32_t *indices, void *workspace, void *stream) {
    cuda_plan *p = plan_state;
    lh_status st = push(p->cc);
    if (st != LH_OK) return st;
    st = cuda_lighthouse_select(p->lh, scores_q, scores_k, indices, workspace, stream);
    pop(p->cc);
    return st;
}

static lh_status cuda_gather(void *plan_state, const void *q, const void *k, const void *v,
                             const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                             void *workspace, void *stream) {
    (void)workspace;
    cuda_plan *p = plan_state;
    lh_status st = push(p->cc);
    if (st != LH_OK) return st;
    st = cuda_lighthouse_gather(p->lh, q, k, v, indices, q_sel, k_sel, v_sel, stream);
    pop(p->cc);
    return st;
}

static lh_status cuda_scatter(void *plan_state, const int32_t *indices, const void *o_sel,
                              void *out, void *workspace, void *stream) {
    cuda_plan *p = plan_state;
    lh_status st = push(p->cc);
    if (st != LH_OK) return st;
    st = cuda_lighthouse_scatter(p->lh, indices, o_sel, out, workspace, stream);
    pop(p->cc);
    return st;
}

/* ---- the attention step alone, and NCCL rings --------------------------------------------- */

static lh_status cuda_attention_forward(void *plan_state, const void *q_sel, const void *k_sel,
                                        const void *v_sel, void *o_sel, float *lse,
                                        void *workspace, void *stream) {
    cuda_plan *p = plan_state;
    if (!p->attn)
        return lh_fail(LH_ERROR_UNSUPPORTED, "this plan has no separate attention step: %s",
                       p->attn_error);
    lh_status st = push(p->cc);
    if (st != LH_OK) return st;
    st = cuda_ring_forward(p->attn, q_sel, k_sel, v_sel, o_sel, lse, workspace, stream);
    pop(p->cc);
    return st;
}

static lh_status cuda_attention_backward(void *plan_state, const void *q_sel, const void *k_sel,
                                         const void *v_sel, const void *o_sel, const float *lse,
                                         const void *do_sel, void *dq_sel, void *dk_sel,
                                         void *dv_sel, void *workspace, void *stream) {
    cuda_plan *p = plan_state;
    if (!p->attn)
        return lh_fail(LH_ERROR_UNSUPPORTED, "this plan has no separate attention step: %s",
                       p->attn_error);
    lh_status st = push(p->cc);
    if (st != LH_OK) return st;
    st = cuda_ring_backward(p->attn, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel,
                            dv_sel, workspace, stream);
    pop(p->cc);
    return st;
}

static lh_status cuda_nccl_unique_id_op(void *context_state, void *unique_id) {
    (void)context_state;
    return cuda_nccl_unique_id(unique_id);
}

static lh_status cuda_nccl_ring_init_op(void *context_state, lh_ring_info *ring, void *comm,
                                        const void *unique_id, int rank, int world) {
    cuda_context *cc = context_state;
    /* NCCL binds a communicator to the device current at its creation. */
    lh_status st = push(cc);
    if (st != LH_OK) return st;
    st = cuda_nccl_ring_init(ring, comm, unique_id, rank, world);
    pop(cc);
    return st;
}

const lh_backend_ops lh_cuda_backend_ops = {
    .kind = LH_BACKEND_CUDA,
    .name = "cuda",
    .probe = cuda_probe,
    .context_create = cuda_context_create,
    .context_destroy = cuda_context_destroy,
    .plan_create = cuda_plan_create,
    .plan_destroy = cuda_plan_destroy,
    .check_buffer = cuda_check_buffer,
    .check_stream = cuda_check_stream,
    .forward = cuda_forward,
    .backward = cuda_backward,
    .scores = cuda_scores,
    .select = cuda_select,
    .gather = cuda_gather,
    .scatter = cuda_scatter,
    .attention_forward = cuda_attention_forward,
    .attention_backward = cuda_attention_backward,
    .nccl_unique_id = cuda_nccl_unique_id_op,
    .nccl_ring_init = cuda_nccl_ring_init_op,
    .stage_ms = cuda_stage_ms,
};
