/* test_golden.c - conformance of the CPU backend with the golden vectors (docs/spec.md section 9):
 * scores, selection (from raw inputs and from the stored scores), output and gradients. Built
 * twice: test_golden (tests/golden, the norm scorer) and, with LH_GOLDEN_SET_DILATED,
 * test_golden_dilated (tests/golden-dilated, the dilated scorer of section 10).
 * Golden `out` and `dout` are [B,H,N,D]; q, k, v, dq, dk, dv are [B,N,H,D]. The measured errors
 * are printed so they can be quoted. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lighthouse.h"
#include "test_util.h"

#ifndef LH_GOLDEN_DIR
#define LH_GOLDEN_DIR "tests/golden"
#endif

/* The configurations of golden/README.md and golden-dilated/README.md (and manifest.json). */
static const struct golden {
    const char *name;
    int64_t B, N, H, D, L, p, topk, s_sel, dilation; /* dilation 0: the norm scorer */
} goldens[] = {
#ifdef LH_GOLDEN_SET_DILATED
    {"d1", 1, 4096, 2, 32, 3, 4, 256, 2304, 4},
    {"d2", 2, 2048, 2, 16, 2, 8, 128, 1280, 4},
    {"d3", 1, 8192, 1, 32, 3, 2, 256, 3072, 8},
#else
    {"g1", 1, 2048, 2, 32, 2, 4, 128, 1024, 0},
    {"g2", 2, 2048, 1, 32, 3, 2, 128, 1024, 0},
    {"g3", 1, 8192, 1, 32, 3, 4, 256, 2560, 0},
#endif
};

#ifdef LH_GOLDEN_SET_DILATED
#undef LH_GOLDEN_DIR
#define LH_GOLDEN_DIR LH_GOLDEN_DILATED_DIR
#endif

#define TOL_REL 1e-5     /* README: out, dq, dk, dv within 1e-5 relative (Frobenius) */
#define TOL_SCORES 1e-5  /* scores: max |ours - stored| / max(1, |stored|) */

typedef struct golden_data {
    test_cfg cfg;
    size_t elems, scores_n, idx_n;
    float *q, *k, *v, *dout_bhnd, *out_bhnd, *dq, *dk, *dv, *scores_q, *scores_k;
    int32_t *indices;
} golden_data;

static void load_golden(const struct golden *g, golden_data *d) {
    char name[64];
    memset(d, 0, sizeof *d);
    d->cfg = (test_cfg){.batch = g->B, .seq_len = g->N, .heads = g->H, .kv_heads = g->H,
                        .head_dim = g->D, .levels = g->L, .pooling = g->p, .topk = g->topk,
                        .layout = LH_LAYOUT_BNHD, .mode = LH_MODE_LIGHTHOUSE,
                        .scorer = g->dilation ? LH_SCORER_DILATED : LH_SCORER_NORM,
                        .dilation = g->dilation};
    int64_t s_total = 0;
    for (int64_t l = 0, f = 1; l < g->L; l++, f *= g->p)
        s_total += g->N / f;
    d->elems = test_elems(&d->cfg, g->H);
    d->scores_n = (size_t)(g->B * g->H * s_total);
    d->idx_n = (size_t)(g->B * g->H * g->s_sel);
#define LOAD(field, suffix, n, type)                                          \
    snprintf(name, sizeof name, "%s.%s", g->name, suffix);                    \
    d->field = test_load(LH_GOLDEN_DIR, name, n, sizeof(type));
    LOAD(q, "q.f32", d->elems, float)
    LOAD(k, "k.f32", d->elems, float)
    LOAD(v, "v.f32", d->elems, float)
    LOAD(dout_bhnd, "dout.f32", d->elems, float)
    LOAD(out_bhnd, "out.f32", d->elems, float)
    LOAD(dq, "dq.f32", d->elems, float)
    LOAD(dk, "dk.f32", d->elems, float)
    LOAD(dv, "dv.f32", d->elems, float)
    LOAD(scores_q, "scores_qk.f32", d->scores_n, float)
    LOAD(scores_k, "scores_kq.f32", d->scores_n, float)
    LOAD(indices, "indices.i32", d->idx_n, int32_t)
#undef LOAD
}

static void free_golden(golden_data *d) {
    void *ptrs[] = {d->q, d->k, d->v, d->dout_bhnd, d->out_bhnd, d->dq, d->dk, d->dv,
                    d->scores_q, d->scores_k, d->indices};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        free(ptrs[i]);
}

static size_t mismatches(const int32_t *a, const int32_t *b, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += a[i] != b[i];
    return bad;
}

/* Scores and selection through the stage entry points. */
START_TEST(test_golden_selection) {
    const struct golden *g = &goldens[_i];
    golden_data d;
    load_golden(g, &d);
    lh_context *ctx = NULL;
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK);
    lh_plan *plan = test_plan(ctx, &d.cfg);
    test_buffers buf = test_buffers_alloc(plan);
    ck_assert_int_eq(buf.s_sel, g->s_sel);
    ck_assert_uint_eq((size_t)(g->B * g->H * buf.s_total), d.scores_n);

    float *sq = test_floats(d.scores_n), *sk = test_floats(d.scores_n);
    int32_t *idx = calloc(d.idx_n, sizeof(int32_t));
    ck_assert_ptr_nonnull(idx);
    ck_assert_msg(lh_scores_qkv(plan, d.q, d.k, d.v, sq, sk, buf.stage_ws, NULL) == LH_OK, "%s",
                  lh_last_error());
    double eq = test_max_err(sq, d.scores_q, d.scores_n), ek = test_max_err(sk, d.scores_k, d.scores_n);
    printf("%s scores: max err q %.2e, k %.2e\n", g->name, eq, ek);
    ck_assert_msg(eq <= TOL_SCORES && ek <= TOL_SCORES, "%s scores: %.2e %.2e", g->name, eq, ek);

    ck_assert_msg(lh_select(plan, sq, sk, idx, buf.stage_ws, NULL) == LH_OK, "%s", lh_last_error());
    size_t bad_ours = mismatches(idx, d.indices, d.idx_n);
    ck_assert_msg(lh_select(plan, d.scores_q, d.scores_k, idx, buf.stage_ws, NULL) == LH_OK, "%s",
                  lh_last_error());
    size_t bad_stored = mismatches(idx, d.indices, d.idx_n);
    printf("%s indices: %zu mismatches from our scores, %zu from the stored scores (of %zu)\n",
           g->name, bad_ours, bad_stored, d.idx_n);
    ck_assert_uint_eq(bad_ours, 0);
    ck_assert_uint_eq(bad_stored, 0);

    free(sq);
    free(sk);
    free(idx);
    test_buffers_free(&buf);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
    ck_assert_int_eq(lh_context_destroy(ctx), LH_OK);
    free_golden(&d);
}
END_TEST

/* Forward and backward against the stored output and gradients. */
START_TEST(test_golden_forward_backward) {
    const struct golden *g = &goldens[_i];
    golden_data d;
    load_golden(g, &d);
    lh_context *ctx = NULL;
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK);
    lh_plan *plan = test_plan(ctx, &d.cfg);
    test_buffers buf = test_buffers_alloc(plan);
    size_t n = d.elems;
    float *out = test_floats(n), *out_bhnd = test_floats(n), *dout = test_floats(n);
    float *dq = test_floats(n), *dk = test_floats(n), *dv = test_floats(n);
    test_transpose(d.dout_bhnd, dout, g->B, g->N, g->H, g->D, 1);

    ck_assert_msg(lh_forward(plan, d.q, d.k, d.v, out, buf.saved, buf.fwd_ws, NULL) == LH_OK,
                  "%s", lh_last_error());
    ck_assert_msg(lh_backward(plan, d.q, d.k, d.v, NULL, dout, buf.saved, dq, dk, dv, buf.bwd_ws,
                              NULL) == LH_OK,
                  "%s", lh_last_error());
    test_transpose(out, out_bhnd, g->B, g->N, g->H, g->D, 0);
    double e_out = test_rel_err(out_bhnd, d.out_bhnd, n), e_dq = test_rel_err(dq, d.dq, n);
    double e_dk = test_rel_err(dk, d.dk, n), e_dv = test_rel_err(dv, d.dv, n);
    printf("%s relative errors: out %.2e dq %.2e dk %.2e dv %.2e\n", g->name, e_out, e_dq, e_dk,
           e_dv);
    ck_assert_msg(e_out <= TOL_REL, "%s out rel err %.2e", g->name, e_out);
    ck_assert_msg(e_dq <= TOL_REL, "%s dq rel err %.2e", g->name, e_dq);
    ck_assert_msg(e_dk <= TOL_REL, "%s dk rel err %.2e", g->name, e_dk);
    ck_assert_msg(e_dv <= TOL_REL, "%s dv rel err %.2e", g->name, e_dv);

    float *bufs[] = {out, out_bhnd, dout, dq, dk, dv};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    test_buffers_free(&buf);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
    ck_assert_int_eq(lh_context_destroy(ctx), LH_OK);
    free_golden(&d);
}
END_TEST

int main(void) {
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("cpu");
    tcase_set_timeout(tc, 600);
    int count = (int)(sizeof goldens / sizeof goldens[0]);
    tcase_add_loop_test(tc, test_golden_selection, 0, count);
    tcase_add_loop_test(tc, test_golden_forward_backward, 0, count);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
