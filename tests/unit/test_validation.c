/* test_validation.c - one test per validation rule: the status, a message that names the rule's
 * values, and caller memory left untouched (poisoned before the call, compared after). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "lighthouse.h"

#define POISON 0x5a

static lh_context *ctx;

static void setup(void) { ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK); }
static void teardown(void) { ck_assert_int_eq(lh_context_destroy(ctx), LH_OK); }

/* A valid small Lighthouse configuration: N=1024, H=2, D=8, L=2, p=2, topk=128 (S_sel = 768). */
static lh_plan *small_plan(int finalize) {
    lh_plan *plan = NULL;
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, 1024), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEADS, 2), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEAD_DIM, 8), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_LEVELS, 2), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_POOLING, 2), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, 128), LH_OK);
    if (finalize) ck_assert_int_eq(lh_plan_finalize(plan), LH_OK);
    return plan;
}

static void assert_message_has(const char *needle) {
    const char *msg = lh_last_error();
    ck_assert_msg(strstr(msg, needle) != NULL, "message \"%s\" lacks \"%s\"", msg, needle);
}

static void assert_finalize_fails(lh_plan *plan, lh_status want, const char *n1, const char *n2) {
    ck_assert_int_eq(lh_plan_finalize(plan), want);
    assert_message_has(n1);
    if (n2) assert_message_has(n2);
    /* A plan that failed to finalize cannot run. */
    ck_assert_int_eq(lh_forward(plan, NULL, NULL, NULL, NULL, NULL, NULL, NULL), LH_ERROR_BAD_STATE);
}

/* Caller buffers for one forward/backward of small_plan, poisoned. */
typedef struct buffers {
    size_t q_bytes, saved_bytes, ws_bytes;
    unsigned char *q, *k, *v, *out, *saved, *ws, *dq;
} buffers;

static buffers make_buffers(lh_plan *plan) {
    buffers b;
    int64_t saved = 0, fws = 0, bws = 0;
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_SAVED_BYTES, &saved), LH_OK);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_FWD_WORKSPACE_BYTES, &fws), LH_OK);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_BWD_WORKSPACE_BYTES, &bws), LH_OK);
    b.q_bytes = 1024 * 2 * 8 * sizeof(float);
    b.saved_bytes = (size_t)saved;
    b.ws_bytes = (size_t)(fws > bws ? fws : bws) + 64;
    b.q = calloc(1, b.q_bytes); b.k = calloc(1, b.q_bytes); b.v = calloc(1, b.q_bytes);
    b.out = malloc(b.q_bytes); b.dq = malloc(b.q_bytes);
    b.saved = aligned_alloc(64, (b.saved_bytes + 63) / 64 * 64 + 64);
    b.ws = aligned_alloc(64, (b.ws_bytes + 63) / 64 * 64);
    memset(b.out, POISON, b.q_bytes);
    memset(b.dq, POISON, b.q_bytes);
    memset(b.saved, POISON, b.saved_bytes);
    return b;
}

static int all_poison(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != POISON) return 0;
    return 1;
}

static void assert_untouched(const buffers *b) {
    ck_assert_msg(all_poison(b->out, b->q_bytes), "out was written by a failing call");
    ck_assert_msg(all_poison(b->dq, b->q_bytes), "dq was written by a failing call");
    ck_assert_msg(all_poison(b->saved, b->saved_bytes), "saved was written by a failing call");
}

static void free_buffers(buffers *b) {
    free(b->q); free(b->k); free(b->v); free(b->out); free(b->dq); free(b->saved); free(b->ws);
}

START_TEST(null_out_handles) {
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, NULL), LH_ERROR_NULL_POINTER);
    assert_message_has("out_context");
    ck_assert_int_eq(lh_plan_create(NULL, NULL), LH_ERROR_NULL_POINTER);
    ck_assert_int_eq(lh_plan_create(ctx, NULL), LH_ERROR_NULL_POINTER);
    assert_message_has("out_plan");
    ck_assert_int_eq(lh_plan_set_i64(NULL, LH_PARAM_SEQ_LEN, 8), LH_ERROR_NULL_POINTER);
    ck_assert_int_eq(lh_plan_finalize(NULL), LH_ERROR_NULL_POINTER);
    ck_assert_int_eq(lh_plan_destroy(NULL), LH_OK);
    ck_assert_int_eq(lh_context_destroy(NULL), LH_OK);
}
END_TEST

START_TEST(null_tensor_pointers_leave_outputs_untouched) {
    lh_plan *plan = small_plan(1);
    buffers b = make_buffers(plan);
    ck_assert_int_eq(lh_forward(plan, NULL, b.k, b.v, b.out, b.saved, b.ws, NULL),
                     LH_ERROR_NULL_POINTER);
    assert_message_has("q is NULL");
    ck_assert_int_eq(lh_forward(plan, b.q, b.k, b.v, b.out, NULL, b.ws, NULL),
                     LH_ERROR_NULL_POINTER);
    assert_message_has("saved is NULL");
    ck_assert_int_eq(lh_backward(plan, b.q, b.k, b.v, NULL, NULL, b.saved, b.dq, b.k, b.v, b.ws,
                                 NULL),
                     LH_ERROR_NULL_POINTER);
    assert_message_has("dout is NULL");
    assert_untouched(&b);
    free_buffers(&b);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(non_positive_sizes) {
    lh_plan *plan = NULL;
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, 0), LH_ERROR_INVALID_VALUE);
    assert_message_has("SEQ_LEN");
    assert_message_has("got 0");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEADS, -3), LH_ERROR_INVALID_VALUE);
    assert_message_has("got -3");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEAD_DIM, 0), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_BATCH, -1), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_KV_HEADS, 0), LH_ERROR_INVALID_VALUE);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(missing_required_parameter) {
    lh_plan *plan = NULL;
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, 1024), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEADS, 2), LH_OK);
    assert_finalize_fails(plan, LH_ERROR_INVALID_VALUE, "HEAD_DIM must be set", NULL);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(heads_not_multiple_of_kv_heads) {
    lh_plan *plan = small_plan(0);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEADS, 6), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_KV_HEADS, 4), LH_OK);
    assert_finalize_fails(plan, LH_ERROR_HEADS_MISMATCH, "HEADS = 6", "KV_HEADS = 4");
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(pooling_not_power_of_two) {
    lh_plan *plan = small_plan(0);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_POOLING, 3), LH_ERROR_POOLING);
    assert_message_has("power of two");
    assert_message_has("got 3");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_POOLING, 128), LH_ERROR_POOLING);
    assert_message_has("got 128");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_POOLING, 1), LH_ERROR_POOLING);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(topk_not_multiple_of_128) {
    lh_plan *plan = small_plan(0);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, 100), LH_ERROR_TOPK);
    assert_message_has("multiple of 128");
    assert_message_has("got 100");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, 0), LH_ERROR_TOPK);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(levels_out_of_range) {
    lh_plan *plan = small_plan(0);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_LEVELS, 1), LH_ERROR_LEVELS);
    assert_message_has("got 1");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_LEVELS, LH_MAX_LEVELS + 1), LH_ERROR_LEVELS);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(seq_len_not_divisible) {
    lh_plan *plan = small_plan(0);
    /* p^(L-1) * topk/128 = 4 * 2 = 8 does not divide 1028. */
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, 1028), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_POOLING, 4), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, 256), LH_OK);
    assert_finalize_fails(plan, LH_ERROR_SEQ_DIVISIBILITY, "SEQ_LEN = 1028", "4^1 * 2");
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(too_few_coarse_entries_per_tile) {
    lh_plan *plan = small_plan(0);
    /* n_c = 1024 / 4 = 256 entries over topk/128 = 4 tiles: 64 per tile < 128. */
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_POOLING, 4), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, 512), LH_OK);
    assert_finalize_fails(plan, LH_ERROR_TILE_TOO_SMALL, "= 64", "at least 128");
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(unsupported_dtype_for_backend) {
    lh_plan *plan = small_plan(0);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16), LH_OK);
    assert_finalize_fails(plan, LH_ERROR_UNSUPPORTED_DTYPE, "DTYPE = 2", "float32");
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(unknown_enum_values) {
    lh_plan *plan = small_plan(0);
    lh_context *c2 = NULL;
    ck_assert_int_eq(lh_context_create((lh_backend)7, 0, &c2), LH_ERROR_INVALID_VALUE);
    assert_message_has("backend 7");
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, -1, &c2), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_DTYPE, 9), LH_ERROR_INVALID_VALUE);
    assert_message_has("got 9");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_LAYOUT, 2), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_MODE, -1), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_RECOMPUTE_SUBSEQ, 2), LH_ERROR_INVALID_VALUE);
    assert_message_has("RECOMPUTE_SUBSEQ");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_RECOMPUTE_SUBSEQ, 1), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, (lh_param)99, 1), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lh_plan_set_f64(plan, LH_PARAM_SOFTMAX_SCALE, -0.5), LH_ERROR_INVALID_VALUE);
    assert_message_has("-0.5");
    ck_assert_int_eq(lh_plan_set_f64(plan, LH_PARAM_TOPK, 1.0), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_SOFTMAX_SCALE, 1), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lh_context_set_i64(ctx, LH_CONTEXT_CACHE_ENABLED, 2), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lh_context_set_str(ctx, LH_CONTEXT_NUM_THREADS, "x"), LH_ERROR_INVALID_VALUE);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(calls_out_of_order) {
    lh_plan *plan = small_plan(0);
    int64_t value = 0;
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_SAVED_BYTES, &value), LH_ERROR_BAD_STATE);
    assert_message_has("not finalized");
    /* forward before finalize, with real buffers: untouched. */
    unsigned char *out = malloc(1024 * 2 * 8 * 4);
    memset(out, POISON, 1024 * 2 * 8 * 4);
    float *in = calloc(1024 * 2 * 8, sizeof(float));
    ck_assert_int_eq(lh_forward(plan, in, in, in, out, out, NULL, NULL), LH_ERROR_BAD_STATE);
    assert_message_has("lh_plan_finalize");
    ck_assert(all_poison(out, 1024 * 2 * 8 * 4));
    ck_assert_int_eq(lh_plan_finalize(plan), LH_OK);
    ck_assert_int_eq(lh_plan_finalize(plan), LH_ERROR_BAD_STATE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, 256), LH_ERROR_BAD_STATE);
    assert_message_has("finalized");
    ck_assert_int_eq(lh_plan_set_f64(plan, LH_PARAM_SOFTMAX_SCALE, 0.5), LH_ERROR_BAD_STATE);
    /* The context cannot go while a plan made from it lives. */
    ck_assert_int_eq(lh_context_destroy(ctx), LH_ERROR_BAD_STATE);
    assert_message_has("1 plan");
    free(out);
    free(in);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(misaligned_pointer) {
    lh_plan *plan = small_plan(1);
    buffers b = make_buffers(plan);
    ck_assert_int_eq(lh_forward(plan, b.q + 1, b.k, b.v, b.out, b.saved, b.ws, NULL),
                     LH_ERROR_BAD_POINTER);
    assert_message_has("not aligned");
    ck_assert_int_eq(lh_forward(plan, b.q, b.k, b.v, b.out, b.saved + 4, b.ws, NULL),
                     LH_ERROR_BAD_POINTER);
    assert_message_has("saved");
    assert_untouched(&b);
    free_buffers(&b);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(stream_on_cpu_backend) {
    lh_plan *plan = small_plan(1);
    buffers b = make_buffers(plan);
    int fake_stream;
    ck_assert_int_eq(lh_forward(plan, b.q, b.k, b.v, b.out, b.saved, b.ws, &fake_stream),
                     LH_ERROR_BAD_POINTER);
    assert_message_has("stream");
    assert_untouched(&b);
    free_buffers(&b);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(stage_entry_in_dense_mode) {
    lh_plan *plan = small_plan(0);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_MODE, LH_MODE_DENSE), LH_OK);
    ck_assert_int_eq(lh_plan_finalize(plan), LH_OK);
    float s = 0;
    int32_t idx = 0;
    ck_assert_int_eq(lh_select(plan, &s, &s, &idx, NULL, NULL), LH_ERROR_UNSUPPORTED);
    assert_message_has("LIGHTHOUSE");
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(dense_backward_needs_out) {
    lh_plan *plan = small_plan(0);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_MODE, LH_MODE_DENSE), LH_OK);
    ck_assert_int_eq(lh_plan_finalize(plan), LH_OK);
    buffers b = make_buffers(plan);
    ck_assert_int_eq(lh_backward(plan, b.q, b.k, b.v, NULL, b.q, b.saved, b.dq, b.out, b.out,
                                 b.ws, NULL),
                     LH_ERROR_NULL_POINTER);
    assert_message_has("out is NULL");
    assert_untouched(&b);
    free_buffers(&b);
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(stage_timing) {
    /* the parameter: 0 or 1, readable back */
    lh_plan *plan = small_plan(0);
    int64_t v = -1;
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_STAGE_TIMING, &v), LH_OK);
    ck_assert_int_eq(v, 0);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_STAGE_TIMING, 2), LH_ERROR_INVALID_VALUE);
    assert_message_has("STAGE_TIMING");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_STAGE_TIMING, 1), LH_OK);
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_STAGE_TIMING, &v), LH_OK);
    ck_assert_int_eq(v, 1);
    /* the CPU backend has no CUDA events: refused at finalize, with the reason */
    assert_finalize_fails(plan, LH_ERROR_UNSUPPORTED, "STAGE_TIMING", "cpu");
    double ms = -1.0;
    ck_assert_int_eq(lh_plan_get_stage_ms(plan, LH_STAGE_SCORES, &ms), LH_ERROR_BAD_STATE);
    assert_message_has("not finalized");
    lh_plan_destroy(plan);

    /* reading a time: a finalized plan, a known stage, somewhere to write, timing on */
    plan = small_plan(1);
    ck_assert_int_eq(lh_plan_get_stage_ms(NULL, LH_STAGE_SCORES, &ms), LH_ERROR_NULL_POINTER);
    ck_assert_int_eq(lh_plan_get_stage_ms(plan, LH_STAGE_SCORES, NULL), LH_ERROR_NULL_POINTER);
    assert_message_has("out_ms");
    ck_assert_int_eq(lh_plan_get_stage_ms(plan, LH_STAGE_COUNT, &ms), LH_ERROR_INVALID_VALUE);
    assert_message_has("unknown stage 9");
    ck_assert_int_eq(lh_plan_get_stage_ms(plan, (lh_stage)-1, &ms), LH_ERROR_INVALID_VALUE);
    ck_assert_int_eq(lh_plan_get_stage_ms(plan, LH_STAGE_GATHER, &ms), LH_ERROR_BAD_STATE);
    assert_message_has("STAGE_TIMING = 1");
    ck_assert(ms == -1.0); /* nothing written by a failing call */
    lh_plan_destroy(plan);
}
END_TEST

static Suite *validation_suite(void) {
    Suite *s = suite_create("validation");
    TCase *tc = tcase_create("rules");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, null_out_handles);
    tcase_add_test(tc, null_tensor_pointers_leave_outputs_untouched);
    tcase_add_test(tc, non_positive_sizes);
    tcase_add_test(tc, missing_required_parameter);
    tcase_add_test(tc, heads_not_multiple_of_kv_heads);
    tcase_add_test(tc, pooling_not_power_of_two);
    tcase_add_test(tc, topk_not_multiple_of_128);
    tcase_add_test(tc, levels_out_of_range);
    tcase_add_test(tc, seq_len_not_divisible);
    tcase_add_test(tc, too_few_coarse_entries_per_tile);
    tcase_add_test(tc, unsupported_dtype_for_backend);
    tcase_add_test(tc, unknown_enum_values);
    tcase_add_test(tc, calls_out_of_order);
    tcase_add_test(tc, misaligned_pointer);
    tcase_add_test(tc, stream_on_cpu_backend);
    tcase_add_test(tc, stage_entry_in_dense_mode);
    tcase_add_test(tc, dense_backward_needs_out);
    tcase_add_test(tc, stage_timing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(validation_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
