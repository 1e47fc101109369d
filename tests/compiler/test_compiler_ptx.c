/*
 * test_compiler_ptx.c - the PTX of every kernel of many configurations, written to files, for
 * tests/compiler/ptx_identity.sh (which compares them across a refactor).
 *
 *   test_compiler ptx < configurations
 *
 * Each line of standard input is one configuration, "DIR CHIP POOLING LEVELS HEAD_DIM DTYPE
 * GROUP": the kernels a plan of it needs (lhc_plan_kernels) and the attention step's
 * (lhc_ring_kernel), compiled for CHIP, each written to DIR/<template>.ptx (DIR exists). Lines
 * run on all cores; the workers share one disk cache in a fresh temporary directory, so a kernel
 * common to several configurations is compiled about once. Exit status 0 when every kernel of
 * every line compiled and was written, else 1 (each failure printed).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compiler.h"
#include "runtime.h"
#include "test_compiler_util.h"

typedef struct ptx_job {
    char dir[1024], chip[32], dtype[8];
    lhc_plan_params params;
} ptx_job;

static ptx_job *ptx_jobs;
static int ptx_job_count;
static atomic_int ptx_next, ptx_failed;
static char ptx_cache_dir[1024];
static pthread_mutex_t ptx_print_lock = PTHREAD_MUTEX_INITIALIZER;

static void ptx_fail(const ptx_job *job, const char *kernel, const char *what) {
    pthread_mutex_lock(&ptx_print_lock);
    printf("FAIL %s %s p=%d L=%d D=%d %s group=%d: %s\n", kernel, job->chip, job->params.pooling,
           job->params.levels, job->params.head_dim, job->params.dtype, job->params.group, what);
    pthread_mutex_unlock(&ptx_print_lock);
    atomic_fetch_add(&ptx_failed, 1);
}

static void write_ptx(const ptx_job *job, const char *kernel, const lhc_kernel *k) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.ptx", job->dir, kernel);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(k->ptx, 1, k->ptx_size, f) == k->ptx_size;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) ptx_fail(job, kernel, "cannot write the PTX file");
}

static void *ptx_worker(void *arg) {
    (void)arg;
    lhc_cache *cache = NULL;
    if (lhc_cache_create(&cache) != LH_OK || lhc_cache_set_dir(cache, ptx_cache_dir) != LH_OK) {
        atomic_fetch_add(&ptx_failed, 1);
        lhc_cache_destroy(cache);
        return NULL;
    }
    for (int j; (j = atomic_fetch_add(&ptx_next, 1)) < ptx_job_count;) {
        const ptx_job *job = &ptx_jobs[j];
        lhc_kernel_request req[LHC_MAX_PLAN_KERNELS + 1];
        int n = 0;
        if (lhc_plan_kernels(&job->params, req, &n) != LH_OK ||
            lhc_ring_kernel(job->params.dtype, job->params.head_dim, &req[n++]) != LH_OK) {
            ptx_fail(job, "plan", lh_error_message());
            continue;
        }
        for (int i = 0; i < n; i++) {
            const lhc_kernel *k = NULL;
            if (lhc_compile(cache, req[i].kernel, req[i].constants, job->chip, &k) != LH_OK)
                ptx_fail(job, req[i].kernel, lh_error_message());
            else
                write_ptx(job, req[i].kernel, k);
        }
    }
    lhc_cache_destroy(cache);
    return NULL;
}

/* Reads the configuration lines; -1 (printed) on a malformed one. */
static int read_jobs(FILE *in) {
    char line[2048];
    int cap = 0;
    while (fgets(line, sizeof line, in)) {
        if (line[strspn(line, " \t\r\n")] == '\0') continue;
        if (ptx_job_count == cap) {
            cap = cap ? 2 * cap : 256;
            ptx_job *grown = realloc(ptx_jobs, (size_t)cap * sizeof *grown);
            if (!grown) return -1;
            ptx_jobs = grown;
        }
        ptx_job *job = &ptx_jobs[ptx_job_count];
        memset(job, 0, sizeof *job);
        lhc_plan_params *pp = &job->params;
        if (sscanf(line, "%1023s %31s %d %d %d %7s %d", job->dir, job->chip, &pp->pooling, &pp->levels,
                   &pp->head_dim, job->dtype, &pp->group) != 7) {
            printf("ptx: a line must read DIR CHIP POOLING LEVELS HEAD_DIM DTYPE GROUP (got: %s)", line);
            return -1;
        }
        ptx_job_count++;
    }
    for (int j = 0; j < ptx_job_count; j++) ptx_jobs[j].params.dtype = ptx_jobs[j].dtype;
    return 0;
}

int run_ptx(void) {
    if (!lhc_available()) {
        printf("ptx: built without the kernel compiler\n");
        return 77;
    }
    int status = 1;
    if (read_jobs(stdin) == 0 && make_temp_dir(ptx_cache_dir, sizeof ptx_cache_dir) == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        int workers = cores < 1 ? 1 : cores > 16 ? 16 : (int)cores;
        pthread_t threads[16];
        for (int i = 0; i < workers; i++) pthread_create(&threads[i], NULL, ptx_worker, NULL);
        for (int i = 0; i < workers; i++) pthread_join(threads[i], NULL);
        remove_temp_dir(ptx_cache_dir);
        printf("ptx: %d configurations (%d threads), %d failures\n", ptx_job_count, workers,
               atomic_load(&ptx_failed));
        status = atomic_load(&ptx_failed) ? 1 : 0;
    }
    free(ptx_jobs);
    return status;
}
