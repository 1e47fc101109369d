/*
 * runtime.h - what the runtime offers the ffi layer: the validated configuration of a plan, the
 * error channel, and the backends (CPU reference, CUDA) behind one table of functions.
 *
 * The ffi layer validates every argument before it calls a backend, so a backend may assume:
 * non-NULL pointers, a configuration that obeys SPEC.md, buffers of the sizes the plan reported.
 * A backend still checks what only it can know (device pointers, launch results).
 */
#ifndef LH_RUNTIME_H
#define LH_RUNTIME_H

#include <stdarg.h>
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

/* ---- the validated configuration of a plan ------------------------------------------------ */

typedef struct lh_config {
    int64_t batch, seq_len, heads, kv_heads, head_dim;
    lh_dtype dtype;
    lh_layout layout;
    lh_mode mode;
    int64_t levels, pooling, topk;
    double scale;

    /* Derived by lh_config_derive (Lighthouse mode; in dense mode s_total = s_sel = seq_len). */
    int64_t level_len[LH_MAX_LEVELS];    /* n_l = N / p^l */
    int64_t level_off[LH_MAX_LEVELS];    /* off_l = n_0 + ... + n_{l-1} */
    int64_t level_width[LH_MAX_LEVELS];  /* f_l = p^l */
    int64_t s_total;                     /* sum of n_l */
    int64_t s_sel;                       /* n_c + (L-1) * topk * p */
    int64_t tiles;                       /* T = topk / 128 */
    int64_t tile_len;                    /* coarsest entries per tile, n_c / T */
} lh_config;

/* Fills the derived fields of a configuration whose parameters already passed validation. */
void lh_config_derive(lh_config *cfg);

/* Bytes of one element of `dtype`. */
size_t lh_dtype_size(lh_dtype dtype);

/* Element offset of (b, t, h, d) in a [B,N,H,D] or [B,H,N,D] tensor with `heads` heads. */
static inline int64_t lh_tensor_offset(const lh_config *cfg, int64_t heads, int64_t b, int64_t t,
                                       int64_t h, int64_t d) {
    if (cfg->layout == LH_LAYOUT_BNHD)
        return ((b * cfg->seq_len + t) * heads + h) * cfg->head_dim + d;
    return ((b * heads + h) * cfg->seq_len + t) * cfg->head_dim + d;
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
} lh_plan_sizes;

/* ---- backends ------------------------------------------------------------------------------ */

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

    lh_status (*forward)(void *plan_state, const void *q, const void *k, const void *v, void *out,
                         void *saved, void *workspace, void *stream);
    lh_status (*backward)(void *plan_state, const void *q, const void *k, const void *v,
                          const void *out, const void *dout, const void *saved, void *dq,
                          void *dk, void *dv, void *workspace, void *stream);

    lh_status (*scores)(void *plan_state, const void *q, const void *k, float *scores_q,
                        float *scores_k, void *workspace, void *stream);
    lh_status (*select)(void *plan_state, const float *scores_q, const float *scores_k,
                        int32_t *indices, void *workspace, void *stream);
    lh_status (*gather)(void *plan_state, const void *q, const void *k, const void *v,
                        const int32_t *indices, void *q_sel, void *k_sel, void *v_sel,
                        void *workspace, void *stream);
    lh_status (*scatter)(void *plan_state, const int32_t *indices, const void *o_sel, void *out,
                         void *workspace, void *stream);
} lh_backend_ops;

/* The CPU reference backend (runtime/cpu_backend.c). */
extern const lh_backend_ops lh_cpu_backend_ops;

/* The CUDA backend (runtime/cuda_backend.c); its probe fails cleanly where no GPU exists. */
extern const lh_backend_ops lh_cuda_backend_ops;

#endif /* LH_RUNTIME_H */
