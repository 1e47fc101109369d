/* ring_local.c - the rendezvous of a ring whose ranks are threads of one process.
 *
 * A round: every rank publishes what its peers need (a buffer pointer and a backend-specific
 * companion, e.g. a CUDA event recorded after the buffer is ready) and waits until all ranks have
 * published. Rounds are counted by a generation number, so a fast rank that enters the next round
 * cannot disturb the readers of the current one: it blocks until the round it entered is complete,
 * and a publication is only overwritten by the rank that owns it. A round is complete when every
 * rank (a bit per rank, not a count of arrivals) has arrived, so one plan used from two threads
 * cannot stand in for a missing rank. The first round after a rank's plan joined compares the
 * configurations of all ranks, so plans that differ fail with a sentence even where their buffers
 * happen to have equal sizes; a plan's first call compares at a round of its own
 * (lh_ring_local_confirm), since attention hooks may never meet the library's rendezvous
 * otherwise. Backends build send/receive on top (runtime/cpu and runtime/cuda). A
 * rank that fails aborts the ring so that no peer waits for it forever. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime.h"

#define DEFAULT_TIMEOUT_S 120.0
/* About 31 years: "inf" and anything longer mean no practical limit, and the deadline stays far
 * inside time_t. */
#define MAX_TIMEOUT_S 1e9

void lh_ring_local_init(lh_ring_info *ring) {
    pthread_mutex_init(&ring->mutex, NULL);
    /* Deadlines on the monotonic clock: a wall-clock step cannot end or stretch a wait. */
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ring->cond, &attr);
    pthread_condattr_destroy(&attr);
}

void lh_ring_local_fini(lh_ring_info *ring) {
    pthread_mutex_destroy(&ring->mutex);
    pthread_cond_destroy(&ring->cond);
}

lh_status lh_ring_timeout_from_env(double *seconds) {
    const char *env = getenv("LIGHTHOUSE_RING_TIMEOUT_S");
    *seconds = DEFAULT_TIMEOUT_S;
    if (!env || !*env) return LH_OK;
    char *end = NULL;
    errno = 0;
    double t = strtod(env, &end);
    /* ERANGE on overflow gives HUGE_VAL, which is clamped like "inf"; underflow gives a
     * positive tiny value or 0, which the rule below judges. */
    if (end == env || *end != '\0' || !(t > 0.0))
        return lh_fail(LH_ERROR_INVALID_VALUE,
                       "LIGHTHOUSE_RING_TIMEOUT_S = \"%s\" is not a number of seconds > 0 (unset "
                       "it for the default of %.0f s; \"inf\" waits without a limit)",
                       env, DEFAULT_TIMEOUT_S);
    *seconds = t < MAX_TIMEOUT_S ? t : MAX_TIMEOUT_S;
    return LH_OK;
}

void lh_ring_local_join(lh_ring_info *ring, int rank, const lh_config_id *id, double timeout_s) {
    pthread_mutex_lock(&ring->mutex);
    ring->id[rank] = *id;
    ring->timeout_s[rank] = timeout_s;
    ring->joined |= UINT64_C(1) << rank;
    ring->ids_checked = 0;
    pthread_mutex_unlock(&ring->mutex);
}

void lh_ring_local_leave(lh_ring_info *ring, int rank) {
    pthread_mutex_lock(&ring->mutex);
    ring->joined &= ~(UINT64_C(1) << rank);
    ring->bound &= ~(UINT64_C(1) << rank);
    pthread_mutex_unlock(&ring->mutex);
}

/* With the mutex held: marks the ring failed for everyone, keeping the first reason. */
static void abort_locked(lh_ring_info *ring, const char *reason) {
    if (!ring->aborted)
        snprintf(ring->abort_reason, sizeof ring->abort_reason, "%s", reason);
    ring->aborted = 1;
    pthread_cond_broadcast(&ring->cond);
}

static uint64_t all_ranks(int world) {
    return world >= 64 ? ~UINT64_C(0) : (UINT64_C(1) << world) - 1;
}

/* With the mutex held, every rank arrived: 0 when all ranks run plans of one configuration,
 * else the ring is aborted with a sentence that names the first difference. */
static int ids_differ(lh_ring_info *ring) {
    if (ring->ids_checked) return 0;
    char what[256];
    for (int r = 1; r < ring->world; r++)
        if (lh_config_id_diff(&ring->id[0], 0, &ring->id[r], r, what, sizeof what)) {
            char reason[sizeof ring->abort_reason];
            snprintf(reason, sizeof reason,
                     "the plans of this ring differ: %s (every rank of a ring runs plans of the "
                     "same configuration)", what);
            abort_locked(ring, reason);
            return 1;
        }
    ring->ids_checked = 1;
    return 0;
}

/* Ranks missing from the current rendezvous, as "1, 3" (at most a few). */
static void missing_ranks(const lh_ring_info *ring, char *out, size_t cap) {
    size_t used = 0;
    int listed = 0;
    out[0] = '\0';
    for (int r = 0; r < ring->world && used < cap; r++) {
        if (ring->arrived & (UINT64_C(1) << r)) continue;
        if (listed == 4) {
            snprintf(out + used, cap - used, ", ...");
            return;
        }
        int n = snprintf(out + used, cap - used, "%s%d", listed ? ", " : "", r);
        used += n > 0 ? (size_t)n : 0;
        listed++;
    }
}

static void deadline_after(double seconds, struct timespec *deadline) {
    clock_gettime(CLOCK_MONOTONIC, deadline);
    double whole = floor(seconds);
    deadline->tv_sec += (time_t)whole;
    deadline->tv_nsec += (long)((seconds - whole) * 1e9);
    if (deadline->tv_nsec >= 1000000000L) {
        deadline->tv_sec++;
        deadline->tv_nsec -= 1000000000L;
    }
}

/* With the mutex held, every rank arrived: 0 when every rank came for the same purpose (all to
 * exchange, or all to compare configurations), else the ring is aborted with a sentence. */
static int purposes_differ(lh_ring_info *ring) {
    if (ring->confirming == 0 || ring->confirming == all_ranks(ring->world)) return 0;
    int c = __builtin_ctzll(ring->confirming), x = __builtin_ctzll(~ring->confirming);
    char reason[sizeof ring->abort_reason];
    snprintf(reason, sizeof reason,
             "the ranks are out of step: rank %d compares configurations at the first call of "
             "its plan while rank %d exchanges data (every rank creates its plan of a ring at "
             "the same time and calls it in the same order)", c, x);
    abort_locked(ring, reason);
    return 1;
}

static lh_status rendezvous(lh_ring_info *ring, int rank, const void *ptr, void *aux,
                            uint64_t *round, bool confirm) {
    pthread_mutex_lock(&ring->mutex);
    uint64_t me = UINT64_C(1) << rank;
    if (!ring->aborted && (ring->arrived & me)) {
        char reason[160];
        snprintf(reason, sizeof reason,
                 "rank %d arrived twice in one rendezvous: its plan is running two calls at once "
                 "(a plan runs one call at a time, from one thread)", rank);
        abort_locked(ring, reason);
    }
    if (ring->aborted) {
        lh_status st = lh_fail(LH_ERROR_COMMUNICATION, "ring rendezvous: %s", ring->abort_reason);
        pthread_mutex_unlock(&ring->mutex);
        return st;
    }
    /* Round g writes the slots of parity g % 2. A rank can publish for g+1 while a slower peer
     * still reads round g (other parity), but not for g+2: that round cannot begin before every
     * rank, the slow reader included, has entered g+1, i.e. finished reading round g. */
    uint64_t gen = ring->generation;
    ring->slot_ptr[gen & 1][rank] = ptr;
    ring->slot_aux[gen & 1][rank] = aux;
    *round = gen;
    ring->arrived |= me;
    if (confirm) ring->confirming |= me;
    if (ring->arrived == all_ranks(ring->world)) {
        /* Plans that differ, or ranks out of step, abort the ring instead of completing the
         * round: the waiting ranks wake to the abort and its reason (no rank reads a
         * publication of a round that another rank entered for another purpose). */
        lh_status st = LH_OK;
        if (purposes_differ(ring) || ids_differ(ring)) {
            st = lh_fail(LH_ERROR_COMMUNICATION, "ring rendezvous: %s", ring->abort_reason);
        } else {
            ring->arrived = 0;
            ring->confirming = 0;
            ring->generation++;
            pthread_cond_broadcast(&ring->cond);
        }
        pthread_mutex_unlock(&ring->mutex);
        return st;
    }
    double t = ring->timeout_s[rank] > 0.0 ? ring->timeout_s[rank] : DEFAULT_TIMEOUT_S;
    struct timespec deadline;
    deadline_after(t, &deadline);
    /* Leave on completion, abort, timeout, or any other error of the wait (EINVAL from a bad
     * deadline would otherwise return at once, forever, with the mutex held). */
    int rc = 0;
    while (ring->generation == gen && !ring->aborted && rc == 0)
        rc = pthread_cond_timedwait(&ring->cond, &ring->mutex, &deadline);
    lh_status st = LH_OK;
    if (ring->aborted && ring->generation == gen) {
        st = lh_fail(LH_ERROR_COMMUNICATION, "ring rendezvous: %s", ring->abort_reason);
    } else if (ring->generation == gen) {
        char missing[64], reason[sizeof ring->abort_reason];
        missing_ranks(ring, missing, sizeof missing);
        if (rc == ETIMEDOUT)
            snprintf(reason, sizeof reason,
                     "only %d of %d ranks arrived within %g s (missing: rank %s; every rank of a "
                     "local ring must run its call concurrently, from its own thread)",
                     __builtin_popcountll(ring->arrived), ring->world, t, missing);
        else
            snprintf(reason, sizeof reason, "waiting for rank %s failed: %s", missing,
                     strerror(rc));
        st = lh_fail(LH_ERROR_COMMUNICATION, "ring rendezvous: %s", reason);
        abort_locked(ring, reason);
    }
    pthread_mutex_unlock(&ring->mutex);
    return st;
}

lh_status lh_ring_local_exchange(lh_ring_info *ring, int rank, const void *ptr, void *aux,
                                 uint64_t *round) {
    return rendezvous(ring, rank, ptr, aux, round, false);
}

lh_status lh_ring_local_confirm(lh_ring_info *ring, int rank) {
    uint64_t round;
    return rendezvous(ring, rank, NULL, NULL, &round, true);
}

void lh_ring_local_peer(lh_ring_info *ring, uint64_t round, int peer, const void **ptr, void **aux) {
    pthread_mutex_lock(&ring->mutex);
    if (ptr) *ptr = ring->slot_ptr[round & 1][peer];
    if (aux) *aux = ring->slot_aux[round & 1][peer];
    pthread_mutex_unlock(&ring->mutex);
}

void lh_ring_local_abort(lh_ring_info *ring) {
    char reason[sizeof ring->abort_reason];
    const char *why = lh_error_message();
    snprintf(reason, sizeof reason, "the ring was aborted by a failing rank%s%.400s",
             *why ? ": " : "", why);
    pthread_mutex_lock(&ring->mutex);
    abort_locked(ring, reason);
    pthread_mutex_unlock(&ring->mutex);
}
