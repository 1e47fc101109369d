/*
 * test_compile_requests.c - a plan's kernels compiled side by side (lhc_compile_requests) and
 * one cache serving several threads that build different kernels at once.
 *
 * Most cases plant their kernels' entries in the disk cache first (text that looks like PTX,
 * under the key lhc_compile computes), so they run in a build without the MLIR compiler too:
 * that is the ThreadSanitizer build, which checks the cache's locking. Where the compiler is
 * there, one case also compiles a plan's kernels for real on several threads against the same
 * kernels compiled one by one.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compiler_internal.h"
#include "runtime.h"
#include "test_compiler_util.h"

static char dir[1024];
static lhc_kernel_request req[LHC_MAX_PLAN_KERNELS];
static int nreq;

static void setup(void) {
    ck_assert_int_eq(make_temp_dir(dir, sizeof dir), 0);
    lhc_plan_params pp = {.pooling = 4, .levels = 3, .head_dim = 64, .dtype = "bf16", .group = 1};
    ck_assert_int_eq(lhc_plan_kernels(&pp, req, &nreq), LH_OK);
    ck_assert_int_ge(nreq, 4);
}

static void teardown(void) { remove_temp_dir(dir); }

static lhc_cache *cache_at(const char *d) {
    lhc_cache *c = NULL;
    ck_assert_int_eq(lhc_cache_create(&c), LH_OK);
    ck_assert_int_eq(lhc_cache_set_dir(c, d), LH_OK);
    return c;
}

/* The text planted for a kernel: an entry the cache accepts (it names an .entry), unique to
 * the kernel and its constants so that a mix-up of requests shows. */
static void planted_text(const char *kernel, const char *constants, char *out, size_t cap) {
    snprintf(out, cap, "// planted for %s (%s)\n.entry lh_%s(\n)\n", kernel, constants, kernel);
}

static void plant(const char *kernel, const char *constants, const char *chip) {
    char key[33], text[1024], why[256];
    ck_assert_int_eq(lhc_kernel_key(kernel, constants, chip, key, NULL), LH_OK);
    planted_text(kernel, constants, text, sizeof text);
    ck_assert_int_eq(lhc_disk_write(dir, kernel, key, text, strlen(text), why, sizeof why), 0);
}

static void plant_all(void) {
    for (int i = 0; i < nreq; i++) plant(req[i].kernel, req[i].constants, "sm_90");
}

static void check_planted(const lhc_kernel *const *out) {
    char text[1024];
    for (int i = 0; i < nreq; i++) {
        ck_assert_ptr_nonnull(out[i]);
        planted_text(req[i].kernel, req[i].constants, text, sizeof text);
        ck_assert_str_eq(out[i]->ptx, text);
        ck_assert_int_eq(out[i]->num_entries, 1);
    }
}

START_TEST(every_thread_count_gives_each_request_its_kernel) {
    plant_all();
    const int counts[] = {0, 1, 2, 3, 64, 1000};
    for (size_t t = 0; t < sizeof counts / sizeof counts[0]; t++) {
        lhc_cache *c = cache_at(dir);
        const lhc_kernel *out[LHC_MAX_PLAN_KERNELS] = {0};
        int failed = 7;
        ck_assert_int_eq(lhc_compile_requests(c, req, nreq, "sm_90", counts[t], out, &failed), LH_OK);
        ck_assert_int_eq(failed, -1);
        check_planted(out);
        lhc_cache_stats s;
        lhc_cache_get_stats(c, &s);
        ck_assert_int_eq(s.disk_hits, nreq);
        ck_assert_int_eq(s.compiles, 0);
        /* asked again: every kernel from memory, the same objects */
        const lhc_kernel *again[LHC_MAX_PLAN_KERNELS] = {0};
        ck_assert_int_eq(lhc_compile_requests(c, req, nreq, "sm_90", counts[t], again, NULL), LH_OK);
        for (int i = 0; i < nreq; i++) ck_assert_ptr_eq(again[i], out[i]);
        lhc_cache_get_stats(c, &s);
        ck_assert_int_eq(s.memory_hits, nreq);
        lhc_cache_destroy(c);
    }
}
END_TEST

START_TEST(no_requests_and_null_arguments) {
    lhc_cache *c = cache_at(dir);
    const lhc_kernel *out[1] = {0};
    int failed = 7;
    ck_assert_int_eq(lhc_compile_requests(c, req, 0, "sm_90", 4, out, &failed), LH_OK);
    ck_assert_int_eq(failed, -1);
    ck_assert_int_eq(lhc_compile_requests(NULL, req, 1, "sm_90", 4, out, NULL), LH_ERROR_NULL_POINTER);
    ck_assert_int_eq(lhc_compile_requests(c, NULL, 1, "sm_90", 4, out, NULL), LH_ERROR_NULL_POINTER);
    ck_assert_int_eq(lhc_compile_requests(c, req, 1, NULL, 4, out, NULL), LH_ERROR_NULL_POINTER);
    ck_assert_int_eq(lhc_compile_requests(c, req, 1, "sm_90", 4, NULL, NULL), LH_ERROR_NULL_POINTER);
    ck_assert_ptr_nonnull(strstr(lh_error_message(), "lhc_compile_requests"));
    lhc_cache_destroy(c);
}
END_TEST

/* A serial loop stops at the first request that fails; side by side, the answer is the same:
 * that request's status, its index and the message lhc_compile gives for it alone. */
START_TEST(first_failing_request_in_order_is_reported) {
    plant_all();
    lhc_kernel_request mixed[4] = {req[0], req[1], req[2], req[3]};
    snprintf(mixed[1].constants, sizeof mixed[1].constants, "%.400s FOO=1", req[1].constants);
    mixed[3].kernel = "nope";
    lhc_cache *c = cache_at(dir);
    const lhc_kernel *alone = NULL;
    ck_assert_int_eq(lhc_compile(c, mixed[1].kernel, mixed[1].constants, "sm_90", &alone),
                     LH_ERROR_INVALID_VALUE);
    char expected[1024];
    snprintf(expected, sizeof expected, "%s", lh_error_message());
    for (int threads = 1; threads <= 4; threads++) {
        const lhc_kernel *out[4] = {0};
        int failed = -1;
        lh_clear_error();
        ck_assert_int_eq(lhc_compile_requests(c, mixed, 4, "sm_90", threads, out, &failed),
                         LH_ERROR_INVALID_VALUE);
        ck_assert_int_eq(failed, 1);
        ck_assert_str_eq(lh_error_message(), expected);
        ck_assert_ptr_nonnull(strstr(expected, "FOO"));
    }
    lhc_cache_destroy(c);
}
END_TEST

/* Threads that ask one cache for the same kernels at once: each kernel is read once, every
 * thread gets the same object, and the counters add up. */
static lhc_cache *shared;
static const lhc_kernel *seen[8][LHC_MAX_PLAN_KERNELS];
static void *ask_all(void *arg) {
    const lhc_kernel **out = arg;
    if (lhc_compile_requests(shared, req, nreq, "sm_90", 3, out, NULL) != LH_OK) out[0] = NULL;
    return NULL;
}

START_TEST(threads_asking_for_the_same_kernels_share_one_read) {
    plant_all();
    shared = cache_at(dir);
    memset(seen, 0, sizeof seen);
    pthread_t threads[8];
    for (int t = 0; t < 8; t++) ck_assert_int_eq(pthread_create(&threads[t], NULL, ask_all, seen[t]), 0);
    for (int t = 0; t < 8; t++) pthread_join(threads[t], NULL);
    check_planted(seen[0]);
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < nreq; i++) ck_assert_ptr_eq(seen[t][i], seen[0][i]);
    lhc_cache_stats s;
    lhc_cache_get_stats(shared, &s);
    ck_assert_int_eq(s.disk_hits, nreq);
    ck_assert_int_eq(s.memory_hits, 7 * nreq);
    lhc_cache_destroy(shared);
}
END_TEST

/* A kernel whose build fails while other threads wait for it: every thread gets the error,
 * nothing of it stays in the cache, and once it can be had (here: its entry planted) the same
 * cache answers it. The build fails at MLIR (an invalid dtype in the text) or, without the
 * compiler, for want of it. */
static const char *bad_constants = "DTYPE=f33 D=64 P=4 L=3 THREADS=256 RUN=4 TOKENS=128";
static lh_status failed_status[6];
static void *ask_bad(void *arg) {
    lh_status *st = arg;
    const lhc_kernel *k = NULL;
    *st = lhc_compile(shared, "scatter", bad_constants, "sm_90", &k);
    return NULL;
}

START_TEST(failed_build_leaves_nothing_behind) {
    shared = cache_at(dir);
    lhc_cache_set_disk_enabled(shared, 0);
    pthread_t threads[6];
    for (int t = 0; t < 6; t++) ck_assert_int_eq(pthread_create(&threads[t], NULL, ask_bad, &failed_status[t]), 0);
    for (int t = 0; t < 6; t++) pthread_join(threads[t], NULL);
    lh_status want = lhc_available() ? LH_ERROR_COMPILE : LH_ERROR_BACKEND_UNAVAILABLE;
    for (int t = 0; t < 6; t++) ck_assert_int_eq(failed_status[t], want);
    lhc_cache_stats s;
    lhc_cache_get_stats(shared, &s);
    ck_assert_int_eq(s.compiles + s.memory_hits + s.disk_hits, 0);

    plant("scatter", bad_constants, "sm_90");
    lhc_cache_set_disk_enabled(shared, 1);
    const lhc_kernel *k = NULL;
    ck_assert_int_eq(lhc_compile(shared, "scatter", bad_constants, "sm_90", &k), LH_OK);
    ck_assert_ptr_nonnull(strstr(k->ptx, "planted for scatter"));
    lhc_cache_destroy(shared);
}
END_TEST

/* With the compiler: a plan's kernels compiled on four threads are byte for byte those
 * compiled one by one, each compiled once. */
START_TEST(side_by_side_compiles_what_one_by_one_does) {
    lhc_cache *serial = cache_at(dir), *parallel = NULL;
    lhc_cache_set_disk_enabled(serial, 0);
    ck_assert_int_eq(lhc_cache_create(&parallel), LH_OK);
    lhc_cache_set_disk_enabled(parallel, 0);
    const lhc_kernel *one[LHC_MAX_PLAN_KERNELS] = {0}, *four[LHC_MAX_PLAN_KERNELS] = {0};
    for (int i = 0; i < nreq; i++)
        ck_assert_int_eq(lhc_compile(serial, req[i].kernel, req[i].constants, "sm_90", &one[i]), LH_OK);
    int64_t before = lhc_mlir_compile_count();
    ck_assert_int_eq(lhc_compile_requests(parallel, req, nreq, "sm_90", 4, four, NULL), LH_OK);
    ck_assert_int_eq(lhc_mlir_compile_count() - before, nreq);
    for (int i = 0; i < nreq; i++) ck_assert_str_eq(four[i]->ptx, one[i]->ptx);
    lhc_cache_destroy(serial);
    lhc_cache_destroy(parallel);
}
END_TEST

TCase *compile_requests_tcase(void) {
    TCase *t = tcase_create("compile_requests");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 300);
    tcase_add_test(t, every_thread_count_gives_each_request_its_kernel);
    tcase_add_test(t, no_requests_and_null_arguments);
    tcase_add_test(t, first_failing_request_in_order_is_reported);
    tcase_add_test(t, threads_asking_for_the_same_kernels_share_one_read);
    tcase_add_test(t, failed_build_leaves_nothing_behind);
    if (lhc_available()) tcase_add_test(t, side_by_side_compiles_what_one_by_one_does);
    return t;
}
