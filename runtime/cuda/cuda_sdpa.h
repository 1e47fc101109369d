/*
 * cuda_sdpa.h - causal scaled-dot-product attention through cuDNN's fused flash-attention
 * engines, forward (with the fp32 log-sum-exp per row) and backward (dQ, dK, dV).
 *
 * The graphs are the composite forms cuDNN's flash-attention engines recognise (matmul, scale,
 * causal mask from two index generators, softmax as max/sub/exp/sum, matmul), built once per plan
 * and executed many times. Shapes are logical [B, H, S, D] with arbitrary strides, so the same code
 * serves dense attention over [B,N,H,D] or [B,H,N,D] tensors and Lighthouse attention over a
 * gathered sub-sequence [B,H,S_sel,D]. Forward and backward allocate nothing and never synchronise:
 * all scratch memory is the caller's workspace and all work goes to the caller's stream.
 */
#ifndef LH_CUDA_SDPA_H
#define LH_CUDA_SDPA_H

#include <pthread.h>
#include <stdbool.h>

#include <cuda.h>

#include "cudnn_graph_build.h"
#include "cudnn_plan_store.h"
#include "plan_cache.h"

typedef struct lh_sdpa_shape {
    int64_t b, h, hkv, s, d;
    lh_dtype dtype;            /* LH_DTYPE_FLOAT16 or LH_DTYPE_BFLOAT16 */
    int64_t q_strides[4];      /* q, out, dout, dq: strides of the logical [B, H, S, D] dims */
    int64_t kv_strides[4];     /* k, v, dk, dv */
    double scale;              /* softmax scale */
    bool full;                 /* no causal mask: every query sees every key (ring attention's
                                  blocks of earlier chunks); false = causal */
    bool forward_only;         /* no backward graph (a scorer: its outputs carry no gradient) */
} lh_sdpa_shape;

/* Which backward graph a plan uses (LIGHTHOUSE_CUDNN_SDPA_BWD=accum|deterministic overrides the choice). */
typedef enum lh_sdpa_bwd_kind {
    LH_SDPA_BWD_DETERMINISTIC = 0, /* dQ written by the engine directly (no atomics) */
    LH_SDPA_BWD_ACCUM = 1          /* dQ accumulated in an fp32 workspace buffer */
} lh_sdpa_bwd_kind;

typedef struct lh_sdpa_plan lh_sdpa_plan;

/* Strides of a dense [B, S, H, D] (bnhd = true) or [B, H, S, D] tensor with `heads` heads, in the
 * logical [B, H, S, D] order the plan takes. */
void lh_sdpa_layout_strides(bool bnhd, int64_t heads, int64_t s, int64_t d, int64_t out[4]);

/* Builds the forward and backward graphs and their execution plans. The caller has pushed the
 * CUDA context the plan will run in; `handle` is a cuDNN handle of that context owned by the
 * caller and kept alive while the plan lives. `exec_lock` (may be NULL) is held from binding the
 * handle to the call's stream until the graph is enqueued: plans that share a handle run from
 * any thread. `store` (may be NULL): finalized plans are restored from it where it has them,
 * and the plans built are written to it (cudnn_plan_store.h). */
lh_status cuda_sdpa_plan_create(const lh_cudnn_api *dnn, cudnnHandle_t handle,
                                pthread_mutex_t *exec_lock, const lh_plan_store *store,
                                const lh_sdpa_shape *shape, lh_sdpa_plan **out_plan);
void cuda_sdpa_plan_destroy(lh_sdpa_plan *plan);

/* The forward and backward execution plans that cuda_sdpa_plan_create would build for `shape`,
 * built instead for `device` (a finalized device-properties descriptor, cudnn_device.h) with or
 * without a GPU (the driver's library must load: cuda_precompile.c), and written to `store`
 * under that device's identity, where a plan on such a GPU restores them. Plans the store holds already are not built again;
 * *out_built counts those built now. Fails where a plan cannot be built or kept. */
lh_status cuda_sdpa_precompile(const lh_cudnn_api *dnn, cudnnBackendDescriptor_t device,
                               const lh_plan_store *store, const lh_sdpa_shape *shape,
                               int *out_built);

/* Everything that decides what cuda_sdpa_plan_create builds for `shape` in this process (the
 * shape, the scale's bits and the backward graph preferred by LIGHTHOUSE_CUDNN_SDPA_BWD), as a
 * key of the context's plan cache. */
void cuda_sdpa_key(const lh_sdpa_shape *shape, lh_plan_key *key);

/* Where building the plan spent its time, in microseconds, forward and backward graphs together:
 * the operation graphs (descriptors and finalize), the heuristics, the execution plans (plans
 * restored from the store count here, with no graph or heuristics time). */
void cuda_sdpa_setup_us(const lh_sdpa_plan *plan, int64_t *graph, int64_t *heuristics,
                        int64_t *plan_us);

/* How dense attention on tensors of `b` sequences and `h` query heads (`hkv` key/value heads) of
 * `s` tokens of `d` is cut into calls of fewer than 2^31 elements each, cuDNN's limit: *nb
 * sequences (dividing b) and *nh query heads (dividing h, whole groups of h / hkv) per call.
 * Whole sequences first; a head range only in the [B, H, S, D] layout, where a head's tokens
 * are contiguous (in [B, S, H, D] every token of a sequence spans all its heads). false where
 * no cut fits (one sequence of one group is already too large, or [B, S, H, D] with one
 * sequence too large). */
bool cuda_sdpa_split(bool bnhd, int64_t b, int64_t h, int64_t hkv, int64_t s, int64_t d,
                     int64_t *nb, int64_t *nh);

/* Bytes of the log-sum-exp buffer (fp32 [B, H, S]) and of the two workspaces. */
int64_t cuda_sdpa_stats_bytes(const lh_sdpa_plan *plan);
int64_t cuda_sdpa_fwd_workspace_bytes(const lh_sdpa_plan *plan);
int64_t cuda_sdpa_bwd_workspace_bytes(const lh_sdpa_plan *plan);
lh_sdpa_bwd_kind cuda_sdpa_bwd_kind(const lh_sdpa_plan *plan);
/* One line naming the engines chosen (for logs and tests). */
const char *cuda_sdpa_describe(const lh_sdpa_plan *plan);

/* out = softmax(scale * q k^T + causal) v; stats = per-row log-sum-exp of the scaled scores.
 * Device pointers, enqueued on `stream` (the caller's context must be current). */
lh_status cuda_sdpa_forward(lh_sdpa_plan *plan, const void *q, const void *k, const void *v,
                            void *out, float *stats, void *workspace, CUstream stream);

/* dq, dk, dv from dout, given the forward's out and stats. `cu_memset` clears the fp32 dQ
 * accumulator where the backward graph needs one. */
lh_status cuda_sdpa_backward(lh_sdpa_plan *plan, const void *q, const void *k, const void *v,
                             const void *out, const void *dout, const float *stats, void *dq,
                             void *dk, void *dv, void *workspace, CUstream stream);

#endif /* LH_CUDA_SDPA_H */
