/*
 * cuda_backend.c - the CUDA backend behind lh_backend_ops: device probing, the primary context,
 * pointer and stream checks, stage timing, NCCL rings, and its tables (the ops for the ffi layer,
 * the stages for runtime/pipeline.c). Plans: cuda_plan.c; stages: one file each.
 *
 * Every entry point makes the device's primary context current for its own duration only
 * (push/pop), so the caller's current context is left as it was. Forward and backward enqueue
 * work on the caller's stream and return without waiting for it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_driver.h"
#include "cuda_internal.h"
#include "cudnn_prefetch.h"

/* ---- context push/pop around every call ----------------------------------------------------- */

static lh_status push(const cuda_context *cc) {
    return lh_cu_check(cc->cu->CtxPushCurrent(cc->primary), "making the device's context current");
}

static void pop(const cuda_context *cc) {
    CUcontext ignored;
    cc->cu->CtxPopCurrent(&ignored);
}

lh_status cuda_enter(const cuda_plan *p) { return push(p->cc); }
void cuda_leave(const cuda_plan *p) { pop(p->cc); }

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
    st = lhc_cache_create(&cc->kernel_cache);
    if (st != LH_OK) {
        cc->cu->DevicePrimaryCtxRelease(cc->device);
        free(cc);
        return st;
    }
    cuda_dnn_init(&cc->dnn);
    /* the first plan's cuDNN libraries come from the disk while the caller sets up its model */
    lh_cudnn_prefetch_begin(cc->cu);
    *out_state = cc;
    return LH_OK;
}

static void cuda_context_destroy(void *state) {
    cuda_context *cc = state;
    if (!cc) return;
    cuda_dnn_destroy(cc);
    lhc_cache_destroy(cc->kernel_cache);
    cc->cu->DevicePrimaryCtxRelease(cc->device);
    free(cc);
}

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

/* ---- stage timing ---------------------------------------------------------------------------- */

static lh_status timing_open(void *plan, lh_stage first, lh_stage last, void *stream) {
    return cuda_stage_timer_open(((cuda_plan *)plan)->timer, first, last, stream);
}

static lh_status timing_mark(void *plan, lh_stage stage, bool end, void *stream) {
    cuda_stage_timer *t = ((cuda_plan *)plan)->timer;
    return end ? cuda_stage_end(t, stage, stream) : cuda_stage_begin(t, stage, stream);
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

/* ---- NCCL rings ------------------------------------------------------------------------------ */

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

/* ---- the tables ------------------------------------------------------------------------------ */

static lh_status enter(void *plan) { return cuda_enter(plan); }
static void leave(void *plan) { cuda_leave(plan); }

/* Staged regions to saved, on the caller's stream (runtime/pipeline.c, after the step). */
static lh_status copy(void *plan, void *dst, const void *src, size_t bytes, void *stream) {
    const lh_cu_api *cu = ((cuda_plan *)plan)->cc->cu;
    return lh_cu_check(cu->MemcpyAsync((CUdeviceptr)(uintptr_t)dst, (CUdeviceptr)(uintptr_t)src,
                                       bytes, (CUstream)stream),
                       "copying the staged selection to saved (cuMemcpyAsync)");
}

static const lh_stage_ops lighthouse_stages = {
    .scores = cuda_scores_stage,
    .select = cuda_select_stage,
    .gather = cuda_gather_stage,
    .scatter = cuda_scatter_stage,
    .regather = cuda_regather_stage,
    .gather_dout = cuda_gather_dout_stage,
    .pool_grad = cuda_pool_grad_stage,
};

static const lh_pipeline_ops pipeline_ops = {
    .enter = enter,
    .leave = leave,
    .lighthouse = &lighthouse_stages,
    .dilated_scores = cuda_scores_dilated_stage,
    .dense = &cuda_dense_stages,
    .attention_forward = cuda_attention_forward,
    .attention_backward = cuda_attention_backward,
    .dense_forward = cuda_dense_forward,
    .dense_backward = cuda_dense_backward,
    .copy = copy,
    .ring_check = cuda_ring_check,
    .timing_open = timing_open,
    .timing_mark = timing_mark,
};

static lh_status plan_create(void *context_state, const lh_context_options *options,
                             const lh_config *cfg, void **out_plan_state, lh_plan_sizes *sizes) {
    return cuda_plan_create(context_state, &pipeline_ops, options, cfg, out_plan_state, sizes);
}

const lh_backend_ops lh_cuda_backend_ops = {
    .kind = LH_BACKEND_CUDA,
    .name = "cuda",
    .probe = cuda_probe,
    .context_create = cuda_context_create,
    .context_destroy = cuda_context_destroy,
    .plan_create = plan_create,
    .plan_destroy = cuda_plan_destroy,
    .check_buffer = cuda_check_buffer,
    .check_stream = cuda_check_stream,
    .forward = lh_pipeline_forward,
    .backward = lh_pipeline_backward,
    .forward_with_scores = lh_pipeline_forward_with_scores,
    .scores = cuda_scores_entry,
    .select = cuda_select_entry,
    .gather = cuda_gather_entry,
    .scatter = cuda_scatter_entry,
    .attention_forward = cuda_attention_forward_entry,
    .attention_backward = cuda_attention_backward_entry,
    .nccl_unique_id = cuda_nccl_unique_id_op,
    .nccl_ring_init = cuda_nccl_ring_init_op,
    .stage_ms = cuda_stage_ms,
};
