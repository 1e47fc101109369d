/*
 * cuda_lighthouse.h - Lighthouse attention on the GPU: the JIT-compiled kernels of kernels_mlir/
 * around cuDNN's causal SDPA on the gathered sub-sequence (docs/spec.md sections 1-6).
 *
 * Forward:  pyramid_scores (also the coarsest level's pooled q and k rows) -> inv := -1
 *           -> select_order (indices, inv) -> gather (coarsest-level q and k rows copied from
 *           the pooled ones) -> cuDNN SDPA forward (O_sel and LSE into `saved`) -> scatter.
 *           Every coarsest-level entry is in the sub-sequence, so without the pooled rows the
 *           gather would read all of q and k again right after pyramid_scores did.
 * Backward: gather_dout -> cuDNN SDPA backward -> pool_grad (dq, dk, dv for every token).
 * `saved` holds indices int32 [B,H,S_sel], O_sel DTYPE [B,H,S_sel,D], LSE fp32 [B,H,S_sel],
 * and by default the gathered q_sel/k_sel/v_sel and the inverse map, which the forward writes
 * there directly. With LH_PARAM_RECOMPUTE_SUBSEQ those four live in the workspaces instead and
 * the backward first rebuilds them (inv := -1, invert(indices), gather without pooled rows).
 * Everything is enqueued on the caller's stream: no host synchronisation, no
 * allocation after plan creation (all scratch is the caller's workspace), so a forward or
 * backward may be captured into a CUDA graph.
 *
 * The caller (cuda_backend.c) makes the plan's CUDA context current around every call here.
 */
#ifndef LH_CUDA_LIGHTHOUSE_H
#define LH_CUDA_LIGHTHOUSE_H

#include <cuda.h>

#include "compiler.h"
#include "cuda_kernels.h"
#include "cuda_sdpa.h"
#include "cuda_stage_timer.h"
#include "cudnn_api.h"
#include "runtime.h"

/* What a Lighthouse plan borrows from its backend context (all outlive the plan). */
typedef struct cuda_lighthouse_env {
    const lh_cu_api *cu;
    int sm;                              /* compute capability, 10 * major + minor */
    const lh_cudnn_api *dnn;
    cudnnHandle_t handle;                /* a cuDNN handle of the plan's context */
    const lh_context_options *options;   /* kernel cache directory and switch; may be NULL */
    lhc_cache *cache;                    /* the context's kernel cache, or NULL: the plan then
                                            uses a cache of its own only while it compiles */
    bool no_sdpa;                        /* skip the SDPA plan: a chunk plan of a ring, whose
                                            attention step is cuda_ring.c's */
} cuda_lighthouse_env;

typedef struct cuda_lighthouse {
    const lh_cu_api *cu;
    lh_config cfg;
    cuda_kernels kernels;                /* scores, select, gather, scatter, pool_grad */
    lh_sdpa_plan *sdpa;

    /* element strides (b, t, h) of q/out/dout/dq ([.., H, ..]) and of k/v/dk/dv ([.., Hkv, ..]) */
    int64_t q_sb, q_st, q_sh, kv_sb, kv_st, kv_sh;

    /* byte offsets: `saved` (sv_qs/ks/vs/inv, and fw_/bw_ inv, qs, ks, vs, are -1 where the
     * plan does not have them: kept in `saved`, or recomputed in the workspaces) */
    int64_t sv_idx, sv_o, sv_lse, sv_qs, sv_ks, sv_vs, sv_inv, saved_bytes;
    /* forward workspace; fw_pq / fw_pk: the coarsest level's pooled q [B,H,N/F,D] and k
     * [B,Hkv,N/F,D] (F = P^(L-1)), pooled_q_bytes / pooled_k_bytes long (a chunked plan lays
     * out its own regions of these sizes) */
    int64_t fw_sq, fw_sk, fw_inv, fw_pq, fw_pk, fw_qs, fw_ks, fw_vs, fw_sdpa, fwd_bytes;
    int64_t pooled_q_bytes, pooled_k_bytes;
    /* backward workspace */
    int64_t bw_inv, bw_qs, bw_ks, bw_vs, bw_do, bw_dqs, bw_dks, bw_dvs, bw_sdpa, bwd_bytes;
    /* stage entry points: inv only */
    int64_t stage_bytes;
    char chip[16];
    /* LH_PARAM_STAGE_TIMING: the owning plan's events (cuda_backend.c), or NULL */
    cuda_stage_timer *timer;
} cuda_lighthouse;

/* Compiles and loads the kernels, builds the SDPA plan of the sub-sequence and lays out the
 * buffers. The plan's context must be current. */
lh_status cuda_lighthouse_plan_create(const cuda_lighthouse_env *env, const lh_config *cfg,
                                      cuda_lighthouse **out, lh_plan_sizes *sizes);
/* NULL is a no-op. The plan's context must be current. */
void cuda_lighthouse_plan_destroy(cuda_lighthouse *lh);
/* One line for logs: chip and the SDPA engines. */
const char *cuda_lighthouse_describe(const cuda_lighthouse *lh);

lh_status cuda_lighthouse_forward(cuda_lighthouse *lh, const void *q, const void *k, const void *v,
                                  void *out, void *saved, void *workspace, CUstream stream);
lh_status cuda_lighthouse_backward(cuda_lighthouse *lh, const void *q, const void *k,
                                   const void *v, const void *dout, const void *saved, void *dq,
                                   void *dk, void *dv, void *workspace, CUstream stream);

/* The stage entry points (lh_scores, lh_select, lh_gather, lh_scatter). */
lh_status cuda_lighthouse_scores(cuda_lighthouse *lh, const void *q, const void *k,
                                 float *scores_q, float *scores_k, CUstream stream);
lh_status cuda_lighthouse_select(cuda_lighthouse *lh, const float *scores_q, const float *scores_k,
                                 int32_t *indices, void *workspace, CUstream stream);
lh_status cuda_lighthouse_gather(cuda_lighthouse *lh, const void *q, const void *k, const void *v,
                                 const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                                 CUstream stream);
lh_status cuda_lighthouse_scatter(cuda_lighthouse *lh, const int32_t *indices, const void *o_sel,
                                  void *out, void *workspace, CUstream stream);

/* The stages of one chunk, for chunked plans (a ring, or attention hooks) where the attention
 * step runs between them on all chunks at once (cuda_cp.c). Pointers are the chunk's own: q, k,
 * v, out, dout, dq, dk, dv at the chunk's first token; sub-sequence buffers [B, H, S_c, D];
 * pq, pk: scratch for the chunk's pooled coarsest-level rows (pooled_q_bytes, pooled_k_bytes). */
lh_status cuda_lighthouse_chunk_select_gather(cuda_lighthouse *lh, const void *q, const void *k,
                                              const void *v, int32_t *indices, void *inv,
                                              float *sq, float *sk, void *pq, void *pk, void *qs,
                                              void *ks, void *vs, CUstream stream);
lh_status cuda_lighthouse_chunk_scatter(cuda_lighthouse *lh, const void *o_sel, const void *inv,
                                        void *out, CUstream stream);
lh_status cuda_lighthouse_chunk_regather(cuda_lighthouse *lh, const void *q, const void *k,
                                         const void *v, const void *dout, const int32_t *indices,
                                         void *inv, void *qs, void *ks, void *vs, void *d_sel,
                                         CUstream stream);
lh_status cuda_lighthouse_chunk_gather_dout(cuda_lighthouse *lh, const void *dout,
                                            const int32_t *indices, void *d_sel, CUstream stream);
lh_status cuda_lighthouse_chunk_pool_grad(cuda_lighthouse *lh, const void *dqs, const void *dks,
                                          const void *dvs, const void *inv, void *dq, void *dk,
                                          void *dv, CUstream stream);

#endif /* LH_CUDA_LIGHTHOUSE_H */
