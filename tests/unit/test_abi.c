/* test_abi.c - the ABI's own promises: version, status names, the thread-local error channel,
 * backend choice, parameter defaults and the sizes a plan reports. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lighthouse.h"

START_TEST(version_matches_header) {
    ck_assert_int_eq(lh_version_number(), LH_VERSION_NUMBER);
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", LH_VERSION_MAJOR, LH_VERSION_MINOR,
             LH_VERSION_PATCH);
    ck_assert_str_eq(lh_version_string(), expect);
}
END_TEST

START_TEST(status_strings_are_distinct) {
    for (int a = LH_OK; a <= LH_ERROR_INTERNAL; a++) {
        ck_assert_ptr_nonnull(strstr(lh_status_string((lh_status)a), "LH_"));
        for (int b = a + 1; b <= LH_ERROR_INTERNAL; b++)
            ck_assert_str_ne(lh_status_string((lh_status)a), lh_status_string((lh_status)b));
    }
    ck_assert_str_eq(lh_status_string((lh_status)1234), "LH_ERROR_UNKNOWN_STATUS");
}
END_TEST

START_TEST(last_error_is_cleared_by_success) {
    ck_assert_int_eq(lh_plan_finalize(NULL), LH_ERROR_NULL_POINTER);
    ck_assert_str_ne(lh_last_error(), "");
    lh_context *ctx = NULL;
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK);
    ck_assert_str_eq(lh_last_error(), "");
    lh_context_destroy(ctx);
}
END_TEST

static void *fail_in_thread(void *arg) {
    (void)arg;
    lh_plan_set_i64(NULL, LH_PARAM_TOPK, 1);
    return strdup(lh_last_error());
}

START_TEST(last_error_is_thread_local) {
    ck_assert_int_eq(lh_context_destroy(NULL), LH_OK);
    pthread_t t;
    char *theirs = NULL;
    pthread_create(&t, NULL, fail_in_thread, NULL);
    pthread_join(t, (void **)&theirs);
    ck_assert_str_ne(theirs, "");
    ck_assert_str_eq(lh_last_error(), ""); /* this thread's message is its own */
    free(theirs);
}
END_TEST

START_TEST(auto_backend_resolves) {
    lh_context *ctx = NULL;
    ck_assert_int_eq(lh_context_create(LH_BACKEND_AUTO, 0, &ctx), LH_OK);
    lh_backend b = LH_BACKEND_AUTO;
    ck_assert_int_eq(lh_context_get_backend(ctx, &b), LH_OK);
    ck_assert(b == LH_BACKEND_CPU || b == LH_BACKEND_CUDA);
    lh_context_destroy(ctx);
}
END_TEST

START_TEST(defaults_and_sizes) {
    lh_context *ctx = NULL;
    lh_plan *plan = NULL;
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK);
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    int64_t v = 0;
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_LEVELS, &v), LH_OK);
    ck_assert_int_eq(v, 3);
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_POOLING, &v), LH_OK);
    ck_assert_int_eq(v, 4);
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_TOPK, &v), LH_OK);
    ck_assert_int_eq(v, 2048);
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_RECOMPUTE_SUBSEQ, &v), LH_OK);
    ck_assert_int_eq(v, 0); /* the backward reuses the forward's gathered rows by default */
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, 524288), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEADS, 1), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEAD_DIM, 128), LH_OK);
    ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_KV_HEADS, &v), LH_OK);
    ck_assert_int_eq(v, 1);
    double scale = 0;
    ck_assert_int_eq(lh_plan_get_param_f64(plan, LH_PARAM_SOFTMAX_SCALE, &scale), LH_OK);
    ck_assert_double_eq_tol(scale, 1.0 / sqrt(128.0), 1e-15);
    ck_assert_int_eq(lh_plan_finalize(plan), LH_OK);
    /* docs/spec.md's example: N = 524288, L = 3, p = 4, topk = 2048 keeps 49152 entries. */
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_SUBSEQ_LEN, &v), LH_OK);
    ck_assert_int_eq(v, 49152);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_PYRAMID_LEN, &v), LH_OK);
    ck_assert_int_eq(v, 524288 + 131072 + 32768);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_BACKEND, &v), LH_OK);
    ck_assert_int_eq(v, LH_BACKEND_CPU);
    ck_assert_int_eq(lh_plan_get_i64(plan, LH_QUERY_SAVED_BYTES, &v), LH_OK);
    ck_assert_int_gt(v, 0);
    ck_assert_int_eq(lh_plan_get_i64(plan, (lh_query)77, &v), LH_ERROR_INVALID_VALUE);
    lh_plan_destroy(plan);
    lh_context_destroy(ctx);
}
END_TEST

START_TEST(context_options) {
    lh_context *ctx = NULL;
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK);
    ck_assert_int_eq(lh_context_set_i64(ctx, LH_CONTEXT_NUM_THREADS, 1), LH_OK);
    ck_assert_int_eq(lh_context_set_i64(ctx, LH_CONTEXT_CACHE_ENABLED, 0), LH_OK);
    ck_assert_int_eq(lh_context_set_str(ctx, LH_CONTEXT_CACHE_DIR, "/tmp/lh-cache"), LH_OK);
    char long_path[2000];
    memset(long_path, 'a', sizeof long_path - 1);
    long_path[sizeof long_path - 1] = '\0';
    ck_assert_int_eq(lh_context_set_str(ctx, LH_CONTEXT_CACHE_DIR, long_path),
                     LH_ERROR_INVALID_VALUE);
    lh_context_destroy(ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("abi");
    TCase *tc = tcase_create("abi");
    tcase_add_test(tc, version_matches_header);
    tcase_add_test(tc, status_strings_are_distinct);
    tcase_add_test(tc, last_error_is_cleared_by_success);
    tcase_add_test(tc, last_error_is_thread_local);
    tcase_add_test(tc, auto_backend_resolves);
    tcase_add_test(tc, defaults_and_sizes);
    tcase_add_test(tc, context_options);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
