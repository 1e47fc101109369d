/* test_cp.c - context parallelism on the CPU backend (docs/spec.md section 8), fresh random inputs
 * every run (the seed is printed).
 *
 * W virtual ranks (one thread each, each with its own plan bound to one local ring) are compared
 * with a direct computation of section 8 (test_cp_direct.c): every chunk of N/(2W) tokens goes
 * through a ring-less plan of its own (lh_scores, lh_select, lh_gather with TOPK/(2W)), the
 * chunks' sub-sequences are concatenated in global chunk order, causal attention and its backward
 * run on that in double, and lh_scatter (forward) or a pool backward written in the test
 * (gradients) bring the results back to each chunk's tokens. Dense mode on a ring must equal
 * single-rank dense; the hook path (hooks that call lh_attention_forward / _backward) must equal
 * the built-in path bit for bit; the ring rules are checked at finalize; a failing rank must not
 * leave its peers waiting. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lighthouse.h"
#include "test_cp.h"
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif
#include "test_util.h"

static uint64_t seed;
/* Smaller problems under valgrind (or with LIGHTHOUSE_TEST_CP_SMALL set): the same paths, less work. */
static int small;
lh_context *test_cp_ctx;

static void setup(void) {
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &test_cp_ctx), LH_OK);
    ck_assert_int_eq(lh_context_set_i64(test_cp_ctx, LH_CONTEXT_NUM_THREADS, 2), LH_OK);
}
static void teardown(void) { ck_assert_int_eq(lh_context_destroy(test_cp_ctx), LH_OK); }

/* ---- shards: rank r holds chunks r and 2W-1-r, in the plan's layout --------------------- */

/* Copies between global g [B,N,heads,D] (BNHD) and rank r's shard s [B,N/W,...] (c->layout). */
static void shard_copy(const test_cfg *c, int64_t heads, int64_t W, int64_t r, float *g, float *s,
                       int to_shard) {
    int64_t N = c->seq_len, cl = N / (2 * W), n = N / W, D = c->head_dim;
    for (int64_t b = 0; b < c->batch; b++)
        for (int64_t t = 0; t < n; t++) {
            int64_t chunk = t < cl ? r : 2 * W - 1 - r, gt = chunk * cl + t % cl;
            for (int64_t h = 0; h < heads; h++) {
                float *gp = g + ((b * N + gt) * heads + h) * D;
                float *sp = s + (c->layout == LH_LAYOUT_BNHD ? ((b * n + t) * heads + h) * D
                                                             : ((b * heads + h) * n + t) * D);
                if (to_shard) memcpy(sp, gp, (size_t)D * sizeof(float));
                else memcpy(gp, sp, (size_t)D * sizeof(float));
            }
        }
}

/* ---- the ranks ------------------------------------------------------------------------- */

typedef struct rank_job {
    lh_plan *plan;
    test_cfg cfg;
    float *q, *k, *v, *out, *dout, *dq, *dk, *dv;
    void *saved, *fwd_ws, *bwd_ws;
    const float *sq, *sk;  /* SCORER = EXTERNAL: this rank's scores of its two chunks */
    int grads;
    lh_status fwd_st, bwd_st;
    char err[512];
} rank_job;

/* Never calls Check from here: this runs on the rank's own thread. */
static void *rank_main(void *arg) {
    rank_job *j = arg;
    if (j->sq)
        j->fwd_st = lh_forward_with_scores(j->plan, j->q, j->k, j->v, j->sq, j->sk, j->out,
                                           j->saved, j->fwd_ws, NULL);
    else
        j->fwd_st = lh_forward(j->plan, j->q, j->k, j->v, j->out, j->saved, j->fwd_ws, NULL);
    if (j->fwd_st != LH_OK) {
        snprintf(j->err, sizeof j->err, "forward: %s", lh_last_error());
        return NULL;
    }
    if (j->grads) {
        j->bwd_st = lh_backward(j->plan, j->q, j->k, j->v, j->out, j->dout, j->saved, j->dq, j->dk,
                                j->dv, j->bwd_ws, NULL);
        if (j->bwd_st != LH_OK) snprintf(j->err, sizeof j->err, "backward: %s", lh_last_error());
    }
    return NULL;
}

static problem problem_new(const test_cfg *c) {
    problem p = {.cfg = *c};
    p.nq = (size_t)(c->batch * c->seq_len * c->heads * c->head_dim);
    p.nkv = (size_t)(c->batch * c->seq_len * kv_of(c) * c->head_dim);
    p.q = test_floats(p.nq);
    p.k = test_floats(p.nkv);
    p.v = test_floats(p.nkv);
    p.dout = test_floats(p.nq);
    test_fill_uniform(p.q, p.nq, 1.0f, &seed);
    test_fill_uniform(p.k, p.nkv, 1.0f, &seed);
    test_fill_uniform(p.v, p.nkv, 1.0f, &seed);
    test_fill_uniform(p.dout, p.nq, 1.0f, &seed);
    return p;
}

static lh_status failing_forward_hook(void *u, lh_plan *plan, const void *q, const void *k,
                                     const void *v, void *o, float *lse, void *stream) {
    (void)u, (void)plan, (void)q, (void)k, (void)v, (void)o, (void)lse, (void)stream;
    return LH_ERROR_INVALID_VALUE;
}
static lh_status failing_backward_hook(void *u, lh_plan *plan, const void *q, const void *k,
                                      const void *v, const void *o, const float *lse,
                                      const void *dO, void *dq, void *dk, void *dv, void *stream) {
    (void)u, (void)plan, (void)q, (void)k, (void)v, (void)o, (void)lse, (void)dO, (void)dq;
    (void)dk, (void)dv, (void)stream;
    return LH_ERROR_INVALID_VALUE;
}
static const hooks failing = {failing_forward_hook, failing_backward_hook, NULL};

/* Runs p on W virtual ranks (hk: hooks of every rank, or NULL); results into res (BNHD). With
 * fail0, rank 0's hooks fail and the other ranks, running the built-in ring, must return
 * LH_ERROR_COMMUNICATION instead of waiting for it. */
static void run_ring_ex(const problem *p, int W, const hooks *hk, int grads, problem *res,
                        int fail0) {
    const test_cfg *c = &p->cfg;
    lh_ring *ring = NULL;
    ck_assert_int_eq(lh_ring_create_local(W, &ring), LH_OK);
    rank_job jobs[8];
    pthread_t th[8];
    problem_results(res, p);
    int64_t S_c = 0, rows = 0, St = 0;
    float *sq = NULL, *sk = NULL;
    if (c->scorer == LH_SCORER_EXTERNAL) chunk_norm_scores(p, W, &sq, &sk, &St);
    for (int r = 0; r < W; r++) {
        rank_job *j = &jobs[r];
        memset(j, 0, sizeof *j);
        j->cfg = *c;
        j->grads = grads;
        const hooks *h = fail0 && r == 0 ? &failing : hk;
        ck_assert_msg(make_plan(c, ring, r, h, &j->plan) == LH_OK, "rank %d: %s", r, lh_last_error());
        ck_assert_int_eq(query(j->plan, LH_QUERY_LOCAL_SEQ_LEN), c->seq_len / W);
        ck_assert_int_eq(query(j->plan, LH_QUERY_CHUNKS), 2);
        ck_assert_int_eq(query(j->plan, LH_QUERY_WORLD), W);
        ck_assert_int_eq(query(j->plan, LH_QUERY_RANK), r);
        S_c = query(j->plan, LH_QUERY_SUBSEQ_LEN) / 2;
        rows = c->batch * c->heads * S_c;
        size_t nq = p->nq / (size_t)W, nkv = p->nkv / (size_t)W;
        float **f[] = {&j->q, &j->out, &j->dout, &j->dq};
        for (size_t i = 0; i < 4; i++) *f[i] = test_floats(nq);
        float **g[] = {&j->k, &j->v, &j->dk, &j->dv};
        for (size_t i = 0; i < 4; i++) *g[i] = test_floats(nkv);
        shard_copy(c, c->heads, W, r, p->q, j->q, 1);
        shard_copy(c, kv_of(c), W, r, p->k, j->k, 1);
        shard_copy(c, kv_of(c), W, r, p->v, j->v, 1);
        shard_copy(c, c->heads, W, r, p->dout, j->dout, 1);
        j->saved = alloc_bytes(query(j->plan, LH_QUERY_SAVED_BYTES));
        j->fwd_ws = alloc_bytes(query(j->plan, LH_QUERY_FWD_WORKSPACE_BYTES));
        j->bwd_ws = alloc_bytes(query(j->plan, LH_QUERY_BWD_WORKSPACE_BYTES));
        if (sq) {
            ck_assert_int_eq(query(j->plan, LH_QUERY_PYRAMID_LEN), St);
            j->sq = sq + 2 * r * c->batch * c->heads * St;
            j->sk = sk + 2 * r * c->batch * kv_of(c) * St;
        }
    }
    for (int r = 0; r < W; r++) ck_assert_int_eq(pthread_create(&th[r], NULL, rank_main, &jobs[r]), 0);
    for (int r = 0; r < W; r++) pthread_join(th[r], NULL);
    if (c->mode == LH_MODE_LIGHTHOUSE) {
        res->nidx = (size_t)(2 * W * rows);
        res->idx = malloc(res->nidx * sizeof(int32_t));
    }
    for (int r = 0; r < W; r++) {
        rank_job *j = &jobs[r];
        if (fail0) {
            printf("  rank %d: %s\n", r, j->err);
            ck_assert_int_eq(j->fwd_st, r == 0 ? LH_ERROR_INVALID_VALUE : LH_ERROR_COMMUNICATION);
        } else {
            ck_assert_msg(j->fwd_st == LH_OK && j->bwd_st == LH_OK, "rank %d: %s", r, j->err);
        }
        shard_copy(c, c->heads, W, r, res->out, j->out, 0);
        if (grads) {
            shard_copy(c, c->heads, W, r, res->dq, j->dq, 0);
            shard_copy(c, kv_of(c), W, r, res->dk, j->dk, 0);
            shard_copy(c, kv_of(c), W, r, res->dv, j->dv, 0);
        }
        /* White box: the CPU backend keeps the indices, chunk-major, at the start of `saved`. */
        if (res->idx && !fail0) {
            const int32_t *idx = j->saved;
            memcpy(res->idx + r * rows, idx, (size_t)rows * sizeof(int32_t));
            memcpy(res->idx + (2 * W - 1 - r) * rows, idx + rows, (size_t)rows * sizeof(int32_t));
        }
        void *bufs[] = {j->q, j->k, j->v, j->out, j->dout, j->dq, j->dk, j->dv, j->saved,
                        j->fwd_ws, j->bwd_ws};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
        ck_assert_int_eq(lh_plan_destroy(j->plan), LH_OK);
    }
    free(sq);
    free(sk);
    ck_assert_int_eq(lh_ring_destroy(ring), LH_OK);
}

static void run_ring(const problem *p, int W, const hooks *hk, int grads, problem *res) {
    run_ring_ex(p, W, hk, grads, res, 0);
}


static void expect_close(const char *what, const float *a, const float *b, size_t n, double tol) {
    double e = test_rel_err(a, b, n);
    printf("  %-28s rel err %.3g\n", what, e);
    ck_assert_msg(e <= tol, "%s: rel err %.3g > %.1g", what, e, tol);
}

static test_cfg lighthouse_cfg(int W) {
    /* Chunks of 1024 (W <= 2), 512 (W = 4) or 256 (W = 8) tokens with TOPK/(2W) = 128. W = 8
     * has 16 chunks of the smallest size the rules allow at p = 2, L = 2 (a coarsest level of
     * one 128-entry tile): a global sub-sequence of 16 x 384 entries for the direct computation. */
    test_cfg c = {.batch = 1, .heads = 2, .head_dim = 16, .pooling = 2, .mode = LH_MODE_LIGHTHOUSE};
    c.seq_len = W >= 4 ? 4096 : 2048 * W;
    c.levels = W >= 4 ? 2 : 3;
    c.topk = 256 * W;
    if (small) {   /* chunks of 256 tokens, 2 levels */
        c.seq_len = 512 * W;
        c.levels = 2;
    }
    return c;
}

static void check_lighthouse(const test_cfg *c, int W) {
    printf("lighthouse W=%d N=%lld H=%lld Hkv=%lld layout=%s L=%lld p=%lld TOPK=%lld\n", W,
           (long long)c->seq_len, (long long)c->heads, (long long)kv_of(c),
           c->layout == LH_LAYOUT_BNHD ? "BNHD" : "BHND", (long long)c->levels,
           (long long)c->pooling, (long long)c->topk);
    problem p = problem_new(c), ring = {0}, direct = {0};
    run_ring(&p, W, NULL, 1, &ring);
    run_direct(&p, W, 1, &direct);
    ck_assert_int_eq(ring.nidx, direct.nidx);
    size_t same = 0;
    for (size_t i = 0; i < ring.nidx; i++) same += ring.idx[i] == direct.idx[i];
    printf("  indices: %zu of %zu identical\n", same, ring.nidx);
    ck_assert_int_eq(same, ring.nidx);
    expect_close("out", ring.out, direct.out, p.nq, 1e-5);
    expect_close("dq", ring.dq, direct.dq, p.nq, 1e-5);
    expect_close("dk", ring.dk, direct.dk, p.nkv, 1e-5);
    expect_close("dv", ring.dv, direct.dv, p.nkv, 1e-5);
    problem_free(&ring);
    problem_free(&direct);
    problem_free(&p);
}

/* Forward and backward of p on one ring-less plan (global tensors, BNHD). */
static void run_single(const problem *p, const hooks *hk, problem *res) {
    test_cfg c = p->cfg;
    c.layout = LH_LAYOUT_BNHD;
    lh_plan *plan = NULL;
    ck_assert_msg(make_plan(&c, NULL, 0, hk, &plan) == LH_OK, "%s", lh_last_error());
    problem_results(res, p);
    void *saved = alloc_bytes(query(plan, LH_QUERY_SAVED_BYTES));
    void *fws = alloc_bytes(query(plan, LH_QUERY_FWD_WORKSPACE_BYTES));
    void *bws = alloc_bytes(query(plan, LH_QUERY_BWD_WORKSPACE_BYTES));
    ck_assert_msg(lh_forward(plan, p->q, p->k, p->v, res->out, saved, fws, NULL) == LH_OK, "%s",
                  lh_last_error());
    ck_assert_msg(lh_backward(plan, p->q, p->k, p->v, res->out, p->dout, saved, res->dq, res->dk,
                              res->dv, bws, NULL) == LH_OK, "%s", lh_last_error());
    free(saved);
    free(fws);
    free(bws);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
}

/* Hooks that run the library's own attention step on the same plan. */
static lh_status step_forward_hook(void *u, lh_plan *plan, const void *q, const void *k,
                                   const void *v, void *o, float *lse, void *stream) {
    int *calls = u;
    __atomic_add_fetch(calls, 1, __ATOMIC_RELAXED);
    lh_status st;
    void *ws = test_attention_workspace(plan, &st);
    if (!ws) return st;
    st = lh_attention_forward(plan, q, k, v, o, lse, ws, stream);
    free(ws);
    return st;
}

static lh_status step_backward_hook(void *u, lh_plan *plan, const void *q, const void *k,
                                    const void *v, const void *o, const float *lse,
                                    const void *dO, void *dq, void *dk, void *dv, void *stream) {
    int *calls = u;
    __atomic_add_fetch(calls, 1, __ATOMIC_RELAXED);
    lh_status st;
    void *ws = test_attention_workspace(plan, &st);
    if (!ws) return st;
    st = lh_attention_backward(plan, q, k, v, o, lse, dO, dq, dk, dv, ws, stream);
    free(ws);
    return st;
}

static void expect_identical(const char *what, const problem *a, const problem *b) {
    int same = !memcmp(a->out, b->out, a->nq * 4) && !memcmp(a->dq, b->dq, a->nq * 4) &&
               !memcmp(a->dk, b->dk, a->nkv * 4) && !memcmp(a->dv, b->dv, a->nkv * 4);
    printf("  %s: outputs and gradients %s\n", what, same ? "bit-identical" : "DIFFER");
    ck_assert_msg(same, "%s: outputs or gradients differ", what);
}

static void print_seed(void) { printf("seed %llu\n", (unsigned long long)seed); }

START_TEST(test_cp_lighthouse) {
    /* _i: W = 1, 2, 4, 8; W = 2 runs GQA, W = 4 the BHND layout, W = 8 both. */
    static const int worlds[] = {1, 2, 4, 8};
    int W = worlds[_i];
    if (W == 8 && small) {
        /* Its direct computation in double alone is twice the rest of this program; under
         * valgrind that is a quarter of an hour. The plain and ASan builds run it (valgrind and
         * ThreadSanitizer run small problems). */
        printf("lighthouse W=8: not run with small problems\n");
        return;
    }
    print_seed();
    test_cfg c = lighthouse_cfg(W);
    if (W == 2 || W == 8) c.kv_heads = 1;
    if (W >= 4) c.layout = LH_LAYOUT_BHND;
    check_lighthouse(&c, W);
}
END_TEST

/* The dilated scorer per chunk (section 8 with section 10): the ring against the direct
 * computation, whose chunk plans score with lh_scores_qkv. _i: W = 2 (BNHD), W = 4 (BHND). */
START_TEST(test_cp_dilated) {
    int W = _i == 0 ? 2 : 4;
    print_seed();
    test_cfg c = lighthouse_cfg(W);
    c.scorer = LH_SCORER_DILATED;
    c.dilation = W == 2 ? 4 : 8;
    if (W == 4) c.layout = LH_LAYOUT_BHND;
    printf("dilated scorer, d = %lld:\n", (long long)c.dilation);
    check_lighthouse(&c, W);
}
END_TEST

/* External scores per chunk: each rank given the norm scores of its two chunks reproduces the
 * norm scorer's ring bit for bit (indices, outputs, gradients). W = 2 with GQA and BHND. */
START_TEST(test_cp_external) {
    print_seed();
    test_cfg c = lighthouse_cfg(2);
    c.kv_heads = 1;
    c.layout = LH_LAYOUT_BHND;
    problem p = problem_new(&c), norm = {0}, ext = {0};
    run_ring(&p, 2, NULL, 1, &norm);
    p.cfg.scorer = LH_SCORER_EXTERNAL;
    run_ring(&p, 2, NULL, 1, &ext);
    int same_idx = norm.nidx == ext.nidx && !memcmp(norm.idx, ext.idx, norm.nidx * 4);
    printf("external scores, W = 2: indices %s\n", same_idx ? "identical" : "DIFFER");
    ck_assert(same_idx);
    expect_identical("external scores = norm scorer", &norm, &ext);
    problem_free(&norm);
    problem_free(&ext);
    problem_free(&p);
}
END_TEST

START_TEST(test_cp_dense) {
    static const int worlds[] = {1, 2, 4, 8};
    int W = worlds[_i];
    print_seed();
    test_cfg c = {.batch = 2, .seq_len = small ? 128 : 512, .heads = 2, .kv_heads = 1,
                  .head_dim = 16, .levels = 3, .pooling = 4, .topk = 2048, .mode = LH_MODE_DENSE};
    if (W == 2) c.layout = LH_LAYOUT_BHND;
    printf("dense W=%d N=%lld B=%lld H=2 Hkv=1\n", W, (long long)c.seq_len, (long long)c.batch);
    problem p = problem_new(&c), ring = {0}, single = {0};
    run_ring(&p, W, NULL, 1, &ring);
    run_single(&p, NULL, &single);
    expect_close("out", ring.out, single.out, p.nq, 1e-5);
    expect_close("dq", ring.dq, single.dq, p.nq, 1e-5);
    expect_close("dk", ring.dk, single.dk, p.nkv, 1e-5);
    expect_close("dv", ring.dv, single.dv, p.nkv, 1e-5);
    problem_free(&ring);
    problem_free(&single);
    problem_free(&p);
}
END_TEST

START_TEST(test_cp_hooks) {
    print_seed();
    int calls = 0;
    hooks hk = {step_forward_hook, step_backward_hook, &calls};
    test_cfg c = lighthouse_cfg(2);
    test_cfg d = {.batch = 1, .seq_len = 256, .heads = 2, .head_dim = 16, .levels = 3,
                  .pooling = 4, .topk = 2048, .mode = LH_MODE_DENSE};
    const test_cfg *cfgs[] = {&c, &d};
    for (int i = 0; i < 2; i++) {
        problem p = problem_new(cfgs[i]), a = {0}, b = {0};
        run_ring(&p, 2, NULL, 1, &a);
        run_ring(&p, 2, &hk, 1, &b);
        expect_identical(i ? "dense, W = 2" : "lighthouse, W = 2", &a, &b);
        problem_free(&a);
        problem_free(&b);
        /* Without a ring the hook replaces the attention step too. */
        problem e = {0}, f = {0};
        run_single(&p, NULL, &e);
        run_single(&p, &hk, &f);
        expect_identical(i ? "dense, no ring" : "lighthouse, no ring", &e, &f);
        problem_free(&e);
        problem_free(&f);
        problem_free(&p);
    }
    ck_assert_int_eq(calls, 2 * (2 * 2 + 2));
}
END_TEST

START_TEST(test_cp_failing_rank) {
    print_seed();
    test_cfg c = lighthouse_cfg(2);
    problem p = problem_new(&c), r = {0};
    run_ring_ex(&p, 2, NULL, 0, &r, 1);
    problem_free(&r);
    problem_free(&p);
}
END_TEST

START_TEST(test_cp_validation) {
    lh_ring *ring = NULL;
    lh_plan *plan = NULL;
    ck_assert_int_eq(lh_ring_create_local(2, &ring), LH_OK);
    test_cfg c = lighthouse_cfg(2);
    c.topk = 256;   /* not a multiple of 128 * 2W = 512 */
    ck_assert_int_eq(make_plan(&c, ring, 0, NULL, &plan), LH_ERROR_TOPK);
    test_cfg d = {.batch = 1, .seq_len = 258, .heads = 2, .head_dim = 16, .levels = 3,
                  .pooling = 4, .topk = 2048, .mode = LH_MODE_DENSE};   /* 258 % 4 != 0 */
    ck_assert_int_eq(make_plan(&d, ring, 0, NULL, &plan), LH_ERROR_SEQ_DIVISIBILITY);
    d.seq_len = 256;
    ck_assert_int_eq(make_plan(&d, ring, 2, NULL, &plan), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(make_plan(&d, ring, -1, NULL, &plan), LH_ERROR_INVALID_VALUE);
    /* A live plan keeps its ring alive. */
    ck_assert_int_eq(make_plan(&d, ring, 1, NULL, &plan), LH_OK);
    ck_assert_int_eq(lh_ring_destroy(ring), LH_ERROR_BAD_STATE);
    /* Stage entry points refuse ring plans. */
    int64_t n = query(plan, LH_QUERY_LOCAL_SEQ_LEN);
    ck_assert_int_eq(n, 128);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
    c = lighthouse_cfg(2);
    ck_assert_int_eq(make_plan(&c, ring, 0, NULL, &plan), LH_OK);
    float x[4];
    int32_t idx[4];
    ck_assert_int_eq(lh_scores(plan, x, x, x, x, x, NULL), LH_ERROR_UNSUPPORTED);
    ck_assert_int_eq(lh_select(plan, x, x, idx, x, NULL), LH_ERROR_UNSUPPORTED);
    ck_assert_int_eq(lh_gather(plan, x, x, x, idx, x, x, x, x, NULL), LH_ERROR_UNSUPPORTED);
    ck_assert_int_eq(lh_scatter(plan, idx, x, x, x, NULL), LH_ERROR_UNSUPPORTED);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
    /* Every plan of a ring runs on one backend (a CUDA context exists only where a GPU does). */
    lh_context *gpu = NULL;
    if (lh_context_create(LH_BACKEND_CUDA, 0, &gpu) == LH_OK) {
        ck_assert_int_eq(make_plan(&c, ring, 1, NULL, &plan), LH_OK);
        lh_plan *other = NULL;
        ck_assert_int_eq(lh_plan_create(gpu, &other), LH_OK);
        ck_assert_int_eq(lh_plan_set_ring(other, ring, 0), LH_ERROR_INVALID_VALUE);
        ck_assert_int_eq(lh_plan_destroy(other), LH_OK);
        ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
        ck_assert_int_eq(lh_context_destroy(gpu), LH_OK);
    } else {
        printf("no CUDA context here: the mixed-backend rule is not exercised\n");
    }
    ck_assert_int_eq(lh_ring_destroy(ring), LH_OK);
}
END_TEST

int main(void) {
    const char *env = getenv("LIGHTHOUSE_TEST_SEED");
    seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) * 2654435761u + 1;
    printf("test_cp seed %llu (set LIGHTHOUSE_TEST_SEED to repeat)\n", (unsigned long long)seed);
    small = RUNNING_ON_VALGRIND || getenv("LIGHTHOUSE_TEST_CP_SMALL") != NULL;
    if (small) printf("small problems (valgrind or LIGHTHOUSE_TEST_CP_SMALL)\n");
    /* A rank that waits for a failed peer must give up long before ctest's timeout. */
    setenv("LIGHTHOUSE_RING_TIMEOUT_S", "60", 0);
    Suite *s = suite_create("context parallelism");
    TCase *tc = tcase_create("cpu");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_cp_lighthouse, 0, 4);
    tcase_add_loop_test(tc, test_cp_dense, 0, 4);
    tcase_add_loop_test(tc, test_cp_dilated, 0, 2);
    tcase_add_test(tc, test_cp_external);
    tcase_add_test(tc, test_cp_hooks);
    tcase_add_test(tc, test_cp_failing_rank);
    tcase_add_test(tc, test_cp_validation);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
