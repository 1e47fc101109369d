/*
 * bench_cp_rank.c - one measurement's processes for bench_cp_scaling (bench_cp.h): plans, random
 * inputs, forward + backward timed (one warm-up run, then medians), and for an NCCL ring the
 * ring's transfers alone on the same communicator.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cp.h"

#define MAX_ITERS 15

static gpu_env env;
static bool on_gpu;

typedef struct job {
    const bench_cfg *cfg;
    rank_result *res;
    lh_plan *plan;
    void *q, *k, *v, *dout, *out, *dq, *dk, *dv, *saved, *fws, *bws;
    CUstream s;
    CUevent ev[3];
    double ms[MAX_ITERS], fwd[MAX_ITERS], bwd[MAX_ITERS];
} job;

static void fail(rank_result *res, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(rank_result *res, int status, const char *fmt, ...) {
    if (res->status != RANK_OK) return; /* the first reason stays */
    res->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->msg, sizeof res->msg, fmt, ap);
    va_end(ap);
}

/* ---- inputs: cheap random values, 16 host threads ------------------------------------------- */

typedef struct fill_slice {
    void *dst;
    size_t n;
    lh_dtype dtype;
    uint64_t state;
} fill_slice;

static void *fill_slice_run(void *arg) {
    fill_slice *f = arg;
    if (f->dtype != LH_DTYPE_FLOAT32) {
        cheap_inputs(&f->state, f->dtype, f->n, f->dst);
        return NULL;
    }
    uint16_t bits[4096];
    float *out = f->dst;
    for (size_t i = 0; i < f->n; i += 4096) {
        size_t m = f->n - i < 4096 ? f->n - i : 4096;
        cheap_inputs(&f->state, LH_DTYPE_BFLOAT16, m, bits);
        for (size_t e = 0; e < m; e++) out[i + e] = half_bits_to_f32(bits[e], LH_DTYPE_BFLOAT16);
    }
    return NULL;
}

static void fill_random(void *dst, size_t n, lh_dtype dtype, uint64_t seed) {
    enum { THREADS = 16 };
    pthread_t th[THREADS];
    fill_slice sl[THREADS];
    size_t es = dtype == LH_DTYPE_FLOAT32 ? 4 : 2, per = (n + THREADS - 1) / THREADS;
    bool started[THREADS] = {false};
    for (int i = 0; i < THREADS; i++) {
        size_t lo = (size_t)i * per < n ? (size_t)i * per : n, hi = lo + per < n ? lo + per : n;
        sl[i] = (fill_slice){(char *)dst + lo * es, hi - lo, dtype, (seed * 1000003u + (uint64_t)i) | 1u};
        started[i] = pthread_create(&th[i], NULL, fill_slice_run, &sl[i]) == 0;
        if (!started[i]) fill_slice_run(&sl[i]);
    }
    for (int i = 0; i < THREADS; i++)
        if (started[i]) pthread_join(th[i], NULL);
}

/* ---- buffers ----------------------------------------------------------------------------------- */

static void *buffer(job *j, size_t bytes) {
    if (!bytes) bytes = 1;
    if (!on_gpu) {
        void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (p) memset(p, 0, bytes);
        else fail(j->res, RANK_NO_MEMORY, "host allocation of %zu bytes failed", bytes);
        return p;
    }
    CUdeviceptr p = 0;
    if (env.cu->MemAlloc(&p, bytes) != CUDA_SUCCESS) {
        size_t free_b = 0, total = 0;
        env.cu->MemGetInfo(&free_b, &total);
        fail(j->res, RANK_NO_MEMORY, "cuMemAlloc of %.2f GiB failed (%.2f of %.2f GiB free)",
             bytes / 1073741824.0, free_b / 1073741824.0, total / 1073741824.0);
        return NULL;
    }
    /* zeroed: what a null-transport ring "receives" is this (finite values, no NaN) */
    env.cu->MemsetD8Async(p, 0, bytes, NULL);
    return (void *)(uintptr_t)p;
}

static void release(void *p) {
    if (!p) return;
    if (on_gpu) env.cu->MemFree((CUdeviceptr)(uintptr_t)p);
    else free(p);
}

static void *random_buffer(job *j, size_t elems, uint64_t seed) {
    size_t es = j->cfg->dtype == LH_DTYPE_FLOAT32 ? 4 : 2;
    void *d = buffer(j, elems * es);
    if (!d) return NULL;
    if (!on_gpu) {
        fill_random(d, elems, j->cfg->dtype, seed);
        return d;
    }
    void *host = malloc(elems * es);
    if (!host) {
        fail(j->res, RANK_NO_MEMORY, "host staging buffer of %zu bytes: allocation failed", elems * es);
        return d;
    }
    fill_random(host, elems, j->cfg->dtype, seed);
    if (env.cu->MemcpyHtoD((CUdeviceptr)(uintptr_t)d, host, elems * es) != CUDA_SUCCESS)
        fail(j->res, RANK_FAILED, "cuMemcpyHtoD of the inputs failed");
    free(host);
    return d;
}

/* ---- one rank: plan, buffers, timing ------------------------------------------------------------ */

static int64_t query_or(const lh_plan *p, lh_query q, int64_t fallback) {
    int64_t v = 0;
    return lh_plan_get_i64(p, q, &v) == LH_OK ? v : fallback;
}

/* Plan of cfg (bound to ring as `rank` when ring != NULL), inputs and outputs. False (with the
 * reason in j->res) when the library refuses the plan or memory runs out. */
static bool job_setup(job *j, lh_context *ctx, lh_ring *ring, int rank) {
    const bench_cfg *c = j->cfg;
    lh_status st = lh_plan_create(ctx, &j->plan);
    const struct { lh_param p; int64_t v; } params[] = {
        {LH_PARAM_BATCH, c->batch}, {LH_PARAM_SEQ_LEN, c->n},          {LH_PARAM_HEADS, c->heads},
        {LH_PARAM_KV_HEADS, c->kv_heads}, {LH_PARAM_HEAD_DIM, c->dim}, {LH_PARAM_DTYPE, c->dtype},
        {LH_PARAM_MODE, c->mode},   {LH_PARAM_LEVELS, c->levels},      {LH_PARAM_POOLING, c->pooling},
        {LH_PARAM_TOPK, c->topk},
    };
    size_t nparams = c->mode == LH_MODE_LIGHTHOUSE ? 10 : 7; /* dense takes no pyramid */
    for (size_t i = 0; i < nparams && st == LH_OK; i++) st = lh_plan_set_i64(j->plan, params[i].p, params[i].v);
    if (st == LH_OK && ring) st = lh_plan_set_ring(j->plan, ring, rank);
    if (st == LH_OK) st = lh_plan_finalize(j->plan);
    if (st != LH_OK) {
        fail(j->res, RANK_REFUSED, "%s: %s", lh_status_string(st), lh_last_error());
        return false;
    }
    size_t es = c->dtype == LH_DTYPE_FLOAT32 ? 4 : 2;
    int64_t T = query_or(j->plan, LH_QUERY_LOCAL_SEQ_LEN, c->n), C = query_or(j->plan, LH_QUERY_CHUNKS, 1);
    j->res->chunk_entries = query_or(j->plan, LH_QUERY_SUBSEQ_LEN, T) / C;
    j->res->block_bytes = c->batch * c->heads * j->res->chunk_entries * c->dim * (int64_t)es;
    size_t nq = (size_t)(c->batch * T * c->heads * c->dim), nk = (size_t)(c->batch * T * c->kv_heads * c->dim);
    uint64_t seed = 1000 + 16 * (uint64_t)rank;
    j->q = random_buffer(j, nq, seed);
    j->k = random_buffer(j, nk, seed + 1);
    j->v = random_buffer(j, nk, seed + 2);
    j->dout = random_buffer(j, nq, seed + 3);
    void **outs[] = {&j->out, &j->dq, &j->dk, &j->dv};
    for (int i = 0; i < 4; i++) *outs[i] = buffer(j, (i < 2 ? nq : nk) * es);
    j->saved = buffer(j, (size_t)query_or(j->plan, LH_QUERY_SAVED_BYTES, 0));
    j->fws = buffer(j, (size_t)query_or(j->plan, LH_QUERY_FWD_WORKSPACE_BYTES, 0));
    j->bws = buffer(j, (size_t)query_or(j->plan, LH_QUERY_BWD_WORKSPACE_BYTES, 0));
    if (on_gpu && j->res->status == RANK_OK) {
        bool ok = env.cu->StreamCreate(&j->s, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS;
        for (int e = 0; e < 3 && ok; e++) ok = env.cu->EventCreate(&j->ev[e], 0) == CUDA_SUCCESS;
        if (!ok || env.cu->CtxSynchronize() != CUDA_SUCCESS)
            fail(j->res, RANK_FAILED, "creating the stream and events failed");
    }
    return j->res->status == RANK_OK;
}

static void job_free(job *j) {
    void *bufs[] = {j->q, j->k, j->v, j->dout, j->out, j->dq, j->dk, j->dv, j->saved, j->fws, j->bws};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) release(bufs[i]);
    for (int e = 0; e < 3; e++)
        if (j->ev[e]) env.cu->EventDestroy(j->ev[e]);
    if (j->s) env.cu->StreamDestroy(j->s);
    if (j->plan) lh_plan_destroy(j->plan);
    j->plan = NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static float elapsed(CUevent a, CUevent b) {
    float ms = 0;
    return env.cu->EventElapsedTime(&ms, a, b) == CUDA_SUCCESS ? ms : -1.0f;
}

/* Forward + backward, iters + 1 times (the first warms up). Runs on the rank's own thread. */
static void *job_time(void *arg) {
    job *j = arg;
    if (on_gpu) env.cu->CtxPushCurrent(env.ctx);
    int iters = j->cfg->iters;
    for (int it = 0; it <= iters && j->res->status == RANK_OK; it++) {
        double t0 = now_seconds(), t1 = t0;
        if (on_gpu) env.cu->EventRecord(j->ev[0], j->s);
        lh_status st = lh_forward(j->plan, j->q, j->k, j->v, j->out, j->saved, j->fws, j->s);
        if (on_gpu) env.cu->EventRecord(j->ev[1], j->s);
        else t1 = now_seconds();
        if (st == LH_OK)
            st = lh_backward(j->plan, j->q, j->k, j->v, j->out, j->dout, j->saved, j->dq, j->dk,
                             j->dv, j->bws, j->s);
        if (on_gpu) {
            env.cu->EventRecord(j->ev[2], j->s);
            if (env.cu->StreamSynchronize(j->s) != CUDA_SUCCESS && st == LH_OK) st = LH_ERROR_DEVICE;
        }
        double t2 = now_seconds();
        if (st != LH_OK) {
            fail(j->res, RANK_FAILED, "%s: %s", lh_status_string(st), lh_last_error());
            break;
        }
        if (it == 0) continue;
        j->ms[it - 1] = (t2 - t0) * 1e3;
        j->fwd[it - 1] = on_gpu ? elapsed(j->ev[0], j->ev[1]) : (t1 - t0) * 1e3;
        j->bwd[it - 1] = on_gpu ? elapsed(j->ev[1], j->ev[2]) : (t2 - t1) * 1e3;
    }
    if (j->res->status == RANK_OK) {
        j->res->ms = median(j->ms, iters);
        j->res->fwd_ms = median(j->fwd, iters);
        j->res->bwd_ms = median(j->bwd, iters);
    }
    if (on_gpu) {
        CUcontext ignored;
        env.cu->CtxPopCurrent(&ignored);
    }
    return NULL;
}

/* ---- the ring's transfers alone -------------------------------------------------------------- */

/* One shift: `n` buffers of `bytes` each to rank r+1, the same from rank r-1, in one group (as
 * runtime/cuda/cuda_transport.c sends them). */
static bool shift(const lh_nccl_api *nc, lh_nccl_comm comm, int W, int rank, char *send,
                  char *recv, int n, size_t bytes, CUstream s) {
    bool ok = nc->GroupStart() == 0;
    for (int i = 0; i < n && ok; i++) {
        ok = nc->Send(send + i * bytes, bytes, LH_NCCL_UINT8, (rank + 1) % W, comm, s) == 0;
        ok = ok && nc->Recv(recv + i * bytes, bytes, LH_NCCL_UINT8, (rank + W - 1) % W, comm, s) == 0;
    }
    return nc->GroupEnd() == 0 && ok;
}

/* The byte schedule of one forward + backward of the ring (runtime/cuda/cuda_ring.c), back to
 * back: forward W-1 shifts of the K and V blocks of both chunks (2 x 2 blocks); backward W-1 such
 * shifts and W shifts of the fp32 dK/dV accumulators of both chunks (4 fp32 blocks). False when
 * it could not run (xfer_ms stays 0): the peers may then wait in NCCL, so the rank must fail. */
static bool time_transfers(job *j, const lh_nccl_api *nc, lh_nccl_comm comm, int W, int rank) {
    size_t kv = (size_t)j->res->block_bytes, es = j->cfg->dtype == LH_DTYPE_FLOAT32 ? 4 : 2;
    size_t acc = kv / es * 4 * 4, span = acc > 4 * kv ? acc : 4 * kv;
    rank_result scratch = {0}; /* an allocation failure here leaves the ring's result alone */
    job t = {.cfg = j->cfg, .res = &scratch};
    char *send = buffer(&t, span), *recv = buffer(&t, span);
    j->s = NULL;
    bool ok = send && recv && env.cu->StreamCreate(&j->s, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS &&
              env.cu->CtxSynchronize() == CUDA_SUCCESS;
    if (scratch.status != RANK_OK) fprintf(stderr, "rank %d: transfers alone: %s\n", rank, scratch.msg);
    int iters = j->cfg->iters;
    for (int it = 0; it <= iters && ok; it++) {
        double t0 = now_seconds();
        for (int s = 0; s < W - 1 && ok; s++) ok = shift(nc, comm, W, rank, send, recv, 2, 2 * kv, j->s);
        for (int s = 0; s < W && ok; s++) {
            if (s < W - 1) ok = shift(nc, comm, W, rank, send, recv, 2, 2 * kv, j->s);
            ok = ok && shift(nc, comm, W, rank, send, recv, 1, acc, j->s);
        }
        ok = ok && env.cu->StreamSynchronize(j->s) == CUDA_SUCCESS;
        if (it > 0) j->ms[it - 1] = (now_seconds() - t0) * 1e3;
    }
    if (ok) j->res->xfer_ms = median(j->ms, iters);
    release(send), release(recv);
    if (j->s) env.cu->StreamDestroy(j->s);
    j->s = NULL;
    return ok;
}

/* ---- the processes --------------------------------------------------------------------------- */

static int finish_rank(rank_result *res) { return res->status == RANK_OK ? 0 : 1; }

static int run_single(bench_shared *sh, lh_context *ctx) {
    job j = {.cfg = &sh->cfg, .res = &sh->r[0]};
    if (job_setup(&j, ctx, NULL, 0)) job_time(&j);
    job_free(&j);
    return finish_rank(j.res);
}

static int run_local(bench_shared *sh, lh_context **ctx) {
    int W = sh->world;
    lh_ring *ring = NULL;
    if (lh_ring_create_local(W, &ring) != LH_OK) {
        fail(&sh->r[0], RANK_FAILED, "lh_ring_create_local: %s", lh_last_error());
        return 1;
    }
    job *jobs = calloc((size_t)W, sizeof *jobs);
    pthread_t *th = calloc((size_t)W, sizeof *th);
    bool ready = jobs && th;
    for (int r = 0; r < W && ready; r++) {
        jobs[r] = (job){.cfg = &sh->cfg, .res = &sh->r[r]};
        ready = job_setup(&jobs[r], ctx[r], ring, r);
    }
    /* every rank must run (they meet at rendezvous): all or none */
    for (int r = 0; r < W && ready; r++) pthread_create(&th[r], NULL, job_time, &jobs[r]);
    for (int r = 0; r < W && ready; r++) pthread_join(th[r], NULL);
    int rc = 0;
    for (int r = 0; r < W && jobs; r++) {
        rc |= finish_rank(&sh->r[r]);
        job_free(&jobs[r]);
    }
    lh_ring_destroy(ring);
    free(jobs), free(th);
    return rc;
}

static int run_nccl(bench_shared *sh, lh_context *ctx, int rank) {
    rank_result *res = &sh->r[rank];
    char id[128];
    const lh_nccl_api *nc = NULL;
    lh_ring *ring = NULL;
    lh_status st = cp_share_id(ctx, &sh->box, rank, 1, 300, id);
    if (st != LH_OK) {
        fail(res, RANK_FAILED, "NCCL unique id: %s",
             rank == 0 ? lh_last_error()
             : st == LH_ERROR_BACKEND_UNAVAILABLE ? sh->box.why : "rank 0 published none in 300 s");
        return 1;
    }
    /* a communicator of this program's own: the ring's, then the transfers' alone */
    lh_nccl_comm comm = cp_nccl_comm(&nc, id, sh->world, rank);
    if (!comm) {
        fail(res, RANK_FAILED, "NCCL communicator: %s", lh_error_message());
        return 1;
    }
    st = lh_ring_create_nccl(ctx, comm, &ring);
    if (st != LH_OK) {
        fail(res, RANK_FAILED, "lh_ring_create_nccl: %s", lh_last_error());
        nc->CommDestroy(comm);
        return 1;
    }
    job j = {.cfg = &sh->cfg, .res = res};
    if (job_setup(&j, ctx, ring, rank)) job_time(&j);
    job_free(&j);
    lh_ring_destroy(ring);
    /* the same communicator, now for the transfers alone */
    bool moved = res->status == RANK_OK && time_transfers(&j, nc, comm, sh->world, rank);
    nc->CommDestroy(comm);
    return res->status == RANK_OK && moved ? 0 : 1;
}

static int run_null(bench_shared *sh, lh_context *ctx, int rank) {
    rank_result *res = &sh->r[rank];
    char id[128];
    lh_ring *ring = NULL;
    lh_status st = lh_nccl_get_unique_id(ctx, id);
    if (st == LH_OK) st = lh_ring_create_nccl_from_id(ctx, id, rank, sh->world, &ring);
    if (st != LH_OK) {
        fail(res, RANK_FAILED, "null-transport ring (%s): %s", sh->null_lib, lh_last_error());
        return 1;
    }
    job j = {.cfg = &sh->cfg, .res = res};
    if (job_setup(&j, ctx, ring, rank)) job_time(&j);
    job_free(&j);
    lh_ring_destroy(ring);
    return finish_rank(res);
}

int bench_rank_main(int index, void *arg) {
    bench_shared *sh = arg;
    const bench_cfg *c = &sh->cfg;
    if (c->backend == LH_BACKEND_CPU) {
        int W = sh->kind == BENCH_RING_LOCAL ? sh->world : 1;
        lh_context *ctx[CP_MAX_RANKS];
        for (int r = 0; r < W; r++) {
            /* one worker thread per rank: ranks on cores of their own */
            if (lh_context_create(LH_BACKEND_CPU, 0, &ctx[r]) != LH_OK ||
                lh_context_set_i64(ctx[r], LH_CONTEXT_NUM_THREADS, 1) != LH_OK) {
                fail(&sh->r[r], RANK_FAILED, "CPU context: %s", lh_last_error());
                return 1;
            }
        }
        int rc = sh->kind == BENCH_RING_LOCAL ? run_local(sh, ctx) : run_single(sh, ctx[0]);
        for (int r = 0; r < W; r++) lh_context_destroy(ctx[r]);
        return rc;
    }
    if (sh->kind == BENCH_RING_NULL) {
        /* before the library first loads NCCL (once per process) */
        setenv("LIGHTHOUSE_NCCL_LIBRARY", sh->null_lib, 1);
    }
    on_gpu = true;
    /* one process per GPU where the measurement forks one per rank, else device 0 */
    int device = sh->processes > 1 ? index : 0;
    if (gpu_env_init_on(&env, "bench_cp_scaling", device)) return GPU_SKIP;
    lh_context *ctx = NULL;
    if (lh_context_create(LH_BACKEND_CUDA, device, &ctx) != LH_OK) {
        fail(&sh->r[index], RANK_FAILED, "CUDA context: %s", lh_last_error());
        return 1;
    }
    int rc = 1;
    switch (sh->kind) {
    case BENCH_SINGLE: rc = run_single(sh, ctx); break;
    case BENCH_RING_LOCAL: {
        lh_context *all[CP_MAX_RANKS];
        for (int r = 0; r < sh->world; r++) all[r] = ctx;
        rc = run_local(sh, all);
        break;
    }
    case BENCH_RING_NCCL: rc = run_nccl(sh, ctx, index); break;
    case BENCH_RING_NULL: rc = run_null(sh, ctx, index); break;
    }
    lh_context_destroy(ctx);
    return rc;
}
