/*
 * cpu_attention.h - attention in the CPU backend: the flash-style kernels of one head
 * (cpu_flash.c, cpu_flash_bwd.c), block pairs of chunk-major sub-sequences (cpu_pairs.c), the
 * attention step and dense attention on the caller's tensors (cpu_attention.c), the built-in
 * ring attention (cpu_ring.c, docs/spec.md section 8) and the transport it moves blocks with
 * (cpu_transport.c). Calls go one way: step -> ring -> pairs -> kernels.
 *
 * Chunk-major: every sub-sequence tensor is [C, B, H, S_c, D] (C = cfg->chunks, S_c =
 * cfg->s_chunk), i.e. C consecutive [B, H, S_c, D] blocks, one per local chunk; k and v hold the
 * entries of each query head's kv head, so every "head" below is a query head.
 */
#ifndef LH_CPU_ATTENTION_H
#define LH_CPU_ATTENTION_H

#include "cpu_internal.h"

/* ---- one head (cpu_flash.c / cpu_flash_bwd.c) ------------------------------------------ */

/* One head of attention: row i of q attends to rows 0..i of k and v (causal), or to all `len`
 * rows when `full` (a block of an earlier chunk on a ring). Strides are in floats between
 * consecutive rows. */
typedef struct lh_cpu_head {
    const float *q, *k, *v;
    int64_t q_stride, kv_stride;
    int64_t len;             /* rows of q, and of k and v */
    int full;                /* 0: causal; 1: every row sees every key */
} lh_cpu_head;

/* Bytes of one thread's scratch for the attention kernels. */
size_t lh_cpu_attention_scratch_bytes(const lh_config *cfg);

/* Forward of rows [r0, r1): o rows (stride o_stride) and lse[r0..r1) (log-sum-exp of the scaled
 * scores), by an online softmax over key blocks: the score matrix is never stored. */
void lh_cpu_attention_rows(const lh_cpu_head *hd, int64_t D, float scale, int64_t r0, int64_t r1,
                           float *o, int64_t o_stride, float *lse, float *scratch);

/* Backward, query side, rows [r0, r1): dvec[i] = dO_i . O_i and dq rows (stride dq_stride),
 * overwritten, or added to when `accumulate`. */
void lh_cpu_attention_bwd_rows(const lh_cpu_head *hd, int64_t D, float scale, int64_t r0,
                               int64_t r1, const float *o, int64_t o_stride, const float *dout,
                               int64_t dout_stride, const float *lse, float *dvec, float *dq,
                               int64_t dq_stride, int accumulate, float *scratch);

/* Query-side tensors of one query head, for the key-side backward. */
typedef struct lh_cpu_qgrad {
    const float *q;
    int64_t q_stride;
    const float *dout;
    int64_t dout_stride;
    const float *lse, *dvec;
} lh_cpu_qgrad;

/* Backward, key side, keys [c0, c1) of one kv head: dk and dv rows (stride dkv_stride), summed
 * over the `nq` query heads in qs (GQA) that share these keys. Overwrites dk, dv rows, or adds
 * to them when `accumulate`. `full`: every query row sees every key (else causal). */
void lh_cpu_attention_bwd_cols(const float *k, const float *v, int64_t kv_stride, int64_t len,
                               int full, int64_t D, float scale, const lh_cpu_qgrad *qs, int64_t nq,
                               int64_t c0, int64_t c1, float *dk, float *dv, int64_t dkv_stride,
                               int accumulate, float *scratch);

/* ---- block pairs (cpu_pairs.c) --------------------------------------------------------- */

/* One block pair: queries of one chunk against the keys and values of one chunk, every tensor
 * [B, H, S, D] (S = cfg->s_chunk), causal (the same chunk) or full (an earlier chunk). */
typedef struct lh_cpu_pair {
    const float *q, *k, *v;
    int full;
} lh_cpu_pair;

/* Forward of a pair. Without acc_o: o, lse [B,H,S(,D)] are written. With acc_o, acc_lse: o, lse
 * receive the pair's partial result and are merged into the accumulators by log-sum-exp (an
 * accumulator row with lse = -inf is empty). `scratch`: one slice per thread. */
void lh_cpu_pair_forward(const lh_cpu_plan *plan, const lh_cpu_pair *pair, float *o, float *lse,
                         float *acc_o, float *acc_lse, char *scratch);

/* Backward of a pair with the final o, dout and lse of the query chunk: dq (query side) and
 * dk, dv (key side, per query head), overwritten or added to when `accumulate`. dvec [B,H,S]
 * receives dO . O per row. */
void lh_cpu_pair_backward(const lh_cpu_plan *plan, const lh_cpu_pair *pair, const float *o,
                          const float *dout, const float *lse, float *dvec, float *dq, float *dk,
                          float *dv, int accumulate, char *scratch);

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

/* ---- the built-in ring attention (cpu_ring.c) ------------------------------------------ */

size_t lh_cpu_ring_workspace_bytes(const lh_cpu_plan *plan);
lh_status lh_cpu_ring_forward(const lh_cpu_plan *plan, lh_cpu_transport *t, const float *q,
                              const float *k, const float *v, float *o, float *lse,
                              char *workspace);
lh_status lh_cpu_ring_backward(const lh_cpu_plan *plan, lh_cpu_transport *t, const float *q,
                               const float *k, const float *v, const float *o, const float *lse,
                               const float *dout, float *dq, float *dk, float *dv,
                               char *workspace);

/* ---- the attention step and dense attention (cpu_attention.c) -------------------------- */

/* Workspace bytes: the step's forward without a ring (one scratch slice per thread), its
 * backward (scratch, then dvec [B,H,S_c]), and the step in general (the ring's on a ring). */
size_t lh_cpu_attention_fwd_bytes(const lh_cpu_plan *plan);
size_t lh_cpu_attention_bwd_bytes(const lh_cpu_plan *plan);
size_t lh_cpu_attention_step_bytes(const lh_cpu_plan *plan);

lh_attention_forward_fn lh_cpu_attention_forward;
lh_attention_backward_fn lh_cpu_attention_backward;

/* Causal attention on the caller's tensors (dense plans without ring or hooks), kv heads read
 * in place under GQA; workspace as the step's (scratch, then dvec [B,H,N]). */
lh_dense_forward_fn lh_cpu_dense_forward;
lh_dense_backward_fn lh_cpu_dense_backward;

#endif /* LH_CPU_ATTENTION_H */
