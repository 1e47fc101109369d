/*
 * cuda_ring.h - the attention step on chunk-major sub-sequences [C, B, H, S_c, D] (lse
 * [C, B, H, S_c] fp32): causal cuDNN SDPA without a ring, causal ring attention on a ring
 * (docs/spec.md section 8).
 *
 * Ring forward: rank r holds chunks g0 = r and g1 = 2W-1-r. In W steps the K/V of every rank's
 * two chunks pass by (step s holds rank (r - s) mod W's); while step s computes, the next block is
 * already moving on the communication stream. Query chunk c meets key chunk c' < c fully and its
 * own chunk causally; each block's partial output and log-sum-exp are merged into an fp32
 * accumulator (kernels_mlir/ring.mlir). Backward: the same walk with the final O and lse, dQ
 * summed locally in fp32, and the fp32 dK/dV accumulators of each block travelling with it, back
 * home after W hops. All memory is the caller's workspace; the events and the communication
 * stream are created with the plan.
 */
#ifndef LH_CUDA_RING_H
#define LH_CUDA_RING_H

#include "cuda_kernels.h"
#include "cuda_sdpa.h"
#include "cuda_transport.h"
#include "cudnn_api.h"
#include "runtime.h"

typedef struct cuda_ring {
    const lh_cu_api *cu;
    lh_config cfg;                 /* the plan's configuration */
    int world, rank;               /* 1, 0 without a ring */
    bool has_ring;
    lh_sdpa_plan *causal, *full;   /* [B, H, S_c, D] contiguous; full only on a ring */
    bool borrowed_causal;
    cuda_kernels kernels;          /* ring.mlir: merge, add, convert, pack */
    CUstream comm;
    CUevent ev_start, ev_kv, ev_acc, ev_compute, ev_end;
    cuda_transport transport;
    /* sizes in bytes: one chunk of a sub-sequence tensor in DTYPE / fp32, one chunk of lse */
    int64_t cb, cb32, lb;
    /* workspace layout (byte offsets) */
    int64_t f_kv[2], f_opart, f_lpart, f_acc, f_lse, f_sdpa, fwd_bytes;
    int64_t b_kv[2], b_dkv[2], b_dq, b_part, b_sdpa, bwd_bytes;
    int64_t workspace_bytes;
} cuda_ring;

/* `causal`: an SDPA plan of exactly the causal shape to borrow (a Lighthouse plan's own), or NULL.
 * Builds the SDPA plans, loads ring.mlir's kernels (when need_kernels or on a ring) and, on a ring, the communication stream,
 * events and transport. The plan's context must be current. */
lh_status cuda_ring_create(const lh_cu_api *cu, int sm, const lh_cudnn_api *dnn,
                           cudnnHandle_t handle, const lh_context_options *options,
                           const lh_config *cfg, bool need_kernels, lh_sdpa_plan *causal,
                           cuda_ring **out);
void cuda_ring_destroy(cuda_ring *r);

lh_status cuda_ring_forward(cuda_ring *r, const void *q_sel, const void *k_sel, const void *v_sel,
                            void *o_sel, float *lse, void *workspace, CUstream stream);
lh_status cuda_ring_backward(cuda_ring *r, const void *q_sel, const void *k_sel,
                             const void *v_sel, const void *o_sel, const float *lse,
                             const void *do_sel, void *dq_sel, void *dk_sel, void *dv_sel,
                             void *workspace, CUstream stream);

/* Marks the plan's ring failed (a local ring's peers stop waiting and return an error). */
void cuda_ring_abort(cuda_ring *r);

/* dst[b, t, h] = sum over g < group of src[b, t, (h * group + g) / expand] for t < tokens, h <
 * dst_heads (ring.mlir's lh_ring_pack); strides (b, t, h) in elements. */
lh_status cuda_ring_pack(cuda_ring *r, const void *src, void *dst, int64_t tokens,
                         int64_t dst_heads, int64_t expand, int64_t group, const int64_t src_s[3],
                         const int64_t dst_s[3], CUstream stream);

#endif /* LH_CUDA_RING_H */
