/* cuda_transport.c - the local (threads of one process) and NCCL transports of ring attention. */
#include "cuda_transport.h"

#include <string.h>

lh_status cuda_transport_init(cuda_transport *t, const lh_cu_api *cu, lh_ring_info *ring,
                              int rank) {
    memset(t, 0, sizeof *t);
    t->kind = ring->kind;
    t->world = ring->world;
    t->rank = rank;
    t->cu = cu;
    t->ring = ring;
    if (ring->kind == LH_RING_NCCL) {
        lh_status st = lh_nccl_load(&t->nccl);
        if (st != LH_OK) return st;
        t->comm = ring->nccl_comm;
        return lh_cu_check(cu->MemAlloc(&t->ids, (size_t)t->world * sizeof(lh_config_id)),
                           "allocating the ring's configuration exchange (cuMemAlloc)");
    }
    /* Events without timing: cheaper to record and to wait on. */
    lh_status st = lh_cu_check(cu->EventCreate(&t->ready, CU_EVENT_DISABLE_TIMING),
                               "creating the ring's ready event");
    if (st == LH_OK)
        st = lh_cu_check(cu->EventCreate(&t->done, CU_EVENT_DISABLE_TIMING),
                         "creating the ring's done event");
    if (st != LH_OK) cuda_transport_destroy(t);
    return st;
}

void cuda_transport_destroy(cuda_transport *t) {
    if (t->ready) t->cu->EventDestroy(t->ready);
    if (t->done) t->cu->EventDestroy(t->done);
    if (t->ids) t->cu->MemFree(t->ids);
    t->ready = t->done = NULL;
    t->ids = 0;
}

lh_status cuda_transport_confirm(cuda_transport *t, const lh_config_id *id, CUstream comm) {
    const lh_cu_api *cu = t->cu;
    const lh_nccl_api *nc = t->nccl;
    const size_t n = sizeof *id;
    lh_config_id all[LH_RING_MAX_WORLD];
    /* Every slot starts as this rank's own: a slot that no peer fills compares equal. */
    for (int r = 0; r < t->world; r++) all[r] = *id;
    char *ids = (char *)(uintptr_t)t->ids;
    lh_status st = lh_cu_check(cu->MemcpyAsync(t->ids, (CUdeviceptr)(uintptr_t)all,
                                               (size_t)t->world * n, comm),
                               "uploading the configuration (cuMemcpyAsync)");
    if (st == LH_OK) st = lh_nccl_check(nc, nc->GroupStart(), "ncclGroupStart");
    if (st == LH_OK) {
        for (int r = 0; r < t->world && st == LH_OK; r++) {
            if (r == t->rank) continue;
            st = lh_nccl_check(nc, nc->Send(ids + (size_t)t->rank * n, n, LH_NCCL_UINT8, r,
                                            t->comm, comm),
                               "ncclSend of the configuration");
            if (st == LH_OK)
                st = lh_nccl_check(nc, nc->Recv(ids + (size_t)r * n, n, LH_NCCL_UINT8, r, t->comm,
                                                comm),
                                   "ncclRecv of a peer's configuration");
        }
        lh_status end = lh_nccl_check(nc, nc->GroupEnd(), "ncclGroupEnd");
        if (st == LH_OK) st = end;
    }
    if (st == LH_OK)
        st = lh_cu_check(cu->MemcpyAsync((CUdeviceptr)(uintptr_t)all, t->ids,
                                         (size_t)t->world * n, comm),
                         "downloading the ranks' configurations (cuMemcpyAsync)");
    /* Also on failure: nothing may still write `all` once it goes out of scope. */
    lh_status sync = lh_cu_check(cu->StreamSynchronize(comm),
                                 "waiting for the configuration exchange (cuStreamSynchronize)");
    if (st == LH_OK) st = sync;
    if (st != LH_OK) return lh_fail_context(st, "comparing the ranks' configurations");
    char what[256];
    /* Against rank 0's, as the local ring compares: every rank reports the same difference. */
    for (int r = 1; r < t->world; r++) {
        if (!lh_config_id_diff(&all[0], 0, &all[r], r, what, sizeof what)) continue;
        return lh_fail(LH_ERROR_COMMUNICATION,
                       "NCCL ring: the plans of this ring differ: %s (every rank of a ring runs "
                       "plans of the same configuration)",
                       what);
    }
    return LH_OK;
}

void cuda_transport_abort(cuda_transport *t) {
    if (t->kind == LH_RING_LOCAL) lh_ring_local_abort(t->ring);
}

/* The local protocol, two rendezvous per exchange:
 *  1. publish my send buffers and an event recorded when they are ready; copy the previous
 *     rank's buffers into mine after its event (on my communication stream);
 *  2. publish an event recorded after my copies; my stream waits for the next rank's, so
 *     nothing later on my stream (e.g. a receive into what I just sent) overtakes its reads.
 * Each rank reads its peers' publications of a round before it enters the next rendezvous,
 * which is what ring_local.c's double buffering requires. */
static lh_status local_exchange(cuda_transport *t, const cuda_xfer *x, int n, CUstream comm) {
    const lh_cu_api *cu = t->cu;
    int prev = (t->rank + t->world - 1) % t->world, next = (t->rank + 1) % t->world;
    lh_status st = lh_cu_check(cu->EventRecord(t->ready, comm), "recording the ring's ready event");
    if (st != LH_OK) {
        lh_ring_local_abort(t->ring);
        return st;
    }
    uint64_t round;
    st = lh_ring_local_exchange(t->ring, t->rank, x, t->ready, &round);
    if (st != LH_OK) return st;
    const void *peer_ptr = NULL;
    void *peer_aux = NULL;
    lh_ring_local_peer(t->ring, round, prev, &peer_ptr, &peer_aux);
    const cuda_xfer *px = peer_ptr;
    st = lh_cu_check(cu->StreamWaitEvent(comm, (CUevent)peer_aux, 0),
                     "waiting for the previous rank's buffers (cuStreamWaitEvent)");
    for (int i = 0; i < n && st == LH_OK; i++) {
        if (px[i].bytes != x[i].bytes) {
            st = lh_fail(LH_ERROR_COMMUNICATION,
                         "ring exchange: rank %d sends %zu bytes in buffer %d but rank %d expects "
                         "%zu (every rank of a ring needs plans of one configuration)",
                         prev, px[i].bytes, i, t->rank, x[i].bytes);
            break;
        }
        st = lh_cu_check(cu->MemcpyAsync((CUdeviceptr)(uintptr_t)x[i].recv,
                                         (CUdeviceptr)(uintptr_t)px[i].send, x[i].bytes, comm),
                         "copying the previous rank's buffer (cuMemcpyAsync)");
    }
    if (st == LH_OK) st = lh_cu_check(cu->EventRecord(t->done, comm), "recording the ring's done event");
    if (st != LH_OK) {
        lh_ring_local_abort(t->ring);
        return st;
    }
    st = lh_ring_local_exchange(t->ring, t->rank, NULL, t->done, &round);
    if (st != LH_OK) return st;
    lh_ring_local_peer(t->ring, round, next, NULL, &peer_aux);
    st = lh_cu_check(cu->StreamWaitEvent(comm, (CUevent)peer_aux, 0),
                     "waiting for the next rank's copies (cuStreamWaitEvent)");
    if (st != LH_OK) lh_ring_local_abort(t->ring);
    return st;
}

static lh_status nccl_exchange(cuda_transport *t, const cuda_xfer *x, int n, CUstream comm) {
    const lh_nccl_api *nc = t->nccl;
    int prev = (t->rank + t->world - 1) % t->world, next = (t->rank + 1) % t->world;
    lh_status st = lh_nccl_check(nc, nc->GroupStart(), "ncclGroupStart");
    if (st != LH_OK) return st;
    for (int i = 0; i < n && st == LH_OK; i++) {
        st = lh_nccl_check(nc, nc->Send(x[i].send, x[i].bytes, LH_NCCL_UINT8, next, t->comm, comm),
                           "ncclSend to the next rank");
        if (st == LH_OK)
            st = lh_nccl_check(nc, nc->Recv(x[i].recv, x[i].bytes, LH_NCCL_UINT8, prev, t->comm, comm),
                               "ncclRecv from the previous rank");
    }
    lh_status end = lh_nccl_check(nc, nc->GroupEnd(), "ncclGroupEnd");
    return st != LH_OK ? st : end;
}

lh_status cuda_transport_exchange(cuda_transport *t, const cuda_xfer *x, int n, CUstream comm) {
    if (n > LH_TRANSPORT_MAX_XFERS)
        return lh_fail(LH_ERROR_INTERNAL, "ring exchange of %d buffers (at most %d)", n,
                       LH_TRANSPORT_MAX_XFERS);
    return t->kind == LH_RING_NCCL ? nccl_exchange(t, x, n, comm) : local_exchange(t, x, n, comm);
}

/* ---- NCCL ring set-up ------------------------------------------------------------------------ */

lh_status cuda_nccl_unique_id(void *unique_id) {
    const lh_nccl_api *nc;
    lh_status st = lh_nccl_load(&nc);
    if (st != LH_OK) return st;
    lh_nccl_unique_id id;
    st = lh_nccl_check(nc, nc->GetUniqueId(&id), "ncclGetUniqueId");
    if (st == LH_OK) memcpy(unique_id, &id, sizeof id);
    return st;
}

static void nccl_release(lh_ring_info *ring) {
    const lh_nccl_api *nc = ring->nccl_state;
    if (ring->owns_comm && ring->nccl_comm && nc) nc->CommDestroy(ring->nccl_comm);
    ring->nccl_comm = NULL;
}

lh_status cuda_nccl_ring_init(lh_ring_info *ring, void *comm, const void *unique_id, int rank,
                              int world) {
    const lh_nccl_api *nc;
    lh_status st = lh_nccl_load(&nc);
    if (st != LH_OK) return st;
    if (!comm) {
        lh_nccl_unique_id id;
        memcpy(&id, unique_id, sizeof id);
        lh_nccl_comm c = NULL;
        st = lh_nccl_check(nc, nc->CommInitRank(&c, world, id, rank), "ncclCommInitRank");
        if (st != LH_OK) return st;
        comm = c;
        ring->owns_comm = 1;
    }
    int count = 0, me = -1;
    st = lh_nccl_check(nc, nc->CommCount(comm, &count), "ncclCommCount");
    if (st == LH_OK) st = lh_nccl_check(nc, nc->CommUserRank(comm, &me), "ncclCommUserRank");
    if (st != LH_OK) {
        if (ring->owns_comm) nc->CommDestroy(comm);
        ring->owns_comm = 0;
        return st;
    }
    ring->nccl_comm = comm;
    ring->nccl_state = (void *)nc;
    ring->nccl_release = nccl_release;
    ring->world = count;
    ring->nccl_rank = me;
    return LH_OK;
}
