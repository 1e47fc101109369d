/*
 * cpu_parallel.c - a parallel-for over independent tasks with pthreads.
 *
 * Threads are started per call and joined before it returns: calls last milliseconds or more,
 * so the start cost (tens of microseconds) does not matter, and no thread outlives a call (a
 * process that never runs the CPU backend never has a stray thread). Tasks are handed out one at
 * a time from an atomic counter, which balances the uneven costs of causal attention blocks.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cpu_internal.h"

/* Threads beyond this are pointless for the task counts the backend produces. */
#define LH_CPU_MAX_THREADS 256

typedef struct parallel_job {
    lh_cpu_task_fn fn;
    void *arg;
    int64_t ntasks;
    atomic_llong next;
} parallel_job;

typedef struct parallel_worker {
    parallel_job *job;
    int tid;
} parallel_worker;

static void run_tasks(parallel_job *job, int tid) {
    for (;;) {
        int64_t task = (int64_t)atomic_fetch_add(&job->next, 1);
        if (task >= job->ntasks)
            return;
        job->fn(job->arg, task, tid);
    }
}

static void *worker_main(void *p) {
    parallel_worker *w = p;
    run_tasks(w->job, w->tid);
    return NULL;
}

void lh_cpu_parallel_for(int nthreads, int64_t ntasks, lh_cpu_task_fn fn, void *arg) {
    if (ntasks <= 0)
        return;
    parallel_job job = {.fn = fn, .arg = arg, .ntasks = ntasks};
    atomic_init(&job.next, 0);
    if (nthreads > LH_CPU_MAX_THREADS)
        nthreads = LH_CPU_MAX_THREADS;
    if ((int64_t)nthreads > ntasks)
        nthreads = (int)ntasks;
    pthread_t threads[LH_CPU_MAX_THREADS];
    parallel_worker workers[LH_CPU_MAX_THREADS];
    int started = 0;
    /* Thread ids 1..n-1 go to started threads; a thread that fails to start leaves its id
     * unused, which is harmless: ids only select scratch slices. */
    for (int t = 1; t < nthreads; t++) {
        workers[started].job = &job;
        workers[started].tid = t;
        if (pthread_create(&threads[started], NULL, worker_main, &workers[started]) == 0)
            started++;
    }
    run_tasks(&job, 0);
    for (int t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
}
