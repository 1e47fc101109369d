/* test_cp_direct.c - docs/spec.md section 8 computed directly, for test_cp.c: every chunk of N/(2W)
 * tokens goes through a ring-less plan of its own (lh_scores, lh_select, lh_gather with
 * TOPK/(2W)); the chunks' sub-sequences, concatenated in global chunk order, go through causal
 * attention and its backward in double; lh_scatter (forward) and the pool backward written here
 * (gradients: token t gets g(0,t) + sum_l g(l, t/f_l)/f_l) bring the results back to each chunk's
 * tokens. Plus the plan and buffer helpers of the tests. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_cp.h"

/* A plan of c (ring != NULL: bound as `rank`), finalized; returns the status of the first step
 * that failed (the plan is then destroyed and *out NULL). */
lh_status make_plan(const test_cfg *c, lh_ring *ring, int rank, const hooks *hk, lh_plan **out) {
    lh_plan *plan = NULL;
    *out = NULL;
    ck_assert_int_eq(lh_plan_create(test_cp_ctx, &plan), LH_OK);
    lh_status st = LH_OK;
    const struct { lh_param p; int64_t v; } params[] = {
        {LH_PARAM_BATCH, c->batch},   {LH_PARAM_SEQ_LEN, c->seq_len}, {LH_PARAM_HEADS, c->heads},
        {LH_PARAM_HEAD_DIM, c->head_dim}, {LH_PARAM_LAYOUT, c->layout}, {LH_PARAM_MODE, c->mode},
        {LH_PARAM_KV_HEADS, c->kv_heads ? c->kv_heads : c->heads},
        {LH_PARAM_LEVELS, c->levels}, {LH_PARAM_POOLING, c->pooling}, {LH_PARAM_TOPK, c->topk},
    };
    for (size_t i = 0; i < sizeof params / sizeof params[0] && st == LH_OK; i++)
        st = lh_plan_set_i64(plan, params[i].p, params[i].v);
    if (st == LH_OK && c->scorer != LH_SCORER_NORM)
        st = lh_plan_set_i64(plan, LH_PARAM_SCORER, c->scorer);
    if (st == LH_OK && c->dilation > 0) st = lh_plan_set_i64(plan, LH_PARAM_DILATION, c->dilation);
    if (st == LH_OK && ring) st = lh_plan_set_ring(plan, ring, rank);
    if (st == LH_OK && hk) st = lh_plan_set_attention_hooks(plan, hk->fwd, hk->bwd, hk->user);
    if (st == LH_OK) st = lh_plan_finalize(plan);
    if (st != LH_OK) {
        ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
        return st;
    }
    *out = plan;
    return LH_OK;
}

int64_t kv_of(const test_cfg *c) { return c->kv_heads ? c->kv_heads : c->heads; }

void *alloc_bytes(int64_t bytes) {
    size_t n = (size_t)(bytes > 0 ? bytes : 1);
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    ck_assert_ptr_nonnull(p);
    memset(p, 0, (n + 63) / 64 * 64);
    return p;
}

int64_t query(lh_plan *plan, lh_query q) {
    int64_t v = -1;
    ck_assert_int_eq(lh_plan_get_i64(plan, q, &v), LH_OK);
    return v;
}

void problem_results(problem *p, const problem *of) {
    p->cfg = of->cfg;
    p->nq = of->nq;
    p->nkv = of->nkv;
    p->out = test_floats(p->nq);
    p->dq = test_floats(p->nq);
    p->dk = test_floats(p->nkv);
    p->dv = test_floats(p->nkv);
}

void problem_free(problem *p) {
    float *f[] = {p->q, p->k, p->v, p->dout, p->out, p->dq, p->dk, p->dv};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free(f[i]);
    free(p->idx);
}

/* ---- the direct computation ------------------------------------------------------------ */

/* Causal attention over S rows (D floats each) in double: o [S,D], lse [S]. */
static void naive_forward(int64_t S, int64_t D, double scale, const float *q, const float *k,
                          const float *v, double *o, double *lse, double *row) {
    for (int64_t i = 0; i < S; i++) {
        double m = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j <= i; j++) {
            double s = 0.0;
            for (int64_t d = 0; d < D; d++) s += (double)q[i * D + d] * (double)k[j * D + d];
            row[j] = s * scale;
            m = row[j] > m ? row[j] : m;
        }
        for (int64_t d = 0; d < D; d++) o[i * D + d] = 0.0;
        for (int64_t j = 0; j <= i; j++) {
            double e = exp(row[j] - m);
            sum += e;
            for (int64_t d = 0; d < D; d++) o[i * D + d] += e * (double)v[j * D + d];
        }
        for (int64_t d = 0; d < D; d++) o[i * D + d] /= sum;
        lse[i] = m + log(sum);
    }
}

/* Its backward: gq, gk, gv [S,D] (zeroed here) from dO [S,D]. */
static void naive_backward(int64_t S, int64_t D, double scale, const float *q, const float *k,
                           const float *v, const double *o, const double *lse, const double *dO,
                           double *gq, double *gk, double *gv) {
    memset(gq, 0, (size_t)(S * D) * sizeof(double));
    memset(gk, 0, (size_t)(S * D) * sizeof(double));
    memset(gv, 0, (size_t)(S * D) * sizeof(double));
    for (int64_t i = 0; i < S; i++) {
        double dvec = 0.0;
        for (int64_t d = 0; d < D; d++) dvec += dO[i * D + d] * o[i * D + d];
        for (int64_t j = 0; j <= i; j++) {
            double s = 0.0, dp = 0.0;
            for (int64_t d = 0; d < D; d++) {
                s += (double)q[i * D + d] * (double)k[j * D + d];
                dp += dO[i * D + d] * (double)v[j * D + d];
            }
            double pr = exp(s * scale - lse[i]), ds = pr * (dp - dvec) * scale;
            for (int64_t d = 0; d < D; d++) {
                gq[i * D + d] += ds * (double)k[j * D + d];
                gk[j * D + d] += ds * (double)q[i * D + d];
                gv[j * D + d] += pr * dO[i * D + d];
            }
        }
    }
}

/* Level and window width of pyramid position pos of a chunk of cl tokens. */
static void locate(const test_cfg *c, int64_t cl, int64_t pos, int64_t *index, int64_t *width) {
    int64_t f = 1, off = 0;
    for (int64_t l = 0; l < c->levels; l++, f *= c->pooling) {
        int64_t n = cl / f;
        if (pos < off + n || l == c->levels - 1) {
            *index = pos - off;
            *width = f;
            return;
        }
        off += n;
    }
}

/* Row (b, t, h) of a BNHD tensor of one chunk inside the global tensor. */
static float *grow(const test_cfg *c, float *x, int64_t heads, int64_t b, int64_t t, int64_t h) {
    return x + ((b * c->seq_len + t) * heads + h) * c->head_dim;
}

/* docs/spec.md section 8 computed directly: results into res (BNHD), indices [2W][B,H,S_c]. */
void run_direct(const problem *p, int W, int grads, problem *res) {
    const test_cfg *c = &p->cfg;
    int64_t C2 = 2 * W, cl = c->seq_len / C2, B = c->batch, H = c->heads, Hkv = kv_of(c);
    int64_t D = c->head_dim, G = H / Hkv;
    test_cfg cc = *c;
    cc.seq_len = cl;
    cc.topk = c->topk / C2;
    cc.layout = LH_LAYOUT_BNHD;
    lh_plan *plan = NULL;
    ck_assert_msg(make_plan(&cc, NULL, 0, NULL, &plan) == LH_OK, "%s", lh_last_error());
    int64_t S = query(plan, LH_QUERY_SUBSEQ_LEN), St = query(plan, LH_QUERY_PYRAMID_LEN);
    int64_t rows = B * H * S, Sg = C2 * S;
    void *ws = alloc_bytes(query(plan, LH_QUERY_STAGE_WORKSPACE_BYTES));
    size_t nq = (size_t)(B * cl * H * D), nkv = (size_t)(B * cl * Hkv * D);
    float *qc = test_floats(nq), *kc = test_floats(nkv), *vc = test_floats(nkv);
    float *oc = test_floats(nq), *sq = test_floats((size_t)(B * H * St));
    float *sk = test_floats((size_t)(B * Hkv * St));
    float *sel = test_floats((size_t)(4 * C2 * rows * D));   /* q, k, v, o per chunk */
    float *qs = sel, *ks = sel + C2 * rows * D, *vs = ks + C2 * rows * D, *os = vs + C2 * rows * D;
    problem_results(res, p);
    res->nidx = (size_t)(C2 * rows);
    res->idx = malloc(res->nidx * sizeof(int32_t));
    for (int64_t g = 0; g < C2; g++) {
        for (int64_t b = 0; b < B; b++) {
            memcpy(qc + b * cl * H * D, grow(c, p->q, H, b, g * cl, 0), (size_t)(cl * H * D) * 4);
            memcpy(kc + b * cl * Hkv * D, grow(c, p->k, Hkv, b, g * cl, 0), (size_t)(cl * Hkv * D) * 4);
            memcpy(vc + b * cl * Hkv * D, grow(c, p->v, Hkv, b, g * cl, 0), (size_t)(cl * Hkv * D) * 4);
        }
        int32_t *idx = res->idx + g * rows;
        /* The plan's scorer on the chunk as a sequence of its own (section 8). */
        ck_assert_msg(lh_scores_qkv(plan, qc, kc, vc, sq, sk, ws, NULL) == LH_OK, "%s",
                      lh_last_error());
        ck_assert_int_eq(lh_select(plan, sq, sk, idx, ws, NULL), LH_OK);
        ck_assert_int_eq(lh_gather(plan, qc, kc, vc, idx, qs + g * rows * D, ks + g * rows * D,
                                   vs + g * rows * D, ws, NULL), LH_OK);
    }
    /* Per (b, h): the global sub-sequence, chunk 0 first. */
    float *gqf = test_floats((size_t)(3 * Sg * D));
    float *gkf = gqf + Sg * D, *gvf = gkf + Sg * D;
    double *o = malloc((size_t)(Sg * D) * sizeof(double)), *lse = malloc((size_t)Sg * sizeof(double));
    double *row = malloc((size_t)Sg * sizeof(double)), *dO = calloc((size_t)(Sg * D), sizeof(double));
    double *g3 = malloc((size_t)(3 * Sg * D) * sizeof(double));
    for (int64_t bh = 0; bh < B * H; bh++) {
        for (int64_t g = 0; g < C2; g++) {
            size_t off = (size_t)((g * rows + bh * S) * D), n = (size_t)(S * D) * 4;
            memcpy(gqf + g * S * D, qs + off, n);
            memcpy(gkf + g * S * D, ks + off, n);
            memcpy(gvf + g * S * D, vs + off, n);
        }
        naive_forward(Sg, D, 1.0 / sqrt((double)D), gqf, gkf, gvf, o, lse, row);
        for (int64_t g = 0; g < C2; g++)
            for (int64_t i = 0; i < S * D; i++) os[(g * rows + bh * S) * D + i] = (float)o[g * S * D + i];
        if (!grads) continue;
        int64_t b = bh / H, h = bh % H;
        /* dO of an entry: dout summed over the tokens it was scattered to. */
        for (int64_t g = 0; g < C2; g++)
            for (int64_t s = 0; s < S; s++) {
                int64_t i = 0, f = 1;
                locate(c, cl, res->idx[g * rows + bh * S + s], &i, &f);
                double *acc = dO + (g * S + s) * D;
                memset(acc, 0, (size_t)D * sizeof(double));
                for (int64_t t = i * f + f - 1; t < i * f + 2 * f - 1 && t < cl; t++)
                    for (int64_t d = 0; d < D; d++) acc[d] += grow(c, p->dout, H, b, g * cl + t, h)[d];
            }
        naive_backward(Sg, D, 1.0 / sqrt((double)D), gqf, gkf, gvf, o, lse, dO, g3, g3 + Sg * D,
                       g3 + 2 * Sg * D);
        /* Pool backward: each entry's gradient spread evenly over its window. */
        for (int64_t g = 0; g < C2; g++)
            for (int64_t s = 0; s < S; s++) {
                int64_t i = 0, f = 1;
                locate(c, cl, res->idx[g * rows + bh * S + s], &i, &f);
                for (int64_t t = i * f; t < (i + 1) * f; t++) {
                    float *x[3] = {grow(c, res->dq, H, b, g * cl + t, h),
                                   grow(c, res->dk, Hkv, b, g * cl + t, h / G),
                                   grow(c, res->dv, Hkv, b, g * cl + t, h / G)};
                    for (int a = 0; a < 3; a++)
                        for (int64_t d = 0; d < D; d++)
                            x[a][d] += (float)(g3[a * Sg * D + (g * S + s) * D + d] / (double)f);
                }
            }
    }
    for (int64_t g = 0; g < C2; g++) {
        ck_assert_int_eq(lh_scatter(plan, res->idx + g * rows, os + g * rows * D, oc, ws, NULL), LH_OK);
        for (int64_t b = 0; b < B; b++)
            memcpy(grow(c, res->out, H, b, g * cl, 0), oc + b * cl * H * D, (size_t)(cl * H * D) * 4);
    }
    void *fr[] = {qc, kc, vc, oc, sq, sk, sel, gqf, o, lse, row, dO, g3, ws};
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) free(fr[i]);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
}


void chunk_norm_scores(const problem *p, int W, float **sq, float **sk, int64_t *s_total) {
    const test_cfg *c = &p->cfg;
    int64_t C2 = 2 * W, cl = c->seq_len / C2, B = c->batch, H = c->heads, Hkv = kv_of(c);
    int64_t D = c->head_dim;
    test_cfg cc = *c;
    cc.seq_len = cl;
    cc.topk = c->topk / C2;
    cc.layout = LH_LAYOUT_BNHD;
    cc.scorer = LH_SCORER_NORM;
    cc.dilation = 0;
    lh_plan *plan = NULL;
    ck_assert_msg(make_plan(&cc, NULL, 0, NULL, &plan) == LH_OK, "%s", lh_last_error());
    int64_t St = query(plan, LH_QUERY_PYRAMID_LEN);
    void *ws = alloc_bytes(query(plan, LH_QUERY_STAGE_WORKSPACE_BYTES));
    float *qc = test_floats((size_t)(B * cl * H * D)), *kc = test_floats((size_t)(B * cl * Hkv * D));
    *sq = test_floats((size_t)(C2 * B * H * St));
    *sk = test_floats((size_t)(C2 * B * Hkv * St));
    for (int64_t g = 0; g < C2; g++) {
        for (int64_t b = 0; b < B; b++) {
            memcpy(qc + b * cl * H * D, grow(c, p->q, H, b, g * cl, 0), (size_t)(cl * H * D) * 4);
            memcpy(kc + b * cl * Hkv * D, grow(c, p->k, Hkv, b, g * cl, 0), (size_t)(cl * Hkv * D) * 4);
        }
        /* Chunk g belongs to rank g (its first block) or rank 2W-1-g (its second). */
        int64_t slot = g < W ? 2 * g : 2 * (C2 - 1 - g) + 1;
        ck_assert_int_eq(lh_scores(plan, qc, kc, *sq + slot * B * H * St, *sk + slot * B * Hkv * St,
                                   ws, NULL), LH_OK);
    }
    *s_total = St;
    free(qc);
    free(kc);
    free(ws);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
}
