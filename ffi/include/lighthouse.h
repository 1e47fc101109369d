/*
 * lighthouse.h - the stable C ABI of liblighthouse.
 *
 * Lighthouse attention (docs/spec.md): q, k, v are pooled into a multi-level pyramid, a parameter-free
 * top-k cascade picks a small sub-sequence, causal attention runs on it, and the result is
 * scattered back to full length. The same calls also run plain dense causal attention.
 *
 * Conventions (they hold for every function below):
 *  - Everything that crosses the boundary is an opaque handle, a scalar, an enum or a raw
 *    pointer. No public struct has a layout, so the ABI can grow without breaking callers.
 *  - Every function returns an lh_status. LH_OK is 0; anything else is an error, and
 *    lh_last_error() then returns a sentence that says what was wrong and with which values.
 *  - On error nothing the caller owns has been written: outputs are either complete or untouched.
 *  - The caller owns all tensor memory. The plan says how many bytes it needs for `saved`
 *    (kept from forward for backward) and for the workspaces. For the CPU backend pointers are
 *    host pointers and `stream` must be NULL; for the CUDA backend they are device pointers of the
 *    context's device and `stream` is a CUstream (NULL means the legacy default stream).
 *  - Tensors are dense, C order, in the plan's dtype and layout:
 *      LH_LAYOUT_BNHD: [batch, seq, heads, head_dim]   (the default)
 *      LH_LAYOUT_BHND: [batch, heads, seq, head_dim]
 *    k and v have LH_PARAM_KV_HEADS heads; q, out, dout, dq have LH_PARAM_HEADS heads; out and
 *    dout use the same layout as q.
 *  - Handles are not internally locked: use one plan from one thread at a time. Different plans
 *    and contexts may be used from different threads concurrently.
 *  - Non-finite input (NaN, +-Inf in q, k, v, dout, or in scores given to lh_select) is not an
 *    error and is not checked for (that would cost a pass over every input). Calls return LH_OK,
 *    read and write only the caller's buffers, and select only valid pyramid positions in
 *    sub-sequence order (lh_select ranks scores by the IEEE-754 order of their bits: a NaN with
 *    the sign bit clear above +Inf, one with it set below -Inf, +0 equal to -0, ties to the
 *    lower position). Such values propagate as in softmax(scale * q k^T) v computed in IEEE
 *    arithmetic: a -Inf score gives its key weight 0; a NaN or +Inf score, or a row whose every
 *    score is -Inf, makes that row's output NaN; a non-finite v reaches every row that gives it
 *    weight; gradients follow. So an output is never a finite value computed from a non-finite
 *    one it depends on; outputs that do not depend on it may be non-finite too (within a block
 *    of rows, or through a pooled pyramid entry). Check inputs yourself where you must know.
 *  - Large logits (|x| = |SOFTMAX_SCALE * q.k| large, from the scale or from |q|, |k|) are not
 *    refused (that would need a pass over the inputs). The CPU backend stays within fp32
 *    rounding of a float64 reference at any finite x. The CUDA backend promises its usual bounds
 *    and finite outputs while max |x| <= 1e4 over the pairs a row attends to. Beyond that it
 *    still returns LH_OK, selects valid positions and writes a finite out (dense: as accurate as
 *    below 1e4), but cuDNN's backward recomputes the softmax from fp32 row statistics, whose
 *    rounding grows as |x| * 2^-24: gradients lose accuracy and become non-finite at very large
 *    |x| (seen at 5e10). In Lighthouse mode the pooled rows of the sub-sequence are rounded to
 *    the dtype, which moves a logit by up to about 2^-8 |x| (bf16), so the output's distance
 *    from an fp32 computation grows with |x| (bf16: about 1e-2 at |x| = 60, 1e-1 at 1e4) as for
 *    any attention on bf16 rows.
 */
#ifndef LIGHTHOUSE_H
#define LIGHTHOUSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LH_API __declspec(dllexport)
#else
#define LH_API __attribute__((visibility("default")))
#endif

/* ---------------------------------------------------------------------------------------------
 * Version
 * ------------------------------------------------------------------------------------------- */

#define LH_VERSION_MAJOR 0
#define LH_VERSION_MINOR 1
#define LH_VERSION_PATCH 0
#define LH_VERSION_NUMBER (LH_VERSION_MAJOR * 10000 + LH_VERSION_MINOR * 100 + LH_VERSION_PATCH)

/* The version of the loaded library as MAJOR*10000 + MINOR*100 + PATCH; compare with
 * LH_VERSION_NUMBER to detect a header/library mismatch. */
LH_API int lh_version_number(void);
/* The same as "MAJOR.MINOR.PATCH". Static storage; never NULL. */
LH_API const char *lh_version_string(void);

/* ---------------------------------------------------------------------------------------------
 * Status codes and errors
 * ------------------------------------------------------------------------------------------- */

typedef enum lh_status {
    LH_OK = 0,
    LH_ERROR_NULL_POINTER = 1,        /* a required pointer argument is NULL */
    LH_ERROR_INVALID_VALUE = 2,       /* a size is not positive, or an enum value is unknown */
    LH_ERROR_HEADS_MISMATCH = 3,      /* HEADS is not a multiple of KV_HEADS */
    LH_ERROR_POOLING = 4,             /* POOLING is not a power of two in 2..64 */
    LH_ERROR_TOPK = 5,                /* TOPK is not a positive multiple of 128 */
    LH_ERROR_SEQ_DIVISIBILITY = 6,    /* SEQ_LEN is not a multiple of POOLING^(LEVELS-1) * TOPK/128 */
    LH_ERROR_TILE_TOO_SMALL = 7,      /* a coarsest-level tile holds fewer than 128 entries */
    LH_ERROR_LEVELS = 8,              /* LEVELS is outside 2..LH_MAX_LEVELS */
    LH_ERROR_UNSUPPORTED_DTYPE = 9,   /* the backend cannot run this dtype */
    LH_ERROR_UNSUPPORTED = 10,        /* the backend cannot run this configuration or call */
    LH_ERROR_BAD_STATE = 11,          /* call out of order (e.g. forward before finalize) */
    LH_ERROR_OUT_OF_HOST_MEMORY = 12, /* a host allocation failed */
    LH_ERROR_OUT_OF_DEVICE_MEMORY = 13, /* a device allocation failed: free memory and retry */
    LH_ERROR_BACKEND_UNAVAILABLE = 14,  /* no such device, no driver, or a needed library
                                           (CUDA driver, cuDNN, NCCL) is missing or too old */
    LH_ERROR_BAD_POINTER = 15,        /* a pointer is of the wrong kind (host vs device), of another
                                         device, or misaligned */
    LH_ERROR_COMPILE = 16,            /* the kernel compiler failed (message carries MLIR's text) */
    LH_ERROR_DEVICE = 17,             /* the CUDA driver reported an error */
    LH_ERROR_CUDNN = 18,              /* cuDNN reported an error */
    LH_ERROR_COMMUNICATION = 19,      /* NCCL or a ring transport reported an error */
    LH_ERROR_IO = 20,                 /* a file (kernel cache, golden data) could not be read/written */
    LH_ERROR_INTERNAL = 21            /* a bug in liblighthouse: please report the message */
} lh_status;

/* A short fixed name for a status ("LH_ERROR_TOPK"). Static storage; never NULL. */
LH_API const char *lh_status_string(lh_status status);

/* The message of the most recent failing call on this thread: what was wrong, the rule it broke
 * and the offending values. Every entry point clears it on entry, so after LH_OK it is "".
 * Thread-local storage, valid until the next call of the library on this thread; never NULL. */
LH_API const char *lh_last_error(void);

/* ---------------------------------------------------------------------------------------------
 * Enumerations
 * ------------------------------------------------------------------------------------------- */

typedef enum lh_backend {
    LH_BACKEND_AUTO = 0, /* CUDA when a usable GPU and driver are present, otherwise CPU */
    LH_BACKEND_CPU = 1,  /* the fp32 reference backend: host pointers, both/all cores */
    LH_BACKEND_CUDA = 2  /* NVIDIA GPUs (sm_90, sm_100a): device pointers, JIT-compiled kernels */
} lh_backend;

typedef enum lh_dtype {
    LH_DTYPE_FLOAT32 = 0,  /* the CPU backend's dtype */
    LH_DTYPE_FLOAT16 = 1,
    LH_DTYPE_BFLOAT16 = 2
} lh_dtype;

typedef enum lh_layout {
    LH_LAYOUT_BNHD = 0, /* [batch, seq, heads, head_dim] */
    LH_LAYOUT_BHND = 1  /* [batch, heads, seq, head_dim] */
} lh_layout;

typedef enum lh_mode {
    LH_MODE_LIGHTHOUSE = 0, /* pyramid, selection, attention on the sub-sequence, scatter */
    LH_MODE_DENSE = 1       /* plain causal attention over all SEQ_LEN tokens */
} lh_mode;

/* Where the scores that rank the pyramid come from (docs/spec.md section 10). They decide only
 * the selection; they carry no gradient, and everything after them is the same for every scorer. */
typedef enum lh_scorer {
    LH_SCORER_NORM = 0,     /* sq[t] = ||q[t]||, sk[t] = ||k[t]|| (section 1): the default */
    LH_SCORER_DILATED = 1,  /* sq[t] = ||o_qk[t]||, sk[t] = ||o_kq[t]||: the outputs of causal
                               attention (scale 1/sqrt(HEAD_DIM)) on the DILATION strided
                               sequences t = j, j+d, j+2d, ... of each head, queries q and keys k
                               (o_qk) or queries k and keys q (o_kq), values v. Costs two dense
                               attentions over N tokens, DILATION times cheaper than one dense
                               attention. HEADS == KV_HEADS; SEQ_LEN (on a ring: each chunk's
                               length) a multiple of DILATION */
    LH_SCORER_EXTERNAL = 2  /* the caller's own scores, given to lh_forward_with_scores each call
                               (a learned scorer); lh_forward and lh_scores refuse such a plan */
} lh_scorer;

/* The most pyramid levels a plan may have (level 0 included). */
#define LH_MAX_LEVELS 8

/* Plan parameters, set with lh_plan_set_i64 (or lh_plan_set_f64 for SOFTMAX_SCALE). */
typedef enum lh_param {
    LH_PARAM_BATCH = 0,     /* B, >= 1; default 1 */
    LH_PARAM_SEQ_LEN = 1,   /* N, >= 1; required */
    LH_PARAM_HEADS = 2,     /* H, query heads, >= 1; required */
    LH_PARAM_KV_HEADS = 3,  /* Hkv, key/value heads, H % Hkv == 0; default H */
    LH_PARAM_HEAD_DIM = 4,  /* D, >= 1; required */
    LH_PARAM_DTYPE = 5,     /* lh_dtype; default LH_DTYPE_FLOAT32 */
    LH_PARAM_LAYOUT = 6,    /* lh_layout; default LH_LAYOUT_BNHD */
    LH_PARAM_LEVELS = 7,    /* L, 2..LH_MAX_LEVELS; default 3 */
    LH_PARAM_POOLING = 8,   /* p, power of two in 2..64; default 4 */
    LH_PARAM_TOPK = 9,      /* multiple of 128; default 2048 */
    LH_PARAM_MODE = 10,     /* lh_mode; default LH_MODE_LIGHTHOUSE */
    LH_PARAM_SOFTMAX_SCALE = 11, /* double, > 0; default 1/sqrt(HEAD_DIM); lh_plan_set_f64 only */
    LH_PARAM_RECOMPUTE_SUBSEQ = 12, /* 0 (default): `saved` keeps the gathered q/k/v sub-sequence
                                      (3 x B x H x S_sel x D elements) so that lh_backward does not
                                      gather again; 1: it keeps only the selection, O_sel and the
                                      softmax statistics, and lh_backward re-gathers from q, k, v
                                      (less memory, one more read of q, k, v). Lighthouse mode on
                                      the CUDA backend; elsewhere accepted and without effect. */
    LH_PARAM_STAGE_TIMING = 13, /* 0 (default) or 1: lh_forward and lh_backward record a CUDA event
                                  before and after each stage (lh_stage), and
                                  lh_plan_get_stage_ms reads the times back. For profiling: each
                                  stage adds two event records to the stream. CUDA backend, plans
                                  without a ring or attention hooks; lh_plan_finalize refuses it
                                  elsewhere (LH_ERROR_UNSUPPORTED). */
    LH_PARAM_SCORER = 14,     /* lh_scorer; default LH_SCORER_NORM. Lighthouse mode; a dense plan
                                 accepts only NORM */
    LH_PARAM_DILATION = 15    /* d of LH_SCORER_DILATED, >= 1; default 4. Setting it for another
                                 scorer is an error at lh_plan_finalize */
} lh_param;

/* The stages of one lh_forward / lh_backward, for lh_plan_get_stage_ms. Dense mode has only the
 * two attention stages; REGATHER runs only with LH_PARAM_RECOMPUTE_SUBSEQ = 1. */
typedef enum lh_stage {
    LH_STAGE_SCORES = 0,             /* forward: pyramid scores (and the coarsest pooled rows) */
    LH_STAGE_SELECT = 1,             /* forward: the top-k cascade and the sub-sequence order */
    LH_STAGE_GATHER = 2,             /* forward: the sub-sequence rows q_sel, k_sel, v_sel */
    LH_STAGE_ATTENTION_FORWARD = 3,  /* forward: attention (cuDNN) on the sub-sequence, or dense */
    LH_STAGE_SCATTER = 4,            /* forward: O_sel back to full length */
    LH_STAGE_REGATHER = 5,           /* backward: the inverse map and the sub-sequence again */
    LH_STAGE_GATHER_DOUT = 6,        /* backward: dout summed per selected entry */
    LH_STAGE_ATTENTION_BACKWARD = 7, /* backward: attention backward (cuDNN) */
    LH_STAGE_POOL_GRAD = 8,          /* backward: the gradients back to full length */
    LH_STAGE_COUNT = 9
} lh_stage;

/* Sizes a finalized plan reports through lh_plan_get_i64. */
typedef enum lh_query {
    LH_QUERY_SUBSEQ_LEN = 0,          /* S_sel: entries kept per (batch, head); N in dense mode */
    LH_QUERY_PYRAMID_LEN = 1,         /* S_total = sum over levels of N / p^l; N in dense mode */
    LH_QUERY_SAVED_BYTES = 2,         /* bytes of `saved`, written by forward, read by backward */
    LH_QUERY_FWD_WORKSPACE_BYTES = 3, /* bytes of forward's workspace (may be 0) */
    LH_QUERY_BWD_WORKSPACE_BYTES = 4, /* bytes of backward's workspace (may be 0) */
    LH_QUERY_STAGE_WORKSPACE_BYTES = 5, /* bytes of workspace for the stage entry points */
    LH_QUERY_BACKEND = 6,             /* the lh_backend the plan runs on (never AUTO) */
    LH_QUERY_LOCAL_SEQ_LEN = 7,       /* tokens in this rank's q/k/v: SEQ_LEN / WORLD (SEQ_LEN
                                         without a ring) */
    LH_QUERY_CHUNKS = 8,              /* C: sequence chunks this plan holds: 2 on a ring, else 1 */
    LH_QUERY_ATTENTION_WORKSPACE_BYTES = 9, /* workspace of lh_attention_forward / _backward */
    LH_QUERY_WORLD = 10,              /* ranks of the plan's ring (1 without a ring) */
    LH_QUERY_RANK = 11,               /* this plan's rank on its ring (0 without a ring) */
    /* Where lh_plan_finalize spent its time, in microseconds (0 where the backend has no such
     * step, and for what came from a cache): */
    LH_QUERY_SETUP_KERNELS_US = 12,   /* GPU kernels: compiled, or read from the disk cache, and
                                         loaded */
    LH_QUERY_SETUP_CUDNN_HANDLE_US = 13, /* opening cuDNN (once per process) and creating the
                                            context's handle (once per context) */
    LH_QUERY_SETUP_CUDNN_GRAPH_US = 14,  /* building cuDNN's attention operation graphs */
    LH_QUERY_SETUP_CUDNN_HEURISTICS_US = 15, /* cuDNN's heuristics: engine configurations */
    LH_QUERY_SETUP_CUDNN_PLAN_US = 16,   /* finalizing cuDNN's execution plans */
    LH_QUERY_SETUP_CUDNN_REUSED = 17     /* cuDNN attention plans taken from the context, built
                                            there by an earlier plan of the same shape */
} lh_query;

/* Context options, set with lh_context_set_i64 / lh_context_set_str. */
typedef enum lh_context_option {
    LH_CONTEXT_NUM_THREADS = 0,  /* i64: CPU worker threads (the CPU backend's computation; the
                                    kernel compilation of CUDA plans and lh_plan_precompile, at
                                    most 64 there); 0 (default) = all online cores */
    LH_CONTEXT_CACHE_ENABLED = 1,/* i64: 1 (default) keeps compiled kernels on disk, 0 disables it */
    LH_CONTEXT_CACHE_DIR = 2     /* str: the on-disk kernel cache; default $LIGHTHOUSE_CACHE_DIR,
                                    else $XDG_CACHE_HOME/liblighthouse, else ~/.cache/liblighthouse.
                                    Used only if it belongs to this user (or root) and nobody else
                                    can write it, and only for entries that are such regular
                                    files; otherwise kernels are compiled without it and one line
                                    on stderr says why */
} lh_context_option;

/* ---------------------------------------------------------------------------------------------
 * Context: one device (or the CPU), its driver state and its kernel cache
 * ------------------------------------------------------------------------------------------- */

typedef struct lh_context lh_context;

/* Creates a context on `backend`. `device` is the CUDA device ordinal (ignored by the CPU backend,
 * must be >= 0). With LH_BACKEND_AUTO the CPU backend is chosen when no GPU can be used. */
LH_API lh_status lh_context_create(lh_backend backend, int device, lh_context **out_context);

/* Destroys a context. Plans made from it must be destroyed first. NULL is a no-op (LH_OK). */
LH_API lh_status lh_context_destroy(lh_context *context);

/* The backend the context runs on (never LH_BACKEND_AUTO). */
LH_API lh_status lh_context_get_backend(const lh_context *context, lh_backend *out_backend);

/* Sets a context option (see lh_context_option). Takes effect for plans finalized afterwards. */
LH_API lh_status lh_context_set_i64(lh_context *context, lh_context_option option, int64_t value);
LH_API lh_status lh_context_set_str(lh_context *context, lh_context_option option, const char *value);

/* Writes a description of the context's GPU to `path` (a few kB of text: its name, compute
 * capability, cuDNN's version and cuDNN's device properties), for lh_plan_precompile_device on
 * any other machine. Needs a context of LH_BACKEND_CUDA (LH_ERROR_UNSUPPORTED otherwise) and
 * cuDNN 9.11 or later. LH_ERROR_IO where the file cannot be written (nothing is left behind). */
LH_API lh_status lh_context_save_device(const lh_context *context, const char *path);

/* ---------------------------------------------------------------------------------------------
 * Plan: one attention configuration, validated and compiled once, then run many times
 * ------------------------------------------------------------------------------------------- */

typedef struct lh_plan lh_plan;

/* Creates an empty plan with the defaults listed at lh_param. */
LH_API lh_status lh_plan_create(lh_context *context, lh_plan **out_plan);

/* Destroys a plan. NULL is a no-op (LH_OK). */
LH_API lh_status lh_plan_destroy(lh_plan *plan);

/* Sets an integer parameter. Only the value's own range is checked here (e.g. a non-positive
 * size); rules that relate parameters are checked by lh_plan_finalize. Setting a parameter of a
 * finalized plan is LH_ERROR_BAD_STATE. */
LH_API lh_status lh_plan_set_i64(lh_plan *plan, lh_param param, int64_t value);

/* Sets a floating-point parameter (LH_PARAM_SOFTMAX_SCALE). */
LH_API lh_status lh_plan_set_f64(lh_plan *plan, lh_param param, double value);

/* Reads a parameter back (after defaults are applied, finalized or not). */
LH_API lh_status lh_plan_get_param_i64(const lh_plan *plan, lh_param param, int64_t *out_value);
LH_API lh_status lh_plan_get_param_f64(const lh_plan *plan, lh_param param, double *out_value);

/* Validates every rule of docs/spec.md, compiles the kernels and builds the attention graphs. Every
 * configuration error is reported here, never later by forward or backward. That includes the
 * sizes the kernels index with 32 bits (LH_ERROR_UNSUPPORTED): a Lighthouse plan's pyramid (on a
 * ring: one chunk's) must have fewer than 2^31 positions (S_total); on the CUDA backend also
 * BATCH and HEADS + 2 * KV_HEADS at most 65535 (grid dimensions), and cuDNN's attention runs
 * on fewer than 2^31 elements per call: dense plans on larger tensors run in calls of whole
 * sequences, or in LH_LAYOUT_BHND of whole key/value head groups, and are refused where one
 * such piece is still too large (in LH_LAYOUT_BNHD: one sequence's N * HEADS * HEAD_DIM). A plan bound to a local ring also reads LIGHTHOUSE_RING_TIMEOUT_S
 * here (see lh_ring_create_local). */
LH_API lh_status lh_plan_finalize(lh_plan *plan);

/* Reads a size of a finalized plan (see lh_query). */
LH_API lh_status lh_plan_get_i64(const lh_plan *plan, lh_query query, int64_t *out_value);

/* GPU time in ms of `stage` in the plan's most recent lh_forward (forward stages) or lh_backward
 * (backward stages), measured between CUDA events recorded on the call's stream around the
 * stage's kernels. Needs LH_PARAM_STAGE_TIMING = 1; waits until that stage has finished on the
 * GPU. LH_ERROR_BAD_STATE when the most recent call did not run the stage (no call yet, a stage
 * of the other mode or of recomputation, or a call captured into a CUDA graph: captured calls
 * are not timed). */
LH_API lh_status lh_plan_get_stage_ms(const lh_plan *plan, lh_stage stage, double *out_ms);

/* Compiles the GPU kernels that CUDA plans with `plan`'s parameters load on `chip` into the
 * on-disk kernel cache of the plan's context (LH_CONTEXT_CACHE_DIR, LH_CONTEXT_CACHE_ENABLED), so
 * that lh_plan_finalize on such a GPU later reads them instead of compiling (docs/compiler.md).
 * It needs no GPU and works on a context of either backend: on a login node or in a container
 * build, create a CPU context and a plan with the training job's parameters, and call this once
 * per chip. The kernels depend on HEAD_DIM, DTYPE (BFLOAT16 or FLOAT16), LEVELS, POOLING, MODE
 * and HEADS / KV_HEADS: HEADS and HEAD_DIM must be set, the other parameters need not be. The
 * plan is not changed (finalized or not). The kernels are those of the Lighthouse stages (MODE
 * LIGHTHOUSE) and the attention step's (plans on a ring or with attention hooks).
 * chip:         "sm_90" (H100, H200), "sm_100a" (B200); any "sm_NN[a]" that LLVM's NVPTX knows.
 * out_compiled: receives how many kernels were compiled now (the others were in the cache
 *               already); NULL allowed.
 * Errors: LH_ERROR_UNSUPPORTED_DTYPE, LH_ERROR_UNSUPPORTED (parameters the GPU kernels cannot
 * serve), LH_ERROR_INVALID_VALUE (an unknown chip name), LH_ERROR_COMPILE, LH_ERROR_IO (the cache
 * directory cannot be written), LH_ERROR_BAD_STATE (the context's disk cache is disabled),
 * LH_ERROR_BACKEND_UNAVAILABLE (the library was built without its kernel compiler). */
LH_API lh_status lh_plan_precompile(const lh_plan *plan, const char *chip, int64_t *out_compiled);

/* lh_plan_precompile for one GPU described in a file, and with it cuDNN's attention plans: what
 * lh_plan_finalize on that GPU would otherwise build, where cuDNN compiles its attention engines
 * at run time (seconds on a machine that has never compiled them, per sequence length; docs/
 * compiler.md). Like lh_plan_precompile it needs no GPU and works on a context of either backend,
 * but cuDNN has the CUDA driver compile its engines, so the machine needs the NVIDIA driver's
 * library libcuda.so.1 (a GPU machine with CUDA_VISIBLE_DEVICES empty, a container with the
 * driver's user-space libraries; LH_ERROR_BACKEND_UNAVAILABLE with a sentence otherwise). The
 * plans go into the context's cache directory beside the kernels, and lh_plan_finalize on a GPU
 * of that description with cuDNN of the version that built them restores them (a few ms).
 * The plan needs every parameter lh_plan_finalize needs (the attention plans depend on SEQ_LEN,
 * BATCH, TOPK, LAYOUT and the rest): this runs finalize's checks, with its errors, but leaves the
 * plan as it is.
 * device_path:     a description written by lh_context_save_device on such a GPU.
 * out_kernels:     receives how many kernels were compiled now; NULL allowed.
 * out_cudnn_plans: receives how many cuDNN execution plans were built now (those in the store
 *                  already are not built again); NULL allowed.
 * Errors: lh_plan_finalize's and lh_plan_precompile's; LH_ERROR_IO (the file cannot be read),
 * LH_ERROR_INVALID_VALUE (it is not a description, or was written with another cuDNN version),
 * LH_ERROR_BACKEND_UNAVAILABLE (no cuDNN of 9.11 or later, or no libcuda.so.1, could be loaded),
 * LH_ERROR_CUDNN. */
LH_API lh_status lh_plan_precompile_device(const lh_plan *plan, const char *device_path,
                                           int64_t *out_kernels, int64_t *out_cudnn_plans);

/* ---------------------------------------------------------------------------------------------
 * Forward and backward
 * ------------------------------------------------------------------------------------------- */

/* out = Lighthouse (or dense) causal attention of q, k, v. A plan of LH_SCORER_EXTERNAL needs
 * its scores: lh_forward_with_scores (here LH_ERROR_UNSUPPORTED).
 * saved:     LH_QUERY_SAVED_BYTES bytes, written here, read by lh_backward; aligned to 16 bytes.
 * workspace: LH_QUERY_FWD_WORKSPACE_BYTES bytes (NULL allowed when that is 0); aligned to 16.
 * Every element of `out` is written. */
LH_API lh_status lh_forward(lh_plan *plan, const void *q, const void *k, const void *v, void *out,
                            void *saved, void *workspace, void *stream);

/* lh_forward with the caller's scores in place of a scorer, for plans of LH_SCORER_EXTERNAL (and
 * only those): a learned scorer (gated linear attention, say) then trains through the whole
 * pipeline. scores_q [C, B, H, S_total] ranks set A and scores_k [C, B, Hkv, S_total] set B, as
 * lh_select reads them (query head h reads kv head h / (H/Hkv)), fp32, aligned to 4 bytes, with
 * C = LH_QUERY_CHUNKS and S_total = LH_QUERY_PYRAMID_LEN: every position of every level filled
 * in by the caller (level l entry i at off_l + i; the library max-pools nothing), one block per
 * local chunk (on a ring chunk r, then chunk 2W-1-r, each scored as a sequence of its own: docs/
 * spec.md section 8). The scores are only read and carry no gradient: lh_backward is the same
 * for every scorer. Every other argument as lh_forward. */
LH_API lh_status lh_forward_with_scores(lh_plan *plan, const void *q, const void *k,
                                        const void *v, const float *scores_q,
                                        const float *scores_k, void *out, void *saved,
                                        void *workspace, void *stream);

/* dq, dk, dv = gradients of sum(out * dout) with respect to q, k, v.
 * out:   the forward's output (read in dense mode; Lighthouse mode does not read it and accepts
 *        NULL, since what it needs is in `saved`).
 * saved: what lh_forward wrote for the same q, k, v. The CPU backend checks it before reading
 *        anything from it: a tag that lh_forward writes last (a forward of a plan of this
 *        configuration filled it) and, in Lighthouse mode, that every index is a pyramid position
 *        in sub-sequence order; otherwise LH_ERROR_INVALID_VALUE and nothing is written (on a
 *        ring, the rank's peers then return LH_ERROR_COMMUNICATION). The CUDA backend trusts
 *        `saved` (docs/abi.md: how it will check it without a host synchronisation).
 * Every element of dq, dk, dv is written (not accumulated). */
LH_API lh_status lh_backward(lh_plan *plan, const void *q, const void *k, const void *v,
                             const void *out, const void *dout, const void *saved, void *dq,
                             void *dk, void *dv, void *workspace, void *stream);

/* ---------------------------------------------------------------------------------------------
 * Stage entry points (Lighthouse mode), for frameworks with their own scorer or attention.
 * `workspace` is LH_QUERY_STAGE_WORKSPACE_BYTES bytes (NULL allowed when 0).
 * ------------------------------------------------------------------------------------------- */

/* Norm scores of the pyramid, fp32: scores_q [B, H, S_total] from q, scores_k [B, Hkv, S_total]
 * from k (level 0 = per-token L2 norm, level l = max over its window). Plans of LH_SCORER_NORM;
 * the dilated scorer also reads v (lh_scores_qkv), and an external plan has no scorer
 * (LH_ERROR_UNSUPPORTED for both). */
LH_API lh_status lh_scores(lh_plan *plan, const void *q, const void *k, float *scores_q,
                           float *scores_k, void *workspace, void *stream);

/* The scores of the plan's scorer (LH_PARAM_SCORER), exactly what lh_forward's first stage
 * computes, in lh_scores' layout: level 0 = the scorer's per-token score (NORM: ||q[t]||, ||k[t]||;
 * DILATED: ||o_qk[t]||, ||o_kq[t]||), level l = max over its window. v is read by the dilated
 * scorer (NULL allowed for NORM, which reads none). LH_SCORER_EXTERNAL plans: LH_ERROR_UNSUPPORTED
 * (their scores are the caller's). */
LH_API lh_status lh_scores_qkv(lh_plan *plan, const void *q, const void *k, const void *v,
                               float *scores_q, float *scores_k, void *workspace, void *stream);

/* Selection on caller-supplied fp32 scores: scores_q [B, H, S_total] ranks set A, scores_k
 * [B, Hkv, S_total] set B (query head h reads kv head h / (H/Hkv)). Writes indices
 * [B, H, S_sel]: pyramid positions (level l entry i is at off_l + i) in sub-sequence order. */
LH_API lh_status lh_select(lh_plan *plan, const float *scores_q, const float *scores_k,
                           int32_t *indices, void *workspace, void *stream);

/* Gathers the sub-sequence: q_sel [B, H, S_sel, D], k_sel and v_sel [B, H, S_sel, D] (kv taken
 * from each query head's kv head), pooled entries averaged, in the plan's dtype. */
LH_API lh_status lh_gather(lh_plan *plan, const void *q, const void *k, const void *v,
                           const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                           void *workspace, void *stream);

/* Scatters o_sel [B, H, S_sel, D] back to out (plan layout, every element written): each entry
 * is added to its window shifted right by its width minus one; untouched tokens are 0. */
LH_API lh_status lh_scatter(lh_plan *plan, const int32_t *indices, const void *o_sel, void *out,
                            void *workspace, void *stream);

/* ---------------------------------------------------------------------------------------------
 * The attention step on its own (both modes, with or without a ring).
 *
 * The sub-sequence tensors are chunk-major: [C, B, H, S_c, D] in the plan's dtype, where
 * C = LH_QUERY_CHUNKS and S_c = LH_QUERY_SUBSEQ_LEN / C (Lighthouse: the gathered entries of each
 * chunk in sub-sequence order; dense: the chunk's tokens). k_sel and v_sel hold, for every query
 * head, the entries of its kv head (as lh_gather writes them). lse is [C, B, H, S_c] fp32: the
 * natural log of each row's softmax denominator over scale * q.k. On a ring, chunk c attends fully
 * to the entries of every earlier chunk of the whole sequence and causally to its own; without a
 * ring this is causal attention over the sub-sequence.
 * `workspace` is LH_QUERY_ATTENTION_WORKSPACE_BYTES bytes. These run the library's own attention
 * (the built-in ring on a ring), whatever hooks are set: a hook may call them.
 * ------------------------------------------------------------------------------------------- */

LH_API lh_status lh_attention_forward(lh_plan *plan, const void *q_sel, const void *k_sel,
                                      const void *v_sel, void *o_sel, float *lse, void *workspace,
                                      void *stream);

/* Gradients of the attention step: given do_sel (the gradient of o_sel), writes dq_sel, dk_sel,
 * dv_sel [C, B, H, S_c, D] (dk_sel / dv_sel per query head: not summed over GQA groups). */
LH_API lh_status lh_attention_backward(lh_plan *plan, const void *q_sel, const void *k_sel,
                                       const void *v_sel, const void *o_sel, const float *lse,
                                       const void *do_sel, void *dq_sel, void *dk_sel,
                                       void *dv_sel, void *workspace, void *stream);

/* ---------------------------------------------------------------------------------------------
 * Context parallelism: one sequence over several ranks (docs/spec.md section 8)
 *
 * With a ring of W ranks the sequence is cut into 2W chunks; rank r holds chunks r and 2W-1-r.
 * A plan bound to a ring takes SEQ_LEN = the whole N, and its q, k, v, out, dout, dq, dk, dv are
 * this rank's shard: LH_QUERY_LOCAL_SEQ_LEN = N / W tokens, chunk r then chunk 2W-1-r, in the
 * plan's layout. Pyramid, selection, gather and scatter run per chunk as if each chunk were a whole
 * sequence of N/(2W) tokens with TOPK/(2W); attention runs over all ranks' sub-sequences as
 * causal ring attention. Every rank of a ring must call lh_forward (and lh_backward) with plans of
 * the same configuration; the stage entry points (lh_scores, lh_select, lh_gather, lh_scatter)
 * take plans without a ring.
 * ------------------------------------------------------------------------------------------- */

typedef struct lh_ring lh_ring;

/* A ring of `world` ranks inside this process (one plan per rank, each run from its own thread, all
 * of one backend; on CUDA the ranks' buffers may live on one device or several). Data moves by
 * device-to-device copies (CUDA) or memcpy (CPU); ranks meet at host-side rendezvous inside the
 * calls, so the W plans' calls must run concurrently. A rank waits for the others at most
 * LIGHTHOUSE_RING_TIMEOUT_S seconds (read at lh_plan_finalize: default 120, "inf" for no limit;
 * a value that is no positive number fails finalize), then the ring fails with
 * LH_ERROR_COMMUNICATION. The first rendezvous after a plan was finalized compares the plans of
 * all ranks: plans of different configurations (layout, scale, heads, head dim, pooling, ...)
 * fail every rank with LH_ERROR_COMMUNICATION and a sentence naming the parameter. A failure
 * aborts the ring for good: destroy its plans and the ring, and make new ones. */
LH_API lh_status lh_ring_create_local(int world, lh_ring **out_ring);

/* A ring over NCCL on the caller's communicator (an ncclComm_t, passed as a pointer): world and
 * rank come from it. NCCL is loaded (dlopen) when first needed. CUDA contexts only. */
LH_API lh_status lh_ring_create_nccl(lh_context *context, void *nccl_comm, lh_ring **out_ring);

/* Writes a new 128-byte NCCL unique id into `unique_id` (one rank makes it and shares it). An id
 * serves one communicator: make a new one for each lh_ring_create_nccl_from_id round (NCCL's
 * bootstrap root stops once every rank has joined; a reused id fails with LH_ERROR_COMMUNICATION). */
LH_API lh_status lh_nccl_get_unique_id(lh_context *context, void *unique_id);

/* A ring over an NCCL communicator the library creates (and destroys with the ring) from a unique
 * id of lh_nccl_get_unique_id, this process's rank and the world size. Collective: every rank
 * calls it at the same time. */
LH_API lh_status lh_ring_create_nccl_from_id(lh_context *context, const void *unique_id, int rank,
                                             int world, lh_ring **out_ring);

/* Destroys a ring. Plans bound to it must be destroyed first. NULL is a no-op (LH_OK). */
LH_API lh_status lh_ring_destroy(lh_ring *ring);

/* Binds a plan (before finalize) to `ring` as rank `rank` (for an NCCL ring: the communicator's
 * own rank). The plan then runs context-parallel as described above. A rank of a local ring has
 * one live plan: binding a second is LH_ERROR_INVALID_VALUE (use one plan for every call of the
 * rank; a plan keeps no state between calls besides the caller's `saved`). */
LH_API lh_status lh_plan_set_ring(lh_plan *plan, lh_ring *ring, int rank);

/* Attention hooks: a framework's own attention step (its own ring, say) in place of the library's.
 * They receive the gathered local sub-sequence in the layout of lh_attention_forward, on the
 * plan's stream, and must fill o_sel and lse (backward: dq_sel, dk_sel, dv_sel) completely before
 * work later queued on `stream` runs. They return LH_OK or an error status, which the calling
 * lh_forward / lh_backward returns. Query the plan (LH_QUERY_CHUNKS, LH_QUERY_SUBSEQ_LEN, ...) for
 * sizes. */
typedef lh_status (*lh_attention_forward_hook)(void *user_data, lh_plan *plan, const void *q_sel,
                                               const void *k_sel, const void *v_sel, void *o_sel,
                                               float *lse, void *stream);
typedef lh_status (*lh_attention_backward_hook)(void *user_data, lh_plan *plan, const void *q_sel,
                                                const void *k_sel, const void *v_sel,
                                                const void *o_sel, const float *lse,
                                                const void *do_sel, void *dq_sel, void *dk_sel,
                                                void *dv_sel, void *stream);

/* Sets both hooks (both non-NULL), or clears them (both NULL), before finalize. */
LH_API lh_status lh_plan_set_attention_hooks(lh_plan *plan, lh_attention_forward_hook forward,
                                             lh_attention_backward_hook backward,
                                             void *user_data);

#ifdef __cplusplus
}
#endif

#endif /* LIGHTHOUSE_H */
