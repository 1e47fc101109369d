/* ring_local.c - the rendezvous of a ring whose ranks are threads of one process.
 *
 * A round: every rank publishes what its peers need (a buffer pointer and a backend-specific
 * companion, e.g. a CUDA event recorded after the buffer is ready) and waits until all ranks have
 * published. Rounds are counted by a generation number, so a fast rank that enters the next round
 * cannot disturb the readers of the current one: it blocks until the round it entered is complete,
 * and a publication is only overwritten by the rank that owns it. Backends build send/receive on
 * top (runtime/cpu and runtime/cuda). A rank that fails aborts the ring so that no peer waits for
 * it forever. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "runtime.h"

static double ring_timeout_s(void) {
    const char *env = getenv("LIGHTHOUSE_RING_TIMEOUT_S");
    double t = env ? atof(env) : 0.0;
    return t > 0.0 ? t : 120.0;
}

lh_status lh_ring_local_exchange(lh_ring_info *ring, int rank, const void *ptr, void *aux,
                                 uint64_t *round) {
    pthread_mutex_lock(&ring->mutex);
    if (ring->aborted) {
        pthread_mutex_unlock(&ring->mutex);
        return lh_fail(LH_ERROR_COMMUNICATION, "ring rendezvous: the ring was aborted by a failing rank");
    }
    /* Round g writes the slots of parity g % 2. A rank can publish for g+1 while a slower peer
     * still reads round g (other parity), but not for g+2: that round cannot begin before every
     * rank, the slow reader included, has entered g+1, i.e. finished reading round g. */
    uint64_t gen = ring->generation;
    ring->slot_ptr[gen & 1][rank] = ptr;
    ring->slot_aux[gen & 1][rank] = aux;
    *round = gen;
    if (++ring->arrived == ring->world) {
        ring->arrived = 0;
        ring->generation++;
        pthread_cond_broadcast(&ring->cond);
        pthread_mutex_unlock(&ring->mutex);
        return LH_OK;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    double t = ring_timeout_s();
    deadline.tv_sec += (time_t)t;
    deadline.tv_nsec += (long)((t - (double)(time_t)t) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000L; }
    int rc = 0;
    while (ring->generation == gen && !ring->aborted && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&ring->cond, &ring->mutex, &deadline);
    lh_status st = LH_OK;
    if (ring->generation == gen) {
        int arrived = ring->arrived;
        ring->aborted = 1;
        pthread_cond_broadcast(&ring->cond);
        st = rc == ETIMEDOUT
                 ? lh_fail(LH_ERROR_COMMUNICATION,
                           "ring rendezvous: only %d of %d ranks arrived within %.0f s (every rank "
                           "of a local ring must run its call concurrently, from its own thread)",
                           arrived, ring->world, t)
                 : lh_fail(LH_ERROR_COMMUNICATION,
                           "ring rendezvous: the ring was aborted by a failing rank");
    }
    pthread_mutex_unlock(&ring->mutex);
    return st;
}

void lh_ring_local_peer(lh_ring_info *ring, uint64_t round, int peer, const void **ptr, void **aux) {
    pthread_mutex_lock(&ring->mutex);
    if (ptr) *ptr = ring->slot_ptr[round & 1][peer];
    if (aux) *aux = ring->slot_aux[round & 1][peer];
    pthread_mutex_unlock(&ring->mutex);
}

void lh_ring_local_abort(lh_ring_info *ring) {
    pthread_mutex_lock(&ring->mutex);
    ring->aborted = 1;
    pthread_cond_broadcast(&ring->cond);
    pthread_mutex_unlock(&ring->mutex);
}
