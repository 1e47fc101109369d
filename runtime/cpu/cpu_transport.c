/*
 * cpu_transport.c - the transport of a local ring: ranks are threads of one process, so a shift
 * is a memcpy from the predecessor's buffer between two rendezvous of runtime/ring_local.c.
 *
 * Round 1 publishes every rank's send buffer (and its size, to catch ranks whose plans disagree);
 * after it each rank copies from its predecessor. Round 2 is only a barrier: once it completes,
 * every successor has finished reading, so the sender may overwrite its buffer.
 */
#include <string.h>

#include "cpu_attention.h"

static lh_status local_shift(lh_cpu_transport *self, const void *send, void *recv, size_t bytes) {
    lh_ring_info *ring = self->state;
    uint64_t round;
    lh_status st = lh_ring_local_exchange(ring, self->rank, send, (void *)(uintptr_t)bytes, &round);
    if (st != LH_OK)
        return st;
    const void *src = NULL;
    void *aux = NULL;
    int prev = (self->rank + self->world - 1) % self->world;
    lh_ring_local_peer(ring, round, prev, &src, &aux);
    if ((size_t)(uintptr_t)aux != bytes || !src) {
        lh_ring_local_abort(ring);
        return lh_fail(LH_ERROR_COMMUNICATION,
                       "ring shift: rank %d sends %zu bytes but rank %d expects %zu (every rank of "
                       "a ring must run plans of the same configuration)",
                       prev, (size_t)(uintptr_t)aux, self->rank, bytes);
    }
    memcpy(recv, src, bytes);
    return lh_ring_local_exchange(ring, self->rank, NULL, NULL, &round);
}

static void local_abort(lh_cpu_transport *self) { lh_ring_local_abort(self->state); }

void lh_cpu_transport_local(lh_ring_info *ring, int rank, lh_cpu_transport *out) {
    out->rank = rank;
    out->world = ring->world;
    out->state = ring;
    out->shift = local_shift;
    out->abort = local_abort;
}
