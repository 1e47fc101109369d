/*
 * cpu_internal.h - what the files of the CPU reference backend offer each other.
 *
 * The CPU backend computes docs/spec.md sections 1-8 in fp32 on host memory (section 8, context
 * parallelism: cpu_ring.h). Every stage runs as a set of independent tasks on a small thread pool
 * (cpu_parallel.c); each task gets its own scratch slice of the caller's workspace, so no stage
 * allocates memory while it runs and no stage can fail after it has started writing caller memory.
 */
#ifndef LH_CPU_INTERNAL_H
#define LH_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "algorithm.h"
#include "runtime.h"

/* Rows (queries) and columns (keys) of one attention block. 64 keeps a block's transposed keys
 * and values in L1/L2 for head dims up to 128 and gives enough blocks for all cores at S = 2K. */
#define LH_CPU_BLOCK 64

typedef struct lh_cpu_plan {
    lh_config cfg;
    /* The plan of one chunk (lh_config_chunk): on a ring, the stages (scores, selection, gather,
     * scatter) run on each local chunk as a plan of its own; without a ring, this plan. */
    const struct lh_cpu_plan *chunk;
    int nthreads;            /* worker threads, >= 1 */
    size_t scratch_bytes;    /* scratch of one thread (a multiple of 64 bytes) */
    /* Byte offsets of the regions of `saved` (laid out in cpu_backend.c, described in
     * cpu_forward.c); the workspace layouts are in cpu_forward.c and cpu_backward.c. */
    size_t saved_idx_off, saved_o_off, saved_lse_off;
} lh_cpu_plan;

/* ---- cpu_parallel.c -------------------------------------------------------------------- */

/* One task: `task` in [0, ntasks), `tid` in [0, nthreads) names the thread's scratch slice. */
typedef void (*lh_cpu_task_fn)(void *arg, int64_t task, int tid);

/* Runs fn(arg, task, tid) for every task on up to `nthreads` threads (the caller is one of them)
 * and returns when all are done. Tasks are handed out in increasing order, so put the costly
 * ones first. Never fails: if a thread cannot be started, the threads that exist do the work. */
void lh_cpu_parallel_for(int nthreads, int64_t ntasks, lh_cpu_task_fn fn, void *arg);

/* ---- cpu_pyramid.c --------------------------------------------------------------------- */

/* Level and in-level index of pyramid position `pos` (0 <= pos < s_total). */
void lh_cpu_locate(const lh_config *cfg, int64_t pos, int64_t *level, int64_t *index);

/* Mean over the window of pyramid position `pos` of head `h` of x (which has `heads` heads),
 * written to out[0..D). */
void lh_cpu_pool_entry(const lh_config *cfg, const float *x, int64_t heads, int64_t b, int64_t h,
                       int64_t pos, float *out);

/* Norm scores (docs/spec.md section 1) of all heads: scores_q [B,H,S_total], scores_k [B,Hkv,S_total]. */
void lh_cpu_scores(const lh_cpu_plan *plan, const float *q, const float *k, float *scores_q,
                   float *scores_k);

/* Gathers q_sel/k_sel/v_sel [B,H,S_sel,D] for the given indices (positions already checked). */
void lh_cpu_gather(const lh_cpu_plan *plan, const float *q, const float *k, const float *v,
                   const int32_t *indices, float *q_sel, float *k_sel, float *v_sel);

/* ---- cpu_select.c ---------------------------------------------------------------------- */

/* Bytes of one thread's scratch for the selection. */
size_t lh_cpu_select_scratch_bytes(const lh_config *cfg);

/* The A/B cascade and the depth-first order (docs/spec.md sections 2-3): indices [B,H,S_sel]. */
void lh_cpu_select(const lh_cpu_plan *plan, const float *scores_q, const float *scores_k,
                   int32_t *indices, void *scratch);

/* ---- cpu_tile.c: dense kernels on blocks of at most LH_CPU_BLOCK rows and columns ----------- */

typedef struct lh_cpu_tiles {
    /* c[i][j] = a_i . column j of bt, for rows i < m of a (stride lda) and columns j < n of bt
     * (bt is D x LH_CPU_BLOCK, a transposed block); c has LH_CPU_BLOCK columns. */
    void (*abt)(const float *a, int64_t lda, int64_t m, const float *bt, int64_t n, int64_t D,
                float *c);
    /* acc[i][0..D) += sum over j < n of p[i][j] * b_j, rows i < m; p has LH_CPU_BLOCK columns,
     * b rows have stride ldb, acc rows stride D. */
    void (*acc)(const float *p, int64_t m, int64_t n, const float *b, int64_t ldb, int64_t D,
                float *acc);
    /* x[j] = exp(x[j] * scale - shift) (exp_cols: a shift per element), j < n. */
    void (*exp)(float *x, int64_t n, float scale, float shift);
    void (*exp_cols)(float *x, int64_t n, float scale, const float *shift);
    /* xt (D x LH_CPU_BLOCK) = the n rows of x (stride `stride`) transposed; padding columns up
     * to the next multiple of 16 zeroed. */
    void (*transpose)(const float *x, int64_t stride, int64_t n, int64_t D, float *xt);
} lh_cpu_tiles;

/* The fastest copy of the kernels that this CPU supports. */
const lh_cpu_tiles *lh_cpu_tiles_get(void);

/* ---- cpu_attention.c / cpu_attention_bwd.c --------------------------------------------- */

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

/* ---- cpu_scatter.c --------------------------------------------------------------------- */

/* out (plan layout) = shifted scatter of o_sel [B,H,S_sel,D] (docs/spec.md section 5). */
void lh_cpu_scatter(const lh_cpu_plan *plan, const int32_t *indices, const float *o_sel,
                    float *out);

/* d_sel [B,H,S_sel,D] = per entry, the sum of dout over the tokens it was scattered to. */
void lh_cpu_gather_dout(const lh_cpu_plan *plan, const int32_t *indices, const float *dout,
                        float *d_sel);

/* dq (plan layout, H heads) and dk, dv (Hkv heads) = pool backward of the per-entry gradients
 * g_q, g_k, g_v [B,H,S_sel,D] (docs/spec.md section 6); kv gradients summed over query heads. */
void lh_cpu_unpool_grads(const lh_cpu_plan *plan, const int32_t *indices, const float *g_q,
                         const float *g_k, const float *g_v, float *dq, float *dk, float *dv);

/* ---- cpu_forward.c / cpu_backward.c ---------------------------------------------------- */

lh_status lh_cpu_forward(void *plan_state, const void *q, const void *k, const void *v, void *out,
                         void *saved, void *workspace, void *stream);
lh_status lh_cpu_backward(void *plan_state, const void *q, const void *k, const void *v,
                          const void *out, const void *dout, const void *saved, void *dq,
                          void *dk, void *dv, void *workspace, void *stream);

/* ---- cpu_stages.c: the stage entry points of the ops table -------------------------------- */

lh_status lh_cpu_stage_scores(void *plan_state, const void *q, const void *k, float *scores_q,
                              float *scores_k, void *workspace, void *stream);
lh_status lh_cpu_stage_select(void *plan_state, const float *scores_q, const float *scores_k,
                              int32_t *indices, void *workspace, void *stream);
lh_status lh_cpu_stage_gather(void *plan_state, const void *q, const void *k, const void *v,
                              const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                              void *workspace, void *stream);
lh_status lh_cpu_stage_scatter(void *plan_state, const int32_t *indices, const void *o_sel,
                               void *out, void *workspace, void *stream);

/* Workspace bytes of forward and backward (regions laid out by the functions above). */
size_t lh_cpu_forward_workspace_bytes(const lh_cpu_plan *plan);
size_t lh_cpu_backward_workspace_bytes(const lh_cpu_plan *plan);

/* Rounds n up to a multiple of 64 (every region of a workspace starts on a cache line). */
static inline size_t lh_cpu_round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* The query heads per kv head (GQA group size). */
static inline int64_t lh_cpu_group(const lh_config *cfg) { return cfg->heads / cfg->kv_heads; }

/* Floats between consecutive tokens of one head in the plan layout, for a tensor of `heads`. */
static inline int64_t lh_cpu_token_stride(const lh_config *cfg, int64_t heads) {
    return cfg->layout == LH_LAYOUT_BNHD ? heads * cfg->head_dim : cfg->head_dim;
}

#endif /* LH_CPU_INTERNAL_H */
