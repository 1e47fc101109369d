/* test_hostile.c - what a careless or hostile caller must not break, on the CPU backend: sizes
 * that the kernels index with 32 bits are refused at finalize; the error channel is "" after
 * every LH_OK, even when an attention hook's own library call failed; lh_backward refuses a
 * `saved` that a forward of this configuration did not write (zeros, random bytes, another
 * plan's, damaged indices) without reading or writing out of bounds and without writing dq, dk,
 * dv. Inputs are fresh random every run (the seed is printed). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lighthouse.h"
#include "test_util.h"

#define POISON 0x5a

static lh_context *ctx;
static uint64_t seed;

static void setup(void) {
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK);
    ck_assert_int_eq(lh_context_set_i64(ctx, LH_CONTEXT_NUM_THREADS, 2), LH_OK);
}
static void teardown(void) { ck_assert_int_eq(lh_context_destroy(ctx), LH_OK); }

static void assert_message_has(const char *needle) {
    const char *msg = lh_last_error();
    ck_assert_msg(strstr(msg, needle) != NULL, "message \"%s\" lacks \"%s\"", msg, needle);
}

/* Sets the Lighthouse parameters of a plan; every set must succeed. */
static lh_plan *plan_with(int64_t batch, int64_t n, int64_t heads, int64_t dim, int64_t levels,
                          int64_t pooling, int64_t topk) {
    lh_plan *plan = NULL;
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    const struct { lh_param p; int64_t v; } params[] = {
        {LH_PARAM_BATCH, batch}, {LH_PARAM_SEQ_LEN, n},        {LH_PARAM_HEADS, heads},
        {LH_PARAM_HEAD_DIM, dim}, {LH_PARAM_LEVELS, levels}, {LH_PARAM_POOLING, pooling},
        {LH_PARAM_TOPK, topk}};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        ck_assert_msg(lh_plan_set_i64(plan, params[i].p, params[i].v) == LH_OK, "%s",
                      lh_last_error());
    return plan;
}

/* ---- 32-bit sizes ------------------------------------------------------------------------ */

START_TEST(pyramid_positions_beyond_int32_refused) {
    /* S_total = 2^31 + 2^25 + 2^19 + 2^13 + 2^7 = 2181570688: positions would not fit int32. */
    lh_plan *plan = plan_with(1, INT64_C(1) << 31, 1, 1, 5, 64, 128);
    ck_assert_int_eq(lh_plan_finalize(plan), LH_ERROR_UNSUPPORTED);
    assert_message_has("S_total = 2181570688");
    assert_message_has("2^31");
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);

    /* 2^30 tokens over four levels stay below 2^31 positions: accepted (nothing is allocated). */
    plan = plan_with(1, INT64_C(1) << 30, 1, 1, 4, 64, 128);
    ck_assert_msg(lh_plan_finalize(plan) == LH_OK, "%s", lh_last_error());
    int64_t total = 0;
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_PYRAMID_LEN, &total), LH_OK);
    ck_assert_int_lt(total, INT64_C(1) << 31);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
}
END_TEST

START_TEST(ring_chunks_count_their_own_positions) {
    /* On a ring positions are per chunk: 2^32 tokens over W = 2 are chunks of 2^30. */
    lh_ring *ring = NULL;
    ck_assert_int_eq(lh_ring_create_local(2, &ring), LH_OK);
    lh_plan *plan = plan_with(1, INT64_C(1) << 32, 1, 1, 4, 64, 512);
    ck_assert_int_eq(lh_plan_set_ring(plan, ring, 0), LH_OK);
    ck_assert_msg(lh_plan_finalize(plan) == LH_OK, "%s", lh_last_error());
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
    /* 2^33 tokens: chunks of 2^31 tokens, more positions than int32 holds. */
    plan = plan_with(1, INT64_C(1) << 33, 1, 1, 4, 64, 512);
    ck_assert_int_eq(lh_plan_set_ring(plan, ring, 1), LH_OK);
    ck_assert_int_eq(lh_plan_finalize(plan), LH_ERROR_UNSUPPORTED);
    assert_message_has("chunk");
    assert_message_has("2^31");
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
    ck_assert_int_eq(lh_ring_destroy(ring), LH_OK);
}
END_TEST

/* ---- the error channel ------------------------------------------------------------------- */

START_TEST(set_i64_message_names_the_function_once) {
    ck_assert_int_eq(lh_plan_set_i64(NULL, LH_PARAM_TOPK, 128), LH_ERROR_NULL_POINTER);
    const char *msg = lh_last_error();
    const char *first = strstr(msg, "lh_plan_set_i64");
    ck_assert_ptr_nonnull(first);
    ck_assert_msg(strstr(first + 1, "lh_plan_set_i64") == NULL, "prefix twice: \"%s\"", msg);
    lh_plan *plan = plan_with(1, 1024, 2, 8, 2, 2, 128);
    ck_assert_int_eq(lh_plan_finalize(plan), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, 256), LH_ERROR_BAD_STATE);
    msg = lh_last_error();
    first = strstr(msg, "lh_plan_set_i64");
    ck_assert_ptr_nonnull(first);
    ck_assert_msg(strstr(first + 1, "lh_plan_set_i64") == NULL, "prefix twice: \"%s\"", msg);
    ck_assert_int_eq(lh_plan_set_i64(NULL, LH_PARAM_TOPK, 100), LH_ERROR_NULL_POINTER);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
}
END_TEST

/* Hooks that run the library's attention step, then make one more library call that fails
 * (an unknown query) and still return LH_OK. */
static lh_status noisy_forward(void *u, lh_plan *plan, const void *q, const void *k,
                               const void *v, void *o, float *lse, void *stream) {
    (void)u;
    lh_status st;
    void *ws = test_attention_workspace(plan, &st);
    if (!ws) return st;
    st = lh_attention_forward(plan, q, k, v, o, lse, ws, stream);
    free(ws);
    int64_t x = 0;
    if (st == LH_OK && lh_plan_get_i64(plan, (lh_query)999, &x) == LH_OK) return LH_ERROR_INTERNAL;
    return st;
}

static lh_status noisy_backward(void *u, lh_plan *plan, const void *q, const void *k,
                                const void *v, const void *o, const float *lse, const void *dO,
                                void *dq, void *dk, void *dv, void *stream) {
    (void)u;
    lh_status st;
    void *ws = test_attention_workspace(plan, &st);
    if (!ws) return st;
    st = lh_attention_backward(plan, q, k, v, o, lse, dO, dq, dk, dv, ws, stream);
    free(ws);
    int64_t x = 0;
    if (st == LH_OK && lh_plan_get_i64(plan, (lh_query)999, &x) == LH_OK) return LH_ERROR_INTERNAL;
    return st;
}

START_TEST(last_error_empty_after_ok_with_hooks) {
    lh_plan *plan = plan_with(1, 1024, 2, 8, 2, 2, 128);
    ck_assert_int_eq(lh_plan_set_attention_hooks(plan, noisy_forward, noisy_backward, NULL), LH_OK);
    ck_assert_int_eq(lh_plan_finalize(plan), LH_OK);
    test_cfg c = {.batch = 1, .seq_len = 1024, .heads = 2, .head_dim = 8};
    size_t n = test_elems(&c, 2);
    float *q = test_floats(n), *k = test_floats(n), *v = test_floats(n), *out = test_floats(n);
    float *dq = test_floats(n), *dk = test_floats(n), *dv = test_floats(n);
    test_fill_uniform(q, n, 1.0f, &seed);
    test_fill_uniform(k, n, 1.0f, &seed);
    test_fill_uniform(v, n, 1.0f, &seed);
    test_buffers b = test_buffers_alloc(plan);
    ck_assert_msg(lh_forward(plan, q, k, v, out, b.saved, b.fwd_ws, NULL) == LH_OK, "%s",
                  lh_last_error());
    ck_assert_msg(*lh_last_error() == '\0', "after LH_OK: \"%s\"", lh_last_error());
    ck_assert_msg(lh_backward(plan, q, k, v, out, out, b.saved, dq, dk, dv, b.bwd_ws, NULL) == LH_OK,
                  "%s", lh_last_error());
    ck_assert_msg(*lh_last_error() == '\0', "after LH_OK: \"%s\"", lh_last_error());
    test_buffers_free(&b);
    float *f[] = {q, k, v, out, dq, dk, dv};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free(f[i]);
    ck_assert_int_eq(lh_plan_destroy(plan), LH_OK);
}
END_TEST

/* ---- lh_backward does not trust `saved` --------------------------------------------------- */

typedef struct bwd_case {
    lh_plan *plan;
    test_cfg cfg;
    size_t n;
    float *q, *k, *v, *out, *dout, *dq, *dk, *dv;
    test_buffers b;
    int64_t saved_bytes;
} bwd_case;

/* A finalized plan (ring != NULL: rank 0 of it) and its inputs, after one forward. */
static bwd_case bwd_case_new(lh_plan *plan, const test_cfg *c, lh_ring *ring) {
    bwd_case bc = {.plan = plan, .cfg = *c};
    if (ring) ck_assert_int_eq(lh_plan_set_ring(plan, ring, 0), LH_OK);
    ck_assert_msg(lh_plan_finalize(plan) == LH_OK, "%s", lh_last_error());
    bc.n = test_elems(c, c->heads);
    float **f[] = {&bc.q, &bc.k, &bc.v, &bc.out, &bc.dout, &bc.dq, &bc.dk, &bc.dv};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) *f[i] = test_floats(bc.n);
    test_fill_uniform(bc.q, bc.n, 1.0f, &seed);
    test_fill_uniform(bc.k, bc.n, 1.0f, &seed);
    test_fill_uniform(bc.v, bc.n, 1.0f, &seed);
    test_fill_uniform(bc.dout, bc.n, 1.0f, &seed);
    bc.b = test_buffers_alloc(plan);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_SAVED_BYTES, &bc.saved_bytes), LH_OK);
    ck_assert_msg(lh_forward(plan, bc.q, bc.k, bc.v, bc.out, bc.b.saved, bc.b.fwd_ws, NULL) == LH_OK,
                  "%s", lh_last_error());
    return bc;
}

static void bwd_case_free(bwd_case *bc) {
    float *f[] = {bc->q, bc->k, bc->v, bc->out, bc->dout, bc->dq, bc->dk, bc->dv};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free(f[i]);
    test_buffers_free(&bc->b);
    ck_assert_int_eq(lh_plan_destroy(bc->plan), LH_OK);
}

static int all_poison(const void *p, size_t bytes) {
    const unsigned char *c = p;
    for (size_t i = 0; i < bytes; i++)
        if (c[i] != POISON) return 0;
    return 1;
}

/* lh_backward with `saved` = bad (saved_bytes bytes): refused with LH_ERROR_INVALID_VALUE and a
 * sentence about `saved`, dq/dk/dv untouched. */
static void expect_refused(bwd_case *bc, const void *bad, const char *what) {
    void *copy = aligned_alloc(64, (size_t)(bc->saved_bytes + 63) / 64 * 64);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, bad, (size_t)bc->saved_bytes);
    size_t bytes = bc->n * sizeof(float);
    memset(bc->dq, POISON, bytes);
    memset(bc->dk, POISON, bytes);
    memset(bc->dv, POISON, bytes);
    lh_status st = lh_backward(bc->plan, bc->q, bc->k, bc->v, bc->out, bc->dout, copy, bc->dq,
                               bc->dk, bc->dv, bc->b.bwd_ws, NULL);
    printf("  %-40s %s: %s\n", what, lh_status_string(st), lh_last_error());
    ck_assert_msg(st == LH_ERROR_INVALID_VALUE, "%s: got %s", what, lh_status_string(st));
    assert_message_has("saved");
    ck_assert_msg(all_poison(bc->dq, bytes) && all_poison(bc->dk, bytes) && all_poison(bc->dv, bytes),
                  "%s: a refused backward wrote its outputs", what);
    free(copy);
}

static void expect_accepted(bwd_case *bc) {
    ck_assert_msg(lh_backward(bc->plan, bc->q, bc->k, bc->v, bc->out, bc->dout, bc->b.saved,
                              bc->dq, bc->dk, bc->dv, bc->b.bwd_ws, NULL) == LH_OK,
                  "%s", lh_last_error());
}

/* Zeros, random bytes, and the forward's own saved with one index damaged in each way. */
static void check_saved_damage(bwd_case *bc, int64_t s_total, int64_t rows) {
    size_t sb = (size_t)bc->saved_bytes;
    unsigned char *bad = malloc(sb);
    ck_assert_ptr_nonnull(bad);
    memset(bad, 0, sb);
    expect_refused(bc, bad, "zeros");
    for (size_t i = 0; i < sb; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        bad[i] = (unsigned char)seed;
    }
    expect_refused(bc, bad, "random bytes");
    expect_accepted(bc);   /* the forward's own saved */
    /* White box: the indices are int32 at the start of `saved` (chunk-major on a ring). */
    int64_t at = rows / 2;
    const int32_t values[] = {-1, (int32_t)s_total, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        memcpy(bad, bc->b.saved, sb);
        ((int32_t *)bad)[at] = values[i];
        expect_refused(bc, bad, "an index outside the pyramid");
    }
    memcpy(bad, bc->b.saved, sb);
    int32_t *idx = (int32_t *)bad, t = idx[at];
    idx[at] = idx[at + 1];
    idx[at + 1] = t;
    expect_refused(bc, bad, "two indices swapped");
    memcpy(bad, bc->b.saved, sb);
    idx[at + 1] = idx[at];
    expect_refused(bc, bad, "an index repeated");
    free(bad);
}

START_TEST(backward_refuses_foreign_saved) {
    printf("seed %llu\n", (unsigned long long)seed);
    test_cfg c = {.batch = 1, .seq_len = 1024, .heads = 2, .head_dim = 8};
    /* Lighthouse without a ring */
    bwd_case bc = bwd_case_new(plan_with(1, 1024, 2, 8, 3, 2, 128), &c, NULL);
    check_saved_damage(&bc, 1024 + 512 + 256, 2 * 768);

    /* Another configuration whose `saved` has the same size (S_sel = 256 + 128 * 4 = 768 with
     * POOLING = 4, LEVELS = 2, against 256 + 2 * 128 * 2 with POOLING = 2, LEVELS = 3). */
    bwd_case other = bwd_case_new(plan_with(1, 1024, 2, 8, 2, 4, 128), &c, NULL);
    ck_assert_int_eq(other.saved_bytes, bc.saved_bytes);
    expect_refused(&bc, other.b.saved, "saved of another configuration");
    bwd_case_free(&other);
    /* the same configuration in the other layout: equal sizes, another meaning */
    lh_plan *bhnd = plan_with(1, 1024, 2, 8, 3, 2, 128);
    ck_assert_int_eq(lh_plan_set_i64(bhnd, LH_PARAM_LAYOUT, LH_LAYOUT_BHND), LH_OK);
    other = bwd_case_new(bhnd, &c, NULL);
    expect_refused(&bc, other.b.saved, "saved of the other layout");
    bwd_case_free(&other);
    bwd_case_free(&bc);

    /* a ring of one rank (its backward runs the ring path) */
    lh_ring *ring = NULL;
    ck_assert_int_eq(lh_ring_create_local(1, &ring), LH_OK);
    bc = bwd_case_new(plan_with(1, 1024, 2, 8, 2, 2, 256), &c, ring);
    check_saved_damage(&bc, 512 + 256, 2 * 2 * (256 + 256));
    bwd_case_free(&bc);
    ck_assert_int_eq(lh_ring_destroy(ring), LH_OK);

    /* dense mode keeps only the softmax statistics: still refused when not written by forward */
    lh_plan *dense = plan_with(1, 1024, 2, 8, 2, 2, 128);
    ck_assert_int_eq(lh_plan_set_i64(dense, LH_PARAM_MODE, LH_MODE_DENSE), LH_OK);
    bc = bwd_case_new(dense, &c, NULL);
    unsigned char *zeros = calloc(1, (size_t)bc.saved_bytes);
    expect_refused(&bc, zeros, "zeros (dense)");
    free(zeros);
    expect_accepted(&bc);
    bwd_case_free(&bc);
}
END_TEST

int main(void) {
    seed = test_seed("test_hostile");
    Suite *s = suite_create("hostile");
    TCase *tc = tcase_create("cpu");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, pyramid_positions_beyond_int32_refused);
    tcase_add_test(tc, ring_chunks_count_their_own_positions);
    tcase_add_test(tc, set_i64_message_names_the_function_once);
    tcase_add_test(tc, last_error_empty_after_ok_with_hooks);
    tcase_add_test(tc, backward_refuses_foreign_saved);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
