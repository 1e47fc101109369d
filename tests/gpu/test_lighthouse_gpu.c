/*
 * test_lighthouse_gpu.c - Lighthouse attention on the GPU against the CPU reference backend.
 *
 *  (a) lh_select on the golden scores gives the golden indices;
 *  (b) lh_scores equals the CPU's to 1e-6 relative, and lh_select on those scores equals the
 *      CPU's lh_select on the same scores exactly (also with many exact ties);
 *  (c) forward + backward in bf16 and fp16 against the CPU backend on the same rounded inputs:
 *      indices identical, out/dq/dk/dv within 2e-2 (bf16) / 5e-3 (fp16) relative (max-norm);
 *      large configurations are checked on a sample of (batch, kv-head group) slices, which the
 *      CPU runs as plans of their own (B = 1, H = H/Hkv, Hkv = 1);
 *  (d) repeated calls are bit-identical;
 *  (e) forward + backward captured into a CUDA graph and replayed equal direct calls.
 * Outputs are poisoned (NaN) before every call. Exit 77 without a GPU.
 *
 *   test_lighthouse_gpu [--quick|--tiny]  (--quick: the smaller configurations only; --tiny: the
 *                                         golden selection and the smallest pipeline, for racecheck)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_common.h"

#ifndef LH_GOLDEN_DIR
#define LH_GOLDEN_DIR "tests/golden"
#endif

static gpu_env env;
static lh_context *gpu_ctx, *cpu_ctx;
static uint64_t rng_state;

typedef struct lcfg {
    const char *name;
    lh_dtype dtype;
    lh_layout layout;
    int64_t B, N, H, Hkv, D, L, p, topk;
    int slices; /* (c): (batch, group) slices compared on the CPU; 0 = all */
    int recompute; /* LH_PARAM_RECOMPUTE_SUBSEQ: backward gathers the sub-sequence again */
    int timing;    /* LH_PARAM_STAGE_TIMING: stage times checked after the first run */
} lcfg;

static lh_plan *make_plan(lh_context *ctx, const lcfg *c, lh_dtype dtype, int64_t B, int64_t H,
                          int64_t Hkv) {
    lh_plan *p;
    LH_MUST(lh_plan_create(ctx, &p));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_BATCH, B));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_SEQ_LEN, c->N));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEADS, H));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_KV_HEADS, Hkv));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_HEAD_DIM, c->D));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_DTYPE, dtype));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_LAYOUT, c->layout));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_LEVELS, c->L));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_POOLING, c->p));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_TOPK, c->topk));
    LH_MUST(lh_plan_set_i64(p, LH_PARAM_RECOMPUTE_SUBSEQ, c->recompute));
    if (ctx == gpu_ctx) LH_MUST(lh_plan_set_i64(p, LH_PARAM_STAGE_TIMING, c->timing));
    LH_MUST(lh_plan_finalize(p));
    return p;
}

static void *gpu_alloc_or_null(size_t bytes) { return bytes ? gpu_alloc(&env, bytes) : NULL; }

/* Offset of (b, t, h, 0) in a tensor of `heads` heads in layout `lay`. */
static size_t off4(lh_layout lay, int64_t N, int64_t heads, int64_t D, int64_t b, int64_t t,
                   int64_t h) {
    if (lay == LH_LAYOUT_BNHD) return (size_t)(((b * N + t) * heads + h) * D);
    return (size_t)(((b * heads + h) * N + t) * D);
}

/* Copies heads [h0, h0 + hn) of batch b of x into (or, with back = 1, out of) a [1, N, hn, D]
 * tensor of the same layout. */
static void slice_heads(lh_layout lay, int64_t N, int64_t heads, int64_t D, int64_t b, int64_t h0,
                        int64_t hn, float *x, float *s, int back) {
    for (int64_t t = 0; t < N; t++)
        for (int64_t h = 0; h < hn; h++) {
            float *full = x + off4(lay, N, heads, D, b, t, h0 + h);
            float *part = s + off4(lay, N, hn, D, 0, t, h);
            if (back) memcpy(full, part, (size_t)D * 4);
            else memcpy(part, full, (size_t)D * 4);
        }
}

static float *decode(const void *dev, size_t n, lh_dtype dtype) {
    return gpu_download_f32(&env, dev, n, dtype);
}

static float *load_f32(const char *dir, const char *name, size_t n) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *x = malloc(n * 4);
    size_t got = fread(x, 4, n, f);
    fclose(f);
    if (got != n) {
        free(x);
        return NULL;
    }
    return x;
}

/* ---- (a) golden selection --------------------------------------------------------------- */

static void test_golden_select(void) {
    static const lcfg goldens[] = {
        {"g1", LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 1, 2048, 2, 2, 32, 2, 4, 128, 0, 0, 0},
        {"g2", LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 2, 2048, 1, 1, 32, 3, 2, 128, 0, 0, 0},
        {"g3", LH_DTYPE_BFLOAT16, LH_LAYOUT_BNHD, 1, 8192, 1, 1, 32, 3, 4, 256, 0, 0, 0},
    };
    const char *dir = getenv("LIGHTHOUSE_GOLDEN_DIR") ? getenv("LIGHTHOUSE_GOLDEN_DIR") : LH_GOLDEN_DIR;
    for (size_t g = 0; g < sizeof goldens / sizeof goldens[0]; g++) {
        const lcfg *c = &goldens[g];
        lh_plan *p = make_plan(gpu_ctx, c, c->dtype, c->B, c->H, c->Hkv);
        size_t ns = (size_t)(c->B * c->H * plan_query(p, LH_QUERY_PYRAMID_LEN));
        size_t ni = (size_t)(c->B * c->H * plan_query(p, LH_QUERY_SUBSEQ_LEN));
        char name[64];
        snprintf(name, sizeof name, "%s.scores_qk.f32", c->name);
        float *sq = load_f32(dir, name, ns);
        snprintf(name, sizeof name, "%s.scores_kq.f32", c->name);
        float *sk = load_f32(dir, name, ns);
        snprintf(name, sizeof name, "%s.indices.i32", c->name);
        int32_t *want = (int32_t *)load_f32(dir, name, ni);
        if (!sq || !sk || !want) {
            check(false, "golden_select", "%s: cannot read the golden files in %s (set LIGHTHOUSE_GOLDEN_DIR)",
                  c->name, dir);
        } else {
            void *dsq = gpu_alloc(&env, ns * 4), *dsk = gpu_alloc(&env, ns * 4);
            void *didx = gpu_alloc(&env, ni * 4);
            void *ws = gpu_alloc_or_null((size_t)plan_query(p, LH_QUERY_STAGE_WORKSPACE_BYTES));
            gpu_upload(&env, dsq, sq, ns * 4);
            gpu_upload(&env, dsk, sk, ns * 4);
            gpu_poison(&env, didx, ni * 4);
            LH_MUST(lh_select(p, dsq, dsk, didx, ws, NULL));
            int32_t *got = malloc(ni * 4);
            gpu_download(&env, got, didx, ni * 4);
            size_t bad = 0;
            for (size_t i = 0; i < ni; i++) bad += got[i] != want[i];
            check(bad == 0, "golden_select", "%s: %zu of %zu indices differ", c->name, bad, ni);
            free(got);
            gpu_free(&env, dsq);
            gpu_free(&env, dsk);
            gpu_free(&env, didx);
            if (ws) gpu_free(&env, ws);
        }
        free(sq);
        free(sk);
        free(want);
        lh_plan_destroy(p);
    }
}

/* ---- (b) scores and selection on identical scores ---------------------------------------- */

static void test_scores_select(const lcfg *c) {
    lh_plan *gp = make_plan(gpu_ctx, c, c->dtype, c->B, c->H, c->Hkv);
    lh_plan *cp = make_plan(cpu_ctx, c, LH_DTYPE_FLOAT32, c->B, c->H, c->Hkv);
    int64_t s_total = plan_query(gp, LH_QUERY_PYRAMID_LEN), s_sel = plan_query(gp, LH_QUERY_SUBSEQ_LEN);
    size_t nq = (size_t)(c->B * c->N * c->H * c->D), nk = (size_t)(c->B * c->N * c->Hkv * c->D);
    size_t nsq = (size_t)(c->B * c->H * s_total), nsk = (size_t)(c->B * c->Hkv * s_total);
    size_t ni = (size_t)(c->B * c->H * s_sel);
    uint16_t *qb = malloc(nq * 2), *kb = malloc(nk * 2);
    float *qv = malloc(nq * 4), *kv = malloc(nk * 4);
    random_inputs(&rng_state, c->dtype, nq, qb, qv);
    random_inputs(&rng_state, c->dtype, nk, kb, kv);
    void *dq = gpu_alloc(&env, nq * 2), *dk = gpu_alloc(&env, nk * 2);
    void *dsq = gpu_alloc(&env, nsq * 4), *dsk = gpu_alloc(&env, nsk * 4), *didx = gpu_alloc(&env, ni * 4);
    void *ws = gpu_alloc_or_null((size_t)plan_query(gp, LH_QUERY_STAGE_WORKSPACE_BYTES));
    gpu_upload(&env, dq, qb, nq * 2);
    gpu_upload(&env, dk, kb, nk * 2);
    gpu_poison(&env, dsq, nsq * 4);
    gpu_poison(&env, dsk, nsk * 4);
    LH_MUST(lh_scores(gp, dq, dk, dsq, dsk, ws, NULL));
    float *gsq = malloc(nsq * 4), *gsk = malloc(nsk * 4), *csq = malloc(nsq * 4), *csk = malloc(nsk * 4);
    gpu_download(&env, gsq, dsq, nsq * 4);
    gpu_download(&env, gsk, dsk, nsk * 4);
    size_t cws_b = (size_t)plan_query(cp, LH_QUERY_STAGE_WORKSPACE_BYTES);
    void *cws = cws_b ? malloc(cws_b) : NULL;
    LH_MUST(lh_scores(cp, qv, kv, csq, csk, cws, NULL));
    double worst = 0;
    size_t differ = 0; /* the CPU sums in the GPU kernel's order: expected bit-identical */
    for (size_t i = 0; i < nsq + nsk; i++) {
        float a = i < nsq ? gsq[i] : gsk[i - nsq], r = i < nsq ? csq[i] : csk[i - nsq];
        double e = fabs((double)a - r) / fmax(fabs((double)r), 1e-30);
        if (isnan(a)) e = INFINITY;
        if (e > worst) worst = e;
        differ += memcmp(&a, &r, sizeof a) != 0;
    }
    check(worst <= 1e-6, "scores", "%s: max relative difference to the CPU %.2e, %zu of %zu scores not "
          "bit-identical", c->name, worst, differ, nsq + nsk);

    /* selection on the GPU's scores by both backends, then on scores with many exact ties */
    int32_t *gi = malloc(ni * 4), *ci = malloc(ni * 4);
    for (int ties = 0; ties < 2; ties++) {
        if (ties) {
            for (size_t i = 0; i < nsq; i++) gsq[i] = floorf(gsq[i] * 2.0f) / 2.0f;
            for (size_t i = 0; i < nsk; i++) gsk[i] = floorf(gsk[i] * 2.0f) / 2.0f;
            gpu_upload(&env, dsq, gsq, nsq * 4);
            gpu_upload(&env, dsk, gsk, nsk * 4);
        }
        gpu_poison(&env, didx, ni * 4);
        LH_MUST(lh_select(gp, dsq, dsk, didx, ws, NULL));
        gpu_download(&env, gi, didx, ni * 4);
        LH_MUST(lh_select(cp, gsq, gsk, ci, cws, NULL));
        size_t bad = 0;
        for (size_t i = 0; i < ni; i++) bad += gi[i] != ci[i];
        check(bad == 0, ties ? "select_ties" : "select", "%s: %zu of %zu indices differ from the CPU's",
              c->name, bad, ni);
    }
    free(gi);
    free(ci);
    free(qb), free(kb), free(qv), free(kv), free(gsq), free(gsk), free(csq), free(csk), free(cws);
    gpu_free(&env, dq), gpu_free(&env, dk), gpu_free(&env, dsq), gpu_free(&env, dsk);
    gpu_free(&env, didx);
    if (ws) gpu_free(&env, ws);
    lh_plan_destroy(gp);
    lh_plan_destroy(cp);
}

/* ---- stage timing (LH_PARAM_STAGE_TIMING) ---------------------------------------------------- */

/* Every stage of `ran` (a bit per lh_stage) has a time in (0, 10 s); every other stage reports
 * LH_ERROR_BAD_STATE. */
static void check_stage_times(lh_plan *p, const char *name, unsigned ran) {
    int good = 0;
    char detail[512] = "";
    size_t used = 0;
    for (int s = 0; s < LH_STAGE_COUNT; s++) {
        double ms = -1.0;
        lh_status st = lh_plan_get_stage_ms(p, (lh_stage)s, &ms);
        bool expect = (ran >> s) & 1u;
        bool ok = expect ? (st == LH_OK && ms > 0.0 && ms < 1e4) : (st == LH_ERROR_BAD_STATE);
        good += ok;
        used += (size_t)snprintf(detail + used, used < sizeof detail ? sizeof detail - used : 0,
                                 " %d:%s%.3f", s, st == LH_OK ? "" : "no ", ms);
    }
    check(good == LH_STAGE_COUNT, "stage_times", "%s: %d of %d stages as expected (ms:%s)", name,
          good, LH_STAGE_COUNT, detail);
}

#define FWD_STAGES ((1u << LH_STAGE_SCORES) | (1u << LH_STAGE_SELECT) | (1u << LH_STAGE_GATHER) | \
                    (1u << LH_STAGE_ATTENTION_FORWARD) | (1u << LH_STAGE_SCATTER))
#define BWD_STAGES ((1u << LH_STAGE_GATHER_DOUT) | (1u << LH_STAGE_ATTENTION_BACKWARD) | \
                    (1u << LH_STAGE_POOL_GRAD))

typedef struct param_value { lh_param k; int64_t v; } param_value;

/* A GPU plan with these parameters set, not yet finalized. */
static lh_plan *plan_with(const param_value *pv, size_t n) {
    lh_plan *p;
    LH_MUST(lh_plan_create(gpu_ctx, &p));
    for (size_t i = 0; i < n; i++) LH_MUST(lh_plan_set_i64(p, pv[i].k, pv[i].v));
    return p;
}

/* Dense mode times its two attention stages; a ring plan refuses timing at finalize. */
static void test_stage_timing_dense_and_ring(void) {
    const param_value dense[] = {
        {LH_PARAM_SEQ_LEN, 1024}, {LH_PARAM_HEADS, 2}, {LH_PARAM_HEAD_DIM, 64},
        {LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16}, {LH_PARAM_MODE, LH_MODE_DENSE},
        {LH_PARAM_STAGE_TIMING, 1}};
    lh_plan *p = plan_with(dense, sizeof dense / sizeof dense[0]);
    LH_MUST(lh_plan_finalize(p));
    size_t n = 1024 * 2 * 64;
    void *q = gpu_alloc(&env, n * 2), *o = gpu_alloc(&env, n * 2), *g = gpu_alloc(&env, n * 2);
    size_t sb = (size_t)plan_query(p, LH_QUERY_SAVED_BYTES);
    void *saved = gpu_alloc_or_null(sb);
    void *wf = gpu_alloc_or_null((size_t)plan_query(p, LH_QUERY_FWD_WORKSPACE_BYTES));
    void *wb = gpu_alloc_or_null((size_t)plan_query(p, LH_QUERY_BWD_WORKSPACE_BYTES));
    uint16_t *bits = malloc(n * 2);
    float *vals = malloc(n * 4);
    random_inputs(&rng_state, LH_DTYPE_BFLOAT16, n, bits, vals);
    gpu_upload(&env, q, bits, n * 2);
    double ms = -1.0;
    check(lh_plan_get_stage_ms(p, LH_STAGE_ATTENTION_FORWARD, &ms) == LH_ERROR_BAD_STATE,
          "stage_times_before_run", "no call yet: %s", lh_last_error());
    LH_MUST(lh_forward(p, q, q, q, o, saved, wf, NULL));
    LH_MUST(lh_backward(p, q, q, q, o, q, saved, g, g, g, wb, NULL));
    gpu_sync(&env);
    check_stage_times(p, "dense_b1_n1k_h2_d64",
                      (1u << LH_STAGE_ATTENTION_FORWARD) | (1u << LH_STAGE_ATTENTION_BACKWARD));
    free(bits), free(vals);
    void *all[] = {q, o, g, saved, wf, wb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) gpu_free(&env, all[i]);
    lh_plan_destroy(p);

    lh_ring *ring = NULL;
    LH_MUST(lh_ring_create_local(1, &ring));
    const param_value ringed[] = {
        {LH_PARAM_SEQ_LEN, 8192}, {LH_PARAM_HEADS, 2}, {LH_PARAM_HEAD_DIM, 64},
        {LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16}, {LH_PARAM_LEVELS, 2}, {LH_PARAM_TOPK, 256},
        {LH_PARAM_STAGE_TIMING, 1}};
    p = plan_with(ringed, sizeof ringed / sizeof ringed[0]);
    LH_MUST(lh_plan_set_ring(p, ring, 0));
    lh_status st = lh_plan_finalize(p);
    check(st == LH_ERROR_UNSUPPORTED && strstr(lh_last_error(), "STAGE_TIMING"), "stage_timing_ring",
          "finalize: %s (%s)", lh_status_string(st), lh_last_error());
    lh_plan_destroy(p);
    lh_ring_destroy(ring);
}

/* ---- (c, d, e) forward and backward --------------------------------------------------------- */

typedef struct run_bufs {
    void *q, *k, *v, *dout, *out, *saved, *wf, *wb, *dq, *dk, *dv;
    size_t nq, nk, saved_b;
} run_bufs;

static void poison_outputs(const run_bufs *b) {
    gpu_poison(&env, b->out, b->nq * 2);
    gpu_poison(&env, b->saved, b->saved_b);
    gpu_poison(&env, b->dq, b->nq * 2);
    gpu_poison(&env, b->dk, b->nk * 2);
    gpu_poison(&env, b->dv, b->nk * 2);
}

static lh_status run_both(lh_plan *p, const run_bufs *b, CUstream s) {
    lh_status st = lh_forward(p, b->q, b->k, b->v, b->out, b->saved, b->wf, s);
    if (st == LH_OK)
        st = lh_backward(p, b->q, b->k, b->v, NULL, b->dout, b->saved, b->dq, b->dk, b->dv, b->wb, s);
    return st;
}

/* out, saved, dq, dk, dv as raw bytes. */
static uint8_t *snapshot(const run_bufs *b) {
    size_t total = b->nq * 4 + b->saved_b + b->nk * 4;
    uint8_t *x = malloc(total), *d = x;
    gpu_download(&env, d, b->out, b->nq * 2), d += b->nq * 2;
    gpu_download(&env, d, b->saved, b->saved_b), d += b->saved_b;
    gpu_download(&env, d, b->dq, b->nq * 2), d += b->nq * 2;
    gpu_download(&env, d, b->dk, b->nk * 2), d += b->nk * 2;
    gpu_download(&env, d, b->dv, b->nk * 2);
    return x;
}

static void test_pipeline(const lcfg *c, int repeat_and_graph) {
    lh_plan *p = make_plan(gpu_ctx, c, c->dtype, c->B, c->H, c->Hkv);
    int64_t s_sel = plan_query(p, LH_QUERY_SUBSEQ_LEN), G = c->H / c->Hkv;
    run_bufs b = {.nq = (size_t)(c->B * c->N * c->H * c->D), .nk = (size_t)(c->B * c->N * c->Hkv * c->D),
                  .saved_b = (size_t)plan_query(p, LH_QUERY_SAVED_BYTES)};
    b.q = gpu_alloc(&env, b.nq * 2), b.dout = gpu_alloc(&env, b.nq * 2), b.out = gpu_alloc(&env, b.nq * 2);
    b.dq = gpu_alloc(&env, b.nq * 2), b.k = gpu_alloc(&env, b.nk * 2), b.v = gpu_alloc(&env, b.nk * 2);
    b.dk = gpu_alloc(&env, b.nk * 2), b.dv = gpu_alloc(&env, b.nk * 2), b.saved = gpu_alloc(&env, b.saved_b);
    b.wf = gpu_alloc_or_null((size_t)plan_query(p, LH_QUERY_FWD_WORKSPACE_BYTES));
    b.wb = gpu_alloc_or_null((size_t)plan_query(p, LH_QUERY_BWD_WORKSPACE_BYTES));
    float *hv[4];
    void *dev[4] = {b.q, b.k, b.v, b.dout};
    size_t cnt[4] = {b.nq, b.nk, b.nk, b.nq};
    uint16_t *bits = malloc(b.nq * 2);
    for (int i = 0; i < 4; i++) {
        hv[i] = malloc(cnt[i] * 4);
        random_inputs(&rng_state, c->dtype, cnt[i], bits, hv[i]);
        gpu_upload(&env, dev[i], bits, cnt[i] * 2);
    }
    free(bits);
    poison_outputs(&b);
    LH_MUST(run_both(p, &b, NULL));
    gpu_sync(&env);
    if (c->timing)
        check_stage_times(p, c->name,
                          FWD_STAGES | BWD_STAGES | (c->recompute ? 1u << LH_STAGE_REGATHER : 0u));
    float *go = decode(b.out, b.nq, c->dtype), *gdq = decode(b.dq, b.nq, c->dtype);
    float *gdk = decode(b.dk, b.nk, c->dtype), *gdv = decode(b.dv, b.nk, c->dtype);
    size_t ni = (size_t)(c->B * c->H * s_sel);
    int32_t *gidx = malloc(ni * 4);
    gpu_download(&env, gidx, b.saved, ni * 4); /* `saved` starts with the index list */

    /* the CPU on (batch, kv group) slices: B = 1, H = G, Hkv = 1 */
    lh_plan *cp = make_plan(cpu_ctx, c, LH_DTYPE_FLOAT32, 1, G, 1);
    size_t sq_n = (size_t)(c->N * G * c->D), sk_n = (size_t)(c->N * c->D);
    float *sq = malloc(sq_n * 4), *sk = malloc(sk_n * 4), *sv = malloc(sk_n * 4), *sd = malloc(sq_n * 4);
    float *co = malloc(sq_n * 4), *cdq = malloc(sq_n * 4), *cdk = malloc(sk_n * 4), *cdv = malloc(sk_n * 4);
    float *ro = malloc(sq_n * 4), *rdq = malloc(sq_n * 4), *rdk = malloc(sk_n * 4), *rdv = malloc(sk_n * 4);
    size_t csb = (size_t)plan_query(cp, LH_QUERY_SAVED_BYTES);
    void *csaved = malloc(csb);
    size_t cwf_b = (size_t)plan_query(cp, LH_QUERY_FWD_WORKSPACE_BYTES), cwb_b = (size_t)plan_query(cp, LH_QUERY_BWD_WORKSPACE_BYTES);
    void *cwf = cwf_b ? malloc(cwf_b) : NULL, *cwb = cwb_b ? malloc(cwb_b) : NULL;
    int64_t total = c->B * c->Hkv, want = c->slices > 0 && c->slices < total ? c->slices : total;
    double e_out = 0, e_dq = 0, e_dk = 0, e_dv = 0;
    size_t bad_idx = 0, idx_n = 0;
    for (int64_t si = 0; si < want; si++) {
        /* spread the sampled slices over batches and groups; the last one is always included */
        int64_t sl = want == total ? si : (si == want - 1 ? total - 1 : si * total / want);
        int64_t bb = sl / c->Hkv, g = sl % c->Hkv;
        slice_heads(c->layout, c->N, c->H, c->D, bb, g * G, G, hv[0], sq, 0);
        slice_heads(c->layout, c->N, c->Hkv, c->D, bb, g, 1, hv[1], sk, 0);
        slice_heads(c->layout, c->N, c->Hkv, c->D, bb, g, 1, hv[2], sv, 0);
        slice_heads(c->layout, c->N, c->H, c->D, bb, g * G, G, hv[3], sd, 0);
        LH_MUST(lh_forward(cp, sq, sk, sv, co, csaved, cwf, NULL));
        LH_MUST(lh_backward(cp, sq, sk, sv, co, sd, csaved, cdq, cdk, cdv, cwb, NULL));
        const int32_t *cidx = csaved;
        for (int64_t h = 0; h < G; h++)
            for (int64_t s = 0; s < s_sel; s++, idx_n++)
                bad_idx += cidx[h * s_sel + s] != gidx[((bb * c->H) + g * G + h) * s_sel + s];
        slice_heads(c->layout, c->N, c->H, c->D, bb, g * G, G, go, ro, 0);
        slice_heads(c->layout, c->N, c->H, c->D, bb, g * G, G, gdq, rdq, 0);
        slice_heads(c->layout, c->N, c->Hkv, c->D, bb, g, 1, gdk, rdk, 0);
        slice_heads(c->layout, c->N, c->Hkv, c->D, bb, g, 1, gdv, rdv, 0);
        e_out = fmax(e_out, rel_error(ro, co, sq_n));
        e_dq = fmax(e_dq, rel_error(rdq, cdq, sq_n));
        e_dk = fmax(e_dk, rel_error(rdk, cdk, sk_n));
        e_dv = fmax(e_dv, rel_error(rdv, cdv, sk_n));
        if (isnan(rel_error(ro, co, sq_n))) e_out = NAN;
        if (isnan(rel_error(rdq, cdq, sq_n))) e_dq = NAN;
        if (isnan(rel_error(rdk, cdk, sk_n))) e_dk = NAN;
        if (isnan(rel_error(rdv, cdv, sk_n))) e_dv = NAN;
    }
    double tol = c->dtype == LH_DTYPE_BFLOAT16 ? 2e-2 : 5e-3;
    check(bad_idx == 0, "indices", "%s: %zu of %zu differ from the CPU's (%lld of %lld slices)", c->name,
          bad_idx, idx_n, (long long)want, (long long)total);
    check(e_out <= tol, "out", "%s: rel error %.2e (tol %.0e)", c->name, e_out, tol);
    check(e_dq <= tol, "dq", "%s: rel error %.2e (tol %.0e)", c->name, e_dq, tol);
    check(e_dk <= tol, "dk", "%s: rel error %.2e (tol %.0e)", c->name, e_dk, tol);
    check(e_dv <= tol, "dv", "%s: rel error %.2e (tol %.0e)", c->name, e_dv, tol);

    if (repeat_and_graph) {
        uint8_t *first = snapshot(&b);
        size_t bytes = b.nq * 4 + b.saved_b + b.nk * 4;
        poison_outputs(&b);
        LH_MUST(run_both(p, &b, NULL));
        gpu_sync(&env);
        uint8_t *again = snapshot(&b);
        check(memcmp(first, again, bytes) == 0, "repeat", "%s: second forward+backward %s", c->name,
              memcmp(first, again, bytes) == 0 ? "bit-identical" : "DIFFERS");
        free(again);
        CUstream s;
        CUgraph graph = NULL;
        CUgraphExec exec = NULL;
        if (env.cu->StreamCreate(&s, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) exit(1);
        CUresult r = env.cu->StreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL);
        lh_status st = run_both(p, &b, s);
        CUresult r2 = env.cu->StreamEndCapture(s, &graph);
        if (r == CUDA_SUCCESS && st == LH_OK && r2 == CUDA_SUCCESS)
            r = env.cu->GraphInstantiate(&exec, graph, 0);
        check(exec != NULL, "graph_capture", "%s: begin %d, lh calls %s (%s), end %d", c->name, (int)r,
              lh_status_string(st), lh_last_error(), (int)r2);
        if (exec) {
            poison_outputs(&b);
            r = env.cu->GraphLaunch(exec, s);
            CUresult rs = env.cu->StreamSynchronize(s);
            uint8_t *replay = snapshot(&b);
            bool same = memcmp(first, replay, bytes) == 0;
            check(r == CUDA_SUCCESS && rs == CUDA_SUCCESS && same, "graph_replay",
                  "%s: launch %d, sync %d, replay %s direct calls", c->name, (int)r, (int)rs,
                  same ? "bit-identical to" : "DIFFERS from");
            free(replay);
            env.cu->GraphExecDestroy(exec);
        }
        if (graph) env.cu->GraphDestroy(graph);
        env.cu->StreamDestroy(s);
        free(first);
        /* the captured calls (and the graph's replay) are not timed: nothing to read back */
        if (c->timing) check_stage_times(p, "after graph capture", 0u);
    }

    for (int i = 0; i < 4; i++) free(hv[i]);
    free(go), free(gdq), free(gdk), free(gdv), free(gidx);
    free(sq), free(sk), free(sv), free(sd), free(co), free(cdq), free(cdk), free(cdv);
    free(ro), free(rdq), free(rdk), free(rdv), free(csaved), free(cwf), free(cwb);
    void *all[] = {b.q, b.k, b.v, b.dout, b.out, b.saved, b.wf, b.wb, b.dq, b.dk, b.dv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) gpu_free(&env, all[i]);
    lh_plan_destroy(cp);
    lh_plan_destroy(p);
}

int main(int argc, char **argv) {
    const char *prog = "test_lighthouse_gpu";
    int tiny = argc > 1 && strcmp(argv[1], "--tiny") == 0;
    int quick = tiny || (argc > 1 && strcmp(argv[1], "--quick") == 0);
    int rc = gpu_env_init(&env, prog);
    if (rc) return rc;
    lh_status st = lh_context_create(LH_BACKEND_CUDA, 0, &gpu_ctx);
    if (st == LH_ERROR_BACKEND_UNAVAILABLE) {
        printf("SKIP: %s: %s\n", prog, lh_last_error());
        return GPU_SKIP;
    }
    LH_MUST(st);
    LH_MUST(lh_context_create(LH_BACKEND_CPU, 0, &cpu_ctx));
    rng_state = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(now_seconds() * 1e6);
    printf("seed %llu\n", (unsigned long long)rng_state);

    test_golden_select();

    const lh_dtype BF = LH_DTYPE_BFLOAT16, FP = LH_DTYPE_FLOAT16;
    const lh_layout BNHD = LH_LAYOUT_BNHD, BHND = LH_LAYOUT_BHND;
    const lcfg sel[] = {
        /* name                 dtype layout B  N       H  Hkv D    L  p  topk slices recompute timing */
        {"sel_n131k_l3_p4_k2048", BF, BNHD, 2, 131072, 4, 2, 128, 3, 4, 2048, 0, 0, 0},
        {"sel_n131k_l2_p8_tile16k", FP, BHND, 1, 131072, 2, 1, 64, 2, 8, 128, 0, 0, 0},
        {"sel_n64k_l4_p2_tile4k", BF, BNHD, 1, 65536, 2, 2, 128, 4, 2, 256, 0, 0, 0},
        {"sel_n16k_l3_p8", FP, BNHD, 2, 16384, 2, 2, 64, 3, 8, 256, 0, 0, 0},
    };
    for (size_t i = tiny ? 4 : quick ? 3 : 0; i < sizeof sel / sizeof sel[0]; i++) test_scores_select(&sel[i]);

    const lcfg full[] = {
        {"bf16_bnhd_b2_n2k_h4kv2_d64_l2p4_k128_timed", BF, BNHD, 2, 2048, 4, 2, 64, 2, 4, 128, 0, 0, 1},
        {"fp16_bhnd_b2_n8k_h4kv2_d128_l3p4_k256_recompute_timed", FP, BHND, 2, 8192, 4, 2, 128, 3, 4, 256, 0, 1, 1},
        {"fp16_bhnd_b1_n8k_h2_d128_l3p2_k256", FP, BHND, 1, 8192, 2, 2, 128, 3, 2, 256, 0, 0, 0},
        {"bf16_bhnd_b2_n8k_h4kv1_d128_l4p2_k128", BF, BHND, 2, 8192, 4, 1, 128, 4, 2, 128, 0, 0, 0},
        {"fp16_bnhd_b1_n16k_h4kv2_d64_l3p4_k512", FP, BNHD, 1, 16384, 4, 2, 64, 3, 4, 512, 0, 0, 0},
        {"bf16_bnhd_b1_n4k_h2kv1_d128_l2p2_k2048", BF, BNHD, 1, 4096, 2, 1, 128, 2, 2, 2048, 0, 0, 0},
        {"fp16_bnhd_b1_n131k_h2_d64_l4p8_k128", FP, BNHD, 1, 131072, 2, 2, 64, 4, 8, 128, 1, 0, 0},
        {"bf16_bnhd_b1_n32k_h2kv1_d128_l2p8_k512", BF, BNHD, 1, 32768, 2, 1, 128, 2, 8, 512, 1, 0, 0},
        {"bf16_bhnd_b1_n131k_h4kv2_d128_l3p4_k2048", BF, BHND, 1, 131072, 4, 2, 128, 3, 4, 2048, 1, 0, 0},
    };
    size_t nfull = tiny ? 1 : quick ? 4 : sizeof full / sizeof full[0];
    for (size_t i = 0; i < nfull; i++) test_pipeline(&full[i], i == 0);
    test_stage_timing_dense_and_ring();

    lh_context_destroy(cpu_ctx);
    lh_context_destroy(gpu_ctx);
    return finish(prog);
}
