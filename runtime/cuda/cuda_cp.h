/*
 * cuda_cp.h - forward and backward of a chunked plan: one bound to a ring (context parallelism,
 * docs/spec.md section 8) or one with attention hooks. The C chunks of the local shard (C = 2 on a
 * ring: chunk r then chunk 2W-1-r; else 1) each run pyramid, selection and gather as a sequence
 * of their own (Lighthouse) or are packed as they are (dense), into chunk-major sub-sequences
 * [C, B, H, S_c, D]; then the attention step runs once over all of them (the caller's hook, or
 * cuda_ring.c); then each chunk scatters (backward: pools its gradients) back into the shard.
 */
#ifndef LH_CUDA_CP_H
#define LH_CUDA_CP_H

#include "cuda_lighthouse.h"
#include "cuda_ring.h"

typedef struct cuda_cp {
    const lh_cu_api *cu;
    lh_config cfg;         /* the plan's */
    lh_config chunk;       /* one chunk as a plan of its own (lh_config_chunk) */
    cuda_lighthouse *lh;   /* Lighthouse: the chunk's kernels; NULL in dense mode */
    bool owns_lh;
    cuda_ring *attn;       /* the built-in attention step (borrowed from the backend plan) */
    int64_t C, es, cb, lb, ib, invb;
    int64_t q_tok, kv_tok; /* bytes from one token to the next in q and in k (chunk offsets) */
    /* keep: Lighthouse chunks keep q/k/v of their sub-sequences and their inverse maps in
     * `saved` (sv_q/k/v/inv; the matching f_ and b_ regions are then unused), unless the plan
     * asked for LH_PARAM_RECOMPUTE_SUBSEQ. */
    bool keep;
    int64_t sv_idx, sv_o, sv_lse, sv_q, sv_k, sv_v, sv_inv, saved_bytes;
    int64_t f_sq, f_sk, f_inv, f_pq, f_pk, f_q, f_k, f_v, f_attn, fwd_bytes;
    int64_t b_inv, b_q, b_k, b_v, b_do, b_dq, b_dk, b_dv, b_attn, bwd_bytes;
} cuda_cp;

/* `lh` is the backend's Lighthouse plan of the whole (ring-less) configuration to borrow, or NULL:
 * a ring plan then gets a chunk plan of its own. The plan's context must be current. */
lh_status cuda_cp_create(const cuda_lighthouse_env *env, const lh_config *cfg, cuda_lighthouse *lh,
                         cuda_ring *attn, cuda_cp **out, lh_plan_sizes *sizes);
void cuda_cp_destroy(cuda_cp *cp);

lh_status cuda_cp_forward(cuda_cp *cp, const void *q, const void *k, const void *v, void *out,
                          void *saved, void *workspace, CUstream stream);
lh_status cuda_cp_backward(cuda_cp *cp, const void *q, const void *k, const void *v,
                           const void *dout, const void *saved, void *dq, void *dk, void *dv,
                           void *workspace, CUstream stream);

#endif /* LH_CUDA_CP_H */
