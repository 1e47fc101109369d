/*
 * cpu_ring.h - context parallelism in the CPU backend (docs/spec.md section 8): the transport that
 * moves blocks around a ring, the attention step on chunk-major sub-sequences (block pairs, the
 * ring-less step and the built-in ring attention), and the forward/backward of plans that run
 * the attention step as a separate step (ring plans, plans with attention hooks).
 *
 * Chunk-major: every sub-sequence tensor is [C, B, H, S_c, D] (C = cfg->chunks, S_c =
 * cfg->s_chunk), i.e. C consecutive [B, H, S_c, D] blocks, one per local chunk; k and v hold the
 * entries of each query head's kv head, so every "head" below is a query head.
 */
#ifndef LH_CPU_RING_H
#define LH_CPU_RING_H

#include "cpu_internal.h"

/* ---- transport (cpu_transport.c) ------------------------------------------------------ */

/* How blocks move around a ring: one collective operation, a shift by one rank. Every rank calls
 * shift with the same `bytes`; each sends `bytes` from `send` to rank + 1 and receives `bytes`
 * from rank - 1 into `recv` (mod world), and `send` may be reused once shift returns. A failed
 * shift leaves the ring unusable; abort makes every peer's pending and later shifts fail instead
 * of waiting. The built-in ring attention only needs this, so another transport (a framework's
 * communicator, say) plugs in by filling the table. */
typedef struct lh_cpu_transport {
    int rank, world;
    void *state;
    lh_status (*shift)(struct lh_cpu_transport *self, const void *send, void *recv, size_t bytes);
    void (*abort)(struct lh_cpu_transport *self);
} lh_cpu_transport;

/* The transport of a local ring (ranks are threads of this process): runtime/ring_local.c's
 * rendezvous, a memcpy from the predecessor's published buffer, and a second rendezvous so no
 * rank reuses a buffer before its successor has read it. */
void lh_cpu_transport_local(lh_ring_info *ring, int rank, lh_cpu_transport *out);

/* ---- block pairs (cpu_attention_step.c) ----------------------------------------------- */

/* One block pair: queries of one chunk against the keys and values of one chunk, every tensor
 * [B, H, S, D] (S = cfg->s_chunk), causal (the same chunk) or full (an earlier chunk). */
typedef struct lh_cpu_pair {
    const float *q, *k, *v;
    int full;
} lh_cpu_pair;

/* Forward of a pair. Without acc_o: o, lse [B,H,S(,D)] are written. With acc_o, acc_lse: o, lse
 * receive the pair's partial result and are merged into the accumulators by log-sum-exp (an
 * accumulator row with lse = -inf is empty). */
void lh_cpu_pair_forward(const lh_cpu_plan *plan, const lh_cpu_pair *pair, float *o, float *lse,
                         float *acc_o, float *acc_lse, char *scratch);

/* Backward of a pair with the final o, dout and lse of the query chunk: dq (query side) and
 * dk, dv (key side, per query head), overwritten or added to when `accumulate`. dvec [B,H,S]
 * receives dO . O per row. */
void lh_cpu_pair_backward(const lh_cpu_plan *plan, const lh_cpu_pair *pair, const float *o,
                          const float *dout, const float *lse, float *dvec, float *dq, float *dk,
                          float *dv, int accumulate, char *scratch);

/* ---- the attention step (ops table), cpu_attention_step.c ------------------------------ */

size_t lh_cpu_attention_workspace_bytes(const lh_cpu_plan *plan);
lh_status lh_cpu_attention_forward(void *plan_state, const void *q_sel, const void *k_sel,
                                   const void *v_sel, void *o_sel, float *lse, void *workspace,
                                   void *stream);
lh_status lh_cpu_attention_backward(void *plan_state, const void *q_sel, const void *k_sel,
                                    const void *v_sel, const void *o_sel, const float *lse,
                                    const void *do_sel, void *dq_sel, void *dk_sel, void *dv_sel,
                                    void *workspace, void *stream);

/* ---- the built-in ring attention (cpu_ring_attention.c) -------------------------------- */

size_t lh_cpu_ring_workspace_bytes(const lh_cpu_plan *plan);
lh_status lh_cpu_ring_forward(const lh_cpu_plan *plan, lh_cpu_transport *t, const float *q,
                              const float *k, const float *v, float *o, float *lse,
                              char *workspace);
lh_status lh_cpu_ring_backward(const lh_cpu_plan *plan, lh_cpu_transport *t, const float *q,
                               const float *k, const float *v, const float *o, const float *lse,
                               const float *dout, float *dq, float *dk, float *dv,
                               char *workspace);

/* ---- forward and backward of ring plans and plans with hooks (cpu_cp.c) ---------------- */

/* Whether lh_forward / lh_backward of this plan run the attention as its own step. */
static inline int lh_cpu_uses_attention_step(const lh_config *cfg) {
    return cfg->ring != NULL || cfg->forward_hook != NULL;
}
size_t lh_cpu_cp_forward_workspace_bytes(const lh_cpu_plan *plan);
size_t lh_cpu_cp_backward_workspace_bytes(const lh_cpu_plan *plan);
lh_status lh_cpu_cp_forward(const lh_cpu_plan *plan, const float *q, const float *k,
                            const float *v, float *out, char *saved, char *workspace);
lh_status lh_cpu_cp_backward(const lh_cpu_plan *plan, const float *q, const float *k,
                             const float *v, const float *out, const float *dout,
                             const char *saved, float *dq, float *dk, float *dv, char *workspace);

#endif /* LH_CPU_RING_H */
