/*
 * pipeline.h - the Lighthouse pipeline, the same for every backend (docs/architecture.md).
 *
 * runtime/pipeline.c is the only place that knows the order of the stages, the loop over a
 * plan's local chunks, the choice of attention step (the caller's hook or the backend's own)
 * and where stage timing marks go. runtime/buffers.c is the one table of the buffers a plan asks
 * its caller for. A backend provides the stages of one chunk (lh_stage_ops), the attention step
 * and dense attention (lh_pipeline_ops), and a few sizes of its own (lh_backend_sizes); its plan
 * state begins with an lh_pipeline, so lh_pipeline_forward / _backward serve as its forward and
 * backward in lh_backend_ops.
 */
#ifndef LH_PIPELINE_H
#define LH_PIPELINE_H

#include "runtime.h"

/* ---- the buffers (runtime/buffers.c) -------------------------------------------------------- */

/* The buffers the caller provides. */
typedef enum lh_buffer {
    LH_BUF_SAVED,     /* kept from forward for backward */
    LH_BUF_FORWARD,   /* forward workspace */
    LH_BUF_BACKWARD,  /* backward workspace */
    LH_BUF_STAGE,     /* workspace of the stage entry points (lh_scores, ...) */
    LH_BUF_ATTENTION, /* workspace of the attention step alone (lh_attention_forward, ...) */
    LH_BUF_COUNT
} lh_buffer;

/* What a region of a buffer holds. Sub-sequence tensors are chunk-major [C, B, H, S_c, ...]. */
typedef enum lh_region {
    LH_REGION_INDICES,   /* int32 [C,B,H,S_c]: the selection */
    LH_REGION_O_SEL,     /* DTYPE [C,B,H,S_c,D] */
    LH_REGION_LSE,       /* fp32 [C,B,H,S_c] (plain dense: [B,H,N], as its attention has it) */
    LH_REGION_Q_SEL,     /* DTYPE [C,B,H,S_c,D] each */
    LH_REGION_K_SEL,
    LH_REGION_V_SEL,
    LH_REGION_INV,       /* int32 [C,B,H,S_total_c]: pyramid position -> slot or -1 (CUDA) */
    LH_REGION_SCORES_Q,  /* fp32 [B,H,S_total_c], shared by the chunks in turn */
    LH_REGION_SCORES_K,  /* fp32 [B,Hkv,S_total_c] */
    LH_REGION_POOLED_Q,  /* DTYPE [B,H,n_c,D]: the coarsest level's pooled rows (CUDA) */
    LH_REGION_POOLED_K,  /* DTYPE [B,Hkv,n_c,D] */
    LH_REGION_SCORER,    /* the scorer's own workspace (the dilated scorer's attention) */
    LH_REGION_DO_SEL,    /* DTYPE [C,B,H,S_c,D] each: backward */
    LH_REGION_DQ_SEL,
    LH_REGION_DK_SEL,
    LH_REGION_DV_SEL,
    LH_REGION_ATTENTION, /* the attention's workspace (the CPU's stages borrow its start) */
    LH_REGION_SCRATCH,   /* the stage entry points' scratch (CPU threads) */
    LH_REGION_TAG,       /* the end of saved: what lh_forward wrote it for (CPU) */
    LH_REGION_COUNT
} lh_region;

/* What a backend adds to the table: sizes only it knows, in bytes. Words: a *chunked* plan runs
 * its attention as a step of its own (a ring, or attention hooks); *plain dense* is dense mode
 * without either (attention on the caller's tensors, no sub-sequence). */
typedef struct lh_backend_sizes {
    int64_t align;                /* every region starts at a multiple of this */
    bool keeps_subsequence;       /* Lighthouse: saved may keep q/k/v_sel and the inverse map
                                     (unless RECOMPUTE_SUBSEQ), so backward gathers nothing */
    bool stages_indices;          /* a chunked Lighthouse forward selects (and gathers what saved
                                     keeps) into the workspace and copies it to saved after the
                                     attention step, so that a failing ring or hook leaves saved
                                     untouched */
    int64_t inv_bytes;            /* one chunk's inverse map (0: the backend has none) */
    int64_t pooled_q_bytes;       /* one chunk's coarsest pooled rows (0: none) */
    int64_t pooled_k_bytes;
    int64_t scorer_bytes;         /* the scorer's workspace, for one chunk (0: none) */
    int64_t attention_fwd_bytes;  /* the attention inside lh_forward / lh_backward of a plan */
    int64_t attention_bwd_bytes;  /*   without ring or hooks: Lighthouse's on the sub-sequence,
                                     plain dense's on the caller's tensors */
    int64_t attention_step_bytes; /* the attention step (plans with a ring or hooks, and
                                     lh_attention_forward / _backward) */
    int64_t dense_lse_bytes;      /* dense attention on the caller's tensors: its statistics,
                                     taken as they are (no padding after them) */
    int64_t scratch_bytes;        /* the stage entry points' scratch */
    int64_t saved_tag_bytes;      /* the tag at the end of saved (0: none) */
} lh_backend_sizes;

typedef struct lh_buffer_map {
    int64_t offset[LH_BUF_COUNT][LH_REGION_COUNT]; /* -1: the buffer has no such region */
    int64_t size[LH_BUF_COUNT][LH_REGION_COUNT];   /* its bytes (without padding) */
    int64_t bytes[LH_BUF_COUNT];
} lh_buffer_map;

/* Lays out every buffer of `cfg` from the table; `keep` receives whether saved keeps the
 * sub-sequence. */
void lh_buffer_map_build(const lh_config *cfg, const lh_backend_sizes *sizes, lh_buffer_map *out,
                         bool *keep);

/* Appends a region of `bytes` at *end, padded to a multiple of `align`, and returns its offset:
 * how the table lays out the buffers, and how an attention step lays out its own workspace. */
static inline int64_t lh_region_append(int64_t *end, int64_t bytes, int64_t align) {
    int64_t offset = *end;
    *end = offset + (bytes + align - 1) / align * align;
    return offset;
}

/* The region in a buffer whose memory starts at `base`, or NULL where it has none. */
static inline void *lh_buffer_at(const lh_buffer_map *map, lh_buffer b, lh_region r,
                                 const void *base) {
    return map->offset[b][r] < 0 ? NULL : (char *)base + map->offset[b][r];
}

/* ---- what the stages of one chunk see ------------------------------------------------------ */

/* The caller's tensors at the chunk's first token, the chunk's slices of the sub-sequence
 * buffers, and what all chunks share in turn (scores, pooled rows, scratch). NULL where the
 * plan or the call has none. */
typedef struct lh_chunk {
    int64_t index;                       /* 0 .. C-1 */
    const void *q, *k, *v, *dout;
    void *out, *dq, *dk, *dv;
    int32_t *indices;
    void *inv;
    float *scores_q, *scores_k;
    void *pooled_q, *pooled_k;
    void *scorer;                        /* the scorer's workspace */
    void *q_sel, *k_sel, *v_sel, *o_sel;
    void *do_sel, *dq_sel, *dk_sel, *dv_sel;
    void *scratch;
} lh_chunk;

/* A stage of one chunk, enqueued on `stream` (CPU: run on the calling thread). */
typedef lh_status lh_stage_fn(void *plan, const lh_chunk *chunk, void *stream);

/* The stages of one chunk. NULL: the mode has no such stage. */
typedef struct lh_stage_ops {
    lh_stage_fn *scores, *select, *gather, *scatter;  /* forward */
    lh_stage_fn *regather, *gather_dout, *pool_grad; /* backward */
} lh_stage_ops;

/* Dense attention on the caller's tensors (dense plans without ring or hooks). */
typedef lh_status lh_dense_forward_fn(void *plan, const void *q, const void *k, const void *v,
                                      void *out, float *lse, void *workspace, void *stream);
typedef lh_status lh_dense_backward_fn(void *plan, const void *q, const void *k, const void *v,
                                       const void *out, const void *dout, const float *lse,
                                       void *dq, void *dk, void *dv, void *workspace,
                                       void *stream);

typedef struct lh_pipeline_ops {
    /* Around a forward or backward (CUDA: the plan's context is current); NULL: nothing. */
    lh_status (*enter)(void *plan);
    void (*leave)(void *plan);
    const lh_stage_ops *lighthouse; /* the stages of a Lighthouse chunk (scores: the norm scorer) */
    lh_stage_fn *dilated_scores;    /* the scores stage of the dilated scorer */
    const lh_stage_ops *dense;      /* a dense chunk: its tokens packed in and out */
    /* The built-in attention step on chunk-major sub-sequences (the ring on a ring plan). */
    lh_attention_forward_fn *attention_forward;
    lh_attention_backward_fn *attention_backward;
    lh_dense_forward_fn *dense_forward;
    lh_dense_backward_fn *dense_backward;
    /* Copies staged regions to saved (backends with stages_indices). */
    lh_status (*copy)(void *plan, void *dst, const void *src, size_t bytes, void *stream);
    /* Backends that tag saved (saved_tag_bytes): seal_saved writes the tag once a forward has
     * succeeded; check_saved refuses, before a backward reads anything, a saved that a forward of
     * this plan did not write. NULL: no tag. */
    void (*seal_saved)(void *plan, void *saved);
    lh_status (*check_saved)(void *plan, const void *saved);
    /* Before a forward or backward of a ring plan enqueues anything: what the backend checks
     * of its ring (CUDA: a stream being captured, and on an NCCL ring at a plan's first call
     * (`first`) the comparison of every rank's configuration). NULL: nothing. */
    lh_status (*ring_check)(void *plan, bool first, void *stream);
    /* Stage timing (plans finalized with STAGE_TIMING): a forward or backward opens its stages
     * first..last, then each stage is bracketed. NULL where the backend cannot time. */
    lh_status (*timing_open)(void *plan, lh_stage first, lh_stage last, void *stream);
    lh_status (*timing_mark)(void *plan, lh_stage stage, bool end, void *stream);
} lh_pipeline_ops;

/* ---- the driver (runtime/pipeline.c) -------------------------------------------------------- */

typedef struct lh_pipeline {
    const lh_pipeline_ops *ops;
    const lh_config *cfg; /* the plan's, owned by the backend's plan state */
    lh_buffer_map buffers;
    lh_stage_ops lighthouse; /* the backend's, with the plan's scorer as its scores stage (none
                                for SCORER = EXTERNAL: the chunks read the caller's scores) */
    bool keep;            /* saved keeps the sub-sequence: backward gathers nothing again */
    int64_t inv_bytes;    /* one chunk's inverse map */
    bool ring_confirmed;  /* a call of this plan has met its peers, configurations compared */
} lh_pipeline;

/* Fills `p` (the first member of a backend's plan state) and reports the plan's buffer sizes. */
void lh_pipeline_init(lh_pipeline *p, const lh_pipeline_ops *ops, const lh_config *cfg,
                      const lh_backend_sizes *sizes, lh_plan_sizes *out);

/* lh_backend_ops.forward and .backward of every backend: `plan` begins with an lh_pipeline. */
lh_forward_fn lh_pipeline_forward;
lh_backward_fn lh_pipeline_backward;
/* lh_backend_ops.forward_with_scores: the forward with the caller's scores (SCORER = EXTERNAL). */
lh_forward_scores_fn lh_pipeline_forward_with_scores;

#endif /* LH_PIPELINE_H */
