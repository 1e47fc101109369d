/*
 * cpu_internal.h - what the files of the CPU reference backend offer each other: the plan, the
 * thread pool, the pyramid's geometry and the stages (the attention: cpu_attention.h).
 *
 * The CPU backend computes docs/spec.md sections 1-8 in fp32 on host memory, one file per stage
 * (docs/architecture.md); runtime/pipeline.c runs the stages in order. Every stage runs as a set
 * of independent tasks on a small thread pool (cpu_parallel.c); each task gets its own scratch
 * slice of the caller's workspace, so no stage allocates memory while it runs and no stage can
 * fail after it has started writing caller memory.
 */
#ifndef LH_CPU_INTERNAL_H
#define LH_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "algorithm.h"
#include "pipeline.h"

/* Rows (queries) and columns (keys) of one attention block. 64 keeps a block's transposed keys
 * and values in L1/L2 for head dims up to 128 and gives enough blocks for all cores at S = 2K. */
#define LH_CPU_BLOCK 64

typedef struct lh_cpu_plan {
    lh_pipeline pipeline;    /* first: lh_forward / lh_backward run the pipeline on this plan */
    lh_config cfg;
    /* The plan of one chunk (lh_config_chunk): on a ring, the stages (scores, selection, gather,
     * scatter) run on each local chunk as a plan of its own; without a ring, this plan. */
    const struct lh_cpu_plan *chunk;
    int nthreads;            /* worker threads, >= 1 */
    size_t scratch_bytes;    /* scratch of one thread (a multiple of 64 bytes) */
} lh_cpu_plan;

/* Rounds n up to a multiple of 64 (every region of a workspace starts on a cache line). */
static inline size_t lh_cpu_round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* The query heads per kv head (GQA group size). */
static inline int64_t lh_cpu_group(const lh_config *cfg) { return cfg->heads / cfg->kv_heads; }

/* Floats between consecutive tokens of one head in the plan layout, for a tensor of `heads`. */
static inline int64_t lh_cpu_token_stride(const lh_config *cfg, int64_t heads) {
    return cfg->layout == LH_LAYOUT_BNHD ? heads * cfg->head_dim : cfg->head_dim;
}

/* ---- cpu_saved.c: what lh_backward checks in `saved` ------------------------------------- */

#define LH_CPU_SAVED_TAG_BYTES 64

/* Writes the tag that says a forward of this configuration filled `saved` (after everything else
 * of the forward succeeded; lh_pipeline_ops.seal_saved). */
void lh_cpu_saved_seal(void *plan, void *saved);
/* LH_ERROR_INVALID_VALUE with a sentence unless `saved` carries this configuration's tag and, in
 * Lighthouse mode, indices that are pyramid positions in sub-sequence order. Reads nothing else
 * (lh_pipeline_ops.check_saved). */
lh_status lh_cpu_saved_check(void *plan, const void *saved);

/* ---- cpu_parallel.c -------------------------------------------------------------------- */

/* One task: `task` in [0, ntasks), `tid` in [0, nthreads) names the thread's scratch slice. */
typedef void (*lh_cpu_task_fn)(void *arg, int64_t task, int tid);

/* Runs fn(arg, task, tid) for every task on up to `nthreads` threads (the caller is one of them)
 * and returns when all are done. Tasks are handed out in increasing order, so put the costly
 * ones first. Never fails: if a thread cannot be started, the threads that exist do the work. */
void lh_cpu_parallel_for(int nthreads, int64_t ntasks, lh_cpu_task_fn fn, void *arg);

/* ---- cpu_pyramid.c: positions, windows and the tokens of a head ------------------------- */

/* Level and in-level index of pyramid position `pos` (0 <= pos < s_total). */
void lh_cpu_locate(const lh_config *cfg, int64_t pos, int64_t *level, int64_t *index);

/* Mean over the window of pyramid position `pos` of head `h` of x (which has `heads` heads),
 * written to out[0..D). */
void lh_cpu_pool_entry(const lh_config *cfg, const float *x, int64_t heads, int64_t b, int64_t h,
                       int64_t pos, float *out);

/* Sets every token of head h of batch b of x (which has `heads` heads) to zero. */
void lh_cpu_zero_head(const lh_config *cfg, float *x, int64_t heads, int64_t b, int64_t h);

/* Adds w * g[0..D) to tokens [t0, t1) (clipped to N) of head h of x. */
void lh_cpu_add_window(const lh_config *cfg, float *x, int64_t heads, int64_t b, int64_t h,
                       int64_t t0, int64_t t1, const float *g, float w);

/* Indices from the caller (lh_gather, lh_scatter) must all be pyramid positions: checked before
 * anything is written, since a position outside the pyramid would read or write outside the
 * caller's tensors. */
lh_status lh_cpu_check_indices(const lh_config *cfg, const int32_t *indices);

/* ---- the stages: the work of one chunk (plan = the chunk's plan) ----------------------- */

/* Norm scores (docs/spec.md section 1) of all heads: scores_q [B,H,S_total], scores_k
 * [B,Hkv,S_total] (cpu_scores.c). */
void lh_cpu_scores(const lh_cpu_plan *plan, const float *q, const float *k, float *scores_q,
                   float *scores_k);
/* The L2 norm of one row of D floats, in the GPU's order of additions (cpu_scores.c). */
float lh_cpu_row_norm(const float *row, int64_t D);
/* Levels 1.. of one head's scores s [S_total] for the windows of tokens [t0, t1), each the max
 * of its children, from level 0 (cpu_scores.c). */
void lh_cpu_max_pool_scores(const lh_config *cfg, int64_t t0, int64_t t1, float *s);

/* Dilated scores (docs/spec.md section 10; H == Hkv) of all heads, into the same layout, with
 * `scratch` lh_cpu_dilated_thread_bytes per thread (cpu_scores_dilated.c). */
size_t lh_cpu_dilated_thread_bytes(const lh_config *cfg);
void lh_cpu_scores_dilated(const lh_cpu_plan *plan, const float *q, const float *k,
                           const float *v, float *scores_q, float *scores_k, void *scratch);

/* Bytes of one thread's scratch for the selection (cpu_select.c). */
size_t lh_cpu_select_scratch_bytes(const lh_config *cfg);
/* The A/B cascade and the depth-first order (docs/spec.md sections 2-3): indices [B,H,S_sel]. */
void lh_cpu_select(const lh_cpu_plan *plan, const float *scores_q, const float *scores_k,
                   int32_t *indices, void *scratch);

/* q_sel/k_sel/v_sel [B,H,S_sel,D] for the given indices (positions already checked), and
 * d_sel [B,H,S_sel,D] = per entry, the sum of dout over the tokens it was scattered to
 * (cpu_gather.c). */
void lh_cpu_gather(const lh_cpu_plan *plan, const float *q, const float *k, const float *v,
                   const int32_t *indices, float *q_sel, float *k_sel, float *v_sel);
void lh_cpu_gather_dout(const lh_cpu_plan *plan, const int32_t *indices, const float *dout,
                        float *d_sel);

/* out (plan layout) = shifted scatter of o_sel [B,H,S_sel,D] (docs/spec.md section 5;
 * cpu_scatter.c). */
void lh_cpu_scatter(const lh_cpu_plan *plan, const int32_t *indices, const float *o_sel,
                    float *out);

/* dq (plan layout, H heads) and dk, dv (Hkv heads) = pool backward of the per-entry gradients
 * g_q, g_k, g_v [B,H,S_sel,D] (docs/spec.md section 6); kv gradients summed over query heads
 * (cpu_pool_grad.c). */
void lh_cpu_pool_grad(const lh_cpu_plan *plan, const int32_t *indices, const float *g_q,
                      const float *g_k, const float *g_v, float *dq, float *dk, float *dv);

/* The pipeline's stage functions (lh_stage_ops; plan = the whole plan, which knows its chunk's)
 * and the stage entry points of the ops table, in the file of their stage. */
lh_stage_fn lh_cpu_scores_stage, lh_cpu_scores_dilated_stage, lh_cpu_select_stage, lh_cpu_gather_stage,
    lh_cpu_gather_dout_stage, lh_cpu_scatter_stage, lh_cpu_pool_grad_stage;
lh_scores_fn lh_cpu_scores_entry;
lh_select_fn lh_cpu_select_entry;
lh_gather_fn lh_cpu_gather_entry;
lh_scatter_fn lh_cpu_scatter_entry;

/* Dense chunks: a chunk's sub-sequence is its tokens, packed in (kv heads expanded to query
 * heads) and out (kv gradients summed over each group) (cpu_pack.c). */
extern const lh_stage_ops lh_cpu_dense_stages;

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

#endif /* LH_CPU_INTERNAL_H */
