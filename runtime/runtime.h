/*
 * runtime.h - what the runtime offers the ffi layer: the validated configuration of a plan, the
 * error channel, and the backends (CPU reference, CUDA) behind one table of functions, whose
 * forward and backward are the one backend-neutral pipeline (pipeline.h).
 *
 * The ffi layer validates every argument before it calls a backend, so a backend may assume:
 * non-NULL pointers, a configuration that obeys docs/spec.md, buffers of the sizes the plan reported.
 * A backend still checks what only it can know (device pointers, launch results).
 */
#ifndef LH_RUNTIME_H
#define LH_RUNTIME_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lighthouse.h"

/* ---- errors (runtime/error.c) ------------------------------------------------------------- */

/* Records `fmt` as this thread's last error and returns `status`, so callers write
 * `return lh_fail(LH_ERROR_TOPK, "TOPK must be ... (got %lld)", v);`. */
lh_status lh_fail(lh_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current message with `what: ` (to name the stage that failed) and returns status. */
lh_status lh_fail_context(lh_status status, const char *what);
void lh_clear_error(void);
const char *lh_error_message(void);

/* ---- rings (context parallelism, docs/spec.md section 8) ------------------------------------- */

#define LH_RING_MAX_WORLD 64

typedef enum lh_ring_kind { LH_RING_LOCAL = 0, LH_RING_NCCL = 1 } lh_ring_kind;

/* What must be equal on every rank of a ring: the parameters that decide what ranks exchange and
 * what it means (runtime/config_id.c). v[p] is parameter p for p = BATCH .. MODE and SCORER,
 * DILATION (lh_param; the others are 0); dense plans carry 0 for LEVELS, POOLING, TOPK, SCORER
 * and DILATION, which they do not use, and plans of another scorer 0 for DILATION. */
#define LH_CONFIG_ID_PARAMS (LH_PARAM_DILATION + 1)
typedef struct lh_config_id {
    int64_t v[LH_CONFIG_ID_PARAMS];
    double scale;
} lh_config_id;

/* The state behind an lh_ring handle, shared by every plan bound to it. */
typedef struct lh_ring_info {
    lh_ring_kind kind;
    int world;
    _Atomic int64_t bound_plans;   /* plans bound and not yet destroyed */

    /* LOCAL: the backend every bound plan must share (AUTO until the first plan binds), and the
     * rendezvous of runtime/ring_local.c. Everything below is guarded by `mutex`. */
    lh_backend backend;
    pthread_mutex_t mutex;
    pthread_cond_t cond;           /* on CLOCK_MONOTONIC (lh_ring_local_init) */
    uint64_t bound;                /* bit r: rank r has a live plan (one plan per rank) */
    uint64_t joined;               /* bit r: rank r's plan is finalized: id[r], timeout_s[r] */
    lh_config_id id[LH_RING_MAX_WORLD];
    double timeout_s[LH_RING_MAX_WORLD];
    int ids_checked;               /* the ids were found equal since the last join */
    uint64_t arrived;              /* bit r: rank r is in the current rendezvous */
    uint64_t confirming;           /* bit r: ... to compare configurations only */
    uint64_t generation;           /* completed rendezvous */
    int aborted;                   /* a rank failed mid-exchange: everyone returns an error */
    char abort_reason[512];        /* why, for every rank that finds the ring aborted */
    /* Publications, double-buffered by round parity: a rank may publish for the next round while
     * a slower peer still reads this one, but it cannot get two rounds ahead. */
    const void *slot_ptr[2][LH_RING_MAX_WORLD];
    void *slot_aux[2][LH_RING_MAX_WORLD];

    /* NCCL: filled by the CUDA backend (runtime/cuda). */
    int nccl_rank;
    void *nccl_comm;               /* ncclComm_t */
    int owns_comm;                 /* created from a unique id: destroyed with the ring */
    void *nccl_state;              /* the backend's NCCL bookkeeping */
    void (*nccl_release)(struct lh_ring_info *ring);
} lh_ring_info;

/* Sets up and tears down the mutex and condition variable of a ring. */
void lh_ring_local_init(lh_ring_info *ring);
void lh_ring_local_fini(lh_ring_info *ring);

/* LIGHTHOUSE_RING_TIMEOUT_S as seconds: unset or "" gives the default (120 s); a number > 0, or
 * "inf", is used up to 1e9 s (about 31 years: "no limit"); anything else (NaN, <= 0, text) fails
 * with LH_ERROR_INVALID_VALUE and a sentence. */
lh_status lh_ring_timeout_from_env(double *seconds);

/* Rank `rank`'s plan is finalized with configuration `id` and waits up to timeout_s at each
 * rendezvous: the next rendezvous compares every rank's id (lh_ring_local_leave undoes it). */
void lh_ring_local_join(lh_ring_info *ring, int rank, const lh_config_id *id, double timeout_s);
void lh_ring_local_leave(lh_ring_info *ring, int rank);

/* Local rendezvous: rank `rank` publishes (ptr, aux) and blocks until every rank of the ring has
 * published in this round; *round identifies the round for lh_ring_local_peer, which reads any
 * rank's publication of that round. A rank must finish reading a round's publications before it
 * calls lh_ring_local_exchange again. Rounds count ranks, not arrivals: a rank that arrives
 * twice in one round aborts the ring. The first round after a rank joined compares the ranks'
 * configurations. Returns LH_ERROR_COMMUNICATION with a sentence if the ring was aborted, the
 * ranks' plans differ, or a rank did not arrive within its timeout. */
lh_status lh_ring_local_exchange(lh_ring_info *ring, int rank, const void *ptr, void *aux,
                                 uint64_t *round);
void lh_ring_local_peer(lh_ring_info *ring, uint64_t round, int peer, const void **ptr, void **aux);
/* A round that only compares the ranks' configurations (and publishes nothing): the first call of
 * every plan of a local ring (attention hooks may run a ring of their own and never meet the
 * library's rendezvous otherwise). LH_ERROR_COMMUNICATION with a sentence if the plans differ, or if another
 * rank entered the round to exchange data instead (ranks out of step). */
lh_status lh_ring_local_confirm(lh_ring_info *ring, int rank);
/* Marks the ring failed and wakes every waiting rank (they return LH_ERROR_COMMUNICATION). The
 * calling thread's last error, if any, becomes the reason the peers report. */
void lh_ring_local_abort(lh_ring_info *ring);

/* The schedule of ring attention (docs/spec.md section 8; runtime/config.c), the same for every
 * backend. Rank r holds the query chunks of global index r and 2W-1-r; at a step where it holds
 * the kv chunks of rank `owner`, it computes the blocks (local query chunk q, held kv chunk kv)
 * whose kv chunk does not come after the query chunk: full when it comes before, causal when it
 * is the same chunk. Fills `out` in that order (q, then kv) and returns how many. */
typedef struct lh_ring_block {
    int q, kv;
    bool full;
} lh_ring_block;
int lh_ring_blocks(int64_t world, int64_t rank, int64_t owner, lh_ring_block out[4]);

/* ---- configuration identity (runtime/config_id.c) ------------------------------------------ */

/* The name of a parameter as written in messages ("TOPK"); "UNKNOWN" outside the enum. */
const char *lh_param_name(lh_param param);

struct lh_config;
void lh_config_id_of(const struct lh_config *cfg, lh_config_id *id);
/* 0 when a and b are equal; else 1 and a sentence into out: "LAYOUT is 0 on rank 0 but 1 on
 * rank 1" for the first parameter that differs. */
int lh_config_id_diff(const lh_config_id *a, int rank_a, const lh_config_id *b, int rank_b,
                      char *out, size_t cap);
/* A 64-bit digest of id (FNV-1a): equal ids give equal digests. */
uint64_t lh_config_id_hash(const lh_config_id *id);

/* ---- the validated configuration of a plan ------------------------------------------------ */

typedef struct lh_config {
    int64_t batch, seq_len, heads, kv_heads, head_dim;
    lh_dtype dtype;
    lh_layout layout;
    lh_mode mode;
    int64_t levels, pooling, topk;
    double scale;
    bool recompute_subseq;               /* LH_PARAM_RECOMPUTE_SUBSEQ: backward gathers again */
    bool stage_timing;                   /* LH_PARAM_STAGE_TIMING: events around each stage */
    lh_scorer scorer;                    /* LH_PARAM_SCORER (docs/spec.md section 10) */
    int64_t dilation;                    /* LH_PARAM_DILATION: the dilated scorer's d */

    /* Tokens of the tensors the caller's pointers point to: strides follow this, not seq_len
     * (equal without a ring; a chunk configuration has seq_len = N/(2W) inside a shard of N/W). */
    int64_t tensor_seq_len;

    /* Context parallelism: the ring (NULL = none), this rank, and the attention hooks. */
    lh_ring_info *ring;
    int64_t cp_world, cp_rank;           /* 1 and 0 without a ring */
    lh_attention_forward_hook forward_hook;
    lh_attention_backward_hook backward_hook;
    void *hook_user_data;
    lh_plan *handle;                     /* the public handle, passed to hooks */
    uint64_t fingerprint;                /* lh_config_id_hash of the configuration (finalize) */

    /* Derived by lh_config_derive. Without a ring they describe the whole sequence; on a ring,
     * one chunk of N/(2W) tokens with TOPK/(2W) (lh_config_chunk gives that configuration). */
    int64_t chunks;                      /* C: 2 on a ring, else 1 */
    int64_t chunk_len;                   /* tokens per chunk: N/(2W), or N */
    int64_t level_len[LH_MAX_LEVELS];    /* n_l = chunk_len / p^l */
    int64_t level_off[LH_MAX_LEVELS];    /* off_l = n_0 + ... + n_{l-1} */
    int64_t level_width[LH_MAX_LEVELS];  /* f_l = p^l */
    int64_t s_total;                     /* sum of n_l (dense: chunk_len) */
    int64_t s_chunk;                     /* S_c: kept entries per chunk, n_c + (L-1) * topk_c * p
                                            (dense: chunk_len) */
    int64_t s_sel;                       /* C * S_c: the local sub-sequence */
    int64_t tiles;                       /* T = topk_c / LH_TILE_REFINED (algorithm.h) */
    int64_t tile_len;                    /* coarsest entries per tile, n_c / T */
} lh_config;

/* Fills the derived fields of a configuration whose parameters already passed validation. */
void lh_config_derive(lh_config *cfg);

/* The configuration of one chunk of a ring plan as a plan of its own, without a ring: seq_len =
 * N/(2W), topk = TOPK/(2W), tensor_seq_len = N/W (the shard it lives in), derived fields filled.
 * Chunk j's tokens start at token j * N/(2W) of the shard. Without a ring: a copy of cfg. */
void lh_config_chunk(const lh_config *cfg, lh_config *chunk);

/* Bytes of one element of `dtype`. */
size_t lh_dtype_size(lh_dtype dtype);

/* Element offset of (b, t, h, d) in a [B,N,H,D] or [B,H,N,D] tensor with `heads` heads. */
static inline int64_t lh_tensor_offset(const lh_config *cfg, int64_t heads, int64_t b, int64_t t,
                                       int64_t h, int64_t d) {
    if (cfg->layout == LH_LAYOUT_BNHD)
        return ((b * cfg->tensor_seq_len + t) * heads + h) * cfg->head_dim + d;
    return ((b * heads + h) * cfg->tensor_seq_len + t) * cfg->head_dim + d;
}

/* ---- context options (owned by the ffi context, read by backends at plan creation) -------- */

typedef struct lh_context_options {
    int64_t num_threads;    /* 0 = all online cores */
    int cache_enabled;      /* 1 = use the on-disk kernel cache */
    char cache_dir[1024];   /* "" = the default (see lighthouse.h) */
} lh_context_options;

/* ---- buffer sizes a backend reports for a plan -------------------------------------------- */

typedef struct lh_plan_sizes {
    int64_t saved_bytes;
    int64_t fwd_workspace_bytes;
    int64_t bwd_workspace_bytes;
    int64_t stage_workspace_bytes;
    int64_t attention_workspace_bytes;
    /* where creating the plan spent its time, microseconds, in the order of the queries from
     * LH_QUERY_SETUP_KERNELS_US on (0 where a backend has no such step), and how many of its
     * cuDNN attention plans came from its context's cache (LH_QUERY_SETUP_CUDNN_REUSED) */
    int64_t setup_us[LH_QUERY_SETUP_CUDNN_PLAN_US - LH_QUERY_SETUP_KERNELS_US + 1];
    int64_t setup_reused;
} lh_plan_sizes;

/* ---- backends ------------------------------------------------------------------------------ */

/* The calls a backend runs for a plan, as function types: a backend declares its own with them
 * (`lh_scores_fn cuda_scores_entry;`), so each signature is written once. */

/* lh_forward and lh_backward: the pipeline (pipeline.h) on every backend. */
typedef lh_status lh_forward_fn(void *plan_state, const void *q, const void *k, const void *v,
                                void *out, void *saved, void *workspace, void *stream);
typedef lh_status lh_backward_fn(void *plan_state, const void *q, const void *k, const void *v,
                                 const void *out, const void *dout, const void *saved, void *dq,
                                 void *dk, void *dv, void *workspace, void *stream);

/* lh_forward_with_scores: the pipeline with the caller's scores [C, B, H(kv), S_total]. */
typedef lh_status lh_forward_scores_fn(void *plan_state, const void *q, const void *k,
                                       const void *v, const float *scores_q,
                                       const float *scores_k, void *out, void *saved,
                                       void *workspace, void *stream);

/* The stage entry points (lh_scores and lh_scores_qkv: the plan's scorer, v NULL for the norm
 * scorer; lh_select, lh_gather, lh_scatter). */
typedef lh_status lh_scores_fn(void *plan_state, const void *q, const void *k, const void *v,
                               float *scores_q, float *scores_k, void *workspace, void *stream);
typedef lh_status lh_select_fn(void *plan_state, const float *scores_q, const float *scores_k,
                               int32_t *indices, void *workspace, void *stream);
typedef lh_status lh_gather_fn(void *plan_state, const void *q, const void *k, const void *v,
                               const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                               void *workspace, void *stream);
typedef lh_status lh_scatter_fn(void *plan_state, const int32_t *indices, const void *o_sel,
                                void *out, void *workspace, void *stream);

/* The attention step alone, chunk-major [C, B, H, S_c, D] (see lh_attention_forward); on a ring,
 * the built-in ring attention. Never calls the hooks. */
typedef lh_status lh_attention_forward_fn(void *plan_state, const void *q_sel, const void *k_sel,
                                          const void *v_sel, void *o_sel, float *lse,
                                          void *workspace, void *stream);
typedef lh_status lh_attention_backward_fn(void *plan_state, const void *q_sel,
                                           const void *k_sel, const void *v_sel,
                                           const void *o_sel, const float *lse,
                                           const void *do_sel, void *dq_sel, void *dk_sel,
                                           void *dv_sel, void *workspace, void *stream);

typedef struct lh_backend_ops {
    lh_backend kind;
    const char *name;

    /* Whether this backend can run here at all (driver present, device exists). On failure
     * it sets the error message and returns LH_ERROR_BACKEND_UNAVAILABLE. */
    lh_status (*probe)(int device);

    lh_status (*context_create)(int device, const lh_context_options *options, void **out_state);
    void (*context_destroy)(void *state);

    /* Backend-specific checks of a validated configuration (dtypes, head dims it supports).
     * Then compiles whatever the plan needs and reports its buffer sizes. */
    lh_status (*plan_create)(void *context_state, const lh_context_options *options,
                             const lh_config *cfg, void **out_plan_state, lh_plan_sizes *sizes);
    void (*plan_destroy)(void *plan_state);

    /* Checks that `ptr` may be used as a buffer of `bytes` bytes by this backend (CUDA: a device
     * pointer of the plan's device). `name` is the argument's name for the message. */
    lh_status (*check_buffer)(void *plan_state, const void *ptr, size_t bytes, const char *name);
    /* Checks the stream argument (CPU: must be NULL). */
    lh_status (*check_stream)(void *plan_state, void *stream);

    /* lh_pipeline_forward / lh_pipeline_backward on every backend (pipeline.h). */
    lh_forward_fn *forward;
    lh_backward_fn *backward;
    lh_forward_scores_fn *forward_with_scores;

    /* The stage entry points, in the file of their stage in each backend. */
    lh_scores_fn *scores;
    lh_select_fn *select;
    lh_gather_fn *gather;
    lh_scatter_fn *scatter;

    /* The attention step alone (lh_attention_forward / _backward). */
    lh_attention_forward_fn *attention_forward;
    lh_attention_backward_fn *attention_backward;

    /* The time of `stage` (named `name` for messages) in the plan's most recent forward or
     * backward, for plans finalized with STAGE_TIMING (NULL where the backend cannot time). */
    lh_status (*stage_ms)(void *plan_state, lh_stage stage, const char *name, double *out_ms);

    /* NCCL rings (NULL where the backend has no NCCL). ring_init fills ring's NCCL fields from the
     * caller's communicator (comm != NULL) or by creating one from unique_id, rank, world. */
    lh_status (*nccl_unique_id)(void *context_state, void *unique_id);
    lh_status (*nccl_ring_init)(void *context_state, lh_ring_info *ring, void *comm,
                                const void *unique_id, int rank, int world);
} lh_backend_ops;

/* The CPU reference backend (runtime/cpu/cpu_backend.c). */
extern const lh_backend_ops lh_cpu_backend_ops;

/* The CUDA backend (runtime/cuda/cuda_backend.c); its probe fails cleanly where no GPU exists. */
extern const lh_backend_ops lh_cuda_backend_ops;

/* cuDNN's attention plans of `cfg` (validated and derived, as at finalize) built for the GPU
 * described by `device_text` (lh_context_save_device's text), on a machine with the NVIDIA
 * driver's library and any GPU or none, into the plan store of `cache`'s directory;
 * *out_built counts the plans built now (runtime/cuda/cuda_precompile.c). */
struct lhc_cache;
lh_status lh_cuda_precompile_attention(const lh_config *cfg, const char *device_text,
                                       struct lhc_cache *cache, int64_t *out_built);
/* The kernels' chip name ("sm_90", ...) of the GPU described by `device_text`. */
lh_status lh_cuda_device_chip(const char *device_text, char *chip, size_t cap);
/* The description of a CUDA context's GPU (malloc'd text; runtime/cuda/cudnn_device.h). */
lh_status lh_cuda_describe_device(void *cuda_context_state, char **out_text);

#endif /* LH_RUNTIME_H */
