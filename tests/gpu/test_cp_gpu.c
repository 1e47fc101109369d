/*
 * test_cp_gpu.c - context parallelism (docs/spec.md section 8) on one GPU: W ranks of an in-process
 * ring, one thread and one stream each, against the CPU backend's ring on the same rounded inputs.
 *
 *  (a) Lighthouse, W = 2, 4 and 8: the selected indices of every rank equal the CPU ring's; out,
 *      dq, dk, dv within 2e-2 relative (max-norm, bf16);
 *  (b) attention hooks that call lh_attention_forward / _backward give what the built-in ring
 *      gives (1e-3: same kernels, same order), at W = 2 and 8;
 *  (c) dense mode (GQA, [B,H,N,D]) over W = 2, 4 and 8 ranks equals one dense plan over the
 *      whole sequence (2e-2);
 *  (d) a one-rank NCCL ring made from a unique id (lh_ring_create_nccl_from_id) equals the
 *      one-rank in-process ring (1e-3); skipped with a note where NCCL cannot be loaded.
 * Exit 77 without a GPU.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_common.h"

#define CU_MUST(call, what)                                                                   \
    do {                                                                                      \
        if ((call) != CUDA_SUCCESS) {                                                         \
            fprintf(stderr, "test_cp_gpu: %s failed\n", what);                                \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

static gpu_env env;
static lh_context *gpu_ctx, *cpu_ctx;
static uint64_t rng_state = 0x5eed1234abcdULL;
/* Set by the multi-process NCCL test (test_cp_nccl.c): the shared unique id and this process's
 * rank, or a communicator the test made itself (an ncclComm_t, for lh_ring_create_nccl); both
 * NULL: a one-rank communicator of this process's own. */
static const char *g_nccl_id;
static void *g_nccl_comm;
static int g_nccl_rank;

typedef struct rcfg {
    const char *name;
    lh_mode mode;
    lh_dtype dtype;
    lh_layout layout;
    int64_t B, N, H, Hkv, D, L, p, topk;
    int recompute; /* LH_PARAM_RECOMPUTE_SUBSEQ (Lighthouse): the backward gathers again */
} rcfg;

typedef enum ring_kind { RING_NONE, RING_LOCAL, RING_NCCL } ring_kind;

/* Inputs of the whole sequence, rounded to the dtype: values for the CPU, bits for the GPU. */
typedef struct inputs {
    size_t nq, nk;
    float *q, *k, *v, *dout;
    uint16_t *qb, *kb, *vb, *db;
} inputs;

/* Outputs of the whole sequence (shards put back in token order) and every rank's indices. */
typedef struct results {
    float *out, *dq, *dk, *dv;
    int32_t *idx;
    size_t idx_n; /* per rank */
} results;

typedef struct job {
    lh_plan *plan;
    bool gpu;
    void *q, *k, *v, *dout, *out, *dq, *dk, *dv, *saved, *fws, *bws, *attn_ws;
    CUstream stream;
    lh_status st;
    char err[600];
} job;

static lh_plan *make_plan(lh_context *ctx, const rcfg *c, lh_dtype dtype, lh_ring *ring, int rank);

/* ---- hooks: the library's own attention step, called from the framework's side ------------- */

static lh_status fwd_hook(void *user, lh_plan *plan, const void *q_sel, const void *k_sel,
                          const void *v_sel, void *o_sel, float *lse, void *stream) {
    job *j = user;
    return lh_attention_forward(plan, q_sel, k_sel, v_sel, o_sel, lse, j->attn_ws, stream);
}

static lh_status bwd_hook(void *user, lh_plan *plan, const void *q_sel, const void *k_sel,
                          const void *v_sel, const void *o_sel, const float *lse,
                          const void *do_sel, void *dq_sel, void *dk_sel, void *dv_sel,
                          void *stream) {
    job *j = user;
    return lh_attention_backward(plan, q_sel, k_sel, v_sel, o_sel, lse, do_sel, dq_sel, dk_sel,
                                 dv_sel, j->attn_ws, stream);
}

/* ---- shards ---------------------------------------------------------------------------------- */

static size_t off4(lh_layout lay, int64_t N, int64_t heads, int64_t D, int64_t b, int64_t t,
                   int64_t h) {
    if (lay == LH_LAYOUT_BNHD) return (size_t)(((b * N + t) * heads + h) * D);
    return (size_t)(((b * heads + h) * N + t) * D);
}

/* Global token of shard token t of rank r (W ranks; W = 0: no ring, the identity). */
static int64_t global_token(int64_t N, int W, int r, int64_t t) {
    if (W == 0) return t;
    int64_t S = N / (2 * W);
    return t < S ? r * S + t : (2 * W - 1 - r) * S + (t - S);
}

/* Copies between a whole-sequence tensor and rank r's shard (back = 1: shard -> whole). Elements
 * of `es` bytes. */
static void shard_copy(const rcfg *c, int64_t heads, int W, int r, const void *whole, void *shard,
                       size_t es, int back) {
    int64_t T = W ? c->N / W : c->N;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < heads; h++) {
                size_t g = off4(c->layout, c->N, heads, c->D, b, global_token(c->N, W, r, t), h);
                size_t s = off4(c->layout, T, heads, c->D, b, t, h);
                char *wp = (char *)whole + g * es, *sp = (char *)shard + s * es;
                if (back) memcpy(wp, sp, (size_t)c->D * es);
                else memcpy(sp, wp, (size_t)c->D * es);
            }
}

static lh_plan *make_plan(lh_context *ctx, const rcfg *c, lh_dtype dtype, lh_ring *ring, int rank) {
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_BATCH, c->B));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_SEQ_LEN, c->N));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEADS, c->H));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_KV_HEADS, c->Hkv));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEAD_DIM, c->D));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_DTYPE, dtype));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_LAYOUT, c->layout));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_MODE, c->mode));
    if (c->mode == LH_MODE_LIGHTHOUSE) {
        LH_MUST(lh_plan_set_i64(p, LH_PARAM_LEVELS, c->L));
        LH_MUST(lh_plan_set_i64(p, LH_PARAM_POOLING, c->p));
        LH_MUST(lh_plan_set_i64(p, LH_PARAM_TOPK, c->topk));
        LH_MUST(lh_plan_set_i64(p, LH_PARAM_RECOMPUTE_SUBSEQ, c->recompute));
    }
    if (ring) LH_MUST(lh_plan_set_ring(p, ring, rank));
    return p;
}

/* ---- running W ranks -------------------------------------------------------------------------- */

static void *run_job(void *arg) {
    job *j = arg;
    if (j->gpu) env.cu->CtxPushCurrent(env.ctx);
    j->st = lh_forward(j->plan, j->q, j->k, j->v, j->out, j->saved, j->fws, j->stream);
    if (j->st == LH_OK)
        j->st = lh_backward(j->plan, j->q, j->k, j->v, j->out, j->dout, j->saved, j->dq, j->dk,
                            j->dv, j->bws, j->stream);
    if (j->st != LH_OK) snprintf(j->err, sizeof j->err, "%s", lh_last_error());
    if (j->gpu) {
        if (env.cu->StreamSynchronize(j->stream) != CUDA_SUCCESS && j->st == LH_OK) {
            j->st = LH_ERROR_DEVICE;
            snprintf(j->err, sizeof j->err, "cuStreamSynchronize failed");
        }
        CUcontext ignored;
        env.cu->CtxPopCurrent(&ignored);
    }
    return NULL;
}

static void *dev_or_host(bool gpu, size_t bytes) {
    if (!bytes) return NULL;
    if (gpu) return gpu_alloc(&env, bytes);
    void *p = calloc(1, bytes);
    if (!p) abort();
    return p;
}

static void release(bool gpu, void *p) {
    if (gpu) gpu_free(&env, p);
    else free(p);
}

/* Runs forward + backward of `c` on `ctx` over W ranks (W = 0: one plan without a ring) and
 * collects the whole-sequence outputs. Returns false (after a FAIL line) if a rank failed. */
static bool run_ranks(lh_context *ctx, bool gpu, const rcfg *c, int W, ring_kind kind, bool hooks,
                      const inputs *in, results *res) {
    int R = W && kind != RING_NCCL ? W : 1; /* ranks run here: NCCL runs this process's only */
    lh_dtype dtype = gpu ? c->dtype : LH_DTYPE_FLOAT32;
    size_t es = gpu ? 2 : 4;
    lh_ring *ring = NULL;
    if (kind == RING_LOCAL) LH_MUST(lh_ring_create_local(W, &ring));
    int nccl_rank = 0;
    if (kind == RING_NCCL) {
        char id[128];
        lh_status st = LH_OK;
        if (g_nccl_comm) nccl_rank = g_nccl_rank, st = lh_ring_create_nccl(ctx, g_nccl_comm, &ring);
        else if (g_nccl_id) memcpy(id, g_nccl_id, sizeof id), nccl_rank = g_nccl_rank;
        else st = lh_nccl_get_unique_id(ctx, id);
        if (st == LH_OK && !ring) st = lh_ring_create_nccl_from_id(ctx, id, nccl_rank, W, &ring);
        if (st != LH_OK) {
            printf("NOTE %s: NCCL ring unavailable here (%s: %s); not checked\n", c->name,
                   lh_status_string(st), lh_last_error());
            return false;
        }
    }
    job *jobs = calloc((size_t)R, sizeof *jobs);
    int64_t T = W ? c->N / W : c->N;
    size_t nq = (size_t)(c->B * T * c->H * c->D), nk = (size_t)(c->B * T * c->Hkv * c->D);
    for (int i = 0; i < R; i++) {
        job *j = &jobs[i];
        int r = kind == RING_NCCL ? nccl_rank : i;
        j->gpu = gpu;
        j->plan = make_plan(ctx, c, dtype, ring, r);
        if (hooks) LH_MUST(lh_plan_set_attention_hooks(j->plan, fwd_hook, bwd_hook, j));
        LH_MUST(lh_plan_finalize(j->plan));
        j->q = dev_or_host(gpu, nq * es), j->out = dev_or_host(gpu, nq * es);
        j->dout = dev_or_host(gpu, nq * es), j->dq = dev_or_host(gpu, nq * es);
        j->k = dev_or_host(gpu, nk * es), j->v = dev_or_host(gpu, nk * es);
        j->dk = dev_or_host(gpu, nk * es), j->dv = dev_or_host(gpu, nk * es);
        j->saved = dev_or_host(gpu, (size_t)plan_query(j->plan, LH_QUERY_SAVED_BYTES));
        j->fws = dev_or_host(gpu, (size_t)plan_query(j->plan, LH_QUERY_FWD_WORKSPACE_BYTES));
        j->bws = dev_or_host(gpu, (size_t)plan_query(j->plan, LH_QUERY_BWD_WORKSPACE_BYTES));
        j->attn_ws = dev_or_host(gpu, (size_t)plan_query(j->plan, LH_QUERY_ATTENTION_WORKSPACE_BYTES));
        const void *src_q = gpu ? (const void *)in->qb : in->q, *src_k = gpu ? (const void *)in->kb : in->k;
        const void *src_v = gpu ? (const void *)in->vb : in->v, *src_d = gpu ? (const void *)in->db : in->dout;
        void *hq = malloc(nq * es), *hk = malloc(nk * es), *hv = malloc(nk * es), *hd = malloc(nq * es);
        shard_copy(c, c->H, W, r, src_q, hq, es, 0);
        shard_copy(c, c->Hkv, W, r, src_k, hk, es, 0);
        shard_copy(c, c->Hkv, W, r, src_v, hv, es, 0);
        shard_copy(c, c->H, W, r, src_d, hd, es, 0);
        if (gpu) {
            gpu_upload(&env, j->q, hq, nq * es), gpu_upload(&env, j->k, hk, nk * es);
            gpu_upload(&env, j->v, hv, nk * es), gpu_upload(&env, j->dout, hd, nq * es);
            gpu_poison(&env, j->out, nq * es), gpu_poison(&env, j->dq, nq * es);
            gpu_poison(&env, j->dk, nk * es), gpu_poison(&env, j->dv, nk * es);
            CU_MUST(env.cu->StreamCreate(&j->stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
        } else {
            memcpy(j->q, hq, nq * es), memcpy(j->k, hk, nk * es);
            memcpy(j->v, hv, nk * es), memcpy(j->dout, hd, nq * es);
        }
        free(hq), free(hk), free(hv), free(hd);
    }
    pthread_t *th = calloc((size_t)R, sizeof *th);
    for (int r = 0; r < R; r++) pthread_create(&th[r], NULL, run_job, &jobs[r]);
    for (int r = 0; r < R; r++) pthread_join(th[r], NULL);
    bool ok = true;
    for (int r = 0; r < R; r++)
        if (jobs[r].st != LH_OK) {
            check(false, c->name, "%s rank %d of %d failed: %s: %s", gpu ? "GPU" : "CPU", r, R,
                  lh_status_string(jobs[r].st), jobs[r].err);
            ok = false;
        }
    size_t NQ = (size_t)(c->B * c->N * c->H * c->D), NK = (size_t)(c->B * c->N * c->Hkv * c->D);
    res->out = malloc(NQ * 4), res->dq = malloc(NQ * 4), res->dk = malloc(NK * 4), res->dv = malloc(NK * 4);
    int64_t C = W ? 2 : 1, sel = ok ? plan_query(jobs[0].plan, LH_QUERY_SUBSEQ_LEN) : 0;
    res->idx_n = c->mode == LH_MODE_LIGHTHOUSE ? (size_t)(c->B * c->H * sel) : 0;
    (void)C;
    res->idx = calloc((size_t)(W ? W : 1) * res->idx_n + 1, 4);
    for (int i = 0; i < R && ok; i++) {
        job *j = &jobs[i];
        int r = kind == RING_NCCL ? nccl_rank : i;
        float *tmp = malloc(nq * 4);
        void *outs[4] = {j->out, j->dq, j->dk, j->dv};
        float *dst[4] = {res->out, res->dq, res->dk, res->dv};
        for (int o = 0; o < 4; o++) {
            size_t n = o < 2 ? nq : nk;
            if (gpu) {
                float *got = gpu_download_f32(&env, outs[o], n, c->dtype);
                memcpy(tmp, got, n * 4);
                free(got);
            } else {
                memcpy(tmp, outs[o], n * 4);
            }
            shard_copy(c, o < 2 ? c->H : c->Hkv, W, r, dst[o], tmp, 4, 1);
        }
        free(tmp);
        if (res->idx_n) {
            if (gpu) gpu_download(&env, res->idx + r * res->idx_n, j->saved, res->idx_n * 4);
            else memcpy(res->idx + r * res->idx_n, j->saved, res->idx_n * 4);
        }
    }
    for (int r = 0; r < R; r++) {
        job *j = &jobs[r];
        void *bufs[] = {j->q, j->k, j->v, j->dout, j->out, j->dq, j->dk, j->dv, j->saved, j->fws, j->bws, j->attn_ws};
        for (size_t b = 0; b < sizeof bufs / sizeof bufs[0]; b++) release(gpu, bufs[b]);
        if (j->stream) env.cu->StreamDestroy(j->stream);
        LH_MUST(lh_plan_destroy(j->plan));
    }
    if (ring) LH_MUST(lh_ring_destroy(ring));
    free(th);
    free(jobs);
    return ok;
}

static void free_results(results *r) {
    free(r->out), free(r->dq), free(r->dk), free(r->dv), free(r->idx);
    memset(r, 0, sizeof *r);
}

static void make_inputs(const rcfg *c, inputs *in) {
    in->nq = (size_t)(c->B * c->N * c->H * c->D);
    in->nk = (size_t)(c->B * c->N * c->Hkv * c->D);
    float **vals[4] = {&in->q, &in->k, &in->v, &in->dout};
    uint16_t **bits[4] = {&in->qb, &in->kb, &in->vb, &in->db};
    for (int i = 0; i < 4; i++) {
        size_t n = (i == 1 || i == 2) ? in->nk : in->nq;
        *vals[i] = malloc(n * 4);
        *bits[i] = malloc(n * 2);
        random_inputs(&rng_state, c->dtype, n, *bits[i], *vals[i]);
    }
}

static void free_inputs(inputs *in) {
    free(in->q), free(in->k), free(in->v), free(in->dout);
    free(in->qb), free(in->kb), free(in->vb), free(in->db);
}

/* Compares out, dq, dk, dv; every error is printed. */
static void compare(const char *name, const rcfg *c, const results *a, const results *ref,
                    double tol) {
    size_t NQ = (size_t)(c->B * c->N * c->H * c->D), NK = (size_t)(c->B * c->N * c->Hkv * c->D);
    double e[4] = {rel_error(a->out, ref->out, NQ), rel_error(a->dq, ref->dq, NQ),
                   rel_error(a->dk, ref->dk, NK), rel_error(a->dv, ref->dv, NK)};
    bool ok = true;
    for (int i = 0; i < 4; i++) ok = ok && e[i] <= tol; /* NaN fails */
    check(ok, name, "out %.2e dq %.2e dk %.2e dv %.2e (tolerance %.0e)", e[0], e[1], e[2], e[3], tol);
}

/* ---- the checks ------------------------------------------------------------------------------- */

static void __attribute__((unused)) test_lighthouse_ring(const rcfg *c, int W, bool hooks) {
    char name[160];
    inputs in;
    make_inputs(c, &in);
    results gpu = {0}, cpu = {0}, hook = {0};
    bool g = run_ranks(gpu_ctx, true, c, W, RING_LOCAL, false, &in, &gpu);
    bool h = hooks && run_ranks(gpu_ctx, true, c, W, RING_LOCAL, true, &in, &hook);
    bool k = run_ranks(cpu_ctx, false, c, W, RING_LOCAL, false, &in, &cpu);
    if (g && k) {
        size_t n = (size_t)W * gpu.idx_n, diff = 0;
        for (size_t i = 0; i < n; i++) diff += gpu.idx[i] != cpu.idx[i];
        snprintf(name, sizeof name, "%s W=%d indices", c->name, W);
        check(diff == 0, name, "%zu of %zu indices differ from the CPU ring's", diff, n);
        snprintf(name, sizeof name, "%s W=%d vs CPU ring", c->name, W);
        compare(name, c, &gpu, &cpu, 2e-2);
    }
    if (g && h) {
        snprintf(name, sizeof name, "%s W=%d hooks vs built-in ring", c->name, W);
        compare(name, c, &hook, &gpu, 1e-3);
    }
    free_results(&gpu), free_results(&cpu), free_results(&hook);
    free_inputs(&in);
}

static void __attribute__((unused)) test_dense_ring(const rcfg *c, int W) {
    char name[160];
    inputs in;
    make_inputs(c, &in);
    results ring = {0}, one = {0};
    bool a = run_ranks(gpu_ctx, true, c, W, RING_LOCAL, false, &in, &ring);
    bool b = run_ranks(gpu_ctx, true, c, 0, RING_NONE, false, &in, &one);
    if (a && b) {
        snprintf(name, sizeof name, "%s W=%d vs one dense plan", c->name, W);
        compare(name, c, &ring, &one, 2e-2);
    }
    free_results(&ring), free_results(&one);
    free_inputs(&in);
}

static void __attribute__((unused)) test_nccl_one_rank(const rcfg *c) {
    inputs in;
    make_inputs(c, &in);
    results local = {0}, nccl = {0};
    bool a = run_ranks(gpu_ctx, true, c, 1, RING_LOCAL, false, &in, &local);
    bool b = run_ranks(gpu_ctx, true, c, 1, RING_NCCL, false, &in, &nccl);
    if (a && b) {
        size_t diff = 0;
        for (size_t i = 0; i < local.idx_n; i++) diff += local.idx[i] != nccl.idx[i];
        check(diff == 0, "nccl W=1 indices", "%zu of %zu differ from the in-process ring's", diff,
              local.idx_n);
        compare("nccl W=1 vs in-process W=1", c, &nccl, &local, 1e-3);
    }
    free_results(&local), free_results(&nccl);
    free_inputs(&in);
}

#ifndef LH_CP_TEST_NO_MAIN
int main(int argc, char **argv) {
    (void)argc, (void)argv;
    setenv("NCCL_NVLS_ENABLE", "0", 0); /* no NVLink multicast on shared machines */
    setvbuf(stdout, NULL, _IOLBF, 0);   /* every line out at once, even if the run is cut off */
    int rc = gpu_env_init(&env, "test_cp_gpu");
    if (rc) return rc;
    LH_MUST(lh_context_create(LH_BACKEND_CUDA, 0, &gpu_ctx));
    LH_MUST(lh_context_create(LH_BACKEND_CPU, 0, &cpu_ctx));

    /* Fast GPU-only checks first; the CPU oracle's larger ring last. */
    const rcfg dense = {"dense bf16 D=128 BHND GQA", LH_MODE_DENSE, LH_DTYPE_BFLOAT16,
                        LH_LAYOUT_BHND, 2, 4096, 4, 2, 128, 3, 4, 2048, 0};
    test_dense_ring(&dense, 2);
    test_dense_ring(&dense, 4);
    test_dense_ring(&dense, 8);
    const rcfg one = {"lighthouse bf16 D=64 W=1", LH_MODE_LIGHTHOUSE, LH_DTYPE_BFLOAT16,
                      LH_LAYOUT_BNHD, 1, 8192, 2, 2, 64, 3, 4, 512, 0};
    test_nccl_one_rank(&one);
    const rcfg lh2 = {"lighthouse bf16 D=64 BNHD recompute", LH_MODE_LIGHTHOUSE,
                      LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 1, 16384, 2, 2, 64, 3, 4, 1024, 1};
    const rcfg lh4 = {"lighthouse bf16 D=128 BHND GQA", LH_MODE_LIGHTHOUSE, LH_DTYPE_BFLOAT16,
                      LH_LAYOUT_BHND, 1, 32768, 2, 1, 128, 3, 4, 2048, 0};
    /* W = 8 needs TOPK a multiple of 128 * 2W = 2048 and chunks of at least 2048 tokens (128
     * coarsest entries at p^(L-1) = 16); its CPU ring costs what W = 4's does (the global
     * sub-sequence is 16 x 1152 = 18432 entries either way). */
    const rcfg lh8 = {"lighthouse bf16 D=64 BNHD GQA 4:1", LH_MODE_LIGHTHOUSE, LH_DTYPE_BFLOAT16,
                      LH_LAYOUT_BNHD, 1, 32768, 4, 1, 64, 3, 4, 2048, 0};
    test_lighthouse_ring(&lh2, 2, true);
    test_lighthouse_ring(&lh4, 4, false);
    test_lighthouse_ring(&lh8, 8, true);

    lh_context_destroy(gpu_ctx);
    lh_context_destroy(cpu_ctx);
    return finish("test_cp_gpu");
}
#endif
