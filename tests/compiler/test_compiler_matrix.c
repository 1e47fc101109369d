/*
 * test_compiler_matrix.c - every kernel of every plan in the supported matrix compiles for
 * sm_90 and sm_100a, and ptxas (CUDA toolkit) accepts each PTX for its chip.
 *
 * Matrix: p in {2, 4, 8}, L in {2, 3, 4}, D in {64, 128}, dtype in {bf16, f16}. Runs without a
 * GPU; exits 77 (ctest: skipped) when ptxas is missing.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compiler.h"
#include "runtime.h"
#include "test_compiler_util.h"

#ifndef LH_PTXAS
#define LH_PTXAS ""
#endif

static int ptxas_accepts(const char *tmp, const char *chip, const lhc_kernel *k, char *log, size_t cap) {
    char ptx_path[1200], out_path[1200], log_path[1200];
    snprintf(ptx_path, sizeof ptx_path, "%s/k.ptx", tmp);
    snprintf(out_path, sizeof out_path, "%s/k.cubin", tmp);
    snprintf(log_path, sizeof log_path, "%s/ptxas.log", tmp);
    FILE *f = fopen(ptx_path, "wb");
    if (!f) return 0;
    fwrite(k->ptx, 1, k->ptx_size, f);
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *lf = freopen(log_path, "w", stderr);
        (void)lf;
        dup2(2, 1);
        execl(LH_PTXAS, "ptxas", "-arch", chip, ptx_path, "-o", out_path, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return 0;
    log[0] = '\0';
    f = fopen(log_path, "r");
    if (f) {
        size_t n = fread(log, 1, cap - 1, f);
        log[n] = '\0';
        fclose(f);
    }
    unlink(out_path);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

typedef struct matrix_job {
    const char *chip;
    lhc_plan_params params;
} matrix_job;

static matrix_job jobs[2 * 3 * 3 * 2 * 2];
static int job_count;
static atomic_int next_job, checked, failed;
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

#define REPORT(...)                          \
    do {                                     \
        pthread_mutex_lock(&print_lock);     \
        printf(__VA_ARGS__);                 \
        pthread_mutex_unlock(&print_lock);   \
    } while (0)

/* One worker: its own cache (memory only) and its own directory for ptxas files. */
static void *matrix_worker(void *arg) {
    (void)arg;
    char tmp[1024], log[4096];
    lhc_cache *cache = NULL;
    if (make_temp_dir(tmp, sizeof tmp) != 0 || lhc_cache_create(&cache) != LH_OK) {
        atomic_fetch_add(&failed, 1);
        return NULL;
    }
    lhc_cache_set_disk_enabled(cache, 0);
    for (int j; (j = atomic_fetch_add(&next_job, 1)) < job_count;) {
        const matrix_job *job = &jobs[j];
        const lhc_plan_params *pp = &job->params;
        lhc_kernel_request req[LHC_MAX_PLAN_KERNELS];
        int n = 0;
        if (lhc_plan_kernels(pp, req, &n) != LH_OK) {
            REPORT("FAIL plan p=%d L=%d D=%d %s: %s\n", pp->pooling, pp->levels, pp->head_dim, pp->dtype,
                   lh_error_message());
            atomic_fetch_add(&failed, 1);
            continue;
        }
        for (int i = 0; i < n; i++) {
            const lhc_kernel *k = NULL;
            atomic_fetch_add(&checked, 1);
            if (lhc_compile(cache, req[i].kernel, req[i].constants, job->chip, &k) != LH_OK) {
                REPORT("FAIL compile %s [%s] %s: %s\n", req[i].kernel, req[i].constants, job->chip,
                       lh_error_message());
                atomic_fetch_add(&failed, 1);
            } else if (k->num_entries < 1) {
                REPORT("FAIL %s [%s] %s: no entry point\n", req[i].kernel, req[i].constants, job->chip);
                atomic_fetch_add(&failed, 1);
            } else if (!ptxas_accepts(tmp, job->chip, k, log, sizeof log)) {
                REPORT("FAIL ptxas %s [%s] %s:\n%s\n", req[i].kernel, req[i].constants, job->chip, log);
                atomic_fetch_add(&failed, 1);
            }
        }
    }
    lhc_cache_destroy(cache);
    remove_temp_dir(tmp);
    return NULL;
}

int run_matrix(void) {
    if (!LH_PTXAS[0] || access(LH_PTXAS, X_OK) != 0) {
        printf("matrix: ptxas not found, skipped\n");
        return 77;
    }
    static const char *chips[] = {"sm_90", "sm_100a"};
    static const char *dtypes[] = {"bf16", "f16"};
    static const int poolings[] = {2, 4, 8}, levels[] = {2, 3, 4}, dims[] = {64, 128};
    for (int c = 0; c < 2; c++)
        for (int pi = 0; pi < 3; pi++)
            for (int li = 0; li < 3; li++)
                for (int di = 0; di < 2; di++)
                    for (int ti = 0; ti < 2; ti++)
                        /* kv groups spread over the matrix: fixed 1 and 2, and 0 (read at run time) */
                        jobs[job_count++] = (matrix_job){chips[c], {poolings[pi], levels[li], dims[di], dtypes[ti],
                                                                    (pi + li) % 3}};
    /* Compilations of different caches run in parallel: use the cores ctest gives us. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int workers = cores < 1 ? 1 : cores > 8 ? 8 : (int)cores;
    pthread_t threads[8];
    for (int i = 0; i < workers; i++) pthread_create(&threads[i], NULL, matrix_worker, NULL);
    for (int i = 0; i < workers; i++) pthread_join(threads[i], NULL);
    printf("matrix: %d kernels compiled and assembled (%d threads), %d failed\n", atomic_load(&checked), workers,
           atomic_load(&failed));
    return atomic_load(&failed) ? 1 : 0;
}
