/*
 * compile_requests.c - a plan's kernels compiled side by side.
 *
 * A Lighthouse plan needs five kernels (six on a ring), each compiled alone by MLIR and LLVM in
 * 20-90 ms of one core (the selection kernel is the longest), so a plan whose kernels are in no
 * cache spent the sum of them on one core. MLIR compilations share nothing but the pass registry
 * (mlir_compile.c) and one cache lets different kernels build at once (cache.c), so the requests
 * are handed to a few threads, the calling thread among them, each taking the next request in
 * order until none is left. The answer is the one lhc_compile would give request by request.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compiler_internal.h"
#include "runtime.h"

typedef struct compile_job {
    lhc_cache *cache;
    const lhc_kernel_request *req;
    const char *chip;
    const lhc_kernel **out;
    lh_status *status;  /* per request */
    char **message;     /* per failed request: its lh_error_message(), malloc'd (or NULL) */
    int count;
    atomic_int next;    /* the next request nobody has taken */
    atomic_int failed;  /* set at a failure: nobody takes another request */
} compile_job;

/* Takes requests in order until none is left or one has failed. Every request below the first
 * that failed has been taken by then, so the lowest failing index is the one a serial loop
 * would have stopped at. */
static void *work(void *arg) {
    compile_job *j = arg;
    while (!atomic_load(&j->failed)) {
        int i = atomic_fetch_add(&j->next, 1);
        if (i >= j->count) break;
        const lhc_kernel_request *r = &j->req[i];
        j->status[i] = lhc_compile(j->cache, r->kernel, r->constants, j->chip, &j->out[i]);
        if (j->status[i] != LH_OK) {
            j->message[i] = strdup(lh_error_message());
            atomic_store(&j->failed, 1);
        }
    }
    return NULL;
}

static int thread_count(int threads, int count) {
    if (threads <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        threads = online > 0 ? (int)(online < LHC_MAX_COMPILE_THREADS ? online : LHC_MAX_COMPILE_THREADS) : 1;
    }
    if (threads > LHC_MAX_COMPILE_THREADS) threads = LHC_MAX_COMPILE_THREADS;
    return threads < count ? threads : count;
}

lh_status lhc_compile_requests(lhc_cache *cache, const lhc_kernel_request *req, int count,
                               const char *chip, int threads, const lhc_kernel **out,
                               int *failed_index) {
    if (failed_index) *failed_index = -1;
    if (!cache || !chip || !out || (count > 0 && !req))
        return lh_fail(LH_ERROR_NULL_POINTER,
                       "lhc_compile_requests: cache, requests, chip and out must not be NULL");
    if (count <= 0) return LH_OK;
    compile_job j = {.cache = cache, .req = req, .chip = chip, .out = out, .count = count};
    j.status = calloc((size_t)count, sizeof *j.status);
    j.message = calloc((size_t)count, sizeof *j.message);
    if (!j.status || !j.message) {
        free(j.status);
        free(j.message);
        return lh_fail(LH_ERROR_OUT_OF_HOST_MEMORY, "kernel compilation: out of host memory");
    }
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);

    /* A thread that cannot be started leaves its share to the others: never an error. Its
     * stack is 8 MiB, the usual main-thread stack MLIR and LLVM run on, whatever default for
     * new threads the embedding process has set. */
    pthread_attr_t attr;
    bool have_attr = pthread_attr_init(&attr) == 0;
    if (have_attr) pthread_attr_setstacksize(&attr, (size_t)8 << 20);
    pthread_t helpers[LHC_MAX_COMPILE_THREADS];
    int started = 0, wanted = thread_count(threads, count) - 1;
    while (started < wanted &&
           pthread_create(&helpers[started], have_attr ? &attr : NULL, work, &j) == 0)
        started++;
    if (have_attr) pthread_attr_destroy(&attr);
    work(&j);
    for (int t = 0; t < started; t++) pthread_join(helpers[t], NULL);

    lh_status st = LH_OK;
    for (int i = 0; i < count && st == LH_OK; i++) {
        if (j.status[i] == LH_OK) continue;
        st = j.status[i];
        if (failed_index) *failed_index = i;
        if (j.message[i]) lh_fail(st, "%s", j.message[i]);
        else lh_fail(st, "kernel %s failed to compile (its message was lost: out of host memory)",
                     req[i].kernel);
    }
    for (int i = 0; i < count; i++) free(j.message[i]);
    free(j.status);
    free(j.message);
    return st;
}
