/*
 * ffi_internal.h - the handles behind the opaque types of lighthouse.h, shared by ffi/api_*.c.
 * Nothing outside ffi/ sees these structs; backends see only lh_config and their own state.
 */
#ifndef LH_FFI_INTERNAL_H
#define LH_FFI_INTERNAL_H

#include <stdbool.h>

#include "lighthouse.h"
#include "runtime.h"

struct lh_context {
    const lh_backend_ops *ops;
    void *state;                 /* the backend's context state */
    int device;
    lh_context_options options;
    /* Plans not yet destroyed (the context outlives them). Atomic: plans of one context may be
     * created and destroyed on different threads at once. */
    _Atomic int64_t live_plans;
};

struct lh_plan {
    lh_context *context;
    lh_config cfg;               /* parameters as set (defaults applied), derived fields at finalize */
    bool scale_set;              /* SOFTMAX_SCALE given explicitly (else 1/sqrt(HEAD_DIM)) */
    uint32_t set_mask;           /* bit i: lh_param i was set */
    bool finalized;
    void *state;                 /* the backend's plan state, after finalize */
    lh_plan_sizes sizes;
};

/* A ring handle: the state its plans share (runtime.h) and, for NCCL, the backend that owns it. */
struct lh_ring {
    lh_ring_info info;
    const lh_backend_ops *nccl_ops;  /* NCCL rings: the backend that set the NCCL fields */
    lh_context *context;             /* NCCL rings: the context they were made with */
};

/* Releases the ring rank of a plan that is destroyed (api_ring.c); nothing without a ring. */
void lh_ring_unbind(lh_plan *plan);

/* KV_HEADS as set, else HEADS (its default). */
int64_t lh_plan_kv_heads(const lh_plan *plan);

/* The configuration lh_plan_finalize would hand the backend (validated, derived), without
 * finalizing the plan: for lh_plan_precompile_device. A finalized plan's own. */
lh_status lh_plan_derived_config(const lh_plan *plan, lh_config *out);

/* Shared argument checks; each returns LH_OK or fails with a sentence. */
lh_status lh_check_plan_ready(const lh_plan *plan, const char *fn);

#endif /* LH_FFI_INTERNAL_H */
