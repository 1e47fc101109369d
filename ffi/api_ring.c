/* api_ring.c - rings for context parallelism (docs/spec.md section 8) and the attention hooks. */
#include <stdlib.h>
#include <string.h>

#include "ffi_internal.h"

static lh_ring *ring_alloc(lh_ring_kind kind, int world) {
    lh_ring *ring = calloc(1, sizeof *ring);
    if (!ring) return NULL;
    ring->info.kind = kind;
    ring->info.world = world;
    ring->info.backend = LH_BACKEND_AUTO;
    lh_ring_local_init(&ring->info);
    return ring;
}

static void ring_free(lh_ring *ring) {
    lh_ring_local_fini(&ring->info);
    free(ring);
}

static lh_status check_world(const char *fn, int world) {
    if (world < 1 || world > LH_RING_MAX_WORLD)
        return lh_fail(LH_ERROR_INVALID_VALUE, "%s: world must be in 1..%d (got %d)", fn,
                       LH_RING_MAX_WORLD, world);
    return LH_OK;
}

LH_API lh_status lh_ring_create_local(int world, lh_ring **out_ring) {
    lh_clear_error();
    if (!out_ring) return lh_fail(LH_ERROR_NULL_POINTER, "lh_ring_create_local: out_ring is NULL");
    lh_status st = check_world("lh_ring_create_local", world);
    if (st != LH_OK) return st;
    lh_ring *ring = ring_alloc(LH_RING_LOCAL, world);
    if (!ring) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "lh_ring_create_local: out of host memory");
    *out_ring = ring;
    return LH_OK;
}

static lh_status nccl_ops_of(lh_context *context, const char *fn, const lh_backend_ops **ops) {
    if (!context) return lh_fail(LH_ERROR_NULL_POINTER, "%s: context is NULL", fn);
    if (!context->ops->nccl_ring_init || !context->ops->nccl_unique_id)
        return lh_fail(LH_ERROR_UNSUPPORTED,
                       "%s: NCCL rings need a CUDA context (this context runs the %s backend)", fn,
                       context->ops->name);
    *ops = context->ops;
    return LH_OK;
}

LH_API lh_status lh_nccl_get_unique_id(lh_context *context, void *unique_id) {
    lh_clear_error();
    const lh_backend_ops *ops = NULL;
    lh_status st = nccl_ops_of(context, "lh_nccl_get_unique_id", &ops);
    if (st != LH_OK) return st;
    if (!unique_id) return lh_fail(LH_ERROR_NULL_POINTER, "lh_nccl_get_unique_id: unique_id is NULL");
    st = ops->nccl_unique_id(context->state, unique_id);
    return st == LH_OK ? st : lh_fail_context(st, "lh_nccl_get_unique_id");
}

static lh_status create_nccl(const char *fn, lh_context *context, void *comm, const void *unique_id,
                             int rank, int world, lh_ring **out_ring) {
    const lh_backend_ops *ops = NULL;
    lh_status st = nccl_ops_of(context, fn, &ops);
    if (st != LH_OK) return st;
    if (!out_ring) return lh_fail(LH_ERROR_NULL_POINTER, "%s: out_ring is NULL", fn);
    lh_ring *ring = ring_alloc(LH_RING_NCCL, world);
    if (!ring) return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
    ring->info.backend = LH_BACKEND_CUDA;
    st = ops->nccl_ring_init(context->state, &ring->info, comm, unique_id, rank, world);
    if (st != LH_OK) {
        ring_free(ring);
        return lh_fail_context(st, fn);
    }
    if (ring->info.world < 1 || ring->info.world > LH_RING_MAX_WORLD) {
        int w = ring->info.world;
        if (ring->info.nccl_release) ring->info.nccl_release(&ring->info);
        ring_free(ring);
        return lh_fail(LH_ERROR_UNSUPPORTED, "%s: the communicator has %d ranks; at most %d are supported",
                       fn, w, LH_RING_MAX_WORLD);
    }
    ring->nccl_ops = ops;
    ring->context = context;
    *out_ring = ring;
    return LH_OK;
}

LH_API lh_status lh_ring_create_nccl(lh_context *context, void *nccl_comm, lh_ring **out_ring) {
    lh_clear_error();
    if (!nccl_comm) return lh_fail(LH_ERROR_NULL_POINTER, "lh_ring_create_nccl: nccl_comm is NULL");
    return create_nccl("lh_ring_create_nccl", context, nccl_comm, NULL, -1, 0, out_ring);
}

LH_API lh_status lh_ring_create_nccl_from_id(lh_context *context, const void *unique_id, int rank,
                                             int world, lh_ring **out_ring) {
    lh_clear_error();
    const char *fn = "lh_ring_create_nccl_from_id";
    if (!unique_id) return lh_fail(LH_ERROR_NULL_POINTER, "%s: unique_id is NULL", fn);
    lh_status st = check_world(fn, world);
    if (st != LH_OK) return st;
    if (rank < 0 || rank >= world)
        return lh_fail(LH_ERROR_INVALID_VALUE, "%s: rank must be in 0..world-1 = 0..%d (got %d)", fn,
                       world - 1, rank);
    return create_nccl(fn, context, NULL, unique_id, rank, world, out_ring);
}

LH_API lh_status lh_ring_destroy(lh_ring *ring) {
    lh_clear_error();
    if (!ring) return LH_OK;
    int64_t bound = ring->info.bound_plans;
    if (bound > 0)
        return lh_fail(LH_ERROR_BAD_STATE,
                       "lh_ring_destroy: %lld plan(s) bound to this ring are still alive; destroy "
                       "them first", (long long)bound);
    if (ring->info.nccl_release) ring->info.nccl_release(&ring->info);
    ring_free(ring);
    return LH_OK;
}

LH_API lh_status lh_plan_set_ring(lh_plan *plan, lh_ring *ring, int rank) {
    lh_clear_error();
    const char *fn = "lh_plan_set_ring";
    if (!plan) return lh_fail(LH_ERROR_NULL_POINTER, "%s: plan is NULL", fn);
    if (!ring) return lh_fail(LH_ERROR_NULL_POINTER, "%s: ring is NULL", fn);
    if (plan->finalized)
        return lh_fail(LH_ERROR_BAD_STATE, "%s: the plan is finalized; bind it before lh_plan_finalize", fn);
    if (plan->cfg.ring)
        return lh_fail(LH_ERROR_BAD_STATE, "%s: the plan is already bound to a ring", fn);
    lh_ring_info *info = &ring->info;
    if (rank < 0 || rank >= info->world)
        return lh_fail(LH_ERROR_INVALID_VALUE, "%s: rank must be in 0..%d for a ring of %d (got %d)",
                       fn, info->world - 1, info->world, rank);
    if (info->kind == LH_RING_NCCL && rank != info->nccl_rank)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "%s: an NCCL ring's rank is its communicator's: %d (got %d)", fn,
                       info->nccl_rank, rank);
    lh_backend mine = plan->context->ops->kind;
    uint64_t bit = UINT64_C(1) << rank;
    pthread_mutex_lock(&info->mutex);
    lh_backend theirs = info->backend;
    /* A local ring's rendezvous is keyed by rank: one live plan per rank. (An NCCL ring's rank is
     * the process's; its plans' calls are ordered on the communicator.) */
    bool taken = info->kind == LH_RING_LOCAL && (info->bound & bit);
    bool other_backend = theirs != LH_BACKEND_AUTO && theirs != mine;
    if (!taken && !other_backend) {
        if (theirs == LH_BACKEND_AUTO) info->backend = mine;
        if (info->kind == LH_RING_LOCAL) info->bound |= bit;
    }
    pthread_mutex_unlock(&info->mutex);
    if (taken)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "%s: rank %d of this local ring is already bound to another live plan; a "
                       "rank has one plan (use it for every call of that rank, or destroy it "
                       "before binding another)", fn, rank);
    if (other_backend)
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "%s: every plan of a ring runs on one backend (the ring is %s, this plan %s)",
                       fn, theirs == LH_BACKEND_CUDA ? "CUDA" : "CPU",
                       mine == LH_BACKEND_CUDA ? "CUDA" : "CPU");
    plan->cfg.ring = info;
    plan->cfg.cp_world = info->world;
    plan->cfg.cp_rank = rank;
    info->bound_plans++;
    return LH_OK;
}

void lh_ring_unbind(lh_plan *plan) {
    lh_ring_info *info = plan->cfg.ring;
    if (!info) return;
    if (info->kind == LH_RING_LOCAL) lh_ring_local_leave(info, (int)plan->cfg.cp_rank);
    info->bound_plans--;
}

LH_API lh_status lh_plan_set_attention_hooks(lh_plan *plan, lh_attention_forward_hook forward,
                                             lh_attention_backward_hook backward, void *user_data) {
    lh_clear_error();
    const char *fn = "lh_plan_set_attention_hooks";
    if (!plan) return lh_fail(LH_ERROR_NULL_POINTER, "%s: plan is NULL", fn);
    if (plan->finalized)
        return lh_fail(LH_ERROR_BAD_STATE, "%s: the plan is finalized; set hooks before lh_plan_finalize", fn);
    if ((forward == NULL) != (backward == NULL))
        return lh_fail(LH_ERROR_NULL_POINTER,
                       "%s: set both hooks (forward and backward) or clear both (got %s forward, "
                       "%s backward)", fn, forward ? "a" : "no", backward ? "a" : "no");
    plan->cfg.forward_hook = forward;
    plan->cfg.backward_hook = backward;
    plan->cfg.hook_user_data = user_data;
    return LH_OK;
}
