/*
 * bench_cp.c - context parallelism timing: one sequence of N tokens (default 1M) on one GPU
 * against the same sequence over a W = 2 ring (N/2 tokens per rank), forward + backward.
 *
 *   bench_cp [--mode=nccl|local] [--n=TOKENS] [--dense] [--iters=K]
 *     nccl  (default): two processes, one GPU each, one NCCL ring (needs two GPUs);
 *     local: both ranks in this process on GPU 0 (threads; checks the ring runs, not scaling).
 *
 * Prints the median milliseconds of the single-GPU plan (T1) and of the slowest rank of the ring
 * (T2), the scaling efficiency T1 / (2 T2) (1.0 = perfect), and the bytes each rank moves.
 * Lighthouse configuration of PERF.md: B = 1, H = Hkv = 8, D = 128, bf16, L = 3, p = 4,
 * topk = 2048 (per chunk of the ring: topk / 4). Both ranks do the same attention work (the chunk
 * pairing balances the causal triangle), so T2 close to T1 / 2 means the K/V transfers hid
 * behind cuDNN. NCCL_NVLS_ENABLE=0.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gpu_common.h"

static int64_t N = 1 << 20;
static int iters = 5;
static lh_mode mode = LH_MODE_LIGHTHOUSE;
static gpu_env env;

typedef struct rank_ctx {
    lh_plan *plan;
    void *q, *k, *v, *out, *dout, *dq, *dk, *dv, *saved, *fws, *bws;
    CUstream s;
    double ms[16];
    lh_status st;
} rank_ctx;

static int64_t query(const lh_plan *p, lh_query q) {
    int64_t v = 0;
    LH_MUST(lh_plan_get_i64(p, q, &v));
    return v;
}

/* Random bf16 inputs for 8 x 1 GiB buffers per rank, 16 threads at once (cheap_inputs on a
 * slice each). */
typedef struct fill_slice { uint16_t *bits; size_t n; uint64_t state; } fill_slice;

static void *fill_slice_run(void *arg) {
    fill_slice *f = arg;
    cheap_inputs(&f->state, LH_DTYPE_BFLOAT16, f->n, f->bits);
    return NULL;
}

static void fast_random_bf16(uint16_t *bits, size_t n, uint64_t seed) {
    enum { THREADS = 16 };
    pthread_t th[THREADS];
    fill_slice sl[THREADS];
    size_t per = (n + THREADS - 1) / THREADS;
    int started = 0;
    for (int i = 0; i < THREADS; i++) {
        size_t lo = (size_t)i * per < n ? (size_t)i * per : n, hi = lo + per < n ? lo + per : n;
        sl[i] = (fill_slice){bits + lo, hi - lo, (seed * 1000003u + (uint64_t)i) | 1u};
        if (pthread_create(&th[i], NULL, fill_slice_run, &sl[i]) == 0) started |= 1 << i;
        else fill_slice_run(&sl[i]);
    }
    for (int i = 0; i < THREADS; i++)
        if (started & (1 << i)) pthread_join(th[i], NULL);
}

static void setup(rank_ctx *r, lh_context *ctx, lh_ring *ring, int rank) {
    LH_MUST(lh_plan_create(ctx, &r->plan));
    LH_MUST(lh_plan_set_i64(r->plan, LH_PARAM_SEQ_LEN, N));
    LH_MUST(lh_plan_set_i64(r->plan, LH_PARAM_HEADS, 8));
    LH_MUST(lh_plan_set_i64(r->plan, LH_PARAM_HEAD_DIM, 128));
    LH_MUST(lh_plan_set_i64(r->plan, LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16));
    LH_MUST(lh_plan_set_i64(r->plan, LH_PARAM_MODE, mode));
    if (ring) LH_MUST(lh_plan_set_ring(r->plan, ring, rank));
    LH_MUST(lh_plan_finalize(r->plan));
    size_t t = (size_t)(query(r->plan, LH_QUERY_LOCAL_SEQ_LEN) * 8 * 128 * 2);
    void **bufs[] = {&r->q, &r->k, &r->v, &r->out, &r->dout, &r->dq, &r->dk, &r->dv};
    uint16_t *host = malloc(t);
    for (size_t i = 0; i < 8; i++) {
        *bufs[i] = gpu_alloc(&env, t);
        fast_random_bf16(host, t / 2, 42 + 16 * (uint64_t)rank + i);
        gpu_upload(&env, *bufs[i], host, t);
    }
    free(host);
    r->saved = gpu_alloc(&env, (size_t)query(r->plan, LH_QUERY_SAVED_BYTES));
    r->fws = gpu_alloc(&env, (size_t)query(r->plan, LH_QUERY_FWD_WORKSPACE_BYTES));
    r->bws = gpu_alloc(&env, (size_t)query(r->plan, LH_QUERY_BWD_WORKSPACE_BYTES));
    if (env.cu->StreamCreate(&r->s, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) exit(1);
}

static void *timed(void *arg) {
    rank_ctx *r = arg;
    env.cu->CtxPushCurrent(env.ctx);
    for (int it = 0; it < iters + 1 && r->st == LH_OK; it++) {
        double t0 = now_seconds();
        r->st = lh_forward(r->plan, r->q, r->k, r->v, r->out, r->saved, r->fws, r->s);
        if (r->st == LH_OK)
            r->st = lh_backward(r->plan, r->q, r->k, r->v, r->out, r->dout, r->saved, r->dq, r->dk,
                                r->dv, r->bws, r->s);
        env.cu->StreamSynchronize(r->s);
        if (it > 0) r->ms[it - 1] = (now_seconds() - t0) * 1e3; /* the first run warms up */
    }
    if (r->st != LH_OK) fprintf(stderr, "bench_cp: %s: %s\n", lh_status_string(r->st), lh_last_error());
    CUcontext ignored;
    env.cu->CtxPopCurrent(&ignored);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *ms) {
    qsort(ms, (size_t)iters, sizeof *ms, cmp);
    return ms[iters / 2];
}

static double single_gpu(void) {
    lh_context *ctx;
    LH_MUST(lh_context_create(LH_BACKEND_CUDA, 0, &ctx));
    rank_ctx r = {0};
    setup(&r, ctx, NULL, 0);
    timed(&r);
    return r.st == LH_OK ? median(r.ms) : -1.0;
}

static double ring_local(void) {
    lh_context *ctx;
    lh_ring *ring;
    LH_MUST(lh_context_create(LH_BACKEND_CUDA, 0, &ctx));
    LH_MUST(lh_ring_create_local(2, &ring));
    rank_ctx r[2] = {{0}};
    for (int i = 0; i < 2; i++) setup(&r[i], ctx, ring, i);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, timed, &r[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    if (r[0].st || r[1].st) return -1.0;
    double a = median(r[0].ms), b = median(r[1].ms);
    return a > b ? a : b;
}

typedef struct shared { volatile int ready; char id[128]; double ms[2]; } shared;

static double ring_nccl(void) {
    shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(sh, 0, sizeof *sh);
    pid_t pids[2];
    for (int rank = 0; rank < 2; rank++) {
        pids[rank] = fork();
        if (pids[rank]) continue;
        if (gpu_env_init(&env, "bench_cp") || env.device_count < 2) _exit(77);
        CUcontext ignored;
        env.cu->CtxPopCurrent(&ignored);
        env.cu->DeviceGet(&env.device, rank);
        env.cu->DevicePrimaryCtxRetain(&env.ctx, env.device);
        env.cu->CtxPushCurrent(env.ctx);
        lh_context *ctx;
        LH_MUST(lh_context_create(LH_BACKEND_CUDA, rank, &ctx));
        if (rank == 0) {
            LH_MUST(lh_nccl_get_unique_id(ctx, sh->id));
            __sync_synchronize();
            sh->ready = 1;
        }
        while (!sh->ready) usleep(1000);
        __sync_synchronize();
        lh_ring *ring;
        LH_MUST(lh_ring_create_nccl_from_id(ctx, sh->id, rank, 2, &ring));
        rank_ctx r = {0};
        setup(&r, ctx, ring, rank);
        timed(&r);
        sh->ms[rank] = r.st == LH_OK ? median(r.ms) : -1.0;
        fflush(stdout);
        _exit(r.st == LH_OK ? 0 : 1);
    }
    int bad = 0, status;
    for (int i = 0; i < 2; i++) {
        waitpid(pids[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status)) bad = 1;
    }
    if (bad) return -1.0;
    return sh->ms[0] > sh->ms[1] ? sh->ms[0] : sh->ms[1];
}

int main(int argc, char **argv) {
    setenv("NCCL_NVLS_ENABLE", "0", 1);
    const char *how = "nccl";
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--mode=", 7) == 0) how = argv[i] + 7;
        else if (strncmp(argv[i], "--n=", 4) == 0) N = atoll(argv[i] + 4);
        else if (strncmp(argv[i], "--iters=", 8) == 0) iters = atoi(argv[i] + 8);
        else if (strcmp(argv[i], "--dense") == 0) mode = LH_MODE_DENSE;
    }
    if (iters < 1 || iters > 15) iters = 5;
    double t2 = -1.0;
    /* The NCCL ranks fork before this process touches CUDA. */
    if (strcmp(how, "nccl") == 0) t2 = ring_nccl();
    int rc = gpu_env_init(&env, "bench_cp");
    if (rc) return rc;
    if (strcmp(how, "local") == 0) t2 = ring_local();
    double t1 = single_gpu();
    /* K and V of both chunks pass W - 1 times forward and backward, dK/dV (fp32) W times. */
    double kv = (double)N / 2 * 8 * 128 * 2 * 2; /* bytes of one rank's K+V (Lighthouse: less) */
    printf("bench_cp: %s N=%lld %s, H=8 D=128 bf16: T1 (1 GPU) %.2f ms, T2 (W=2 %s, slowest rank) "
           "%.2f ms, efficiency T1/(2 T2) = %.2f; dense-equivalent K/V per rank %.0f MiB\n",
           mode == LH_MODE_DENSE ? "dense" : "lighthouse", (long long)N, "fwd+bwd", t1, how, t2,
           t2 > 0 ? t1 / (2 * t2) : 0.0, kv / (1 << 20));
    return t1 > 0 && t2 > 0 ? 0 : 1;
}
