/* test_util.c - see test_util.h. */
#include "test_util.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

lh_plan *test_plan(lh_context *ctx, const test_cfg *c) {
    lh_plan *plan = NULL;
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    const struct { lh_param p; int64_t v; } params[] = {
        {LH_PARAM_BATCH, c->batch},       {LH_PARAM_SEQ_LEN, c->seq_len},
        {LH_PARAM_HEADS, c->heads},       {LH_PARAM_HEAD_DIM, c->head_dim},
        {LH_PARAM_LAYOUT, c->layout},
        {LH_PARAM_MODE, c->mode},
    };
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        ck_assert_msg(lh_plan_set_i64(plan, params[i].p, params[i].v) == LH_OK, "%s",
                      lh_last_error());
    if (c->kv_heads > 0)   /* 0 leaves the default (KV_HEADS = HEADS) */
        ck_assert_msg(lh_plan_set_i64(plan, LH_PARAM_KV_HEADS, c->kv_heads) == LH_OK, "%s",
                      lh_last_error());
    if (c->mode == LH_MODE_LIGHTHOUSE) {
        ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_LEVELS, c->levels), LH_OK);
        ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_POOLING, c->pooling), LH_OK);
        ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, c->topk), LH_OK);
    }
    if (c->scale > 0)
        ck_assert_int_eq(lh_plan_set_f64(plan, LH_PARAM_SOFTMAX_SCALE, c->scale), LH_OK);
    if (c->scorer != LH_SCORER_NORM)
        ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_SCORER, c->scorer), LH_OK);
    if (c->dilation > 0)
        ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_DILATION, c->dilation), LH_OK);
    ck_assert_msg(lh_plan_finalize(plan) == LH_OK, "finalize: %s", lh_last_error());
    return plan;
}

static void *alloc64(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    ck_assert_ptr_nonnull(p);
    memset(p, 0, (bytes + 63) / 64 * 64 + 64);
    return p;
}

test_buffers test_buffers_alloc(lh_plan *plan) {
    int64_t saved, fws, bws, sws;
    test_buffers b;
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_SAVED_BYTES, &saved), LH_OK);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_FWD_WORKSPACE_BYTES, &fws), LH_OK);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_BWD_WORKSPACE_BYTES, &bws), LH_OK);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_STAGE_WORKSPACE_BYTES, &sws), LH_OK);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_SUBSEQ_LEN, &b.s_sel), LH_OK);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_PYRAMID_LEN, &b.s_total), LH_OK);
    b.saved = alloc64((size_t)saved);
    b.fwd_ws = alloc64((size_t)fws);
    b.bwd_ws = alloc64((size_t)bws);
    b.stage_ws = alloc64((size_t)sws);
    return b;
}

void test_buffers_free(test_buffers *b) {
    free(b->saved);
    free(b->fwd_ws);
    free(b->bwd_ws);
    free(b->stage_ws);
}

size_t test_elems(const test_cfg *c, int64_t heads) {
    return (size_t)(c->batch * c->seq_len * heads * c->head_dim);
}

void *test_load(const char *dir, const char *name, size_t count, size_t elem_size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    void *p = alloc64(count * elem_size);
    size_t got = fread(p, elem_size, count, f);
    fclose(f);
    ck_assert_msg(got == count, "%s: read %zu of %zu elements", path, got, count);
    return p;
}

float *test_floats(size_t count) { return alloc64(count * sizeof(float)); }

void test_fill_uniform(float *x, size_t n, float amp, uint64_t *state) {
    uint64_t s = *state ? *state : 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = amp * (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    *state = s;
}

void test_transpose(const float *src, float *dst, int64_t B, int64_t N, int64_t H, int64_t D,
                    int to_bnhd) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < N; t++)
            for (int64_t h = 0; h < H; h++) {
                size_t bnhd = (size_t)(((b * N + t) * H + h) * D);
                size_t bhnd = (size_t)(((b * H + h) * N + t) * D);
                if (to_bnhd)
                    memcpy(dst + bnhd, src + bhnd, (size_t)D * sizeof(float));
                else
                    memcpy(dst + bhnd, src + bnhd, (size_t)D * sizeof(float));
            }
}

double test_rel_err(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (den == 0.0)
        return num == 0.0 ? 0.0 : INFINITY;
    return sqrt(num / den);
}

double test_max_err(const float *a, const float *b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]) / fmax(1.0, fabs((double)b[i]));
        if (!(e <= worst))
            worst = e;   /* NaN propagates as the worst */
    }
    return worst;
}

uint64_t test_seed(const char *program) {
    const char *env = getenv("LIGHTHOUSE_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) * 2654435761u + 1;
    printf("%s seed %llu (set LIGHTHOUSE_TEST_SEED to repeat)\n", program, (unsigned long long)seed);
    return seed;
}

int test_run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

void *test_attention_workspace(lh_plan *plan, lh_status *st) {
    int64_t bytes = 0;
    *st = lh_plan_get_i64(plan, LH_QUERY_ATTENTION_WORKSPACE_BYTES, &bytes);
    if (*st != LH_OK) return NULL;
    void *ws = aligned_alloc(64, (size_t)(bytes + 63) / 64 * 64 + 64);
    if (!ws) *st = LH_ERROR_OUT_OF_HOST_MEMORY;
    return ws;
}
