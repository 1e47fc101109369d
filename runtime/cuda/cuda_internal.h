/*
 * cuda_internal.h - what the files of the CUDA backend offer each other: the context, the plan,
 * the attention step, and the stages (one file per stage, like the CPU backend's:
 * docs/architecture.md). runtime/pipeline.c runs the stages in order; every stage enqueues its
 * work on the caller's stream, takes its scratch from the caller's buffers and allocates
 * nothing, so a forward or backward may be captured into a CUDA graph.
 *
 * Lighthouse on the GPU (docs/spec.md sections 1-6): scores (lh_pyramid_scores, which also
 * writes the coarsest level's pooled q and k rows) -> select (inv := -1, lh_select_order: the
 * indices and the inverse map) -> gather (the coarsest-level rows copied from the pooled ones:
 * every coarsest entry is in the sub-sequence, so without them the gather would read all of q
 * and k again) -> the attention step (cuDNN SDPA; the ring on a ring plan) -> scatter. Backward:
 * regather (only with RECOMPUTE_SUBSEQ: inv := -1, lh_invert_indices, a gather without pooled
 * rows), gather_dout, the step's backward, pool_grad (dq, dk, dv for every token).
 *
 * Every entry point of the ops table makes the plan's context current for its own duration
 * (cuda_enter / cuda_leave); the pipeline does so around a whole forward or backward.
 */
#ifndef LH_CUDA_INTERNAL_H
#define LH_CUDA_INTERNAL_H

#include "cuda_kernels.h"
#include "cuda_sdpa.h"
#include "cuda_stage_timer.h"
#include "cuda_transport.h"
#include "cudnn_api.h"
#include "pipeline.h"

/* The cuDNN state a context's plans share (cuda_dnn.c). */
typedef struct cuda_dnn_shared {
    pthread_mutex_t lock;     /* the handle's creation and the cache */
    pthread_mutex_t exec;     /* held from binding the handle to a stream until the enqueue */
    const lh_cudnn_api *api;  /* set with the handle */
    cudnnHandle_t handle;     /* NULL until a plan needs it */
    lh_plan_cache sdpa;       /* SDPA plans built in this context, by cuda_sdpa_key */
} cuda_dnn_shared;

typedef struct cuda_context {
    const lh_cu_api *cu;
    int ordinal;
    CUdevice device;
    CUcontext primary;
    int sm; /* compute capability as 10 * major + minor */
    char name[128];
    cuda_dnn_shared dnn;
    lhc_cache *kernel_cache;  /* the context's compiled kernels (memory, then its disk cache) */
} cuda_context;

/* Where a plan's creation spent its time, in microseconds, in the order of LH_QUERY_SETUP_*_US
 * (lighthouse.h), and how many of its SDPA plans came from the context's cache. */
enum {
    CUDA_SETUP_KERNELS = 0,     /* compiling or loading the kernels (the JIT and its disk cache) */
    CUDA_SETUP_CUDNN_HANDLE,    /* creating the context's cuDNN handle */
    CUDA_SETUP_CUDNN_GRAPH,     /* the SDPA operation graphs: descriptors and finalize */
    CUDA_SETUP_CUDNN_HEURISTICS,/* cuDNN's heuristics: the engine configurations */
    CUDA_SETUP_CUDNN_PLAN,      /* finalizing the execution plans */
    CUDA_SETUP_PHASES
};
typedef struct cuda_setup {
    int64_t us[CUDA_SETUP_PHASES];
    int64_t reused;
} cuda_setup;

/* The attention step on chunk-major sub-sequences [C, B, H, S_c, D] (lse [C, B, H, S_c] fp32):
 * causal cuDNN SDPA without a ring, ring attention on one (cuda_ring.c). All memory is the
 * caller's workspace; the events and the communication stream are created with the plan. */
typedef struct cuda_attention {
    const lh_cu_api *cu;
    cuda_context *cc;              /* whose cache holds the SDPA plans */
    const cuda_kernels *kernels;   /* the plan's: ring.mlir's merge, add, convert */
    int world, rank;               /* 1, 0 without a ring */
    bool has_ring;
    lh_sdpa_plan *causal, *full;   /* [B, H, S_c, D] contiguous; full only on a ring */
    CUstream comm;
    CUevent ev_start, ev_kv, ev_acc, ev_compute, ev_end;
    cuda_transport transport;
    /* sizes in bytes: one chunk of a sub-sequence tensor in DTYPE / fp32, one chunk of lse */
    int64_t cb, cb32, lb;
    /* the ring's workspace layout (byte offsets) */
    int64_t f_kv[2], f_opart, f_lpart, f_acc, f_lse, f_sdpa, fwd_bytes;
    int64_t b_kv[2], b_dkv[2], b_dq, b_part, b_sdpa, bwd_bytes;
    int64_t workspace_bytes;
} cuda_attention;

typedef struct cuda_plan {
    lh_pipeline pipeline;     /* first: lh_forward / lh_backward run the pipeline on this plan */
    cuda_context *cc;
    lh_config cfg;            /* the plan's */
    lh_config chunk;          /* one chunk as a plan of its own (lh_config_chunk; = cfg without
                                 a ring): what the stages' kernels see */
    const lh_cudnn_api *dnn;
    cuda_kernels kernels;     /* Lighthouse: the stages'; chunked plans: ring.mlir too */
    /* element strides (b, t, h) of q/out/dout/dq ([.., H, ..]) and of k/v/dk/dv ([.., Hkv, ..]) */
    int64_t q_sb, q_st, q_sh, kv_sb, kv_st, kv_sh;
    lh_sdpa_plan *dense;      /* dense without ring or hooks: attention on the caller's tensors,
                                 dense_nb sequences and dense_nh query heads per cuDNN call
                                 (fewer than all where the tensors pass 2^31 elements) */
    int64_t dense_nb, dense_nh;
    cuda_attention *attn;     /* the attention step; NULL where it could not be built */
    char attn_error[512];     /* why (dense plans without ring or hooks only) */
    cuda_stage_timer *timer;  /* LH_PARAM_STAGE_TIMING, else NULL */
    cuda_setup setup;         /* where creating the plan spent its time */
    /* SCORER = DILATED: cuDNN's forward on the strided view of one chunk (cuda_scores_dilated.c;
     * from the context's cache) and the byte offsets of its workspace: one output in q's layout,
     * its lse, cuDNN's part. */
    lh_sdpa_plan *scorer;
    int64_t scorer_stats_off, scorer_sdpa_off, scorer_bytes;
} cuda_plan;

/* ---- the context's cuDNN state (cuda_dnn.c) ------------------------------------------------- */

void cuda_dnn_init(cuda_dnn_shared *s);
/* Drops the cached SDPA plans and the handle (no plan of the context is alive any more). */
void cuda_dnn_destroy(cuda_context *cc);
/* The context's cuDNN handle, created on first use (its time goes to setup). */
lh_status cuda_dnn_handle(cuda_context *cc, const lh_cudnn_api *dnn, cudnnHandle_t *out,
                          cuda_setup *setup);
/* The SDPA plan of `shape` on the context's handle: from the context's cache, else built and
 * cached. The plan's context must be current. Give it back with cuda_dnn_sdpa_put. */
lh_status cuda_dnn_sdpa_get(cuda_context *cc, const lh_cudnn_api *dnn, const lh_sdpa_shape *shape,
                            lh_sdpa_plan **out, cuda_setup *setup);
void cuda_dnn_sdpa_put(cuda_context *cc, lh_sdpa_plan *plan);

/* cuDNN's side of a plan on a thread of its own while the caller compiles the plan's kernels:
 * cuDNN opened (its libraries, once per process), the context's handle, then `build` (may be
 * NULL) with the context current, which builds what needs cuDNN and not the kernels. On a
 * machine's first plan both sides compile for a second or more (docs/compiler.md), so the plan
 * waits for the longer of the two instead of their sum. Begin starts it (or runs it at once
 * where no thread can be started); end waits for it, adds its opening time to `setup`, hands out
 * the API and returns the opening's failure; cuda_dnn_open_built then returns the build's. */
typedef lh_status (*cuda_dnn_build_fn)(void *arg, const lh_cudnn_api *dnn);
typedef struct cuda_dnn_open {
    cuda_context *cc;
    cuda_dnn_build_fn build;
    void *arg;
    pthread_t thread;
    bool threaded;
    lh_status st, build_st;
    const lh_cudnn_api *dnn;
    cuda_setup setup;
    int64_t began_us, opened_us, built_us; /* lh_clock_us when the thread began, when cuDNN
                                              was open with a handle, when `build` returned */
    char message[1024], build_message[1024];
} cuda_dnn_open;
void cuda_dnn_open_begin(cuda_context *cc, cuda_dnn_build_fn build, void *arg, cuda_dnn_open *o);
lh_status cuda_dnn_open_end(cuda_dnn_open *o, const lh_cudnn_api **dnn, cuda_setup *setup);
lh_status cuda_dnn_open_built(const cuda_dnn_open *o);

/* The plan's context made current, and the previous one restored (cuda_backend.c). */
lh_status cuda_enter(const cuda_plan *p);
void cuda_leave(const cuda_plan *p);

/* Compiles and loads the plan's kernels, builds its attention and timer, and reports its buffer
 * sizes through the pipeline's table (cuda_plan.c). */
lh_status cuda_plan_create(cuda_context *cc, const lh_pipeline_ops *ops,
                           const lh_context_options *options, const lh_config *cfg,
                           void **out_plan_state, lh_plan_sizes *sizes);
void cuda_plan_destroy(void *plan_state);

/* Dense attention on the caller's tensors: the SDPA shape of one call, and the sequences (*nb)
 * and query heads (*nh) per call (cuda_sdpa_split). */
void cuda_dense_sdpa_shape(const lh_config *cfg, lh_sdpa_shape *shape, int64_t *nb, int64_t *nh);
/* Every SDPA shape a plan of the (validated, derived) configuration `cfg` builds, in the order it
 * builds them: dense attention on the caller's tensors, the dilated scorer, the attention step
 * (and its ring's full blocks). Returns how many. */
#define CUDA_MAX_SDPA_SHAPES 4
int cuda_plan_sdpa_shapes(const lh_config *cfg, lh_sdpa_shape out[CUDA_MAX_SDPA_SHAPES]);

/* ---- the stages (one file each) ----------------------------------------------------------- */

/* The pipeline's stage functions (lh_stage_ops) of a Lighthouse chunk. */
lh_stage_fn cuda_scores_stage, cuda_scores_dilated_stage, cuda_select_stage, cuda_gather_stage, cuda_regather_stage,
    cuda_gather_dout_stage, cuda_scatter_stage, cuda_pool_grad_stage;

/* The stages of a dense chunk: its tokens packed in and out (cuda_pack.c). */
extern const lh_stage_ops cuda_dense_stages;

/* The stage entry points of the ops table (lh_scores, lh_select, lh_gather, lh_scatter). */
lh_scores_fn cuda_scores_entry;
lh_select_fn cuda_select_entry;
lh_gather_fn cuda_gather_entry;
lh_scatter_fn cuda_scatter_entry;

/* The dilated scorer (cuda_scores_dilated.c): its cuDNN plan and workspace layout at plan
 * creation (the context current), and its scores of one chunk into sq, sk. */
lh_status cuda_scorer_create(cuda_plan *p);
/* The scorer's SDPA shape for the chunk's configuration `chunk`. */
void cuda_scorer_sdpa_shape(const lh_config *chunk, lh_sdpa_shape *shape);
lh_status cuda_scores_dilated(const cuda_plan *p, const void *q, const void *k, const void *v,
                              float *sq, float *sk, void *workspace, CUstream stream);

/* inv := -1, then the inverse map of `indices` (cuda_select.c; the regather and lh_scatter). */
lh_status cuda_invert(const cuda_plan *p, const int32_t *indices, void *inv, CUstream stream);

/* A kernel of the plan on the chunk's shape (grid.z = batch, select's tiles). */
static inline lh_status cuda_launch(const cuda_plan *p, lhk_kernel kernel, const void *args,
                                    CUstream stream) {
    lhk_shape shape = {.batch = p->chunk.batch, .tiles = p->chunk.tiles};
    return cuda_kernels_launch(&p->kernels, kernel, args, &shape, stream);
}

/* ---- the attention (cuda_attention.c, cuda_ring.c) ---------------------------------------- */

/* The step of `cfg`: its causal SDPA plan (and on a ring the full one, the communication stream,
 * events and transport), the SDPA plans from the context's cache where it has them.
 * `kernels`: the plan's, holding ring.mlir on a ring. The plan's context must be current. */
lh_status cuda_attention_create(cuda_context *cc, const lh_cudnn_api *dnn, const lh_config *cfg,
                                const cuda_kernels *kernels, cuda_setup *setup,
                                cuda_attention **out);
void cuda_attention_destroy(cuda_attention *a);
/* The step's SDPA shape: causal, or on a ring the full blocks' (`full`). */
void cuda_step_sdpa_shape(const lh_config *cfg, bool full, lh_sdpa_shape *shape);

/* The step, for the pipeline (the plan's context already current), and for the ops table
 * (lh_attention_forward / _backward: context made current, refused where the plan has no
 * step). */
lh_attention_forward_fn cuda_attention_forward, cuda_attention_forward_entry;
lh_attention_backward_fn cuda_attention_backward, cuda_attention_backward_entry;

/* Dense attention on the caller's tensors (p->dense). */
lh_dense_forward_fn cuda_dense_forward;
lh_dense_backward_fn cuda_dense_backward;

/* The pipeline's ring_check (cuda_ring.c): a local ring's built-in step refuses a stream being
 * captured; an NCCL ring compares every rank's configuration at a plan's first call (refused
 * while capturing). */
lh_status cuda_ring_check(void *plan, bool first, void *stream);

/* Ring attention, forward and backward (cuda_ring.c; see there for the algorithm). */
lh_status cuda_ring_forward(cuda_attention *a, const void *q_sel, const void *k_sel,
                            const void *v_sel, void *o_sel, float *lse, void *workspace,
                            CUstream stream);
lh_status cuda_ring_backward(cuda_attention *a, const void *q_sel, const void *k_sel,
                             const void *v_sel, const void *o_sel, const float *lse,
                             const void *do_sel, void *dq_sel, void *dk_sel, void *dv_sel,
                             void *workspace, CUstream stream);

#endif /* LH_CUDA_INTERNAL_H */
