/* test_precompile.c - lh_plan_precompile on a CPU context (no GPU): the GPU kernels of a plan's
 * configuration land in the context's disk cache, a second call finds every one of them there,
 * the parameters that change the kernels make new entries, and each misuse gets its status and a
 * sentence; lh_context_save_device and lh_plan_precompile_device refuse what they cannot use
 * (the GPU's side: tests/gpu/test_plan_cache_gpu.c). */
#define _XOPEN_SOURCE 700 /* nftw */
#include <check.h>
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lighthouse.h"

static char cache_dir[256];
static lh_context *ctx;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* The directory and everything below it. */
static void remove_dir(const char *dir) { nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS); }

/* Files in the cache directory whose names end in .lhk. */
static int cache_entries(void) {
    DIR *d = opendir(cache_dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        n += len > 4 && !strcmp(e->d_name + len - 4, ".lhk");
    }
    closedir(d);
    return n;
}

static void setup(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(cache_dir, sizeof cache_dir, "%s/lh-precompile-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(cache_dir));
    ck_assert_int_eq(lh_context_create(LH_BACKEND_CPU, 0, &ctx), LH_OK);
    ck_assert_int_eq(lh_context_set_str(ctx, LH_CONTEXT_CACHE_DIR, cache_dir), LH_OK);
}

static void teardown(void) {
    lh_context_destroy(ctx);
    remove_dir(cache_dir);
}

/* A plan of the small GPU configuration: D = 64, bf16, the default LEVELS and POOLING. */
static lh_plan *gpu_plan(int64_t heads, int64_t kv_heads, lh_mode mode) {
    lh_plan *plan = NULL;
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEADS, heads), LH_OK);
    if (kv_heads) ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_KV_HEADS, kv_heads), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEAD_DIM, 64), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_DTYPE, LH_DTYPE_BFLOAT16), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_MODE, mode), LH_OK);
    return plan;
}

/* Skips a test in a library built without its kernel compiler (after checking it says so). */
static int compiler_missing(lh_status st) {
    if (st != LH_ERROR_BACKEND_UNAVAILABLE) return 0;
    ck_assert_ptr_nonnull(strstr(lh_last_error(), "without its kernel compiler"));
    return 1;
}

START_TEST(fills_the_cache_then_finds_it_there) {
    lh_plan *plan = gpu_plan(2, 0, LH_MODE_LIGHTHOUSE);
    int64_t compiled = -1;
    lh_status st = lh_plan_precompile(plan, "sm_90", &compiled);
    if (!compiler_missing(st)) {
        ck_assert_msg(st == LH_OK, "%s", lh_last_error());
        /* the five Lighthouse stages' kernels and the attention step's */
        ck_assert_int_eq(compiled, 6);
        ck_assert_int_eq(cache_entries(), 6);
        ck_assert_str_eq(lh_last_error(), "");
        compiled = -1;
        ck_assert_int_eq(lh_plan_precompile(plan, "sm_90", &compiled), LH_OK);
        ck_assert_int_eq(compiled, 0);
        /* another chip: entries of its own; NULL out_compiled is allowed */
        ck_assert_int_eq(lh_plan_precompile(plan, "sm_100a", NULL), LH_OK);
        ck_assert_int_eq(cache_entries(), 12);
        /* the plan is unchanged and still settable */
        int64_t v = 0;
        ck_assert_int_eq(lh_plan_get_param_i64(plan, LH_PARAM_HEAD_DIM, &v), LH_OK);
        ck_assert_int_eq(v, 64);
        ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, 4096), LH_OK);
    }
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(parameters_that_change_the_kernels) {
    lh_plan *plan = gpu_plan(2, 0, LH_MODE_LIGHTHOUSE);
    lh_status st = lh_plan_precompile(plan, "sm_90", NULL);
    lh_plan_destroy(plan);
    if (compiler_missing(st)) return;
    ck_assert_msg(st == LH_OK, "%s", lh_last_error());
    int64_t compiled = -1;
    /* A kv group of 4 changes pool_grad only (it sums over the group). */
    plan = gpu_plan(8, 2, LH_MODE_LIGHTHOUSE);
    ck_assert_int_eq(lh_plan_precompile(plan, "sm_90", &compiled), LH_OK);
    ck_assert_int_eq(compiled, 1);
    lh_plan_destroy(plan);
    /* Dense plans load only the attention step's kernel, already there. */
    plan = gpu_plan(2, 0, LH_MODE_DENSE);
    ck_assert_int_eq(lh_plan_precompile(plan, "sm_90", &compiled), LH_OK);
    ck_assert_int_eq(compiled, 0);
    lh_plan_destroy(plan);
    /* f16 is a kernel set of its own. */
    plan = gpu_plan(2, 0, LH_MODE_DENSE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_DTYPE, LH_DTYPE_FLOAT16), LH_OK);
    ck_assert_int_eq(lh_plan_precompile(plan, "sm_90", &compiled), LH_OK);
    ck_assert_int_eq(compiled, 1);
    lh_plan_destroy(plan);
}
END_TEST

/* status and the start of the message */
static void expect(lh_status got, lh_status want, const char *fragment) {
    ck_assert_msg(got == want, "got %s (%s), want %s", lh_status_string(got), lh_last_error(),
                  lh_status_string(want));
    ck_assert_msg(strstr(lh_last_error(), fragment), "message '%s' lacks '%s'", lh_last_error(),
                  fragment);
}

START_TEST(misuse_is_refused_with_a_sentence) {
    int64_t compiled = 123;
    lh_plan *plan = gpu_plan(2, 0, LH_MODE_LIGHTHOUSE);
    expect(lh_plan_precompile(NULL, "sm_90", &compiled), LH_ERROR_NULL_POINTER, "plan is NULL");
    expect(lh_plan_precompile(plan, NULL, &compiled), LH_ERROR_NULL_POINTER, "chip is NULL");
    lh_status st = lh_plan_precompile(plan, "gfx90a", &compiled);
    if (!compiler_missing(st)) {
        expect(st, LH_ERROR_INVALID_VALUE, "gfx90a");
        expect(lh_plan_precompile(plan, "sm_95", &compiled), LH_ERROR_COMPILE, "sm_95");
    }
    ck_assert_int_eq(compiled, 123); /* never written on error */
    lh_plan_destroy(plan);

    /* the CPU backend's dtype, and parameters the kernels cannot serve */
    plan = gpu_plan(2, 0, LH_MODE_LIGHTHOUSE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_DTYPE, LH_DTYPE_FLOAT32), LH_OK);
    st = lh_plan_precompile(plan, "sm_90", NULL);
    if (!compiler_missing(st)) expect(st, LH_ERROR_UNSUPPORTED_DTYPE, "BFLOAT16 or FLOAT16");
    lh_plan_destroy(plan);
    plan = gpu_plan(2, 0, LH_MODE_LIGHTHOUSE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEAD_DIM, 48), LH_OK);
    st = lh_plan_precompile(plan, "sm_90", NULL);
    if (!compiler_missing(st)) expect(st, LH_ERROR_UNSUPPORTED, "HEAD_DIM");
    lh_plan_destroy(plan);
    plan = gpu_plan(6, 4, LH_MODE_LIGHTHOUSE);
    st = lh_plan_precompile(plan, "sm_90", NULL);
    if (!compiler_missing(st)) expect(st, LH_ERROR_HEADS_MISMATCH, "KV_HEADS");
    lh_plan_destroy(plan);

    /* HEADS unset */
    ck_assert_int_eq(lh_plan_create(ctx, &plan), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_HEAD_DIM, 64), LH_OK);
    st = lh_plan_precompile(plan, "sm_90", NULL);
    if (!compiler_missing(st)) expect(st, LH_ERROR_INVALID_VALUE, "HEADS must be set");
    lh_plan_destroy(plan);
}
END_TEST

START_TEST(the_disk_cache_must_be_usable) {
    lh_plan *plan = gpu_plan(2, 0, LH_MODE_LIGHTHOUSE);
    ck_assert_int_eq(lh_context_set_i64(ctx, LH_CONTEXT_CACHE_ENABLED, 0), LH_OK);
    lh_status st = lh_plan_precompile(plan, "sm_90", NULL);
    if (!compiler_missing(st)) expect(st, LH_ERROR_BAD_STATE, "disabled");
    ck_assert_int_eq(lh_context_set_i64(ctx, LH_CONTEXT_CACHE_ENABLED, 1), LH_OK);
    /* a directory below a regular file cannot be created */
    char file[300], below[320];
    snprintf(file, sizeof file, "%s/file", cache_dir);
    FILE *f = fopen(file, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    snprintf(below, sizeof below, "%s/cache", file);
    ck_assert_int_eq(lh_context_set_str(ctx, LH_CONTEXT_CACHE_DIR, below), LH_OK);
    st = lh_plan_precompile(plan, "sm_90", NULL);
    if (!compiler_missing(st)) expect(st, LH_ERROR_IO, "could not write");
    lh_plan_destroy(plan);
}
END_TEST

/* A file in the cache's directory holding `text`; its path in `path`. */
static void write_file(const char *name, const char *text, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", cache_dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* lh_context_save_device and lh_plan_precompile_device without a GPU: every refusal before
 * cuDNN is asked to build, each with its status and a sentence, nothing written on error. */
START_TEST(device_descriptions_refused_with_a_sentence) {
    char path[400], other[400];
    snprintf(path, sizeof path, "%s/gpu.dev", cache_dir);
    expect(lh_context_save_device(NULL, path), LH_ERROR_NULL_POINTER, "context is NULL");
    expect(lh_context_save_device(ctx, NULL), LH_ERROR_NULL_POINTER, "path is NULL");
    expect(lh_context_save_device(ctx, path), LH_ERROR_UNSUPPORTED, "no GPU to describe");
    ck_assert_int_eq(access(path, F_OK), -1);

    int64_t kernels = 123, plans = 456;
    lh_plan *plan = gpu_plan(8, 0, LH_MODE_LIGHTHOUSE);
    expect(lh_plan_precompile_device(NULL, path, &kernels, &plans), LH_ERROR_NULL_POINTER,
           "plan is NULL");
    expect(lh_plan_precompile_device(plan, NULL, &kernels, &plans), LH_ERROR_NULL_POINTER,
           "device_path is NULL");
    lh_status st = lh_plan_precompile_device(plan, path, &kernels, &plans);
    if (compiler_missing(st)) {
        lh_plan_destroy(plan);
        return;
    }
    /* the attention plans need what finalize needs */
    expect(st, LH_ERROR_INVALID_VALUE, "SEQ_LEN must be set");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, 32768), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, 1024 + 128), LH_OK);
    expect(lh_plan_precompile_device(plan, path, &kernels, &plans), LH_ERROR_SEQ_DIVISIBILITY,
           "SEQ_LEN must be a multiple");
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, 2048), LH_OK);
    expect(lh_plan_precompile_device(plan, path, &kernels, &plans), LH_ERROR_IO,
           "cannot open the device description");
    write_file("kernel.txt", "LHCP1\nnot a device\n", other, sizeof other);
    expect(lh_plan_precompile_device(plan, other, &kernels, &plans), LH_ERROR_INVALID_VALUE,
           "not a device description");
    write_file("old.dev", "LHDEV1\nname Some GPU\nsm 90\ncudnn 90100\n{\"a\": 1}", other,
               sizeof other);
    st = lh_plan_precompile_device(plan, other, &kernels, &plans);
    if (st != LH_ERROR_BACKEND_UNAVAILABLE) /* no cuDNN on this machine: said so, also fine */
        expect(st, LH_ERROR_INVALID_VALUE, "written with cuDNN 90100");
    ck_assert_int_eq(kernels, 123); /* never written on error */
    ck_assert_int_eq(plans, 456);
    ck_assert_int_eq(cache_entries(), 0);
    /* the plan is left as it was: not finalized, still settable */
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_BATCH, 2), LH_OK);
    lh_plan_destroy(plan);
}
END_TEST

/* An H100's description as lh_context_save_device wrote it (tests/data): cuDNN reads it back,
 * and the plans are built where the NVIDIA driver's library is here (a GPU machine), or refused
 * with a sentence naming it where it is not (this machine without a driver). */
START_TEST(a_real_description_builds_or_names_the_driver) {
    lh_plan *plan = gpu_plan(8, 0, LH_MODE_LIGHTHOUSE);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_SEQ_LEN, 16384), LH_OK);
    ck_assert_int_eq(lh_plan_set_i64(plan, LH_PARAM_TOPK, 1024), LH_OK);
    int64_t kernels = -1, plans = -1;
    lh_status st = lh_plan_precompile_device(plan, LH_TEST_DATA_DIR "/h100-80gb-hbm3.dev",
                                             &kernels, &plans);
    const char *m = lh_last_error();
    if (st == LH_OK) {
        ck_assert_int_eq(plans, 2); /* the attention step's forward and backward */
        ck_assert_int_ge(kernels, 1);
    } else if (!strstr(m, "without its kernel compiler")) {
        ck_assert_msg(st == LH_ERROR_BACKEND_UNAVAILABLE, "%s", m);
        ck_assert_msg(strstr(m, "libcuda.so.1") || strstr(m, "cuDNN"), "%s", m);
        ck_assert_int_eq(cache_entries(), 0);
    }
    lh_plan_destroy(plan);
}
END_TEST

int main(void) {
    Suite *s = suite_create("precompile");
    TCase *tc = tcase_create("cache");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fills_the_cache_then_finds_it_there);
    tcase_add_test(tc, parameters_that_change_the_kernels);
    tcase_add_test(tc, misuse_is_refused_with_a_sentence);
    tcase_add_test(tc, the_disk_cache_must_be_usable);
    tcase_add_test(tc, device_descriptions_refused_with_a_sentence);
    tcase_add_test(tc, a_real_description_builds_or_names_the_driver);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
