/* test_numerics.c - hostile numbers on the CPU backend, fresh random inputs every run (the seed is
 * printed):
 *  - non-finite input (NaN, +Inf, -Inf in q, k or v) follows the contract of lighthouse.h: the
 *    calls return LH_OK without undefined behaviour (the sanitizer build checks that), every
 *    output row whose attention saw a NaN or an infinite score or value is not finite, rows of
 *    earlier blocks are exactly those of the clean input, and the selection keeps valid
 *    indices;
 *  - lh_select fed NaN and infinite scores writes a valid sub-sequence;
 *  - large logits (SOFTMAX_SCALE = 1e9, or |q|, |k| near 1e5 at D = 128) give the forward of a
 *    float64 reference and finite gradients within the problem's own conditioning. */
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lighthouse.h"
#include "test_util.h"

static lh_context *ctx;
static uint64_t seed;

static void setup(void) {
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK);
    ck_assert_int_eq(lh_context_set_i64(ctx, LH_CONTEXT_NUM_THREADS, 2), LH_OK);
}
static void teardown(void) { ck_assert_int_eq(lh_context_destroy(ctx), LH_OK); }

static int64_t kv_of(const test_cfg *c) { return c->kv_heads ? c->kv_heads : c->heads; }

/* Inputs and results of one forward + backward (BNHD). */
typedef struct run {
    test_cfg cfg;
    size_t nq, nkv;
    float *q, *k, *v, *dout, *out, *dq, *dk, *dv;
    int32_t *idx;        /* Lighthouse: the forward's indices (copied from `saved`) */
    int64_t s_sel, s_total;
} run;

static run run_new(const test_cfg *c, float amp_qk) {
    run r = {.cfg = *c};
    r.nq = test_elems(c, c->heads);
    r.nkv = test_elems(c, kv_of(c));
    float **fq[] = {&r.q, &r.dout, &r.out, &r.dq};
    for (size_t i = 0; i < 4; i++) *fq[i] = test_floats(r.nq);
    float **fk[] = {&r.k, &r.v, &r.dk, &r.dv};
    for (size_t i = 0; i < 4; i++) *fk[i] = test_floats(r.nkv);
    test_fill_uniform(r.q, r.nq, amp_qk, &seed);
    test_fill_uniform(r.k, r.nkv, amp_qk, &seed);
    test_fill_uniform(r.v, r.nkv, 1.0f, &seed);
    test_fill_uniform(r.dout, r.nq, 1.0f, &seed);
    return r;
}

static run run_copy(const run *a) {
    run r = *a;
    float **fq[] = {&r.q, &r.dout, &r.out, &r.dq};
    float *const sq[] = {a->q, a->dout, a->out, a->dq};
    for (size_t i = 0; i < 4; i++) {
        *fq[i] = test_floats(r.nq);
        memcpy(*fq[i], sq[i], r.nq * sizeof(float));
    }
    float **fk[] = {&r.k, &r.v, &r.dk, &r.dv};
    float *const sk[] = {a->k, a->v, a->dk, a->dv};
    for (size_t i = 0; i < 4; i++) {
        *fk[i] = test_floats(r.nkv);
        memcpy(*fk[i], sk[i], r.nkv * sizeof(float));
    }
    r.idx = NULL;
    return r;
}

static void run_free(run *r) {
    float *p[] = {r->q, r->k, r->v, r->dout, r->out, r->dq, r->dk, r->dv};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
    free(r->idx);
}

/* Forward and backward on a fresh plan; both must return LH_OK. */
static void run_exec(run *r) {
    lh_plan *plan = test_plan(ctx, &r->cfg);
    test_buffers b = test_buffers_alloc(plan);
    ck_assert_msg(lh_forward(plan, r->q, r->k, r->v, r->out, b.saved, b.fwd_ws, NULL) == LH_OK,
                  "forward: %s", lh_last_error());
    ck_assert_msg(lh_backward(plan, r->q, r->k, r->v, r->out, r->dout, b.saved, r->dq, r->dk,
                              r->dv, b.bwd_ws, NULL) == LH_OK,
                  "backward: %s", lh_last_error());
    if (r->cfg.mode == LH_MODE_LIGHTHOUSE) {
        size_t n = (size_t)(r->cfg.batch * r->cfg.heads * b.s_sel);
        r->idx = malloc(n * sizeof(int32_t));
        memcpy(r->idx, b.saved, n * sizeof(int32_t));   /* white box: indices come first */
        r->s_sel = b.s_sel;
        r->s_total = b.s_total;
    }
    test_buffers_free(&b);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
}

/* ---- a valid sub-sequence ----------------------------------------------------------------- */

/* Level of pyramid position pos. */
static int64_t level_of(const test_cfg *c, int64_t pos, int64_t *index) {
    int64_t off = 0, n = c->seq_len;
    for (int64_t l = 0; l < c->levels; l++, n /= c->pooling) {
        if (pos < off + n) {
            *index = pos - off;
            return l;
        }
        off += n;
    }
    return -1;
}

/* docs/spec.md section 3 for every row of idx [rows, S_sel]: positions inside the pyramid, no
 * repeats, in the order of the integer key (an entry counts as refined when its first child is
 * in the row), and tiles of n_c/T + (L-1)*128*p entries. */
static void check_subsequence(const test_cfg *c, const int32_t *idx, int64_t rows, int64_t s_sel,
                              int64_t s_total) {
    char *seen = calloc((size_t)s_total, 1);
    ck_assert_ptr_nonnull(seen);
    for (int64_t r = 0; r < rows; r++) {
        const int32_t *row = idx + r * s_sel;
        memset(seen, 0, (size_t)s_total);
        for (int64_t s = 0; s < s_sel; s++) {
            ck_assert_msg(row[s] >= 0 && row[s] < s_total, "row %lld slot %lld: position %d",
                          (long long)r, (long long)s, row[s]);
            ck_assert_msg(!seen[row[s]], "row %lld: position %d twice", (long long)r, row[s]);
            seen[row[s]] = 1;
        }
        int64_t prev = -1;
        for (int64_t s = 0; s < s_sel; s++) {
            int64_t i = 0, l = level_of(c, row[s], &i), f = 1, child;
            for (int64_t j = 0; j < l; j++) f *= c->pooling;
            int refined = 0;
            if (l > 0) {
                int64_t off = 0, n = c->seq_len;
                for (int64_t j = 0; j < l - 1; j++, n /= c->pooling) off += n;
                child = off + i * c->pooling;
                refined = seen[child];
            }
            int64_t key = refined ? (((i + 1) * f) << 16) - (INT64_C(1) << (16 - l))
                                  : (i * f) << 16;
            ck_assert_msg(key > prev, "row %lld slot %lld: out of order", (long long)r,
                          (long long)s);
            prev = key;
        }
    }
    free(seen);
}

/* ---- non-finite input --------------------------------------------------------------------- */

static int row_finite(const float *x, int64_t D) {
    for (int64_t d = 0; d < D; d++)
        if (!isfinite(x[d])) return 0;
    return 1;
}

static size_t at(const test_cfg *c, int64_t heads, int64_t t, int64_t h) {
    return (size_t)((t * heads + h) * c->head_dim);   /* batch 0, BNHD */
}

START_TEST(non_finite_input_dense) {
    printf("seed %llu\n", (unsigned long long)seed);
    /* 3 blocks of 64 rows; GQA: query heads 0 and 1 share kv head 0. */
    test_cfg c = {.batch = 1, .seq_len = 192, .heads = 2, .kv_heads = 1, .head_dim = 16,
                  .mode = LH_MODE_DENSE};
    run clean = run_new(&c, 1.0f);
    run_exec(&clean);
    const float values[] = {NAN, INFINITY, -INFINITY};
    const char *names[] = {"NaN", "+Inf", "-Inf"};
    const int64_t t0 = 70, D = c.head_dim;
    for (int which = 0; which < 3; which++)          /* q, k, v */
        for (int vi = 0; vi < 3; vi++) {
            run r = run_copy(&clean);
            float *x = which == 0 ? r.q : which == 1 ? r.k : r.v;
            x[at(&c, which == 0 ? c.heads : 1, t0, 0) + 3] = values[vi];
            run_exec(&r);
            /* Rows of earlier blocks never see token t0: bit for bit the clean result. */
            for (int64_t t = 0; t < 64; t++)
                for (int64_t h = 0; h < c.heads; h++)
                    ck_assert_msg(!memcmp(r.out + at(&c, 2, t, h), clean.out + at(&c, 2, t, h),
                                          (size_t)D * sizeof(float)),
                                  "%s in %c: row %lld changed", names[vi], "qkv"[which],
                                  (long long)t);
            int64_t bad = 0;
            for (int64_t t = 0; t < c.seq_len; t++)
                for (int64_t h = 0; h < c.heads; h++)
                    bad += !row_finite(r.out + at(&c, 2, t, h), D);
            printf("  %-4s in %c[%lld]: %lld of %lld output rows not finite\n", names[vi],
                   "qkv"[which], (long long)t0, (long long)bad, (long long)(c.seq_len * 2));
            if (which == 0) {
                /* Only row t0 of head 0 used that query, and it saw it. */
                ck_assert(!row_finite(r.out + at(&c, 2, t0, 0), D));
                for (int64_t t = 0; t < c.seq_len; t++)
                    for (int64_t h = 0; h < c.heads; h++)
                        if (t != t0 || h != 0)
                            ck_assert(!memcmp(r.out + at(&c, 2, t, h), clean.out + at(&c, 2, t, h),
                                              (size_t)D * sizeof(float)));
            } else if (which == 2 || vi == 0) {
                /* Every later row of both query heads sees that value (or that NaN score). */
                for (int64_t t = t0; t < c.seq_len; t++)
                    for (int64_t h = 0; h < c.heads; h++)
                        ck_assert_msg(!row_finite(r.out + at(&c, 2, t, h), D),
                                      "%s in %c: row %lld head %lld finite", names[vi],
                                      "qkv"[which], (long long)t, (long long)h);
            }
            run_free(&r);
        }
    run_free(&clean);
}
END_TEST

START_TEST(non_finite_input_lighthouse) {
    printf("seed %llu\n", (unsigned long long)seed);
    test_cfg c = {.batch = 1, .seq_len = 2048, .heads = 2, .kv_heads = 1, .head_dim = 16,
                  .levels = 3, .pooling = 4, .topk = 128, .mode = LH_MODE_LIGHTHOUSE};
    run clean = run_new(&c, 1.0f);
    const float values[] = {NAN, INFINITY, -INFINITY};
    for (int which = 0; which < 3; which++)
        for (int vi = 0; vi < 3; vi++) {
            run r = run_copy(&clean);
            float *x = which == 0 ? r.q : which == 1 ? r.k : r.v;
            /* One element of token 1000 and the whole of token 1500 (its norm is then not
             * finite, so its score is too). */
            x[at(&c, which == 0 ? c.heads : 1, 1000, 0) + 5] = values[vi];
            for (int64_t d = 0; d < c.head_dim; d++)
                x[at(&c, which == 0 ? c.heads : 1, 1500, 0) + d] = values[vi];
            run_exec(&r);   /* the backward checks the forward's indices too */
            check_subsequence(&c, r.idx, c.batch * c.heads, r.s_sel, r.s_total);
            int64_t bad = 0;
            for (size_t i = 0; i < r.nq; i++) bad += !isfinite(r.out[i]);
            ck_assert_msg(bad > 0, "non-finite %c left every output finite", "qkv"[which]);
            run_free(&r);
        }
    run_free(&clean);
}
END_TEST

START_TEST(selection_of_non_finite_scores) {
    printf("seed %llu\n", (unsigned long long)seed);
    test_cfg c = {.batch = 2, .seq_len = 4096, .heads = 2, .kv_heads = 1, .head_dim = 8,
                  .levels = 3, .pooling = 4, .topk = 256, .mode = LH_MODE_LIGHTHOUSE};
    lh_plan *plan = test_plan(ctx, &c);
    test_buffers b = test_buffers_alloc(plan);
    size_t nq = (size_t)(c.batch * c.heads * b.s_total), nk = (size_t)(c.batch * b.s_total);
    float *sq = test_floats(nq), *sk = test_floats(nk);
    int32_t *idx = malloc((size_t)(c.batch * c.heads * b.s_sel) * sizeof(int32_t));
    const float specials[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f};
    for (int pattern = 0; pattern < 4; pattern++) {
        test_fill_uniform(sq, nq, 1.0f, &seed);
        test_fill_uniform(sk, nk, 1.0f, &seed);
        for (size_t i = 0; i < nq; i++) {
            uint64_t r = (seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17);
            /* 0: every query score NaN; 1: a third special; 2: every score +Inf (all ties);
             * 3: specials everywhere in both */
            if (pattern == 0) sq[i] = NAN;
            else if (pattern == 2) sq[i] = INFINITY;
            else if (pattern == 3 || r % 3 == 0) sq[i] = specials[r % 6];
            if (i < nk) {
                if (pattern == 2) sk[i] = INFINITY;
                else if (pattern != 0 && r % 2 == 0) sk[i] = specials[(r >> 8) % 6];
            }
        }
        memset(idx, 0xff, (size_t)(c.batch * c.heads * b.s_sel) * sizeof(int32_t));
        ck_assert_msg(lh_select(plan, sq, sk, idx, b.stage_ws, NULL) == LH_OK, "%s",
                      lh_last_error());
        check_subsequence(&c, idx, c.batch * c.heads, b.s_sel, b.s_total);
    }
    free(sq);
    free(sk);
    free(idx);
    test_buffers_free(&b);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
}
END_TEST

/* ---- large logits ------------------------------------------------------------------------- */

/* Causal attention of one head in double (rows of D floats): o, and gradients dq, dk, dv.
 * The row maximum is subtracted in double, exactly enough for logits of any finite size. */
static void reference(const test_cfg *c, const run *r, int64_t h, double scale, double *o,
                      double *dq, double *dk, double *dv) {
    int64_t N = c->seq_len, D = c->head_dim, H = c->heads;
    double *p = malloc((size_t)N * sizeof(double));
    for (int64_t i = 0; i < N; i++) {
        const float *qi = r->q + at(c, H, i, h), *di = r->dout + at(c, H, i, h);
        double mx = -INFINITY, sum = 0.0, dsum = 0.0;
        for (int64_t j = 0; j <= i; j++) {
            double s = 0.0;
            for (int64_t d = 0; d < D; d++) s += (double)qi[d] * r->k[at(c, 1, j, 0) + d];
            p[j] = s * scale;
            mx = fmax(mx, p[j]);
        }
        for (int64_t j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
        for (int64_t j = 0; j <= i; j++) p[j] /= sum;
        for (int64_t j = 0; j <= i; j++) {
            double dp = 0.0;
            for (int64_t d = 0; d < D; d++) {
                o[i * D + d] += p[j] * r->v[at(c, 1, j, 0) + d];
                dp += (double)di[d] * r->v[at(c, 1, j, 0) + d];
            }
            dsum += p[j] * dp;
        }
        for (int64_t j = 0; j <= i; j++) {
            double dp = 0.0;
            for (int64_t d = 0; d < D; d++) dp += (double)di[d] * r->v[at(c, 1, j, 0) + d];
            double ds = p[j] * (dp - dsum) * scale;
            for (int64_t d = 0; d < D; d++) {
                dq[i * D + d] += ds * r->k[at(c, 1, j, 0) + d];
                dk[j * D + d] += ds * qi[d];
                dv[j * D + d] += p[j] * di[d];
            }
        }
    }
    free(p);
}

static double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}

/* Whether every query row of one head has a softmax that fp32 can get right at all: at these
 * scales the softmax is one-hot, and the fp32 dot products q.k carry a rounding error of up to
 * about (D + 2) eps sum |q_d k_d| each (the scaling of q included). Where the two largest logits
 * of a row lie within twice that of each other, or not far enough apart (40 / scale) for the
 * runner-up's weight to vanish, the winner itself is a coin toss in fp32, and no fp32
 * implementation can match the float64 reference there: such a draw tests nothing about large
 * logits. (About one draw in several hundred has such a row at N = 192.) */
static bool well_conditioned(const test_cfg *c, const run *r, double scale) {
    int64_t N = c->seq_len, D = c->head_dim, H = c->heads;
    for (int64_t i = 1; i < N; i++) {
        const float *qi = r->q + at(c, H, i, 0);
        double top = -INFINITY, second = -INFINITY, err_top = 0.0, err_second = 0.0;
        for (int64_t j = 0; j <= i; j++) {
            double s = 0.0, mag = 0.0;
            for (int64_t d = 0; d < D; d++) {
                double x = (double)qi[d] * r->k[at(c, 1, j, 0) + d];
                s += x, mag += fabs(x);
            }
            double err = (double)(D + 2) * 0x1p-24 * mag;
            if (s > top) second = top, err_second = err_top, top = s, err_top = err;
            else if (s > second) second = s, err_second = err;
        }
        if (top - second <= err_top + err_second + 40.0 / scale) return false;
    }
    return true;
}

/* A dense head (H = Hkv = 1) of N = 192 at D = 128, on inputs whose softmax fp32 can resolve
 * (redrawn from the same seed stream until they are, so a printed seed still repeats the run). */
static void check_large_logits(double scale, float amp_qk) {
    test_cfg c = {.batch = 1, .seq_len = 192, .heads = 1, .head_dim = 128, .mode = LH_MODE_DENSE,
                  .scale = scale};
    run r = run_new(&c, amp_qk);
    int redrawn = 0;
    bool usable;
    while (!(usable = well_conditioned(&c, &r, scale)) && redrawn < 50) {
        run_free(&r);
        r = run_new(&c, amp_qk);
        redrawn++;
    }
    ck_assert_msg(usable, "no well-conditioned draw in 50");
    if (redrawn) printf("  redrew the inputs %d time(s): a near tie in some row's logits\n", redrawn);
    run_exec(&r);
    size_t n = r.nq;
    double *o = calloc(n, sizeof(double)), *dq = calloc(n, sizeof(double));
    double *dk = calloc(n, sizeof(double)), *dv = calloc(n, sizeof(double));
    reference(&c, &r, 0, scale, o, dq, dk, dv);
    int64_t bad = 0;
    float *all[] = {r.out, r.dq, r.dk, r.dv};
    for (int i = 0; i < 4; i++)
        for (size_t j = 0; j < n; j++) bad += !isfinite(all[i][j]);
    double eo = 0.0, no = 0.0, ev = 0.0, nv = 0.0, eq = 0.0, ek = 0.0;
    for (size_t i = 0; i < n; i++) {
        eo += (r.out[i] - o[i]) * (r.out[i] - o[i]), no += o[i] * o[i];
        ev += (r.dv[i] - dv[i]) * (r.dv[i] - dv[i]), nv += dv[i] * dv[i];
        eq = fmax(eq, fabs(r.dq[i] - dq[i]));
        ek = fmax(ek, fabs(r.dk[i] - dk[i]));
    }
    eo = sqrt(eo / no), ev = sqrt(ev / nv);
    /* The gradients of q and k are scale * (dP - dO.O) * (k or q): near a one-hot softmax the
     * exact value is 0 and fp32 can only give the rounding of dP - dO.O (|dO| |v| D eps) times
     * scale |k| or scale |q|. Anything beyond a few times that is an error of the method. */
    double eps = 0x1p-24, unit = scale * (double)c.head_dim * eps * max_abs(r.dout, n) *
                                 max_abs(r.v, n);
    double bq = 4.0 * unit * max_abs(r.k, n), bk = 4.0 * unit * max_abs(r.q, n);
    printf("  scale %.3g |q|,|k| <= %.3g: out rel %.2e, dv rel %.2e, dq max %.3g (bound %.3g), "
           "dk max %.3g (bound %.3g), %lld non-finite\n",
           scale, (double)amp_qk, eo, ev, eq, bq, ek, bk, (long long)bad);
    ck_assert_int_eq(bad, 0);
    ck_assert_msg(eo <= 1e-5, "out: rel err %.3g from the float64 reference", eo);
    ck_assert_msg(ev <= 1e-5, "dv: rel err %.3g from the float64 reference", ev);
    ck_assert_msg(eq <= bq && ek <= bk, "dq %.3g (bound %.3g), dk %.3g (bound %.3g)", eq, bq, ek,
                  bk);
    free(o), free(dq), free(dk), free(dv);
    run_free(&r);
}

START_TEST(large_logits_dense) {
    printf("seed %llu\n", (unsigned long long)seed);
    check_large_logits(1e9, 1.0f);
    check_large_logits(1e12, 1.0f);
    check_large_logits(1.0 / sqrt(128.0), 1e5f);
}
END_TEST

START_TEST(large_logits_lighthouse) {
    printf("seed %llu\n", (unsigned long long)seed);
    test_cfg c = {.batch = 1, .seq_len = 2048, .heads = 2, .kv_heads = 1, .head_dim = 128,
                  .levels = 3, .pooling = 4, .topk = 128, .mode = LH_MODE_LIGHTHOUSE,
                  .scale = 1e9};
    run r = run_new(&c, 1.0f);
    run_exec(&r);
    int64_t bad = 0;
    float *q_side[] = {r.out, r.dq};
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < r.nq; j++) bad += !isfinite(q_side[i][j]);
    float *kv_side[] = {r.dk, r.dv};
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < r.nkv; j++) bad += !isfinite(kv_side[i][j]);
    printf("  Lighthouse, scale 1e9: %lld non-finite of out, dq, dk, dv\n", (long long)bad);
    ck_assert_int_eq(bad, 0);
    run_free(&r);
}
END_TEST

int main(void) {
    seed = test_seed("test_numerics");
    Suite *s = suite_create("numerics");
    TCase *tc = tcase_create("cpu");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, non_finite_input_dense);
    tcase_add_test(tc, non_finite_input_lighthouse);
    tcase_add_test(tc, selection_of_non_finite_scores);
    tcase_add_test(tc, large_logits_dense);
    tcase_add_test(tc, large_logits_lighthouse);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
