/* test_scorers.c - the scorers of docs/spec.md section 10 on the CPU backend, fresh random inputs
 * every run (the seed is printed):
 *  - external scores equal to the norm scorer's own scores (lh_scores) reproduce the built-in
 *    norm path bit for bit: indices, output and gradients (both layouts, grouped-query heads);
 *  - the dilated scorer is the same in both layouts, and lh_scores_qkv is what the forward uses;
 *  - every bad scorer parameter or call gets its own status and sentence, and leaves the
 *    caller's outputs untouched. (Conformance with the reference: test_golden_dilated; per chunk
 *    on a ring: test_cp.) */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lighthouse.h"
#include "test_util.h"

static uint64_t seed;
static lh_context *ctx;

static void setup(void) { ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK); }
static void teardown(void) { ck_assert_int_eq(lh_context_destroy(ctx), LH_OK); }

/* Inputs and results of one forward and backward; indices copied from the start of saved (the
 * CPU backend keeps them there). */
typedef struct run {
    size_t nq, nkv, nidx;
    float *out, *dq, *dk, *dv;
    int32_t *idx;
} run;

typedef struct inputs {
    test_cfg cfg;
    size_t nq, nkv;
    float *q, *k, *v, *dout;
} inputs;

static inputs inputs_new(const test_cfg *c) {
    inputs in = {.cfg = *c};
    int64_t hkv = c->kv_heads ? c->kv_heads : c->heads;
    in.nq = (size_t)(c->batch * c->seq_len * c->heads * c->head_dim);
    in.nkv = (size_t)(c->batch * c->seq_len * hkv * c->head_dim);
    in.q = test_floats(in.nq), in.k = test_floats(in.nkv), in.v = test_floats(in.nkv);
    in.dout = test_floats(in.nq);
    test_fill_uniform(in.q, in.nq, 1.0f, &seed);
    test_fill_uniform(in.k, in.nkv, 1.0f, &seed);
    test_fill_uniform(in.v, in.nkv, 1.0f, &seed);
    test_fill_uniform(in.dout, in.nq, 1.0f, &seed);
    return in;
}

static void inputs_free(inputs *in) {
    free(in->q), free(in->k), free(in->v), free(in->dout);
}

/* Forward (with the caller's scores when sq != NULL) and backward of plan on in. */
static run run_plan(lh_plan *plan, const inputs *in, const float *sq, const float *sk) {
    test_buffers buf = test_buffers_alloc(plan);
    run r = {.nq = in->nq, .nkv = in->nkv};
    r.nidx = (size_t)(in->cfg.batch * in->cfg.heads * buf.s_sel);
    r.out = test_floats(r.nq), r.dq = test_floats(r.nq);
    r.dk = test_floats(r.nkv), r.dv = test_floats(r.nkv);
    r.idx = malloc(r.nidx * sizeof(int32_t));
    ck_assert_ptr_nonnull(r.idx);
    lh_status st = sq ? lh_forward_with_scores(plan, in->q, in->k, in->v, sq, sk, r.out, buf.saved,
                                               buf.fwd_ws, NULL)
                      : lh_forward(plan, in->q, in->k, in->v, r.out, buf.saved, buf.fwd_ws, NULL);
    ck_assert_msg(st == LH_OK, "forward: %s", lh_last_error());
    ck_assert_msg(lh_backward(plan, in->q, in->k, in->v, NULL, in->dout, buf.saved, r.dq, r.dk, r.dv,
                              buf.bwd_ws, NULL) == LH_OK,
                  "backward: %s", lh_last_error());
    memcpy(r.idx, buf.saved, r.nidx * sizeof(int32_t));
    test_buffers_free(&buf);
    return r;
}

static void run_free(run *r) { free(r->out), free(r->dq), free(r->dk), free(r->dv), free(r->idx); }

static int identical(const run *a, const run *b) {
    return a->nidx == b->nidx && !memcmp(a->idx, b->idx, a->nidx * 4) &&
           !memcmp(a->out, b->out, a->nq * 4) && !memcmp(a->dq, b->dq, a->nq * 4) &&
           !memcmp(a->dk, b->dk, a->nkv * 4) && !memcmp(a->dv, b->dv, a->nkv * 4);
}

static test_cfg small_cfg(void) {
    /* small enough for valgrind (memcheck_test_scorers): a coarsest level of one 256-entry tile */
    return (test_cfg){.batch = 2, .seq_len = 1024, .heads = 4, .kv_heads = 2, .head_dim = 16,
                      .levels = 2, .pooling = 4, .topk = 128, .mode = LH_MODE_LIGHTHOUSE};
}

static int64_t plan_query(lh_plan *plan, lh_query q) {
    int64_t v = -1;
    ck_assert_int_eq(lh_plan_get_i64(plan, q, &v), LH_OK);
    return v;
}

/* _i: 0 = BNHD, 1 = BHND; grouped-query heads (H = 4, Hkv = 2). */
START_TEST(test_external_equals_norm) {
    test_cfg c = small_cfg();
    c.layout = _i ? LH_LAYOUT_BHND : LH_LAYOUT_BNHD;
    inputs in = inputs_new(&c);
    lh_plan *norm = test_plan(ctx, &c);
    c.scorer = LH_SCORER_EXTERNAL;
    lh_plan *ext = test_plan(ctx, &c);
    /* The external plan's forward workspace has no room for scores of its own. */
    ck_assert_int_lt(plan_query(ext, LH_QUERY_FWD_WORKSPACE_BYTES),
                     plan_query(norm, LH_QUERY_FWD_WORKSPACE_BYTES));
    test_buffers nb = test_buffers_alloc(norm);
    size_t n = (size_t)(c.batch * c.heads * nb.s_total), nk = (size_t)(c.batch * 2 * nb.s_total);
    float *sq = test_floats(n), *sk = test_floats(nk), *sq2 = test_floats(n), *sk2 = test_floats(nk);
    ck_assert_int_eq(lh_scores(norm, in.q, in.k, sq, sk, nb.stage_ws, NULL), LH_OK);
    /* lh_scores_qkv of a norm plan reads no v and gives the same scores. */
    ck_assert_int_eq(lh_scores_qkv(norm, in.q, in.k, NULL, sq2, sk2, nb.stage_ws, NULL), LH_OK);
    ck_assert(!memcmp(sq, sq2, n * 4) && !memcmp(sk, sk2, nk * 4));
    run a = run_plan(norm, &in, NULL, NULL), b = run_plan(ext, &in, sq, sk);
    int same = identical(&a, &b);
    printf("external = norm (%s, GQA): indices, out, dq, dk, dv %s\n", _i ? "BHND" : "BNHD",
           same ? "bit-identical" : "DIFFER");
    ck_assert(same);
    run_free(&a), run_free(&b);
    free(sq), free(sk), free(sq2), free(sk2);
    test_buffers_free(&nb);
    ck_assert_int_eq(lh_plan_destroy(norm), LH_OK);
    ck_assert_int_eq(lh_plan_destroy(ext), LH_OK);
    inputs_free(&in);
}
END_TEST

/* The dilated scorer reads the strided sequences through strides: BHND (the same tensors
 * transposed) gives the same scores bit for bit, hence the same selection; the forward's
 * selection is lh_select of lh_scores_qkv. */
START_TEST(test_dilated_layouts) {
    test_cfg c = small_cfg();
    c.kv_heads = 0;
    c.scorer = LH_SCORER_DILATED;
    c.dilation = 8;
    inputs in = inputs_new(&c);
    lh_plan *bnhd = test_plan(ctx, &c);
    c.layout = LH_LAYOUT_BHND;
    lh_plan *bhnd = test_plan(ctx, &c);
    test_buffers buf = test_buffers_alloc(bnhd);
    size_t n = (size_t)(c.batch * c.heads * buf.s_total);
    float *sq = test_floats(n), *sk = test_floats(n), *tq = test_floats(n), *tk = test_floats(n);
    float *qt = test_floats(in.nq), *kt = test_floats(in.nq), *vt = test_floats(in.nq);
    test_transpose(in.q, qt, c.batch, c.seq_len, c.heads, c.head_dim, 0);
    test_transpose(in.k, kt, c.batch, c.seq_len, c.heads, c.head_dim, 0);
    test_transpose(in.v, vt, c.batch, c.seq_len, c.heads, c.head_dim, 0);
    ck_assert_int_eq(lh_scores_qkv(bnhd, in.q, in.k, in.v, sq, sk, buf.stage_ws, NULL), LH_OK);
    ck_assert_int_eq(lh_scores_qkv(bhnd, qt, kt, vt, tq, tk, buf.stage_ws, NULL), LH_OK);
    ck_assert_msg(!memcmp(sq, tq, n * 4) && !memcmp(sk, tk, n * 4),
                  "dilated scores differ between the layouts");
    size_t nidx = (size_t)(c.batch * c.heads * buf.s_sel);
    int32_t *idx = malloc(nidx * sizeof(int32_t));
    ck_assert_int_eq(lh_select(bnhd, sq, sk, idx, buf.stage_ws, NULL), LH_OK);
    run a = run_plan(bnhd, &in, NULL, NULL);
    ck_assert_msg(!memcmp(a.idx, idx, nidx * 4), "the forward's selection is not that of its scores");
    printf("dilated d = 8: BNHD and BHND scores bit-identical, forward selects from them\n");
    run_free(&a);
    free(idx), free(sq), free(sk), free(tq), free(tk), free(qt), free(kt), free(vt);
    test_buffers_free(&buf);
    ck_assert_int_eq(lh_plan_destroy(bnhd), LH_OK);
    ck_assert_int_eq(lh_plan_destroy(bhnd), LH_OK);
    inputs_free(&in);
}
END_TEST

static char finalize_msg[512];

/* A plan of c with `scorer` and (when > 0) `dilation` set; finalize's status. The plan goes to
 * *out, or is destroyed when out is NULL. */
static lh_status finalize_with(test_cfg c, int64_t scorer, int64_t dilation, lh_plan **out) {
    lh_plan *plan = NULL;
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    const struct { lh_param p; int64_t v; } params[] = {
        {LH_PARAM_BATCH, c.batch}, {LH_PARAM_SEQ_LEN, c.seq_len}, {LH_PARAM_HEADS, c.heads},
        {LH_PARAM_KV_HEADS, c.kv_heads ? c.kv_heads : c.heads}, {LH_PARAM_HEAD_DIM, c.head_dim},
        {LH_PARAM_LEVELS, c.levels}, {LH_PARAM_POOLING, c.pooling}, {LH_PARAM_TOPK, c.topk},
        {LH_PARAM_MODE, c.mode}, {LH_PARAM_SCORER, scorer}};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        ck_assert_int_eq(lh_plan_set_i64(plan, params[i].p, params[i].v), LH_OK);
    if (dilation > 0) ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_DILATION, dilation), LH_OK);
    lh_status st = lh_plan_finalize(plan);
    if (out) {
        *out = plan;
        return st;
    }
    /* lh_plan_destroy clears the error channel: keep the sentence for expect_error. */
    snprintf(finalize_msg, sizeof finalize_msg, "%s", lh_last_error());
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
    return st;
}

/* The status and sentence of a call (or of finalize_with's finalize, when it kept one). */
static void expect_error(lh_status got, lh_status want, const char *needle) {
    const char *msg = finalize_msg[0] ? finalize_msg : lh_last_error();
    printf("  %-26s %s\n", lh_status_string(got), msg);
    ck_assert_int_eq(got, want);
    ck_assert_msg(strstr(msg, needle), "message \"%s\" lacks \"%s\"", msg, needle);
    finalize_msg[0] = 0;
}

START_TEST(test_scorer_errors) {
    lh_plan *plan = NULL;
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    int64_t v = -1;
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_SCORER, &v), LH_OK);
    ck_assert_int_eq(v, LH_SCORER_NORM);
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_DILATION, &v), LH_OK);
    ck_assert_int_eq(v, 4);
    printf("bad scorer parameters:\n");
    expect_error(lh_plan_set_i64(plan, LH_PARAM_SCORER, 3), LH_ERROR_INVALID_VALUE,
                 "SCORER must be NORM (0), DILATED (1) or EXTERNAL (2)");
    expect_error(lh_plan_set_i64(plan, LH_PARAM_SCORER, -1), LH_ERROR_INVALID_VALUE, "got -1");
    expect_error(lh_plan_set_i64(plan, LH_PARAM_DILATION, 0), LH_ERROR_INVALID_VALUE,
                 "DILATION (the dilated scorer's stride d) must be at least 1");
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);

    test_cfg c = small_cfg();
    expect_error(finalize_with(c, LH_SCORER_DILATED, 0, NULL), LH_ERROR_HEADS_MISMATCH,
                 "needs HEADS == KV_HEADS (got HEADS = 4, KV_HEADS = 2)");
    c.kv_heads = 0;
    expect_error(finalize_with(c, LH_SCORER_DILATED, 3, NULL), LH_ERROR_SEQ_DIVISIBILITY,
                 "SEQ_LEN = 1024 into DILATION = 3 strided sequences");
    expect_error(finalize_with(c, LH_SCORER_DILATED, 4096, NULL), LH_ERROR_SEQ_DIVISIBILITY,
                 "multiple of DILATION");
    expect_error(finalize_with(c, LH_SCORER_NORM, 4, NULL), LH_ERROR_INVALID_VALUE,
                 "DILATION = 4 is set, but it belongs to SCORER = DILATED");
    expect_error(finalize_with(c, LH_SCORER_EXTERNAL, 2, NULL), LH_ERROR_INVALID_VALUE,
                 "this plan's scorer is EXTERNAL");
    test_cfg d = c;
    d.mode = LH_MODE_DENSE;
    expect_error(finalize_with(d, LH_SCORER_DILATED, 0, NULL), LH_ERROR_INVALID_VALUE,
                 "a DENSE plan has no pyramid");
    ck_assert_int_eq(finalize_with(c, LH_SCORER_DILATED, 1, NULL), LH_OK);

    /* Calls that do not fit the plan's scorer; the outputs stay as they were. */
    printf("calls that do not fit the scorer:\n");
    lh_plan *norm = NULL, *ext = NULL, *dil = NULL, *dense = NULL;
    ck_assert_int_eq(finalize_with(c, LH_SCORER_NORM, 0, &norm), LH_OK);
    ck_assert_int_eq(finalize_with(c, LH_SCORER_EXTERNAL, 0, &ext), LH_OK);
    ck_assert_int_eq(finalize_with(c, LH_SCORER_DILATED, 0, &dil), LH_OK);
    d.kv_heads = 0;
    ck_assert_int_eq(finalize_with(d, LH_SCORER_NORM, 0, &dense), LH_OK);
    inputs in = inputs_new(&c);
    test_buffers buf = test_buffers_alloc(norm), eb = test_buffers_alloc(ext);
    size_t n = (size_t)(c.batch * c.heads * buf.s_total);
    float *sq = test_floats(n), *sk = test_floats(n), *out = test_floats(in.nq);
    memset(out, 0x5a, in.nq * 4);
    float *poisoned = test_floats(in.nq);
    memcpy(poisoned, out, in.nq * 4);
    expect_error(lh_forward(ext, in.q, in.k, in.v, out, eb.saved, eb.fwd_ws, NULL),
                 LH_ERROR_UNSUPPORTED, "call lh_forward_with_scores");
    expect_error(lh_forward_with_scores(norm, in.q, in.k, in.v, sq, sk, out, buf.saved, buf.fwd_ws,
                                        NULL),
                 LH_ERROR_UNSUPPORTED, "computes its own scores (SCORER = NORM)");
    expect_error(lh_forward_with_scores(dense, in.q, in.k, in.v, sq, sk, out, buf.saved, buf.fwd_ws,
                                        NULL),
                 LH_ERROR_UNSUPPORTED, "a DENSE plan ranks nothing");
    expect_error(lh_forward_with_scores(ext, in.q, in.k, in.v, NULL, sk, out, eb.saved, eb.fwd_ws,
                                        NULL),
                 LH_ERROR_NULL_POINTER, "scores_q is NULL");
    expect_error(lh_forward_with_scores(ext, in.q, in.k, in.v, sq, (float *)((char *)sk + 1), out,
                                        eb.saved, eb.fwd_ws, NULL),
                 LH_ERROR_BAD_POINTER, "scores_k");
    expect_error(lh_scores(dil, in.q, in.k, sq, sk, buf.stage_ws, NULL), LH_ERROR_UNSUPPORTED,
                 "call lh_scores_qkv");
    expect_error(lh_scores_qkv(ext, in.q, in.k, in.v, sq, sk, buf.stage_ws, NULL),
                 LH_ERROR_UNSUPPORTED, "no scorer (SCORER = EXTERNAL");
    expect_error(lh_scores_qkv(dil, in.q, in.k, NULL, sq, sk, buf.stage_ws, NULL),
                 LH_ERROR_NULL_POINTER, "v is NULL");
    ck_assert_msg(!memcmp(out, poisoned, in.nq * 4), "a refused call wrote to out");
    free(sq), free(sk), free(out), free(poisoned);
    test_buffers_free(&buf);
    test_buffers_free(&eb);
    inputs_free(&in);
    lh_plan *plans[] = {norm, ext, dil, dense};
    for (int i = 0; i < 4; i++) ck_assert_int_eq(lh_plan_destroy(plans[i]), LH_OK);
}
END_TEST

int main(void) {
    seed = test_seed("test_scorers");
    Suite *s = suite_create("scorers");
    TCase *tc = tcase_create("cpu");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_external_equals_norm, 0, 2);
    tcase_add_test(tc, test_dilated_layouts);
    tcase_add_test(tc, test_scorer_errors);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
